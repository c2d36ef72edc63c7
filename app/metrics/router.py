"""`GET /metrics`: Prometheus text, on the service's port or on `METRICS_PORT` alone.

What lives in Postgres is read at scrape time with one cheap query each (the reconciler's
due jobs use the partial index on `next_check_at`), so any instance — or a web-only one
beside `aai-proxy worker` — reports the shared queue. A scrape never waits more than
`_DB_TIMEOUT_S` for the database: when it is down, `aai_metrics_database_up` says 0 and the
process metrics still come.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.responses import Response

from app.core.boundary import BoundaryRoute
from app.core.config import MetricsSettings
from app.core.errors import Unauthorized
from app.metrics import watch_pool

logger = logging.getLogger(__name__)

router = APIRouter(tags=["operations"], route_class=BoundaryRoute)

_DB_TIMEOUT_S = 2.0
_QUEUE = text(
    "SELECT count(*), COALESCE(EXTRACT(EPOCH FROM now() - min(next_check_at)), 0) "
    "FROM jobs WHERE next_check_at <= now()"
)
_RELAY_QUEUE = text(
    "SELECT count(*) FROM relay_deliveries WHERE status = 'pending' AND next_attempt_at <= now()"
)
_BUDGET = text(
    "SELECT key_id, used_tokens FROM llm_budget_days "
    "WHERE day = (now() AT TIME ZONE 'UTC')::date AND used_tokens > 0"
)


class MetricsUnauthorized(Unauthorized):
    message = "A valid `Authorization: Bearer <METRICS_TOKEN>` header is required."


class _Snapshot:
    """The database-backed gauges of one scrape, as a collector."""

    def __init__(self, rows: dict[str, Any] | None, budget: int) -> None:
        self.rows = rows
        self.budget = budget

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "aai_metrics_database_up", "1 when the scrape-time database queries answered."
        )
        up.add_metric([], 0 if self.rows is None else 1)
        yield up
        if self.rows is None:
            return
        depth, oldest = self.rows["queue"]
        yield GaugeMetricFamily(
            "aai_reconciler_queue_depth",
            "Jobs due for the reconciler now (fetch after a webhook, poll, retry).",
            value=depth,
        )
        yield GaugeMetricFamily(
            "aai_reconciler_oldest_due_seconds",
            "How long the longest-waiting due job has been due (0 when none).",
            value=oldest,
        )
        yield GaugeMetricFamily(
            "aai_relay_queue_depth",
            "Relay deliveries due now.",
            value=self.rows["relay"],
        )
        used = GaugeMetricFamily(
            "aai_llm_budget_used_tokens",
            "LLM tokens each key used today (UTC) against LLM_DAILY_TOKEN_BUDGET.",
            labels=["key_id"],
        )
        for key_id, tokens in self.rows["budget"]:
            used.add_metric([str(key_id)], tokens)
        yield used
        yield GaugeMetricFamily(
            "aai_llm_budget_tokens",
            "The daily LLM token budget per key (0 = unlimited).",
            value=self.budget,
        )


async def _database_rows(engine: AsyncEngine) -> dict[str, Any] | None:
    async def query() -> dict[str, Any]:
        async with engine.connect() as conn:
            queue = (await conn.execute(_QUEUE)).one()
            relay = (await conn.execute(_RELAY_QUEUE)).scalar_one()
            budget = (await conn.execute(_BUDGET)).all()
        return {
            "queue": (int(queue[0]), float(queue[1])),
            "relay": int(relay),
            "budget": [(r[0], int(r[1])) for r in budget],
        }

    try:
        return await asyncio.wait_for(query(), _DB_TIMEOUT_S)
    except Exception as exc:  # a scrape reports the database as down, never fails
        logger.warning("metrics.database_unavailable", extra={"error_type": type(exc).__name__})
        return None


async def exposition(engine: AsyncEngine, settings: MetricsSettings) -> bytes:
    """Everything, as Prometheus text: every worker's values plus the database gauges."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    else:
        registry = REGISTRY
    snapshot = CollectorRegistry()
    snapshot.register(_Snapshot(await _database_rows(engine), settings.llm_daily_token_budget))
    return generate_latest(registry) + generate_latest(snapshot)


def _authorized(settings: MetricsSettings, authorization: str | None) -> bool:
    if settings.token is None:
        return True
    expected = settings.token.get_secret_value()
    scheme, _, presented = (authorization or "").partition(" ")
    if not expected or scheme.lower() != "bearer" or not presented:
        return False
    return hmac.compare_digest(presented.encode(), expected.encode())


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    """Prometheus metrics (text exposition format)."""
    settings: MetricsSettings = request.app.state.settings.metrics
    if not _authorized(settings, request.headers.get("authorization")):
        raise MetricsUnauthorized()
    body = await exposition(request.app.state.engine, settings)
    return Response(body, media_type=CONTENT_TYPE_LATEST)


async def start_metrics(app: FastAPI, settings: MetricsSettings, engine: AsyncEngine) -> None:
    """Watch the pool; with METRICS_PORT, serve /metrics there (every worker binds it with
    SO_REUSEPORT, and each answers for all of them)."""
    watch_pool(engine)
    app.state.metrics_site = None
    if settings.port is None:
        if settings.environment == "production" and settings.token is None:
            logger.warning(
                "metrics.unprotected",
                extra={"hint": "set METRICS_TOKEN or METRICS_PORT, or block /metrics in front"},
            )
        return
    from aiohttp import web

    async def handle(request: web.Request) -> web.Response:
        if not _authorized(settings, request.headers.get("Authorization")):
            return web.json_response(
                {"error": MetricsUnauthorized.__name__, "detail": MetricsUnauthorized.message},
                status=401,
            )
        body = await exposition(engine, settings)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    web_app = web.Application()
    web_app.router.add_get("/metrics", handle)
    runner = web.AppRunner(web_app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, settings.host, settings.port, reuse_port=True)
    await site.start()
    app.state.metrics_site = runner
    logger.info(
        "metrics.listening",
        extra={"host": settings.host, "port": settings.port},
    )


def serve_process_metrics(settings: MetricsSettings) -> Callable[[], None]:
    """`aai-proxy worker`'s own metrics (reconciler, relay, upstream calls) on METRICS_PORT,
    from a daemon thread (the worker has no HTTP server); METRICS_TOKEN applies. Returns
    the function that stops it."""
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

    from prometheus_client import make_wsgi_app

    registry = REGISTRY
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    exposition_app = make_wsgi_app(registry)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != "/metrics":
            start_response("404 Not Found", [("Content-Type", "application/json")])
            return [b'{"error": "NotFound", "detail": "Only /metrics is served here."}']
        if not _authorized(settings, environ.get("HTTP_AUTHORIZATION")):
            body = json.dumps(
                {"error": MetricsUnauthorized.__name__, "detail": MetricsUnauthorized.message}
            )
            start_response("401 Unauthorized", [("Content-Type", "application/json")])
            return [body.encode()]
        answer: Iterable[bytes] = exposition_app(environ, start_response)
        return answer

    class QuietHandler(WSGIRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass

    port = settings.port
    assert port is not None
    server: WSGIServer = make_server(settings.host, port, app, handler_class=QuietHandler)
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    logger.info("metrics.listening", extra={"host": settings.host, "port": port})
    return server.shutdown


async def stop_metrics(app: FastAPI) -> None:
    runner = getattr(app.state, "metrics_site", None)
    if runner is not None:
        await runner.cleanup()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        mark_process_dead(os.getpid())  # type: ignore[no-untyped-call] # this worker's live gauges leave the sums
