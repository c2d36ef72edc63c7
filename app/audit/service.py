"""Reading the audit trail: filtered, keyset-paginated, and summed into usage."""

from __future__ import annotations

import base64
import binascii
import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Float, Integer, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.audit.models import AuditEvent
from app.audit.schemas import EndUserUsage, KeyUsage, UsageCounts
from app.core.errors import BadRequest
from app.identity.models import ApiKey

TOKEN_ACTIONS = ("token.streaming", "token.agents")
RELAY_ACTIONS = ("relay.streaming", "relay.agents")  # one "ended" row per relayed session


@dataclass(frozen=True)
class AuditFilter:
    key_id: uuid.UUID | None = None
    end_user: str | None = None
    action: str | None = None
    outcome: str | None = None
    since: datetime | None = None
    until: datetime | None = None


def encode_cursor(last_id: int) -> str:
    return base64.urlsafe_b64encode(f"a{last_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        if not text.startswith("a"):
            raise ValueError(text)
        last_id = int(text[1:])
        if not 0 < last_id < 2**63:  # a bigint id
            raise ValueError(text)
        return last_id
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise BadRequest("cursor is not one this service gave out.") from None


async def list_events(
    session: AsyncSession, flt: AuditFilter, *, limit: int, cursor: str | None
) -> tuple[list[AuditEvent], str | None]:
    """Newest first; the cursor is the last id seen, so pages never shift under inserts."""
    query = select(AuditEvent).order_by(AuditEvent.id.desc()).limit(limit + 1)
    if flt.key_id is not None:
        query = query.where(AuditEvent.key_id == flt.key_id)
    if flt.end_user is not None:
        query = query.where(AuditEvent.end_user == flt.end_user)
    if flt.action is not None:
        query = query.where(AuditEvent.action == flt.action)
    if flt.outcome is not None:
        query = query.where(AuditEvent.outcome == flt.outcome)
    if flt.since is not None:
        query = query.where(AuditEvent.at >= flt.since)
    if flt.until is not None:
        query = query.where(AuditEvent.at < flt.until)
    if cursor is not None:
        query = query.where(AuditEvent.id < decode_cursor(cursor))
    rows = list(await session.scalars(query))
    next_cursor = encode_cursor(rows[limit - 1].id) if len(rows) > limit else None
    return rows[:limit], next_cursor


def _add(
    target: UsageCounts,
    action: str,
    outcome: str,
    count: int,
    seconds: int,
    relay: tuple[int, float] = (0, 0.0),
) -> None:
    if action in RELAY_ACTIONS:
        if outcome == "ended":
            target.relay_sessions += count
            target.relay_session_s += relay[0]
            target.relay_audio_s = round(target.relay_audio_s + relay[1], 3)
        elif outcome == "refused":
            target.relay_refusals += count
        return
    if outcome == "granted":
        target.grants += count
        target.granted_session_s += seconds
        if action == "token.streaming":
            target.streaming_grants += count
        else:
            target.agents_grants += count
    elif outcome == "refused":
        target.refusals += count
    else:
        target.failures += count


async def usage(
    session: AsyncSession,
    *,
    since: datetime,
    until: datetime,
    key_id: uuid.UUID | None,
    end_user: str | None,
) -> list[KeyUsage]:
    """Token grants, refusals and granted session-seconds per key and per end user, and
    relayed sessions with the session-seconds charged for them."""
    seconds = func.coalesce(
        func.sum(AuditEvent.detail["granted_session_s"].astext.cast(Integer)), 0
    )
    relay_seconds = func.coalesce(
        func.sum(AuditEvent.detail["charged_session_s"].astext.cast(Integer)), 0
    )
    relay_audio = func.coalesce(func.sum(AuditEvent.detail["audio_s"].astext.cast(Float)), 0.0)
    query = (
        select(
            AuditEvent.key_id,
            AuditEvent.end_user,
            AuditEvent.action,
            AuditEvent.outcome,
            func.count(),
            seconds,
            relay_seconds,
            relay_audio,
        )
        .where(
            AuditEvent.action.in_(TOKEN_ACTIONS + RELAY_ACTIONS),
            AuditEvent.at >= since,
            AuditEvent.at < until,
            AuditEvent.key_id.is_not(None),
        )
        .group_by(AuditEvent.key_id, AuditEvent.end_user, AuditEvent.action, AuditEvent.outcome)
    )
    if key_id is not None:
        query = query.where(AuditEvent.key_id == key_id)
    if end_user is not None:
        query = query.where(AuditEvent.end_user == end_user)
    rows = (await session.execute(query)).all()
    ids = {row[0] for row in rows}
    names: dict[uuid.UUID, str] = {}
    if ids:
        names = dict(
            (await session.execute(select(ApiKey.id, ApiKey.name).where(ApiKey.id.in_(ids)))).all()
        )
    keys: dict[uuid.UUID, KeyUsage] = {}
    users: dict[tuple[uuid.UUID, str], EndUserUsage] = {}
    for kid, user, action, outcome, count, secs, relay_s, audio_s in rows:
        relay = (int(relay_s), float(audio_s))
        entry = keys.get(kid)
        if entry is None:
            entry = keys[kid] = KeyUsage(key_id=kid, key_name=names.get(kid), end_users=[])
        _add(entry, action, outcome, int(count), int(secs), relay)
        if user is not None:
            per_user = users.get((kid, user))
            if per_user is None:
                per_user = users[(kid, user)] = EndUserUsage(end_user=user)
                entry.end_users.append(per_user)
            _add(per_user, action, outcome, int(count), int(secs), relay)
    for entry in keys.values():
        entry.end_users.sort(key=lambda u: (-u.granted_session_s, u.end_user))
    return sorted(keys.values(), key=lambda k: (-k.granted_session_s, str(k.key_id)))
