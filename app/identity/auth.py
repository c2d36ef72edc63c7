"""Caller authentication: `Authorization: <key>` (AssemblyAI's style) or `Bearer <key>`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request

from app.core.deps import SessionDep
from app.core.errors import Forbidden, Unauthorized
from app.identity.principal import Principal, authenticate
from app.identity.scopes import Scope


def credential_from_header(value: str | None) -> str | None:
    if not value:
        return None
    value = value.strip()
    scheme, _, rest = value.partition(" ")
    if rest and scheme.lower() == "bearer":
        return rest.strip() or None
    return value


async def get_principal(request: Request, session: SessionDep) -> Principal:
    raw = credential_from_header(request.headers.get("authorization"))
    if raw is None:
        raise Unauthorized("Missing Authorization header: send your aai-proxy key.")
    key = await authenticate(session, raw)
    if key is None:
        raise Unauthorized("Invalid or revoked API key.")
    principal = Principal(key_id=key.id, key_name=key.name, scopes=frozenset(key.scopes))
    request.state.principal = principal
    return principal


def require_scope(scope: Scope) -> Callable[..., Awaitable[Principal]]:
    async def dependency(
        principal: Annotated[Principal, Depends(get_principal)],
    ) -> Principal:
        if not principal.has(scope.value):
            raise Forbidden(f"This key lacks the '{scope.value}' scope.")
        return principal

    dependency.__name__ = f"require_{scope.name}"
    return dependency


AdminDep = Annotated[Principal, Depends(require_scope(Scope.admin))]
