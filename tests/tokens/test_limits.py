"""The daily session-seconds budget under concurrency, refunds, and counters shared by two
instances through Redis (TEST_REDIS_URL; skipped without it)."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import pytest
import redis.asyncio as aioredis

from app.tokens.limits import LimitExceeded, Quota, TokenLimiter, seconds_to_midnight
from tests.tokens.conftest import FakeUpstream, client_for

REDIS_URL = os.environ.get("TEST_REDIS_URL")
needs_redis = pytest.mark.skipif(not REDIS_URL, reason="TEST_REDIS_URL is not set")

STREAMING = "tokens:streaming"


def quota(**kw: int) -> Quota:
    values = {
        "key_mints_per_minute": 0,
        "end_user_mints_per_minute": 0,
        "key_daily_session_s": 0,
        "end_user_daily_session_s": 0,
    }
    values.update(kw)
    return Quota(**values)


@pytest.fixture
async def redis_prefix() -> AsyncIterator[str]:
    """A unique key prefix, and every key under it deleted afterwards."""
    prefix = f"aaip-test-{uuid.uuid4().hex[:10]}"
    yield prefix
    if REDIS_URL:
        client = aioredis.from_url(REDIS_URL)
        try:
            async for key in client.scan_iter(match=f"*{prefix}*"):
                await client.delete(key)
        finally:
            await client.aclose()


async def test_budget_under_50_concurrent_requests_never_overshoots(
    make_app: Callable[..., Any],
    committed_key: Callable[..., Any],
    fake_upstream: FakeUpstream,
    audit_rows: Callable[..., Any],
) -> None:
    raw, key_id = await committed_key(STREAMING)
    # 8 grants of 600 s fit the key's 4800 s; each of 5 end users may have 2 (1200 s).
    async with (
        make_app(
            token_key_daily_session_s=4800,
            token_end_user_daily_session_s=1200,
            token_max_session_s=600,
        ) as app,
        client_for(app) as client,
    ):

        async def mint(i: int) -> tuple[int, str]:
            response = await client.post(
                "/api/tokens/streaming",
                json={"end_user": f"user{i % 5}", "max_session_duration_seconds": 600},
                headers={"Authorization": raw},
            )
            return response.status_code, f"user{i % 5}"

        results = await asyncio.gather(*(mint(i) for i in range(50)))
        used = await app.state.tokens.limiter.budget_used(key_id)
        per_user = {
            f"user{i}": await app.state.tokens.limiter.budget_used(key_id, f"user{i}")
            for i in range(5)
        }
    statuses = Counter(status for status, _ in results)
    assert statuses == {200: 8, 429: 42}
    assert used == 4800
    assert all(v <= 1200 for v in per_user.values())
    assert sum(per_user.values()) == 4800
    granted_per_user = Counter(user for status, user in results if status == 200)
    assert all(n <= 2 for n in granted_per_user.values())
    assert len(fake_upstream.calls) == 8
    rows = await audit_rows(key_id)
    assert Counter(r.outcome for r in rows) == {"granted": 8, "refused": 42}
    assert sum(r.detail.get("granted_session_s") or 0 for r in rows) == 4800


async def test_a_refused_request_consumes_no_budget(
    make_app: Callable[..., Any], committed_key: Callable[..., Any]
) -> None:
    raw, _ = await committed_key(STREAMING)
    async with (
        make_app(token_key_daily_session_s=1000) as app,
        client_for(app) as client,
    ):

        async def mint(session_s: int) -> Any:
            return await client.post(
                "/api/tokens/streaming",
                json={"max_session_duration_seconds": session_s},
                headers={"Authorization": raw},
            )

        assert (await mint(600)).status_code == 200
        refused = await mint(600)
        assert refused.status_code == 429
        detail = refused.json()["detail"]
        assert "Daily session budget reached: 1000 granted session-seconds" in detail
        assert "400 s left" in detail
        retry_after = int(refused.headers["retry-after"])
        assert 0 < retry_after <= 86_400
        assert (await mint(400)).status_code == 200  # exactly what was left
        assert (await mint(60)).status_code == 429


@pytest.mark.parametrize("backend", ["memory", "redis"])
async def test_reservation_is_both_or_neither_and_refund_is_exact(
    backend: str, redis_prefix: str
) -> None:
    if backend == "redis" and not REDIS_URL:
        pytest.skip("TEST_REDIS_URL is not set")
    limiter = TokenLimiter(
        REDIS_URL if backend == "redis" else None, prefix=redis_prefix, fail_open=False
    )
    try:
        key = uuid.uuid4()
        q = quota(key_daily_session_s=1000, end_user_daily_session_s=300)
        held = await limiter.reserve_budget(q, key, "eve", 300)
        with pytest.raises(LimitExceeded) as refused:
            await limiter.reserve_budget(q, key, "eve", 60)
        assert refused.value.limit == "daily_session_seconds_per_end_user"
        # The end user's refusal took nothing from the key's counter.
        assert await limiter.budget_used(key) == 300
        await limiter.refund(held)
        assert await limiter.budget_used(key) == 0
        assert await limiter.budget_used(key, "eve") == 0

        # 50 concurrent reservations, 7 users: the key's 1000 s hold at most 16 of 60 s.
        async def one(i: int) -> bool:
            try:
                await limiter.reserve_budget(q, key, f"u{i % 7}", 60)
            except LimitExceeded:
                return False
            return True

        granted = sum(await asyncio.gather(*(one(i) for i in range(50))))
        assert granted == 16
        assert await limiter.budget_used(key) == 960
    finally:
        await limiter.aclose()


def test_retry_after_of_the_daily_budget_is_midnight_utc() -> None:
    now = datetime(2026, 11, 25, 23, 59, 30, tzinfo=UTC)
    assert seconds_to_midnight(now) == 30


@needs_redis
async def test_limits_are_shared_by_two_instances_through_redis(
    make_app: Callable[..., Any],
    committed_key: Callable[..., Any],
    redis_prefix: str,
) -> None:
    raw, key_id = await committed_key(STREAMING)
    shared = {
        "redis_url": REDIS_URL,
        "rate_limit_key_prefix": redis_prefix,
        "token_key_mints_per_minute": 3,
        "token_key_daily_session_s": 10_000,
    }
    async with (
        make_app(**shared) as one,
        make_app(**shared) as two,
        client_for(one) as a,
        client_for(two) as b,
    ):
        assert one.state.tokens.limiter.backend == "redis"
        h = {"Authorization": raw}
        q = {"expires_in_seconds": 30, "max_session_duration_seconds": 3000}
        assert (await a.get("/v3/token", params=q, headers=h)).status_code == 200
        assert (await b.get("/v3/token", params=q, headers=h)).status_code == 200
        assert (await a.get("/v3/token", params=q, headers=h)).status_code == 200
        # Three mints across two instances: the fourth is refused on either.
        for client in (a, b):
            refused = await client.get("/v3/token", params=q, headers=h)
            assert refused.status_code == 429
            assert "per minute per key" in refused.json()["detail"]
        assert await two.state.tokens.limiter.budget_used(key_id) == 9000


@needs_redis
async def test_daily_budget_is_shared_by_two_instances_under_concurrency(
    make_app: Callable[..., Any],
    committed_key: Callable[..., Any],
    fake_upstream: FakeUpstream,
    redis_prefix: str,
) -> None:
    raw, key_id = await committed_key(STREAMING)
    shared = {
        "redis_url": REDIS_URL,
        "rate_limit_key_prefix": redis_prefix,
        "token_key_daily_session_s": 3000,
    }
    async with (
        make_app(**shared) as one,
        make_app(**shared) as two,
        client_for(one) as a,
        client_for(two) as b,
    ):
        q = {"expires_in_seconds": 30, "max_session_duration_seconds": 600}

        async def mint(i: int) -> int:
            client = a if i % 2 else b
            response = await client.get("/v3/token", params=q, headers={"Authorization": raw})
            return response.status_code

        statuses = Counter(await asyncio.gather(*(mint(i) for i in range(50))))
        assert statuses == {200: 5, 429: 45}
        assert await one.state.tokens.limiter.budget_used(key_id) == 3000
    assert len(fake_upstream.calls) == 5


async def test_unreachable_redis_refuses_by_default_and_can_fail_open(
    make_app: Callable[..., Any],
    committed_key: Callable[..., Any],
    fake_upstream: FakeUpstream,
    audit_rows: Callable[..., Any],
) -> None:
    raw, key_id = await committed_key(STREAMING)
    dead = "redis://127.0.0.1:1/0"
    q = {"expires_in_seconds": 30}
    async with make_app(redis_url=dead) as app, client_for(app) as client:
        refused = await client.get("/v3/token", params=q, headers={"Authorization": raw})
        assert refused.status_code == 503
        assert refused.json()["error"] == "LimiterUnavailable"
    assert fake_upstream.calls == []
    [row] = await audit_rows(key_id)
    assert (row.outcome, row.detail["limit"]) == ("refused", "storage_unreachable")
    async with (
        make_app(redis_url=dead, token_limits_fail_open=True) as app,
        client_for(app) as client,
    ):
        allowed = await client.get("/v3/token", params=q, headers={"Authorization": raw})
        assert allowed.status_code == 200
