"""Health, readiness, request ids, error shape and the OpenAPI docs."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from httpx import ASGITransport, AsyncClient
from pydantic import SecretStr

from app.core.config import Settings
from app.main import create_app
from tests.live import free_port


@asynccontextmanager
async def serve(app: FastAPI) -> AsyncIterator[AsyncClient]:
    transport = ASGITransport(app=app, raise_app_exceptions=False)
    async with LifespanManager(app), AsyncClient(transport=transport, base_url="http://t") as c:
        yield c


async def test_healthz(client: AsyncClient) -> None:
    response = await client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_readyz_when_migrated(client: AsyncClient) -> None:
    response = await client.get("/readyz")
    assert response.status_code == 200, response.text
    assert response.json() == {"status": "ready"}


async def test_readyz_503_when_database_unreachable(
    make_settings: Callable[..., Settings],
) -> None:
    # Nothing listens on this port: the connection is refused.
    url = f"postgresql://postgres:pw-secret-1@127.0.0.1:{free_port()}/nowhere"
    app = create_app(make_settings(database_url=SecretStr(url)), configure_logs=False)
    async with serve(app) as client:
        assert (await client.get("/healthz")).status_code == 200
        response = await client.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["error"] == "NotReady"
    assert body["detail"].startswith("database unreachable")
    assert "pw-secret-1" not in response.text


async def test_readyz_503_when_not_migrated(
    make_settings: Callable[..., Settings], make_database: Callable[..., str]
) -> None:
    url = await asyncio.to_thread(make_database, migrate=False)
    app = create_app(make_settings(database_url=SecretStr(url)), configure_logs=False)
    async with serve(app) as client:
        response = await client.get("/readyz")
    assert response.status_code == 503
    assert "not migrated" in response.json()["detail"], response.text


async def test_readyz_503_names_missing_heads(
    make_settings: Callable[..., Settings], make_database: Callable[..., str]
) -> None:
    from app.core.migrate import downgrade, script_heads

    url = await asyncio.to_thread(make_database)
    heads = sorted(script_heads())
    # Roll one branch back: the others stay applied.
    target = f"{heads[-1]}@{heads[-1]}-1" if len(heads) > 1 else "-1"
    await asyncio.to_thread(downgrade, url, target)
    app = create_app(make_settings(database_url=SecretStr(url)), configure_logs=False)
    async with serve(app) as client:
        response = await client.get("/readyz")
    assert response.status_code == 503
    assert "not migrated" in response.json()["detail"]
    assert heads[-1] in response.json()["detail"]


async def test_request_id_is_echoed_or_made(client: AsyncClient) -> None:
    given = await client.get("/healthz", headers={"X-Request-ID": "abc-123.x_y"})
    assert given.headers["x-request-id"] == "abc-123.x_y"
    made = await client.get("/healthz")
    assert len(made.headers["x-request-id"]) >= 16
    # A header that could forge log lines is replaced, not echoed.
    forged = await client.get("/healthz", headers={"X-Request-ID": "a b\tc" + "x" * 200})
    assert forged.headers["x-request-id"] != "a b\tc" + "x" * 200
    assert " " not in forged.headers["x-request-id"]


async def test_unhandled_error_is_500_json_with_request_id(
    make_settings: Callable[..., Settings], caplog: pytest.LogCaptureFixture
) -> None:
    app = create_app(make_settings(), configure_logs=False)

    @app.get("/boom")
    async def boom() -> None:
        """Fails."""
        raise RuntimeError("database password is pw-secret-2")

    async with serve(app) as client:
        response = await client.get("/boom", headers={"X-Request-ID": "req-boom-1"})
    assert response.status_code == 500
    body = response.json()
    assert body["error"] == "InternalError"
    assert body["request_id"] == "req-boom-1"
    assert response.headers["x-request-id"] == "req-boom-1"
    assert "Traceback" not in response.text
    assert "RuntimeError" not in response.text
    assert "pw-secret-2" not in response.text
    logged = [r for r in caplog.records if r.getMessage() == "request.unhandled_error"]
    assert logged, "the error is logged for the operator"


async def test_app_error_shape_and_validation_422(client: AsyncClient) -> None:
    unauthorized = await client.get("/api/keys")
    assert unauthorized.status_code == 401
    assert set(unauthorized.json()) == {"error", "detail"}
    assert unauthorized.json()["error"] == "Unauthorized"

    missing = await client.get("/no/such/path")
    assert missing.status_code == 404
    assert missing.json()["error"] == "NotFound"


async def test_docs_and_openapi_are_served(app: FastAPI, client: AsyncClient) -> None:
    docs = await client.get("/docs")
    assert docs.status_code == 200
    assert "swagger" in docs.text.lower()
    spec = await client.get("/openapi.json")
    assert spec.status_code == 200
    paths = spec.json()["paths"]
    assert {"/healthz", "/readyz", "/api/keys"} <= set(paths)
    assert paths["/healthz"]["get"]["description"] == "The process is up."


def test_every_route_has_a_one_line_docstring(app: FastAPI) -> None:
    """Route docstrings are the OpenAPI text (conventions)."""
    operations = [
        (method.upper(), path, op)
        for path, item in app.openapi()["paths"].items()
        for method, op in item.items()
    ]
    assert len(operations) >= 5  # the walk found the routes of the included routers
    missing = [f"{m} {p}" for m, p, op in operations if not op.get("description", "").strip()]
    assert missing == []
