"""One LISTEN connection per instance, fanned out to in-process subscribers.

Each SSE stream subscribes to one job here instead of polling the database; the hub holds
a single asyncpg connection that LISTENs on the events channel (and on the reconciler's
wake channel) and puts each notification on the queues of that job's subscribers. When
the connection drops, subscribers are told to re-read what they missed from `job_events`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import asyncpg
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sse_starlette import ServerSentEvent

from app.core.db import plain_url
from app.webhooks.events import EVENTS_CHANNEL, WAKE_CHANNEL, events_after

logger = logging.getLogger(__name__)

# The LISTEN connection's application_name (visible in pg_stat_activity).
LISTENER_NAME = "aai-proxy-listen"
# Queued per subscriber before it is considered slow and told to re-read from the table.
SUBSCRIBER_QUEUE_SIZE = 256


@dataclass(frozen=True)
class JobEventMessage:
    job_id: str
    id: int
    event: str
    data: dict[str, Any]

    @cached_property
    def sse(self) -> bytes:
        """The encoded SSE frame, built once and shared by every subscriber of the job."""
        return ServerSentEvent(
            id=str(self.id),
            event=self.event,
            data=json.dumps(self.data, separators=(",", ":"), default=str),
        ).encode()


class Resync:
    """Marker: events may have been missed; re-read them from the database."""


RESYNC = Resync()


@dataclass(eq=False)
class Subscriber:
    job_id: str
    queue: asyncio.Queue[JobEventMessage | Resync] = field(
        default_factory=lambda: asyncio.Queue(SUBSCRIBER_QUEUE_SIZE)
    )

    def offer(self, item: JobEventMessage | Resync) -> None:
        try:
            self.queue.put_nowait(item)
        except asyncio.QueueFull:
            # A slow reader: drop what is queued and let it catch up from the table.
            while not self.queue.empty():
                self.queue.get_nowait()
            self.queue.put_nowait(RESYNC)


class EventHub:
    def __init__(
        self,
        database_url: str,
        sessionmaker: async_sessionmaker[AsyncSession],
        *,
        reconnect_s: float = 1.0,
    ) -> None:
        self._dsn = plain_url(database_url)
        self._sessionmaker = sessionmaker
        self._reconnect_s = reconnect_s
        self._subscribers: dict[str, set[Subscriber]] = {}
        self._task: asyncio.Task[None] | None = None
        self._conn: asyncpg.Connection | None = None
        self._lost = asyncio.Event()
        self._pending: set[asyncio.Task[None]] = set()
        self.connected = asyncio.Event()
        # Set on every wake notification; the reconciler waits on it between ticks.
        self.wake = asyncio.Event()

    # --- subscribers -----------------------------------------------------------------------
    def subscribe(self, job_id: uuid.UUID | str) -> Subscriber:
        sub = Subscriber(str(job_id))
        self._subscribers.setdefault(sub.job_id, set()).add(sub)
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        subs = self._subscribers.get(sub.job_id)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self._subscribers[sub.job_id]

    @property
    def subscriber_count(self) -> int:
        return sum(len(s) for s in self._subscribers.values())

    # --- connection ------------------------------------------------------------------------
    async def start(self) -> None:
        self._task = asyncio.create_task(self._supervise(), name="webhooks.hub")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for task in list(self._pending):
            task.cancel()
        await self._close()

    async def _close(self) -> None:
        conn, self._conn = self._conn, None
        self.connected.clear()
        if conn is not None and not conn.is_closed():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.close(), 2)

    async def _supervise(self) -> None:
        first = True
        while True:
            try:
                conn = await asyncpg.connect(
                    self._dsn, server_settings={"application_name": LISTENER_NAME}
                )
                self._lost.clear()
                conn.add_termination_listener(lambda _c: self._lost.set())
                await conn.add_listener(EVENTS_CHANNEL, self._on_event)
                await conn.add_listener(WAKE_CHANNEL, self._on_wake)
                self._conn = conn
                self.connected.set()
                if not first:
                    logger.info("webhooks.hub.reconnected")
                    self._resync_all()
                    self._on_wake()
                first = False
                await self._lost.wait()
                logger.warning("webhooks.hub.connection_lost")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.warning(
                    "webhooks.hub.connect_failed", extra={"error_type": type(exc).__name__}
                )
            await self._close()
            self._resync_all()
            await asyncio.sleep(self._reconnect_s)

    def _resync_all(self) -> None:
        for subs in self._subscribers.values():
            for sub in subs:
                sub.offer(RESYNC)

    # --- notifications ---------------------------------------------------------------------
    def _on_wake(
        self, _conn: Any = None, _pid: int = 0, _channel: str = "", payload: str = ""
    ) -> None:
        self.wake.set()

    def _on_event(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        try:
            message = json.loads(payload)
            job_id = str(message["job_id"])
            event_id = int(message["id"])
            event = str(message["event"])
        except (ValueError, KeyError, TypeError):
            logger.warning("webhooks.hub.bad_payload")
            return
        if job_id not in self._subscribers:
            return
        if "data" in message:
            self._dispatch(JobEventMessage(job_id, event_id, event, message["data"]))
            return
        # Too big for NOTIFY: read it once for all of this instance's subscribers.
        task = asyncio.create_task(self._load_and_dispatch(job_id, event_id))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _load_and_dispatch(self, job_id: str, event_id: int) -> None:
        try:
            async with self._sessionmaker() as session:
                rows = await events_after(session, uuid.UUID(job_id), event_id - 1, limit=1)
        except Exception:
            logger.exception("webhooks.hub.load_failed", extra={"job_id": job_id})
            for sub in list(self._subscribers.get(job_id, ())):
                sub.offer(RESYNC)
            return
        for row in rows:
            self._dispatch(JobEventMessage(job_id, row.version, row.event, row.data))

    def _dispatch(self, message: JobEventMessage) -> None:
        for sub in list(self._subscribers.get(message.job_id, ())):
            sub.offer(message)
