"""The reconciler: advances due transcription jobs (a periodic job of app/worker.py).

Claims are short transactions (`FOR UPDATE SKIP LOCKED`) that stamp a lease on the rows;
the slow work (upstream GETs, relay POSTs) runs outside any transaction, and its result
is written only while the lease is still ours. A crashed instance's leases expire and
another instance takes the work over. Jobs become final only on upstream's documented
final states (`completed`, `error`); everything else is retried on a backoff schedule.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Coroutine, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.config import ReconcilerSettings
from app.core.db import utcnow
from app.core.errors import AppError, RateLimited
from app.core.leases import claim_leases, instance_owner, lease_free
from app.core.tasks import running_alongside
from app.metrics import WEBHOOK_TO_FINAL
from app.transcripts.models import FINAL_STATUSES, Job, JobStatus
from app.transcripts.service import adopt_lost_submit, mark_submit_failed
from app.transcripts.views import job_view
from app.upstream.client import Upstream
from app.webhooks.events import publish_job_event
from app.webhooks.models import WebhookDelivery

logger = logging.getLogger(__name__)

UPSTREAM_FINAL = {"completed", "error"}
UPSTREAM_ACTIVE = {"queued", "processing"}


def _step(schedule: Sequence[float], attempt: int) -> float:
    return schedule[min(max(attempt, 0), len(schedule) - 1)]


# How often this instance looks for orphaned submits (rare: a process died mid-submit).
ORPHAN_SWEEP_S = 30.0
ORPHANED_SUBMIT_ERROR = (
    "The service stopped before AssemblyAI answered the submit; if AssemblyAI accepted it, "
    "its webhook will still be recorded."
)


@dataclass
class ClaimedJob:
    id: uuid.UUID
    upstream_id: str | None
    status: str
    check_attempts: int
    created_at: datetime


CLAIMED_COLUMNS = (Job.id, Job.upstream_id, Job.status, Job.check_attempts, Job.created_at)


class Reconciler:
    """Advances transcription jobs: the `webhooks.reconcile` job of app/worker.py."""

    _next_orphan_sweep: float = 0.0  # loop time of the next orphaned-submit sweep

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        upstream: Upstream,
        settings: ReconcilerSettings,
        *,
        owner: str | None = None,
    ) -> None:
        self.sessionmaker = sessionmaker
        self.upstream = upstream
        self.settings = settings
        self.owner = owner or instance_owner()

    async def claim_work(self, limit: int) -> list[Coroutine[Any, Any, None]]:
        """Claim up to `limit` due jobs; their processing runs in the scheduler's slots."""
        return [self.process_job(job) for job in await self.claim_jobs(limit)]

    # --- jobs ------------------------------------------------------------------------------
    async def claim_jobs(self, limit: int) -> list[ClaimedJob]:
        now = utcnow()
        due = (
            select(Job.id)
            .where(
                Job.next_check_at <= now,
                # a failed submit that a verified webhook proved upstream took
                or_(
                    Job.status.not_in(FINAL_STATUSES),
                    and_(Job.status == JobStatus.failed.value, Job.upstream_id.is_(None)),
                ),
                Job.deleted_at.is_(None),
                lease_free(Job, now),
            )
            .order_by(Job.next_check_at)
            .limit(limit)
        )
        async with self.sessionmaker() as session, session.begin():
            rows = await claim_leases(
                session,
                Job,
                due,
                owner=self.owner,
                until=now + timedelta(seconds=self.settings.lease_s),
                returning=CLAIMED_COLUMNS,
            )
            claimed = [ClaimedJob(**r._asdict()) for r in rows]
        if len(claimed) < limit:
            claimed += await self._claim_orphans(limit - len(claimed))
        return claimed

    def _submit_window_s(self) -> float:
        """How long a submit may still be running: its timeout per attempt, and a lease."""
        s = self.settings
        return s.upstream_timeout_s * s.upstream_retry_attempts + s.lease_s

    def _orphan_after_s(self) -> float:
        return max(self.settings.submit_orphan_after_s, self._submit_window_s())

    async def _claim_orphans(self, limit: int) -> list[ClaimedJob]:
        """Jobs still "submitting", with no webhook, long after their process should have
        recorded upstream's answer: that process died. A separate, occasional claim (by
        status and age) keeps the hot claim above on its next_check_at index."""
        clock = asyncio.get_running_loop().time()
        if clock < self._next_orphan_sweep:
            return []
        now = utcnow()
        orphaned = (
            select(Job.id)
            .where(
                Job.status == JobStatus.submitting.value,
                Job.upstream_id.is_(None),
                Job.created_at < now - timedelta(seconds=self._orphan_after_s()),
                Job.deleted_at.is_(None),
                lease_free(Job, now),
            )
            .order_by(Job.created_at)
            .limit(limit)
        )
        async with self.sessionmaker() as session, session.begin():
            rows = await claim_leases(
                session,
                Job,
                orphaned,
                owner=self.owner,
                until=now + timedelta(seconds=self.settings.lease_s),
                returning=CLAIMED_COLUMNS,
            )
            orphans = [ClaimedJob(**r._asdict()) for r in rows]
        # A full batch: more may be waiting, look again at the next claim.
        self._next_orphan_sweep = clock + (0.0 if len(orphans) == limit else ORPHAN_SWEEP_S)
        return orphans

    async def _locked_job(self, session: AsyncSession, job_id: uuid.UUID) -> Job | None:
        """The job, row-locked, if our lease on it still holds."""
        job = await session.scalar(
            select(Job)
            .where(Job.id == job_id, Job.lease_owner == self.owner)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
        if job is None:
            logger.warning("webhooks.reconciler.lease_lost", extra={"job_id": str(job_id)})
        return job

    @contextlib.asynccontextmanager
    async def _lease_kept(self, job_id: uuid.UUID) -> AsyncIterator[None]:
        """Extend our lease while a slow upstream call (timeouts and retries) runs, so no
        other instance takes the job over from a live one; a dead one stops extending."""
        lease_s = self.settings.lease_s

        async def renew() -> None:
            while True:
                await asyncio.sleep(lease_s / 3)
                try:
                    async with self.sessionmaker() as session, session.begin():
                        await session.execute(
                            update(Job)
                            .where(Job.id == job_id, Job.lease_owner == self.owner)
                            .values(lease_expires_at=utcnow() + timedelta(seconds=lease_s))
                        )
                except Exception:
                    # Tried again next interval (the lease has 3): one failed renewal must
                    # not end the extension for the rest of a slow call.
                    logger.warning(
                        "webhooks.lease_renew_failed", extra={"job_id": str(job_id)}, exc_info=True
                    )

        async with running_alongside(renew(), "webhooks.lease"):
            yield

    @staticmethod
    def _release(job: Job, next_check_at: datetime | None) -> None:
        job.lease_owner = None
        job.lease_expires_at = None
        job.next_check_at = next_check_at

    async def process_job(self, claimed: ClaimedJob) -> None:
        if claimed.upstream_id is None:
            await self._process_submitting(claimed)
            return
        started = utcnow()
        try:
            async with self._lease_kept(claimed.id):
                transcript = await self.upstream.rest.get_transcript(claimed.upstream_id)
        except AppError as exc:
            await self._retry_later(claimed, exc)
            return
        status = transcript.get("status")
        async with self.sessionmaker() as session, session.begin():
            job = await self._locked_job(session, claimed.id)
            if job is None:
                return
            now = utcnow()
            if job.is_final:
                # A caller's read fetched and finalised it meanwhile: announced already.
                self._release(job, None)
                return
            if status in UPSTREAM_FINAL:
                job.status = str(status)
                job.completed_at = now
                job.check_attempts = 0
                job.audio_duration = transcript.get("audio_duration") or job.audio_duration
                job.speech_model = transcript.get("speech_model_used") or job.speech_model
                if status == JobStatus.completed:
                    job.result = transcript
                    job.error = None
                else:
                    job.error = str(transcript.get("error") or "AssemblyAI reported an error.")
                    job.result = transcript
                self._release(job, None)
                if job.webhook_received_at is not None:
                    WEBHOOK_TO_FINAL.observe((now - job.webhook_received_at).total_seconds())
                await publish_job_event(session, job, job.status, job_view(job))  # + relay
                logger.info(
                    "webhooks.reconciler.job_final",
                    extra={"job_id": str(job.id), "status": job.status},
                )
                return
            if status in UPSTREAM_ACTIVE and status != job.status:
                job.status = str(status)
                await publish_job_event(session, job, job.status, job_view(job))
            elif status not in UPSTREAM_ACTIVE:
                logger.warning(
                    "webhooks.reconciler.unknown_status",
                    extra={"job_id": str(job.id), "status": str(status)[:40]},
                )
            # A webhook that came while we were fetching means upstream moved on: look again.
            if job.webhook_received_at is not None and job.webhook_received_at >= started:
                next_at = now
            else:
                next_at = now + timedelta(
                    seconds=_step(self.settings.poll_schedule, job.check_attempts)
                )
            job.check_attempts += 1
            self._release(job, next_at)

    async def _retry_later(self, claimed: ClaimedJob, exc: AppError) -> None:
        delay = _step(self.settings.error_backoff, claimed.check_attempts)
        if isinstance(exc, RateLimited) and exc.retry_after is not None:
            delay = max(delay, exc.retry_after)
        logger.warning(
            "webhooks.reconciler.upstream_failed",
            extra={"job_id": str(claimed.id), "error": exc.error, "retry_in_s": delay},
        )
        async with self.sessionmaker() as session, session.begin():
            job = await self._locked_job(session, claimed.id)
            if job is None:
                return
            job.check_attempts += 1
            self._release(job, utcnow() + timedelta(seconds=delay))

    async def _adopt_lost_submit(self, claimed: ClaimedJob) -> bool:
        """A submit whose answer was lost: adopt the transcript upstream made for it, if
        any (app/transcripts/service.py). True when this claim is done with."""
        async with self.sessionmaker() as session:
            webhook_came = await session.scalar(
                select(WebhookDelivery.id)
                .where(
                    WebhookDelivery.job_id == claimed.id,
                    WebhookDelivery.transcript_id.is_not(None),
                )
                .limit(1)
            )
        if webhook_came is not None:
            return False  # its verified webhook names the transcript: adopted below
        try:
            async with self._lease_kept(claimed.id):
                adopted = await adopt_lost_submit(
                    self.sessionmaker, self.upstream.rest, self.settings.transcripts, claimed.id
                )
        except AppError as exc:
            await self._retry_later(claimed, exc)
            return True
        if adopted is None:
            return False  # not upstream's: a webhook's transcript id may still be adopted
        async with self.sessionmaker() as session, session.begin():
            job = await self._locked_job(session, claimed.id)
            if job is not None:
                self._release(job, job.next_check_at)
        return True

    async def _process_submitting(self, claimed: ClaimedJob) -> None:
        """A job with no upstream id: its webhook came before the submit answer (wait for
        the answer, or adopt the webhook's id), or its submitting process died.

        The submit answer normally lands within the upstream timeout; if it never does (the
        submitting instance died), the transcript id from the verified webhook is adopted;
        with no webhook after SUBMIT_ORPHAN_AFTER_S, the job is failed. A failed job whose
        verified webhook comes later (upstream took it after all) is adopted the same way.
        """
        orphan_at = claimed.created_at + timedelta(seconds=self._orphan_after_s())
        if claimed.status == JobStatus.failed and await self._adopt_lost_submit(claimed):
            return
        if claimed.status == JobStatus.submitting and utcnow() < orphan_at:
            # The submit answer usually lands moments after such an early webhook: wait for
            # it (holding the lease) rather than hand the job back to the poll schedule.
            loop = asyncio.get_running_loop()
            deadline = loop.time() + min(self.settings.lease_s / 2, 10.0)
            while loop.time() < deadline:
                async with self.sessionmaker() as session:
                    row = (
                        await session.execute(
                            select(Job.upstream_id, Job.lease_owner).where(Job.id == claimed.id)
                        )
                    ).one_or_none()
                if row is None or row.lease_owner != self.owner:
                    return
                if row.upstream_id is not None:
                    claimed.upstream_id = row.upstream_id
                    await self.process_job(claimed)
                    return
                await asyncio.sleep(min(0.1, self.settings.tick_s))
        async with self.sessionmaker() as session, session.begin():
            job = await self._locked_job(session, claimed.id)
            if job is None:
                return
            now = utcnow()
            submitting = job.status == JobStatus.submitting
            if job.upstream_id is not None or not (submitting or job.status == JobStatus.failed):
                self._release(job, now)  # the submit answer landed meanwhile
                return
            give_up_at = job.created_at + timedelta(seconds=self._submit_window_s())
            if submitting and now < give_up_at:
                self._release(job, now + timedelta(seconds=self.settings.tick_s))
                return
            transcript_id = await session.scalar(
                select(WebhookDelivery.transcript_id)
                .where(WebhookDelivery.job_id == job.id, WebhookDelivery.transcript_id.is_not(None))
                .order_by(WebhookDelivery.received_at)
                .limit(1)
            )
            if transcript_id is not None:
                logger.warning(
                    "webhooks.reconciler.adopted_transcript_id",
                    extra={"job_id": str(job.id), "upstream_id": transcript_id},
                )
                job.upstream_id = transcript_id
                job.status = JobStatus.queued.value
                job.error = None
                await publish_job_event(session, job, job.status, job_view(job))
                self._release(job, now)
                return
            if submitting and now >= orphan_at:
                logger.warning("webhooks.reconciler.orphaned_submit", extra={"job_id": str(job.id)})
                self._release(job, None)
                await mark_submit_failed(session, job, ORPHANED_SUBMIT_ERROR)
                return
            self._release(job, None)


async def mark_due(session: AsyncSession, job_id: uuid.UUID) -> None:
    """Ask the reconciler to look at a job now (used by tests and admin tools)."""
    await session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status.not_in(FINAL_STATUSES))
        .values(next_check_at=utcnow())
    )
