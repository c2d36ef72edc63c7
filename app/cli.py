"""The command line: `aai-proxy serve | migrate | worker | keys ... | db ... | emulator`."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hmac
import importlib.util
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
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


def _say(message: str) -> None:
    typer.secho(message, fg=typer.colors.YELLOW, err=True)


def browse_url(host: str, port: int) -> str:
    """Where a person on this machine opens the service bound to `host`:`port`."""
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


@contextlib.contextmanager
def database(settings: Settings, *, keep: bool = False) -> Iterator[Settings]:
    """The settings with a database: with no DATABASE_URL, the embedded Postgres is started
    (or attached to) and pointed at; one this command started is stopped when it ends,
    unless `keep` or EMBEDDED_POSTGRES_KEEP."""
    if settings.database_url is not None:
        yield settings
        return
    from app.core import embedded_postgres

    try:
        embedded = embedded_postgres.start(settings.embedded_postgres_dir, _say)
    except embedded_postgres.EmbeddedPostgresError as exc:
        raise _fail(str(exc)) from None
    verb = "started" if embedded.started else "attached to the running"
    _say(f"No DATABASE_URL: {verb} embedded Postgres in {embedded.data_dir}")
    os.environ["DATABASE_URL"] = embedded.url
    try:
        yield load_settings()
    finally:
        if embedded.started and not (keep or settings.embedded_postgres_keep):
            if embedded_postgres.stop(embedded.data_dir):
                _say(
                    "Stopped the embedded Postgres this command started "
                    "(`serve --keep-db` or EMBEDDED_POSTGRES_KEEP=true keeps it running)."
                )


def port_in_use(host: str, port: int) -> bool:
    """True when another socket listens on host:port (bound as uvicorn binds)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            return exc.errno == errno.EADDRINUSE
    return False


def _emulator_port_taken(port: int, what: str) -> typer.Exit:
    return _fail(
        f"EMULATOR_PORT {port} {what}: the emulator `serve` starts when ASSEMBLYAI_API_KEY is "
        "not set needs that port. Stop the program using it, or set EMULATOR_PORT to a free "
        "port."
    )


def _wait_for_emulator(
    port: int, nonce: str, timeout: float, proc: subprocess.Popen[bytes]
) -> None:
    """Wait until the emulator answers its health path with our nonce: only then is the
    program on the port the one just started, not a stranger that held it already."""
    import httpx

    url = f"http://127.0.0.1:{port}/_emulator/health"
    deadline = time.monotonic() + timeout
    with httpx.Client(trust_env=False, timeout=2) as client:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise _emulator_port_taken(
                    port, f"could not be used (the emulator exited with code {proc.returncode})"
                )
            try:
                answer = client.get(url)
            except httpx.TransportError:
                time.sleep(0.1)
                continue
            try:
                echoed = str(answer.json().get("nonce", "")) if answer.status_code == 200 else ""
            except (ValueError, AttributeError):
                echoed = ""
            if echoed and hmac.compare_digest(echoed, nonce):
                return
            raise _emulator_port_taken(port, "is answered by another program")
    raise _fail(f"The emulator did not answer on EMULATOR_PORT {port} in {timeout:.0f} s.")


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
    if port_in_use("127.0.0.1", port):
        raise _emulator_port_taken(port, "is in use by another program")
    nonce = secrets.token_urlsafe(16)
    env = {
        **os.environ,
        "EMULATOR_API_KEY": settings.emulator_api_key.get_secret_value(),
        "EMULATOR_INSTANCE_NONCE": nonce,
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "emulator", "--host", "127.0.0.1", "--port", str(port)], env=env
    )
    try:
        _wait_for_emulator(port, nonce, 30, proc)
    except BaseException:
        proc.terminate()
        proc.wait(10)
        raise
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


async def _ensure_dev_key(settings: Settings, *, create: bool) -> tuple[bool, str | None]:
    """(any key existed, the raw development admin key made now when `create`)."""
    from app.core.db import create_engine, create_sessionmaker
    from app.identity.scopes import ALL_SCOPES
    from app.keys import service

    assert settings.database_url is not None
    engine = create_engine(settings.database_url.get_secret_value(), pool_size=1)
    try:
        async with create_sessionmaker(engine)() as session, session.begin():
            if await service.any_key_exists(session):
                return True, None
            if not create:
                return False, None
            _, raw = await service.create_key(session, "development admin", ALL_SCOPES)
            return False, raw
    finally:
        await engine.dispose()


def _exit_on_signal(signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


@cli.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Bind address (default: HOST)")] = None,
    port: Annotated[
        int | None, typer.Option(help="Port (default: PORT); must be free, else exit 2")
    ] = None,
    workers: Annotated[int, typer.Option(help="Worker processes")] = 1,
    reload: Annotated[bool, typer.Option(help="Reload on code changes")] = False,
    keep_db: Annotated[
        bool,
        typer.Option(
            "--keep-db",
            help="Leave the embedded Postgres running on exit (EMBEDDED_POSTGRES_KEEP)",
        ),
    ] = False,
) -> None:
    """Run the service (embedded Postgres and the emulator when unconfigured).

    PORT (--port) must be free; so must EMULATOR_PORT when no ASSEMBLYAI_API_KEY is set.

    A port in use by another program: a message naming it, exit code 2.

    The embedded Postgres it starts is stopped on exit unless --keep-db (`aai-proxy db`).
    """
    settings = load_settings()
    bind_host, bind_port = host or settings.host, port or settings.port
    # Before anything starts: a port held by another program is said plainly, at once.
    if port_in_use(bind_host, bind_port):
        raise _fail(
            f"PORT {bind_port} on {bind_host} is in use by another program. Stop it, or set "
            "PORT (or `serve --port`) to a free port."
        )
    if settings.uses_emulator and port_in_use("127.0.0.1", settings.emulator_port):
        raise _emulator_port_taken(settings.emulator_port, "is in use by another program")

    import uvicorn

    from app.core.logging import configure_logging
    from app.core.migrate import upgrade_in_child

    configure_logging(settings.log_level, settings.json_logs, settings.secret_values())
    # SIGTERM as SystemExit from here on, so the clean-up below (emulator, Postgres) runs
    # whenever it comes; uvicorn also re-raises it once it has shut down.
    signal.signal(signal.SIGTERM, _exit_on_signal)
    with contextlib.ExitStack() as stack:
        settings = stack.enter_context(database(settings, keep=keep_db))
        if settings.metrics_enabled and workers > 1:
            stack.enter_context(_multiprocess_metrics())
        emulator = start_emulator(settings) if settings.uses_emulator else None
        try:
            settings = load_settings()
            assert settings.database_url is not None
            if settings.migrate_on_start:
                # In a child process: this one becomes the server, Alembic stays out of it.
                upgrade_in_child(
                    settings.database_url.get_secret_value(),
                    (settings.log_level, settings.json_logs, settings.secret_values()),
                )
            # The all-scopes key only for a local playground: against the real API (a key
            # configured) an operator creates keys on purpose (`aai-proxy keys create`).
            if settings.environment == "development":
                playground = settings.uses_emulator
                existed, raw = asyncio.run(_ensure_dev_key(settings, create=playground))
                if not existed and not playground:
                    typer.secho(
                        "No proxy key exists yet. With ASSEMBLYAI_API_KEY set no development "
                        "admin key is made; create one: "
                        "aai-proxy keys create --name admin --scope admin",
                        fg=typer.colors.YELLOW,
                        err=True,
                    )
                if raw is not None:
                    typer.secho(
                        "\nCreated a development admin key (shown once, store it now):\n"
                        f"\n    {raw}\n\n"
                        "Use it as `Authorization: <key>` or sign in at the web page.\n",
                        fg=typer.colors.GREEN,
                        bold=True,
                        err=True,
                    )
                url = browse_url(bind_host, bind_port)
                typer.secho(
                    f"Web page: {url}/    API docs: {url}/docs",
                    fg=typer.colors.GREEN,
                    err=True,
                )
            uvicorn.run(
                "app.main:create_app",
                factory=True,
                host=bind_host,
                port=bind_port,
                workers=workers,
                reload=reload,
                log_config=None,
                access_log=settings.access_log,
                # X-Forwarded-For is parsed strictly by the app itself (FORWARDED_ALLOW_IPS; see
                # app/core/boundary.py): uvicorn's parser would pass `unknown` on as the client.
                proxy_headers=False,
                # uvicorn's httptools protocol plus the body tap for uploads (see there).
                http="app.core.http_server:TapProtocol",
            )
        finally:
            if emulator is not None:
                emulator.terminate()
                emulator.wait(10)


@contextlib.contextmanager
def _multiprocess_metrics() -> Iterator[None]:
    """Several workers: prometheus-client's multiprocess mode, so /metrics adds them up.
    PROMETHEUS_MULTIPROC_DIR when set (emptied first, as prometheus-client requires), else
    a directory of our own, removed at exit."""
    given = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    path = Path(given) if given else Path(tempfile.mkdtemp(prefix="aai-proxy-metrics-"))
    path.mkdir(parents=True, exist_ok=True)
    for stale in path.glob("*.db"):
        stale.unlink()
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(path)
    try:
        yield
    finally:
        if not given:
            shutil.rmtree(path, ignore_errors=True)


@cli.command()
def migrate(
    revision: Annotated[str, typer.Argument(help="Target revision")] = "heads",
    down: Annotated[bool, typer.Option(help="Downgrade to the revision instead")] = False,
) -> None:
    """Apply (or roll back) database migrations."""
    from app.core.migrate import downgrade, upgrade

    with database(load_settings()) as settings:
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
    configure_logging(settings.log_level, settings.json_logs, settings.secret_values())
    with database(settings) as settings, contextlib.suppress(KeyboardInterrupt):
        if settings.metrics_enabled and settings.metrics_port is not None:
            from app.metrics.router import serve_process_metrics

            serve_process_metrics(settings.metrics)  # a daemon thread: ends with the process
        typer.secho("Reconciler running (Ctrl-C to stop).", err=True)
        asyncio.run(run_worker(settings))


@cli.command("reseal-secrets")
def reseal_secrets() -> None:
    """Re-encrypt stored relay secrets with the first SECRETS_KEY (after a key rotation)."""
    from app.core.secretbox import secret_box
    from app.webhooks.signing import reseal_stored_secrets

    box = secret_box(load_settings().secrets)
    count = _with_session(lambda s: reseal_stored_secrets(s, box))
    typer.echo(f"Resealed {count} stored secrets with the first key of SECRETS_KEY.")


T = TypeVar("T")


def _with_session(work: Callable[[AsyncSession], Awaitable[T]]) -> T:
    """Run one unit of work in a transaction against the configured database."""
    from app.core.db import create_engine, create_sessionmaker

    async def run(url: str) -> T:
        engine = create_engine(url, pool_size=1)
        try:
            async with create_sessionmaker(engine)() as session, session.begin():
                return await work(session)
        finally:
            await engine.dispose()

    with database(load_settings()) as settings:
        assert settings.database_url is not None
        return asyncio.run(run(settings.database_url.get_secret_value()))


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


db_cli = typer.Typer(help="The embedded Postgres (used when DATABASE_URL is not set).")
cli.add_typer(db_cli, name="db")


@db_cli.command("status")
def db_status() -> None:
    """Say whether the embedded Postgres runs (exit 0) or not (exit 3), and where."""
    from app.core import embedded_postgres

    settings = load_settings()
    data_dir = settings.embedded_postgres_dir.resolve()
    if settings.database_url is not None:
        typer.echo("DATABASE_URL is set: the service uses that server, not the embedded one.")
    pid = embedded_postgres.running_pid(data_dir)
    if pid is None:
        typer.echo(f"Embedded Postgres in {data_dir}: not running.")
        raise typer.Exit(code=3)
    typer.echo(f"Embedded Postgres in {data_dir}: running (pid {pid}).")


@db_cli.command("stop")
def db_stop() -> None:
    """Stop the embedded Postgres (one left running by `serve --keep-db`, or orphaned)."""
    from app.core import embedded_postgres

    data_dir = load_settings().embedded_postgres_dir.resolve()
    if embedded_postgres.stop(data_dir):
        typer.echo(f"Stopped the embedded Postgres in {data_dir}.")
    else:
        typer.echo(f"Embedded Postgres in {data_dir}: not running.")


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
