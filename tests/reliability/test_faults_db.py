"""The database goes away and comes back, under a real service process.

The service runs on a Postgres cluster of the test's own (so stopping it disturbs nothing
else); while it is down, every route answers `503 DatabaseUnavailable` with `Retry-After`,
fast; once it is back, the very first request of every route succeeds again."""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest

from app.identity.scopes import ALL_SCOPES
from app.webhooks.service import WEBHOOK_AUTH_HEADER
from tests.live import Proc, create_key_in, run_service
from tests.pg import create_database
from tests.reliability.faults import Cluster, own_postgres

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    with own_postgres() as cluster:
        yield cluster


@pytest.fixture(scope="module")
def service(cluster: Cluster, emulator: Proc) -> Iterator[tuple[Proc, str]]:
    url = create_database(cluster.url)
    key = create_key_in(url, ALL_SCOPES, name="faults admin")
    env = {
        "DATABASE_CONNECT_TIMEOUT_S": "2",
        "DATABASE_POOL_TIMEOUT_S": "2",
        "KEY_CACHE_TTL_S": "0",
        "RECONCILER_TICK_S": "0.5",
    }
    with run_service(url, emulator.url, env=env) as proc:
        yield proc, key


def _calls(key: str) -> list[tuple[str, str, dict[str, object]]]:
    auth = {"Authorization": key}
    return [
        ("GET", "/api/transcripts", {"headers": auth}),
        ("GET", "/v2/transcript", {"headers": auth}),
        ("POST", "/v2/transcript", {"headers": auth, "json": {"audio_url": "https://x/a.wav"}}),
        ("GET", f"/v2/transcript/{uuid.uuid4()}", {"headers": auth}),
        ("GET", "/v3/token?expires_in_seconds=60", {"headers": auth}),
        ("POST", "/api/tokens/streaming", {"headers": auth, "json": {"expires_in_seconds": 60}}),
        ("GET", "/api/audit", {"headers": auth}),
        ("GET", "/api/usage", {"headers": auth}),
        ("GET", "/api/keys", {"headers": auth}),
        # AssemblyAI's webhook: its own pool, before any secret can be checked.
        (
            "POST",
            f"/webhooks/assemblyai/{uuid.uuid4()}",
            {"headers": {WEBHOOK_AUTH_HEADER: "s" * 32}, "json": {"status": "completed"}},
        ),
    ]


def test_database_down_answers_503_fast_and_recovers(
    cluster: Cluster, service: tuple[Proc, str]
) -> None:
    proc, key = service
    calls = _calls(key)
    with httpx.Client(base_url=proc.url, timeout=30) as client:
        before = {path: client.request(m, path, **kw).status_code for m, path, kw in calls}
        assert all(status < 500 for status in before.values()), before

        cluster.stop()
        try:
            for method, path, kwargs in calls:
                started = time.monotonic()
                response = client.request(method, path, **kwargs)
                elapsed = time.monotonic() - started
                assert response.status_code == 503, (path, response.status_code, response.text)
                assert response.json()["error"] == "DatabaseUnavailable", (path, response.text)
                assert int(response.headers["Retry-After"]) > 0, path
                assert elapsed < 4, (path, elapsed)
            ready = client.get("/readyz")
            assert ready.status_code == 503
        finally:
            cluster.start()

        # The first request of each route after the restart already succeeds (no stale
        # pooled connection turns into one more error).
        after = {path: client.request(m, path, **kw).status_code for m, path, kw in calls}
        assert after == before, (before, after)
        assert client.get("/readyz").status_code == 200
    log = proc.log.read_text()
    assert "Traceback" not in log, log[-3000:]


@pytest.fixture
def blackhole() -> Iterator[int]:
    """A port that accepts connections and never answers (a hung database host)."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(512)
        yield listener.getsockname()[1]


def test_a_hung_database_answers_503_within_the_connect_timeout(
    blackhole: int, emulator: Proc
) -> None:
    url = f"postgresql://postgres@127.0.0.1:{blackhole}/hung"
    env = {"DATABASE_CONNECT_TIMEOUT_S": "1", "DATABASE_POOL_TIMEOUT_S": "1"}
    key = "aaip_" + "k" * 40
    with (
        run_service(url, emulator.url, env=env) as proc,
        httpx.Client(base_url=proc.url, timeout=30) as client,
    ):
        for method, path, kwargs in _calls(key):
            started = time.monotonic()
            response = client.request(method, path, **kwargs)
            elapsed = time.monotonic() - started
            assert response.status_code == 503, (path, response.status_code, response.text)
            assert response.json()["error"] == "DatabaseUnavailable", (path, response.text)
            assert "Retry-After" in response.headers, path
            assert elapsed < 4, (path, elapsed)
