"""Runs due summaries: called by the reconciler every tick (app/webhooks), on every instance.

A summary is claimed with `FOR UPDATE SKIP LOCKED` in a short transaction that sets a
lease, so across any number of instances one row is worked on by one instance at a time.
The result is stored only while the lease is still ours. A crash between the LLM call and
the store costs at most one repeat: the lease expires and another instance runs it again.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from datetime import timedelta

from sqlalchemy import and_, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.config import Settings
from app.core.db import utcnow
from app.llm.models import Summary, SummaryStatus
from app.transcripts.models import Job, JobStatus
from app.upstream.client import Upstream

logger = logging.getLogger(__name__)


def _due_clause(now: object) -> object:
    return and_(
        or_(
            Summary.status == SummaryStatus.pending.value,
            # A running row whose lease expired: its instance died mid-call.
            and_(Summary.status == SummaryStatus.running.value, Summary.lease_expires_at < now),
        ),
        or_(Summary.next_attempt_at.is_(None), Summary.next_attempt_at <= now),
    )


async def claim_summaries(
    sessionmaker: async_sessionmaker[AsyncSession],
    settings: Settings,
    *,
    owner: str,
    limit: int = 10,
    summary_id: uuid.UUID | None = None,
) -> list[uuid.UUID]:
    """Claim up to `limit` due summaries of completed jobs; commits the claim."""
    now = utcnow()
    lease = timedelta(seconds=settings.llm_summary_lease_s)
    async with sessionmaker() as session, session.begin():
        query = (
            select(Summary.id)
            .join(Job, Job.id == Summary.job_id)
            .where(
                _due_clause(now),  # type: ignore[arg-type]
                Job.status == JobStatus.completed.value,
                Job.deleted_at.is_(None),
            )
            .order_by(Summary.created_at)
            .limit(limit)
            .with_for_update(of=Summary, skip_locked=True)
        )
        if summary_id is not None:
            query = query.where(Summary.id == summary_id)
        ids = list((await session.execute(query)).scalars())
        if ids:
            await session.execute(
                update(Summary)
                .where(Summary.id.in_(ids))
                .values(
                    status=SummaryStatus.running.value,
                    lease_owner=owner,
                    lease_expires_at=now + lease,
                    attempts=Summary.attempts + 1,
                    updated_at=now,
                )
            )
    return ids


async def process_due_summaries(
    sessionmaker: async_sessionmaker[AsyncSession],
    upstream: Upstream,
    settings: Settings,
    *,
    owner: str,
    limit: int = 10,
) -> int:
    """Claim and run due summaries of completed jobs; returns how many were processed."""
    from app.llm.summaries import run_claimed_summary

    ids = await claim_summaries(sessionmaker, settings, owner=owner, limit=limit)
    if not ids:
        return 0
    semaphore = asyncio.Semaphore(settings.llm_summary_concurrency)

    async def run(summary_id: uuid.UUID) -> None:
        async with semaphore:
            try:
                await run_claimed_summary(sessionmaker, upstream, settings, summary_id, owner=owner)
            except Exception:
                # One summary's unexpected failure must not stop the others or the loop;
                # its lease expires and it is tried again.
                logger.exception("llm.summary.crashed", extra={"summary_id": str(summary_id)})

    await asyncio.gather(*(run(i) for i in ids))
    return len(ids)
