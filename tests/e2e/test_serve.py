"""`aai-proxy serve` on a bare machine: no DATABASE_URL, no ASSEMBLYAI_API_KEY.

The real command in a clean environment must start an embedded Postgres and the emulator,
answer /healthz and /readyz, and print a development admin key that works.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.live import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.filterwarnings("ignore:XDG_RUNTIME_DIR is not set")]

ROOT = Path(__file__).resolve().parents[2]
AAI_PROXY = Path(sys.executable).parent / "aai-proxy"
KEY_RE = re.compile(r"aaip_[A-Za-z0-9_\-]{43}")


def stop_embedded_postgres(data_dir: Path) -> None:
    """Stop the server `serve` left running (it keeps running by design, for quick restarts)."""
    if not (data_dir / "postmaster.pid").exists():
        return
    from pgserver._commands import pg_ctl
    from pgserver.postgres_server import get_server

    get_server(data_dir, cleanup_mode="stop").cleanup()
    if (data_dir / "postmaster.pid").exists():  # another handle was left registered
        user = "pgserver" if os.geteuid() == 0 else None
        pg_ctl(["-w", "-m", "fast", "stop"], pgdata=data_dir, user=user)


def listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


@pytest.fixture
def workdir() -> Iterator[Path]:
    # Short path under /tmp: Postgres puts its socket in the data directory.
    path = Path(tempfile.mkdtemp(prefix="aaip-serve-"))
    try:
        yield path
    finally:
        stop_embedded_postgres(path / "pg")
        shutil.rmtree(path, ignore_errors=True)


def test_serve_with_nothing_configured(workdir: Path) -> None:
    port, emulator_port = free_port(), free_port()
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", str(workdir)),
        "LANG": "C.UTF-8",
        "APP_ENV": "development",
        "EMBEDDED_POSTGRES_DIR": str(workdir / "pg"),
        "EMULATOR_PORT": str(emulator_port),
    }
    stderr_path = workdir / "serve.stderr"
    with stderr_path.open("wb") as stderr:
        proc = subprocess.Popen(
            [str(AAI_PROXY), "serve", "--port", str(port)],
            env=env,
            cwd=workdir,  # no `.env` from the checkout; `.data/` lands here
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    try:
        deadline = time.monotonic() + 90
        ready: httpx.Response | None = None
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
            while time.monotonic() < deadline:
                assert proc.poll() is None, stderr_path.read_text(errors="replace")[-3000:]
                try:
                    ready = client.get("/readyz")
                    if ready.status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                time.sleep(0.2)
            output = stderr_path.read_text(errors="replace")
            assert ready is not None, f"never answered:\n{output[-3000:]}"
            assert ready.status_code == 200, ready.text
            assert client.get("/healthz").status_code == 200

            assert "embedded Postgres" in output
            assert "EMULATOR" in output
            assert f"Web page: http://127.0.0.1:{port}/ " in output
            assert f"API docs: http://127.0.0.1:{port}/docs" in output
            assert listening(emulator_port)
            keys = KEY_RE.findall(output)
            assert len(keys) == 1, "the development admin key is printed once"
            listed = client.get("/api/keys", headers={"Authorization": keys[0]})
            assert listed.status_code == 200, listed.text
            assert [k["name"] for k in listed.json()] == ["development admin"]
            assert "admin" in listed.json()[0]["scopes"]
            # The key shows on the terminal once, and nowhere in the log lines after it.
            assert keys[0] not in output.split(keys[0], 1)[1]
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    assert proc.returncode is not None
    # serve stops the emulator it started.
    deadline = time.monotonic() + 10
    while listening(emulator_port) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not listening(emulator_port)
    assert (workdir / "pg" / "PG_VERSION").exists()
