"""Every feature's models, imported in one place for Alembic and the tests."""

from app.keys.models import ApiKey, AuditEvent
from app.transcripts.models import Job

__all__ = ["ApiKey", "AuditEvent", "Job"]
