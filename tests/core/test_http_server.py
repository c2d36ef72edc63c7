"""The body tap (app/core/http_server.py) under a real uvicorn server with `TapProtocol`,
on real sockets, on both event loops, with sinks that are slow, stall or end early, and
clients that are slow, stop or vanish."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import uvicorn

from app.core.body_tap import EXTENSION, SinkEnded, SinkStalled
from app.core.http_server import TapProtocol
from tests.live import free_port
from tests.loops import on_both_loops

MIB = 1024 * 1024


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


def make_app(
    make_sink: Callable[[], Sink], seen: list[dict[str, Any]], *, delay_s: float = 0.0
) -> Any:
    """Reads the first body part through receive(), waits `delay_s` (an upstream connect),
    pipes the rest through the tap into a sink, and answers what it got."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        tap = scope.get("extensions", {}).get(EXTENSION)
        record: dict[str, Any] = {"tap": tap is not None}
        first = await receive()
        body = bytes(first["body"])
        await asyncio.sleep(delay_s)
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
async def serve(app: Any, *, keep_alive_s: float = 5) -> AsyncIterator[int]:
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
        timeout_keep_alive=keep_alive_s,  # type: ignore[arg-type]
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


async def post(
    port: int,
    body: bytes,
    *,
    chunked: bool = False,
    piece: int = MIB,
    pause_s: float = 0.0,
    stop_at: int | None = None,
) -> tuple[bytes, asyncio.StreamWriter]:
    """POST `body` on a fresh connection (`pause_s` between pieces; stop sending at
    `stop_at`), read the answer until the server closes; returns it and the writer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    framing = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {len(body)}"
    writer.write(f"POST /x HTTP/1.1\r\nHost: t\r\n{framing}\r\n\r\n".encode())
    payload = f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n" if chunked else body
    payload = payload[:stop_at] if stop_at is not None else payload

    async def send_all() -> None:
        for i in range(0, len(payload), piece):
            writer.write(payload[i : i + piece])
            await writer.drain()
            await asyncio.sleep(pause_s)

    sender = asyncio.create_task(send_all())
    answer = await asyncio.wait_for(reader.read(), 20)
    await sender  # raises if the server reset the connection while we were sending
    return answer, writer


@on_both_loops
async def test_a_slow_sink_gets_every_byte_in_order() -> None:
    seen: list[dict[str, Any]] = []
    body = os.urandom(5 * MIB + 7)
    async with serve(make_app(lambda: Sink(slow=True), seen)) as port:
        answer, writer = await post(port, body)
        writer.close()
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
    assert b"connection: close" in answer.lower()  # the parser never saw the tapped bytes
    assert seen == [{"tap": True, "sha256": hashlib.sha256(body).hexdigest(), "bytes": len(body)}]


@on_both_loops
async def test_a_chunked_body_is_not_offered_the_tap() -> None:
    seen: list[dict[str, Any]] = []
    body = os.urandom(300_000)
    async with serve(make_app(Sink, seen)) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n")
        writer.write(f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        writer.close()
    assert head.startswith(b"HTTP/1.1 200")
    assert b"connection: close" not in head.lower()  # the connection is kept
    assert seen[0]["tap"] is False
    assert seen[0]["sha256"] == hashlib.sha256(body).hexdigest()


@on_both_loops
async def test_a_body_finished_before_the_pipe_keeps_the_connection() -> None:
    # The route took its time (an upstream connect) and uvicorn read the whole (small) body
    # meanwhile: pipe hands over what uvicorn holds, and nothing else changes.
    seen: list[dict[str, Any]] = []
    body = os.urandom(40_000)
    async with serve(make_app(Sink, seen, delay_s=0.2)) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(f"POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: {len(body)}\r\n\r\n".encode())
        writer.write(body[:1000])
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(body[1000:])
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        writer.close()
    assert head.startswith(b"HTTP/1.1 200"), head
    assert b"connection: close" not in head.lower()
    assert seen == [{"tap": True, "sha256": hashlib.sha256(body).hexdigest(), "bytes": len(body)}]


@on_both_loops
async def test_a_client_gone_before_the_pipe_is_client_gone() -> None:
    seen: list[dict[str, Any]] = []
    body = os.urandom(4 * MIB)
    async with serve(make_app(Sink, seen, delay_s=0.2)) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(f"POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: {len(body)}\r\n\r\n".encode())
        writer.write(body[:100_000])
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.transport.abort()
        for _ in range(100):
            if seen:
                break
            await asyncio.sleep(0.02)
    assert seen[0]["error"] == "ClientGone"


@on_both_loops
async def test_a_failed_sink_still_lets_the_client_send_all_and_read_the_answer() -> None:
    # The rest of the body is read and dropped (a lingering close), so the client, still
    # sending, reads the error answer rather than a reset connection.
    for sink, error in (({"stall": True}, SinkStalled.__name__), ({"end_after": 2}, "SinkEnded")):
        assert error in (SinkStalled.__name__, SinkEnded.__name__)
        seen: list[dict[str, Any]] = []
        body = os.urandom(20 * MIB)
        async with serve(make_app(lambda sink=sink: Sink(**sink), seen)) as port:  # type: ignore[misc]
            answer, writer = await post(port, body)
            writer.close()
        assert answer.startswith(b"HTTP/1.1 502"), answer[:200]
        assert b"connection: close" in answer.lower()  # no reuse of a connection that closes
        assert seen[0]["error"] == error
        assert seen[0]["bytes"] < len(body)


@on_both_loops
async def test_a_slow_client_may_take_longer_than_the_keep_alive_timeout_to_finish() -> None:
    # After a failure, the wait for the rest of the body is an idle timeout (uvicorn's
    # keep-alive timeout between reads), not a deadline from the answer.
    seen: list[dict[str, Any]] = []
    body = os.urandom(8 * MIB)
    app = make_app(lambda: Sink(end_after=1), seen)
    async with serve(app, keep_alive_s=0.5) as port:
        started = time.monotonic()
        answer, writer = await post(port, body, pause_s=0.2)  # ~1.6 s of sending
        writer.close()
    assert time.monotonic() - started > 1.0
    assert answer.startswith(b"HTTP/1.1 502"), answer[:200]


@on_both_loops
async def test_a_client_that_stops_sending_after_a_failure_is_let_go() -> None:
    seen: list[dict[str, Any]] = []
    body = os.urandom(8 * MIB)
    app = make_app(lambda: Sink(end_after=1), seen)
    async with serve(app, keep_alive_s=0.5) as port:
        started = time.monotonic()
        answer, writer = await post(port, body, stop_at=3 * MIB)
        writer.close()
    assert answer.startswith(b"HTTP/1.1 502"), answer[:200]
    assert time.monotonic() - started < 5  # closed after the idle timeout, not held open


@on_both_loops
async def test_a_client_that_vanishes_mid_body_is_client_gone() -> None:
    seen: list[dict[str, Any]] = []
    body = os.urandom(8 * MIB)
    async with serve(make_app(Sink, seen)) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(f"POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: {len(body)}\r\n\r\n".encode())
        writer.write(body[: 3 * MIB])
        await writer.drain()
        await asyncio.sleep(0.2)
        writer.transport.abort()
        for _ in range(100):
            if seen:
                break
            await asyncio.sleep(0.02)
    assert seen[0]["error"] == "ClientGone"
    assert 0 < seen[0]["bytes"] <= 3 * MIB
