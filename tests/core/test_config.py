"""Settings: region hosts exactly as the reference lists them, overrides, and one clear
sentence naming the setting for every wrong or contradictory value."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import typer

from app.cli import load_settings
from app.core.config import Settings, get_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No setting leaks in from the machine (environment or a `.env` in the cwd)."""
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)
    monkeypatch.delenv("APP_ENV", raising=False)
    monkeypatch.chdir(tmp_path)
    get_settings.cache_clear()


def settings(**values: Any) -> Settings:
    return Settings(_env_file=None, **values)


# --- hosts ---------------------------------------------------------------------------------


def test_us_defaults_match_the_reference() -> None:
    s = settings()
    assert s.rest_base_url == "https://api.assemblyai.com"
    assert s.llm_base_url == "https://llm-gateway.assemblyai.com"
    # Edge routing is the default streaming host.
    assert s.streaming_region == "edge"
    assert s.streaming_base_url == "https://streaming.assemblyai.com"
    assert s.streaming_ws_url == "wss://streaming.assemblyai.com/v3/ws"
    assert s.agents_base_url == "https://agents.assemblyai.com"
    assert s.agents_ws_url == "wss://agents.assemblyai.com/v1/ws"


def test_eu_region_uses_eu_hosts_everywhere() -> None:
    s = settings(assemblyai_region="eu")
    assert s.rest_base_url == "https://api.eu.assemblyai.com"
    assert s.llm_base_url == "https://llm-gateway.eu.assemblyai.com"
    assert s.streaming_region == "eu"
    assert s.streaming_base_url == "https://streaming.eu.assemblyai.com"
    assert s.streaming_ws_url == "wss://streaming.eu.assemblyai.com/v3/ws"


@pytest.mark.parametrize(
    ("region", "host"),
    [
        ("edge", "https://streaming.assemblyai.com"),
        ("us", "https://streaming.us.assemblyai.com"),
        ("eu", "https://streaming.eu.assemblyai.com"),
    ],
)
def test_streaming_region_chooses_the_streaming_host(region: str, host: str) -> None:
    s = settings(assemblyai_streaming_region=region)
    assert s.streaming_base_url == host
    assert s.rest_base_url == "https://api.assemblyai.com"


def test_base_url_overrides_win_and_lose_trailing_slash() -> None:
    s = settings(
        assemblyai_region="eu",
        assemblyai_api_base_url="http://127.0.0.1:8010/",
        assemblyai_streaming_base_url="http://127.0.0.1:8011",
        assemblyai_agents_base_url="https://agents.internal",
        assemblyai_llm_base_url="http://llm.local:9000/",
    )
    assert s.rest_base_url == "http://127.0.0.1:8010"
    assert s.streaming_base_url == "http://127.0.0.1:8011"
    assert s.streaming_ws_url == "ws://127.0.0.1:8011/v3/ws"
    assert s.agents_ws_url == "wss://agents.internal/v1/ws"
    assert s.llm_base_url == "http://llm.local:9000"


def test_environment_variables_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ASSEMBLYAI_REGION", "eu")
    monkeypatch.setenv("ASSEMBLYAI_API_BASE_URL", "http://127.0.0.1:8010")
    monkeypatch.setenv("UPSTREAM_RETRY_ATTEMPTS", "2")
    s = load_settings()
    assert s.rest_base_url == "http://127.0.0.1:8010"
    assert s.llm_base_url == "https://llm-gateway.eu.assemblyai.com"
    assert s.upstream_retry_attempts == 2
    assert s.uses_emulator


def test_dotenv_in_working_directory_is_read(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("ASSEMBLYAI_REGION=eu\nPORT=9123\n")
    s = load_settings()
    assert s.assemblyai_region == "eu"
    assert s.port == 9123


def test_key_secret_and_json_logs_default() -> None:
    s = settings(assemblyai_api_key="real-key-123456")
    assert "real-key-123456" not in repr(s)
    assert s.upstream_key() == "real-key-123456"
    assert not s.uses_emulator
    assert "real-key-123456" in s.secret_values()
    assert settings().json_logs is False  # development: console
    assert settings(APP_ENV="test").json_logs is True


def test_database_password_is_a_secret_for_redaction() -> None:
    s = settings(database_url="postgresql://app:s3cretpass@db:5432/app")
    assert "s3cretpass" in s.secret_values()
    assert "s3cretpass" not in repr(s)


# --- wrong settings: exit 2 with one sentence naming the setting ---------------------------


def config_error(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(typer.Exit) as info:
        load_settings()
    assert info.value.exit_code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, f"more than one line: {err!r}"
    assert err.startswith("Configuration error: ")
    return err


WRONG: list[tuple[dict[str, str], list[str]]] = [
    ({"APP_ENV": "staging"}, ["APP_ENV"]),
    ({"ASSEMBLYAI_REGION": "mars"}, ["ASSEMBLYAI_REGION"]),
    ({"ASSEMBLYAI_STREAMING_REGION": "asia"}, ["ASSEMBLYAI_STREAMING_REGION"]),
    (
        {"ASSEMBLYAI_REGION": "eu", "ASSEMBLYAI_STREAMING_REGION": "edge"},
        ["ASSEMBLYAI_STREAMING_REGION", "ASSEMBLYAI_REGION=eu"],
    ),
    (
        {"ASSEMBLYAI_REGION": "eu", "ASSEMBLYAI_STREAMING_REGION": "us"},
        ["ASSEMBLYAI_STREAMING_REGION", "ASSEMBLYAI_REGION=eu"],
    ),
    ({"ASSEMBLYAI_API_KEY": "   "}, ["ASSEMBLYAI_API_KEY", "empty"]),
    ({"ASSEMBLYAI_API_KEY": "Bearer abcdef123456"}, ["ASSEMBLYAI_API_KEY", "Bearer"]),
    ({"APP_ENV": "production"}, ["ASSEMBLYAI_API_KEY", "production"]),
    (
        {"APP_ENV": "production", "ASSEMBLYAI_API_KEY": "changeme"},
        ["ASSEMBLYAI_API_KEY", "placeholder"],
    ),
    ({"APP_ENV": "production", "ASSEMBLYAI_API_KEY": "k" * 32}, ["DATABASE_URL", "production"]),
    ({"DATABASE_URL": "mysql://root@localhost/app"}, ["DATABASE_URL", "Postgres"]),
    ({"ASSEMBLYAI_API_BASE_URL": "ftp://files.example.com"}, ["ASSEMBLYAI_API_BASE_URL"]),
    ({"ASSEMBLYAI_STREAMING_BASE_URL": "streaming"}, ["ASSEMBLYAI_STREAMING_BASE_URL"]),
    ({"ASSEMBLYAI_AGENTS_BASE_URL": "http://"}, ["ASSEMBLYAI_AGENTS_BASE_URL"]),
    ({"ASSEMBLYAI_LLM_BASE_URL": "llm-gateway"}, ["ASSEMBLYAI_LLM_BASE_URL"]),
    ({"PUBLIC_BASE_URL": "proxy.example.com"}, ["PUBLIC_BASE_URL"]),
    ({"MAX_UPLOAD_BYTES": "3000000000"}, ["MAX_UPLOAD_BYTES", "2200000000"]),
    ({"MAX_UPLOAD_BYTES": "0"}, ["MAX_UPLOAD_BYTES"]),
    (
        {"UPSTREAM_RETRY_WAIT_INITIAL_S": "2", "UPSTREAM_RETRY_WAIT_MAX_S": "1"},
        ["UPSTREAM_RETRY_WAIT_MAX_S", "UPSTREAM_RETRY_WAIT_INITIAL_S"],
    ),
    ({"UPSTREAM_RETRY_ATTEMPTS": "0"}, ["UPSTREAM_RETRY_ATTEMPTS"]),
    ({"UPSTREAM_TIMEOUT_S": "0"}, ["UPSTREAM_TIMEOUT_S"]),
    ({"UPSTREAM_TRANSPORT": "curl"}, ["UPSTREAM_TRANSPORT"]),
    ({"LOG_LEVEL": "verbose"}, ["LOG_LEVEL"]),
    ({"LOG_JSON": "maybe"}, ["LOG_JSON"]),
    ({"PORT": "70000"}, ["PORT"]),
    ({"PORT": "eighty"}, ["PORT"]),
    ({"EMULATOR_PORT": "-1"}, ["EMULATOR_PORT"]),
    ({"MIGRATE_ON_START": "perhaps"}, ["MIGRATE_ON_START"]),
]


@pytest.mark.parametrize(
    ("env", "mentions"),
    WRONG,
    ids=["-".join(sorted(env)) + f"-{i}" for i, (env, _) in enumerate(WRONG)],
)
def test_wrong_setting_is_one_sentence_naming_it(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    env: dict[str, str],
    mentions: list[str],
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    err = config_error(monkeypatch, capsys)
    for word in mentions:
        assert word in err, f"{word!r} not in {err!r}"
    # A secret given in the environment is never echoed back.
    if env.get("ASSEMBLYAI_API_KEY", "").strip() and "Bearer" not in env["ASSEMBLYAI_API_KEY"]:
        assert env["ASSEMBLYAI_API_KEY"] not in err.replace("ASSEMBLYAI_API_KEY", "")


def test_us_streaming_in_eu_region_is_allowed_the_other_way() -> None:
    # Only EU residency constrains streaming; a US deployment may pin streaming to the EU.
    s = settings(assemblyai_region="us", assemblyai_streaming_region="eu")
    assert s.streaming_base_url == "https://streaming.eu.assemblyai.com"


def test_database_password_not_echoed_in_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DATABASE_URL", "mysql://root:hunter2hunter2@localhost/app")
    err = config_error(monkeypatch, capsys)
    assert "hunter2hunter2" not in err


def test_test_settings_fixture_is_in_test_environment(settings: Settings) -> None:
    # `environment` has the alias APP_ENV; passing the field name would be silently ignored.
    assert settings.environment == "test"
