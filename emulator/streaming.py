"""Streaming STT as upstream (reference section 9, close codes in 14): `/v3/token`, `/v3/ws`.

A session: auth (raw key in `Authorization`, a temporary token there as the SDK sends it,
or `?token=`), then `Begin`; binary audio frames are checked (50-1000 ms each, no faster
than real time), appended to the session's PCM and fed to an energy VAD. Speech onset
sends `SpeechStarted`; while a turn runs, partial `Turn`s (`end_of_turn: false`) follow
the audio; the silence that ends a turn (`max_turn_silence`) or a `ForceEndpoint` sends
the final `Turn`. Text comes from `recognition.recognize` on the turn's audio, run in a
worker thread. `Terminate` flushes the open turn, sends `Termination` and closes with 1000.

One worker task per session sends every server message in order, so a turn's final
`Turn` always precedes the next turn's `SpeechStarted`; the receive loop stays free to
enforce pacing while recognition runs.

The old `/v2/realtime/ws` answers HTTP 410 (to a plain GET and to a WebSocket upgrade).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from emulator import tokens
from emulator.audio import BYTES_PER_SAMPLE, TurnDetector, chunk_duration_ms, to_pcm16
from emulator.auth import check_raw_key
from emulator.recognition import Word, recognize
from emulator.state import EmulatorState, Fault, WsFrame, WsSessionRecord, get_state

logger = logging.getLogger(__name__)

ROUTE = "WS /v3/ws"

# Close codes (reference section 14).
NORMAL = 1000
UNAUTHORIZED = 1008
SERVER_ERROR = 3005
INVALID_MESSAGE = 3006
AUDIO_VIOLATION = 3007
SESSION_EXPIRED = 3008
TOO_MANY_SESSIONS = 3009

MIN_CHUNK_MS, MAX_CHUNK_MS = 50.0, 1000.0
MAX_KEYTERMS, MAX_KEYTERM_CHARS = 100, 50
# A partial Turn is considered after every this much new audio inside a turn.
PARTIAL_INTERVAL_MS = 400
# Audio kept before a turn's detected onset and after its last voiced frame, so the
# recogniser sees whole words.
TURN_PAD_MS = 200
SPEECH_STARTED_CONFIDENCE = 0.9
# A turn is recognised in segments cut at pauses once they hold this much audio (and cut
# anyway at the maximum), so partials re-decode only the current segment.
SEGMENT_MIN_MS = 2000
SEGMENT_MAX_MS = 10_000
# The longest Terminate waits for queued Turns before Termination (the SDK waits 5 s).
FLUSH_TIMEOUT_S = 3.0

# The `speech_model` values the SDK (1.8) knows; the default when omitted is upstream's
# historical one.
U3_MODELS = frozenset(
    {
        "u3-rt-pro",
        "u3-rt-pro-beta-1",
        "u3-pro",
        "universal-3-5-pro",
        "universal-3-6",
        "universal-3-6-pro",
    }
)
MULTILINGUAL_MODELS = frozenset({"universal-streaming-multilingual", "whisper-rt"})
SPEECH_MODELS = U3_MODELS | MULTILINGUAL_MODELS | {"universal-streaming-english"}
DEFAULT_SPEECH_MODEL = "universal-streaming-english"
ENCODINGS = frozenset({"pcm_s16le", "pcm_mulaw"})
SELF_DESCRIBING_ENCODINGS = frozenset({"opus", "ogg_opus", "aac"})
# (min_turn_silence, max_turn_silence) defaults in ms: U3 Pro / Universal-Streaming.
U3_SILENCE = (100, 1000)
UNIVERSAL_SILENCE = (400, 1280)


T = TypeVar("T")

# Recognition for every WebSocket session runs on this one thread: the Whisper model
# is a process-wide singleton behind a lock anyway, and waiting for it here, rather than in
# the loop's default executor, never starves other thread work (upload hashing, resampling).
_RECOGNIZER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="emu-ws-recognize")


async def in_recognizer(fn: Callable[[], T]) -> T:
    """Run `fn` (blocking recognition) on the WebSocket recognition thread."""
    return await asyncio.get_running_loop().run_in_executor(_RECOGNIZER, fn)


class ParamError(ValueError):
    """A query parameter or UpdateConfiguration field upstream would refuse (close 3006)."""


# ---------------------------------------------------------------- parameters


def _bool(name: str, raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    value = str(raw).strip().lower()
    if value in ("true", "1", "yes"):
        return True
    if value in ("false", "0", "no"):
        return False
    raise ParamError(f"{name} must be a boolean")


def _int(name: str, raw: Any, low: int, high: int) -> int:
    if isinstance(raw, bool):
        raise ParamError(f"{name} must be an integer")
    try:
        value = int(raw)
    except (TypeError, ValueError):
        raise ParamError(f"{name} must be an integer") from None
    if not low <= value <= high:
        raise ParamError(f"{name} must be between {low} and {high}")
    return value


def _float(name: str, raw: Any, low: float, high: float) -> float:
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise ParamError(f"{name} must be a number") from None
    if not low <= value <= high:
        raise ParamError(f"{name} must be between {low} and {high}")
    return value


def _keyterms(values: list[Any]) -> list[str]:
    """`keyterms_prompt` as the SDK sends it (a JSON list) or as repeated query values."""
    terms: list[Any] = []
    for value in values:
        if isinstance(value, list):
            terms.extend(value)
        elif isinstance(value, str) and value.lstrip().startswith("["):
            try:
                parsed = json.loads(value)
            except json.JSONDecodeError:
                raise ParamError("keyterms_prompt must be a JSON list of strings") from None
            if not isinstance(parsed, list):
                raise ParamError("keyterms_prompt must be a list of strings")
            terms.extend(parsed)
        else:
            terms.append(value)
    if len(terms) > MAX_KEYTERMS:
        raise ParamError(f"keyterms_prompt accepts at most {MAX_KEYTERMS} terms")
    for term in terms:
        if not isinstance(term, str) or not term.strip():
            raise ParamError("keyterms_prompt must be a list of non-empty strings")
        if len(term) > MAX_KEYTERM_CHARS:
            raise ParamError(
                f"each keyterms_prompt term must be at most {MAX_KEYTERM_CHARS} characters"
            )
    return [str(t) for t in terms]


@dataclass
class StreamParams:
    sample_rate: int
    encoding: str
    speech_model: str
    speaker_labels: bool = False
    keyterms_prompt: list[str] = field(default_factory=list)
    min_turn_silence: int = 400
    max_turn_silence: int = 1280
    inactivity_timeout: int | None = None
    format_turns: bool = False
    language_detection: bool = False
    vad_threshold: float | None = None
    end_of_turn_confidence_threshold: float | None = None
    prompt: str | None = None

    @property
    def u3(self) -> bool:
        return self.speech_model in U3_MODELS

    def energy_threshold(self) -> float:
        """`vad_threshold` (0-1) as an RMS level: 0.5 -> -40 dBFS, each 0.1 = 4 dB."""
        if self.vad_threshold is None:
            return 0.01
        return float(10 ** ((-60.0 + 40.0 * self.vad_threshold) / 20.0))


def parse_params(query: Mapping[str, str], multi: Mapping[str, list[str]]) -> StreamParams:
    """The session's parameters from the upgrade's query string; ParamError when invalid."""
    encoding = query.get("encoding") or "pcm_s16le"
    if encoding in SELF_DESCRIBING_ENCODINGS:
        raise ParamError(f"encoding {encoding} is not supported by this emulator (PCM only)")
    if encoding not in ENCODINGS:
        raise ParamError(f"encoding must be one of: {', '.join(sorted(ENCODINGS))}")
    raw_rate = query.get("sample_rate")
    if raw_rate is None or raw_rate == "":
        raise ParamError("sample_rate is required")
    sample_rate = _int("sample_rate", raw_rate, 8000, 48000)
    model = query.get("speech_model") or DEFAULT_SPEECH_MODEL
    if model not in SPEECH_MODELS:
        raise ParamError(f"speech_model must be one of: {', '.join(sorted(SPEECH_MODELS))}")
    params = StreamParams(sample_rate=sample_rate, encoding=encoding, speech_model=model)
    params.min_turn_silence, params.max_turn_silence = (
        U3_SILENCE if params.u3 else UNIVERSAL_SILENCE
    )
    if "min_end_of_turn_silence_when_confident" in query and "min_turn_silence" not in query:
        params.min_turn_silence = _int(
            "min_end_of_turn_silence_when_confident",
            query["min_end_of_turn_silence_when_confident"],
            0,
            60_000,
        )
    apply_update(params, {k: v for k, v in query.items() if k != "keyterms_prompt"})
    if multi.get("keyterms_prompt"):
        params.keyterms_prompt = _keyterms(list(multi["keyterms_prompt"]))
    if "speaker_labels" in query:
        params.speaker_labels = _bool("speaker_labels", query["speaker_labels"])
    if "max_speakers" in query:
        _int("max_speakers", query["max_speakers"], 1, 10)
    if query.get("inactivity_timeout"):
        params.inactivity_timeout = _int("inactivity_timeout", query["inactivity_timeout"], 5, 3600)
    if "language_detection" in query:
        params.language_detection = _bool("language_detection", query["language_detection"])
    if query.get("domain") and query["domain"] != "medical-v1":
        raise ParamError("domain must be medical-v1")
    return params


def apply_update(params: StreamParams, fields: Mapping[str, Any]) -> None:
    """The fields UpdateConfiguration may change (also read from the query string)."""
    if "keyterms_prompt" in fields:
        value = fields["keyterms_prompt"]
        params.keyterms_prompt = _keyterms([] if value is None else [value])
    if fields.get("min_turn_silence") is not None:
        params.min_turn_silence = _int("min_turn_silence", fields["min_turn_silence"], 0, 60_000)
    if fields.get("max_turn_silence") is not None:
        params.max_turn_silence = _int("max_turn_silence", fields["max_turn_silence"], 0, 60_000)
    if fields.get("end_of_turn_confidence_threshold") is not None:
        params.end_of_turn_confidence_threshold = _float(
            "end_of_turn_confidence_threshold", fields["end_of_turn_confidence_threshold"], 0, 1
        )
    if fields.get("vad_threshold") is not None:
        params.vad_threshold = _float("vad_threshold", fields["vad_threshold"], 0, 1)
    if fields.get("format_turns") is not None:
        params.format_turns = _bool("format_turns", fields["format_turns"])
    if fields.get("filter_profanity") is not None:
        _bool("filter_profanity", fields["filter_profanity"])
    if fields.get("prompt") is not None:
        if not isinstance(fields["prompt"], str):
            raise ParamError("prompt must be a string")
        params.prompt = fields["prompt"]
    if params.min_turn_silence > params.max_turn_silence:
        raise ParamError("min_turn_silence must not exceed max_turn_silence")


UPDATABLE = frozenset(
    {
        "type",
        "keyterms_prompt",
        "min_turn_silence",
        "max_turn_silence",
        "end_of_turn_confidence_threshold",
        "vad_threshold",
        "format_turns",
        "filter_profanity",
        "prompt",
        "min_end_of_turn_silence_when_confident",
    }
)


# ---------------------------------------------------------------- shared session plumbing


def active_sessions(conn: HTTPConnection) -> Counter[str]:
    """Open WebSocket sessions per product ("streaming", "agent") in this emulator app."""
    app_state = conn.app.state
    counter: Counter[str] | None = getattr(app_state, "emu_ws_active", None)
    if counter is None:
        counter = Counter()
        app_state.emu_ws_active = counter
    return counter


def new_record(
    state: EmulatorState, ws: WebSocket, product: str, sample_rate: int, encoding: str
) -> WsSessionRecord:
    params = {k: v for k, v in ws.query_params.items() if k != "token"}
    record = WsSessionRecord(
        id=str(uuid.uuid4()),
        product=product,
        path=ws.url.path,
        params=params,
        sample_rate=sample_rate,
        encoding=encoding,
        started_at=time.time(),
    )
    state.records.ws_sessions[record.id] = record
    return record


async def close_ws(ws: WebSocket, record: WsSessionRecord | None, code: int, reason: str) -> None:
    """Close with `code` (if the socket is still open) and note it in the record."""
    if record is not None and record.close_code is None:
        record.close_code, record.close_reason = code, reason
        record.ended_at = time.time()
    connected = WebSocketState.CONNECTED
    if ws.application_state == connected and ws.client_state == connected:
        try:
            await ws.close(code, reason[:120])
        except (RuntimeError, OSError, WebSocketDisconnect):
            pass


async def deny(ws: WebSocket, status: int, message: str, retry_after: int | None = None) -> None:
    """Refuse the upgrade with a plain HTTP status (the WebSocket denial response)."""
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
    await ws.send_denial_response(JSONResponse({"error": message}, status, headers=headers))


async def take_ws_fault(
    ws: WebSocket, state: EmulatorState, route: str
) -> tuple[Fault | None, bool]:
    """Consume one injected fault for a WebSocket route: sleep its latency, and refuse the
    upgrade when it names an HTTP status without a close code. (fault, refused)."""
    fault = state.faults.take(route)
    if fault is not None and fault.delay_s > 0:
        await asyncio.sleep(fault.delay_s)
    if fault is not None and fault.status is not None and fault.close_code is None:
        await deny(ws, fault.status, f"Injected failure ({fault.status}).", fault.retry_after)
        return fault, True
    return fault, False


async def injected_close(ws: WebSocket, record: WsSessionRecord, fault: Fault | None) -> bool:
    """Close an accepted socket as the fault says (its close code, or 1011 for a drop)."""
    if fault is None or (fault.close_code is None and not fault.drop):
        return False
    code = fault.close_code if fault.close_code is not None else 1011
    await close_ws(ws, record, code, f"Injected close ({code})")
    return True


# ---------------------------------------------------------------- the session


@dataclass
class _Job:
    kind: str  # "message", "segment", "partial", "final"
    message: dict[str, Any] | None = None
    turn: int = 0
    start_ms: int = 0
    end_ms: int = 0
    confidence: float = 0.0


class StreamSession:
    def __init__(
        self,
        ws: WebSocket,
        state: EmulatorState,
        record: WsSessionRecord,
        params: StreamParams,
        limit_s: float,
    ) -> None:
        self.ws = ws
        self.state = state
        self.record = record
        self.params = params
        self.limit_s = limit_s
        self.bytes_per_sample = BYTES_PER_SAMPLE[params.encoding]
        self.detector = TurnDetector(
            params.sample_rate,
            threshold=params.energy_threshold(),
            pause_silence_ms=params.min_turn_silence,
            end_silence_ms=params.max_turn_silence,
        )
        self.started = time.monotonic()
        self.last_activity = self.started
        self.audio_ms = 0.0
        self.bucket_ms = 0.0
        self.bucket_at: float | None = None
        self.queue: asyncio.Queue[_Job | None] = asyncio.Queue()
        self.send_lock = asyncio.Lock()
        # Turn bookkeeping: `turn` numbers detector turns; `turn_order` counts Turns sent.
        self.turn = 0
        self.open_turn: int | None = None
        # The open turn is recognised in segments (split at pauses): `segment_start` is
        # where the current one begins, `segment_words` what earlier ones said, per turn.
        self.segment_start = 0
        self.segment_words: dict[int, list[Word]] = {}
        self.prev_turn_end = 0
        self.last_partial_pos = 0
        self.partial_pending = False
        self.partial_interval_ms = PARTIAL_INTERVAL_MS
        self.last_partial_text: dict[int, str] = {}
        self.turn_order = 0
        self.words_sent = 0

    # -- sending ---------------------------------------------------------------------

    async def send(self, message: dict[str, Any]) -> None:
        async with self.send_lock:
            if self.ws.application_state != WebSocketState.CONNECTED:
                return
            try:
                await self.ws.send_text(json.dumps(message))
            except (RuntimeError, OSError, WebSocketDisconnect):
                return
            self.record.sent.append(str(message.get("type")))

    # -- the receive loop ------------------------------------------------------------

    async def run(self) -> tuple[int, str]:
        """Serve the session; returns the close code and reason it ended with."""
        worker = asyncio.create_task(self._work())
        try:
            outcome = await self._receive_loop()
        except Exception:
            logger.exception("emulator.stream.failed", extra={"session_id": self.record.id})
            outcome = (SERVER_ERROR, "Session cancelled: internal server error")
        if outcome[0] == NORMAL and self.record.terminate_received:
            # Flush: every queued turn is sent before Termination, within a bound (the
            # recogniser is shared: under load, a client must not wait forever).
            await self.queue.put(None)
            try:
                await asyncio.wait_for(worker, FLUSH_TIMEOUT_S)
            except TimeoutError:
                logger.warning(
                    "emulator.stream.flush_timeout", extra={"session_id": self.record.id}
                )
            await self.send(
                {
                    "type": "Termination",
                    "audio_duration_seconds": round(self.audio_ms / 1000),
                    "session_duration_seconds": round(time.monotonic() - self.started),
                }
            )
        else:
            worker.cancel()
            await asyncio.gather(worker, return_exceptions=True)
        return outcome

    async def _receive_loop(self) -> tuple[int, str]:
        inactivity = self.params.inactivity_timeout
        deadline = self.started + self.limit_s
        while True:
            now = time.monotonic()
            wait = deadline - now
            if wait <= 0:
                return SESSION_EXPIRED, "Session expired: maximum session duration exceeded"
            if inactivity is not None:
                idle_left = self.last_activity + inactivity - now
                if idle_left <= 0:
                    return SESSION_EXPIRED, "Session expired: inactivity timeout"
                wait = min(wait, idle_left)
            try:
                message = await asyncio.wait_for(self.ws.receive(), timeout=wait)
            except TimeoutError:
                continue
            if message["type"] == "websocket.disconnect":
                code = message.get("code") or 1005
                self.record.close_code = int(code)
                self.record.close_reason = message.get("reason") or "client disconnected"
                self.record.ended_at = time.time()
                return int(code), "client disconnected"
            now = time.monotonic()
            self.last_activity = now
            data = message.get("bytes")
            if data is not None:
                verdict = self._on_audio(data, now)
            else:
                verdict = await self._on_text(message.get("text") or "", now)
            if verdict is not None:
                return verdict

    def _on_audio(self, data: bytes, now: float) -> tuple[int, str] | None:
        duration = chunk_duration_ms(len(data), self.params.sample_rate, self.params.encoding)
        self.record.frames.append(WsFrame("binary", len(data), now, round(duration, 3)))
        if not MIN_CHUNK_MS - 1e-6 <= duration <= MAX_CHUNK_MS + 1e-6:
            return (
                AUDIO_VIOLATION,
                f"Audio chunk duration violation: {duration:.1f} ms, must be between "
                f"{MIN_CHUNK_MS:.0f} and {MAX_CHUNK_MS:.0f} ms",
            )
        # Leaky bucket drained at real time: the backlog (audio not yet "played" by the wall
        # clock) before this chunk may not exceed the burst tolerance.
        if self.bucket_at is not None:
            self.bucket_ms = max(0.0, self.bucket_ms - (now - self.bucket_at) * 1000.0)
        self.bucket_at = now
        if self.bucket_ms > self.state.settings.streaming_burst_ms:
            return AUDIO_VIOLATION, "Audio sent faster than real time"
        self.bucket_ms += duration
        self.record.pcm.extend(data)
        self.audio_ms += duration
        for event in self.detector.feed(to_pcm16(data, self.params.encoding)):
            if event.kind == "start":
                self.turn += 1
                self.open_turn = self.turn
                self.segment_start = max(self.prev_turn_end, event.at_ms - TURN_PAD_MS)
                self.last_partial_pos = event.at_ms
                self._enqueue(
                    _Job(
                        "message",
                        {
                            "type": "SpeechStarted",
                            "timestamp": event.at_ms,
                            "confidence": SPEECH_STARTED_CONFIDENCE,
                        },
                    )
                )
            elif event.kind == "pause":
                if event.at_ms - self.segment_start >= SEGMENT_MIN_MS:
                    self._close_segment(event.at_ms + TURN_PAD_MS // 2)
                self._queue_partial(self._pause_confidence(self.params.min_turn_silence))
            else:
                self._queue_final(event.at_ms)
        position = self.detector.position_ms
        if self.detector.in_turn and position - self.segment_start >= SEGMENT_MAX_MS:
            self._close_segment(position)  # a long stretch without a pause
        if self.detector.in_turn and position - self.last_partial_pos >= self.partial_interval_ms:
            self._queue_partial(self._pause_confidence(self.detector.trailing_silence_ms))
        return None

    def _pause_confidence(self, silence_ms: int) -> float:
        return round(min(0.99, silence_ms / max(1, self.params.max_turn_silence)), 4)

    def _close_segment(self, end_ms: int) -> None:
        """Recognise the turn's audio up to `end_ms` once; later partials decode only what
        follows, so a long turn costs linear, not quadratic, recognition time."""
        if self.open_turn is None or end_ms <= self.segment_start:
            return
        self._enqueue(
            _Job("segment", turn=self.open_turn, start_ms=self.segment_start, end_ms=end_ms)
        )
        self.segment_start = end_ms

    def _queue_partial(self, confidence: float) -> None:
        if self.open_turn is None or self.partial_pending:
            return  # one partial in flight is enough: it will read all audio so far
        self.partial_pending = True
        self.last_partial_pos = self.detector.position_ms
        self._enqueue(
            _Job("partial", turn=self.open_turn, start_ms=self.segment_start, confidence=confidence)
        )

    def _queue_final(self, speech_end_ms: int) -> None:
        if self.open_turn is None:
            return
        end = max(self.segment_start, min(self.detector.position_ms, speech_end_ms + TURN_PAD_MS))
        self._enqueue(_Job("final", turn=self.open_turn, start_ms=self.segment_start, end_ms=end))
        self.prev_turn_end = end
        self.open_turn = None

    def _enqueue(self, job: _Job) -> None:
        self.queue.put_nowait(job)

    async def _on_text(self, text: str, now: float) -> tuple[int, str] | None:
        try:
            payload = json.loads(text)
        except json.JSONDecodeError:
            self.record.frames.append(WsFrame("text", len(text.encode()), now))
            self.record.messages.append("<invalid json>")
            return INVALID_MESSAGE, "Invalid JSON"
        kind = payload.get("type") if isinstance(payload, dict) else None
        self.record.frames.append(
            WsFrame("text", len(text.encode()), now, type=kind if isinstance(kind, str) else None)
        )
        self.record.messages.append(str(kind))
        if kind == "Terminate":
            self.record.terminate_received = True
            self._force_endpoint()
            return NORMAL, "Terminated by client"
        if kind == "ForceEndpoint":
            self._force_endpoint()
            return None
        if kind == "KeepAlive":
            return None
        if kind == "UpdateConfiguration":
            assert isinstance(payload, dict)
            unknown = set(payload) - UPDATABLE
            if unknown:
                return INVALID_MESSAGE, f"Invalid UpdateConfiguration field: {sorted(unknown)[0]}"
            try:
                apply_update(self.params, payload)
            except ParamError as exc:
                return INVALID_MESSAGE, f"Invalid UpdateConfiguration: {exc}"
            self.detector.pause_silence_ms = self.params.min_turn_silence
            self.detector.end_silence_ms = self.params.max_turn_silence
            self.detector.threshold = self.params.energy_threshold()
            return None
        return INVALID_MESSAGE, f"Invalid message type: {kind!r}"

    def _force_endpoint(self) -> None:
        event = self.detector.force_end()
        if event is not None:
            self._queue_final(event.at_ms)

    # -- the worker: recognition and every server message, in order -------------------

    async def _work(self) -> None:
        while True:
            job = await self.queue.get()
            if job is None:
                return
            if job.kind == "message":
                assert job.message is not None
                await self.send(job.message)
            elif job.kind == "segment":
                words = await self._recognize(job.start_ms, job.end_ms, job.turn)
                self.segment_words.setdefault(job.turn, []).extend(words)
            elif job.kind == "partial":
                self.partial_pending = False
                if job.turn == self.open_turn:
                    await self._send_partial(job)
            else:
                await self._send_final(job)

    def _slice(self, start_ms: int, end_ms: int) -> bytes:
        rate, width = self.params.sample_rate, self.bytes_per_sample
        start = start_ms * rate // 1000 * width
        end = end_ms * rate // 1000 * width
        return bytes(self.record.pcm[start:end])

    async def _recognize(self, start_ms: int, end_ms: int, turn: int) -> list[Word]:
        raw = self._slice(start_ms, end_ms)
        params, mode = self.params, self.state.settings.recognition
        first = self.words_sent + len(self.segment_words.get(turn, ()))

        def run() -> list[Word]:
            return recognize(
                to_pcm16(raw, params.encoding), params.sample_rate, mode=mode, first=first
            )

        began = time.monotonic()
        words = await in_recognizer(run)
        # Partials never take more than about half the CPU of real time: the next one waits
        # at least twice as long (in audio) as this decode took.
        elapsed_ms = (time.monotonic() - began) * 1000
        self.partial_interval_ms = max(PARTIAL_INTERVAL_MS, int(2 * elapsed_ms))
        return [
            Word(w.text, w.start_ms + start_ms, w.end_ms + start_ms, w.confidence) for w in words
        ]

    async def _send_partial(self, job: _Job) -> None:
        end = self.detector.position_ms
        tail = await self._recognize(job.start_ms, end, job.turn)
        words = [*self.segment_words.get(job.turn, ()), *tail]
        text = " ".join(w.text for w in words)
        if not words or text == self.last_partial_text.get(job.turn) or job.turn != self.open_turn:
            return
        self.last_partial_text[job.turn] = text
        await self.send(self._turn(words, end_of_turn=False, confidence=job.confidence))

    async def _send_final(self, job: _Job) -> None:
        tail = await self._recognize(job.start_ms, job.end_ms, job.turn)
        words = [*self.segment_words.pop(job.turn, ()), *tail]
        self.last_partial_text.pop(job.turn, None)
        if not words:
            return  # a noise burst: upstream sends no Turn for a turn without words
        if self.params.u3:
            # U3 Pro: the end-of-turn Turn is already formatted.
            await self.send(self._turn(words, end_of_turn=True, confidence=1.0, formatted=True))
        else:
            await self.send(self._turn(words, end_of_turn=True, confidence=1.0))
            if self.params.format_turns:
                await self.send(self._turn(words, end_of_turn=True, confidence=1.0, formatted=True))
        self.turn_order += 1
        self.words_sent += len(words)

    def _turn(
        self, words: list[Word], *, end_of_turn: bool, confidence: float, formatted: bool = False
    ) -> dict[str, Any]:
        texts = [w.text for w in words]
        if formatted:
            texts = format_words(texts)
        speaker = "A" if self.params.speaker_labels else None
        word_items: list[dict[str, Any]] = []
        for i, (w, text) in enumerate(zip(words, texts, strict=True)):
            item: dict[str, Any] = {
                "start": w.start_ms,
                "end": w.end_ms,
                "text": text,
                "confidence": w.confidence,
                # In a partial, the last word may still change.
                "word_is_final": end_of_turn or i < len(words) - 1,
            }
            if speaker:
                item["speaker"] = speaker
            word_items.append(item)
        transcript = " ".join(texts)
        message: dict[str, Any] = {
            "type": "Turn",
            "turn_order": self.turn_order,
            "turn_is_formatted": formatted,
            "end_of_turn": end_of_turn,
            "transcript": transcript,
            "end_of_turn_confidence": confidence,
            "words": word_items,
            "utterance": transcript if end_of_turn else "",
        }
        if speaker:
            message["speaker_label"] = speaker
        if self.params.language_detection and self.params.speech_model in MULTILINGUAL_MODELS:
            message["language_code"] = "en"
            message["language_confidence"] = 0.99
        return message


def format_words(texts: list[str]) -> list[str]:
    """Upstream's formatting, in miniature: capitalised start and "I", a final period."""
    out = ["I" if t == "i" else t for t in texts]
    if out:
        out[0] = out[0][:1].upper() + out[0][1:]
        if not out[-1].endswith((".", "?", "!")):
            out[-1] = out[-1] + "."
    return out


# ---------------------------------------------------------------- endpoints


def _authenticate(ws: WebSocket, state: EmulatorState) -> tuple[bool, float | None]:
    """(authorised, the token's session cap). The raw key, or a streaming token given as
    `?token=` or in `Authorization` (where the SDK puts it)."""
    if check_raw_key(ws, state.settings):
        return True, None
    store = tokens.get_tokens(ws)
    grant = store.redeem(ws.query_params.get("token"), "streaming")
    if grant is None and "token" not in ws.query_params:
        grant = store.redeem(ws.headers.get("authorization"), "streaming")
    if grant is None:
        return False, None
    return True, float(grant.max_session_s)


async def stream_ws(ws: WebSocket) -> None:
    """Streaming STT WebSocket (Universal-Streaming / U3 Pro)."""
    state = get_state(ws)
    settings = state.settings
    fault, refused = await take_ws_fault(ws, state, ROUTE)
    if refused:
        return
    authorised, token_cap = _authenticate(ws, state)
    try:
        params: StreamParams | None = parse_params(
            ws.query_params, {k: ws.query_params.getlist(k) for k in ws.query_params}
        )
        param_error = ""
    except ParamError as exc:
        params, param_error = None, str(exc)
    rate = params.sample_rate if params else 0
    record = new_record(state, ws, "streaming", rate, params.encoding if params else "")
    await ws.accept()
    if not authorised:
        await close_ws(ws, record, UNAUTHORIZED, "Unauthorized: missing or invalid authorization")
        return
    if params is None:
        await close_ws(ws, record, INVALID_MESSAGE, f"Invalid query parameters: {param_error}")
        return
    active = active_sessions(ws)
    if active["streaming"] >= settings.max_concurrent_sessions:
        await close_ws(ws, record, TOO_MANY_SESSIONS, "Too many concurrent sessions")
        return
    active["streaming"] += 1
    try:
        limit = settings.max_session_duration_s
        if token_cap is not None:
            limit = min(limit, token_cap)
        session = StreamSession(ws, state, record, params, limit)
        record.extra["speech_model"] = params.speech_model
        await session.send(
            {"type": "Begin", "id": record.id, "expires_at": math.floor(time.time() + limit)}
        )
        if await injected_close(ws, record, fault):
            return
        code, reason = await session.run()
        record.extra["turns"] = session.turn_order
        record.extra["audio_duration_ms"] = round(session.audio_ms, 3)
        await close_ws(ws, record, code, reason)
    finally:
        active["streaming"] -= 1
        logger.info(
            "emulator.stream.closed",
            extra={"session_id": record.id, "close_code": record.close_code},
        )


GONE_MESSAGE = (
    "This endpoint has been deprecated. Use the v3 Universal Streaming endpoint: "
    "wss://streaming.assemblyai.com/v3/ws"
)


async def v2_gone(request: Request) -> Response:
    """The retired v2 real-time endpoint: HTTP 410."""
    return JSONResponse({"error": GONE_MESSAGE}, status_code=410)


async def v2_gone_ws(ws: WebSocket) -> None:
    """A WebSocket upgrade at the retired v2 endpoint: refused with HTTP 410."""
    await deny(ws, 410, GONE_MESSAGE)


routes: list[BaseRoute] = [
    Route("/v3/token", tokens.v3_token, methods=["GET"]),
    WebSocketRoute("/v3/ws", stream_ws),
    Route("/v2/realtime/ws", v2_gone, methods=["GET", "POST"]),
    WebSocketRoute("/v2/realtime/ws", v2_gone_ws),
    Route("/v2/realtime/token", v2_gone, methods=["POST"]),
]
