"""The AssemblyAI webhook receiver: auth, validation, idempotency, marking jobs due."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

from httpx import AsyncClient
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.transcripts.models import Job
from app.webhooks.models import WebhookDelivery
from app.webhooks.service import WEBHOOK_AUTH_HEADER

SECRET = "s3cret-per-job"


def url(job: Job | uuid.UUID) -> str:
    job_id = job.id if isinstance(job, Job) else job
    return f"/webhooks/assemblyai/{job_id}"


def body(job: Job, status: str = "completed") -> bytes:
    return json.dumps({"transcript_id": job.upstream_id, "status": status}).encode()


async def deliveries(committed: async_sessionmaker[AsyncSession], job: Job) -> int:
    async with committed() as session:
        return int(
            await session.scalar(
                select(func.count())
                .select_from(WebhookDelivery)
                .where(WebhookDelivery.job_id == job.id)
            )
            or 0
        )


async def reload(committed: async_sessionmaker[AsyncSession], job: Job) -> Job:
    async with committed() as session:
        fresh = await session.get(Job, job.id)
        assert fresh is not None
        return fresh


async def test_delivery_marks_job_due(
    client: AsyncClient, committed: async_sessionmaker[AsyncSession], make_job: Callable[..., Any]
) -> None:
    job = await make_job()
    assert job.next_check_at is None
    r = await client.post(url(job), content=body(job), headers={WEBHOOK_AUTH_HEADER: SECRET})
    assert r.status_code == 200, r.text
    assert r.json() == {"ok": True, "duplicate": False}
    job = await reload(committed, job)
    assert job.next_check_at is not None
    assert job.webhook_received_at is not None
    assert await deliveries(committed, job) == 1


async def test_duplicate_delivery_has_one_effect(
    client: AsyncClient, committed: async_sessionmaker[AsyncSession], make_job: Callable[..., Any]
) -> None:
    job = await make_job()
    headers = {WEBHOOK_AUTH_HEADER: SECRET}
    first = await client.post(url(job), content=body(job), headers=headers)
    assert first.status_code == 200
    job = await reload(committed, job)
    marked_at = job.webhook_received_at
    second = await client.post(url(job), content=body(job), headers=headers)
    assert second.status_code == 200
    assert second.json()["duplicate"] is True
    job = await reload(committed, job)
    assert job.webhook_received_at == marked_at
    assert await deliveries(committed, job) == 1


async def test_missing_empty_and_wrong_secret_are_401(
    client: AsyncClient, committed: async_sessionmaker[AsyncSession], make_job: Callable[..., Any]
) -> None:
    job = await make_job()
    for headers in ({}, {WEBHOOK_AUTH_HEADER: ""}, {WEBHOOK_AUTH_HEADER: "wrong"}):
        r = await client.post(url(job), content=body(job), headers=headers)
        assert r.status_code == 401, headers
        assert r.json()["error"] == "WebhookUnauthorized"
    assert await deliveries(committed, job) == 0


async def test_job_without_secret_never_verifies(
    client: AsyncClient, make_job: Callable[..., Any]
) -> None:
    job = await make_job(secret=None)
    for value in ("", "anything", "None"):
        r = await client.post(url(job), content=body(job), headers={WEBHOOK_AUTH_HEADER: value})
        assert r.status_code == 401


async def test_unknown_job_is_404(client: AsyncClient, make_job: Callable[..., Any]) -> None:
    job = await make_job()
    r = await client.post(
        url(uuid.uuid4()), content=body(job), headers={WEBHOOK_AUTH_HEADER: SECRET}
    )
    assert r.status_code == 404


async def test_other_transcript_id_is_400(
    client: AsyncClient, committed: async_sessionmaker[AsyncSession], make_job: Callable[..., Any]
) -> None:
    job = await make_job()
    other = json.dumps({"transcript_id": "someone-elses", "status": "completed"})
    r = await client.post(url(job), content=other, headers={WEBHOOK_AUTH_HEADER: SECRET})
    assert r.status_code == 400
    r = await client.post(url(job), content=b"not json", headers={WEBHOOK_AUTH_HEADER: SECRET})
    assert r.status_code == 400
    assert await deliveries(committed, job) == 0


async def test_oversized_body_is_413(client: AsyncClient, make_job: Callable[..., Any]) -> None:
    job = await make_job()
    big = json.dumps({"transcript_id": job.upstream_id, "pad": "x" * 20_000}).encode()
    r = await client.post(url(job), content=big, headers={WEBHOOK_AUTH_HEADER: SECRET})
    assert r.status_code == 413

    async def chunked() -> Any:  # no Content-Length: the limit applies while reading
        for _ in range(40):
            yield b"x" * 1000

    r = await client.post(url(job), content=chunked(), headers={WEBHOOK_AUTH_HEADER: SECRET})
    assert r.status_code == 413


async def test_webhook_before_submit_answer_is_accepted(
    client: AsyncClient, committed: async_sessionmaker[AsyncSession], make_job: Callable[..., Any]
) -> None:
    job = await make_job(upstream_id="", status="submitting")
    assert job.upstream_id is None
    payload = json.dumps({"transcript_id": "tr_early", "status": "completed"})
    r = await client.post(url(job), content=payload, headers={WEBHOOK_AUTH_HEADER: SECRET})
    assert r.status_code == 200
    async with committed() as session:
        recorded = await session.scalar(
            select(WebhookDelivery.transcript_id).where(WebhookDelivery.job_id == job.id)
        )
    assert recorded == "tr_early"
    job = await reload(committed, job)
    assert job.next_check_at is not None


async def test_webhook_for_final_job_is_recorded_but_changes_nothing(
    client: AsyncClient, committed: async_sessionmaker[AsyncSession], make_job: Callable[..., Any]
) -> None:
    job = await make_job(status="completed")
    r = await client.post(url(job), content=body(job), headers={WEBHOOK_AUTH_HEADER: SECRET})
    assert r.status_code == 200
    job = await reload(committed, job)
    assert job.next_check_at is None


async def test_shortcut_keeps_the_route_and_middleware_behaviour(
    client: AsyncClient, make_job: Callable[..., Any]
) -> None:
    """The receiver skips FastAPI's routing (WebhookShortcut); what it does not handle still
    reaches the route, and the app's middleware still wraps its answers."""
    job = await make_job()
    headers = {WEBHOOK_AUTH_HEADER: SECRET, "X-Request-ID": "burst-1"}
    r = await client.post(url(job), content=body(job), headers=headers)
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    assert r.headers["x-request-id"] == "burst-1"
    refused = await client.post(url(job), content=body(job), headers={"X-Request-ID": "burst-2"})
    assert refused.status_code == 401
    assert refused.json()["error"]
    assert refused.headers["x-request-id"] == "burst-2"
    malformed = await client.post(
        "/webhooks/assemblyai/not-a-uuid", content=body(job), headers=headers
    )
    assert malformed.status_code == 422
    assert (await client.get(url(job))).status_code == 405
