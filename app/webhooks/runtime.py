"""Lifespan wiring: the instance's LISTEN hub and its reconciler loop."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from fastapi import FastAPI

from app.core.config import Settings
from app.webhooks.hub import EventHub
from app.webhooks.reconciler import Reconciler

logger = logging.getLogger(__name__)


@dataclass
class WebhooksRuntime:
    hub: EventHub
    reconciler: Reconciler | None


async def start_webhooks(app: FastAPI, settings: Settings, database_url: str) -> WebhooksRuntime:
    """Start the hub (one LISTEN connection) and, unless disabled, the reconciler."""
    hub = EventHub(database_url, app.state.sessionmaker)
    await hub.start()
    app.state.event_hub = hub
    reconciler = None
    if settings.reconciler_enabled:
        reconciler = Reconciler(app.state.sessionmaker, app.state.upstream, settings, wake=hub.wake)
        reconciler.start()
    runtime = WebhooksRuntime(hub, reconciler)
    app.state.webhooks = runtime
    return runtime


async def stop_webhooks(app: FastAPI) -> None:
    runtime: WebhooksRuntime | None = getattr(app.state, "webhooks", None)
    if runtime is None:
        return
    if runtime.reconciler is not None:
        await runtime.reconciler.stop()
    await runtime.hub.stop()
