"""The mint's hot path: `MintShortcut` (the compatible mint routes skip FastAPI's routing
but keep everything the app's middleware and error handlers give every other route), the
start-up heap hidden from the cyclic collector, and the app's own keep-alive token GET
pool (the other token tests inject an httpx transport)."""

from __future__ import annotations

import gc
from collections.abc import Callable
from typing import Any

import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from httpx import AsyncClient

from app.main import create_app
from app.tokens.router import MintShortcut
from app.upstream.http1 import GetPool
from tests.tokens.conftest import FakeUpstream, client_for
from tests.upstream.test_token_client import Script, token_server

APP_ORIGIN = "https://app.example.com"


async def test_mints_go_through_the_shortcut(
    client: AsyncClient,
    committed_key: Callable[..., Any],
    fake_upstream: FakeUpstream,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    raw, _ = await committed_key("tokens:streaming", "tokens:agents")
    handled: list[str] = []
    for path, endpoint in list(MintShortcut.ENDPOINTS.items()):

        async def spy(request: Any, endpoint: Any = endpoint, path: str = path) -> Any:
            handled.append(path)
            return await endpoint(request)

        monkeypatch.setitem(MintShortcut.ENDPOINTS, path, spy)
    for path in ("/v3/token", "/v1/token"):
        response = await client.get(
            path, params={"expires_in_seconds": 30}, headers={"Authorization": raw}
        )
        assert response.status_code == 200, response.text
        assert response.json() == {"token": fake_upstream.issued[-1]}
    assert handled == ["/v3/token", "/v1/token"]


async def test_request_id_and_cors_still_apply(
    make_app: Callable[..., Any], committed_key: Callable[..., Any]
) -> None:
    raw, _ = await committed_key("tokens:streaming")
    async with make_app(cors_origins=[APP_ORIGIN]) as app, client_for(app) as client:
        response = await client.get(
            "/v3/token?expires_in_seconds=30",
            headers={"Authorization": raw, "Origin": APP_ORIGIN, "X-Request-ID": "req-123"},
        )
        assert response.status_code == 200, response.text
        assert response.headers["x-request-id"] == "req-123"
        assert response.headers["access-control-allow-origin"] == APP_ORIGIN
        assert "Origin" in response.headers["vary"]

        foreign = await client.get(
            "/v3/token?expires_in_seconds=30",
            headers={"Authorization": raw, "Origin": "https://evil.example"},
        )
        assert "access-control-allow-origin" not in foreign.headers
        assert foreign.headers["x-request-id"]


async def test_errors_are_answered_by_the_apps_handler(
    client: AsyncClient, committed_key: Callable[..., Any], fake_upstream: FakeUpstream
) -> None:
    raw, _ = await committed_key("tokens:streaming")
    missing = await client.get("/v3/token?expires_in_seconds=30")
    assert missing.status_code == 401
    assert missing.json()["error"] == "Unauthorized"
    assert missing.headers["x-request-id"]

    fake_upstream.fail_status, fake_upstream.retry_after = 429, "7"
    limited = await client.get("/v3/token?expires_in_seconds=30", headers={"Authorization": raw})
    assert limited.status_code == 429
    assert limited.headers["retry-after"] == "7"
    assert set(limited.json()) == {"error", "detail"}


async def test_other_methods_and_paths_reach_the_router(
    client: AsyncClient, committed_key: Callable[..., Any], fake_upstream: FakeUpstream
) -> None:
    raw, _ = await committed_key("tokens:streaming")
    post = await client.post("/v3/token?expires_in_seconds=30", headers={"Authorization": raw})
    assert post.status_code == 405
    head = await client.head("/v3/token?expires_in_seconds=30", headers={"Authorization": raw})
    assert head.status_code == 405  # as the router answers it: the route is GET only
    assert (await client.get("/v3/tokens")).status_code == 404
    assert fake_upstream.calls == []


async def test_a_started_app_has_frozen_its_startup_heap(token_app: FastAPI) -> None:
    # Full collections then skip start-up's objects (bench/token_mint.py's p99 and CPU).
    assert gc.get_freeze_count() > 10_000


async def test_mints_on_the_production_upstream_path(
    make_settings: Callable[..., Any],
    committed_key: Callable[..., Any],
    audit_rows: Callable[..., Any],
) -> None:
    # No injected transport: the app's own plain aiohttp token session, a real local server.
    script = Script(
        [
            ("ok",),
            (401, {"error": "Authentication error"}, {}),
            (429, {"error": "slow down"}, {"Retry-After": "7"}),
        ]
    )
    raw, key_id = await committed_key("tokens:streaming")
    async with token_server(script) as url:
        settings = make_settings(
            assemblyai_api_key="service-key-0123456789",
            assemblyai_streaming_base_url=url,
            upstream_retry_attempts=1,
        )
        app = create_app(settings, configure_logs=False)
        async with LifespanManager(app), client_for(app) as client:
            ok = await client.get("/v3/token?expires_in_seconds=30", headers={"Authorization": raw})
            assert ok.status_code == 200, ok.text
            assert ok.json() == {"token": "tok-1"}
            assert isinstance(app.state.upstream.streaming._pool, GetPool)
            rejected = await client.get(
                "/v3/token?expires_in_seconds=30", headers={"Authorization": raw}
            )
            assert rejected.status_code == 502
            assert rejected.json()["error"] == "UpstreamRejectedKey"
            limited = await client.get(
                "/v3/token?expires_in_seconds=30", headers={"Authorization": raw}
            )
            assert limited.status_code == 429
            assert limited.headers["retry-after"] == "7"
    assert [s.headers["authorization"] for s in script.seen] == ["service-key-0123456789"] * 3
    assert script.seen[0].target.startswith("/v3/token?expires_in_seconds=30&")
    rows = await audit_rows(key_id)
    assert [r.outcome for r in rows] == ["granted", "failed", "failed"]


async def test_a_browser_request_is_left_to_the_full_stack(
    make_app: Callable[..., Any],
    committed_key: Callable[..., Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # With an Origin header CORS must decide, in CORSMiddleware alone: the shortcut steps
    # aside and the registered route answers.
    raw, _ = await committed_key("tokens:streaming")
    handled: list[str] = []
    endpoint = MintShortcut.ENDPOINTS["/v3/token"]

    async def spy(request: Any) -> Any:
        handled.append("shortcut")
        return await endpoint(request)

    monkeypatch.setitem(MintShortcut.ENDPOINTS, "/v3/token", spy)
    async with make_app(cors_origins=[APP_ORIGIN]) as app, client_for(app) as client:
        browser = await client.get(
            "/v3/token?expires_in_seconds=30", headers={"Authorization": raw, "Origin": APP_ORIGIN}
        )
        assert browser.status_code == 200, browser.text
        assert browser.headers["access-control-allow-origin"] == APP_ORIGIN
        assert handled == []
        server = await client.get(
            "/v3/token?expires_in_seconds=30",
            headers={"Authorization": raw, "X-Request-ID": "server-1"},
        )
        assert server.status_code == 200, server.text
        assert server.headers["x-request-id"] == "server-1"
        assert "access-control-allow-origin" not in server.headers
        assert handled == ["shortcut"]


async def test_an_unexpected_error_on_the_shortcut_is_a_redacted_500(
    client: AsyncClient,
    committed_key: Callable[..., Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    raw, _ = await committed_key("tokens:streaming")

    async def broken(request: Any) -> Any:
        raise RuntimeError(f"boom with {request.headers['authorization']}")

    monkeypatch.setitem(MintShortcut.ENDPOINTS, "/v3/token", broken)
    response = await client.get(
        "/v3/token?expires_in_seconds=30", headers={"Authorization": raw, "X-Request-ID": "r-500"}
    )
    assert response.status_code == 500
    assert response.headers["x-request-id"] == "r-500"
    assert response.json()["error"] == "InternalError"
    assert raw not in response.text  # (log redaction: tests/core/test_logging.py)
