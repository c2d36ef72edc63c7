"""Per-key live access (`live_access` in the token policy): a key limited to the relay is
refused every direct mint with a clear 403, audited like any refusal; `tokens` and `both`
keep the direct mints. The relay's side is in tests/relay/test_live_access.py."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from httpx import AsyncClient

from tests.tokens.conftest import FakeUpstream

STREAMING = "tokens:streaming"
AGENTS = "tokens:agents"
MINTS = [
    ("GET", "/v3/token", "token.streaming"),
    ("GET", "/v1/token", "token.agents"),
    ("POST", "/api/tokens/streaming", "token.streaming"),
    ("POST", "/api/tokens/agents", "token.agents"),
]


async def _set_policy(client: AsyncClient, admin: str, key_id: Any, **body: Any) -> dict[str, Any]:
    put = await client.put(
        f"/api/tokens/policies/{key_id}", json=body, headers={"Authorization": admin}
    )
    assert put.status_code == 200, put.text
    answer: dict[str, Any] = put.json()
    return answer


async def _mint(client: AsyncClient, method: str, path: str, raw: str) -> Any:
    if method == "GET":
        return await client.get(
            path, params={"expires_in_seconds": 60}, headers={"Authorization": raw}
        )
    return await client.post(path, json={}, headers={"Authorization": raw})


async def test_policy_fields_default_override_and_reset(
    client: AsyncClient, committed_key: Callable[..., Any]
) -> None:
    admin, _ = await committed_key("admin")
    _, key_id = await committed_key(STREAMING)
    got = await client.get(f"/api/tokens/policies/{key_id}", headers={"Authorization": admin})
    assert got.status_code == 200
    body = got.json()
    assert body["live_access"] == "both"
    assert body["relay_key_max_sessions"] == 20  # WS_RELAY_KEY_MAX_SESSIONS
    assert body["relay_end_user_max_sessions"] == 2  # WS_RELAY_END_USER_MAX_SESSIONS
    assert body["overrides"] == []
    body = await _set_policy(
        client,
        admin,
        key_id,
        live_access="relay",
        relay_key_max_sessions=5,
        relay_end_user_max_sessions=0,
    )
    assert body["live_access"] == "relay"
    assert (body["relay_key_max_sessions"], body["relay_end_user_max_sessions"]) == (5, 0)
    assert sorted(body["overrides"]) == [
        "live_access",
        "relay_end_user_max_sessions",
        "relay_key_max_sessions",
    ]
    got = await client.get(f"/api/tokens/policies/{key_id}", headers={"Authorization": admin})
    assert got.json() == body
    # null (or omitted) goes back to the default.
    body = await _set_policy(client, admin, key_id, live_access=None)
    assert (body["live_access"], body["relay_key_max_sessions"], body["overrides"]) == (
        "both",
        20,
        [],
    )


@pytest.mark.parametrize(
    "bad",
    [
        {"live_access": "direct"},
        {"live_access": 1},
        {"relay_key_max_sessions": -1},
        {"relay_end_user_max_sessions": "2"},
    ],
)
async def test_bad_policy_values_are_422(
    client: AsyncClient, committed_key: Callable[..., Any], bad: dict[str, Any]
) -> None:
    admin, _ = await committed_key("admin")
    _, key_id = await committed_key(STREAMING)
    put = await client.put(
        f"/api/tokens/policies/{key_id}", json=bad, headers={"Authorization": admin}
    )
    assert put.status_code == 422, put.text
    assert "error" in put.json()


async def test_relay_only_key_is_refused_every_direct_mint_and_audited(
    client: AsyncClient,
    committed_key: Callable[..., Any],
    fake_upstream: FakeUpstream,
    audit_rows: Callable[..., Any],
) -> None:
    admin, _ = await committed_key("admin")
    raw, key_id = await committed_key(STREAMING, AGENTS)
    await _set_policy(client, admin, key_id, live_access="relay")
    for method, path, _ in MINTS:
        response = await _mint(client, method, path, raw)
        assert response.status_code == 403, (path, response.text)
        assert response.json()["error"] == "LiveAccessDenied"
        assert "relay" in response.json()["detail"]
        assert raw not in response.text
    assert fake_upstream.calls == []
    rows = await audit_rows(key_id)
    assert [(r.action, r.outcome) for r in rows] == [(a, "refused") for _, _, a in MINTS]
    for row in rows:
        assert row.detail["status"] == 403
        assert row.detail["reason"] == "LiveAccessDenied"
        assert row.detail["live_access"] == "relay"


@pytest.mark.parametrize("live_access", ["tokens", "both", None])
async def test_tokens_and_both_keys_mint_directly(
    client: AsyncClient,
    committed_key: Callable[..., Any],
    fake_upstream: FakeUpstream,
    audit_rows: Callable[..., Any],
    live_access: str | None,
) -> None:
    admin, _ = await committed_key("admin")
    raw, key_id = await committed_key(STREAMING, AGENTS)
    await _set_policy(client, admin, key_id, live_access=live_access)
    for method, path, _ in MINTS:
        response = await _mint(client, method, path, raw)
        assert response.status_code == 200, (path, response.text)
    assert len(fake_upstream.issued) == len(MINTS)
    rows = await audit_rows(key_id)
    assert [r.outcome for r in rows] == ["granted"] * len(MINTS)


async def test_a_policy_change_applies_to_the_next_mint(
    client: AsyncClient, committed_key: Callable[..., Any], fake_upstream: FakeUpstream
) -> None:
    admin, _ = await committed_key("admin")
    raw, key_id = await committed_key(STREAMING)
    assert (await _mint(client, "GET", "/v3/token", raw)).status_code == 200  # now cached
    await _set_policy(client, admin, key_id, live_access="relay")
    assert (await _mint(client, "GET", "/v3/token", raw)).status_code == 403
    await _set_policy(client, admin, key_id, live_access="both")
    assert (await _mint(client, "GET", "/v3/token", raw)).status_code == 200
    assert len(fake_upstream.issued) == 2


@pytest.mark.parametrize(
    ("live_access", "mode"), [("relay", "relay"), ("tokens", "token"), ("both", "token")]
)
async def test_client_config_follows_the_signed_in_callers_key_policy(
    client: AsyncClient, committed_key: Callable[..., Any], live_access: str, mode: str
) -> None:
    admin, _ = await committed_key("admin")
    raw, key_id = await committed_key(STREAMING, AGENTS)
    anonymous = await client.get("/api/client-config")
    assert anonymous.status_code == 200
    assert anonymous.json()["live_mode"] == "token"  # BROWSER_LIVE_MODE's default
    await _set_policy(client, admin, key_id, live_access=live_access)
    by_key = await client.get("/api/client-config", headers={"Authorization": raw})
    assert by_key.json()["live_mode"] == mode
    signed_in = await client.post("/api/session", json={"key": raw})
    assert signed_in.status_code == 201, signed_in.text
    by_cookie = await client.get("/api/client-config")
    assert by_cookie.json()["live_mode"] == mode
    client.cookies.clear()
    # A bad credential is not an error here: the global choice.
    bad = await client.get("/api/client-config", headers={"Authorization": "aaip_nope12345678"})
    assert (bad.status_code, bad.json()["live_mode"]) == (200, "token")
