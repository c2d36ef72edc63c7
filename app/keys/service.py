"""Proxy API keys: create, authenticate, list, revoke. Services flush; the caller commits."""

from __future__ import annotations

import uuid
from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.db import utcnow
from app.core.errors import NotFound
from app.core.security import display_prefix, hash_key, new_api_key
from app.identity.models import ApiKey
from app.identity.scopes import ALL_SCOPES


async def create_key(session: AsyncSession, name: str, scopes: Iterable[str]) -> tuple[ApiKey, str]:
    scope_list = sorted(set(scopes))
    unknown = [s for s in scope_list if s not in ALL_SCOPES]
    if unknown:
        raise ValueError(f"unknown scope(s): {', '.join(unknown)}; known: {', '.join(ALL_SCOPES)}")
    raw = new_api_key()
    key = ApiKey(name=name, prefix=display_prefix(raw), key_hash=hash_key(raw), scopes=scope_list)
    session.add(key)
    await session.flush()
    return key, raw


async def list_keys(session: AsyncSession, *, include_revoked: bool = True) -> list[ApiKey]:
    query = select(ApiKey).order_by(ApiKey.created_at)
    if not include_revoked:
        query = query.where(ApiKey.revoked_at.is_(None))
    return list(await session.scalars(query))


async def get_key(session: AsyncSession, key_id: uuid.UUID) -> ApiKey:
    key = await session.get(ApiKey, key_id)
    if key is None:
        raise NotFound("No key with that id.")
    return key


async def revoke_key(session: AsyncSession, key_id: uuid.UUID) -> ApiKey:
    key = await get_key(session, key_id)
    if key.revoked_at is None:
        key.revoked_at = utcnow()
        await session.flush()
    return key


async def any_key_exists(session: AsyncSession) -> bool:
    return (await session.scalar(select(ApiKey.id).limit(1))) is not None
