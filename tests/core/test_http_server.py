"""The body tap (app/core/http_server.py) under a real uvicorn server with `TapProtocol`,
on real sockets, with sinks that are slow, stall or end early."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import uvicorn

from app.core.http_server import EXTENSION, SinkEnded, SinkStalled, TapProtocol
from tests.live import free_port


class Sink:
    """Collects what it is given; `slow`: every other write reports bytes still buffered
    and drains a moment later; `stall`: never drains; `end_after`: ends after that many
    writes (as an upstream answering early)."""

    def __init__(self, *, slow: bool = False, stall: bool = False, end_after: int = 0) -> None:
        self.data = bytearray()
        self.writes = 0
        self.slow, self.stall, self.end_after = slow, stall, end_after
        self.ended: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._drained: Callable[[], None] | None = None

    def write(self, data: memoryview) -> bool:
        self.data += data
        self.writes += 1
        if self.end_after and self.writes >= self.end_after and not self.ended.done():
            self.ended.set_result(None)
        if self.stall:
            return False
        if self.slow and self.writes % 2:
            asyncio.get_running_loop().call_later(0.002, self._drain)
            return False
        return True

    def _drain(self) -> None:
        if self._drained is not None:
            self._drained()

    def set_drained_callback(self, callback: Callable[[], None] | None) -> None:
        self._drained = callback


def make_app(make_sink: Callable[[], Sink], seen: list[dict[str, Any]]) -> Any:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        tap = scope.get("extensions", {}).get(EXTENSION)
        record: dict[str, Any] = {"tap": tap is not None}
        first = await receive()
        body = bytes(first["body"])
        sink = make_sink()
        if tap is not None and first.get("more_body"):
            try:
                await tap.pipe(sink, buffer_size=64 * 1024, stall_timeout_s=0.3)
            except Exception as exc:
                record["error"] = type(exc).__name__
            body += bytes(sink.data)
        else:
            while first.get("more_body"):
                first = await receive()
                body += first["body"]
        record["sha256"] = hashlib.sha256(body).hexdigest()
        record["bytes"] = len(body)
        seen.append(record)
        status = 200 if "error" not in record else 502
        answer = json.dumps(record).encode()
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": answer})

    return app


@asynccontextmanager
async def serve(app: Any) -> AsyncIterator[int]:
    port = free_port()
    # No log configuration: uvicorn would otherwise set its loggers' levels for the rest
    # of the test session (tests/core/test_logging.py reads uvicorn.access).
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        http=TapProtocol,
        lifespan="off",
        log_config=None,
        log_level=None,
        access_log=False,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    try:
        yield port
    finally:
        server.should_exit = True
        await task


async def post(port: int, body: bytes, *, chunked: bool = False, cut_at: int = 0) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    framing = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {len(body)}"
    writer.write(f"POST /x HTTP/1.1\r\nHost: t\r\n{framing}\r\n\r\n".encode())
    payload = f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n" if chunked else body
    if cut_at:
        writer.write(payload[:cut_at])
        await writer.drain()
        await asyncio.sleep(0.2)
        writer.transport.abort()
        return b""
    for i in range(0, len(payload), 1 << 20):
        writer.write(payload[i : i + (1 << 20)])
        await writer.drain()
    answer = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    return answer


async def test_a_slow_sink_gets_every_byte_in_order() -> None:
    seen: list[dict[str, Any]] = []
    body = os.urandom(5 * 1024 * 1024 + 7)
    async with serve(make_app(lambda: Sink(slow=True), seen)) as port:
        answer = await post(port, body)
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
    assert b"connection: close" in answer.lower()
    assert seen == [{"tap": True, "sha256": hashlib.sha256(body).hexdigest(), "bytes": len(body)}]


async def test_a_chunked_body_is_not_offered_the_tap() -> None:
    seen: list[dict[str, Any]] = []
    body = os.urandom(300_000)
    async with serve(make_app(Sink, seen)) as port:
        answer = await post(port, body, chunked=True)
    assert answer.startswith(b"HTTP/1.1 200")
    assert seen[0]["tap"] is False
    assert seen[0]["sha256"] == hashlib.sha256(body).hexdigest()


@pytest.mark.parametrize(
    ("sink", "error"),
    [({"stall": True}, SinkStalled.__name__), ({"end_after": 2}, SinkEnded.__name__)],
)
async def test_a_failed_sink_still_lets_the_client_read_the_answer(
    sink: dict[str, Any], error: str
) -> None:
    # The rest of the body is read and dropped (lingering close), so the client, still
    # sending, reads the error answer rather than a reset connection.
    seen: list[dict[str, Any]] = []
    body = os.urandom(20 * 1024 * 1024)
    async with serve(make_app(lambda: Sink(**sink), seen)) as port:
        answer = await post(port, body)
    assert answer.startswith(b"HTTP/1.1 502"), answer[:200]
    assert seen[0]["error"] == error
    assert seen[0]["bytes"] < len(body)


async def test_a_client_that_vanishes_mid_body_is_client_gone() -> None:
    seen: list[dict[str, Any]] = []
    body = os.urandom(8 * 1024 * 1024)
    async with serve(make_app(Sink, seen)) as port:
        await post(port, body, cut_at=3 * 1024 * 1024)
        for _ in range(100):
            if seen:
                break
            await asyncio.sleep(0.02)
    assert seen[0]["error"] == "ClientGone"
    assert 0 < seen[0]["bytes"] <= 3 * 1024 * 1024
