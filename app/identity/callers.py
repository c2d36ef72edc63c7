"""Who is calling: a proxy key, an app session cookie, or a JWT from the app's own IdP.

Every kind resolves to one `app.identity.principal.Principal`: the proxy key whose scopes and
limits apply, and the end user when there is one (`via` says which kind). Use it in a route:

    from app.identity.callers import CallerDep, require_caller_scope

    async def route(caller: CallerDep) -> ...                       # any authenticated caller
    async def route(caller: Annotated[Principal, Depends(require_caller_scope("llm"))]) -> ...

Order: an `Authorization` header wins (a JWT when it looks like one and JWTs are
configured, else a proxy key, raw or `Bearer`); without one, the session cookie. A cookie is
ambient authority, so on state-changing methods its request must come from an allowed
Origin (CORS_ORIGINS or the service's own origin). A JWT caller is an end user of the app:
it gets the scopes of the key named by JWT_KEY_ID minus `admin`. A cookie carries the scopes
of the key it was exchanged for (an admin's browser session is an admin).

Key lookups are cached in-process for KEY_CACHE_TTL_S seconds (default 5): a revoked key
stops working on every instance within that time, at once on the instance that revoked it
when it calls `invalidate_key`.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, TypeVar, cast
from urllib.parse import urlsplit

from fastapi import Depends, Request
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.config import IdentitySettings
from app.core.db import utcnow
from app.core.deps import SessionDep
from app.core.errors import BadRequest, Forbidden, Unauthorized
from app.core.security import hash_key
from app.identity.auth import credential_from_header
from app.identity.jwt import JwtVerifier, looks_like_jwt
from app.identity.models import ApiKey
from app.identity.principal import Principal, authenticate
from app.identity.session_models import AppSession

UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
END_USER_HEADER = "x-end-user"
_MAX_CACHE = 10_000


T = TypeVar("T")


class SingleFlight:
    """Concurrent misses on one cache key share one lookup: a burst of requests with a
    cold cache costs one query, not one pooled connection each."""

    def __init__(self) -> None:
        self._inflight: dict[Hashable, asyncio.Task[object]] = {}

    async def run(self, key: Hashable, work: Callable[[], Awaitable[T]]) -> T:
        task = self._inflight.get(key)
        if task is None:

            async def wrapped() -> object:
                try:
                    return await work()
                finally:
                    self._inflight.pop(key, None)

            task = asyncio.ensure_future(wrapped())
            self._inflight[key] = task
        # shield: one caller going away must not cancel the lookup the others wait for.
        return cast(T, await asyncio.shield(task))


@dataclass(frozen=True)
class KeySnapshot:
    id: uuid.UUID
    name: str
    scopes: frozenset[str]


class IdentityCache:
    """hash → key and id → key, each entry living `ttl` seconds; misses are cached too so a
    flood of wrong keys costs one query per distinct key per ttl, within a bounded size."""

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._by_hash: dict[str, tuple[float, KeySnapshot | None]] = {}
        self._by_id: dict[uuid.UUID, tuple[float, KeySnapshot | None]] = {}

    def get_hash(self, digest: str) -> tuple[bool, KeySnapshot | None]:
        entry = self._by_hash.get(digest)
        if entry is None or entry[0] < time.monotonic():
            return False, None
        return True, entry[1]

    def put_hash(self, digest: str, key: KeySnapshot | None) -> None:
        if self.ttl <= 0:
            return
        if len(self._by_hash) >= _MAX_CACHE:
            self._by_hash.clear()
        self._by_hash[digest] = (time.monotonic() + self.ttl, key)

    def get_id(self, key_id: uuid.UUID) -> tuple[bool, KeySnapshot | None]:
        entry = self._by_id.get(key_id)
        if entry is None or entry[0] < time.monotonic():
            return False, None
        return True, entry[1]

    def put_id(self, key_id: uuid.UUID, key: KeySnapshot | None) -> None:
        if self.ttl <= 0:
            return
        if len(self._by_id) >= _MAX_CACHE:
            self._by_id.clear()
        self._by_id[key_id] = (time.monotonic() + self.ttl, key)

    def invalidate_key(self, key_id: uuid.UUID) -> None:
        self._by_id.pop(key_id, None)
        for digest, (_, key) in list(self._by_hash.items()):
            if key is not None and key.id == key_id:
                self._by_hash.pop(digest, None)


class IdentityState:
    def __init__(
        self,
        settings: IdentitySettings,
        sessionmaker: async_sessionmaker[AsyncSession] | None = None,
    ) -> None:
        self.sessionmaker = sessionmaker
        self.cache = IdentityCache(settings.key_cache_ttl_s)
        self.flights = SingleFlight()
        self.jwt: JwtVerifier | None = None
        if settings.jwt is not None:
            self.jwt = JwtVerifier(settings.jwt)
        self.jwt_key_id: uuid.UUID | None = (
            uuid.UUID(settings.jwt.key_id) if settings.jwt is not None else None
        )

    @asynccontextmanager
    async def db(self, session: AsyncSession | None) -> AsyncIterator[AsyncSession]:
        """The caller's session when given; else a short transaction of our own, so a
        hot route (token minting) holds no pooled connection while it waits upstream."""
        if session is not None:
            yield session
            return
        assert self.sessionmaker is not None
        async with self.sessionmaker() as own, own.begin():
            yield own


def identity_state(request: Request) -> IdentityState:
    """The per-app identity state, made on first use."""
    state: IdentityState | None = getattr(request.app.state, "identity", None)
    if state is None:
        state = IdentityState(
            request.app.state.settings.identity, getattr(request.app.state, "sessionmaker", None)
        )
        request.app.state.identity = state
    return state


def invalidate_key(request: Request, key_id: uuid.UUID) -> None:
    """Forget a cached key at once (call after revoking it)."""
    identity_state(request).cache.invalidate_key(key_id)


def _snapshot(key: ApiKey) -> KeySnapshot:
    return KeySnapshot(id=key.id, name=key.name, scopes=frozenset(key.scopes))


async def key_by_secret(
    state: IdentityState, session: AsyncSession | None, raw: str
) -> KeySnapshot | None:
    digest = hash_key(raw)
    hit, snapshot = state.cache.get_hash(digest)
    if hit:
        return snapshot

    async def lookup() -> KeySnapshot | None:
        async with state.db(session) as db:
            key = await authenticate(db, raw)
            found = _snapshot(key) if key is not None else None
        state.cache.put_hash(digest, found)
        return found

    if session is not None:  # the caller's transaction: not shareable with other requests
        return await lookup()
    return await state.flights.run(("hash", digest), lookup)


async def key_by_id(
    state: IdentityState, session: AsyncSession | None, key_id: uuid.UUID
) -> KeySnapshot | None:
    hit, snapshot = state.cache.get_id(key_id)
    if hit:
        return snapshot

    async def lookup() -> KeySnapshot | None:
        async with state.db(session) as db:
            key = await db.get(ApiKey, key_id)
            found = _snapshot(key) if key is not None and key.active else None
        state.cache.put_id(key_id, found)
        return found

    if session is not None:
        return await lookup()
    return await state.flights.run(("id", key_id), lookup)


# --- Origin ---------------------------------------------------------------------------------


def _origin_of(url: str) -> str | None:
    parts = urlsplit(url)
    if parts.scheme not in {"http", "https"} or not parts.netloc:
        return None
    return f"{parts.scheme}://{parts.netloc}".lower()


def own_origins(request: Request, settings: IdentitySettings) -> set[str]:
    own = {f"{request.url.scheme}://{request.url.netloc}".lower()}
    if settings.public_base_url:
        public = _origin_of(settings.public_base_url)
        if public:
            own.add(public)
    return own


def origin_allowed(request: Request, settings: IdentitySettings, *, required: bool) -> bool:
    """The request's Origin (or, failing that, Referer) is ours or a configured CORS origin.
    With neither header, the answer is `not required`."""
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        referer = request.headers.get("referer")
        origin = _origin_of(referer) if referer else origin
    if origin is None:
        return not required
    if origin == "null":
        return False
    origin = origin.lower()
    allowed = {o.lower() for o in settings.cors_origins} | own_origins(request, settings)
    return origin in allowed


def check_origin(request: Request, settings: IdentitySettings, *, required: bool = True) -> None:
    if request.method in UNSAFE_METHODS and not origin_allowed(
        request, settings, required=required
    ):
        raise Forbidden(
            "Cross-origin request refused: the Origin is not this service's or one of CORS_ORIGINS."
        )


# --- Resolution -----------------------------------------------------------------------------


def _end_user_header(request: Request) -> str | None:
    value = request.headers.get(END_USER_HEADER)
    if value is None:
        return None
    value = value.strip()
    if not value or len(value) > 200:
        raise BadRequest("X-End-User must be 1-200 characters.")
    return value


async def _from_jwt(state: IdentityState, session: AsyncSession | None, token: str) -> Principal:
    assert state.jwt is not None
    verified = await state.jwt.verify(token)
    if state.jwt_key_id is None:
        raise Unauthorized("JWT authentication is not configured (JWT_KEY_ID).")
    key = await key_by_id(state, session, state.jwt_key_id)
    if key is None:
        raise Unauthorized("The key behind JWT callers (JWT_KEY_ID) is missing or revoked.")
    return Principal(
        key_id=key.id,
        key_name=key.name,
        scopes=key.scopes - {"admin"},
        end_user=verified.subject,
        via="jwt",
    )


async def _from_session_cookie(
    request: Request,
    settings: IdentitySettings,
    state: IdentityState,
    session: AsyncSession | None,
    cookie: str,
) -> Principal:
    # The Origin check comes first: a cross-site request learns nothing, not even validity.
    check_origin(request, settings)
    async with state.db(session) as db:
        row = (
            await db.execute(
                select(AppSession, ApiKey)
                .join(ApiKey, ApiKey.id == AppSession.key_id)
                .where(AppSession.token_hash == hash_key(cookie))
            )
        ).first()
    now = utcnow()
    if row is None:
        raise Unauthorized("Invalid session: sign in again.")
    app_session, key = row
    if app_session.revoked_at is not None or app_session.expires_at <= now or not key.active:
        raise Unauthorized("The session has ended: sign in again.")
    return Principal(
        key_id=key.id,
        key_name=key.name,
        scopes=frozenset(key.scopes),
        end_user=app_session.end_user,
        via="session",
        extra={"session_id": str(app_session.id)},
    )


async def resolve_caller(request: Request, session: AsyncSession | None = None) -> Principal:
    """The caller; lookups use `session`, or short transactions of their own when None."""
    settings: IdentitySettings = request.app.state.settings.identity
    state = identity_state(request)
    header = request.headers.get("authorization")
    if header is not None:
        raw = credential_from_header(header)
        if raw is None:
            raise Unauthorized("Empty Authorization header: send your aai-proxy key.")
        if state.jwt is not None and looks_like_jwt(raw):
            return await _from_jwt(state, session, raw)
        key = await key_by_secret(state, session, raw)
        if key is None:
            raise Unauthorized("Invalid or revoked API key.")
        return Principal(
            key_id=key.id,
            key_name=key.name,
            scopes=key.scopes,
            end_user=_end_user_header(request),
            via="key",
        )
    cookie = request.cookies.get(settings.session_cookie_name)
    if cookie:
        return await _from_session_cookie(request, settings, state, session, cookie)
    raise Unauthorized(
        "Missing credentials: send your aai-proxy key in Authorization, a JWT as "
        "`Bearer <jwt>`, or sign in for a session cookie."
    )


async def get_caller(request: Request, session: SessionDep) -> Principal:
    """The authenticated caller (key, session cookie or JWT); 401 otherwise."""
    principal = await resolve_caller(request, session)
    request.state.principal = principal
    return principal


def require_caller_scope(scope: str) -> Callable[..., Awaitable[Principal]]:
    """A dependency: the caller, who must hold `scope` (admin holds every scope)."""

    async def dependency(principal: Annotated[Principal, Depends(get_caller)]) -> Principal:
        if not principal.has(scope):
            raise Forbidden(f"This caller lacks the '{scope}' scope.")
        return principal

    dependency.__name__ = f"require_caller_{scope.replace(':', '_')}"
    return dependency


CallerDep = Annotated[Principal, Depends(get_caller)]


def session_expiry(settings: IdentitySettings) -> datetime:
    return utcnow() + timedelta(seconds=settings.session_ttl_s)
