"""Token routes: AssemblyAI-compatible `GET /v3/token` and `GET /v1/token`, the app's
`POST /api/tokens/{streaming,agents}`, and per-key token policies."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from starlette.types import Scope

from app.audit.record import record_audit
from app.core.boundary import BoundaryRoute
from app.core.config import IdentitySettings
from app.core.deps import SessionDep, client_ip
from app.core.errors import AppError, Forbidden
from app.core.middleware import Endpoint, Shortcut
from app.identity.auth import AdminDep
from app.identity.callers import origin_allowed, resolve_caller
from app.identity.principal import Principal
from app.keys import service as keys_service
from app.tokens.models import TokenPolicy
from app.tokens.schemas import (
    NO_STORE,
    AgentTokenRequest,
    AppTokenResponse,
    StreamingTokenRequest,
    TokenPolicyRead,
    TokenPolicyUpdate,
    TokenResponse,
    compat_token_parameters,
)
from app.tokens.service import (
    SCOPE,
    CallContext,
    InvalidTokenParameter,
    Kind,
    Requested,
    TokenRuntime,
    parse_upstream_params,
    streaming_params,
    websocket_url,
)
from app.upstream.client import Upstream

router = APIRouter(tags=["tokens"], route_class=BoundaryRoute)

_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": "A lifetime parameter is missing or out of upstream's range"},
    401: {"description": "No valid key, session cookie or JWT"},
    403: {
        "description": "The caller lacks the scope, or a session-cookie mint (any method) "
        "whose Origin/Referer is missing or not this service's or one of CORS_ORIGINS, "
        "or the key's token policy allows live sessions only through the relay "
        "(live_access=relay)"
    },
    429: {"description": "A token limit was reached (Retry-After says when to retry)"},
    502: {"description": "AssemblyAI failed or rejected the service's key"},
    503: {"description": "Rate-limit storage or the audit trail is unavailable"},
}


# Dependencies here are `async def`: FastAPI runs a plain `def` dependency in a worker
# thread, which costs more than the rest of a mint's bookkeeping.
async def _runtime(request: Request) -> TokenRuntime:
    runtime: TokenRuntime = request.app.state.tokens
    return runtime


async def _upstream(request: Request) -> Upstream:
    upstream: Upstream = request.app.state.upstream
    return upstream


RuntimeDep = Annotated[TokenRuntime, Depends(_runtime)]
FastUpstreamDep = Annotated[Upstream, Depends(_upstream)]


def _context(request: Request) -> CallContext:
    return CallContext(
        client_ip=client_ip(request),
        user_agent=request.headers.get("user-agent"),
        endpoint=f"{request.method} {request.scope['path']}",
    )


async def _authorized(kind: Kind, request: Request, runtime: TokenRuntime) -> Principal:
    """The caller with the kind's scope; every refusal here is audited too."""
    principal: Principal | None = None
    try:
        check_cookie_origin(request, runtime.settings.identity)
        # No request session: lookups (cached) use short transactions of their own, so a
        # mint holds no pooled connection while it waits for AssemblyAI.
        principal = await resolve_caller(request)
        if not principal.has(SCOPE[kind]):
            raise Forbidden(f"This caller lacks the '{SCOPE[kind]}' scope.")
    except AppError as exc:
        await runtime.refuse(kind, principal, _context(request), exc)
        raise
    request.state.principal = principal
    return principal


def check_cookie_origin(request: Request, settings: IdentitySettings) -> None:
    """A mint on the strength of a session cookie alone follows the rule of every cookie
    write, whatever its method: the Origin (or Referer) must be ours or a CORS origin, and
    one of them must be present. `GET /v3/token` is a GET, but it spends limits and budget,
    and SameSite=Strict does not stop a sibling origin of the same site. Checked before the
    cookie is looked at, so a foreign page learns nothing about it."""
    if (
        request.headers.get("authorization") is None
        and request.cookies.get(settings.session_cookie_name)
        and not origin_allowed(request, settings, required=True)
    ):
        raise Forbidden(
            "Cross-origin request refused: a token minted with a session cookie needs this "
            "service's Origin or one of CORS_ORIGINS."
        )


def _token_caller(kind: Kind) -> Callable[..., Awaitable[Principal]]:
    async def dependency(request: Request) -> Principal:
        return await _authorized(kind, request, request.app.state.tokens)

    dependency.__name__ = f"token_caller_{kind}"
    return dependency


StreamingCaller = Annotated[Principal, Depends(_token_caller("streaming"))]
AgentsCaller = Annotated[Principal, Depends(_token_caller("agents"))]


async def _compat(
    kind: Kind,
    request: Request,
    caller: Principal,
    runtime: TokenRuntime,
    client: Any,
) -> JSONResponse:
    ctx = _context(request)
    try:
        requested = parse_upstream_params(request.query_params)
    except InvalidTokenParameter as exc:
        await runtime.refuse(kind, caller, ctx, exc)
        raise
    grant = await runtime.mint(
        kind=kind, caller=caller, requested=requested, client=client, ctx=ctx
    )
    return JSONResponse({"token": grant.token}, headers=NO_STORE)


# The compatible routes take only the Request: the hot path of a mint skips FastAPI's
# dependency machinery (measurable at thousands of mints per second).
@router.get(
    "/v3/token",
    response_model=TokenResponse,
    responses=_ERRORS,
    openapi_extra=compat_token_parameters("the session"),
)
async def streaming_token(request: Request) -> JSONResponse:
    """Mint a streaming STT token, as AssemblyAI's `GET /v3/token` (clamped, limited)."""
    runtime: TokenRuntime = request.app.state.tokens
    caller = await _authorized("streaming", request, runtime)
    client = request.app.state.upstream.streaming
    return await _compat("streaming", request, caller, runtime, client)


@router.get(
    "/v1/token",
    response_model=TokenResponse,
    responses=_ERRORS,
    openapi_extra=compat_token_parameters("the session"),
)
async def agents_token(request: Request) -> JSONResponse:
    """Mint a Voice Agent token, as AssemblyAI's `GET /v1/token` (clamped, limited)."""
    runtime: TokenRuntime = request.app.state.tokens
    caller = await _authorized("agents", request, runtime)
    return await _compat("agents", request, caller, runtime, request.app.state.upstream.agents)


class MintShortcut(Shortcut):
    """`GET /v3/token` and `GET /v1/token` go straight to their endpoints above (see
    ProxyApp): a mint suspends several times (upstream, audit), and every resumption walks
    the whole coroutine chain of the request."""

    ENDPOINTS: dict[str, Callable[[Request], Awaitable[JSONResponse]]] = {}

    def match(self, scope: Scope) -> Endpoint | None:
        return self.ENDPOINTS.get(scope["path"]) if scope["method"] == "GET" else None


MintShortcut.ENDPOINTS.update({"/v3/token": streaming_token, "/v1/token": agents_token})


def _with_end_user(caller: Principal, end_user: str | None) -> Principal:
    if end_user is None or end_user == caller.end_user:
        return caller
    if caller.via != "key":
        raise Forbidden("end_user is fixed by the session or JWT; it cannot be chosen here.")
    return dataclasses.replace(caller, end_user=end_user)


async def _app_mint(
    kind: Kind,
    request: Request,
    caller: Principal,
    body: StreamingTokenRequest | AgentTokenRequest,
    runtime: TokenRuntime,
    client: Any,
    ws_base: str,
    ws_params: dict[str, Any],
) -> JSONResponse:
    ctx = _context(request)
    requested = Requested(body.expires_in_seconds, body.max_session_duration_seconds)
    try:
        caller = _with_end_user(caller, body.end_user)
    except AppError as exc:
        await runtime.refuse(kind, caller, ctx, exc, requested)
        raise
    grant = await runtime.mint(
        kind=kind, caller=caller, requested=requested, client=client, ctx=ctx
    )
    answer = AppTokenResponse(
        token=grant.token,
        expires_at=grant.expires_at,
        websocket_url=websocket_url(ws_base, grant.token, ws_params),
        expires_in_seconds=grant.expires_in_s,
        max_session_duration_seconds=grant.session_s,
    )
    return JSONResponse(answer.model_dump(mode="json"), headers=NO_STORE)


@router.post("/api/tokens/streaming", response_model=AppTokenResponse, responses=_ERRORS)
async def app_streaming_token(
    request: Request,
    caller: StreamingCaller,
    upstream: FastUpstreamDep,
    runtime: RuntimeDep,
    body: StreamingTokenRequest | None = None,
) -> JSONResponse:
    """Mint a streaming token and the `/v3/ws` URL a browser opens with it."""
    body = body or StreamingTokenRequest()
    params = streaming_params(runtime.settings, body.model_dump(exclude_none=True))
    return await _app_mint(
        "streaming",
        request,
        caller,
        body,
        runtime,
        upstream.streaming,
        runtime.settings.streaming_ws_url,
        params,
    )


@router.post("/api/tokens/agents", response_model=AppTokenResponse, responses=_ERRORS)
async def app_agents_token(
    request: Request,
    caller: AgentsCaller,
    upstream: FastUpstreamDep,
    runtime: RuntimeDep,
    body: AgentTokenRequest | None = None,
) -> JSONResponse:
    """Mint a Voice Agent token and the `/v1/ws` URL a browser opens with it."""
    body = body or AgentTokenRequest()
    return await _app_mint(
        "agents",
        request,
        caller,
        body,
        runtime,
        upstream.agents,
        runtime.settings.agents_ws_url,
        {},
    )


_ADMIN_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "Missing or invalid key"},
    403: {"description": "Key lacks the admin scope"},
    404: {"description": "No such key"},
}


def _policy_read(key_id: uuid.UUID, runtime: TokenRuntime, row: TokenPolicy | None) -> Any:
    policy = runtime.policies.build(row)
    return TokenPolicyRead(
        key_id=key_id,
        max_expires_in_s=policy.max_expires_in_s,
        max_session_s=policy.max_session_s,
        key_mints_per_minute=policy.quota.key_mints_per_minute,
        end_user_mints_per_minute=policy.quota.end_user_mints_per_minute,
        key_daily_session_s=policy.quota.key_daily_session_s,
        end_user_daily_session_s=policy.quota.end_user_daily_session_s,
        live_access=policy.live_access,
        relay_key_max_sessions=policy.relay_key_max_sessions,
        relay_end_user_max_sessions=policy.relay_end_user_max_sessions,
        overrides=list(policy.overrides),
    )


@router.get(
    "/api/tokens/policies/{key_id}", response_model=TokenPolicyRead, responses=_ADMIN_ERRORS
)
async def get_policy(
    key_id: uuid.UUID, session: SessionDep, runtime: RuntimeDep, _: AdminDep
) -> TokenPolicyRead:
    """A key's effective token policy (its overrides over the global defaults)."""
    await keys_service.get_key(session, key_id)
    result: TokenPolicyRead = _policy_read(key_id, runtime, await session.get(TokenPolicy, key_id))
    return result


@router.put(
    "/api/tokens/policies/{key_id}", response_model=TokenPolicyRead, responses=_ADMIN_ERRORS
)
async def put_policy(
    key_id: uuid.UUID,
    body: TokenPolicyUpdate,
    request: Request,
    session: SessionDep,
    runtime: RuntimeDep,
    admin: AdminDep,
) -> TokenPolicyRead:
    """Set a key's token policy overrides (null fields fall back to the defaults)."""
    await keys_service.get_key(session, key_id)
    row = await session.get(TokenPolicy, key_id)
    if row is None:
        row = TokenPolicy(key_id=key_id)
        session.add(row)
    for name, value in body.model_dump().items():
        setattr(row, name, value)
    await session.flush()
    runtime.policies.invalidate(key_id)
    await record_audit(
        session,
        action="token.policy",
        outcome="ok",
        principal=admin,
        subject=str(key_id),
        client_ip=client_ip(request),
        **body.model_dump(),
    )
    result: TokenPolicyRead = _policy_read(key_id, runtime, row)
    return result
