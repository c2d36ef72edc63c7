"""Pooled upstream connections are dropped after UPSTREAM_KEEPALIVE_S idle seconds.

A server closes idle keep-alive connections on its own schedule (uvicorn, which runs the
emulator, after 5 s). A pool that keeps them longer sends the next request, sometimes, on
a connection the server is closing: a GET is retried, but a submit is not (502). Real
sockets: the server below sees the client hang up the idle connection.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest

from app.core.config import Settings
from app.upstream.client import create_upstream

KEY = "upstream-test-key-0123456789"
BODY = b'{"id":"t1","token":"tok"}'
OK = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
    b"Content-Length: " + str(len(BODY)).encode() + b"\r\n\r\n" + BODY
)


@asynccontextmanager
async def keepalive_server() -> AsyncIterator[tuple[int, list[str]]]:
    """Answers every request and keeps each connection open until the client closes it;
    the list gets "open" per accepted connection."""
    connections: list[str] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append("open")
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                await reader.readexactly(length)
                writer.write(OK)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield port, connections
    finally:
        server.close()


def test_default_is_below_uvicorns_idle_timeout() -> None:
    # uvicorn (the emulator) closes idle connections after 5 s (timeout_keep_alive).
    import uvicorn

    assert (
        Settings.model_fields["upstream_keepalive_s"].default
        < uvicorn.Config(app=None).timeout_keep_alive
    )


@pytest.mark.parametrize("transport", ["aiohttp", "httpx"])
async def test_connection_idle_past_keepalive_is_not_reused(
    make_settings: Callable[..., Settings], transport: str
) -> None:
    async with keepalive_server() as (port, connections):
        url = f"http://127.0.0.1:{port}"
        upstream = create_upstream(
            make_settings(
                assemblyai_api_key=KEY,
                assemblyai_api_base_url=url,
                assemblyai_streaming_base_url=url,
                upstream_transport=transport,
                upstream_keepalive_s=0.2,
            ).upstream
        )
        try:
            for call in (
                lambda: upstream.rest.submit({"audio_url": "https://example.com/a.wav"}),
                lambda: upstream.streaming.mint(60),  # the token session (plain aiohttp)
            ):
                await call()
                await call()  # at once: the pooled connection is reused
                opened = len(connections)
                # Time itself is the point here: idle for longer than the keep-alive.
                await asyncio.sleep(0.5)
                await call()
                assert len(connections) == opened + 1, "an idle-expired connection was reused"
        finally:
            await upstream.aclose()
