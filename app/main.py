"""The application factory: resources live in the lifespan, features are routers."""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from app.audit.router import router as audit_router
from app.core import boundary_openapi, http_server
from app.core.boundary import BoundaryRoute, TrustedProxies
from app.core.config import Settings, get_settings
from app.core.db import create_engine, create_sessionmaker
from app.core.errors import register_error_handlers
from app.core.logging import configure_logging
from app.core.middleware import ProxyApp, RequestIdMiddleware
from app.core.migrate import script_heads
from app.docs.router import mount_docs
from app.health.router import router as health_router
from app.keys.router import router as keys_router
from app.llm import subscribe_with as subscribe_llm
from app.llm.router import router as llm_router
from app.llm.worker import stop_summaries
from app.metrics import MetricsMiddleware, observe_request
from app.metrics.router import router as metrics_router
from app.metrics.router import start_metrics, stop_metrics
from app.relay.router import router as relay_router
from app.relay.service import RelayRuntime
from app.sessions.router import router as sessions_router
from app.tokens.router import MintShortcut
from app.tokens.router import router as tokens_router
from app.tokens.service import TokenRuntime
from app.transcripts.router import router as transcripts_router
from app.uploads.router import router as uploads_router
from app.uploads.upstream import create_upload_client
from app.upstream.client import create_upstream
from app.web.router import mount_client
from app.webhooks.router import WebhookShortcut
from app.webhooks.router import router as webhooks_router
from app.webhooks.runtime import start_webhooks, stop_webhooks
from app.worker import Scheduler

logger = logging.getLogger(__name__)


_heap_frozen = False


def _freeze_startup_heap() -> None:
    """Hide what start-up made (modules, routes, models, pools) from the cyclic collector.

    It lives as long as the process, yet every full collection walked it: under load each
    took 30-80 ms (the mint benchmark's p99) and together a quarter of the CPU. Once per
    process (tests start many apps in one).
    """
    global _heap_frozen
    if not _heap_frozen:
        _heap_frozen = True
        gc.collect()
        gc.freeze()


def create_app(settings: Settings | None = None, *, configure_logs: bool = True) -> FastAPI:
    settings = settings or get_settings()
    if configure_logs:
        configure_logging(settings.log_level, settings.json_logs, settings.secret_values())
    if settings.database_url is None:
        raise RuntimeError(
            "DATABASE_URL is not set: start the service with `aai-proxy serve`, which starts "
            "an embedded Postgres when no DATABASE_URL is configured"
        )
    if settings.secrets_key_is_public():
        logger.warning(
            "app.secrets_key.public",
            extra={
                "detail": "SECRETS_KEY is unset or holds the public development key, yet "
                "ASSEMBLYAI_API_KEY is a real key: stored relay signing secrets and relay "
                "header values are readable by anyone with the database. Set SECRETS_KEY to "
                "a key of your own (docs/secrets.md)."
            },
        )
    database_url = settings.database_url.get_secret_value()
    # Handlers that need their feature's part of these settings (events carry none).
    subscribe_llm(settings.llm)
    http_server.configure(settings.request_header_timeout_s, settings.request_body_idle_timeout_s)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = create_engine(
            database_url,
            pool_size=settings.database_pool_size,
            max_overflow=settings.database_max_overflow,
            connect_timeout_s=settings.database_connect_timeout_s,
            pool_timeout_s=settings.database_pool_timeout_s,
        )
        app.state.engine = engine
        app.state.sessionmaker = create_sessionmaker(engine)
        app.state.upstream = create_upstream(settings.upstream)
        app.state.upload_rest = create_upload_client(settings.upstream)
        app.state.tokens = TokenRuntime.create(settings.tokens, engine)
        if settings.metrics_enabled:
            await start_metrics(app, settings.metrics, engine)
        app.state.relay = RelayRuntime(settings.relay, app.state.tokens, app.state.sessionmaker)
        webhooks = await start_webhooks(app, settings.webhooks, database_url)
        scheduler = None
        if settings.reconciler_enabled:  # else `aai-proxy worker` runs the periodic jobs
            scheduler = Scheduler(
                app.state.sessionmaker, app.state.upstream, settings, wake=webhooks.hub.wake
            )
            scheduler.before_claim = webhooks.acks_settled  # webhook acks go first
            webhooks.reconciler = scheduler  # a webhook wakes it in process
            scheduler.start()
        logger.info(
            "app.started",
            extra={
                "environment": settings.environment,
                "rest": settings.rest_base_url,
                "streaming": settings.streaming_base_url,
                "emulator": settings.uses_emulator,
            },
        )
        _freeze_startup_heap()
        try:
            yield
        finally:
            await app.state.relay.aclose()  # first: open sessions are terminated upstream
            if scheduler is not None:
                await scheduler.stop()
            await stop_webhooks(app)
            await stop_metrics(app)
            await stop_summaries()  # after the scheduler: it starts them
            await app.state.tokens.aclose()
            await app.state.upstream.aclose()
            await app.state.upload_rest.aclose()
            await engine.dispose()

    app = ProxyApp(
        title="aai-proxy",
        version="0.1.0",
        summary="A governed backend between your apps and AssemblyAI.",
        lifespan=lifespan,
        docs_url=None,  # app/docs: the same pages with assets served here, not from a CDN
        redoc_url=None,
    )
    # Routes added on the app itself (the docs pages) cross the input boundary too.
    app.router.route_class = BoundaryRoute
    app.state.settings = settings
    app.state.schema_heads = script_heads()
    # The compatible mint routes and AssemblyAI's webhook skip the stack below (ProxyApp).
    app.shortcuts = (MintShortcut(), WebhookShortcut())
    app.trusted_proxies = TrustedProxies(settings.forwarded_allow_ips)
    # Only configured origins; credentials so the session cookie rides along.
    app.add_middleware(
        CORSMiddleware,
        allow_origins=settings.cors_origins,
        allow_credentials=True,
        allow_methods=["GET", "POST", "PUT", "DELETE"],
        allow_headers=["Authorization", "Content-Type", "X-Request-ID", "X-End-User"],
        expose_headers=["Retry-After", "X-Request-ID"],
        max_age=600,
    )
    app.add_middleware(RequestIdMiddleware)
    if settings.metrics_enabled:
        app.add_middleware(MetricsMiddleware)  # outermost: times everything under it
        app.observe = observe_request  # the shortcuts, which skip the stack
        if settings.metrics_port is None:
            app.include_router(metrics_router)
    register_error_handlers(app)
    app.include_router(health_router)
    app.include_router(keys_router)
    app.include_router(llm_router)
    app.include_router(uploads_router)
    app.include_router(transcripts_router)
    app.include_router(webhooks_router)
    app.include_router(sessions_router)
    app.include_router(tokens_router)
    app.include_router(relay_router)
    app.include_router(audit_router)
    mount_docs(app)
    mount_client(app)
    boundary_openapi.install(app)
    return app
