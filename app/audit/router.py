"""`GET /api/audit` (admin) and `GET /api/usage` (admin: every key; others: their own)."""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Protocol

from fastapi import APIRouter, Query, Request

from app.audit import service
from app.audit.schemas import AuditPage, AuditRead, Budget, KeyUsage, UsageReport
from app.core.boundary import BoundaryRoute, IsoTime
from app.core.db import utcnow
from app.core.deps import SessionDep
from app.core.errors import BadRequest, Forbidden
from app.identity.auth import AdminDep
from app.identity.callers import CallerDep

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/api", tags=["audit"], route_class=BoundaryRoute)

_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": "A bad cursor or time range"},
    401: {"description": "Missing or invalid credentials"},
    403: {"description": "Not allowed to see that"},
}


def _aware(value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


@router.get("/audit", response_model=AuditPage, responses=_ERRORS)
async def list_audit(
    session: SessionDep,
    _: AdminDep,
    key_id: uuid.UUID | None = None,
    end_user: Annotated[str | None, Query(max_length=200)] = None,
    action: Annotated[str | None, Query(max_length=64)] = None,
    outcome: Annotated[str | None, Query(max_length=32)] = None,
    since: Annotated[datetime | None, IsoTime] = None,
    until: Annotated[datetime | None, IsoTime] = None,
    cursor: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> AuditPage:
    """Audit events, newest first, filtered; follow `next_cursor` for older ones."""
    flt = service.AuditFilter(
        key_id=key_id,
        end_user=end_user,
        action=action,
        outcome=outcome,
        since=_aware(since),
        until=_aware(until),
    )
    rows, next_cursor = await service.list_events(session, flt, limit=limit, cursor=cursor)
    return AuditPage(items=[AuditRead.model_validate(r) for r in rows], next_cursor=next_cursor)


class BudgetSource(Protocol):
    """The token feature's daily budgets (app.tokens.service.TokenRuntime), as the usage
    report reads them: audit imports no feature above it."""

    async def daily_budget(
        self, key_id: uuid.UUID, end_user: str | None = None
    ) -> tuple[int, int]: ...


async def _add_budgets(tokens: BudgetSource, keys: list[KeyUsage], *, key_level: bool) -> None:
    for entry in keys:
        if key_level:
            limit, used = await tokens.daily_budget(entry.key_id)
            entry.budget = Budget(daily_session_s_limit=limit, today_session_s_used=used)
        for user in entry.end_users:
            limit, used = await tokens.daily_budget(entry.key_id, user.end_user)
            user.budget = Budget(daily_session_s_limit=limit, today_session_s_used=used)


@router.get("/usage", response_model=UsageReport, responses=_ERRORS)
async def usage(
    request: Request,
    session: SessionDep,
    caller: CallerDep,
    key_id: uuid.UUID | None = None,
    since: Annotated[datetime | None, IsoTime] = None,
    until: Annotated[datetime | None, IsoTime] = None,
) -> UsageReport:
    """Token grants, refusals and granted session-seconds per key and end user (default:
    today, UTC)."""
    now = utcnow()
    since = _aware(since) or now.replace(hour=0, minute=0, second=0, microsecond=0)
    until = _aware(until) or now
    if since >= until:
        raise BadRequest("since must be before until.")
    end_user = None
    if not caller.has("admin"):
        if key_id is not None and key_id != caller.key_id:
            raise Forbidden("A key sees only its own usage.")
        key_id = caller.key_id
        # An end user (JWT or session with an end user) sees only their own rows.
        end_user = caller.end_user if caller.via != "key" else None
    keys = await service.usage(session, since=since, until=until, key_id=key_id, end_user=end_user)
    if not caller.has("admin") and not keys:
        # A caller always sees its own entry, if only for today's budget.
        keys = [KeyUsage(key_id=caller.key_id, key_name=caller.key_name, end_users=[])]
    tokens = getattr(request.app.state, "tokens", None)
    if tokens is not None:
        try:
            # An end user sees their own budget, not the whole key's.
            await _add_budgets(tokens, keys, key_level=end_user is None)
        except Exception as exc:  # Redis down: the summary still answers, without budgets
            logger.warning(
                "audit.usage.budget_unavailable", extra={"error_type": type(exc).__name__}
            )
    return UsageReport(since=since, until=until, keys=keys)
