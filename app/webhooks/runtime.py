"""Lifespan wiring: the instance's LISTEN hub and its reconciler loop."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import asyncpg
from fastapi import FastAPI

from app.core.config import Settings
from app.core.db import plain_url
from app.webhooks.hub import EventHub
from app.webhooks.reconciler import Reconciler

logger = logging.getLogger(__name__)


@dataclass
class WebhooksRuntime:
    hub: EventHub
    reconciler: Reconciler | None
    # The receiver's own small pool (see app/webhooks/service.py for why).
    pool: asyncpg.Pool


async def start_webhooks(app: FastAPI, settings: Settings, database_url: str) -> WebhooksRuntime:
    """Start the receiver's pool, the hub (one LISTEN connection) and the reconciler."""
    pool = await asyncpg.create_pool(
        plain_url(database_url),
        min_size=0,  # no connection at start-up: the service starts with the database down
        max_size=settings.webhook_pool_size,
        server_settings={
            "synchronous_commit": "off",
            "application_name": "aai-proxy-webhooks",
        },
    )
    hub = EventHub(database_url, app.state.sessionmaker)
    await hub.start()
    app.state.event_hub = hub
    reconciler = None
    if settings.reconciler_enabled:
        reconciler = Reconciler(app.state.sessionmaker, app.state.upstream, settings, wake=hub.wake)
        hub.wake_listeners.append(reconciler.nudge)
        reconciler.start()
    runtime = WebhooksRuntime(hub, reconciler, pool)
    app.state.webhooks = runtime
    return runtime


async def stop_webhooks(app: FastAPI) -> None:
    runtime: WebhooksRuntime | None = getattr(app.state, "webhooks", None)
    if runtime is None:
        return
    if runtime.reconciler is not None:
        await runtime.reconciler.stop()
    await runtime.hub.stop()
    await runtime.pool.close()
