"""The token mints' keep-alive GET pool (`app/upstream/http1.py`) against real local servers,
on both event loops the service can run on (asyncio's, and uvloop's under uvicorn), and
over TLS with a real certificate chain (trustme)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import ssl
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
import trustme

from app.upstream.http1 import (
    BadResponse,
    ConnectFailed,
    ConnectionLost,
    ConnectTimeout,
    GetPool,
    ReadTimeout,
    open_post,
)
from app.upstream.transport import is_connect_failure, is_timeout
from tests.live import free_port
from tests.loops import on_both_loops

TOKEN = b'{"token":"t"}'


def ok(body: bytes = TOKEN, extra: str = "") -> bytes:
    return (
        f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n{extra}"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


Handler = Callable[[int, bytes], Awaitable[bytes | None]]


@dataclass
class Server:
    """Counts connections and requests; `answer(n, request_head)` gives each request's raw
    answer (None: close the connection without one)."""

    answer: Handler
    connections: int = 0
    requests: list[bytes] = field(default_factory=list)
    close_after_answer: bool = False


@asynccontextmanager
async def serve(server: Server, tls: ssl.SSLContext | None = None) -> AsyncIterator[str]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        server.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                server.requests.append(head)
                answer = await server.answer(len(server.requests), head)
                if answer is None:
                    break
                writer.write(answer)
                await writer.drain()
                if server.close_after_answer:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    listener = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=tls)
    port = listener.sockets[0].getsockname()[1]
    try:
        yield f"{'https' if tls else 'http'}://127.0.0.1:{port}"
    finally:
        listener.close()


def pool_for(url: str, **overrides: Any) -> GetPool:
    options: dict[str, Any] = {
        "max_connections": 8,
        "keepalive_s": 30.0,
        "connect_timeout_s": 2.0,
        "pool_timeout_s": 2.0,
        "read_timeout_s": 2.0,
        "ssl_context": None,
    }
    options.update(overrides)
    return GetPool(url, **options)


def get_request(pool: GetPool, target: str = "/v3/token?expires_in_seconds=60") -> bytes:
    return pool.request_bytes(target, {"Authorization": "k", "User-Agent": "aai-proxy/test"})


def always(answer: bytes) -> Handler:
    async def handler(n: int, head: bytes) -> bytes | None:
        return answer

    return handler


@on_both_loops
async def test_sequential_gets_share_one_keep_alive_connection() -> None:
    server = Server(always(ok()))
    async with serve(server) as url:
        pool = pool_for(url)
        for _ in range(5):
            answer = await pool.get(get_request(pool))
            assert (answer.status, answer.body) == (200, TOKEN)
        await pool.aclose()
    assert server.connections == 1
    first = server.requests[0].decode()
    assert first.startswith("GET /v3/token?expires_in_seconds=60 HTTP/1.1\r\n")
    assert f"Host: {url.removeprefix('http://')}\r\n" in first
    assert "Authorization: k\r\n" in first


@on_both_loops
async def test_concurrent_gets_never_open_more_than_the_limit() -> None:
    async def slow(n: int, head: bytes) -> bytes:
        await asyncio.sleep(0.05)
        return ok()

    server = Server(slow)
    async with serve(server) as url:
        pool = pool_for(url, max_connections=2)
        answers = await asyncio.gather(*(pool.get(get_request(pool)) for _ in range(10)))
        await pool.aclose()
    assert [a.status for a in answers] == [200] * 10
    assert server.connections == 2


@on_both_loops
async def test_chunked_answers_are_reassembled() -> None:
    chunked = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b'5\r\n{"tok\r\n8\r\nen":"t"}\r\n0\r\n\r\n'
    )
    server = Server(always(chunked))
    async with serve(server) as url:
        pool = pool_for(url)
        assert (await pool.get(get_request(pool))).body == TOKEN
        assert (await pool.get(get_request(pool))).body == TOKEN
        await pool.aclose()
    assert server.connections == 1


@on_both_loops
async def test_connection_close_is_honoured_and_an_unframed_answer_ends_with_it() -> None:
    server = Server(always(ok(extra="Connection: close\r\n")), close_after_answer=True)
    async with serve(server) as url:
        pool = pool_for(url)
        for _ in range(2):
            assert (await pool.get(get_request(pool))).body == TOKEN
        await pool.aclose()
    assert server.connections == 2

    unframed = Server(always(b"HTTP/1.1 200 OK\r\n\r\n" + TOKEN), close_after_answer=True)
    async with serve(unframed) as url:
        pool = pool_for(url)
        assert (await pool.get(get_request(pool))).body == TOKEN
        await pool.aclose()


@on_both_loops
async def test_an_idle_connection_the_server_closed_is_not_reused() -> None:
    # The server hangs up after each answer without saying so (as after its idle timeout).
    server = Server(always(ok()), close_after_answer=True)
    async with serve(server) as url:
        pool = pool_for(url)
        assert (await pool.get(get_request(pool))).status == 200
        await asyncio.sleep(0.05)
        assert (await pool.get(get_request(pool))).status == 200
        await pool.aclose()
    assert server.connections == 2


@on_both_loops
async def test_headers_are_kept_and_statuses_passed_on() -> None:
    answer = b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 7\r\nContent-Length: 2\r\n\r\n{}"
    server = Server(always(answer))
    async with serve(server) as url:
        pool = pool_for(url)
        got = await pool.get(get_request(pool))
        await pool.aclose()
    assert got.status == 429
    assert (b"Retry-After", b"7") in got.headers


@on_both_loops
async def test_garbage_and_oversized_answers_are_bad_responses() -> None:
    for raw in (b"SSH-2.0-OpenSSH\r\n\r\n", ok(b"x" * ((1 << 20) + 1))):
        server = Server(always(raw))
        async with serve(server) as url:
            pool = pool_for(url)
            with pytest.raises(BadResponse):
                await pool.get(get_request(pool))
            assert pool._open == 0  # the connection was dropped, its slot freed
            await pool.aclose()


@on_both_loops
async def test_a_hang_up_before_the_answer_is_connection_lost() -> None:
    async def hang_up(n: int, head: bytes) -> None:
        return None

    async with serve(Server(hang_up)) as url:
        pool = pool_for(url)
        with pytest.raises(ConnectionLost) as info:
            await pool.get(get_request(pool))
        await pool.aclose()
    assert not is_timeout(info.value)
    assert not is_connect_failure(info.value)


@on_both_loops
async def test_a_silent_server_is_a_read_timeout() -> None:
    async def silent(n: int, head: bytes) -> bytes:
        await asyncio.sleep(5)
        return ok()

    async with serve(Server(silent)) as url:
        pool = pool_for(url, read_timeout_s=0.2)
        with pytest.raises(ReadTimeout) as info:
            await pool.get(get_request(pool))
        assert pool._open == 0
        await pool.aclose()
    assert is_timeout(info.value)
    assert not is_connect_failure(info.value)


@on_both_loops
async def test_a_refused_connection_is_a_connect_failure() -> None:
    pool = pool_for(f"http://127.0.0.1:{free_port()}")
    with pytest.raises(ConnectFailed) as info:
        await pool.get(get_request(pool))
    assert is_connect_failure(info.value)
    assert not is_timeout(info.value)
    assert pool._open == 0


@on_both_loops
async def test_waiting_for_a_free_connection_is_bounded() -> None:
    async def silent(n: int, head: bytes) -> bytes:
        await asyncio.sleep(5)
        return ok()

    async with serve(Server(silent)) as url:
        pool = pool_for(url, max_connections=1, pool_timeout_s=0.2, read_timeout_s=1)
        busy = asyncio.create_task(pool.get(get_request(pool)))
        await asyncio.sleep(0.05)
        with pytest.raises(ConnectTimeout) as info:
            await pool.get(get_request(pool))
        assert is_connect_failure(info.value)
        assert is_timeout(info.value)
        busy.cancel()
        with pytest.raises(asyncio.CancelledError):
            await busy
        assert pool._open == 0
        assert not pool._waiters
        await pool.aclose()


@on_both_loops
async def test_a_cancelled_get_frees_its_slot_for_a_waiter() -> None:
    async def first_slow(n: int, head: bytes) -> bytes:
        if n == 1:
            await asyncio.sleep(5)
        return ok()

    server = Server(first_slow)
    async with serve(server) as url:
        pool = pool_for(url, max_connections=1)
        slow = asyncio.create_task(pool.get(get_request(pool)))
        await asyncio.sleep(0.05)
        waiting = asyncio.create_task(pool.get(get_request(pool)))
        await asyncio.sleep(0.05)
        slow.cancel()
        assert (await asyncio.wait_for(waiting, 2)).status == 200
        await pool.aclose()
    assert server.connections == 2  # the cancelled request's connection was not reused


@on_both_loops
async def test_tls_verifies_the_servers_certificate() -> None:
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_ctx)
    trusting = ssl.create_default_context()
    ca.configure_trust(trusting)
    server = Server(always(ok()))
    async with serve(server, tls=server_ctx) as url:
        pool = pool_for(url, ssl_context=trusting)
        assert (await pool.get(get_request(pool))).body == TOKEN
        assert (await pool.get(get_request(pool))).body == TOKEN
        await pool.aclose()
        assert server.connections == 1

        untrusting = pool_for(url, ssl_context=ssl.create_default_context())
        with pytest.raises(ConnectFailed):
            await untrusting.get(get_request(untrusting))
        await untrusting.aclose()


def test_a_header_cannot_smuggle_a_line() -> None:
    pool = pool_for("http://127.0.0.1:1")
    with pytest.raises(ValueError, match="line break"):
        pool.request_bytes("/v3/token", {"Authorization": "k\r\nX-Evil: 1"})
    with pytest.raises(ValueError, match="not an http"):
        pool_for("ftp://example.com")


async def pump(stream: Any, body: bytes, size: int = 256 * 1024) -> None:
    """Send `body` through `stream` as the body tap does: one reused buffer, overwritten only
    once the transport holds no view of it."""
    buffer = bytearray(size)
    view = memoryview(buffer)
    drained = asyncio.Event()
    stream.set_drained_callback(drained.set)
    for start in range(0, len(body), size):
        piece = body[start : start + size]
        buffer[: len(piece)] = piece
        drained.clear()
        if not stream.write(view[: len(piece)]):
            await drained.wait()
    stream.set_drained_callback(None)


@asynccontextmanager
async def serve_post(
    received: list[bytes], tls: ssl.SSLContext | None = None
) -> AsyncIterator[str]:
    """Reads one POST with a Content-Length slowly (so the client's buffers fill), answers
    with the SHA-256 of the body."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
        length = next(
            int(line.split(":", 1)[1])
            for line in head.split("\r\n")
            if line.lower().startswith("content-length")
        )
        body = bytearray()
        while len(body) < length:
            body += await reader.read(min(65536, length - len(body)))
            if len(body) % (1 << 20) < 65536:
                await asyncio.sleep(0.001)
        received.append(bytes(body))
        digest = hashlib.sha256(body).hexdigest().encode()
        writer.write(ok(b'{"upload_url":"' + digest + b'"}'))
        await writer.drain()
        writer.close()

    listener = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=tls)
    port = listener.sockets[0].getsockname()[1]
    try:
        yield f"{'https' if tls else 'http'}://127.0.0.1:{port}"
    finally:
        listener.close()


@on_both_loops
async def test_a_streamed_post_reuses_its_buffer_safely_in_plain_and_tls() -> None:
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_ctx)
    trusting = ssl.create_default_context()
    ca.configure_trust(trusting)
    body = os.urandom(12 * 1024 * 1024 + 3)
    for tls, client_ctx in ((None, None), (server_ctx, trusting)):
        received: list[bytes] = []
        async with serve_post(received, tls) as url:
            stream = await open_post(
                url,
                "/v2/upload",
                {"Authorization": "k"},
                content_length=len(body),
                connect_timeout_s=2,
                ssl_context=client_ctx,
            )
            await pump(stream, body)
            answer = await stream.response(5)
            stream.abort()
        assert received == [body]
        assert hashlib.sha256(body).hexdigest().encode() in answer.body


@on_both_loops
async def test_an_interim_1xx_answer_is_skipped() -> None:
    interim = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
    server = Server(always(interim + ok()))
    async with serve(server) as url:
        pool = pool_for(url)
        answer = await pool.get(get_request(pool))
        assert (answer.status, answer.body) == (200, TOKEN)
        assert (await pool.get(get_request(pool))).status == 200  # still in step
        await pool.aclose()
    assert server.connections == 1


@on_both_loops
async def test_an_unframed_answer_cut_by_a_reset_is_connection_lost() -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n{"token":"ab')
        await writer.drain()
        await asyncio.sleep(0.05)
        # Linger 0: the close is a reset, not the clean end that delimits such an answer.
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()

    listener = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    pool = pool_for(f"http://127.0.0.1:{port}")
    try:
        with pytest.raises(ConnectionLost):
            await pool.get(get_request(pool))
    finally:
        await pool.aclose()
        listener.close()


@on_both_loops
async def test_header_bytes_pass_through_as_sent() -> None:
    answer = b"HTTP/1.1 503 X\r\nX-Note: caf\xe9\r\nContent-Length: 2\r\n\r\n{}"
    async with serve(Server(always(answer))) as url:
        pool = pool_for(url)
        got = await pool.get(get_request(pool))
        await pool.aclose()
    assert (b"X-Note", b"caf\xe9") in got.headers
