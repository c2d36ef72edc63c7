"""No secret reaches a log line: through configure_logging's real handler and renderers."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
import structlog

import app.core.logging as app_logging
from app.core.logging import configure_logging, request_id_var

AAI_KEY = "f3c9a1b2d4e5f60718293a4b5c6d7e8f"
PROXY_KEY = "aaip_Q2hhbmdlTWVQbGVhc2VJdElzQVZlcnlMb25nS2V5XzEyMzQ1"
OTHER_PROXY_KEY = "aaip_zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz"
TEMP_TOKEN = "eyJhbGciOiJIUzI1NiJ9.tmp-token-value"
DB_PASSWORD = "pg-pass-7788"


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    secrets = app_logging._secrets[:]
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    app_logging._secrets[:] = secrets
    structlog.reset_defaults()


@pytest.mark.usefixtures("restore_logging")
@pytest.mark.parametrize("json_logs", [True, False])
def test_no_secret_reaches_a_log_line(capsys: pytest.CaptureFixture[str], json_logs: bool) -> None:
    configure_logging("DEBUG", json_logs, [AAI_KEY, DB_PASSWORD])
    log = logging.getLogger("tests.secrets")
    token = request_id_var.set("req-123")
    try:
        log.info("upstream.call", extra={"headers": {"Authorization": AAI_KEY, "X-Other": "x"}})
        log.info("upstream.call", extra={"Authorization": f"Bearer {PROXY_KEY}"})
        log.info("caller.said %s", f"my key is {PROXY_KEY}")
        log.warning("upstream key %s rejected", AAI_KEY)
        log.info("proxy.request", extra={"url": f"/v3/ws?sample_rate=16000&token={TEMP_TOKEN}"})
        log.info("proxy.request", extra={"query": f"https://h/v1/ws?token={TEMP_TOKEN}&x=1"})
        log.info("db.connect", extra={"dsn": f"postgresql://app:{DB_PASSWORD}@db/app"})
        log.info("raw.bytes", extra={"body": f"authorization: {AAI_KEY}".encode()})
        log.info("nested", extra={"calls": [{"key": OTHER_PROXY_KEY}, ("x", AAI_KEY)]})
        # uvicorn's access log formats the path (query included) from record args.
        logging.getLogger("uvicorn.access").info(
            '%s - "%s %s HTTP/%s" %d',
            "127.0.0.1:5000",
            "GET",
            f"/v1/ws?token={TEMP_TOKEN}",
            "1.1",
            101,
        )
        try:
            raise RuntimeError(f"upstream refused key {AAI_KEY} for {PROXY_KEY}")
        except RuntimeError:
            log.exception("request.unhandled_error")
        structlog.get_logger("tests.structlog").info("direct", api_key=PROXY_KEY, cookie="c=1")
    finally:
        request_id_var.reset(token)

    out = capsys.readouterr().err
    lines = [line for line in out.splitlines() if line.strip()]
    assert len(lines) >= 12, out  # every call above produced output
    for secret in (AAI_KEY, PROXY_KEY, OTHER_PROXY_KEY, TEMP_TOKEN, DB_PASSWORD):
        assert secret not in out, f"secret leaked: {secret[:8]}…\n{out}"
    assert "[REDACTED]" in out
    # Redaction keeps the useful part of the line.
    assert "sample_rate=16000" in out
    assert "upstream.call" in out
    assert "req-123" in out
    assert "RuntimeError" in out  # the traceback survives, minus the secrets


@pytest.mark.usefixtures("restore_logging")
def test_json_lines_are_json(capsys: pytest.CaptureFixture[str]) -> None:
    import json

    configure_logging("INFO", True, [AAI_KEY])
    logging.getLogger("tests.json").info("thing.done", extra={"count": 3})
    (line,) = [entry for entry in capsys.readouterr().err.splitlines() if entry.strip()]
    record = json.loads(line)
    assert record["event"] == "thing.done"
    assert record["count"] == 3
    assert record["level"] == "info"
    assert record["logger"] == "tests.json"
