"""A transcription job: our record of one upstream transcript, owned by one proxy key.

The row is committed before the upstream submit, so a webhook that arrives at once always
finds it. The reconciler (app/webhooks) advances jobs whose `next_check_at` is due, under a
lease (`lease_owner`, `lease_expires_at`) so that only one instance works on a job at a time.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    BigInteger,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base, utcnow


class JobStatus(StrEnum):
    submitting = "submitting"  # row committed, upstream submit not answered yet
    queued = "queued"  # the upstream statuses
    processing = "processing"
    completed = "completed"
    error = "error"  # upstream finished the job with an error
    failed = "failed"  # the submit itself failed: upstream never took the job

    @property
    def final(self) -> bool:
        return self in (JobStatus.completed, JobStatus.error, JobStatus.failed)


FINAL_STATUSES = tuple(s.value for s in JobStatus if s.final)


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (
        UniqueConstraint("key_id", "idempotency_key", name="uq_jobs_key_id_idempotency_key"),
        Index("ix_jobs_key_id_created_at", "key_id", "created_at"),
        Index(
            "ix_jobs_next_check_at",
            "next_check_at",
            postgresql_where="next_check_at IS NOT NULL",
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=uuid.uuid4)
    key_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("api_keys.id", ondelete="CASCADE"))
    end_user: Mapped[str | None] = mapped_column(String(200))
    upstream_id: Mapped[str | None] = mapped_column(String(100), unique=True)
    status: Mapped[str] = mapped_column(String(32), default=JobStatus.submitting.value, index=True)
    audio_url: Mapped[str] = mapped_column(Text)
    # The parameters sent upstream, without our webhook URL and secret.
    request: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)
    # SHA-256 of the per-job secret AssemblyAI sends back in the webhook auth header.
    webhook_secret_hash: Mapped[str | None] = mapped_column(String(64))
    # The caller's own webhook (relayed to by the reconciler; never sent upstream).
    caller_webhook_url: Mapped[str | None] = mapped_column(Text)
    caller_webhook_auth_header_name: Mapped[str | None] = mapped_column(String(200))
    caller_webhook_auth_header_value: Mapped[str | None] = mapped_column(Text)
    idempotency_key: Mapped[str | None] = mapped_column(String(200))
    request_hash: Mapped[str | None] = mapped_column(String(64))
    error: Mapped[str | None] = mapped_column(Text)
    # The completed upstream transcript object, cached so reads don't reach upstream.
    result: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    audio_duration: Mapped[float | None]
    speech_model: Mapped[str | None] = mapped_column(String(64))

    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    submitted_at: Mapped[datetime | None]
    completed_at: Mapped[datetime | None]
    deleted_at: Mapped[datetime | None]
    webhook_received_at: Mapped[datetime | None]

    # Reconciler bookkeeping.
    next_check_at: Mapped[datetime | None]
    check_attempts: Mapped[int] = mapped_column(Integer, default=0)
    lease_owner: Mapped[str | None] = mapped_column(String(100))
    lease_expires_at: Mapped[datetime | None]
    # Monotonic per-job event counter, used as the SSE event id.
    version: Mapped[int] = mapped_column(BigInteger, default=0)

    @property
    def is_final(self) -> bool:
        return JobStatus(self.status).final


class TranscriptResource(Base):
    """A cached sub-resource of a completed transcript (`/paragraphs`, `/srt`, ...).

    Once a transcript is complete its derived views never change, so each (resource,
    canonical query) is fetched from upstream once and served from here afterwards.
    Deleting the job (or purging it) removes these rows with it.
    """

    __tablename__ = "transcript_resources"
    __table_args__ = (
        UniqueConstraint(
            "job_id", "resource", "params", name="uq_transcript_resources_job_resource_params"
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    job_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    resource: Mapped[str] = mapped_column(String(32))
    # The query string, keys sorted, only the parameters upstream documents ("" if none).
    params: Mapped[str] = mapped_column(String(2000), default="")
    content_type: Mapped[str] = mapped_column(String(200))
    body: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
