"""Events as the seam: typed, in process, in subscription order; the app's wiring."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from app.core import events


@dataclass
class Ping:
    seen: list[str] = field(default_factory=list)


async def test_handlers_run_in_order_once_and_errors_reach_the_publisher() -> None:
    async def first(event: Ping) -> None:
        event.seen.append("first")

    async def second(event: Ping) -> None:
        event.seen.append("second")
        if len(event.seen) > 2:
            raise RuntimeError("refused")

    events.subscribe(Ping, first)
    events.subscribe(Ping, second)
    events.subscribe(Ping, first)  # a module imported twice subscribes once
    ping = Ping()
    await events.publish(ping)
    assert ping.seen == ["first", "second"]
    ping.seen.append("x")
    with pytest.raises(RuntimeError, match="refused"):
        await events.publish(ping)


async def test_an_event_nobody_subscribed_is_a_no_op() -> None:
    await events.publish(object())


def test_the_app_wires_each_feature_to_the_events_it_needs() -> None:
    import app.main  # noqa: F401 - every feature, as the service runs
    from app.llm import summaries
    from app.webhooks import events as job_events
    from app.webhooks import signing

    assert set(events.subscribers(events.JobChanged)) == {
        job_events.on_job_changed,
        summaries.on_job_changed,
    }
    assert events.subscribers(events.JobRequested) == (summaries.on_job_requested,)
    assert events.subscribers(events.JobCreated) == (summaries.on_job_created,)
    assert events.subscribers(events.JobShown) == (summaries.on_job_shown,)
    assert events.subscribers(events.KeyCreated) == (signing.on_key_created,)
