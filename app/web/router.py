"""Serves the browser client (`static/`) and the two small endpoints it reads at start-up."""

from __future__ import annotations

import mimetypes
from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel

from app.core.boundary import BoundaryRoute
from app.core.deps import WebSettingsDep
from app.web.voices import DEFAULT_VOICE, VOICES

STATIC_DIR = Path(__file__).resolve().parents[2] / "static"

# ES modules and AudioWorklet modules are refused by browsers unless served as JavaScript;
# some hosts' mime tables (Windows registry, minimal containers) get .js wrong or miss it.
mimetypes.add_type("text/javascript", ".js")
mimetypes.add_type("text/javascript", ".mjs")
mimetypes.add_type("text/css", ".css")

router = APIRouter(tags=["browser client"], route_class=BoundaryRoute)
page_router = APIRouter(include_in_schema=False, route_class=BoundaryRoute)


class Voice(BaseModel):
    id: str
    description: str
    language: str


class VoiceCatalogue(BaseModel):
    default: str
    voices: list[Voice]


class ClientConfig(BaseModel):
    stt_sample_rate: int
    agent_sample_rate: int
    frame_ms: int
    embed_origins: list[str]
    max_upload_bytes: int
    uses_emulator: bool
    live_mode: str = "token"  # BROWSER_LIVE_MODE: "token" (direct) or "relay" (this service)


@router.get("/api/voices", response_model=VoiceCatalogue)
async def list_voices() -> VoiceCatalogue:
    """The Voice Agent voices a session may ask for (exact IDs)."""
    return VoiceCatalogue(
        default=DEFAULT_VOICE,
        voices=[Voice(id=v, description=d, language=lang) for v, d, lang in VOICES],
    )


@router.get("/api/client-config", response_model=ClientConfig)
async def client_config(settings: WebSettingsDep) -> ClientConfig:
    """Settings the browser client needs; nothing secret."""
    return ClientConfig(
        stt_sample_rate=settings.stt_sample_rate,
        agent_sample_rate=24000,
        frame_ms=settings.frame_ms,
        embed_origins=list(settings.embed_origins),
        max_upload_bytes=settings.max_upload_bytes,
        uses_emulator=settings.uses_emulator,
        live_mode=settings.live_mode,
    )


@page_router.get("/")
async def index() -> FileResponse:
    # no-cache: the page is tiny and must pick up a new deployment's module graph at once.
    return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})


@page_router.get("/favicon.svg")
@page_router.get("/favicon.ico")
async def favicon() -> FileResponse:
    # Browsers ask for /favicon.ico on their own; both answer with the SVG icon.
    return FileResponse(
        STATIC_DIR / "favicon.svg",
        media_type="image/svg+xml",
        headers={"Cache-Control": "public, max-age=86400"},
    )


def mount_client(app: FastAPI) -> None:
    """Add the client: `/` and its assets under `/js` and `/css` (prefixes no API uses)."""
    app.include_router(router)
    if not app.state.settings.browser_client_enabled:
        return
    app.include_router(page_router)
    for folder in ("js", "css"):
        app.mount(f"/{folder}", StaticFiles(directory=STATIC_DIR / folder), name=f"static-{folder}")
