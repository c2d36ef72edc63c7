"""The AssemblyAI webhook receiver: verify, record idempotently, mark the job due.

Nothing here calls upstream: the request only records the delivery and answers; the
reconciler fetches the transcript after the commit.

This is the one hot path that does not go through the ORM session: AssemblyAI may deliver
bursts, and it should hear 2xx in milliseconds. One SQL statement, sent on a small asyncpg
pool of this feature's own, looks the job up, records the delivery, marks the job due and
wakes the reconcilers, in one round trip and one implicit transaction. That pool runs with
`synchronous_commit=off`: a delivery lost to a database crash in the following fraction of
a second only delays its job, because every unfinished job is on the poll schedule too.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from dataclasses import dataclass
from typing import Any

from app.core.boundary import parse_json
from app.core.db import utcnow
from app.core.errors import BadRequest, NotFound, Unauthorized
from app.core.security import hash_key, secrets_equal
from app.transcripts.models import FINAL_STATUSES
from app.transcripts.service import WEBHOOK_AUTH_HEADER
from app.webhooks.events import WAKE_CHANNEL

logger = logging.getLogger(__name__)

__all__ = ["RECORD_SQL", "WEBHOOK_AUTH_HEADER", "Receipt", "WebhookUnauthorized", "receive"]

# $1 job id, $2 sha256 of the presented secret, $3 transcript id (NULL: unusable body),
# $4 sha256 of the body, $5 payload status, $6 now, $7 final statuses, $8 wake channel
# (NULL: no NOTIFY; the caller wakes its own in-process reconciler instead).
# The delivery is recorded only when the secret's hash and the transcript id match; Python
# then re-checks the hash in constant time and picks the answer. A job whose submit failed
# with no upstream id (timeout, or its process died) is marked due too: the verified
# webhook proves upstream took it, and the reconciler adopts its transcript id.
RECORD_SQL = """
WITH job AS (
    SELECT id, upstream_id, webhook_secret_hash, status
    FROM jobs WHERE id = $1 AND deleted_at IS NULL
), ok AS (
    SELECT id FROM job
    WHERE webhook_secret_hash IS NOT NULL AND webhook_secret_hash = $2
      AND $3::text IS NOT NULL AND (upstream_id IS NULL OR upstream_id = $3::text)
), ins AS (
    INSERT INTO webhook_deliveries (job_id, body_sha256, transcript_id, status, received_at)
    SELECT id, $4, $3::text, $5, $6 FROM ok
    ON CONFLICT ON CONSTRAINT uq_webhook_deliveries_job DO NOTHING
    RETURNING id
), due AS (
    UPDATE jobs SET next_check_at = $6, webhook_received_at = $6
    WHERE id = $1 AND EXISTS (SELECT 1 FROM ins)
      AND (status <> ALL($7::text[]) OR (status = 'failed' AND upstream_id IS NULL))
    RETURNING id
)
SELECT job.id IS NOT NULL AS found, job.upstream_id, job.webhook_secret_hash, job.status,
       EXISTS (SELECT 1 FROM ins) AS inserted, EXISTS (SELECT 1 FROM due) AS marked,
       (SELECT count(pg_notify($8, $1::text)) FROM due WHERE $8::text IS NOT NULL) AS woke
FROM (SELECT 1) AS one LEFT JOIN job ON true
"""


class WebhookUnauthorized(Unauthorized):
    message = "Missing or wrong webhook secret."


@dataclass(frozen=True)
class Receipt:
    duplicate: bool
    job_final: bool
    marked_due: bool = False


def _parse(body: bytes) -> tuple[str | None, str | None]:
    """(transcript_id, status) from upstream's `{"transcript_id": ..., "status": ...}`."""
    # Deep, non-JSON or unstorable (NUL, lone surrogate) bodies are unusable: the delivery
    # is then refused with 400, after the secret was checked (401 first), never a 5xx.
    try:
        payload = parse_json(body)
    except BadRequest:
        return None, None
    if not isinstance(payload, dict) or not isinstance(payload.get("transcript_id"), str):
        return None, None
    status = payload.get("status")
    return payload["transcript_id"][:100], str(status)[:32] if status is not None else None


async def receive(
    pool: Any, job_id: uuid.UUID, presented: str | None, body: bytes, *, notify: bool = True
) -> Receipt:
    """Record one delivery for `job_id`; a repeated body answers again and changes nothing.

    `pool` is an asyncpg pool (or connection). With `notify`, the reconcilers of every
    instance are woken through Postgres; without, the caller wakes its own (a NOTIFY
    serialises committing transactions on a global lock, which a burst of webhooks feels).
    Errors, in the order a caller meets them:
    401 no secret, 404 unknown job, 401 wrong secret, 400 unusable body or another
    transcript's id.
    """
    if not presented:
        raise WebhookUnauthorized()
    transcript_id, status = _parse(body)
    presented_hash = hash_key(presented)
    row = await pool.fetchrow(
        RECORD_SQL,
        job_id,
        presented_hash,
        transcript_id,
        hashlib.sha256(body).hexdigest(),
        status,
        utcnow(),
        list(FINAL_STATUSES),
        WAKE_CHANNEL if notify else None,
    )
    if not row["found"]:
        raise NotFound("No such job.")
    if not secrets_equal(presented_hash, row["webhook_secret_hash"]):
        logger.warning("webhooks.receive.bad_secret", extra={"job_id": str(job_id)})
        raise WebhookUnauthorized()
    if transcript_id is None:
        raise BadRequest("The webhook body is not JSON with a transcript_id.")
    # Before the submit answer lands the job has no upstream id yet: the delivery is kept
    # and its transcript_id checked by the reconciler.
    if row["upstream_id"] is not None and transcript_id != row["upstream_id"]:
        raise BadRequest("transcript_id does not belong to this job.")
    final = row["status"] in FINAL_STATUSES
    if not row["inserted"]:
        logger.info("webhooks.receive.duplicate", extra={"job_id": str(job_id)})
        return Receipt(duplicate=True, job_final=final)
    logger.info(
        "webhooks.receive.recorded",
        extra={"job_id": str(job_id), "status": status, "job_final": final},
    )
    return Receipt(duplicate=False, job_final=final, marked_due=bool(row["marked"]))
