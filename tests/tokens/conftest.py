"""Token tests run the real app (real lifespan, real sessions that commit, real audit
writer) on the session's database; only AssemblyAI is replaced, by an httpx MockTransport
behind the real upstream client, so its error mapping is exercised too. Each test makes its
own committed keys, which keeps tests apart without a rolled-back transaction."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from app.audit.models import AuditEvent
from app.core.config import Settings
from app.core.db import create_sessionmaker
from app.keys import service as keys_service
from app.main import create_app
from app.upstream.client import create_upstream


@dataclass
class FakeUpstream:
    """Answers `/v3/token` and `/v1/token` like AssemblyAI, or with a scripted failure."""

    calls: list[httpx.Request] = field(default_factory=list)
    fail_status: int | None = None
    retry_after: str | None = None
    issued: list[str] = field(default_factory=list)

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.calls.append(request)
        if self.fail_status is not None:
            headers = {"Retry-After": self.retry_after} if self.retry_after else {}
            return httpx.Response(self.fail_status, json={"error": "scripted"}, headers=headers)
        token = f"tok_{uuid.uuid4().hex}"
        self.issued.append(token)
        return httpx.Response(200, json={"token": token})

    def params(self, i: int = -1) -> dict[str, str]:
        return dict(self.calls[i].url.params)


@pytest.fixture
def fake_upstream() -> FakeUpstream:
    return FakeUpstream()


@pytest.fixture
def make_app(
    make_settings: Callable[..., Settings], fake_upstream: FakeUpstream
) -> Callable[..., Any]:
    """`async with make_app(**settings) as app:` a started app whose upstream is faked."""

    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def make(**overrides: Any) -> AsyncIterator[FastAPI]:
        values: dict[str, Any] = {"upstream_retry_attempts": 1}
        values.update(overrides)
        settings = make_settings(**values)
        app = create_app(settings, configure_logs=False)
        async with LifespanManager(app):
            await app.state.upstream.aclose()
            app.state.upstream = create_upstream(
                settings.upstream, transport=httpx.MockTransport(fake_upstream.handler)
            )
            yield app

    return make


@pytest.fixture
async def token_app(make_app: Callable[..., Any]) -> AsyncIterator[FastAPI]:
    async with make_app() as app:
        yield app


def client_for(app: FastAPI, base_url: str = "http://testserver") -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, client=("203.0.113.7", 4321)), base_url=base_url
    )


@pytest.fixture
async def client(token_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(token_app) as c:
        yield c


@pytest.fixture
def committed_key(engine: AsyncEngine) -> Callable[..., Any]:
    """A committed key: `raw, key_id = await committed_key("tokens:streaming")`."""

    async def make(*scopes: str, name: str = "token test") -> tuple[str, uuid.UUID]:
        async with create_sessionmaker(engine)() as session, session.begin():
            key, raw = await keys_service.create_key(session, name, scopes)
            return raw, key.id

    return make


# A test that counts on a per-minute limit runs within this many seconds.
MINUTE_HEADROOM_S = 10.0


@pytest.fixture
def steady_minute() -> None:
    """Start the test at least MINUTE_HEADROOM_S before the wall clock's next minute.

    Without Redis the per-minute limits count in windows aligned to the clock's minutes,
    and the sliding-window counter (the `limits` library) floors the previous window's
    weighted count, so right after a minute begins one mint more than the limit fits (a
    limit of 1 lets a second mint through 10 ms after the first). A test expecting the
    refusal must not straddle that instant; this waits once, only when near it."""
    left = 60.0 - time.time() % 60.0
    if left < MINUTE_HEADROOM_S:
        time.sleep(left + 0.05)


@pytest.fixture
def audit_rows(engine: AsyncEngine) -> Callable[..., Any]:
    async def rows(key_id: uuid.UUID | None = None, **where: Any) -> list[AuditEvent]:
        query = select(AuditEvent).order_by(AuditEvent.id)
        if key_id is not None:
            query = query.where(AuditEvent.key_id == key_id)
        for name, value in where.items():
            query = query.where(getattr(AuditEvent, name) == value)
        async with create_sessionmaker(engine)() as session:
            return list(await session.scalars(query))

    return rows
