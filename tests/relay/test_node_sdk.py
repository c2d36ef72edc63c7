"""The official Node SDK (4.41) through the relay. Its `streamingBaseUrl` must be `wss://`,
so the service is served over TLS with a test CA (trustme) that Node is told to trust."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import trustme

from tests.live import Proc, create_key_in, free_port, run_process, service_env

pytestmark = pytest.mark.e2e

NODE_DIR = Path(__file__).parent / "node"


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("tls")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    paths = {"ca": folder / "ca.pem", "cert": folder / "server.pem"}
    ca.cert_pem.write_to_path(str(paths["ca"]))
    cert.private_key_and_cert_chain_pem.write_to_path(str(paths["cert"]))
    return paths


@pytest.fixture(scope="module")
def tls_service(database_url: str, emulator: Proc, tls: dict[str, Path]) -> Iterator[Proc]:
    port = free_port()
    env = {**service_env(database_url, emulator.url, port)}
    env["PUBLIC_BASE_URL"] = f"https://127.0.0.1:{port}"
    args = [
        *(sys.executable, "-m", "uvicorn", "app.main:create_app", "--factory"),
        *("--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"),
        *("--ssl-certfile", str(tls["cert"]), "--ssl-keyfile", str(tls["cert"])),
    ]
    with run_process("service-tls", args, env, port) as proc:
        yield proc


def test_node_sdk_streams_through_the_relay_over_wss(
    tls_service: Proc, emulator: Proc, tls: dict[str, Path], database_url: str
) -> None:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    if not (NODE_DIR / "node_modules" / "assemblyai").is_dir():
        pytest.skip("the Node SDK is not installed: npm ci --prefix tests/relay/node")
    key = create_key_in(database_url, ["tokens:streaming"], name="node sdk")
    url = f"wss://127.0.0.1:{tls_service.port}/v3/ws"
    done = subprocess.run(
        [node, "stream.mjs", url, key],
        cwd=NODE_DIR,
        env={**os.environ, "NODE_EXTRA_CA_CERTS": str(tls["ca"])},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["errors"] == []
    assert seen["begin"]
    assert seen["close"] is None  # no error close while streaming
    deadline = time.monotonic() + 10
    while True:
        record = httpx.get(f"{emulator.url}/_emulator/sessions/{seen['begin']}").json()
        if record.get("ended_at") is not None or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert record["terminate_received"] is True
    assert "Termination" in record["sent"]
    assert record["pcm_bytes"] == 10 * 3200  # every frame, unchanged in size
