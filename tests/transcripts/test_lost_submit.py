"""A submit whose answer is lost never bills twice: the emulator takes the transcript and
withholds the answer (fault `withhold`); before the job is submitted again (the caller's
retry with the same Idempotency-Key) or given up (the reconciler), the service finds the
transcript upstream (its webhook_url names the job) and adopts it. Real app, real emulator
process over sockets, real Postgres."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.transcripts.models import Job
from tests.transcripts.harness import MakeKey, wait_until, wav_bytes

pytestmark = pytest.mark.e2e

PUBLIC = "http://proxy.example:9999"
WITHHOLD = {"route": "POST /v2/transcript", "withhold": True, "delay_s": 1.5}


async def _upstream_for(emu: httpx.AsyncClient, audio_url: str) -> list[dict[str, Any]]:
    listed = await emu.get("/_emulator/transcripts")
    assert listed.status_code == 200, listed.text
    return [t for t in listed.json() if t["audio_url"] == audio_url]


async def _job(committed: async_sessionmaker[AsyncSession], audio_url: str) -> Job:
    async with committed() as session:
        jobs = list(await session.scalars(select(Job).where(Job.audio_url == audio_url)))
    assert len(jobs) == 1, jobs
    return jobs[0]


async def _upload(client: httpx.AsyncClient, auth: dict[str, str]) -> str:
    uploaded = await client.post("/v2/upload", content=wav_bytes(0.2), headers=auth)
    assert uploaded.status_code == 200, uploaded.text
    url: str = uploaded.json()["upload_url"]
    return url


async def test_a_retry_with_the_same_idempotency_key_adopts_the_lost_transcript(
    jobs_settings: Any,
    start_app: Any,
    new_key: MakeKey,
    emu: httpx.AsyncClient,
    committed: async_sessionmaker[AsyncSession],
) -> None:
    auth = {"Authorization": await new_key()}
    settings = jobs_settings(public_base_url=PUBLIC, upstream_timeout_s=0.5)
    async with start_app(settings) as (_, client):
        audio_url = await _upload(client, auth)
        body = {"audio_url": audio_url}
        keyed = {**auth, "Idempotency-Key": "lost-answer-1"}
        await emu.post("/_emulator/faults", json=WITHHOLD)
        lost = await client.post("/v2/transcript", json=body, headers=keyed)
        assert lost.status_code == 504, lost.text
        assert "may have accepted it" in lost.json()["error"]
        # Upstream took it: one transcript, carrying our job's webhook.
        job = await _job(committed, audio_url)
        assert job.status == "failed"
        assert job.upstream_id is None
        [taken] = await _upstream_for(emu, audio_url)
        assert taken["webhook_url"] == f"{PUBLIC}/webhooks/assemblyai/{job.id}"

        retried = await client.post("/v2/transcript", json=body, headers=keyed)
        assert retried.status_code == 200, retried.text
        assert retried.json()["id"] == taken["id"]
        # No second submit: still exactly one transcript upstream.
        assert [t["id"] for t in await _upstream_for(emu, audio_url)] == [taken["id"]]
        job = await _job(committed, audio_url)
        assert job.upstream_id == taken["id"]
        assert job.status in ("queued", "processing", "completed")
        assert job.error is None
        # A third call replays the adopted job.
        again = await client.post("/v2/transcript", json=body, headers=keyed)
        assert again.status_code == 200, again.text
        assert again.json()["id"] == taken["id"]
        assert len(await _upstream_for(emu, audio_url)) == 1


async def test_a_retry_submits_again_when_upstream_never_took_it(
    jobs_settings: Any,
    start_app: Any,
    new_key: MakeKey,
    emu: httpx.AsyncClient,
    committed: async_sessionmaker[AsyncSession],
) -> None:
    """The search finds nothing (the answer was lost before upstream created anything):
    the retry submits, once."""
    auth = {"Authorization": await new_key()}
    settings = jobs_settings(public_base_url=PUBLIC, upstream_timeout_s=0.5)
    async with start_app(settings) as (_, client):
        audio_url = await _upload(client, auth)
        body = {"audio_url": audio_url}
        keyed = {**auth, "Idempotency-Key": "lost-answer-2"}
        # Answered (503, nothing created) only after the proxy has given up waiting.
        await emu.post(
            "/_emulator/faults",
            json={"route": "POST /v2/transcript", "status": 503, "delay_s": 1.5},
        )
        lost = await client.post("/v2/transcript", json=body, headers=keyed)
        assert lost.status_code == 504, lost.text
        assert await _upstream_for(emu, audio_url) == []
        retried = await client.post("/v2/transcript", json=body, headers=keyed)
        assert retried.status_code == 200, retried.text
        assert len(await _upstream_for(emu, audio_url)) == 1


async def test_the_reconciler_adopts_a_lost_submit(
    jobs_settings: Any,
    start_app: Any,
    new_key: MakeKey,
    emu: httpx.AsyncClient,
    committed: async_sessionmaker[AsyncSession],
) -> None:
    auth = {"Authorization": await new_key()}
    settings = jobs_settings(
        public_base_url=PUBLIC,
        upstream_timeout_s=0.5,
        reconciler_enabled=True,
        reconciler_tick_s=0.1,
        poll_initial_delay_s=0.3,
        reconciler_poll_schedule_s="0.3",
    )
    async with start_app(settings) as (_, client):
        audio_url = await _upload(client, auth)
        await emu.post("/_emulator/faults", json=WITHHOLD)
        lost = await client.post("/api/transcripts", json={"audio_url": audio_url}, headers=auth)
        assert lost.status_code == 504, lost.text
        [taken] = await _upstream_for(emu, audio_url)

        async def completed() -> bool:
            job = await _job(committed, audio_url)
            return job.status == "completed"

        await wait_until(completed, timeout=30)
    job = await _job(committed, audio_url)
    assert job.upstream_id == taken["id"]
    assert job.result is not None
    assert job.result["id"] == taken["id"]
    assert job.next_check_at is None
    assert len(await _upstream_for(emu, audio_url)) == 1


async def test_the_search_pages_through_upstreams_list(
    jobs_settings: Any,
    start_app: Any,
    new_key: MakeKey,
    emu: httpx.AsyncClient,
    committed: async_sessionmaker[AsyncSession],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Newer transcripts push the lost one off the first page: `before_id` paging finds it
    (pages of 2 here), past other transcripts of the same audio."""
    from app.transcripts import service

    monkeypatch.setattr(service, "LOST_SUBMIT_PAGE", 2)
    auth = {"Authorization": await new_key()}
    settings = jobs_settings(public_base_url=PUBLIC, upstream_timeout_s=0.5)
    async with start_app(settings) as (_, client):
        audio_url = await _upload(client, auth)
        keyed = {**auth, "Idempotency-Key": "lost-answer-paged"}
        await emu.post("/_emulator/faults", json=WITHHOLD)
        lost = await client.post("/v2/transcript", json={"audio_url": audio_url}, headers=keyed)
        assert lost.status_code == 504, lost.text
        [taken] = await _upstream_for(emu, audio_url)
        # Five newer transcripts upstream (same upstream key), two of the same audio.
        for n in range(5):
            url = audio_url if n < 2 else f"https://example.com/other-{n}.wav"
            made = await emu.post(
                "/v2/transcript",
                json={"audio_url": url, "speech_models": ["universal-2"]},
            )
            assert made.status_code == 200, made.text
        retried = await client.post("/v2/transcript", json={"audio_url": audio_url}, headers=keyed)
        assert retried.status_code == 200, retried.text
        assert retried.json()["id"] == taken["id"]
    assert len(await _upstream_for(emu, audio_url)) == 3  # ours and the two newer ones


async def test_two_adopters_at_once_adopt_the_lost_submit_once(
    jobs_settings: Any,
    start_app: Any,
    new_key: MakeKey,
    emu: httpx.AsyncClient,
    committed: async_sessionmaker[AsyncSession],
) -> None:
    """Two instances (a caller's retry on one, the reconciler on another) search at the same
    moment and both find the transcript: it is recorded as accepted once, not twice."""
    import asyncio

    from app.audit.models import AuditEvent
    from app.transcripts.service import adopt_lost_submit

    auth = {"Authorization": await new_key()}
    settings = jobs_settings(public_base_url=PUBLIC, upstream_timeout_s=0.5)
    async with start_app(settings) as (app, client):
        audio_url = await _upload(client, auth)
        await emu.post("/_emulator/faults", json=WITHHOLD)
        lost = await client.post("/api/transcripts", json={"audio_url": audio_url}, headers=auth)
        assert lost.status_code == 504, lost.text
        [taken] = await _upstream_for(emu, audio_url)
        job = await _job(committed, audio_url)
        rest = app.state.upstream.rest
        adopted = await asyncio.gather(
            *(adopt_lost_submit(committed, rest, settings.transcripts, job.id) for _ in range(2))
        )
    assert [a.upstream_id if a is not None else None for a in adopted] == [taken["id"]] * 2
    async with committed() as session:
        accepted = list(
            await session.scalars(
                select(AuditEvent).where(
                    AuditEvent.action == "transcript.submit",
                    AuditEvent.outcome == "ok",
                    AuditEvent.subject == str(job.id),
                )
            )
        )
    assert len(accepted) == 1, [a.detail for a in accepted]


async def test_a_candidate_upstream_answers_404_is_skipped(
    jobs_settings: Any,
    start_app: Any,
    new_key: MakeKey,
    emu: httpx.AsyncClient,
    committed: async_sessionmaker[AsyncSession],
) -> None:
    """A listed transcript of the same audio that upstream then answers 404 (deleted, gone)
    is not ours: the search goes on to the next candidate and adopts the lost one."""
    auth = {"Authorization": await new_key()}
    settings = jobs_settings(public_base_url=PUBLIC, upstream_timeout_s=0.5)
    async with start_app(settings) as (_, client):
        audio_url = await _upload(client, auth)
        keyed = {**auth, "Idempotency-Key": "lost-answer-404"}
        await emu.post("/_emulator/faults", json=WITHHOLD)
        lost = await client.post("/v2/transcript", json={"audio_url": audio_url}, headers=keyed)
        assert lost.status_code == 504, lost.text
        [taken] = await _upstream_for(emu, audio_url)
        # A newer transcript of the same audio: the search's first candidate, answered 404.
        newer = await emu.post(
            "/v2/transcript", json={"audio_url": audio_url, "speech_models": ["universal-2"]}
        )
        assert newer.status_code == 200, newer.text
        fault = {"route": "GET /v2/transcript/{id}", "status": 404, "count": 1}
        assert (await emu.post("/_emulator/faults", json=fault)).status_code == 201
        retried = await client.post("/v2/transcript", json={"audio_url": audio_url}, headers=keyed)
        assert retried.status_code == 200, retried.text
        assert retried.json()["id"] == taken["id"]
        faults = (await emu.get("/_emulator/faults")).json()
        assert not faults.get("GET /v2/transcript/{id}"), faults  # the 404 was served
    assert len(await _upstream_for(emu, audio_url)) == 2  # ours and the newer one, no resubmit


async def test_a_job_deleted_during_the_search_is_not_adopted(
    jobs_settings: Any,
    start_app: Any,
    new_key: MakeKey,
    emu: httpx.AsyncClient,
    committed: async_sessionmaker[AsyncSession],
) -> None:
    """The caller deletes the job while the search is fetching its candidate: under the
    row lock, the deleted job is not revived with the transcript found."""
    from app.audit.models import AuditEvent
    from app.transcripts.service import adopt_lost_submit

    auth = {"Authorization": await new_key()}
    settings = jobs_settings(public_base_url=PUBLIC, upstream_timeout_s=0.5)
    async with start_app(settings) as (app, client):
        audio_url = await _upload(client, auth)
        await emu.post("/_emulator/faults", json=WITHHOLD)
        lost = await client.post("/api/transcripts", json={"audio_url": audio_url}, headers=auth)
        assert lost.status_code == 504, lost.text
        assert len(await _upstream_for(emu, audio_url)) == 1  # found by the search
        job = await _job(committed, audio_url)
        rest = app.state.upstream.rest

        class DeletedMidSearch:
            """The real client; the caller's DELETE lands just before the candidate's GET."""

            async def list_transcripts(self, params: dict[str, Any]) -> dict[str, Any]:
                page: dict[str, Any] = await rest.list_transcripts(params)
                return page

            async def get_transcript(self, transcript_id: str) -> dict[str, Any]:
                deleted = await client.delete(f"/api/transcripts/{job.id}", headers=auth)
                assert deleted.status_code == 200, deleted.text
                found: dict[str, Any] = await rest.get_transcript(transcript_id)
                return found

        searching = DeletedMidSearch()
        adopted = await adopt_lost_submit(committed, searching, settings.transcripts, job.id)  # type: ignore[arg-type]
        assert adopted is None
        gone = await client.get(f"/api/transcripts/{job.id}", headers=auth)
        assert gone.status_code == 404, gone.text
    job = await _job(committed, audio_url)
    assert job.deleted_at is not None
    assert job.upstream_id is None
    assert job.status == "failed"
    async with committed() as session:
        accepted = list(
            await session.scalars(
                select(AuditEvent).where(
                    AuditEvent.action == "transcript.submit",
                    AuditEvent.outcome == "ok",
                    AuditEvent.subject == str(job.id),
                )
            )
        )
    assert accepted == []
