"""`POST /v2/upload` (AssemblyAI-compatible, raw bytes) and `POST /api/uploads` (also forms)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from app.core.boundary import BoundaryRoute
from app.core.config import UploadSettings
from app.uploads.auth import StreamingPrincipalDep
from app.uploads.body import open_body, upload_body
from app.uploads.compat import CompatRoute
from app.uploads.schemas import UploadRead, UpstreamUpload

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


@compat_router.post(
    "/v2/upload",
    response_model=UpstreamUpload,
    responses=UPLOAD_ERRORS,
    openapi_extra=_RAW_BODY,
)
async def upload_v2(request: Request, principal: StreamingPrincipalDep) -> JSONResponse:
    """Upload a local file (raw binary body), as AssemblyAI's /v2/upload."""
    settings: UploadSettings = request.app.state.settings.uploads
    body = await open_body(request, settings, allow_multipart=False)
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
    settings: UploadSettings = request.app.state.settings.uploads
    body = await open_body(request, settings, allow_multipart=True)
    result = await upload_body(request, principal, body)
    return UploadRead(id=result.upload_id, upload_url=result.upload_url, bytes=result.bytes)


router.include_router(compat_router)
