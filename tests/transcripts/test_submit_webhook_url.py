"""A caller's webhook_url is checked against SSRF when the job is submitted (400, before
any upstream call), not only when the relay would call it."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.transcripts.models import Job
from tests.transcripts.harness import MakeKey, wav_bytes

pytestmark = pytest.mark.e2e

AUDIO = "https://example.com/ssrf-check.wav"
REFUSED = {
    "http://169.254.169.254/latest/meta-data/": "link-local, metadata",
    "http://[fd00:ec2::254]/latest": "link-local, metadata",
    "http://127.0.0.1:9/hook": "loopback or private",
    "gopher://hooks.example/x": "",
}


async def counts(emu: httpx.AsyncClient) -> tuple[int, int]:
    transcripts = (await emu.get("/_emulator/transcripts")).json()
    uploads = (await emu.get("/_emulator/uploads")).json()
    return len(transcripts), len(uploads)


async def test_refused_webhook_url_is_400_before_any_upstream_call(
    jobs: Any,
    new_key: MakeKey,
    emu: httpx.AsyncClient,
    committed: async_sessionmaker[AsyncSession],
) -> None:
    _, client = jobs
    key = await new_key()
    auth = {"Authorization": key}
    before = await counts(emu)
    for url, reason in REFUSED.items():
        body = {"audio_url": AUDIO, "webhook_url": url}
        v2 = await client.post("/v2/transcript", json=body, headers=auth)
        assert v2.status_code == 400, (url, v2.text)
        assert reason in v2.json()["error"]
        api = await client.post("/api/transcripts", json=body, headers=auth)
        assert api.status_code == 400, (url, api.text)
        if reason:  # the SSRF check's own answer, not the policy's
            assert api.json()["error"] == "RelayUrlRefused", api.text
        # Upload-and-submit: refused before a byte of the file goes upstream.
        form = await client.post(
            "/api/transcripts",
            data={"config": f'{{"webhook_url": "{url}"}}'},
            files={"file": ("a.wav", wav_bytes(0.2), "audio/wav")},
            headers=auth,
        )
        assert form.status_code == 400, (url, form.text)
    assert await counts(emu) == before
    async with committed() as session:
        assert await session.scalar(select(Job.id).where(Job.audio_url == AUDIO)) is None


async def test_allowed_webhook_url_is_accepted(
    jobs_settings: Any, start_app: Any, new_key: MakeKey
) -> None:
    key = await new_key()
    settings = jobs_settings(relay_allow_private_networks=True)
    async with start_app(settings) as (_, client):
        uploaded = await client.post(
            "/v2/upload", content=wav_bytes(0.2), headers={"Authorization": key}
        )
        body = {"audio_url": uploaded.json()["upload_url"], "webhook_url": "http://127.0.0.1:9/h"}
        answer = await client.post("/v2/transcript", json=body, headers={"Authorization": key})
    assert answer.status_code == 200, answer.text
    assert answer.json()["webhook_url"] == "http://127.0.0.1:9/h"
