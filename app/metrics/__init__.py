"""Prometheus metrics: the objects every feature records into, one line at the call site.

All names start with `aai_`. With several worker processes, set `PROMETHEUS_MULTIPROC_DIR`
(`aai-proxy serve --workers N` does it for you): prometheus-client then keeps each value in
a file there and `/metrics` adds them up, whichever worker answers the scrape. Values that
live in Postgres (the reconciler's queue, today's LLM budget use) are read at scrape time
(app/metrics/router.py).

Label values are bounded: route templates (never raw paths), key ids, short outcome words.
"""

from __future__ import annotations

import re
import time
from typing import Any

from prometheus_client import Counter, Gauge, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# Latency buckets in seconds: a mint or a webhook ack takes milliseconds, an upload minutes.
_FAST = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

HTTP_REQUESTS = Histogram(
    "aai_http_request_duration_seconds",
    "Requests served, by route template, method and status, with their latency.",
    ["route", "method", "status"],
    buckets=_FAST,
)
UPSTREAM_REQUESTS = Histogram(
    "aai_upstream_request_duration_seconds",
    "Calls to AssemblyAI (each attempt), by host, route and outcome, with their latency.",
    ["host", "route", "outcome"],
    buckets=_FAST,
)
TOKEN_MINTS = Counter(
    "aai_token_mints",
    "Temporary tokens asked for, by kind (streaming, agents) and outcome (granted, refused).",
    ["kind", "outcome"],
)
WEBHOOK_ACKS = Counter(
    "aai_webhook_acks",
    "AssemblyAI webhooks answered, by outcome (accepted, duplicate, or the error's name).",
    ["outcome"],
)
WEBHOOK_TO_FINAL = Histogram(
    "aai_webhook_to_final_seconds",
    "From a job's webhook to its final state stored by the reconciler.",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0),
)
RELAY_DELIVERIES = Counter(
    "aai_relay_deliveries",
    "Attempts to relay a job's completion to a caller's webhook, by resulting status "
    "(delivered, pending = will retry, failed, disabled).",
    ["status"],
)
LLM_TOKENS = Counter(
    "aai_llm_tokens",
    "LLM Gateway tokens billed, by key id and kind (prompt, completion).",
    ["key_id", "kind"],
)
UPLOAD_BYTES = Counter(
    "aai_upload_bytes",
    "Audio bytes streamed to AssemblyAI's /v2/upload, by upload status.",
    ["status"],
)
DB_POOL_IN_USE = Gauge(
    "aai_db_pool_connections_in_use",
    "Database connections checked out of the request/reconciler pool (all live workers).",
    multiprocess_mode="livesum",
)
# For the WebSocket relay: `WS_SESSIONS_OPEN.labels(kind).inc()` when a session opens and
# `.dec()` when it ends; `WS_SESSION_SECONDS.labels(kind).inc(seconds)` at its end.
WS_SESSIONS_OPEN = Gauge(
    "aai_ws_sessions_open",
    "Relayed WebSocket sessions open now, by kind (streaming, agents).",
    ["kind"],
    multiprocess_mode="livesum",
)
WS_SESSION_SECONDS = Counter(
    "aai_ws_session_seconds",
    "Seconds of relayed WebSocket sessions, by kind (streaming, agents).",
    ["kind"],
)

_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_children: dict[tuple[str, str, int], Any] = {}


def observe_request(route: str, method: str, status: int, seconds: float) -> None:
    """Record one served request (children cached: `labels()` takes a lock every call)."""
    key = (route, method, status)
    child = _children.get(key)
    if child is None:
        if method not in _METHODS:
            method = "other"
        child = _children[key] = HTTP_REQUESTS.labels(route, method, str(status))
    child.observe(seconds)


def route_template(scope: Scope) -> str:
    """The matched route's template (`/v2/transcript/{transcript_id}`), never the raw path."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    if isinstance(path, str):
        return path or "/"
    return "unmatched"


class MetricsMiddleware:
    """Times every HTTP request that the middleware stack serves (the shortcuts in
    `ProxyApp` record themselves, see app/core/middleware.py)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            observe_request(
                route_template(scope), scope["method"], status, time.perf_counter() - started
            )


_ID_SEGMENT = re.compile(r"/(?=[^/]*\d)[A-Za-z0-9_\-]{8,}(?=/|$)")


def upstream_route(path: str) -> str:
    """An upstream path with ids replaced: `/v2/transcript/{id}/sentences`."""
    return _ID_SEGMENT.sub("/{id}", path.split("?", 1)[0])


_upstream_children: dict[tuple[str, str, str], Any] = {}


def observe_upstream(host: str, path: str, outcome: str, seconds: float) -> None:
    key = (host, path, outcome)
    child = _upstream_children.get(key)
    if child is None:
        child = UPSTREAM_REQUESTS.labels(host, upstream_route(path), outcome)
        if len(_upstream_children) < 4096:  # paths with ids would grow it without end
            _upstream_children[key] = child
    child.observe(seconds)


_labelled: dict[tuple[Any, ...], Any] = {}


def labelled(metric: Any, *labels: str) -> Any:
    """`metric.labels(*labels)`, cached: `labels()` takes a lock and builds its key on every
    call, which shows on the per-request paths (a mint, a webhook ack). For bounded label
    values only; the cache stops growing at 4,096 children all the same."""
    key = (metric, *labels)
    child = _labelled.get(key)
    if child is None:
        child = metric.labels(*labels)
        if len(_labelled) < 4096:
            _labelled[key] = child
    return child


def upstream_outcome(status: int) -> str:
    """`2xx`, `4xx`, `429`, `5xx`: enough to see refusals and storms apart."""
    return "429" if status == 429 else f"{status // 100}xx"


class UpstreamCall:
    """Times one attempt of an upstream call: `with UpstreamCall(host, path) as call:` then
    `call.status = ...`; an exception is recorded by its class name (ReadTimeout, ...)."""

    __slots__ = ("host", "path", "started", "status")

    def __init__(self, host: str, path: str, started: float | None = None) -> None:
        self.host = host
        self.path = path
        self.status = 0
        self.started = started if started is not None else 0.0

    def __enter__(self) -> UpstreamCall:
        if not self.started:
            self.started = time.perf_counter()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        outcome = exc_type.__name__ if exc_type is not None else upstream_outcome(self.status)
        observe_upstream(self.host, self.path, outcome, time.perf_counter() - self.started)


def watch_pool(engine: Any) -> None:
    """Keep `aai_db_pool_connections_in_use` from the pool's checkout/checkin events."""
    from sqlalchemy import event

    pool = engine.sync_engine.pool
    event.listen(pool, "checkout", lambda *_: DB_POOL_IN_USE.inc())
    event.listen(pool, "checkin", lambda *_: DB_POOL_IN_USE.dec())
