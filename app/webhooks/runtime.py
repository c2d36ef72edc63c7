"""Lifespan wiring: the receiver's pool and the instance's LISTEN hub."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Protocol

import asyncpg
from fastapi import FastAPI

from app.core.config import WebhookSettings
from app.core.db import plain_url, utcnow
from app.webhooks.hub import EventHub
from app.webhooks.service import RECORD_SQL

logger = logging.getLogger(__name__)

# The in-process reconciler claims once the acks have been quiet this long (a burst's
# deliveries are milliseconds apart), waiting at most ACKS_YIELD_MAX_S.
ACKS_QUIET_S = 0.02
ACKS_YIELD_MAX_S = 0.5
# Receiver connections opened at start-up; more open on demand, up to WEBHOOK_POOL_SIZE, and
# stay open. Few: test suites start many service processes on one Postgres.
WARM_CONNECTIONS = 2


class LocalScheduler(Protocol):
    """This process's scheduler (app/worker.py), as the receiver sees it."""

    def nudge(self, job_id: object = "") -> None: ...


@dataclass
class WebhooksRuntime:
    hub: EventHub
    # Set by the lifespan when this process runs the scheduler; None in a web-only process.
    reconciler: LocalScheduler | None
    # The receiver's own small pool (see app/webhooks/service.py for why).
    pool: asyncpg.Pool
    warm: asyncio.Task[None] | None = field(default=None)
    # Webhook requests waiting on the database now; `acks_idle` is set when there are none.
    # The in-process reconciler waits for the acks to settle before it claims (Reconciler.tick).
    receiving: int = 0
    acks_idle: asyncio.Event = field(default_factory=asyncio.Event)
    last_ack_at: float = 0.0

    def __post_init__(self) -> None:
        self.acks_idle.set()

    def ack_started(self) -> None:
        self.receiving += 1
        self.acks_idle.clear()

    def ack_done(self) -> None:
        self.receiving -= 1
        self.last_ack_at = time.monotonic()
        if self.receiving == 0:
            self.acks_idle.set()

    async def acks_settled(self) -> None:
        """Return once no webhook ack has been pending for ACKS_QUIET_S, or after
        ACKS_YIELD_MAX_S at most (so a steady stream of webhooks starves nothing).

        A burst's acks come first: its follow-up work (claims, fetches, finalising) would
        otherwise share the event loop and the cores with the acks still to answer.
        """
        deadline = time.monotonic() + ACKS_YIELD_MAX_S
        while (left := deadline - time.monotonic()) > 0:
            if not self.acks_idle.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.acks_idle.wait(), left)
                continue
            quiet = time.monotonic() - self.last_ack_at
            if quiet >= ACKS_QUIET_S:
                return
            await asyncio.sleep(min(ACKS_QUIET_S - quiet, left))


async def _keep_session(connection: asyncpg.Connection) -> None:
    """Pool release without asyncpg's default reset query (`UNLISTEN *; RESET ALL; ...`).

    That query is a second round trip per webhook, as costly as the work itself. The
    receiver's connections run only RECORD_SQL, a single-statement implicit transaction: no
    session state to undo (an open transaction is still rolled back by asyncpg itself).
    """


async def _warm(pool: asyncpg.Pool, size: int) -> None:
    """Open the receiver's connections and prepare RECORD_SQL on each, in the background.

    Otherwise the first webhooks of a burst each wait for a connection to be opened and
    the statement planned (tens of ms: the p99 of bench/webhook_burst.py). The statement
    runs for a job id that does not exist, so it writes nothing.
    """
    nil = uuid.UUID(int=0)

    async def one() -> None:
        async with pool.acquire() as connection:
            await connection.fetchrow(RECORD_SQL, nil, "", None, "", None, utcnow(), [], None)
            await asyncio.sleep(0.05)  # hold it, so the others open connections of their own

    try:
        await asyncio.gather(*(one() for _ in range(size)))
    except (OSError, asyncpg.PostgresError) as exc:
        # The database is down: connections are opened on demand once it is back.
        logger.info("webhooks.pool.warm_failed", extra={"error": type(exc).__name__})


async def start_webhooks(
    app: FastAPI, settings: WebhookSettings, database_url: str
) -> WebhooksRuntime:
    """Start the receiver's pool and the hub (one LISTEN connection)."""
    pool = await asyncpg.create_pool(
        plain_url(database_url),
        min_size=0,  # no connection at start-up: the service starts with the database down
        max_size=settings.pool_size,
        # Opened once (warmed below) and kept: a burst after a quiet hour is just as fast.
        max_inactive_connection_lifetime=0,
        reset=_keep_session,
        timeout=settings.database_connect_timeout_s,  # connecting: a 503, not a hang
        server_settings={
            "synchronous_commit": "off",
            # RECORD_SQL's plan does not depend on its parameters (lookups by primary key);
            # otherwise each connection plans it afresh for its first five executions.
            "plan_cache_mode": "force_generic_plan",
            "application_name": "aai-proxy-webhooks",
        },
    )
    hub = EventHub(database_url, app.state.sessionmaker)
    await hub.start()
    app.state.event_hub = hub
    runtime = WebhooksRuntime(hub, None, pool)
    runtime.warm = asyncio.create_task(
        _warm(pool, min(WARM_CONNECTIONS, settings.pool_size)), name="webhooks.pool.warm"
    )
    app.state.webhooks = runtime
    return runtime


async def stop_webhooks(app: FastAPI) -> None:
    runtime: WebhooksRuntime | None = getattr(app.state, "webhooks", None)
    if runtime is None:
        return
    if runtime.warm is not None:
        runtime.warm.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await runtime.warm
    await runtime.hub.stop()
    await runtime.pool.close()
