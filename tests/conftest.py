"""Shared fixtures: a real Postgres, a migrated database per test session, a rolled-back
transaction per test, and the app over ASGI with its real lifespan."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from httpx import ASGITransport, AsyncClient
from pydantic import SecretStr
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from app.core.config import Settings
from app.core.db import create_engine, get_session
from app.identity.scopes import ALL_SCOPES
from app.keys import service as keys_service
from app.main import create_app
from tests.live import EXTRA_SERVICE_ENV, Proc, create_key_in, run_emulator, run_service
from tests.pg import create_database, drop_database, postgres_server

# Many service processes share one test server: small pools per process.
EXTRA_SERVICE_ENV.update(
    {"DATABASE_POOL_SIZE": "4", "DATABASE_MAX_OVERFLOW": "6", "WEBHOOK_POOL_SIZE": "4"}
)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    with postgres_server() as url:
        yield url


@pytest.fixture(scope="session")
def make_database(pg_server: str) -> Iterator[Callable[..., str]]:
    """Factory for extra databases (migrated unless told otherwise), dropped at the end."""
    created: list[str] = []

    def make(*, migrate: bool = True) -> str:
        url = create_database(pg_server, migrate=migrate)
        created.append(url)
        return url

    yield make
    for url in created:
        drop_database(pg_server, url)


@pytest.fixture(scope="session")
def database_url(make_database: Callable[..., str]) -> str:
    return make_database()


@pytest.fixture(scope="session")
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url)
    yield engine
    await engine.dispose()


@pytest.fixture
async def session(engine: AsyncEngine) -> AsyncIterator[AsyncSession]:
    """A session inside an outer transaction that is rolled back after the test."""
    async with engine.connect() as connection:
        transaction = await connection.begin()
        session = AsyncSession(
            bind=connection,
            join_transaction_mode="create_savepoint",
            expire_on_commit=False,
            autoflush=False,
        )
        try:
            yield session
        finally:
            await session.close()
            await transaction.rollback()


@pytest.fixture
def make_settings(database_url: str) -> Callable[..., Settings]:
    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "APP_ENV": "test",  # the alias: `environment=` would be ignored
            "database_url": SecretStr(database_url),
            "assemblyai_api_base_url": "http://upstream.test",
            "assemblyai_streaming_base_url": "http://streaming.test",
            "assemblyai_agents_base_url": "http://agents.test",
            "assemblyai_llm_base_url": "http://llm.test",
            "upstream_retry_wait_initial_s": 0.0,
            "upstream_retry_wait_max_s": 0.0,
        }
        values.update(overrides)
        return Settings(_env_file=None, **values)

    return make


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings()


@pytest.fixture
async def app(settings: Settings, session: AsyncSession) -> AsyncIterator[FastAPI]:
    app = create_app(settings, configure_logs=False)

    async def test_session() -> AsyncIterator[AsyncSession]:
        yield session
        await session.flush()

    app.dependency_overrides[get_session] = test_session
    async with LifespanManager(app):
        yield app


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(transport=ASGITransport(app=app), base_url="http://testserver") as c:
        yield c


@pytest.fixture
async def admin_key(session: AsyncSession) -> str:
    _, raw = await keys_service.create_key(session, "test admin", ALL_SCOPES)
    return raw


@pytest.fixture
def make_key(session: AsyncSession) -> Callable[..., Any]:
    async def make(*scopes: str, name: str = "test key") -> str:
        _, raw = await keys_service.create_key(session, name, scopes)
        return raw

    return make


# --- Real processes on real ports (end-to-end) ---------------------------------------------


@pytest.fixture(scope="session")
def emulator() -> Iterator[Proc]:
    """One emulator process for the session, in test mode."""
    with run_emulator() as proc:
        yield proc


@pytest.fixture(scope="session")
def live_service(database_url: str, emulator: Proc) -> Iterator[Proc]:
    """One service process for the session, on the session's database, against `emulator`."""
    with run_service(database_url, emulator.url) as proc:
        yield proc


@pytest.fixture(scope="session")
def live_admin_key(database_url: str) -> str:
    """A committed admin key that live service processes accept."""
    return create_key_in(database_url, ALL_SCOPES, name="e2e admin")
