"""Job events' transport: bump the job's version, persist the event, NOTIFY on commit.

Other features publish `JobChanged` through app/core/events.py; this module is its
subscriber (see app/webhooks/__init__.py).

Everything happens in the caller's transaction: Postgres delivers a NOTIFY only when the
transaction commits, so subscribers never hear of a change that was rolled back, and the
persisted row lets an SSE client resume with `Last-Event-ID`.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from sqlalchemy import select, text, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.attributes import set_committed_value

from app.core.db import utcnow
from app.core.events import JobChanged
from app.transcripts.models import Job
from app.webhooks.models import JobEvent
from app.webhooks.relay import schedule_relay

logger = logging.getLogger(__name__)

# One channel for every job event; each instance LISTENs once and fans out in process.
EVENTS_CHANNEL = "aai_job_events"
# Wakes the reconciler loops early when a webhook marks a job due.
WAKE_CHANNEL = "aai_reconciler_wake"
# Final states relayed to a caller's own webhook (a failed submit is answered synchronously).
RELAYED_STATUSES = ("completed", "error")
# Postgres refuses NOTIFY payloads of 8000 bytes or more; bigger events are read back.
MAX_NOTIFY_PAYLOAD = 7000


def _dumps(value: Any) -> str:
    return json.dumps(value, default=str, separators=(",", ":"))


async def publish_job_event(
    session: AsyncSession, job: Job, event: str, data: dict[str, Any]
) -> int:
    """Record `event` for `job` and notify listeners on commit; returns the event id.

    The id is the job's new `version`, bumped with an atomic UPDATE (the row lock orders
    concurrent publishers), so ids are strictly increasing per job.
    """
    await session.flush()
    version = (
        await session.execute(
            update(Job)
            .where(Job.id == job.id)
            .values(version=Job.version + 1)
            .returning(Job.version)
        )
    ).scalar_one()
    set_committed_value(job, "version", version)
    payload_data = json.loads(_dumps(data))
    session.add(
        JobEvent(job_id=job.id, version=version, event=event, data=payload_data, at=utcnow())
    )
    await session.flush()
    message: dict[str, Any] = {"job_id": str(job.id), "id": version, "event": event}
    encoded = _dumps({**message, "data": payload_data})
    if len(encoded.encode()) > MAX_NOTIFY_PAYLOAD:
        encoded = _dumps(message)  # listeners read the data from job_events
    await session.execute(
        text("SELECT pg_notify(:channel, :payload)"),
        {"channel": EVENTS_CHANNEL, "payload": encoded},
    )
    if job.status in RELAYED_STATUSES and job.caller_webhook_url:
        # Whoever makes a job final (the reconciler, or a caller's read that fetched it),
        # the relay is queued here, in the same transaction, once per final state.
        await schedule_relay(session, job)
    logger.debug(
        "webhooks.event.published", extra={"job_id": str(job.id), "event": event, "id": version}
    )
    return version


async def on_job_changed(event: JobChanged) -> None:
    """The transport of `JobChanged` (app/core/events.py): persisted, NOTIFYed, relayed."""
    await publish_job_event(event.session, event.job, event.event, event.data)


async def wake_reconcilers(session: AsyncSession) -> None:
    """Ask every instance's reconciler to look for due work now (delivered on commit)."""
    await session.execute(text("SELECT pg_notify(:channel, '')"), {"channel": WAKE_CHANNEL})


async def events_after(
    session: AsyncSession, job_id: Any, after: int, limit: int = 1000
) -> list[JobEvent]:
    """Persisted events of a job with an id above `after`, oldest first."""
    rows = await session.scalars(
        select(JobEvent)
        .where(JobEvent.job_id == job_id, JobEvent.version > after)
        .order_by(JobEvent.version)
        .limit(limit)
    )
    return list(rows)
