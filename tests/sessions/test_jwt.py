"""JWT callers: HS256 with a shared secret, RS256 and ES256 from a JWKS served by a tiny
local HTTP server; `iss`, `aud`, `exp`, `sub` and the signature all checked."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from tests.tokens.conftest import client_for

SECRET = "s3cret-shared-with-the-identity-provider-0123456789"
ISSUER = "https://idp.example"
AUDIENCE = "aai-proxy"


def claims(**over: Any) -> dict[str, Any]:
    now = int(time.time())
    values: dict[str, Any] = {
        "sub": "user-7",
        "iss": ISSUER,
        "aud": AUDIENCE,
        "iat": now,
        "exp": now + 300,
    }
    values.update(over)
    return {k: v for k, v in values.items() if v is not None}


def jwt_settings(key_id: Any, **over: Any) -> dict[str, Any]:
    values = {
        "jwt_issuer": ISSUER,
        "jwt_audience": AUDIENCE,
        "jwt_key_id": str(key_id),
    }
    values.update(over)
    return values


async def test_hs256_caller_mints_as_its_end_user(
    make_app: Callable[..., Any],
    committed_key: Callable[..., Any],
    audit_rows: Callable[..., Any],
) -> None:
    _, key_id = await committed_key("tokens:streaming", "admin", name="jwt app key")
    async with (
        make_app(**jwt_settings(key_id, jwt_hs256_secret=SECRET)) as app,
        client_for(app) as client,
    ):
        token = jwt.encode(claims(), SECRET, algorithm="HS256")
        h = {"Authorization": f"Bearer {token}"}
        minted = await client.post("/api/tokens/streaming", headers=h)
        assert minted.status_code == 200, minted.text
        compat = await client.get("/v3/token", params={"expires_in_seconds": 5}, headers=h)
        assert compat.status_code == 200
        me = (await client.get("/api/session", headers=h)).json()
        assert me["via"] == "jwt"
        assert me["end_user"] == "user-7"
        assert "admin" not in me["scopes"]  # an app's end user is never an admin
        usage = (await client.get("/api/usage", headers=h)).json()
        [entry] = usage["keys"]
        assert [u["end_user"] for u in entry["end_users"]] == ["user-7"]
        assert entry["budget"] is None  # an end user sees their own budget, not the key's
        assert entry["end_users"][0]["budget"]["today_session_s_used"] == 2 * 3600
        # No Origin check: a JWT is not ambient authority like a cookie.
        assert (
            await client.post("/api/tokens/streaming", headers={**h, "Origin": "https://x.example"})
        ).status_code == 200
    rows = await audit_rows(key_id, outcome="granted")
    assert {(r.end_user, r.detail["via"]) for r in rows} == {("user-7", "jwt")}


@pytest.mark.parametrize(
    ("token_of", "needle"),
    [
        (
            lambda: jwt.encode(claims(), "another-secret-of-sufficient-length-000", "HS256"),
            "signature",
        ),
        (lambda: jwt.encode(claims(exp=int(time.time()) - 120), SECRET, "HS256"), "expired"),
        (lambda: jwt.encode(claims(aud="someone-else"), SECRET, "HS256"), "audience"),
        (lambda: jwt.encode(claims(iss="https://evil.example"), SECRET, "HS256"), "issuer"),
        (lambda: jwt.encode(claims(sub=None), SECRET, "HS256"), "sub"),
        (lambda: jwt.encode(claims(exp=None), SECRET, "HS256"), "exp"),
        (lambda: jwt.encode(claims(), None, "none"), "Invalid token"),
    ],
    ids=["bad-signature", "expired", "wrong-aud", "wrong-iss", "no-sub", "no-exp", "alg-none"],
)
async def test_hs256_refusals_are_401(
    make_app: Callable[..., Any],
    committed_key: Callable[..., Any],
    fake_upstream: Any,
    token_of: Callable[[], str],
    needle: str,
) -> None:
    _, key_id = await committed_key("tokens:streaming")
    async with (
        make_app(**jwt_settings(key_id, jwt_hs256_secret=SECRET)) as app,
        client_for(app) as client,
    ):
        response = await client.post(
            "/api/tokens/streaming", headers={"Authorization": f"Bearer {token_of()}"}
        )
        assert response.status_code == 401, response.text
        assert needle in response.json()["detail"]
    assert fake_upstream.calls == []


async def test_jwt_refused_when_its_key_is_revoked(
    make_app: Callable[..., Any], committed_key: Callable[..., Any]
) -> None:
    admin, _ = await committed_key("admin")
    _, key_id = await committed_key("tokens:streaming")
    async with (
        make_app(**jwt_settings(key_id, jwt_hs256_secret=SECRET, key_cache_ttl_s=0)) as app,
        client_for(app) as client,
    ):
        h = {"Authorization": f"Bearer {jwt.encode(claims(), SECRET, 'HS256')}"}
        assert (await client.post("/api/tokens/streaming", headers=h)).status_code == 200
        revoked = await client.delete(f"/api/keys/{key_id}", headers={"Authorization": admin})
        assert revoked.status_code == 200
        assert (await client.post("/api/tokens/streaming", headers=h)).status_code == 401


class Jwks:
    """A JWKS endpoint on a real port, counting fetches."""

    def __init__(self) -> None:
        self.keys: list[dict[str, Any]] = []
        self.fetches = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                outer.fetches += 1
                body = json.dumps({"keys": outer.keys}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/.well-known/jwks.json"

    def add(self, jwk_json: str, kid: str, alg: str) -> None:
        jwk = json.loads(jwk_json)
        jwk.update({"kid": kid, "alg": alg, "use": "sig"})
        self.keys.append(jwk)


@pytest.fixture
def jwks() -> Iterator[Jwks]:
    server = Jwks()
    thread = threading.Thread(target=server.server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.server.shutdown()
    server.server.server_close()


async def test_rs256_and_es256_from_a_jwks_url(
    make_app: Callable[..., Any], committed_key: Callable[..., Any], jwks: Jwks
) -> None:
    _, key_id = await committed_key("tokens:streaming", "tokens:agents")
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    jwks.add(RSAAlgorithm.to_jwk(rsa_key.public_key()), "rsa-1", "RS256")
    jwks.add(ECAlgorithm.to_jwk(ec_key.public_key()), "ec-1", "ES256")
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    async with (
        make_app(**jwt_settings(key_id, jwt_jwks_url=jwks.url)) as app,
        client_for(app) as client,
    ):

        async def call(token: str) -> Any:
            return await client.post(
                "/api/tokens/agents", headers={"Authorization": f"Bearer {token}"}
            )

        rs = jwt.encode(claims(sub="rsa-user"), rsa_key, "RS256", headers={"kid": "rsa-1"})
        es = jwt.encode(claims(sub="ec-user"), ec_key, "ES256", headers={"kid": "ec-1"})
        assert (await call(rs)).status_code == 200
        assert (await call(es)).status_code == 200
        assert (await call(rs)).status_code == 200
        assert jwks.fetches == 1  # the key set is cached

        # Signed by a key the IdP never published under that kid: the signature fails.
        forged = jwt.encode(claims(), stranger, "RS256", headers={"kid": "rsa-1"})
        assert "signature" in (await call(forged)).json()["detail"]
        expired = jwt.encode(
            claims(exp=int(time.time()) - 100), rsa_key, "RS256", headers={"kid": "rsa-1"}
        )
        assert (await call(expired)).status_code == 401
        wrong_aud = jwt.encode(claims(aud="x"), ec_key, "ES256", headers={"kid": "ec-1"})
        assert (await call(wrong_aud)).status_code == 401
        wrong_iss = jwt.encode(claims(iss="https://x"), ec_key, "ES256", headers={"kid": "ec-1"})
        assert (await call(wrong_iss)).status_code == 401
        unknown_kid = jwt.encode(claims(), rsa_key, "RS256", headers={"kid": "nope"})
        assert (await call(unknown_kid)).status_code == 401
        # An HS256 token must not verify against a public key (algorithm confusion).
        hs = jwt.encode(
            claims(), "a-symmetric-secret-that-is-long-enough", "HS256", headers={"kid": "rsa-1"}
        )
        assert (await call(hs)).status_code == 401


async def test_unreachable_jwks_is_503(
    make_app: Callable[..., Any], committed_key: Callable[..., Any]
) -> None:
    _, key_id = await committed_key("tokens:streaming")
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    async with (
        make_app(**jwt_settings(key_id, jwt_jwks_url="http://127.0.0.1:1/jwks.json")) as app,
        client_for(app) as client,
    ):
        token = jwt.encode(claims(), rsa_key, "RS256", headers={"kid": "k"})
        response = await client.post(
            "/api/tokens/streaming", headers={"Authorization": f"Bearer {token}"}
        )
        assert response.status_code == 503
