"""Test databases on a real Postgres server: `TEST_DATABASE_URL`, or an embedded one."""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import asyncpg
from sqlalchemy.engine import make_url

from app.core.db import plain_url
from app.core.migrate import upgrade

# pgserver logs from an atexit hook at INFO, after pytest has closed the streams its handlers
# write to ("--- Logging error ---" at the end of every run); only its problems matter here.
logging.getLogger("pgserver").setLevel(logging.WARNING)


@contextmanager
def postgres_server() -> Iterator[str]:
    """URL of a server we may create databases on."""
    url = os.environ.get("TEST_DATABASE_URL")
    if url:
        yield url
        return
    from pgserver.postgres_server import get_server

    with tempfile.TemporaryDirectory(prefix="aaip-pg-") as data_dir:
        server = get_server(data_dir, cleanup_mode="stop")
        try:
            yield server.get_uri()
        finally:
            server.cleanup()


async def _admin(server_url: str, sql: str) -> None:
    conn = await asyncpg.connect(plain_url(server_url))
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def create_database(server_url: str, *, migrate: bool = True) -> str:
    name = f"aaip_test_{uuid.uuid4().hex[:12]}"
    asyncio.run(_admin(server_url, f'CREATE DATABASE "{name}"'))
    url = make_url(server_url).set(database=name).render_as_string(hide_password=False)
    if migrate:
        upgrade(url)
    return url


def drop_database(server_url: str, url: str) -> None:
    name = make_url(url).database
    asyncio.run(_admin(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
