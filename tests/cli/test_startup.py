"""`aai-proxy serve` refuses ports held by other programs, by name, at once; the emulator it
proxies to is the one it started (nonce on /_emulator/health); the all-scopes development
key only in emulator mode. Real processes and real sockets."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
import typer

from app.cli import _wait_for_emulator, port_in_use
from tests.live import free_port

pytestmark = pytest.mark.e2e

AAI_PROXY = Path(sys.executable).parent / "aai-proxy"
KEY_RE = re.compile(r"aaip_[A-Za-z0-9_\-]{43}")


@contextmanager
def stranger(
    body: bytes = b"<!DOCTYPE HTML><title>501</title>", status: int = 501
) -> Iterator[int]:
    """Another program's HTTP server on a free port (answers everything the same way)."""

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = _answer  # noqa: N815

        def log_message(self, *_: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def serve_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "LANG": "C.UTF-8",
        "LOG_LEVEL": "WARNING",
        **extra,
    }


def run_serve(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(AAI_PROXY), "serve", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture
def fresh_database(make_database: Callable[..., str]) -> str:
    return make_database()


def test_port_in_use_is_named_and_fails_fast(tmp_path: Path, fresh_database: str) -> None:
    with stranger() as port:
        done = run_serve(  # bounded by run_serve's timeout: no hang, no "ready"
            ["--port", str(port)],
            serve_env(tmp_path, DATABASE_URL=fresh_database, ASSEMBLYAI_API_KEY="a-real-key-1"),
            tmp_path,
        )
    assert done.returncode == 2, done.stderr
    assert f"PORT {port} on 127.0.0.1 is in use by another program" in done.stderr
    assert "Traceback" not in done.stderr


def test_emulator_port_held_by_a_stranger_fails_fast(tmp_path: Path, fresh_database: str) -> None:
    port = free_port()
    with stranger() as emulator_port:
        done = run_serve(
            ["--port", str(port)],
            serve_env(
                tmp_path,
                DATABASE_URL=fresh_database,
                APP_ENV="test",
                EMULATOR_PORT=str(emulator_port),
            ),
            tmp_path,
        )
        assert not port_in_use("127.0.0.1", port)  # never served
    assert done.returncode == 2, done.stderr
    assert f"EMULATOR_PORT {emulator_port} is in use by another program" in done.stderr
    assert "Traceback" not in done.stderr


def test_port_in_use_detects_a_listening_socket() -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        assert port_in_use("127.0.0.1", port)
    assert not port_in_use("127.0.0.1", port)


@contextmanager
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()


def test_an_emulator_that_does_not_echo_our_nonce_is_refused() -> None:
    # Something that answers the health path, even in the emulator's shape, but is not the
    # process just started (e.g. one bound between our check and its start).
    body = json.dumps({"status": "ok", "nonce": "someone-elses"}).encode()
    with stranger(body, status=200) as port, sleeper() as proc:
        with pytest.raises(typer.Exit) as raised:
            _wait_for_emulator(port, "ours-1234", 10, proc)
    assert raised.value.exit_code == 2


def test_the_emulator_we_started_echoes_the_nonce(tmp_path: Path) -> None:
    port = free_port()
    env = {
        **os.environ,
        "EMULATOR_INSTANCE_NONCE": "nonce-abc-123",
        "EMULATOR_DATA_DIR": str(tmp_path / "emu"),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "emulator", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_for_emulator(port, "nonce-abc-123", 30, proc)  # returns: it is ours
        answer = httpx.get(f"http://127.0.0.1:{port}/_emulator/health").json()
        assert answer == {"status": "ok", "nonce": "nonce-abc-123"}
        with pytest.raises(typer.Exit):
            _wait_for_emulator(port, "a-different-nonce", 5, proc)
    finally:
        proc.terminate()
        proc.wait(10)


def test_no_development_admin_key_with_a_real_assemblyai_key(
    tmp_path: Path, fresh_database: str
) -> None:
    """APP_ENV left at its default (development) but ASSEMBLYAI_API_KEY set: no all-scopes
    key is created or printed (it is for the emulator playground only)."""
    port = free_port()
    env = serve_env(
        tmp_path, DATABASE_URL=fresh_database, ASSEMBLYAI_API_KEY="a-real-looking-key-123"
    )
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(AAI_PROXY), "serve", "--port", str(port)],
            env=env,
            cwd=tmp_path,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert proc.poll() is None, log.read_text(errors="replace")[-3000:]
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        else:
            pytest.fail("serve never answered /healthz")
    finally:
        proc.terminate()
        proc.wait(20)
    output = log.read_text(errors="replace")
    assert not KEY_RE.findall(output), output[-2000:]
    assert "Created a development admin key" not in output
    assert "No proxy key exists yet" in output
    assert "aai-proxy keys create --name admin --scope admin" in output

    import asyncio

    from app.core.db import create_engine, create_sessionmaker
    from app.keys import service

    async def any_key() -> bool:
        engine = create_engine(fresh_database, pool_size=1)
        try:
            async with create_sessionmaker(engine)() as session:
                return await service.any_key_exists(session)
        finally:
            await engine.dispose()

    assert asyncio.run(any_key()) is False


def test_browse_url_names_a_reachable_address() -> None:
    from app.cli import browse_url

    assert browse_url("0.0.0.0", 8000) == "http://127.0.0.1:8000"
    assert browse_url("::", 8000) == "http://[::1]:8000"
    assert browse_url("127.0.0.1", 9) == "http://127.0.0.1:9"
    assert browse_url("fe80::1", 80) == "http://[fe80::1]:80"


def test_serve_help_and_make_help_name_both_ports() -> None:
    from typer.testing import CliRunner

    from app.cli import cli

    text = CliRunner().invoke(cli, ["serve", "--help"], terminal_width=200).output
    assert "PORT" in text, text
    assert "EMULATOR_PORT" in text, text
    root = Path(__file__).resolve().parents[2]
    made = subprocess.run(["make", "-s", "help"], cwd=root, capture_output=True, text=True)
    run_line = next(line for line in made.stdout.splitlines() if "make run" in line)
    assert "PORT" in run_line, made.stdout
    assert "EMULATOR_PORT" in run_line, made.stdout
