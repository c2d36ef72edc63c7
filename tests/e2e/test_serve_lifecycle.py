"""The embedded Postgres's lifecycle with the real command: `serve` stops the server it
started when it exits, `--keep-db` leaves it running, `aai-proxy db status|stop` see and
stop it; as root it says which system user runs Postgres, with no /usr/sbin on PATH."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from app.core.embedded_postgres import find_useradd, running_pid
from tests.live import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.filterwarnings("ignore:XDG_RUNTIME_DIR is not set")]

AAI_PROXY = Path(sys.executable).parent / "aai-proxy"
NO_SBIN = "/usr/local/bin:/usr/bin:/bin"


@pytest.fixture
def workdir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="aaip-life-"))  # short: the socket lives in it
    try:
        yield path
    finally:
        if running_pid(path / "pg") is not None:
            subprocess.run(
                [str(AAI_PROXY), "db", "stop"],
                env=env_for(path),
                cwd=path,
                capture_output=True,
                timeout=60,
            )
        shutil.rmtree(path, ignore_errors=True)


def env_for(workdir: Path) -> dict[str, str]:
    return {
        "PATH": NO_SBIN,  # as in many containers and sudo sessions
        "HOME": str(workdir),
        "LANG": "C.UTF-8",
        "APP_ENV": "test",
        "LOG_LEVEL": "WARNING",
        "EMBEDDED_POSTGRES_DIR": str(workdir / "pg"),
        "EMULATOR_PORT": str(free_port()),
    }


def serve_until_ready(workdir: Path, extra: list[str], stop: int = signal.SIGTERM) -> str:
    """Start serve, wait for /readyz, stop it with `stop`; returns its output."""
    port = free_port()
    log = workdir / f"serve-{port}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(AAI_PROXY), "serve", "--port", str(port), *extra],
            env=env_for(workdir),
            cwd=workdir,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert proc.poll() is None, log.read_text(errors="replace")[-3000:]
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.3)
        else:
            pytest.fail(f"never ready:\n{log.read_text(errors='replace')[-3000:]}")
        assert running_pid(workdir / "pg") is not None
    finally:
        proc.send_signal(stop)
        proc.wait(60)
    return log.read_text(errors="replace")


def db(workdir: Path, command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(AAI_PROXY), "db", command],
        env=env_for(workdir),
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=90,
    )


def test_serve_stops_the_postgres_it_started_unless_kept(workdir: Path) -> None:
    output = serve_until_ready(workdir, [], stop=signal.SIGINT)  # Ctrl-C on `make run`
    assert "started embedded Postgres" in output
    assert "Stopped the embedded Postgres this command started" in output
    assert running_pid(workdir / "pg") is None
    if os.geteuid() == 0:
        assert "Running as root: Postgres refuses to run as root" in output
        assert "`pgserver`" in output
        # mkdtemp made the work directory 0700: opening it for `pgserver` is said, by name.
        assert "readable and traversable by other users" in output
        assert str(workdir) in output
    assert "Traceback" not in output

    status = db(workdir, "status")
    assert status.returncode == 3, status.stdout + status.stderr
    assert "not running" in status.stdout

    kept = serve_until_ready(workdir, ["--keep-db"])
    assert "Stopped the embedded Postgres" not in kept
    pid = running_pid(workdir / "pg")
    assert pid is not None  # left running on purpose

    status = db(workdir, "status")
    assert status.returncode == 0, status.stdout + status.stderr
    assert f"running (pid {pid})" in status.stdout

    stopped = db(workdir, "stop")
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert "Stopped the embedded Postgres" in stopped.stdout
    assert running_pid(workdir / "pg") is None


def test_useradd_is_found_without_sbin_on_path(monkeypatch: pytest.MonkeyPatch) -> None:
    candidates = [
        p for p in ("/usr/local/sbin", "/usr/sbin", "/sbin") if Path(p, "useradd").exists()
    ]
    if not candidates:
        pytest.skip("no useradd on this machine")
    monkeypatch.setenv("PATH", NO_SBIN)
    assert shutil.which("useradd") is None  # what failed with a traceback before
    found = find_useradd()
    assert found is not None
    assert Path(found).is_absolute()
    assert Path(found).name == "useradd"
