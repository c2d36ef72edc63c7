"""Relay a job's final state to the caller's own webhook, signed the Standard Webhooks way.

A delivery row is created once per job per final state (unique on job and status) in the
same transaction that finalises the job. The reconciler then claims due deliveries under
a lease and POSTs them; every attempt is recorded, retries keep the delivery's
`webhook-id`, and a 410 disables the caller's endpoint for that key.
"""

from __future__ import annotations

import json
import logging
import random
import time
import uuid
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.config import WebhookSettings
from app.core.db import utcnow
from app.core.leases import claim_leases, lease_free
from app.core.secretbox import SecretUnreadable, secret_box
from app.core.ssrf import RelayUrlRefused, ResolvedUrl, resolve_relay_url
from app.metrics import RELAY_DELIVERIES
from app.transcripts.models import Job
from app.webhooks.models import RelayAttempt, RelayDelivery, RelayEndpoint
from app.webhooks.schemas import relay_body
from app.webhooks.signing import valid_secrets, webhook_headers

logger = logging.getLogger(__name__)

USER_AGENT = "aai-proxy-webhooks/0.1"


async def schedule_relay(session: AsyncSession, job: Job) -> uuid.UUID | None:
    """Queue the relay of `job`'s (final) state, once; returns the new delivery's id."""
    if not job.caller_webhook_url:
        return None
    endpoint = (
        await session.execute(
            insert(RelayEndpoint)
            .values(
                id=uuid.uuid4(), key_id=job.key_id, url=job.caller_webhook_url, created_at=utcnow()
            )
            .on_conflict_do_update(
                constraint="uq_relay_endpoints_key_id_url", set_={"url": job.caller_webhook_url}
            )
            .returning(RelayEndpoint.id, RelayEndpoint.disabled_at)
        )
    ).one()
    if endpoint.disabled_at is not None:
        logger.info("webhooks.relay.endpoint_disabled", extra={"job_id": str(job.id)})
        return None
    delivery_id = await session.scalar(
        insert(RelayDelivery)
        .values(
            id=uuid.uuid4(),
            job_id=job.id,
            endpoint_id=endpoint.id,
            job_status=job.status,
            webhook_id="msg_" + uuid.uuid4().hex,
            status="pending",
            attempts=0,
            next_attempt_at=utcnow(),
            created_at=utcnow(),
        )
        .on_conflict_do_nothing(constraint="uq_relay_deliveries_job_id_job_status")
        .returning(RelayDelivery.id)
    )
    return delivery_id


async def claim_deliveries(
    sessionmaker: async_sessionmaker[AsyncSession], owner: str, limit: int, lease_s: float
) -> list[uuid.UUID]:
    now = utcnow()
    due = (
        select(RelayDelivery.id)
        .where(
            RelayDelivery.status == "pending",
            RelayDelivery.next_attempt_at <= now,
            lease_free(RelayDelivery, now),
        )
        .order_by(RelayDelivery.next_attempt_at)
        .limit(limit)
    )
    async with sessionmaker() as session, session.begin():
        rows = await claim_leases(
            session, RelayDelivery, due, owner=owner, until=now + timedelta(seconds=lease_s)
        )
        return [r[0] for r in rows]


async def claim_work(
    sessionmaker: async_sessionmaker[AsyncSession],
    http: httpx.AsyncClient,
    settings: WebhookSettings,
    owner: str,
    limit: int,
) -> list[Coroutine[Any, Any, str]]:
    """Claim up to `limit` due deliveries: the `webhooks.relay` job of app/worker.py."""
    ids = await claim_deliveries(sessionmaker, owner, limit, settings.lease_s)
    return [deliver(sessionmaker, http, settings, delivery_id, owner) for delivery_id in ids]


@dataclass
class _Outcome:
    code: int | None
    error: str | None
    duration_ms: float


def _pinned_request(resolved: ResolvedUrl) -> tuple[str, dict[str, str], dict[str, str]]:
    """The URL with the checked IP in place of the host, the Host header, and SNI."""
    parts = httpx.URL(resolved.url)
    url = str(parts.copy_with(host=resolved.address))
    default_port = 443 if resolved.scheme == "https" else 80
    host_header = (
        resolved.host if resolved.port == default_port else f"{resolved.host}:{resolved.port}"
    )
    extensions = {"sni_hostname": resolved.host} if resolved.scheme == "https" else {}
    return url, {"Host": host_header}, extensions


async def _post(
    http: httpx.AsyncClient, resolved: ResolvedUrl, headers: dict[str, str], body: bytes
) -> _Outcome:
    url, host_header, extensions = _pinned_request(resolved)
    started = time.perf_counter()
    try:
        response = await http.post(
            url, content=body, headers={**headers, **host_header}, extensions=extensions
        )
        return _Outcome(response.status_code, None, (time.perf_counter() - started) * 1000)
    except httpx.HTTPError as exc:
        return _Outcome(None, type(exc).__name__, (time.perf_counter() - started) * 1000)


def next_delay(schedule: Sequence[float], attempt: int) -> float | None:
    """Seconds until retry number `attempt` (1-based), with ±20 % jitter; None: give up."""
    if attempt > len(schedule):
        return None
    base = schedule[attempt - 1]
    return base * random.uniform(0.8, 1.2)


async def deliver(
    sessionmaker: async_sessionmaker[AsyncSession],
    http: httpx.AsyncClient,
    settings: WebhookSettings,
    delivery_id: uuid.UUID,
    owner: str,
) -> str:
    """Make one attempt of a claimed delivery; returns its resulting status."""
    async with sessionmaker() as session, session.begin():
        delivery = await session.get(RelayDelivery, delivery_id)
        if delivery is None or delivery.lease_owner != owner or delivery.status != "pending":
            return "lost"
        job = await session.get(Job, delivery.job_id)
        endpoint = await session.get(RelayEndpoint, delivery.endpoint_id)
        assert job is not None
        assert endpoint is not None
        if endpoint.disabled_at is not None:
            delivery.status = "disabled"
            delivery.next_attempt_at = None
            return delivery.status
        msg_id = delivery.webhook_id
        attempt_no = delivery.attempts + 1
        url = endpoint.url
        now = utcnow()
        body = json.dumps(relay_body(job, now), separators=(",", ":"), default=str).encode()
        box = secret_box(settings.secrets)
        unreadable: str | None = None
        headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT}
        try:
            secrets_ = await valid_secrets(session, box, job.key_id)
            headers.update(webhook_headers(secrets_, msg_id, int(now.timestamp()), body))
            if job.caller_webhook_auth_header_name and job.caller_webhook_auth_header_value:
                headers[job.caller_webhook_auth_header_name] = box.open(
                    job.caller_webhook_auth_header_value
                )
        except SecretUnreadable as exc:
            # Not sent unsigned: retried on the schedule (SECRETS_KEY may be put right).
            unreadable = str(exc)

    resolved: ResolvedUrl | None = None
    if unreadable is not None:
        outcome = _Outcome(None, f"not sent: {unreadable}", 0.0)
    else:
        try:
            resolved = await resolve_relay_url(url, settings.relay_urls)
        except RelayUrlRefused as exc:
            outcome = _Outcome(None, f"refused: {exc.message}", 0.0)
        if resolved is not None:
            outcome = await _post(http, resolved, headers, body)

    async with sessionmaker() as session, session.begin():
        delivery = await session.get(RelayDelivery, delivery_id, with_for_update=True)
        assert delivery is not None
        session.add(
            RelayAttempt(
                delivery_id=delivery_id,
                attempt_no=attempt_no,
                at=utcnow(),
                response_code=outcome.code,
                error=outcome.error,
                duration_ms=outcome.duration_ms,
            )
        )
        delivery.attempts = attempt_no
        delivery.lease_owner = None
        delivery.lease_expires_at = None
        code = outcome.code
        if code is not None and 200 <= code < 300:
            delivery.status = "delivered"
            delivery.delivered_at = utcnow()
            delivery.next_attempt_at = None
        elif code == 410:
            delivery.status = "disabled"
            delivery.next_attempt_at = None
            await session.execute(
                update(RelayEndpoint)
                .where(RelayEndpoint.id == delivery.endpoint_id)
                .values(disabled_at=utcnow(), disabled_reason="the endpoint answered 410 Gone")
            )
        elif resolved is None and unreadable is None:
            delivery.status = "failed"  # the URL is refused: retrying cannot help
            delivery.next_attempt_at = None
        else:
            delay = next_delay(settings.relay_schedule, attempt_no)
            if delay is None:
                delivery.status = "failed"
                delivery.next_attempt_at = None
            else:
                delivery.next_attempt_at = utcnow() + timedelta(seconds=delay)
        status = delivery.status
    RELAY_DELIVERIES.labels(status).inc()
    log = logger.info if status == "delivered" else logger.warning
    log(
        "webhooks.relay.attempt",
        extra={
            "delivery_id": str(delivery_id),
            "webhook_id": msg_id,
            "attempt": attempt_no,
            "response_code": outcome.code,
            "error": outcome.error,
            "status": status,
        },
    )
    return status


def create_relay_client(settings: WebhookSettings) -> httpx.AsyncClient:
    # No redirects: a 3xx could point at an address the SSRF check never saw.
    return httpx.AsyncClient(
        timeout=httpx.Timeout(settings.relay_timeout_s, connect=min(5.0, settings.relay_timeout_s)),
        follow_redirects=False,
        limits=httpx.Limits(max_connections=50),
        trust_env=False,
    )
