"""Transcript summaries: presets, chapters from paragraphs, chunking, exactly once."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.db import create_engine, create_sessionmaker, utcnow
from app.llm.models import LlmBudgetDay, LlmUsage, Summary
from app.llm.summaries import NOTES_PREFACE, split_text
from app.llm.worker import in_flight, process_due_summaries, stop_summaries
from app.transcripts.models import Job
from app.upstream.client import create_upstream
from app.webhooks.models import JobEvent
from tests.llm.fake_llm import FakeLlm

DB = async_sessionmaker[AsyncSession]


def path(job: Job) -> str:
    return f"/api/transcripts/{job.id}/summaries"


async def wait_for(client: httpx.AsyncClient, job: Job, raw: str, count: int = 1) -> list[Any]:
    """Poll the list until `count` summaries are final (deadline, no fixed sleep)."""
    deadline = asyncio.get_running_loop().time() + 20
    while True:
        listed = (await client.get(path(job), headers={"Authorization": raw})).json()
        done = [s for s in listed if s["status"] in ("completed", "error")]
        if len(done) >= count:
            return listed
        assert asyncio.get_running_loop().time() < deadline, f"summaries not ready: {listed}"
        await asyncio.sleep(0.05)


async def add_summary(db: DB, job: Job, preset: str = "paragraph", **values: Any) -> uuid.UUID:
    summary = Summary(
        job_id=job.id,
        spec=values.pop("spec", preset),
        preset=preset,
        params=values.pop("params", {}),
        model=values.pop("model", "claude-sonnet-4-6"),
        source="submit",
        **values,
    )
    async with db() as session, session.begin():
        session.add(summary)
    return summary.id


async def test_a_summary_runs_once_and_is_returned_again(
    service: Callable[..., Any],
    new_key: Callable[..., Any],
    new_job: Callable[..., Any],
    fake_llm: FakeLlm,
    db: DB,
) -> None:
    key_id, raw = await new_key("transcripts", "llm")
    job = await new_job(key_id)
    async with service() as client:
        created = await client.post(
            path(job), json={"preset": "bullets", "bullets": 4}, headers={"Authorization": raw}
        )
        assert created.status_code == 202, created.text
        assert created.json()["status"] == "pending"
        [summary] = await wait_for(client, job, raw)
        again = await client.post(
            path(job), json={"preset": "bullets", "bullets": 4}, headers={"Authorization": raw}
        )
        one = await client.get(f"{path(job)}/{summary['id']}", headers={"Authorization": raw})
    assert summary["status"] == "completed", summary
    assert summary["data"] == ["point 1", "point 2", "point 3", "point 4"]
    assert summary["model"] == "claude-sonnet-4-6"
    assert summary["usage"]["llm_calls"] == 1
    assert summary["usage"]["prompt_tokens"] > 0
    assert again.status_code == 200
    assert again.json()["id"] == summary["id"]
    assert one.json()["text"] == summary["text"]
    assert len(fake_llm.calls) == 1  # the repeat was not paid for
    assert "exactly 4 bullet" in fake_llm.calls[0]["messages"][0]["content"]
    async with db() as session:
        usage = (
            await session.execute(select(LlmUsage).where(LlmUsage.key_id == key_id))
        ).scalar_one()
    assert usage.kind == "summary"
    assert str(usage.summary_id) == summary["id"]
    # Subscribers of the job's live status hear of it: one "summary" event, with the result.
    async with db() as session:
        events = (
            await session.execute(
                select(JobEvent).where(JobEvent.job_id == job.id, JobEvent.event == "summary")
            )
        ).scalars()
        [event] = list(events)
    assert event.data["id"] == summary["id"]
    assert event.data["status"] == "completed"
    assert event.data["data"] == summary["data"]


async def test_presets_and_custom_prompts_are_distinct_summaries(
    service: Callable[..., Any],
    new_key: Callable[..., Any],
    new_job: Callable[..., Any],
    fake_llm: FakeLlm,
) -> None:
    key_id, raw = await new_key("transcripts", "llm")
    job = await new_job(key_id)
    requests = [
        {"preset": "paragraph"},
        {"preset": "action_items"},
        {"prompt": "Who spoke most?"},
        {"prompt": "Who spoke most?", "model": "gemini-2.5-flash"},
    ]
    async with service() as client:
        for request in requests:
            response = await client.post(path(job), json=request, headers={"Authorization": raw})
            assert response.status_code == 202, response.text
        listed = await wait_for(client, job, raw, count=4)
    by_preset = {(s["preset"], s["model"]): s for s in listed}
    assert by_preset["paragraph", "claude-sonnet-4-6"]["text"].startswith("Summary of")
    assert by_preset["action_items", "claude-sonnet-4-6"]["data"] == [
        "Alice sends the report",
        "Bob books the room",
    ]
    assert by_preset["custom", "gemini-2.5-flash"]["prompt"] == "Who spoke most?"
    assert len(fake_llm.calls) == 4
    custom = [c for c in fake_llm.calls if c["messages"][0]["content"] == "Who spoke most?"]
    assert sorted(c["model"] for c in custom) == ["claude-sonnet-4-6", "gemini-2.5-flash"]


async def test_bad_requests(
    service: Callable[..., Any], new_key: Callable[..., Any], new_job: Callable[..., Any]
) -> None:
    key_id, raw = await new_key("transcripts", "llm")
    _, stranger = await new_key("transcripts", "llm")
    job = await new_job(key_id)
    reader_id, reader_raw = await new_key("transcripts")
    readable = await new_job(reader_id)
    failed = await new_job(key_id, status="error")
    async with service() as client:
        no_llm = await client.post(
            path(readable), json={"preset": "paragraph"}, headers={"Authorization": reader_raw}
        )
        reader = await client.get(path(readable), headers={"Authorization": reader_raw})
        shorthand = await client.post(
            path(job),
            json={"preset": "paragraph", "model": "claude-sonnet-4"},
            headers={"Authorization": raw},
        )
        both = await client.post(
            path(job), json={"preset": "paragraph", "prompt": "x"}, headers={"Authorization": raw}
        )
        theirs = await client.post(
            path(job), json={"preset": "paragraph"}, headers={"Authorization": stranger}
        )
        listing = await client.get(path(job), headers={"Authorization": stranger})
        errored = await client.post(
            path(failed), json={"preset": "paragraph"}, headers={"Authorization": raw}
        )
    assert no_llm.status_code == 403
    assert reader.status_code == 200
    assert shorthand.status_code == 400
    assert "claude-sonnet-4-6" in shorthand.json()["detail"]
    assert both.status_code == 422
    assert theirs.status_code == 404
    assert listing.status_code == 404
    assert errored.status_code == 409


async def test_chapters_carry_paragraph_timestamps(
    service: Callable[..., Any],
    new_key: Callable[..., Any],
    new_job: Callable[..., Any],
    fake_llm: FakeLlm,
) -> None:
    key_id, raw = await new_key("transcripts", "llm")
    job = await new_job(key_id)
    assert job.upstream_id is not None
    fake_llm.paragraphs[job.upstream_id] = [
        {"text": "Intro " * 40, "start": 0, "end": 15_000},
        {"text": "More intro " * 10, "start": 15_200, "end": 30_000},
        {"text": "Budget talk " * 30, "start": 31_000, "end": 62_500},
        {"text": "Wrap up " * 40, "start": 63_000, "end": 90_000},
    ]
    async with service(llm_chapter_chars=300) as client:
        response = await client.post(
            path(job), json={"preset": "chapters"}, headers={"Authorization": raw}
        )
        assert response.status_code == 202
        [summary] = await wait_for(client, job, raw)
        # The paragraphs are cached: a second chapters run (other model) fetches none.
        await client.post(
            path(job),
            json={"preset": "chapters", "model": "claude-haiku-4-5-20251001"},
            headers={"Authorization": raw},
        )
        await wait_for(client, job, raw, count=2)
    assert summary["status"] == "completed", summary
    assert [(c["start"], c["end"]) for c in summary["data"]] == [
        (0, 30_000),  # "Intro" is 240 characters: the next paragraph joins it
        (31_000, 62_500),
        (63_000, 90_000),
    ]
    assert [c["headline"] for c in summary["data"]] == ["Headline 1", "Headline 2", "Headline 3"]
    assert summary["data"][0]["summary"] == "What chapter 1 is about."
    assert summary["text"].startswith("[00:00–00:30] Headline 1")
    assert fake_llm.paragraph_fetches == 1


async def test_long_transcripts_are_summarised_in_chunks(
    service: Callable[..., Any],
    new_key: Callable[..., Any],
    new_job: Callable[..., Any],
    fake_llm: FakeLlm,
) -> None:
    key_id, raw = await new_key("transcripts", "llm")
    sentence = "The team reviewed the quarterly numbers in detail. "
    text = sentence * 70  # ~3,600 characters
    job = await new_job(key_id, text=text)
    async with service(llm_summary_chunk_chars=1000) as client:
        await client.post(path(job), json={"preset": "paragraph"}, headers={"Authorization": raw})
        [summary] = await wait_for(client, job, raw)
    assert summary["status"] == "completed"
    pieces = split_text(text, 1000)
    assert len(pieces) == 4
    assert summary["usage"]["llm_calls"] == len(pieces) + 1 == len(fake_llm.calls)
    users = [c["messages"][1]["content"] for c in fake_llm.calls]
    assert users[:-1] == pieces
    assert all(len(u) <= 1000 for u in users)
    assert users[-1].startswith(NOTES_PREFACE)
    assert "one paragraph" in fake_llm.calls[-1]["messages"][0]["content"]


async def test_summary_requests_are_refused_when_the_budget_is_used(
    service: Callable[..., Any],
    new_key: Callable[..., Any],
    new_job: Callable[..., Any],
    fake_llm: FakeLlm,
    db: DB,
) -> None:
    key_id, raw = await new_key("transcripts", "llm")
    job = await new_job(key_id)
    async with service(llm_daily_token_budget=5000, llm_summary_max_tokens=1500) as client:
        first = await client.post(
            path(job), json={"preset": "paragraph"}, headers={"Authorization": raw}
        )
        await wait_for(client, job, raw)
        async with db() as session, session.begin():
            await session.execute(
                update(LlmBudgetDay)
                .where(LlmBudgetDay.key_id == key_id)
                .values(used_tokens=LlmBudgetDay.used_tokens + 3600)
            )
        second = await client.post(
            path(job), json={"preset": "action_items"}, headers={"Authorization": raw}
        )
        listed = (await client.get(path(job), headers={"Authorization": raw})).json()
    assert first.status_code == 202
    assert second.status_code == 429
    assert second.json()["error"] == "BudgetExceeded"
    assert "retry-after" in second.headers
    assert [s["preset"] for s in listed] == ["paragraph"]  # the refused one was not stored
    assert len(fake_llm.calls) == 1


async def test_two_instances_run_each_summary_once(
    llm_settings: Callable[..., Any],
    llm_database: str,
    new_key: Callable[..., Any],
    new_job: Callable[..., Any],
    fake_llm: FakeLlm,
    db: DB,
) -> None:
    key_id, _ = await new_key("transcripts", "llm")
    jobs = [await new_job(key_id) for _ in range(20)]
    ids = {await add_summary(db, job) for job in jobs}
    # A summary of a job that is not complete yet is left alone.
    waiting = await add_summary(db, await new_job(key_id, status="processing"))
    settings = llm_settings(llm_summary_concurrency=10)

    async def instance(owner: str) -> int:
        engine = create_engine(llm_database, pool_size=4)
        upstream = create_upstream(settings.upstream)
        done = 0
        try:
            while n := await process_due_summaries(
                create_sessionmaker(engine), upstream, settings.llm, owner=owner, limit=4, wait=True
            ):
                done += n
        finally:
            await upstream.aclose()
            await engine.dispose()
        return done

    counts = await asyncio.gather(instance("a"), instance("b"))
    assert sum(counts) == 20
    assert len(fake_llm.calls) == 20
    async with db() as session:
        rows = (await session.execute(select(Summary).where(Summary.id.in_(ids)))).scalars()
        assert {r.status for r in rows} == {"completed"}
        pending = await session.get(Summary, waiting)
        assert pending is not None
        assert pending.status == "pending"


async def test_an_expired_lease_is_taken_over_and_a_live_one_is_not(
    llm_settings: Callable[..., Any],
    new_key: Callable[..., Any],
    new_job: Callable[..., Any],
    fake_llm: FakeLlm,
    db: DB,
) -> None:
    key_id, _ = await new_key("transcripts", "llm")
    now = utcnow()
    crashed = await add_summary(
        db,
        await new_job(key_id),
        status="running",
        lease_owner="dead",
        lease_expires_at=now - timedelta(seconds=1),
        attempts=1,
    )
    busy = await add_summary(
        db,
        await new_job(key_id),
        status="running",
        lease_owner="alive",
        lease_expires_at=now + timedelta(minutes=5),
        attempts=1,
    )
    settings = llm_settings()
    upstream = create_upstream(settings.upstream)
    try:
        assert await process_due_summaries(db, upstream, settings.llm, owner="c", wait=True) == 1
    finally:
        await upstream.aclose()
    async with db() as session:
        taken = await session.get(Summary, crashed)
        left = await session.get(Summary, busy)
    assert taken is not None
    assert left is not None
    assert (taken.status, taken.attempts, taken.lease_owner) == ("completed", 2, None)
    assert (left.status, left.lease_owner) == ("running", "alive")
    assert len(fake_llm.calls) == 1


async def test_upstream_failures(
    llm_settings: Callable[..., Any],
    new_key: Callable[..., Any],
    new_job: Callable[..., Any],
    fake_llm: FakeLlm,
    db: DB,
) -> None:
    """4xx: final error, one call. 5xx past the retries: pending again, with a backoff."""
    key_id, _ = await new_key("transcripts", "llm")
    refused = await add_summary(db, await new_job(key_id))
    settings = llm_settings(upstream_retry_attempts=2)
    upstream = create_upstream(settings.upstream)
    try:
        fake_llm.faults = [422]
        assert await process_due_summaries(db, upstream, settings.llm, owner="x", wait=True) == 1
        assert len(fake_llm.calls) == 1
        flaky = await add_summary(db, await new_job(key_id))
        fake_llm.faults = [503, 503]
        assert await process_due_summaries(db, upstream, settings.llm, owner="x", wait=True) == 1
        assert len(fake_llm.calls) == 3
        # Not due before its backoff has passed.
        assert await process_due_summaries(db, upstream, settings.llm, owner="x", wait=True) == 0
        async with db() as session, session.begin():
            await session.execute(
                update(Summary).where(Summary.id == flaky).values(next_attempt_at=utcnow())
            )
        assert await process_due_summaries(db, upstream, settings.llm, owner="x", wait=True) == 1
    finally:
        await upstream.aclose()
    async with db() as session:
        first = await session.get(Summary, refused)
        second = await session.get(Summary, flaky)
    assert first is not None
    assert second is not None
    assert (first.status, first.error) == ("error", "injected 422")
    assert (second.status, second.attempts, second.error) == ("completed", 2, None)
    assert len(fake_llm.calls) == 4


async def test_deleting_a_job_deletes_its_summaries(
    new_key: Callable[..., Any], new_job: Callable[..., Any], db: DB
) -> None:
    key_id, _ = await new_key("transcripts", "llm")
    job = await new_job(key_id)
    await add_summary(db, job)
    await add_summary(db, job, preset="chapters", spec="chapters")
    async with db() as session, session.begin():
        await session.execute(delete(Job).where(Job.id == job.id))
    async with db() as session:
        left = await session.execute(
            select(func.count()).select_from(Summary).where(Summary.job_id == job.id)
        )
    assert left.scalar_one() == 0


async def test_shutdown_hands_running_summaries_back(
    llm_settings: Callable[..., Any],
    new_key: Callable[..., Any],
    new_job: Callable[..., Any],
    fake_llm: FakeLlm,
    db: DB,
) -> None:
    """Summaries run beside the reconciler's tick; stopping gives their claims back."""
    key_id, _ = await new_key("transcripts", "llm")
    summary_id = await add_summary(db, await new_job(key_id))
    fake_llm.gate = asyncio.Event()
    settings = llm_settings()
    upstream = create_upstream(settings.upstream)
    try:
        # Returns at once: the call is still held upstream.
        assert await process_due_summaries(db, upstream, settings.llm, owner="s") == 1
        deadline = asyncio.get_running_loop().time() + 10
        while not fake_llm.calls:
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.02)
        assert in_flight() == 1
        await stop_summaries(timeout=0.1)
        assert in_flight() == 0
    finally:
        fake_llm.gate.set()
        await upstream.aclose()
    async with db() as session:
        summary = await session.get(Summary, summary_id)
    assert summary is not None
    assert (summary.status, summary.lease_owner, summary.attempts) == ("pending", None, 0)


async def test_a_call_longer_than_the_lease_is_not_taken_over_nor_paid_twice(
    llm_settings: Callable[..., Any],
    new_key: Callable[..., Any],
    new_job: Callable[..., Any],
    fake_llm: FakeLlm,
    db: DB,
) -> None:
    """A live instance keeps its lease through a completion slower than the lease: no tick
    of its own or of another instance runs the summary again (a second paid call)."""
    key_id, _ = await new_key("transcripts", "llm")
    summary_id = await add_summary(db, await new_job(key_id))
    async with db() as session, session.begin():
        # Summaries other tests left due in this shared database wait: the claims below
        # count this test's summary only.
        await session.execute(
            update(Summary)
            .where(Summary.id != summary_id, Summary.status.in_(("pending", "running")))
            .values(next_attempt_at=utcnow() + timedelta(days=1))
        )
    fake_llm.gate = asyncio.Event()
    lease_s = 1.0
    settings = llm_settings(llm_summary_lease_s=lease_s)
    upstream = create_upstream(settings.upstream)
    loop = asyncio.get_running_loop()
    try:
        assert await process_due_summaries(db, upstream, settings.llm, owner="a") == 1
        deadline = loop.time() + 10
        while not fake_llm.calls:
            assert loop.time() < deadline, "the call never reached the LLM"
            await asyncio.sleep(0.02)
        # Both instances tick for well over two leases while the call is held upstream.
        until = loop.time() + 2.5 * lease_s
        while loop.time() < until:
            assert await process_due_summaries(db, upstream, settings.llm, owner="a") == 0
            assert await process_due_summaries(db, upstream, settings.llm, owner="b") == 0
            await asyncio.sleep(0.1)
        fake_llm.gate.set()
        deadline = loop.time() + 10
        while in_flight():
            assert loop.time() < deadline, "the summary never finished"
            await asyncio.sleep(0.02)
    finally:
        fake_llm.gate.set()
        await upstream.aclose()
    async with db() as session:
        summary = await session.get(Summary, summary_id)
        usage_rows = await session.scalar(
            select(func.count()).select_from(LlmUsage).where(LlmUsage.summary_id == summary_id)
        )
    assert summary is not None
    assert (summary.status, summary.attempts, summary.llm_calls) == ("completed", 1, 1)
    assert len(fake_llm.calls) == 1
    assert usage_rows == 1


async def test_summaries_follow_the_transcripts_ownership_rule(
    db: async_sessionmaker[AsyncSession],
    new_key: Callable[..., Any],
    new_job: Callable[..., Any],
) -> None:
    """A signed-in end user reaches only their own transcripts' summaries; the key reaches all."""
    from app.core.errors import NotFound
    from app.identity.principal import Principal
    from app.llm.router import owned_job

    key_id, _ = await new_key("llm", "transcripts")
    alices = await new_job(key_id, end_user="alice")
    scopes = frozenset({"llm", "transcripts"})
    alice = Principal(key_id=key_id, key_name="k", scopes=scopes, end_user="alice", via="jwt")
    bob = Principal(key_id=key_id, key_name="k", scopes=scopes, end_user="bob", via="session")
    key = Principal(key_id=key_id, key_name="k", scopes=scopes)
    async with db() as session:
        assert (await owned_job(session, alice, str(alices.id))).id == alices.id
        assert (await owned_job(session, key, alices.upstream_id)).id == alices.id
        with pytest.raises(NotFound):
            await owned_job(session, bob, str(alices.id))
        with pytest.raises(NotFound):
            await owned_job(session, bob, alices.upstream_id)
