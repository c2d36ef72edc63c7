from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from app.identity.scopes import Scope


class KeyCreate(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    scopes: list[Scope] = Field(min_length=1, max_length=len(Scope))


class KeyRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    name: str
    prefix: str
    scopes: list[str]
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


class KeyCreated(KeyRead):
    key: str = Field(description="The raw key. Shown once: only its hash is stored.")
    webhook_signing_secret: str | None = Field(
        None,
        description="Signs relayed webhooks (Standard Webhooks, `whsec_...`). Shown once; "
        "rotate with POST /api/keys/{id}/signing-secret/rotate.",
    )
