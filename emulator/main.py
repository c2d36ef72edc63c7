"""The emulator's ASGI app: every upstream host's paths on one port (they don't collide)."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.routing import BaseRoute

from emulator import agents, control, llm, rest, streaming
from emulator.config import EmulatorSettings, get_emulator_settings
from emulator.state import EmulatorState


def create_app(settings: EmulatorSettings | None = None) -> Starlette:
    settings = settings or get_emulator_settings()
    routes: list[BaseRoute] = [
        *rest.routes,
        *llm.routes,
        *streaming.routes,
        *agents.routes,
        *control.routes,
    ]
    app = Starlette(routes=routes)
    app.state.settings = settings
    app.state.emu = EmulatorState(settings)
    return app


def run(host: str = "127.0.0.1", port: int = 8010) -> None:
    import uvicorn

    uvicorn.run(create_app(), host=host, port=port, log_level="warning")
