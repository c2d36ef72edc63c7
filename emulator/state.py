"""The emulator's in-memory state: settings, injected faults and what it received.

One `EmulatorState` per app, at `app.state.emu`; route modules reach it with `get_state`.
Everything here is process-local on purpose: the emulator is a single test double.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

import httpx
from starlette.requests import HTTPConnection

from emulator.config import EmulatorSettings

# Route names used as fault keys (the method + the path template, as upstream documents it).
ROUTES = (
    "POST /v2/upload",
    "POST /v2/transcript",
    "GET /v2/transcript",
    "GET /v2/transcript/{id}",
    "DELETE /v2/transcript/{id}",
    "GET /v3/token",
    "GET /v1/token",
    "GET /v1/voices",
    "POST /v1/chat/completions",
    "GET /v1/models",
    "WS /v3/ws",
    "WS /v1/ws",
    "WEBHOOK",
)


@dataclass
class Fault:
    """One injected misbehaviour, applied to the next `count` calls of a route.

    `status` answers with that status (with `Retry-After` when `retry_after` is set);
    `delay_s` waits before handling; `drop` cuts the connection mid-body (a streamed chat
    completion: after its first chunks); `close_code` closes a WebSocket with that code;
    `withhold` (POST /v2/transcript) carries the request out, then waits `delay_s` and
    cuts the connection mid-answer: the transcript exists, its creator never hears of it. For
    "WEBHOOK", `status` is what the delivery sees instead of the receiver's answer (0 = no
    answer / timeout).
    """

    status: int | None = None
    retry_after: int | None = None
    delay_s: float = 0.0
    drop: bool = False
    close_code: int | None = None
    count: int = 1
    withhold: bool = False

    def public(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "retry_after": self.retry_after,
            "delay_s": self.delay_s,
            "drop": self.drop,
            "close_code": self.close_code,
            "count": self.count,
            "withhold": self.withhold,
        }


class Faults:
    """Per-route queues of faults; `take` consumes one use of the first queued fault."""

    def __init__(self) -> None:
        self._queues: dict[str, list[Fault]] = {}
        self._lock = threading.Lock()

    def add(self, route: str, fault: Fault) -> None:
        if fault.count < 1:
            return
        with self._lock:
            self._queues.setdefault(route, []).append(fault)

    def take(self, route: str) -> Fault | None:
        # Fast path without the lock: hot routes (upload, token) pay one dict lookup.
        if not self._queues.get(route):
            return None
        with self._lock:
            queue = self._queues.get(route)
            if not queue:
                return None
            fault = queue[0]
            fault.count -= 1
            if fault.count <= 0:
                queue.pop(0)
            return Fault(
                status=fault.status,
                retry_after=fault.retry_after,
                delay_s=fault.delay_s,
                drop=fault.drop,
                close_code=fault.close_code,
                count=1,
                withhold=fault.withhold,
            )

    def clear(self, route: str | None = None) -> None:
        with self._lock:
            if route is None:
                self._queues.clear()
            else:
                self._queues.pop(route, None)

    def snapshot(self) -> dict[str, list[dict[str, Any]]]:
        with self._lock:
            return {r: [f.public() for f in q] for r, q in self._queues.items() if q}


@dataclass
class UploadRecord:
    key: str  # the upload's id (the last path segment of its upload_url)
    owner: str  # sha256 of the API key that uploaded it (never the key itself)
    size: int  # bytes received
    sha256: str
    path: str | None  # None in sink mode
    created_at: float
    # The first bytes (sink mode keeps only these): enough for a WAV header's duration.
    head: bytes = b""


@dataclass
class WebhookAttempt:
    transcript_id: str
    url: str
    attempt: int
    status: int | None  # None: no answer (timeout / connection error)
    error: str | None
    at: float
    duration_ms: float
    body: dict[str, Any]
    header_name: str | None


@dataclass
class LlmCall:
    id: str
    model: str
    stream: bool
    request: dict[str, Any]
    status: int
    response_text: str | None
    at: float


@dataclass
class WsFrame:
    """One WebSocket message the emulator received."""

    kind: str  # "binary" or "text"
    size: int  # bytes on the wire (text: UTF-8 length)
    at: float  # time.monotonic() at arrival (system-wide clock, comparable across processes)
    duration_ms: float | None = None  # audio duration of a binary frame / input.audio event
    type: str | None = None  # the "type" of a text message, when it parsed


@dataclass
class WsSessionRecord:
    """What one WebSocket session (streaming STT or Voice Agent) received and how it ended.

    Filled by emulator.streaming / emulator.agents; served by the control endpoints.
    `pcm` holds the input audio exactly as received (streaming: the binary frames'
    bytes in `encoding`; Voice Agent: the decoded `input.audio` payloads).
    """

    id: str
    product: str  # "streaming" or "agent"
    path: str
    params: dict[str, Any]
    sample_rate: int
    encoding: str
    started_at: float  # unix time
    frames: list[WsFrame] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)  # received text message types, in order
    sent: list[str] = field(default_factory=list)  # sent message types, in order
    pcm: bytearray = field(default_factory=bytearray)
    output_pcm: bytearray = field(default_factory=bytearray)  # Voice Agent reply audio sent
    output_sample_rate: int | None = None
    output_encoding: str | None = None
    close_code: int | None = None
    close_reason: str | None = None
    terminate_received: bool = False
    ended_at: float | None = None  # unix time
    extra: dict[str, Any] = field(default_factory=dict)  # product-specific details

    def public(self, with_frames: bool = True) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": self.id,
            "product": self.product,
            "path": self.path,
            "params": self.params,
            "sample_rate": self.sample_rate,
            "encoding": self.encoding,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "messages": list(self.messages),
            "sent": list(self.sent),
            "pcm_bytes": len(self.pcm),
            "output_pcm_bytes": len(self.output_pcm),
            "output_sample_rate": self.output_sample_rate,
            "output_encoding": self.output_encoding,
            "close_code": self.close_code,
            "close_reason": self.close_reason,
            "terminate_received": self.terminate_received,
            "frame_count": len(self.frames),
            **self.extra,
        }
        if with_frames:
            data["frames"] = [
                {
                    "kind": f.kind,
                    "size": f.size,
                    "at": f.at,
                    "duration_ms": f.duration_ms,
                    "type": f.type,
                }
                for f in list(self.frames)
            ]
        return data


@dataclass
class Records:
    uploads: dict[str, UploadRecord] = field(default_factory=dict)
    # Transcript objects by id (the dicts the API serves, plus private `_owner` etc.).
    transcripts: dict[str, dict[str, Any]] = field(default_factory=dict)
    webhook_attempts: list[WebhookAttempt] = field(default_factory=list)
    llm_calls: list[LlmCall] = field(default_factory=list)
    # Filled by the WebSocket modules (streaming, agents): session id -> their record.
    ws_sessions: dict[str, WsSessionRecord] = field(default_factory=dict)


@dataclass
class Knobs:
    """Schedule knobs that tests change at run time (`/_emulator/config`)."""

    processing_factor: float
    min_processing_s: float
    queued_s: float
    webhook_retry_interval_s: float
    webhook_timeout_s: float
    webhook_max_retries: int
    webhook_before_response: bool


class EmulatorState:
    def __init__(self, settings: EmulatorSettings) -> None:
        self.settings = settings
        self.faults = Faults()
        self.records = Records()
        # Set by the app's lifespan: the client for webhooks and audio fetches.
        self.http: httpx.AsyncClient | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self.knobs = Knobs(
            processing_factor=settings.processing_factor,
            min_processing_s=settings.min_processing_s,
            queued_s=settings.queued_s,
            webhook_retry_interval_s=settings.webhook_retry_interval_s,
            webhook_timeout_s=settings.webhook_timeout_s,
            webhook_max_retries=settings.webhook_max_retries,
            webhook_before_response=settings.webhook_before_response,
        )

    def reset(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        self.faults.clear()
        self.records = Records()

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run in the background, keeping a reference (and cancelling it at shutdown)."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def aclose(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def get_state(conn: HTTPConnection) -> EmulatorState:
    state: EmulatorState = conn.app.state.emu
    return state
