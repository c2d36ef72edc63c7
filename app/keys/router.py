from __future__ import annotations

import uuid

from fastapi import APIRouter, Request, status

from app.audit.record import record_audit
from app.core import events
from app.core.boundary import BoundaryRoute
from app.core.deps import SecretsSettingsDep, SessionDep, client_ip
from app.core.secretbox import secret_box
from app.identity.auth import AdminDep
from app.keys import service
from app.keys.schemas import KeyCreate, KeyCreated, KeyRead

router = APIRouter(prefix="/api/keys", tags=["keys"], route_class=BoundaryRoute)

_AUTH_ERRORS: dict[int | str, dict[str, str]] = {
    401: {"description": "Missing or invalid key"},
    403: {"description": "Key lacks the admin scope"},
}


@router.post(
    "", status_code=status.HTTP_201_CREATED, response_model=KeyCreated, responses=_AUTH_ERRORS
)
async def create_key(
    body: KeyCreate,
    request: Request,
    session: SessionDep,
    secrets: SecretsSettingsDep,
    admin: AdminDep,
) -> KeyCreated:
    """Create a key; the raw key is in this response only."""
    key, raw = await service.create_key(session, body.name, [s.value for s in body.scopes])
    await record_audit(
        session,
        action="key.create",
        outcome="ok",
        principal=admin,
        subject=str(key.id),
        client_ip=client_ip(request),
        scopes=key.scopes,
    )
    created = events.KeyCreated(session, key.id, secret_box(secrets))
    await events.publish(created)  # webhooks adds the relay signing secret, sealed
    return KeyCreated(
        **KeyRead.model_validate(key).model_dump(),
        key=raw,
        webhook_signing_secret=created.shown_once.get("webhook_signing_secret"),
    )


@router.get("", response_model=list[KeyRead], responses=_AUTH_ERRORS)
async def list_keys(session: SessionDep, _: AdminDep) -> list[KeyRead]:
    """List keys (never their secrets)."""
    return [KeyRead.model_validate(k) for k in await service.list_keys(session)]


@router.get("/{key_id}", response_model=KeyRead, responses={**_AUTH_ERRORS, 404: {}})
async def get_key(key_id: uuid.UUID, session: SessionDep, _: AdminDep) -> KeyRead:
    """Read one key."""
    return KeyRead.model_validate(await service.get_key(session, key_id))


@router.delete("/{key_id}", response_model=KeyRead, responses={**_AUTH_ERRORS, 404: {}})
async def revoke_key(
    key_id: uuid.UUID, request: Request, session: SessionDep, admin: AdminDep
) -> KeyRead:
    """Revoke a key; it stops working at once."""
    key = await service.revoke_key(session, key_id)
    await record_audit(
        session,
        action="key.revoke",
        outcome="ok",
        principal=admin,
        subject=str(key.id),
        client_ip=client_ip(request),
    )
    return KeyRead.model_validate(key)
