from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator


class AuditRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    at: datetime
    key_id: uuid.UUID | None
    end_user: str | None
    action: str
    outcome: str
    subject: str | None
    client_ip: str | None
    user_agent: str | None
    detail: dict[str, Any]

    @field_validator("client_ip", mode="before")
    @classmethod
    def _ip(cls, value: object) -> object:
        return None if value is None else str(value)


class AuditPage(BaseModel):
    items: list[AuditRead]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next (older) page")


class UsageCounts(BaseModel):
    grants: int = 0
    refusals: int = 0
    failures: int = 0
    granted_session_s: int = 0
    streaming_grants: int = 0
    agents_grants: int = 0
    relay_sessions: int = Field(0, description="Relayed live sessions that ended (/v3/ws, /v1/ws)")
    relay_session_s: int = Field(0, description="Session-seconds charged for relayed sessions")
    relay_audio_s: float = Field(0.0, description="Audio seconds sent through the relay")
    relay_refusals: int = Field(0, description="Relayed sessions refused before upstream")


class Budget(BaseModel):
    daily_session_s_limit: int = Field(
        0, description="Granted session-seconds per UTC day; 0 = none"
    )
    today_session_s_used: int = Field(0, description="Reserved today (UTC) on the live counter")


class EndUserUsage(UsageCounts):
    end_user: str
    budget: Budget | None = Field(None, description="None when the counters are unreachable")


class KeyUsage(UsageCounts):
    key_id: uuid.UUID
    key_name: str | None
    budget: Budget | None = Field(None, description="None when the counters are unreachable")
    end_users: list[EndUserUsage]


class UsageReport(BaseModel):
    since: datetime
    until: datetime
    keys: list[KeyUsage]
