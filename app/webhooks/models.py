"""Tables of the webhooks feature: job events, upstream deliveries, relay, signing secrets."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base, utcnow


class JobEvent(Base):
    """One published change of a job; `version` is the SSE event id (Last-Event-ID resume)."""

    __tablename__ = "job_events"

    job_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True
    )
    version: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    event: Mapped[str] = mapped_column(String(64))
    data: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)
    at: Mapped[datetime] = mapped_column(default=utcnow)


class WebhookDelivery(Base):
    """One distinct AssemblyAI webhook delivery; a repeat of the same body changes nothing."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (UniqueConstraint("job_id", "body_sha256", name="uq_webhook_deliveries_job"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    job_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    # SHA-256 of the raw body: upstream sends {transcript_id, status}, so equal bodies are
    # the same delivery retried.
    body_sha256: Mapped[str] = mapped_column(String(64))
    transcript_id: Mapped[str | None] = mapped_column(String(100))
    status: Mapped[str | None] = mapped_column(String(32))
    received_at: Mapped[datetime] = mapped_column(default=utcnow)


class RelayEndpoint(Base):
    """A caller URL we relay to; a 410 answer disables it for that key."""

    __tablename__ = "relay_endpoints"
    __table_args__ = (UniqueConstraint("key_id", "url", name="uq_relay_endpoints_key_id_url"),)

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=uuid.uuid4)
    key_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("api_keys.id", ondelete="CASCADE"))
    url: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    disabled_at: Mapped[datetime | None]
    disabled_reason: Mapped[str | None] = mapped_column(Text)


class RelayDelivery(Base):
    """One message to a caller: a job reached a final state. Retried under one webhook-id."""

    __tablename__ = "relay_deliveries"
    __table_args__ = (
        # Relay once per job per final state: the insert that loses this race does nothing.
        UniqueConstraint("job_id", "job_status", name="uq_relay_deliveries_job_id_job_status"),
        Index(
            "ix_relay_deliveries_next_attempt_at",
            "next_attempt_at",
            postgresql_where="next_attempt_at IS NOT NULL",
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=uuid.uuid4)
    job_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    endpoint_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("relay_endpoints.id", ondelete="CASCADE")
    )
    job_status: Mapped[str] = mapped_column(String(32))
    webhook_id: Mapped[str] = mapped_column(String(64), unique=True)
    # pending -> delivered | failed (retries exhausted) | disabled (endpoint answered 410)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None]
    lease_owner: Mapped[str | None] = mapped_column(String(100))
    lease_expires_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    delivered_at: Mapped[datetime | None]


class RelayAttempt(Base):
    """Every POST to a caller, successful or not."""

    __tablename__ = "relay_attempts"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    delivery_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("relay_deliveries.id", ondelete="CASCADE"), index=True
    )
    attempt_no: Mapped[int] = mapped_column(Integer)
    at: Mapped[datetime] = mapped_column(default=utcnow)
    response_code: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    duration_ms: Mapped[float | None]


class SigningSecret(Base):
    """A key's Standard Webhooks signing secret. The previous one stays valid until it expires."""

    __tablename__ = "webhook_signing_secrets"

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=uuid.uuid4)
    key_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("api_keys.id", ondelete="CASCADE"), index=True
    )
    # "whsec_<base64>" sealed with SECRETS_KEY (a Fernet token): signing needs the secret
    # itself, a database dump alone must not be enough.
    secret: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # NULL while current; set to now + grace when rotated out.
    expires_at: Mapped[datetime | None]
