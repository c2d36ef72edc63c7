"""Running a test on both event loops the service can run on: asyncio's, and uvloop's
(uvicorn's, in production). Their transports differ: uvloop's are not asyncio.Transport,
and keep a view of data they could not send at once where asyncio's copy it."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import uvloop


def on_both_loops(case: Callable[[], Awaitable[None]]) -> Callable[[str], None]:
    """A test run once on each loop. Any error the loop reports on its own while the test
    runs (a callback that raised, a future's exception never retrieved) fails it too; the
    clean-up of tasks left over at the end (the tests' own servers) is not counted."""

    @pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
    def test(loop: str) -> None:
        factory = uvloop.new_event_loop if loop == "uvloop" else asyncio.new_event_loop
        reported: list[dict[str, Any]] = []
        with asyncio.Runner(loop_factory=factory) as runner:
            loop = runner.get_loop()
            loop.set_exception_handler(lambda _, context: reported.append(context))
            try:
                runner.run(asyncio.wait_for(case(), 30))
                runner.run(asyncio.sleep(0.05))  # let connection_lost and gc callbacks run
                gc.collect()  # a never-retrieved exception is reported when collected
                runner.run(asyncio.sleep(0))
            finally:
                loop.set_exception_handler(None)
        assert not reported, [c.get("message") for c in reported]

    test.__name__, test.__doc__ = case.__name__, case.__doc__
    return test
