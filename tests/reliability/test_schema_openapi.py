"""The OpenAPI document is the truth: schemathesis, all checks, against the real service.

The service runs as `aai-proxy serve` runs it (uvicorn, a real socket) on a database of
its own, with the emulator as AssemblyAI, and is called with a real admin key so requests
reach the handlers. Fixed seed (`derandomize`), a bounded number of examples per operation.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from pydantic import SecretStr
from schemathesis.config._checks import PositiveDataAcceptanceConfig

from app.core.config import Settings
from app.identity.scopes import ALL_SCOPES
from app.main import create_app
from tests.live import Proc, create_key_in, run_service

# Bounded so the whole run stays well under 3 minutes on a 2-core machine.
MAX_EXAMPLES = 20


@pytest.fixture(scope="module")
def schema_service(make_database: Callable[..., str], emulator: Proc) -> Iterator[tuple[str, str]]:
    """A service process of its own (its own database: the generated calls create keys,
    jobs and sessions nobody else should see), and an admin key for it."""
    database_url = make_database()
    key = create_key_in(database_url, ALL_SCOPES, name="schemathesis admin")
    # High mint limits: the generated calls are not what the limits are about.
    env = {"TOKEN_KEY_MINTS_PER_MINUTE": "0", "TOKEN_END_USER_MINTS_PER_MINUTE": "0"}
    with run_service(database_url, emulator.url, env=env) as proc:
        yield proc.url, key


def _document() -> dict[str, Any]:
    """The app's OpenAPI document (the test checks the service serves this very one)."""
    settings = Settings(_env_file=None, APP_ENV="test", database_url=SecretStr("postgresql://x/y"))
    document: dict[str, Any] = create_app(settings, configure_logs=False).openapi()
    return document


# Loaded at collection (schemathesis's lazy `from_fixture` does not run under pytest 9).
schema = schemathesis.openapi.from_dict(_document())
schema.config.generation.update(max_examples=MAX_EXAMPLES, deterministic=True, allow_x00=True)
# A schema-valid request may still be refused for what a schema cannot say: a documented
# rule (400: policy, a NUL the boundary refuses, a bad cursor; 409; 413). A 422 for
# schema-valid data stays a failure: the document and the validation disagree.
schema.config.checks.positive_data_acceptance = PositiveDataAcceptanceConfig(
    expected_statuses=["2xx", "400", "401", "403", "404", "409", "413", "429"]
)


def test_the_service_serves_the_document_under_test(schema_service: tuple[str, str]) -> None:
    url, _ = schema_service
    assert httpx.get(f"{url}/openapi.json", timeout=10).json() == _document()


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    derandomize=True,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    print_blob=True,
)
def test_every_answer_is_documented_and_none_is_a_server_error(
    case: schemathesis.Case, schema_service: tuple[str, str]
) -> None:
    url, key = schema_service
    case.call_and_validate(base_url=url, headers={"Authorization": key}, timeout=20)
