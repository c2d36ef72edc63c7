"""Summaries end to end: real service processes with their reconcilers, the emulator's
LLM Gateway, one Postgres. Exactly once across instances; submit-time summaries; SSE."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from app.core.db import create_engine, create_sessionmaker, utcnow
from app.identity.models import ApiKey
from app.identity.scopes import ALL_SCOPES
from app.llm.models import LlmUsage, Summary
from app.transcripts.models import Job, JobStatus
from tests.e2e.test_summaries_support import wav_bytes
from tests.live import Proc, create_key_in, run_emulator, run_service

pytestmark = pytest.mark.e2e

FAST = {
    "RECONCILER_TICK_S": "0.2",
    "POLL_INITIAL_DELAY_S": "0.5",
}


@pytest.fixture(scope="module")
def llm_emulator() -> Iterator[Proc]:
    env = {
        "EMULATOR_RECOGNITION": "placeholder",
        "EMULATOR_MIN_PROCESSING_S": "0.3",
        "EMULATOR_QUEUED_S": "0.1",
    }
    with run_emulator(env) as proc:
        yield proc


def emulator_llm_calls(emulator: Proc) -> list[dict[str, Any]]:
    response = httpx.get(f"{emulator.url}/_emulator/llm", timeout=10)
    response.raise_for_status()
    calls: list[dict[str, Any]] = response.json()
    return calls


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


async def _seed_completed_jobs(database_url: str, n: int) -> list[uuid.UUID]:
    """n completed jobs (cached results) of one key, each with a pending auto summary."""
    engine = create_engine(database_url, pool_size=1)
    try:
        async with create_sessionmaker(engine)() as session, session.begin():
            key = ApiKey(
                name="seed", prefix="seed", key_hash=uuid.uuid4().hex, scopes=["transcripts"]
            )
            session.add(key)
            await session.flush()
            ids = []
            for i in range(n):
                job = Job(
                    key_id=key.id,
                    upstream_id=f"seeded-{uuid.uuid4().hex[:10]}",
                    status=JobStatus.completed.value,
                    audio_url="https://example.test/a.wav",
                    request={},
                    result={"status": "completed", "text": f"Meeting {i}. We will ship it."},
                    completed_at=utcnow(),
                )
                session.add(job)
                await session.flush()
                session.add(
                    Summary(
                        job_id=job.id,
                        spec="bullets:3",
                        preset="bullets",
                        params={"bullets": 3},
                        model="claude-sonnet-4-6",
                        source="submit",
                    )
                )
                ids.append(job.id)
            return ids
    finally:
        await engine.dispose()


async def _summary_states(database_url: str) -> dict[str, int]:
    engine = create_engine(database_url, pool_size=1)
    try:
        async with create_sessionmaker(engine)() as session:
            rows = await session.execute(
                select(Summary.status, func.count()).group_by(Summary.status)
            )
            return {str(row[0]): int(row[1]) for row in rows}
    finally:
        await engine.dispose()


def test_two_instances_and_50_jobs_make_exactly_50_llm_calls(
    make_database: Callable[..., str], llm_emulator: Proc
) -> None:
    database_url = make_database()
    httpx.post(f"{llm_emulator.url}/_emulator/reset", timeout=10).raise_for_status()
    asyncio.run(_seed_completed_jobs(database_url, 50))
    with (
        run_service(database_url, llm_emulator.url, FAST),
        run_service(database_url, llm_emulator.url, FAST),
    ):
        wait_until(
            lambda: asyncio.run(_summary_states(database_url)).get("completed") == 50,
            90,
            "50 completed summaries",
        )
        time.sleep(1.0)  # let any (wrong) duplicate run show up before counting
    calls = emulator_llm_calls(llm_emulator)
    assert len(calls) == 50
    assert asyncio.run(_summary_states(database_url)) == {"completed": 50}
    texts = {c["request"]["messages"][1]["content"] for c in calls}
    assert len(texts) == 50  # one call per job, none repeated


def _read_events(url: str, key: str, job_id: str, wanted: int) -> list[dict[str, Any]]:
    """Replay a job's events over SSE (Last-Event-ID: 0) until `wanted` summary events."""
    summaries: list[dict[str, Any]] = []
    with httpx.stream(
        "GET",
        f"{url}/api/transcripts/{job_id}/events",
        headers={"Authorization": key, "Last-Event-ID": "0"},
        timeout=30,
    ) as response:
        assert response.status_code == 200
        event = None
        for line in response.iter_lines():
            if line.startswith("event:"):
                event = line.split(":", 1)[1].strip()
            elif line.startswith("data:") and event == "summary":
                summaries.append(json.loads(line.split(":", 1)[1]))
                if len(summaries) >= wanted:
                    break
    return summaries


def test_submit_with_summaries_chapters_sse_delete_and_retries(
    database_url: str, llm_emulator: Proc
) -> None:
    key = create_key_in(database_url, ALL_SCOPES, name="summaries e2e")
    headers = {"Authorization": key}
    with run_service(database_url, llm_emulator.url, FAST) as service:
        base = service.url
        uploaded = httpx.post(f"{base}/v2/upload", content=wav_bytes(), headers=headers, timeout=30)
        assert uploaded.status_code == 200, uploaded.text
        refused = httpx.post(
            f"{base}/api/transcripts",
            json={
                "audio_url": uploaded.json()["upload_url"],
                "summaries": [{"preset": "paragraph", "model": "claude-sonnet-4"}],
            },
            headers=headers,
            timeout=30,
        )
        assert refused.status_code == 400  # policy before any job or upstream call
        submitted = httpx.post(
            f"{base}/api/transcripts",
            json={
                "audio_url": uploaded.json()["upload_url"],
                "summaries": [{"preset": "bullets", "bullets": 2}, {"preset": "chapters"}],
            },
            headers=headers,
            timeout=30,
        )
        assert submitted.status_code == 201, submitted.text
        job_id = submitted.json()["id"]

        def summaries_done() -> bool:
            view = httpx.get(f"{base}/api/transcripts/{job_id}", headers=headers, timeout=10)
            states = [s["status"] for s in view.json()["summaries"]]
            return len(states) == 2 and all(s in ("completed", "error") for s in states)

        wait_until(summaries_done, 60, "the submit's summaries")
        view = httpx.get(f"{base}/api/transcripts/{job_id}", headers=headers, timeout=10).json()
        by_preset = {s["preset"]: s for s in view["summaries"]}
        assert by_preset["bullets"]["status"] == "completed", by_preset
        assert len(by_preset["bullets"]["data"]) == 2
        chapters = by_preset["chapters"]
        assert chapters["status"] == "completed", chapters
        paragraphs = httpx.get(
            f"{base}/v2/transcript/{view['upstream_id']}/paragraphs", headers=headers, timeout=10
        ).json()["paragraphs"]
        starts = {p["start"] for p in paragraphs}
        ends = {p["end"] for p in paragraphs}
        assert chapters["data"], "no chapters"
        for chapter in chapters["data"]:
            assert chapter["start"] in starts
            assert chapter["end"] in ends
            assert chapter["headline"]
        assert chapters["data"][0]["start"] == paragraphs[0]["start"]
        assert chapters["data"][-1]["end"] == paragraphs[-1]["end"]

        events = _read_events(base, key, job_id, 2)
        assert sorted(e["preset"] for e in events) == ["bullets", "chapters"]

        # Asking again returns the stored summary: no new LLM call.
        before = len(emulator_llm_calls(llm_emulator))
        again = httpx.post(
            f"{base}/api/transcripts/{job_id}/summaries",
            json={"preset": "bullets", "bullets": 2},
            headers=headers,
            timeout=10,
        )
        assert again.status_code == 200
        assert again.json()["id"] == by_preset["bullets"]["id"]

        # LLM Gateway 5xx is retried (nothing billed), 4xx is not.
        assert httpx.get(f"{llm_emulator.url}/_emulator/faults", timeout=10).json() == {}
        httpx.post(
            f"{llm_emulator.url}/_emulator/faults",
            json={"route": "POST /v1/chat/completions", "status": 503, "count": 2},
            timeout=10,
        ).raise_for_status()
        chat = httpx.post(
            f"{base}/v1/chat/completions",
            json={
                "model": "claude-haiku-4-5-20251001",
                "messages": [{"role": "user", "content": "We will meet on Monday."}],
            },
            headers=headers,
            timeout=30,
        )
        assert chat.status_code == 200, chat.text
        assert chat.json()["choices"][0]["message"]["content"].startswith("Summary:")
        # Streamed through as the gateway's SSE chunks, usage included.
        with httpx.stream(
            "POST",
            f"{base}/v1/chat/completions",
            json={
                "model": "gemini-2.5-flash",
                "stream": True,
                "messages": [{"role": "user", "content": "One two three four."}],
            },
            headers=headers,
            timeout=30,
        ) as streamed:
            assert streamed.status_code == 200
            lines = [line for line in streamed.iter_lines() if line.startswith("data: ")]
        assert lines[-1] == "data: [DONE]"
        chunks = [json.loads(line[6:]) for line in lines[:-1]]
        text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
        assert text.startswith("Summary: One two three four.")
        assert chunks[-1]["usage"]["completion_tokens"] > 0
        httpx.post(
            f"{llm_emulator.url}/_emulator/faults",
            json={"route": "POST /v1/chat/completions", "status": 400, "count": 2},
            timeout=10,
        ).raise_for_status()
        bad = httpx.post(
            f"{base}/v1/chat/completions",
            json={"model": "gpt-4.1", "messages": [{"role": "user", "content": "x"}]},
            headers=headers,
            timeout=30,
        )
        assert bad.status_code == 400
        faults = httpx.get(f"{llm_emulator.url}/_emulator/faults", timeout=10).json()
        # Not retried: one of the two injected 400s is still queued.
        assert [f["count"] for f in faults["POST /v1/chat/completions"]] == [1]
        httpx.delete(f"{llm_emulator.url}/_emulator/faults", timeout=10)
        assert len(emulator_llm_calls(llm_emulator)) == before + 2

        deleted = httpx.delete(f"{base}/api/transcripts/{job_id}", headers=headers, timeout=30)
        assert deleted.status_code == 200
        gone = httpx.get(f"{base}/api/transcripts/{job_id}/summaries", headers=headers, timeout=10)
        assert gone.status_code == 404

    async def left() -> int:
        engine = create_engine(database_url, pool_size=1)
        try:
            async with create_sessionmaker(engine)() as session:
                count = await session.scalar(
                    select(func.count())
                    .select_from(Summary)
                    .where(Summary.job_id == uuid.UUID(job_id))
                )
                return int(count or 0)
        finally:
            await engine.dispose()

    assert asyncio.run(left()) == 0


def test_kill_9_mid_call_costs_at_most_one_repeat(
    make_database: Callable[..., str], llm_emulator: Proc
) -> None:
    """An instance dies while its LLM call is in flight: after the lease another instance
    runs the summary; the summary is stored once and the gateway saw at most two calls."""
    database_url = make_database()
    httpx.post(f"{llm_emulator.url}/_emulator/reset", timeout=10).raise_for_status()
    asyncio.run(_seed_completed_jobs(database_url, 1))
    httpx.post(
        f"{llm_emulator.url}/_emulator/faults",
        json={"route": "POST /v1/chat/completions", "delay_s": 4, "count": 1},
        timeout=10,
    ).raise_for_status()
    env = {**FAST, "LLM_SUMMARY_LEASE_S": "2"}
    with run_service(database_url, llm_emulator.url, env) as first:
        wait_until(
            lambda: asyncio.run(_summary_states(database_url)) == {"running": 1},
            30,
            "the first instance's claim",
        )
        # The emulator takes the latency fault when the call arrives: once the queue is
        # empty the call is held there for 4 s, so the kill lands mid-call, not before it.
        wait_until(
            lambda: httpx.get(f"{llm_emulator.url}/_emulator/faults", timeout=10).json() == {},
            30,
            "the first instance's call to reach the gateway",
        )
        first.kill()
    with run_service(database_url, llm_emulator.url, env):
        wait_until(
            lambda: asyncio.run(_summary_states(database_url)) == {"completed": 1},
            30,
            "the takeover",
        )
    wait_until(lambda: len(emulator_llm_calls(llm_emulator)) >= 1, 10, "the gateway's record")
    calls = emulator_llm_calls(llm_emulator)
    assert 1 <= len(calls) <= 2
    assert asyncio.run(_usage_rows(database_url)) == 1  # stored and charged once


async def _usage_rows(database_url: str) -> int:
    engine = create_engine(database_url, pool_size=1)
    try:
        async with create_sessionmaker(engine)() as session:
            return int(await session.scalar(select(func.count()).select_from(LlmUsage)) or 0)
    finally:
        await engine.dispose()
