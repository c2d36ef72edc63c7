"""Properties of the input boundary: whatever arrives, the answer is never a 5xx.

Arbitrary unicode (NUL and lone surrogates included), JSON nested far beyond the limit,
numbers far beyond every column, on the submit, chat, token, webhook and list routes of the
real service (uvicorn on a real socket, its own database, the emulator as AssemblyAI).
Fixed seed (`derandomize`), bounded example counts.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.core.db import create_engine, create_sessionmaker
from app.core.security import hash_key
from app.identity.scopes import ALL_SCOPES
from app.keys import service as keys_service
from app.transcripts.models import Job
from app.transcripts.service import WEBHOOK_AUTH_HEADER
from tests.live import Proc, run_service

WEBHOOK_SECRET = "property-secret"
PROPERTY = settings(
    max_examples=60,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


class Service:
    def __init__(self, url: str, key: str, job_id: uuid.UUID, upstream_id: str) -> None:
        self.client = httpx.Client(base_url=url, timeout=30)
        self.key = key
        self.job_id = job_id
        self.upstream_id = upstream_id

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": self.key, **kwargs.pop("headers", {})}
        if params := kwargs.pop("params", None):
            # Percent-encoded by hand: a lone surrogate goes out as its (invalid) UTF-8 bytes.
            path += "?" + "&".join(f"{name}={_quoted(value)}" for name, value in params.items())
        response = self.client.request(method, path, headers=headers, **kwargs)
        assert response.status_code < 500, (method, path, response.status_code, response.text)
        if response.status_code >= 400:
            body = response.json()
            assert isinstance(body.get("error"), str), body
        return response


def _quoted(value: str) -> str:
    return quote(value.encode("utf-8", "surrogatepass"), safe="")


def _seed(database_url: str) -> tuple[str, uuid.UUID, str]:
    async def seed() -> tuple[str, uuid.UUID, str]:
        engine = create_engine(database_url, pool_size=1)
        try:
            async with create_sessionmaker(engine)() as session, session.begin():
                key, raw = await keys_service.create_key(session, "properties", ALL_SCOPES)
                upstream_id = f"tr_{uuid.uuid4().hex}"
                job = Job(
                    key_id=key.id,
                    audio_url="https://example.com/a.wav",
                    upstream_id=upstream_id,
                    status="queued",
                    webhook_secret_hash=hash_key(WEBHOOK_SECRET),
                )
                session.add(job)
                await session.flush()
                return raw, job.id, upstream_id
        finally:
            await engine.dispose()

    return asyncio.run(seed())


@pytest.fixture(scope="module")
def service(make_database: Callable[..., str], emulator: Proc) -> Iterator[Service]:
    database_url = make_database()
    raw, job_id, upstream_id = _seed(database_url)
    env = {"TOKEN_KEY_MINTS_PER_MINUTE": "0", "TOKEN_END_USER_MINTS_PER_MINUTE": "0"}
    with run_service(database_url, emulator.url, env=env) as proc:
        svc = Service(proc.url, raw, job_id, upstream_id)
        try:
            yield svc
        finally:
            svc.client.close()


# --- Strategies ------------------------------------------------------------------------------

# Every code point, lone surrogates and NUL included (hypothesis leaves surrogates out unless
# asked: category Cs).
text = st.text(st.characters(codec=None, exclude_categories=()), max_size=40) | st.sampled_from(
    ["\x00", "a\x00b", "\ud800", "x\udfffy", "\ud83d\ude00", "", " " * 3]
)
huge = st.integers(min_value=-(10**40), max_value=10**40) | st.sampled_from(
    [2**31, 2**63, -(2**63) - 1, 10**400]
)
numbers = huge | st.floats(allow_nan=True, allow_infinity=True)
scalars = st.none() | st.booleans() | numbers | text
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(text, children, max_size=4),
    max_leaves=12,
)


@st.composite
def deep_json(draw: st.DrawFn) -> bytes:
    depth = draw(st.integers(min_value=60, max_value=12_000))
    opener = draw(st.sampled_from(["[", '{"a":']))
    closer = "]" if opener == "[" else "}"
    return (opener * depth + "1" + closer * depth).encode()


def encode(value: Any) -> bytes:
    """JSON as a hostile client may send it: NaN/Infinity and escaped lone surrogates."""
    return json.dumps(value, ensure_ascii=True, allow_nan=True).encode()


bodies = json_values.map(encode) | deep_json() | st.binary(max_size=200)
json_objects = st.dictionaries(text, json_values, max_size=5)
JSON = {"Content-Type": "application/json"}


# --- Properties ------------------------------------------------------------------------------


@PROPERTY
@given(audio_url=text, extra=json_objects)
def test_submit_never_5xx(service: Service, audio_url: str, extra: dict[str, Any]) -> None:
    body = encode({**extra, "audio_url": audio_url})
    for path in ("/v2/transcript", "/api/transcripts"):
        service.request("POST", path, content=body, headers=JSON)


@PROPERTY
@given(body=bodies)
def test_submit_raw_bodies_never_5xx(service: Service, body: bytes) -> None:
    service.request("POST", "/v2/transcript", content=body, headers=JSON)


@PROPERTY
@given(model=text, messages=json_values, extra=json_objects, raw=bodies)
def test_chat_never_5xx(
    service: Service, model: str, messages: Any, extra: dict[str, Any], raw: bytes
) -> None:
    body = encode({**extra, "model": model, "messages": messages})
    service.request("POST", "/v1/chat/completions", content=body, headers=JSON)
    service.request("POST", "/v1/chat/completions", content=raw, headers=JSON)


@PROPERTY
@given(
    fields=st.dictionaries(
        st.sampled_from(
            [
                "expires_in_seconds",
                "max_session_duration_seconds",
                "end_user",
                "sample_rate",
                "speech_model",
                "keyterms_prompt",
                "prompt",
                "inactivity_timeout",
            ]
        ),
        json_values,
        max_size=4,
    ),
    expires=text | huge.map(str),
    # What HTTP lets a header value carry (visible ASCII, space, obs-text).
    end_user=st.text(
        st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f").filter(
            lambda c: not 0x80 <= ord(c) < 0xA0
        ),
        max_size=300,
    ),
)
def test_tokens_never_5xx(
    service: Service, fields: dict[str, Any], expires: str, end_user: str
) -> None:
    service.request("POST", "/api/tokens/streaming", content=encode(fields), headers=JSON)
    service.request("POST", "/api/tokens/agents", content=encode(fields), headers=JSON)
    service.request("GET", "/v3/token", params={"expires_in_seconds": expires})
    value = (end_user.strip() or "x").encode("latin-1")
    service.request("POST", "/api/tokens/streaming", json={}, headers={"X-End-User": value})


@PROPERTY
@given(body=bodies, secret=st.sampled_from([None, "wrong", WEBHOOK_SECRET]), ours=st.booleans())
def test_webhook_never_5xx(service: Service, body: bytes, secret: str | None, ours: bool) -> None:
    job_id = service.job_id if ours else uuid.uuid4()
    headers = {**JSON, **({WEBHOOK_AUTH_HEADER: secret} if secret else {})}
    response = service.client.post(f"/webhooks/assemblyai/{job_id}", content=body, headers=headers)
    assert response.status_code < 500, response.text
    if ours and secret != WEBHOOK_SECRET:
        assert response.status_code in (401, 413), response.text


@PROPERTY
@given(
    before=text | huge.map(str),
    after=text,
    limit=text | huge.map(str),
    created=text | huge.map(str),
    cursor=text,
    since=text | huge.map(str),
)
def test_lists_never_5xx(
    service: Service,
    before: str,
    after: str,
    limit: str,
    created: str,
    cursor: str,
    since: str,
) -> None:
    service.request(
        "GET",
        "/v2/transcript",
        params={"before_id": before, "after_id": after, "limit": limit, "created_on": created},
    )
    service.request("GET", "/api/transcripts", params={"cursor": cursor, "limit": limit})
    service.request("GET", "/api/audit", params={"cursor": cursor, "end_user": before})
    service.request("GET", "/api/audit", params={"action": after, "since": since})
    service.request("GET", "/api/usage", params={"since": since, "until": created})
    raw_id = _quoted(before) or "x"
    service.request("GET", f"/v2/transcript/{raw_id}")
    service.request("GET", f"/v2/transcript/{raw_id}/sentences")
