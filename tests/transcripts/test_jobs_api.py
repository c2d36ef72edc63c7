"""Submit, read, list and delete on both surfaces, against a real emulator process."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.config import Settings
from app.core.secretbox import box_for
from app.core.security import hash_key
from app.transcripts.models import Job, TranscriptResource
from app.transcripts.service import WEBHOOK_AUTH_HEADER
from app.uploads.models import Upload
from tests.transcripts.harness import MakeKey, wait_until, wav_bytes

pytestmark = pytest.mark.e2e

Committed = async_sessionmaker[AsyncSession]
CALLER_HOOK = "http://127.0.0.1:9/caller-hook"


async def upload(client: httpx.AsyncClient, key: str, seconds: float = 1.0) -> str:
    response = await client.post(
        "/v2/upload", content=wav_bytes(seconds), headers={"Authorization": key}
    )
    assert response.status_code == 200, response.text
    url: str = response.json()["upload_url"]
    return url


async def submit(client: httpx.AsyncClient, key: str, **body: Any) -> httpx.Response:
    return await client.post("/v2/transcript", json=body, headers={"Authorization": key})


async def wait_completed(client: httpx.AsyncClient, key: str, tid: str) -> dict[str, Any]:
    result: dict[str, Any] = {}

    async def done() -> bool:
        response = await client.get(f"/v2/transcript/{tid}", headers={"Authorization": key})
        assert response.status_code == 200, response.text
        result.update(response.json())
        return bool(result["status"] in ("completed", "error"))

    await wait_until(done)
    return result


async def job_of(committed: Committed, upstream_id: str) -> Job:
    async with committed() as session:
        job = await session.scalar(select(Job).where(Job.upstream_id == upstream_id))
    assert job is not None
    return job


async def upstream_transcript(emu: httpx.AsyncClient, tid: str) -> dict[str, Any]:
    response = await emu.get(f"/v2/transcript/{tid}")
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


async def test_submit_applies_policy_defaults_and_sets_our_webhook(
    jobs_settings: Callable[..., Settings],
    start_app: Any,
    new_key: MakeKey,
    emu: httpx.AsyncClient,
    committed: Committed,
) -> None:
    key = await new_key()
    # The caller's webhook is checked at submit (it must resolve to an address the relay
    # may call): a local one, allowed here.
    settings = jobs_settings(
        public_base_url="http://proxy.example:9999",
        poll_initial_delay_s=3000,
        relay_allow_private_networks=True,
    )
    async with start_app(settings) as (_, client):
        audio_url = await upload(client, key)
        response = await submit(
            client,
            key,
            audio_url=audio_url,
            webhook_url=CALLER_HOOK,
            webhook_auth_header_name="X-Caller",
            webhook_auth_header_value="caller-secret",
        )
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["status"] == "queued"
    # The caller sees their own webhook, never ours.
    assert answer["webhook_url"] == CALLER_HOOK
    assert "proxy.example" not in response.text
    job = await job_of(committed, answer["id"])
    upstream = await upstream_transcript(emu, answer["id"])
    assert upstream["speech_models"] == ["universal-3-pro", "universal-2"]
    assert upstream["webhook_url"] == f"http://proxy.example:9999/webhooks/assemblyai/{job.id}"
    assert upstream["webhook_auth_header_name"] == WEBHOOK_AUTH_HEADER
    assert job.status in ("queued", "processing", "completed")
    assert job.webhook_secret_hash is not None
    assert len(job.webhook_secret_hash) == 64
    assert job.caller_webhook_url == CALLER_HOOK
    # Stored sealed with SECRETS_KEY (the development key here), readable only with it.
    assert job.caller_webhook_auth_header_value is not None
    assert "caller-secret" not in job.caller_webhook_auth_header_value
    assert box_for(()).open(job.caller_webhook_auth_header_value) == "caller-secret"
    assert "webhook_url" not in job.request
    assert job.request["speech_models"] == ["universal-3-pro", "universal-2"]
    assert job.submitted_at is not None
    assert job.next_check_at is not None
    delay = (job.next_check_at - job.submitted_at).total_seconds()
    assert 2999 <= delay <= 3001


async def test_without_public_base_url_no_webhook_goes_upstream(
    jobs: Any, new_key: MakeKey, emu: httpx.AsyncClient, committed: Committed
) -> None:
    _, client = jobs
    key = await new_key()
    response = await submit(client, key, audio_url=await upload(client, key))
    assert response.status_code == 200, response.text
    upstream = await upstream_transcript(emu, response.json()["id"])
    assert not upstream.get("webhook_url")
    job = await job_of(committed, response.json()["id"])
    assert job.webhook_secret_hash is None
    assert job.next_check_at is not None  # the reconciler polls instead


async def test_deprecated_parameters_are_refused_before_upstream(
    jobs: Any, new_key: MakeKey, emu: httpx.AsyncClient, committed: Committed
) -> None:
    _, client = jobs
    key = await new_key()
    # Unique: other features' tests commit jobs with example audio URLs to this database.
    audio_url = f"https://example.com/deprecated-{uuid.uuid4().hex}.wav"
    before = len((await emu.get("/_emulator/transcripts")).json())
    cases = {
        "auto_chapters": (True, "LLM Gateway"),
        "summarization": (True, "LLM Gateway"),
        "medical_mode": (True, "medical-v1"),
        "speech_model": ("universal-2", "speech_models"),
        "transcript_ids": (["x"], "LLM Gateway"),
    }
    for name, (value, hint) in cases.items():
        response = await submit(client, key, audio_url=audio_url, **{name: value})
        assert response.status_code == 400, name
        assert hint in response.json()["detail"]
    response = await submit(client, key, audio_url=audio_url, speech_models=["nano"])
    assert response.status_code == 400
    assert len((await emu.get("/_emulator/transcripts")).json()) == before
    async with committed() as session:
        key_id = await session.scalar(select(Job.key_id).where(Job.audio_url == audio_url).limit(1))
    assert key_id is None  # no job row either


async def test_completed_transcript_is_cached_and_reads_stop_reaching_upstream(
    jobs: Any, new_key: MakeKey, emu: httpx.AsyncClient, committed: Committed
) -> None:
    _, client = jobs
    key = await new_key()
    response = await submit(client, key, audio_url=await upload(client, key, 2.0))
    tid = response.json()["id"]
    final = await wait_completed(client, key, tid)
    assert final["status"] == "completed"
    job = await job_of(committed, tid)
    assert job.status == "completed"
    assert job.result is not None
    assert job.result["text"] == final["text"]
    assert job.completed_at is not None
    assert job.audio_duration is not None
    # Sub-resources: fetched once, then served from Postgres.
    first = await client.get(f"/v2/transcript/{tid}/paragraphs", headers={"Authorization": key})
    assert first.status_code == 200
    assert first.headers["x-cache"] == "miss"
    again = await client.get(f"/v2/transcript/{tid}/paragraphs", headers={"Authorization": key})
    assert again.headers["x-cache"] == "hit"
    assert again.json() == first.json()
    srt = await client.get(
        f"/v2/transcript/{tid}/srt?chars_per_caption=20", headers={"Authorization": key}
    )
    assert srt.status_code == 200
    assert srt.headers["x-cache"] == "miss"
    # Upstream goes away (every read now fails there): our reads don't notice.
    await emu.post(
        "/_emulator/faults", json={"route": "GET /v2/transcript/{id}", "status": 500, "count": 50}
    )
    cached = await client.get(f"/v2/transcript/{tid}", headers={"Authorization": key})
    assert cached.status_code == 200
    assert cached.json()["text"] == final["text"]
    cached_srt = await client.get(
        f"/v2/transcript/{tid}/srt?chars_per_caption=20", headers={"Authorization": key}
    )
    assert cached_srt.headers["x-cache"] == "hit"
    assert cached_srt.text == srt.text
    faults = (await emu.get("/_emulator/faults")).json()
    assert faults["GET /v2/transcript/{id}"][0]["count"] == 50  # none consumed by us


async def test_upstream_503_then_success_on_a_read_is_retried(
    jobs: Any, new_key: MakeKey, emu: httpx.AsyncClient
) -> None:
    _, client = jobs
    key = await new_key()
    tid = (await submit(client, key, audio_url=await upload(client, key))).json()["id"]
    await emu.post(
        "/_emulator/faults", json={"route": "GET /v2/transcript/{id}", "status": 503, "count": 2}
    )
    response = await client.get(f"/v2/transcript/{tid}", headers={"Authorization": key})
    assert response.status_code == 200, response.text
    assert response.json()["id"] == tid
    assert "GET /v2/transcript/{id}" not in (await emu.get("/_emulator/faults")).json()


async def test_upstream_500_on_submit_fails_the_job_and_answers_502(
    jobs: Any, new_key: MakeKey, emu: httpx.AsyncClient, committed: Committed
) -> None:
    _, client = jobs
    key = await new_key()
    audio_url = await upload(client, key)
    await emu.post("/_emulator/faults", json={"route": "POST /v2/transcript", "status": 500})
    response = await submit(client, key, audio_url=audio_url)
    assert response.status_code == 502, response.text
    async with committed() as session:
        job = await session.scalar(select(Job).where(Job.audio_url == audio_url))
    assert job is not None
    assert job.status == "failed"
    assert job.upstream_id is None
    assert job.error is not None
    assert "500" in job.error
    assert job.next_check_at is None
    # The app surface shows the failure too.
    view = await client.get(f"/api/transcripts/{job.id}", headers={"Authorization": key})
    assert view.json()["status"] == "failed"
    assert view.json()["error"] == job.error


async def test_upstream_4xx_on_submit_passes_the_message_and_fails_the_job(
    jobs: Any, new_key: MakeKey, emu: httpx.AsyncClient, committed: Committed
) -> None:
    _, client = jobs
    key = await new_key()
    audio_url = await upload(client, key)
    await emu.post("/_emulator/faults", json={"route": "POST /v2/transcript", "status": 422})
    response = await submit(client, key, audio_url=audio_url)
    assert response.status_code == 422
    assert "Injected failure" in response.json()["detail"]  # upstream's own message
    async with committed() as session:
        job = await session.scalar(select(Job).where(Job.audio_url == audio_url))
    assert job is not None
    assert job.status == "failed"
    assert job.error == response.json()["detail"]


async def test_other_keys_jobs_are_not_found(
    jobs: Any, new_key: MakeKey, committed: Committed
) -> None:
    _, client = jobs
    owner, other = await new_key(), await new_key()
    tid = (await submit(client, owner, audio_url=await upload(client, owner))).json()["id"]
    job = await job_of(committed, tid)
    for method, path in [
        ("GET", f"/v2/transcript/{tid}"),
        ("GET", f"/v2/transcript/{tid}/sentences"),
        ("DELETE", f"/v2/transcript/{tid}"),
        ("GET", f"/api/transcripts/{job.id}"),
        ("DELETE", f"/api/transcripts/{job.id}"),
    ]:
        response = await client.request(method, path, headers={"Authorization": other})
        assert response.status_code == 404, (method, path)
    listed = await client.get("/v2/transcript", headers={"Authorization": other})
    assert tid not in listed.text
    mine = await client.get("/v2/transcript", headers={"Authorization": owner})
    assert tid in mine.text


async def test_idempotency_key_replays_the_same_job_without_a_second_submit(
    jobs: Any, new_key: MakeKey, emu: httpx.AsyncClient, committed: Committed
) -> None:
    _, client = jobs
    key = await new_key()
    audio_url = await upload(client, key)
    headers = {"Authorization": key, "Idempotency-Key": f"idem-{uuid.uuid4()}"}
    body = {"audio_url": audio_url, "punctuate": True}
    first = await client.post("/v2/transcript", json=body, headers=headers)
    second = await client.post("/v2/transcript", json=dict(reversed(body.items())), headers=headers)
    assert first.status_code == 200, first.text
    assert second.status_code == 200, second.text
    assert first.json()["id"] == second.json()["id"]
    other = await client.post("/v2/transcript", json={**body, "punctuate": False}, headers=headers)
    assert other.status_code == 409
    upstream = [
        t for t in (await emu.get("/_emulator/transcripts")).json() if t["audio_url"] == audio_url
    ]
    assert len(upstream) == 1
    async with committed() as session:
        count = await session.scalar(select(func.count()).where(Job.audio_url == audio_url))
    assert count == 1


async def test_concurrent_submits_with_one_idempotency_key_make_one_job(
    jobs: Any, new_key: MakeKey, emu: httpx.AsyncClient, committed: Committed
) -> None:
    _, client = jobs
    key = await new_key()
    audio_url = await upload(client, key)
    # Slow upstream, so the racers really overlap with the first submit in flight.
    await emu.post(
        "/_emulator/faults", json={"route": "POST /v2/transcript", "delay_s": 0.5, "count": 1}
    )
    headers = {"Authorization": key, "Idempotency-Key": f"race-{uuid.uuid4()}"}
    responses = await asyncio.gather(
        *[
            client.post("/v2/transcript", json={"audio_url": audio_url}, headers=headers)
            for _ in range(6)
        ]
    )
    assert all(r.status_code == 200 for r in responses), [r.text for r in responses]
    assert len({r.json()["id"] for r in responses}) == 1
    upstream = [
        t for t in (await emu.get("/_emulator/transcripts")).json() if t["audio_url"] == audio_url
    ]
    assert len(upstream) == 1
    async with committed() as session:
        count = await session.scalar(select(func.count()).where(Job.audio_url == audio_url))
    assert count == 1


async def test_failed_submit_releases_its_idempotency_key_for_a_retry(
    jobs: Any, new_key: MakeKey, emu: httpx.AsyncClient
) -> None:
    _, client = jobs
    key = await new_key()
    audio_url = await upload(client, key)
    headers = {"Authorization": key, "Idempotency-Key": f"retry-{uuid.uuid4()}"}
    await emu.post("/_emulator/faults", json={"route": "POST /v2/transcript", "status": 500})
    failed = await client.post("/v2/transcript", json={"audio_url": audio_url}, headers=headers)
    assert failed.status_code == 502
    retried = await client.post("/v2/transcript", json={"audio_url": audio_url}, headers=headers)
    assert retried.status_code == 200, retried.text


async def test_delete_purges_text_and_hides_the_transcript(
    jobs: Any, new_key: MakeKey, emu: httpx.AsyncClient, committed: Committed
) -> None:
    _, client = jobs
    key = await new_key()
    tid = (await submit(client, key, audio_url=await upload(client, key))).json()["id"]
    await wait_completed(client, key, tid)
    await client.get(f"/v2/transcript/{tid}/sentences", headers={"Authorization": key})
    job = await job_of(committed, tid)
    response = await client.delete(f"/v2/transcript/{tid}", headers={"Authorization": key})
    assert response.status_code == 200, response.text
    assert response.json()["id"] == tid
    assert (await upstream_transcript(emu, tid))["text"] == "Deleted by user."
    async with committed() as session:
        row = await session.get(Job, job.id)
        cached = await session.scalar(
            select(func.count()).where(TranscriptResource.job_id == job.id)
        )
    assert row is not None
    assert row.deleted_at is not None
    assert row.result is None
    assert cached == 0
    gone = await client.get(f"/v2/transcript/{tid}", headers={"Authorization": key})
    assert gone.status_code == 404
    # Deleted is 404 on both surfaces.
    view = await client.get(f"/api/transcripts/{job.id}", headers={"Authorization": key})
    assert view.status_code == 404, view.text


async def test_list_in_upstream_shape_pages_newest_first(jobs: Any, new_key: MakeKey) -> None:
    _, client = jobs
    key = await new_key()
    audio_url = await upload(client, key)
    ids = []
    for _ in range(5):
        ids.append((await submit(client, key, audio_url=audio_url)).json()["id"])
    newest_first = list(reversed(ids))
    page = (await client.get("/v2/transcript?limit=2", headers={"Authorization": key})).json()
    assert [t["id"] for t in page["transcripts"]] == newest_first[:2]
    assert page["page_details"]["result_count"] == 2
    assert page["page_details"]["limit"] == 2
    assert page["page_details"]["next_url"] is None
    item = page["transcripts"][0]
    assert set(item) >= {"id", "resource_url", "status", "created", "completed", "audio_url"}
    assert item["resource_url"].endswith(f"/v2/transcript/{item['id']}")
    older = (
        await client.get(page["page_details"]["prev_url"], headers={"Authorization": key})
    ).json()
    assert [t["id"] for t in older["transcripts"]] == newest_first[2:4]
    assert older["page_details"]["next_url"] is not None
    newer = (
        await client.get(older["page_details"]["next_url"], headers={"Authorization": key})
    ).json()
    assert [t["id"] for t in newer["transcripts"]] == newest_first[:2]
    last = (
        await client.get(older["page_details"]["prev_url"], headers={"Authorization": key})
    ).json()
    assert [t["id"] for t in last["transcripts"]] == newest_first[4:]
    assert last["page_details"]["prev_url"] is None


async def test_app_surface_lists_with_cursor_and_status_filter(
    jobs: Any, new_key: MakeKey, emu: httpx.AsyncClient
) -> None:
    _, client = jobs
    key = await new_key()
    auth = {"Authorization": key}
    audio_url = await upload(client, key)
    created = []
    for _ in range(3):
        response = await client.post(
            "/api/transcripts", json={"audio_url": audio_url}, headers=auth
        )
        assert response.status_code == 201, response.text
        created.append(response.json())
    await emu.post("/_emulator/faults", json={"route": "POST /v2/transcript", "status": 500})
    failed = await client.post("/api/transcripts", json={"audio_url": audio_url}, headers=auth)
    assert failed.status_code == 502
    first = (await client.get("/api/transcripts?limit=2", headers=auth)).json()
    assert len(first["items"]) == 2
    assert first["next_cursor"]
    rest = (
        await client.get(f"/api/transcripts?limit=2&cursor={first['next_cursor']}", headers=auth)
    ).json()
    seen = [i["id"] for i in first["items"] + rest["items"]]
    assert len(seen) == 4
    assert len(set(seen)) == 4
    assert rest["next_cursor"] is None
    only_failed = (await client.get("/api/transcripts?status=failed", headers=auth)).json()
    assert [i["status"] for i in only_failed["items"]] == ["failed"]
    one = (await client.get(f"/api/transcripts/{created[0]['id']}", headers=auth)).json()
    assert one["upstream_id"] == created[0]["upstream_id"]
    assert one["summaries"] == []
    assert one["transcript_url"] == f"/v2/transcript/{one['upstream_id']}"
    assert (await client.get("/api/transcripts?cursor=garbage", headers=auth)).status_code == 400


async def test_upload_and_submit_in_one_multipart_request(
    jobs: Any, new_key: MakeKey, emu: httpx.AsyncClient, committed: Committed
) -> None:
    _, client = jobs
    key = await new_key()
    auth = {"Authorization": key}
    response = await client.post(
        "/api/transcripts",
        data={"config": '{"speaker_labels": true}'},
        files={"file": ("talk.wav", wav_bytes(1.0), "audio/wav")},
        headers=auth,
    )
    assert response.status_code == 201, response.text
    job = response.json()
    assert job["status"] == "queued"
    assert job["upstream_id"]
    upstream = await upstream_transcript(emu, job["upstream_id"])
    assert upstream["speaker_labels"] is True
    async with committed() as session:
        row = await session.scalar(select(Upload).where(Upload.upload_url == upstream["audio_url"]))
    assert row is not None
    assert row.filename == "talk.wav"
    # A refused configuration costs no upload.
    before = len((await emu.get("/_emulator/uploads")).json())
    refused = await client.post(
        "/api/transcripts",
        data={"config": '{"auto_chapters": true}'},
        files={"file": ("talk.wav", wav_bytes(1.0), "audio/wav")},
        headers=auth,
    )
    assert refused.status_code == 400
    assert "LLM Gateway" in refused.json()["detail"]
    assert len((await emu.get("/_emulator/uploads")).json()) == before


async def test_secret_is_stored_only_as_its_hash(
    jobs_settings: Callable[..., Settings],
    start_app: Any,
    new_key: MakeKey,
    emu: httpx.AsyncClient,
    committed: Committed,
) -> None:
    key = await new_key()
    async with start_app(jobs_settings(public_base_url="http://proxy.example")) as (_, client):
        tid = (await submit(client, key, audio_url=await upload(client, key))).json()["id"]
    job = await job_of(committed, tid)
    # The emulator keeps what it received: the secret it will send back hashes to ours.
    transcripts = (await emu.get("/_emulator/transcripts")).json()
    upstream = next(t for t in transcripts if t["id"] == tid)
    secret = upstream.get("webhook_auth_header_value")
    if secret is not None:
        assert hash_key(secret) == job.webhook_secret_hash
        assert secret not in str(job.request)


async def test_bad_submit_bodies(jobs: Any, new_key: MakeKey) -> None:
    _, client = jobs
    key = await new_key()
    auth = {"Authorization": key, "Content-Type": "application/json"}
    not_json = await client.post("/v2/transcript", content=b"{nope", headers=auth)
    assert not_json.status_code == 400
    huge = await client.post(
        "/v2/transcript",
        content=b'{"audio_url": "https://e.com/a.wav", "prompt": "' + b"x" * 2_000_000 + b'"}',
        headers=auth,
    )
    assert huge.status_code == 413
    assert (await client.post("/v2/transcript", json={"audio_url": "x"})).status_code == 401


async def events_of(committed: Committed, job_id: uuid.UUID) -> list[str]:
    from app.webhooks.models import JobEvent

    async with committed() as session:
        rows = await session.scalars(
            select(JobEvent).where(JobEvent.job_id == job_id).order_by(JobEvent.version)
        )
        return [row.event for row in rows]


async def test_status_changes_are_published_as_job_events(
    jobs: Any, new_key: MakeKey, emu: httpx.AsyncClient, committed: Committed
) -> None:
    _, client = jobs
    key = await new_key()
    audio_url = await upload(client, key)
    tid = (await submit(client, key, audio_url=audio_url)).json()["id"]
    await wait_completed(client, key, tid)
    job = await job_of(committed, tid)
    events = await events_of(committed, job.id)
    assert events[0] == "queued"
    assert events[-1] == "completed"
    assert events.count("completed") == 1  # repeated reads don't announce it again
    await client.get(f"/v2/transcript/{tid}", headers={"Authorization": key})
    assert await events_of(committed, job.id) == events
    await client.delete(f"/v2/transcript/{tid}", headers={"Authorization": key})
    assert (await events_of(committed, job.id))[-1] == "deleted"

    await emu.post("/_emulator/faults", json={"route": "POST /v2/transcript", "status": 500})
    failed = await client.post(
        "/api/transcripts", json={"audio_url": audio_url}, headers={"Authorization": key}
    )
    assert failed.status_code == 502
    async with committed() as session:
        failed_job = await session.scalar(
            select(Job).where(Job.audio_url == audio_url, Job.status == "failed")
        )
    assert failed_job is not None
    assert await events_of(committed, failed_job.id) == ["failed"]
