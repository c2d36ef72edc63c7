"""`aai-proxy serve` hands ACCESS_LOG to uvicorn (the access log costs CPU per request)."""

from __future__ import annotations

import signal
from typing import Any

import pytest
import uvicorn
from typer.testing import CliRunner

from app import cli as cli_module
from app.core.config import Settings


@pytest.mark.parametrize("expected", [False, True])
def test_serve_passes_access_log_to_uvicorn(
    monkeypatch: pytest.MonkeyPatch, database_url: str, expected: bool
) -> None:
    settings = Settings(
        _env_file=None,
        environment="test",
        database_url=database_url,
        assemblyai_api_key="service-key-0123456789",
        migrate_on_start=False,
        access_log=expected,
    )
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(cli_module, "load_settings", lambda: settings)
    monkeypatch.setattr(uvicorn, "run", lambda *a, **kw: calls.append(kw))
    previous = signal.getsignal(signal.SIGTERM)
    try:
        result = CliRunner().invoke(cli_module.cli, ["serve"])
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert result.exit_code == 0, result.output
    [call] = calls
    assert call["access_log"] is expected
