"""One regression per class of issue 14 items 1, 2, 3 and 9, each as it was reproduced:
every one answered a 5xx (or the wrong status) before the input boundary existed.

In-process (httpx over ASGI, a real Postgres) except the forwarded-address test, which
needs uvicorn's real socket and proxy handling (the live service).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import jsonschema_rs
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute
from httpx import AsyncClient
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.core.boundary import (
    MAX_JSON_DEPTH,
    BoundaryRoute,
    TrustedProxies,
    apply_forwarded,
    parse_json,
)
from app.core.db import create_sessionmaker, utcnow
from app.core.security import hash_key
from app.identity.scopes import ALL_SCOPES
from app.keys import service as keys_service
from app.transcripts.models import Job
from app.webhooks.service import WEBHOOK_AUTH_HEADER
from tests.live import Proc

DEEP = b"[" * 10_000 + b"]" * 10_000
SECRET = "s3cret-per-job"


def assert_refused(response: httpx.Response, *names: str, status: int = 400) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert isinstance(body["error"], str)
    for name in names:
        assert name in body["detail"], body


@pytest.fixture
def committed(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return create_sessionmaker(engine)


@pytest.fixture
async def admin_key(committed: async_sessionmaker[AsyncSession]) -> str:
    """A committed admin key: some routes authenticate outside the test's transaction."""
    async with committed() as session, session.begin():
        _, raw = await keys_service.create_key(session, "boundary admin", ALL_SCOPES)
    return raw


async def committed_job(
    committed: async_sessionmaker[AsyncSession], *, secret: str = SECRET
) -> Job:
    async with committed() as session, session.begin():
        key, _ = await keys_service.create_key(session, "boundary job owner", ["transcripts"])
        job = Job(
            key_id=key.id,
            audio_url="https://example.com/a.wav",
            upstream_id=f"tr_{uuid.uuid4().hex}",
            status="queued",
            webhook_secret_hash=hash_key(secret),
        )
        session.add(job)
    return job


# --- 1. NUL characters (and lone surrogates) -------------------------------------------------


async def test_nul_in_a_submitted_url_is_400_naming_the_field(
    client: AsyncClient, admin_key: str
) -> None:
    auth = {"Authorization": admin_key}
    raw = b'{"audio_url": "http://x/a\\u0000b"}'
    for path in ("/v2/transcript", "/api/transcripts"):
        response = await client.post(path, content=raw, headers=auth)
        assert_refused(response, "audio_url", "NUL")


async def test_lone_surrogate_in_a_body_is_400_naming_the_field(
    client: AsyncClient, admin_key: str
) -> None:
    raw = b'{"audio_url": "http://x/\\ud800"}'
    response = await client.post(
        "/v2/transcript", content=raw, headers={"Authorization": admin_key}
    )
    assert_refused(response, "audio_url", "surrogate")
    # A proper pair (one astral character) is fine: it is refused later, for the URL's host.
    pair = b'{"name": "ok \\ud83d\\ude00", "scopes": ["llm"]}'
    headers = {"Authorization": admin_key, "Content-Type": "application/json"}
    created = await client.post("/api/keys", content=pair, headers=headers)
    assert created.status_code == 201, created.text


async def test_nul_in_path_query_and_header_is_400(client: AsyncClient, admin_key: str) -> None:
    auth = {"Authorization": admin_key}
    assert_refused(await client.get("/v2/transcript/%00", headers=auth), "path")
    assert_refused(await client.get("/v2/transcript?before_id=%00", headers=auth), "before_id")
    assert_refused(await client.get("/api/transcripts?cursor=a%00", headers=auth), "cursor")
    assert_refused(await client.get("/api/audit?end_user=%00", headers=auth), "end_user")
    assert_refused(await client.get("/api/audit?action=a%00b", headers=auth), "action")
    response = await client.post(
        "/api/tokens/streaming", json={}, headers={**auth, "X-End-User": "a\x00b"}
    )
    assert_refused(response, "x-end-user")
    # The compatible surface keeps upstream's shape: `error` is the sentence.
    compat = (await client.get("/v2/transcript/%00", headers=auth)).json()
    assert "NUL" in compat["error"]


async def test_nul_in_stored_json_fields_is_400(client: AsyncClient, admin_key: str) -> None:
    auth = {"Authorization": admin_key}
    key = await client.post("/api/keys", json={"name": "a\x00", "scopes": ["llm"]}, headers=auth)
    assert_refused(key, "name", "NUL")
    summary = await client.post(
        f"/api/transcripts/{uuid.uuid4()}/summaries", json={"prompt": "x\x00"}, headers=auth
    )
    assert_refused(summary, "prompt", "NUL")
    token = await client.post("/api/tokens/streaming", json={"end_user": "\x00"}, headers=auth)
    assert_refused(token, "end_user", "NUL")
    session = await client.post("/api/session", json={"key": admin_key, "end_user": "u\x00"})
    assert_refused(session, "end_user")


async def test_webhook_receiver_checks_its_secret_before_the_body_matters(
    client: AsyncClient, committed: async_sessionmaker[AsyncSession]
) -> None:
    job = await committed_job(committed)
    url = f"/webhooks/assemblyai/{job.id}"
    nul = json.dumps({"transcript_id": "tr_\x00", "status": "completed"}).encode()
    deep = b"[" * 5_000 + b"]" * 5_000  # fits the receiver's size cap
    for body in (nul, deep, b'{"transcript_id": "\\ud800"}'):
        wrong = await client.post(url, content=body, headers={WEBHOOK_AUTH_HEADER: "wrong"})
        assert wrong.status_code == 401, wrong.text
        missing = await client.post(url, content=body)
        assert missing.status_code == 401, missing.text
        right = await client.post(url, content=body, headers={WEBHOOK_AUTH_HEADER: SECRET})
        assert right.status_code == 400, right.text


async def test_nul_in_a_multipart_part_header_is_400_before_upstream(
    client: AsyncClient, admin_key: str
) -> None:
    """The file part's filename and Content-Type are stored with the upload row."""
    parts = (
        ('filename="a\x00b.wav"', "audio/wav", "filename"),
        ('filename="a.wav"', "audio/x\x00wav", "Content-Type"),
    )
    for disposition, content_type, field in parts:
        body = (
            f'--b\r\nContent-Disposition: form-data; name="file"; {disposition}\r\n'
            f"Content-Type: {content_type}\r\n\r\nRIFF0000WAVE\r\n--b--\r\n"
        ).encode("utf-8", "surrogateescape")
        headers = {"Authorization": admin_key, "Content-Type": "multipart/form-data; boundary=b"}
        for path in ("/api/uploads", "/api/transcripts"):
            response = await client.post(path, content=body, headers=headers)
            assert_refused(response, field, "NUL")


# --- 2. Deep JSON ----------------------------------------------------------------------------


async def test_deep_json_is_400_on_every_json_route(client: AsyncClient, admin_key: str) -> None:
    auth = {"Authorization": admin_key, "Content-Type": "application/json"}
    for path in (
        "/v2/transcript",
        "/api/transcripts",
        "/v1/chat/completions",
        "/api/keys",
        "/api/tokens/streaming",
        "/api/session",
    ):
        response = await client.post(path, content=DEEP, headers=auth)
        assert_refused(response, "nested deeper")
    # Within the limit is parsed as usual (and refused for what it is, not its depth).
    ok_depth = b"[" * MAX_JSON_DEPTH + b"]" * MAX_JSON_DEPTH
    response = await client.post("/v2/transcript", content=ok_depth, headers=auth)
    assert response.status_code == 400
    assert "nested" not in response.json()["detail"]


def test_depth_scan_ignores_brackets_inside_strings() -> None:
    text = json.dumps({"a": "[" * 1000 + "{" * 1000, "b": [[['\\"[']]]})
    assert parse_json(text.encode())["b"] == [[['\\"[']]]


def test_nan_and_infinite_numbers_are_not_json() -> None:
    for raw in (b'{"a": NaN}', b'{"a": Infinity}', b'{"a": -Infinity}', b'{"a": 1e999}'):
        with pytest.raises(Exception, match="not valid JSON"):
            parse_json(raw)


# --- 3. Values outside their column's type ---------------------------------------------------


def test_forwarded_for_is_parsed_strictly() -> None:
    trusted = TrustedProxies("127.0.0.1,::1,10.0.0.0/8")

    def client_of(forwarded: str, peer: str = "127.0.0.1") -> str:
        scope: dict[str, Any] = {
            "type": "http",
            "client": (peer, 5000),
            "headers": [(b"x-forwarded-for", forwarded.encode())],
        }
        apply_forwarded(scope, trusted)
        host: str = scope["client"][0]
        return host

    assert client_of("203.0.113.7") == "203.0.113.7"
    assert client_of("203.0.113.7, 10.1.2.3") == "203.0.113.7"  # the nearest untrusted hop
    assert client_of("2001:db8::1") == "2001:db8::1"
    for invalid in ("unknown", "300.1.1.1", "203.0.113.7:8080", "", "1.2.3.4, junk", "fe80::1%1"):
        assert client_of(invalid) == "127.0.0.1", invalid
    assert client_of("203.0.113.7", peer="198.51.100.1") == "198.51.100.1"  # untrusted peer


def test_invalid_forwarded_for_from_a_trusted_peer_never_reaches_postgres(
    live_service: Proc, live_admin_key: str
) -> None:
    """Through uvicorn's real socket: `unknown` or `300.1.1.1` from the trusted peer
    (127.0.0.1) used to be written to the audit trail's INET column (a 5xx)."""
    for forwarded in ("unknown", "300.1.1.1"):
        name = f"xff {uuid.uuid4().hex[:8]}"
        response = httpx.post(
            f"{live_service.url}/api/keys",
            json={"name": name, "scopes": ["llm"]},
            headers={"Authorization": live_admin_key, "X-Forwarded-For": forwarded},
            timeout=10,
        )
        assert response.status_code == 201, response.text
        subject = response.json()["id"]
        assert _audit_client_ip(live_service, live_admin_key, subject) == "127.0.0.1"
    good = httpx.post(
        f"{live_service.url}/api/keys",
        json={"name": "xff good", "scopes": ["llm"]},
        headers={"Authorization": live_admin_key, "X-Forwarded-For": "203.0.113.9"},
        timeout=10,
    )
    assert good.status_code == 201, good.text
    assert _audit_client_ip(live_service, live_admin_key, good.json()["id"]) == "203.0.113.9"


def _audit_client_ip(service: Proc, admin_key: str, subject: str) -> str | None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        page = httpx.get(
            f"{service.url}/api/audit",
            params={"action": "key.create", "limit": 50},
            headers={"Authorization": admin_key},
            timeout=10,
        ).json()
        for item in page["items"]:
            if item["subject"] == subject:
                ip: str | None = item["client_ip"]
                return ip
        time.sleep(0.1)
    raise AssertionError(f"no audit event for {subject}")


async def test_last_event_id_beyond_bigint_is_400(
    client: AsyncClient, session: AsyncSession
) -> None:
    key, raw = await keys_service.create_key(session, "sse", ["transcripts"])
    job = Job(key_id=key.id, audio_url="https://example.com/a.wav", status="queued")
    session.add(job)
    await session.flush()
    response = await client.get(
        f"/api/transcripts/{job.id}/events",
        headers={"Authorization": raw, "Last-Event-ID": "99999999999999999999"},
    )
    assert_refused(response, "Last-Event-ID")


async def test_token_policy_values_beyond_int32_are_422(
    client: AsyncClient, admin_key: str
) -> None:
    me = await client.get("/api/session", headers={"Authorization": admin_key})
    key_id = me.json()["key_id"]
    for field in ("key_mints_per_minute", "key_daily_session_s", "end_user_daily_session_s"):
        response = await client.put(
            f"/api/tokens/policies/{key_id}",
            json={field: 2**31},
            headers={"Authorization": admin_key},
        )
        assert response.status_code == 422, response.text
        assert field in response.json()["detail"]


async def test_audit_cursor_beyond_bigint_is_400(client: AsyncClient, admin_key: str) -> None:
    import base64

    cursor = base64.urlsafe_b64encode(b"a" + b"9" * 30).decode().rstrip("=")
    response = await client.get(
        "/api/audit", params={"cursor": cursor}, headers={"Authorization": admin_key}
    )
    assert_refused(response, "cursor")


# --- 9. OpenAPI = behaviour ------------------------------------------------------------------


async def test_422_body_matches_its_documented_schema(client: AsyncClient, admin_key: str) -> None:
    document = (await client.get("/openapi.json")).json()
    response_doc = document["paths"]["/api/keys"]["post"]["responses"]["422"]
    schema = {
        **response_doc["content"]["application/json"]["schema"],
        "components": document["components"],
    }
    sent = await client.post("/api/keys", json={"name": 5}, headers={"Authorization": admin_key})
    assert sent.status_code == 422
    jsonschema_rs.validate(schema, sent.json())
    assert isinstance(sent.json()["detail"], str)


async def test_every_error_status_is_documented_with_a_body(app: FastAPI) -> None:
    document = app.openapi()
    for path, item in document["paths"].items():
        for method, operation in item.items():
            responses = operation["responses"]
            assert "400" in responses, (method, path)
            for status, response in responses.items():
                if int(status) >= 400:
                    assert response.get("content"), (method, path, status)


async def test_allow_lists_every_method_of_the_path(client: AsyncClient) -> None:
    response = await client.request("OPTIONS", "/v2/transcript")
    assert response.status_code == 405
    allowed = {m.strip() for m in response.headers["allow"].split(",")}
    assert {"GET", "POST"} <= allowed
    put = await client.put("/api/keys")
    assert {"GET", "POST"} <= {m.strip() for m in put.headers["allow"].split(",")}


async def test_a_deleted_job_is_404_on_both_surfaces(
    client: AsyncClient, session: AsyncSession
) -> None:
    key, raw = await keys_service.create_key(session, "deleter", ["transcripts"])
    job = Job(
        key_id=key.id,
        audio_url="https://example.com/a.wav",
        upstream_id=f"tr_{uuid.uuid4().hex}",
        status="completed",
        deleted_at=utcnow(),
    )
    session.add(job)
    await session.flush()
    auth = {"Authorization": raw}
    assert (await client.get(f"/v2/transcript/{job.upstream_id}", headers=auth)).status_code == 404
    assert (await client.get(f"/api/transcripts/{job.id}", headers=auth)).status_code == 404


async def test_an_empty_list_cursor_is_no_cursor(client: AsyncClient, admin_key: str) -> None:
    auth = {"Authorization": admin_key}
    for query in ("before_id=", "after_id=", "before_id=&after_id="):
        response = await client.get(f"/v2/transcript?{query}", headers=auth)
        assert response.status_code == 200, (query, response.text)


def _routes(routes: Any) -> Iterator[Any]:
    for route in routes:
        included = getattr(route, "original_router", None)  # FastAPI includes lazily
        if included is not None:
            yield from _routes(included.routes)
        else:
            yield route


def test_every_route_crosses_the_boundary(app: FastAPI) -> None:
    """By construction: every API route decodes JSON through parse_json."""
    api_routes = [r for r in _routes(app.routes) if isinstance(r, APIRoute)]
    assert len(api_routes) > 30
    assert [r.path for r in api_routes if not isinstance(r, BoundaryRoute)] == []


async def test_a_websocket_with_nul_in_its_query_is_closed_before_accept(app: FastAPI) -> None:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "websocket.connect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "websocket",
        "path": "/v3/ws",
        "raw_path": b"/v3/ws",
        "query_string": b"token=a%00b",
        "headers": [],
        "client": ("127.0.0.1", 5000),
        "root_path": "",
    }
    await app(scope, receive, send)
    assert sent == [
        {
            "type": "websocket.close",
            "code": 1008,
            "reason": "The query parameter `token` contains a NUL character.",
        }
    ]
