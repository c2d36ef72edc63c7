"""Redis (the shared rate-limit counters) stops and comes back under a real service."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from app.identity.scopes import ALL_SCOPES
from tests.live import Proc, create_key_in, run_service
from tests.reliability.faults import RedisServer, own_redis

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def redis() -> Iterator[RedisServer]:
    with own_redis() as server:
        yield server


def test_redis_down_refuses_mints_fast_and_recovers(
    redis: RedisServer, database_url: str, emulator: Proc
) -> None:
    key = create_key_in(database_url, ALL_SCOPES, name="redis faults")
    with (
        run_service(database_url, emulator.url, env={"REDIS_URL": redis.url}) as proc,
        httpx.Client(base_url=proc.url, headers={"Authorization": key}, timeout=30) as client,
    ):
        mint = "/v3/token?expires_in_seconds=60"
        assert client.get(mint).status_code == 200
        redis.stop()
        try:
            for _ in range(3):
                started = time.monotonic()
                response = client.get(mint)
                elapsed = time.monotonic() - started
                # The limits can't be checked: refused (TOKEN_LIMITS_FAIL_OPEN=false), clearly.
                assert response.status_code == 503, response.text
                assert response.json()["error"], response.text
                assert elapsed < 5, elapsed
            # Routes that don't count anything keep working.
            assert client.get("/api/transcripts").status_code == 200
        finally:
            redis.start()
        deadline = time.monotonic() + 15
        while (status := client.get(mint).status_code) != 200 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert status == 200
    log = proc.log.read_text()
    assert "Traceback" not in log, log[-3000:]
