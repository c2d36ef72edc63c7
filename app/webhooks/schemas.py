"""Shapes of what this feature sends: SSE event data, relay bodies, rotation answers."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from app.transcripts.models import Job
from app.transcripts.schemas import JobRead, present


def relay_body(job: Job, msg_timestamp: datetime) -> dict[str, Any]:
    """A Standard Webhooks style body: `type`, `timestamp`, and `data`: our job as
    `GET /api/transcripts/{id}` shows it, plus the upstream transcript object."""
    return {
        "type": f"transcript.{job.status}",
        "timestamp": msg_timestamp.isoformat(),
        "data": {
            **JobRead.of(job).model_dump(mode="json"),
            # As the caller reads it: their webhook fields, not our receiver's.
            "transcript": present(job, job.result) if job.result is not None else None,
        },
    }


class WebhookAck(BaseModel):
    ok: bool = True
    duplicate: bool = Field(False, description="True when this exact delivery was seen before.")


class SigningSecretRotated(BaseModel):
    key_id: uuid.UUID
    webhook_signing_secret: str = Field(description="The new secret. Shown once.")
    previous_valid_until: datetime | None = Field(
        description="Until when the previous secret still signs (both signatures are sent)."
    )
