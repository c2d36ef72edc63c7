"""Which errors mean "the database is unavailable" (503 with Retry-After) and which stay
a query's own error, with real errors from a real Postgres and a closed port."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from app.core.db import create_engine, database_unavailable, plain_url


async def test_a_refused_connection_is_unavailable() -> None:
    engine = create_engine("postgresql://postgres@127.0.0.1:1/none", connect_timeout_s=1)
    try:
        # (SQLAlchemy passes a refused connect on as the OSError it is)
        with pytest.raises((DBAPIError, OSError)) as caught:
            async with engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
    finally:
        await engine.dispose()
    assert database_unavailable(caught.value)
    with pytest.raises(ConnectionRefusedError) as raw:
        await asyncpg.connect("postgresql://postgres@127.0.0.1:1/none", timeout=1)
    assert database_unavailable(raw.value)


async def test_a_query_error_is_not_unavailable(pg_server: str) -> None:
    engine = create_engine(pg_server, pool_size=1)
    try:
        with pytest.raises(DBAPIError) as caught:
            async with engine.connect() as conn:
                await conn.execute(text("SELECT 1 / 0"))
    finally:
        await engine.dispose()
    assert not database_unavailable(caught.value)


async def test_a_connection_closed_by_the_server_is_unavailable(pg_server: str) -> None:
    conn = await asyncpg.connect(plain_url(pg_server))
    admin = await asyncpg.connect(plain_url(pg_server))
    try:
        await admin.execute("SELECT pg_terminate_backend($1)", conn.get_server_pid())
        # Let the server's goodbye arrive first: a query racing it meets an asyncpg
        # internal error instead of the closed connection.
        for _ in range(100):
            if conn.is_closed():
                break
            await asyncio.sleep(0.02)
        with pytest.raises((asyncpg.PostgresError, asyncpg.InterfaceError, OSError)) as caught:
            await conn.fetchval("SELECT 1")
    finally:
        await admin.close()
        conn.terminate()
    assert database_unavailable(caught.value)


def test_other_errors_are_not_unavailable() -> None:
    assert not database_unavailable(ValueError("x"))
    assert not database_unavailable(ConnectionRefusedError("an upstream, not the database"))
    wrapped = RuntimeError("wrapped")
    wrapped.__cause__ = KeyError("k")
    assert not database_unavailable(wrapped)
