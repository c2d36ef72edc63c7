"""The browser client follows the signed-in key's `live_access`, in real headless Chromium:
with BROWSER_LIVE_MODE left at "token", a key limited to the relay signs in on a fresh page
(no cookie at start-up) and its live view still opens this service's `/v3/ws`."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.audio_fidelity import make_speech
from tests.live import Proc, create_key_in, run_emulator, run_service
from tests.relay.test_browser_relay import records, wait_js
from tests.relay.test_relay_live import db_rows

pytestmark = [pytest.mark.e2e, pytest.mark.browser]
playwright_sync = pytest.importorskip("playwright.sync_api")


@pytest.fixture(scope="module")
def emulator() -> Iterator[Proc]:
    env = {"EMULATOR_STREAMING_BURST_MS": "4000", "EMULATOR_RECOGNITION": "placeholder"}
    with run_emulator(env) as proc:
        yield proc


@pytest.fixture(scope="module")
def service(database_url: str, emulator: Proc) -> Iterator[Proc]:
    with run_service(database_url, emulator.url, {"BROWSER_LIVE_MODE": "token"}) as proc:
        yield proc


def test_relay_only_key_streams_through_the_relay_in_token_mode(
    tmp_path: Path, database_url: str, service: Proc, emulator: Proc
) -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("Debian's chromium is not installed")
    for tool in ("espeak-ng", "sox"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (the fake microphone's speech)")
    admin = create_key_in(database_url, ["admin"], name="browser live-access admin")
    name = f"browser live-access {uuid.uuid4().hex[:8]}"
    user_key = create_key_in(database_url, ["tokens:streaming", "tokens:agents"], name=name)
    [(key_id,)] = db_rows(database_url, "SELECT id FROM api_keys WHERE name = $1", name)
    put = httpx.put(
        f"{service.url}/api/tokens/policies/{key_id}",
        json={"live_access": "relay"},
        headers={"Authorization": admin},
    )
    assert put.status_code == 200, put.text
    assert httpx.get(f"{service.url}/api/client-config").json()["live_mode"] == "token"

    speech: dict[str, Path] = make_speech(tmp_path)
    args = [
        "--use-fake-device-for-media-stream",
        "--use-fake-ui-for-media-stream",
        f"--use-file-for-fake-audio-capture={speech['48000']}",
        "--autoplay-policy=no-user-gesture-required",
        "--no-sandbox",
    ]
    before = {s["id"] for s in records(emulator, "streaming")}
    with playwright_sync.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=args)
        try:
            page = browser.new_context(base_url=service.url).new_page()
            sockets: list[str] = []
            page.on("websocket", lambda ws: sockets.append(ws.url))
            page.goto("/")
            page.fill("#signin-key", user_key)
            page.click("#signin-form button[type=submit]")
            page.wait_for_selector("body[data-ready=true]", timeout=10_000)
            page.click("#tab-stt")
            page.click("#stt-start")
            wait_js(page, "window.__aaiStats.stt.state === 'Listening'")
            wait_js(page, "window.__aaiStats.stt.framesSent >= 10", 20_000)
            page.click("#stt-stop")
            wait_js(page, "window.__aaiStats.stt.state === 'Stopped'", 10_000)
        finally:
            browser.close()
    relay = service.url.replace("http://", "ws://")
    assert any(u.startswith(f"{relay}/v3/ws?") for u in sockets), sockets
    assert [s for s in records(emulator, "streaming") if s["id"] not in before]
