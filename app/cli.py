"""The command line: `aai-proxy serve | migrate | keys ... | emulator`."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from types import FrameType
from typing import Annotated, TypeVar

import typer
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.config import Settings, get_settings

cli = typer.Typer(help="aai-proxy: a governed backend between your apps and AssemblyAI.")
keys_cli = typer.Typer(help="Manage proxy API keys.")
cli.add_typer(keys_cli, name="keys")


def _fail(message: str) -> typer.Exit:
    typer.secho(message, fg=typer.colors.RED, err=True)
    return typer.Exit(code=2)


def load_settings() -> Settings:
    """Settings, or one clear sentence per wrong setting and exit code 2."""
    get_settings.cache_clear()
    try:
        return get_settings()
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            names = [str(p).upper() for p in err.get("loc", ()) if p]
            where = f"{'.'.join(names)}: " if names else ""
            lines.append(f"Configuration error: {where}{err['msg'].removeprefix('Value error, ')}")
        raise _fail("\n".join(lines)) from None


def ensure_database(settings: Settings) -> Settings:
    """With no DATABASE_URL, start the embedded Postgres and point the settings at it."""
    if settings.database_url is not None:
        return settings
    from app.core.db import start_embedded_postgres

    url = start_embedded_postgres(settings.embedded_postgres_dir)
    typer.secho(
        f"No DATABASE_URL: using an embedded Postgres in {settings.embedded_postgres_dir}",
        fg=typer.colors.YELLOW,
        err=True,
    )
    os.environ["DATABASE_URL"] = url
    return load_settings()


def _wait_for_port(host: str, port: int, timeout: float, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise _fail(f"The emulator exited at start-up (code {proc.returncode}).")
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.1)
    raise _fail(f"The emulator did not start listening on {host}:{port} in {timeout:.0f} s.")


def _require_emulator() -> None:
    """The emulator is an optional extra (a production install carries none of numpy or
    the recogniser): say how to install it rather than fail inside its imports."""
    if importlib.util.find_spec("numpy") is None:
        raise _fail(
            "The emulator is not installed: install the `emulator` extra "
            "(pip install 'aai-proxy[emulator]'), or set ASSEMBLYAI_API_KEY."
        )


def start_emulator(settings: Settings) -> subprocess.Popen[bytes]:
    _require_emulator()
    port = settings.emulator_port
    env = {**os.environ, "EMULATOR_API_KEY": settings.emulator_api_key.get_secret_value()}
    proc = subprocess.Popen(
        [sys.executable, "-m", "emulator", "--host", "127.0.0.1", "--port", str(port)], env=env
    )
    _wait_for_port("127.0.0.1", port, 20, proc)
    base = f"http://127.0.0.1:{port}"
    for var in (
        "ASSEMBLYAI_API_BASE_URL",
        "ASSEMBLYAI_STREAMING_BASE_URL",
        "ASSEMBLYAI_AGENTS_BASE_URL",
        "ASSEMBLYAI_LLM_BASE_URL",
    ):
        os.environ[var] = base
    banner = "=" * 78
    typer.secho(
        f"{banner}\n  NO ASSEMBLYAI_API_KEY: running against the local EMULATOR at {base}\n"
        f"  Nothing reaches AssemblyAI; transcripts are produced by the emulator.\n"
        f"  Set ASSEMBLYAI_API_KEY to use the real API.\n{banner}",
        fg=typer.colors.MAGENTA,
        bold=True,
        err=True,
    )
    return proc


async def _ensure_dev_key(settings: Settings) -> str | None:
    from app.core.db import create_engine, create_sessionmaker
    from app.identity.scopes import ALL_SCOPES
    from app.keys import service

    assert settings.database_url is not None
    engine = create_engine(settings.database_url.get_secret_value(), pool_size=1)
    try:
        async with create_sessionmaker(engine)() as session, session.begin():
            if await service.any_key_exists(session):
                return None
            _, raw = await service.create_key(session, "development admin", ALL_SCOPES)
            return raw
    finally:
        await engine.dispose()


def _exit_on_signal(signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


@cli.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Bind address (default: HOST)")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default: PORT)")] = None,
    workers: Annotated[int, typer.Option(help="Worker processes")] = 1,
    reload: Annotated[bool, typer.Option(help="Reload on code changes")] = False,
) -> None:
    """Run the service (embedded Postgres and the emulator when unconfigured)."""
    import uvicorn

    from app.core.logging import configure_logging
    from app.core.migrate import upgrade_in_child

    settings = load_settings()
    configure_logging(settings.log_level, settings.json_logs, settings.secrets())
    settings = ensure_database(settings)
    emulator = start_emulator(settings) if settings.uses_emulator else None
    # uvicorn re-raises SIGTERM once it has shut down; with the default handler that would
    # kill this process before `finally` stops the emulator, orphaning it.
    signal.signal(signal.SIGTERM, _exit_on_signal)
    try:
        settings = load_settings()
        assert settings.database_url is not None
        if settings.migrate_on_start:
            # In a child process: this one becomes the server, and Alembic stays out of it.
            upgrade_in_child(
                settings.database_url.get_secret_value(),
                (settings.log_level, settings.json_logs, settings.secrets()),
            )
        if settings.environment == "development":
            raw = asyncio.run(_ensure_dev_key(settings))
            if raw is not None:
                typer.secho(
                    "\nCreated a development admin key (shown once, store it now):\n"
                    f"\n    {raw}\n\n"
                    "Use it as `Authorization: <key>` or sign in at the web page.\n",
                    fg=typer.colors.GREEN,
                    bold=True,
                    err=True,
                )
        uvicorn.run(
            "app.main:create_app",
            factory=True,
            host=host or settings.host,
            port=port or settings.port,
            workers=workers,
            reload=reload,
            log_config=None,
            access_log=settings.access_log,
            proxy_headers=True,
            # uvicorn's httptools protocol plus the body tap for uploads (see there).
            http="app.core.http_server:TapProtocol",
        )
    finally:
        if emulator is not None:
            emulator.terminate()
            emulator.wait(10)


@cli.command()
def migrate(
    revision: Annotated[str, typer.Argument(help="Target revision")] = "heads",
    down: Annotated[bool, typer.Option(help="Downgrade to the revision instead")] = False,
) -> None:
    """Apply (or roll back) database migrations."""
    from app.core.migrate import downgrade, upgrade

    settings = ensure_database(load_settings())
    assert settings.database_url is not None
    url = settings.database_url.get_secret_value()
    if down:
        downgrade(url, "base" if revision == "heads" else revision)
    else:
        upgrade(url, revision)
    typer.echo(f"Database at {'base' if down and revision == 'heads' else revision}.")


@cli.command()
def emulator(
    port: Annotated[int, typer.Option(help="Port")] = 8010,
    host: Annotated[str, typer.Option(help="Bind address")] = "127.0.0.1",
) -> None:
    """Run the AssemblyAI emulator alone."""
    _require_emulator()
    from emulator.main import run

    run(host=host, port=port)


@cli.command()
def worker() -> None:
    """Run only the reconciler (fetch results, poll, relay, summaries): no HTTP server."""
    from app.core.logging import configure_logging
    from app.worker import run_worker

    settings = load_settings()
    configure_logging(settings.log_level, settings.json_logs, settings.secrets())
    settings = ensure_database(settings)
    typer.secho("Reconciler running (Ctrl-C to stop).", err=True)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run_worker(settings))


T = TypeVar("T")


def _with_session(work: Callable[[AsyncSession], Awaitable[T]]) -> T:
    """Run one unit of work in a transaction against the configured database."""
    from app.core.db import create_engine, create_sessionmaker

    settings = ensure_database(load_settings())
    assert settings.database_url is not None
    url = settings.database_url.get_secret_value()

    async def run() -> T:
        engine = create_engine(url, pool_size=1)
        try:
            async with create_sessionmaker(engine)() as session, session.begin():
                return await work(session)
        finally:
            await engine.dispose()

    return asyncio.run(run())


@keys_cli.command("create")
def keys_create(
    name: Annotated[str, typer.Option(help="A name to recognise the key by")],
    scope: Annotated[list[str], typer.Option(help="Scope (repeatable)")],
) -> None:
    """Create a key and print it once."""
    from app.keys import service

    try:
        key, raw = _with_session(lambda s: service.create_key(s, name, scope))
    except ValueError as exc:
        raise _fail(str(exc)) from None
    typer.echo(f"Created key {key.id} ({key.name}) with scopes {', '.join(key.scopes)}.")
    typer.echo("The key is shown once; only its hash is stored:")
    typer.echo(raw)


@keys_cli.command("list")
def keys_list() -> None:
    """List keys (prefix only, never the key)."""
    from app.keys import service

    for key in _with_session(service.list_keys):
        state = "revoked" if key.revoked_at else "active"
        used = key.last_used_at.isoformat() if key.last_used_at else "never"
        typer.echo(
            f"{key.id}  {key.prefix}…  {state:7}  {','.join(key.scopes):40}  "
            f"last used {used}  {key.name}"
        )


@keys_cli.command("revoke")
def keys_revoke(key_id: Annotated[str, typer.Argument(help="The key's id")]) -> None:
    """Revoke a key."""
    from app.core.errors import NotFound
    from app.keys import service

    try:
        parsed = uuid.UUID(key_id)
        key = _with_session(lambda s: service.revoke_key(s, parsed))
    except (ValueError, NotFound):
        raise _fail(f"No key with id {key_id}.") from None
    typer.echo(f"Revoked {key.id} ({key.name}).")


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
