"""Proxy API keys: create, authenticate, list, revoke. Services flush; the caller commits."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.db import utcnow
from app.core.errors import NotFound
from app.core.security import display_prefix, hash_key, new_api_key, secrets_equal
from app.keys.models import ApiKey, AuditEvent
from app.keys.schemas import ALL_SCOPES

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


async def record_audit(
    session: AsyncSession,
    *,
    action: str,
    outcome: str,
    principal: Principal | None = None,
    key_id: uuid.UUID | None = None,
    subject: str | None = None,
    client_ip: str | None = None,
    user_agent: str | None = None,
    **detail: object,
) -> AuditEvent:
    event = AuditEvent(
        action=action,
        outcome=outcome,
        key_id=principal.key_id if principal else key_id,
        end_user=principal.end_user if principal else None,
        subject=subject,
        client_ip=client_ip,
        user_agent=user_agent[:500] if user_agent else None,
        detail=dict(detail),
    )
    session.add(event)
    await session.flush()
    return event
