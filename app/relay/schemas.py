from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Lockable = Literal["system_prompt", "greeting", "tools", "voice"]
VoiceId = Annotated[str, Field(min_length=1, max_length=40, pattern=r"^[a-z][a-z0-9_\-]*$")]


class AgentPolicyUpdate(BaseModel):
    """A key's Voice Agent policy on `/v1/ws` (null = not set). See docs/relay.md."""

    model_config = ConfigDict(extra="forbid")

    system_prompt: str | None = Field(None, max_length=20_000)
    greeting: str | None = Field(None, max_length=2_000)
    tools: list[dict[str, Any]] | None = Field(
        None, max_length=64, description="Flat tool definitions (each with a `name`)"
    )
    voices: list[VoiceId] | None = Field(None, max_length=64, description="Allowed voice ids")
    locked: list[Lockable] = Field(
        default_factory=list, description="Fields a client may not change"
    )


class AgentPolicyRead(AgentPolicyUpdate):
    model_config = ConfigDict(extra="forbid", from_attributes=True)

    key_id: uuid.UUID


class RelaySessionRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    kind: str
    key_id: uuid.UUID | None
    end_user: str | None
    via: str
    upstream_session_id: str | None
    speech_model: str | None
    started_at: datetime
    ended_at: datetime | None = Field(description="null while the session is open")
    session_s: float
    audio_s: float
    charged_s: int
    close_code: int | None
    close_reason: str | None
    ended_by: str | None
    client_terminated: bool | None


class RelaySessionPage(BaseModel):
    items: list[RelaySessionRead]
