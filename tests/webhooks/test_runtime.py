"""The webhook runtime's acks-first gate for the in-process reconciler."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from app.webhooks import runtime as runtime_module
from app.webhooks.runtime import WebhooksRuntime


def make_runtime() -> WebhooksRuntime:
    nothing: Any = None
    return WebhooksRuntime(hub=nothing, reconciler=None, pool=nothing)


async def test_settled_at_once_without_webhooks() -> None:
    rt = make_runtime()
    started = time.monotonic()
    await asyncio.wait_for(rt.acks_settled(), 1)
    assert time.monotonic() - started < 0.01


async def test_claims_wait_for_pending_acks_then_a_quiet_moment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(runtime_module, "ACKS_QUIET_S", 0.05)
    monkeypatch.setattr(runtime_module, "ACKS_YIELD_MAX_S", 5.0)
    rt = make_runtime()
    rt.ack_started()
    waiter = asyncio.create_task(rt.acks_settled())
    await asyncio.sleep(0.1)
    assert not waiter.done()  # an ack is pending
    rt.ack_done()
    done_at = time.monotonic()
    await asyncio.wait_for(waiter, 1)
    assert time.monotonic() - done_at >= 0.045  # and then quiet for ACKS_QUIET_S


async def test_a_steady_stream_of_acks_does_not_starve_the_reconciler(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(runtime_module, "ACKS_YIELD_MAX_S", 0.2)
    rt = make_runtime()
    rt.ack_started()  # never answered
    started = time.monotonic()
    await asyncio.wait_for(rt.acks_settled(), 2)
    assert 0.19 <= time.monotonic() - started < 1.0
