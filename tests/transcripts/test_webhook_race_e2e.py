"""A webhook that arrives before the submit call has returned still finds its job: the row
is committed before the upstream submit (real processes; the emulator delivers at once)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from app.transcripts.models import Job
from tests.live import Proc, create_key_in
from tests.transcripts.harness import wait_until, wav_bytes

pytestmark = pytest.mark.e2e


@pytest.fixture
async def deliver_before_response(emulator: Proc) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=emulator.url, timeout=30) as emu:
        response = await emu.patch("/_emulator/config", json={"webhook_before_response": True})
        assert response.status_code == 200, response.text
        try:
            yield emu
        finally:
            await emu.patch("/_emulator/config", json={"webhook_before_response": False})


async def test_webhook_before_submit_returns_finds_the_committed_job(
    live_service: Proc,
    database_url: str,
    deliver_before_response: httpx.AsyncClient,
    committed: Any,
) -> None:
    emu = deliver_before_response
    key = await asyncio.to_thread(create_key_in, database_url, ["transcripts"], "webhook race")
    auth = {"Authorization": key}
    async with httpx.AsyncClient(base_url=live_service.url, timeout=30) as client:
        upload = await client.post("/v2/upload", content=wav_bytes(1.0), headers=auth)
        assert upload.status_code == 200, upload.text
        submit = await client.post(
            "/v2/transcript", json={"audio_url": upload.json()["upload_url"]}, headers=auth
        )
        assert submit.status_code == 200, submit.text
        tid = submit.json()["id"]
        # By the time the submit answered, upstream had finished and called our webhook.
        attempts = (await emu.get(f"/_emulator/webhooks?transcript_id={tid}")).json()
        assert attempts, "the emulator delivered no webhook"
        assert attempts[0]["status"] == 200, attempts[0]
        assert attempts[0]["url"].startswith(f"{live_service.url}/webhooks/assemblyai/")

        async def completed() -> bool:
            async with committed() as session:
                job = await session.scalar(select(Job).where(Job.upstream_id == tid))
            return job is not None and job.status == "completed" and job.result is not None

        await wait_until(completed)  # fetched after the webhook, not by a poll of ours
        async with committed() as session:
            job = await session.scalar(select(Job).where(Job.upstream_id == tid))
        assert job is not None
        assert job.webhook_received_at is not None
        final = await client.get(f"/v2/transcript/{tid}", headers=auth)
        assert final.json()["status"] == "completed"
