"""Leases: how instances share periodic work without running it twice.

A claim is one short transaction: `FOR UPDATE SKIP LOCKED` picks due rows no other
instance is claiming right now, and the same statement stamps `lease_owner` and
`lease_expires_at` on them. The slow work runs outside any transaction and writes its
result only while the lease is still ours; a crashed instance's leases expire and another
instance takes the work over.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Row, Select, or_, update
from sqlalchemy.ext.asyncio import AsyncSession


def instance_owner() -> str:
    """A lease owner name unique to this process."""
    return f"{socket.gethostname()[:40]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def lease_free(model: Any, now: datetime) -> ColumnElement[bool]:
    """Rows no live instance holds: never leased, or the lease has expired."""
    return or_(model.lease_expires_at.is_(None), model.lease_expires_at < now)


async def claim_leases(
    session: AsyncSession,
    model: Any,
    due: Select[Any],
    *,
    owner: str,
    until: datetime,
    returning: Sequence[Any] = (),
    values: Mapping[str, Any] | None = None,
) -> list[Row[Any]]:
    """Lease the rows of `model` that `due` selects (their ids, with its filter, order and
    limit) to `owner` until `until`; returns the `returning` columns of each (its id by
    default). Rows another instance is claiming at this moment are skipped, not waited
    for; `values` are further columns to set in the same statement.

    Model: a mapped class with `id`, `lease_owner` and `lease_expires_at` columns.
    """
    table = model.__table__  # a Core UPDATE: the ORM's bulk-update path costs more per claim
    picked = due.with_for_update(of=table, skip_locked=True).cte("due")
    statement = (
        update(table)
        .where(table.c.id == picked.c.id)
        .values(lease_owner=owner, lease_expires_at=until, **(values or {}))
        .returning(*(returning or (table.c.id,)))
    )
    return list(await session.execute(statement))
