"""Who is calling: the `Principal` every kind of credential resolves to, and key lookup."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.db import utcnow
from app.core.security import hash_key, secrets_equal
from app.identity.models import ApiKey

# Writing last_used_at on every request would turn each read into a write.
LAST_USED_RESOLUTION = timedelta(minutes=1)


@dataclass(frozen=True)
class Principal:
    """The authenticated caller of a request."""

    key_id: uuid.UUID
    key_name: str
    scopes: frozenset[str]
    end_user: str | None = None
    via: str = "key"
    extra: dict[str, str] = field(default_factory=dict)

    def has(self, scope: str) -> bool:
        return scope in self.scopes or "admin" in self.scopes


async def authenticate(session: AsyncSession, raw_key: str) -> ApiKey | None:
    """The active key matching `raw_key`, or None. The hash is compared in constant time."""
    if not raw_key:
        return None
    digest = hash_key(raw_key)
    key = await session.scalar(select(ApiKey).where(ApiKey.key_hash == digest))
    if key is None or not secrets_equal(key.key_hash, digest) or not key.active:
        return None
    now = utcnow()
    if key.last_used_at is None or now - key.last_used_at > LAST_USED_RESOLUTION:
        await session.execute(update(ApiKey).where(ApiKey.id == key.id).values(last_used_at=now))
        key.last_used_at = now
    return key
