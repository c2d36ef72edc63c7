"""The pre-recorded REST API: /v2/upload and /v2/transcript with its sub-resources.

Answers like upstream: raw-key auth (a `Bearer ` prefix is a 401), `{"error": "..."}`
bodies, transcripts visible only to the key that created them.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import secrets
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope, Send

from emulator import transcripts as tx
from emulator.auth import check_raw_key, owner_of
from emulator.faults import DropResponse, apply_fault, fault_response
from emulator.state import EmulatorState, UploadRecord, get_state

AUTH_ERROR = "Authentication error, API token missing/invalid"
NOT_FOUND = "Transcript not found"
HEAD_BYTES = 64 * 1024
# Hashing and writing run in a worker thread in batches of this size, overlapping with
# receiving the next batch: the event loop only collects chunks.
BATCH_BYTES = 4 * 1024 * 1024
DEFAULT_CHARS_PER_CAPTION = 32
MAX_LIST_LIMIT = 200


def error(message: str, status: int, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


# ---------------------------------------------------------------- upload


def _consume(hasher: Any, sink: IO[bytes] | None, chunks: list[bytes]) -> None:
    for chunk in chunks:
        hasher.update(chunk)  # releases the GIL for large buffers
        if sink is not None:
            sink.write(chunk)


class UploadEndpoint:
    """POST /v2/upload as a raw ASGI app: the body is streamed, never buffered whole."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        state = get_state(request)
        response = await self._check(request, state)
        if response is not None:
            await response(scope, receive, send)
            return
        fault = state.faults.take("POST /v2/upload")
        if fault is not None:
            if fault.delay_s > 0:
                await asyncio.sleep(fault.delay_s)
            if fault.drop:
                await receive()  # take part of the body, then cut the connection
                await DropResponse()(scope, receive, send)
                return
            if fault.status is not None:
                injected = fault_response(fault)
                assert injected is not None
                await injected(scope, receive, send)
                return
        result = await self._receive_body(request, state, receive)
        if isinstance(result, Response):
            await result(scope, receive, send)
            return
        if result is None:
            return  # the client went away
        base = str(request.base_url).rstrip("/")
        tag = tx.owner_tag(result.owner)
        await JSONResponse({"upload_url": f"{base}/upload/{tag}/{result.key}"})(
            scope, receive, send
        )

    async def _check(self, request: Request, state: EmulatorState) -> Response | None:
        if not check_raw_key(request, state.settings):
            return error(AUTH_ERROR, 401)
        content_type = request.headers.get("content-type", "")
        if content_type.lower().startswith("multipart/"):
            return error(
                "Multipart uploads are not supported: send the file as the raw binary request "
                "body (Content-Type: application/octet-stream).",
                400,
            )
        length = request.headers.get("content-length")
        if (
            length is not None
            and length.isdigit()
            and int(length) > state.settings.max_upload_bytes
        ):
            return error(self._too_large(state), 413)
        return None

    @staticmethod
    def _too_large(state: EmulatorState) -> str:
        return f"File too large: uploads are limited to {state.settings.max_upload_bytes} bytes."

    async def _receive_body(
        self, request: Request, state: EmulatorState, receive: Receive
    ) -> UploadRecord | Response | None:
        settings = state.settings
        key = str(uuid.uuid4())
        path: Path | None = None
        sink: IO[bytes] | None = None
        if not settings.upload_sink:
            path = settings.data_dir / "uploads" / key
            sink = await asyncio.to_thread(path.open, "wb")
        hasher = hashlib.sha256()
        head = bytearray()
        size = 0
        batch: list[bytes] = []
        batch_bytes = 0
        pending: asyncio.Future[None] | None = None
        limit = settings.max_upload_bytes
        try:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    await self._discard(pending, sink, path)
                    return None
                chunk: bytes = message.get("body", b"")
                if chunk:
                    size += len(chunk)
                    if size > limit:
                        await self._discard(pending, sink, path)
                        return error(self._too_large(state), 413)
                    if len(head) < HEAD_BYTES:
                        head += chunk[: HEAD_BYTES - len(head)]
                    batch.append(chunk)
                    batch_bytes += len(chunk)
                    if batch_bytes >= BATCH_BYTES:
                        if pending is not None:
                            await pending  # back-pressure: one batch in flight
                        pending = asyncio.ensure_future(
                            asyncio.to_thread(_consume, hasher, sink, batch)
                        )
                        batch, batch_bytes = [], 0
                if not message.get("more_body", False):
                    break
            if pending is not None:
                await pending
            if batch_bytes <= 64 * 1024:
                _consume(hasher, sink, batch)  # small: not worth a thread hop
            else:
                await asyncio.to_thread(_consume, hasher, sink, batch)
        finally:
            if sink is not None and not sink.closed:
                await asyncio.to_thread(sink.close)
        if size == 0:
            if path is not None:
                path.unlink(missing_ok=True)
            return error("Upload body is empty: send the audio file as the request body.", 400)
        record = UploadRecord(
            key=key,
            owner=owner_of(request),
            size=size,
            sha256=hasher.hexdigest(),
            path=str(path) if path is not None else None,
            created_at=time.time(),
            head=bytes(head),
        )
        state.records.uploads[key] = record
        return record

    @staticmethod
    async def _discard(
        pending: asyncio.Future[None] | None, sink: IO[bytes] | None, path: Path | None
    ) -> None:
        if pending is not None:
            await pending
        if sink is not None:
            await asyncio.to_thread(sink.close)
        if path is not None:
            path.unlink(missing_ok=True)


# ---------------------------------------------------------------- transcripts


async def _guard(request: Request, route: str) -> tuple[EmulatorState, Response | None]:
    state = get_state(request)
    if not check_raw_key(request, state.settings):
        return state, error(AUTH_ERROR, 401)
    return state, await apply_fault(state, route)


def _owned(request: Request, state: EmulatorState) -> dict[str, Any] | None:
    transcript = state.records.transcripts.get(request.path_params["transcript_id"])
    if transcript is None or transcript["_owner"] != owner_of(request):
        return None  # another key's transcript does not exist for this caller
    return transcript


async def create_transcript(request: Request) -> Response:
    """Submit a transcription job."""
    state = get_state(request)
    if not check_raw_key(request, state.settings):
        return error(AUTH_ERROR, 401)
    fault = state.faults.take("POST /v2/transcript")
    withhold = fault is not None and fault.withhold
    if fault is not None and not withhold:
        if fault.delay_s > 0:
            await asyncio.sleep(fault.delay_s)
        refused = fault_response(fault)
        if refused is not None:
            return refused
    try:
        body = json.loads(await request.body())
    except (ValueError, UnicodeDecodeError):
        return error("Request body must be valid JSON", 400)
    if not isinstance(body, dict):
        return error("Request body must be a JSON object", 400)
    problem = tx.validate_request(body)
    if problem is not None:
        return error(problem, 400)
    seq = len(state.records.transcripts) + 1
    transcript = tx.new_transcript(body, owner_of(request), seq)
    state.records.transcripts[transcript["id"]] = transcript
    answer = tx.public(transcript)  # the submit answer is the queued snapshot
    if state.knobs.webhook_before_response and state.settings.test_mode:
        await tx.run_job(state, transcript, inline=True)
    else:
        state.spawn(tx.run_job(state, transcript, inline=False))
    if withhold:
        assert fault is not None
        # Carried out, answer lost: the transcript exists; its creator never hears so.
        await asyncio.sleep(fault.delay_s)
        return DropResponse()
    return JSONResponse(answer)


async def get_transcript(request: Request) -> Response:
    """One transcript."""
    state, refused = await _guard(request, "GET /v2/transcript/{id}")
    if refused is not None:
        return refused
    transcript = _owned(request, state)
    if transcript is None:
        return error(NOT_FOUND, 404)
    return JSONResponse(tx.public(transcript))


async def delete_transcript(request: Request) -> Response:
    """Delete a finished transcript's data, as upstream does."""
    state, refused = await _guard(request, "DELETE /v2/transcript/{id}")
    if refused is not None:
        return refused
    transcript = _owned(request, state)
    if transcript is None:
        return error(NOT_FOUND, 404)
    if transcript["status"] in ("queued", "processing"):
        return error("Transcript cannot be deleted while it is queued or processing", 400)
    deleted = "http://deleted_by_user"
    transcript.update(
        {
            "text": "Deleted by user.",
            "words": None,
            "utterances": None,
            "chapters": None,
            "summary": None,
            "audio_url": deleted,
            "_sentences": [],
        }
    )
    if transcript.get("webhook_url"):
        transcript["webhook_url"] = deleted
    return JSONResponse(tx.public(transcript))


async def list_transcripts(request: Request) -> Response:
    """Transcripts of this key, newest first, paged by before_id / after_id."""
    state, refused = await _guard(request, "GET /v2/transcript")
    if refused is not None:
        return refused
    params = request.query_params
    try:
        limit = int(params.get("limit", "10"))
    except ValueError:
        return error('"limit" must be an integer', 400)
    if not 1 <= limit <= MAX_LIST_LIMIT:
        return error(f'"limit" must be between 1 and {MAX_LIST_LIMIT}', 400)
    owner = owner_of(request)
    mine = [t for t in state.records.transcripts.values() if t["_owner"] == owner]
    bounds: dict[str, int] = {}
    for name in ("before_id", "after_id"):
        value = params.get(name)
        if value:
            anchor = state.records.transcripts.get(value)
            if anchor is None or anchor["_owner"] != owner:
                return error(f'"{name}" does not refer to a transcript', 400)
            bounds[name] = anchor["_seq"]
    if "before_id" in bounds and "after_id" in bounds and bounds["after_id"] >= bounds["before_id"]:
        return error("'after_id' must be a newer transcript than 'before_id'", 400)
    status = params.get("status")
    if status is not None and status not in ("queued", "processing", "completed", "error"):
        return error('"status" must be one of: queued, processing, completed, error', 400)
    created_on = params.get("created_on")
    throttled_only = params.get("throttled_only", "false").lower() == "true"
    selected = [
        t
        for t in mine
        if ("before_id" not in bounds or t["_seq"] < bounds["before_id"])
        and ("after_id" not in bounds or t["_seq"] > bounds["after_id"])
        and (status is None or t["status"] == status)
        and (created_on is None or t["_created"].date().isoformat() == created_on)
        and (not throttled_only or t["throttled"])
    ]
    selected.sort(key=lambda t: t["_seq"])
    # after_id pages forward (the oldest ones after the anchor); otherwise the newest.
    page = (
        selected[:limit]
        if "after_id" in bounds and "before_id" not in bounds
        else selected[-limit:]
    )
    page.reverse()
    base = str(request.base_url).rstrip("/")
    items = [
        {
            "id": t["id"],
            "resource_url": f"{base}/v2/transcript/{t['id']}",
            "status": t["status"],
            "created": tx.timestamp(t["_created"]),
            "completed": tx.timestamp(t["_completed"]),
            "audio_url": t["audio_url"],
            "error": t["error"],
        }
        for t in page
    ]
    endpoint = f"{base}/v2/transcript"
    current = (
        f"{endpoint}?{request.url.query}" if request.url.query else f"{endpoint}?limit={limit}"
    )
    oldest_seq = min((t["_seq"] for t in mine), default=0)
    newest_seq = max((t["_seq"] for t in mine), default=0)
    prev_url = (
        f"{endpoint}?limit={limit}&before_id={page[-1]['id']}"
        if page and page[-1]["_seq"] > oldest_seq
        else None
    )
    next_url = (
        f"{endpoint}?limit={limit}&after_id={page[0]['id']}"
        if page and page[0]["_seq"] < newest_seq
        else None
    )
    return JSONResponse(
        {
            "page_details": {
                "limit": limit,
                "result_count": len(items),
                "current_url": current,
                "prev_url": prev_url,
                "next_url": next_url,
            },
            "transcripts": items,
        }
    )


async def _completed(request: Request) -> tuple[dict[str, Any] | None, Response | None]:
    state, refused = await _guard(request, "GET /v2/transcript/{id}")
    if refused is not None:
        return None, refused
    transcript = _owned(request, state)
    if transcript is None:
        return None, error(NOT_FOUND, 404)
    if transcript["status"] != "completed":
        return None, error(
            f"This transcript has a status of '{transcript['status']}'. Transcripts must have "
            "a status of 'completed' before this resource can be requested.",
            400,
        )
    return transcript, None


def _chars_per_caption(request: Request) -> int | Response:
    raw = request.query_params.get("chars_per_caption")
    if raw is None:
        return DEFAULT_CHARS_PER_CAPTION
    try:
        value = int(raw)
    except ValueError:
        return error('"chars_per_caption" must be an integer', 400)
    if value < 1:
        return error('"chars_per_caption" must be a positive integer', 400)
    return value


async def _split(
    request: Request, name: str, split: Callable[[dict[str, Any]], list[dict[str, Any]]]
) -> Response:
    """The transcript's header fields and its text split by `split`, under `name`."""
    transcript, refused = await _completed(request)
    if transcript is None:
        assert refused is not None
        return refused
    return JSONResponse(
        {
            "id": transcript["id"],
            "confidence": transcript["confidence"],
            "audio_duration": transcript["audio_duration"],
            "speech_model_used": transcript["speech_model_used"],
            name: split(transcript),
        }
    )


async def get_sentences(request: Request) -> Response:
    """The transcript split into sentences."""
    return await _split(request, "sentences", tx.sentences_of)


async def get_paragraphs(request: Request) -> Response:
    """The transcript split into paragraphs."""
    return await _split(request, "paragraphs", tx.paragraphs_of)


async def _captions(
    request: Request, render: Callable[[dict[str, Any], int], str], media_type: str | None
) -> Response:
    """Captions rendered by `render` (`chars_per_caption` checked first)."""
    transcript, refused = await _completed(request)
    if transcript is None:
        assert refused is not None
        return refused
    chars = _chars_per_caption(request)
    if isinstance(chars, Response):
        return chars
    return PlainTextResponse(render(transcript, chars), media_type=media_type)


async def get_srt(request: Request) -> Response:
    """SubRip captions."""
    return await _captions(request, tx.srt, None)


async def get_vtt(request: Request) -> Response:
    """WebVTT captions."""
    return await _captions(request, tx.vtt, "text/vtt")


async def get_word_search(request: Request) -> Response:
    """Where words or phrases occur."""
    transcript, refused = await _completed(request)
    if transcript is None:
        assert refused is not None
        return refused
    raw = request.query_params.get("words", "")
    queries = [q.strip() for q in raw.split(",") if q.strip()]
    if not queries:
        return error('"words" is required: a comma-separated list of words or phrases', 400)
    return JSONResponse(tx.word_search(transcript, queries))


NO_REDACTED_AUDIO = (
    "Redacted audio is not available for this transcript: it was not submitted with "
    '"redact_pii_audio": true'
)


async def get_redacted_audio(request: Request) -> Response:
    """Where the PII-redacted audio is: a URL (no key needed, like upstream's signed one).

    The emulator does not redact audio: the URL serves the original audio bytes."""
    state, refused = await _guard(request, "GET /v2/transcript/{id}")
    if refused is not None:
        return refused
    transcript = _owned(request, state)
    if transcript is None:
        return error(NOT_FOUND, 404)
    if not transcript.get("redact_pii_audio"):
        return error(NO_REDACTED_AUDIO, 400)
    if transcript["status"] != "completed":
        return error(
            f"This transcript has a status of '{transcript['status']}'. Transcripts must have "
            "a status of 'completed' before this resource can be requested.",
            400,
        )
    token = transcript.setdefault("_redacted_audio_token", secrets.token_urlsafe(24))
    url = str(request.url_for("redacted_audio_file", token=token))
    return JSONResponse({"status": "redacted_audio_ready", "redacted_audio_url": url})


async def redacted_audio_file(request: Request) -> Response:
    """The audio behind a redacted-audio URL (the original bytes: nothing is redacted)."""
    state = get_state(request)
    token = request.path_params["token"]
    transcript = next(
        (
            t
            for t in state.records.transcripts.values()
            if secrets.compare_digest(str(t.get("_redacted_audio_token", "")), token)
        ),
        None,
    )
    if transcript is None:
        return error("Redacted audio not found", 404)
    url: str = transcript["audio_url"]
    located = tx.upload_key(url)
    record = state.records.uploads.get(located[1]) if located else None
    if located:
        if record is None or record.path is None:
            return error("Redacted audio not found", 404)
        return FileResponse(record.path, media_type="application/octet-stream")
    try:
        data = await tx.fetch(state, url)
    except tx.JobError:
        return error("Redacted audio not found", 404)
    return Response(data, media_type="application/octet-stream")


_TRANSCRIPT = "/v2/transcript/{transcript_id}"
routes: list[BaseRoute] = [
    Route("/v2/upload", UploadEndpoint(), methods=["POST"]),
    Route("/v2/transcript", create_transcript, methods=["POST"]),
    Route("/v2/transcript", list_transcripts, methods=["GET"]),
    Route(_TRANSCRIPT, get_transcript, methods=["GET"]),
    Route(_TRANSCRIPT, delete_transcript, methods=["DELETE"]),
    Route(f"{_TRANSCRIPT}/sentences", get_sentences, methods=["GET"]),
    Route(f"{_TRANSCRIPT}/paragraphs", get_paragraphs, methods=["GET"]),
    Route(f"{_TRANSCRIPT}/srt", get_srt, methods=["GET"]),
    Route(f"{_TRANSCRIPT}/vtt", get_vtt, methods=["GET"]),
    Route(f"{_TRANSCRIPT}/word-search", get_word_search, methods=["GET"]),
    Route(f"{_TRANSCRIPT}/redacted-audio", get_redacted_audio, methods=["GET"]),
    Route(
        "/redacted-audio/{token}",
        redacted_audio_file,
        methods=["GET"],
        name="redacted_audio_file",
    ),
]
