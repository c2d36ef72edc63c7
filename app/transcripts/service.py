"""Transcription jobs: submit under policy, read through a Postgres cache, delete, list.

Submits write the job row in their own short, committed transaction before calling
upstream (a webhook that arrives at once must find it), and record upstream's answer in
another; both are shielded from the caller's disconnect, so a job is never left
"submitting" because a client hung up. Reads use the request's session.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import httpx
from sqlalchemy import and_, delete, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.audit.record import record_audit
from app.core import events
from app.core.config import TranscriptSettings
from app.core.db import utcnow
from app.core.errors import (
    AppError,
    Conflict,
    NotFound,
    UpstreamClientError,
    UpstreamError,
    UpstreamTimeout,
)
from app.core.secretbox import SecretBox, secret_box
from app.core.security import hash_key, new_secret
from app.core.ssrf import validate_relay_url
from app.identity.principal import Principal
from app.transcripts.models import FINAL_STATUSES, Job, JobStatus, TranscriptResource
from app.transcripts.policy import SubmitPlan
from app.transcripts.schemas import AppSubmitOptions
from app.transcripts.views import job_view
from app.uploads.ownership import check_audio_url
from app.upstream.client import RestClient
from app.upstream.transport import is_connect_failure

logger = logging.getLogger(__name__)

# The header AssemblyAI sends back on our webhook, carrying the per-job secret.
WEBHOOK_AUTH_HEADER = "X-AAI-Proxy-Webhook-Secret"
UPSTREAM_STATUSES = ("queued", "processing", "completed", "error")
# Sub-resources and the query parameters upstream documents for each (others are dropped,
# so the cache key is canonical).
SUBRESOURCES: dict[str, tuple[str, ...]] = {
    "paragraphs": (),
    "sentences": (),
    "srt": ("chars_per_caption",),
    "vtt": ("chars_per_caption",),
    "word-search": ("words",),
}


# --- Events ----------------------------------------------------------------------------------


async def announce(
    session: AsyncSession, job: Job, event: str, data: dict[str, Any] | None = None
) -> None:
    """Every status change of a job goes through here (SSE, relay and friends listen).

    The payload is the reconciler's job summary (`job_view`), so an event carries the same
    fields whichever code path changed the job."""
    await events.publish(events.JobChanged(session, job, event, {**job_view(job), **(data or {})}))


async def mark_submit_failed(session: AsyncSession, job: Job, reason: str) -> None:
    """The submit never produced an upstream job (refused, failed, or its process died):
    final `failed`, announced and audited. The caller holds the row (locked or leased)."""
    job.status = JobStatus.failed.value
    job.error = reason
    job.next_check_at = None
    await announce(session, job, JobStatus.failed.value)
    await record_audit(
        session,
        action="transcript.submit",
        outcome="failed",
        key_id=job.key_id,
        subject=str(job.id),
        error=reason,
    )


# --- Submit ----------------------------------------------------------------------------------


def request_hash(body: object) -> str:
    """A stable digest of a submit body (key order and whitespace don't matter)."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


async def check_caller_webhook(plan: SubmitPlan, settings: TranscriptSettings) -> None:
    """Refuse (400 RelayUrlRefused) a caller webhook_url the relay would never call (not
    http(s), metadata, link-local, private unless allowed): at submit, before any upstream
    call, rather than as a relay that fails hours later."""
    if plan.caller_webhook is not None:
        await validate_relay_url(plan.caller_webhook.url, settings.relay_urls)


@dataclass(frozen=True)
class Submitted:
    job: Job
    upstream: dict[str, Any] | None  # upstream's answer; None when replayed from the key
    replayed: bool = False


async def submit_job(
    sessionmaker: async_sessionmaker[AsyncSession],
    rest: RestClient,
    settings: TranscriptSettings,
    principal: Principal,
    plan: SubmitPlan,
    *,
    idempotency_key: str | None = None,
    body_hash: str | None = None,
    options: AppSubmitOptions | None = None,
) -> Submitted:
    """Create the job (committed), submit upstream, record the answer.

    With an `idempotency_key`, a repeat of the same body returns the first job without a
    second upstream submit; the same key with another body is a 409. `options` are the
    app surface's own requests for the job (see `AppSubmitOptions`); none are defined yet.
    """
    # Before any row or upstream call: a feature acting on the job may refuse (llm checks
    # the summaries asked for).
    await events.publish(events.JobRequested(principal, options))
    await check_caller_webhook(plan, settings)
    await check_audio_url(sessionmaker, principal, plan.audio_url)
    secret = new_secret() if settings.public_base_url else None
    job_id = uuid.uuid4()
    if idempotency_key is not None:
        existing = await _claim_idempotency_key(
            sessionmaker,
            rest,
            settings,
            principal,
            plan,
            job_id,
            secret,
            idempotency_key,
            body_hash,
        )
        if existing is not None:
            return Submitted(job=existing, upstream=None, replayed=True)
    else:
        await _insert_job(
            sessionmaker, secret_box(settings.secrets), principal, plan, job_id, secret, None, None
        )
    # Before the upstream submit, so a job that completes at once finds its summaries.
    await events.publish(events.JobCreated(sessionmaker, job_id, options))
    # Shielded: once the row exists, the submit and its record finish even if the caller
    # disconnects, so the job never stays "submitting" with an unknown outcome.
    task = asyncio.ensure_future(
        _submit_upstream(sessionmaker, rest, settings, job_id, plan, secret)
    )
    job, answer = await asyncio.shield(task)
    return Submitted(job=job, upstream=answer)


def _job_values(
    box: SecretBox,
    principal: Principal,
    plan: SubmitPlan,
    job_id: uuid.UUID,
    secret: str | None,
    idempotency_key: str | None,
    body_hash: str | None,
) -> dict[str, Any]:
    now = utcnow()
    webhook = plan.caller_webhook
    return {
        "id": job_id,
        "key_id": principal.key_id,
        "end_user": principal.end_user,
        "status": JobStatus.submitting.value,
        "audio_url": plan.audio_url,
        "request": plan.params,
        "webhook_secret_hash": hash_key(secret) if secret else None,
        "caller_webhook_url": webhook.url if webhook else None,
        "caller_webhook_auth_header_name": webhook.auth_header_name if webhook else None,
        # Sealed: the relay sends it, so it is stored readable, but only with SECRETS_KEY.
        "caller_webhook_auth_header_value": (
            box.seal(webhook.auth_header_value) if webhook and webhook.auth_header_value else None
        ),
        "idempotency_key": idempotency_key,
        "request_hash": body_hash,
        "created_at": now,
        "updated_at": now,
        "check_attempts": 0,
        "version": 0,
    }


async def _insert_job(
    sessionmaker: async_sessionmaker[AsyncSession],
    box: SecretBox,
    principal: Principal,
    plan: SubmitPlan,
    job_id: uuid.UUID,
    secret: str | None,
    idempotency_key: str | None,
    body_hash: str | None,
) -> bool:
    """Insert and commit the job row; False when the idempotency key is already taken."""
    values = _job_values(box, principal, plan, job_id, secret, idempotency_key, body_hash)
    statement = pg_insert(Job).values(**values)
    if idempotency_key is not None:
        statement = statement.on_conflict_do_nothing(constraint="uq_jobs_key_id_idempotency_key")
    async with sessionmaker() as session, session.begin():
        inserted = await session.scalar(statement.returning(Job.id))
    return inserted is not None


async def _claim_idempotency_key(
    sessionmaker: async_sessionmaker[AsyncSession],
    rest: RestClient,
    settings: TranscriptSettings,
    principal: Principal,
    plan: SubmitPlan,
    job_id: uuid.UUID,
    secret: str | None,
    idempotency_key: str,
    body_hash: str | None,
) -> Job | None:
    """None when this request now owns the key (its row is inserted), else the first job."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + settings.idempotency_wait_s
    while True:
        if await _insert_job(
            sessionmaker,
            secret_box(settings.secrets),
            principal,
            plan,
            job_id,
            secret,
            idempotency_key,
            body_hash,
        ):
            return None
        async with sessionmaker() as session:
            existing = await session.scalar(
                select(Job).where(
                    Job.key_id == principal.key_id, Job.idempotency_key == idempotency_key
                )
            )
        if existing is None:
            continue  # released between our insert and our read: try again
        # Another end user's job under the same app key is not theirs to replay.
        hidden = (
            principal.via != "key"
            and principal.end_user is not None
            and existing.end_user != principal.end_user
        )
        if existing.request_hash != body_hash or hidden:
            raise Conflict(
                "This Idempotency-Key was used with a different request body; "
                "use a new key for a new request."
            )
        if lost_submit_pending(existing):
            # Its answer was lost: upstream may have the transcript. Adopt it rather than
            # submit (and bill) a second time; if upstream has none, retry below.
            adopted = await adopt_lost_submit(sessionmaker, rest, settings, existing.id)
            if adopted is not None:
                return adopted
            continue
        if existing.status == JobStatus.failed.value:
            # Upstream never took that job: release the key so this request can retry.
            async with sessionmaker() as session, session.begin():
                await session.execute(
                    update(Job)
                    .where(Job.id == existing.id, Job.status == JobStatus.failed.value)
                    .values(idempotency_key=None)
                )
            continue
        if existing.status != JobStatus.submitting.value:
            return existing
        # The first request is still talking to upstream: wait for its outcome.
        if loop.time() >= deadline:
            raise Conflict(
                "A request with this Idempotency-Key is still in progress; retry shortly.",
            )
        await asyncio.sleep(0.05)


async def _submit_upstream(
    sessionmaker: async_sessionmaker[AsyncSession],
    rest: RestClient,
    settings: TranscriptSettings,
    job_id: uuid.UUID,
    plan: SubmitPlan,
    secret: str | None,
) -> tuple[Job, dict[str, Any]]:
    payload = dict(plan.params)
    if secret is not None:
        payload["webhook_url"] = f"{settings.public_base_url}{webhook_path(job_id)}"
        payload["webhook_auth_header_name"] = WEBHOOK_AUTH_HEADER
        payload["webhook_auth_header_value"] = secret
    try:
        answer = await rest.submit(payload)
        upstream_id = answer.get("id")
        if not isinstance(upstream_id, str) or not upstream_id:
            raise UpstreamError("AssemblyAI accepted the submit without a transcript id.")
    except BaseException as exc:
        error = (
            exc
            if isinstance(exc, AppError)
            else UpstreamError(f"The submit to AssemblyAI failed ({type(exc).__name__}).")
        )
        # A read timeout, or a connection that broke after the request went out: the
        # submit was sent and no answer came, so upstream may well have taken the job.
        cause = exc.__cause__
        lost = isinstance(cause, httpx.TransportError) and not is_connect_failure(cause)
        if isinstance(exc, UpstreamTimeout) and "could not be reached" not in exc.message:
            lost = True
            error = UpstreamTimeout(_unanswered_submit_message(webhook=secret is not None))
        # A lost answer with a webhook_url (which names the job) can be looked for upstream:
        # the job stays due, so the reconciler (or a retry) searches before anything else.
        search = settings if lost and secret is not None else None
        await _record_failure(sessionmaker, job_id, error.message, search=search)
        if error is exc or not isinstance(exc, Exception):
            raise
        raise error from exc
    job = await _record_accepted(sessionmaker, settings, job_id, upstream_id, answer)
    return job, answer


# --- A lost submit answer -------------------------------------------------------------------

# Upstream's clock may differ from ours: look this much before the job's creation too.
LOST_SUBMIT_CLOCK_SKEW_S = 300.0
LOST_SUBMIT_PAGE = 200  # upstream's largest list page
LOST_SUBMIT_MAX_PAGES = 10
# Transcripts of the same audio fetched at most (a URL submitted again and again).
LOST_SUBMIT_MAX_FETCHES = 50


def webhook_path(job_id: uuid.UUID) -> str:
    """The path of the webhook_url we give upstream for a job: it names the job."""
    return f"/webhooks/assemblyai/{job_id}"


def lost_submit_pending(job: Job) -> bool:
    """A submit whose answer was lost (read timeout) and that is still to be looked for."""
    return (
        job.status == JobStatus.failed.value
        and job.upstream_id is None
        and job.next_check_at is not None
        and job.deleted_at is None
    )


def _created_at(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


async def find_lost_submit(rest: RestClient, job: Job) -> dict[str, Any] | None:
    """The upstream transcript a lost submit created, if upstream took it.

    Upstream's list (`GET /v2/transcript`, newest first, `before_id` paging) gives each
    transcript's id, `audio_url` and `created`, not its webhook; candidates with the job's
    audio_url are fetched one by one and the one whose `webhook_url` ends with this job's
    webhook path (it carries our job id) is ours. The search stops at transcripts created
    well before the job (clock skew allowed) or after LOST_SUBMIT_MAX_PAGES pages.
    """
    suffix = webhook_path(job.id)
    since = job.created_at - timedelta(seconds=LOST_SUBMIT_CLOCK_SKEW_S)
    params: dict[str, Any] = {"limit": LOST_SUBMIT_PAGE}
    fetches = 0
    for _ in range(LOST_SUBMIT_MAX_PAGES):
        page = await rest.list_transcripts(params)
        items = [i for i in page.get("transcripts") or [] if isinstance(i, dict)]
        for item in items:
            transcript_id = item.get("id")
            if item.get("audio_url") != job.audio_url or not isinstance(transcript_id, str):
                continue
            created = _created_at(item.get("created"))
            if created is not None and created < since:
                continue  # made before this job existed: another submit of the same audio
            fetches += 1
            if fetches > LOST_SUBMIT_MAX_FETCHES:
                return None
            try:
                candidate = await rest.get_transcript(transcript_id)
            except UpstreamClientError as exc:
                if exc.status_code != 404:
                    raise
                # Listed, then gone (deleted, or another key's): not ours; keep looking.
                continue
            hook = candidate.get("webhook_url")
            if isinstance(hook, str) and hook.split("?", 1)[0].endswith(suffix):
                return candidate
        if not items:
            return None
        oldest = _created_at(items[-1].get("created"))
        details = page.get("page_details")
        more = isinstance(details, dict) and bool(details.get("prev_url"))
        if (oldest is not None and oldest < since) or not more:
            return None
        params = {"limit": LOST_SUBMIT_PAGE, "before_id": items[-1].get("id")}
    return None


async def adopt_lost_submit(
    sessionmaker: async_sessionmaker[AsyncSession],
    rest: RestClient,
    settings: TranscriptSettings,
    job_id: uuid.UUID,
) -> Job | None:
    """Look upstream for the transcript a lost submit made and adopt it (the job becomes
    that transcript's, as if the answer had come): the job, or None if upstream has none
    (then the search is over: the job stays failed and not due), or if the job was
    deleted during the search (it is never revived)."""
    async with sessionmaker() as session:
        job = await session.get(Job, job_id)
    if job is None or not lost_submit_pending(job):
        return None
    found = await find_lost_submit(rest, job)
    if found is None:
        async with sessionmaker() as session, session.begin():
            await session.execute(
                update(Job)
                .where(Job.id == job_id, Job.upstream_id.is_(None))
                .values(next_check_at=None)
            )
        logger.info("transcripts.lost_submit.not_found", extra={"job_id": str(job_id)})
        return None
    # Recorded as an answer that says "processing" at most: a finished transcript is then
    # fetched and finalised by the usual path (result cached, events, relay, summaries).
    status = found.get("status")
    answer = {**found, "status": status if status in ("queued", "processing") else "processing"}
    job = await _record_accepted(
        sessionmaker, settings, job_id, str(found["id"]), answer, adopting=True
    )
    if job.deleted_at is None:
        logger.warning(
            "transcripts.lost_submit.adopted",
            extra={"job_id": str(job_id), "upstream_id": str(found.get("id"))},
        )
        return job
    # Deleted while we searched: not adopted (a deleted job is never revived).
    logger.info(
        "transcripts.lost_submit.deleted",
        extra={"job_id": str(job_id), "upstream_id": str(found.get("id"))},
    )
    return None


def _unanswered_submit_message(*, webhook: bool) -> str:
    then = (
        "if it did, its webhook will still be recorded and this job picked up."
        if webhook
        else "if it did, the transcript exists there, but without a webhook "
        "(PUBLIC_BASE_URL) this job cannot learn of it."
    )
    return f"AssemblyAI did not answer the submit in time; it may have accepted it anyway: {then}"


async def _record_failure(
    sessionmaker: async_sessionmaker[AsyncSession],
    job_id: uuid.UUID,
    reason: str,
    *,
    search: TranscriptSettings | None = None,
) -> None:
    async with sessionmaker() as session, session.begin():
        job = await session.scalar(select(Job).where(Job.id == job_id).with_for_update())
        if job is None:
            return
        await mark_submit_failed(session, job, reason)
        if search is not None:
            # Failed, no upstream id, due: what the reconciler claims to adopt (see
            # find_lost_submit). A retry with the same Idempotency-Key searches too.
            job.next_check_at = utcnow() + timedelta(seconds=search.poll_initial_delay_s)
    logger.warning("transcripts.submit.failed", extra={"job_id": str(job_id), "reason": reason})


async def _record_accepted(
    sessionmaker: async_sessionmaker[AsyncSession],
    settings: TranscriptSettings,
    job_id: uuid.UUID,
    upstream_id: str,
    answer: dict[str, Any],
    *,
    adopting: bool = False,
) -> Job:
    now = utcnow()
    async with sessionmaker() as session, session.begin():
        job = await session.scalar(select(Job).where(Job.id == job_id).with_for_update())
        if job is None:  # pragma: no cover - the row was committed before the submit
            raise NotFound("The job disappeared during its submit.")
        if adopting and (job.upstream_id is not None or job.deleted_at is not None):
            # Another instance (a retry, the reconciler) searched at the same time and
            # adopted it first: recorded once, not accepted (and audited) twice. Or the
            # job was deleted during the search: a deleted job is never revived.
            return job
        # Failed with no upstream id: the reconciler gave this submit up for orphaned.
        revived = job.status == JobStatus.failed.value and job.upstream_id is None
        job.upstream_id = upstream_id
        job.submitted_at = now
        # A webhook may have advanced the job already: never move it backwards.
        if job.status == JobStatus.submitting.value or revived:
            job.error = None
            status = answer.get("status")
            job.status = status if status in UPSTREAM_STATUSES else JobStatus.queued.value
            # A webhook recorded before this answer means upstream moved on: look now.
            early = job.webhook_received_at is not None
            job.next_check_at = (
                now if early else now + timedelta(seconds=settings.poll_initial_delay_s)
            )
            await announce(session, job, job.status)
        await record_audit(
            session,
            action="transcript.submit",
            outcome="ok",
            key_id=job.key_id,
            subject=str(job.id),
            upstream_id=upstream_id,
        )
    logger.info(
        "transcripts.submit.accepted", extra={"job_id": str(job_id), "upstream_id": upstream_id}
    )
    return job


# --- Reads -----------------------------------------------------------------------------------


def owner_conditions(principal: Principal) -> list[Any]:
    """The caller's jobs: its key's; a signed-in end user (session cookie or JWT) sees only
    their own, as on the live status stream. A key caller sees every job of its key."""
    conditions: list[Any] = [Job.key_id == principal.key_id]
    if principal.via != "key" and principal.end_user is not None:
        conditions.append(Job.end_user == principal.end_user)
    return conditions


async def owned_by_upstream_id(
    session: AsyncSession, principal: Principal, upstream_id: str
) -> Job:
    """The caller's live job with this upstream id; anyone else's is a plain 404."""
    job = await session.scalar(
        select(Job).where(
            Job.upstream_id == upstream_id,
            *owner_conditions(principal),
            Job.deleted_at.is_(None),
        )
    )
    if job is None:
        raise NotFound("Transcript not found.")
    return job


async def owned(session: AsyncSession, principal: Principal, job_id: uuid.UUID) -> Job:
    job = await session.scalar(select(Job).where(Job.id == job_id, *owner_conditions(principal)))
    if job is None:
        raise NotFound("Transcript not found.")
    return job


async def transcript(session: AsyncSession, rest: RestClient, job: Job) -> dict[str, Any]:
    """The upstream transcript object: from our cache once final, else fetched and applied."""
    if job.result is not None and job.is_final:
        return job.result
    if job.upstream_id is None:
        # Upstream never took the job: describe it in upstream's shape.
        return {"id": None, "status": "error", "audio_url": job.audio_url, "error": job.error}
    obj = await rest.get_transcript(job.upstream_id)
    await apply_upstream(session, job, obj)
    return obj


async def apply_upstream(session: AsyncSession, job: Job, obj: Mapping[str, Any]) -> bool:
    """Record upstream's view of a job; announce a status change. True if anything changed.

    The row is locked while it is compared and written, so a concurrent reconciler or
    webhook cannot interleave and a transition is announced once.
    """
    status = obj.get("status")
    if status not in UPSTREAM_STATUSES:
        return False
    locked = await session.scalar(
        select(Job)
        .where(Job.id == job.id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    if locked is None or locked.deleted_at is not None:
        return False
    final = status in ("completed", "error")
    if locked.status == status and (not final or locked.result is not None):
        return False
    if locked.status in FINAL_STATUSES and not final:
        return False  # never move a finished job back
    changed_status = locked.status != status
    locked.status = status
    if final:
        locked.result = dict(obj)
        locked.completed_at = locked.completed_at or utcnow()
        locked.next_check_at = None
        locked.error = obj.get("error") if status == "error" else None
        duration = obj.get("audio_duration")
        if isinstance(duration, int | float):
            locked.audio_duration = float(duration)
        model = obj.get("speech_model_used") or obj.get("speech_model")
        if isinstance(model, str):
            locked.speech_model = model[:64]
    if changed_status:
        await announce(session, locked, status)
    await session.flush()
    return True


@dataclass(frozen=True)
class Resource:
    content_type: str
    body: bytes
    cached: bool


def canonical_params(resource: str, query: Mapping[str, str]) -> dict[str, str]:
    return {k: query[k] for k in sorted(SUBRESOURCES[resource]) if k in query}


async def subresource(
    session: AsyncSession, rest: RestClient, job: Job, resource: str, query: Mapping[str, str]
) -> Resource:
    """A sub-resource, from the cache when the job is complete (fetched once), else proxied."""
    if job.upstream_id is None:
        raise NotFound("Transcript not found.")
    params = canonical_params(resource, query)
    key = urlencode(params)
    cacheable = job.status == JobStatus.completed.value
    if cacheable:
        row = await session.scalar(
            select(TranscriptResource).where(
                TranscriptResource.job_id == job.id,
                TranscriptResource.resource == resource,
                TranscriptResource.params == key,
            )
        )
        if row is not None:
            return Resource(row.content_type, row.body, cached=True)
    response = await rest.get_subresource(job.upstream_id, resource, params or None)
    content_type = response.headers.get("content-type", "application/octet-stream")
    body = response.content
    if cacheable:
        await session.execute(
            pg_insert(TranscriptResource)
            .values(
                job_id=job.id,
                resource=resource,
                params=key,
                content_type=content_type[:200],
                body=body,
                created_at=utcnow(),
            )
            .on_conflict_do_nothing(constraint="uq_transcript_resources_job_resource_params")
        )
    return Resource(content_type, body, cached=False)


# --- Delete ----------------------------------------------------------------------------------


async def delete_job(
    session: AsyncSession, rest: RestClient, principal: Principal, job: Job
) -> dict[str, Any] | None:
    """Delete upstream (its refusal is passed on), then mark ours deleted and purge text."""
    answer = await rest.delete_transcript(job.upstream_id) if job.upstream_id else None
    job.deleted_at = utcnow()
    job.result = None
    job.next_check_at = None
    await session.execute(delete(TranscriptResource).where(TranscriptResource.job_id == job.id))
    await announce(session, job, "deleted")  # llm forgets the job's summaries
    await record_audit(
        session,
        action="transcript.delete",
        outcome="ok",
        principal=principal,
        subject=str(job.id),
        upstream_id=job.upstream_id,
    )
    return answer


# --- Lists -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Page:
    jobs: list[Job]
    has_older: bool
    has_newer: bool


async def list_upstream_shape(
    session: AsyncSession,
    principal: Principal,
    *,
    limit: int,
    status: str | None = None,
    created_on: datetime | None = None,
    before_id: str | None = None,
    after_id: str | None = None,
) -> Page:
    """The caller's jobs that upstream knows, newest first, paged like upstream's list."""
    base = [
        *owner_conditions(principal),
        Job.upstream_id.is_not(None),
        Job.deleted_at.is_(None),
    ]
    if status is not None:
        base.append(Job.status == status)
    if created_on is not None:
        base.append(Job.created_at >= created_on)
        base.append(Job.created_at < created_on + timedelta(days=1))
    order_desc = (Job.created_at.desc(), Job.id.desc())
    conditions = list(base)
    if before_id is not None:
        anchor = await owned_by_upstream_id(session, principal, before_id)
        conditions.append(_older_than(anchor))
    if after_id is not None:
        anchor = await owned_by_upstream_id(session, principal, after_id)
        conditions.append(_newer_than(anchor))
    if after_id is not None and before_id is None:
        # The page just after the anchor: the oldest `limit` newer jobs, shown newest first.
        rows = list(
            await session.scalars(
                select(Job)
                .where(*conditions)
                .order_by(Job.created_at.asc(), Job.id.asc())
                .limit(limit + 1)
            )
        )
        has_newer = len(rows) > limit
        jobs = list(reversed(rows[:limit]))
        has_older = bool(jobs) and await _exists(session, [*base, _older_than(jobs[-1])])
        return Page(jobs, has_older=has_older, has_newer=has_newer)
    rows = list(
        await session.scalars(select(Job).where(*conditions).order_by(*order_desc).limit(limit + 1))
    )
    jobs = rows[:limit]
    has_older = len(rows) > limit
    has_newer = bool(jobs) and await _exists(session, [*base, _newer_than(jobs[0])])
    return Page(jobs, has_older=has_older, has_newer=has_newer)


def _older_than(job: Job) -> Any:
    return or_(
        Job.created_at < job.created_at, and_(Job.created_at == job.created_at, Job.id < job.id)
    )


def _newer_than(job: Job) -> Any:
    return or_(
        Job.created_at > job.created_at, and_(Job.created_at == job.created_at, Job.id > job.id)
    )


async def _exists(session: AsyncSession, conditions: list[Any]) -> bool:
    return (await session.scalar(select(Job.id).where(*conditions).limit(1))) is not None


async def list_jobs(
    session: AsyncSession,
    principal: Principal,
    *,
    limit: int,
    status: str | None = None,
    cursor: tuple[datetime, uuid.UUID] | None = None,
) -> tuple[list[Job], tuple[datetime, uuid.UUID] | None]:
    """The caller's jobs, newest first, after `cursor`; returns the next cursor too."""
    conditions = [*owner_conditions(principal), Job.deleted_at.is_(None)]
    if status is not None:
        conditions.append(Job.status == status)
    if cursor is not None:
        at, job_id = cursor
        conditions.append(or_(Job.created_at < at, and_(Job.created_at == at, Job.id < job_id)))
    rows = list(
        await session.scalars(
            select(Job)
            .where(*conditions)
            .order_by(Job.created_at.desc(), Job.id.desc())
            .limit(limit + 1)
        )
    )
    jobs = rows[:limit]
    next_cursor = (jobs[-1].created_at, jobs[-1].id) if len(rows) > limit else None
    return jobs, next_cursor
