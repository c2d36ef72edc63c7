"""`POST /api/session` trades a proxy key for an HttpOnly session cookie; `DELETE` ends it."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response, status
from sqlalchemy import delete, update

from app.audit.record import record_audit
from app.core.boundary import BoundaryRoute
from app.core.config import IdentitySettings
from app.core.db import utcnow
from app.core.deps import IdentitySettingsDep, SessionDep, client_ip
from app.core.errors import Unauthorized
from app.core.security import hash_key, new_secret
from app.identity.auth import credential_from_header
from app.identity.callers import (
    CallerDep,
    check_origin,
    identity_state,
    key_by_secret,
    resolve_caller,
    session_expiry,
)
from app.identity.principal import Principal
from app.identity.session_models import AppSession
from app.sessions.schemas import SessionCreate, SessionRead, SignedOut

router = APIRouter(prefix="/api/session", tags=["sessions"], route_class=BoundaryRoute)

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "Invalid key or no session"},
    403: {"description": "Cross-origin request refused"},
}


def _secure(request: Request, settings: IdentitySettings) -> bool:
    if settings.session_cookie_secure is not None:
        return settings.session_cookie_secure
    public = settings.public_base_url or ""
    return request.url.scheme == "https" or public.startswith("https://")


@router.post("", status_code=status.HTTP_201_CREATED, response_model=SessionRead, responses=_ERRORS)
async def create_session(
    request: Request,
    response: Response,
    session: SessionDep,
    settings: IdentitySettingsDep,
    body: SessionCreate | None = None,
) -> SessionRead:
    """Exchange a proxy key for a session cookie (HttpOnly, SameSite=Strict)."""
    # A cross-site page must not plant its own session in our cookie jar (login CSRF); a
    # request without Origin (curl, a server) carries the key itself, so it may proceed.
    check_origin(request, settings, required=False)
    body = body or SessionCreate()
    raw = body.key or credential_from_header(request.headers.get("authorization"))
    if not raw:
        raise Unauthorized("Send the proxy key in the body (`key`) or in Authorization.")
    key = await key_by_secret(identity_state(request), session, raw)
    if key is None:
        raise Unauthorized("Invalid or revoked API key.")
    # Expired sessions of this key are purged here, so rows never pile up unattended.
    await session.execute(
        delete(AppSession).where(AppSession.key_id == key.id, AppSession.expires_at < utcnow())
    )
    cookie = new_secret(32)
    row = AppSession(
        token_hash=hash_key(cookie),
        key_id=key.id,
        end_user=body.end_user,
        expires_at=session_expiry(settings),
        client_ip=client_ip(request),
        user_agent=(request.headers.get("user-agent") or "")[:500] or None,
    )
    session.add(row)
    await session.flush()
    principal = Principal(
        key_id=key.id, key_name=key.name, scopes=key.scopes, end_user=body.end_user
    )
    await record_audit(
        session,
        action="session.create",
        outcome="ok",
        principal=principal,
        subject=str(row.id),
        client_ip=row.client_ip,
        user_agent=row.user_agent,
    )
    response.set_cookie(
        settings.session_cookie_name,
        cookie,
        max_age=settings.session_ttl_s,
        path="/",
        secure=_secure(request, settings),
        httponly=True,
        samesite="strict",
    )
    response.headers["Cache-Control"] = "no-store"
    return SessionRead(
        key_id=key.id,
        key_name=key.name,
        scopes=sorted(key.scopes),
        end_user=body.end_user,
        via="session",
        expires_at=row.expires_at,
    )


@router.get(
    "",
    response_model=SessionRead | SignedOut,
    responses={401: {"description": "The Authorization header's key or JWT is refused"}},
)
async def read_session(
    request: Request, response: Response, session: SessionDep, settings: IdentitySettingsDep
) -> SessionRead | SignedOut:
    """Who the current credentials (cookie, key or JWT) say the caller is.

    A visitor with no credentials, or whose session cookie has ended, is signed out: 200
    with `{"signed_in": false}` (a page asks this at load; a signed-out visitor is not an
    error). A refused Authorization header is still 401, and every other route still
    answers 401 without credentials.
    """
    response.headers["Cache-Control"] = "no-store"
    try:
        caller = await resolve_caller(request, session)
    except Unauthorized as exc:
        if request.headers.get("authorization") is not None:
            raise
        if request.cookies.get(settings.session_cookie_name):
            # The cookie is dead: clear it, so the browser stops sending it.
            response.delete_cookie(
                settings.session_cookie_name,
                path="/",
                secure=_secure(request, settings),
                httponly=True,
                samesite="strict",
            )
        return SignedOut(detail=exc.message)
    request.state.principal = caller
    return SessionRead(
        key_id=caller.key_id,
        key_name=caller.key_name,
        scopes=sorted(caller.scopes),
        end_user=caller.end_user,
        via=caller.via,
    )


@router.delete("", status_code=status.HTTP_204_NO_CONTENT, responses=_ERRORS)
async def end_session(
    request: Request, session: SessionDep, settings: IdentitySettingsDep, caller: CallerDep
) -> Response:
    """End the cookie's session (the row is revoked; the cookie is cleared)."""
    session_id = caller.extra.get("session_id")
    if caller.via != "session" or session_id is None:
        raise Unauthorized("No session cookie: there is no session to end.")
    await session.execute(
        update(AppSession)
        .where(AppSession.id == session_id, AppSession.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )
    await record_audit(
        session,
        action="session.end",
        outcome="ok",
        principal=caller,
        subject=session_id,
        client_ip=client_ip(request),
    )
    response = Response(status_code=status.HTTP_204_NO_CONTENT)
    response.delete_cookie(
        settings.session_cookie_name,
        path="/",
        secure=_secure(request, settings),
        httponly=True,
        samesite="strict",
    )
    return response
