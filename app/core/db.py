"""Database: one async engine per process, a transaction per request, Postgres only."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

from fastapi import Request
from sqlalchemy import DateTime, MetaData
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase

logger = logging.getLogger(__name__)

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: DateTime(timezone=True)}


def utcnow() -> datetime:
    return datetime.now(UTC)


def async_url(url: str) -> str:
    """Normalise any postgres URL to the asyncpg driver."""
    parsed = make_url(url)
    if parsed.drivername in {"postgres", "postgresql", "postgresql+psycopg2"}:
        parsed = parsed.set(drivername="postgresql+asyncpg")
    return parsed.render_as_string(hide_password=False)


def plain_url(url: str) -> str:
    """The libpq form (for asyncpg.connect and LISTEN connections)."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


# Seconds a caller is told to wait (`Retry-After`) when the database is unreachable.
RETRY_AFTER_S = 5


def create_engine(
    url: str,
    *,
    connect_timeout_s: float = 5.0,
    pool_timeout_s: float = 5.0,
    **kwargs: Any,
) -> AsyncEngine:
    """The async engine. SQL parameters never reach a log or an error message
    (`hide_parameters`): they hold request values, some of them secrets. Connecting and
    waiting for a pooled connection are bounded, so a database that is down or hung fails a
    request fast (503) instead of holding it; `pool_pre_ping` replaces connections that
    died meanwhile (a database restart) before they are used."""
    options: dict[str, Any] = {
        "pool_pre_ping": True,
        "pool_size": 10,
        "max_overflow": 20,
        "pool_timeout": pool_timeout_s,
        "hide_parameters": True,
        "connect_args": {"timeout": connect_timeout_s},
    }
    options.update(kwargs)
    return create_async_engine(async_url(url), **options)


def _from_database(tb: TracebackType | None) -> bool:
    while tb is not None:
        module = tb.tb_frame.f_globals.get("__name__", "")
        if module.startswith(("asyncpg", "sqlalchemy")):
            return True
        tb = tb.tb_next
    return False


def database_unavailable(exc: BaseException) -> bool:
    """True when `exc` (or what caused it) means the database could not be reached or
    went away: a refused or dropped connection, a connect or pool timeout, a server
    shutting down or starting up. Not a query's own error (a constraint, bad data)."""
    import asyncpg

    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, sa_exc.DBAPIError) and current.connection_invalidated:
            return True
        if isinstance(current, sa_exc.TimeoutError):  # no pooled connection came free
            return True
        if isinstance(
            current,
            asyncpg.PostgresConnectionError
            | asyncpg.ConnectionDoesNotExistError
            | asyncpg.CannotConnectNowError
            | asyncpg.AdminShutdownError
            | asyncpg.CrashShutdownError
            | asyncpg.TooManyConnectionsError,
        ):
            return True
        if isinstance(current, asyncpg.InterfaceError) and "closed" in str(current):
            return True  # "connection is closed": it went away under us
        if isinstance(current, OSError | TimeoutError) and _from_database(current.__traceback__):
            return True
        current = current.__cause__ or current.__context__
    return False


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False)


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    """A transaction per request: commit on success, roll back on any error.

    Declared with `scope="function"` at the use site so the commit happens before the
    response is sent: a failed commit can never follow a 200.
    """
    sessionmaker: async_sessionmaker[AsyncSession] = request.app.state.sessionmaker
    async with sessionmaker() as session:
        try:
            yield session
        except BaseException:
            await session.rollback()
            raise
        else:
            await session.commit()


def start_embedded_postgres(data_dir: Path) -> str:
    """Start (or reuse) an embedded Postgres from the pgserver wheel; returns its URL.

    The server keeps running after this process exits so that restarts are quick and the
    data survives; `pgserver` reuses a running server on the same directory.
    """
    from pgserver.postgres_server import get_server

    # pgserver logs every pg_ctl call and its output at INFO; only its problems matter here.
    logging.getLogger("pgserver").setLevel(logging.WARNING)
    data_dir = data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    running = _postgres_running(data_dir)
    server = get_server(str(data_dir), cleanup_mode=None)
    uri: str = server.get_uri()
    logger.info(
        "db.embedded_postgres.attached" if running else "db.embedded_postgres.started",
        extra={"data_dir": str(data_dir), "hint": "set DATABASE_URL to use your own server"},
    )
    return uri


def _postgres_running(data_dir: Path) -> bool:
    """Whether a server already runs on `data_dir` (its postmaster.pid names a live one)."""
    import os

    try:
        pid = int((data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
        os.kill(pid, 0)
    except PermissionError:
        return True  # alive, run by another user (pgserver's system user under root)
    except (OSError, ValueError):
        return False
    return True
