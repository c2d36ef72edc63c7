"""Relay routes: the WebSockets `/v3/ws` and `/v1/ws`, and relay tokens for browsers
(`GET /v3/relay-token`, `GET /v1/relay-token` in upstream's token shape; `POST
/api/relay/tokens/{streaming,agents}` with the WebSocket URL to open)."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from fastapi import APIRouter, Query, Request, WebSocket
from fastapi.responses import JSONResponse
from sqlalchemy import select

from app.audit.record import record_audit
from app.core.boundary import BoundaryRoute
from app.core.db import utcnow
from app.core.deps import SessionDep, client_ip
from app.core.errors import Forbidden
from app.identity.auth import AdminDep
from app.identity.callers import CallerDep, resolve_caller
from app.identity.principal import Principal
from app.keys import service as keys_service
from app.relay.auth import SCOPE
from app.relay.models import AgentPolicy, RelaySession
from app.relay.schemas import (
    AgentPolicyRead,
    AgentPolicyUpdate,
    RelaySessionPage,
    RelaySessionRead,
)
from app.relay.service import RelayRuntime
from app.relay.state import RelayGrant
from app.tokens.limits import LimiterUnavailable, LimitExceeded
from app.tokens.schemas import (
    NO_STORE,
    AgentTokenRequest,
    AppTokenResponse,
    StreamingTokenRequest,
    TokenResponse,
    compat_token_parameters,
)
from app.tokens.service import (
    TOKENS_ONLY,
    CallContext,
    InvalidTokenParameter,
    LiveAccessDenied,
    Requested,
    parse_upstream_params,
    streaming_params,
    websocket_url,
)

router = APIRouter(tags=["relay"], route_class=BoundaryRoute)

_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": "A lifetime parameter is missing or out of range"},
    401: {"description": "No valid key, session cookie or JWT"},
    403: {
        "description": "The caller lacks the scope, chose an end user it may not, or its key's "
        "token policy allows only direct tokens (live_access=tokens)"
    },
    429: {"description": "A token mint limit was reached (Retry-After says when to retry)"},
    503: {"description": "Relay or rate-limit storage is unavailable"},
}
Kind = Literal["streaming", "agents"]


def _runtime(conn: Request | WebSocket) -> RelayRuntime:
    runtime: RelayRuntime = conn.app.state.relay
    return runtime


@router.websocket("/v3/ws")
async def streaming_relay(ws: WebSocket) -> None:
    """Streaming STT through the service, as AssemblyAI's `wss://streaming…/v3/ws`."""
    await _runtime(ws).serve(ws, "streaming")


@router.websocket("/v1/ws")
async def agents_relay(ws: WebSocket) -> None:
    """The Voice Agent through the service, as AssemblyAI's `wss://agents…/v1/ws`."""
    await _runtime(ws).serve(ws, "agents")


def _context(request: Request) -> CallContext:
    return CallContext(
        client_ip=request.client.host if request.client else None,
        user_agent=request.headers.get("user-agent"),
        endpoint=f"{request.method} {request.scope['path']}",
    )


async def _mint(
    kind: Kind, request: Request, caller: Principal, requested: Requested
) -> tuple[str, int, int]:
    """A relay token for `caller`: (token, expires_in_s, session_s). Mints count against the
    token mint limits; nothing is reserved from the budget (the session pays as it runs)."""
    runtime = _runtime(request)
    tokens = runtime.tokens
    settings = runtime.settings
    ctx = _context(request)
    if not caller.has(SCOPE[kind]):
        exc = Forbidden(f"This caller lacks the '{SCOPE[kind]}' scope.")
        await tokens.refuse(kind, caller, ctx, exc, requested, relay=True)
        raise exc
    policy = await tokens.policies.get(caller.key_id)
    if policy.live_access == "tokens":
        refusal = LiveAccessDenied(TOKENS_ONLY)
        await tokens.refuse(kind, caller, ctx, refusal, requested, relay=True, live_access="tokens")
        raise refusal
    max_expires = min(settings.token_max_expires_in_s, policy.max_expires_in_s)
    expires = min(requested.expires_in_s or max_expires, max_expires)
    session_cap = settings.max_session_s or policy.max_session_s
    session_s = min(requested.session_s or session_cap, session_cap)
    try:
        await tokens.limiter.hit_mint(policy.quota, caller.key_id, caller.end_user)
    except (LimitExceeded, LimiterUnavailable) as exc:
        await tokens.refuse(kind, caller, ctx, exc, requested, relay=True)
        raise
    grant = RelayGrant(kind, caller.key_id, caller.end_user, session_s, caller.via)
    try:
        token = await runtime.state.issue(grant, expires)
    except Exception as exc:
        raise LimiterUnavailable("Relay token storage is unreachable. Retry shortly.") from exc
    await tokens.record(
        kind,
        caller,
        ctx,
        "granted",
        status=200,
        relay=True,
        granted_expires_in_s=expires,
        granted_session_s=0,  # the relay charges by use, not at the mint
        relay_session_cap_s=session_s,
    )
    return token, expires, session_s


async def _caller(request: Request) -> Principal:
    principal = await resolve_caller(request)
    request.state.principal = principal
    return principal


async def _compat(kind: Kind, request: Request) -> JSONResponse:
    caller = await _caller(request)
    try:
        requested = parse_upstream_params(request.query_params)
    except InvalidTokenParameter as exc:
        await _runtime(request).tokens.refuse(kind, caller, _context(request), exc, relay=True)
        raise
    token, _, _ = await _mint(kind, request, caller, requested)
    return JSONResponse({"token": token}, headers=NO_STORE)


@router.get(
    "/v3/relay-token",
    response_model=TokenResponse,
    responses=_ERRORS,
    openapi_extra=compat_token_parameters("the relayed session"),
)
async def streaming_relay_token(request: Request) -> JSONResponse:
    """A single-use token for this service's `/v3/ws` (as `GET /v3/token` is for upstream's)."""
    return await _compat("streaming", request)


@router.get(
    "/v1/relay-token",
    response_model=TokenResponse,
    responses=_ERRORS,
    openapi_extra=compat_token_parameters("the relayed session"),
)
async def agents_relay_token(request: Request) -> JSONResponse:
    """A single-use token for this service's `/v1/ws`."""
    return await _compat("agents", request)


def relay_ws_base(request: Request, path: str) -> str:
    """This service's WebSocket URL for `path` (PUBLIC_BASE_URL, else the request's host)."""
    settings = _runtime(request).settings.identity
    base = settings.public_base_url or f"{request.url.scheme}://{request.url.netloc}"
    parts = urlsplit(base)
    scheme = "wss" if parts.scheme == "https" else "ws"
    return f"{scheme}://{parts.netloc}{parts.path.rstrip('/')}{path}"


async def _app_mint(
    kind: Kind, request: Request, body: StreamingTokenRequest | AgentTokenRequest
) -> JSONResponse:
    caller = await _caller(request)
    if body.end_user is not None and body.end_user != caller.end_user:
        if caller.via != "key":
            raise Forbidden("end_user is fixed by the session or JWT; it cannot be chosen here.")
        caller = Principal(
            key_id=caller.key_id,
            key_name=caller.key_name,
            scopes=caller.scopes,
            end_user=body.end_user,
            via=caller.via,
        )
    requested = Requested(body.expires_in_seconds, body.max_session_duration_seconds)
    token, expires, session_s = await _mint(kind, request, caller, requested)
    params: dict[str, Any] = {}
    if isinstance(body, StreamingTokenRequest):
        params = streaming_params(
            _runtime(request).tokens.settings, body.model_dump(exclude_none=True)
        )
    path = "/v3/ws" if kind == "streaming" else "/v1/ws"
    answer = AppTokenResponse(
        token=token,
        expires_at=utcnow() + timedelta(seconds=expires),
        websocket_url=websocket_url(relay_ws_base(request, path), token, params),
        expires_in_seconds=expires,
        max_session_duration_seconds=session_s,
    )
    return JSONResponse(answer.model_dump(mode="json"), headers=NO_STORE)


@router.post("/api/relay/tokens/streaming", response_model=AppTokenResponse, responses=_ERRORS)
async def app_streaming_relay_token(
    request: Request, body: StreamingTokenRequest | None = None
) -> JSONResponse:
    """A relay token and this service's `/v3/ws` URL a browser opens with it."""
    return await _app_mint("streaming", request, body or StreamingTokenRequest())


@router.post("/api/relay/tokens/agents", response_model=AppTokenResponse, responses=_ERRORS)
async def app_agents_relay_token(
    request: Request, body: AgentTokenRequest | None = None
) -> JSONResponse:
    """A relay token and this service's `/v1/ws` URL a browser opens with it."""
    return await _app_mint("agents", request, body or AgentTokenRequest())


_ADMIN_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "Missing or invalid key"},
    403: {"description": "Key lacks the admin scope"},
    404: {"description": "No such key"},
}


def _policy_read(key_id: uuid.UUID, row: AgentPolicy | None) -> AgentPolicyRead:
    if row is None:
        return AgentPolicyRead(key_id=key_id)
    return AgentPolicyRead(
        key_id=key_id,
        system_prompt=row.system_prompt,
        greeting=row.greeting,
        tools=row.tools,
        voices=row.voices,
        locked=list(row.locked or []),  # type: ignore[arg-type]
    )


@router.get(
    "/api/relay/agent-policies/{key_id}", response_model=AgentPolicyRead, responses=_ADMIN_ERRORS
)
async def get_agent_policy(key_id: uuid.UUID, session: SessionDep, _: AdminDep) -> AgentPolicyRead:
    """A key's Voice Agent policy on the `/v1/ws` relay."""
    await keys_service.get_key(session, key_id)
    return _policy_read(key_id, await session.get(AgentPolicy, key_id))


@router.put(
    "/api/relay/agent-policies/{key_id}", response_model=AgentPolicyRead, responses=_ADMIN_ERRORS
)
async def put_agent_policy(
    key_id: uuid.UUID,
    body: AgentPolicyUpdate,
    request: Request,
    session: SessionDep,
    admin: AdminDep,
) -> AgentPolicyRead:
    """Set a key's Voice Agent policy: values to lock or merge into `session.update`."""
    await keys_service.get_key(session, key_id)
    row = await session.get(AgentPolicy, key_id)
    if row is None:
        row = AgentPolicy(key_id=key_id)
        session.add(row)
    for name, value in body.model_dump().items():
        setattr(row, name, sorted(set(value)) if name == "locked" else value)
    await session.flush()
    _runtime(request).agent_policies.invalidate(key_id)
    await record_audit(
        session,
        action="relay.agent_policy",
        outcome="ok",
        principal=admin,
        subject=str(key_id),
        client_ip=client_ip(request),
        locked=sorted(set(body.locked)),
        fields=[n for n, v in body.model_dump().items() if v is not None and n != "locked"],
    )
    return _policy_read(key_id, row)


@router.get(
    "/api/relay/sessions",
    response_model=RelaySessionPage,
    responses={401: {"description": "Missing or invalid credentials"}},
)
async def list_relay_sessions(
    session: SessionDep,
    caller: CallerDep,
    open_only: Annotated[bool, Query(alias="open")] = False,
    key_id: uuid.UUID | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> RelaySessionPage:
    """Relayed sessions, newest first (`open=true`: only those running now). An admin sees
    every key's, a key its own, a session or JWT end user only theirs."""
    query = select(RelaySession).order_by(RelaySession.started_at.desc()).limit(limit)
    if not caller.has("admin"):
        key_id = caller.key_id
        if caller.via != "key" and caller.end_user is not None:
            query = query.where(RelaySession.end_user == caller.end_user)
    if key_id is not None:
        query = query.where(RelaySession.key_id == key_id)
    if open_only:
        query = query.where(RelaySession.ended_at.is_(None))
    rows = await session.scalars(query)
    return RelaySessionPage(items=[RelaySessionRead.model_validate(r) for r in rows])
