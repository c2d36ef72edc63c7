from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class SessionCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    key: str | None = Field(
        None,
        min_length=1,
        max_length=200,
        description="The proxy key (or send it in Authorization)",
    )
    end_user: str | None = Field(
        None, min_length=1, max_length=200, description="Who this browser session is for"
    )


class SessionRead(BaseModel):
    signed_in: Literal[True] = True
    key_id: uuid.UUID
    key_name: str
    scopes: list[str]
    end_user: str | None
    via: str
    expires_at: datetime | None = None


class SignedOut(BaseModel):
    """`GET /api/session` for a visitor without a live session: an answer, not an error."""

    signed_in: Literal[False] = False
    detail: str = Field(description="Why: no credentials, or the session cookie has ended.")
