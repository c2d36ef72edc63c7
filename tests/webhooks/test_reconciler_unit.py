"""Reconciler corner cases on a database of their own (no other due jobs around)."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import timedelta

import asyncpg
import pytest
from pydantic import SecretStr
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.config import Settings
from app.core.db import create_engine, create_sessionmaker, plain_url, utcnow
from app.core.security import hash_key
from app.keys import service as keys_service
from app.transcripts.models import Job
from app.upstream.client import create_upstream
from app.webhooks.models import JobEvent, WebhookDelivery
from app.webhooks.reconciler import Reconciler
from app.webhooks.service import receive


@pytest.fixture(scope="module")
def own_url(make_database: Callable[..., str]) -> str:
    return make_database()


@pytest.fixture
async def own_db(own_url: str) -> AsyncIterator[tuple[str, async_sessionmaker[AsyncSession]]]:
    engine = create_engine(own_url)
    sm = create_sessionmaker(engine)
    async with sm() as session, session.begin():
        # Each test starts with no due jobs but its own.
        await session.execute(delete(Job))
    yield own_url, sm
    await engine.dispose()


async def _job(sm: async_sessionmaker[AsyncSession], **fields: object) -> uuid.UUID:
    async with sm() as session, session.begin():
        key, _ = await keys_service.create_key(session, "k", ["transcripts"])
        job = Job(
            key_id=key.id,
            audio_url="https://example.com/a.wav",
            webhook_secret_hash=hash_key("s"),
            **fields,
        )
        session.add(job)
        await session.flush()
        return job.id


async def test_an_orphaned_early_webhook_is_adopted(
    own_db: tuple[str, async_sessionmaker[AsyncSession]],
    make_settings: Callable[..., Settings],
) -> None:
    """The submitting instance died after upstream took the job: the verified webhook's
    transcript id is adopted once the submit could no longer be answering."""
    url, sm = own_db
    settings = make_settings(
        database_url=SecretStr(url),
        reconciler_lease_s=0.4,
        upstream_timeout_s=0.1,
        upstream_retry_attempts=1,
    )
    long_ago = utcnow() - timedelta(hours=1)
    job_id = await _job(sm, status="submitting", created_at=long_ago, next_check_at=utcnow())
    async with sm() as session, session.begin():
        session.add(
            WebhookDelivery(
                job_id=job_id, body_sha256="x" * 64, transcript_id="tr_adopt", status="completed"
            )
        )
    upstream = create_upstream(settings.upstream)
    reconciler = Reconciler(sm, upstream, settings.reconciler)
    try:
        claimed = await reconciler.claim_jobs(10)
        assert [c.id for c in claimed] == [job_id]
        await reconciler.process_job(claimed[0])
    finally:
        await upstream.aclose()
    async with sm() as session:
        job = await session.scalar(select(Job).where(Job.id == job_id))
    assert job is not None
    assert job.upstream_id == "tr_adopt"
    assert job.status == "queued"
    assert job.lease_owner is None
    assert job.next_check_at is not None


async def test_a_fresh_early_webhook_waits_for_the_submit(
    own_db: tuple[str, async_sessionmaker[AsyncSession]],
    make_settings: Callable[..., Settings],
) -> None:
    url, sm = own_db
    settings = make_settings(database_url=SecretStr(url), reconciler_lease_s=0.4)
    job_id = await _job(sm, status="submitting", next_check_at=utcnow())
    upstream = create_upstream(settings.upstream)
    reconciler = Reconciler(sm, upstream, settings.reconciler)
    try:
        (claimed,) = await reconciler.claim_jobs(10)
        await reconciler.process_job(claimed)
        # Claimed again only after its short reschedule, never twice at once.
        assert await reconciler.claim_jobs(10) == []
    finally:
        await upstream.aclose()
    async with sm() as session:
        job = await session.scalar(select(Job).where(Job.id == job_id))
    assert job is not None
    assert job.upstream_id is None
    assert job.status == "submitting"
    assert job.lease_owner is None
    assert job.next_check_at is not None
    assert job.next_check_at > utcnow()


async def test_an_expired_lease_is_claimable_and_a_live_one_is_not(
    own_db: tuple[str, async_sessionmaker[AsyncSession]],
    make_settings: Callable[..., Settings],
) -> None:
    url, sm = own_db
    settings = make_settings(database_url=SecretStr(url))
    now = utcnow()
    live = await _job(
        sm,
        status="queued",
        upstream_id="tr_live",
        next_check_at=now,
        lease_owner="other",
        lease_expires_at=now + timedelta(minutes=1),
    )
    expired = await _job(
        sm,
        status="queued",
        upstream_id="tr_expired",
        next_check_at=now,
        lease_owner="dead",
        lease_expires_at=now - timedelta(seconds=1),
    )
    upstream = create_upstream(settings.upstream)
    reconciler = Reconciler(sm, upstream, settings.reconciler)
    try:
        claimed = await reconciler.claim_jobs(10)
    finally:
        await upstream.aclose()
    assert [c.id for c in claimed] == [expired]
    assert live not in [c.id for c in claimed]


async def test_an_orphaned_submit_fails_and_a_later_webhook_adopts_it(
    own_db: tuple[str, async_sessionmaker[AsyncSession]],
    make_settings: Callable[..., Settings],
) -> None:
    """The process died after committing the row, before upstream answered: no webhook
    came, so after SUBMIT_ORPHAN_AFTER_S the job is failed (and says why). If upstream had
    taken it after all, its webhook still arrives and the job is adopted."""
    url, sm = own_db
    settings = make_settings(
        database_url=SecretStr(url),
        submit_orphan_after_s=600,
        reconciler_lease_s=0.4,
        upstream_timeout_s=0.1,
        upstream_retry_attempts=1,
    )
    orphan = await _job(sm, status="submitting", created_at=utcnow() - timedelta(seconds=700))
    fresh = await _job(sm, status="submitting", created_at=utcnow() - timedelta(seconds=60))
    upstream = create_upstream(settings.upstream)
    reconciler = Reconciler(sm, upstream, settings.reconciler)
    connection = await asyncpg.connect(plain_url(url))
    try:
        claimed = await reconciler.claim_jobs(10)
        assert [c.id for c in claimed] == [orphan]  # the fresh one may still be answered
        await reconciler.process_job(claimed[0])
        async with sm() as session:
            job = await session.scalar(select(Job).where(Job.id == orphan))
            events = list(await session.scalars(select(JobEvent).where(JobEvent.job_id == orphan)))
        assert job is not None
        assert job.status == "failed"
        assert job.error is not None
        assert "stopped before AssemblyAI answered the submit" in job.error
        assert "webhook will still be recorded" in job.error
        assert job.next_check_at is None
        assert job.lease_owner is None
        assert [e.event for e in events] == ["failed"]
        assert await reconciler.claim_jobs(10) == []  # failed once, not again

        body = json.dumps({"transcript_id": "tr_late", "status": "completed"}).encode()
        receipt = await receive(connection, orphan, "s", body, notify=False)
        assert receipt.marked_due
        (again,) = await reconciler.claim_jobs(10)
        await reconciler.process_job(again)
    finally:
        await connection.close()
        await upstream.aclose()
    async with sm() as session:
        job = await session.scalar(select(Job).where(Job.id == orphan))
        young = await session.scalar(select(Job).where(Job.id == fresh))
    assert job is not None
    assert job.upstream_id == "tr_late"
    assert job.status == "queued"
    assert job.error is None
    assert job.next_check_at is not None  # the transcript is fetched next
    assert young is not None
    assert young.status == "submitting"
