"""The Voice Agent API as upstream (reference section 10): `/v1/token`, `/v1/voices`, `/v1/ws`.

One WebSocket, JSON events both ways. `session.update` (voice from the catalogue, flat tool
schema, known encodings) answers `session.ready`; the greeting is spoken first. Input audio
(`input.audio`, base64 PCM16 24 kHz in `audio`) runs through an energy VAD; each user turn
gives `input.speech.started`, `transcript.user.delta`, `input.speech.stopped`,
`transcript.user`, then a reply: `reply.started`, `reply.audio` (base64 in `data`, real
speech from espeak-ng, paced at real time x `EMULATOR_AGENT_REPLY_SPEED`),
`transcript.agent`, `reply.done`. Speech during a reply interrupts it (`reply.done` with
`status: "interrupted"`) unless `interrupt_response` is false.

The "LLM" is a deterministic rule, so tests can assert on it:
- a session without tools answers "You said: <transcript>. That was turn <n>.";
- a session with tools calls one tool per user turn: the first whose keyword (a word of
  its name other than get/set/fetch/lookup/find/check/search) occurs in the transcript,
  else the first tool. The reply carrying `tool.call` says "Let me check that."; its
  arguments give every string property the transcript, numbers 0, booleans false.
  `tool.result` is accepted only after that reply's `reply.done`; once every call of the
  reply has its result the agent says "Here is what I found: <results>."

`session.resume` with the previous `session_id` within `EMULATOR_AGENT_RESUME_WINDOW_S`
(30 s) of the disconnect continues the conversation (turn count, history, config).
Errors are `{"type": "error", "code", "message"}` events; the socket stays open.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import math
import time
import uuid
from dataclasses import dataclass, field, replace
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from emulator import tokens
from emulator.audio import TurnDetector, encode_output, to_pcm16
from emulator.auth import check_bearer
from emulator.faults import apply_fault
from emulator.recognition import recognize
from emulator.state import EmulatorState, WsFrame, WsSessionRecord, get_state
from emulator.streaming import (
    SESSION_EXPIRED,
    TOO_MANY_SESSIONS,
    UNAUTHORIZED,
    active_sessions,
    close_ws,
    in_recognizer,
    injected_close,
    new_record,
    take_ws_fault,
)
from emulator.tts import DEFAULT_VOICE, OUTPUT_RATE, RETIRED_VOICES, VOICES, synthesize

logger = logging.getLogger(__name__)

ROUTE = "WS /v1/ws"
ENCODINGS = ("audio/pcm", "audio/pcmu", "audio/pcma")
INPUT_RATES = {"audio/pcm": 24_000, "audio/pcmu": 8_000, "audio/pcma": 8_000}
REPLY_CHUNK_MS = 100
# How far reply audio may run ahead of its real-time schedule (client-side buffering).
REPLY_LEAD_MS = 300
PARTIAL_INTERVAL_MS = 600
TOOL_STOPWORDS = frozenset({"get", "set", "fetch", "lookup", "look", "find", "check", "search"})


class AgentError(ValueError):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


# ---------------------------------------------------------------- configuration


@dataclass
class AgentConfig:
    system_prompt: str = ""
    greeting: str | None = None
    input_encoding: str = "audio/pcm"
    keyterms: list[str] = field(default_factory=list)
    vad_threshold: float = 0.5
    min_silence: int = 200
    max_silence: int = 1000
    interrupt_response: bool = True
    voice: str = DEFAULT_VOICE
    output_encoding: str = "audio/pcm"
    tools: list[dict[str, Any]] = field(default_factory=list)

    def energy_threshold(self) -> float:
        """vad_threshold (0-1) as an RMS level: 0.5 -> -40 dBFS (as on /v3/ws)."""
        return float(10 ** ((-60.0 + 40.0 * self.vad_threshold) / 20.0))


def _obj(value: Any, name: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise AgentError("invalid_session", f"{name} must be an object")
    return value


def _encoding(block: dict[str, Any], name: str, current: str) -> str:
    fmt = _obj(block.get("format"), f"{name}.format")
    encoding = fmt.get("encoding", current)
    if encoding not in ENCODINGS:
        raise AgentError(
            "invalid_encoding", f"{name}.format.encoding must be one of: {', '.join(ENCODINGS)}"
        )
    return str(encoding)


def _number(value: Any, name: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise AgentError("invalid_session", f"{name} must be a number between {low} and {high}")
    return float(value)


def check_tools(tools: Any) -> list[dict[str, Any]]:
    """Flat tool definitions only; the nested OpenAI form is refused."""
    if not isinstance(tools, list):
        raise AgentError("invalid_tools", "tools must be a list")
    checked: list[dict[str, Any]] = []
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict):
            raise AgentError("invalid_tools", f"tools[{i}] must be an object")
        if "function" in tool:
            raise AgentError(
                "invalid_tools",
                f"tools[{i}] uses the nested {{type: 'function', function: {{...}}}} form; "
                "the Voice Agent API takes the flat schema: "
                "{type: 'function', name, description, parameters}",
            )
        if tool.get("type", "function") != "function":
            raise AgentError("invalid_tools", f"tools[{i}].type must be 'function'")
        name = tool.get("name")
        if not isinstance(name, str) or not name.strip():
            raise AgentError("invalid_tools", f"tools[{i}].name is required")
        if "parameters" in tool and not isinstance(tool["parameters"], dict):
            raise AgentError("invalid_tools", f"tools[{i}].parameters must be a JSON schema object")
        checked.append(tool)
    return checked


def apply_session(base: AgentConfig, session: Any) -> AgentConfig:
    """`base` updated by a `session.update`'s `session` object; AgentError when refused."""
    session = _obj(session, "session")
    config = replace(base, keyterms=list(base.keyterms), tools=list(base.tools))
    if "system_prompt" in session:
        config.system_prompt = str(session["system_prompt"] or "")
    if "greeting" in session:
        greeting = session["greeting"]
        if greeting is not None and not isinstance(greeting, str):
            raise AgentError("invalid_session", "greeting must be a string")
        config.greeting = greeting or None
    input_block = _obj(session.get("input"), "input")
    config.input_encoding = _encoding(input_block, "input", config.input_encoding)
    if "keyterms" in input_block:
        keyterms = input_block["keyterms"]
        if not isinstance(keyterms, list) or not all(isinstance(k, str) for k in keyterms):
            raise AgentError("invalid_session", "input.keyterms must be a list of strings")
        config.keyterms = list(keyterms)
    turn = _obj(input_block.get("turn_detection"), "input.turn_detection")
    if "vad_threshold" in turn:
        config.vad_threshold = _number(turn["vad_threshold"], "vad_threshold", 0, 1)
    if "min_silence" in turn:
        config.min_silence = int(_number(turn["min_silence"], "min_silence", 0, 60_000))
    if "max_silence" in turn:
        config.max_silence = int(_number(turn["max_silence"], "max_silence", 0, 60_000))
    if config.min_silence > config.max_silence:
        raise AgentError("invalid_session", "min_silence must not exceed max_silence")
    if "interrupt_response" in turn:
        if not isinstance(turn["interrupt_response"], bool):
            raise AgentError("invalid_session", "interrupt_response must be a boolean")
        config.interrupt_response = turn["interrupt_response"]
    output_block = _obj(session.get("output"), "output")
    if "voice" in output_block:
        voice = output_block["voice"]
        if voice in RETIRED_VOICES:
            raise AgentError(
                "invalid_voice",
                f"voice {voice!r} is no longer available; choose one from GET /v1/voices",
            )
        if voice not in VOICES:
            raise AgentError("invalid_voice", f"unknown voice {voice!r}; see GET /v1/voices")
        config.voice = voice
    config.output_encoding = _encoding(output_block, "output", config.output_encoding)
    if "tools" in session:
        config.tools = check_tools(session["tools"])
    return config


# ---------------------------------------------------------------- the deterministic "LLM"


def tool_keywords(name: str) -> set[str]:
    words = {w for w in name.lower().replace("-", "_").split("_") if w}
    return (words - TOOL_STOPWORDS) or words


def choose_tool(tools: list[dict[str, Any]], transcript: str) -> dict[str, Any]:
    """The first tool whose keyword the user said, else the first tool."""
    said = set(transcript.lower().split())
    for tool in tools:
        if tool_keywords(str(tool["name"])) & said:
            return tool
    return tools[0]


def tool_arguments(tool: dict[str, Any], transcript: str) -> dict[str, Any]:
    properties = (tool.get("parameters") or {}).get("properties") or {}
    arguments: dict[str, Any] = {}
    for prop, schema in properties.items():
        kind = schema.get("type") if isinstance(schema, dict) else None
        if kind in ("number", "integer"):
            arguments[prop] = 0
        elif kind == "boolean":
            arguments[prop] = False
        elif kind in ("string", None):
            arguments[prop] = transcript
    return arguments


# ---------------------------------------------------------------- conversations


@dataclass
class Conversation:
    """What survives a disconnect for `session.resume`."""

    id: str
    config: AgentConfig
    user_turns: int = 0
    history: list[dict[str, str]] = field(default_factory=list)
    connected: bool = True
    disconnected_at: float | None = None  # time.monotonic()
    # call_id -> (reply_id, tool name); results wait for that reply's reply.done.
    pending_calls: dict[str, tuple[str, str]] = field(default_factory=dict)
    results: dict[str, str] = field(default_factory=dict)
    done_replies: set[str] = field(default_factory=set)


def conversations(ws: WebSocket) -> dict[str, Conversation]:
    app_state = ws.app.state
    store: dict[str, Conversation] | None = getattr(app_state, "emu_conversations", None)
    if store is None:
        store = {}
        app_state.emu_conversations = store
    return store


# ---------------------------------------------------------------- the session


@dataclass
class _Job:
    kind: str  # "started", "partial", "final"
    turn: int
    start_ms: int = 0
    end_ms: int = 0


class AgentSession:
    def __init__(
        self, ws: WebSocket, state: EmulatorState, record: WsSessionRecord, limit_s: float
    ) -> None:
        self.ws = ws
        self.state = state
        self.record = record
        self.limit_s = limit_s
        self.started = time.monotonic()
        self.conv: Conversation | None = None
        self.detector: TurnDetector | None = None
        self.input_rate = 24_000
        self.send_lock = asyncio.Lock()
        self.queue: asyncio.Queue[_Job | None] = asyncio.Queue()
        self.reply_task: asyncio.Task[None] | None = None
        self.turn = 0
        self.open_turn: int | None = None
        self.turn_start = 0
        self.prev_turn_end = 0
        self.last_partial_pos = 0
        self.partial_pending = False

    # -- plumbing ----------------------------------------------------------------------

    async def send(self, event: dict[str, Any]) -> None:
        async with self.send_lock:
            if self.ws.application_state != WebSocketState.CONNECTED:
                return
            try:
                await self.ws.send_text(json.dumps(event))
            except (RuntimeError, OSError, WebSocketDisconnect):
                return
            self.record.sent.append(str(event.get("type")))

    async def error(self, code: str, message: str) -> None:
        await self.send({"type": "error", "code": code, "message": message})

    # -- the receive loop --------------------------------------------------------------

    async def run(self) -> tuple[int, str]:
        worker = asyncio.create_task(self._work())
        try:
            return await self._receive_loop()
        except Exception:
            logger.exception("emulator.agent.failed", extra={"session_id": self.record.id})
            return 1011, "internal error"
        finally:
            worker.cancel()
            if self.reply_task is not None:
                self.reply_task.cancel()
            await asyncio.gather(
                worker, *([self.reply_task] if self.reply_task else []), return_exceptions=True
            )
            if self.conv is not None:
                self.conv.connected = False
                self.conv.disconnected_at = time.monotonic()
                self.record.extra["user_turns"] = self.conv.user_turns

    async def _receive_loop(self) -> tuple[int, str]:
        deadline = self.started + self.limit_s
        while True:
            wait = deadline - time.monotonic()
            if wait <= 0:
                return SESSION_EXPIRED, "Session expired: maximum session duration exceeded"
            try:
                message = await asyncio.wait_for(self.ws.receive(), timeout=wait)
            except TimeoutError:
                continue
            if message["type"] == "websocket.disconnect":
                code = int(message.get("code") or 1005)
                self.record.close_code, self.record.close_reason = code, "client disconnected"
                self.record.ended_at = time.time()
                return code, "client disconnected"
            text = message.get("text")
            if text is None:
                data = message.get("bytes") or b""
                self.record.frames.append(WsFrame("binary", len(data), time.monotonic()))
                self.record.messages.append("<binary>")
                await self.error(
                    "invalid_message", "binary frames are not accepted: send input.audio events"
                )
                continue
            await self._on_text(text)

    async def _on_text(self, text: str) -> None:
        now = time.monotonic()
        try:
            event = json.loads(text)
        except json.JSONDecodeError:
            self.record.frames.append(WsFrame("text", len(text.encode()), now))
            self.record.messages.append("<invalid json>")
            await self.error("invalid_json", "message is not valid JSON")
            return
        kind = event.get("type") if isinstance(event, dict) else None
        frame = WsFrame(
            "text", len(text.encode()), now, type=kind if isinstance(kind, str) else None
        )
        self.record.frames.append(frame)
        self.record.messages.append(str(kind))
        assert isinstance(event, dict) or kind is None
        if kind == "input.audio":
            await self._on_audio(event, frame)
        elif kind == "session.update":
            await self._on_update(event)
        elif kind == "session.resume":
            await self._on_resume(event)
        elif kind == "tool.result":
            await self._on_tool_result(event)
        else:
            await self.error("unknown_event", f"unknown event type {kind!r}")

    async def _on_update(self, event: dict[str, Any]) -> None:
        base = self.conv.config if self.conv is not None else AgentConfig()
        try:
            config = apply_session(base, event.get("session"))
        except AgentError as exc:
            await self.error(exc.code, exc.message)
            return
        # What the session now runs with, for tests (the relay's agent policy).
        self.record.extra["config"] = {
            "system_prompt": config.system_prompt,
            "greeting": config.greeting,
            "voice": config.voice,
            "tools": [str(t.get("name")) for t in config.tools],
        }
        if self.conv is not None:
            self.conv.config = config
            self._configure_input(config)
            await self.send({"type": "session.updated", "session_id": self.conv.id})
            return
        store = conversations(self.ws)
        # Forget conversations nobody can resume any more (the window has passed).
        oldest = time.monotonic() - self.state.settings.agent_resume_window_s
        for stale in [c.id for c in store.values() if (c.disconnected_at or oldest + 1) < oldest]:
            store.pop(stale, None)
        self.conv = Conversation(id=str(uuid.uuid4()), config=config)
        store[self.conv.id] = self.conv
        self._ready()
        await self.send({"type": "session.ready", "session_id": self.conv.id})
        if config.greeting:
            self.conv.history.append({"role": "agent", "text": config.greeting})
            self._start_reply(config.greeting)

    async def _on_resume(self, event: dict[str, Any]) -> None:
        if self.conv is not None:
            await self.error("session_active", "this connection already has a session")
            return
        session_id = event.get("session_id")
        store = conversations(self.ws)
        conv = store.get(session_id) if isinstance(session_id, str) else None
        window = self.state.settings.agent_resume_window_s
        if conv is None:
            await self.error("session_not_found", "no session with that session_id")
            return
        if conv.connected:
            await self.error("session_active", "that session is still connected")
            return
        if conv.disconnected_at is None or time.monotonic() - conv.disconnected_at > window:
            store.pop(conv.id, None)
            await self.error(
                "resume_window_expired",
                f"session.resume must come within {window:g} s of the disconnect; "
                "start a new session",
            )
            return
        conv.connected, conv.disconnected_at = True, None
        self.conv = conv
        self.record.extra["resumed"] = True
        self._ready()
        await self.send({"type": "session.ready", "session_id": conv.id})

    def _ready(self) -> None:
        assert self.conv is not None
        self.record.extra["session_id"] = self.conv.id
        self._configure_input(self.conv.config)

    def _configure_input(self, config: AgentConfig) -> None:
        self.record.encoding = config.input_encoding
        self.record.output_encoding = config.output_encoding
        self.record.output_sample_rate = 24_000 if config.output_encoding == "audio/pcm" else 8_000
        rate = INPUT_RATES[config.input_encoding]
        if self.detector is None or rate != self.input_rate:
            self.input_rate = rate
            self.record.sample_rate = rate
            self.detector = TurnDetector(rate)
        self.detector.threshold = config.energy_threshold()
        self.detector.pause_silence_ms = config.min_silence
        self.detector.end_silence_ms = config.max_silence

    async def _on_audio(self, event: dict[str, Any], frame: WsFrame) -> None:
        if self.conv is None or self.detector is None:
            await self.error(
                "session_not_ready", "input.audio before session.ready: the audio was dropped"
            )
            return
        audio = event.get("audio")
        try:
            data = base64.b64decode(audio, validate=True) if isinstance(audio, str) else None
        except (binascii.Error, ValueError):
            data = None
        if data is None:
            await self.error("invalid_audio", "input.audio needs base64 audio in `audio`")
            return
        encoding = self.conv.config.input_encoding
        width = 2 if encoding == "audio/pcm" else 1
        frame.duration_ms = round(len(data) / width / self.input_rate * 1000, 3)
        self.record.pcm.extend(data)
        for turn_event in self.detector.feed(to_pcm16(data, encoding)):
            if turn_event.kind == "start":
                self.turn += 1
                self.open_turn = self.turn
                self.turn_start = max(self.prev_turn_end, turn_event.at_ms - 200)
                self.last_partial_pos = turn_event.at_ms
                self.queue.put_nowait(_Job("started", self.turn))
            elif turn_event.kind == "pause":
                self._queue_partial()
            elif self.open_turn is not None:
                end = min(self.detector.position_ms, turn_event.at_ms + 200)
                self.queue.put_nowait(_Job("final", self.open_turn, self.turn_start, end))
                self.prev_turn_end = end
                self.open_turn = None
        position = self.detector.position_ms
        if self.open_turn is not None and position - self.last_partial_pos >= PARTIAL_INTERVAL_MS:
            self._queue_partial()

    def _queue_partial(self) -> None:
        if self.open_turn is None or self.partial_pending:
            return
        self.partial_pending = True
        assert self.detector is not None
        self.last_partial_pos = self.detector.position_ms
        self.queue.put_nowait(_Job("partial", self.open_turn, self.turn_start))

    async def _on_tool_result(self, event: dict[str, Any]) -> None:
        conv = self.conv
        call_id = event.get("call_id")
        if conv is None:
            await self.error("session_not_ready", "tool.result before session.ready")
            return
        if not isinstance(call_id, str) or call_id not in conv.pending_calls:
            await self.error("unknown_call_id", f"no pending tool call {call_id!r}")
            return
        reply_id, _ = conv.pending_calls[call_id]
        if reply_id not in conv.done_replies:
            await self.error(
                "tool_result_too_early",
                "send tool.result after the reply.done of the reply that carried tool.call",
            )
            return
        result = event.get("result", event.get("output"))
        text = result if isinstance(result, str) else json.dumps(result)
        conv.pending_calls.pop(call_id)
        conv.results[call_id] = text
        conv.history.append({"role": "tool", "text": text})
        if not any(r == reply_id for r, _ in conv.pending_calls.values()):
            found = "; ".join(conv.results.pop(c) for c in list(conv.results))
            reply = f"Here is what I found: {found[:200]}."
            conv.history.append({"role": "agent", "text": reply})
            self._start_reply(reply)

    # -- the worker: speech events and transcripts, in order ----------------------------

    async def _work(self) -> None:
        while True:
            job = await self.queue.get()
            if job is None:
                return
            if job.kind == "started":
                await self.send({"type": "input.speech.started"})
                await self._barge_in()
            elif job.kind == "partial":
                self.partial_pending = False
                if job.turn != self.open_turn:
                    continue
                assert self.detector is not None
                text = await self._recognize(job.start_ms, self.detector.position_ms)
                if text and job.turn == self.open_turn:
                    await self.send({"type": "transcript.user.delta", "text": text})
            else:
                await self.send({"type": "input.speech.stopped"})
                text = await self._recognize(job.start_ms, job.end_ms)
                await self.send({"type": "transcript.user", "text": text})
                self._respond(text)

    async def _recognize(self, start_ms: int, end_ms: int) -> str:
        assert self.conv is not None
        encoding = self.conv.config.input_encoding
        width = 2 if encoding == "audio/pcm" else 1
        rate = self.input_rate
        raw = bytes(
            self.record.pcm[start_ms * rate // 1000 * width : end_ms * rate // 1000 * width]
        )
        mode = self.state.settings.recognition

        def run() -> str:
            words = recognize(to_pcm16(raw, encoding), rate, mode=mode)
            return " ".join(w.text for w in words)

        return await in_recognizer(run)

    async def _barge_in(self) -> None:
        task = self.reply_task
        assert self.conv is not None
        if task is None or task.done() or not self.conv.config.interrupt_response:
            return
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    def _respond(self, transcript: str) -> None:
        conv = self.conv
        assert conv is not None
        conv.user_turns += 1
        conv.history.append({"role": "user", "text": transcript})
        if conv.config.tools:
            tool = choose_tool(conv.config.tools, transcript)
            call = {
                "type": "tool.call",
                "call_id": f"call_{uuid.uuid4().hex[:16]}",
                "name": tool["name"],
                "arguments": tool_arguments(tool, transcript),
            }
            self.record.extra.setdefault("tool_calls", []).append(call["name"])
            text = "Let me check that."
            conv.history.append({"role": "agent", "text": text})
            self._start_reply(text, call)
            return
        said = f"You said: {transcript}." if transcript else "Sorry, I did not catch that."
        text = f"{said} That was turn {conv.user_turns}."
        conv.history.append({"role": "agent", "text": text})
        self._start_reply(text)

    # -- replies -----------------------------------------------------------------------

    def _start_reply(self, text: str, call: dict[str, Any] | None = None) -> None:
        previous = self.reply_task

        async def chained() -> None:
            if previous is not None and not previous.done():
                # A reply follows the one before it; it never talks over it.
                await asyncio.gather(previous, return_exceptions=True)
            await self._reply(text, call)

        self.reply_task = asyncio.create_task(chained())

    async def _reply(self, text: str, call: dict[str, Any] | None) -> None:
        conv = self.conv
        assert conv is not None
        reply_id = f"reply_{uuid.uuid4().hex[:16]}"
        status = "interrupted"
        try:
            await self.send({"type": "reply.started", "reply_id": reply_id})
            if call is not None:
                conv.pending_calls[call["call_id"]] = (reply_id, call["name"])
                await self.send(call)
            await self._speak(text, reply_id, conv.config)
            await self.send({"type": "transcript.agent", "reply_id": reply_id, "text": text})
            status = "completed"
        finally:
            if status == "interrupted":
                # Barge-in: the client discards pending tool results, and so do we.
                for call_id, (rid, _) in list(conv.pending_calls.items()):
                    if rid == reply_id:
                        conv.pending_calls.pop(call_id)
            conv.done_replies.add(reply_id)
            # Sent from a task being cancelled: shield the last event so it goes out.
            await asyncio.shield(
                self.send({"type": "reply.done", "reply_id": reply_id, "status": status})
            )

    async def _speak(self, text: str, reply_id: str, config: AgentConfig) -> None:
        pcm = await synthesize(text, config.voice, engine=self.state.settings.tts)
        audio, rate = await asyncio.to_thread(
            encode_output, pcm, OUTPUT_RATE, config.output_encoding
        )
        width = 2 if config.output_encoding == "audio/pcm" else 1
        chunk = rate * REPLY_CHUNK_MS // 1000 * width
        speed = self.state.settings.agent_reply_speed
        began = time.monotonic()
        sent_ms = 0.0
        for offset in range(0, len(audio), chunk):
            piece = audio[offset : offset + chunk]
            # Real-time pacing (x speed), a little ahead, as a streaming TTS would deliver.
            ahead = sent_ms - (time.monotonic() - began) * 1000 * speed
            if ahead > REPLY_LEAD_MS:
                await asyncio.sleep((ahead - REPLY_LEAD_MS) / 1000 / speed)
            await self.send(
                {
                    "type": "reply.audio",
                    "reply_id": reply_id,
                    "data": base64.b64encode(piece).decode(),
                }
            )
            self.record.output_pcm.extend(piece)
            samples = self.record.extra.get("output_samples", 0) + len(piece) // width
            self.record.extra["output_samples"] = samples
            sent_ms += len(piece) / width / rate * 1000


# ---------------------------------------------------------------- endpoints


def _authenticate(ws: WebSocket, state: EmulatorState) -> tuple[bool, float | None]:
    """Bearer key, or a Voice Agent token in `?token=` (single use)."""
    if check_bearer(ws, state.settings):
        return True, None
    grant = tokens.get_tokens(ws).redeem(ws.query_params.get("token"), "agent")
    if grant is None:
        return False, None
    return True, float(grant.max_session_s)


async def agent_ws(ws: WebSocket) -> None:
    """Voice Agent WebSocket."""
    state = get_state(ws)
    settings = state.settings
    fault, refused = await take_ws_fault(ws, state, ROUTE)
    if refused:
        return
    authorised, token_cap = _authenticate(ws, state)
    record = new_record(state, ws, "agent", 24_000, "audio/pcm")
    await ws.accept()
    if not authorised:
        await close_ws(ws, record, UNAUTHORIZED, "Unauthorized: Bearer key or token required")
        return
    if await injected_close(ws, record, fault):
        return
    active = active_sessions(ws)
    if active["agent"] >= settings.max_concurrent_sessions:
        await close_ws(ws, record, TOO_MANY_SESSIONS, "Too many concurrent sessions")
        return
    active["agent"] += 1
    try:
        limit = settings.max_session_duration_s
        if token_cap is not None:
            limit = min(limit, token_cap)
        record.extra["expires_at"] = math.floor(time.time() + limit)
        session = AgentSession(ws, state, record, limit)
        code, reason = await session.run()
        await close_ws(ws, record, code, reason)
    finally:
        active["agent"] -= 1
        logger.info(
            "emulator.agent.closed",
            extra={"session_id": record.id, "close_code": record.close_code},
        )


async def voices(request: Request) -> Response:
    """The voice catalogue (Bearer auth)."""
    state = get_state(request)
    answer = await apply_fault(state, "GET /v1/voices")
    if answer is not None:
        return answer
    if not check_bearer(request, state.settings):
        return JSONResponse({"error": tokens.UNAUTHORIZED}, status_code=401)
    return JSONResponse({"voices": [v.public() for v in VOICES.values()]})


routes: list[BaseRoute] = [
    Route("/v1/token", tokens.v1_token, methods=["GET"]),
    Route("/v1/voices", voices, methods=["GET"]),
    WebSocketRoute("/v1/ws", agent_ws),
]
