"""The submit answer that lands after the job's webhook was recorded leaves the job due at
once: the webhook said upstream moved on, so no poll delay applies."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.db import utcnow
from app.transcripts.models import Job, JobStatus
from tests.transcripts.harness import MakeKey, wait_until, wav_bytes

pytestmark = pytest.mark.e2e


async def test_submit_answer_after_a_recorded_webhook_keeps_the_job_due_now(
    jobs_settings: Any,
    start_app: Any,
    new_key: MakeKey,
    emu: httpx.AsyncClient,
    committed: async_sessionmaker[AsyncSession],
) -> None:
    key = await new_key()
    auth = {"Authorization": key}
    # poll_initial_delay_s is an hour (jobs_settings): a pushed-back job would sit there.
    settings = jobs_settings(public_base_url="http://proxy.example:9999")
    async with start_app(settings) as (_, client):
        uploaded = await client.post("/v2/upload", content=wav_bytes(0.5), headers=auth)
        audio_url = uploaded.json()["upload_url"]
        await emu.post(
            "/_emulator/faults",
            json={"route": "POST /v2/transcript", "delay_s": 1.0, "count": 1},
        )
        submit = asyncio.ensure_future(
            client.post("/v2/transcript", json={"audio_url": audio_url}, headers=auth)
        )
        found: list[Job] = []

        async def submitting() -> bool:
            async with committed() as session:
                job = await session.scalar(select(Job).where(Job.audio_url == audio_url))
            if job is not None:
                found.append(job)
            return job is not None and job.status == JobStatus.submitting.value

        await wait_until(submitting, timeout=10)
        # What the receiver records for an early webhook (app/webhooks/service.py).
        async with committed() as session, session.begin():
            now = utcnow()
            await session.execute(
                update(Job)
                .where(Job.id == found[-1].id)
                .values(webhook_received_at=now, next_check_at=now)
            )
        response = await submit
        answered_at = utcnow()
    assert response.status_code == 200, response.text
    async with committed() as session:
        job = await session.scalar(select(Job).where(Job.id == found[-1].id))
    assert job is not None
    assert job.upstream_id == response.json()["id"]
    assert job.next_check_at is not None
    assert job.next_check_at <= answered_at, "the submit answer pushed the due job back"
