"""What a failed request leaves in a real service's log: never the caller's relay header
value or any other request value (SQL parameters are hidden, tracebacks redacted)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator

import httpx
import pytest

from app.core.db import create_engine
from app.identity.scopes import ALL_SCOPES
from tests.live import Proc, create_key_in, run_service

pytestmark = pytest.mark.timeout(120)

RELAY_VALUE = "relay-header-value-Zq81xT"
# In the audio_url of the submit whose insert the database refuses: a request value that is
# one of that INSERT's SQL parameters.
MARKER = "refused-row-Hk27pQ"

# The database refuses the row (as a constraint or a failing disk would), after the input
# boundary let it through: a real failed insert, with the request's values as parameters.
REFUSE_MARKED_JOBS = f"""
CREATE FUNCTION refuse_marked_job() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.audio_url LIKE '%{MARKER}%' THEN
        RAISE EXCEPTION 'row refused by the test' USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER refuse_marked_job BEFORE INSERT ON jobs
    FOR EACH ROW EXECUTE FUNCTION refuse_marked_job();
"""


def _execute(database_url: str, sql: str) -> None:
    async def run() -> None:
        engine = create_engine(database_url, pool_size=1)
        try:
            async with engine.begin() as conn:
                # asyncpg takes one statement per prepared query: run the script unprepared.
                raw = await conn.get_raw_connection()
                await raw.driver_connection.execute(sql)  # type: ignore[union-attr]
        finally:
            await engine.dispose()

    asyncio.run(run())


@pytest.fixture(scope="module")
def database(make_database: Callable[..., str]) -> str:
    """A database of this module's own: its jobs table refuses marked rows."""
    url = make_database()
    _execute(url, REFUSE_MARKED_JOBS)
    return url


@pytest.fixture(scope="module")
def service(database: str, emulator: Proc) -> Iterator[Proc]:
    with run_service(database, emulator.url, env={"RELAY_ALLOW_PRIVATE_NETWORKS": "true"}) as proc:
        yield proc


def _submit(service: Proc, key: str, body: dict[str, str]) -> tuple[httpx.Response, str]:
    before = len(service.log.read_text())
    response = httpx.post(
        f"{service.url}/v2/transcript", json=body, headers={"Authorization": key}, timeout=30
    )
    return response, service.log.read_text()[before:]


def test_a_failed_insert_leaves_no_request_value_in_the_log(service: Proc, database: str) -> None:
    """The INSERT fails in Postgres: the error is logged (with its traceback) without the
    statement's parameters, so neither the audio_url nor the relay header value appear."""
    key = create_key_in(database, ALL_SCOPES, name="logs")
    body = {
        "audio_url": f"https://example.com/{MARKER}.wav",
        "webhook_url": "http://127.0.0.1:9/aai",
        "webhook_auth_header_name": "X-Relay",
        "webhook_auth_header_value": RELAY_VALUE,
    }
    response, log = _submit(service, key, body)
    # A row the database refuses after validation is the service's failure, not the
    # caller's: 500 with a request id to quote, no detail.
    assert response.status_code == 500, response.text
    assert response.json()["error"] == "InternalError"
    assert response.json()["request_id"]
    assert MARKER not in response.text
    assert RELAY_VALUE not in response.text
    # The failed insert was logged, traceback and all...
    assert "request.unhandled_error" in log
    assert "check_violation" in log or "row refused by the test" in log
    # ...without the statement's parameters (hide_parameters) or any request value.
    assert MARKER not in log
    assert RELAY_VALUE not in log
    assert "[parameters" not in log


@pytest.mark.parametrize(
    "payload",
    [
        {"audio_url": "https://example.com/a\u0000b.wav"},
        {"audio_url": "https://example.com/a.wav", "webhook_auth_header_name": "X-\u0000"},
    ],
)
def test_a_nul_is_refused_at_the_boundary_without_a_value_in_the_log(
    service: Proc, database: str, payload: dict[str, str]
) -> None:
    """A NUL Postgres can't store never reaches it: the boundary answers 4xx naming the
    field, and the log keeps no request value."""
    key = create_key_in(database, ALL_SCOPES, name="logs")
    body = {
        "webhook_url": "http://127.0.0.1:9/aai",
        "webhook_auth_header_name": "X-Relay",
        "webhook_auth_header_value": RELAY_VALUE,
        **payload,
    }
    response, log = _submit(service, key, body)
    assert response.status_code in (400, 422), response.text
    assert RELAY_VALUE not in response.text
    assert RELAY_VALUE not in log
    assert "[parameters" not in log
    assert "request.unhandled_error" not in log
