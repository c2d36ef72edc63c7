"""A small HTTP/1.1 client for the two hot upstream calls, on asyncio protocols and the
`httptools` parser (llhttp, the parser uvicorn already uses for our own requests): a
keep-alive GET pool for the token mints, and a one-shot streamed POST (`open_post`) for
uploads relayed by the server's body tap (app/core/http_server.py).

Why not aiohttp here: a mint is the service's hottest upstream call, and aiohttp's request
and response objects (URL parsing, header multidicts, the stream reader, the per-request
timer and trace hooks) cost more CPU than the rest of the mint's own work; this pool sends
a prebuilt request and parses a small JSON answer (`bench/token_mint.py` measures both).
It does only that: GET (and the upload's POST), bounded answers framed by
`Content-Length`, chunked encoding or the connection's end, keep-alive, TLS with the
service's one verified context. Every other upstream call keeps httpx (and respx in unit
tests).

Errors follow aiohttp's meaning, so the retry policy and the 502/504 mapping are unchanged:
`ConnectFailed` (the request provably never left), `ConnectTimeout` (both a connect failure
and a timeout), `ConnectionLost` (the server hung up, the request may have been received),
`ReadTimeout`, `BadResponse`.
"""

from __future__ import annotations

import asyncio
import collections
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httptools

from app.core.body_tap import BodySink

MAX_BODY_BYTES = 1 << 20  # a token answer is ~300 bytes; anything near this is not one


class TransportError(Exception):
    """The exchange failed below HTTP."""


class ConnectFailed(TransportError):
    """No connection was made: the request never left."""


class ConnectTimeout(ConnectFailed, TimeoutError):
    """No connection (or no free pooled one) in time."""


class ConnectionLost(TransportError):
    """The server closed the connection before a whole answer arrived."""


class ReadTimeout(TransportError, TimeoutError):
    """The answer did not arrive in time."""


class BadResponse(TransportError):
    """Not a valid HTTP/1.1 answer, or far too large for one."""


@dataclass(frozen=True)
class Answer:
    status: int
    headers: list[tuple[bytes, bytes]]  # as sent: httpx takes bytes, any byte value
    body: bytes


class _Connection(asyncio.Protocol):
    """One upstream connection; at most one request in flight (no pipelining)."""

    def __init__(self) -> None:
        self.transport: Any = None  # asyncio's or uvloop's (not an asyncio.Transport)
        self.closed = False
        self.idle_since = 0.0
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[Answer] | None = None
        self._headers: list[tuple[bytes, bytes]] = []
        self._body: list[bytes] = []
        self._size = 0
        self._headers_done = False
        self._framed = False
        self.keep_alive = False
        self.on_drained: Callable[[], None] | None = None

    # --- asyncio.Protocol -------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if self._waiter is None:
            self.close()  # an answer nobody asked for: the connection is out of step
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(BadResponse("upstream tried to switch protocols"))
        except httptools.HttpParserError as exc:
            if isinstance(exc.__context__, TransportError):  # raised by a callback below
                self._fail(exc.__context__)
                return
            self._fail(BadResponse(f"invalid HTTP answer ({exc})"))

    def pause_writing(self) -> None:
        pass  # writers look at get_write_buffer_size() and wait for resume_writing

    def resume_writing(self) -> None:
        if self.on_drained is not None:
            self.on_drained()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._waiter is not None and not self._waiter.done():
            if exc is None and self._headers_done and not self._framed:
                self._finish()  # an answer delimited by the connection's (clean) end
            else:
                self._waiter.set_exception(ConnectionLost("upstream closed the connection"))
            self._waiter = None

    # --- httptools callbacks ----------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        lower = name.lower()
        if lower == b"content-length" or (
            lower == b"transfer-encoding" and b"chunked" in value.lower()
        ):
            self._framed = True
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        self._headers_done = True

    def on_body(self, body: bytes) -> None:
        self._size += len(body)
        if self._size > MAX_BODY_BYTES:
            raise BadResponse("upstream's answer is too large")  # surfaces from feed_data
        self._body.append(body)

    def on_message_complete(self) -> None:
        self._finish()

    # --- use --------------------------------------------------------------------------

    def send(self, request: bytes, waiter: asyncio.Future[Answer]) -> None:
        self._waiter = waiter
        self._headers, self._body, self._size = [], [], 0
        self._headers_done = self._framed = False
        self.transport.write(request)

    def _finish(self) -> None:
        status = self._parser.get_status_code()
        if 100 <= status < 200 and status != 101:
            # An interim answer (100 Continue, 103 Early Hints): the real one follows.
            self._headers, self._body, self._size = [], [], 0
            self._headers_done = self._framed = False
            return
        waiter, self._waiter = self._waiter, None
        self.keep_alive = self._parser.should_keep_alive() and not self.closed
        if waiter is not None and not waiter.done():
            waiter.set_result(Answer(status, self._headers, b"".join(self._body)))

    def _fail(self, exc: Exception) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(exc)
        self._waiter = None
        self.close()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class Origin:
    """One upstream origin (scheme, host, port, path prefix): request heads and fresh
    connections to it, shared by the GET pool and the one-shot streamed POST."""

    def __init__(self, base_url: str, ssl_context: ssl.SSLContext | None) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) origin: {base_url!r}")
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.netloc = parts.netloc.rpartition("@")[2]
        self.prefix = parts.path.rstrip("/")
        self.ssl = ssl_context if parts.scheme == "https" else None

    def request_bytes(self, target: str, headers: dict[str, str], method: str = "GET") -> bytes:
        """A request head for `target` (path and query) with these headers, ready to send."""
        lines = [f"{method} {self.prefix}{target} HTTP/1.1", f"Host: {self.netloc}"]
        for name, value in headers.items():
            if any(c in name + value for c in "\r\n\0"):
                raise ValueError(f"header {name!r} holds a line break or NUL")
            lines.append(f"{name}: {value}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    async def connect(self, timeout_s: float) -> _Connection:
        """A fresh connection, within `timeout_s`."""
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout_s):
                _, conn = await loop.create_connection(
                    _Connection,
                    self.host,
                    self.port,
                    ssl=self.ssl,
                    server_hostname=self.host if self.ssl else None,
                )
        except TimeoutError:
            raise ConnectTimeout(f"could not connect to {self.netloc} in time") from None
        except (OSError, ssl.SSLError) as exc:
            raise ConnectFailed(f"could not connect to {self.netloc} ({exc})") from exc
        return conn


class GetPool:
    """Keep-alive connections to one origin, at most `max_connections` open; a request
    waits for a free one (within `pool_timeout_s`) rather than opening more."""

    def __init__(
        self,
        base_url: str,
        *,
        max_connections: int,
        keepalive_s: float,
        connect_timeout_s: float,
        pool_timeout_s: float,
        read_timeout_s: float,
        ssl_context: ssl.SSLContext | None,
    ) -> None:
        self.origin = Origin(base_url, ssl_context)
        self.max_connections = max_connections
        self.keepalive_s = keepalive_s
        self.connect_timeout_s = connect_timeout_s
        self.pool_timeout_s = pool_timeout_s
        self.read_timeout_s = read_timeout_s
        self._idle: collections.deque[_Connection] = collections.deque()
        self._open = 0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._closed = False

    def request_bytes(self, target: str, headers: dict[str, str]) -> bytes:
        """A GET head for `target` (path and query) with these headers, ready to send."""
        return self.origin.request_bytes(target, headers)

    async def get(self, request: bytes) -> Answer:
        """Send a prebuilt GET (`request_bytes`) and return the whole answer."""
        conn = await self._acquire()
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[Answer] = loop.create_future()
        timer = loop.call_later(self.read_timeout_s, _expire, waiter)
        try:
            conn.send(request, waiter)
            answer = await waiter
        except BaseException:
            conn.close()
            self._release(conn)
            raise
        finally:
            timer.cancel()
        self._release(conn)
        return answer

    async def _acquire(self) -> _Connection:
        if self._closed:
            raise ConnectFailed("the upstream pool is closed")
        now = time.monotonic()
        while self._idle:
            conn = self._idle.pop()  # the most recently used: the likeliest to be alive
            if not conn.closed and now - conn.idle_since < self.keepalive_s:
                return conn
            conn.close()
            self._open -= 1
        if self._open >= self.max_connections:
            await self._wait_for_slot()
            return await self._acquire()
        self._open += 1
        try:
            return await self.origin.connect(self.connect_timeout_s)
        except BaseException:
            self._open -= 1
            self._wake_one()
            raise

    async def _wait_for_slot(self) -> None:
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout(self.pool_timeout_s):
                await waiter
        except BaseException as exc:
            if waiter in self._waiters:
                self._waiters.remove(waiter)
            elif waiter.done() and not waiter.cancelled():
                self._wake_one()  # woken, but leaving (timeout, cancel): pass the slot on
            if isinstance(exc, TimeoutError):
                raise ConnectTimeout("no free upstream connection in time") from None
            raise

    def _release(self, conn: _Connection) -> None:
        if conn.closed or not conn.keep_alive or self._closed:
            conn.close()
            self._open -= 1
        else:
            conn.idle_since = time.monotonic()
            self._idle.append(conn)
        self._wake_one()

    def _wake_one(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    async def aclose(self) -> None:
        self._closed = True
        while self._idle:
            self._idle.pop().close()
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_exception(ConnectFailed("the upstream pool is closed"))
        self._waiters.clear()


class PostStream(BodySink):
    """One streamed POST on a fresh connection (an upload: never pooled, never retried).
    `write` sends body bytes as they come; `answer` is upstream's answer, which may come
    before the body has ended (a refusal)."""

    def __init__(self, conn: _Connection, answer: asyncio.Future[Answer]) -> None:
        self._conn = conn
        self.answer = answer
        self.ended = answer
        self.opened_at = time.perf_counter()  # for the upload's latency (app/metrics)

    def write(self, data: memoryview) -> bool:
        if self._conn.closed:
            raise ConnectionLost("upstream closed the connection before the body ended")
        if self.answer.done():
            raise ConnectionLost("upstream answered before the body ended")
        self._conn.transport.write(data)
        return bool(self._conn.transport.get_write_buffer_size() == 0)

    def set_drained_callback(self, callback: Callable[[], None] | None) -> None:
        self._conn.on_drained = callback

    async def response(self, timeout_s: float) -> Answer:
        """Upstream's whole answer, within `timeout_s` of the body's end."""
        try:
            async with asyncio.timeout(timeout_s):
                return await asyncio.shield(self.answer)
        except TimeoutError:
            self.abort()
            raise ReadTimeout("upstream did not answer in time") from None

    def abort(self) -> None:
        """Drop the connection now: upstream sees an incomplete body."""
        if self._conn.transport is not None:
            self._conn.transport.abort()
        self._conn.closed = True
        if not self.answer.done():
            self.answer.set_exception(ConnectionLost("the upload was aborted"))
        if not self.answer.cancelled():
            self.answer.exception()  # marked retrieved: nobody needs to await it now


async def open_post(
    base_url: str,
    target: str,
    headers: dict[str, str],
    *,
    content_length: int,
    connect_timeout_s: float,
    ssl_context: ssl.SSLContext | None,
) -> PostStream:
    """Connect (fresh), send the head of a POST with a known length, return the stream."""
    origin = Origin(base_url, ssl_context)
    conn = await origin.connect(connect_timeout_s)
    # Paused as soon as anything is buffered, resumed once all is sent: the body's buffer
    # is reused only when the transport holds no view of it.
    conn.transport.set_write_buffer_limits(high=0, low=0)
    answer: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
    head = origin.request_bytes(
        target, {**headers, "Content-Length": str(content_length)}, method="POST"
    )
    conn.send(head, answer)
    return PostStream(conn, answer)


def _expire(waiter: asyncio.Future[Answer]) -> None:
    if not waiter.done():
        waiter.set_exception(ReadTimeout("upstream did not answer in time"))
