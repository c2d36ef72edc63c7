"""Annotated dependency aliases shared by every feature's routes."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.config import Settings
from app.core.db import get_session
from app.upstream.client import Upstream


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def client_ip(request: Request) -> str | None:
    """The peer address as the ASGI server saw it (None when the transport has none)."""
    return request.client.host if request.client else None


def _upstream(request: Request) -> Upstream:
    upstream: Upstream = request.app.state.upstream
    return upstream


SettingsDep = Annotated[Settings, Depends(_settings)]
SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]
UpstreamDep = Annotated[Upstream, Depends(_upstream)]
