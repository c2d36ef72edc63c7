"""The real aiohttp-backed transport on real sockets: which failures count as "never sent".

httpx-aiohttp reports most aiohttp failures as `httpx.ConnectTimeout`; a submit must still
not be repeated when the server hung up after receiving it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest

from app.core.config import Settings
from app.core.errors import UpstreamError, UpstreamTimeout
from app.upstream.client import create_upstream
from tests.live import free_port

KEY = "upstream-test-key-0123456789"
OK = b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{"id":"t1"}'


@asynccontextmanager
async def tcp_server(behaviours: list[str]) -> AsyncIterator[tuple[int, list[bytes]]]:
    """A raw HTTP server; each request gets the next behaviour: ok | hangup | silent."""
    received: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                await reader.readexactly(length)
                received.append(head.split(b"\r\n", 1)[0])
                behaviour = behaviours[min(len(received), len(behaviours)) - 1]
                if behaviour == "ok":
                    writer.write(OK)
                    await writer.drain()
                elif behaviour == "hangup":
                    break
                else:
                    await asyncio.sleep(30)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield port, received
    finally:
        server.close()


def aiohttp_settings(make_settings: Callable[..., Settings], url: str, **extra: object) -> Settings:
    return make_settings(
        assemblyai_api_key=KEY,
        assemblyai_api_base_url=url,
        upstream_transport="aiohttp",
        upstream_retry_attempts=3,
        **extra,
    )


async def test_submit_not_repeated_when_server_hung_up(
    make_settings: Callable[..., Settings],
) -> None:
    async with tcp_server(["hangup", "ok"]) as (port, received):
        upstream = create_upstream(
            aiohttp_settings(make_settings, f"http://127.0.0.1:{port}").upstream
        )
        try:
            with pytest.raises(UpstreamError) as info:
                await upstream.rest.submit({"audio_url": "https://example.com/a.wav"})
        finally:
            await upstream.aclose()
    assert info.value.status_code == 502
    assert "ServerDisconnectedError" in info.value.message  # what failed, not the mapping
    assert received == [b"POST /v2/transcript HTTP/1.1"]


async def test_get_repeated_when_server_hung_up(make_settings: Callable[..., Settings]) -> None:
    async with tcp_server(["hangup", "ok"]) as (port, received):
        upstream = create_upstream(
            aiohttp_settings(make_settings, f"http://127.0.0.1:{port}").upstream
        )
        try:
            assert (await upstream.rest.get_transcript("t1")) == {"id": "t1"}
        finally:
            await upstream.aclose()
    assert len(received) == 2


async def test_submit_read_timeout_is_504_and_not_repeated(
    make_settings: Callable[..., Settings],
) -> None:
    async with tcp_server(["silent"]) as (port, received):
        settings = aiohttp_settings(
            make_settings, f"http://127.0.0.1:{port}", upstream_timeout_s=0.3
        )
        upstream = create_upstream(settings.upstream)
        try:
            with pytest.raises(UpstreamTimeout) as info:
                await upstream.rest.submit({"audio_url": "https://example.com/a.wav"})
        finally:
            await upstream.aclose()
    assert info.value.status_code == 504
    assert len(received) == 1


async def test_submit_retried_when_connection_refused(
    make_settings: Callable[..., Settings], caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()  # nothing listens: the request provably never left
    upstream = create_upstream(aiohttp_settings(make_settings, f"http://127.0.0.1:{port}").upstream)
    caplog.set_level(logging.INFO, logger="app.upstream.client")
    try:
        with pytest.raises(UpstreamError) as info:
            await upstream.rest.submit({"audio_url": "https://example.com/a.wav"})
    finally:
        await upstream.aclose()
    assert info.value.status_code == 502
    retries = [r for r in caplog.records if r.getMessage() == "upstream.retry"]
    assert len(retries) == 2  # three attempts
