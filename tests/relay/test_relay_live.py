"""The `/v3/ws` relay end to end on real sockets: the real service relays to the real
emulator, whose session records show what reached upstream (and what did not)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import threading
import time
from collections.abc import Iterator
from typing import Any

import asyncpg
import httpx
import pytest
import websockets
from assemblyai.streaming.v3 import (
    StreamingClient,
    StreamingClientOptions,
    StreamingEvents,
    StreamingParameters,
)
from websockets.exceptions import ConnectionClosed, InvalidStatus

from app.core.db import plain_url
from tests.emulator.wsutil import chunks, silence, speech
from tests.live import Proc, create_key_in, run_service

pytestmark = pytest.mark.e2e

RATE = 16_000
FRAME = RATE * 2 // 10  # 100 ms of PCM16
SECRETS: list[str] = []


@pytest.fixture(scope="module")
def relay(database_url: str, emulator: Proc) -> Iterator[Proc]:
    env = {
        "LOG_LEVEL": "DEBUG",
        "WS_RELAY_BUDGET_SLICE_S": "1",
        "WS_RELAY_KEY_MAX_SESSIONS": "3",
        "WS_RELAY_END_USER_MAX_SESSIONS": "1",
        "WS_RELAY_TERMINATE_WAIT_S": "3",
    }
    if os.environ.get("TEST_REDIS_URL"):
        # Tokens, open-session slots and the budget in Redis, as with several instances.
        env["REDIS_URL"] = os.environ["TEST_REDIS_URL"]
    with run_service(database_url, emulator.url, env) as proc:
        yield proc


@pytest.fixture
def key(database_url: str) -> str:
    raw = create_key_in(database_url, ["tokens:streaming", "tokens:agents"], name="relay e2e")
    SECRETS.append(raw)
    return raw


@pytest.fixture
def emu(emulator: Proc) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=emulator.url, timeout=10) as client:
        client.delete("/_emulator/faults")
        yield client
        client.delete("/_emulator/faults")


def ws_url(proc: Proc, path: str = "/v3/ws", **query: Any) -> str:
    params = {"sample_rate": RATE, "speech_model": "u3-rt-pro", **query}
    return str(httpx.URL(proc.url.replace("http://", "ws://") + path, params=params))


def sessions(emu: httpx.Client) -> dict[str, dict[str, Any]]:
    found = emu.get("/_emulator/sessions", params={"frames": "false"}).json()
    return {s["id"]: s for s in found}


def wait_session(emu: httpx.Client, session_id: str, timeout: float = 10) -> dict[str, Any]:
    """The emulator's record of the session once it has ended."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        record = sessions(emu).get(session_id)
        if record is not None and record["ended_at"] is not None:
            return record
        time.sleep(0.05)
    raise AssertionError(f"session {session_id} did not end upstream in {timeout} s")


async def begin(ws: websockets.ClientConnection) -> dict[str, Any]:
    message = json.loads(await asyncio.wait_for(ws.recv(), 10))
    assert message["type"] == "Begin", message
    return dict(message)


async def closed_with(ws: websockets.ClientConnection, timeout: float = 15) -> tuple[int, str]:
    """Read until the relay closes; (code, reason)."""
    try:
        async with asyncio.timeout(timeout):
            while True:
                await ws.recv()
    except ConnectionClosed as closed:
        received = closed.rcvd
    if received is None:
        raise AssertionError("closed without a close frame")
    return received.code, received.reason


def db_rows(database_url: str, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    async def fetch() -> list[tuple[Any, ...]]:
        conn = await asyncpg.connect(plain_url(database_url))
        try:
            return [tuple(r) for r in await conn.fetch(sql, *args)]
        finally:
            await conn.close()

    return asyncio.run(fetch())


# --- the SDK, unchanged, through the relay ---------------------------------------------------


def test_python_sdk_streams_through_the_relay(relay: Proc, emu: httpx.Client, key: str) -> None:
    audio = speech("the quick brown fox jumps over the lazy dog", RATE) + silence(1.5, RATE)
    events: dict[str, list[Any]] = {"begin": [], "turn": [], "termination": [], "error": []}
    client = StreamingClient(
        StreamingClientOptions(api_host=relay.url.replace("http://", "ws://"), api_key=key)
    )
    client.on(StreamingEvents.Begin, lambda _, e: events["begin"].append(e))
    client.on(StreamingEvents.Turn, lambda _, e: events["turn"].append(e))
    client.on(StreamingEvents.Termination, lambda _, e: events["termination"].append(e))
    client.on(StreamingEvents.Error, lambda _, e: events["error"].append(e))
    client.connect(StreamingParameters(sample_rate=RATE, speech_model="u3-rt-pro"))
    started = time.monotonic()
    for i, piece in enumerate(chunks(audio, FRAME)):
        time.sleep(max(0.0, started + i * 0.1 - time.monotonic()))
        client.stream(piece)
    client.disconnect(terminate=True)

    assert not events["error"], events["error"]
    assert len(events["begin"]) == 1
    assert len(events["termination"]) == 1
    finals = [t for t in events["turn"] if t.end_of_turn]
    assert finals
    heard = " ".join(t.transcript.lower() for t in finals)
    assert "fox" in heard, heard
    assert "dog" in heard, heard
    # Upstream saw the very bytes the SDK sent, and the Terminate it sent.
    upstream_id = events["begin"][0].id
    record = wait_session(emu, str(upstream_id))
    assert record["terminate_received"] is True
    sent = b"".join(chunks(audio, FRAME))
    pcm = emu.get(f"/_emulator/sessions/{upstream_id}/pcm").content
    assert hashlib.sha256(pcm).hexdigest() == hashlib.sha256(sent).hexdigest()
    assert record["params"]["speech_model"] == "u3-rt-pro"


def test_session_is_metered_in_postgres_usage_and_audit(
    relay: Proc, emu: httpx.Client, key: str, database_url: str, live_admin_key: str
) -> None:
    async def run() -> str:
        async with websockets.connect(
            ws_url(relay), additional_headers={"Authorization": key, "X-End-User": "meter-u"}
        ) as ws:
            first = await begin(ws)
            for piece in chunks(silence(1.0, RATE), FRAME):
                await ws.send(piece)
                await asyncio.sleep(0.1)
            await ws.send(json.dumps({"type": "Terminate"}))
            code, _ = await closed_with(ws)
            assert code == 1000
            return str(first["id"])

    upstream_id = asyncio.run(run())
    wait_session(emu, upstream_id)
    deadline = time.monotonic() + 5
    rows: list[Any] = []
    while time.monotonic() < deadline and not rows:
        rows = db_rows(
            database_url,
            "SELECT end_user, audio_s, session_s, charged_s, close_code, ended_by, "
            "client_terminated FROM relay_sessions WHERE upstream_session_id = $1 "
            "AND ended_at IS NOT NULL",
            upstream_id,
        )
        time.sleep(0.1)
    assert rows, "no relay_sessions row"
    end_user, audio_s, session_s, charged_s, close_code, ended_by, terminated = rows[0]
    assert end_user == "meter-u"
    assert audio_s == pytest.approx(1.0, abs=0.01)
    assert 1.0 <= session_s < 5
    assert charged_s == int(session_s) + 1
    assert (close_code, ended_by, terminated) == (1000, "client", True)
    usage = httpx.get(
        f"{relay.url}/api/usage",
        params={"key_id": _key_id(database_url, key)},
        headers={"Authorization": live_admin_key},
    ).json()
    assert len(usage["keys"]) == 1, usage
    assert usage["keys"][0]["relay_sessions"] == 1
    user = usage["keys"][0]["end_users"][0]
    assert user["end_user"] == "meter-u"
    assert user["relay_sessions"] == 1
    assert user["relay_session_s"] == charged_s
    assert user["budget"]["today_session_s_used"] == charged_s
    audit = httpx.get(
        f"{relay.url}/api/audit",
        params={"action": "relay.streaming", "end_user": "meter-u"},
        headers={"Authorization": live_admin_key},
    ).json()["items"]
    assert audit[0]["outcome"] == "ended"
    assert audit[0]["detail"]["upstream_session_id"] == upstream_id
    assert audit[0]["detail"]["audio_s"] == pytest.approx(1.0, abs=0.01)


def test_open_sessions_are_listed_live(relay: Proc, key: str) -> None:
    def listed(**params: Any) -> list[dict[str, Any]]:
        answer = httpx.get(
            f"{relay.url}/api/relay/sessions", params=params, headers={"Authorization": key}
        )
        assert answer.status_code == 200, answer.text
        items: list[dict[str, Any]] = answer.json()["items"]
        return items

    async def run() -> str:
        async with websockets.connect(
            ws_url(relay), additional_headers={"Authorization": key, "X-End-User": "live-u"}
        ) as ws:
            first = await begin(ws)
            await asyncio.sleep(0.3)
            (now_open,) = await asyncio.to_thread(listed, open="true")
            assert now_open["ended_at"] is None
            assert now_open["end_user"] == "live-u"
            await ws.send(json.dumps({"type": "Terminate"}))
            await closed_with(ws)
            return str(first["id"])

    upstream_id = asyncio.run(run())
    time.sleep(0.5)
    assert listed(open="true") == []
    (ended,) = listed()
    assert ended["upstream_session_id"] == upstream_id
    assert ended["ended_by"] == "client"


def _metric(proc: Proc, name: str, kind: str) -> float:
    """One sample of the service's `/metrics` page (0 when it has none yet)."""
    page = httpx.get(f"{proc.url}/metrics", timeout=10)
    assert page.status_code == 200, page.text
    prefix = f'{name}{{kind="{kind}"}} '
    for line in page.text.splitlines():
        if line.startswith(prefix):
            return float(line.removeprefix(prefix))
    return 0.0


def test_relayed_sessions_show_in_the_metrics(relay: Proc, key: str) -> None:
    """Open sessions by kind while they run, their seconds added when they end."""
    # Sessions of earlier tests may still be ending on the service's side.
    deadline = time.monotonic() + 10
    while (open_before := _metric(relay, "aai_ws_sessions_open", "streaming")) != 0:
        assert time.monotonic() < deadline, "sessions of earlier tests stayed open"
        time.sleep(0.05)
    seconds_before = _metric(relay, "aai_ws_session_seconds_total", "streaming")

    async def run() -> float:
        async with websockets.connect(
            ws_url(relay), additional_headers={"Authorization": key, "X-End-User": "metrics-u"}
        ) as ws:
            await begin(ws)
            started = time.monotonic()
            during = await asyncio.to_thread(_metric, relay, "aai_ws_sessions_open", "streaming")
            assert during == open_before + 1
            await asyncio.sleep(0.5)
            await ws.send(json.dumps({"type": "Terminate"}))
            await closed_with(ws)
            return time.monotonic() - started

    held = asyncio.run(run())
    deadline = time.monotonic() + 10
    while _metric(relay, "aai_ws_sessions_open", "streaming") != open_before:
        assert time.monotonic() < deadline, "the open-session gauge never came back down"
        time.sleep(0.05)
    added = _metric(relay, "aai_ws_session_seconds_total", "streaming") - seconds_before
    assert 0.5 <= added <= held + 1


# --- the client goes away: the bill stops --------------------------------------------------


def test_client_gone_without_terminate_terminates_upstream(
    relay: Proc, emu: httpx.Client, key: str
) -> None:
    async def run() -> tuple[str, float]:
        ws = await websockets.connect(ws_url(relay), additional_headers={"Authorization": key})
        first = await begin(ws)
        for piece in chunks(silence(0.5, RATE), FRAME):
            await ws.send(piece)
            await asyncio.sleep(0.1)
        gone = time.time()
        ws.transport.abort()  # a network drop: no close frame, no Terminate
        return str(first["id"]), gone

    upstream_id, gone = asyncio.run(run())
    record = wait_session(emu, upstream_id)
    assert record["terminate_received"] is True
    assert record["close_code"] == 1000
    assert record["ended_at"] - gone < 2.0


def test_client_closing_without_terminate_terminates_upstream(
    relay: Proc, emu: httpx.Client, key: str
) -> None:
    async def run() -> str:
        async with websockets.connect(
            ws_url(relay), additional_headers={"Authorization": key}
        ) as ws:
            first = await begin(ws)
            await ws.send(silence(0.1, RATE))
        return str(first["id"])  # closed with 1000, never sent Terminate

    record = wait_session(emu, asyncio.run(run()))
    assert record["terminate_received"] is True
    assert "Terminate" in record["messages"]


# --- refusals before anything goes upstream --------------------------------------------------


async def refused(url: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    async with websockets.connect(url, additional_headers=headers or {}) as ws:
        return await closed_with(ws, 10)


def test_bad_and_reused_relay_tokens_never_reach_upstream(
    relay: Proc, emu: httpx.Client, key: str
) -> None:
    minted = httpx.get(
        f"{relay.url}/v3/relay-token",
        params={"expires_in_seconds": 60},
        headers={"Authorization": key},
    )
    assert minted.status_code == 200, minted.text
    token = minted.json()["token"]
    SECRETS.append(token)

    async def use_once() -> str:
        async with websockets.connect(ws_url(relay, token=token)) as ws:
            first = await begin(ws)
            await ws.send(json.dumps({"type": "Terminate"}))
            await closed_with(ws)
            return str(first["id"])

    upstream_id = asyncio.run(use_once())
    record = wait_session(emu, upstream_id)
    assert "token" not in record["params"]  # the relay's token never goes upstream
    before = set(sessions(emu))
    for bad in (token, token[:-2] + "xx", "aaip_rt.nope", ""):
        code, reason = asyncio.run(refused(ws_url(relay, token=bad)))
        assert code == 1008, (bad, code, reason)
        assert "relay token" in reason
    # The SDK's way: the token in Authorization.
    code, _ = asyncio.run(refused(ws_url(relay), {"Authorization": token}))
    assert code == 1008
    code, _ = asyncio.run(refused(ws_url(relay), {"Authorization": "aaip_wrong"}))
    assert code == 1008
    code, _ = asyncio.run(refused(ws_url(relay)))
    assert code == 1008
    assert set(sessions(emu)) == before


def test_relay_token_via_app_route_is_bound_to_its_end_user(
    relay: Proc, emu: httpx.Client, key: str, database_url: str
) -> None:
    answer = httpx.post(
        f"{relay.url}/api/relay/tokens/streaming",
        json={"end_user": "bound-u", "speaker_labels": True},
        headers={"Authorization": key},
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    SECRETS.append(body["token"])
    assert body["websocket_url"].startswith(relay.url.replace("http://", "ws://") + "/v3/ws?")

    async def run() -> str:
        async with websockets.connect(body["websocket_url"]) as ws:
            first = await begin(ws)
            await ws.send(json.dumps({"type": "Terminate"}))
            await closed_with(ws)
            return str(first["id"])

    upstream_id = asyncio.run(run())
    assert wait_session(emu, upstream_id)["params"]["speaker_labels"] == "true"
    time.sleep(0.3)
    rows = db_rows(
        database_url,
        "SELECT end_user, via FROM relay_sessions WHERE upstream_session_id = $1",
        upstream_id,
    )
    assert rows == [("bound-u", "relay_token")]


def test_session_cookie_needs_this_services_origin(
    relay: Proc, emu: httpx.Client, key: str
) -> None:
    signed_in = httpx.post(f"{relay.url}/api/session", json={"key": key})
    assert signed_in.status_code == 201, signed_in.text
    cookie = signed_in.cookies["aaip_session"]
    SECRETS.append(cookie)
    headers = {"Cookie": f"aaip_session={cookie}"}
    before = set(sessions(emu))
    # Cross-site WebSocket hijacking: a foreign page's socket carries the cookie too.
    for origin in ("https://evil.example", None):
        extra = {"Origin": origin} if origin else {}
        code, reason = asyncio.run(refused(ws_url(relay), {**headers, **extra}))
        assert code == 1008
        assert "Origin" in reason
    assert set(sessions(emu)) == before

    async def own_page() -> None:
        async with websockets.connect(
            ws_url(relay), additional_headers={**headers, "Origin": relay.url}
        ) as ws:
            await begin(ws)
            await ws.send(json.dumps({"type": "Terminate"}))
            code, _ = await closed_with(ws)
            assert code == 1000

    asyncio.run(own_page())


def test_disallowed_parameters_are_refused_before_upstream(
    relay: Proc, emu: httpx.Client, key: str
) -> None:
    before = set(sessions(emu))
    code, reason = asyncio.run(
        refused(ws_url(relay, webhook_url="http://evil.example/"), {"Authorization": key})
    )
    assert (code, "webhook_url" in reason) == (3006, True)
    code, _ = asyncio.run(refused(ws_url(relay), {"Authorization": "aaip_" + "x" * 40}))
    assert code == 1008
    assert set(sessions(emu)) == before


def test_concurrent_session_caps_per_end_user_and_per_key(
    relay: Proc, emu: httpx.Client, key: str
) -> None:
    async def run() -> None:
        headers = {"Authorization": key, "X-End-User": "cc-1"}
        async with websockets.connect(ws_url(relay), additional_headers=headers) as first:
            await begin(first)
            before = set(sessions(emu))
            code, reason = await refused(ws_url(relay), headers)
            assert code == 3009
            assert "per end user" in reason
            assert set(sessions(emu)) == before
            async with (
                websockets.connect(
                    ws_url(relay), additional_headers={"Authorization": key, "X-End-User": "cc-2"}
                ) as second,
                websockets.connect(
                    ws_url(relay), additional_headers={"Authorization": key, "X-End-User": "cc-3"}
                ) as third,
            ):
                await begin(second)
                await begin(third)
                code, reason = await refused(
                    ws_url(relay), {"Authorization": key, "X-End-User": "cc-4"}
                )
                assert code == 3009
                assert "per key" in reason
        # Slots are given back when sessions end.
        await asyncio.sleep(0.5)
        async with websockets.connect(ws_url(relay), additional_headers=headers) as again:
            await begin(again)

    asyncio.run(run())


# --- upstream's verdicts reach the client as they are ------------------------------------------


@pytest.mark.parametrize("code", [3005, 3006, 3007, 3008, 3009])
def test_upstream_close_codes_pass_through(
    relay: Proc, emu: httpx.Client, key: str, code: int
) -> None:
    emu.post(
        "/_emulator/faults", json={"route": "WS /v3/ws", "close_code": code}
    ).raise_for_status()

    async def run() -> tuple[int, str]:
        async with websockets.connect(
            ws_url(relay), additional_headers={"Authorization": key}
        ) as ws:
            await begin(ws)
            return await closed_with(ws)

    assert asyncio.run(run()) == (code, f"Injected close ({code})")


def test_refused_upgrade_upstream_is_the_same_status_for_the_client(
    relay: Proc, emu: httpx.Client, key: str
) -> None:
    emu.post(
        "/_emulator/faults", json={"route": "WS /v3/ws", "status": 429, "retry_after": 7}
    ).raise_for_status()

    async def run() -> None:
        with pytest.raises(InvalidStatus) as refused_:
            await websockets.connect(ws_url(relay), additional_headers={"Authorization": key})
        response = refused_.value.response
        assert response.status_code == 429
        assert response.headers["Retry-After"] == "7"
        assert json.loads(response.body)["error"] == "Injected failure (429)."

    asyncio.run(run())


# --- budget and cap run out mid-session ----------------------------------------------------------


def _set_policy(relay: Proc, admin: str, key_id: str, **fields: Any) -> None:
    answer = httpx.put(
        f"{relay.url}/api/tokens/policies/{key_id}", json=fields, headers={"Authorization": admin}
    )
    assert answer.status_code == 200, answer.text


def _key_id(database_url: str, raw: str) -> str:
    digest = hashlib.sha256(raw.encode()).hexdigest()
    rows = db_rows(database_url, "SELECT id FROM api_keys WHERE key_hash = $1", digest)
    return str(rows[0][0])


async def stream_until_closed(
    url: str, headers: dict[str, str], seconds: float
) -> tuple[str, list[str], int, str, float]:
    """Send real-time silence until the relay closes: (upstream id, message types, code,
    reason, seconds from Begin to close)."""
    async with websockets.connect(url, additional_headers=headers) as ws:
        first = await begin(ws)
        started = time.monotonic()
        types: list[str] = []
        stop = threading.Event()

        async def send() -> None:
            for piece in chunks(silence(seconds, RATE), FRAME):
                if stop.is_set():
                    return
                try:
                    await ws.send(piece)
                except ConnectionClosed:
                    return
                await asyncio.sleep(0.1)

        sender = asyncio.create_task(send())
        try:
            async with asyncio.timeout(seconds + 10):
                while True:
                    types.append(json.loads(await ws.recv())["type"])
        except ConnectionClosed as closed:
            received = closed.rcvd
        lasted = time.monotonic() - started
        stop.set()
        await asyncio.gather(sender, return_exceptions=True)
    if received is None:
        raise AssertionError("closed without a close frame")
    return str(first["id"]), types, received.code, received.reason, lasted


def test_budget_exhausted_mid_session_terminates_then_closes(
    relay: Proc, emu: httpx.Client, key: str, database_url: str, live_admin_key: str
) -> None:
    _set_policy(relay, live_admin_key, _key_id(database_url, key), key_daily_session_s=3)
    upstream_id, types, code, reason, lasted = asyncio.run(
        stream_until_closed(ws_url(relay), {"Authorization": key}, 10)
    )
    assert code == 4029
    assert "budget" in reason.lower()
    assert 2.5 <= lasted < 5.5
    assert types[-1] == "Termination"  # upstream's own end reached the client first
    record = wait_session(emu, upstream_id)
    assert record["terminate_received"] is True
    # Charged by use: the whole budget, no more; a new session is refused before upstream.
    before = set(sessions(emu))
    code, reason = asyncio.run(refused(ws_url(relay), {"Authorization": key}))
    assert code == 4029
    assert set(sessions(emu)) == before


@pytest.fixture(scope="module")
def capped(database_url: str, emulator: Proc) -> Iterator[Proc]:
    with run_service(database_url, emulator.url, {"WS_RELAY_MAX_SESSION_S": "2"}) as proc:
        yield proc


def test_session_cap_terminates_then_closes_3008(capped: Proc, emu: httpx.Client, key: str) -> None:
    upstream_id, types, code, reason, lasted = asyncio.run(
        stream_until_closed(ws_url(capped), {"Authorization": key}, 8)
    )
    assert code == 3008
    assert "cap" in reason
    assert 1.8 <= lasted < 4.5
    assert types[-1] == "Termination"
    assert wait_session(emu, upstream_id)["terminate_received"] is True


# --- nothing secret in the log -------------------------------------------------------------------


def test_no_key_or_token_in_any_log_line(relay: Proc) -> None:
    assert SECRETS, "the tests above ran first and used keys and tokens"
    deadline = time.monotonic() + 5
    while "relay.session.ended" not in (log := relay.log.read_text(errors="replace")):
        assert time.monotonic() < deadline, "no session was logged"
        time.sleep(0.1)
    # DEBUG is on, yet upstream sockets log no headers or frames.
    assert "websockets.client" not in log
    for secret in SECRETS:
        assert secret not in log
    assert "emulator-test-key" not in log
