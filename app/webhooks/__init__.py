"""Webhooks: the AssemblyAI receiver, the reconciler, the relay to callers, live status."""

from app.core.events import JobChanged, subscribe
from app.webhooks.events import on_job_changed

# Every job event is persisted, NOTIFYed to the instances' hubs, and relayed when final.
subscribe(JobChanged, on_job_changed)
