"""Runs due summaries: the `llm.summaries` job of the scheduler (app/worker.py), on every instance.

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

from sqlalchemy import and_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.config import LlmSettings
from app.core.db import utcnow
from app.core.leases import claim_leases
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
    settings: LlmSettings,
    *,
    owner: str,
    limit: int = 10,
    summary_id: uuid.UUID | None = None,
) -> list[uuid.UUID]:
    """Claim up to `limit` due summaries of completed jobs; commits the claim."""
    now = utcnow()
    lease = timedelta(seconds=settings.summary_lease_s)
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
    )
    if summary_id is not None:
        query = query.where(Summary.id == summary_id)
    async with sessionmaker() as session, session.begin():
        rows = await claim_leases(
            session,
            Summary,
            query,
            owner=owner,
            until=now + lease,
            values={
                "status": SummaryStatus.running.value,
                "attempts": Summary.attempts + 1,
                "updated_at": now,
            },
        )
    ids = [row[0] for row in rows]
    return ids


# This process's summaries in flight: they run beside the reconciler's loop, not inside
# its tick, so a minute-long completion never delays the polling of other jobs.
_running: set[asyncio.Task[None]] = set()


def in_flight() -> int:
    return sum(1 for task in _running if not task.done())


async def _run(
    sessionmaker: async_sessionmaker[AsyncSession],
    upstream: Upstream,
    settings: LlmSettings,
    summary_id: uuid.UUID,
    owner: str,
) -> None:
    from app.llm.summaries import run_claimed_summary

    try:
        await run_claimed_summary(sessionmaker, upstream, settings, summary_id, owner=owner)
    except asyncio.CancelledError:
        raise
    except Exception:
        # One summary's unexpected failure must not stop the others or the loop; its
        # lease expires and it is tried again.
        logger.exception("llm.summary.crashed", extra={"summary_id": str(summary_id)})


async def process_due_summaries(
    sessionmaker: async_sessionmaker[AsyncSession],
    upstream: Upstream,
    settings: LlmSettings,
    *,
    owner: str,
    limit: int = 10,
    wait: bool = False,
) -> int:
    """Claim due summaries of completed jobs and start them; returns how many it claimed.

    At most LLM_SUMMARY_CONCURRENCY run at once in this process; they run as tasks of
    their own (`wait=True` awaits them, for tests and one-shot callers).
    """
    free = settings.summary_concurrency - in_flight()
    if free <= 0:
        return 0
    ids = await claim_summaries(sessionmaker, settings, owner=owner, limit=min(limit, free))
    tasks = []
    for summary_id in ids:
        task = asyncio.create_task(_run(sessionmaker, upstream, settings, summary_id, owner))
        _running.add(task)
        task.add_done_callback(_running.discard)
        tasks.append(task)
    if wait and tasks:
        await asyncio.gather(*tasks)
    return len(ids)


async def stop_summaries(timeout: float = 5.0) -> None:
    """At shutdown: let running summaries finish briefly, then cancel them (each hands its
    claim back, so another instance takes it at once rather than after the lease)."""
    tasks = [task for task in _running if not task.done()]
    if not tasks:
        return
    _, pending = await asyncio.wait(tasks, timeout=timeout)
    for task in pending:
        task.cancel()
    if pending:
        await asyncio.gather(*pending, return_exceptions=True)
