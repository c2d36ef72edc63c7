"""An upload_url made through the service is submitted only by the key (and, for end users,
the end user) that uploaded it: all keys share one upstream key, so upstream's own "same
account" rule separates no tenants. Real app, real emulator process, real Postgres."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.transcripts.models import Job
from app.uploads.ownership import canonical_url
from tests.transcripts.harness import MakeKey, wav_bytes

pytestmark = pytest.mark.e2e

OWN_ORIGIN = "http://testserver"


async def _jobs_for(committed: async_sessionmaker[AsyncSession], audio_url: str) -> int:
    async with committed() as session:
        count = await session.scalar(select(func.count()).where(Job.audio_url == audio_url))
    return int(count or 0)


async def _upstream_audio_urls(emu: httpx.AsyncClient) -> list[str]:
    listed = await emu.get("/v2/transcript", params={"limit": 200})
    assert listed.status_code == 200, listed.text
    return [t["audio_url"] for t in listed.json()["transcripts"]]


def _variants(url: str) -> list[str]:
    head, _, tail = url.partition("://")
    host, _, path = tail.partition("/")
    return [
        url,
        url + "?copy=1",
        url + "#frag",
        f"{head.upper()}://{host.upper()}/{path}",
        f"{head}://{host.split(':')[0]}.:{host.split(':')[1]}/{path}" if ":" in host else url,
        f"{head}://{host}//{path.replace('/', '//')}",
        url + "/",
        f"{head}://{host}/{path[:-1]}%{ord(path[-1]):02X}",
        # Dot segments and backslashes: an HTTP client (httpx, a browser) resolves them to
        # the same path before it asks for the file.
        f"{head}://{host}/./{path}",
        f"{head}://{host}/{path}/.",
        f"{head}://{host}/elsewhere/../{path}",
        f"{head}://{host}/%2e/{path}",
        f"{head}://{host}/{path.replace('/', chr(92))}",
        # Ideographic and fullwidth full stops are dots to IDNA (httpx, browsers).
        f"{head}://{host.replace('.', chr(0x3002))}/{path}",
        f"{head}://{host.replace('.', chr(0xFF0E))}/{path}",
    ]


async def test_another_keys_upload_url_is_refused_before_upstream(
    jobs: tuple[Any, httpx.AsyncClient],
    new_key: MakeKey,
    emu: httpx.AsyncClient,
    committed: async_sessionmaker[AsyncSession],
) -> None:
    _, client = jobs
    owner = {"Authorization": await new_key(name="tenant a")}
    intruder = {"Authorization": await new_key(name="tenant b")}
    uploaded = await client.post("/v2/upload", content=wav_bytes(0.2), headers=owner)
    assert uploaded.status_code == 200, uploaded.text
    upload_url = uploaded.json()["upload_url"]

    for audio_url in _variants(upload_url):
        assert canonical_url(audio_url) == canonical_url(upload_url), audio_url
        compat = await client.post(
            "/v2/transcript", json={"audio_url": audio_url}, headers=intruder
        )
        assert compat.status_code == 403, (audio_url, compat.text)
        # The compatible surface answers in upstream's shape: `error` is the sentence.
        assert "uploaded through this service by another caller" in compat.json()["error"]
        app = await client.post("/api/transcripts", json={"audio_url": audio_url}, headers=intruder)
        assert app.status_code == 403, (audio_url, app.text)
        assert app.json()["error"] == "UploadNotOwned"
        # Refused before any row or upstream call.
        assert await _jobs_for(committed, audio_url) == 0
        assert audio_url not in await _upstream_audio_urls(emu)

    # With an Idempotency-Key too (the replay path must not leak another key's job).
    keyed = await client.post(
        "/v2/transcript",
        json={"audio_url": upload_url},
        headers={**intruder, "Idempotency-Key": "steal-1"},
    )
    assert keyed.status_code == 403, keyed.text

    # The owner submits it as before.
    own = await client.post("/v2/transcript", json={"audio_url": upload_url}, headers=owner)
    assert own.status_code == 200, own.text
    assert await _jobs_for(committed, upload_url) == 1


async def test_public_audio_urls_are_unaffected(
    jobs: tuple[Any, httpx.AsyncClient], new_key: MakeKey
) -> None:
    _, client = jobs
    a = {"Authorization": await new_key(name="tenant a")}
    b = {"Authorization": await new_key(name="tenant b")}
    public = "https://example.com/public/podcast.wav"
    for auth in (a, b):
        submitted = await client.post("/v2/transcript", json={"audio_url": public}, headers=auth)
        assert submitted.status_code == 200, submitted.text


async def _session_client(app: Any, key: str, end_user: str) -> httpx.AsyncClient:
    client = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url=OWN_ORIGIN, timeout=30
    )
    created = await client.post("/api/session", json={"key": key, "end_user": end_user})
    assert created.status_code == 201, created.text
    return client


async def test_end_users_of_one_key_submit_only_their_own_uploads(
    jobs: tuple[Any, httpx.AsyncClient],
    new_key: MakeKey,
    committed: async_sessionmaker[AsyncSession],
) -> None:
    app, client = jobs
    key = await new_key(name="app key")
    origin = {"Origin": OWN_ORIGIN}
    alice = await _session_client(app, key, "alice")
    bob = await _session_client(app, key, "bob")
    try:
        uploaded = await alice.post("/v2/upload", content=wav_bytes(0.2), headers=origin)
        assert uploaded.status_code == 200, uploaded.text
        upload_url = uploaded.json()["upload_url"]
        refused = await bob.post("/api/transcripts", json={"audio_url": upload_url}, headers=origin)
        assert refused.status_code == 403, refused.text
        assert refused.json()["error"] == "UploadNotOwned"
        assert await _jobs_for(committed, upload_url) == 0
        mine = await alice.post("/api/transcripts", json={"audio_url": upload_url}, headers=origin)
        assert mine.status_code == 201, mine.text
    finally:
        await alice.aclose()
        await bob.aclose()
    # The key itself (a server, not an end user) may submit any upload of its own.
    server = await client.post(
        "/v2/transcript", json={"audio_url": upload_url}, headers={"Authorization": key}
    )
    assert server.status_code == 200, server.text
