"""`db.embedded_postgres.started` only when this call started the server; `attached` when
it was already running; at info, so no CLI call prints a warning about it."""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

import pytest

from app.core.db import _postgres_running, start_embedded_postgres


def test_postgres_running_reads_a_live_pid(tmp_path: Path) -> None:
    assert not _postgres_running(tmp_path)
    (tmp_path / "postmaster.pid").write_text(f"{os.getpid()}\n{tmp_path}\n")
    assert _postgres_running(tmp_path)
    (tmp_path / "postmaster.pid").write_text("999999999\n")
    assert not _postgres_running(tmp_path)
    (tmp_path / "postmaster.pid").write_text("garbage\n")
    assert not _postgres_running(tmp_path)


@pytest.mark.timeout(120)
def test_started_then_attached(caplog: pytest.LogCaptureFixture) -> None:
    from pgserver._commands import pg_ctl
    from pgserver.postgres_server import PostgresServer

    # Not pytest's tmp_path: under root, pgserver's own user must reach the directory.
    holder = tempfile.TemporaryDirectory(prefix="aaip-embedded-")
    data_dir = Path(holder.name) / "pg"
    try:
        with caplog.at_level(logging.INFO, logger="app.core.db"):
            start_embedded_postgres(data_dir)
            start_embedded_postgres(data_dir)
        events = [r.getMessage() for r in caplog.records if r.name == "app.core.db"]
        assert events == ["db.embedded_postgres.started", "db.embedded_postgres.attached"]
        assert all(r.levelno == logging.INFO for r in caplog.records if r.name == "app.core.db")
    finally:
        if _postgres_running(data_dir.resolve()):
            user = PostgresServer._instances[data_dir.resolve()].system_user
            pg_ctl(["-w", "-m", "fast", "stop"], pgdata=data_dir.resolve(), user=user)
        holder.cleanup()
