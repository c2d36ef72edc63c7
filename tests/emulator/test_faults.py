"""Fault injection and the inspection endpoints (test mode only)."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from emulator.state import ROUTES
from tests.emulator.conftest import Emu, inprocess

pytestmark = pytest.mark.e2e

SUBMIT = {"audio_url": "http://127.0.0.1:9/a.wav", "speech_models": ["universal-2"]}


def test_503_then_ok(emu: Emu) -> None:
    emu.fault(route="POST /v2/transcript", status=503)
    first = emu.http.post("/v2/transcript", json=SUBMIT, headers=emu.auth())
    second = emu.http.post("/v2/transcript", json=SUBMIT, headers=emu.auth())
    assert first.status_code == 503
    assert "error" in first.json()
    assert second.status_code == 200


def test_429_with_retry_after_for_n_calls(emu: Emu) -> None:
    emu.fault(route="GET /v2/transcript/{id}", status=429, retry_after=7, count=2)
    tid = emu.submit(**SUBMIT)["id"]
    answers = [emu.http.get(f"/v2/transcript/{tid}", headers=emu.auth()) for _ in range(3)]
    assert [a.status_code for a in answers] == [429, 429, 200]
    assert answers[0].headers["retry-after"] == "7"
    assert emu.http.get("/_emulator/faults").json() == {}


def test_faults_are_per_route_and_queue_in_order(emu: Emu) -> None:
    emu.fault(route="POST /v2/upload", status=500)
    emu.fault(route="POST /v2/upload", status=503)
    assert emu.http.post("/v2/transcript", json=SUBMIT, headers=emu.auth()).status_code == 200
    statuses = [
        emu.http.post("/v2/upload", content=b"x", headers=emu.auth()).status_code for _ in range(3)
    ]
    assert statuses == [500, 503, 200]


def test_latency(emu: Emu) -> None:
    emu.fault(route="POST /v1/chat/completions", delay_s=0.3)
    body = {"model": "gpt-4.1", "messages": [{"role": "user", "content": "x"}]}
    started = time.monotonic()
    response = emu.http.post("/v1/chat/completions", json=body, headers=emu.auth())
    assert response.status_code == 200
    assert time.monotonic() - started >= 0.3


@pytest.mark.parametrize(
    ("route", "method", "path"),
    [
        ("POST /v2/transcript", "POST", "/v2/transcript"),
        ("POST /v2/upload", "POST", "/v2/upload"),
        ("GET /v2/transcript", "GET", "/v2/transcript"),
    ],
)
def test_drop_connection_mid_body(emu: Emu, route: str, method: str, path: str) -> None:
    emu.fault(route=route, drop=True)
    content = b"x" * 300_000 if path == "/v2/upload" else b'{"audio_url": "http://a/b"}'
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)):
        emu.http.request(method, path, content=content, headers=emu.auth())
    # The next call is served normally.
    assert emu.http.get("/v2/transcript", headers=emu.auth()).status_code == 200


def test_fault_validation_and_listing(emu: Emu) -> None:
    bad = [
        {"route": "GET /nope", "status": 500},
        {"route": "WS /v3/ws", "close_code": "x"},
        {"route": "WS /v3/ws", "close_code": 3005, "count": 0},
    ]
    for fault in bad:
        assert emu.http.post("/_emulator/faults", json=fault).status_code == 400
    emu.fault(route="WS /v3/ws", close_code=3005, count=2)
    listed = emu.http.get("/_emulator/faults").json()
    assert listed["WS /v3/ws"][0]["close_code"] == 3005
    assert listed["WS /v3/ws"][0]["count"] == 2
    assert set(listed) <= set(ROUTES)
    cleared = emu.http.delete("/_emulator/faults", params={"route": "WS /v3/ws"}).json()
    assert cleared == {}


def test_config_knobs(emu: Emu) -> None:
    config = emu.http.get("/_emulator/config").json()
    assert config["recognition"] in ("whisper", "placeholder")
    changed = emu.knobs(queued_s=0.5, webhook_before_response=True)
    assert changed["queued_s"] == 0.5
    assert changed["webhook_before_response"] is True
    for body in [{"nope": 1}, {"queued_s": -1}, {"queued_s": "x"}, {"webhook_before_response": 1}]:
        assert emu.http.patch("/_emulator/config", json=body).status_code == 400


def test_reset_forgets_everything(emu: Emu) -> None:
    emu.submit(**SUBMIT)
    emu.upload(b"abc")
    emu.fault(route="GET /v3/token", status=500)
    assert emu.http.post("/_emulator/reset").status_code == 200
    assert emu.http.get("/_emulator/transcripts").json() == []
    assert emu.http.get("/_emulator/uploads").json() == []
    assert emu.http.get("/_emulator/faults").json() == {}


def test_sessions_endpoints_answer_404_for_unknown_ids(emu: Emu) -> None:
    assert emu.http.get("/_emulator/sessions").status_code == 200
    assert emu.http.get("/_emulator/sessions/nope").status_code == 404
    assert emu.http.get("/_emulator/sessions/nope/pcm").status_code == 404


async def test_control_is_404_outside_test_mode(tmp_path: Path) -> None:
    async with inprocess(tmp_path, test_mode=False) as client:
        for method, path in [
            ("POST", "/_emulator/faults"),
            ("GET", "/_emulator/faults"),
            ("GET", "/_emulator/uploads"),
            ("GET", "/_emulator/webhooks"),
            ("GET", "/_emulator/transcripts"),
            ("GET", "/_emulator/llm"),
            ("GET", "/_emulator/sessions"),
            ("GET", "/_emulator/sessions/x/pcm"),
            ("POST", "/_emulator/reset"),
            ("GET", "/_emulator/config"),
        ]:
            response = await client.request(method, path, json={"route": "WEBHOOK"})
            assert response.status_code == 404, path


def test_withhold_takes_the_submit_and_loses_the_answer(emu: Emu) -> None:
    emu.fault(route="POST /v2/transcript", withhold=True, delay_s=0.2)
    hook = "http://127.0.0.1:9/hooks/withheld-job"
    with pytest.raises(httpx.TransportError):
        emu.http.post("/v2/transcript", json={**SUBMIT, "webhook_url": hook}, headers=emu.auth())
    # Upstream took it all the same: it is listed, and its webhook names the submit.
    listed = emu.http.get("/v2/transcript", params={"limit": 200}, headers=emu.auth()).json()
    taken = [t for t in listed["transcripts"] if t["audio_url"] == SUBMIT["audio_url"]]
    assert taken
    got = emu.http.get(f"/v2/transcript/{taken[0]['id']}", headers=emu.auth()).json()
    assert got["webhook_url"] == hook
    # One use only: the next submit is answered.
    assert emu.http.post("/v2/transcript", json=SUBMIT, headers=emu.auth()).status_code == 200


def test_drop_breaks_a_streamed_chat_off_after_its_first_chunks(emu: Emu) -> None:
    emu.fault(route="POST /v1/chat/completions", drop=True)
    body = {"model": "gpt-4.1", "messages": [{"role": "user", "content": "x y z"}], "stream": True}
    received: list[bytes] = []

    def read() -> None:
        with emu.http.stream(
            "POST", "/v1/chat/completions", json=body, headers=emu.auth()
        ) as response:
            assert response.status_code == 200
            received.extend(response.iter_bytes())

    with pytest.raises(httpx.RemoteProtocolError):
        read()
    stream = b"".join(received)
    events = [line for line in stream.split(b"\n") if line.startswith(b"data: ")]
    assert len(events) == 2
    assert b"[DONE]" not in stream
    assert b'"usage"' not in stream
