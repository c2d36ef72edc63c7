"""LLM Gateway policy: exact model IDs for the region, a max_tokens cap, and a per-key
daily token budget with reservations, so concurrent calls cannot overshoot it.

A call reserves `max_tokens` + its estimated prompt tokens before it goes upstream, in a
short transaction that holds the key's day row lock: `used + held + n <= budget` is checked
and the hold inserted atomically. After the call the hold is settled to the actual usage
(or released on failure). A hold whose caller crashed expires after LLM_RESERVATION_TTL_S.
"""

from __future__ import annotations

import logging
import math
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.config import LlmSettings
from app.core.db import utcnow
from app.core.errors import BadRequest, RateLimited
from app.llm.models import LlmBudgetDay, LlmReservation, LlmUsage
from app.metrics import LLM_TOKENS

logger = logging.getLogger(__name__)

# A rough, deliberately generous token estimate (about 4 characters a token) used only to
# size a reservation or to account for a stream that reported no usage.
CHARS_PER_TOKEN = 4
MESSAGE_OVERHEAD_TOKENS = 4


class BudgetExceeded(RateLimited):
    message = "This key's daily LLM token budget is used up; retry after the day rolls over."


class ModelNotAllowed(BadRequest):
    message = "This model is not available here."


def check_model(model: object, settings: LlmSettings) -> str:
    """The exact model ID, or a 400 that lists the valid ones (shorthand included)."""
    valid = settings.allowed_models
    listing = ", ".join(valid)
    if not isinstance(model, str) or not model:
        raise ModelNotAllowed(f"'model' is required; valid model IDs: {listing}")
    if model in valid:
        return model
    region = settings.region.upper()
    close = [m for m in valid if m.startswith(model + "-")]
    if close:
        hint = f"'{model}' is not an exact model ID; did you mean {' or '.join(close)}?"
    elif settings.region == "eu" and model.startswith(("gpt-", "o1", "o3", "o4")):
        hint = f"'{model}' is not served by the EU LLM Gateway (Anthropic and Google only)."
    else:
        hint = f"'{model}' is not an allowed model in region {region}."
    raise ModelNotAllowed(f"{hint} Valid model IDs: {listing}")


def cap_max_tokens(payload: dict[str, Any], settings: LlmSettings) -> int:
    """Clamp the completion budget to policy (set it when absent); returns the value."""
    cap = settings.max_tokens
    asked: object = payload.get("max_tokens")
    if asked is None and "max_completion_tokens" in payload:
        asked = payload["max_completion_tokens"]
    if asked is None:
        value = cap
    elif isinstance(asked, bool) or not isinstance(asked, int) or asked < 1:
        raise BadRequest("'max_tokens' must be a positive integer.")
    else:
        value = min(asked, cap)
    if "max_completion_tokens" in payload:
        payload["max_completion_tokens"] = value
    else:
        payload["max_tokens"] = value
    return value


def estimate_tokens(text: str) -> int:
    return math.ceil(len(text) / CHARS_PER_TOKEN)


def estimate_prompt_tokens(messages: object) -> int:
    if not isinstance(messages, list):
        return 0
    total = 0
    for message in messages:
        total += MESSAGE_OVERHEAD_TOKENS
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            total += estimate_tokens(content)
        elif isinstance(content, list):  # content parts
            for part in content:
                if isinstance(part, dict) and isinstance(part.get("text"), str):
                    total += estimate_tokens(part["text"])
    return total


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int
    estimated: bool = False

    @property
    def total(self) -> int:
        return self.prompt_tokens + self.completion_tokens


def usage_from(body: object) -> Usage | None:
    """The `usage` object of a completion (or of a stream's final chunk), if present."""
    if not isinstance(body, dict):
        return None
    usage = body.get("usage")
    if not isinstance(usage, dict):
        return None
    prompt = usage.get("prompt_tokens")
    completion = usage.get("completion_tokens")
    if not isinstance(prompt, int) or not isinstance(completion, int):
        return None
    return Usage(prompt, completion)


@dataclass(frozen=True)
class Reservation:
    id: uuid.UUID | None  # None: budgets are off, nothing was held
    key_id: uuid.UUID
    day: date
    tokens: int


def utc_day(now: datetime | None = None) -> date:
    return (now or utcnow()).astimezone(UTC).date()


def seconds_until_rollover(now: datetime | None = None) -> float:
    now = (now or utcnow()).astimezone(UTC)
    tomorrow = datetime.combine(now.date() + timedelta(days=1), datetime.min.time(), UTC)
    return max(1.0, (tomorrow - now).total_seconds())


async def _lock_day(session: AsyncSession, key_id: uuid.UUID, day: date) -> int:
    """Create the key's day row if needed and lock it; returns the tokens used so far."""
    await session.execute(
        insert(LlmBudgetDay)
        .values(key_id=key_id, day=day, used_tokens=0)
        .on_conflict_do_nothing(index_elements=["key_id", "day"])
    )
    used = (
        await session.execute(
            select(LlmBudgetDay.used_tokens)
            .where(LlmBudgetDay.key_id == key_id, LlmBudgetDay.day == day)
            .with_for_update()
        )
    ).scalar_one()
    return int(used)


async def _held(session: AsyncSession, key_id: uuid.UUID, day: date, now: datetime) -> int:
    held = (
        await session.execute(
            select(func.coalesce(func.sum(LlmReservation.tokens), 0)).where(
                LlmReservation.key_id == key_id,
                LlmReservation.day == day,
                LlmReservation.expires_at > now,
            )
        )
    ).scalar_one()
    return int(held)


async def reserve(
    sessionmaker: async_sessionmaker[AsyncSession],
    settings: LlmSettings,
    key_id: uuid.UUID,
    tokens: int,
) -> Reservation:
    """Hold `tokens` of the key's daily budget (committed at once) or raise 429."""
    now = utcnow()
    day = utc_day(now)
    budget = settings.daily_token_budget
    if budget == 0:
        return Reservation(None, key_id, day, tokens)
    if tokens > budget:
        raise BadRequest(
            f"This call may use up to {tokens} tokens, more than the daily budget of {budget}; "
            "lower max_tokens or shorten the prompt."
        )
    async with sessionmaker() as session, session.begin():
        used = await _lock_day(session, key_id, day)
        held = await _held(session, key_id, day, now)
        if used + held + tokens > budget:
            logger.info(
                "llm.budget.refused",
                extra={"key_id": str(key_id), "used": used, "held": held, "asked": tokens},
            )
            raise BudgetExceeded(
                f"Daily LLM token budget reached: {used} used and {held} held of {budget}; "
                f"this call needs up to {tokens}.",
                retry_after=seconds_until_rollover(now),
            )
        reservation = LlmReservation(
            key_id=key_id,
            day=day,
            tokens=tokens,
            created_at=now,
            expires_at=now + timedelta(seconds=settings.reservation_ttl_s),
        )
        session.add(reservation)
        await session.flush()
        # Expired holds are garbage: their callers died; sweep them while we hold the lock.
        await session.execute(
            delete(LlmReservation).where(
                LlmReservation.key_id == key_id, LlmReservation.expires_at <= now
            )
        )
        return Reservation(reservation.id, key_id, day, tokens)


async def budget_available(
    session: AsyncSession, settings: LlmSettings, key_id: uuid.UUID, tokens: int
) -> None:
    """A non-holding check (raises 429) for work that is queued rather than run now."""
    budget = settings.daily_token_budget
    if budget == 0:
        return
    now = utcnow()
    day = utc_day(now)
    used = (
        await session.execute(
            select(LlmBudgetDay.used_tokens).where(
                LlmBudgetDay.key_id == key_id, LlmBudgetDay.day == day
            )
        )
    ).scalar_one_or_none() or 0
    held = await _held(session, key_id, day, now)
    if used + held + tokens > budget:
        raise BudgetExceeded(
            f"Daily LLM token budget reached: {used} used and {held} held of {budget}.",
            retry_after=seconds_until_rollover(now),
        )


async def record_usage(
    session: AsyncSession,
    reservation: Reservation,
    usage: Usage,
    *,
    model: str,
    kind: str,
    summary_id: uuid.UUID | None = None,
    streamed: bool = False,
) -> None:
    """Settle a hold to the actual usage, in the caller's transaction (flushes)."""
    await _lock_day(session, reservation.key_id, reservation.day)
    if reservation.id is not None:
        await session.execute(delete(LlmReservation).where(LlmReservation.id == reservation.id))
    await session.execute(
        update(LlmBudgetDay)
        .where(
            LlmBudgetDay.key_id == reservation.key_id,
            LlmBudgetDay.day == reservation.day,
        )
        .values(used_tokens=LlmBudgetDay.used_tokens + usage.total)
    )
    session.add(
        LlmUsage(
            key_id=reservation.key_id,
            model=model,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            at=utcnow(),
            kind=kind,
            summary_id=summary_id,
            streamed=streamed,
            estimated=usage.estimated,
        )
    )
    await session.flush()


async def settle(
    sessionmaker: async_sessionmaker[AsyncSession],
    reservation: Reservation,
    usage: Usage,
    *,
    model: str,
    kind: str,
    summary_id: uuid.UUID | None = None,
    streamed: bool = False,
) -> None:
    """Settle a hold in its own transaction (calls outside a request's transaction)."""
    async with sessionmaker() as session, session.begin():
        await record_usage(
            session,
            reservation,
            usage,
            model=model,
            kind=kind,
            summary_id=summary_id,
            streamed=streamed,
        )
    key = str(reservation.key_id)
    LLM_TOKENS.labels(key, "prompt").inc(usage.prompt_tokens)
    LLM_TOKENS.labels(key, "completion").inc(usage.completion_tokens)


async def release(sessionmaker: async_sessionmaker[AsyncSession], reservation: Reservation) -> None:
    """Drop a hold whose call failed upstream: nothing was billed."""
    if reservation.id is None:
        return
    async with sessionmaker() as session, session.begin():
        await session.execute(delete(LlmReservation).where(LlmReservation.id == reservation.id))
