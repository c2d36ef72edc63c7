"""Tokens end to end on real sockets: the real service mints from the real emulator, the
token opens the emulator's `/v3/ws` and `/v1/ws`, and a second use is refused (1008).
Nothing secret reaches the service's log."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from tests.live import Proc, create_key_in, run_service

pytestmark = pytest.mark.e2e

MINTED: list[str] = []


@pytest.fixture(scope="module")
def token_key(database_url: str) -> str:
    return create_key_in(database_url, ["tokens:streaming", "tokens:agents"], name="e2e tokens")


@pytest.fixture(scope="module")
def token_service(database_url: str, emulator: Proc) -> Iterator[Proc]:
    """A service of our own, so its log holds only this module's traffic (DEBUG included)."""
    with run_service(database_url, emulator.url, {"LOG_LEVEL": "DEBUG"}) as proc:
        yield proc


def ws_url(http_url: str, path: str, **query: Any) -> str:
    base = http_url.replace("http://", "ws://") + path
    return str(httpx.URL(base, params=query))


async def first_message(url: str, send: dict[str, Any] | None = None) -> dict[str, Any]:
    async with websockets.connect(url, open_timeout=10) as ws:
        if send is not None:
            await ws.send(json.dumps(send))
        deadline = time.monotonic() + 10
        while (left := deadline - time.monotonic()) > 0:
            try:
                raw = await asyncio.wait_for(ws.recv(decode=True), left)
            except TimeoutError:
                break
            message = json.loads(raw)
            if message.get("type") in {"Begin", "session.ready"}:
                if message["type"] == "Begin":
                    await ws.send(json.dumps({"type": "Terminate"}))
                return dict(message)
        raise AssertionError("no Begin / session.ready in 10 s")


async def refused_code(url: str, send: dict[str, Any] | None = None) -> int | None:
    """The close code; a socket left open (not refused) fails after 10 s, not at the
    server's inactivity timeout."""
    try:
        async with websockets.connect(url, open_timeout=10) as ws:
            if send is not None:
                await ws.send(json.dumps(send))
            async with asyncio.timeout(10):
                while True:
                    await ws.recv()
    except ConnectionClosed as closed:
        return closed.rcvd.code if closed.rcvd else None
    except TimeoutError:
        raise AssertionError("the socket stayed open for 10 s: not refused") from None
    return None


async def test_streaming_token_opens_v3_ws_once(
    token_service: Proc, emulator: Proc, token_key: str
) -> None:
    async with httpx.AsyncClient(base_url=token_service.url) as client:
        response = await client.get(
            "/v3/token",
            params={"expires_in_seconds": 600, "max_session_duration_seconds": 10800},
            headers={"Authorization": token_key},
        )
    assert response.status_code == 200, response.text
    assert set(response.json()) == {"token"}
    token = response.json()["token"]
    MINTED.append(token)
    url = ws_url(emulator.url, "/v3/ws", sample_rate=16000, speech_model="u3-rt-pro", token=token)
    begin = await first_message(url)
    assert begin["type"] == "Begin"
    # The session cap the emulator enforces is our clamp (1 h), not the 3 h asked for.
    assert abs(begin["expires_at"] - (time.time() + 3600)) < 30
    assert await refused_code(url) == 1008


async def test_app_streaming_url_is_ready_to_open(token_service: Proc, token_key: str) -> None:
    async with httpx.AsyncClient(base_url=token_service.url) as client:
        response = await client.post(
            "/api/tokens/streaming",
            json={"max_session_duration_seconds": 300},
            headers={"Authorization": token_key},
        )
    assert response.status_code == 200, response.text
    body = response.json()
    MINTED.append(body["token"])
    url = body["websocket_url"]
    assert "speech_model=u3-rt-pro" in url
    assert "sample_rate=16000" in url
    async with websockets.connect(url, open_timeout=10) as ws:
        begin = json.loads(await asyncio.wait_for(ws.recv(decode=True), 10))
        assert begin["type"] == "Begin"
        assert abs(begin["expires_at"] - (time.time() + 300)) < 30
        await ws.send(b"\x00\x00" * 1600)  # 100 ms of 16 kHz silence
        await ws.send(json.dumps({"type": "Terminate"}))
        while True:
            message = json.loads(await asyncio.wait_for(ws.recv(decode=True), 10))
            if message["type"] == "Termination":
                break
    assert await refused_code(url) == 1008


async def test_agent_token_opens_v1_ws_once(
    token_service: Proc, emulator: Proc, token_key: str
) -> None:
    update = {
        "type": "session.update",
        "session": {"system_prompt": "You are terse.", "output": {"voice": "ivy"}},
    }
    async with httpx.AsyncClient(base_url=token_service.url) as client:
        compat = await client.get(
            "/v1/token",
            params={"expires_in_seconds": 60},
            headers={"Authorization": f"Bearer {token_key}"},
        )
        app = await client.post("/api/tokens/agents", headers={"Authorization": token_key})
    assert compat.status_code == 200, compat.text
    assert app.status_code == 200, app.text
    MINTED.extend([compat.json()["token"], app.json()["token"]])
    compat_url = ws_url(emulator.url, "/v1/ws", token=compat.json()["token"])
    for url in (compat_url, app.json()["websocket_url"]):
        ready = await first_message(url, update)
        assert ready["type"] == "session.ready"
        assert ready["session_id"]
        assert await refused_code(url, update) == 1008


async def test_service_log_holds_no_token_or_key(token_service: Proc, token_key: str) -> None:
    async with httpx.AsyncClient(base_url=token_service.url) as client:
        bad = await client.get(
            "/v3/token", params={"expires_in_seconds": 0}, headers={"Authorization": token_key}
        )
        assert bad.status_code == 400
        ok = await client.get(
            "/v3/token", params={"expires_in_seconds": 5}, headers={"Authorization": token_key}
        )
        MINTED.append(ok.json()["token"])
    log = token_service.log.read_text(errors="replace")
    assert "tokens." in log  # the service did log about tokens
    assert token_key not in log
    for token in MINTED:
        assert token not in log
