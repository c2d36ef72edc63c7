"""The multipart parser's targets for `MultipartBody`, imported with the first form body.

streaming-form-data imports smart_open and aiofiles (for its file and S3 targets, which we
don't use): ~2 MB resident that a service receiving only raw uploads never needs.
"""

from __future__ import annotations

from typing import Protocol

from streaming_form_data import StreamingFormDataParser
from streaming_form_data.parser import ParseFailedException
from streaming_form_data.targets import BaseTarget

from app.core.errors import AppError, BadRequest
from app.uploads.limits import MAX_FIELD_BYTES, too_large

__all__ = ["FieldTarget", "FileTarget", "ParseFailedException", "StreamingFormDataParser"]


class FormStream(Protocol):
    """What the targets use of the body they parse (streaming.MultipartBody)."""

    limit: int
    late_fields: list[str]

    @property
    def file(self) -> FileTarget: ...

    def _fail(self, error: AppError) -> AppError: ...


class FileTarget(BaseTarget):  # type: ignore[misc]  # untyped library
    """Collects the file part's bytes between two reads of the body (never more)."""

    def __init__(self, stream: FormStream) -> None:
        super().__init__()
        self._stream = stream
        self.parts: list[bytes] = []
        self.size = 0
        self.total = 0
        self.started = False
        self.finished = False

    def on_start(self) -> None:
        if self.started:
            raise self._stream._fail(BadRequest("Send one `file` field only."))
        self.started = True

    def on_data_received(self, chunk: bytes) -> None:
        self.total += len(chunk)
        if self.total > self._stream.limit:
            raise self._stream._fail(too_large(self._stream.limit))
        self.parts.append(chunk)
        self.size += len(chunk)

    def on_finish(self) -> None:
        self.finished = True

    def take(self) -> bytes:
        data = self.parts[0] if len(self.parts) == 1 else b"".join(self.parts)
        self.parts = []
        self.size = 0
        return data


class FieldTarget(BaseTarget):  # type: ignore[misc]  # untyped library
    """A small form field; records whether it came after the file."""

    def __init__(self, stream: FormStream, name: str) -> None:
        super().__init__()
        self._stream = stream
        self.name = name
        self._parts: list[bytes] = []
        self._size = 0
        self.present = False

    def on_start(self) -> None:
        if self._stream.file.started:
            self._stream.late_fields.append(self.name)
        self.present = True

    def on_data_received(self, chunk: bytes) -> None:
        self._size += len(chunk)
        if self._size > MAX_FIELD_BYTES:
            raise self._stream._fail(
                BadRequest(f"The form field `{self.name}` is larger than {MAX_FIELD_BYTES} bytes.")
            )
        self._parts.append(chunk)

    @property
    def value(self) -> str:
        try:
            return b"".join(self._parts).decode("utf-8")
        except UnicodeDecodeError:
            raise self._stream._fail(
                BadRequest(f"The form field `{self.name}` is not UTF-8 text.")
            ) from None
