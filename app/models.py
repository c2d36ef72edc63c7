"""Every feature's models, imported in one place for Alembic and the tests."""

from app.keys.models import ApiKey, AuditEvent

__all__ = ["ApiKey", "AuditEvent"]
