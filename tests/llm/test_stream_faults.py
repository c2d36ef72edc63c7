# ruff: noqa: F811 — the harness fixtures are imported by name, then requested by name
"""Streamed chat (`stream: true`) when LLM Gateway fails, against the real emulator process:
a refusal before the first byte keeps its status (429 with Retry-After, not a 500), and a
stream the gateway breaks off ends with an error event in the streaming shape and bills
only what the gateway reported (here: nothing)."""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.security import hash_key
from app.llm.models import LlmReservation, LlmUsage
from app.llm.service import STREAM_ERROR_MESSAGE
from tests.live import Proc
from tests.transcripts.harness import (  # noqa: F401 — fixtures
    MakeKey,
    committed,
    emu,
    jobs_settings,
    new_key,
    start_app,
)

pytestmark = pytest.mark.e2e

CHAT = "/v1/chat/completions"
BODY = {
    "model": "claude-sonnet-4-6",
    "messages": [{"role": "user", "content": "Say something about the weather today."}],
    "stream": True,
}


@pytest.fixture
def llm_app(jobs_settings: Any, start_app: Any, emulator: Proc) -> Any:
    return start_app(jobs_settings(assemblyai_llm_base_url=emulator.url))


async def _key_id(committed: async_sessionmaker[AsyncSession], raw: str) -> uuid.UUID:
    from app.identity.models import ApiKey

    async with committed() as session:
        key_id = await session.scalar(select(ApiKey.id).where(ApiKey.key_hash == hash_key(raw)))
    assert key_id is not None
    return key_id


async def _billing(
    committed: async_sessionmaker[AsyncSession], key_id: uuid.UUID
) -> tuple[int, int]:
    async with committed() as session:
        usage = await session.scalar(select(func.count()).where(LlmUsage.key_id == key_id))
        holds = await session.scalar(select(func.count()).where(LlmReservation.key_id == key_id))
    return int(usage or 0), int(holds or 0)


async def test_a_refusal_before_the_first_byte_keeps_its_status(
    llm_app: Any,
    new_key: MakeKey,
    emu: httpx.AsyncClient,
    committed: async_sessionmaker[AsyncSession],
) -> None:
    raw = await new_key("llm")
    # Over UPSTREAM_RETRY_AFTER_MAX_S (30 s): not waited for, passed on.
    await emu.post(
        "/_emulator/faults",
        json={"route": "POST /v1/chat/completions", "status": 429, "retry_after": 60},
    )
    async with llm_app as (_, client):
        refused = await client.post(CHAT, json=BODY, headers={"Authorization": raw})
        assert refused.status_code == 429, refused.text
        assert refused.headers["retry-after"] == "60"
        assert refused.json()["error"] == "RateLimited"
        # The next call streams as usual.
        ok = await client.post(CHAT, json=BODY, headers={"Authorization": raw})
        assert ok.status_code == 200, ok.text
        assert ok.text.rstrip().endswith("data: [DONE]")
    usage, holds = await _billing(committed, await _key_id(committed, raw))
    assert (usage, holds) == (1, 0)  # the refused call billed nothing and holds nothing


async def test_a_stream_broken_off_ends_with_an_error_event_and_bills_nothing_unreported(
    llm_app: Any,
    new_key: MakeKey,
    emu: httpx.AsyncClient,
    committed: async_sessionmaker[AsyncSession],
) -> None:
    raw = await new_key("llm")
    await emu.post("/_emulator/faults", json={"route": "POST /v1/chat/completions", "drop": True})
    async with llm_app as (_, client):
        broken = await client.post(CHAT, json=BODY, headers={"Authorization": raw})
    assert broken.status_code == 200  # the status line went out with the first chunk
    assert broken.headers["content-type"].startswith("text/event-stream")
    events = [
        json.loads(line[6:]) for line in broken.text.splitlines() if line.startswith("data: {")
    ]
    assert "[DONE]" not in broken.text
    assert len(events) == 3, broken.text  # role chunk, one content chunk, our error event
    first, last = events[0], events[-1]
    assert events[1]["choices"][0]["delta"]["content"]
    assert last["object"] == "chat.completion.chunk"
    assert last["id"] == first["id"]
    assert last["model"] == first["model"]
    assert last["choices"] == [{"index": 0, "delta": {}, "finish_reason": "error"}]
    assert last["error"]["message"] == STREAM_ERROR_MESSAGE
    assert last["error"]["code"] == 502
    # The gateway reported no usage before it broke off: no usage row, the hold released.
    usage, holds = await _billing(committed, await _key_id(committed, raw))
    assert (usage, holds) == (0, 0)
