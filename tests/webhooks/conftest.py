from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.core.config import Settings
from app.core.db import create_sessionmaker
from app.core.security import hash_key
from app.keys import service as keys_service
from app.transcripts.models import Job


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    # The in-app reconciler would work on committed rows only; unit tests drive it directly.
    return make_settings(reconciler_enabled=False, relay_allow_private_networks=True)


@pytest.fixture
def committed(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Committed sessions: the receiver reads on its own pool, outside the test transaction."""
    return create_sessionmaker(engine)


@pytest.fixture
def make_job(committed: async_sessionmaker[AsyncSession]) -> Callable[..., Any]:
    async def make(
        *,
        secret: str | None = "s3cret-per-job",
        upstream_id: str | None = None,
        status: str = "queued",
        key_id: uuid.UUID | None = None,
        **fields: Any,
    ) -> Job:
        async with committed() as session, session.begin():
            if key_id is None:
                key, _ = await keys_service.create_key(session, "job owner", ["transcripts"])
                key_id = key.id
            job = Job(
                key_id=key_id,
                audio_url="https://example.com/a.wav",
                upstream_id=upstream_id if upstream_id is not None else f"tr_{uuid.uuid4().hex}",
                status=status,
                webhook_secret_hash=hash_key(secret) if secret else None,
                **fields,
            )
            if upstream_id == "":
                job.upstream_id = None
            session.add(job)
        return job

    return make
