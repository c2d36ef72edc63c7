"""Authentication for long requests: the caller is resolved in short transactions of its own.

Upload bodies can stream for minutes. The usual per-request session would keep a pooled
connection checked out (and a transaction open) for all that time, so a few dozen slow
uploads would starve the pool; here the connection goes back before the body is read.

Any caller `app.sessions.auth` knows is accepted: a proxy key (raw or `Bearer`, as the SDKs
send it), the app's session cookie (its Origin checked, these being POSTs), or a JWT.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from app.core.errors import Forbidden
from app.identity.callers import resolve_caller
from app.identity.principal import Principal
from app.identity.scopes import Scope


async def transcripts_caller_no_session(request: Request) -> Principal:
    """The caller, who must hold the transcripts scope; no pooled connection kept."""
    principal = await resolve_caller(request, session=None)
    if not principal.has(Scope.transcripts.value):
        raise Forbidden(f"This caller lacks the '{Scope.transcripts.value}' scope.")
    request.state.principal = principal
    return principal


StreamingPrincipalDep = Annotated[Principal, Depends(transcripts_caller_no_session)]
