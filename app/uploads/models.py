"""One row per upload through the proxy: who sent how many bytes, and where they landed.

A row is written (status `receiving`) before the first byte goes upstream and finished
when upstream answers, so an upload cut off by a crash or a disconnect is never mistaken
for a complete one.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum

from sqlalchemy import BigInteger, ForeignKey, Index, String, Text
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base, utcnow


class UploadStatus(StrEnum):
    receiving = "receiving"  # the body is streaming upstream
    completed = "completed"  # upstream answered with an upload_url
    failed = "failed"  # upstream refused or could not be reached
    aborted = "aborted"  # the caller disconnected or the body broke a limit


class Upload(Base):
    __tablename__ = "uploads"
    __table_args__ = (
        Index("ix_uploads_key_id_started_at", "key_id", "started_at"),
        Index("ix_uploads_upload_url_hash", "upload_url_hash"),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=uuid.uuid4)
    key_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("api_keys.id", ondelete="CASCADE"))
    end_user: Mapped[str | None] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16), default=UploadStatus.receiving.value)
    # "raw" (an octet-stream body) or "multipart" (a form's `file` field).
    body_format: Mapped[str] = mapped_column(String(16))
    filename: Mapped[str | None] = mapped_column(String(500))
    content_type: Mapped[str | None] = mapped_column(String(200))
    # The request's Content-Length when it had one (chunked bodies: NULL).
    declared_bytes: Mapped[int | None] = mapped_column(BigInteger)
    # Audio bytes sent upstream (for multipart: the file's bytes, not the form's).
    bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    upload_url: Mapped[str | None] = mapped_column(Text)
    # SHA-256 of the upload_url's canonical form (app/uploads/ownership.py): who may submit it.
    upload_url_hash: Mapped[str | None] = mapped_column(String(64))
    error: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    completed_at: Mapped[datetime | None]
