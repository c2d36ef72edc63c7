"""The command line against a real database: keys create/list/revoke, migrate, bad settings."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from app.cli import cli
from app.core.config import Settings, get_settings
from app.core.security import hash_key

KEY_RE = re.compile(r"aaip_[A-Za-z0-9_\-]{43}")


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> CliRunner:
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)
    monkeypatch.delenv("APP_ENV", raising=False)
    monkeypatch.chdir(tmp_path)  # no `.env` from the checkout
    get_settings.cache_clear()
    return CliRunner()


@pytest.fixture
def db_env(make_database: Callable[..., str]) -> dict[str, str]:
    return {"DATABASE_URL": make_database(), "APP_ENV": "test"}


def invoke(runner: CliRunner, args: list[str], env: dict[str, str]) -> Result:
    result = runner.invoke(cli, args, env=env)
    get_settings.cache_clear()
    return result


def test_keys_create_list_revoke(runner: CliRunner, db_env: dict[str, str]) -> None:
    created = invoke(
        runner,
        ["keys", "create", "--name", "worker", "--scope", "transcripts", "--scope", "llm"],
        db_env,
    )
    assert created.exit_code == 0, created.output
    keys = KEY_RE.findall(created.stdout)
    assert len(keys) == 1, created.stdout  # printed exactly once
    raw = keys[0]
    key_id = re.search(r"Created key ([0-9a-f-]{36})", created.stdout)
    assert key_id is not None
    assert "llm, transcripts" in created.stdout

    listed = invoke(runner, ["keys", "list"], db_env)
    assert listed.exit_code == 0, listed.output
    assert raw not in listed.output
    assert hash_key(raw) not in listed.output
    assert raw[:11] in listed.output  # the display prefix identifies it
    (line,) = [ln for ln in listed.stdout.splitlines() if key_id.group(1) in ln]
    assert "active" in line
    assert "worker" in line

    revoked = invoke(runner, ["keys", "revoke", key_id.group(1)], db_env)
    assert revoked.exit_code == 0, revoked.output
    assert "Revoked" in revoked.stdout

    relisted = invoke(runner, ["keys", "list"], db_env)
    (line,) = [ln for ln in relisted.stdout.splitlines() if key_id.group(1) in ln]
    assert "revoked" in line


def test_created_key_authenticates(runner: CliRunner, db_env: dict[str, str]) -> None:
    import asyncio

    from app.core.db import create_engine, create_sessionmaker
    from app.identity.principal import authenticate

    created = invoke(runner, ["keys", "create", "--name", "a", "--scope", "admin"], db_env)
    raw = KEY_RE.findall(created.stdout)[0]

    async def check() -> list[str] | None:
        engine = create_engine(db_env["DATABASE_URL"], pool_size=1)
        try:
            async with create_sessionmaker(engine)() as session:
                key = await authenticate(session, raw)
                return key.scopes if key else None
        finally:
            await engine.dispose()

    assert asyncio.run(check()) == ["admin"]


def test_keys_create_unknown_scope_exits_2(runner: CliRunner, db_env: dict[str, str]) -> None:
    result = invoke(runner, ["keys", "create", "--name", "x", "--scope", "root"], db_env)
    assert result.exit_code == 2
    assert "unknown scope" in result.stderr
    assert not KEY_RE.search(result.output)


def test_keys_revoke_unknown_exits_2(runner: CliRunner, db_env: dict[str, str]) -> None:
    for key_id in ("not-a-uuid", "00000000-0000-0000-0000-000000000000"):
        result = invoke(runner, ["keys", "revoke", key_id], db_env)
        assert result.exit_code == 2
        assert f"No key with id {key_id}." in result.stderr


def test_migrate_up_and_down(runner: CliRunner, make_database: Callable[..., str]) -> None:
    env = {"DATABASE_URL": make_database(migrate=False), "APP_ENV": "test"}
    up = invoke(runner, ["migrate"], env)
    assert up.exit_code == 0, up.output
    assert "Database at heads." in up.stdout
    listed = invoke(runner, ["keys", "list"], env)
    assert listed.exit_code == 0, listed.output
    down = invoke(runner, ["migrate", "--down"], env)
    assert down.exit_code == 0, down.output
    assert "Database at base." in down.stdout


@pytest.mark.parametrize(
    ("env", "setting"),
    [
        ({"ASSEMBLYAI_REGION": "moon"}, "ASSEMBLYAI_REGION"),
        ({"DATABASE_URL": "sqlite:///x.db"}, "DATABASE_URL"),
        ({"APP_ENV": "production"}, "ASSEMBLYAI_API_KEY"),
        ({"UPSTREAM_RETRY_ATTEMPTS": "many"}, "UPSTREAM_RETRY_ATTEMPTS"),
    ],
)
@pytest.mark.parametrize("command", [["keys", "list"], ["migrate"], ["serve"]])
def test_wrong_setting_exits_2_with_one_sentence(
    runner: CliRunner, env: dict[str, str], setting: str, command: list[str]
) -> None:
    result = invoke(runner, command, env)
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Configuration error: ")
    assert setting in lines[0]
    assert "Traceback" not in result.output
