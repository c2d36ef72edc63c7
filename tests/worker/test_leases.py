"""The shared lease claim (app/core/leases.py) on a real Postgres: concurrent claims never
take the same row, a held lease is respected, an expired one is taken over."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import timedelta

import pytest
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.db import create_engine, create_sessionmaker, utcnow
from app.core.leases import claim_leases, lease_free
from app.core.security import hash_key
from app.keys import service as keys_service
from app.transcripts.models import Job


@pytest.fixture(scope="module")
def own_url(make_database: Callable[..., str]) -> str:
    return make_database()


@pytest.fixture
async def sm(own_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = create_engine(own_url)
    sessionmaker = create_sessionmaker(engine)
    async with sessionmaker() as session, session.begin():
        await session.execute(delete(Job))
    yield sessionmaker
    await engine.dispose()


async def _jobs(sm: async_sessionmaker[AsyncSession], n: int, **fields: object) -> list[uuid.UUID]:
    async with sm() as session, session.begin():
        key, _ = await keys_service.create_key(session, "k", ["transcripts"])
        jobs = [
            Job(key_id=key.id, audio_url="https://example.com/a.wav", **fields) for _ in range(n)
        ]
        for job in jobs:
            job.webhook_secret_hash = hash_key("s")
        session.add_all(jobs)
        await session.flush()
        return [job.id for job in jobs]


async def _claim(
    sm: async_sessionmaker[AsyncSession], owner: str, limit: int, hold: float = 0.0
) -> list[uuid.UUID]:
    now = utcnow()
    due = select(Job.id).where(lease_free(Job, now)).order_by(Job.created_at).limit(limit)
    async with sm() as session, session.begin():
        rows = await claim_leases(session, Job, due, owner=owner, until=now + timedelta(seconds=30))
        await asyncio.sleep(hold)  # the row locks are held until this commit
    return [row[0] for row in rows]


async def test_concurrent_claims_take_disjoint_rows(
    sm: async_sessionmaker[AsyncSession],
) -> None:
    ids = await _jobs(sm, 6)
    first = asyncio.create_task(_claim(sm, "a", 4, hold=0.3))
    await asyncio.sleep(0.1)
    second = await _claim(sm, "b", 4)  # skips the locked rows, does not wait for them
    assert not first.done()
    a = await first
    assert len(a) == 4
    assert sorted(a + second, key=str) == sorted(ids, key=str)
    async with sm() as session:
        owners = dict((await session.execute(select(Job.id, Job.lease_owner))).all())
    assert {owners[i] for i in a} == {"a"}
    assert {owners[i] for i in second} == {"b"}
    assert await _claim(sm, "c", 10) == []  # every lease is held


async def test_an_expired_lease_is_taken_over(sm: async_sessionmaker[AsyncSession]) -> None:
    (expired,) = await _jobs(
        sm, 1, lease_owner="dead", lease_expires_at=utcnow() - timedelta(seconds=1)
    )
    await _jobs(sm, 1, lease_owner="alive", lease_expires_at=utcnow() + timedelta(seconds=60))
    assert await _claim(sm, "new", 10) == [expired]


async def test_extra_values_and_returning_columns(sm: async_sessionmaker[AsyncSession]) -> None:
    (job_id,) = await _jobs(sm, 1, check_attempts=2)
    now = utcnow()
    async with sm() as session, session.begin():
        rows = await claim_leases(
            session,
            Job,
            select(Job.id).limit(1),
            owner="x",
            until=now,
            returning=(Job.id, Job.check_attempts, Job.lease_owner),
            values={"check_attempts": Job.check_attempts + 1},
        )
    assert [tuple(r) for r in rows] == [(job_id, 3, "x")]
