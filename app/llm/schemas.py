"""Request and response shapes of summaries (the chat endpoint passes JSON through)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from app.core.boundary import JSON_INT

Preset = Literal["bullets", "paragraph", "chapters", "action_items", "custom"]
PRESETS: tuple[str, ...] = ("bullets", "paragraph", "chapters", "action_items", "custom")
DEFAULT_BULLETS = 5


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


class SummaryUsage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    llm_calls: int


class SummaryRead(BaseModel):
    id: uuid.UUID
    transcript_id: uuid.UUID
    preset: str
    prompt: str | None
    params: dict[str, Any]
    model: str
    status: str
    # The answer as text, and structured where the preset has a structure:
    # bullets and action_items → list of strings; chapters → list of
    # {headline, summary, start, end} with start/end in milliseconds.
    text: str | None
    data: Any | None
    usage: SummaryUsage
    error: str | None
    source: str
    created_at: datetime
    completed_at: datetime | None
