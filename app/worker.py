"""The scheduler: the app's periodic jobs, each owned by its feature, run by one loop.

The registry below names them (`registered_jobs`); the features own the work:

- `webhooks.reconcile` (app/webhooks/reconciler.py): fetch results after a webhook, poll
  jobs whose webhook never came, adopt or fail orphaned submits;
- `webhooks.relay` (app/webhooks/relay.py): POST final states to callers' own webhooks;
- `llm.summaries` (app/llm/worker.py): run the summaries of completed jobs.

A *claim* job takes up to N due rows under a lease (app/core/leases.py) and hands back
their work, which runs in the loop's shared slots (`reconciler_concurrency`), so one slow
upstream call never holds up the rest. A *sweep* job runs by itself, one at a time, and
keeps its own concurrency (summaries can take a minute).

The same loop runs in each web process (started by the lifespan, app/main.py) and in
`aai-proxy worker` (`run_worker`). Any instance can die at any point: its leases expire
and another instance takes the work over.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.config import Settings
from app.core.leases import instance_owner
from app.llm.worker import process_due_summaries
from app.upstream.client import Upstream
from app.webhooks import relay
from app.webhooks.reconciler import Reconciler

logger = logging.getLogger(__name__)

Claim = Callable[[int], Awaitable[Sequence[Awaitable[Any]]]]
Sweep = Callable[[], Awaitable[Any]]


@dataclass(frozen=True)
class PeriodicJob:
    """One registered job: exactly one of `claim` (work for the shared slots, up to the
    limit it is given) or `sweep` (runs on its own, never twice at once)."""

    name: str
    claim: Claim | None = None
    sweep: Sweep | None = None


@dataclass(frozen=True)
class Resources:
    """What the jobs run with; created and closed by whoever runs the scheduler."""

    sessionmaker: async_sessionmaker[AsyncSession]
    upstream: Upstream
    settings: Settings
    owner: str
    relay_http: httpx.AsyncClient


def registered_jobs(res: Resources) -> list[PeriodicJob]:
    """Every periodic job of the app, in the order they claim free slots."""
    reconciler = Reconciler(
        res.sessionmaker, res.upstream, res.settings.reconciler, owner=res.owner
    )
    return [
        PeriodicJob("webhooks.reconcile", claim=reconciler.claim_work),
        PeriodicJob(
            "webhooks.relay",
            claim=partial(
                relay.claim_work, res.sessionmaker, res.relay_http, res.settings.webhooks, res.owner
            ),
        ),
        PeriodicJob(
            "llm.summaries",
            sweep=partial(
                process_due_summaries,
                res.sessionmaker,
                res.upstream,
                res.settings.llm,
                owner=res.owner,
            ),
        ),
    ]


class Scheduler:
    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        upstream: Upstream,
        settings: Settings,
        *,
        owner: str | None = None,
        wake: asyncio.Event | None = None,
        relay_http: httpx.AsyncClient | None = None,
        jobs: Callable[[Resources], list[PeriodicJob]] = registered_jobs,
    ) -> None:
        self.settings = settings
        self.owner = owner or instance_owner()
        self.wake = wake or asyncio.Event()
        self._own_http = relay_http is None
        self.relay_http = relay_http or relay.create_relay_client(settings.webhooks)
        self.jobs = jobs(Resources(sessionmaker, upstream, settings, self.owner, self.relay_http))
        self._task: asyncio.Task[None] | None = None
        # Work in flight: claimed items, at most `reconciler_concurrency`; one slow upstream
        # call never holds up the rest (no batch waits for its slowest).
        self._inflight: set[asyncio.Task[Any]] = set()
        self._sweeps: dict[str, asyncio.Task[None]] = {}
        # Awaited before each claim: the web process's runtime lets its pending webhook acks
        # go first (WebhooksRuntime.acks_settled); None in `aai-proxy worker`.
        self.before_claim: Callable[[], Awaitable[None]] | None = None

    # --- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        self._task = asyncio.create_task(self.run(), name="worker.scheduler")

    async def stop(self) -> None:
        tasks = [t for t in (self._task, *self._sweeps.values()) if t is not None]
        tasks += list(self._inflight)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._own_http:
            await self.relay_http.aclose()

    async def run(self) -> None:
        logger.info("webhooks.reconciler.started", extra={"owner": self.owner})
        while True:
            self.wake.clear()
            try:
                busy = await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("webhooks.reconciler.tick_failed")
                busy = False
            if busy:
                continue  # a full claim: more may be due right now
            # Sleep until a webhook wakes us, a slot frees up, or the tick passes.
            woken = asyncio.ensure_future(self.wake.wait())
            try:
                await asyncio.wait(
                    {woken, *self._inflight},
                    timeout=self.settings.reconciler_tick_s,
                    return_when=asyncio.FIRST_COMPLETED,
                )
            finally:
                # Also when the loop itself is cancelled: a waiter left pending is destroyed
                # pending by the garbage collector later, logging from inside whatever runs then.
                woken.cancel()

    def nudge(self, job_id: object = "") -> None:
        """Look for due work now (a webhook just marked `job_id` due).

        The job's `next_check_at` is all the state there is: the receiver sets it to now,
        and a submit answer landing after the webhook keeps it so
        (app/transcripts/service.py), so waking the loop is enough.
        """
        del job_id
        self.wake.set()

    def _spawn(self, work: Awaitable[Any], name: str) -> None:
        task = asyncio.create_task(self._guarded(work), name=name)
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)

    async def tick(self) -> bool:
        """Claim due work into the free slots, start the sweeps that are not running.

        Returns True when the claims filled every free slot (more may be due at once).
        """
        if self.before_claim is not None:
            await self.before_claim()  # a webhook burst's acks first (bounded)
        limit = self.settings.reconciler_batch_size
        free = self.settings.reconciler_concurrency - len(self._inflight)
        claimed = 0
        for job in self.jobs:
            if job.claim is None or free <= 0:
                continue
            work = await job.claim(min(free, limit))
            for item in work:
                self._spawn(item, job.name)
            claimed += len(work)
            free -= len(work)
        for job in self.jobs:
            if job.sweep is None:
                continue
            running = self._sweeps.get(job.name)
            if running is None or running.done():
                self._sweeps[job.name] = asyncio.create_task(
                    self._swept(job.name, job.sweep), name=job.name
                )
        return claimed > 0 and free <= 0

    async def _guarded(self, work: Awaitable[Any]) -> None:
        try:
            await work
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("webhooks.reconciler.work_failed")

    async def _swept(self, name: str, sweep: Sweep) -> None:
        try:
            await sweep()
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("worker.sweep_failed", extra={"job": name})


async def run_worker(settings: Settings) -> None:
    """`aai-proxy worker`: the scheduler (and the LISTEN hub for wake-ups), no HTTP."""
    import app.models  # noqa: F401 - every table, so foreign keys resolve without the app
    from app.core.db import create_engine, create_sessionmaker
    from app.upstream.client import create_upstream
    from app.webhooks.hub import EventHub

    assert settings.database_url is not None
    url = settings.database_url.get_secret_value()
    engine = create_engine(url)
    sessionmaker = create_sessionmaker(engine)
    upstream = create_upstream(settings.upstream)
    hub = EventHub(url, sessionmaker)
    await hub.start()
    scheduler = Scheduler(sessionmaker, upstream, settings, wake=hub.wake)
    try:
        await scheduler.run()
    finally:
        await scheduler.stop()
        await hub.stop()
        await upstream.aclose()
        await engine.dispose()
