"""Submit policy: what a transcription request may ask for, checked before any upstream call.

Upstream accepts some parameters that no longer do what callers think (the summarization
family, LeMUR's `transcript_ids`) or that belong to another API (`speech_model`, singular,
is streaming's). Refusing them here with the right parameter in the message saves a
paid job that would not do what was meant.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from app.core.errors import BadRequest

# Pre-recorded speech models and their documented `keyterms_prompt` maxima (reference §3).
KEYTERMS_LIMITS: dict[str, int] = {
    "universal-3-pro": 1000,
    "universal-2": 200,
}
KNOWN_SPEECH_MODELS = tuple(KEYTERMS_LIMITS)
# AssemblyAI's documented length of one pre-recorded key term (a phrase of up to 6 words).
KEYTERM_MAX_WORDS = 6

_LLM_GATEWAY = (
    "transcribe without it, then ask LLM Gateway (POST /v1/chat/completions) with the "
    "transcript text; on this service's app surface, POST /api/transcripts with `summaries`"
)
DEPRECATED_PARAMETERS: dict[str, str] = {
    "auto_chapters": f"`auto_chapters` is deprecated: {_LLM_GATEWAY}.",
    "summarization": f"`summarization` is deprecated: {_LLM_GATEWAY}.",
    "summary_model": f"`summary_model` is deprecated: {_LLM_GATEWAY}.",
    "summary_type": f"`summary_type` is deprecated: {_LLM_GATEWAY}.",
    "medical_mode": '`medical_mode` is not a parameter: use `domain: "medical-v1"`.',
    "transcript_ids": (
        "`transcript_ids` belongs to LeMUR, which sunset on 2026-03-31: send the transcript "
        "text to LLM Gateway (POST /v1/chat/completions) in `messages` instead."
    ),
    "speech_model": (
        "`speech_model` (singular) is the streaming parameter: pre-recorded submits take "
        '`speech_models`, an ordered fallback list such as ["universal-3-pro", "universal-2"].'
    ),
}
# Ours to set on every submit (the caller's own webhook is stored and relayed instead).
WEBHOOK_FIELDS = ("webhook_url", "webhook_auth_header_name", "webhook_auth_header_value")


@dataclass(frozen=True)
class CallerWebhook:
    url: str
    auth_header_name: str | None
    auth_header_value: str | None


@dataclass(frozen=True)
class SubmitPlan:
    """A request that passed the policy: what goes upstream, and what stays with us."""

    params: dict[str, Any]  # sent upstream (our webhook fields are added at submit)
    caller_webhook: CallerWebhook | None
    speech_models: list[str]

    @property
    def audio_url(self) -> str:
        return str(self.params["audio_url"])


# Longest URL (audio_url, webhook_url) and caller webhook header accepted; the header name
# is a String(200) column.
MAX_URL_LENGTH = 4096
MAX_HEADER_NAME_LENGTH = 200
MAX_HEADER_VALUE_LENGTH = 4096


def _http_url(value: object, name: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise BadRequest(f"`{name}` must be a non-empty URL string.")
    if len(value) > MAX_URL_LENGTH:
        raise BadRequest(f"`{name}` is longer than {MAX_URL_LENGTH} characters.")
    parts = urlsplit(value.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise BadRequest(f"`{name}` must be an http(s) URL.")
    return value.strip()


def _speech_models(value: object, default: Sequence[str]) -> list[str]:
    if value is None:
        return list(default)
    if not isinstance(value, list) or not value or not all(isinstance(m, str) for m in value):
        raise BadRequest(
            "`speech_models` must be a non-empty list of model names, "
            'e.g. ["universal-3-pro", "universal-2"].'
        )
    unknown = [m for m in value if m not in KEYTERMS_LIMITS]
    if unknown:
        raise BadRequest(
            f"Unknown speech model(s): {', '.join(unknown)}. "
            f"Known pre-recorded models: {', '.join(KNOWN_SPEECH_MODELS)}."
        )
    if len(set(value)) != len(value):
        raise BadRequest("`speech_models` lists a model more than once.")
    return list(value)


def _keyterms(value: object, models: list[str]) -> None:
    if value is None:
        return
    if not isinstance(value, list) or not all(isinstance(t, str) and t.strip() for t in value):
        raise BadRequest("`keyterms_prompt` must be a list of non-empty strings.")
    too_long = [t for t in value if len(t.split()) > KEYTERM_MAX_WORDS]
    if too_long:
        raise BadRequest(
            f"Each `keyterms_prompt` term may have at most {KEYTERM_MAX_WORDS} words; "
            f"too long: {too_long[0][:80]!r}."
        )
    # Any model of the fallback list may end up transcribing: the strictest limit applies.
    limit, model = min((KEYTERMS_LIMITS[m], m) for m in models)
    if len(value) > limit:
        raise BadRequest(
            f"`keyterms_prompt` has {len(value)} terms; {model} (in speech_models) allows "
            f"at most {limit}."
        )


def _caller_webhook(body: dict[str, Any]) -> CallerWebhook | None:
    url = body.get("webhook_url")
    name = body.get("webhook_auth_header_name")
    value = body.get("webhook_auth_header_value")
    if url is None:
        if name is not None or value is not None:
            raise BadRequest("`webhook_auth_header_name/value` need a `webhook_url`.")
        return None
    url = _http_url(url, "webhook_url")
    if (name is None) != (value is None):
        raise BadRequest(
            "Send both `webhook_auth_header_name` and `webhook_auth_header_value`, or neither."
        )
    if name is not None and (not isinstance(name, str) or not name.strip()):
        raise BadRequest("`webhook_auth_header_name` must be a non-empty string.")
    if value is not None and not isinstance(value, str):
        raise BadRequest("`webhook_auth_header_value` must be a string.")
    if name is not None and len(name) > MAX_HEADER_NAME_LENGTH:
        raise BadRequest(
            f"`webhook_auth_header_name` is longer than {MAX_HEADER_NAME_LENGTH} characters."
        )
    if value is not None and len(value) > MAX_HEADER_VALUE_LENGTH:
        raise BadRequest(
            f"`webhook_auth_header_value` is longer than {MAX_HEADER_VALUE_LENGTH} characters."
        )
    return CallerWebhook(url=url, auth_header_name=name, auth_header_value=value)


def check_submit(
    body: object, *, default_speech_models: Sequence[str], audio_url_required: bool = True
) -> SubmitPlan:
    """Validate a submit body; 400 with a hint for anything upstream would mishandle.

    With `audio_url_required=False` (upload-and-submit) the body must not name an
    `audio_url`: the uploaded file's URL is filled in later.
    """
    if not isinstance(body, dict):
        raise BadRequest("The request body must be a JSON object.")
    for name, hint in DEPRECATED_PARAMETERS.items():
        # Explicit "off" values (null, false) are harmless and some clients always send them.
        if name in body and body[name] is not None and body[name] is not False:
            raise BadRequest(hint)
    params = {k: v for k, v in body.items() if k not in WEBHOOK_FIELDS and v is not None}
    for name in DEPRECATED_PARAMETERS:
        params.pop(name, None)
    if audio_url_required:
        params["audio_url"] = _http_url(body.get("audio_url"), "audio_url")
    elif body.get("audio_url") is not None:
        raise BadRequest("Send either a file or an `audio_url`, not both.")
    models = _speech_models(body.get("speech_models"), default_speech_models)
    params["speech_models"] = models
    _keyterms(body.get("keyterms_prompt"), models)
    return SubmitPlan(params=params, caller_webhook=_caller_webhook(body), speech_models=models)
