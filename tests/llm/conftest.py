"""Fixtures for the LLM feature: a committed database (budget holds and summaries run in
their own transactions), a fake LLM Gateway on a real port, and the app served by uvicorn."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.core.config import Settings
from app.core.db import create_engine, create_sessionmaker, utcnow
from app.identity.scopes import ALL_SCOPES
from app.keys import service as keys_service
from app.main import create_app
from app.transcripts.models import Job, JobStatus
from tests.llm.fake_llm import KEY, FakeLlm, serve


@pytest.fixture(scope="session")
def llm_database(make_database: Callable[..., str]) -> str:
    return make_database()


@pytest.fixture(scope="session")
async def llm_engine(llm_database: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(llm_database)
    yield engine
    await engine.dispose()


@pytest.fixture(scope="session")
def db(llm_engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return create_sessionmaker(llm_engine)


@pytest.fixture
async def fake_llm() -> AsyncIterator[FakeLlm]:
    fake = FakeLlm()
    async with serve(fake.app()) as url:
        fake.url = url
        yield fake


@pytest.fixture
def llm_settings(llm_database: str, fake_llm: FakeLlm) -> Callable[..., Settings]:
    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "APP_ENV": "test",  # the alias: `environment=` would be ignored
            "database_url": SecretStr(llm_database),
            "assemblyai_api_key": SecretStr(KEY),
            "assemblyai_api_base_url": fake_llm.url,
            "assemblyai_llm_base_url": fake_llm.url,
            "assemblyai_streaming_base_url": fake_llm.url,
            "assemblyai_agents_base_url": fake_llm.url,
            "upstream_retry_wait_initial_s": 0.0,
            "upstream_retry_wait_max_s": 0.0,
            "reconciler_enabled": False,
            "migrate_on_start": False,
        }
        values.update(overrides)
        return Settings(_env_file=None, **values)

    return make


@pytest.fixture
def service(
    llm_settings: Callable[..., Settings],
) -> Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]:
    """The app under uvicorn (real lifespan, real sockets); yields a client for it."""

    @asynccontextmanager
    async def run(**overrides: Any) -> AsyncIterator[httpx.AsyncClient]:
        app = create_app(llm_settings(**overrides), configure_logs=False)
        async with (
            serve(app, lifespan="on") as url,
            httpx.AsyncClient(base_url=url, timeout=30) as client,
        ):
            client.app = app  # type: ignore[attr-defined]
            yield client

    return run


@pytest.fixture
def new_key(db: async_sessionmaker[AsyncSession]) -> Callable[..., Any]:
    async def make(*scopes: str) -> tuple[uuid.UUID, str]:
        async with db() as session, session.begin():
            key, raw = await keys_service.create_key(
                session, "llm test", list(scopes) or ALL_SCOPES
            )
            return key.id, raw

    return make


@pytest.fixture
def new_job(db: async_sessionmaker[AsyncSession]) -> Callable[..., Any]:
    async def make(key_id: uuid.UUID, text: str = "Hello there. " * 20, **values: Any) -> Job:
        upstream_id = values.pop("upstream_id", f"t-{uuid.uuid4().hex[:12]}")
        job = Job(
            key_id=key_id,
            upstream_id=upstream_id,
            status=values.pop("status", JobStatus.completed.value),
            audio_url="https://example.test/a.wav",
            request={},
            result={"id": upstream_id, "status": "completed", "text": text},
            completed_at=utcnow(),
            **values,
        )
        async with db() as session, session.begin():
            session.add(job)
        return job

    return make
