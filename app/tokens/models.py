from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import ForeignKey, Integer, String
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base, utcnow


class TokenPolicy(Base):
    """Per-key overrides of the global token policy; a NULL column means "the default"."""

    __tablename__ = "token_policies"

    key_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("api_keys.id", ondelete="CASCADE"), primary_key=True
    )
    max_expires_in_s: Mapped[int | None] = mapped_column(Integer)
    max_session_s: Mapped[int | None] = mapped_column(Integer)
    key_mints_per_minute: Mapped[int | None] = mapped_column(Integer)
    end_user_mints_per_minute: Mapped[int | None] = mapped_column(Integer)
    key_daily_session_s: Mapped[int | None] = mapped_column(Integer)
    end_user_daily_session_s: Mapped[int | None] = mapped_column(Integer)
    # "tokens" | "relay" | "both" (NULL): which live path the key may use.
    live_access: Mapped[str | None] = mapped_column(String(8))
    relay_key_max_sessions: Mapped[int | None] = mapped_column(Integer)
    relay_end_user_max_sessions: Mapped[int | None] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
