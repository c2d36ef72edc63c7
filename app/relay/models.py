from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import Float, ForeignKey, Index, Integer, String
from sqlalchemy.dialects.postgresql import UUID
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
