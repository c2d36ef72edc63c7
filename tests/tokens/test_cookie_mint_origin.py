"""A mint on the strength of a session cookie alone follows the Origin rule of every cookie
write, whatever its method: `GET /v3/token` and `GET /v1/token` (through the shortcut and
through the router alike) from a foreign origin of the same site are refused before the
cookie is even looked up: nothing granted, upstream never called."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.tokens.conftest import FakeUpstream, client_for

APP_ORIGIN = "https://app.example"
SIBLING = "https://evil.app.example"  # same site, another origin: SameSite does not help


@pytest.mark.parametrize("path", ["/v3/token", "/v1/token"])
async def test_cookie_get_mints_need_an_allowed_origin(
    path: str,
    make_app: Callable[..., Any],
    committed_key: Callable[..., Any],
    fake_upstream: FakeUpstream,
    audit_rows: Callable[..., Any],
) -> None:
    raw, key_id = await committed_key("tokens:streaming", "tokens:agents")
    query = f"{path}?expires_in_seconds=30"
    async with make_app(cors_origins=[APP_ORIGIN]) as app, client_for(app) as client:
        created = await client.post("/api/session", json={"key": raw, "end_user": "carol"})
        assert created.status_code == 201, created.text
        for headers in (
            {"Origin": SIBLING},
            {"Origin": "null"},
            {"Referer": f"{SIBLING}/page"},
            {},  # neither Origin nor Referer: a plain cross-site GET (an <img>, a link)
        ):
            refused = await client.get(query, headers=headers)
            assert refused.status_code == 403, (headers, refused.text)
            assert "Cross-origin" in refused.json()["detail"]
        assert fake_upstream.calls == []
        for headers in ({"Origin": APP_ORIGIN}, {"Referer": "http://testserver/app"}):
            allowed = await client.get(query, headers=headers)
            assert allowed.status_code == 200, (headers, allowed.text)
        assert len(fake_upstream.calls) == 2
        # A key in Authorization is not a cookie credential: no Origin needed (servers).
        client.cookies.clear()
        server = await client.get(query, headers={"Authorization": raw})
        assert server.status_code == 200, server.text
    kind = "streaming" if path == "/v3/token" else "agents"
    rows = await audit_rows(key_id, action=f"token.{kind}")
    assert [r for r in rows if r.outcome == "granted"] != []
    assert sum(r.outcome == "granted" for r in rows) == 3
