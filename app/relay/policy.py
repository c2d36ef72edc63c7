"""What a relayed session may ask for, decided before anything goes upstream."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from app.core.config import RelaySettings

# Close codes the relay itself uses (upstream's own codes pass through unchanged).
UNAUTHORIZED = 1008  # as upstream: missing/invalid credentials, or a lacking scope
INTERNAL_ERROR = 1011
SERVICE_RESTART = 1012
INVALID_PARAMS = 3006  # as upstream: a parameter it would refuse
SESSION_CAP = 3008  # as upstream: the session reached its maximum duration
TOO_MANY_SESSIONS = 3009  # as upstream: too many concurrent sessions
BUDGET_EXHAUSTED = 4029  # the daily session-seconds budget ran out
CLIENT_STALLED = 4408  # the client took nothing for WS_RELAY_STALL_TIMEOUT_S
STORAGE_UNAVAILABLE = 4503  # counters (Redis) unreachable and TOKEN_LIMITS_FAIL_OPEN=false

# Close codes that cannot travel in a close frame (RFC 6455 7.4.1): sent as 1011 instead.
NOT_SENDABLE = frozenset({1005, 1006, 1015})

# The close reason (1008) for a key whose token policy says live_access=tokens.
LIVE_ACCESS_TOKENS_REASON = (
    "Forbidden: this key's token policy allows only direct tokens (live_access=tokens)"
)

BYTES_PER_SAMPLE = {"pcm_s16le": 2, "pcm_mulaw": 1}


class PolicyRefusal(Exception):
    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


@dataclass(frozen=True)
class StreamShape:
    """What the relay reads from the query to meter audio (the query itself passes as is)."""

    sample_rate: int | None
    encoding: str
    speech_model: str | None

    def audio_seconds(self, nbytes: int) -> float | None:
        width = BYTES_PER_SAMPLE.get(self.encoding)
        if width is None or not self.sample_rate:
            return None
        return nbytes / (width * self.sample_rate)


def check_streaming_query(
    params: Mapping[str, str], keys: list[str], settings: RelaySettings
) -> StreamShape:
    """Refuse (3006, as upstream would) a parameter the service does not allow or a
    `speech_model` outside WS_RELAY_SPEECH_MODELS."""
    allowed = set(settings.allowed_params)
    for name in keys:
        if name != "token" and name not in allowed:
            raise PolicyRefusal(
                INVALID_PARAMS, f"Invalid query parameters: {name[:40]} is not allowed here"
            )
    model = params.get("speech_model") or None
    models = settings.speech_models
    if models and (model or "") not in models:
        raise PolicyRefusal(
            INVALID_PARAMS,
            f"Invalid query parameters: speech_model must be one of: {', '.join(models)}"[:120],
        )
    raw_rate = params.get("sample_rate") or ""
    rate = int(raw_rate) if raw_rate.isdigit() and len(raw_rate) < 7 else None
    return StreamShape(
        sample_rate=rate, encoding=params.get("encoding") or "pcm_s16le", speech_model=model
    )
