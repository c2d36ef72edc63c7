"""The relay when upstream is unreachable, and when the service itself shuts down."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import time
from collections.abc import Iterator

import httpx
import pytest
import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.live import Proc, create_key_in, run_service

pytestmark = pytest.mark.e2e

QUERY = "/v3/ws?sample_rate=16000&speech_model=u3-rt-pro"


@pytest.fixture
def key(database_url: str) -> str:
    return create_key_in(database_url, ["tokens:streaming"], name="relay failures")


@pytest.fixture
def nowhere(database_url: str, emulator: Proc) -> Iterator[Proc]:
    """A service whose streaming host has nothing listening: the port stays bound (never
    listening) for the test, so no other process can take it meanwhile."""
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        port = held.getsockname()[1]
        env = {"ASSEMBLYAI_STREAMING_BASE_URL": f"http://127.0.0.1:{port}"}
        with run_service(database_url, emulator.url, env) as proc:
            yield proc


def test_unreachable_upstream_is_502_and_charges_nothing(nowhere: Proc, key: str) -> None:
    async def run() -> None:
        with pytest.raises(InvalidStatus) as refused:
            await websockets.connect(
                nowhere.url.replace("http://", "ws://") + QUERY,
                additional_headers={"Authorization": key},
            )
        assert refused.value.response.status_code == 502
        body = json.loads(refused.value.response.body)
        assert body == {"error": "AssemblyAI could not be reached."}

    asyncio.run(run())
    usage = httpx.get(f"{nowhere.url}/api/usage", headers={"Authorization": key}).json()
    (mine,) = usage["keys"]
    assert mine["budget"]["today_session_s_used"] == 0  # the first slice was given back
    assert mine["relay_sessions"] == 0


def test_shutdown_terminates_open_sessions_upstream(
    database_url: str, emulator: Proc, key: str
) -> None:
    with run_service(database_url, emulator.url) as service:

        async def run() -> tuple[str, int]:
            async with websockets.connect(
                service.url.replace("http://", "ws://") + QUERY,
                additional_headers={"Authorization": key},
            ) as ws:
                begin = json.loads(await asyncio.wait_for(ws.recv(), 10))
                await ws.send(b"\x00\x00" * 1600)
                service.process.send_signal(signal.SIGTERM)
                try:
                    async with asyncio.timeout(15):
                        while True:
                            await ws.recv()
                except ConnectionClosed as closed:
                    received = closed.rcvd
                assert received is not None
                return str(begin["id"]), received.code

        session_id, code = asyncio.run(run())
    assert code == 1012
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        record = httpx.get(f"{emulator.url}/_emulator/sessions/{session_id}").json()
        if record["ended_at"] is not None:
            break
        time.sleep(0.1)
    assert record["terminate_received"] is True
