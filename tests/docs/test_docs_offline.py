"""`/docs` and `/redoc` work offline: every asset they reference is same-origin and served
by the service; in headless Chromium with every other origin blocked, both pages render."""

from __future__ import annotations

import re
import shutil
from urllib.parse import urlsplit

import pytest
from httpx import AsyncClient

from tests.live import Proc

# Every URL in an attribute or a JS string literal of the page.
URL_RE = re.compile(
    r"""(?:src|href)\s*=\s*["']([^"']+)["']|(?:url|openapi_url)\s*:\s*["']([^"']+)["']"""
)


def referenced(html: str) -> list[str]:
    return [a or b for a, b in URL_RE.findall(html)]


@pytest.mark.parametrize(
    ("page", "assets"),
    [
        ("/docs", {"swagger-ui-bundle.js", "swagger-ui.css", "favicon.png"}),
        ("/redoc", {"redoc.standalone.js", "favicon.png"}),
    ],
)
async def test_pages_reference_only_same_origin_assets(
    client: AsyncClient, page: str, assets: set[str]
) -> None:
    answer = await client.get(page)
    assert answer.status_code == 200
    html = answer.text
    assert "cdn.jsdelivr.net" not in html
    assert "fonts.googleapis.com" not in html
    urls = referenced(html)
    assert urls, html
    for url in urls:
        parts = urlsplit(url)
        assert not parts.scheme, f"{url} is not same-origin"
        assert not parts.netloc, f"{url} is not same-origin"
        assert url.startswith("/"), url
    names = {u.rsplit("/", 1)[-1] for u in urls}
    assert assets <= names, names
    for url in urls:
        if url == "/openapi.json":
            continue
        asset = await client.get(url)
        assert asset.status_code == 200, url
        assert len(asset.content) > 1000, url
        assert b"cdn." not in asset.content, url  # nothing fetched from a CDN at run time
    js = [u for u in urls if u.endswith(".js")]
    for url in js:
        content_type = (await client.get(url)).headers["content-type"]
        assert "javascript" in content_type, (url, content_type)


def test_pages_render_with_other_origins_blocked(live_service: Proc) -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("Debian's chromium is not installed")
    from playwright.sync_api import Route, sync_playwright

    foreign: list[str] = []
    origin = live_service.url

    def guard(route: Route) -> None:
        if route.request.url.startswith(origin):
            route.continue_()
        else:
            foreign.append(route.request.url)
            route.abort()

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium)
        try:
            page = browser.new_page()
            page.route("**/*", guard)
            page.goto(f"{origin}/docs")
            page.wait_for_selector(".swagger-ui .info .title", timeout=30_000)
            assert "aai-proxy" in page.inner_text(".swagger-ui .info .title")
            page.wait_for_selector(".opblock-summary-path", timeout=30_000)
            page.goto(f"{origin}/redoc")
            page.wait_for_selector("h1", timeout=30_000)
            assert "aai-proxy" in page.inner_text("h1")
        finally:
            browser.close()
    assert foreign == []
