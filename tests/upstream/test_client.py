"""The upstream client against respx: auth header per host, retry policy, error mapping."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
import respx

from app.core.config import Settings
from app.core.errors import (
    RateLimited,
    UpstreamClientError,
    UpstreamError,
    UpstreamRejectedKey,
    UpstreamTimeout,
)
from app.upstream.client import Upstream, create_upstream

KEY = "upstream-test-key-0123456789"
REST = "http://upstream.test"


@pytest.fixture
def upstream_settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings(assemblyai_api_key=KEY, upstream_retry_attempts=4)


@pytest.fixture
async def mock() -> AsyncIterator[respx.MockRouter]:
    async with respx.mock(assert_all_called=False) as router:
        yield router


@pytest.fixture
async def upstream(upstream_settings: Settings, mock: respx.MockRouter) -> AsyncIterator[Upstream]:
    client = create_upstream(
        upstream_settings.upstream, transport=httpx.MockTransport(mock.async_handler)
    )
    yield client
    await client.aclose()


def json_response(status: int, body: Any = None, **headers: str) -> httpx.Response:
    return httpx.Response(status, json=body if body is not None else {}, headers=headers)


# --- auth header style per host ------------------------------------------------------------


async def test_rest_sends_the_raw_key(upstream: Upstream, mock: respx.MockRouter) -> None:
    route = mock.get(f"{REST}/v2/transcript/t1").mock(return_value=json_response(200, {"id": "t1"}))
    assert (await upstream.rest.get_transcript("t1")) == {"id": "t1"}
    assert route.calls.last.request.headers["authorization"] == KEY


async def test_streaming_token_sends_the_raw_key(
    upstream: Upstream, mock: respx.MockRouter
) -> None:
    route = mock.get("http://streaming.test/v3/token").mock(
        return_value=json_response(200, {"token": "t"})
    )
    await upstream.streaming.mint(60, max_session_duration_seconds=600)
    request = route.calls.last.request
    assert request.headers["authorization"] == KEY
    assert request.url.params["expires_in_seconds"] == "60"
    assert request.url.params["max_session_duration_seconds"] == "600"


async def test_llm_gateway_sends_the_raw_key(upstream: Upstream, mock: respx.MockRouter) -> None:
    route = mock.post("http://llm.test/v1/chat/completions").mock(
        return_value=json_response(200, {"choices": []})
    )
    await upstream.llm.chat({"model": "claude-sonnet-4-6", "messages": []})
    assert route.calls.last.request.headers["authorization"] == KEY

    async with upstream.llm.chat_stream({"model": "m", "messages": [], "stream": True}) as resp:
        assert resp.status_code == 200
    assert route.calls.last.request.headers["authorization"] == KEY


async def test_voice_agent_sends_bearer(upstream: Upstream, mock: respx.MockRouter) -> None:
    token = mock.get("http://agents.test/v1/token").mock(
        return_value=json_response(200, {"token": "t"})
    )
    voices = mock.get("http://agents.test/v1/voices").mock(return_value=json_response(200, []))
    await upstream.agents.mint(300)
    await upstream.agents.voices()
    assert token.calls.last.request.headers["authorization"] == f"Bearer {KEY}"
    assert voices.calls.last.request.headers["authorization"] == f"Bearer {KEY}"


async def test_emulator_key_is_sent_when_no_key_is_configured(
    make_settings: Callable[..., Settings], mock: respx.MockRouter
) -> None:
    settings = make_settings(emulator_api_key="emu-key-123")
    client = create_upstream(settings.upstream, transport=httpx.MockTransport(mock.async_handler))
    route = mock.get(f"{REST}/v2/transcript/t1").mock(return_value=json_response(200, {}))
    try:
        await client.rest.get_transcript("t1")
    finally:
        await client.aclose()
    assert route.calls.last.request.headers["authorization"] == "emu-key-123"


# --- retries -------------------------------------------------------------------------------


async def test_get_retried_on_503_then_succeeds(upstream: Upstream, mock: respx.MockRouter) -> None:
    route = mock.get(f"{REST}/v2/transcript/t1").mock(
        side_effect=[
            json_response(503, {"error": "busy"}),
            json_response(503, {"error": "busy"}),
            json_response(200, {"id": "t1", "status": "completed"}),
        ]
    )
    assert (await upstream.rest.get_transcript("t1"))["status"] == "completed"
    assert route.call_count == 3


async def test_get_5xx_after_all_retries_is_502(upstream: Upstream, mock: respx.MockRouter) -> None:
    route = mock.get(f"{REST}/v2/transcript/t1").mock(
        return_value=json_response(500, {"error": "internal failure"})
    )
    with pytest.raises(UpstreamError) as info:
        await upstream.rest.get_transcript("t1")
    assert type(info.value) is UpstreamError
    assert info.value.status_code == 502
    assert "internal failure" in info.value.message
    assert route.call_count == 4  # UPSTREAM_RETRY_ATTEMPTS


async def test_token_mint_retried_on_transport_error(
    upstream: Upstream, mock: respx.MockRouter
) -> None:
    route = mock.get("http://streaming.test/v3/token").mock(
        side_effect=[httpx.ReadError("reset"), json_response(200, {"token": "t"})]
    )
    assert (await upstream.streaming.mint(60))["token"] == "t"
    assert route.call_count == 2


async def test_429_retry_after_is_honoured(upstream: Upstream, mock: respx.MockRouter) -> None:
    route = mock.get(f"{REST}/v2/transcript/t1").mock(
        side_effect=[
            json_response(429, {"error": "slow down"}, **{"Retry-After": "1"}),
            json_response(200, {"id": "t1"}),
        ]
    )
    started = time.monotonic()
    assert (await upstream.rest.get_transcript("t1")) == {"id": "t1"}
    elapsed = time.monotonic() - started
    assert route.call_count == 2
    # Backoff is zero in these settings, so only Retry-After explains the wait.
    assert elapsed >= 0.95


async def test_429_with_retry_after_over_the_bound_is_passed_on(
    upstream: Upstream, mock: respx.MockRouter
) -> None:
    route = mock.get(f"{REST}/v2/transcript/t1").mock(
        return_value=json_response(429, {"error": "slow down"}, **{"Retry-After": "120"})
    )
    started = time.monotonic()
    with pytest.raises(RateLimited) as info:
        await upstream.rest.get_transcript("t1")
    assert time.monotonic() - started < 1
    assert route.call_count == 1
    assert info.value.status_code == 429
    assert info.value.headers["Retry-After"] == "120"


async def test_submit_not_retried_on_read_timeout(
    upstream: Upstream, mock: respx.MockRouter
) -> None:
    route = mock.post(f"{REST}/v2/transcript").mock(side_effect=httpx.ReadTimeout("slow"))
    with pytest.raises(UpstreamTimeout) as info:
        await upstream.rest.submit({"audio_url": "https://example.com/a.wav"})
    assert info.value.status_code == 504
    assert route.call_count == 1


@pytest.mark.parametrize("status", [500, 503, 429])
async def test_submit_not_retried_on_error_status(
    upstream: Upstream, mock: respx.MockRouter, status: int
) -> None:
    # The request reached AssemblyAI: a second submit could create (and bill) a second job.
    route = mock.post(f"{REST}/v2/transcript").mock(
        return_value=json_response(status, {"error": "nope"}, **{"Retry-After": "1"})
    )
    with pytest.raises((UpstreamError, RateLimited)):
        await upstream.rest.submit({"audio_url": "https://example.com/a.wav"})
    assert route.call_count == 1


async def test_submit_retried_on_connect_error(upstream: Upstream, mock: respx.MockRouter) -> None:
    route = mock.post(f"{REST}/v2/transcript").mock(
        side_effect=[
            httpx.ConnectError("refused"),
            json_response(200, {"id": "t1", "status": "queued"}),
        ]
    )
    result = await upstream.rest.submit({"audio_url": "https://example.com/a.wav"})
    assert result["id"] == "t1"
    assert route.call_count == 2


async def test_llm_completion_not_retried_on_read_error(
    upstream: Upstream, mock: respx.MockRouter
) -> None:
    route = mock.post("http://llm.test/v1/chat/completions").mock(
        side_effect=httpx.ReadError("reset")
    )
    with pytest.raises(UpstreamError) as info:
        await upstream.llm.chat({"model": "m", "messages": []})
    assert info.value.status_code == 502
    assert route.call_count == 1


# --- error mapping -------------------------------------------------------------------------


async def test_timeout_maps_to_504(upstream: Upstream, mock: respx.MockRouter) -> None:
    route = mock.get(f"{REST}/v2/transcript/t1").mock(side_effect=httpx.ReadTimeout("slow"))
    with pytest.raises(UpstreamTimeout) as info:
        await upstream.rest.get_transcript("t1")
    assert info.value.status_code == 504
    assert route.call_count == 4  # a GET is idempotent: retried before giving up


async def test_401_maps_to_502_rejected_key(upstream: Upstream, mock: respx.MockRouter) -> None:
    mock.get(f"{REST}/v2/transcript/t1").mock(
        return_value=json_response(401, {"error": "Authentication error, API token missing"})
    )
    with pytest.raises(UpstreamRejectedKey) as info:
        await upstream.rest.get_transcript("t1")
    assert info.value.status_code == 502
    assert "service's key" in info.value.message
    assert KEY not in info.value.message


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (400, {"error": "Invalid audio_url: not a URL"}),
        (404, {"error": "Transcript not found"}),
        (422, {"detail": "Invalid audio_url: not a URL"}),
        (400, {"error": {"message": "Invalid audio_url: not a URL"}}),
    ],
)
async def test_4xx_passes_upstream_message(
    upstream: Upstream, mock: respx.MockRouter, status: int, body: dict[str, Any]
) -> None:
    route = mock.post(f"{REST}/v2/transcript").mock(return_value=json_response(status, body))
    with pytest.raises(UpstreamClientError) as info:
        await upstream.rest.submit({"audio_url": "x"})
    assert info.value.status_code == status
    assert info.value.message in {"Invalid audio_url: not a URL", "Transcript not found"}
    assert info.value.body() == {"error": "UpstreamClientError", "detail": info.value.message}
    assert route.call_count == 1


async def test_4xx_with_text_body(upstream: Upstream, mock: respx.MockRouter) -> None:
    mock.get(f"{REST}/v2/transcript/t1/srt").mock(
        return_value=httpx.Response(400, text="chars_per_caption must be positive")
    )
    with pytest.raises(UpstreamClientError) as info:
        await upstream.rest.get_subresource("t1", "srt", {"chars_per_caption": -1})
    assert info.value.message == "chars_per_caption must be positive"


async def test_streaming_chat_error_is_mapped(upstream: Upstream, mock: respx.MockRouter) -> None:
    mock.post("http://llm.test/v1/chat/completions").mock(
        return_value=json_response(400, {"error": "unknown model"})
    )
    with pytest.raises(UpstreamClientError, match="unknown model"):
        async with upstream.llm.chat_stream({"model": "x", "messages": [], "stream": True}):
            pass


class _BrokenBody(httpx.AsyncByteStream):
    """An error answer whose body breaks off: the connection drops after its first bytes."""

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield b'{"error": "over cap'
        raise httpx.RemoteProtocolError("peer closed connection without sending complete body")


@pytest.mark.parametrize("status", [429, 400, 500])
async def test_streaming_chat_error_whose_body_breaks_off_is_mapped(
    upstream: Upstream, mock: respx.MockRouter, status: int
) -> None:
    """The error body is read before it is mapped; a gateway that drops the connection in
    its middle is an upstream failure (502), not a raw httpx error (a 500)."""
    # (a 429 over UPSTREAM_RETRY_AFTER_MAX_S is passed on at once; others after retries)
    headers = {"retry-after": "120"} if status == 429 else {}
    mock.post("http://llm.test/v1/chat/completions").mock(
        return_value=httpx.Response(status, headers=headers, stream=_BrokenBody())
    )
    with pytest.raises(UpstreamError) as info:
        async with upstream.llm.chat_stream({"model": "x", "messages": [], "stream": True}):
            pass
    assert info.value.status_code == 502


# --- httpx's default transport, patched by respx ---------------------------------------------


async def test_default_httpx_transport_under_respx(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(assemblyai_api_key=KEY, upstream_transport="httpx")
    client = create_upstream(settings.upstream)
    try:
        async with respx.mock(using="httpx") as router:
            route = router.get(f"{REST}/v2/transcript/t1").mock(
                side_effect=[json_response(502), json_response(200, {"id": "t1"})]
            )
            assert (await client.rest.get_transcript("t1")) == {"id": "t1"}
            assert route.call_count == 2
            assert route.calls.last.request.headers["authorization"] == KEY
    finally:
        await client.aclose()
