"""The AssemblyAI webhook receiver: verify, record idempotently, mark the job due.

Nothing here calls upstream: the request only writes two rows and answers; the
reconciler fetches the transcript after the commit.
"""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.db import utcnow
from app.core.errors import BadRequest, NotFound, Unauthorized
from app.core.security import hash_key, secrets_equal
from app.transcripts.models import FINAL_STATUSES, Job
from app.transcripts.service import WEBHOOK_AUTH_HEADER
from app.webhooks.events import wake_reconcilers
from app.webhooks.models import WebhookDelivery

logger = logging.getLogger(__name__)

__all__ = ["WEBHOOK_AUTH_HEADER", "Receipt", "WebhookUnauthorized", "receive"]


class WebhookUnauthorized(Unauthorized):
    message = "Missing or wrong webhook secret."


@dataclass(frozen=True)
class Receipt:
    duplicate: bool
    job_final: bool


async def receive(
    session: AsyncSession, job_id: uuid.UUID, presented: str | None, body: bytes
) -> Receipt:
    """Record one delivery for `job_id`; a repeated body answers again and changes nothing."""
    if not presented:
        raise WebhookUnauthorized()
    row = (
        await session.execute(
            select(Job.id, Job.upstream_id, Job.webhook_secret_hash, Job.status).where(
                Job.id == job_id, Job.deleted_at.is_(None)
            )
        )
    ).one_or_none()
    if row is None:
        raise NotFound("No such job.")
    if not secrets_equal(hash_key(presented), row.webhook_secret_hash):
        logger.warning("webhooks.receive.bad_secret", extra={"job_id": str(job_id)})
        raise WebhookUnauthorized()
    try:
        payload = json.loads(body)
    except ValueError:
        raise BadRequest("The webhook body is not JSON.") from None
    if not isinstance(payload, dict) or not isinstance(payload.get("transcript_id"), str):
        raise BadRequest("The webhook body has no transcript_id.")
    transcript_id: str = payload["transcript_id"]
    status = payload.get("status")
    # Before the submit answer lands the job has no upstream id yet: the delivery is kept
    # and its transcript_id checked by the reconciler.
    if row.upstream_id is not None and transcript_id != row.upstream_id:
        raise BadRequest("transcript_id does not belong to this job.")
    inserted = await session.scalar(
        insert(WebhookDelivery)
        .values(
            job_id=job_id,
            body_sha256=hashlib.sha256(body).hexdigest(),
            transcript_id=transcript_id[:100],
            status=str(status)[:32] if status is not None else None,
            received_at=utcnow(),
        )
        .on_conflict_do_nothing(constraint="uq_webhook_deliveries_job")
        .returning(WebhookDelivery.id)
    )
    final = row.status in FINAL_STATUSES
    if inserted is None:
        logger.info("webhooks.receive.duplicate", extra={"job_id": str(job_id)})
        return Receipt(duplicate=True, job_final=final)
    if not final:
        now = utcnow()
        await session.execute(
            update(Job)
            .where(Job.id == job_id, Job.status.not_in(FINAL_STATUSES))
            .values(next_check_at=now, webhook_received_at=now)
        )
        await wake_reconcilers(session)
    logger.info(
        "webhooks.receive.recorded",
        extra={"job_id": str(job_id), "status": status, "job_final": final},
    )
    return Receipt(duplicate=False, job_final=final)
