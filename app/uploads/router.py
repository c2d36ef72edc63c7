"""`POST /v2/upload` (AssemblyAI-compatible, raw bytes) and `POST /api/uploads` (also forms)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from app.core.boundary import BoundaryRoute
from app.core.config import Settings
from app.core.errors import BadRequest
from app.core.http_server import EXTENSION as TAP_EXTENSION
from app.keys.service import Principal
from app.uploads.auth import StreamingPrincipalDep
from app.uploads.compat import CompatRoute
from app.uploads.schemas import UploadRead, UpstreamUpload
from app.uploads.service import UploadResult, stream_upload
from app.uploads.streaming import (
    FORM_OVERHEAD_BYTES,
    BodyStream,
    MultipartBody,
    RawBody,
    declared_length,
    is_multipart,
    too_large,
)
from app.upstream.client import RestClient

router = APIRouter(tags=["uploads"], route_class=BoundaryRoute)
# The AssemblyAI-compatible path answers errors in upstream's shape.
compat_router = APIRouter(tags=["uploads"], route_class=CompatRoute)

UPLOAD_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": "Empty body, multipart on the raw path, or a malformed form"},
    401: {"description": "Missing or invalid key, session or JWT"},
    403: {"description": "Caller lacks the transcripts scope, or a cookie from another Origin"},
    413: {"description": "Larger than MAX_UPLOAD_BYTES"},
    429: {"description": "AssemblyAI is rate limiting this service"},
    502: {"description": "AssemblyAI failed or could not be reached"},
}
_RAW_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    }
}
_BINARY_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"file": {"type": "string", "format": "binary"}},
                    "required": ["file"],
                }
            },
        },
    }
}


def open_body(request: Request, settings: Settings, *, allow_multipart: bool) -> BodyStream:
    """The request's body as a stream, refused early when its size or form is wrong."""
    content_type = request.headers.get("content-type")
    declared = declared_length(request.headers)
    limit = settings.max_upload_bytes
    if is_multipart(content_type):
        if not allow_multipart:
            raise BadRequest(
                "POST /v2/upload takes the raw binary file as the body "
                "(Content-Type: application/octet-stream), not multipart/form-data."
            )
        body: BodyStream = MultipartBody(
            request.receive,
            request.headers,
            limit=limit,
            chunk_size=settings.upload_chunk_bytes,
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
    return RawBody(request.receive, limit=limit, chunk_size=settings.upload_chunk_bytes, tap=tap)


async def upload_body(request: Request, principal: Principal, body: BodyStream) -> UploadResult:
    """Read up to the first audio byte, then stream the rest upstream and record it."""
    # Uploads get fresh connections: see app/uploads/upstream.py.
    rest: RestClient = request.app.state.upload_rest
    await body.start()
    form = body if isinstance(body, MultipartBody) else None
    return await stream_upload(
        request.app.state.sessionmaker,
        rest,
        principal,
        body,
        body_format="multipart" if form else "raw",
        declared_bytes=declared_length(request.headers),
        filename=form.filename if form else None,
        content_type=form.file_content_type if form else request.headers.get("content-type"),
    )


@compat_router.post(
    "/v2/upload",
    response_model=UpstreamUpload,
    responses=UPLOAD_ERRORS,
    openapi_extra=_RAW_BODY,
)
async def upload_v2(request: Request, principal: StreamingPrincipalDep) -> JSONResponse:
    """Upload a local file (raw binary body), as AssemblyAI's /v2/upload."""
    settings: Settings = request.app.state.settings
    body = open_body(request, settings, allow_multipart=False)
    result = await upload_body(request, principal, body)
    return JSONResponse(result.upstream)


@router.post(
    "/api/uploads",
    response_model=UploadRead,
    responses=UPLOAD_ERRORS,
    openapi_extra=_BINARY_BODY,
)
async def upload_api(request: Request, principal: StreamingPrincipalDep) -> UploadRead:
    """Upload a file: a raw body, or a multipart form with a `file` field (streamed)."""
    settings: Settings = request.app.state.settings
    body = open_body(request, settings, allow_multipart=True)
    result = await upload_body(request, principal, body)
    return UploadRead(id=result.upload_id, upload_url=result.upload_url, bytes=result.bytes)


router.include_router(compat_router)
