"""The scopes a proxy key (and so every caller acting for it) can hold."""

from __future__ import annotations

from enum import StrEnum


class Scope(StrEnum):
    transcripts = "transcripts"
    tokens_streaming = "tokens:streaming"
    tokens_agents = "tokens:agents"
    llm = "llm"
    admin = "admin"


ALL_SCOPES = [s.value for s in Scope]
