"""Flow control on real sockets: an upstream that floods a client that reads nothing. The
relay's buffers stay bounded (upstream is soon blocked), and after the stall timeout the
relay terminates the upstream session and drops the client."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
import websockets
from websockets.asyncio.server import ServerConnection, serve

from tests.live import Proc, create_key_in, run_service

pytestmark = pytest.mark.e2e

MESSAGE = json.dumps({"type": "Turn", "transcript": "x" * 60_000})  # ~60 KB each


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@pytest.fixture
def key(database_url: str) -> str:
    return create_key_in(database_url, ["tokens:streaming"], name="flow control")


async def test_a_stalled_client_is_dropped_and_upstream_terminated(
    database_url: str, emulator: Proc, key: str
) -> None:
    seen: dict[str, Any] = {"sent": 0, "received": [], "closed_at": None, "blocked": False}

    async def flood(conn: ServerConnection) -> None:
        async def read() -> None:
            try:
                async for message in conn:
                    seen["received"].append(message)
            finally:
                seen["closed_at"] = time.monotonic()

        reader = asyncio.create_task(read())
        await conn.send(json.dumps({"type": "Begin", "id": "flood", "expires_at": 0}))
        try:
            while True:
                try:
                    await asyncio.wait_for(conn.send(MESSAGE), 2)
                except TimeoutError:
                    seen["blocked"] = True  # the relay stopped reading: backpressure
                    continue
                seen["sent"] += len(MESSAGE)
        except websockets.ConnectionClosed:
            pass
        await reader

    async with serve(flood, "127.0.0.1", 0, compression=None) as server:
        port = server.sockets[0].getsockname()[1]
        env = {
            "ASSEMBLYAI_STREAMING_BASE_URL": f"http://127.0.0.1:{port}",
            "WS_RELAY_STALL_TIMEOUT_S": "2",
            "WS_RELAY_TERMINATE_WAIT_S": "1",
        }
        with run_service(database_url, emulator.url, env) as relay:
            url = relay.url.replace("http://", "ws://") + "/v3/ws?sample_rate=16000"
            before = rss_mb(relay.process.pid)
            # The client reads nothing after the handshake (one message at most queued,
            # a small receive buffer): the relay's writes to it soon block.
            client = await websockets.connect(
                url,
                additional_headers={"Authorization": key},
                max_queue=1,
                max_size=None,
                compression=None,
            )
            client.transport.pause_reading()
            stalled_at = time.monotonic()
            deadline = stalled_at + 15
            while seen["closed_at"] is None and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            peak = rss_mb(relay.process.pid)
            client.transport.abort()
            # Stop the service off this loop: the fake upstream lives on it.
            relay.process.terminate()
            await asyncio.to_thread(relay.process.wait, 20)

    assert seen["blocked"], "upstream was never blocked: nothing bounded the relay's buffers"
    # Bounded: what left upstream fits in socket buffers plus a few queued messages.
    assert seen["sent"] < 40 * 1024 * 1024, seen["sent"]
    assert peak - before < 60, (before, peak)
    # Dropped after the stall timeout, with Terminate sent upstream first.
    assert seen["closed_at"] is not None, "upstream was never closed"
    assert 2 <= seen["closed_at"] - stalled_at < 8
    assert json.dumps({"type": "Terminate"}) in seen["received"] or any(
        isinstance(m, str) and json.loads(m).get("type") == "Terminate" for m in seen["received"]
    )
