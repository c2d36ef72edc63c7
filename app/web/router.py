"""Serves the browser client (`static/`) and the two small endpoints it reads at start-up."""

from __future__ import annotations

import mimetypes
from pathlib import Path

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field

from app.core.boundary import BoundaryRoute
from app.core.deps import WebSettingsDep
from app.core.errors import AppError
from app.identity.callers import resolve_caller
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
    live_mode: str = Field(
        "token",
        description="The live path to use: 'token' (direct to AssemblyAI) or 'relay' (this "
        "service). BROWSER_LIVE_MODE, unless the signed-in caller's key is limited to one "
        "path by its token policy (live_access)",
    )


@router.get("/api/voices", response_model=VoiceCatalogue)
async def list_voices() -> VoiceCatalogue:
    """The Voice Agent voices a session may ask for (exact IDs)."""
    return VoiceCatalogue(
        default=DEFAULT_VOICE,
        voices=[Voice(id=v, description=d, language=lang) for v, d, lang in VOICES],
    )


_LIVE_MODE = {"relay": "relay", "tokens": "token"}


async def _live_mode(request: Request, default: str) -> str:
    """BROWSER_LIVE_MODE (`default`), or the one path the signed-in caller's key may use."""
    try:
        caller = await resolve_caller(request)
    except AppError:  # not signed in (yet): the global choice
        return default
    policy = await request.app.state.tokens.policies.get(caller.key_id)
    return _LIVE_MODE.get(policy.live_access, default)


@router.get("/api/client-config", response_model=ClientConfig)
async def client_config(request: Request, settings: WebSettingsDep) -> ClientConfig:
    """Settings the browser client needs; nothing secret. Asked again after sign-in: the
    live path follows the caller's key policy."""
    return ClientConfig(
        stt_sample_rate=settings.stt_sample_rate,
        agent_sample_rate=24000,
        frame_ms=settings.frame_ms,
        embed_origins=list(settings.embed_origins),
        max_upload_bytes=settings.max_upload_bytes,
        uses_emulator=settings.uses_emulator,
        live_mode=await _live_mode(request, settings.live_mode),
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
