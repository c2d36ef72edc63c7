"""The browser client's behaviour as a user meets it (issue 18), in real headless Chromium
against the service and the emulator on real ports: what happens when the microphone is
refused, a session ends, an upload is refused; speaker labels, names, copy and downloads."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.test_browser import (  # the module's fixtures and helpers, shared
    browser,
    emulator,
    emulator_session,
    emulator_sessions,
    live_service,
    new_session,
    paging_key,
    speech,
    stats,
    until,
    user_key,
    wait_for,
)
from tests.live import Proc, run_service

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

__all__ = ["browser", "emulator", "live_service", "paging_key", "speech", "user_key"]

# What Chromium does when the user (or the site settings) refuse the microphone.
REFUSE_MICROPHONE = """
navigator.mediaDevices.getUserMedia = () =>
  Promise.reject(new DOMException("Permission denied", "NotAllowedError"));
"""


def signed_in(
    browser: Any, base_url: str, key: str, *, init_script: str = "", hash_: str = ""
) -> tuple[Any, Any, list[str]]:
    context = browser.new_context(base_url=base_url, viewport={"width": 1000, "height": 900})
    if init_script:
        context.add_init_script(init_script)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(f"/{hash_}")
    page.fill("#signin-key", key)
    page.click("#signin-form button[type=submit]")
    page.wait_for_selector("body[data-ready=true]", timeout=10_000)
    return context, page, errors


@pytest.fixture
def page(browser: Any, live_service: Proc, user_key: str) -> Iterator[Any]:
    context, page, errors = signed_in(browser, live_service.url, user_key)
    yield page
    context.close()
    assert not errors, f"uncaught errors in the page: {errors}"


@pytest.fixture
def mic_refused(browser: Any, live_service: Proc, user_key: str) -> Iterator[Any]:
    context, page, errors = signed_in(
        browser, live_service.url, user_key, init_script=REFUSE_MICROPHONE
    )
    yield page
    context.close()
    assert not errors, f"uncaught errors in the page: {errors}"


# --- Defects -----------------------------------------------------------------------------


def test_live_view_microphone_refused_ends_the_session(mic_refused: Any, emulator: Proc) -> None:
    """Defect 1: the page said idle while the /v3/ws socket stayed open."""
    page = mic_refused
    before = {s["id"] for s in emulator_sessions(emulator, "streaming")}
    page.click("#stt-start")
    session_id = new_session(emulator, "streaming", before)
    wait_for(page, "document.getElementById('stt-status').textContent.includes('Microphone')")
    assert "refused" in page.inner_text("#stt-status")
    record = until(
        lambda: (r := emulator_session(emulator, session_id)) and r.get("ended_at") and r,
        8,
        "the emulator to see the session end",
    )
    assert record["terminate_received"] is True, record
    assert page.is_enabled("#stt-start")
    assert page.is_disabled("#stt-stop")
    assert "Microphone access was refused" in page.inner_text("#stt-status")


def test_voice_agent_microphone_refused_says_so_and_does_not_resume(
    mic_refused: Any, emulator: Proc
) -> None:
    """Defect 3: it showed "The connection closed (code 1005)" and opened a resume session."""
    page = mic_refused
    page.click("#tab-agent")
    page.click("#agent-start")
    wait_for(page, "document.getElementById('agent-status').textContent.includes('Microphone')")
    time.sleep(2.5)  # a resume would have been opened by now
    assert "Microphone access was refused" in page.inner_text("#agent-status")
    assert stats(page, "agent.resumes") == 0
    assert "session.resume" not in stats(page, "agent.sent")
    assert page.is_enabled("#agent-start")


def test_voice_agent_does_not_send_an_earlier_calls_tool_result(page: Any, emulator: Proc) -> None:
    """Defect 2: hanging up between a tool call and its reply.done left the result pending;
    the next call sent it, and the server's error showed raw."""
    held = {"tool_call_seen": False, "connections": 0}

    def route(ws: Any) -> None:
        # The real emulator behind a pass-through; in the first call, the reply.done that
        # follows a tool.call is held back, as a hang-up that overtakes it would see.
        held["connections"] += 1
        first = held["connections"] == 1
        server = ws.connect_to_server()

        def from_server(message: str | bytes) -> None:
            text = message if isinstance(message, str) else ""
            if first and '"tool.call"' in text:
                held["tool_call_seen"] = True
            if first and held["tool_call_seen"] and '"reply.done"' in text:
                return
            ws.send(message)

        server.on_message(from_server)
        ws.on_message(lambda message: server.send(message))

    page.route_web_socket(lambda url: "/v3/ws" not in url, route)
    page.click("#tab-agent")
    page.click("#agent-mute")  # silent until the greeting has played
    page.click("#agent-start")
    wait_for(page, "window.__aaiStats.agent.events.includes('reply.done')", 20_000)
    # Speak one turn, then mute (so the next sentence does not barge in on the reply): the
    # agent calls the demo tool.
    page.click("#agent-mute")
    wait_for(page, "window.__aaiStats.agent.events.includes('transcript.user')", 30_000)
    page.click("#agent-mute")
    wait_for(page, "window.__aaiStats.agent.events.includes('tool.call')", 60_000)
    page.click("#agent-stop")
    wait_for(page, "window.__aaiStats.agent.state === 'Ended'", 5_000)
    assert held["tool_call_seen"]

    # The next call: its greeting's reply.done must not carry the old call's result.
    mark = len(stats(page, "agent.timeline"))
    page.click("#agent-start")
    wait_for(
        page,
        f"window.__aaiStats.agent.timeline.slice({mark}).includes('<reply.done')",
        20_000,
    )
    time.sleep(0.5)
    second = stats(page, "agent.timeline")[mark:]
    assert ">tool.result" not in second, second
    assert "<error" not in second, second
    assert page.locator("#agent-log .msg.error").count() == 0
    page.click("#agent-stop")
    wait_for(page, "window.__aaiStats.agent.state === 'Ended'", 5_000)


def test_live_partials_do_not_survive_a_drop_and_sessions_are_divided(page: Any) -> None:
    """Defect 7: dimmed partial text stayed after a dropped session; sessions ran together."""
    dropped = {"done": False}

    def route(ws: Any) -> None:
        # The real emulator behind a pass-through that drops the connection (both ways) right
        # after the first partial turn reached the page, as a failing network would.
        server = ws.connect_to_server()

        def from_server(message: str | bytes) -> None:
            ws.send(message)
            event = json.loads(message) if isinstance(message, str) else {}
            if not dropped["done"] and event.get("type") == "Turn" and not event["end_of_turn"]:
                dropped["done"] = True
                ws.close(code=4000, reason="network dropped")
                server.close()

        server.on_message(from_server)
        ws.on_message(lambda message: server.send(message))

    page.route_web_socket(lambda url: "/v3/ws" in url and not dropped["done"], route)
    page.click("#stt-start")
    wait_for(page, "window.__aaiStats.stt.closeCode !== null", 20_000)
    assert dropped["done"], stats(page, "stt")
    assert page.locator("#stt-turns .turn").count() >= 1
    assert page.locator("#stt-turns .turn.partial").count() == 0
    assert page.locator("#stt-turns .turn.unfinished").count() >= 1
    # Each turn carries the time it began.
    assert re.search(r"\d", page.inner_text("#stt-turns .turn time"))
    # A second session is set apart from the first.
    page.click("#stt-start")
    wait_for(page, "window.__aaiStats.stt.state === 'Listening'")
    page.click("#stt-stop")
    wait_for(page, "window.__aaiStats.stt.state === 'Stopped'", 10_000)
    assert page.locator("#stt-turns .divider").count() == 1
    # Clear empties the transcript.
    page.click("#stt-clear")
    assert page.locator("#stt-turns .turn").count() == 0


def test_files_speaker_labels_names_copy_and_downloads(
    browser: Any, live_service: Proc, user_key: str, speech: dict[str, Path]
) -> None:
    """Defect 4 (speaker labels had no visible effect) and what users expect of a file:
    its name and duration in the list and as the reopened job's title, copy, downloads."""
    context, page, errors = signed_in(browser, live_service.url, user_key, hash_="#files")
    context.grant_permissions(["clipboard-read", "clipboard-write"])
    try:
        page.check("#file-speakers")
        page.set_input_files("#file-input", str(speech["16000"]))
        wait_for(page, "window.__aaiStats.files.jobId || window.__aaiStats.lastError", 15_000)
        name = speech["16000"].name
        assert page.inner_text("#job-title") == name
        wait_for(page, "window.__aaiStats.files.transcriptShown === true", 60_000)
        speakers = page.locator("#job .utterance .speaker")
        assert speakers.count() >= 1
        assert speakers.first.inner_text().startswith("Speaker A")
        assert "Duration 0:" in page.inner_text("#job-meta")

        # Copy puts the text on the clipboard.
        page.click("#job-copy")
        wait_for(page, "window.__aaiStats.files.copied === 1", 5_000)
        copied = page.evaluate("navigator.clipboard.readText()")
        spoken = page.locator("#job .utterance").first.inner_text()
        assert copied.strip()
        assert spoken.split(":", 2)[-1].strip()[:20] in copied
        # Downloads: TXT from the page, SRT and VTT from the service.
        for fmt, marker in (("txt", copied.split()[0]), ("srt", "-->"), ("vtt", "WEBVTT")):
            with page.expect_download() as info:
                page.click(f"[data-download={fmt}]")
            download = info.value
            assert download.suggested_filename == f"{Path(name).stem}.{fmt}"
            assert marker in Path(download.path()).read_text(), fmt

        # The list shows the name and duration, not ids; each row's buttons are distinct.
        job_id = stats(page, "files.jobId")
        row = page.locator(f"#jobs li[data-id='{job_id}']")
        row.wait_for(timeout=10_000)
        wait_for(page, "document.querySelector('#jobs li .meta') !== null")
        page.click("#jobs-refresh")
        wait_for(
            page,
            f"/\\d:\\d\\d/.test(document.querySelector(\"#jobs li[data-id='{job_id}'] .meta\")"
            ".textContent)",
            10_000,
        )
        assert row.locator(".name").inner_text() == name
        open_label = row.locator("button", has_text="Open").get_attribute("aria-label")
        delete_label = row.locator("button", has_text="Delete").get_attribute("aria-label")
        assert open_label.startswith(f"Open {name}")
        assert delete_label.startswith(f"Delete {name}")
        labels = page.eval_on_selector_all(
            "#jobs li[data-id] button", "bs => bs.map(b => b.getAttribute('aria-label'))"
        )
        assert len(labels) == len(set(labels)), labels
        # Reopened, the job keeps its title; focus goes to it.
        row.locator("button", has_text="Open").click()
        assert page.inner_text("#job-title") == name
        assert page.evaluate("document.activeElement.id") == "job-title"
    finally:
        context.close()
    assert not errors, errors


@pytest.fixture(scope="module")
def small_limit_service(
    database_url: str, emulator: Proc, speech: dict[str, Path]
) -> Iterator[Proc]:
    """A service whose upload limit is smaller than the test speech."""
    limit = speech["16000"].stat().st_size - 1
    with run_service(database_url, emulator.url, env={"MAX_UPLOAD_BYTES": str(limit)}) as proc:
        yield proc


def test_upload_limit_checked_first_and_a_refused_upload_resets_the_bar(
    browser: Any,
    small_limit_service: Proc,
    emulator: Proc,
    user_key: str,
    speech: dict[str, Path],
    tmp_path: Path,
) -> None:
    """Defect 5: the bar stayed at 100 % after a refused upload; the limit was shown in raw
    bytes and not checked before sending."""
    context, page, errors = signed_in(browser, small_limit_service.url, user_key, hash_="#files")
    limit = speech["16000"].stat().st_size - 1
    try:
        hint = page.inner_text("#upload-limit")
        assert "KB" in hint, hint
        assert str(limit) not in hint
        uploads_before = len(httpx.get(f"{emulator.url}/_emulator/uploads", timeout=5).json())
        page.set_input_files("#file-input", str(speech["16000"]))
        page.wait_for_selector("#banner:not([hidden])")
        text = page.inner_text("#banner")
        assert "files up to" in text, text
        assert str(limit) not in text, text
        assert "KB" in text, text
        assert page.is_hidden("#upload-progress")
        assert stats(page, "files.refusedBeforeUpload") == 1
        assert len(httpx.get(f"{emulator.url}/_emulator/uploads", timeout=5).json()) == (
            uploads_before
        )

        # A small file, refused by upstream after it was sent in full.
        small = tmp_path / "short.wav"
        small.write_bytes(speech["16000"].read_bytes()[: limit // 4])
        fault = {"route": "POST /v2/upload", "status": 503, "count": 1}
        assert httpx.post(f"{emulator.url}/_emulator/faults", json=fault, timeout=5).is_success
        page.set_input_files("#file-input", str(small))
        wait_for(page, "window.__aaiStats.files.progress.length > 0")
        wait_for(
            page,
            "!document.getElementById('banner').hidden"
            " && document.getElementById('banner').textContent !== ''",
            15_000,
        )
        wait_for(page, "document.getElementById('upload-progress').hidden", 5_000)
        assert page.evaluate("document.getElementById('upload-bar').value") == 0
    finally:
        httpx.delete(f"{emulator.url}/_emulator/faults", timeout=5)
        context.close()
    assert not errors, errors


def test_an_ended_session_returns_to_sign_in(
    browser: Any, live_service: Proc, user_key: str
) -> None:
    """Defect 6: an expired session left the page looking signed in."""
    context, page, errors = signed_in(browser, live_service.url, user_key, hash_="#files")
    try:
        # Focus moved sensibly after signing in: to the view's tab, not lost on <body>.
        assert page.evaluate("document.activeElement.id") == "tab-files"
        # The session ends elsewhere (another tab signed out).
        ended = context.request.delete(
            f"{live_service.url}/api/session", headers={"Origin": live_service.url}
        )
        assert ended.status == 204
        page.click("#jobs-refresh")
        page.wait_for_selector("#signin", state="visible", timeout=5_000)
        assert "session has ended" in page.inner_text("#banner")
        assert page.is_hidden("#tabs")
        assert page.evaluate("document.activeElement.id") == "signin-key"
        # Signing in again brings the views back.
        page.fill("#signin-key", user_key)
        page.click("#signin-form button[type=submit]")
        page.wait_for_selector("#tabs", state="visible", timeout=5_000)
        assert page.is_visible("#view-files")
    finally:
        context.close()
    assert not errors, errors


# --- What users expect at load --------------------------------------------------------------


def test_a_signed_out_load_logs_no_error_and_has_a_favicon(
    browser: Any, live_service: Proc
) -> None:
    context = browser.new_context(base_url=live_service.url)
    page = context.new_page()
    console: list[str] = []
    failed: list[str] = []
    page.on("console", lambda m: console.append(m.text) if m.type == "error" else None)
    page.on("response", lambda r: failed.append(f"{r.status} {r.url}") if r.status >= 400 else None)
    try:
        page.goto("/")
        page.wait_for_selector("#signin", state="visible")
        page.wait_for_load_state("networkidle")
        assert not console, console
        assert not failed, failed
        icon = page.evaluate("document.querySelector('link[rel=icon]').href")
        answer = httpx.get(icon, timeout=5)
        assert answer.status_code == 200
        assert answer.headers["content-type"].startswith("image/svg+xml")
        assert page.evaluate("document.activeElement.id") == "signin-key"
    finally:
        context.close()


def test_developer_settings_sit_behind_advanced(page: Any) -> None:
    for view, fields in (("stt", ("#stt-frame", ".opt-ec")), ("agent", ("#agent-prompt",))):
        page.click(f"#tab-{view}")
        summary = page.locator(f"#view-{view} details.options summary")
        assert summary.inner_text() == "Advanced"
        for field in fields:
            assert page.locator(f"#view-{view} {field}").first.is_hidden()
        summary.click()
        for field in fields:
            assert page.locator(f"#view-{view} {field}").first.is_visible()
    # The microphone picker lists the inputs (the fake device once access was granted).
    page.click("#tab-stt")
    wait_for(page, "document.querySelectorAll('#stt-mic option').length >= 2", 5_000)
    labels = page.eval_on_selector_all("#stt-mic option", "os => os.map(o => o.textContent)")
    assert labels[0] == "Default microphone"
    assert any("Fake Audio Input" in label for label in labels[1:]), labels
    # A choice is remembered and shown in the other view's picker too.
    chosen = page.eval_on_selector_all("#stt-mic option", "os => os[1].value")
    page.select_option("#stt-mic", chosen)
    assert page.input_value("#agent-mic") == chosen
    assert page.evaluate("localStorage.getItem('aai-proxy:microphone')") == chosen
    assert page.get_attribute("#view-stt [role=meter]", "aria-labelledby") == "stt-meter-label"
