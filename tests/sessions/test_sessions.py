"""Session cookies (exchange, use, end, Origin checks) and CORS."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tests.tokens.conftest import client_for

STREAMING = "tokens:streaming"
APP_ORIGIN = "https://app.example"
EVIL = "https://evil.example"


async def test_cookie_session_flow(
    make_app: Callable[..., Any],
    committed_key: Callable[..., Any],
    audit_rows: Callable[..., Any],
) -> None:
    raw, key_id = await committed_key(STREAMING)
    async with make_app(cors_origins=[APP_ORIGIN]) as app, client_for(app) as client:
        created = await client.post("/api/session", json={"key": raw, "end_user": "carol"})
        assert created.status_code == 201, created.text
        assert created.json()["end_user"] == "carol"
        assert raw not in created.text
        cookie = created.headers["set-cookie"]
        assert cookie.startswith("aaip_session=")
        lowered = cookie.lower()
        assert "httponly" in lowered
        assert "samesite=strict" in lowered
        assert "secure" not in lowered  # plain http here
        assert "aaip_session" in client.cookies

        # A safe method needs no Origin; the cookie alone identifies the caller.
        me = await client.get("/api/session")
        assert me.status_code == 200
        assert me.json()["via"] == "session"
        assert me.json()["end_user"] == "carol"

        minted = await client.post("/api/tokens/streaming", headers={"Origin": APP_ORIGIN})
        assert minted.status_code == 200, minted.text
        same_origin = await client.post(
            "/api/tokens/streaming", headers={"Origin": "http://testserver"}
        )
        assert same_origin.status_code == 200
        # Cross-origin, or no Origin at all, with only the cookie: refused.
        cross = await client.post("/api/tokens/streaming", headers={"Origin": EVIL})
        assert cross.status_code == 403
        assert "Cross-origin" in cross.json()["detail"]
        assert (await client.post("/api/tokens/streaming")).status_code == 403
        # The session's end user is fixed.
        other_user = await client.post(
            "/api/tokens/streaming", json={"end_user": "mallory"}, headers={"Origin": APP_ORIGIN}
        )
        assert other_user.status_code == 403

        # Ending the session needs the Origin too, then the cookie is dead.
        assert (await client.delete("/api/session", headers={"Origin": EVIL})).status_code == 403
        cookie_value = client.cookies["aaip_session"]
        ended = await client.delete("/api/session", headers={"Origin": APP_ORIGIN})
        assert ended.status_code == 204
        assert (
            'aaip_session=""' in ended.headers["set-cookie"]
            or "Max-Age=0" in ended.headers["set-cookie"]
        )
        client.cookies.set("aaip_session", cookie_value)
        after = await client.post("/api/tokens/streaming", headers={"Origin": APP_ORIGIN})
        assert after.status_code == 401
    rows = await audit_rows(key_id, action="token.streaming")
    granted = [r for r in rows if r.outcome == "granted"]
    assert len(granted) == 2
    assert {r.end_user for r in granted} == {"carol"}
    assert {r.detail["via"] for r in granted} == {"session"}
    assert any(r.detail["status"] == 403 for r in rows if r.outcome == "refused")


async def test_session_creation_refuses_cross_origin_and_bad_keys(
    make_app: Callable[..., Any], committed_key: Callable[..., Any]
) -> None:
    raw, _ = await committed_key(STREAMING)
    async with make_app(cors_origins=[APP_ORIGIN]) as app, client_for(app) as client:
        evil = await client.post("/api/session", json={"key": raw}, headers={"Origin": EVIL})
        assert evil.status_code == 403
        assert "set-cookie" not in evil.headers
        assert (await client.post("/api/session", json={"key": "aaip_wrong12345"})).status_code == (
            401
        )
        assert (await client.post("/api/session")).status_code == 401
        # The key may come in Authorization instead of the body.
        header = await client.post(
            "/api/session", headers={"Authorization": raw, "Origin": APP_ORIGIN}
        )
        assert header.status_code == 201
        assert (
            await client.delete("/api/session", headers={"Authorization": raw})
        ).status_code == (401)


async def test_cookie_is_secure_over_https(
    make_app: Callable[..., Any], committed_key: Callable[..., Any]
) -> None:
    raw, _ = await committed_key(STREAMING)
    async with make_app() as app, client_for(app, "https://proxy.example") as client:
        created = await client.post("/api/session", json={"key": raw})
        assert "secure" in created.headers["set-cookie"].lower()


async def test_cors_preflight_allowed_and_refused(make_app: Callable[..., Any]) -> None:
    async with make_app(cors_origins=[APP_ORIGIN]) as app, client_for(app) as client:
        preflight = {
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type,authorization",
        }
        allowed = await client.options(
            "/api/tokens/streaming", headers={"Origin": APP_ORIGIN, **preflight}
        )
        assert allowed.status_code == 200
        assert allowed.headers["access-control-allow-origin"] == APP_ORIGIN
        assert allowed.headers["access-control-allow-credentials"] == "true"
        refused = await client.options(
            "/api/tokens/streaming", headers={"Origin": EVIL, **preflight}
        )
        assert refused.status_code == 400
        assert "access-control-allow-origin" not in refused.headers
        # A simple request from another origin gets no CORS grant either.
        simple = await client.get("/healthz", headers={"Origin": EVIL})
        assert "access-control-allow-origin" not in simple.headers


async def test_reading_the_session_signed_out_is_an_answer_not_an_error(
    make_app: Callable[..., Any], committed_key: Callable[..., Any]
) -> None:
    raw, _ = await committed_key(STREAMING)
    async with make_app(cors_origins=[APP_ORIGIN]) as app, client_for(app) as client:
        # No credentials: the page asks at load; a signed-out visitor is not an error.
        nobody = await client.get("/api/session")
        assert nobody.status_code == 200, nobody.text
        assert nobody.json()["signed_in"] is False
        assert "set-cookie" not in nobody.headers
        # Every other route still refuses without credentials.
        assert (await client.post("/api/tokens/streaming")).status_code == 401
        # A refused Authorization header stays 401: explicit credentials were wrong.
        wrong = await client.get("/api/session", headers={"Authorization": "aaip_wrong12345"})
        assert wrong.status_code == 401
        # A live cookie: signed in.
        await client.post("/api/session", json={"key": raw})
        me = await client.get("/api/session")
        assert me.json()["signed_in"] is True
        assert me.json()["via"] == "session"
        # An ended cookie: signed out, and the dead cookie is cleared.
        cookie_value = client.cookies["aaip_session"]
        assert (
            await client.delete("/api/session", headers={"Origin": APP_ORIGIN})
        ).status_code == 204
        client.cookies.set("aaip_session", cookie_value)
        ended = await client.get("/api/session")
        assert ended.status_code == 200
        assert ended.json() == {"signed_in": False, "detail": ended.json()["detail"]}
        assert "ended" in ended.json()["detail"]
        assert "aaip_session" in ended.headers["set-cookie"]
        assert cookie_value not in ended.text
        # The OpenAPI document says so.
        schema = (await client.get("/openapi.json")).json()
        read = schema["paths"]["/api/session"]["get"]["responses"]
        assert "200" in read
        assert "401" in read
        assert "SignedOut" in str(read["200"])
