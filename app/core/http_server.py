"""uvicorn's httptools protocol, with a body tap for large uploads.

Why: through ASGI, every byte of a request body is copied four times in user space before
the app sees it (uvloop's read into a new `bytes`, httptools' `on_body` slice, uvicorn's
`bytearray +=`, and `bytes(...)` in `receive()`), which was most of the upload proxy's CPU
(`bench/upload_throughput.py`). A route that streams a large body elsewhere can instead
ask this protocol's **body tap** (the ASGI extension `aai.body_tap` in the scope) to read
the rest of a `Content-Length` body from the socket straight into one reusable buffer and
hand each read to a sink (the upstream connection): no user-space copy at all.

The tap is used only while a route asks for it; everything else is uvicorn's own code.
It is offered for plain-HTTP requests with a `Content-Length` body (a TLS-terminating
proxy in front is the usual deployment; chunked bodies go through ASGI as before). Once it
has been used, the parser has not seen those bytes, so the connection closes after the
response (`Connection: close`): one handshake per upload.

Run with `uvicorn --http app.core.http_server:TapProtocol` (`aai-proxy serve` does);
without it (or under a test client) the extension is absent and routes use `receive()`.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from app.core.body_tap import EXTENSION, BodySink, ClientGone, SinkEnded, SinkStalled


class TapProtocol(HttpToolsProtocol):
    """HttpToolsProtocol that counts body bytes and offers `aai.body_tap` per request."""

    body_received = 0

    def on_headers_complete(self) -> None:
        self.body_received = 0
        super().on_headers_complete()
        scope: Any = self.scope
        if scope.get("type") != "http" or self.cycle is None or self.scheme != "http":
            return
        length = None
        for name, value in self.headers:
            if name == b"content-length":
                length = value
            elif name == b"transfer-encoding":
                return
        if length is None or not length.isdigit():
            return
        scope.setdefault("extensions", {})[EXTENSION] = BodyTap(self, self.cycle, int(length))

    def on_body(self, body: bytes) -> None:
        self.body_received += len(body)
        super().on_body(body)


class BodyTap:
    """The rest of one request's body, read from the socket into a reusable buffer."""

    def __init__(self, protocol: TapProtocol, cycle: Any, content_length: int) -> None:
        self._protocol = protocol
        self._cycle = cycle
        self.content_length = content_length
        self.used = False
        self.forwarded = 0  # bytes handed to the sink so far (also when `pipe` failed)

    @property
    def usable(self) -> bool:
        protocol, cycle = self._protocol, self._cycle
        return (
            not self.used
            and protocol.cycle is cycle
            and not protocol.pipeline
            and cycle.more_body
            and not cycle.disconnected
            and not cycle.waiting_for_100_continue
            and not protocol.transport.is_closing()
        )

    async def pipe(self, sink: BodySink, *, buffer_size: int, stall_timeout_s: float) -> int:
        """Send the body bytes not yet received through `receive()` to `sink`; returns how
        many (`forwarded` counts them as they go). Raises ClientGone, SinkEnded or
        SinkStalled (after `stall_timeout_s` without the sink taking a byte), or what
        `sink.write` raised."""
        protocol, cycle = self._protocol, self._cycle
        if self.used or protocol.cycle is not cycle or cycle.waiting_for_100_continue:
            raise RuntimeError("the body tap was used, or receive() was never called")
        self.used = True
        if cycle.disconnected or protocol.transport.is_closing():
            raise ClientGone("the client disconnected")
        pending = bytes(cycle.body)
        cycle.body = bytearray()
        if not cycle.more_body:
            # uvicorn read the rest meanwhile (a small body, or a slow upstream connect):
            # nothing left to tap, and the connection stays as uvicorn keeps it.
            if pending:
                sink.write(memoryview(pending))  # its own object: may stay queued
                self.forwarded += len(pending)
            return self.forwarded
        transport = protocol.transport
        protocol.flow.pause_reading()
        cycle.keep_alive = False  # the parser never sees the tapped bytes
        reader = _Reader(
            self, protocol, sink, buffer_size, self.content_length - protocol.body_received
        )
        transport.set_protocol(reader)
        try:
            flushed = True
            if pending:
                flushed = sink.write(memoryview(pending))  # its own object: may stay queued
                self.forwarded += len(pending)
            sink.set_drained_callback(reader.sink_drained)
            if flushed:
                transport.resume_reading()
            else:
                reader.waiting_for_sink = True
            await _until_done(reader, sink, stall_timeout_s)
        except BaseException:
            sink.set_drained_callback(None)
            if not transport.is_closing():
                # The client may still be sending: take the rest of the body (dropping it)
                # so that it reads the error answer instead of a reset connection.
                reader.discard_rest(cycle)
            self._finished()
            raise
        sink.set_drained_callback(None)
        if not transport.is_closing():
            transport.pause_reading()
            transport.set_protocol(protocol)
        self._finished()
        return self.forwarded

    def _finished(self) -> None:
        # What `receive()` says from now on: the body has ended.
        self._cycle.more_body = False
        self._cycle.message_event.set()


async def _until_done(reader: _Reader, sink: BodySink, stall_timeout_s: float) -> None:
    while True:
        progress = reader.progress
        done, _ = await asyncio.wait(
            (reader.done, sink.ended),
            timeout=stall_timeout_s,
            return_when=asyncio.FIRST_COMPLETED,
        )
        if reader.done in done:
            reader.done.result()  # raises the reader's failure
            return
        if sink.ended in done:
            raise SinkEnded()
        if reader.waiting_for_sink and reader.progress == progress:
            raise SinkStalled(f"the sink took nothing for {stall_timeout_s} s")


class _CloseWhenDrained:
    """The request cycle's transport after a failed pipe: uvicorn's `close()` (it answers
    with `Connection: close`) waits until the rest of the body has been read and dropped,
    since closing with unread bytes makes the kernel reset the connection and the client
    could lose the answer. Everything else is the real transport."""

    def __init__(self, transport: Any, reader: _Reader) -> None:
        self._transport = transport
        self._reader = reader

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)

    def close(self) -> None:
        self._reader.close_requested = True
        if self._reader.remaining <= 0:
            self._transport.close()


class _Reader(asyncio.BufferedProtocol):
    """The connection's protocol while tapped: socket → buffer → sink, one buffer at a time
    (the kernel's socket buffers on both sides keep the pipe full)."""

    def __init__(
        self, tap: BodyTap, owner: TapProtocol, sink: BodySink, size: int, remaining: int
    ) -> None:
        self._tap = tap
        self._owner = owner
        self._sink = sink
        self._view = memoryview(bytearray(size))
        self.remaining = remaining
        self.progress = 0
        self.waiting_for_sink = False
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.discarding = False
        self.close_requested = False
        self._idle: asyncio.TimerHandle | None = None

    def get_buffer(self, sizehint: int) -> memoryview:
        if self.remaining <= 0:  # only while discarding: whatever follows the body
            return self._view
        return self._view[: min(len(self._view), self.remaining)]

    def buffer_updated(self, nbytes: int) -> None:
        if self.discarding:
            self._discarded(nbytes)
            return
        if self.done.done():
            return
        self.remaining -= nbytes
        try:
            flushed = self._sink.write(self._view[:nbytes])
        except Exception as exc:
            self._owner.transport.pause_reading()
            self.done.set_exception(exc)
            return
        self._tap.forwarded += nbytes
        self.progress += 1
        if self.remaining <= 0:
            self._owner.transport.pause_reading()
            self.done.set_result(None)
        elif not flushed:
            self.waiting_for_sink = True
            self._owner.transport.pause_reading()

    def sink_drained(self) -> None:
        self.progress += 1
        if self.waiting_for_sink and not self.done.done():
            self.waiting_for_sink = False
            self._owner.transport.resume_reading()

    # --- after a failure: a lingering close ---------------------------------------------

    def discard_rest(self, cycle: Any) -> None:
        """Read and drop the rest of the body while the error answer goes out; close once
        both are done. A client that stops sending is given uvicorn's keep-alive timeout
        between reads, then the connection closes."""
        self.discarding = True
        if self.done.done() and not self.done.cancelled():
            self.done.exception()  # retrieved: the failure is being handled
        cycle.transport = _CloseWhenDrained(cycle.transport, self)
        respond = cycle.on_response

        def after_response() -> None:
            respond()
            # uvicorn armed its keep-alive timer for a next request; there is none (the
            # connection closes), and the idle timer below bounds the wait instead.
            self._owner._unset_keepalive_if_required()

        cycle.on_response = after_response
        if self.remaining > 0:
            self._arm_idle()
            self._owner.transport.resume_reading()

    def _discarded(self, nbytes: int) -> None:
        if self.remaining <= 0:  # bytes after the body (a pipelined request): unusable
            self._close()
            return
        self.remaining -= nbytes
        if self.remaining > 0:
            self._arm_idle()
            return
        self._owner.transport.pause_reading()
        if self._idle is not None:
            self._idle.cancel()
        if self.close_requested:
            self._close()

    def _arm_idle(self) -> None:
        if self._idle is not None:
            self._idle.cancel()
        loop = asyncio.get_running_loop()
        self._idle = loop.call_later(self._owner.timeout_keep_alive, self._close)

    def _close(self) -> None:
        if self._idle is not None:
            self._idle.cancel()
        self._owner.transport.close()

    # --- the connection --------------------------------------------------------------

    def eof_received(self) -> bool:
        if self.discarding:
            # The client has sent all it will: the answer can still go out, then close.
            self.remaining = 0
            if self._idle is not None:
                self._idle.cancel()
            if self.close_requested:
                self._close()
            return True
        if not self.done.done():
            self.done.set_exception(ClientGone("the client stopped sending mid-body"))
        return False  # close the transport: the request can't be completed

    def connection_lost(self, exc: Exception | None) -> None:
        if self._idle is not None:
            self._idle.cancel()
        if not self.discarding and not self.done.done():
            self.done.set_exception(ClientGone("the client disconnected mid-body"))
        self._owner.connection_lost(exc)  # uvicorn's own clean-up (cycle.disconnected)

    def pause_writing(self) -> None:
        self._owner.pause_writing()  # the answer's flow control stays uvicorn's

    def resume_writing(self) -> None:
        self._owner.resume_writing()
