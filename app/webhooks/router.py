"""Routes: the AssemblyAI webhook receiver, live job status (SSE), signing-secret rotation."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sse_starlette import EventSourceResponse
from starlette.types import Scope as AsgiScope

from app.core.boundary import INT64_MAX, BoundaryRoute
from app.core.config import WebhookSettings
from app.core.db import utcnow
from app.core.deps import SessionDep, WebhookSettingsDep, read_limited
from app.core.errors import (
    BadRequest,
    Forbidden,
    NotFound,
    ServiceUnavailable,
)
from app.core.middleware import Endpoint, Shortcut
from app.core.secretbox import secret_box
from app.identity.auth import get_principal
from app.identity.callers import require_caller_scope
from app.identity.models import ApiKey
from app.identity.principal import Principal
from app.identity.scopes import Scope
from app.metrics import WEBHOOK_ACKS, labelled
from app.transcripts.models import FINAL_STATUSES, Job
from app.transcripts.service import owner_conditions
from app.transcripts.views import job_view
from app.webhooks import service
from app.webhooks.events import events_after
from app.webhooks.hub import EventHub, JobEventMessage, Resync
from app.webhooks.runtime import WebhooksRuntime
from app.webhooks.schemas import SigningSecretRotated, WebhookAck
from app.webhooks.signing import rotate_signing_secret

logger = logging.getLogger(__name__)

router = APIRouter(tags=["webhooks"], route_class=BoundaryRoute)

# Keys, app session cookies (what a browser's EventSource can send) and JWTs.
CallerTranscriptsDep = Annotated[Principal, Depends(require_caller_scope(Scope.transcripts.value))]


WEBHOOK_PREFIX = "/webhooks/assemblyai/"
# The two answers, encoded once (what WebhookAck serialises to).
_ACK = {
    False: WebhookAck(duplicate=False).model_dump_json().encode(),
    True: WebhookAck(duplicate=True).model_dump_json().encode(),
}


async def _receive(job_id: uuid.UUID, request: Request) -> Response:
    presented = request.headers.get(service.WEBHOOK_AUTH_HEADER)
    if not presented:
        raise service.WebhookUnauthorized()
    # No SessionDep or settings dependency on this hot path: see app/webhooks/service.py (and a
    # sync dependency would run in the thread pool, about a millisecond under load).
    settings: WebhookSettings = request.app.state.settings.webhooks
    limit = settings.max_body_bytes
    body = await read_limited(request, limit, f"The webhook body is over {limit} bytes.")
    runtime: WebhooksRuntime | None = getattr(request.app.state, "webhooks", None)
    if runtime is None:
        raise ServiceUnavailable("The webhook receiver is not running.")
    # The local reconciler is woken in process; only an instance without one (a web-only
    # instance beside `aai-proxy worker`) wakes the others through Postgres.
    local = runtime.reconciler
    runtime.ack_started()
    try:
        receipt = await service.receive(runtime.pool, job_id, presented, body, notify=local is None)
    finally:
        runtime.ack_done()
    if receipt.marked_due and local is not None:
        local.nudge(job_id)
    labelled(WEBHOOK_ACKS, "duplicate" if receipt.duplicate else "accepted").inc()
    return Response(_ACK[receipt.duplicate], media_type="application/json")


@router.post(
    "/webhooks/assemblyai/{job_id}",
    response_model=WebhookAck,
    responses={
        400: {"description": "Not JSON, or transcript_id is not this job's"},
        401: {"description": "Missing or wrong webhook secret"},
        404: {"description": "Unknown job"},
        413: {"description": "Body too large"},
        503: {"description": "The receiver is not running"},
    },
    include_in_schema=True,
)
async def receive_assemblyai_webhook(job_id: uuid.UUID, request: Request) -> Response:
    """Receive AssemblyAI's completion webhook for one job (recorded; processed after)."""
    return await _receive(job_id, request)


class WebhookShortcut(Shortcut):
    """`POST /webhooks/assemblyai/{job_id}` goes straight to the receiver, past the
    middleware stack, FastAPI's routing, dependency solving and response-model validation
    (see ProxyApp; measured with bench/webhook_burst.py). Anything else (another
    method, a malformed job id: FastAPI's 422) goes through the registered route as before.
    """

    def match(self, scope: AsgiScope) -> Endpoint | None:
        if scope["method"] != "POST" or not scope["path"].startswith(WEBHOOK_PREFIX):
            return None
        try:
            job_id = uuid.UUID(scope["path"][len(WEBHOOK_PREFIX) :])
        except ValueError:
            return None
        return functools.partial(_receive, job_id)

    def template(self, scope: AsgiScope) -> str:
        return WEBHOOK_PREFIX + "{job_id}"


# --- Live status -------------------------------------------------------------------------


def _hub(request: Request) -> EventHub:
    hub: EventHub | None = getattr(request.app.state, "event_hub", None)
    if hub is None:
        raise NotFound("Live status is not available on this instance.")
    return hub


def _sse(event_id: int, event: str, data: dict[str, Any]) -> bytes:
    return JobEventMessage("", event_id, event, data).sse


def _is_final(data: dict[str, Any]) -> bool:
    return data.get("status") in FINAL_STATUSES


async def _job_stream(
    sessionmaker: async_sessionmaker[AsyncSession],
    hub: EventHub,
    job_id: uuid.UUID,
    last_event_id: int | None,
    final_grace_s: float,
) -> AsyncIterator[bytes]:
    # Subscribe before reading the table so nothing published in between is missed;
    # duplicates are dropped by id.
    sub = hub.subscribe(job_id)
    try:
        async with sessionmaker() as session:
            job = await session.get(Job, job_id)
            if job is None:
                return
            final = job.is_final
            if last_event_id is None:
                last = job.version
                yield _sse(job.version, job.status, job_view(job))
            else:
                last = last_event_id
                for row in await events_after(session, job_id, last):
                    yield _sse(row.version, row.event, row.data)
                    last = row.version
        final_at = time.monotonic() if final else None
        while True:
            timeout = None
            if final_at is not None:
                timeout = max(0.0, final_at + final_grace_s - time.monotonic())
            try:
                item = await asyncio.wait_for(sub.queue.get(), timeout)
            except TimeoutError:
                return  # final, and nothing more (summaries) came within the grace period
            messages: list[JobEventMessage] = []
            if isinstance(item, Resync):
                async with sessionmaker() as session:
                    rows = await events_after(session, job_id, last)
                messages = [JobEventMessage(str(job_id), r.version, r.event, r.data) for r in rows]
            else:
                messages = [item]
            for message in messages:
                if message.id <= last:
                    continue
                yield message.sse
                last = message.id
                if message.event == "deleted":
                    return  # nothing more will happen to this job
                if _is_final(message.data) or final_at is not None:
                    final_at = time.monotonic()
    finally:
        hub.unsubscribe(sub)


@router.get(
    "/api/transcripts/{job_id}/events",
    responses={
        200: {"content": {"text/event-stream": {}}, "description": "A stream of job events"},
        401: {"description": "Missing or invalid key, session or JWT"},
        403: {"description": "Caller lacks the transcripts scope"},
        404: {"description": "No such job for this caller"},
    },
    tags=["transcripts"],
)
async def job_events(
    job_id: uuid.UUID,
    request: Request,
    session: SessionDep,
    settings: WebhookSettingsDep,
    principal: CallerTranscriptsDep,
) -> EventSourceResponse:
    """Live status of one job as Server-Sent Events (resume with Last-Event-ID)."""
    # The transcripts' ownership rule: a signed-in end user sees only their own jobs.
    owned = await session.scalar(
        select(Job.id).where(
            Job.id == job_id, *owner_conditions(principal), Job.deleted_at.is_(None)
        )
    )
    if owned is None:
        raise NotFound("No such transcript.")
    last_event_id: int | None = None
    raw_last = request.headers.get("last-event-id")
    if raw_last:
        try:
            last_event_id = max(0, int(raw_last))
        except ValueError:
            last_event_id = -1
        if not 0 <= last_event_id <= INT64_MAX:  # event ids are bigint
            raise BadRequest("Last-Event-ID must be an event id from this stream.")
    return EventSourceResponse(
        _job_stream(
            request.app.state.sessionmaker,
            _hub(request),
            job_id,
            last_event_id,
            settings.sse_final_grace_s,
        ),
        ping=settings.sse_heartbeat_s,
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


# --- Signing secrets ---------------------------------------------------------------------


@router.post(
    "/api/keys/{key_id}/signing-secret/rotate",
    response_model=SigningSecretRotated,
    responses={
        401: {"description": "Missing or invalid key"},
        403: {"description": "Neither an admin key nor the key itself"},
        404: {"description": "No such key"},
    },
    tags=["keys"],
)
async def rotate_key_signing_secret(
    key_id: uuid.UUID,
    session: SessionDep,
    settings: WebhookSettingsDep,
    principal: Annotated[Principal, Depends(get_principal)],
) -> SigningSecretRotated:
    """Rotate a key's webhook signing secret; the previous one signs during a grace period."""
    if not principal.has(Scope.admin.value) and principal.key_id != key_id:
        raise Forbidden("Only an admin key or the key itself may rotate its signing secret.")
    key = await session.get(ApiKey, key_id)
    if key is None:
        raise NotFound("No key with that id.")
    grace = settings.signing_secret_grace_s
    box = secret_box(settings.secrets)
    secret, previous = await rotate_signing_secret(session, box, key_id, grace)
    until = utcnow() + timedelta(seconds=grace) if previous else None
    logger.info("webhooks.signing_secret.rotated", extra={"key_id": str(key_id)})
    return SigningSecretRotated(
        key_id=key_id, webhook_signing_secret=secret, previous_valid_until=until
    )
