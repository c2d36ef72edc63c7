"""Request and response shapes of summaries (the chat endpoint passes JSON through)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel

DEFAULT_BULLETS = 5


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
