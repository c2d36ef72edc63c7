"""Token endpoints: validation as upstream, scopes, clamping, answers, upstream errors,
per-minute limits, audit rows, and what never reaches a log."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from httpx import AsyncClient

from tests.tokens.conftest import FakeUpstream, client_for

STREAMING = "tokens:streaming"
AGENTS = "tokens:agents"


@pytest.mark.parametrize("path", ["/v3/token", "/v1/token"])
@pytest.mark.parametrize(
    ("query", "needle"),
    [
        ("", "expires_in_seconds is required"),
        ("?expires_in_seconds=", "expires_in_seconds is required"),
        ("?expires_in_seconds=0", "between 1 and 600"),
        ("?expires_in_seconds=601", "between 1 and 600"),
        ("?expires_in_seconds=-5", "between 1 and 600"),
        ("?expires_in_seconds=abc", "must be an integer"),
        ("?expires_in_seconds=1.5", "must be an integer"),
        ("?expires_in_seconds=60&max_session_duration_seconds=59", "between 60 and 10800"),
        ("?expires_in_seconds=60&max_session_duration_seconds=10801", "between 60 and 10800"),
        ("?expires_in_seconds=60&max_session_duration_seconds=1h", "must be an integer"),
    ],
)
async def test_bad_parameters_are_400_before_any_upstream_call(
    client: AsyncClient,
    committed_key: Callable[..., Any],
    fake_upstream: FakeUpstream,
    audit_rows: Callable[..., Any],
    path: str,
    query: str,
    needle: str,
) -> None:
    raw, key_id = await committed_key(STREAMING, AGENTS)
    response = await client.get(path + query, headers={"Authorization": raw})
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "InvalidTokenParameter"
    assert needle in response.json()["detail"]
    assert fake_upstream.calls == []
    [row] = await audit_rows(key_id)
    assert row.outcome == "refused"
    assert row.detail["status"] == 400


async def test_compat_answers_like_upstream_and_accepts_both_header_styles(
    client: AsyncClient, committed_key: Callable[..., Any], fake_upstream: FakeUpstream
) -> None:
    raw, _ = await committed_key(STREAMING, AGENTS)
    for path, header in [
        ("/v3/token", raw),
        ("/v3/token", f"Bearer {raw}"),
        ("/v1/token", f"Bearer {raw}"),
        ("/v1/token", raw),
    ]:
        response = await client.get(
            path, params={"expires_in_seconds": 30}, headers={"Authorization": header}
        )
        assert response.status_code == 200, response.text
        assert response.json() == {"token": fake_upstream.issued[-1]}
        assert response.headers["cache-control"] == "no-store"
    # Upstream was called with the service's key in each host's style, never the proxy key.
    streaming, _, agents, _ = fake_upstream.calls
    assert streaming.url.host == "streaming.test"
    assert streaming.url.path == "/v3/token"
    assert not streaming.headers["authorization"].startswith("Bearer ")
    assert agents.url.host == "agents.test"
    assert agents.url.path == "/v1/token"
    assert agents.headers["authorization"].startswith("Bearer ")
    assert all(raw not in c.headers["authorization"] for c in fake_upstream.calls)


async def test_scopes_and_authentication(
    client: AsyncClient,
    committed_key: Callable[..., Any],
    fake_upstream: FakeUpstream,
    audit_rows: Callable[..., Any],
) -> None:
    streaming_only, streaming_id = await committed_key(STREAMING)
    agents_only, _ = await committed_key(AGENTS)
    transcripts, _ = await committed_key("transcripts")
    q = {"expires_in_seconds": 60}
    assert (await client.get("/v3/token", params=q)).status_code == 401
    bad = await client.get("/v3/token", params=q, headers={"Authorization": "aaip_nope12345678"})
    assert bad.status_code == 401
    assert (
        await client.get("/v1/token", params=q, headers={"Authorization": streaming_only})
    ).status_code == 403
    assert (
        await client.get("/v3/token", params=q, headers={"Authorization": agents_only})
    ).status_code == 403
    for path in ("/v3/token", "/v1/token"):
        denied = await client.get(path, params=q, headers={"Authorization": transcripts})
        assert denied.status_code == 403
        assert "scope" in denied.json()["detail"]
    assert (
        await client.post("/api/tokens/agents", headers={"Authorization": streaming_only})
    ).status_code == 403
    assert fake_upstream.calls == []
    ok = await client.get("/v3/token", params=q, headers={"Authorization": streaming_only})
    assert ok.status_code == 200
    rows = await audit_rows(streaming_id)
    assert [(r.action, r.outcome) for r in rows] == [
        ("token.agents", "refused"),
        ("token.agents", "refused"),
        ("token.streaming", "granted"),
    ]


async def test_lifetimes_are_clamped_to_policy(
    client: AsyncClient,
    committed_key: Callable[..., Any],
    fake_upstream: FakeUpstream,
    audit_rows: Callable[..., Any],
) -> None:
    raw, key_id = await committed_key(STREAMING)
    h = {"Authorization": raw}
    # Above the defaults (60 s token, 1 h session): clamped.
    response = await client.get(
        "/v3/token",
        params={"expires_in_seconds": 600, "max_session_duration_seconds": 10800},
        headers=h,
    )
    assert response.status_code == 200
    assert fake_upstream.params() == {
        "expires_in_seconds": "60",
        "max_session_duration_seconds": "3600",
    }
    # Below: kept. Omitted session: the policy maximum, not upstream's 3 h default.
    await client.get("/v3/token", params={"expires_in_seconds": 10}, headers=h)
    assert fake_upstream.params() == {
        "expires_in_seconds": "10",
        "max_session_duration_seconds": "3600",
    }
    clamped, kept = await audit_rows(key_id)
    assert clamped.detail["requested_expires_in_s"] == 600
    assert clamped.detail["granted_expires_in_s"] == 60
    assert clamped.detail["requested_session_s"] == 10800
    assert clamped.detail["granted_session_s"] == 3600
    assert clamped.detail["clamped"] is True
    assert kept.detail["clamped"] is False


async def test_per_key_policy_overrides_the_defaults(
    client: AsyncClient, committed_key: Callable[..., Any], fake_upstream: FakeUpstream
) -> None:
    admin, _ = await committed_key("admin")
    raw, key_id = await committed_key(STREAMING)
    other, _ = await committed_key(STREAMING)
    put = await client.put(
        f"/api/tokens/policies/{key_id}",
        json={"max_expires_in_s": 300, "max_session_s": 600},
        headers={"Authorization": admin},
    )
    assert put.status_code == 200, put.text
    assert put.json()["max_expires_in_s"] == 300
    assert sorted(put.json()["overrides"]) == ["max_expires_in_s", "max_session_s"]
    assert (
        await client.put(f"/api/tokens/policies/{key_id}", json={}, headers={"Authorization": raw})
    ).status_code == 403
    q = {"expires_in_seconds": 600, "max_session_duration_seconds": 10800}
    await client.get("/v3/token", params=q, headers={"Authorization": raw})
    assert fake_upstream.params() == {
        "expires_in_seconds": "300",
        "max_session_duration_seconds": "600",
    }
    await client.get("/v3/token", params=q, headers={"Authorization": other})
    assert fake_upstream.params()["expires_in_seconds"] == "60"
    got = await client.get(f"/api/tokens/policies/{key_id}", headers={"Authorization": admin})
    assert got.json()["max_session_s"] == 600


async def test_app_streaming_endpoint_builds_the_websocket_url(
    client: AsyncClient, committed_key: Callable[..., Any], fake_upstream: FakeUpstream
) -> None:
    raw, _ = await committed_key(STREAMING)
    response = await client.post("/api/tokens/streaming", headers={"Authorization": raw})
    assert response.status_code == 200, response.text
    body = response.json()
    token = fake_upstream.issued[-1]
    assert body["token"] == token
    assert body["expires_in_seconds"] == 60
    assert body["max_session_duration_seconds"] == 3600
    url = urlsplit(body["websocket_url"])
    assert (url.scheme, url.netloc, url.path) == ("ws", "streaming.test", "/v3/ws")
    query = {k: v[0] for k, v in parse_qs(url.query).items()}
    assert query == {
        "sample_rate": "16000",
        "encoding": "pcm_s16le",
        "speech_model": "u3-rt-pro",
        "token": token,
    }

    chosen = await client.post(
        "/api/tokens/streaming",
        json={
            "encoding": "pcm_mulaw",
            "speaker_labels": True,
            "keyterms_prompt": ["AssemblyAI"],
            "expires_in_seconds": 20,
            "max_session_duration_seconds": 120,
        },
        headers={"Authorization": raw},
    )
    assert chosen.status_code == 200, chosen.text
    query = {k: v[0] for k, v in parse_qs(urlsplit(chosen.json()["websocket_url"]).query).items()}
    assert query["encoding"] == "pcm_mulaw"
    assert query["sample_rate"] == "8000"
    assert query["speaker_labels"] == "true"
    assert query["keyterms_prompt"] == '["AssemblyAI"]'
    assert fake_upstream.params() == {
        "expires_in_seconds": "20",
        "max_session_duration_seconds": "120",
    }
    invalid = await client.post(
        "/api/tokens/streaming",
        json={"sample_rate": 100, "encoding": "mp3"},
        headers={"Authorization": raw},
    )
    assert invalid.status_code == 422


async def test_app_agents_endpoint_and_the_region_host(
    make_app: Callable[..., Any], committed_key: Callable[..., Any]
) -> None:
    raw, _ = await committed_key(AGENTS, STREAMING)
    async with (
        make_app(
            assemblyai_streaming_base_url=None,
            assemblyai_streaming_region="eu",
            assemblyai_agents_base_url=None,
        ) as app,
        client_for(app) as client,
    ):
        agents = await client.post("/api/tokens/agents", headers={"Authorization": raw})
        assert agents.status_code == 200, agents.text
        url = urlsplit(agents.json()["websocket_url"])
        assert (url.scheme, url.netloc, url.path) == ("wss", "agents.assemblyai.com", "/v1/ws")
        assert parse_qs(url.query) == {"token": [agents.json()["token"]]}
        streaming = await client.post("/api/tokens/streaming", headers={"Authorization": raw})
        url = urlsplit(streaming.json()["websocket_url"])
        assert url.netloc == "streaming.eu.assemblyai.com"


async def test_upstream_401_is_502_and_429_is_passed_on_and_budget_is_refunded(
    make_app: Callable[..., Any],
    committed_key: Callable[..., Any],
    fake_upstream: FakeUpstream,
    audit_rows: Callable[..., Any],
) -> None:
    raw, key_id = await committed_key(STREAMING)
    async with (
        make_app(token_key_daily_session_s=3600) as app,
        client_for(app) as client,
    ):
        h = {"Authorization": raw}
        q = {"expires_in_seconds": 60, "max_session_duration_seconds": 3600}
        fake_upstream.fail_status = 401
        rejected = await client.get("/v3/token", params=q, headers=h)
        assert rejected.status_code == 502
        assert rejected.json()["error"] == "UpstreamRejectedKey"
        fake_upstream.fail_status, fake_upstream.retry_after = 429, "7"
        limited = await client.get("/v3/token", params=q, headers=h)
        assert limited.status_code == 429
        assert limited.headers["retry-after"] == "7"
        # Neither failure consumed the daily budget: the full hour is still there.
        fake_upstream.fail_status = None
        assert (await client.get("/v3/token", params=q, headers=h)).status_code == 200
        assert await app.state.tokens.limiter.budget_used(key_id) == 3600
    outcomes = [(r.outcome, r.detail["status"]) for r in await audit_rows(key_id)]
    assert outcomes == [("failed", 502), ("failed", 429), ("granted", 200)]


@pytest.mark.usefixtures("steady_minute")
async def test_mints_per_minute_per_key_and_per_end_user(
    make_app: Callable[..., Any],
    committed_key: Callable[..., Any],
    audit_rows: Callable[..., Any],
) -> None:
    raw, key_id = await committed_key(STREAMING)
    async with (
        make_app(token_key_mints_per_minute=5, token_end_user_mints_per_minute=2) as app,
        client_for(app) as client,
    ):
        h = {"Authorization": raw}

        async def mint(end_user: str | None = None) -> Any:
            body = {"end_user": end_user} if end_user else {}
            return await client.post("/api/tokens/streaming", json=body, headers=h)

        assert (await mint("alice")).status_code == 200
        assert (await mint("alice")).status_code == 200
        refused = await mint("alice")
        assert refused.status_code == 429
        assert 1 <= int(refused.headers["retry-after"]) <= 120
        assert "2 tokens per minute per end user" in refused.json()["detail"]
        # alice's refusal took nothing from the key: three more fit, then the key's limit.
        assert (await mint("bob")).status_code == 200
        assert (await mint()).status_code == 200
        assert (await mint()).status_code == 200
        key_refused = await client.get("/v3/token", params={"expires_in_seconds": 5}, headers=h)
        assert key_refused.status_code == 429
        assert "5 tokens per minute per key" in key_refused.json()["detail"]
        assert int(key_refused.headers["retry-after"]) >= 1
    refusals = await audit_rows(key_id, outcome="refused")
    assert [r.detail["limit"] for r in refusals] == [
        "mints_per_minute_per_end_user",
        "mints_per_minute_per_key",
    ]
    assert refusals[0].end_user == "alice"


async def test_audit_rows_carry_who_what_where_but_never_the_token(
    client: AsyncClient,
    committed_key: Callable[..., Any],
    fake_upstream: FakeUpstream,
    audit_rows: Callable[..., Any],
) -> None:
    raw, key_id = await committed_key(STREAMING)
    response = await client.post(
        "/api/tokens/streaming",
        json={"end_user": "user-42", "expires_in_seconds": 30},
        headers={"Authorization": raw, "User-Agent": "audit-test/1.0"},
    )
    assert response.status_code == 200
    [row] = await audit_rows(key_id)
    assert row.action == "token.streaming"
    assert row.outcome == "granted"
    assert row.end_user == "user-42"
    assert str(row.client_ip) == "203.0.113.7"
    assert row.user_agent == "audit-test/1.0"
    assert row.subject == "streaming.test"
    assert row.detail["host"] == "streaming.test"
    assert row.detail["kind"] == "streaming"
    assert row.detail["via"] == "key"
    assert row.detail["requested_expires_in_s"] == 30
    assert row.detail["granted_expires_in_s"] == 30
    assert row.detail["requested_session_s"] is None
    assert row.detail["granted_session_s"] == 3600
    flat = repr(vars(row))
    assert fake_upstream.issued[-1] not in flat
    assert raw not in flat


async def test_no_token_or_key_in_logs(
    client: AsyncClient,
    committed_key: Callable[..., Any],
    fake_upstream: FakeUpstream,
    caplog: pytest.LogCaptureFixture,
) -> None:
    raw, _ = await committed_key(STREAMING)
    caplog.set_level(logging.DEBUG)
    await client.get("/v3/token", params={"expires_in_seconds": 9}, headers={"Authorization": raw})
    await client.get("/v3/token", params={"expires_in_seconds": 0}, headers={"Authorization": raw})
    await client.get("/v3/token", params={"expires_in_seconds": 9}, headers={"Authorization": "x"})
    fake_upstream.fail_status = 500
    await client.get("/v3/token", params={"expires_in_seconds": 9}, headers={"Authorization": raw})
    assert any(r.name.startswith("app.tokens") for r in caplog.records)
    dump = "\n".join(repr(vars(r)) + r.getMessage() for r in caplog.records)
    assert fake_upstream.issued
    for secret in [*fake_upstream.issued, raw]:
        assert secret not in dump


async def test_audit_listing_filters_and_paginates(
    client: AsyncClient, committed_key: Callable[..., Any]
) -> None:
    admin, _ = await committed_key("admin")
    raw, key_id = await committed_key(STREAMING)
    h = {"Authorization": raw}
    for i in range(5):
        await client.post("/api/tokens/streaming", json={"end_user": f"u{i % 2}"}, headers=h)
    await client.get("/v3/token", params={"expires_in_seconds": 0}, headers=h)
    ah = {"Authorization": admin}
    assert (await client.get("/api/audit", headers=h)).status_code == 403
    seen: list[int] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"key_id": str(key_id), "limit": 2}
        if cursor:
            params["cursor"] = cursor
        page = (await client.get("/api/audit", params=params, headers=ah)).json()
        seen += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == 6
    assert seen == sorted(seen, reverse=True)
    refused = await client.get(
        "/api/audit", params={"key_id": str(key_id), "outcome": "refused"}, headers=ah
    )
    assert [i["detail"]["status"] for i in refused.json()["items"]] == [400]
    u0 = await client.get(
        "/api/audit",
        params={"key_id": str(key_id), "end_user": "u0", "action": "token.streaming"},
        headers=ah,
    )
    assert len(u0.json()["items"]) == 3
    future = await client.get(
        "/api/audit", params={"key_id": str(key_id), "since": "2999-01-01T00:00:00Z"}, headers=ah
    )
    assert future.json()["items"] == []
    assert (await client.get("/api/audit", params={"cursor": "!!"}, headers=ah)).status_code == 400


async def test_usage_summary_per_key_and_end_user(
    client: AsyncClient, committed_key: Callable[..., Any]
) -> None:
    admin, _ = await committed_key("admin")
    raw, key_id = await committed_key(STREAMING, AGENTS)
    other, other_id = await committed_key(STREAMING)
    h = {"Authorization": raw}
    await client.post(
        "/api/tokens/streaming",
        json={"end_user": "ann", "max_session_duration_seconds": 600},
        headers=h,
    )
    await client.post(
        "/api/tokens/agents",
        json={"end_user": "ann", "max_session_duration_seconds": 300},
        headers=h,
    )
    await client.post("/api/tokens/streaming", json={"end_user": "ben"}, headers=h)
    await client.get("/v3/token", params={"expires_in_seconds": 0}, headers=h)
    await client.get(
        "/v3/token", params={"expires_in_seconds": 5}, headers={"Authorization": other}
    )

    mine = (await client.get("/api/usage", headers=h)).json()
    [usage] = mine["keys"]
    assert usage["key_id"] == str(key_id)
    assert usage["grants"] == 3
    assert usage["refusals"] == 1
    assert usage["streaming_grants"] == 2
    assert usage["agents_grants"] == 1
    assert usage["granted_session_s"] == 600 + 300 + 3600
    by_user = {u["end_user"]: u for u in usage["end_users"]}
    assert by_user["ann"]["granted_session_s"] == 900
    assert by_user["ben"]["grants"] == 1
    # Today's live budget counters beside the audit sums.
    assert usage["budget"] == {"daily_session_s_limit": 360_000, "today_session_s_used": 4500}
    assert by_user["ann"]["budget"] == {
        "daily_session_s_limit": 14_400,
        "today_session_s_used": 900,
    }
    assert (
        await client.get("/api/usage", params={"key_id": str(other_id)}, headers=h)
    ).status_code == 403

    everyone = (await client.get("/api/usage", headers={"Authorization": admin})).json()
    ids = {k["key_id"] for k in everyone["keys"]}
    assert {str(key_id), str(other_id)} <= ids


@pytest.mark.usefixtures("steady_minute")
async def test_key_callers_name_the_end_user_with_a_header_on_compat_routes(
    make_app: Callable[..., Any],
    committed_key: Callable[..., Any],
    audit_rows: Callable[..., Any],
) -> None:
    raw, key_id = await committed_key(STREAMING)
    async with make_app(token_end_user_mints_per_minute=1) as app, client_for(app) as client:
        q = {"expires_in_seconds": 5}
        h = {"Authorization": raw, "X-End-User": "dora"}
        assert (await client.get("/v3/token", params=q, headers=h)).status_code == 200
        assert (await client.get("/v3/token", params=q, headers=h)).status_code == 429
        bad = await client.get("/v3/token", params=q, headers={**h, "X-End-User": "x" * 201})
        assert bad.status_code == 400
    rows = await audit_rows(key_id)
    assert [(r.end_user, r.outcome) for r in rows[:2]] == [("dora", "granted"), ("dora", "refused")]
