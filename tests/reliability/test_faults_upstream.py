"""Upstream storms (the emulator's injected faults) under a real service: every answer is a
clear error with upstream's status class (429 with `Retry-After`, 502/503/504), never a
500 or a hang, and the service is well again as soon as upstream is."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from app.identity.scopes import ALL_SCOPES
from tests.live import EMULATOR_KEY, Proc, create_key_in, run_emulator, run_service

pytestmark = pytest.mark.timeout(240)

SUBMIT = {"audio_url": "https://example.com/a.wav"}


@pytest.fixture(scope="module")
def own_emulator() -> Iterator[Proc]:
    with run_emulator() as proc:
        yield proc


@pytest.fixture(scope="module")
def service(database_url: str, own_emulator: Proc) -> Iterator[tuple[Proc, str]]:
    key = create_key_in(database_url, ALL_SCOPES, name="storms")
    env = {"UPSTREAM_RETRY_AFTER_MAX_S": "1", "UPSTREAM_RETRY_WAIT_MAX_S": "0.2"}
    with run_service(database_url, own_emulator.url, env=env) as proc:
        yield proc, key


def _inject(emulator: Proc, **fault: object) -> None:
    httpx.post(f"{emulator.url}/_emulator/faults", json=fault, timeout=10).raise_for_status()


def _clear(emulator: Proc) -> None:
    httpx.delete(f"{emulator.url}/_emulator/faults", timeout=10).raise_for_status()


@pytest.mark.parametrize(
    ("fault", "statuses"),
    [
        ({"status": 429, "retry_after": 3}, {429}),
        ({"status": 503}, {502, 503}),
        ({"status": 500}, {502}),
        ({"drop": True}, {502}),
    ],
    ids=["429", "503", "500", "drop"],
)
def test_submit_storm(
    service: tuple[Proc, str], own_emulator: Proc, fault: dict[str, object], statuses: set[int]
) -> None:
    proc, key = service
    _inject(own_emulator, route="POST /v2/transcript", count=200, **fault)
    try:
        with httpx.Client(base_url=proc.url, headers={"Authorization": key}, timeout=60) as client:
            for _ in range(5):
                started = time.monotonic()
                response = client.post("/v2/transcript", json=SUBMIT)
                elapsed = time.monotonic() - started
                assert response.status_code in statuses, (response.status_code, response.text)
                assert response.json()["error"], response.text
                assert elapsed < 20, elapsed
                if response.status_code == 429:
                    assert int(response.headers["Retry-After"]) >= 1
    finally:
        _clear(own_emulator)
    with httpx.Client(base_url=proc.url, headers={"Authorization": key}, timeout=60) as client:
        assert client.post("/v2/transcript", json=SUBMIT).status_code == 200


def test_read_storm_then_recovery(service: tuple[Proc, str], own_emulator: Proc) -> None:
    proc, key = service
    with httpx.Client(base_url=proc.url, headers={"Authorization": key}, timeout=60) as client:
        job = client.post("/v2/transcript", json=SUBMIT).json()
        _inject(own_emulator, route="GET /v2/transcript/{id}", count=200, status=503)
        try:
            for _ in range(5):
                response = client.get(f"/v2/transcript/{job['id']}")
                assert response.status_code != 500, response.text
                assert response.status_code < 600
        finally:
            _clear(own_emulator)
        assert client.get(f"/v2/transcript/{job['id']}").status_code == 200


def test_no_traceback_and_no_error_storm_in_the_log(service: tuple[Proc, str]) -> None:
    proc, _ = service
    log = proc.log.read_text()
    assert "Traceback" not in log, log[-3000:]
    assert EMULATOR_KEY not in log
