"""Request bodies as async byte streams for the upstream upload, read straight off ASGI.

The route reads `receive()` itself (no `request.stream()`, no form parsing by the
framework), so nothing is spooled: a body passes through in chunks of at least
`chunk_size` bytes (small client reads are coalesced so that upstream gets few, large
writes; a read already that large passes as it is, uncopied), and memory stays at a few
chunks per upload whatever the file's size. Limits are enforced while the
bytes pass; a breach or a disconnect raises from inside the iterator, which makes the
HTTP client abort the upstream request, and is kept in `failure` so the route can answer
with the real reason instead of the transport error it causes.

`start()` reads up to the first audio byte before anything goes upstream, so an empty
body, a malformed form or a refused submit configuration never opens an upstream request.

The form parser (streaming-form-data, which pulls in smart_open and aiofiles: ~2 MB
resident) is imported with the first multipart body, not by every service process.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any

from starlette.types import Receive

from app.core.body_tap import BodySink, ClientGone
from app.core.boundary import InvalidInput, check_text, parse_json
from app.core.errors import AppError, BadRequest
from app.core.http_server import BodyTap
from app.uploads.limits import too_large

if TYPE_CHECKING:
    from app.uploads.form import FieldTarget, FileTarget

# A form's own bytes (boundaries, part headers, small fields) on top of the file's.
FORM_OVERHEAD_BYTES = 1024 * 1024
# Chunks read from the client ahead of the upstream write (memory: this many chunks). With
# 128 KiB chunks, 2 measured the least CPU and page faults per GiB (3, 4, 8 alike or worse).
READ_AHEAD_CHUNKS = 2


class ClientDisconnected(AppError):
    """The caller went away mid-body; nobody will read the answer."""

    status_code = 499
    message = "The client disconnected before the body was complete."


class BodyStream:
    """Shared plumbing: pull ASGI messages, count, enforce the body limit, coalesce."""

    def __init__(self, receive: Receive, *, limit: int, body_limit: int, chunk_size: int) -> None:
        self._receive = receive
        self.limit = limit  # audio bytes
        self._body_limit = body_limit  # bytes on the wire
        self._chunk_size = chunk_size
        self._more = True
        self.received = 0  # body bytes read from the client
        self.sent = 0  # audio bytes handed to the upstream request
        self.failure: AppError | None = None
        self.complete = False  # the whole body was read and passed on
        self._reader: asyncio.Task[None] | None = None

    async def aclose(self) -> None:
        """Stop reading the client (when upstream ended the request before the body did)."""
        reader = self._reader
        if reader is not None and not reader.done():
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader

    def _fail(self, error: AppError) -> AppError:
        self.failure = error
        return error

    async def _read(self) -> bytes | None:
        """The next body bytes, or None at the end of the body."""
        if not self._more:
            return None
        message = await self._receive()
        if message["type"] == "http.disconnect":
            raise self._fail(ClientDisconnected())
        body: bytes = message.get("body", b"")
        self._more = bool(message.get("more_body", False))
        self.received += len(body)
        if self.received > self._body_limit:
            raise self._fail(too_large(self.limit))
        return body

    async def start(self) -> None:
        raise NotImplementedError

    def _take_pending(self) -> list[bytes]:
        raise NotImplementedError

    async def _next_audio(self) -> bytes | None:
        """The next audio bytes (possibly empty), or None when the audio has ended."""
        raise NotImplementedError

    def _finish(self) -> None:
        """Checks once the body has ended (a multipart form must be well closed)."""

    async def _chunks(self) -> AsyncIterator[bytes]:
        """The audio, coalesced to about `chunk_size` bytes per chunk."""
        parts = self._take_pending()
        size = sum(len(p) for p in parts)
        chunk_size = self._chunk_size
        while True:
            data = await self._next_audio()
            if data is None:
                break
            if data:
                parts.append(data)
                size += len(data)
            if size >= chunk_size:
                # b"".join of a single part returns that very object: no copy.
                yield parts[0] if len(parts) == 1 else b"".join(parts)
                parts = []
                size = 0
        self._finish()
        if parts:
            yield b"".join(parts)

    async def _pump(self, queue: asyncio.Queue[bytes | BaseException | None]) -> None:
        try:
            async for chunk in self._chunks():
                await queue.put(chunk)
        except Exception as exc:  # handed to the consumer, which raises it upstream
            await queue.put(exc)
        else:
            await queue.put(None)

    async def __aiter__(self) -> AsyncIterator[bytes]:
        # Reading the client and writing upstream overlap: a reader task keeps pulling the
        # body (at most `READ_AHEAD_CHUNKS` chunks ahead, so memory stays bounded) while the
        # upstream write of the previous chunk waits for the socket to drain.
        queue: asyncio.Queue[bytes | BaseException | None] = asyncio.Queue(READ_AHEAD_CHUNKS)
        reader = self._reader = asyncio.create_task(self._pump(queue))
        try:
            while True:
                item = await queue.get()
                if item is None:
                    break
                if isinstance(item, BaseException):
                    raise item
                self.sent += len(item)
                yield item
            self.complete = True
        finally:
            if not reader.done():
                reader.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reader


class RawBody(BodyStream):
    """An `application/octet-stream` (or any non-form) body: the bytes are the audio.

    With the server's body tap (`app/core/http_server.py`) and a `Content-Length`, `pipe`
    sends the rest of the body to an upstream connection with no copy in user space;
    otherwise it is iterated in chunks like any other body.
    """

    def __init__(
        self, receive: Receive, *, limit: int, chunk_size: int, tap: BodyTap | None = None
    ) -> None:
        super().__init__(receive, limit=limit, body_limit=limit, chunk_size=chunk_size)
        self._pending: list[bytes] = []
        self._tap = tap

    @property
    def can_pipe(self) -> bool:
        """True when `pipe` may be used: the tap is there, nothing has been iterated yet."""
        return self._tap is not None and self._tap.usable and self._reader is None

    async def pipe(self, sink: BodySink, *, buffer_size: int, stall_timeout_s: float) -> None:
        """Send the whole body (what `start()` read, then the rest off the socket) to
        `sink`. Keeps `sent`, `complete` and `failure` as iterating would; raises
        ClientDisconnected when the caller went away, or SinkEnded / SinkStalled / what
        `sink.write` raised when upstream failed."""
        tap = self._tap
        assert tap is not None
        for part in self._take_pending():
            sink.write(memoryview(part))  # their own objects: may stay queued
            self.sent += len(part)
        started = self.sent
        try:
            await tap.pipe(sink, buffer_size=buffer_size, stall_timeout_s=stall_timeout_s)
        except ClientGone:
            raise self._fail(ClientDisconnected()) from None
        finally:
            self.sent = started + tap.forwarded
            self.received = self.sent
        self.complete = True

    async def start(self) -> None:
        while True:
            body = await self._read()
            if body is None:
                raise self._fail(BadRequest("The request body is empty: send the audio bytes."))
            if body:
                self._pending.append(body)
                return

    def _take_pending(self) -> list[bytes]:
        pending, self._pending = self._pending, []
        return pending

    async def _next_audio(self) -> bytes | None:
        return await self._read()


class MultipartBody(BodyStream):
    """A `multipart/form-data` body whose `file` field is the audio, parsed as it streams.

    Small fields named in `fields` must come before the file (browsers' FormData keeps
    the order they were appended in): they are read by `start()`, before any byte goes
    upstream, so a bad configuration is refused without an upload. Other fields are
    ignored; a named field after the file is an error reported once the body has ended.
    """

    def __init__(
        self,
        receive: Receive,
        headers: Mapping[str, str],
        *,
        limit: int,
        chunk_size: int,
        fields: tuple[str, ...] = (),
        file_field: str = "file",
    ) -> None:
        super().__init__(
            receive, limit=limit, body_limit=limit + FORM_OVERHEAD_BYTES, chunk_size=chunk_size
        )
        from app.uploads import form

        self._parse_failed = form.ParseFailedException
        try:
            self._parser = form.StreamingFormDataParser(headers={"Content-Type": _ctype(headers)})
        except form.ParseFailedException as exc:
            raise BadRequest(f"The multipart body cannot be parsed: {exc}.") from None
        self.file: FileTarget = form.FileTarget(self)
        self._parser.register(file_field, self.file)
        self._fields: dict[str, FieldTarget] = {
            name: form.FieldTarget(self, name) for name in fields
        }
        for name, target in self._fields.items():
            self._parser.register(name, target)
        self.late_fields: list[str] = []
        self._file_field = file_field

    @property
    def filename(self) -> str | None:
        name: str | None = self.file.multipart_filename
        return name

    @property
    def file_content_type(self) -> str | None:
        content_type: str | None = self.file.multipart_content_type
        return content_type

    def field(self, name: str) -> str | None:
        target = self._fields[name]
        return target.value if target.present else None

    def json_field(self, name: str) -> dict[str, Any] | None:
        raw = self.field(name)
        if raw is None or not raw.strip():
            return None
        try:
            value = parse_json(raw, what=f"The form field `{name}`")
        except BadRequest as exc:
            raise self._fail(exc) from None
        if not isinstance(value, dict):
            raise self._fail(BadRequest(f"The form field `{name}` must be a JSON object."))
        return value

    def _feed(self, body: bytes) -> None:
        try:
            self._parser.data_received(body)
        except self._parse_failed as exc:
            raise self._fail(BadRequest(f"The multipart body cannot be parsed: {exc}.")) from None

    async def start(self) -> None:
        while not (self.file.started and self.file.size):
            body = await self._read()
            if body is None:
                if not self.file.started:
                    raise self._fail(
                        BadRequest(f"The form has no `{self._file_field}` field with the audio.")
                    )
                if not self.file.finished:
                    raise self._fail(
                        BadRequest("The multipart body ended before the file part did.")
                    )
                raise self._fail(BadRequest("The uploaded file is empty."))
            self._feed(body)
        # The part's own headers are stored with the upload: the same text rule as every
        # other stored string (app/core/boundary.py), before anything goes upstream.
        try:
            check_text(self.filename, "filename")
            check_text(self.file_content_type, "Content-Type")
        except InvalidInput as exc:
            raise self._fail(exc) from None

    def _take_pending(self) -> list[bytes]:
        return [self.file.take()] if self.file.size else []

    async def _next_audio(self) -> bytes | None:
        body = await self._read()
        if body is None:
            return None
        self._feed(body)
        return self.file.take() if self.file.size else b""

    def _finish(self) -> None:
        if not self.file.finished:
            raise self._fail(BadRequest("The multipart body ended before the file part did."))
        if self.late_fields:
            names = ", ".join(f"`{n}`" for n in self.late_fields)
            raise self._fail(BadRequest(f"Send {names} before the file field, not after it."))


def _ctype(headers: Mapping[str, str]) -> str:
    return headers.get("content-type", "")


def is_multipart(content_type: str | None) -> bool:
    if not content_type:
        return False
    return content_type.split(";", 1)[0].strip().lower().startswith("multipart/")


def declared_length(headers: Mapping[str, str]) -> int | None:
    value = headers.get("content-length")
    if value is None:
        return None
    try:
        length = int(value)
    except ValueError:
        raise BadRequest("The Content-Length header is not a number.") from None
    if length < 0:
        raise BadRequest("The Content-Length header is negative.")
    return length
