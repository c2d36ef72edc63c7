"""Helpers of the fault matrix: a Postgres cluster of the test's own that can be stopped and
started again, raw sockets that stall, and a Redis server on an ephemeral port."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from tests.live import free_port


@dataclass
class Cluster:
    """A pgserver cluster in a temporary directory, listening on a Unix socket."""

    data_dir: Path
    url: str
    user: str | None
    running: bool = True

    def _pg_ctl(self, *args: str) -> None:
        from pgserver._commands import pg_ctl

        pg_ctl(list(args), pgdata=self.data_dir, user=self.user, timeout=30)

    def stop(self) -> None:
        """A fast shutdown: open connections are closed by the server."""
        self._pg_ctl("-w", "-m", "fast", "stop")
        self.running = False

    def start(self) -> None:
        socket_dir = parse_qs(urlsplit(self.url).query)["host"][0]
        log = str(self.data_dir / "log")
        self._pg_ctl("-w", "-o", '-h ""', "-o", f"-k {socket_dir}", "-l", log, "start")
        self.running = True


@contextmanager
def own_postgres() -> Iterator[Cluster]:
    """A Postgres of this test alone (stopping it disturbs no other test)."""
    from pgserver.postgres_server import get_server

    with tempfile.TemporaryDirectory(prefix="aaip-faults-pg-") as data_dir:
        server = get_server(data_dir, cleanup_mode="stop")
        cluster = Cluster(Path(data_dir), server.get_uri(), server.system_user)
        try:
            yield cluster
        finally:
            if not cluster.running:
                cluster.start()  # cleanup() stops what is running, and expects it so
            server.cleanup()


class RedisServer:
    """A redis-server of the test's own on an ephemeral port; stopped and started again
    on the same port."""

    def __init__(self, binary: str) -> None:
        self.binary = binary
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"redis-server did not listen on {self.port}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)


@contextmanager
def own_redis() -> Iterator[RedisServer]:
    """Skips the test when there is no redis-server on this machine."""
    import pytest

    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("no redis-server on PATH to start and stop")
    server = RedisServer(binary)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def read_answer(sock: socket.socket, timeout: float) -> bytes:
    """Everything the server sends until it closes the connection (or `timeout`)."""
    sock.settimeout(timeout)
    data = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            break
        except ConnectionResetError:
            break
        if not chunk:
            break
        data += chunk
    return data
