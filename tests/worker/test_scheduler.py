"""The scheduler at the top: the registry names each feature's job; one loop shares slots."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import httpx
import pytest

from app.core.config import Settings
from app.core.db import create_engine, create_sessionmaker
from app.upstream.client import create_upstream
from app.worker import PeriodicJob, Resources, Scheduler, registered_jobs


@pytest.fixture
async def parts(
    make_settings: Callable[..., Settings],
) -> Any:
    settings = make_settings(reconciler_concurrency=3, reconciler_batch_size=2)
    assert settings.database_url is not None
    engine = create_engine(settings.database_url.get_secret_value())
    upstream = create_upstream(settings.upstream)
    async with httpx.AsyncClient() as http:
        yield create_sessionmaker(engine), upstream, settings, http
    await upstream.aclose()
    await engine.dispose()


def test_the_registry_names_each_features_job(parts: Any) -> None:
    sessionmaker, upstream, settings, http = parts
    jobs = registered_jobs(Resources(sessionmaker, upstream, settings, "me", http))
    assert [(j.name, j.claim is not None, j.sweep is not None) for j in jobs] == [
        ("webhooks.reconcile", True, False),
        ("webhooks.relay", True, False),
        ("llm.summaries", False, True),
    ]


async def test_claims_share_the_slots_in_order_and_a_sweep_never_runs_twice(
    parts: Any,
) -> None:
    sessionmaker, upstream, settings, http = parts
    asked: list[tuple[str, int]] = []
    release = asyncio.Event()
    sweeps = 0

    async def slow() -> None:
        await release.wait()

    def claimer(name: str, due: int) -> Callable[[int], Awaitable[Sequence[Awaitable[Any]]]]:
        async def claim(limit: int) -> Sequence[Awaitable[Any]]:
            asked.append((name, limit))
            return [slow() for _ in range(min(due, limit))]

        return claim

    async def sweep() -> None:
        nonlocal sweeps
        sweeps += 1
        await release.wait()

    def jobs(res: Resources) -> list[PeriodicJob]:
        assert res.owner == "me"
        return [
            PeriodicJob("a", claim=claimer("a", due=2)),
            PeriodicJob("b", claim=claimer("b", due=5)),
            PeriodicJob("s", sweep=sweep),
        ]

    scheduler = Scheduler(sessionmaker, upstream, settings, owner="me", relay_http=http, jobs=jobs)
    try:
        # 3 slots, batches of 2: `a` fills 2, `b` the last one; every slot taken -> busy.
        assert await scheduler.tick() is True
        assert asked == [("a", 2), ("b", 1)]
        await asyncio.sleep(0)
        assert sweeps == 1
        # No free slot: nobody is asked; the sweep still running is not started again.
        assert await scheduler.tick() is False
        assert asked == [("a", 2), ("b", 1)]
        await asyncio.sleep(0)
        assert sweeps == 1
        release.set()
        for _ in range(50):
            if not scheduler._inflight:
                break
            await asyncio.sleep(0.01)
        assert not scheduler._inflight
        await scheduler.tick()
        assert asked[2:] == [("a", 2), ("b", 1)]
        await asyncio.sleep(0)
        assert sweeps == 2
    finally:
        release.set()
        await scheduler.stop()


async def test_a_failing_claim_does_not_stop_the_loop(parts: Any) -> None:
    sessionmaker, upstream, settings, http = parts
    calls = 0

    async def claim(limit: int) -> Sequence[Awaitable[Any]]:
        nonlocal calls
        calls += 1
        raise RuntimeError("database went away")

    scheduler = Scheduler(
        sessionmaker,
        upstream,
        settings.model_copy(update={"reconciler_tick_s": 0.01}),
        owner="me",
        relay_http=http,
        jobs=lambda res: [PeriodicJob("x", claim=claim)],
    )
    scheduler.start()
    try:
        for _ in range(100):
            if calls >= 3:
                break
            await asyncio.sleep(0.01)
        assert calls >= 3
    finally:
        await scheduler.stop()
