"""Migrations on an empty database: all heads up, everything down, up again; and the
models match what the migrations build."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import text
from sqlalchemy.engine import Connection

import app.models  # noqa: F401 — registers every table on Base.metadata
from app.core.db import Base, create_engine
from app.core.migrate import downgrade, script_heads, upgrade


async def _query(url: str, sql: str) -> list[Any]:
    engine = create_engine(url, pool_size=1)
    try:
        async with engine.connect() as conn:
            return list((await conn.execute(text(sql))).scalars())
    finally:
        await engine.dispose()


def tables(url: str) -> set[str]:
    rows = asyncio.run(_query(url, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"))
    return set(rows) - {"alembic_version"}


def applied(url: str) -> set[str]:
    return set(asyncio.run(_query(url, "SELECT version_num FROM alembic_version")))


def enum_types(url: str) -> set[str]:
    return set(
        asyncio.run(
            _query(
                url,
                "SELECT t.typname FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace "
                "WHERE n.nspname = 'public' AND t.typtype = 'e'",
            )
        )
    )


def test_up_down_up_on_an_empty_database(make_database: Callable[..., str]) -> None:
    url = make_database(migrate=False)
    assert tables(url) == set()
    heads = script_heads()

    upgrade(url, "heads")
    assert applied(url) == heads
    created = tables(url)
    assert {"api_keys", "audit_events", "jobs"} <= created
    assert set(Base.metadata.tables) <= created

    downgrade(url, "base")
    assert tables(url) == set()
    assert applied(url) == set()
    assert enum_types(url) == set()  # downgrades drop their types too

    upgrade(url, "heads")
    assert applied(url) == heads
    assert tables(url) == created


def test_the_chain_is_linear() -> None:
    """One head: parallel branches are linearized before they land."""
    assert len(script_heads()) == 1


def test_each_revision_steps_down_and_up_again(make_database: Callable[..., str]) -> None:
    """Every single downgrade runs (not only the full trip to base), and its upgrade again."""
    url = make_database(migrate=False)
    upgrade(url, "heads")
    everything = tables(url)
    steps = 0
    while applied(url):
        downgrade(url, "-1")
        steps += 1
    assert steps >= 6
    assert tables(url) == set()
    for _ in range(steps):
        upgrade(url, "+1")
    assert tables(url) == everything


def test_models_match_the_migrations(database_url: str) -> None:
    """A model changed without a migration shows up here as a difference."""

    def diff(connection: Connection) -> list[Any]:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return list(compare_metadata(context, Base.metadata))

    async def run() -> list[Any]:
        engine = create_engine(database_url, pool_size=1)
        try:
            async with engine.connect() as conn:
                return await conn.run_sync(diff)
        finally:
            await engine.dispose()

    differences = asyncio.run(run())
    assert differences == [], "models and migrations differ:\n" + "\n".join(map(str, differences))
