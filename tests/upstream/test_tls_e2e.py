"""AssemblyAI behind TLS, as in production: the real emulator served over HTTPS with a
certificate from a test CA (trustme), the real service told to trust that CA with
UPSTREAM_CA_FILE. Every upstream path verifies it: the pooled httpx clients, the token GET
pool, the tapped upload (`open_post`) and the WebSocket relay. Without the setting the
same service cannot reach the emulator, which shows the certificate really is checked."""

from __future__ import annotations

import hashlib
import json
import ssl
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import trustme
from pydantic import ValidationError
from websockets.sync.client import connect

from app.core.config import Settings
from tests.live import Proc, create_key_in, run_emulator, run_service

pytestmark = pytest.mark.e2e

SCOPES = ["transcripts", "tokens:streaming"]


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("upstream-tls")
    ca = trustme.CA()
    paths = {"ca": folder / "ca.pem", "cert": folder / "emulator.pem"}
    ca.cert_pem.write_to_path(str(paths["ca"]))
    ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(str(paths["cert"]))
    return paths


@pytest.fixture(scope="module")
def tls_emulator(tls: dict[str, Path]) -> Iterator[Proc]:
    with run_emulator(tls=tls["cert"]) as proc:
        assert proc.url.startswith("https://")
        yield proc


@pytest.fixture(scope="module")
def trusting(database_url: str, tls_emulator: Proc, tls: dict[str, Path]) -> Iterator[Proc]:
    env = {"UPSTREAM_CA_FILE": str(tls["ca"])}
    with run_service(database_url, tls_emulator.url, env) as proc:
        yield proc


@pytest.fixture(scope="module")
def key(database_url: str) -> str:
    return create_key_in(database_url, SCOPES, name="upstream tls")


def emulator_uploads(emulator: Proc, ca: Path) -> list[dict[str, object]]:
    context = ssl.create_default_context(cafile=str(ca))
    with httpx.Client(base_url=emulator.url, verify=context, timeout=10) as client:
        uploads: list[dict[str, object]] = client.get("/_emulator/uploads").json()
    return uploads


def test_a_tapped_upload_reaches_an_upstream_behind_tls(
    trusting: Proc, tls_emulator: Proc, tls: dict[str, Path], key: str
) -> None:
    audio = uuid.uuid4().bytes * 200_000  # ~3 MiB of known length: the tapped path
    response = httpx.post(
        f"{trusting.url}/v2/upload", content=audio, headers={"Authorization": key}, timeout=30
    )
    assert response.status_code == 200, response.text
    assert response.headers["connection"] == "close"  # the tap carried it
    sha = hashlib.sha256(audio).hexdigest()
    received = [u for u in emulator_uploads(tls_emulator, tls["ca"]) if u["sha256"] == sha]
    assert [u["bytes"] for u in received] == [len(audio)]


def test_a_chunked_upload_and_a_submit_use_the_pooled_clients_over_tls(
    trusting: Proc, key: str
) -> None:
    def pieces() -> Iterator[bytes]:
        yield from (b"\0" * 65_536 for _ in range(8))

    with httpx.Client(base_url=trusting.url, headers={"Authorization": key}, timeout=30) as c:
        upload = c.post("/v2/upload", content=pieces())
        assert upload.status_code == 200, upload.text
        submit = c.post("/v2/transcript", json={"audio_url": upload.json()["upload_url"]})
        assert submit.status_code == 200, submit.text
        assert c.get(f"/v2/transcript/{submit.json()['id']}").status_code == 200


def test_a_token_mint_uses_the_get_pool_over_tls(trusting: Proc, key: str) -> None:
    response = httpx.get(
        f"{trusting.url}/v3/token",
        params={"expires_in_seconds": 60},
        headers={"Authorization": key},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    assert response.json()["token"]


def test_the_websocket_relay_connects_to_wss_upstream(trusting: Proc, key: str) -> None:
    url = trusting.url.replace("http://", "ws://") + "/v3/ws?sample_rate=16000"
    with connect(url, additional_headers={"Authorization": key}, open_timeout=10) as ws:
        begin = json.loads(ws.recv(timeout=10))
        assert begin["type"] == "Begin"
        ws.send(json.dumps({"type": "Terminate"}))
        while json.loads(ws.recv(timeout=10))["type"] != "Termination":
            pass


def test_without_the_ca_the_service_refuses_the_unknown_certificate(
    database_url: str, tls_emulator: Proc, key: str
) -> None:
    with run_service(database_url, tls_emulator.url) as service:
        upload = httpx.post(
            f"{service.url}/v2/upload",
            content=b"\0" * 100_000,
            headers={"Authorization": key},
            timeout=30,
        )
        assert upload.status_code == 502, upload.text
        token = httpx.get(
            f"{service.url}/v3/token",
            params={"expires_in_seconds": 60},
            headers={"Authorization": key},
            timeout=30,
        )
        assert token.status_code == 502, token.text


def test_a_missing_ca_file_is_refused_at_start(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="upstream_ca_file"):
        Settings(upstream_ca_file=str(tmp_path / "absent.pem"))
    assert Settings(upstream_ca_file="").upstream_ca_file is None
