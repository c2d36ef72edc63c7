from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.core.boundary import BoundaryRoute
from app.core.errors import error_response

router = APIRouter(tags=["health"], route_class=BoundaryRoute)


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "Database unreachable or not migrated"}})
async def readyz(request: Request) -> JSONResponse:
    """The database is reachable and migrated to this build's schema."""
    engine: AsyncEngine = request.app.state.engine
    expected: set[str] = request.app.state.schema_heads
    try:
        async with asyncio.timeout(3):
            async with engine.connect() as conn:
                # A database never migrated has no alembic_version: "not migrated", not down.
                versioned = await conn.scalar(
                    text("SELECT to_regclass('alembic_version') IS NOT NULL")
                )
                rows = (
                    await conn.execute(text("SELECT version_num FROM alembic_version"))
                    if versioned
                    else None
                )
                applied = set(rows.scalars()) if rows is not None else set()
    except Exception as exc:  # noqa: BLE001 — any failure means not ready
        return _not_ready(f"database unreachable: {type(exc).__name__}")
    if applied != expected:
        missing = ", ".join(sorted(expected - applied)) or "none"
        return _not_ready(
            f"database not migrated to this build (missing heads: {missing}); "
            "run `aai-proxy migrate`"
        )
    return JSONResponse({"status": "ready"})


def _not_ready(reason: str) -> JSONResponse:
    return error_response(503, "NotReady", reason)
