"""What a failed request leaves in a real service's log: never the caller's relay header
value or any other request value (SQL parameters are hidden), never a traceback for it."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from app.identity.scopes import ALL_SCOPES
from tests.live import Proc, create_key_in, run_service

pytestmark = pytest.mark.timeout(120)

RELAY_VALUE = "relay-header-value-Zq81xT"


@pytest.fixture(scope="module")
def service(database_url: str, emulator: Proc) -> Iterator[Proc]:
    with run_service(
        database_url, emulator.url, env={"RELAY_ALLOW_PRIVATE_NETWORKS": "true"}
    ) as proc:
        yield proc


@pytest.mark.parametrize(
    "payload",
    [
        # A NUL Postgres refuses to store (refused earlier or later: the log keeps no value).
        {"audio_url": "https://example.com/a\u0000b.wav"},
        {"audio_url": "https://example.com/a.wav", "webhook_auth_header_name": "X-\u0000"},
    ],
)
def test_a_failed_submit_leaves_no_request_value_in_the_log(
    service: Proc, database_url: str, payload: dict[str, str]
) -> None:
    key = create_key_in(database_url, ALL_SCOPES, name="logs")
    body = {
        **payload,
        "webhook_url": "http://127.0.0.1:9/aai",
        "webhook_auth_header_name": payload.get("webhook_auth_header_name", "X-Relay"),
        "webhook_auth_header_value": RELAY_VALUE,
    }
    before = len(service.log.read_text())
    response = httpx.post(
        f"{service.url}/v2/transcript", json=body, headers={"Authorization": key}, timeout=30
    )
    assert response.status_code < 600
    assert RELAY_VALUE not in response.text
    new = service.log.read_text()[before:]
    assert RELAY_VALUE not in new
    assert "[parameters" not in new
