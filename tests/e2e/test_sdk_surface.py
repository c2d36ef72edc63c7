"""The rest of what the official SDKs call: LLM Gateway `GET /v1/models` (governed) and
`GET /v2/transcript/{id}/redacted-audio` (ownership checked), end to end: real service
processes against the real emulator, one Postgres."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import assemblyai as aai
import httpx
import pytest

from app.core.config import LLM_MODELS_BY_REGION
from emulator.llm import MODELS
from tests.e2e.test_summaries_support import wav_bytes
from tests.live import Proc, create_key_in, run_emulator, run_service

pytestmark = pytest.mark.e2e

ALLOWED = ("claude-sonnet-4-6", "gemini-2.5-flash")


@pytest.fixture(scope="module")
def surface_emulator() -> Iterator[Proc]:
    env = {
        "EMULATOR_RECOGNITION": "placeholder",
        "EMULATOR_MIN_PROCESSING_S": "0.2",
        "EMULATOR_QUEUED_S": "0.1",
    }
    with run_emulator(env) as proc:
        yield proc


@pytest.fixture(scope="module")
def surface_service(database_url: str, surface_emulator: Proc) -> Iterator[Proc]:
    with run_service(database_url, surface_emulator.url) as proc:
        yield proc


GOVERNED = {
    "LLM_MODELS": ",".join(ALLOWED),
    "UPSTREAM_RETRY_ATTEMPTS": "2",
    "UPSTREAM_RETRY_WAIT_INITIAL_S": "0",
    "UPSTREAM_RETRY_WAIT_MAX_S": "0",
}


@pytest.fixture
def governed_service(database_url: str, surface_emulator: Proc) -> Iterator[Proc]:
    """A fresh service (empty model-list cache) whose LLM_MODELS allows two models."""
    with run_service(database_url, surface_emulator.url, GOVERNED) as proc:
        yield proc


def fault(emulator: Proc, **spec: Any) -> None:
    httpx.post(f"{emulator.url}/_emulator/faults", json=spec, timeout=10).raise_for_status()


def clear_faults(emulator: Proc) -> None:
    httpx.delete(f"{emulator.url}/_emulator/faults", timeout=10).raise_for_status()


# --- GET /v1/models ------------------------------------------------------------------------


def test_models_lists_the_regions_models_for_raw_and_bearer_keys(
    surface_service: Proc, database_url: str
) -> None:
    key = create_key_in(database_url, ["llm"])
    for auth in (key, f"Bearer {key}"):
        answer = httpx.get(
            f"{surface_service.url}/v1/models", headers={"Authorization": auth}, timeout=30
        )
        assert answer.status_code == 200, answer.text
        ids = [m["id"] for m in answer.json()["data"]]
        assert ids == [m for m in MODELS if m in LLM_MODELS_BY_REGION["us"]]


def test_official_sdk_lists_models_through_the_proxy(
    governed_service: Proc, database_url: str
) -> None:
    key = create_key_in(database_url, ["llm"])
    settings = aai.Settings(api_key=key, llm_gateway_base_url=governed_service.url)
    gateway = aai.LLMGateway(client=aai.Client(settings=settings))

    listed = gateway.models.list()

    assert [m.id for m in listed.data] == list(ALLOWED)  # emulator order, LLM_MODELS only
    claude = listed.data[0]
    assert claude.context_length > 0
    assert claude.default_provider.id == "anthropic"
    assert "eu" in claude.available_regions


def test_models_needs_a_key_with_the_llm_scope(surface_service: Proc, database_url: str) -> None:
    url = f"{surface_service.url}/v1/models"
    assert httpx.get(url, timeout=30).status_code == 401
    assert httpx.get(url, headers={"Authorization": "aaip_nope"}, timeout=30).status_code == 401
    transcripts_only = create_key_in(database_url, ["transcripts"])
    refused = httpx.get(url, headers={"Authorization": transcripts_only}, timeout=30)
    assert refused.status_code == 403, refused.text


def test_models_upstream_failures_are_mapped_and_the_list_is_cached(
    governed_service: Proc, surface_emulator: Proc, database_url: str
) -> None:
    key = create_key_in(database_url, ["llm"])
    url = f"{governed_service.url}/v1/models"
    headers = {"Authorization": key}
    clear_faults(surface_emulator)
    fault(surface_emulator, route="GET /v1/models", status=503, count=2)
    failed = httpx.get(url, headers=headers, timeout=30)
    assert failed.status_code == 502, failed.text
    fault(surface_emulator, route="GET /v1/models", status=429, retry_after=120, count=2)
    limited = httpx.get(url, headers=headers, timeout=30)
    assert limited.status_code == 429, limited.text
    clear_faults(surface_emulator)

    listed = httpx.get(url, headers=headers, timeout=30)
    assert listed.status_code == 200, listed.text
    assert [m["id"] for m in listed.json()["data"]] == list(ALLOWED)
    # Upstream failing now does not matter for a minute: the list is cached.
    fault(surface_emulator, route="GET /v1/models", status=503, count=2)
    again = httpx.get(url, headers=headers, timeout=30)
    clear_faults(surface_emulator)
    assert again.status_code == 200, again.text
    assert again.json() == listed.json()


# --- GET /v2/transcript/{id}/redacted-audio ------------------------------------------------


def submit_and_wait(service: Proc, key: str, audio: bytes, **options: Any) -> str:
    headers = {"Authorization": key}
    uploaded = httpx.post(f"{service.url}/v2/upload", content=audio, headers=headers, timeout=30)
    assert uploaded.status_code == 200, uploaded.text
    body = {"audio_url": uploaded.json()["upload_url"], **options}
    submitted = httpx.post(f"{service.url}/v2/transcript", json=body, headers=headers, timeout=30)
    assert submitted.status_code == 200, submitted.text
    transcript_id: str = submitted.json()["id"]
    deadline = time.monotonic() + 30
    while True:
        got = httpx.get(f"{service.url}/v2/transcript/{transcript_id}", headers=headers)
        assert got.status_code == 200, got.text
        if got.json()["status"] in ("completed", "error"):
            assert got.json()["status"] == "completed", got.text
            return transcript_id
        assert time.monotonic() < deadline, "the job did not complete"
        time.sleep(0.2)


REDACTION = {
    "redact_pii": True,
    "redact_pii_policies": ["person_name"],
    "redact_pii_audio": True,
}


def test_redacted_audio_of_an_owned_redaction_job(surface_service: Proc, database_url: str) -> None:
    key = create_key_in(database_url, ["transcripts"])
    other = create_key_in(database_url, ["transcripts"])
    llm_only = create_key_in(database_url, ["llm"])
    audio = wav_bytes(2.0)
    transcript_id = submit_and_wait(surface_service, key, audio, **REDACTION)
    url = f"{surface_service.url}/v2/transcript/{transcript_id}/redacted-audio"

    answer = httpx.get(url, headers={"Authorization": key}, timeout=30)
    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "redacted_audio_ready"
    fetched = httpx.get(answer.json()["redacted_audio_url"], timeout=30)  # no key: signed URL
    assert fetched.status_code == 200
    assert fetched.content == audio  # the emulator serves the original audio

    foreign = httpx.get(url, headers={"Authorization": other}, timeout=30)
    assert foreign.status_code == 404, foreign.text
    assert foreign.json()["error"] == "Transcript not found."
    unknown = httpx.get(
        f"{surface_service.url}/v2/transcript/no-such-id/redacted-audio",
        headers={"Authorization": key},
        timeout=30,
    )
    assert unknown.status_code == 404, unknown.text
    assert httpx.get(url, headers={"Authorization": llm_only}, timeout=30).status_code == 403
    assert httpx.get(url, timeout=30).status_code == 401


def test_redacted_audio_of_a_job_without_redaction_is_upstreams_400(
    surface_service: Proc, database_url: str
) -> None:
    key = create_key_in(database_url, ["transcripts"])
    transcript_id = submit_and_wait(surface_service, key, wav_bytes(1.5))

    answer = httpx.get(
        f"{surface_service.url}/v2/transcript/{transcript_id}/redacted-audio",
        headers={"Authorization": key},
        timeout=30,
    )

    assert answer.status_code == 400, answer.text
    assert "redact_pii_audio" in answer.json()["error"]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v1/understanding"),
        ("POST", "/v1/understanding/validate"),
        ("POST", "/v1/transcribe"),
        ("POST", "/v1/transcribe/live"),
        ("POST", "/v1/warm"),
        ("POST", "/v1/speech"),
        ("GET", "/v2/realtime/token"),
    ],
)
def test_sdk_calls_deliberately_not_served_are_404(
    surface_service: Proc, database_url: str, method: str, path: str
) -> None:
    """docs/guide.md lists these as not served: they answer 404, never reach upstream."""
    key = create_key_in(database_url, ["transcripts", "llm"])
    answer = httpx.request(
        method, f"{surface_service.url}{path}", headers={"Authorization": key}, json={}
    )
    assert answer.status_code == 404, answer.text
