"""LLM Gateway routes: the compatible `/v1/chat/completions` and `/v1/models`, and the
app surface's transcript summaries."""

from __future__ import annotations

import logging
import os
import socket
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, BackgroundTasks, Depends, Path, Request, Response, status
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.boundary import BoundaryRoute, parse_json
from app.core.config import LlmSettings
from app.core.deps import LlmSettingsDep, SessionDep, read_limited
from app.core.errors import Conflict, NotFound
from app.identity.callers import require_caller_scope
from app.identity.principal import Principal
from app.identity.scopes import Scope
from app.llm import catalog, policy, service, summaries
from app.llm.schemas import SummaryRead
from app.llm.worker import claim_summaries
from app.transcripts.models import Job, JobStatus
from app.transcripts.schemas import SummaryRequest
from app.transcripts.service import owner_conditions
from app.upstream.client import Upstream
from app.upstream.deps import UpstreamDep

logger = logging.getLogger(__name__)

router = APIRouter(tags=["llm"], route_class=BoundaryRoute)

# Any caller kind (proxy key, app session cookie, app JWT) resolves to its key's scopes.
# Requesting a summary spends LLM tokens (`llm`); reading summaries is a transcript read.
LlmDep = Annotated[Principal, Depends(require_caller_scope(Scope.llm.value))]
TranscriptsDep = Annotated[Principal, Depends(require_caller_scope(Scope.transcripts.value))]

# Our job id or AssemblyAI's transcript id.
TranscriptIdPath = Annotated[str, Path(max_length=100)]

# Identifies this process's claims on summaries run right after a request.
API_OWNER = f"{socket.gethostname()}:{os.getpid()}:api"

_AUTH_ERRORS: dict[int | str, dict[str, str]] = {
    401: {"description": "Missing or invalid key (or session)"},
    403: {"description": "Key lacks the required scope (llm to request, transcripts to read)"},
}
_CHAT_ERRORS: dict[int | str, dict[str, str]] = {
    **_AUTH_ERRORS,
    400: {"description": "Model not exact or not served in this region; bad body"},
    404: {"description": "transcript_id is not a transcript of this key"},
    413: {"description": "Body over LLM_MAX_REQUEST_BYTES"},
    429: {
        "description": "Daily token budget used up (Retry-After until the day rolls), or LLM "
        "Gateway rate limiting (its Retry-After passed on); `stream: true` alike"
    },
    502: {
        "description": "LLM Gateway failed (5xx retried first). A stream the gateway breaks "
        "off after its first byte is a 200 ending with a chunk whose `finish_reason` is "
        "`error` and whose `error` object says why (no `[DONE]`)"
    },
    504: {"description": "LLM Gateway did not answer in time"},
}
_SUMMARY_ERRORS: dict[int | str, dict[str, str]] = {
    **_AUTH_ERRORS,
    400: {"description": "Model not allowed"},
    404: {"description": "No such transcript for this key"},
    409: {"description": "The transcript failed: there is nothing to summarise"},
    429: {"description": "Daily token budget used up"},
}


# Parsed by the route itself (passed through to LLM Gateway); documented here.
_CHAT_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["model", "messages"],
                    "properties": {
                        "model": {"type": "string", "maxLength": 100},
                        "messages": {"type": "array", "minItems": 1, "items": {"type": "object"}},
                        "max_tokens": {"type": "integer", "minimum": 1},
                        "stream": {"type": "boolean"},
                    },
                    "additionalProperties": True,
                }
            }
        },
    }
}


@router.post("/v1/chat/completions", responses=_CHAT_ERRORS, openapi_extra=_CHAT_BODY)
async def chat_completions(
    request: Request,
    principal: LlmDep,
    session: SessionDep,
    settings: LlmSettingsDep,
    upstream: UpstreamDep,
) -> Response:
    """Create a chat completion through LLM Gateway (governed; `stream: true` passed through)."""
    body = parse_json(
        await read_limited(
            request,
            settings.max_request_bytes,
            f"The request body is over LLM_MAX_REQUEST_BYTES ({settings.max_request_bytes} bytes).",
        )
    )
    payload, model, reserve_tokens = service.prepare(body, settings)
    await service.check_transcript_access(session, principal.key_id, payload)
    # End the request's transaction before a call that may take a minute: authentication
    # may have updated the key's row (last_used_at), and holding that row lock would queue
    # every concurrent call of the same key behind this one.
    await session.commit()
    sessionmaker: async_sessionmaker[AsyncSession] = request.app.state.sessionmaker
    if payload.get("stream") is True:
        return await service.stream(
            sessionmaker,
            upstream,
            settings,
            key_id=principal.key_id,
            payload=payload,
            model=model,
            reserve_tokens=reserve_tokens,
        )
    answer, _ = await service.complete(
        sessionmaker,
        upstream,
        settings,
        key_id=principal.key_id,
        payload=payload,
        model=model,
        reserve_tokens=reserve_tokens,
    )
    return service.json_answer(answer)


_MODELS_ERRORS: dict[int | str, dict[str, str]] = {
    401: {"description": "Missing or invalid key (or session)"},
    403: {"description": "Key lacks the llm scope"},
    429: {"description": "LLM Gateway rate limiting (its Retry-After passed on)"},
    502: {"description": "LLM Gateway failed or answered no model list (5xx retried first)"},
    504: {"description": "LLM Gateway did not answer in time"},
}


@router.get("/v1/models", responses=_MODELS_ERRORS)
async def list_models(
    principal: LlmDep, settings: LlmSettingsDep, upstream: UpstreamDep
) -> dict[str, Any]:
    """The LLM Gateway models this service allows (LLM_MODELS or the region's list), in the
    gateway's shape `{"data": [...]}`; upstream's list is cached for a minute."""
    return await catalog.allowed_models(upstream.llm, settings)


async def owned_job(session: AsyncSession, principal: Principal, transcript_id: str) -> Job:
    """The caller's job by our id or AssemblyAI's transcript id; another key's, or another
    signed-in end user's, → 404 (the transcripts routes' ownership rule)."""
    query = select(Job).where(*owner_conditions(principal), Job.deleted_at.is_(None))
    try:
        query = query.where(Job.id == uuid.UUID(transcript_id))
    except ValueError:
        query = query.where(Job.upstream_id == transcript_id)
    job = (await session.execute(query)).scalar_one_or_none()
    if job is None:
        raise NotFound("Transcript not found.")
    return job


async def run_now(
    sessionmaker: async_sessionmaker[AsyncSession],
    upstream: Upstream,
    settings: LlmSettings,
    summary_id: uuid.UUID,
) -> None:
    """Run a just-requested summary here; if another instance claimed it, that one runs it."""
    try:
        claimed = await claim_summaries(
            sessionmaker, settings, owner=API_OWNER, limit=1, summary_id=summary_id
        )
        if claimed:
            await summaries.run_claimed_summary(
                sessionmaker, upstream, settings, summary_id, owner=API_OWNER
            )
    except Exception:
        # The row stays due: the reconciler's worker picks it up.
        logger.exception("llm.summary.run_now_failed", extra={"summary_id": str(summary_id)})


@router.post(
    "/api/transcripts/{transcript_id}/summaries",
    response_model=SummaryRead,
    status_code=status.HTTP_202_ACCEPTED,
    responses={**_SUMMARY_ERRORS, 200: {"description": "The existing summary"}},
)
async def create_summary(
    transcript_id: TranscriptIdPath,
    body: SummaryRequest,
    request: Request,
    response: Response,
    background: BackgroundTasks,
    principal: LlmDep,
    session: SessionDep,
    settings: LlmSettingsDep,
    upstream: UpstreamDep,
) -> SummaryRead:
    """Summarise a transcript once (a repeat returns the same summary); 202 while it runs."""
    job = await owned_job(session, principal, transcript_id)
    if job.status in (JobStatus.error.value, JobStatus.failed.value):
        raise Conflict(f"The transcript ended with status '{job.status}': nothing to summarise.")
    existing_or_new, queued = await summaries.create_summary(session, job, body, settings)
    if queued:
        await policy.budget_available(session, settings, job.key_id, settings.summary_max_tokens)
        if job.status == JobStatus.completed.value:
            background.add_task(
                run_now, request.app.state.sessionmaker, upstream, settings, existing_or_new.id
            )
    if existing_or_new.status == "completed":
        response.status_code = status.HTTP_200_OK
    return summaries.to_read(existing_or_new)


@router.get(
    "/api/transcripts/{transcript_id}/summaries",
    response_model=list[SummaryRead],
    responses={404: {"description": "No such transcript for this key"}, **_AUTH_ERRORS},
)
async def list_summaries(
    transcript_id: TranscriptIdPath, principal: TranscriptsDep, session: SessionDep
) -> list[SummaryRead]:
    """List a transcript's summaries with their status, result and usage."""
    job = await owned_job(session, principal, transcript_id)
    return [summaries.to_read(s) for s in await summaries.list_summaries(session, job.id)]


@router.get(
    "/api/transcripts/{transcript_id}/summaries/{summary_id}",
    response_model=SummaryRead,
    responses={404: {"description": "No such transcript or summary for this key"}, **_AUTH_ERRORS},
)
async def get_summary(
    transcript_id: TranscriptIdPath,
    summary_id: uuid.UUID,
    principal: TranscriptsDep,
    session: SessionDep,
) -> SummaryRead:
    """One summary of a transcript."""
    job = await owned_job(session, principal, transcript_id)
    for summary in await summaries.list_summaries(session, job.id):
        if summary.id == summary_id:
            return summaries.to_read(summary)
    raise NotFound("Summary not found.")
