"""Applying injected faults to HTTP routes (shared by every HTTP route of the emulator).

`await apply_fault(state, route)` at the top of a handler: it sleeps the injected latency and
returns a response to send instead (an error status, or a dropped connection), or None.
"""

from __future__ import annotations

import asyncio

from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

from emulator.state import EmulatorState, Fault

FAULT_MESSAGES = {
    429: "Too many requests (injected by the emulator).",
    500: "Internal server error (injected by the emulator).",
    503: "Service unavailable (injected by the emulator).",
}


class DropResponse(Response):
    """Announces a body, sends part of it, then aborts: the client sees the connection drop."""

    def __init__(self) -> None:
        super().__init__(status_code=200, media_type="application/json")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"4096")],
            }
        )
        await send({"type": "http.response.body", "body": b'{"id": "', "more_body": True})
        # Returning with the body unfinished makes uvicorn close the socket at once (it logs
        # one line, "ASGI callable returned without completing response").


class CutResponse(Response):
    """Sends the start of a streamed response and its first `events`, then aborts the
    connection: a stream broken off in its middle."""

    def __init__(self, events: list[bytes], media_type: str) -> None:
        super().__init__(status_code=200, media_type=media_type)
        self.events = events

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", (self.media_type or "text/plain").encode())],
            }
        )
        for event in self.events:
            await send({"type": "http.response.body", "body": event, "more_body": True})
        # A real stream breaks off after a pause: what was sent has reached the client
        # (aiohttp drops bytes that arrive in the same read as the reset).
        await asyncio.sleep(0.2)
        # Returning with the body unfinished makes uvicorn close the socket at once.


def fault_response(fault: Fault) -> Response | None:
    if fault.drop:
        return DropResponse()
    if fault.status is None:
        return None
    headers = {}
    if fault.retry_after is not None:
        headers["Retry-After"] = str(fault.retry_after)
    message = FAULT_MESSAGES.get(fault.status, f"Injected failure ({fault.status}).")
    return JSONResponse({"error": message}, status_code=fault.status, headers=headers)


async def apply_fault(state: EmulatorState, route: str) -> Response | None:
    """Consume one injected fault for `route`: sleep its latency, return its response."""
    fault = state.faults.take(route)
    if fault is None:
        return None
    if fault.delay_s > 0:
        await asyncio.sleep(fault.delay_s)
    return fault_response(fault)
