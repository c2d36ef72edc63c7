"""The fence around the body tap and the timeouts (app/core/http_server.py): uvicorn's
version and the internals they use are checked at start-up; with a changed protocol class
the tap stays off (uploads take the ASGI path) and one warning says why."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from typing import Any

import pytest
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from app.core import http_server
from app.core.body_tap import EXTENSION
from app.core.http_server import TapProtocol, check_uvicorn
from tests.core.test_http_server import MIB, Sink, make_app, post, serve


def test_the_installed_uvicorn_passes() -> None:
    assert check_uvicorn() == ([], [])
    assert TapProtocol.tap_enabled
    assert TapProtocol.timeouts_enabled


def test_a_protocol_class_without_what_the_tap_uses_is_refused() -> None:
    # An upstream refactor: `__init__` (where the pipeline queue and the loop are set)
    # and the keep-alive helper are gone.
    changed = type(
        "Changed",
        (asyncio.Protocol,),
        {
            name: value
            for klass in reversed(HttpToolsProtocol.__mro__)
            for name, value in vars(klass).items()
            if name not in {"_unset_keepalive_if_required", "__init__"}
        },
    )
    timeouts, tap = check_uvicorn(protocol=changed)
    prefix = f"uvicorn {uvicorn.__version__} lacks "
    assert timeouts == [prefix + "protocol.loop"]
    assert set(tap) == {
        prefix + "protocol.loop",
        prefix + "protocol.pipeline",
        prefix + "protocol.timeout_keep_alive",
        prefix + "protocol._unset_keepalive_if_required",
    }


def test_a_cycle_class_without_its_flags_turns_both_off() -> None:
    class Cycle:
        def __init__(self) -> None:
            self.body = bytearray()

    timeouts, tap = check_uvicorn(cycle=Cycle)
    assert any("cycle.more_body" in p for p in timeouts)
    assert any("cycle.more_body" in p for p in tap)


def test_an_untested_uvicorn_version_turns_the_tap_off() -> None:
    timeouts, tap = check_uvicorn(version="0.99.1")
    assert timeouts == []
    assert tap == ["uvicorn 0.99.1 is not a version the tap was tested with (0.54)"]
    assert check_uvicorn(version="1.0")[1]
    assert check_uvicorn(version="weird")[1]


def test_configure_warns_once_when_fenced(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(http_server, "_TAP_PROBLEMS", ["uvicorn 9.9 lacks protocol.pipeline"])
    with caplog.at_level(logging.WARNING, logger="app.core.http_server"):
        http_server.configure(10.0, 30.0)
    records = [r for r in caplog.records if r.getMessage() == "http.server.fenced"]
    assert len(records) == 1
    assert records[0].__dict__["body_tap"] == "off"
    assert records[0].__dict__["timeouts"] == "on"
    caplog.clear()
    monkeypatch.setattr(http_server, "_TAP_PROBLEMS", [])
    with caplog.at_level(logging.WARNING, logger="app.core.http_server"):
        http_server.configure(10.0, 30.0)
    assert not caplog.records


class _FencedProtocol(TapProtocol):
    """What `TapProtocol` is when the fence found a problem."""

    tap_enabled = False


async def test_fenced_protocol_offers_no_tap_and_bodies_go_through_asgi(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[dict[str, Any]] = []
    app = make_app(Sink, seen)

    async def check(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            assert EXTENSION not in scope.get("extensions", {})
        await app(scope, receive, send)

    body = bytes(range(256)) * (4 * MIB // 256)
    monkeypatch.setattr("tests.core.test_http_server.TapProtocol", _FencedProtocol)
    async with serve(check) as port:
        answer, writer = await post(port, body)
        writer.close()
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
    assert seen == [{"tap": False, "sha256": hashlib.sha256(body).hexdigest(), "bytes": len(body)}]
    assert uvicorn.__version__.startswith("0.54")  # TESTED_UVICORN: update both together
    assert RequestResponseCycle is not None
