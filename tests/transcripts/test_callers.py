"""Who may call the jobs and upload routes: a proxy key (raw or Bearer, as SDKs send it), an
app session cookie (Origin-checked on state-changing requests), or a JWT of the app's own
identity provider, whose end users see only their own jobs. Uploads authenticate in a short
transaction of their own: no pooled connection is held while a body streams."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import jwt
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.config import Settings
from app.core.security import hash_key
from app.identity.models import ApiKey
from tests.transcripts.harness import MakeKey, wait_until, wav_bytes

pytestmark = pytest.mark.e2e

ORIGIN = {"Origin": "http://testserver"}
JWT_SECRET = "jwt-secret-shared-with-the-identity-provider-0123456789"
ISSUER = "https://idp.example"
AUDIENCE = "aai-proxy"


async def sign_in(client: httpx.AsyncClient, key: str, end_user: str | None = None) -> None:
    created = await client.post(
        "/api/session", json={"key": key, "end_user": end_user}, headers=ORIGIN
    )
    assert created.status_code == 201, created.text
    assert "aaip_session" in client.cookies


async def test_cookie_caller_uploads_submits_reads_lists_and_deletes(
    jobs: Any, new_key: MakeKey
) -> None:
    app, client = jobs
    await sign_in(client, await new_key(), end_user="carol")
    audio = wav_bytes(1.0)
    pool = app.state.engine.pool
    held: list[int] = []

    async def body() -> AsyncIterator[bytes]:
        for start in range(0, len(audio), 8192):
            yield audio[start : start + 8192]
            held.append(pool.checkedout())

    uploaded = await client.post("/api/uploads", content=body(), headers=ORIGIN)
    assert uploaded.status_code == 200, uploaded.text
    assert held
    assert max(held) == 0, f"a pooled connection was held while streaming: {held}"

    audio_url = uploaded.json()["upload_url"]
    # The cookie is ambient authority: a state-changing request needs our Origin.
    refused = await client.post("/api/transcripts", json={"audio_url": audio_url})
    assert refused.status_code == 403, refused.text
    cross = await client.post(
        "/api/transcripts", json={"audio_url": audio_url}, headers={"Origin": "https://evil.test"}
    )
    assert cross.status_code == 403
    assert (await client.post("/v2/upload", content=b"abc")).status_code == 403

    submitted = await client.post("/api/transcripts", json={"audio_url": audio_url}, headers=ORIGIN)
    assert submitted.status_code == 201, submitted.text
    job = submitted.json()
    form = await client.post(
        "/api/transcripts",
        data={"config": "{}"},
        files={"file": ("talk.wav", audio, "audio/wav")},
        headers=ORIGIN,
    )
    assert form.status_code == 201, form.text

    listed = await client.get("/api/transcripts")
    assert listed.status_code == 200, listed.text
    assert {job["id"], form.json()["id"]} <= {item["id"] for item in listed.json()["items"]}
    assert (await client.get(f"/api/transcripts/{job['id']}")).status_code == 200
    v2_list = await client.get("/v2/transcript")
    assert v2_list.status_code == 200, v2_list.text
    assert job["upstream_id"] in {t["id"] for t in v2_list.json()["transcripts"]}
    v2_one = await client.get(f"/v2/transcript/{job['upstream_id']}")
    assert v2_one.status_code == 200, v2_one.text

    assert (await client.delete(f"/api/transcripts/{job['id']}")).status_code == 403

    async def completed() -> bool:
        answer = await client.get(f"/v2/transcript/{job['upstream_id']}")
        return bool(answer.json()["status"] == "completed")

    await wait_until(completed)  # upstream deletes finished transcripts only
    deleted = await client.delete(f"/api/transcripts/{job['id']}", headers=ORIGIN)
    assert deleted.status_code == 200, deleted.text


async def test_compatible_surface_takes_raw_and_bearer_keys(jobs: Any, new_key: MakeKey) -> None:
    _, client = jobs
    key = await new_key()
    for auth in (key, f"Bearer {key}"):
        headers = {"Authorization": auth}
        uploaded = await client.post("/v2/upload", content=wav_bytes(0.5), headers=headers)
        assert uploaded.status_code == 200, uploaded.text
        submitted = await client.post(
            "/v2/transcript", json={"audio_url": uploaded.json()["upload_url"]}, headers=headers
        )
        assert submitted.status_code == 200, submitted.text
        tid = submitted.json()["id"]
        assert (await client.get(f"/v2/transcript/{tid}", headers=headers)).status_code == 200
        assert (await client.get("/v2/transcript", headers=headers)).status_code == 200
    bad = await client.get("/v2/transcript", headers={"Authorization": "Bearer aaip_nope"})
    assert bad.status_code == 401
    llm_only = await new_key("llm")
    no_scope = await client.get("/v2/transcript", headers={"Authorization": llm_only})
    assert no_scope.status_code == 403


@pytest.fixture
async def jwt_app(
    jobs_settings: Callable[..., Settings],
    start_app: Any,
    new_key: MakeKey,
    committed: async_sessionmaker[AsyncSession],
) -> AsyncIterator[tuple[httpx.AsyncClient, str]]:
    raw = await new_key("transcripts", name=f"jwt app {uuid.uuid4().hex[:6]}")
    async with committed() as session:
        key_id = await session.scalar(select(ApiKey.id).where(ApiKey.key_hash == hash_key(raw)))
    settings = jobs_settings(
        jwt_hs256_secret=JWT_SECRET,
        jwt_key_id=str(key_id),
        jwt_issuer=ISSUER,
        jwt_audience=AUDIENCE,
    )
    async with start_app(settings) as (_, client):
        yield client, raw


def bearer(subject: str) -> dict[str, str]:
    now = int(time.time())
    claims = {"sub": subject, "iss": ISSUER, "aud": AUDIENCE, "iat": now, "exp": now + 300}
    token = jwt.encode(claims, JWT_SECRET, "HS256")
    return {"Authorization": f"Bearer {token}"}


async def test_jwt_end_users_see_only_their_own_jobs(
    jwt_app: tuple[httpx.AsyncClient, str],
) -> None:
    client, key = jwt_app
    alice, bob = bearer("alice"), bearer("bob")
    uploaded = await client.post("/api/uploads", content=wav_bytes(0.5), headers=alice)
    assert uploaded.status_code == 200, uploaded.text
    submitted = await client.post(
        "/api/transcripts", json={"audio_url": uploaded.json()["upload_url"]}, headers=alice
    )
    assert submitted.status_code == 201, submitted.text
    job = submitted.json()

    mine = await client.get("/api/transcripts", headers=alice)
    assert job["id"] in {item["id"] for item in mine.json()["items"]}
    assert (await client.get(f"/api/transcripts/{job['id']}", headers=alice)).status_code == 200
    # Another end user of the same app key: nothing of alice's.
    theirs = await client.get("/api/transcripts", headers=bob)
    assert theirs.status_code == 200
    assert job["id"] not in {item["id"] for item in theirs.json()["items"]}
    assert (await client.get(f"/api/transcripts/{job['id']}", headers=bob)).status_code == 404
    assert (
        await client.get(f"/v2/transcript/{job['upstream_id']}", headers=bob)
    ).status_code == 404
    v2 = await client.get("/v2/transcript", headers=bob)
    assert job["upstream_id"] not in {t["id"] for t in v2.json()["transcripts"]}
    assert (await client.delete(f"/api/transcripts/{job['id']}", headers=bob)).status_code == 404
    # Nor may bob submit alice's upload.
    stolen = await client.post(
        "/api/transcripts", json={"audio_url": uploaded.json()["upload_url"]}, headers=bob
    )
    assert stolen.status_code == 403, stolen.text
    assert stolen.json()["error"] == "UploadNotOwned"
    # An Idempotency-Key replays a job only to the end user who made it (a public URL,
    # which either may submit, so the key alone decides).
    body = {"audio_url": "https://example.com/shared-recording.wav"}
    once = {"Idempotency-Key": f"k-{uuid.uuid4().hex}"}
    first = await client.post("/api/transcripts", json=body, headers={**alice, **once})
    assert first.status_code == 201, first.text
    replay = await client.post("/api/transcripts", json=body, headers={**alice, **once})
    assert replay.status_code == 200
    assert replay.json()["id"] == first.json()["id"]
    other = await client.post("/api/transcripts", json=body, headers={**bob, **once})
    assert other.status_code == 409, other.text
    # The key itself (the app's backend) sees every job made under it.
    as_key = await client.get(f"/api/transcripts/{job['id']}", headers={"Authorization": key})
    assert as_key.status_code == 200
