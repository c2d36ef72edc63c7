"""Events as the seam: typed, in process, in subscription order; the app's wiring."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from app.core import events
from app.core.config import Settings


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


@dataclass
class Pong:
    seen: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Bound:
    name: str  # what a feature's part of the settings is to its handler

    async def on_pong(self, event: Pong) -> None:
        event.seen.append(self.name)


async def test_a_method_bound_again_replaces_the_one_bound_before_in_its_place() -> None:
    async def other(event: Pong) -> None:
        event.seen.append("other")

    events.subscribe(Pong, Bound("first app").on_pong)
    events.subscribe(Pong, other)
    events.subscribe(Pong, Bound("second app").on_pong)
    pong = Pong()
    await events.publish(pong)
    assert pong.seen == ["second app", "other"]


def test_the_app_wires_each_feature_to_the_events_it_needs(settings: Settings) -> None:
    from app.llm import summaries
    from app.main import create_app
    from app.webhooks import events as job_events
    from app.webhooks import signing

    create_app(settings, configure_logs=False)
    assert set(events.subscribers(events.JobChanged)) == {
        job_events.on_job_changed,
        summaries.on_job_changed,
    }
    assert events.subscribers(events.JobShown) == (summaries.on_job_shown,)
    assert events.subscribers(events.KeyCreated) == (signing.on_key_created,)
    # Summaries asked with a submit: bound to the llm part of the app's settings (the events
    # carry none), the last app made replacing the one before.
    other = settings.model_copy(update={"llm_max_tokens": 5})
    for made in (settings, other):
        create_app(made, configure_logs=False)
        [requested] = events.subscribers(events.JobRequested)
        [created] = events.subscribers(events.JobCreated)
        for handler, function in (
            (requested, summaries.SubmitSummaries.on_job_requested),
            (created, summaries.SubmitSummaries.on_job_created),
        ):
            assert getattr(handler, "__func__", None) is function
            assert getattr(handler, "__self__", None) == summaries.SubmitSummaries(made.llm)
