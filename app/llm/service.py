"""Governed chat completions: policy, budget hold, upstream call, usage settled.

Budget holds and usage are written in their own short transactions (not the request's):
a hold must be visible to concurrent callers before the upstream call starts, and a
streamed call settles after the request's transaction has long committed.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import Any

import anyio
import httpx
from fastapi.responses import JSONResponse, StreamingResponse
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.config import LlmSettings
from app.core.errors import BadRequest, NotFound
from app.llm import policy
from app.llm.policy import Reservation, Usage
from app.transcripts.models import Job
from app.upstream.client import Upstream

logger = logging.getLogger(__name__)

# Hop-by-hop or re-computed headers that must not be copied from upstream's answer.
_SKIPPED_HEADERS = {"content-length", "content-encoding", "transfer-encoding", "connection"}


async def check_transcript_access(
    session: AsyncSession, key_id: uuid.UUID, payload: dict[str, Any]
) -> None:
    """LLM Gateway injects `transcript_id`'s text: only a transcript of the caller's key."""
    transcript_id = payload.get("transcript_id")
    if transcript_id is None:
        return
    if not isinstance(transcript_id, str) or not transcript_id:
        raise BadRequest("'transcript_id' must be a transcript id string.")
    owned = (
        await session.execute(
            select(Job.id).where(
                Job.upstream_id == transcript_id,
                Job.key_id == key_id,
                Job.deleted_at.is_(None),
            )
        )
    ).scalar_one_or_none()
    if owned is None:
        raise NotFound("Transcript not found.")


def prepare(payload: object, settings: LlmSettings) -> tuple[dict[str, Any], str, int]:
    """Apply policy to a request body; returns (payload, model, tokens to reserve)."""
    if not isinstance(payload, dict):
        raise BadRequest("The body must be a JSON object.")
    body = dict(payload)
    model = policy.check_model(body.get("model"), settings)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("'messages' must be a non-empty list.")
    max_tokens = policy.cap_max_tokens(body, settings)
    return body, model, max_tokens + policy.estimate_prompt_tokens(messages)


async def complete(
    sessionmaker: async_sessionmaker[AsyncSession],
    upstream: Upstream,
    settings: LlmSettings,
    *,
    key_id: uuid.UUID,
    payload: dict[str, Any],
    model: str,
    reserve_tokens: int,
    kind: str = "chat",
    summary_id: uuid.UUID | None = None,
) -> tuple[dict[str, Any], Usage]:
    """One governed, non-streamed completion: hold, call, settle (or release)."""
    reservation = await policy.reserve(sessionmaker, settings, key_id, reserve_tokens)
    try:
        answer = await upstream.llm.chat(payload, timeout=settings.timeout_s)
    except BaseException:
        with anyio.CancelScope(shield=True):
            await policy.release(sessionmaker, reservation)
        raise
    usage = policy.usage_from(answer) or _estimate(payload, answer_text(answer))
    with anyio.CancelScope(shield=True):
        await policy.settle(
            sessionmaker, reservation, usage, model=model, kind=kind, summary_id=summary_id
        )
    logger.info(
        "llm.chat.completed",
        extra={
            "key_id": str(key_id),
            "model": model,
            "prompt_tokens": usage.prompt_tokens,
            "completion_tokens": usage.completion_tokens,
        },
    )
    return answer, usage


def answer_text(answer: object) -> str:
    if not isinstance(answer, dict):
        return ""
    parts = []
    for choice in answer.get("choices") or []:
        if isinstance(choice, dict):
            message = choice.get("message") or choice.get("delta") or {}
            content = message.get("content") if isinstance(message, dict) else None
            if isinstance(content, str):
                parts.append(content)
    return "".join(parts)


def _estimate(payload: dict[str, Any], completion: str) -> Usage:
    return Usage(
        policy.estimate_prompt_tokens(payload.get("messages")),
        policy.estimate_tokens(completion),
        estimated=True,
    )


class SseUsageTap:
    """Cuts a server-sent event stream at event boundaries and notes usage on the way.

    Each complete event is handed on as soon as its blank line arrives, untouched, so
    the caller sees chunks as upstream produces them; the tap only reads them.
    """

    def __init__(self) -> None:
        self._buffer = b""
        self.usage: Usage | None = None
        self.text_parts: list[str] = []
        # id, model and created of the last chunk: an error event we add looks like its own.
        self.chunk_fields: dict[str, Any] = {}

    def feed(self, data: bytes) -> bytes:
        self._buffer += data
        cut = max(self._buffer.rfind(b"\n\n"), self._buffer.rfind(b"\r\n\r\n"))
        if cut < 0:
            return b""
        end = cut + (4 if self._buffer[cut : cut + 4] == b"\r\n\r\n" else 2)
        complete, self._buffer = self._buffer[:end], self._buffer[end:]
        for line in complete.splitlines():
            self._read_line(line)
        return complete

    def flush(self) -> bytes:
        rest, self._buffer = self._buffer, b""
        for line in rest.splitlines():
            self._read_line(line)
        return rest

    def discard(self) -> None:
        """Drop an unfinished event (upstream broke off in its middle): never sent half."""
        self._buffer = b""

    def _read_line(self, line: bytes) -> None:
        if not line.startswith(b"data:"):
            return
        data = line[5:].strip()
        if not data or data == b"[DONE]":
            return
        try:
            event = json.loads(data)
        except ValueError:
            return
        if isinstance(event, dict):
            self.chunk_fields = {
                k: event[k] for k in ("id", "created", "model") if event.get(k) is not None
            }
        usage = policy.usage_from(event)
        if usage is not None:
            self.usage = usage
        text = answer_text(event)
        if text:
            self.text_parts.append(text)


async def stream(
    sessionmaker: async_sessionmaker[AsyncSession],
    upstream: Upstream,
    settings: LlmSettings,
    *,
    key_id: uuid.UUID,
    payload: dict[str, Any],
    model: str,
    reserve_tokens: int,
) -> StreamingResponse:
    """A streamed completion passed through event by event; usage settled at the end."""
    reservation = await policy.reserve(sessionmaker, settings, key_id, reserve_tokens)
    stack = AsyncExitStack()
    try:
        response: httpx.Response = await stack.enter_async_context(
            upstream.llm.chat_stream(payload, timeout=settings.timeout_s)
        )
    except BaseException:
        with anyio.CancelScope(shield=True):
            await stack.aclose()
            await policy.release(sessionmaker, reservation)
        raise
    headers = {
        k: v
        for k, v in response.headers.items()
        if k.lower() not in _SKIPPED_HEADERS and k.lower() != "content-type"
    }
    headers["Cache-Control"] = "no-cache"
    headers["X-Accel-Buffering"] = "no"  # no proxy buffering in front of us either
    return StreamingResponse(
        _relay(sessionmaker, response, stack, reservation, payload, model, key_id),
        status_code=response.status_code,
        media_type=response.headers.get("content-type", "text/event-stream"),
        headers=headers,
    )


async def _relay(
    sessionmaker: async_sessionmaker[AsyncSession],
    response: httpx.Response,
    stack: AsyncExitStack,
    reservation: Reservation,
    payload: dict[str, Any],
    model: str,
    key_id: uuid.UUID,
) -> AsyncIterator[bytes]:
    tap = SseUsageTap()
    finished = False
    upstream_broke = False
    try:
        try:
            async for chunk in response.aiter_bytes():
                out = tap.feed(chunk)
                if out:
                    yield out
        except Exception as exc:  # the gateway broke off (dropped, reset, read timeout)
            upstream_broke = True
            tap.discard()
            logger.warning(
                "llm.stream.upstream_broke",
                extra={"key_id": str(key_id), "model": model, "reason": type(exc).__name__},
            )
            # The status line (200) is long sent: the caller learns it from the stream.
            yield stream_error_event(tap.chunk_fields, model)
        else:
            rest = tap.flush()
            if rest:
                yield rest
            finished = True
    finally:
        # Shielded: this runs during cancellation too.
        with anyio.CancelScope(shield=True):
            await stack.aclose()
            await _settle_stream(
                sessionmaker,
                reservation,
                tap,
                payload,
                model,
                key_id,
                finished=finished,
                upstream_broke=upstream_broke,
            )


STREAM_ERROR_MESSAGE = "LLM Gateway broke off the stream before it ended; the answer is incomplete."


def stream_error_event(chunk_fields: dict[str, Any], model: str) -> bytes:
    """The last event of a stream the gateway broke off: a `chat.completion.chunk` with
    `finish_reason: "error"` and an `error` object (the gateway's error envelope:
    `message`, `code`, `metadata.errors`), which OpenAI-style SDKs raise as an APIError.
    No `[DONE]` follows: the answer did not end."""
    event = {
        "id": chunk_fields.get("id", "chatcmpl-aai-proxy-error"),
        "object": "chat.completion.chunk",
        "created": chunk_fields.get("created", int(time.time())),
        "model": chunk_fields.get("model", model),
        "choices": [{"index": 0, "delta": {}, "finish_reason": "error"}],
        "error": {
            "message": STREAM_ERROR_MESSAGE,
            "code": 502,
            "type": "UpstreamError",
            "metadata": {"errors": [STREAM_ERROR_MESSAGE]},
        },
    }
    return b"data: " + json.dumps(event, separators=(",", ":")).encode() + b"\n\n"


async def _settle_stream(
    sessionmaker: async_sessionmaker[AsyncSession],
    reservation: Reservation,
    tap: SseUsageTap,
    payload: dict[str, Any],
    model: str,
    key_id: uuid.UUID,
    *,
    finished: bool,
    upstream_broke: bool,
) -> None:
    """Bill a stream: what the gateway reported when it did. A caller who left (or a
    gateway that omits usage) is billed an estimate of what was relayed, since the gateway
    produced it; a stream the gateway broke off without reporting usage is not billed (its
    hold is released): an estimate would bill a failure the caller never received whole."""
    usage = tap.usage
    if usage is None and not upstream_broke:
        usage = _estimate(payload, "".join(tap.text_parts))
    try:
        if usage is None:
            await policy.release(sessionmaker, reservation)
        else:
            await policy.settle(
                sessionmaker, reservation, usage, model=model, kind="chat", streamed=True
            )
    except Exception:
        logger.exception("llm.stream.settle_failed", extra={"key_id": str(key_id)})
    logger.info(
        "llm.chat.streamed",
        extra={
            "key_id": str(key_id),
            "model": model,
            "finished": finished,
            "upstream_broke": upstream_broke,
            "billed": usage is not None,
            "prompt_tokens": usage.prompt_tokens if usage else 0,
            "completion_tokens": usage.completion_tokens if usage else 0,
            "estimated": usage.estimated if usage else False,
        },
    )


def json_answer(answer: dict[str, Any]) -> JSONResponse:
    return JSONResponse(answer)
