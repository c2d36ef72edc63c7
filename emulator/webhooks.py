"""Webhook delivery as upstream: POST {"transcript_id", "status"} with the job's auth header.

2xx = delivered; 4xx = refused, not retried; anything else (5xx, no answer within the
timeout, connection refused) is retried up to `webhook_max_retries` times,
`webhook_retry_interval_s` apart. Every attempt lands in `records.webhook_attempts`.
A "WEBHOOK" fault replaces an attempt's outcome: its `status` (0 = no answer) is what the
delivery sees, without calling the receiver.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import httpx

from emulator.state import EmulatorState, WebhookAttempt

logger = logging.getLogger(__name__)


async def deliver(state: EmulatorState, transcript: dict[str, Any], *, inline: bool) -> None:
    """Deliver the job's webhook; with `inline`, return after the first attempt."""
    retry = await _attempt(state, transcript, 1)
    if not retry:
        return
    if inline:
        state.spawn(_retry_loop(state, transcript))
    else:
        await _retry_loop(state, transcript)


async def _retry_loop(state: EmulatorState, transcript: dict[str, Any]) -> None:
    for attempt in range(2, state.knobs.webhook_max_retries + 2):
        await asyncio.sleep(state.knobs.webhook_retry_interval_s)
        if not await _attempt(state, transcript, attempt):
            return
    logger.info("emulator.webhook.gave_up", extra={"transcript_id": transcript["id"]})


async def _attempt(state: EmulatorState, transcript: dict[str, Any], attempt: int) -> bool:
    """One delivery attempt; True when it should be retried."""
    assert state.http is not None
    url: str = transcript["webhook_url"]
    body = {"transcript_id": transcript["id"], "status": transcript["status"]}
    header_name = transcript.get("webhook_auth_header_name")
    headers = {"content-type": "application/json", "user-agent": "AssemblyAI-Webhook (emulator)"}
    if header_name and transcript.get("_webhook_value") is not None:
        headers[header_name] = transcript["_webhook_value"]
    status: int | None = None
    error: str | None = None
    started = time.monotonic()
    fault = state.faults.take("WEBHOOK")
    if fault is not None:
        if fault.delay_s > 0:
            await asyncio.sleep(fault.delay_s)
        if fault.status:
            status = fault.status
        else:
            error = "no answer (injected)"
    else:
        try:
            response = await state.http.post(
                url, json=body, headers=headers, timeout=state.knobs.webhook_timeout_s
            )
            status = response.status_code
        except httpx.TimeoutException:
            error = "timeout"
        except httpx.HTTPError as exc:
            error = type(exc).__name__
    state.records.webhook_attempts.append(
        WebhookAttempt(
            transcript_id=transcript["id"],
            url=url,
            attempt=attempt,
            status=status,
            error=error,
            at=time.time(),
            duration_ms=round((time.monotonic() - started) * 1000, 2),
            body=body,
            header_name=header_name,
        )
    )
    if status is not None:
        transcript["webhook_status_code"] = status
    delivered = status is not None and 200 <= status < 300
    refused = status is not None and 400 <= status < 500
    logger.info(
        "emulator.webhook.attempt",
        extra={"transcript_id": transcript["id"], "attempt": attempt, "status": status},
    )
    return not (delivered or refused)
