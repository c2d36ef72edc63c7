"""The group-commit audit writer: batching, a bad row isolated, an unreachable database."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import asyncpg
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from app.audit.models import AuditEvent
from app.audit.writer import AuditWriter
from app.core.db import create_sessionmaker


async def count(engine: AsyncEngine, action: str) -> int:
    async with create_sessionmaker(engine)() as session:
        return int(
            await session.scalar(
                select(func.count()).select_from(AuditEvent).where(AuditEvent.action == action)
            )
            or 0
        )


async def test_concurrent_rows_are_batched_and_all_committed(
    engine: AsyncEngine, database_url: str
) -> None:
    writer = AuditWriter(database_url)
    statements = 0
    original = writer._insert

    async def counting(rows: list[dict[str, Any]]) -> None:
        nonlocal statements
        statements += 1
        await original(rows)

    writer._insert = counting  # type: ignore[method-assign]
    action = f"test.{uuid.uuid4().hex[:8]}"
    try:
        await asyncio.gather(
            *(
                writer.write(action=action, outcome="ok", client_ip="198.51.100.1", detail={"i": i})
                for i in range(200)
            )
        )
    finally:
        await writer.aclose()
    assert await count(engine, action) == 200
    assert statements < 200  # rows that arrived together went in one statement


async def test_a_bad_row_fails_alone(engine: AsyncEngine, database_url: str) -> None:
    writer = AuditWriter(database_url)
    action = f"test.{uuid.uuid4().hex[:8]}"
    try:
        results = await asyncio.gather(
            writer.write(action=action, outcome="ok"),
            # No such key: a foreign-key violation for this row only.
            writer.write(action=action, outcome="ok", key_id=uuid.uuid4()),
            writer.write(action=action, outcome="ok"),
            return_exceptions=True,
        )
    finally:
        await writer.aclose()
    assert results[0] is None
    assert results[2] is None
    assert isinstance(results[1], asyncpg.ForeignKeyViolationError)
    assert await count(engine, action) == 2


async def test_unknown_columns_are_refused_and_a_dead_database_fails_fast() -> None:
    writer = AuditWriter("postgresql://postgres@127.0.0.1:1/nowhere")
    try:
        with pytest.raises(TypeError, match="token"):
            await writer.write(action="x", outcome="ok", token="never stored")
        with pytest.raises(ConnectionRefusedError):
            await asyncio.wait_for(writer.write(action="x", outcome="ok"), timeout=10)
    finally:
        await writer.aclose()
