"""LLM Gateway: POST /v1/chat/completions, OpenAI-shaped, with a deterministic "model";
GET /v1/models lists the region's models.

Model IDs are exact (reference §8); in the EU region (`EMULATOR_REGION=eu`, or a Host of
`llm-gateway.eu.*`) only Anthropic and Google models are served.

The answer's content is a documented function of the messages, so tests can assert it.
`system` is all system messages joined, `text` the last user message (string content,
or its text parts joined); sentences are split after `.`, `!` or `?`:

1. `system` (or, without one, `text`) matches `(\\d+)[ -]*bullet`: exactly N lines
   `- <part>`: the sentences of `text` grouped into N consecutive near-equal groups (when
   there are fewer sentences than N, its words are), each part cut to its first 12
   words; an empty `text` gives N lines `- (nothing said)`.
2. else `system` mentions "chapter" and `text` has `Chapter <n>:` sections: one line per
   section `<n>. <its first 5 words> | <its first sentence, at most 20 words>`.
3. else `system` mentions "action item": `- <sentence>` for each sentence containing
   will / should / must / need to, or the single word `None`.
4. else `Summary: <the first 30 words of text>`.

Tokens are counted as words and punctuation marks (`\\w+|[^\\w\\s]`); prompt tokens are
the messages' tokens plus 4 per message. When the answer has more tokens than
`max_tokens`, it is cut to `max_tokens` words and `finish_reason` is "length".
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from emulator.auth import check_raw_key
from emulator.faults import CutResponse, apply_fault, fault_response
from emulator.state import LlmCall, get_state

MODELS: dict[str, str] = {
    "claude-opus-4-7": "anthropic",
    "claude-sonnet-4-6": "anthropic",
    "claude-haiku-4-5-20251001": "anthropic",
    "gpt-5.2": "openai",
    "gpt-5.1": "openai",
    "gpt-4.1": "openai",
    "gemini-3.5-flash": "google",
    "gemini-2.5-pro": "google",
    "gemini-2.5-flash": "google",
    "kimi-k2.5": "moonshot",
    "qwen3-next-80b-a3b": "qwen",
}
EU_PROVIDERS = ("anthropic", "google")
ROLES = ("system", "user", "assistant", "tool", "developer")

_TOKEN = re.compile(r"\w+|[^\w\s]")
_SENTENCE = re.compile(r"(?<=[.!?])\s+")
_BULLETS = re.compile(r"(\d+)[ -]*bullet", re.IGNORECASE)
_CHAPTER = re.compile(r"^Chapter (\d+):\s*$", re.MULTILINE)
_ACTION = re.compile(r"\b(will|should|must|need to)\b", re.IGNORECASE)


def count_tokens(text: str) -> int:
    return len(_TOKEN.findall(text))


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            str(p.get("text", ""))
            for p in content
            if isinstance(p, dict) and p.get("type") == "text"
        )
    return ""


def _sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE.split(text.strip()) if s.strip()]


def _groups(items: list[str], n: int) -> list[list[str]]:
    """`items` cut into n consecutive groups whose sizes differ by at most one."""
    size, extra = divmod(len(items), n)
    groups, start = [], 0
    for i in range(n):
        end = start + size + (1 if i < extra else 0)
        groups.append(items[start:end])
        start = end
    return groups


def _first_words(text: str, n: int) -> str:
    return " ".join(text.split()[:n])


def answer_for(messages: list[dict[str, Any]]) -> str:
    """The deterministic answer (see the module docstring)."""
    system = "\n".join(_text_of(m.get("content")) for m in messages if m.get("role") == "system")
    users = [_text_of(m.get("content")) for m in messages if m.get("role") == "user"]
    text = users[-1] if users else ""
    bullets = _BULLETS.search(system or text)
    if bullets:
        n = max(1, min(100, int(bullets.group(1))))
        if not text.strip():
            return "\n".join(["- (nothing said)"] * n)
        sentences = _sentences(text)
        units = sentences if len(sentences) >= n else text.split()
        parts = [_first_words(" ".join(g), 12) for g in _groups(units, n)]
        return "\n".join(f"- {p}" if p else "- (nothing said)" for p in parts)
    if "chapter" in system.lower() and _CHAPTER.search(text):
        lines = []
        pieces = _CHAPTER.split(text)  # ["", n1, body1, n2, body2, ...]
        for number, body in zip(pieces[1::2], pieces[2::2], strict=False):
            first = _sentences(body)[0] if _sentences(body) else ""
            lines.append(f"{number}. {_first_words(body, 5)} | {_first_words(first, 20)}")
        return "\n".join(lines)
    if "action item" in system.lower():
        items = [s for s in _sentences(text) if _ACTION.search(s)]
        return "\n".join(f"- {s}" for s in items) if items else "None"
    return f"Summary: {_first_words(text, 30)}"


def _gateway_error(message: str, status: int = 400) -> JSONResponse:
    # The gateway's business-error envelope (what the official SDK parses).
    return JSONResponse(
        {
            "message": message,
            "code": status,
            "request_id": str(uuid.uuid4()),
            "metadata": {"errors": [message]},
        },
        status_code=status,
    )


def validate(body: Any, eu: bool) -> str | None:
    if not isinstance(body, dict):
        return "Request body must be a JSON object"
    model = body.get("model")
    if not isinstance(model, str) or not model:
        return "model is required"
    if model not in MODELS:
        return (
            f"Invalid model: {model!r}. Model IDs are exact strings; see "
            "https://www.assemblyai.com/docs/llm-gateway/overview for the supported models."
        )
    if eu and MODELS[model] not in EU_PROVIDERS:
        return f"Model {model!r} is not available in the EU region (Anthropic and Google only)."
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return "messages must be a non-empty list"
    for message in messages:
        if not isinstance(message, dict) or message.get("role") not in ROLES:
            return f"each message needs a role, one of: {', '.join(ROLES)}"
        if "content" not in message:
            return "each message needs content"
    max_tokens = body.get("max_tokens")
    if max_tokens is not None and (
        not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1
    ):
        return "max_tokens must be a positive integer"
    if "stream" in body and not isinstance(body["stream"], bool):
        return "stream must be a boolean"
    return None


async def chat_completions(request: Request) -> Response:
    """An OpenAI-shaped chat completion (or SSE chunks with `stream: true`)."""
    state = get_state(request)
    if not check_raw_key(request, state.settings):
        return JSONResponse(
            {"error": "Unauthorized", "status": 401, "request_id": str(uuid.uuid4())},
            status_code=401,
        )
    fault = state.faults.take("POST /v1/chat/completions")
    if fault is not None and fault.delay_s > 0:
        await asyncio.sleep(fault.delay_s)
    try:
        body = json.loads(await request.body())
    except (ValueError, UnicodeDecodeError):
        body = None
    # `drop` on a streamed call breaks the stream off after its first chunks (below).
    cut_stream = (
        fault is not None and fault.drop and isinstance(body, dict) and body.get("stream") is True
    )
    if fault is not None and not cut_stream:
        injected = fault_response(fault)
        if injected is not None:
            return injected
    eu = state.settings.region == "eu" or request.headers.get("host", "").startswith(
        "llm-gateway.eu."
    )
    call_id = f"chatcmpl-{uuid.uuid4().hex}"
    problem = validate(body, eu)
    record = LlmCall(
        id=call_id,
        model=str(body.get("model")) if isinstance(body, dict) else "",
        stream=bool(body.get("stream")) if isinstance(body, dict) else False,
        request=body if isinstance(body, dict) else {},
        status=400 if problem else 200,
        response_text=None,
        at=time.time(),
    )
    state.records.llm_calls.append(record)
    if problem is not None:
        return _gateway_error(problem)
    assert isinstance(body, dict)
    started = time.monotonic_ns()
    messages: list[dict[str, Any]] = body["messages"]
    content = answer_for(messages)
    finish_reason = "stop"
    max_tokens = body.get("max_tokens")
    if max_tokens is not None and count_tokens(content) > max_tokens:
        content = " ".join(content.split(" ")[:max_tokens])
        finish_reason = "length"
    record.response_text = content
    prompt_tokens = sum(count_tokens(_text_of(m.get("content"))) + 4 for m in messages)
    completion_tokens = count_tokens(content)
    usage = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "input_tokens": prompt_tokens,
        "output_tokens": completion_tokens,
    }
    model: str = body["model"]
    created = int(time.time())
    if cut_stream:
        events = [
            e.encode()
            async for e in _stream(call_id, model, created, content, finish_reason, usage)
        ]
        # The role chunk and one content chunk, then the connection drops: no usage, no [DONE].
        return CutResponse(events[:2], media_type="text/event-stream")
    if body.get("stream"):
        return StreamingResponse(
            _stream(call_id, model, created, content, finish_reason, usage),
            media_type="text/event-stream",
            headers={"cache-control": "no-cache"},
        )
    return JSONResponse(
        {
            "id": call_id,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "request_id": str(uuid.uuid4()),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content},
                    "finish_reason": finish_reason,
                }
            ],
            "usage": usage,
            "request": body,
            "http_status_code": 200,
            "response_time": time.monotonic_ns() - started,
            "llm_status_code": 200,
        }
    )


async def _stream(
    call_id: str,
    model: str,
    created: int,
    content: str,
    finish_reason: str,
    usage: dict[str, int],
) -> AsyncIterator[str]:
    def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> str:
        payload = {
            "id": call_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            **extra,
        }
        return f"data: {json.dumps(payload)}\n\n"

    yield chunk({"role": "assistant", "content": ""})
    # One chunk per word (keeping the separators), as token streams look.
    for piece in re.findall(r"\S+\s*", content):
        yield chunk({"content": piece})
    yield chunk({}, finish_reason, usage=usage)
    yield "data: [DONE]\n\n"


_CREATORS = {
    "anthropic": "Anthropic",
    "openai": "OpenAI",
    "google": "Google",
    "moonshot": "Moonshot AI",
    "qwen": "Qwen",
}


def model_entry(model_id: str) -> dict[str, Any]:
    """One model as `GET /v1/models` lists it (the fields the SDKs' types declare)."""
    provider = MODELS[model_id]
    creator = _CREATORS[provider]
    context = 200_000 if provider == "anthropic" else 128_000
    price = {"prompt": 1.0, "completions": 4.0}
    return {
        "id": model_id,
        "name": f"{creator}: {model_id}",
        "description": f"{model_id} by {creator}, served through the LLM Gateway.",
        "default_parameters": {"temperature": None, "top_p": None, "frequency_penalty": None},
        "supported_parameters": ["max_tokens", "temperature", "top_p", "stream", "tools"],
        "top_provider": {
            "is_moderated": False,
            "context_length": context,
            "max_completion_tokens": 32_000,
        },
        "context_length": context,
        "pricing": {
            "global": price,
            "us": price,
            "eu": price if provider in EU_PROVIDERS else None,
        },
        "creator": creator,
        "retirement_date": 0,
        "available_regions": ["us", "eu"] if provider in EU_PROVIDERS else ["us"],
        "providers": [{"id": provider, "name": creator}],
        "default_provider": {"id": provider, "name": creator},
    }


async def list_models(request: Request) -> Response:
    """The region's models (`GET /v1/models` needs no key upstream; a sent one is ignored)."""
    state = get_state(request)
    injected = await apply_fault(state, "GET /v1/models")
    if injected is not None:
        return injected
    eu = state.settings.region == "eu" or request.headers.get("host", "").startswith(
        "llm-gateway.eu."
    )
    return JSONResponse(
        {
            "data": [
                model_entry(m)
                for m, provider in MODELS.items()
                if not eu or provider in EU_PROVIDERS
            ]
        }
    )


routes: list[BaseRoute] = [
    Route("/v1/chat/completions", chat_completions, methods=["POST"]),
    Route("/v1/models", list_models, methods=["GET"]),
]
