"""Minting: validate as upstream, clamp to policy, limit, call upstream, audit, answer.

One mint costs: a cached key lookup, a cached policy lookup, two counter operations (memory
or one Redis round trip each), the upstream call over the pooled client, and one audit row
written by group commit (`app.audit.writer`). The token itself is never stored or logged.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal
from urllib.parse import urlencode, urlsplit

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.audit.writer import AuditWriter
from app.core.config import TokenSettings
from app.core.db import create_sessionmaker, utcnow
from app.core.errors import AppError, BadRequest, Forbidden, ServiceUnavailable, UpstreamError
from app.identity.callers import SingleFlight
from app.identity.principal import Principal
from app.metrics import TOKEN_MINTS, labelled
from app.tokens.limits import LimiterUnavailable, LimitExceeded, Quota, TokenLimiter
from app.tokens.models import TokenPolicy
from app.tokens.schemas import LiveAccess
from app.upstream.client import TokenHost

logger = logging.getLogger(__name__)

Kind = Literal["streaming", "agents"]
SCOPE: dict[str, str] = {"streaming": "tokens:streaming", "agents": "tokens:agents"}
ACTION: dict[str, str] = {"streaming": "token.streaming", "agents": "token.agents"}

# Upstream's ranges (reference sections 9 and 10).
EXPIRES_RANGE = (1, 600)
SESSION_RANGE = (60, 10800)
_INTEGER = re.compile(r"^-?\d{1,9}$")


class InvalidTokenParameter(BadRequest):
    message = "Invalid token parameters."


class LiveAccessDenied(Forbidden):
    """The key's token policy (`live_access`) does not allow this live path."""

    message = "This key's token policy does not allow this live path."


_LIVE_ACCESS: dict[str | None, LiveAccess] = {"tokens": "tokens", "relay": "relay"}

RELAY_ONLY = (
    "This key may use live sessions only through the service's relay (its token policy has "
    "live_access=relay): use /v3/relay-token or /v1/relay-token and /v3/ws or /v1/ws."
)
TOKENS_ONLY = (
    "This key may not use the service's relay (its token policy has live_access=tokens): "
    "mint a direct token with /v3/token or /v1/token."
)


@dataclass(frozen=True)
class Policy:
    max_expires_in_s: int
    max_session_s: int
    quota: Quota
    overrides: tuple[str, ...] = ()
    live_access: LiveAccess = "both"
    relay_key_max_sessions: int = 0
    relay_end_user_max_sessions: int = 0


@dataclass(frozen=True)
class Requested:
    expires_in_s: int | None
    session_s: int | None


@dataclass(frozen=True)
class Grant:
    token: str
    expires_in_s: int
    session_s: int
    expires_at: datetime


@dataclass(frozen=True)
class CallContext:
    client_ip: str | None
    user_agent: str | None
    endpoint: str


def _parse_int(name: str, raw: str | None, bounds: tuple[int, int], required: bool) -> int | None:
    low, high = bounds
    if raw is None or raw == "":
        if required:
            raise InvalidTokenParameter(
                f"{name} is required: an integer number of seconds from {low} to {high}."
            )
        return None
    if not _INTEGER.match(raw.strip()):
        raise InvalidTokenParameter(f"{name} must be an integer from {low} to {high}, got {raw!r}.")
    value = int(raw)
    if not low <= value <= high:
        raise InvalidTokenParameter(
            f"{name} must be between {low} and {high} seconds, got {value}."
        )
    return value


def parse_upstream_params(params: Mapping[str, str]) -> Requested:
    """Query parameters of `GET /v3/token` and `GET /v1/token`, validated as upstream does:
    `expires_in_seconds` required, 1-600; `max_session_duration_seconds` optional, 60-10800."""
    return Requested(
        expires_in_s=_parse_int(
            "expires_in_seconds", params.get("expires_in_seconds"), EXPIRES_RANGE, True
        ),
        session_s=_parse_int(
            "max_session_duration_seconds",
            params.get("max_session_duration_seconds"),
            SESSION_RANGE,
            False,
        ),
    )


def clamp(requested: Requested, policy: Policy) -> tuple[int, int]:
    """The lifetimes granted: what was asked for, never above the policy maxima. An omitted
    session length gets the policy maximum (upstream's own default is its 3-hour cap)."""
    expires = min(requested.expires_in_s or policy.max_expires_in_s, policy.max_expires_in_s)
    session = min(requested.session_s or policy.max_session_s, policy.max_session_s)
    return expires, session


def websocket_url(base: str, token: str, params: Mapping[str, Any] | None = None) -> str:
    query: dict[str, str] = {}
    for name, value in (params or {}).items():
        if value is None:
            continue
        if isinstance(value, bool):
            query[name] = "true" if value else "false"
        elif isinstance(value, list):
            query[name] = json.dumps(value, separators=(",", ":"))
        else:
            query[name] = str(value)
    query["token"] = token
    return f"{base}?{urlencode(query)}"


def streaming_params(settings: TokenSettings, body: Mapping[str, Any]) -> dict[str, Any]:
    """The query a browser needs on `/v3/ws`: our defaults, then the caller's choices."""
    encoding = body.get("encoding") or settings.streaming_encoding
    default_rate = 8000 if encoding == "pcm_mulaw" else settings.streaming_sample_rate
    params: dict[str, Any] = {
        "sample_rate": body.get("sample_rate") or default_rate,
        "encoding": encoding,
        "speech_model": body.get("speech_model") or settings.streaming_speech_model,
    }
    for name in (
        "speaker_labels",
        "format_turns",
        "keyterms_prompt",
        "prompt",
        "domain",
        "min_turn_silence",
        "max_turn_silence",
        "inactivity_timeout",
    ):
        if body.get(name) is not None:
            params[name] = body[name]
    return params


class PolicyCache:
    """Per-key policy rows, cached like keys (KEY_CACHE_TTL_S): a change applies within it."""

    FIELDS = (
        "max_expires_in_s",
        "max_session_s",
        "key_mints_per_minute",
        "end_user_mints_per_minute",
        "key_daily_session_s",
        "end_user_daily_session_s",
        "relay_key_max_sessions",
        "relay_end_user_max_sessions",
    )

    def __init__(
        self, settings: TokenSettings, sessionmaker: async_sessionmaker[AsyncSession] | None = None
    ) -> None:
        self.settings = settings
        self.sessionmaker = sessionmaker
        self.ttl = settings.key_cache_ttl_s
        self._entries: dict[uuid.UUID, tuple[float, Policy]] = {}
        self._flights = SingleFlight()

    def build(self, row: TokenPolicy | None) -> Policy:
        s = self.settings
        values: dict[str, int] = {
            "max_expires_in_s": s.max_expires_in_s,
            "max_session_s": s.max_session_s,
            "key_mints_per_minute": s.key_mints_per_minute,
            "end_user_mints_per_minute": s.end_user_mints_per_minute,
            "key_daily_session_s": s.key_daily_session_s,
            "end_user_daily_session_s": s.end_user_daily_session_s,
            "relay_key_max_sessions": s.relay_key_max_sessions,
            "relay_end_user_max_sessions": s.relay_end_user_max_sessions,
        }
        overrides = []
        live_access: LiveAccess = "both"
        if row is not None:
            for name in self.FIELDS:
                value = getattr(row, name)
                if value is not None:
                    values[name] = value
                    overrides.append(name)
            if row.live_access is not None:
                live_access = _LIVE_ACCESS.get(row.live_access, "both")
                overrides.append("live_access")
        return Policy(
            max_expires_in_s=values["max_expires_in_s"],
            max_session_s=values["max_session_s"],
            quota=Quota(
                key_mints_per_minute=values["key_mints_per_minute"],
                end_user_mints_per_minute=values["end_user_mints_per_minute"],
                key_daily_session_s=values["key_daily_session_s"],
                end_user_daily_session_s=values["end_user_daily_session_s"],
            ),
            overrides=tuple(overrides),
            live_access=live_access,
            relay_key_max_sessions=values["relay_key_max_sessions"],
            relay_end_user_max_sessions=values["relay_end_user_max_sessions"],
        )

    async def get(self, key_id: uuid.UUID) -> Policy:
        entry = self._entries.get(key_id)
        now = time.monotonic()
        if entry is not None and entry[0] > now:
            return entry[1]
        return await self._flights.run(key_id, lambda: self._load(key_id))

    async def _load(self, key_id: uuid.UUID) -> Policy:
        assert self.sessionmaker is not None
        async with self.sessionmaker() as session:
            policy = self.build(await session.get(TokenPolicy, key_id))
        if self.ttl > 0:
            if len(self._entries) > 10_000:
                self._entries.clear()
            self._entries[key_id] = (time.monotonic() + self.ttl, policy)
        return policy

    def invalidate(self, key_id: uuid.UUID) -> None:
        self._entries.pop(key_id, None)


@dataclass
class TokenRuntime:
    """What the token routes share for the app's lifetime (made in the lifespan)."""

    settings: TokenSettings
    limiter: TokenLimiter
    audit: AuditWriter
    policies: PolicyCache
    hosts: dict[str, str] = field(default_factory=dict)

    @classmethod
    def create(cls, settings: TokenSettings, engine: AsyncEngine) -> TokenRuntime:
        redis_url = settings.redis_url.get_secret_value() if settings.redis_url else None
        return cls(
            settings=settings,
            limiter=TokenLimiter(
                redis_url,
                prefix=settings.rate_limit_key_prefix,
                fail_open=settings.limits_fail_open,
            ),
            audit=AuditWriter(
                engine.url.render_as_string(hide_password=False),
                connect_timeout_s=settings.database_connect_timeout_s,
            ),
            policies=PolicyCache(settings, create_sessionmaker(engine)),
            hosts={
                "streaming": urlsplit(settings.streaming_ws_url).netloc,
                "agents": urlsplit(settings.agents_ws_url).netloc,
            },
        )

    async def aclose(self) -> None:
        await self.audit.aclose()
        await self.limiter.aclose()

    async def daily_budget(self, key_id: uuid.UUID, end_user: str | None = None) -> tuple[int, int]:
        """(limit, used today) in session-seconds of a key's, or one end user's, daily
        budget: what the usage report (app/audit) shows."""
        quota = (await self.policies.get(key_id)).quota
        limit = quota.key_daily_session_s if end_user is None else quota.end_user_daily_session_s
        return limit, await self.limiter.budget_used(key_id, end_user)

    async def record(
        self,
        kind: Kind,
        caller: Principal | None,
        ctx: CallContext,
        outcome: str,
        **detail: Any,
    ) -> None:
        """One audit row for a grant or a refusal (never the token)."""
        labelled(TOKEN_MINTS, kind, outcome).inc()
        await self.audit.write(
            key_id=caller.key_id if caller else None,
            end_user=caller.end_user if caller else None,
            action=ACTION[kind],
            outcome=outcome,
            subject=self.hosts[kind],
            client_ip=ctx.client_ip,
            user_agent=ctx.user_agent,
            detail={
                "kind": kind,
                "via": caller.via if caller else None,
                "endpoint": ctx.endpoint,
                "host": self.hosts[kind],
                **detail,
            },
        )

    async def refuse(
        self,
        kind: Kind,
        caller: Principal | None,
        ctx: CallContext,
        exc: AppError,
        requested: Requested | None = None,
        **detail: Any,
    ) -> None:
        """Audit a refusal; an audit failure never hides the original error."""
        logger.info(
            "tokens.refused",
            extra={
                "kind": kind,
                "key_id": str(caller.key_id) if caller else None,
                "end_user": caller.end_user if caller else None,
                "status": exc.status_code,
                "reason": exc.error,
            },
        )
        try:
            await self.record(
                kind,
                caller,
                ctx,
                "refused",
                status=exc.status_code,
                reason=exc.error,
                message=exc.message,
                requested_expires_in_s=requested.expires_in_s if requested else None,
                requested_session_s=requested.session_s if requested else None,
                **detail,
            )
        except Exception as audit_exc:
            logger.error(
                "tokens.audit_failed",
                extra={"kind": kind, "error_type": type(audit_exc).__name__},
            )

    async def mint(
        self,
        *,
        kind: Kind,
        caller: Principal,
        requested: Requested,
        client: TokenHost,
        ctx: CallContext,
    ) -> Grant:
        policy = await self.policies.get(caller.key_id)
        if policy.live_access == "relay":
            refusal = LiveAccessDenied(RELAY_ONLY)
            await self.refuse(kind, caller, ctx, refusal, requested, live_access="relay")
            raise refusal
        expires_in, session_s = clamp(requested, policy)
        lifetimes = {
            "requested_expires_in_s": requested.expires_in_s,
            "requested_session_s": requested.session_s,
        }
        try:
            await self.limiter.hit_mint(policy.quota, caller.key_id, caller.end_user)
            reservation = await self.limiter.reserve_budget(
                policy.quota, caller.key_id, caller.end_user, session_s
            )
        except (LimitExceeded, LimiterUnavailable) as exc:
            limit = exc.limit if isinstance(exc, LimitExceeded) else "storage_unreachable"
            await self.refuse(kind, caller, ctx, exc, requested, limit=limit)
            raise
        try:
            body = await client.mint(expires_in, session_s)
            token = body.get("token") if isinstance(body, dict) else None
            if not isinstance(token, str) or not token:
                raise UpstreamError("AssemblyAI answered without a token.")
        except AppError as exc:
            await self.limiter.refund(reservation)
            logger.warning(
                "tokens.upstream_failed",
                extra={"kind": kind, "status": exc.status_code, "reason": exc.error},
            )
            try:
                await self.record(
                    kind,
                    caller,
                    ctx,
                    "failed",
                    status=exc.status_code,
                    reason=exc.error,
                    message=exc.message,
                    **lifetimes,
                )
            except Exception:
                logger.error("tokens.audit_failed", extra={"kind": kind})
            raise
        try:
            await self.record(
                kind,
                caller,
                ctx,
                "granted",
                status=200,
                granted_expires_in_s=expires_in,
                granted_session_s=session_s,
                clamped=(requested.expires_in_s is not None and requested.expires_in_s > expires_in)
                or (requested.session_s is not None and requested.session_s > session_s),
                **lifetimes,
            )
        except Exception as exc:
            # No unaudited grant leaves the service: the token is dropped (it is single-use
            # and short-lived), the reservation given back.
            await self.limiter.refund(reservation)
            logger.error(
                "tokens.audit_failed", extra={"kind": kind, "error_type": type(exc).__name__}
            )
            raise ServiceUnavailable(
                "The grant could not be recorded in the audit trail, so no token was issued."
            ) from exc
        logger.debug(
            "tokens.granted",
            extra={
                "kind": kind,
                "key_id": str(caller.key_id),
                "end_user": caller.end_user,
                "expires_in_s": expires_in,
                "session_s": session_s,
            },
        )
        return Grant(
            token=token,
            expires_in_s=expires_in,
            session_s=session_s,
            expires_at=utcnow() + timedelta(seconds=expires_in),
        )
