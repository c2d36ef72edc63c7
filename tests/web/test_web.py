"""The browser client's routes: static files with module-friendly types, voices, config."""

from __future__ import annotations

from collections.abc import Callable

from httpx import ASGITransport, AsyncClient

from app.core.config import Settings
from app.main import create_app

REFERENCE_VOICES = (
    "ivy james tyler winter sam mia bella david jack kyle helen martha river emma victor "
    "eleanor sophie oliver arjun ethan mei dmitri lukas lena pierre mina joon ren hana giulia "
    "luca lucia mateo diego"
).split()


async def test_index_and_modules_are_served_with_the_right_types(client: AsyncClient) -> None:
    page = await client.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert '<script type="module" src="/js/app.js">' in page.text
    for path in ("/js/app.js", "/js/dsp.js", "/js/worklets/capture.js", "/js/worklets/playback.js"):
        response = await client.get(path)
        assert response.status_code == 200, path
        # Browsers refuse module scripts and worklets served with a non-JavaScript type.
        assert response.headers["content-type"].startswith("text/javascript"), path
    css = await client.get("/css/app.css")
    assert css.headers["content-type"].startswith("text/css")


async def test_only_the_client_folders_are_exposed(client: AsyncClient) -> None:
    assert (await client.get("/js/../tests/dsp.test.js")).status_code == 404
    assert (await client.get("/js/%2e%2e/%2e%2e/pyproject.toml")).status_code == 404
    assert (await client.get("/tests/dsp.test.js")).status_code == 404


async def test_voice_catalogue_is_the_reference_list(client: AsyncClient) -> None:
    body = (await client.get("/api/voices")).json()
    assert body["default"] == "ivy"
    assert [v["id"] for v in body["voices"]] == REFERENCE_VOICES
    for retired in ("claire", "dawn", "josh", "grace", "pete"):
        assert retired not in {v["id"] for v in body["voices"]}
    assert all(v["description"] and v["language"] for v in body["voices"])


async def test_client_config(client: AsyncClient) -> None:
    body = (await client.get("/api/client-config")).json()
    assert body["stt_sample_rate"] == 16000
    assert body["agent_sample_rate"] == 24000
    assert 50 <= body["frame_ms"] <= 1000
    assert "key" not in str(body).lower()


async def test_client_can_be_turned_off(make_settings: Callable[..., Settings]) -> None:
    app = create_app(make_settings(browser_client_enabled=False), configure_logs=False)
    async with AsyncClient(transport=ASGITransport(app=app), base_url="http://t") as c:
        assert (await c.get("/")).status_code == 404
        assert (await c.get("/js/app.js")).status_code == 404
        assert (await c.get("/api/voices")).status_code == 200


async def test_favicon_is_served_at_both_addresses(client: AsyncClient) -> None:
    for path in ("/favicon.svg", "/favicon.ico"):
        icon = await client.get(path)
        assert icon.status_code == 200, path
        assert icon.headers["content-type"].startswith("image/svg+xml"), path
        assert icon.text.lstrip().startswith("<svg"), path
    page = (await client.get("/")).text
    assert '<link rel="icon" href="/favicon.svg"' in page
