"""Every feature's models, imported in one place for Alembic and the tests."""

from app.audit.models import AuditEvent
from app.identity.models import ApiKey
from app.identity.session_models import AppSession
from app.llm.models import LlmBudgetDay, LlmReservation, LlmUsage, Summary
from app.relay.models import AgentPolicy, RelaySession
from app.tokens.models import TokenPolicy
from app.transcripts.models import Job, TranscriptResource
from app.uploads.models import Upload
from app.webhooks.models import (
    JobEvent,
    RelayAttempt,
    RelayDelivery,
    RelayEndpoint,
    SigningSecret,
    WebhookDelivery,
)

__all__ = [
    "ApiKey",
    "AppSession",
    "RelaySession",
    "AgentPolicy",
    "TokenPolicy",
    "AuditEvent",
    "Job",
    "TranscriptResource",
    "Upload",
    "LlmBudgetDay",
    "LlmReservation",
    "LlmUsage",
    "Summary",
    "JobEvent",
    "RelayAttempt",
    "RelayDelivery",
    "RelayEndpoint",
    "SigningSecret",
    "WebhookDelivery",
]
