"""LLM Gateway records: usage per call, per-key daily budget counters, reservations, and
transcript summaries (one row per job, spec and model: the exactly-once anchor)."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import BigInteger, Date, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base, utcnow


class SummaryStatus(StrEnum):
    pending = "pending"  # waiting for a completed job (or a retry / the budget)
    running = "running"  # claimed under a lease by one instance
    completed = "completed"
    error = "error"  # gave up: the reason is in `error`


class LlmUsage(Base):
    """One row per upstream completion: what it cost, for whom."""

    __tablename__ = "llm_usage"
    __table_args__ = (Index("ix_llm_usage_key_id_at", "key_id", "at"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    key_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("api_keys.id", ondelete="SET NULL"))
    model: Mapped[str] = mapped_column(String(100))
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    at: Mapped[datetime] = mapped_column(default=utcnow)
    kind: Mapped[str] = mapped_column(String(32))  # "chat" | "summary"
    # Set for summary calls; not a foreign key so usage outlives a deleted transcript.
    summary_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    streamed: Mapped[bool] = mapped_column(default=False)
    # True when upstream sent no usage and the tokens were estimated from the text.
    estimated: Mapped[bool] = mapped_column(default=False)


class LlmBudgetDay(Base):
    """Tokens a key used on one UTC day; its row lock orders concurrent reservations."""

    __tablename__ = "llm_budget_days"

    key_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("api_keys.id", ondelete="CASCADE"), primary_key=True
    )
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    used_tokens: Mapped[int] = mapped_column(BigInteger, default=0)


class LlmReservation(Base):
    """Tokens held for a call in flight; expired rows stop counting (a crashed caller)."""

    __tablename__ = "llm_reservations"
    __table_args__ = (Index("ix_llm_reservations_key_id_day", "key_id", "day"),)

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=uuid.uuid4)
    key_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("api_keys.id", ondelete="CASCADE"))
    day: Mapped[date] = mapped_column(Date)
    tokens: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]


class Summary(Base):
    """A summary of one job: unique per (job, spec, model), so it is paid for once."""

    __tablename__ = "summaries"
    __table_args__ = (
        UniqueConstraint("job_id", "spec", "model", name="uq_summaries_job_id_spec_model"),
        Index(
            "ix_summaries_due",
            "next_attempt_at",
            postgresql_where="status IN ('pending', 'running')",
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=uuid.uuid4)
    job_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    # The preset with its parameters ("bullets:5", "chapters") or "prompt:<sha256>".
    spec: Mapped[str] = mapped_column(String(100))
    preset: Mapped[str] = mapped_column(String(32))
    prompt: Mapped[str | None] = mapped_column(Text)
    prompt_hash: Mapped[str | None] = mapped_column(String(64))
    params: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)
    model: Mapped[str] = mapped_column(String(100))
    status: Mapped[str] = mapped_column(String(16), default=SummaryStatus.pending.value)
    result_text: Mapped[str | None] = mapped_column(Text)
    result_json: Mapped[Any | None] = mapped_column(JSONB)
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    llm_calls: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)
    source: Mapped[str] = mapped_column(String(16), default="api")  # "api" | "submit"

    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None]
    lease_owner: Mapped[str | None] = mapped_column(String(100))
    lease_expires_at: Mapped[datetime | None]

    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    completed_at: Mapped[datetime | None]
