"""Transcripts: AssemblyAI's `/v2/transcript` surface (ids are upstream's, so SDKs work
unchanged) and the app surface under `/api/transcripts` (ids are our job ids)."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, time
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, Path, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core import events
from app.core.boundary import BoundaryRoute, IsoTime, parse_json
from app.core.config import TranscriptSettings
from app.core.deps import SessionDep, TranscriptSettingsDep, read_limited
from app.core.errors import BadRequest, NotFound
from app.identity.callers import require_caller_scope
from app.identity.principal import Principal
from app.identity.scopes import Scope
from app.transcripts import service
from app.transcripts.models import JobStatus
from app.transcripts.names import file_names
from app.transcripts.policy import check_submit
from app.transcripts.schemas import (
    AppSubmitOptions,
    JobList,
    JobRead,
    PageDetails,
    TranscriptCreate,
    TranscriptList,
    TranscriptListItem,
    decode_cursor,
    encode_cursor,
    present,
)
from app.uploads.auth import StreamingPrincipalDep
from app.uploads.body import open_body, upload_body
from app.uploads.compat import CompatRoute
from app.uploads.streaming import MultipartBody, is_multipart
from app.upstream.client import Upstream
from app.upstream.deps import UpstreamDep

router = APIRouter(tags=["transcripts"], route_class=BoundaryRoute)
# The AssemblyAI-compatible surface answers errors in upstream's shape (app/uploads/compat.py).
compat_router = APIRouter(tags=["transcripts"], route_class=CompatRoute)

# Keys (raw or Bearer: the SDKs), app session cookies (Origin-checked on state-changing
# requests) and JWTs; submits and uploads use StreamingPrincipalDep, which accepts the same.
TranscriptsDep = Annotated[Principal, Depends(require_caller_scope(Scope.transcripts.value))]
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        max_length=200,
        description="Same key and body: the same job, no second submit. Other body: 409.",
    ),
]


CreatedOnQuery = Annotated[
    date | None, IsoTime, Query(description="Only jobs created that UTC day")
]
TranscriptIdQuery = Annotated[
    str | None,
    Query(
        max_length=100,
        description="A transcript id from this list (404 if unknown); empty = absent.",
    ),
]
TranscriptIdPath = Annotated[str, Path(max_length=100, description="AssemblyAI's transcript id")]

# A submit is a few parameters; even 1,000 key terms fit many times over.
MAX_SUBMIT_BODY_BYTES = 1024 * 1024

_AUTH: dict[int | str, dict[str, Any]] = {
    401: {"description": "Missing or invalid key, session or JWT"},
    403: {"description": "Caller lacks the transcripts scope, or a cookie from another Origin"},
}
_READ_ERRORS: dict[int | str, dict[str, Any]] = {
    **_AUTH,
    404: {"description": "No such transcript for this key"},
    502: {"description": "AssemblyAI failed or could not be reached"},
    504: {"description": "AssemblyAI did not answer in time"},
}
SUBMIT_ERRORS: dict[int | str, dict[str, Any]] = {
    **_READ_ERRORS,
    400: {
        "description": "Refused by policy (deprecated or unknown parameter, limits), or a "
        "webhook_url the relay may not call (RelayUrlRefused)"
    },
    403: {
        "description": "Caller lacks the transcripts scope, a cookie from another Origin, or "
        "an audio_url uploaded through this service by another key or end user "
        "(UploadNotOwned, refused before AssemblyAI is called)"
    },
    409: {"description": "Idempotency-Key reused with another body, or still in progress"},
    413: {"description": "Upload larger than MAX_UPLOAD_BYTES"},
    429: {"description": "AssemblyAI is rate limiting this service"},
}


def _inlined(schema: dict[str, Any]) -> dict[str, Any]:
    """A model's JSON schema with its `$defs` inlined: in a hand-written requestBody a
    `#/$defs/...` ref points at the OpenAPI document's root, where there are none (ReDoc
    refuses the whole document)."""
    defs = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return resolve(defs[ref.removeprefix("#/$defs/")])
            return {k: resolve(v) for k, v in node.items()}
        if isinstance(node, list):
            return [resolve(v) for v in node]
        return node

    resolved: dict[str, Any] = resolve(schema)
    return resolved


_SUBMIT_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": _inlined(TranscriptCreate.model_json_schema())},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "config": {
                            "type": "string",
                            "description": "JSON submit parameters (no audio_url); "
                            "must come before `file`.",
                        },
                        "file": {"type": "string", "format": "binary"},
                    },
                    "required": ["file"],
                }
            },
        },
    }
}


_JSON_SUBMIT_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {"application/json": _SUBMIT_BODY["requestBody"]["content"]["application/json"]},
    }
}


def _sessionmaker(request: Request) -> async_sessionmaker[AsyncSession]:
    sessionmaker: async_sessionmaker[AsyncSession] = request.app.state.sessionmaker
    return sessionmaker


async def _json_body(request: Request) -> Any:
    """The JSON body, refused with 413 past MAX_SUBMIT_BODY_BYTES (never buffered beyond)."""
    body = await read_limited(
        request,
        MAX_SUBMIT_BODY_BYTES,
        f"A submit body is limited to {MAX_SUBMIT_BODY_BYTES} bytes.",
    )
    return parse_json(body)


def _app_options(body: Any) -> tuple[Any, AppSubmitOptions]:
    """Split an app-surface body into upstream parameters and our own options."""
    if not isinstance(body, dict):
        return body, AppSubmitOptions()
    names = set(AppSubmitOptions.model_fields)
    try:
        options = AppSubmitOptions.model_validate({k: v for k, v in body.items() if k in names})
    except ValidationError as exc:
        raise RequestValidationError(exc.errors()) from None
    return {k: v for k, v in body.items() if k not in names}, options


async def _submit_json(
    request: Request,
    settings: TranscriptSettings,
    upstream: Upstream,
    principal: Principal,
    idempotency_key: str | None,
    *,
    app_surface: bool,
) -> service.Submitted:
    body = await _json_body(request)
    params, options = _app_options(body) if app_surface else (body, None)
    plan = check_submit(params, default_speech_models=settings.default_speech_models)
    return await service.submit_job(
        _sessionmaker(request),
        upstream.rest,
        settings,
        principal,
        plan,
        idempotency_key=idempotency_key,
        body_hash=service.request_hash(body) if idempotency_key is not None else None,
        options=options,
    )


# --- AssemblyAI-compatible surface ----------------------------------------------------------


@compat_router.post("/v2/transcript", responses=SUBMIT_ERRORS, openapi_extra=_JSON_SUBMIT_BODY)
async def submit_v2(
    request: Request,
    principal: StreamingPrincipalDep,
    settings: TranscriptSettingsDep,
    upstream: UpstreamDep,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    """Submit a transcription job, as AssemblyAI's POST /v2/transcript (policy applies)."""
    submitted = await _submit_json(
        request, settings, upstream, principal, idempotency_key, app_surface=False
    )
    if submitted.upstream is not None:
        return JSONResponse(present(submitted.job, submitted.upstream))
    # A replay: the job as it is now, not a second submit.
    async with _sessionmaker(request)() as session, session.begin():
        job = await service.owned(session, principal, submitted.job.id)
        obj = await service.transcript(session, upstream.rest, job)
    return JSONResponse(present(job, obj))


@compat_router.get(
    "/v2/transcript",
    response_model=TranscriptList,
    responses={**_AUTH, 404: {"description": "before_id or after_id is not a transcript here"}},
)
async def list_v2(
    request: Request,
    session: SessionDep,
    principal: TranscriptsDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 10,
    status: Literal["queued", "processing", "completed", "error"] | None = None,
    created_on: CreatedOnQuery = None,
    before_id: TranscriptIdQuery = None,
    after_id: TranscriptIdQuery = None,
    throttled_only: bool | None = None,
) -> TranscriptList:
    """List this key's transcripts, newest first, in AssemblyAI's list shape."""
    del throttled_only  # accepted for compatibility; jobs here are never throttled
    # An empty cursor (`?before_id=`) is no cursor, as upstream treats it.
    before_id, after_id = before_id or None, after_id or None
    created = datetime.combine(created_on, time(), tzinfo=UTC) if created_on else None
    page = await service.list_upstream_shape(
        session,
        principal,
        limit=limit,
        status=status,
        created_on=created,
        before_id=before_id,
        after_id=after_id,
    )
    base = str(request.base_url).rstrip("/")
    current = request.url.remove_query_params(["before_id", "after_id"])
    items = [
        TranscriptListItem(
            id=str(job.upstream_id),
            resource_url=f"{base}/v2/transcript/{job.upstream_id}",
            status=job.status,
            created=job.created_at.isoformat(),
            completed=job.completed_at.isoformat() if job.completed_at else None,
            audio_url=job.audio_url,
            error=job.error,
        )
        for job in page.jobs
    ]
    return TranscriptList(
        page_details=PageDetails(
            limit=limit,
            result_count=len(items),
            current_url=str(request.url),
            prev_url=(
                str(current.include_query_params(before_id=items[-1].id))
                if page.has_older
                else None
            ),
            next_url=(
                str(current.include_query_params(after_id=items[0].id)) if page.has_newer else None
            ),
        ),
        transcripts=items,
    )


@compat_router.get("/v2/transcript/{transcript_id}", responses=_READ_ERRORS)
async def get_v2(
    transcript_id: TranscriptIdPath,
    session: SessionDep,
    principal: TranscriptsDep,
    upstream: UpstreamDep,
) -> JSONResponse:
    """Get a transcript: served from Postgres once final, else fetched from AssemblyAI."""
    job = await service.owned_by_upstream_id(session, principal, transcript_id)
    obj = await service.transcript(session, upstream.rest, job)
    return JSONResponse(present(job, obj))


_REDACTED_AUDIO_ERRORS: dict[int | str, dict[str, Any]] = {
    **_READ_ERRORS,
    202: {"description": "AssemblyAI is still producing the redacted audio (its answer)"},
    400: {
        "description": "AssemblyAI's refusal, passed on: the job was not submitted with "
        "redact_pii_audio, is not completed, or its redacted audio expired"
    },
    429: {"description": "AssemblyAI is rate limiting this service"},
}


@compat_router.get(
    "/v2/transcript/{transcript_id}/redacted-audio", responses=_REDACTED_AUDIO_ERRORS
)
async def get_v2_redacted_audio(
    transcript_id: TranscriptIdPath,
    session: SessionDep,
    principal: TranscriptsDep,
    upstream: UpstreamDep,
) -> Response:
    """Where the PII-redacted audio of a `redact_pii_audio` job is: AssemblyAI's answer
    (`status`, `redacted_audio_url`) passed on, never cached (the URL expires)."""
    job = await service.owned_by_upstream_id(session, principal, transcript_id)
    if job.upstream_id is None:
        raise NotFound("Transcript not found.")
    answer = await upstream.rest.get_subresource(job.upstream_id, "redacted-audio")
    return Response(
        content=answer.content,
        status_code=answer.status_code,
        media_type=answer.headers.get("content-type", "application/json"),
    )


@compat_router.get("/v2/transcript/{transcript_id}/{resource}", responses=_READ_ERRORS)
async def get_v2_subresource(
    transcript_id: TranscriptIdPath,
    resource: Annotated[str, Path(max_length=32)],
    request: Request,
    session: SessionDep,
    principal: TranscriptsDep,
    upstream: UpstreamDep,
) -> Response:
    """Paragraphs, sentences, SRT, VTT or word search; cached once the job is complete."""
    if resource not in service.SUBRESOURCES:
        raise NotFound(f"No sub-resource '{resource}'; known: {', '.join(service.SUBRESOURCES)}.")
    job = await service.owned_by_upstream_id(session, principal, transcript_id)
    found = await service.subresource(
        session, upstream.rest, job, resource, dict(request.query_params)
    )
    return Response(
        content=found.body,
        media_type=found.content_type,
        headers={"X-Cache": "hit" if found.cached else "miss"},
    )


@compat_router.delete("/v2/transcript/{transcript_id}", responses=_READ_ERRORS)
async def delete_v2(
    transcript_id: TranscriptIdPath,
    session: SessionDep,
    principal: TranscriptsDep,
    upstream: UpstreamDep,
) -> JSONResponse:
    """Delete a transcript upstream and purge our copy of its text."""
    job = await service.owned_by_upstream_id(session, principal, transcript_id)
    answer = await service.delete_job(session, upstream.rest, principal, job)
    return JSONResponse(present(job, answer or {"id": transcript_id}))


# --- App surface -----------------------------------------------------------------------------


@router.post(
    "/api/transcripts",
    status_code=201,
    response_model=JobRead,
    responses=SUBMIT_ERRORS,
    openapi_extra=_SUBMIT_BODY,
)
async def submit_api(
    request: Request,
    principal: StreamingPrincipalDep,
    settings: TranscriptSettingsDep,
    upstream: UpstreamDep,
    response: Response,
    idempotency_key: IdempotencyKey = None,
) -> JobRead:
    """Submit a job: JSON with audio_url, or a form with `file` (upload-and-submit)."""
    if not is_multipart(request.headers.get("content-type")):
        submitted = await _submit_json(
            request, settings, upstream, principal, idempotency_key, app_surface=True
        )
        if submitted.replayed:
            response.status_code = 200
        async with _sessionmaker(request)() as session:
            names = await file_names(session, [submitted.job])
        return JobRead.of(submitted.job, names.get(submitted.job.id))
    if idempotency_key is not None:
        raise BadRequest(
            "Idempotency-Key applies to JSON submits: upload first (POST /api/uploads), "
            "then submit the upload_url with the key."
        )
    body = await open_body(request, settings.uploads, allow_multipart=True)
    assert isinstance(body, MultipartBody)
    await body.start()  # reads `config` (it comes before the file), nothing goes upstream
    config, options = _app_options(body.json_field("config") or {})
    # Policy first: a refused configuration (or webhook_url) costs no upload.
    early = check_submit(
        config, default_speech_models=settings.default_speech_models, audio_url_required=False
    )
    await service.check_caller_webhook(early, settings)
    uploaded = await upload_body(request, principal, body)
    plan = check_submit(
        {**config, "audio_url": uploaded.upload_url},
        default_speech_models=settings.default_speech_models,
    )
    submitted = await service.submit_job(
        _sessionmaker(request), upstream.rest, settings, principal, plan, options=options
    )
    return JobRead.of(submitted.job, body.filename)


@router.get("/api/transcripts", response_model=JobList, responses=_AUTH)
async def list_api(
    session: SessionDep,
    principal: TranscriptsDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    status: JobStatus | None = None,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> JobList:
    """List this key's jobs, newest first, with cursor pagination."""
    jobs, next_position = await service.list_jobs(
        session,
        principal,
        limit=limit,
        status=status.value if status else None,
        cursor=decode_cursor(cursor) if cursor else None,
    )
    names = await file_names(session, jobs)
    return JobList(
        items=[JobRead.of(job, names.get(job.id)) for job in jobs],
        next_cursor=encode_cursor(next_position) if next_position else None,
    )


@router.get("/api/transcripts/{job_id}", response_model=JobRead, responses=_READ_ERRORS)
async def get_api(job_id: uuid.UUID, session: SessionDep, principal: TranscriptsDep) -> JobRead:
    """Our view of one job: status, times, upstream id, error, summaries."""
    job = await service.owned(session, principal, job_id)
    if job.deleted_at is not None:
        raise NotFound("Transcript not found.")  # as GET /v2/transcript/{id} says
    read = JobRead.of(job, (await file_names(session, [job])).get(job.id))
    shown = events.JobShown(session, job)
    await events.publish(shown)  # llm adds the job's summaries
    read.summaries = shown.parts.get("summaries", [])
    return read


@router.delete("/api/transcripts/{job_id}", response_model=JobRead, responses=_READ_ERRORS)
async def delete_api(
    job_id: uuid.UUID, session: SessionDep, principal: TranscriptsDep, upstream: UpstreamDep
) -> JobRead:
    """Delete a job upstream and purge its text here."""
    job = await service.owned(session, principal, job_id)
    if job.deleted_at is None:
        await service.delete_job(session, upstream.rest, principal, job)
    return JobRead.of(job)


router.include_router(compat_router)
