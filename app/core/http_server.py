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

The same protocol bounds how long a client may take (uvicorn has a keep-alive timeout, but
none for headers or bodies): request headers must be complete within
`REQUEST_HEADER_TIMEOUT_S` of their first byte (or of the connection's opening), and a body
that the service is waiting for may go `REQUEST_BODY_IDLE_TIMEOUT_S` without a byte. Either
breach answers `408 {"error": "RequestTimeout", ...}` when no answer has started and
closes the connection; the app's `receive()` then reports a disconnect, which aborts an
upload's upstream request. This covers every route, the body tap included.

**The fence.** The tap and the timeouts use uvicorn internals (attributes of
`HttpToolsProtocol` and `RequestResponseCycle`). `check_uvicorn()` looks for each of them,
and the tap also requires a uvicorn version it was tested with; when something is off, the
part that needs it stays off (uploads take the ASGI path) and `configure()` logs one
warning at start-up naming what is missing.
"""

from __future__ import annotations

import asyncio
import dis
import json
import logging
from dataclasses import dataclass
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from app.core.body_tap import EXTENSION, BodySink, ClientGone, SinkEnded, SinkStalled

logger = logging.getLogger(__name__)

# uvicorn versions (major, minor) whose internals the tap was tested against.
TESTED_UVICORN = ((0, 54),)
# What the timeouts use of uvicorn's classes (methods and instance attributes).
TIMEOUT_NEEDS: dict[str, tuple[str, ...]] = {
    "protocol": (
        "connection_made",
        "connection_lost",
        "on_message_begin",
        "on_headers_complete",
        "on_body",
        "transport",
        "cycle",
        "flow",
        "headers",
        "loop",
    ),
    "cycle": (
        "more_body",
        "disconnected",
        "response_started",
        "response_complete",
        "keep_alive",
        "message_event",
        "waiting_for_100_continue",
    ),
}
# And what the tap uses on top.
TAP_NEEDS: dict[str, tuple[str, ...]] = {
    "protocol": (
        "scope",
        "scheme",
        "pipeline",
        "timeout_keep_alive",
        "_unset_keepalive_if_required",
        "pause_writing",
        "resume_writing",
    ),
    "cycle": ("body", "transport", "on_response"),
}


def _names(cls: type) -> set[str]:
    """What `cls` (with its bases) defines, and the attributes its methods assign on an
    instance (read from their bytecode: uvicorn sets most state in `__init__` or in
    `connection_made`)."""
    names = set(dir(cls))
    for klass in cls.__mro__:
        for value in vars(klass).values():
            code = getattr(value, "__code__", None)
            if code is not None:
                names.update(
                    ins.argval for ins in dis.get_instructions(code) if ins.opname == "STORE_ATTR"
                )
    return names


def check_uvicorn(
    version: str | None = None,
    protocol: type = HttpToolsProtocol,
    cycle: type = RequestResponseCycle,
) -> tuple[list[str], list[str]]:
    """(problems of the timeouts, problems of the tap): what is missing from uvicorn's
    classes, and for the tap an untested version. Empty lists: all there."""
    version = version or uvicorn.__version__
    found = {"protocol": _names(protocol), "cycle": _names(cycle)}

    def missing(needs: dict[str, tuple[str, ...]]) -> list[str]:
        return [
            f"{where}.{name}"
            for where, names in needs.items()
            for name in names
            if name not in found[where]
        ]

    timeout_problems = [f"uvicorn {version} lacks {m}" for m in missing(TIMEOUT_NEEDS)]
    tap_problems = list(timeout_problems)
    tap_problems += [f"uvicorn {version} lacks {m}" for m in missing(TAP_NEEDS)]
    try:
        major, minor = (int(part) for part in version.split(".")[:2])
        tested = (major, minor) in TESTED_UVICORN
    except ValueError:
        tested = False
    if not tested:
        known = ", ".join(f"{a}.{b}" for a, b in TESTED_UVICORN)
        tap_problems.append(f"uvicorn {version} is not a version the tap was tested with ({known})")
    return timeout_problems, tap_problems


_TIMEOUT_PROBLEMS, _TAP_PROBLEMS = check_uvicorn()


@dataclass
class Timeouts:
    header_s: float = 10.0
    body_idle_s: float = 30.0


TIMEOUTS = Timeouts()


def configure(header_timeout_s: float, body_idle_timeout_s: float) -> None:
    """Set the timeouts (from the settings, in `create_app`) and say once, at start-up,
    what the fence switched off."""
    TIMEOUTS.header_s = header_timeout_s
    TIMEOUTS.body_idle_s = body_idle_timeout_s
    if _TAP_PROBLEMS or _TIMEOUT_PROBLEMS:
        logger.warning(
            "http.server.fenced",
            extra={
                "body_tap": "off" if _TAP_PROBLEMS else "on",
                "timeouts": "off" if _TIMEOUT_PROBLEMS else "on",
                "problems": sorted(set(_TAP_PROBLEMS) | set(_TIMEOUT_PROBLEMS)),
                "hint": "uploads take the ASGI path; pin the uvicorn version in pyproject.toml",
            },
        )


def timeout_response(detail: str) -> bytes:
    """A whole `408` answer that closes the connection."""
    body = json.dumps({"error": "RequestTimeout", "detail": detail}).encode()
    return (
        b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
        b"content-length: " + str(len(body)).encode() + b"\r\nconnection: close\r\n\r\n" + body
    )


class TapProtocol(HttpToolsProtocol):
    """HttpToolsProtocol that counts body bytes, offers `aai.body_tap` per request, and
    times out slow headers and idle bodies."""

    body_received = 0
    tap_enabled = not _TAP_PROBLEMS
    timeouts_enabled = not _TIMEOUT_PROBLEMS
    _header_timer: asyncio.TimerHandle | None = None
    # Loop time since when headers are awaited (connection made, or a request's first
    # bytes), None while a request is being answered or a kept-alive connection is idle.
    _header_since: float | None = None
    _request_begun = False  # a request's first bytes came, its headers are not complete
    _body_timer: asyncio.TimerHandle | None = None
    _body_tap: BodyTap | None = None

    # --- header timeout ------------------------------------------------------------------
    # One timer per connection, not per request: a request only stamps `_header_since`,
    # and the timer, when it fires, checks that stamp and re-arms for what is left of it.
    # (Arming and cancelling a loop timer for every request cost ~1 % of a token mint.)

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if self.timeouts_enabled:
            self._header_since = self.loop.time()
            self._arm_header_timer(TIMEOUTS.header_s)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._request_begun = True
        if self.timeouts_enabled:
            if self._header_since is None:
                self._header_since = self.loop.time()
            if self._header_timer is None:
                self._arm_header_timer(TIMEOUTS.header_s)

    def _arm_header_timer(self, delay: float) -> None:
        self._header_timer = self.loop.call_later(delay, self._header_timeout)

    def _header_timeout(self) -> None:
        self._header_timer = None
        since = self._header_since
        if since is None:
            return  # the headers came in time; the next request arms the timer again
        left = since + TIMEOUTS.header_s - self.loop.time()
        if left > 0:
            self._arm_header_timer(left)  # a later request's headers, with their own deadline
            return
        self._header_since = None
        transport = self.transport
        if transport.is_closing():
            return
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            cycle.keep_alive = False  # a request is being answered: close after it
            return
        if self._request_begun:
            logger.info("http.header_timeout", extra={"client": _client(self)})
            transport.write(
                timeout_response(f"The request headers took longer than {TIMEOUTS.header_s:g} s.")
            )
        transport.close()  # an idle new connection is just closed

    # --- body idle timeout ---------------------------------------------------------------

    def on_headers_complete(self) -> None:
        self._header_since = None
        self._request_begun = False
        self.body_received = 0
        self._body_tap = None
        cycle_before = self.cycle
        super().on_headers_complete()
        scope: Any = self.scope
        cycle = self.cycle
        if scope.get("type") != "http" or cycle is None or cycle is cycle_before:
            return
        length = None
        chunked = False
        for name, value in self.headers:
            if name == b"content-length":
                length = value
            elif name == b"transfer-encoding":
                chunked = True
        if self.timeouts_enabled and (chunked or (length is not None and length != b"0")):
            self._watch_body(cycle)
        if chunked or length is None or not length.isdigit() or not self.tap_enabled:
            return
        if self.scheme != "http":
            return
        tap = self._body_tap = BodyTap(self, cycle, int(length))
        scope.setdefault("extensions", {})[EXTENSION] = tap

    def on_body(self, body: bytes) -> None:
        self.body_received += len(body)
        super().on_body(body)

    def _watch_body(self, cycle: Any) -> None:
        if self._body_timer is not None:
            self._body_timer.cancel()
        idle_s = TIMEOUTS.body_idle_s
        state = [-1, self.loop.time()]  # progress at the last check, idle since

        def check() -> None:
            self._body_timer = None
            if (
                self.cycle is not cycle
                or not cycle.more_body
                or cycle.disconnected
                or cycle.response_complete
                or self.transport.is_closing()
            ):
                return
            now = self.loop.time()
            tap = self._body_tap
            progress = self.body_received + (tap.forwarded if tap is not None else 0)
            if progress != state[0] or not self._waiting_for_body(cycle):
                state[0], state[1] = progress, now
            elif now - state[1] >= idle_s:
                self._body_timeout(cycle)
                return
            self._body_timer = self.loop.call_later(max(idle_s / 4, 0.01), check)

        self._body_timer = self.loop.call_later(max(idle_s / 4, 0.01), check)

    def _waiting_for_body(self, cycle: Any) -> bool:
        """True when only the client can make the body progress: the service is reading
        (not paused because it has bytes it hasn't taken, nor before a 100 Continue)."""
        if cycle.waiting_for_100_continue:
            return False
        tap = self._body_tap
        if tap is not None and tap.reader is not None:
            return not tap.reader.waiting_for_sink and not tap.reader.done.done()
        return not self.flow.read_paused

    def _body_timeout(self, cycle: Any) -> None:
        logger.info(
            "http.body_idle_timeout",
            extra={"client": _client(self), "path": self.scope.get("path")},
        )
        transport = self.transport
        if not cycle.response_started:
            transport.write(
                timeout_response(
                    f"No request body bytes arrived for {TIMEOUTS.body_idle_s:g} s; "
                    "the connection is closed."
                )
            )
        # The app's receive() now reports a disconnect (an upload aborts its upstream
        # request), and whatever it sends is dropped: the answer above is the answer.
        cycle.disconnected = True
        cycle.keep_alive = False
        cycle.message_event.set()
        transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None
        super().connection_lost(exc)


def _client(protocol: Any) -> str | None:
    client = getattr(protocol, "client", None)
    return f"{client[0]}:{client[1]}" if client else None


class BodyTap:
    """The rest of one request's body, read from the socket into a reusable buffer."""

    def __init__(self, protocol: TapProtocol, cycle: Any, content_length: int) -> None:
        self._protocol = protocol
        self._cycle = cycle
        self.content_length = content_length
        self.used = False
        self.forwarded = 0  # bytes handed to the sink so far (also when `pipe` failed)
        self.reader: _Reader | None = None  # while piping

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
        reader = self.reader = _Reader(
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
