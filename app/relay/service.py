"""One relayed live session, from the upgrade to the last row written.

Order: authenticate → policy (query, session cap, open-session slots, first budget slice)
→ upstream with the service's key → accept → pass frames both ways unchanged → end →
meter. Nothing goes upstream before every check passed; a refusal is an accepted socket
closed with upstream's code for the same cause (1008, 3006, 3009) or one of the relay's
own (4029, 4503), and an audit row. An upstream that refuses the upgrade (an HTTP status)
is answered with the same status, body and `Retry-After`.

While it runs: one task reads the client and writes upstream, one reads upstream and
writes the client, one meters (budget slices, session cap, slot lease). Each direction
holds at most one message in flight; the WebSocket layers' own bounded buffers do the
rest (uvicorn stops reading a client until its message is taken; the upstream client
stops reading after WS_RELAY_QUEUE_MESSAGES). A client that takes nothing for
WS_RELAY_STALL_TIMEOUT_S is closed with 4408.

How it ends:
- upstream closes: the client gets upstream's code and reason as they are;
- the client closes without `Terminate` (tab closed, network drop): `Terminate` goes
  upstream at once (the Voice Agent session is closed), so billing stops;
- the budget or the cap runs out, or the service shuts down: `Terminate` upstream, the
  client receives what upstream still sends (final Turns, `Termination`), then the
  relay's code (4029, 3008, 1012) and a sentence.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.responses import Response
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException

from app.core.config import RelaySettings
from app.core.db import utcnow
from app.core.errors import AppError
from app.identity.principal import Principal
from app.metrics import WS_SESSION_SECONDS, WS_SESSIONS_OPEN
from app.relay import agent_policy
from app.relay import policy as codes
from app.relay.agent_policy import AgentPolicyCache, AgentRules
from app.relay.auth import SCOPE, authenticate
from app.relay.meter import Meter
from app.relay.models import RelaySession
from app.relay.policy import (
    LIVE_ACCESS_TOKENS_REASON,
    PolicyRefusal,
    StreamShape,
    check_streaming_query,
)
from app.relay.state import RelayGrant, RelayState
from app.tokens.limits import LimiterUnavailable, LimitExceeded
from app.tokens.service import TokenRuntime
from app.upstream.transport import upstream_ssl_context

logger = logging.getLogger(__name__)
# The upstream sockets' own logger: never at DEBUG, where websockets logs every header (the
# service's key) and every frame (the user's speech and transcripts).
UPSTREAM_LOG = logging.getLogger("app.relay.upstream")
UPSTREAM_LOG.setLevel(logging.INFO)

Kind = Literal["streaming", "agents"]
TERMINATE = '{"type": "Terminate"}'
ACTION = {"streaming": "relay.streaming", "agents": "relay.agents"}


class ClientStalled(Exception):
    """The client took nothing for the stall timeout while a message waited for it."""


@dataclass(frozen=True)
class Product:
    kind: Kind
    path: str
    upstream_url: str
    authorization: str


def _reason(text: str) -> str:
    """A close reason fits in 123 bytes of UTF-8."""
    data = text.encode()[:123]
    return data.decode("utf-8", "ignore")


def _query_without_token(raw: bytes) -> str:
    """The upgrade's query string as sent, minus `token` (the relay's, never upstream's)."""
    if not raw:
        return ""
    parts = [p for p in raw.split(b"&") if p and not (p == b"token" or p.startswith(b"token="))]
    return b"&".join(parts).decode("latin-1")


@dataclass
class Live:
    """The counters of one running session."""

    id: uuid.UUID
    product: Product
    caller: Principal
    shape: StreamShape | None
    started: float = 0.0
    audio_bytes: int = 0
    agent_audio_b64: int = 0
    client_terminated: bool = False
    client_open: bool = True
    upstream_session_id: str | None = None
    termination: dict[str, Any] = field(default_factory=dict)
    rules: AgentRules | None = None  # the key's Voice Agent policy (agents only)
    updates: int = 0  # session.update events passed upstream
    ending: bool = False  # the relay sent Terminate (or closed the agent session)

    def audio_seconds(self) -> float:
        """Counted from the PCM bytes sent (`/v1/ws`: the base64 `input.audio` payloads at
        24 kHz); for an encoding the relay cannot count, upstream's `Termination` figure."""
        if self.product.kind == "agents":
            return self.agent_audio_b64 * 3 / 4 / (24_000 * 2)
        if self.shape is not None:
            seconds = self.shape.audio_seconds(self.audio_bytes)
            if seconds is not None:
                return seconds
        try:
            return float(self.termination.get("audio_duration_seconds") or 0.0)
        except (TypeError, ValueError):
            return 0.0


class RelayRuntime:
    """What the relay shares for the app's lifetime (made in the lifespan)."""

    def __init__(
        self,
        settings: RelaySettings,
        tokens: TokenRuntime,
        sessionmaker: async_sessionmaker[AsyncSession],
    ) -> None:
        self.settings = settings
        self.tokens = tokens
        self.sessionmaker = sessionmaker
        redis_url = settings.redis_url.get_secret_value() if settings.redis_url else None
        self.state = RelayState(redis_url, settings.rate_limit_key_prefix)
        key = settings.upstream_key.get_secret_value()
        self.products: dict[str, Product] = {
            "streaming": Product("streaming", "/v3/ws", settings.streaming_ws_url, key),
            "agents": Product("agents", "/v1/ws", settings.agents_ws_url, f"Bearer {key}"),
        }
        self.agent_policies = AgentPolicyCache(sessionmaker, settings.key_cache_ttl_s)
        self.closing = asyncio.Event()
        self.open: set[asyncio.Task[Any]] = set()

    async def aclose(self) -> None:
        """Terminate every open session (1012), give them a moment, close the stores."""
        self.closing.set()
        if self.open:
            await asyncio.wait(self.open, timeout=self.settings.terminate_wait_s + 2)
        await self.state.aclose()

    # --- the session -----------------------------------------------------------------------

    async def serve(self, ws: WebSocket, kind: Kind) -> None:
        task = asyncio.current_task()
        if task is not None:
            self.open.add(task)
        try:
            await self._serve(ws, self.products[kind])
        finally:
            if task is not None:
                self.open.discard(task)

    def _context(self, ws: WebSocket, product: Product) -> dict[str, Any]:
        return {
            "client_ip": ws.client.host if ws.client else None,
            "user_agent": (ws.headers.get("user-agent") or "")[:500] or None,
            "endpoint": f"WS {product.path}",
        }

    async def _audit(
        self,
        product: Product,
        caller: Principal | None,
        ctx: dict[str, Any],
        outcome: str,
        **detail: Any,
    ) -> None:
        try:
            await self.tokens.audit.write(
                key_id=caller.key_id if caller else None,
                end_user=caller.end_user if caller else None,
                action=ACTION[product.kind],
                outcome=outcome,
                subject=product.path,
                client_ip=ctx["client_ip"],
                user_agent=ctx["user_agent"],
                detail={
                    "via": caller.via if caller else None,
                    "endpoint": ctx["endpoint"],
                    **detail,
                },
            )
        except Exception as exc:
            logger.error(
                "relay.audit_failed", extra={"kind": product.kind, "error_type": type(exc).__name__}
            )

    async def _refuse(
        self,
        ws: WebSocket,
        product: Product,
        caller: Principal | None,
        ctx: dict[str, Any],
        code: int,
        reason: str,
    ) -> None:
        """Refused before anything went upstream: accept, close with `code`, audit."""
        logger.info(
            "relay.refused",
            extra={
                "kind": product.kind,
                "key_id": str(caller.key_id) if caller else None,
                "end_user": caller.end_user if caller else None,
                "close_code": code,
                "reason": reason,
            },
        )
        with contextlib.suppress(RuntimeError, OSError, WebSocketDisconnect):
            await ws.accept()
            await ws.close(code, _reason(reason))
        await self._audit(product, caller, ctx, "refused", close_code=code, reason=reason)

    def _cap(self, policy_max_s: int, grant: RelayGrant | None) -> int:
        cap = self.settings.max_session_s or policy_max_s
        if grant is not None and grant.session_s:
            cap = min(cap, grant.session_s)
        return max(1, cap)

    async def _serve(self, ws: WebSocket, product: Product) -> None:
        settings = self.settings
        ctx = self._context(ws, product)
        caller: Principal | None = None
        shape: StreamShape | None = None
        # --- who, and what they may do: nothing goes upstream before all of it passed.
        try:
            caller, grant = await authenticate(ws, self.state, settings.identity, product.kind)
            if not caller.has(SCOPE[product.kind]):
                raise PolicyRefusal(
                    codes.UNAUTHORIZED,
                    f"Forbidden: this caller lacks the '{SCOPE[product.kind]}' scope",
                )
            if product.kind == "streaming":
                shape = check_streaming_query(
                    ws.query_params, list(ws.query_params.keys()), settings
                )
            policy = await self.tokens.policies.get(caller.key_id)
            if policy.live_access == "tokens":
                raise PolicyRefusal(codes.UNAUTHORIZED, LIVE_ACCESS_TOKENS_REASON)
            rules = None
            if product.kind == "agents":
                rules = await self.agent_policies.get(caller.key_id)
        except AppError as exc:
            await self._refuse(ws, product, caller, ctx, codes.UNAUTHORIZED, exc.message)
            return
        except PolicyRefusal as exc:
            await self._refuse(ws, product, caller, ctx, exc.code, exc.reason)
            return
        except self.state.errors as exc:
            logger.error("relay.storage_unreachable", extra={"error_type": type(exc).__name__})
            await self._refuse(
                ws, product, caller, ctx, codes.STORAGE_UNAVAILABLE, "Relay storage unreachable"
            )
            return
        live = Live(id=uuid.uuid4(), product=product, caller=caller, shape=shape, rules=rules)
        limits = (policy.relay_key_max_sessions, policy.relay_end_user_max_sessions)
        try:
            refused = await self.state.acquire(
                product.kind, caller.key_id, caller.end_user, str(live.id), limits
            )
        except self.state.errors as exc:
            logger.error("relay.storage_unreachable", extra={"error_type": type(exc).__name__})
            await self._refuse(
                ws, product, caller, ctx, codes.STORAGE_UNAVAILABLE, "Relay storage unreachable"
            )
            return
        if refused is not None:
            limit = limits[0] if refused == "per key" else limits[1]
            await self._refuse(
                ws,
                product,
                caller,
                ctx,
                codes.TOO_MANY_SESSIONS,
                f"Too many concurrent sessions: at most {limit} {refused}",
            )
            return
        try:
            await self._metered(ws, live, grant, policy.max_session_s, policy.quota, ctx)
        finally:
            with contextlib.suppress(*self.state.errors):
                await self.state.release(product.kind, caller.key_id, caller.end_user, str(live.id))

    async def _metered(
        self,
        ws: WebSocket,
        live: Live,
        grant: RelayGrant | None,
        policy_max_s: int,
        quota: Any,
        ctx: dict[str, Any],
    ) -> None:
        product, caller, settings = live.product, live.caller, self.settings
        cap = self._cap(policy_max_s, grant)
        meter = Meter(
            self.tokens.limiter,
            quota,
            caller.key_id,
            caller.end_user,
            slice_s=settings.budget_slice_s,
            cap_s=cap,
        )
        try:
            await meter.take()
        except LimitExceeded as exc:
            await self._refuse(ws, product, caller, ctx, codes.BUDGET_EXHAUSTED, exc.message)
            return
        except LimiterUnavailable:
            await self._refuse(
                ws, product, caller, ctx, codes.STORAGE_UNAVAILABLE, "Budget storage unreachable"
            )
            return
        upstream = await self._connect(ws, live, ctx)
        if upstream is None:
            await meter.settle(0)
            return
        charged = 0
        outcome: tuple[int | None, str | None, str] = (None, None, "unknown")
        try:
            await ws.accept()
            live.started = time.monotonic()
            WS_SESSIONS_OPEN.labels(product.kind).inc()
            await self._record_start(live)
            outcome = await self._pump(ws, upstream, live, meter)
        finally:
            session_s = time.monotonic() - live.started if live.started else 0.0
            if live.started:
                WS_SESSIONS_OPEN.labels(product.kind).dec()
                WS_SESSION_SECONDS.labels(product.kind).inc(session_s)
            if not (live.ending or live.termination or live.client_terminated):
                # Any other way out (the client gone before accept, an error): the upstream
                # session must not run on.
                await self._end_upstream(upstream, live)
            with contextlib.suppress(Exception):
                await upstream.close()
            try:
                charged = await meter.settle(session_s)
            except Exception as exc:
                logger.warning("relay.refund_failed", extra={"error_type": type(exc).__name__})
            await self._record_end(live, session_s, charged, outcome, upstream)
            await self._audit(
                product,
                caller,
                ctx,
                "ended",
                session_id=str(live.id),
                upstream_session_id=live.upstream_session_id,
                session_s=round(session_s, 3),
                audio_s=round(live.audio_seconds(), 3),
                charged_session_s=charged,
                close_code=outcome[0],
                close_reason=outcome[1],
                upstream_close_code=upstream.close_code,
                ended_by=outcome[2],
                client_terminated=live.client_terminated,
                speech_model=live.shape.speech_model if live.shape else None,
            )
            logger.info(
                "relay.session.ended",
                extra={
                    "kind": product.kind,
                    "session_id": str(live.id),
                    "key_id": str(caller.key_id),
                    "end_user": caller.end_user,
                    "session_s": round(session_s, 3),
                    "charged_s": charged,
                    "close_code": outcome[0],
                    "upstream_close_code": upstream.close_code,
                    "ended_by": outcome[2],
                },
            )

    async def _connect(
        self, ws: WebSocket, live: Live, ctx: dict[str, Any]
    ) -> ClientConnection | None:
        """Upstream, with the service's key; None after answering the client's refusal."""
        product, settings = live.product, self.settings
        query = _query_without_token(ws.scope.get("query_string", b""))
        url = product.upstream_url + (f"?{query}" if query else "")
        try:
            return await connect(
                url,
                additional_headers={"Authorization": product.authorization},
                open_timeout=settings.connect_timeout_s,
                max_size=settings.max_message_bytes,
                max_queue=settings.queue_messages,
                compression=None,
                ssl=upstream_ssl_context(settings.upstream_ca_file)
                if url.startswith("wss://")
                else None,
                user_agent_header=ws.headers.get("user-agent") or "aai-proxy relay",
                close_timeout=settings.terminate_wait_s,
                logger=UPSTREAM_LOG,
            )
        except InvalidStatus as exc:
            status = exc.response.status_code
            body = bytes(exc.response.body or b"")
            headers = {}
            if exc.response.headers.get("Retry-After"):
                headers["Retry-After"] = exc.response.headers["Retry-After"]
            media = exc.response.headers.get("Content-Type") or "application/json"
            await self._deny(ws, live, ctx, status, body, headers, media)
        except (OSError, TimeoutError, WebSocketException) as exc:
            logger.warning(
                "relay.upstream_unreachable",
                extra={"kind": product.kind, "error_type": type(exc).__name__},
            )
            body = json.dumps({"error": "AssemblyAI could not be reached."}).encode()
            await self._deny(ws, live, ctx, 502, body, {}, "application/json")
        return None

    async def _deny(
        self,
        ws: WebSocket,
        live: Live,
        ctx: dict[str, Any],
        status: int,
        body: bytes,
        headers: dict[str, str],
        media: str,
    ) -> None:
        """Answer the upgrade with upstream's refusal (or 502 when it was unreachable)."""
        try:
            await ws.send_denial_response(Response(body, status, headers, media_type=media))
        except RuntimeError:  # a server without the denial extension: close instead
            with contextlib.suppress(RuntimeError, OSError, WebSocketDisconnect):
                await ws.accept()
                await ws.close(codes.INTERNAL_ERROR, _reason(f"Upstream refused: HTTP {status}"))
        except (OSError, WebSocketDisconnect):
            pass  # the client is gone already
        await self._audit(
            live.product,
            live.caller,
            ctx,
            "failed",
            upstream_status=status,
            session_id=str(live.id),
        )

    # --- frames both ways ------------------------------------------------------------------

    async def _client_to_upstream(
        self, ws: WebSocket, upstream: ClientConnection, live: Live
    ) -> tuple[int | None, str | None]:
        """Until the client closes: its (code, reason)."""
        agents = live.product.kind == "agents"
        while True:
            message = await ws.receive()
            if message["type"] == "websocket.disconnect":
                live.client_open = False
                return message.get("code"), message.get("reason")
            data = message.get("bytes")
            if data is not None:
                live.audio_bytes += len(data)
                await upstream.send(data)
                continue
            text = message.get("text") or ""
            if agents:
                if '"input.audio"' in text:
                    live.agent_audio_b64 += max(0, len(text) - 40)
                elif '"session.update"' in text and live.rules is not None:
                    ruled = await self._agent_rules(ws, live, text)
                    if ruled is None:
                        continue
                    text = ruled
            elif '"Terminate"' in text and _type_of(text) == "Terminate":
                live.client_terminated = True
            await upstream.send(text)

    async def _agent_rules(self, ws: WebSocket, live: Live, text: str) -> str | None:
        """The `session.update` as the key's policy makes it, or None when refused (the
        client got an `error` event)."""
        assert live.rules is not None
        event = _json(text)
        if live.rules.empty or event.get("type") != "session.update":
            return text
        try:
            ruled = agent_policy.apply(live.rules, event, first=live.updates == 0)
        except agent_policy.Refused as exc:
            logger.info(
                "relay.agent.update_refused",
                extra={"session_id": str(live.id), "key_id": str(live.caller.key_id)},
            )
            await self._to_client(ws, live, agent_policy.error_event(str(exc)))
            return None
        live.updates += 1
        return json.dumps(ruled)

    async def _to_client(self, ws: WebSocket, live: Live, message: str | bytes) -> None:
        if not live.client_open:
            return
        try:
            async with asyncio.timeout(self.settings.stall_timeout_s):
                if isinstance(message, str):
                    await ws.send_text(message)
                else:
                    await ws.send_bytes(message)
        except TimeoutError:
            live.client_open = False
            raise ClientStalled() from None
        except (WebSocketDisconnect, RuntimeError, OSError):
            live.client_open = False

    async def _upstream_to_client(
        self, ws: WebSocket, upstream: ClientConnection, live: Live
    ) -> None:
        """Until upstream closes (its code and reason are on `upstream`)."""
        streaming = live.product.kind == "streaming"
        try:
            while True:
                message = await upstream.recv()
                if isinstance(message, str) and streaming:
                    if live.upstream_session_id is None and '"Begin"' in message:
                        begin = _json(message)
                        if begin.get("type") == "Begin":
                            live.upstream_session_id = str(begin.get("id"))[:100]
                    elif '"Termination"' in message:
                        end = _json(message)
                        if end.get("type") == "Termination":
                            live.termination = end
                elif isinstance(message, str) and live.upstream_session_id is None:
                    if '"session.ready"' in message:
                        ready = _json(message)
                        live.upstream_session_id = str(ready.get("session_id"))[:100]
                await self._to_client(ws, live, message)
        except ConnectionClosed:
            return

    async def _end_upstream(self, upstream: ClientConnection, live: Live) -> None:
        """Stop the bill: `Terminate` (streaming) or close the agent session."""
        live.ending = True
        with contextlib.suppress(ConnectionClosed, OSError):
            if live.product.kind == "streaming":
                await upstream.send(TERMINATE)
            else:
                await upstream.close(1000, "Client disconnected")

    async def _pump(
        self, ws: WebSocket, upstream: ClientConnection, live: Live, meter: Meter
    ) -> tuple[int | None, str | None, str]:
        """Relay until the end; (close code given to or by the client, reason, ended by)."""
        caller = live.caller

        async def renew() -> None:
            with contextlib.suppress(*self.state.errors):
                await self.state.renew(
                    live.product.kind, caller.key_id, caller.end_user, str(live.id)
                )

        reader = asyncio.create_task(self._client_to_upstream(ws, upstream, live))
        pump = asyncio.create_task(self._upstream_to_client(ws, upstream, live))
        metering = asyncio.create_task(meter.run(live.started, renew))
        closing = asyncio.create_task(self.closing.wait())
        tasks = {reader, pump, metering, closing}
        wait = self.settings.terminate_wait_s
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            if pump in done:
                if isinstance(pump.exception(), ClientStalled):
                    return await self._stalled(ws, upstream, live)
                return await self._upstream_closed(ws, upstream, live)
            if reader in done:
                if reader.exception() is not None:  # upstream went away under a send
                    await asyncio.wait({pump}, timeout=wait)
                    return await self._upstream_closed(ws, upstream, live)
                code, reason = reader.result()
                if live.client_terminated:
                    ended_by = "client"
                else:
                    ended_by = "client_gone"
                    await self._end_upstream(upstream, live)
                await asyncio.wait({pump}, timeout=wait)
                return code, reason, ended_by
            # The relay ends it: budget, cap, storage, or shutdown.
            if metering in done:
                code, ended_by, reason = metering.result()
            else:
                code, ended_by, reason = codes.SERVICE_RESTART, "shutdown", "Service restarting"
            reader.cancel()
            await self._end_upstream(upstream, live)
            await asyncio.wait({pump}, timeout=wait)
            if isinstance(pump.exception() if pump.done() else None, ClientStalled):
                ended_by = f"{ended_by}+stall"
            await self._close_client(ws, code, reason)
            return code, reason, ended_by
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _upstream_closed(
        self, ws: WebSocket, upstream: ClientConnection, live: Live
    ) -> tuple[int | None, str | None, str]:
        code = upstream.close_code if upstream.close_code is not None else 1006
        reason = upstream.close_reason or ""
        if code in codes.NOT_SENDABLE:
            code, reason = codes.INTERNAL_ERROR, "Upstream connection lost"
        await self._close_client(ws, code, reason)
        ended_by = "client" if live.client_terminated else "upstream"
        return code, reason, ended_by

    async def _stalled(
        self, ws: WebSocket, upstream: ClientConnection, live: Live
    ) -> tuple[int | None, str | None, str]:
        await self._end_upstream(upstream, live)
        reason = f"Client too slow: took nothing for {self.settings.stall_timeout_s:g} s"
        await self._close_client(ws, codes.CLIENT_STALLED, reason)
        return codes.CLIENT_STALLED, reason, "stall"

    async def _close_client(self, ws: WebSocket, code: int, reason: str) -> None:
        if ws.application_state != WebSocketState.CONNECTED:
            return
        with contextlib.suppress(RuntimeError, OSError, WebSocketDisconnect, TimeoutError):
            async with asyncio.timeout(2):
                await ws.close(code, _reason(reason))

    # --- the record ------------------------------------------------------------------------

    async def _record_start(self, live: Live) -> None:
        caller = live.caller
        try:
            async with self.sessionmaker() as session, session.begin():
                session.add(
                    RelaySession(
                        id=live.id,
                        kind=live.product.kind,
                        key_id=caller.key_id,
                        end_user=caller.end_user,
                        via=caller.via,
                        speech_model=live.shape.speech_model if live.shape else None,
                        started_at=utcnow(),
                        session_s=0.0,
                        audio_s=0.0,
                        charged_s=0,
                    )
                )
        except Exception as exc:  # the session goes on; its end is still audited
            logger.error("relay.record_failed", extra={"error_type": type(exc).__name__})

    async def _record_end(
        self,
        live: Live,
        session_s: float,
        charged: int,
        outcome: tuple[int | None, str | None, str],
        upstream: ClientConnection,
    ) -> None:
        if not live.started:
            return
        try:
            async with self.sessionmaker() as session, session.begin():
                await session.execute(
                    update(RelaySession)
                    .where(RelaySession.id == live.id)
                    .values(
                        ended_at=utcnow(),
                        session_s=round(session_s, 3),
                        audio_s=round(live.audio_seconds(), 3),
                        charged_s=charged,
                        close_code=outcome[0],
                        close_reason=(outcome[1] or "")[:200] or None,
                        ended_by=outcome[2],
                        client_terminated=live.client_terminated,
                        upstream_session_id=live.upstream_session_id,
                    )
                )
        except Exception as exc:
            logger.error("relay.record_failed", extra={"error_type": type(exc).__name__})


def _type_of(text: str) -> str | None:
    kind = _json(text).get("type")
    return kind if isinstance(kind, str) else None


def _json(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
