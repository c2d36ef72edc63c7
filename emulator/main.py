"""The emulator's ASGI app: every upstream host's paths on one port (they don't collide)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from starlette.applications import Starlette
from starlette.routing import BaseRoute

from emulator import agents, control, llm, rest, streaming
from emulator.config import EmulatorSettings, get_emulator_settings
from emulator.recognition import recognition_mode, warm_up
from emulator.state import EmulatorState

logger = logging.getLogger(__name__)


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    state: EmulatorState = app.state.emu
    settings = state.settings
    if not settings.upload_sink:
        (settings.data_dir / "uploads").mkdir(parents=True, exist_ok=True)
    mode = recognition_mode(settings.recognition)
    if mode == "whisper":
        # Before listening (1-5 s): a first recognition that waited for the model would
        # look slow, and the streaming partials' pacing would take it for decoding time.
        warm_up()
    logger.info(
        "emulator.started",
        extra={"test_mode": settings.test_mode, "recognition": mode, "sink": settings.upload_sink},
    )
    # One pooled client for webhook deliveries and audio_url fetches; no env proxies, so
    # loopback receivers are reached directly.
    state.http = httpx.AsyncClient(trust_env=False, follow_redirects=True)
    try:
        yield
    finally:
        await state.aclose()
        await state.http.aclose()


def create_app(settings: EmulatorSettings | None = None) -> Starlette:
    settings = settings or get_emulator_settings()
    routes: list[BaseRoute] = [
        *rest.routes,
        *llm.routes,
        *streaming.routes,
        *agents.routes,
        *control.routes,
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.settings = settings
    app.state.emu = EmulatorState(settings)
    return app


def run(host: str = "127.0.0.1", port: int = 8010) -> None:
    import uvicorn

    uvicorn.run(create_app(), host=host, port=port, log_level="warning")
