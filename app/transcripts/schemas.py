from __future__ import annotations

import base64
import binascii
import json
import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from app.core.boundary import JSON_INT
from app.core.errors import BadRequest
from app.transcripts.models import Job

# Summaries asked for with a submit: declared with the submit's options (their owner), run
# by the llm feature (app/llm/summaries.py) when the job completes.
Preset = Literal["bullets", "paragraph", "chapters", "action_items", "custom"]
PRESETS: tuple[str, ...] = ("bullets", "paragraph", "chapters", "action_items", "custom")


class SummaryRequest(BaseModel):
    """One summary: a preset, or a custom `prompt`; `model` defaults to LLM_SUMMARY_MODEL."""

    # The rules of `_one_kind` below, in the document too (so a generated request that
    # follows the document is one the service accepts).
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "anyOf": [
                {
                    "required": ["preset"],
                    "properties": {"preset": {"const": "bullets"}, "prompt": {"type": "null"}},
                },
                {
                    "required": ["preset"],
                    "properties": {
                        "preset": {"enum": ["paragraph", "chapters", "action_items"]},
                        "prompt": {"type": "null"},
                        "bullets": {"type": "null"},
                    },
                },
                {
                    "required": ["prompt"],
                    "properties": {
                        "preset": {"enum": ["custom", None]},
                        "prompt": {"type": "string"},
                        "bullets": {"type": "null"},
                    },
                },
            ]
        },
    )

    preset: Preset | None = None
    prompt: str | None = Field(None, min_length=1, max_length=20_000)
    model: str | None = Field(None, max_length=100)
    bullets: Annotated[int, Field(ge=1, le=50), JSON_INT] | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> SummaryRequest:
        if self.prompt is not None and self.preset not in (None, "custom"):
            raise ValueError("give either a preset or a prompt, not both")
        if self.prompt is None and self.preset in (None, "custom"):
            raise ValueError(
                "give a preset (bullets, paragraph, chapters, action_items) or a prompt"
            )
        if self.bullets is not None and self.preset != "bullets":
            raise ValueError("'bullets' applies to the bullets preset only")
        if self.prompt is not None:
            self.preset = "custom"
        return self


class AppSubmitOptions(BaseModel):
    """What an app-surface submit may ask of this service beyond AssemblyAI's parameters.

    Fields declared here are validated, kept out of the upstream request and handed to
    `service.submit_job` as `options` (features that act on a job after its submit, such
    as summaries, add their field here and read it there).
    """

    summaries: list[SummaryRequest] = Field(
        default_factory=list,
        max_length=10,
        description="LLM Gateway summaries to run once the job completes (exactly once).",
    )


class TranscriptCreate(AppSubmitOptions):
    """App-surface submit (JSON). Any other AssemblyAI parameter is passed through."""

    model_config = ConfigDict(extra="allow")

    audio_url: str = Field(
        max_length=4096, description="A URL AssemblyAI can fetch, e.g. an upload_url."
    )
    speech_models: list[Annotated[str, Field(max_length=64)]] | None = Field(
        None,
        max_length=10,
        description="Ordered fallback list; default from DEFAULT_SPEECH_MODELS.",
    )
    webhook_url: str | None = Field(
        None,
        max_length=4096,
        description="Your own webhook: stored and called by this service, never upstream.",
    )
    webhook_auth_header_name: str | None = Field(None, max_length=200)
    webhook_auth_header_value: str | None = Field(None, max_length=4096)


class JobRead(BaseModel):
    """Our view of a job (the upstream transcript object is at `transcript_url`)."""

    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    status: str
    upstream_id: str | None = Field(description="AssemblyAI's transcript id (the /v2 id).")
    audio_url: str
    error: str | None
    speech_model: str | None
    audio_duration: float | None = Field(description="Seconds of audio, once completed.")
    filename: str | None = Field(
        None, description="The uploaded file's name, when the job was submitted with a file."
    )
    created_at: datetime
    updated_at: datetime
    submitted_at: datetime | None
    completed_at: datetime | None
    deleted_at: datetime | None
    transcript_url: str | None = Field(None, description="The transcript on the /v2 surface.")
    summaries: list[dict[str, Any]] = Field(
        default_factory=list, description="LLM Gateway summaries requested with the job."
    )

    @classmethod
    def of(cls, job: Job, filename: str | None = None) -> JobRead:
        read = cls.model_validate(job)
        read.filename = filename
        if job.upstream_id and job.deleted_at is None:
            read.transcript_url = f"/v2/transcript/{job.upstream_id}"
        return read


class JobList(BaseModel):
    items: list[JobRead]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next (older) page.")


def encode_cursor(position: tuple[datetime, uuid.UUID]) -> str:
    raw = json.dumps([position[0].isoformat(), str(position[1])]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        at, job_id = json.loads(base64.urlsafe_b64decode(padded))
        return datetime.fromisoformat(at), uuid.UUID(job_id)
    except (ValueError, TypeError, binascii.Error):
        raise BadRequest("The cursor is not valid: pass back a next_cursor unchanged.") from None


class PageDetails(BaseModel):
    limit: int
    result_count: int
    current_url: str
    prev_url: str | None
    next_url: str | None


class TranscriptListItem(BaseModel):
    id: str
    resource_url: str
    status: str
    created: str
    completed: str | None
    audio_url: str
    error: str | None = None


class TranscriptList(BaseModel):
    """AssemblyAI's list shape; newest first, `prev_url` goes to older transcripts."""

    page_details: PageDetails
    transcripts: list[TranscriptListItem]


def present(job: Job, obj: Mapping[str, Any]) -> dict[str, Any]:
    """Upstream's object as the caller should see it: their webhook, not ours."""
    out = dict(obj)
    if "webhook_url" in out or job.caller_webhook_url is not None:
        out["webhook_url"] = job.caller_webhook_url
    if "webhook_auth_header_name" in out or job.caller_webhook_auth_header_name is not None:
        out["webhook_auth_header_name"] = job.caller_webhook_auth_header_name
    if "webhook_auth" in out:
        out["webhook_auth"] = job.caller_webhook_auth_header_name is not None
    out.pop("webhook_auth_header_value", None)
    return out
