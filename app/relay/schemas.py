from __future__ import annotations

import uuid
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
