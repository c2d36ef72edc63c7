"""The upload proxy against a real emulator process: bodies reach upstream intact, bad
bodies never do, and every upload is recorded."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.config import Settings
from app.uploads.models import Upload
from tests.transcripts.harness import MakeKey, wav_bytes

pytestmark = pytest.mark.e2e


async def upload_rows(
    committed: async_sessionmaker[AsyncSession], key_prefix: str | None = None
) -> list[Upload]:
    async with committed() as session:
        return list(await session.scalars(select(Upload).order_by(Upload.started_at)))


async def emulator_uploads(emu: httpx.AsyncClient) -> list[dict[str, Any]]:
    response = await emu.get("/_emulator/uploads")
    assert response.status_code == 200
    result: list[dict[str, Any]] = response.json()
    return result


async def test_raw_upload_reaches_upstream_intact_and_is_recorded(
    jobs: Any, new_key: MakeKey, emu: httpx.AsyncClient, committed: Any
) -> None:
    _, client = jobs
    key = await new_key()
    audio = wav_bytes(2.0) + uuid.uuid4().bytes  # unique content
    response = await client.post("/v2/upload", content=audio, headers={"Authorization": key})
    assert response.status_code == 200, response.text
    upload_url = response.json()["upload_url"]
    assert set(response.json()) == {"upload_url"}  # upstream's JSON, unchanged
    sha = hashlib.sha256(audio).hexdigest()
    received = [u for u in await emulator_uploads(emu) if u["sha256"] == sha]
    assert len(received) == 1
    assert received[0]["bytes"] == len(audio)
    async with committed() as session:
        row = await session.scalar(select(Upload).where(Upload.upload_url == upload_url))
    assert row is not None
    assert row.status == "completed"
    assert row.bytes == len(audio)
    assert row.declared_bytes == len(audio)
    assert row.body_format == "raw"
    assert row.completed_at is not None
    assert row.completed_at >= row.started_at


async def test_chunked_upload_of_many_small_pieces_arrives_whole(
    jobs: Any, new_key: MakeKey, emu: httpx.AsyncClient
) -> None:
    _, client = jobs
    key = await new_key()
    audio = bytes(range(256)) * 12_000 + uuid.uuid4().bytes  # ~3 MB, no Content-Length

    async def pieces() -> AsyncIterator[bytes]:
        for i in range(0, len(audio), 7001):
            yield audio[i : i + 7001]

    response = await client.post("/v2/upload", content=pieces(), headers={"Authorization": key})
    assert response.status_code == 200, response.text
    sha = hashlib.sha256(audio).hexdigest()
    assert any(u["sha256"] == sha for u in await emulator_uploads(emu))


async def test_multipart_upload_on_the_app_surface_streams_the_file_field(
    jobs: Any, new_key: MakeKey, emu: httpx.AsyncClient, committed: Any
) -> None:
    _, client = jobs
    key = await new_key()
    audio = wav_bytes(1.0) + uuid.uuid4().bytes
    response = await client.post(
        "/api/uploads",
        files={"file": ("talk.wav", audio, "audio/wav")},
        data={"note": "ignored"},
        headers={"Authorization": key},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["bytes"] == len(audio)
    assert body["upload_url"].startswith("http")
    sha = hashlib.sha256(audio).hexdigest()
    assert any(u["sha256"] == sha and u["bytes"] == len(audio) for u in await emulator_uploads(emu))
    async with committed() as session:
        row = await session.get(Upload, uuid.UUID(body["id"]))
    assert row is not None
    assert row.filename == "talk.wav"
    assert row.content_type == "audio/wav"
    assert row.body_format == "multipart"
    assert row.status == "completed"


async def test_multipart_on_the_raw_path_is_refused_before_upstream(
    jobs: Any, new_key: MakeKey, emu: httpx.AsyncClient
) -> None:
    _, client = jobs
    key = await new_key()
    before = len(await emulator_uploads(emu))
    response = await client.post(
        "/v2/upload",
        files={"file": ("a.wav", b"RIFF....", "audio/wav")},
        headers={"Authorization": key},
    )
    assert response.status_code == 400
    assert "raw binary" in response.json()["detail"]
    assert len(await emulator_uploads(emu)) == before


async def test_empty_body_is_refused_without_an_upstream_request(
    jobs: Any, new_key: MakeKey, emu: httpx.AsyncClient
) -> None:
    _, client = jobs
    key = await new_key()
    before = len(await emulator_uploads(emu))

    async def nothing() -> AsyncIterator[bytes]:
        yield b""

    for content in (b"", nothing()):
        response = await client.post("/v2/upload", content=content, headers={"Authorization": key})
        assert response.status_code == 400, response.text
        assert "empty" in response.json()["detail"]
    assert len(await emulator_uploads(emu)) == before


async def test_oversize_by_content_length_is_413_before_a_byte_goes_upstream(
    jobs_settings: Callable[..., Settings],
    start_app: Any,
    new_key: MakeKey,
    emu: httpx.AsyncClient,
    committed: Any,
) -> None:
    key = await new_key()
    before = len(await emulator_uploads(emu))
    async with start_app(jobs_settings(max_upload_bytes=10_000)) as (_, client):
        response = await client.post(
            "/v2/upload", content=b"x" * 10_001, headers={"Authorization": key}
        )
        assert response.status_code == 413
        # The compatible surface speaks upstream's error shape: `error` is the sentence.
        assert "larger than" in response.json()["error"]
        form = await client.post(
            "/api/uploads",
            files={"file": ("a.wav", b"x" * 2_000_000, "audio/wav")},
            headers={"Authorization": key},
        )
        assert form.status_code == 413
        assert form.json()["error"] == "PayloadTooLarge"  # the app surface: our shape
    assert len(await emulator_uploads(emu)) == before


async def test_oversize_while_chunked_is_413_and_the_upstream_request_is_aborted(
    jobs_settings: Callable[..., Settings],
    start_app: Any,
    new_key: MakeKey,
    emu: httpx.AsyncClient,
    committed: Any,
) -> None:
    key = await new_key()
    before = await emulator_uploads(emu)

    async def endless() -> AsyncIterator[bytes]:
        for _ in range(100):
            yield b"y" * 100_000

    async with start_app(jobs_settings(max_upload_bytes=1_500_000, upload_chunk_bytes=65_536)) as (
        _,
        client,
    ):
        response = await client.post(
            "/v2/upload", content=endless(), headers={"Authorization": key}
        )
    assert response.status_code == 413, response.text
    # Upstream saw a request that never completed: nothing was recorded there.
    assert await emulator_uploads(emu) == before
    async with committed() as session:
        rows = list(
            await session.scalars(
                select(Upload).where(Upload.status == "aborted", Upload.bytes > 0)
            )
        )
    assert any(r.error and "limit" in r.error and r.bytes <= 1_500_000 for r in rows)


async def test_upload_requires_a_key_with_the_transcripts_scope(
    jobs: Any, new_key: MakeKey
) -> None:
    _, client = jobs
    assert (await client.post("/v2/upload", content=b"abc")).status_code == 401
    llm_only = await new_key("llm")
    response = await client.post("/v2/upload", content=b"abc", headers={"Authorization": llm_only})
    assert response.status_code == 403


async def test_upstream_failure_is_a_502_and_the_upload_is_recorded_failed(
    jobs: Any, new_key: MakeKey, emu: httpx.AsyncClient, committed: Any
) -> None:
    _, client = jobs
    key = await new_key()
    await emu.post("/_emulator/faults", json={"route": "POST /v2/upload", "status": 500})
    audio = wav_bytes(0.5) + uuid.uuid4().bytes
    response = await client.post("/v2/upload", content=audio, headers={"Authorization": key})
    assert response.status_code == 502
    assert "500" in response.json()["error"]
    async with committed() as session:
        row = await session.scalar(
            select(Upload)
            .where(Upload.declared_bytes == len(audio))
            .order_by(Upload.started_at.desc())
        )
    assert row is not None
    assert row.status == "failed"
    assert row.upload_url is None
    assert row.error is not None
    # Not retried: the body is consumed as it streams.
    assert "POST /v2/upload" not in (await emu.get("/_emulator/faults")).json()
