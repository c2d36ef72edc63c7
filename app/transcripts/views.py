"""A job as its events carry it: small enough for a NOTIFY payload."""

from __future__ import annotations

from typing import Any

from app.transcripts.models import Job


def job_view(job: Job) -> dict[str, Any]:
    """The small job summary carried by status events (fits a NOTIFY payload)."""
    return {
        "id": str(job.id),
        "status": job.status,
        "upstream_id": job.upstream_id,
        "error": job.error,
        "audio_duration": job.audio_duration,
        "created_at": job.created_at.isoformat() if job.created_at else None,
        "completed_at": job.completed_at.isoformat() if job.completed_at else None,
    }
