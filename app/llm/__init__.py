"""LLM Gateway: the chat pass-through and summaries of transcripts."""

from app.core.events import JobChanged, JobCreated, JobRequested, JobShown, subscribe
from app.llm.summaries import on_job_changed, on_job_created, on_job_requested, on_job_shown

# Summaries asked with a submit: checked first, queued once the job exists, shown with the
# job, forgotten with it.
subscribe(JobRequested, on_job_requested)
subscribe(JobCreated, on_job_created)
subscribe(JobShown, on_job_shown)
subscribe(JobChanged, on_job_changed)
