"""Audit rows written by group commit: each caller awaits its own row's commit, but rows
that arrive while a batch is being written go together in the next INSERT.

The token routes write their audit row this way, before the token leaves the service: a
grant is never answered unless its row is committed. At low load a batch is one row (no
added delay); under load one round trip carries many rows, which is what keeps the mint
path fast. The row is committed in its own transaction, apart from the request's.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from app.core.db import utcnow
from app.keys.models import AuditEvent

logger = logging.getLogger(__name__)

MAX_BATCH = 500
# executemany needs the same keys in every row.
COLUMNS = (
    "at",
    "key_id",
    "end_user",
    "action",
    "outcome",
    "subject",
    "client_ip",
    "user_agent",
    "detail",
)


class AuditWriter:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._queue: list[tuple[dict[str, Any], asyncio.Future[None]]] = []
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    async def write(self, **row: Any) -> None:
        """Insert one audit_events row; returns once it is committed (raises if it failed)."""
        if self._closed:
            raise RuntimeError("audit writer is closed")
        unknown = set(row) - set(COLUMNS)
        if unknown:
            raise TypeError(f"not audit_events columns: {', '.join(sorted(unknown))}")
        row = {column: row.get(column) for column in COLUMNS}
        row["at"] = row["at"] or utcnow()
        row["detail"] = row["detail"] or {}
        if row["user_agent"]:
            row["user_agent"] = row["user_agent"][:500]
        if row["end_user"]:
            row["end_user"] = row["end_user"][:200]
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append((row, future))
        self._wakeup.set()
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="audit-writer")
        await future

    async def _run(self) -> None:
        while self._queue or not self._closed:
            if not self._queue:
                self._wakeup.clear()
                if self._closed:
                    return
                try:
                    await asyncio.wait_for(self._wakeup.wait(), timeout=30)
                except TimeoutError:
                    return  # idle: the next write starts a new task
                continue
            batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
            try:
                await self._insert([row for row, _ in batch])
            except Exception:
                # One bad row must not sink its neighbours: write them one by one.
                for row, future in batch:
                    await self._insert_one(row, future)
            else:
                for _, future in batch:
                    if not future.done():
                        future.set_result(None)

    async def _insert(self, rows: list[dict[str, Any]]) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(insert(AuditEvent), rows)

    async def _insert_one(self, row: dict[str, Any], future: asyncio.Future[None]) -> None:
        try:
            await self._insert([row])
        except Exception as exc:
            logger.error(
                "audit.write_failed",
                extra={"action": row.get("action"), "error_type": type(exc).__name__},
            )
            if not future.done():
                future.set_exception(exc)
        else:
            if not future.done():
                future.set_result(None)

    async def aclose(self) -> None:
        self._closed = True
        self._wakeup.set()
        if self._task is not None:
            await self._task
