"""Annotated dependency aliases and request helpers shared by every feature's routes."""

from __future__ import annotations

from typing import Annotated, cast

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.boundary import valid_ip
from app.core.config import (
    IdentitySettings,
    LlmSettings,
    SecretsSettings,
    Settings,
    TranscriptSettings,
    WebhookSettings,
    WebSettings,
)
from app.core.db import get_session
from app.core.errors import PayloadTooLarge


def _settings(request: Request) -> Settings:
    """The whole settings, for the parts below: a route receives only its feature's part."""
    return cast("Settings", request.app.state.settings)


# A feature's part: `async`, so that FastAPI calls it inline rather than in its thread pool.
async def _llm_settings(request: Request) -> LlmSettings:
    return _settings(request).llm


async def _identity_settings(request: Request) -> IdentitySettings:
    return _settings(request).identity


async def _webhook_settings(request: Request) -> WebhookSettings:
    return _settings(request).webhooks


async def _web_settings(request: Request) -> WebSettings:
    return _settings(request).web


async def _transcript_settings(request: Request) -> TranscriptSettings:
    return _settings(request).transcripts


async def _secrets_settings(request: Request) -> SecretsSettings:
    return _settings(request).secrets


def client_ip(request: Request) -> str | None:
    """The client's IP address (the peer's, or what a trusted proxy forwarded: see
    app/core/boundary.py); None when there is none or it is not an IP address (a Unix
    socket, a server that rewrote it), so nothing unparsed reaches an INET column."""
    return valid_ip(request.client.host) if request.client else None


async def read_limited(request: Request, limit: int, too_large: str) -> bytes:
    """The raw body, refused with 413 (`too_large`) as soon as it passes `limit` bytes: a
    declared Content-Length over it is refused unread, and nothing beyond it is buffered."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(too_large)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(too_large)
        chunks.append(chunk)
    return b"".join(chunks)


# Each feature's part of the settings (app/core/config.py); no route receives them whole.
LlmSettingsDep = Annotated[LlmSettings, Depends(_llm_settings)]
IdentitySettingsDep = Annotated[IdentitySettings, Depends(_identity_settings)]
WebhookSettingsDep = Annotated[WebhookSettings, Depends(_webhook_settings)]
WebSettingsDep = Annotated[WebSettings, Depends(_web_settings)]
TranscriptSettingsDep = Annotated[TranscriptSettings, Depends(_transcript_settings)]
SecretsSettingsDep = Annotated[SecretsSettings, Depends(_secrets_settings)]
SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]
