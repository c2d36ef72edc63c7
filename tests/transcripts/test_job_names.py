"""The job list and a job's read carry the uploaded file's name and the audio duration, so the
browser client shows names rather than ids, and a reopened job keeps its title."""

from __future__ import annotations

from typing import Any

import pytest

from tests.transcripts.harness import MakeKey, wait_until, wav_bytes

pytestmark = pytest.mark.e2e


async def test_list_and_read_carry_the_file_name_and_duration(jobs: Any, new_key: MakeKey) -> None:
    _, client = jobs
    key = await new_key()
    auth = {"Authorization": key}
    named = await client.post(
        "/api/transcripts",
        data={"config": "{}"},
        files={"file": ("Board meeting.wav", wav_bytes(1.0), "audio/wav")},
        headers=auth,
    )
    assert named.status_code == 201, named.text
    assert named.json()["filename"] == "Board meeting.wav"
    job_id = named.json()["id"]

    # A raw upload has no name: the job's filename is null, not someone else's.
    raw = await client.post("/v2/upload", content=wav_bytes(0.5), headers=auth)
    assert raw.status_code == 200, raw.text
    plain = await client.post(
        "/api/transcripts", json={"audio_url": raw.json()["upload_url"]}, headers=auth
    )
    assert plain.status_code == 201, plain.text
    assert plain.json()["filename"] is None

    # An upload through /api/uploads as a form keeps its name for a later JSON submit.
    form = await client.post(
        "/api/uploads", files={"file": ("later.mp3", wav_bytes(0.5), "audio/wav")}, headers=auth
    )
    assert form.status_code == 200, form.text
    later = await client.post(
        "/api/transcripts", json={"audio_url": form.json()["upload_url"]}, headers=auth
    )
    assert later.json()["filename"] == "later.mp3"

    upstream_id = named.json()["upstream_id"]

    async def completed() -> bool:
        # Reading on the /v2 surface brings the job's completion in (no webhook here).
        answer = await client.get(f"/v2/transcript/{upstream_id}", headers=auth)
        return bool(answer.json()["status"] == "completed")

    await wait_until(completed)
    one = (await client.get(f"/api/transcripts/{job_id}", headers=auth)).json()
    assert one["filename"] == "Board meeting.wav"
    assert one["audio_duration"] is not None
    assert one["audio_duration"] > 0

    items = (await client.get("/api/transcripts", headers=auth)).json()["items"]
    by_id = {item["id"]: item for item in items}
    assert by_id[job_id]["filename"] == "Board meeting.wav"
    assert by_id[plain.json()["id"]]["filename"] is None
    assert by_id[later.json()["id"]]["filename"] == "later.mp3"

    # Another key can't submit this key's upload_url (docs/tenancy.md), so it never sees the
    # file or its name.
    other = {"Authorization": await new_key()}
    theirs = await client.post(
        "/api/transcripts", json={"audio_url": form.json()["upload_url"]}, headers=other
    )
    assert theirs.status_code == 403, theirs.text
    assert theirs.json()["error"] == "UploadNotOwned"
    listed = (await client.get("/api/transcripts", headers=other)).json()["items"]
    assert listed == []


async def test_the_documented_schema_names_the_fields(jobs: Any) -> None:
    _, client = jobs
    schema = (await client.get("/openapi.json")).json()["components"]["schemas"]["JobRead"]
    assert {"filename", "audio_duration"} <= set(schema["properties"])
