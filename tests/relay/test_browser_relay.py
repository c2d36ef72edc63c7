"""The browser client with BROWSER_LIVE_MODE=relay, in real headless Chromium: the live and
agent views get relay tokens and open this service's `/v3/ws` and `/v1/ws`, which relay to
the emulator. (Token-direct mode is what tests/e2e/test_browser.py covers.)"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.audio_fidelity import make_speech
from tests.live import Proc, create_key_in, run_emulator, run_service

pytestmark = [pytest.mark.e2e, pytest.mark.browser]
playwright_sync = pytest.importorskip("playwright.sync_api")


@pytest.fixture(scope="module")
def emulator() -> Iterator[Proc]:
    env = {"EMULATOR_STREAMING_BURST_MS": "4000", "EMULATOR_RECOGNITION": "placeholder"}
    with run_emulator(env) as proc:
        yield proc


@pytest.fixture(scope="module")
def relay_service(database_url: str, emulator: Proc) -> Iterator[Proc]:
    with run_service(database_url, emulator.url, {"BROWSER_LIVE_MODE": "relay"}) as proc:
        yield proc


@pytest.fixture(scope="module")
def user_key(database_url: str) -> str:
    return create_key_in(database_url, ["tokens:streaming", "tokens:agents"], name="relay web")


@pytest.fixture(scope="module")
def page(
    tmp_path_factory: pytest.TempPathFactory, relay_service: Proc, user_key: str
) -> Iterator[Any]:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("Debian's chromium is not installed")
    for tool in ("espeak-ng", "sox"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (the fake microphone's speech)")
    speech: dict[str, Path] = make_speech(tmp_path_factory.mktemp("speech"))
    args = [
        "--use-fake-device-for-media-stream",
        "--use-fake-ui-for-media-stream",
        f"--use-file-for-fake-audio-capture={speech['48000']}",
        "--autoplay-policy=no-user-gesture-required",
        "--no-sandbox",
    ]
    with playwright_sync.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=args)
        context = browser.new_context(base_url=relay_service.url)
        page = context.new_page()
        sockets: list[str] = []
        page.on("websocket", lambda ws: sockets.append(ws.url))
        page.sockets = sockets
        page.goto("/")
        page.fill("#signin-key", user_key)
        page.click("#signin-form button[type=submit]")
        page.wait_for_selector("body[data-ready=true]", timeout=10_000)
        yield page
        browser.close()


def wait_js(page: Any, expression: str, timeout_ms: int = 15_000) -> None:
    try:
        page.wait_for_function(expression, timeout=timeout_ms)
    except playwright_sync.TimeoutError:
        seen = page.evaluate("() => JSON.stringify(window.__aaiStats)")
        raise AssertionError(f"timed out waiting for {expression}; stats: {seen}") from None


def records(emulator: Proc, product: str) -> list[dict[str, Any]]:
    found = httpx.get(f"{emulator.url}/_emulator/sessions", params={"frames": "false"}).json()
    return [s for s in found if s["product"] == product]


def test_client_config_says_relay(relay_service: Proc) -> None:
    assert httpx.get(f"{relay_service.url}/api/client-config").json()["live_mode"] == "relay"


def test_live_view_streams_through_the_relay(
    page: Any, emulator: Proc, relay_service: Proc
) -> None:
    before = {s["id"] for s in records(emulator, "streaming")}
    page.click("#tab-stt")
    page.click("#stt-start")
    wait_js(page, "window.__aaiStats.stt.state === 'Listening'")
    wait_js(page, "window.__aaiStats.stt.framesSent >= 20", 20_000)
    page.click("#stt-stop")
    wait_js(page, "window.__aaiStats.stt.state === 'Stopped'", 10_000)
    assert page.evaluate("() => window.__aaiStats.stt.terminated") is True
    service = relay_service.url.replace("http://", "ws://")
    assert any(u.startswith(f"{service}/v3/ws?") and "token=aaip_rt_" in u for u in page.sockets)
    fresh = [s for s in records(emulator, "streaming") if s["id"] not in before]
    assert len(fresh) == 1
    assert "token" not in fresh[0]["params"]  # the relay's token stayed here
    deadline = time.monotonic() + 5
    while fresh[0]["ended_at"] is None and time.monotonic() < deadline:
        time.sleep(0.1)
        fresh = [s for s in records(emulator, "streaming") if s["id"] == fresh[0]["id"]]
    assert fresh[0]["terminate_received"] is True
    assert fresh[0]["pcm_bytes"] >= 20 * 3200


def test_agent_view_opens_the_relay(page: Any, emulator: Proc, relay_service: Proc) -> None:
    before = {s["id"] for s in records(emulator, "agent")}
    page.click("#tab-agent")
    page.click("#agent-mute")
    page.click("#agent-start")
    wait_js(page, "window.__aaiStats.agent.events.includes('session.ready')", 20_000)
    service = relay_service.url.replace("http://", "ws://")
    assert any(u.startswith(f"{service}/v1/ws?") for u in page.sockets)
    assert [s for s in records(emulator, "agent") if s["id"] not in before]
