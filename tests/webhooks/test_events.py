"""publish_job_event: versions, persisted events, and the relay queued once per final state."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.webhooks.events import events_after, publish_job_event
from app.webhooks.models import RelayDelivery


async def test_versions_increase_and_events_persist(
    session: AsyncSession, make_job: Callable[..., Any]
) -> None:
    job = await make_job()
    job = await session.merge(job)
    first = await publish_job_event(session, job, "queued", {"status": "queued"})
    second = await publish_job_event(session, job, "processing", {"status": "processing"})
    assert second == first + 1
    assert job.version == second
    rows = await events_after(session, job.id, 0)
    assert [(r.version, r.event) for r in rows] == [(first, "queued"), (second, "processing")]
    assert [r.event for r in await events_after(session, job.id, first)] == ["processing"]


async def test_final_event_queues_one_relay_whoever_publishes(
    session: AsyncSession, make_job: Callable[..., Any]
) -> None:
    job = await make_job(caller_webhook_url="https://hooks.example.com/aai")
    job = await session.merge(job)
    job.status = "completed"
    # e.g. the reconciler, then a caller's read, then a summary event: one relay.
    for event in ("completed", "completed", "summary.completed"):
        await publish_job_event(session, job, event, {"status": job.status})
    count = await session.scalar(
        select(func.count()).select_from(RelayDelivery).where(RelayDelivery.job_id == job.id)
    )
    assert count == 1


async def test_no_relay_without_a_caller_webhook_or_before_final(
    session: AsyncSession, make_job: Callable[..., Any]
) -> None:
    plain = await session.merge(await make_job())
    plain.status = "completed"
    await publish_job_event(session, plain, "completed", {"status": "completed"})
    pending = await session.merge(await make_job(caller_webhook_url="https://h.example.com/"))
    await publish_job_event(session, pending, "processing", {"status": "processing"})
    count = await session.scalar(
        select(func.count())
        .select_from(RelayDelivery)
        .where(RelayDelivery.job_id.in_([plain.id, pending.id]))
    )
    assert count == 0
