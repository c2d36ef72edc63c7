"""Streaming STT on real sockets: tokens, /v3/ws messages and every close code, /v2 -> 410."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.emulator.wsutil import (
    chunks,
    closed,
    next_event,
    send_paced,
    silence,
    speech,
    until,
)
from tests.live import EMULATOR_KEY, Proc, run_emulator

pytestmark = pytest.mark.e2e

RATE = 16_000
CHUNK_100MS = RATE * 2 // 10
SENTENCE = "hello world, this is a streaming test"


@pytest.fixture(scope="module")
def stream_emu() -> Iterator[Proc]:
    with run_emulator() as proc:
        yield proc


@pytest.fixture(scope="module")
def capped_emu() -> Iterator[Proc]:
    """Sessions capped at 2 s and at 2 concurrent ones."""
    env = {"EMULATOR_MAX_SESSION_DURATION_S": "2", "EMULATOR_MAX_CONCURRENT_SESSIONS": "2"}
    with run_emulator(env) as proc:
        yield proc


def ws_url(proc: Proc, path: str = "/v3/ws", **params: Any) -> str:
    query = "&".join(f"{k}={v}" for k, v in params.items())
    return f"ws://127.0.0.1:{proc.port}{path}" + (f"?{query}" if query else "")


def key_header(key: str = EMULATOR_KEY) -> dict[str, str]:
    return {"Authorization": key}


def mint(
    proc: Proc, path: str = "/v3/token", headers: dict[str, str] | None = None, **q: Any
) -> str:
    response = httpx.get(
        proc.url + path, params=q or {"expires_in_seconds": 60}, headers=headers or key_header()
    )
    assert response.status_code == 200, response.text
    token: str = response.json()["token"]
    return token


def session_record(proc: Proc, session_id: str) -> dict[str, Any]:
    response = httpx.get(f"{proc.url}/_emulator/sessions/{session_id}")
    assert response.status_code == 200, response.text
    record: dict[str, Any] = response.json()
    return record


async def begin(ws: ClientConnection) -> dict[str, Any]:
    event = await next_event(ws)
    assert event["type"] == "Begin", event
    return event


# ---------------------------------------------------------------- turns from speech


async def test_turns_partials_and_final_from_real_speech(stream_emu: Proc) -> None:
    audio = speech(SENTENCE, RATE) + silence(0.7, RATE)
    pieces = chunks(audio, CHUNK_100MS)
    url = ws_url(
        stream_emu,
        sample_rate=RATE,
        speech_model="u3-rt-pro",
        max_turn_silence=400,
        speaker_labels="true",
    )
    async with connect(url, additional_headers=key_header()) as ws:
        started = await begin(ws)
        assert started["expires_at"] > time.time() + 3600  # the 3-hour default cap
        sender = asyncio.create_task(send_paced(ws, pieces, 0.1))
        events = await until(ws, lambda e: e.get("type") == "Turn" and e["end_of_turn"])
        await sender
        await ws.send(json.dumps({"type": "Terminate"}))
        code, _, rest = await closed(ws)

    kinds = [e["type"] for e in events]
    assert kinds[0] == "SpeechStarted"
    assert 100 <= events[0]["timestamp"] <= 500  # the clip has 200 ms of lead silence
    assert 0 < events[0]["confidence"] <= 1
    partials = [e for e in events if e["type"] == "Turn" and not e["end_of_turn"]]
    assert partials, "no partial Turn before the final one"
    final = events[-1]
    assert final["turn_order"] == 0
    assert final["turn_is_formatted"] is True  # U3 Pro finals are formatted
    assert final["transcript"][0].isupper()
    assert final["transcript"].endswith(".")
    assert final["utterance"] == final["transcript"]
    assert final["end_of_turn_confidence"] == 1.0
    assert final["speaker_label"] == "A"
    words = final["words"]
    assert words
    assert " ".join(w["text"] for w in words) == final["transcript"]
    assert all(w["word_is_final"] and w["speaker"] == "A" for w in words)
    assert all(0 <= w["start"] < w["end"] <= len(audio) / 2 / RATE * 1000 for w in words)
    assert [w["start"] for w in words] == sorted(w["start"] for w in words)
    assert all(p["turn_order"] == 0 and p["utterance"] == "" for p in partials)

    assert code == 1000
    assert [e["type"] for e in rest] == ["Termination"]
    termination = rest[0]
    assert termination["audio_duration_seconds"] == round(sum(map(len, pieces)) / 2 / RATE)
    assert isinstance(termination["session_duration_seconds"], int)

    record = session_record(stream_emu, started["id"])
    assert record["product"] == "streaming"
    assert record["close_code"] == 1000
    assert record["terminate_received"] is True
    assert record["messages"] == ["Terminate"]
    binary = [f for f in record["frames"] if f["kind"] == "binary"]
    assert [f["size"] for f in binary] == [len(p) for p in pieces]
    assert all(f["duration_ms"] == 100.0 for f in binary)
    arrivals = [f["at"] for f in binary]
    assert arrivals == sorted(arrivals)
    assert arrivals[-1] - arrivals[0] >= 0.09 * (len(pieces) - 1)  # paced as sent
    pcm = httpx.get(f"{stream_emu.url}/_emulator/sessions/{started['id']}/pcm")
    assert pcm.content == b"".join(pieces)
    assert pcm.headers["x-encoding"] == "pcm_s16le"


async def test_force_endpoint_ends_the_turn_and_the_next_turn_counts_on(stream_emu: Proc) -> None:
    clip = speech("one two three four", RATE)
    url = ws_url(stream_emu, sample_rate=RATE, speech_model="universal-streaming-english")
    async with connect(url, additional_headers=key_header()) as ws:
        await begin(ws)
        # No trailing silence: only ForceEndpoint can end these turns. The first clip goes
        # in one burst (within the 2 s tolerance), the second at real time.
        for piece in chunks(clip, CHUNK_100MS):
            await ws.send(piece)
        await ws.send(json.dumps({"type": "ForceEndpoint"}))
        first = await until(ws, lambda e: e.get("type") == "Turn" and e["end_of_turn"])
        await send_paced(ws, chunks(clip, CHUNK_100MS), 0.1)
        await ws.send(json.dumps({"type": "Terminate"}))
        code, _, rest = await closed(ws)
    assert first[-1]["turn_order"] == 0
    assert first[-1]["transcript"]
    # Universal-Streaming without format_turns: the final is not formatted.
    assert first[-1]["turn_is_formatted"] is False
    finals = [e for e in rest if e.get("type") == "Turn" and e["end_of_turn"]]
    assert [e["turn_order"] for e in finals] == [1]  # Terminate flushed the open turn
    assert rest[-1]["type"] == "Termination"
    assert code == 1000


async def test_mulaw_at_8k(stream_emu: Proc) -> None:
    rate = 8000
    audio = speech("good morning to you all", rate, "pcm_mulaw") + silence(0.6, rate, "pcm_mulaw")
    pieces = chunks(audio, rate // 10)  # 100 ms of mu-law = 800 bytes
    url = ws_url(
        stream_emu,
        sample_rate=rate,
        encoding="pcm_mulaw",
        speech_model="u3-rt-pro",
        max_turn_silence=400,
    )
    async with connect(url, additional_headers=key_header()) as ws:
        started = await begin(ws)
        sender = asyncio.create_task(send_paced(ws, pieces, 0.1))
        events = await until(ws, lambda e: e.get("type") == "Turn" and e["end_of_turn"])
        await sender
        await ws.send(json.dumps({"type": "Terminate"}))
        code, _, rest = await closed(ws)
    assert events[0]["type"] == "SpeechStarted"
    assert events[-1]["transcript"]
    assert events[-1]["words"]
    assert rest[-1]["type"] == "Termination"
    assert code == 1000
    record = session_record(stream_emu, started["id"])
    assert record["encoding"] == "pcm_mulaw"
    assert record["sample_rate"] == rate
    assert {f["duration_ms"] for f in record["frames"] if f["kind"] == "binary"} == {100.0}


async def test_update_configuration_and_keep_alive_keep_the_session(stream_emu: Proc) -> None:
    url = ws_url(stream_emu, sample_rate=RATE)
    async with connect(url, additional_headers=key_header()) as ws:
        started = await begin(ws)
        update = {
            "type": "UpdateConfiguration",
            "keyterms_prompt": ["AssemblyAI"],
            "min_turn_silence": 100,
            "max_turn_silence": 300,
        }
        await ws.send(json.dumps(update))
        await ws.send(json.dumps({"type": "KeepAlive"}))
        await ws.send(silence(0.1, RATE))
        await ws.send(json.dumps({"type": "Terminate"}))
        code, _, rest = await closed(ws)
    assert code == 1000
    assert [e["type"] for e in rest] == ["Termination"]
    record = session_record(stream_emu, started["id"])
    assert record["messages"] == ["UpdateConfiguration", "KeepAlive", "Terminate"]


# The SDK's own use of websockets warns; not ours to fix.
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
async def test_the_sdk_streams_against_the_emulator(stream_emu: Proc) -> None:
    from assemblyai.streaming.v3 import (
        StreamingClient,
        StreamingClientOptions,
        StreamingEvents,
        StreamingParameters,
    )

    audio = speech("testing the kit", RATE) + silence(0.6, RATE)
    turns: list[Any] = []
    begins: list[Any] = []

    def run() -> None:
        client = StreamingClient(
            StreamingClientOptions(
                api_key=EMULATOR_KEY, api_host=f"ws://127.0.0.1:{stream_emu.port}"
            )
        )
        client.on(StreamingEvents.Begin, lambda _, event: begins.append(event))
        client.on(StreamingEvents.Turn, lambda _, event: turns.append(event))
        client.connect(
            StreamingParameters(sample_rate=RATE, speech_model="u3-rt-pro", max_turn_silence=400)
        )
        started = time.monotonic()
        for i, piece in enumerate(chunks(audio, CHUNK_100MS)):
            time.sleep(max(0.0, started + i * 0.1 - time.monotonic()))
            client.stream(piece)
        client.disconnect(terminate=True)

    await asyncio.to_thread(run)
    assert begins
    assert begins[0].id
    finals = [t for t in turns if t.end_of_turn]
    assert finals
    assert finals[0].transcript
    assert finals[0].turn_is_formatted


# ---------------------------------------------------------------- auth and tokens


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "wrong-key"}, {"Authorization": f"Bearer {EMULATOR_KEY}"}],
    ids=["missing", "wrong", "bearer-prefix"],
)
async def test_bad_auth_closes_1008(stream_emu: Proc, headers: dict[str, str]) -> None:
    async with connect(ws_url(stream_emu, sample_rate=RATE), additional_headers=headers) as ws:
        code, reason, events = await closed(ws)
    assert code == 1008
    assert events == []
    assert "Unauthorized" in reason


async def test_token_opens_one_session_only(stream_emu: Proc) -> None:
    token = mint(stream_emu, expires_in_seconds=60, max_session_duration_seconds=60)
    async with connect(ws_url(stream_emu, sample_rate=RATE, token=token)) as ws:
        started = await begin(ws)
        # The token's max_session_duration_seconds caps the session.
        assert started["expires_at"] <= time.time() + 61
        await ws.send(json.dumps({"type": "Terminate"}))
        assert (await closed(ws))[0] == 1000
    async with connect(ws_url(stream_emu, sample_rate=RATE, token=token)) as ws:
        assert (await closed(ws))[0] == 1008
    record = session_record(stream_emu, started["id"])
    assert "token" not in record["params"]  # never stored or shown


async def test_token_in_authorization_header_as_the_sdk_sends_it(stream_emu: Proc) -> None:
    token = mint(stream_emu)
    headers = {"Authorization": token}
    async with connect(ws_url(stream_emu, sample_rate=RATE), additional_headers=headers) as ws:
        await begin(ws)


async def test_expired_token_is_refused(stream_emu: Proc) -> None:
    token = mint(stream_emu, expires_in_seconds=1)
    await asyncio.sleep(1.1)  # the lifetime itself is what is tested
    async with connect(ws_url(stream_emu, sample_rate=RATE, token=token)) as ws:
        assert (await closed(ws))[0] == 1008


async def test_tokens_do_not_cross_products(stream_emu: Proc) -> None:
    agent_token = mint(stream_emu, "/v1/token", {"Authorization": f"Bearer {EMULATOR_KEY}"})
    async with connect(ws_url(stream_emu, sample_rate=RATE, token=agent_token)) as ws:
        assert (await closed(ws))[0] == 1008
    stream_token = mint(stream_emu)
    async with connect(ws_url(stream_emu, "/v1/ws", token=stream_token)) as ws:
        assert (await closed(ws))[0] == 1008
    # Refused at the wrong door, each token still opens its own product once.
    async with connect(ws_url(stream_emu, "/v1/ws", token=agent_token)) as ws:
        await ws.send(json.dumps({"type": "session.update", "session": {}}))
        assert (await next_event(ws))["type"] == "session.ready"
    async with connect(ws_url(stream_emu, sample_rate=RATE, token=stream_token)) as ws:
        await begin(ws)


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({}, "expires_in_seconds is required"),
        ({"expires_in_seconds": 0}, "between 1 and 600"),
        ({"expires_in_seconds": 601}, "between 1 and 600"),
        ({"expires_in_seconds": "soon"}, "must be an integer"),
        ({"expires_in_seconds": 60, "max_session_duration_seconds": 59}, "between 60 and 10800"),
        ({"expires_in_seconds": 60, "max_session_duration_seconds": 10801}, "between 60 and 10800"),
    ],
)
@pytest.mark.parametrize("path", ["/v3/token", "/v1/token"])
def test_token_parameters_are_validated(
    stream_emu: Proc, path: str, query: dict[str, Any], message: str
) -> None:
    auth = key_header() if path == "/v3/token" else {"Authorization": f"Bearer {EMULATOR_KEY}"}
    response = httpx.get(stream_emu.url + path, params=query, headers=auth)
    assert response.status_code == 400
    assert message in response.json()["error"]


def test_token_auth_follows_each_product(stream_emu: Proc) -> None:
    bearer = {"Authorization": f"Bearer {EMULATOR_KEY}"}
    q = {"expires_in_seconds": 60}
    assert httpx.get(stream_emu.url + "/v3/token", params=q, headers=bearer).status_code == 401
    assert httpx.get(stream_emu.url + "/v3/token", params=q).status_code == 401
    assert (
        httpx.get(stream_emu.url + "/v1/token", params=q, headers=key_header()).status_code == 401
    )
    ok = httpx.get(stream_emu.url + "/v1/token", params=q, headers=bearer)
    assert ok.status_code == 200
    assert set(ok.json()) == {"token"}


# ---------------------------------------------------------------- protocol violations


async def test_invalid_json_closes_3006(stream_emu: Proc) -> None:
    async with connect(ws_url(stream_emu, sample_rate=RATE), additional_headers=key_header()) as ws:
        await begin(ws)
        await ws.send("{not json")
        code, reason, _ = await closed(ws)
    assert code == 3006
    assert "JSON" in reason


async def test_unknown_message_type_closes_3006(stream_emu: Proc) -> None:
    async with connect(ws_url(stream_emu, sample_rate=RATE), additional_headers=key_header()) as ws:
        started = await begin(ws)
        await ws.send(json.dumps({"type": "Pause"}))
        code, reason, _ = await closed(ws)
    assert code == 3006
    assert "Pause" in reason
    assert session_record(stream_emu, started["id"])["close_code"] == 3006


@pytest.mark.parametrize(
    "query",
    [
        {},  # sample_rate is required
        {"sample_rate": RATE, "speech_model": "u3-pro-max"},
        {"sample_rate": RATE, "encoding": "pcm_f32le"},
        {"sample_rate": RATE, "keyterms_prompt": json.dumps(["t"] * 101)},
        {"sample_rate": RATE, "keyterms_prompt": json.dumps(["x" * 51])},
        {"sample_rate": RATE, "inactivity_timeout": 2},
    ],
    ids=["no-rate", "model", "encoding", "101-terms", "long-term", "inactivity"],
)
async def test_invalid_parameters_close_3006(stream_emu: Proc, query: dict[str, Any]) -> None:
    from urllib.parse import urlencode

    url = f"ws://127.0.0.1:{stream_emu.port}/v3/ws?{urlencode(query)}"
    async with connect(url, additional_headers=key_header()) as ws:
        code, _, events = await closed(ws)
    assert code == 3006
    assert events == []


@pytest.mark.parametrize("millis", [40, 1100])
async def test_chunk_outside_50_to_1000_ms_closes_3007(stream_emu: Proc, millis: int) -> None:
    async with connect(ws_url(stream_emu, sample_rate=RATE), additional_headers=key_header()) as ws:
        await begin(ws)
        await ws.send(silence(millis / 1000, RATE))
        code, reason, _ = await closed(ws)
    assert code == 3007
    assert "between 50 and 1000 ms" in reason


async def test_chunk_limits_follow_the_encoding(stream_emu: Proc) -> None:
    # 800 bytes is 50 ms of 8 kHz mu-law (fine) but 25 ms of 16 kHz PCM16 (too short).
    url = ws_url(stream_emu, sample_rate=8000, encoding="pcm_mulaw")
    async with connect(url, additional_headers=key_header()) as ws:
        await begin(ws)
        await ws.send(b"\xff" * 400)
        await ws.send(json.dumps({"type": "Terminate"}))
        assert (await closed(ws))[0] == 1000
    async with connect(ws_url(stream_emu, sample_rate=RATE), additional_headers=key_header()) as ws:
        await begin(ws)
        await ws.send(b"\x00" * 800)
        assert (await closed(ws))[0] == 3007


async def test_audio_faster_than_real_time_closes_3007(stream_emu: Proc) -> None:
    async with connect(ws_url(stream_emu, sample_rate=RATE), additional_headers=key_header()) as ws:
        await begin(ws)
        # 5 s of audio at once: well past the 2 s burst tolerance.
        for _ in range(50):
            try:
                await ws.send(silence(0.1, RATE))
            except Exception:
                break
        code, reason, _ = await closed(ws)
    assert code == 3007
    assert "faster than real time" in reason


async def test_audio_at_real_time_is_accepted_with_a_burst(stream_emu: Proc) -> None:
    async with connect(ws_url(stream_emu, sample_rate=RATE), additional_headers=key_header()) as ws:
        await begin(ws)
        # 1.5 s at once (within the tolerance), then real time.
        for _ in range(15):
            await ws.send(silence(0.1, RATE))
        await send_paced(ws, [silence(0.1, RATE)] * 5, 0.1)
        await ws.send(json.dumps({"type": "Terminate"}))
        code, _, rest = await closed(ws)
    assert code == 1000
    assert rest[-1]["audio_duration_seconds"] == 2


async def test_inactivity_timeout_closes_unless_kept_alive(stream_emu: Proc) -> None:
    url = ws_url(stream_emu, sample_rate=RATE, inactivity_timeout=5)
    async with connect(url, additional_headers=key_header()) as ws:
        await begin(ws)
        opened = time.monotonic()
        await asyncio.sleep(2)  # idle on purpose: the timeout is what is tested
        await ws.send(json.dumps({"type": "KeepAlive"}))
        code, reason, _ = await closed(ws, timeout=10)
        lasted = time.monotonic() - opened
    assert code == 3008
    assert "inactivity" in reason
    assert 6.5 <= lasted <= 9.5  # 5 s after the KeepAlive, not 5 s after the start


# ---------------------------------------------------------------- caps, faults, v2


async def test_session_cap_closes_3008(capped_emu: Proc) -> None:
    async with connect(ws_url(capped_emu, sample_rate=RATE), additional_headers=key_header()) as ws:
        started = await begin(ws)
        assert started["expires_at"] <= time.time() + 3
        code, reason, _ = await closed(ws, timeout=6)
    assert code == 3008
    assert "maximum session duration" in reason


async def test_too_many_concurrent_sessions_closes_3009(capped_emu: Proc) -> None:
    url = ws_url(capped_emu, sample_rate=RATE)
    async with (
        connect(url, additional_headers=key_header()) as first,
        connect(url, additional_headers=key_header()) as second,
    ):
        await begin(first)
        await begin(second)
        async with connect(url, additional_headers=key_header()) as third:
            code, reason, events = await closed(third)
        assert code == 3009
        assert events == []
        assert "concurrent" in reason
        await first.close()
    # A slot is free again once a session ended.
    deadline = time.monotonic() + 5
    while True:
        async with connect(url, additional_headers=key_header()) as again:
            try:
                if json.loads(await asyncio.wait_for(again.recv(), 5)).get("type") == "Begin":
                    break
            except ConnectionClosed:
                pass
        assert time.monotonic() < deadline, "no slot freed after the sessions ended"
        await asyncio.sleep(0.05)


async def test_injected_close_code(stream_emu: Proc) -> None:
    fault = {"route": "WS /v3/ws", "close_code": 3005}
    assert httpx.post(f"{stream_emu.url}/_emulator/faults", json=fault).status_code == 201
    async with connect(ws_url(stream_emu, sample_rate=RATE), additional_headers=key_header()) as ws:
        await begin(ws)
        code, _, _ = await closed(ws)
    assert code == 3005
    # One use only: the next session is normal.
    async with connect(ws_url(stream_emu, sample_rate=RATE), additional_headers=key_header()) as ws:
        await begin(ws)
        await ws.send(json.dumps({"type": "Terminate"}))
        assert (await closed(ws))[0] == 1000


async def test_injected_status_refuses_the_upgrade(stream_emu: Proc) -> None:
    fault = {"route": "WS /v3/ws", "status": 503, "retry_after": 3}
    assert httpx.post(f"{stream_emu.url}/_emulator/faults", json=fault).status_code == 201
    with pytest.raises(InvalidStatus) as refused:
        async with connect(ws_url(stream_emu, sample_rate=RATE), additional_headers=key_header()):
            pass
    assert refused.value.response.status_code == 503
    assert refused.value.response.headers["Retry-After"] == "3"


def test_token_route_fault(stream_emu: Proc) -> None:
    fault = {"route": "GET /v3/token", "status": 429, "retry_after": 2}
    assert httpx.post(f"{stream_emu.url}/_emulator/faults", json=fault).status_code == 201
    q = {"expires_in_seconds": 60}
    first = httpx.get(stream_emu.url + "/v3/token", params=q, headers=key_header())
    second = httpx.get(stream_emu.url + "/v3/token", params=q, headers=key_header())
    assert (first.status_code, first.headers["retry-after"]) == (429, "2")
    assert second.status_code == 200


async def test_v2_realtime_is_gone(stream_emu: Proc) -> None:
    response = httpx.get(f"{stream_emu.url}/v2/realtime/ws?sample_rate=16000")
    assert response.status_code == 410
    assert "/v3/ws" in response.json()["error"]
    with pytest.raises(InvalidStatus) as refused:
        async with connect(
            f"ws://127.0.0.1:{stream_emu.port}/v2/realtime/ws?sample_rate=16000",
            additional_headers=key_header(),
        ):
            pass
    assert refused.value.response.status_code == 410


async def test_voice_agent_sessions_have_their_own_cap(capped_emu: Proc) -> None:
    agent = f"ws://127.0.0.1:{capped_emu.port}/v1/ws"
    bearer = {"Authorization": f"Bearer {EMULATOR_KEY}"}
    async with (
        connect(agent, additional_headers=bearer) as one,
        connect(agent, additional_headers=bearer) as two,
    ):
        for ws in (one, two):
            await ws.send(json.dumps({"type": "session.update", "session": {}}))
            assert (await next_event(ws))["type"] == "session.ready"
        async with connect(agent, additional_headers=bearer) as third:
            code, _, events = await closed(third)
        assert code == 3009
        assert events == []


async def test_a_client_that_leaves_without_terminate_is_recorded(stream_emu: Proc) -> None:
    async with connect(ws_url(stream_emu, sample_rate=RATE), additional_headers=key_header()) as ws:
        started = await begin(ws)
        await ws.send(silence(0.2, RATE))
        await ws.close(code=4000, reason="bye")
    deadline = time.monotonic() + 5
    while (record := session_record(stream_emu, started["id"]))["close_code"] is None:
        assert time.monotonic() < deadline, "the emulator never noticed the disconnect"
        await asyncio.sleep(0.02)
    assert record["close_code"] == 4000
    assert record["terminate_received"] is False
    assert record["pcm_bytes"] == int(0.2 * RATE) * 2
