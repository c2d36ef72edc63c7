from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import Float, ForeignKey, Index, Integer, String, Text
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base, utcnow


class RelaySession(Base):
    """One relayed live session (`/v3/ws` or `/v1/ws`): who, how long, how it ended.

    Written when the session opens upstream and updated when it ends; a row whose
    `ended_at` stays NULL belonged to an instance that died mid-session."""

    __tablename__ = "relay_sessions"
    __table_args__ = (Index("ix_relay_sessions_key_id_started_at", "key_id", "started_at"),)

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))  # "streaming" or "agents"
    key_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("api_keys.id", ondelete="SET NULL"))
    end_user: Mapped[str | None] = mapped_column(String(200))
    via: Mapped[str] = mapped_column(String(16))
    upstream_session_id: Mapped[str | None] = mapped_column(String(100))
    speech_model: Mapped[str | None] = mapped_column(String(100))
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    ended_at: Mapped[datetime | None]
    session_s: Mapped[float] = mapped_column(Float, default=0.0)
    audio_s: Mapped[float] = mapped_column(Float, default=0.0)
    charged_s: Mapped[int] = mapped_column(Integer, default=0)
    close_code: Mapped[int | None] = mapped_column(Integer)
    close_reason: Mapped[str | None] = mapped_column(String(200))
    # Who ended it: "client" (Terminate or close), "upstream", "budget", "cap", "stall",
    # "client_gone" (closed without Terminate), "shutdown".
    ended_by: Mapped[str | None] = mapped_column(String(32))
    client_terminated: Mapped[bool | None]


class AgentPolicy(Base):
    """Per-key Voice Agent policy applied to the client's `session.update` on `/v1/ws`.

    `locked` names fields the client may not change ("system_prompt", "greeting", "tools",
    "voice"); a field set here but not locked is merged (see app/relay/agent_policy.py)."""

    __tablename__ = "relay_agent_policies"

    key_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("api_keys.id", ondelete="CASCADE"), primary_key=True
    )
    system_prompt: Mapped[str | None] = mapped_column(Text)
    greeting: Mapped[str | None] = mapped_column(Text)
    tools: Mapped[list[dict[str, Any]] | None] = mapped_column(JSONB)
    voices: Mapped[list[str] | None] = mapped_column(ARRAY(Text))
    locked: Mapped[list[str]] = mapped_column(ARRAY(Text), default=list)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
