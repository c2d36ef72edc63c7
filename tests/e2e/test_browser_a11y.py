"""Accessibility of the browser client: axe-core (pinned in package.json, installed by
`make install`) on every view, light and dark, at 1280 and 390 px, in real headless Chromium;
plus what axe cannot see: focus ring clipping, names and landmarks."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.test_browser import (  # the module's fixtures, shared
    browser,
    emulator,
    live_service,
    paging_key,
    speech,
    user_key,
)
from tests.live import Proc

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

__all__ = ["browser", "emulator", "live_service", "paging_key", "speech", "user_key"]

AXE = Path(__file__).resolve().parents[2] / "node_modules" / "axe-core" / "axe.min.js"
VIEWS = ("stt", "agent", "files")

# Every state the views draw, with the classes the scripts give them, added to each view so
# that axe measures their contrast in the real stylesheet (partials, errors, "Listening",
# system notes, badges, banners); most of these exist only for moments in a live session.
STATES = """
(() => {
  const box = document.createElement('div');
  box.id = 'a11y-states';
  box.innerHTML = `
    <p class="status live">Listening</p><p class="status error">The connection dropped.</p>
    <p class="turn"><time>10:00:00</time><span class="speaker">Speaker A:</span>Final words</p>
    <p class="turn partial"><time>10:00:02</time>words still being recognised</p>
    <p class="turn unfinished"><time>10:00:04</time>cut off</p>
    <p class="divider">New session, 10:01:00</p>
    <p class="msg user"><span class="who-said">You:</span> <span class="text">Hello</span></p>
    <p class="msg user partial"><span class="who-said">You:</span> <span class="text">Hel</span></p>
    <p class="msg agent"><span class="who-said">Agent:</span> <span class="text">Hi</span></p>
    <p class="msg system tool"><span class="text">Tool call: get_time()</span></p>
    <p class="msg system error"><span class="text">The agent reported an error.</span></p>
    <p><span class="badge completed">completed</span> <span class="badge error">error</span>
       <span class="badge processing">processing</span> <span class="badge">deleted</span></p>
    <div class="banner">Your session has ended.</div><div class="banner info">Saved.</div>`;
  document.querySelector('section.view:not([hidden]) .card').append(box);
})()
"""


@pytest.fixture(scope="module")
def axe_source() -> str:
    if not AXE.exists():
        pytest.skip("axe-core is not installed: run `make install` (needs npm)")
    return AXE.read_text()


@pytest.fixture(scope="module")
def finished_job(live_service: Proc, user_key: str, speech: dict[str, Path]) -> str:
    """A completed job, so the list has rows and the job card a transcript to check."""
    headers = {"Authorization": user_key}
    with httpx.Client(base_url=live_service.url, headers=headers, timeout=30) as http:
        job = http.post(
            "/api/transcripts",
            data={"config": '{"speaker_labels": true}'},
            files={"file": ("meeting.wav", speech["16000"].read_bytes(), "audio/wav")},
        )
        assert job.status_code == 201, job.text
        job_id: str = job.json()["id"]
        upstream = job.json()["upstream_id"]
        for _ in range(300):
            if http.get(f"/v2/transcript/{upstream}").json()["status"] == "completed":
                return job_id
            time.sleep(0.1)
    raise AssertionError("the job did not complete")


def serious(page: Any, axe_source: str) -> list[dict[str, Any]]:
    if not page.evaluate("typeof window.axe !== 'undefined'"):
        page.add_script_tag(content=axe_source)
    result = page.evaluate(
        "async () => (await axe.run(document, {resultTypes: ['violations']})).violations"
    )
    return [v for v in result if v["impact"] in ("serious", "critical")]


def describe(violations: list[dict[str, Any]]) -> str:
    return json.dumps(
        [
            {
                "id": v["id"],
                "help": v["help"],
                "nodes": [(n["target"], n.get("failureSummary", "")) for n in v["nodes"][:4]],
            }
            for v in violations
        ],
        indent=1,
    )


@pytest.mark.parametrize("scheme", ["light", "dark"])
@pytest.mark.parametrize("width", [1280, 390])
def test_axe_finds_no_serious_violation_in_any_view(
    browser: Any,
    live_service: Proc,
    user_key: str,
    finished_job: str,
    axe_source: str,
    scheme: str,
    width: int,
) -> None:
    context = browser.new_context(
        base_url=live_service.url,
        viewport={"width": width, "height": 900},
        color_scheme=scheme,
    )
    page = context.new_page()
    try:
        page.goto("/")
        page.wait_for_selector("#signin", state="visible")
        found = {"signin": serious(page, axe_source)}
        page.fill("#signin-key", user_key)
        page.click("#signin-form button[type=submit]")
        page.wait_for_selector("body[data-ready=true]", timeout=10_000)
        for view in VIEWS:
            page.click(f"#tab-{view}")
            if view != "files":
                page.click(f"#view-{view} details.options summary")  # Advanced, open
            else:
                row = page.locator(f"#jobs li[data-id='{finished_job}']")
                row.wait_for(timeout=10_000)
                row.locator("button", has_text="Open").click()
                page.wait_for_selector("#job .utterance", timeout=15_000)
            page.evaluate(STATES)
            found[view] = serious(page, axe_source)
            page.evaluate("document.getElementById('a11y-states').remove()")
        bad = {view: describe(v) for view, v in found.items() if v}
        assert not bad, f"{scheme} at {width}px:\n" + "\n".join(
            f"{view}: {text}" for view, text in bad.items()
        )
    finally:
        context.close()


@pytest.fixture
def page(browser: Any, live_service: Proc, user_key: str) -> Iterator[Any]:
    context = browser.new_context(base_url=live_service.url, viewport={"width": 390, "height": 800})
    page = context.new_page()
    page.goto("/")
    page.fill("#signin-key", user_key)
    page.click("#signin-form button[type=submit]")
    page.wait_for_selector("body[data-ready=true]", timeout=10_000)
    yield page
    context.close()


def test_landmarks_names_and_focus(page: Any) -> None:
    assert page.locator("h1").count() == 1
    assert page.get_by_role("progressbar", name="Upload progress", include_hidden=True).count() == 1
    assert page.get_by_role("meter", name="Level").count() >= 1
    # The focused tab's ring (3 px outline, 2 px offset) is not clipped by its scroller.
    page.focus("#tab-files")
    page.keyboard.press("ArrowLeft")
    clipped = page.evaluate(
        """() => {
          const tab = document.activeElement.getBoundingClientRect();
          const list = document.querySelector('.tablist');
          const box = list.getBoundingClientRect();
          const ring = 5;
          return tab.top - ring < box.top || tab.bottom + ring > box.bottom;
        }"""
    )
    assert page.evaluate("document.activeElement.id") == "tab-agent"
    assert not clipped
    # A button that disables itself hands focus on: Start → Stop.
    page.click("#tab-stt")
    page.focus("#stt-start")
    page.keyboard.press("Enter")
    page.wait_for_function("document.getElementById('stt-start').disabled")
    assert page.evaluate("document.activeElement.id") == "stt-stop"
    page.keyboard.press("Enter")
    page.wait_for_function("!document.getElementById('stt-start').disabled", timeout=20_000)
    assert page.evaluate("document.activeElement.id") == "stt-start"
