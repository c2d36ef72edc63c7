"""Request bodies for uploads: open the stream (refused early when its size or form is
wrong) and send it upstream. Used by the upload routes and by the app-surface submit that
uploads and submits in one request (app/transcripts/router.py)."""

from __future__ import annotations

import asyncio
import importlib
import sys

from fastapi import Request

from app.core.body_tap import EXTENSION as TAP_EXTENSION
from app.core.config import UploadSettings
from app.core.errors import BadRequest
from app.identity.principal import Principal
from app.uploads.limits import too_large
from app.uploads.service import UploadResult, stream_upload
from app.uploads.streaming import (
    FORM_OVERHEAD_BYTES,
    BodyStream,
    MultipartBody,
    RawBody,
    declared_length,
    is_multipart,
)
from app.upstream.client import RestClient

FORM_PARSER = "app.uploads.form"


async def load_form_parser() -> None:
    """Import the multipart parser (app/uploads/form.py) off the event loop, the first
    time a form arrives: imported in the loop, its ~0.2 s would hold every other request
    and live session up for that long."""
    if FORM_PARSER not in sys.modules:
        await asyncio.to_thread(importlib.import_module, FORM_PARSER)


async def open_body(
    request: Request, settings: UploadSettings, *, allow_multipart: bool
) -> BodyStream:
    """The request's body as a stream, refused early when its size or form is wrong."""
    content_type = request.headers.get("content-type")
    declared = declared_length(request.headers)
    limit = settings.max_bytes
    if is_multipart(content_type):
        if not allow_multipart:
            raise BadRequest(
                "POST /v2/upload takes the raw binary file as the body "
                "(Content-Type: application/octet-stream), not multipart/form-data."
            )
        await load_form_parser()
        body: BodyStream = MultipartBody(
            request.receive,
            request.headers,
            limit=limit,
            chunk_size=settings.chunk_bytes,
            fields=("config",),
        )
        # A form has a little overhead beyond its file.
        if declared is not None and declared > limit + FORM_OVERHEAD_BYTES:
            raise too_large(limit)
        return body
    if declared is not None and declared > limit:
        raise too_large(limit)
    if declared == 0:
        raise BadRequest("The request body is empty: send the audio bytes.")
    tap = request.scope.get("extensions", {}).get(TAP_EXTENSION) if declared else None
    return RawBody(request.receive, limit=limit, chunk_size=settings.chunk_bytes, tap=tap)


async def upload_body(request: Request, principal: Principal, body: BodyStream) -> UploadResult:
    """Read up to the first audio byte, then stream the rest upstream and record it."""
    # Uploads get fresh connections: see app/uploads/upstream.py.
    rest: RestClient = request.app.state.upload_rest
    await body.start()
    form = body if isinstance(body, MultipartBody) else None
    return await stream_upload(
        request.app.state.sessionmaker,
        rest,
        request.app.state.settings.uploads,
        principal,
        body,
        body_format="multipart" if form else "raw",
        declared_bytes=declared_length(request.headers),
        filename=form.filename if form else None,
        content_type=form.file_content_type if form else request.headers.get("content-type"),
    )
