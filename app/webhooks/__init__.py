"""Webhooks: the AssemblyAI receiver, the reconciler, the relay to callers, live status."""

from app.core.events import JobChanged, KeyCreated, subscribe
from app.webhooks.events import on_job_changed
from app.webhooks.signing import on_key_created

# Every job event is persisted, NOTIFYed to the instances' hubs, and relayed when final.
subscribe(JobChanged, on_job_changed)
# Every key gets the secret that signs its relayed webhooks.
subscribe(KeyCreated, on_key_created)
