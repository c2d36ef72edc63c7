"""A submit that upstream does not answer in time: the job is failed, and the error says
that upstream may have taken it (its webhook would still be recorded and adopted)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.transcripts.models import Job
from tests.transcripts.harness import MakeKey, wav_bytes

pytestmark = pytest.mark.e2e


async def test_submit_timeout_fails_the_job_saying_upstream_may_have_it(
    jobs_settings: Any,
    start_app: Any,
    new_key: MakeKey,
    emu: httpx.AsyncClient,
    committed: async_sessionmaker[AsyncSession],
) -> None:
    key = await new_key()
    auth = {"Authorization": key}
    settings = jobs_settings(public_base_url="http://proxy.example:9999", upstream_timeout_s=0.5)
    async with start_app(settings) as (_, client):
        uploaded = await client.post("/v2/upload", content=wav_bytes(0.2), headers=auth)
        audio_url = uploaded.json()["upload_url"]
        await emu.post(
            "/_emulator/faults",
            json={"route": "POST /v2/transcript", "delay_s": 2.0, "count": 1},
        )
        response = await client.post(
            "/api/transcripts", json={"audio_url": audio_url}, headers=auth
        )
    assert response.status_code == 504, response.text
    detail = response.json()["detail"]
    assert "may have accepted it" in detail
    assert "webhook will still be recorded" in detail
    async with committed() as session:
        job = await session.scalar(select(Job).where(Job.audio_url == audio_url))
    assert job is not None
    assert job.status == "failed"
    assert job.upstream_id is None
    assert job.error == detail
