"""Real processes on real ports: the emulator and the service, for end-to-end tests.

Each process logs to `test-output/<name>-<port>.log`; on a start-up failure the log's tail
is in the error, so a broken process explains itself.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from app.core.db import create_engine, create_sessionmaker
from app.keys import service as keys_service

ROOT = Path(__file__).resolve().parents[1]
OUTPUT = ROOT / "test-output"
EMULATOR_KEY = "emulator-test-key"
# Added to every service process's environment; tests/conftest.py shrinks the database pools
# here, since many service processes share one test server (max_connections is often 100).
# Benchmarks import this module without it and keep the production defaults.
EXTRA_SERVICE_ENV: dict[str, str] = {}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_port(port: int, proc: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode}:\n{_tail(log)}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {port} after {timeout:.0f} s:\n{_tail(log)}")


def _tail(log: Path, lines: int = 40) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@dataclass
class Proc:
    name: str
    port: int
    process: subprocess.Popen[bytes]
    log: Path
    scheme: str = "http"  # "https" for a process served over TLS

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Kill at once (`kill -9` by default): no clean-up runs."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
            self.process.wait(10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


@contextmanager
def run_process(
    name: str,
    args: list[str],
    env: Mapping[str, str],
    port: int,
    timeout: float = 30,
    scheme: str = "http",
) -> Iterator[Proc]:
    OUTPUT.mkdir(exist_ok=True)
    log = OUTPUT / f"{name}-{port}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            args, env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT
        )
    proc = Proc(name, port, process, log, scheme)
    try:
        wait_for_port(port, process, log, timeout)
        yield proc
    finally:
        proc.stop()


@contextmanager
def run_emulator(
    env: Mapping[str, str] | None = None, port: int | None = None, tls: Path | None = None
) -> Iterator[Proc]:
    """The emulator in test mode (fault injection and inspection on). With `tls` (a PEM file
    holding a private key and its certificate chain, e.g. trustme's) it is served over
    HTTPS by uvicorn itself, as AssemblyAI's hosts are: `Proc.url` is then https://."""
    port = port or free_port()
    data_dir = OUTPUT / f"emulator-data-{port}"
    base = {
        "EMULATOR_API_KEY": EMULATOR_KEY,
        "EMULATOR_TEST_MODE": "true",
        "EMULATOR_DATA_DIR": str(data_dir),
    }
    args = [sys.executable, "-m", "emulator", "--port", str(port)]
    if tls is not None:
        args = [
            *(sys.executable, "-m", "uvicorn", "emulator.main:create_app", "--factory"),
            *("--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"),
            *("--ssl-certfile", str(tls), "--ssl-keyfile", str(tls)),
        ]
    scheme = "https" if tls is not None else "http"
    with run_process("emulator", args, {**base, **(env or {})}, port, scheme=scheme) as proc:
        yield proc


def service_env(database_url: str, emulator_url: str, port: int) -> dict[str, str]:
    """The environment of a service process that uses `emulator_url` as AssemblyAI."""
    return {
        "APP_ENV": "test",
        "DATABASE_URL": database_url,
        "ASSEMBLYAI_API_KEY": EMULATOR_KEY,
        "ASSEMBLYAI_API_BASE_URL": emulator_url,
        "ASSEMBLYAI_STREAMING_BASE_URL": emulator_url,
        "ASSEMBLYAI_AGENTS_BASE_URL": emulator_url,
        "ASSEMBLYAI_LLM_BASE_URL": emulator_url,
        "PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
        "MIGRATE_ON_START": "false",
        **EXTRA_SERVICE_ENV,
        "LOG_LEVEL": "INFO",
        "LOG_JSON": "true",
    }


@contextmanager
def run_service(
    database_url: str,
    emulator_url: str,
    env: Mapping[str, str] | None = None,
    port: int | None = None,
) -> Iterator[Proc]:
    """The real service under uvicorn, as `aai-proxy serve` runs it."""
    port = port or free_port()
    args = [
        sys.executable,
        "-m",
        "uvicorn",
        "app.main:create_app",
        "--factory",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "warning",
        "--http",
        "app.core.http_server:TapProtocol",
        "--no-proxy-headers",  # as `aai-proxy serve`: the app parses X-Forwarded-For
    ]
    full_env = {**service_env(database_url, emulator_url, port), **(env or {})}
    with run_process("service", args, full_env, port) as proc:
        yield proc


def create_key_in(database_url: str, scopes: list[str], name: str = "e2e key") -> str:
    """A committed proxy key in `database_url` (for processes that read their own database)."""

    async def create() -> str:
        engine = create_engine(database_url, pool_size=1)
        try:
            async with create_sessionmaker(engine)() as session, session.begin():
                _, raw = await keys_service.create_key(session, name, scopes)
                return raw
        finally:
            await engine.dispose()

    return asyncio.run(create())
