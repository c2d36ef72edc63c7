"""Per-key live access on the relay, end to end (real service, real emulator): a key whose
token policy says `tokens` is refused by the relay before any upstream connection (relay
tokens 403, a direct `/v3/ws` or `/v1/ws` closed 1008); `relay` keeps the relay but loses
direct mints; per-key overrides of the concurrent-session caps apply."""

from __future__ import annotations

import asyncio
import json
import uuid

import httpx
import websockets

from tests.live import Proc, create_key_in
from tests.relay.test_relay_live import (
    SECRETS,
    begin,
    closed_with,
    db_rows,
    emu,
    refused,
    relay,
    sessions,
    ws_url,
)

__all__ = ["emu", "relay"]  # fixtures used here


def _key(database_url: str, relay: Proc, admin: str, **policy: object) -> str:
    name = f"live-access {uuid.uuid4().hex[:8]}"
    raw = create_key_in(database_url, ["tokens:streaming", "tokens:agents"], name=name)
    SECRETS.append(raw)
    [(key_id,)] = db_rows(database_url, "SELECT id FROM api_keys WHERE name = $1", name)
    put = httpx.put(
        f"{relay.url}/api/tokens/policies/{key_id}",
        json=policy,
        headers={"Authorization": admin},
    )
    assert put.status_code == 200, put.text
    return raw


def _admin(database_url: str) -> str:
    raw = create_key_in(database_url, ["admin"], name="live-access admin")
    SECRETS.append(raw)
    return raw


def test_tokens_only_key_is_refused_by_the_relay_before_upstream(
    relay: Proc, emu: httpx.Client, database_url: str
) -> None:
    key = _key(database_url, relay, _admin(database_url), live_access="tokens")
    before = set(sessions(emu))
    for path in ("/v3/relay-token", "/v1/relay-token"):
        answer = httpx.get(
            f"{relay.url}{path}", params={"expires_in_seconds": 60}, headers={"Authorization": key}
        )
        assert answer.status_code == 403, answer.text
        assert answer.json()["error"] == "LiveAccessDenied"
        assert "live_access=tokens" in answer.json()["detail"]
    for path in ("/api/relay/tokens/streaming", "/api/relay/tokens/agents"):
        answer = httpx.post(f"{relay.url}{path}", json={}, headers={"Authorization": key})
        assert answer.status_code == 403, answer.text
        assert answer.json()["error"] == "LiveAccessDenied"
    for path in ("/v3/ws", "/v1/ws"):
        code, reason = asyncio.run(refused(ws_url(relay, path), {"Authorization": key}))
        assert code == 1008, (path, code, reason)
        assert "live_access=tokens" in reason
    assert set(sessions(emu)) == before  # nothing reached upstream
    # Direct tokens still work for it.
    direct = httpx.get(
        f"{relay.url}/v3/token", params={"expires_in_seconds": 60}, headers={"Authorization": key}
    )
    assert direct.status_code == 200, direct.text
    SECRETS.append(direct.json()["token"])
    rows = db_rows(
        database_url,
        "SELECT e.action, e.outcome, e.detail->>'relay', e.detail->>'close_code' "
        "FROM audit_events e JOIN api_keys k ON k.id = e.key_id "
        "WHERE k.name LIKE 'live-access %' AND e.outcome = 'refused' "
        "AND (e.detail->>'live_access' = 'tokens' OR e.detail->>'close_code' = '1008') "
        "ORDER BY e.id",
    )
    assert len(rows) >= 6, rows
    assert {r[2] for r in rows if r[3] is None} == {"true"}
    assert sum(1 for r in rows if r[3] == "1008") >= 2


def test_a_relay_token_minted_before_the_change_is_refused_on_connect(
    relay: Proc, emu: httpx.Client, database_url: str
) -> None:
    admin = _admin(database_url)
    name = f"live-access {uuid.uuid4().hex[:8]}"
    key = create_key_in(database_url, ["tokens:streaming"], name=name)
    SECRETS.append(key)
    [(key_id,)] = db_rows(database_url, "SELECT id FROM api_keys WHERE name = $1", name)
    minted = httpx.get(
        f"{relay.url}/v3/relay-token",
        params={"expires_in_seconds": 60},
        headers={"Authorization": key},
    )
    assert minted.status_code == 200, minted.text
    token = minted.json()["token"]
    SECRETS.append(token)
    put = httpx.put(
        f"{relay.url}/api/tokens/policies/{key_id}",
        json={"live_access": "tokens"},
        headers={"Authorization": admin},
    )
    assert put.status_code == 200, put.text
    before = set(sessions(emu))
    code, reason = asyncio.run(refused(ws_url(relay, token=token)))
    assert (code, "live_access=tokens" in reason) == (1008, True)
    assert set(sessions(emu)) == before


def test_relay_only_key_uses_the_relay_but_not_direct_tokens(
    relay: Proc, emu: httpx.Client, database_url: str
) -> None:
    key = _key(database_url, relay, _admin(database_url), live_access="relay")
    for path in ("/v3/token", "/v1/token"):
        direct = httpx.get(
            f"{relay.url}{path}", params={"expires_in_seconds": 60}, headers={"Authorization": key}
        )
        assert direct.status_code == 403, direct.text
        assert direct.json()["error"] == "LiveAccessDenied"
    minted = httpx.get(
        f"{relay.url}/v3/relay-token",
        params={"expires_in_seconds": 60},
        headers={"Authorization": key},
    )
    assert minted.status_code == 200, minted.text
    SECRETS.append(minted.json()["token"])

    async def run(url: str, headers: dict[str, str]) -> int:
        async with websockets.connect(url, additional_headers=headers) as ws:
            await begin(ws)
            await ws.send(json.dumps({"type": "Terminate"}))
            code, _ = await closed_with(ws)
            return code

    assert asyncio.run(run(ws_url(relay, token=minted.json()["token"]), {})) == 1000
    assert asyncio.run(run(ws_url(relay), {"Authorization": key})) == 1000


def test_both_is_the_default_and_allows_either_path(
    relay: Proc, emu: httpx.Client, database_url: str
) -> None:
    key = _key(database_url, relay, _admin(database_url), live_access="both")
    direct = httpx.get(
        f"{relay.url}/v3/token", params={"expires_in_seconds": 60}, headers={"Authorization": key}
    )
    assert direct.status_code == 200, direct.text
    SECRETS.append(direct.json()["token"])

    async def run() -> None:
        async with websockets.connect(
            ws_url(relay), additional_headers={"Authorization": key}
        ) as ws:
            await begin(ws)
            await ws.send(json.dumps({"type": "Terminate"}))
            assert (await closed_with(ws))[0] == 1000

    asyncio.run(run())


def test_per_key_session_caps_override_the_global_ones(
    relay: Proc, emu: httpx.Client, database_url: str
) -> None:
    # The module's service allows 3 per key and 1 per end user; this key: 1 per key, 2 per
    # end user.
    key = _key(
        database_url,
        relay,
        _admin(database_url),
        relay_key_max_sessions=1,
        relay_end_user_max_sessions=2,
    )

    async def run() -> None:
        headers = {"Authorization": key, "X-End-User": "pk-1"}
        async with websockets.connect(ws_url(relay), additional_headers=headers) as first:
            await begin(first)
            before = set(sessions(emu))
            code, reason = await refused(
                ws_url(relay), {"Authorization": key, "X-End-User": "pk-2"}
            )
            assert (code, reason) == (3009, "Too many concurrent sessions: at most 1 per key")
            assert set(sessions(emu)) == before

    asyncio.run(run())
    roomy = _key(database_url, relay, _admin(database_url), relay_end_user_max_sessions=2)

    async def two_for_one_user() -> None:
        headers = {"Authorization": roomy, "X-End-User": "pk-3"}
        async with (
            websockets.connect(ws_url(relay), additional_headers=headers) as first,
            websockets.connect(ws_url(relay), additional_headers=headers) as second,
        ):
            await begin(first)
            await begin(second)

    asyncio.run(two_for_one_user())
