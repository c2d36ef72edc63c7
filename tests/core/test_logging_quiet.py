"""Logs a person can read, and that keep secrets: SQL parameters never reach a log or an
error, a database outage is one line (no traceback), library chatter stays out, every
logger's records pass the redaction."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest
import structlog
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

import app.core.logging as app_logging
from app.core.db import create_engine
from app.core.logging import configure_logging

SECRET_HEADER_VALUE = "relay-header-value-7f3a9c"


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    secrets = app_logging._secrets[:]
    levels = {name: logging.getLogger(name).level for name in app_logging._QUIET_LOGGERS}
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    app_logging._secrets[:] = secrets
    for name, lvl in levels.items():
        logging.getLogger(name).setLevel(lvl)
    structlog.reset_defaults()


def _lines(capsys: pytest.CaptureFixture[str]) -> list[dict[str, object]]:
    return [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.strip()]


@pytest.mark.usefixtures("restore_logging")
def test_library_chatter_and_colour_fields_stay_out(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO", True)
    logging.getLogger("uvicorn.error").info(
        "Started server process [%d]", 42, extra={"color_message": "Started \x1b[36m%d\x1b[0m"}
    )
    logging.getLogger("httpx").info('HTTP Request: GET http://x/v2/transcript "HTTP/1.1 200 OK"')
    logging.getLogger("alembic.runtime.plugins").info("setup plugin alembic.autogenerate.schemas")
    logging.getLogger("alembic.runtime.migration").info("Will assume transactional DDL.")
    logging.getLogger("app.something").info("app.event")
    lines = _lines(capsys)
    assert [line["event"] for line in lines] == ["Started server process [42]", "app.event"]
    assert all("color_message" not in line for line in lines)


@pytest.mark.usefixtures("restore_logging")
def test_a_logger_with_its_own_handler_is_redacted_too(capsys: pytest.CaptureFixture[str]) -> None:
    own = logging.getLogger("tests.library_with_handler")
    own.addHandler(logging.StreamHandler())
    own.propagate = False
    configure_logging("INFO", True, ["the-upstream-key-123456"])
    try:
        raise RuntimeError("refused the-upstream-key-123456")
    except RuntimeError:
        own.exception("library.failed")
    out = capsys.readouterr().err
    assert "the-upstream-key-123456" not in out
    assert "library.failed" in out
    assert "Traceback" in out
    assert own.propagate
    assert not own.handlers


@pytest.mark.usefixtures("restore_logging")
async def test_sql_parameters_never_reach_an_error_or_a_log(
    pg_server: str, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging("INFO", True)
    engine = create_engine(pg_server, pool_size=1)
    try:
        with pytest.raises(DBAPIError) as caught:
            async with engine.connect() as conn:
                await conn.execute(
                    text("SELECT CAST(:value AS uuid)"), {"value": SECRET_HEADER_VALUE}
                )
        assert "[parameters" not in str(caught.value)
        logging.getLogger("app.some.route").error("insert.failed", exc_info=caught.value)
    finally:
        await engine.dispose()
    out = capsys.readouterr().err
    assert "insert.failed" in out
    assert SECRET_HEADER_VALUE not in out


@pytest.mark.usefixtures("restore_logging")
async def test_a_database_outage_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO", True)
    engine = create_engine("postgresql://postgres@127.0.0.1:1/none", connect_timeout_s=1)
    try:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
    except Exception:
        logging.getLogger("app.webhooks.reconciler").exception("webhooks.reconciler.tick_failed")
    finally:
        await engine.dispose()
    (line,) = _lines(capsys)
    assert line["event"] == "webhooks.reconciler.tick_failed"
    assert line["database"] == "unavailable"
    assert "exception" not in line
