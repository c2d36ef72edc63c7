"""Relay tokens and open-session slots, in memory and in Redis (shared by instances)."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from unittest import mock

import pytest

from app.core.logging import redact_text
from app.relay import state as state_module
from app.relay.meter import Meter
from app.relay.state import RelayGrant, RelayState, looks_like_relay_token
from app.tokens.limits import LimitExceeded, Quota, TokenLimiter

REDIS_URL = os.environ.get("TEST_REDIS_URL")


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[RelayState]:
    if request.param == "redis":
        if not REDIS_URL:
            pytest.skip("TEST_REDIS_URL is not set")
        relay_state = RelayState(REDIS_URL, f"test-{uuid.uuid4().hex[:8]}")
    else:
        relay_state = RelayState(None, "test")
    yield relay_state
    await relay_state.aclose()


def grant(end_user: str | None = "alice") -> RelayGrant:
    return RelayGrant("streaming", uuid.uuid4(), end_user, 300, "key")


async def test_a_relay_token_redeems_once(store: RelayState) -> None:
    given = grant()
    token = await store.issue(given, 60)
    assert looks_like_relay_token(token)
    assert await store.redeem(token) == given
    assert await store.redeem(token) is None
    assert await store.redeem(token[:-1] + ("A" if token[-1] != "A" else "B")) is None
    assert await store.redeem("") is None
    assert await store.redeem(None) is None


async def test_concurrent_redeems_of_one_token_open_one_session(store: RelayState) -> None:
    token = await store.issue(grant(), 60)
    results = await asyncio.gather(*(store.redeem(token) for _ in range(20)))
    assert sum(r is not None for r in results) == 1


async def test_a_relay_token_expires(store: RelayState) -> None:
    token = await store.issue(grant(), 1)
    await asyncio.sleep(1.3)
    assert await store.redeem(token) is None


def test_relay_tokens_are_redacted_from_logs() -> None:
    token = state_module.new_token()
    assert token not in redact_text(f"Authorization: {token}")
    assert token not in redact_text(f"GET /v3/ws?sample_rate=16000&token={token}")


async def test_slots_per_key_and_per_end_user_both_or_neither(store: RelayState) -> None:
    key = uuid.uuid4()
    assert await store.acquire("streaming", key, "alice", "s1", (2, 1)) is None
    assert await store.acquire("streaming", key, "alice", "s2", (2, 1)) == "per end user"
    assert await store.acquire("streaming", key, "bob", "s3", (2, 1)) is None
    # The key is full: carol is refused, and took no slot of her own.
    assert await store.acquire("streaming", key, "carol", "s4", (2, 1)) == "per key"
    await store.release("streaming", key, "alice", "s1")
    assert await store.acquire("streaming", key, "carol", "s5", (2, 1)) is None
    # Another product counts apart; 0 means no limit.
    assert await store.acquire("agents", key, "alice", "a1", (2, 1)) is None
    assert await store.acquire("streaming", uuid.uuid4(), None, "x", (0, 0)) is None


async def test_a_dead_instances_slots_lapse_with_their_lease(store: RelayState) -> None:
    key = uuid.uuid4()
    with mock.patch.object(state_module, "LEASE_S", 0.5):
        assert await store.acquire("streaming", key, "alice", "s1", (1, 1)) is None
        assert await store.acquire("streaming", key, "alice", "s2", (1, 1)) == "per key"
        await asyncio.sleep(0.3)
        await store.renew("streaming", key, "alice", "s1")  # a live session keeps its slot
        await asyncio.sleep(0.3)
        assert await store.acquire("streaming", key, "alice", "s2", (1, 1)) == "per key"
        await asyncio.sleep(0.6)  # no renewal: the instance died
        assert await store.acquire("streaming", key, "alice", "s2", (1, 1)) is None


# --- the meter: the budget is charged by use ---------------------------------------------------


@pytest.fixture(params=["memory", "redis"])
async def limiter(request: pytest.FixtureRequest) -> AsyncIterator[TokenLimiter]:
    if request.param == "redis":
        if not REDIS_URL:
            pytest.skip("TEST_REDIS_URL is not set")
        lim = TokenLimiter(REDIS_URL, prefix=f"test-{uuid.uuid4().hex[:8]}", fail_open=False)
    else:
        lim = TokenLimiter(None, prefix="test", fail_open=False)
    yield lim
    await lim.aclose()


def quota(key_s: int = 0, user_s: int = 0) -> Quota:
    return Quota(0, 0, key_s, user_s)


async def test_meter_charges_whole_seconds_used_and_refunds_the_rest(
    limiter: TokenLimiter,
) -> None:
    key = uuid.uuid4()
    meter = Meter(limiter, quota(100, 100), key, "alice", slice_s=10, cap_s=3600)
    await meter.take()
    await meter.take()
    assert await limiter.budget_used(key) == 20
    assert await meter.settle(12.4) == 13
    assert await limiter.budget_used(key) == 13
    assert await limiter.budget_used(key, "alice") == 13


async def test_meter_falls_back_to_single_seconds_then_refuses(limiter: TokenLimiter) -> None:
    key = uuid.uuid4()
    meter = Meter(limiter, quota(0, 12), key, "alice", slice_s=10, cap_s=3600)
    await meter.take()  # 10
    await meter.take()  # a slice does not fit: 1
    await meter.take()  # 1
    assert meter.reserved == 12
    with pytest.raises(LimitExceeded):
        await meter.take()
    assert await meter.settle(11.2) == 12


async def test_meter_ends_the_session_when_the_budget_runs_out(limiter: TokenLimiter) -> None:
    key = uuid.uuid4()
    meter = Meter(limiter, quota(2, 0), key, None, slice_s=1, cap_s=3600)
    await meter.take()
    loop = asyncio.get_running_loop()
    started = loop.time()
    renewals = 0

    async def renew() -> None:
        nonlocal renewals
        renewals += 1

    code, ended_by, _ = await asyncio.wait_for(meter.run(started, renew), 5)
    assert (code, ended_by) == (4029, "budget")
    assert 1.9 <= loop.time() - started < 2.5
    assert await meter.settle(loop.time() - started) == 2


async def test_meter_ends_the_session_at_its_cap(limiter: TokenLimiter) -> None:
    meter = Meter(limiter, quota(), uuid.uuid4(), None, slice_s=10, cap_s=1)
    await meter.take()
    assert meter.reserved == 1  # never more than the cap

    async def renew() -> None:
        return None

    started = asyncio.get_running_loop().time()
    code, ended_by, _ = await asyncio.wait_for(meter.run(started, renew), 5)
    assert (code, ended_by) == (3008, "cap")
