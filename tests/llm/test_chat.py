"""POST /v1/chat/completions: policy, budget holds, usage, retries, stream pass-through."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.llm.models import LlmBudgetDay, LlmReservation, LlmUsage
from tests.llm.fake_llm import FakeLlm

CHAT = "/v1/chat/completions"


def body(model: str = "claude-sonnet-4-6", **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": "Hi there"}], **extra}


async def usage_rows(db: async_sessionmaker[AsyncSession], key_id: uuid.UUID) -> list[LlmUsage]:
    async with db() as session:
        rows = await session.execute(select(LlmUsage).where(LlmUsage.key_id == key_id))
        return list(rows.scalars())


async def held(db: async_sessionmaker[AsyncSession], key_id: uuid.UUID) -> int:
    async with db() as session:
        total = await session.execute(
            select(func.coalesce(func.sum(LlmReservation.tokens), 0)).where(
                LlmReservation.key_id == key_id
            )
        )
        return int(total.scalar_one())


async def test_completion_is_proxied_and_usage_recorded(
    service: Callable[..., Any], new_key: Callable[..., Any], fake_llm: FakeLlm, db: Any
) -> None:
    key_id, raw = await new_key("llm")
    async with service() as client:
        response = await client.post(CHAT, json=body(), headers={"Authorization": raw})
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["choices"][0]["message"]["content"]
    assert len(fake_llm.calls) == 1
    rows = await usage_rows(db, key_id)
    assert [(r.model, r.prompt_tokens, r.completion_tokens, r.kind) for r in rows] == [
        (
            "claude-sonnet-4-6",
            answer["usage"]["prompt_tokens"],
            answer["usage"]["completion_tokens"],
            "chat",
        )
    ]
    assert await held(db, key_id) == 0  # the hold was settled
    async with db() as session:
        day = (
            await session.execute(select(LlmBudgetDay).where(LlmBudgetDay.key_id == key_id))
        ).scalar_one()
    assert day.used_tokens == answer["usage"]["total_tokens"]


async def test_needs_the_llm_scope(
    service: Callable[..., Any], new_key: Callable[..., Any], fake_llm: FakeLlm
) -> None:
    _, raw = await new_key("transcripts")
    async with service() as client:
        response = await client.post(CHAT, json=body(), headers={"Authorization": raw})
    assert response.status_code == 403
    assert fake_llm.calls == []


async def test_an_oversized_body_is_refused_before_it_is_read_whole(
    service: Callable[..., Any], new_key: Callable[..., Any], fake_llm: FakeLlm
) -> None:
    _, raw = await new_key("llm")
    big = body()
    big["messages"][-1]["content"] = "x" * 4096
    async with service(llm_max_request_bytes=2048) as client:
        declared = await client.post(CHAT, json=big, headers={"Authorization": raw})

        async def chunked() -> Any:  # no Content-Length: the cap applies while streaming
            yield json.dumps(big).encode()

        streamed = await client.post(
            CHAT,
            content=chunked(),
            headers={"Authorization": raw, "Content-Type": "application/json"},
        )
        fits = await client.post(CHAT, json=body(), headers={"Authorization": raw})
    for refused in (declared, streamed):
        assert refused.status_code == 413, refused.text
        assert "LLM_MAX_REQUEST_BYTES" in refused.json()["detail"]
    assert fits.status_code == 200
    assert len(fake_llm.calls) == 1


async def test_shorthand_model_is_refused_with_the_valid_ids(
    service: Callable[..., Any], new_key: Callable[..., Any], fake_llm: FakeLlm
) -> None:
    _, raw = await new_key("llm")
    async with service() as client:
        response = await client.post(
            CHAT, json=body("claude-sonnet-4"), headers={"Authorization": raw}
        )
    assert response.status_code == 400
    detail = response.json()["detail"]
    assert "claude-sonnet-4-6" in detail
    assert "gpt-4.1" in detail
    assert "did you mean claude-sonnet-4-6" in detail
    assert fake_llm.calls == []


async def test_eu_region_refuses_openai_models(
    service: Callable[..., Any], new_key: Callable[..., Any], fake_llm: FakeLlm
) -> None:
    _, raw = await new_key("llm")
    async with service(assemblyai_region="eu") as client:
        refused = await client.post(CHAT, json=body("gpt-4.1"), headers={"Authorization": raw})
        accepted = await client.post(
            CHAT, json=body("gemini-2.5-flash"), headers={"Authorization": raw}
        )
    assert refused.status_code == 400
    assert "EU" in refused.json()["detail"]
    assert "gpt-" not in refused.json()["detail"].split("Valid model IDs:")[1]
    assert accepted.status_code == 200
    assert [c["model"] for c in fake_llm.calls] == ["gemini-2.5-flash"]


async def test_max_tokens_is_capped(
    service: Callable[..., Any], new_key: Callable[..., Any], fake_llm: FakeLlm
) -> None:
    _, raw = await new_key("llm")
    async with service(llm_max_tokens=500) as client:
        capped = await client.post(
            CHAT, json=body(max_tokens=100_000), headers={"Authorization": raw}
        )
        unset = await client.post(CHAT, json=body(), headers={"Authorization": raw})
        low = await client.post(CHAT, json=body(max_tokens=50), headers={"Authorization": raw})
    assert capped.status_code == unset.status_code == low.status_code == 200
    assert [c["max_tokens"] for c in fake_llm.calls] == [500, 500, 50]


async def test_budget_refuses_with_retry_after(
    service: Callable[..., Any], new_key: Callable[..., Any], fake_llm: FakeLlm, db: Any
) -> None:
    key_id, raw = await new_key("llm")
    other_id, other = await new_key("llm")
    async with service(llm_daily_token_budget=400) as client:
        first = await client.post(CHAT, json=body(max_tokens=300), headers={"Authorization": raw})
        # 390 + the prompt estimate fits the budget alone, not beside what the first used.
        second = await client.post(CHAT, json=body(max_tokens=390), headers={"Authorization": raw})
        # Budgets are per key.
        third = await client.post(CHAT, json=body(max_tokens=300), headers={"Authorization": other})
    assert first.status_code == 200
    assert second.status_code == 429
    assert second.json()["error"] == "BudgetExceeded"
    assert 1 <= int(second.headers["retry-after"]) <= 86_400
    assert third.status_code == 200
    assert len(fake_llm.calls) == 2
    assert len(await usage_rows(db, key_id)) == 1
    assert len(await usage_rows(db, other_id)) == 1


async def test_budget_holds_under_concurrency(
    service: Callable[..., Any], new_key: Callable[..., Any], fake_llm: FakeLlm, db: Any
) -> None:
    """Ten calls at once, room for three holds: exactly three reach upstream."""
    key_id, raw = await new_key("llm")
    fake_llm.gate = asyncio.Event()
    async with service(llm_daily_token_budget=1000) as client:
        tasks = [
            asyncio.create_task(
                client.post(CHAT, json=body(max_tokens=300), headers={"Authorization": raw})
            )
            for _ in range(10)
        ]
        # The refused ones answer while the admitted ones are held upstream.
        deadline = asyncio.get_running_loop().time() + 20
        while sum(t.done() for t in tasks) < 7:
            assert asyncio.get_running_loop().time() < deadline, "refusals did not come"
            await asyncio.sleep(0.02)
        assert len(fake_llm.calls) == 3
        assert await held(db, key_id) > 900
        fake_llm.gate.set()
        responses = await asyncio.gather(*tasks)
    codes = sorted(r.status_code for r in responses)
    assert codes == [200] * 3 + [429] * 7
    assert len(fake_llm.calls) == 3
    assert len(await usage_rows(db, key_id)) == 3
    assert await held(db, key_id) == 0


async def test_server_errors_are_retried_and_billed_once(
    service: Callable[..., Any], new_key: Callable[..., Any], fake_llm: FakeLlm, db: Any
) -> None:
    key_id, raw = await new_key("llm")
    fake_llm.faults = [503, 500]
    async with service() as client:
        response = await client.post(CHAT, json=body(), headers={"Authorization": raw})
    assert response.status_code == 200
    assert len(fake_llm.calls) == 3
    assert len(await usage_rows(db, key_id)) == 1


async def test_client_errors_are_not_retried_and_release_the_hold(
    service: Callable[..., Any], new_key: Callable[..., Any], fake_llm: FakeLlm, db: Any
) -> None:
    key_id, raw = await new_key("llm")
    fake_llm.faults = [400, 400]
    async with service() as client:
        response = await client.post(CHAT, json=body(), headers={"Authorization": raw})
    assert response.status_code == 400
    assert "injected 400" in response.json()["detail"]
    assert len(fake_llm.calls) == 1
    assert await usage_rows(db, key_id) == []
    assert await held(db, key_id) == 0


async def test_persistent_server_error_is_a_502(
    service: Callable[..., Any], new_key: Callable[..., Any], fake_llm: FakeLlm, db: Any
) -> None:
    key_id, raw = await new_key("llm")
    fake_llm.faults = [502] * 10
    async with service(upstream_retry_attempts=3) as client:
        response = await client.post(CHAT, json=body(), headers={"Authorization": raw})
    assert response.status_code == 502
    assert len(fake_llm.calls) == 3
    assert await held(db, key_id) == 0


async def test_stream_passes_chunks_through_as_they_come(
    service: Callable[..., Any], new_key: Callable[..., Any], fake_llm: FakeLlm, db: Any
) -> None:
    """The first chunk reaches the caller while upstream is still held mid-stream."""
    key_id, raw = await new_key("llm")
    fake_llm.gate = asyncio.Event()
    received: list[bytes] = []
    async with (
        service() as client,
        client.stream(
            "POST", CHAT, json=body(stream=True), headers={"Authorization": raw}
        ) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        chunks = response.aiter_bytes()
        first = await asyncio.wait_for(chunks.__anext__(), timeout=10)
        received.append(first)
        assert not fake_llm.gate.is_set()  # upstream has not finished
        assert first.startswith(b"data: ")
        assert b'"content"' in first
        fake_llm.gate.set()
        async for chunk in chunks:
            received.append(chunk)
    stream = b"".join(received)
    assert stream.rstrip().endswith(b"data: [DONE]")
    events = [json.loads(line[6:]) for line in stream.splitlines() if line.startswith(b"data: {")]
    usage = events[-1]["usage"]
    deadline = asyncio.get_running_loop().time() + 10
    while not (rows := await usage_rows(db, key_id)):
        assert asyncio.get_running_loop().time() < deadline, "stream usage not recorded"
        await asyncio.sleep(0.02)
    assert [(r.prompt_tokens, r.completion_tokens, r.streamed, r.estimated) for r in rows] == [
        (usage["prompt_tokens"], usage["completion_tokens"], True, False)
    ]
    assert await held(db, key_id) == 0


async def test_stream_refusals_happen_before_any_byte(
    service: Callable[..., Any], new_key: Callable[..., Any], fake_llm: FakeLlm, db: Any
) -> None:
    key_id, raw = await new_key("llm")
    fake_llm.faults = [503, 429]
    async with service() as client:
        retried = await client.post(CHAT, json=body(stream=True), headers={"Authorization": raw})
        fake_llm.faults = [404]
        refused = await client.post(CHAT, json=body(stream=True), headers={"Authorization": raw})
    assert retried.status_code == 200
    assert b"[DONE]" in retried.content
    assert refused.status_code == 404
    assert len(fake_llm.calls) == 4
    assert await held(db, key_id) == 0


async def test_transcript_id_must_be_the_callers(
    service: Callable[..., Any],
    new_key: Callable[..., Any],
    new_job: Callable[..., Any],
    fake_llm: FakeLlm,
) -> None:
    owner_id, owner = await new_key("llm")
    _, stranger = await new_key("llm")
    job = await new_job(owner_id)
    payload = body(transcript_id=job.upstream_id)
    async with service() as client:
        theirs = await client.post(CHAT, json=payload, headers={"Authorization": stranger})
        mine = await client.post(CHAT, json=payload, headers={"Authorization": owner})
    assert theirs.status_code == 404
    assert mine.status_code == 200
    assert len(fake_llm.calls) == 1


async def test_a_client_leaving_mid_stream_is_still_charged(
    service: Callable[..., Any], new_key: Callable[..., Any], fake_llm: FakeLlm, db: Any
) -> None:
    """Whatever upstream produced is settled; the hold does not linger."""
    key_id, raw = await new_key("llm")
    fake_llm.gate = asyncio.Event()
    async with service() as client:
        async with client.stream(
            "POST", CHAT, json=body(stream=True), headers={"Authorization": raw}
        ) as response:
            chunks = response.aiter_bytes()
            await asyncio.wait_for(chunks.__anext__(), timeout=10)
        # The caller is gone while upstream is still mid-stream.
        deadline = asyncio.get_running_loop().time() + 10
        while not (rows := await usage_rows(db, key_id)):
            assert asyncio.get_running_loop().time() < deadline, "no usage after a disconnect"
            await asyncio.sleep(0.05)
        fake_llm.gate.set()
    assert len(rows) == 1
    assert rows[0].streamed
    assert rows[0].estimated  # the final usage chunk never came
    assert rows[0].completion_tokens >= 1
    assert await held(db, key_id) == 0
