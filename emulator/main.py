"""The emulator's ASGI app: every upstream host's paths on one port (they don't collide)."""

from __future__ import annotations

from starlette.applications import Starlette

from emulator.config import EmulatorSettings, get_emulator_settings


def create_app(settings: EmulatorSettings | None = None) -> Starlette:
    settings = settings or get_emulator_settings()
    app = Starlette(routes=[])
    app.state.settings = settings
    return app


def run(host: str = "127.0.0.1", port: int = 8010) -> None:
    import uvicorn

    uvicorn.run(create_app(), host=host, port=port, log_level="warning")
