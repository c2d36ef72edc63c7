"""Who opens a relayed WebSocket: a relay token (`?token=`, or in `Authorization` where the
SDKs put a temporary token), a proxy key (raw or `Bearer`), a JWT, or the session cookie.

A browser WebSocket carries the session cookie ambiently and no CORS applies to it, so a
cookie counts only with an `Origin` that is this service's or one of CORS_ORIGINS
(cross-site WebSocket hijacking is refused before the cookie is even looked at).
"""

from __future__ import annotations

from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.websockets import WebSocket

from app.core.config import IdentitySettings
from app.core.errors import Forbidden, Unauthorized
from app.identity.auth import credential_from_header
from app.identity.callers import identity_state, key_by_id, resolve_caller
from app.identity.principal import Principal
from app.relay.state import RelayGrant, RelayState, looks_like_relay_token

SCOPE = {"streaming": "tokens:streaming", "agents": "tokens:agents"}


def _as_request(ws: WebSocket) -> Request:
    """The upgrade request as an HTTP GET, for the shared caller resolution."""
    return Request({**ws.scope, "type": "http", "method": "GET"})


def origin_allowed(ws: WebSocket, settings: IdentitySettings) -> bool:
    origin = ws.headers.get("origin")
    if not origin or origin == "null":
        return False
    allowed = {o.lower() for o in settings.cors_origins}
    host = ws.headers.get("host")
    if host:
        allowed |= {f"http://{host}".lower(), f"https://{host}".lower()}
    if settings.public_base_url:
        parts = urlsplit(settings.public_base_url)
        allowed.add(f"{parts.scheme}://{parts.netloc}".lower())
    return origin.lower() in allowed


async def _from_grant(ws: WebSocket, grant: RelayGrant, kind: str) -> Principal:
    if grant.kind != kind:
        raise Unauthorized(f"This relay token is for the {grant.kind} relay.")
    key = await key_by_id(identity_state(_as_request(ws)), None, grant.key_id)
    if key is None:
        raise Unauthorized("The key this relay token was minted for is revoked.")
    return Principal(
        key_id=key.id,
        key_name=key.name,
        scopes=frozenset({SCOPE[kind]}),  # checked when the token was minted
        end_user=grant.end_user,
        via="relay_token",
    )


async def authenticate(
    ws: WebSocket, state: RelayState, settings: IdentitySettings, kind: str
) -> tuple[Principal, RelayGrant | None]:
    """The caller and, for a relay token, its grant; Unauthorized/Forbidden otherwise."""
    if "token" in ws.query_params:
        grant = await state.redeem(ws.query_params.get("token"))
        if grant is None:
            raise Unauthorized("Invalid, expired or already used relay token.")
        return await _from_grant(ws, grant, kind), grant
    header = ws.headers.get("authorization")
    if header is not None:
        raw = credential_from_header(header)
        if looks_like_relay_token(raw):
            grant = await state.redeem(raw)
            if grant is None:
                raise Unauthorized("Invalid, expired or already used relay token.")
            return await _from_grant(ws, grant, kind), grant
        return await resolve_caller(_as_request(ws)), None
    if ws.cookies.get(settings.session_cookie_name):
        if not origin_allowed(ws, settings):
            raise Forbidden(
                "Cross-origin WebSocket refused: the Origin is not this service's or one of "
                "CORS_ORIGINS."
            )
        return await resolve_caller(_as_request(ws)), None
    raise Unauthorized(
        "Missing credentials: send your aai-proxy key in Authorization, a relay token as "
        "?token=, or sign in for a session cookie."
    )
