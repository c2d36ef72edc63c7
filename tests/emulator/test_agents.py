"""Voice Agent on real sockets: session.update checks, greeting, turns, tools, barge-in, resume."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
from websockets.asyncio.client import ClientConnection, connect

from emulator.agents import choose_tool, tool_arguments
from emulator.recognition import mulaw_to_float
from emulator.tts import VOICES
from tests.emulator.wsutil import Event, closed, next_event, of_type, silence, speech, until
from tests.live import EMULATOR_KEY, Proc, run_emulator

pytestmark = pytest.mark.e2e

RATE = 24_000
CHUNK_50MS = RATE * 2 // 20  # 2,400 bytes, as the reference suggests
BEARER = {"Authorization": f"Bearer {EMULATOR_KEY}"}
TOOLS = [
    {
        "type": "function",
        "name": "get_time",
        "description": "The time in a zone.",
        "parameters": {"type": "object", "properties": {"zone": {"type": "string"}}},
    },
    {
        "type": "function",
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
            "required": ["city"],
        },
    },
]


@pytest.fixture(scope="module")
def agent_emu() -> Iterator[Proc]:
    """Replies at 2x real time (short tests) and a 2 s resume window (testable expiry)."""
    env = {"EMULATOR_AGENT_REPLY_SPEED": "2", "EMULATOR_AGENT_RESUME_WINDOW_S": "2"}
    with run_emulator(env) as proc:
        yield proc


def url(proc: Proc, **query: str) -> str:
    suffix = "&".join(f"{k}={v}" for k, v in query.items())
    return f"ws://127.0.0.1:{proc.port}/v1/ws" + (f"?{suffix}" if suffix else "")


def mint(proc: Proc) -> str:
    response = httpx.get(f"{proc.url}/v1/token", params={"expires_in_seconds": 60}, headers=BEARER)
    assert response.status_code == 200, response.text
    token: str = response.json()["token"]
    return token


async def send_json(ws: ClientConnection, event: dict[str, Any]) -> None:
    await ws.send(json.dumps(event))


async def start(ws: ClientConnection, **session: Any) -> str:
    await send_json(ws, {"type": "session.update", "session": session})
    ready = await until(ws, of_type("session.ready"))
    session_id: str = ready[-1]["session_id"]
    return session_id


def user_turn(text: str = "hello world, this is the user") -> list[bytes]:
    """Speech plus the silence that ends the turn, as 50 ms input chunks."""
    audio = speech(text, RATE) + silence(0.6, RATE)
    return [audio[i : i + CHUNK_50MS] for i in range(0, len(audio), CHUNK_50MS)]


async def send_audio(ws: ClientConnection, pieces: list[bytes], interval_s: float = 0.0) -> None:
    for piece in pieces:
        await send_json(ws, {"type": "input.audio", "audio": base64.b64encode(piece).decode()})
        if interval_s:
            await asyncio.sleep(interval_s)


def reply_pcm(events: list[Event]) -> bytes:
    return b"".join(base64.b64decode(e["data"]) for e in events if e["type"] == "reply.audio")


def rms(pcm: bytes) -> float:
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float64) / 32768.0
    return float(np.sqrt(np.mean(samples**2))) if samples.size else 0.0


def record_of(proc: Proc, session_id: str) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = httpx.get(f"{proc.url}/_emulator/sessions").json()
    return [r for r in records if r.get("session_id") == session_id]


# ---------------------------------------------------------------- catalogue and checks


def test_voices_catalogue(agent_emu: Proc) -> None:
    response = httpx.get(f"{agent_emu.url}/v1/voices", headers=BEARER)
    assert response.status_code == 200
    ids = [v["voice_id"] for v in response.json()["voices"]]
    assert ids[:3] == ["ivy", "james", "tyler"]
    assert len(ids) == 34
    assert set(ids) == set(VOICES)
    assert not {"claire", "dawn", "josh", "grace", "pete"} & set(ids)
    raw_key = httpx.get(f"{agent_emu.url}/v1/voices", headers={"Authorization": EMULATOR_KEY})
    assert raw_key.status_code == 401


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": EMULATOR_KEY}, {"Authorization": "Bearer nope"}],
    ids=["missing", "raw-key", "wrong"],
)
async def test_auth_is_bearer_or_token(agent_emu: Proc, headers: dict[str, str]) -> None:
    async with connect(url(agent_emu), additional_headers=headers) as ws:
        code, _, events = await closed(ws)
    assert code == 1008
    assert events == []


@pytest.mark.parametrize(
    ("session", "code"),
    [
        ({"output": {"voice": "claire"}}, "invalid_voice"),
        ({"output": {"voice": "pete"}}, "invalid_voice"),
        ({"output": {"voice": "alloy"}}, "invalid_voice"),
        ({"output": {"format": {"encoding": "audio/opus"}}}, "invalid_encoding"),
        (
            {"tools": [{"type": "function", "function": {"name": "get_time", "parameters": {}}}]},
            "invalid_tools",
        ),
        ({"tools": [{"type": "function", "description": "no name"}]}, "invalid_tools"),
    ],
    ids=["retired-claire", "retired-pete", "invented", "encoding", "nested-tool", "nameless-tool"],
)
async def test_refused_session_update_then_a_good_one(
    agent_emu: Proc, session: dict[str, Any], code: str
) -> None:
    async with connect(url(agent_emu), additional_headers=BEARER) as ws:
        await send_json(ws, {"type": "session.update", "session": session})
        error = await next_event(ws)
        assert error["type"] == "error"
        assert error["code"] == code
        # Nothing is ready yet; a corrected update opens the session.
        session_id = await start(ws, output={"voice": "sophie"}, tools=TOOLS)
        assert session_id


async def test_audio_before_ready_and_unknown_events_are_errors(agent_emu: Proc) -> None:
    async with connect(url(agent_emu), additional_headers=BEARER) as ws:
        await send_audio(ws, [silence(0.05, RATE)])
        error = await next_event(ws)
        assert (error["type"], error["code"]) == ("error", "session_not_ready")
        await ws.send("{oops")
        assert (await next_event(ws))["code"] == "invalid_json"
        await send_json(ws, {"type": "response.create"})
        assert (await next_event(ws))["code"] == "unknown_event"
        await start(ws)  # the socket stayed open


# ---------------------------------------------------------------- conversations


async def test_greeting_first_then_a_user_turn(agent_emu: Proc) -> None:
    async with connect(url(agent_emu), additional_headers=BEARER) as ws:
        session_id = await start(
            ws,
            greeting="Hello! How can I help?",
            output={"voice": "james"},
            input={"turn_detection": {"max_silence": 400}},
        )
        greeting = await until(ws, of_type("reply.done"))
        assert [e["type"] for e in greeting][0] == "reply.started"
        assert greeting[-1]["status"] == "completed"
        spoken = [e for e in greeting if e["type"] == "transcript.agent"]
        assert [e["text"] for e in spoken] == ["Hello! How can I help?"]
        greeting_audio = reply_pcm(greeting)
        assert len(greeting_audio) / 2 / RATE > 0.8  # real speech, at 24 kHz
        assert rms(greeting_audio) > 0.02  # audible

        # Real time here: partial transcripts follow the audio as it arrives.
        pieces = user_turn()
        await send_audio(ws, pieces, 0.05)
        events = await until(ws, of_type("reply.done"), timeout=30)
    kinds = [e["type"] for e in events]
    assert kinds[0] == "input.speech.started"
    assert "transcript.user.delta" in kinds
    order = ["input.speech.stopped", "transcript.user", "reply.started", "transcript.agent"]
    assert [k for k in kinds if k in order] == order
    assert kinds.index("transcript.user.delta") < kinds.index("transcript.user")
    assert "reply.audio" in kinds[kinds.index("reply.started") :]
    user = next(e["text"] for e in events if e["type"] == "transcript.user")
    assert user
    agent = next(e["text"] for e in events if e["type"] == "transcript.agent")
    assert agent == f"You said: {user}. That was turn 1."
    assert events[-1]["status"] == "completed"
    assert rms(reply_pcm(events)) > 0.02

    [record] = record_of(agent_emu, session_id)
    assert record["messages"] == ["session.update"] + ["input.audio"] * len(pieces)
    assert record["pcm_bytes"] == sum(map(len, pieces))
    assert record["output_pcm_bytes"] == len(greeting_audio) + len(reply_pcm(events))
    assert record["output_samples"] == record["output_pcm_bytes"] // 2
    assert record["user_turns"] == 1
    audio_frames = [f for f in record["frames"] if f["type"] == "input.audio"]
    assert {f["duration_ms"] for f in audio_frames[:-1]} == {50.0}


async def test_tool_call_and_result(agent_emu: Proc) -> None:
    async with connect(url(agent_emu), additional_headers=BEARER) as ws:
        await start(ws, tools=TOOLS, input={"turn_detection": {"max_silence": 400}})
        await send_audio(ws, user_turn("what is the weather in paris"))
        events = await until(ws, of_type("tool.call"), timeout=30)
        call = events[-1]
        user = next(e["text"] for e in events if e["type"] == "transcript.user")
        # The documented rule decides which tool, with which arguments.
        expected = choose_tool(TOOLS, user)
        assert call["name"] == expected["name"]
        assert call["arguments"] == tool_arguments(expected, user)
        assert call["call_id"]
        # Too early: the reply that carries the call has not finished.
        await send_json(ws, {"type": "tool.result", "call_id": call["call_id"], "result": "x"})
        before_done = await until(ws, of_type("reply.done"))
        errors = [e for e in before_done if e["type"] == "error"]
        assert [e["code"] for e in errors] == ["tool_result_too_early"]
        assert before_done[-1]["status"] == "completed"
        said = [e["text"] for e in before_done if e["type"] == "transcript.agent"]
        assert said == ["Let me check that."]

        await send_json(ws, {"type": "tool.result", "call_id": call["call_id"], "result": "Sunny"})
        follow_up = await until(ws, of_type("reply.done"))
        assert [e["text"] for e in follow_up if e["type"] == "transcript.agent"] == [
            "Here is what I found: Sunny."
        ]
        # A result for a call that is no longer pending is refused.
        await send_json(ws, {"type": "tool.result", "call_id": call["call_id"], "result": "x"})
        assert (await next_event(ws))["code"] == "unknown_call_id"


def test_tool_rule() -> None:
    assert choose_tool(TOOLS, "what time is it")["name"] == "get_time"
    assert choose_tool(TOOLS, "is the weather nice")["name"] == "get_weather"
    assert choose_tool(TOOLS, "tell me a joke")["name"] == "get_time"  # else the first tool
    assert tool_arguments(TOOLS[1], "rome") == {"city": "rome", "days": 0}


async def test_barge_in_interrupts_the_reply(agent_emu: Proc) -> None:
    greeting = (
        "Welcome to the emulator. I am going to keep talking for quite a while, "
        "so that you have plenty of time to interrupt me whenever you like."
    )
    async with connect(url(agent_emu), additional_headers=BEARER) as ws:
        await start(ws, greeting=greeting, input={"turn_detection": {"max_silence": 400}})
        await until(ws, of_type("reply.audio"))
        await send_audio(ws, user_turn("stop please"))
        events = await until(ws, of_type("reply.done"), timeout=30)
        assert events[-1]["status"] == "interrupted"
        kinds = [e["type"] for e in events]
        assert "input.speech.started" in kinds
        assert "transcript.agent" not in kinds  # the greeting was cut short
        # The user's turn is still answered.
        answer = await until(ws, of_type("reply.done"), timeout=30)
        assert answer[-1]["status"] == "completed"
        assert any(e["type"] == "transcript.agent" for e in answer)


async def test_no_barge_in_when_interrupt_response_is_false(agent_emu: Proc) -> None:
    async with connect(url(agent_emu), additional_headers=BEARER) as ws:
        await start(
            ws,
            greeting="Please hold on while I finish this sentence.",
            input={"turn_detection": {"max_silence": 400, "interrupt_response": False}},
        )
        await until(ws, of_type("reply.audio"))
        await send_audio(ws, user_turn("stop"))
        events = await until(ws, of_type("reply.done"), timeout=30)
        assert events[-1]["status"] == "completed"


async def test_g711_output(agent_emu: Proc) -> None:
    async with connect(url(agent_emu), additional_headers=BEARER) as ws:
        await start(ws, greeting="Hello there.", output={"format": {"encoding": "audio/pcmu"}})
        events = await until(ws, of_type("reply.done"))
    data = reply_pcm(events)
    samples = mulaw_to_float(data)  # one byte per sample at 8 kHz
    assert 0.5 < samples.size / 8000 < 3
    assert float(np.sqrt(np.mean(samples**2))) > 0.02


# ---------------------------------------------------------------- resume


async def test_resume_within_the_window_keeps_context_and_not_after(agent_emu: Proc) -> None:
    turn = user_turn("one two three")
    async with connect(url(agent_emu, token=mint(agent_emu))) as ws:
        session_id = await start(ws, input={"turn_detection": {"max_silence": 400}})
        await send_audio(ws, turn)
        first = await until(ws, of_type("reply.done"), timeout=30)
        assert any("That was turn 1." in e.get("text", "") for e in first)

    token = mint(agent_emu)  # a new token for the reconnect, as upstream requires
    async with connect(url(agent_emu, token=token)) as ws:
        await send_json(ws, {"type": "session.resume", "session_id": session_id})
        ready = await next_event(ws)
        assert ready == {"type": "session.ready", "session_id": session_id}
        await send_audio(ws, turn)
        second = await until(ws, of_type("reply.done"), timeout=30)
        # The conversation continued: this is its second user turn.
        assert any("That was turn 2." in e.get("text", "") for e in second)

    async with connect(url(agent_emu, token=token)) as ws:  # tokens are single use
        assert (await closed(ws))[0] == 1008

    await asyncio.sleep(2.2)  # past the 2 s window: the expiry itself is under test
    async with connect(url(agent_emu), additional_headers=BEARER) as ws:
        await send_json(ws, {"type": "session.resume", "session_id": session_id})
        refused = await next_event(ws)
        assert (refused["type"], refused["code"]) == ("error", "resume_window_expired")
        await send_json(ws, {"type": "session.resume", "session_id": "no-such-session"})
        assert (await next_event(ws))["code"] == "session_not_found"
        assert await start(ws) != session_id  # a new session starts fresh


async def test_resume_of_a_connected_session_is_refused(agent_emu: Proc) -> None:
    async with connect(url(agent_emu), additional_headers=BEARER) as first:
        session_id = await start(first)
        async with connect(url(agent_emu), additional_headers=BEARER) as second:
            await send_json(second, {"type": "session.resume", "session_id": session_id})
            assert (await next_event(second))["code"] == "session_active"


async def test_injected_close_code(agent_emu: Proc) -> None:
    fault = {"route": "WS /v1/ws", "close_code": 3005}
    assert httpx.post(f"{agent_emu.url}/_emulator/faults", json=fault).status_code == 201
    async with connect(url(agent_emu), additional_headers=BEARER) as ws:
        assert (await closed(ws))[0] == 3005
    async with connect(url(agent_emu), additional_headers=BEARER) as ws:
        assert await start(ws)
