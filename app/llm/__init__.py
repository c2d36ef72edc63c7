"""LLM Gateway: the chat pass-through and summaries of transcripts."""

from app.core.config import LlmSettings
from app.core.events import JobChanged, JobCreated, JobRequested, JobShown, subscribe
from app.llm.summaries import SubmitSummaries, on_job_changed, on_job_shown

# Summaries are shown with their job and forgotten with it.
subscribe(JobShown, on_job_shown)
subscribe(JobChanged, on_job_changed)


def subscribe_with(settings: LlmSettings) -> None:
    """Summaries asked with a submit: checked first, queued once the job exists, under
    these settings (the app subscribes them when it is made: app/main.py)."""
    summaries = SubmitSummaries(settings)
    subscribe(JobRequested, summaries.on_job_requested)
    subscribe(JobCreated, summaries.on_job_created)
