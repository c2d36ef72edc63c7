"""Uploads: stream a body to AssemblyAI and keep a record of it.

The body can take minutes, so no database connection is held while it streams: the
record is written in one short transaction before the first byte goes upstream and
finished in another once upstream has answered (or the upload was cut off).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.audit.record import record_audit
from app.core.body_tap import SinkEnded, SinkStalled
from app.core.config import UploadSettings
from app.core.db import utcnow
from app.core.errors import AppError, UpstreamError, UpstreamTimeout
from app.identity.principal import Principal
from app.metrics import UPLOAD_BYTES
from app.uploads.models import Upload, UploadStatus
from app.uploads.ownership import url_digest
from app.uploads.streaming import BodyStream, ClientDisconnected, RawBody
from app.upstream.client import RestClient
from app.upstream.http1 import TransportError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class UploadResult:
    upload_id: uuid.UUID
    upload_url: str
    bytes: int
    upstream: dict[str, Any]  # upstream's answer, as it came


async def stream_upload(
    sessionmaker: async_sessionmaker[AsyncSession],
    rest: RestClient,
    settings: UploadSettings,
    principal: Principal,
    body: BodyStream,
    *,
    body_format: str,
    declared_bytes: int | None,
    filename: str | None = None,
    content_type: str | None = None,
) -> UploadResult:
    """Send `body` (already started) to upstream's /v2/upload; record the outcome."""
    async with sessionmaker() as session, session.begin():
        upload = Upload(
            key_id=principal.key_id,
            end_user=principal.end_user,
            status=UploadStatus.receiving.value,
            body_format=body_format,
            filename=filename[:500] if filename else None,
            content_type=content_type[:200] if content_type else None,
            declared_bytes=declared_bytes,
            bytes=0,
            started_at=utcnow(),
        )
        session.add(upload)
    upload_id = upload.id
    # A raw body of known length is announced upstream (no chunked encoding); a form's
    # file length is unknown until its closing boundary.
    content_length = declared_bytes if body_format == "raw" else None
    try:
        try:
            if (
                content_length is not None
                and isinstance(body, RawBody)
                and body.can_pipe
                and rest.settings.transport == "aiohttp"  # "httpx": httpx for all
            ):
                async with rest.upload_slots:
                    answer = await _relay(rest, body, content_length, settings.relay_buffer_bytes)
            else:
                answer = await rest.upload(body, content_length=content_length)
        finally:
            await body.aclose()
    except BaseException as exc:
        error = _failure(body, exc)
        status = UploadStatus.aborted if body.failure is not None else UploadStatus.failed
        # Shielded: a cancelled request still leaves an accurate record behind.
        await asyncio.shield(
            _finish(sessionmaker, principal, upload_id, status, body.sent, None, error.message)
        )
        logger.info(
            "uploads.upload.failed",
            extra={
                "upload_id": str(upload_id),
                "reason": error.message,
                "status": status.value,
                "bytes": body.sent,
            },
        )
        if error is exc or isinstance(exc, asyncio.CancelledError):
            raise
        if error is body.failure:
            raise error from None  # ours: the transport error it caused is noise
        raise error from exc
    upload_url = answer.get("upload_url")
    if not isinstance(upload_url, str) or not upload_url or not body.complete:
        message = "AssemblyAI answered the upload without an upload_url."
        await _finish(
            sessionmaker, principal, upload_id, UploadStatus.failed, body.sent, None, message
        )
        raise UpstreamError(message)
    await _finish(
        sessionmaker, principal, upload_id, UploadStatus.completed, body.sent, upload_url, None
    )
    logger.info("uploads.upload.completed", extra={"upload_id": str(upload_id), "bytes": body.sent})
    return UploadResult(
        upload_id=upload_id, upload_url=upload_url, bytes=body.sent, upstream=answer
    )


async def _relay(
    rest: RestClient, body: RawBody, content_length: int, relay_buffer_bytes: int
) -> dict[str, Any]:
    """`rest.upload` without copies: the server's body tap writes straight to a fresh
    upstream connection (app/core/http_server.py, app/upstream/http1.py)."""
    stream = await rest.open_upload(content_length)
    try:
        try:
            await body.pipe(
                stream,
                buffer_size=relay_buffer_bytes,
                stall_timeout_s=rest.settings.timeout_s,
            )
        except (SinkEnded, TransportError):
            pass  # upstream answered or hung up before the body ended: its answer says why
        except SinkStalled:
            raise UpstreamTimeout("AssemblyAI stopped reading the upload.") from None
        return await rest.finish_upload(stream)
    finally:
        stream.abort()  # closes the connection; upstream drops an incomplete upload


def _failure(body: BodyStream, exc: BaseException) -> AppError:
    """The real reason: our own limit or the caller's disconnect before upstream's error."""
    if body.failure is not None:
        return body.failure
    if isinstance(exc, AppError):
        return exc
    if isinstance(exc, asyncio.CancelledError):
        return ClientDisconnected("The upload was cancelled.")
    return UpstreamError(f"The upload to AssemblyAI failed ({type(exc).__name__}).")


async def _finish(
    sessionmaker: async_sessionmaker[AsyncSession],
    principal: Principal,
    upload_id: uuid.UUID,
    status: UploadStatus,
    sent: int,
    upload_url: str | None,
    error: str | None,
) -> None:
    UPLOAD_BYTES.labels(status.value).inc(sent)
    async with sessionmaker() as session, session.begin():
        await session.execute(
            update(Upload)
            .where(Upload.id == upload_id)
            .values(
                status=status.value,
                bytes=sent,
                upload_url=upload_url,
                upload_url_hash=url_digest(upload_url) if upload_url else None,
                error=error,
                completed_at=utcnow(),
            )
        )
        await record_audit(
            session,
            action="upload",
            outcome="ok" if status is UploadStatus.completed else status.value,
            principal=principal,
            subject=str(upload_id),
            bytes=sent,
        )
