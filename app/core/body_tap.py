"""The body tap's interface, apart from its implementation (app/core/http_server.py).

What a route hands the tap (a `BodySink`: an upstream connection), the scope extension
that offers it, and what it raises. The upstream client (app/upstream/http1.py) and the
upload readers (app/uploads/) import these without importing uvicorn's protocol internals.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Protocol

EXTENSION = "aai.body_tap"


class BodySink(Protocol):
    """Where the tap sends body bytes (an upstream connection)."""

    ended: asyncio.Future[Any]  # done when the sink can take no more (answered, closed)

    def write(self, data: memoryview) -> bool:
        """Send `data`; False when part of it is still buffered: the caller must not reuse
        that memory until the drained callback runs."""

    def set_drained_callback(self, callback: Callable[[], None] | None) -> None: ...


class ClientGone(Exception):
    """The client closed the connection (or its sending side) before the body ended."""


class SinkEnded(Exception):
    """The sink ended (e.g. upstream answered early) before the body did."""


class SinkStalled(TimeoutError):
    """The sink took nothing for the stall timeout."""
