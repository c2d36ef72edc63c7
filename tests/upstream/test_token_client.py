"""The token mints on their production path: the keep-alive GET pool against a real local
server (no respx): auth header per host, the retry policy and the error mapping, the same
as `_send` gives every other call (tests/upstream/test_client.py)."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import pytest

from app.core.config import Settings
from app.core.errors import (
    RateLimited,
    UpstreamClientError,
    UpstreamError,
    UpstreamRejectedKey,
    UpstreamTimeout,
)
from app.upstream.client import Upstream, create_upstream
from app.upstream.http1 import GetPool
from tests.live import free_port

KEY = "upstream-test-key-0123456789"


@dataclass
class Seen:
    """One request as the server received it."""

    target: str
    headers: dict[str, str]


@dataclass
class Script:
    """What the server does with each request, in order (the last one repeats):
    ("ok",) answers a token; (status, body, headers) answers that; ("hangup",) closes the
    connection without answering; ("silent",) never answers."""

    steps: list[tuple[object, ...]] = field(default_factory=lambda: [("ok",)])
    seen: list[Seen] = field(default_factory=list)


def _answer(status: int, body: object, headers: dict[str, str]) -> bytes:
    payload = json.dumps(body).encode()
    head = [f"HTTP/1.1 {status} X", "Content-Type: application/json"]
    head += [f"{name}: {value}" for name, value in headers.items()]
    head.append(f"Content-Length: {len(payload)}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + payload


@asynccontextmanager
async def token_server(script: Script) -> AsyncIterator[str]:
    """A raw keep-alive HTTP/1.1 server on a free port, playing `script`."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
                line, *header_lines = head.strip().split("\r\n")
                headers = {}
                for header in header_lines:
                    name, _, value = header.partition(":")
                    headers[name.strip().lower()] = value.strip()
                script.seen.append(Seen(line.split(" ")[1], headers))
                step = script.steps[min(len(script.seen), len(script.steps)) - 1]
                if step[0] == "ok":
                    writer.write(_answer(200, {"token": f"tok-{len(script.seen)}"}, {}))
                elif step[0] == "hangup":
                    break
                elif step[0] == "silent":
                    await asyncio.sleep(30)
                else:
                    status, body, extra = step
                    assert isinstance(status, int)
                    assert isinstance(extra, dict)
                    writer.write(_answer(status, body, extra))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.close()


@pytest.fixture
def connect(
    make_settings: Callable[..., Settings],
) -> Callable[..., AsyncIterator[Upstream]]:
    """`async with connect(url, **settings) as upstream:` both token hosts at `url`."""

    @asynccontextmanager
    async def make(url: str, **overrides: object) -> AsyncIterator[Upstream]:
        values: dict[str, object] = {
            "assemblyai_api_key": KEY,
            "assemblyai_streaming_base_url": url,
            "assemblyai_agents_base_url": url,
            "upstream_transport": "aiohttp",
            "upstream_retry_attempts": 3,
        }
        values.update(overrides)
        upstream = create_upstream(make_settings(**values).upstream)
        try:
            yield upstream
        finally:
            await upstream.aclose()

    return make


async def test_mints_use_the_get_pool_with_each_hosts_auth(
    connect: Callable[..., AsyncIterator[Upstream]],
) -> None:
    script = Script()
    async with token_server(script) as url, connect(url) as upstream:
        assert await upstream.streaming.mint(60, 600) == {"token": "tok-1"}
        assert await upstream.agents.mint(300) == {"token": "tok-2"}
        assert isinstance(upstream.streaming._pool, GetPool)
        assert isinstance(upstream.agents._pool, GetPool)
        pools = (upstream.streaming._pool, upstream.agents._pool)
    assert all(p._closed and not p._idle for p in pools)  # closed with the Upstream
    streaming, agents = script.seen
    assert streaming.target == "/v3/token?expires_in_seconds=60&max_session_duration_seconds=600"
    assert streaming.headers["authorization"] == KEY
    assert streaming.headers["user-agent"] == "aai-proxy/0.1"
    assert agents.target == "/v1/token?expires_in_seconds=300"
    assert agents.headers["authorization"] == f"Bearer {KEY}"


async def test_httpx_transport_setting_sends_mints_through_httpx(
    connect: Callable[..., AsyncIterator[Upstream]],
) -> None:
    script = Script()
    async with token_server(script) as url, connect(url, upstream_transport="httpx") as upstream:
        assert await upstream.streaming.mint(60) == {"token": "tok-1"}
        assert upstream.streaming._pool is None
    assert script.seen[0].headers["authorization"] == KEY


async def test_mint_retried_on_503_then_succeeds(
    connect: Callable[..., AsyncIterator[Upstream]], caplog: pytest.LogCaptureFixture
) -> None:
    script = Script([(503, {"error": "busy"}, {}), (503, {"error": "busy"}, {}), ("ok",)])
    caplog.set_level(logging.INFO, logger="app.upstream.client")
    async with token_server(script) as url, connect(url) as upstream:
        assert await upstream.streaming.mint(60) == {"token": "tok-3"}
    assert len(script.seen) == 3
    retries = [r for r in caplog.records if r.getMessage() == "upstream.retry"]
    assert [r.__dict__["attempt"] for r in retries] == [1, 2]
    assert retries[0].__dict__["reason"] == "upstream answered 503"


async def test_mint_5xx_after_all_retries_is_502(
    connect: Callable[..., AsyncIterator[Upstream]],
) -> None:
    script = Script([(500, {"error": "internal failure"}, {})])
    async with token_server(script) as url, connect(url) as upstream:
        with pytest.raises(UpstreamError) as info:
            await upstream.streaming.mint(60)
    assert type(info.value) is UpstreamError
    assert info.value.status_code == 502
    assert "internal failure" in info.value.message
    assert len(script.seen) == 3  # UPSTREAM_RETRY_ATTEMPTS


async def test_mint_retried_when_server_hung_up(
    connect: Callable[..., AsyncIterator[Upstream]],
) -> None:
    script = Script([("hangup",), ("ok",)])
    async with token_server(script) as url, connect(url) as upstream:
        assert await upstream.agents.mint(60) == {"token": "tok-2"}
    assert len(script.seen) == 2


async def test_mint_429_retry_after_is_honoured(
    connect: Callable[..., AsyncIterator[Upstream]],
) -> None:
    script = Script([(429, {"error": "slow down"}, {"Retry-After": "1"}), ("ok",)])
    async with token_server(script) as url, connect(url) as upstream:
        started = time.monotonic()
        assert await upstream.streaming.mint(60) == {"token": "tok-2"}
        elapsed = time.monotonic() - started
    assert len(script.seen) == 2
    # Backoff is zero in these settings, so only Retry-After explains the wait.
    assert elapsed >= 0.95


async def test_mint_429_over_the_bound_is_passed_on(
    connect: Callable[..., AsyncIterator[Upstream]],
) -> None:
    script = Script([(429, {"error": "slow down"}, {"Retry-After": "120"})])
    async with token_server(script) as url, connect(url) as upstream:
        started = time.monotonic()
        with pytest.raises(RateLimited) as info:
            await upstream.streaming.mint(60)
        assert time.monotonic() - started < 1
    assert len(script.seen) == 1
    assert info.value.status_code == 429
    assert info.value.headers["Retry-After"] == "120"


async def test_mint_401_is_502_rejected_key_and_not_retried(
    connect: Callable[..., AsyncIterator[Upstream]],
) -> None:
    script = Script([(401, {"error": "Authentication error, API token missing"}, {})])
    async with token_server(script) as url, connect(url) as upstream:
        with pytest.raises(UpstreamRejectedKey) as info:
            await upstream.agents.mint(60)
    assert info.value.status_code == 502
    assert "service's key" in info.value.message
    assert KEY not in info.value.message
    assert len(script.seen) == 1


async def test_mint_4xx_passes_upstream_message(
    connect: Callable[..., AsyncIterator[Upstream]],
) -> None:
    script = Script([(400, {"error": "expires_in_seconds must be <= 600"}, {})])
    async with token_server(script) as url, connect(url) as upstream:
        with pytest.raises(UpstreamClientError) as info:
            await upstream.streaming.mint(60)
    assert info.value.status_code == 400
    assert info.value.message == "expires_in_seconds must be <= 600"
    assert len(script.seen) == 1


async def test_mint_timeout_is_504_after_retries(
    connect: Callable[..., AsyncIterator[Upstream]],
) -> None:
    script = Script([("silent",)])
    async with (
        token_server(script) as url,
        connect(url, upstream_timeout_s=0.2, upstream_retry_attempts=2) as upstream,
    ):
        with pytest.raises(UpstreamTimeout) as info:
            await upstream.streaming.mint(60)
    assert info.value.status_code == 504
    assert info.value.message == UpstreamTimeout.message
    assert len(script.seen) == 2  # a mint is idempotent: retried before giving up


async def test_mint_connection_refused_is_502_after_retries(
    connect: Callable[..., AsyncIterator[Upstream]], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="app.upstream.client")
    async with connect(f"http://127.0.0.1:{free_port()}") as upstream:
        with pytest.raises(UpstreamError) as info:
            await upstream.streaming.mint(60)
    assert type(info.value) is UpstreamError
    assert info.value.status_code == 502
    assert "could not be reached" in info.value.message
    retries = [r for r in caplog.records if r.getMessage() == "upstream.retry"]
    assert len(retries) == 2  # three attempts
    assert all(KEY not in r.getMessage() for r in caplog.records)


async def test_mint_retry_after_on_a_5xx_is_capped(
    connect: Callable[..., AsyncIterator[Upstream]],
) -> None:
    # A 503's Retry-After is honoured only up to UPSTREAM_RETRY_AFTER_MAX_S: an upstream
    # asking for an hour must not hold a mint for an hour.
    script = Script([(503, {"error": "busy"}, {"Retry-After": "4"}), ("ok",)])
    async with (
        token_server(script) as url,
        connect(url, upstream_retry_after_max_s=0.2) as upstream,
    ):
        started = time.monotonic()
        assert await upstream.streaming.mint(60) == {"token": "tok-2"}
        assert time.monotonic() - started < 2
