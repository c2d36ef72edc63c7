"""The application factory: resources live in the lifespan, features are routers."""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from app.audit.router import router as audit_router
from app.core.config import Settings, get_settings
from app.core.db import create_engine, create_sessionmaker
from app.core.errors import register_error_handlers
from app.core.logging import configure_logging
from app.core.middleware import ProxyApp, RequestIdMiddleware
from app.core.migrate import script_heads
from app.health.router import router as health_router
from app.keys.router import router as keys_router
from app.llm.router import router as llm_router
from app.llm.worker import stop_summaries
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
        configure_logging(settings.log_level, settings.json_logs, settings.secrets())
    if settings.database_url is None:
        raise RuntimeError(
            "DATABASE_URL is not set: start the service with `aai-proxy serve`, which starts "
            "an embedded Postgres when no DATABASE_URL is configured"
        )
    database_url = settings.database_url.get_secret_value()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = create_engine(
            database_url,
            pool_size=settings.database_pool_size,
            max_overflow=settings.database_max_overflow,
        )
        app.state.engine = engine
        app.state.sessionmaker = create_sessionmaker(engine)
        app.state.upstream = create_upstream(settings)
        app.state.upload_rest = create_upload_client(settings)
        app.state.tokens = TokenRuntime.create(settings, engine)
        webhooks = await start_webhooks(app, settings, database_url)
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
            if scheduler is not None:
                await scheduler.stop()
            await stop_webhooks(app)
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
    )
    app.state.settings = settings
    app.state.schema_heads = script_heads()
    # The compatible mint routes and AssemblyAI's webhook skip the stack below (ProxyApp).
    app.shortcuts = (MintShortcut(), WebhookShortcut())
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
    register_error_handlers(app)
    app.include_router(health_router)
    app.include_router(keys_router)
    app.include_router(llm_router)
    app.include_router(uploads_router)
    app.include_router(transcripts_router)
    app.include_router(webhooks_router)
    app.include_router(sessions_router)
    app.include_router(tokens_router)
    app.include_router(audit_router)
    mount_client(app)
    return app
