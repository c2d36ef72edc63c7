"""Audit rows written by group commit: each caller awaits its own row's commit, but rows
that arrive while a batch is being written go together in the next INSERT.

The token routes write their audit row this way, before the token leaves the service: a
grant is never answered unless its row is committed. At low load a batch is one row (no
added delay); under load one round trip carries many rows, which is what keeps the mint
path fast (`bench/token_mint.py`).

The writer owns one asyncpg connection and one prepared `INSERT ... SELECT FROM unnest(...)`
statement: a batch is a single statement (atomic on its own, so no BEGIN/COMMIT round
trips), and it never waits for a connection from the request pool, whose holders might be
waiting for the writer in turn. It is the one place that bypasses SQLAlchemy, for speed.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import asyncpg

from app.core.db import plain_url, utcnow

logger = logging.getLogger(__name__)

MAX_BATCH = 500
# Every row has these keys, in this order.
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
_INSERT = (
    "INSERT INTO audit_events (at, key_id, end_user, action, outcome, subject, client_ip, "
    "user_agent, detail) SELECT * FROM unnest($1::timestamptz[], $2::uuid[], $3::varchar[], "
    "$4::varchar[], $5::varchar[], $6::varchar[], $7::inet[], $8::varchar[], $9::jsonb[])"
)
_RECONNECT = (asyncpg.InterfaceError, asyncpg.PostgresConnectionError, ConnectionError, OSError)
# Errors of a row's own data: its neighbours in the batch are retried without it.
_ROW_ERRORS = (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError)
STATEMENT_TIMEOUT_S = 10.0


class AuditWriter:
    def __init__(self, database_url: str, *, connect_timeout_s: float = 5.0) -> None:
        self._url = plain_url(database_url)
        # An unreachable database fails the waiting requests fast (503) instead of holding
        # them for asyncpg's default minute.
        self._connect_timeout_s = connect_timeout_s
        self._conn: asyncpg.Connection | None = None
        self._stmt: Any = None
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
        row["detail"] = json.dumps(row["detail"] or {}, default=str)
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
            except _ROW_ERRORS:
                # One bad row must not sink its neighbours: write them one by one.
                for row, future in batch:
                    await self._insert_one(row, future)
            except Exception as exc:
                # The database is unreachable or too slow: every waiting request fails now
                # (and withholds its token) rather than hanging.
                logger.error(
                    "audit.write_failed",
                    extra={"rows": len(batch), "error_type": type(exc).__name__},
                )
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
            else:
                for _, future in batch:
                    if not future.done():
                        future.set_result(None)

    async def _statement(self) -> Any:
        if self._conn is None or self._conn.is_closed():
            self._conn = await asyncpg.connect(self._url, timeout=self._connect_timeout_s)
            self._stmt = await self._conn.prepare(_INSERT)
        return self._stmt

    async def _insert(self, rows: list[dict[str, Any]]) -> None:
        columns = [[row[c] for row in rows] for c in COLUMNS]
        try:
            await (await self._statement()).fetch(*columns, timeout=STATEMENT_TIMEOUT_S)
        except _RECONNECT:
            # A dropped connection (database restart): one fresh connection, one retry.
            await self._drop()
            await (await self._statement()).fetch(*columns, timeout=STATEMENT_TIMEOUT_S)
        except TimeoutError:
            await self._drop()  # the statement may still be running on that connection
            raise

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

    async def _drop(self) -> None:
        conn, self._conn, self._stmt = self._conn, None, None
        if conn is not None and not conn.is_closed():
            conn.terminate()

    async def aclose(self) -> None:
        self._closed = True
        self._wakeup.set()
        if self._task is not None:
            await self._task
        if self._conn is not None and not self._conn.is_closed():
            await self._conn.close()
        self._conn = None
