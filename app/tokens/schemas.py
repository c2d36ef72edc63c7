from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool

from app.core.boundary import INT32_MAX, JSON_INT

EndUser = Annotated[str, Field(min_length=1, max_length=200)]
Keyterm = Annotated[str, Field(min_length=1, max_length=50)]


class TokenResponse(BaseModel):
    """Upstream's answer shape, unchanged."""

    token: str


class _TokenRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    expires_in_seconds: Annotated[int, Field(ge=1, le=600), JSON_INT] | None = Field(
        None, description="How long the token may be redeemed (default: policy max)"
    )
    max_session_duration_seconds: Annotated[int, Field(ge=60, le=10800), JSON_INT] | None = Field(
        None, description="Cap on the session length (default: policy max)"
    )
    end_user: EndUser | None = Field(
        None,
        description="For key callers: the end user the token is for (limits apply per end "
        "user). Session and JWT callers already carry theirs.",
    )


class StreamingTokenRequest(_TokenRequest):
    """Streaming options go into `websocket_url`; upstream validates them again on connect."""

    sample_rate: Annotated[int, Field(ge=8000, le=48000), JSON_INT] | None = None
    encoding: Literal["pcm_s16le", "pcm_mulaw"] | None = None
    speech_model: str | None = Field(None, pattern=r"^[a-z0-9][a-z0-9.\-]{0,63}$")
    speaker_labels: StrictBool | None = None
    format_turns: StrictBool | None = None
    keyterms_prompt: list[Keyterm] | None = Field(None, max_length=100)
    prompt: str | None = Field(None, min_length=1, max_length=2000)
    domain: Literal["medical-v1"] | None = None
    min_turn_silence: Annotated[int, Field(ge=0, le=10_000), JSON_INT] | None = None
    max_turn_silence: Annotated[int, Field(ge=0, le=10_000), JSON_INT] | None = None
    inactivity_timeout: Annotated[int, Field(ge=5, le=3600), JSON_INT] | None = None


class AgentTokenRequest(_TokenRequest):
    pass


class AppTokenResponse(BaseModel):
    token: str = Field(description="Single use: open the WebSocket once with it")
    expires_at: datetime = Field(description="The token must be redeemed before this instant")
    websocket_url: str = Field(description="Open this URL as is: it carries the token")
    expires_in_seconds: int
    max_session_duration_seconds: int


LiveAccess = Literal["tokens", "relay", "both"]


class TokenPolicyRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    key_id: uuid.UUID
    max_expires_in_s: int
    max_session_s: int
    key_mints_per_minute: int
    end_user_mints_per_minute: int
    key_daily_session_s: int
    end_user_daily_session_s: int
    live_access: LiveAccess
    relay_key_max_sessions: int
    relay_end_user_max_sessions: int
    overrides: list[str] = Field(description="Fields set for this key; the rest are defaults")


class TokenPolicyUpdate(BaseModel):
    """Per-key overrides; null resets a field to the global default."""

    model_config = ConfigDict(extra="forbid")

    max_expires_in_s: Annotated[int, Field(ge=1, le=600), JSON_INT] | None = None
    max_session_s: Annotated[int, Field(ge=60, le=10800), JSON_INT] | None = None
    key_mints_per_minute: Annotated[int, Field(ge=0, le=INT32_MAX), JSON_INT] | None = None
    end_user_mints_per_minute: Annotated[int, Field(ge=0, le=INT32_MAX), JSON_INT] | None = Field(
        None
    )
    key_daily_session_s: Annotated[int, Field(ge=0, le=INT32_MAX), JSON_INT] | None = None
    end_user_daily_session_s: Annotated[int, Field(ge=0, le=INT32_MAX), JSON_INT] | None = Field(
        None
    )
    live_access: LiveAccess | None = Field(
        None,
        description="Live paths the key may use: direct tokens, the relay, or both (default)",
    )
    relay_key_max_sessions: Annotated[int, Field(ge=0, le=INT32_MAX), JSON_INT] | None = Field(
        None, description="Concurrent relayed sessions per key (default: WS_RELAY_KEY_MAX_SESSIONS)"
    )
    relay_end_user_max_sessions: Annotated[int, Field(ge=0, le=INT32_MAX), JSON_INT] | None = Field(
        None,
        description="Concurrent relayed sessions per end user "
        "(default: WS_RELAY_END_USER_MAX_SESSIONS)",
    )


# Token answers are never cached by a browser or a proxy between.
NO_STORE = {"Cache-Control": "no-store"}


def compat_token_parameters(session: str) -> dict[str, Any]:
    """The query parameters of upstream's token routes, for `openapi_extra`: documented by
    hand, since those routes parse them themselves (to answer 400 as upstream does)."""
    return {
        "parameters": [
            {
                "name": "expires_in_seconds",
                "in": "query",
                "required": True,
                "schema": {"type": "integer", "minimum": 1, "maximum": 600},
                "description": "How long the token may be redeemed; clamped to the policy",
            },
            {
                "name": "max_session_duration_seconds",
                "in": "query",
                "required": False,
                "schema": {"type": "integer", "minimum": 60, "maximum": 10800},
                "description": f"Cap on {session}; clamped to the policy (default: its maximum)",
            },
        ]
    }
