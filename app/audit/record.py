"""Recording an audit event in the caller's transaction (flushed, committed with it)."""

from __future__ import annotations

import uuid

from sqlalchemy.ext.asyncio import AsyncSession

from app.audit.models import AuditEvent
from app.identity.principal import Principal


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
