"""Authentication for long requests: the key is checked in its own short transaction.

Upload bodies can stream for minutes. The usual per-request session would keep a pooled
connection checked out (and a transaction open) for all that time, so a few dozen slow
uploads would starve the pool; here the connection goes back before the body is read.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.errors import Forbidden
from app.keys.auth import get_principal
from app.keys.schemas import Scope
from app.keys.service import Principal


async def transcripts_principal_no_session(request: Request) -> Principal:
    sessionmaker: async_sessionmaker[AsyncSession] = request.app.state.sessionmaker
    async with sessionmaker() as session, session.begin():
        principal = await get_principal(request, session)
    if not principal.has(Scope.transcripts.value):
        raise Forbidden(f"This key lacks the '{Scope.transcripts.value}' scope.")
    return principal


StreamingPrincipalDep = Annotated[Principal, Depends(transcripts_principal_no_session)]
