"""AssemblyAI clients: one small class per upstream host, one pooled httpx client each.

Auth per the reference: the raw key for REST, streaming tokens and LLM Gateway;
`Bearer <key>` for the Voice Agent. Every response goes through `_handle_response`, which
turns upstream failures into our own errors; retries follow one policy in `_send` (tenacity)
and, for the token mints over the keep-alive GET pool, `TokenHost._get_json` (the same
policy as a plain loop: tenacity's per-call set-up costs more than the rest of a mint).
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from collections.abc import AsyncIterable, AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    wait_random_exponential,
)

from app.core.config import UpstreamSettings
from app.core.db import utcnow
from app.core.errors import (
    RateLimited,
    UpstreamClientError,
    UpstreamError,
    UpstreamRejectedKey,
    UpstreamTimeout,
)
from app.metrics import UpstreamCall
from app.upstream.http1 import Answer, GetPool, PostStream, TransportError, open_post
from app.upstream.transport import (
    error_name,
    is_connect_failure,
    is_timeout,
    make_token_pool,
    make_transport,
    upstream_ssl_context,
)

logger = logging.getLogger(__name__)

RETRYABLE_STATUS = {429, 500, 502, 503, 504}
USER_AGENT = "aai-proxy/0.1"


class _RetryableStatus(Exception):
    def __init__(self, response: httpx.Response, retry_after: float | None) -> None:
        super().__init__(f"upstream answered {response.status_code}")
        self.response = response
        self.retry_after = retry_after


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or HTTP date)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, (parsedate_to_datetime(value) - utcnow()).total_seconds())
    except (TypeError, ValueError):
        return None


def upstream_message(response: httpx.Response) -> str:
    """AssemblyAI's own error sentence, whatever shape the body has."""
    try:
        body = response.json()
    except ValueError:
        text = response.text.strip()
        return text[:500] if text else f"AssemblyAI answered {response.status_code}"
    if isinstance(body, dict):
        for field in ("error", "detail", "message"):
            value = body.get(field)
            if isinstance(value, str) and value:
                return value
            if isinstance(value, dict) and isinstance(value.get("message"), str):
                return str(value["message"])
    return f"AssemblyAI answered {response.status_code}"


def _handle_response(response: httpx.Response) -> httpx.Response:
    status = response.status_code
    if status < 400:
        return response
    if status == 401:
        logger.error("upstream.key_rejected", extra={"url": str(response.request.url.path)})
        raise UpstreamRejectedKey()
    if status == 429:
        raise RateLimited(
            "AssemblyAI is rate limiting this service; retry later.",
            retry_after=parse_retry_after(response.headers.get("retry-after")),
        )
    if status >= 500:
        raise UpstreamError(f"AssemblyAI answered {status}: {upstream_message(response)}")
    raise UpstreamClientError(upstream_message(response), status_code=status)


def wait_for_attempt(wait: Any, attempt: int, retry_after: float | None, cap: float) -> float:
    """The retry policy's delay before attempt `attempt + 1` (outside tenacity): upstream's
    `Retry-After` when it gave one, never above `cap` (UPSTREAM_RETRY_AFTER_MAX_S)."""
    if retry_after is not None:
        return min(float(retry_after), cap)
    state = RetryCallState(retry_object=AsyncRetrying(), fn=None, args=(), kwargs={})
    state.attempt_number = attempt
    return float(wait(state))


def _as_response(answer: Answer, method: str, url: str) -> httpx.Response:
    """An answer of the small HTTP/1.1 client (`http1.py`) as the httpx.Response that
    `_handle_response` maps, so its failures read as every other call's."""
    return httpx.Response(
        answer.status,
        headers=answer.headers,
        content=answer.body,
        request=httpx.Request(method, url),
    )


def _map_transport_error(exc: BaseException) -> UpstreamError:
    if is_timeout(exc) and not is_connect_failure(exc):
        return UpstreamTimeout()
    if is_timeout(exc):
        return UpstreamTimeout("AssemblyAI could not be reached in time.")
    if is_connect_failure(exc):
        return UpstreamError(f"AssemblyAI could not be reached ({error_name(exc)}).")
    # It was reached (the request may have been received) and the connection then failed.
    return UpstreamError(f"The connection to AssemblyAI failed ({error_name(exc)}).")


class UpstreamHost:
    """Shared plumbing: send with the retry policy, map errors, close the pool."""

    name = "upstream"

    def __init__(self, http: httpx.AsyncClient, settings: UpstreamSettings) -> None:
        self.http = http
        self._settings = settings

    @property
    def settings(self) -> UpstreamSettings:
        return self._settings

    def _auth(self) -> dict[str, str]:
        return {"Authorization": self._settings.key.get_secret_value()}

    def _should_retry(self, idempotent: bool, retry_status: bool = False) -> Any:
        # retry_status: the request is not idempotent, but an error status proves it was
        # not carried out (LLM Gateway bills no failed completion), so statuses are retried.
        def predicate(exc: BaseException) -> bool:
            if isinstance(exc, _RetryableStatus):
                if exc.response.status_code == 429:
                    bound = self._settings.retry_after_max_s
                    return (idempotent or retry_status) and (
                        exc.retry_after is None or exc.retry_after <= bound
                    )
                return idempotent or retry_status
            if isinstance(exc, httpx.TransportError):
                return idempotent or is_connect_failure(exc)
            return False

        return predicate

    def _wait(self) -> Any:
        jitter = wait_random_exponential(
            multiplier=self._settings.retry_wait_initial_s,
            max=self._settings.retry_wait_max_s,
        )

        def wait(state: RetryCallState) -> float:
            exc = state.outcome.exception() if state.outcome else None
            if isinstance(exc, _RetryableStatus) and exc.retry_after is not None:
                return min(exc.retry_after, self._settings.retry_after_max_s)
            return float(jitter(state))

        return wait

    async def _send(
        self,
        method: str,
        path: str,
        *,
        idempotent: bool,
        retry: bool = True,
        retry_status: bool = False,
        **kwargs: Any,
    ) -> httpx.Response:
        headers = {**self._auth(), **kwargs.pop("headers", {})}
        attempts = self._settings.retry_attempts if retry else 1

        async def attempt() -> httpx.Response:
            with UpstreamCall(self.name, path) as call:
                response = await self.http.request(method, path, headers=headers, **kwargs)
                call.status = response.status_code
            if response.status_code in RETRYABLE_STATUS:
                raise _RetryableStatus(
                    response, parse_retry_after(response.headers.get("retry-after"))
                )
            return response

        try:
            async for try_ in AsyncRetrying(
                stop=stop_after_attempt(attempts),
                wait=self._wait(),
                retry=retry_if_exception(self._should_retry(idempotent, retry_status)),
                reraise=True,
                before_sleep=self._log_retry(method, path),
            ):
                with try_:
                    response = await attempt()
        except _RetryableStatus as exc:
            return _handle_response(exc.response)
        except httpx.TransportError as exc:
            logger.warning(
                "upstream.transport_error",
                extra={"host": self.name, "path": path, "error_type": error_name(exc)},
            )
            raise _map_transport_error(exc) from exc
        return _handle_response(response)

    def _log_retry(self, method: str, path: str) -> Any:
        def log(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            reason = str(exc) if isinstance(exc, _RetryableStatus) else type(exc).__name__
            self._retry_logged(method, path, state.attempt_number, reason)

        return log

    def _retry_logged(self, method: str, path: str, attempt: int, reason: str) -> None:
        """One `upstream.retry` line, whichever retry loop (tenacity's or a hand-written
        one) is about to wait."""
        logger.info(
            "upstream.retry",
            extra={
                "host": self.name,
                "method": method,
                "path": path,
                "attempt": attempt,
                "reason": reason,
            },
        )

    async def aclose(self) -> None:
        await self.http.aclose()


class RestClient(UpstreamHost):
    """`api.assemblyai.com`: uploads and transcripts."""

    name = "rest"

    async def upload(
        self, body: AsyncIterable[bytes], *, content_length: int | None = None
    ) -> dict[str, Any]:
        """Stream a body to `/v2/upload`; never retried (the stream is consumed)."""
        headers = {"Content-Type": "application/octet-stream"}
        if content_length is not None:
            headers["Content-Length"] = str(content_length)
        response = await self._send(
            "POST",
            "/v2/upload",
            idempotent=False,
            retry=False,
            content=body,
            headers=headers,
            timeout=httpx.Timeout(
                self._settings.timeout_s,
                connect=self._settings.connect_timeout_s,
                write=None,
            ),
        )
        result: dict[str, Any] = response.json()
        return result

    @functools.cached_property
    def upload_slots(self) -> asyncio.Semaphore:
        """Held for each `open_upload` until it is finished: at most
        UPSTREAM_MAX_CONNECTIONS uploads to upstream at once, as the pooled clients."""
        return asyncio.Semaphore(self._settings.max_connections)

    async def open_upload(self, content_length: int) -> PostStream:
        """The copy-free path of `upload` for a body of known length: a fresh connection
        with the head sent. The caller writes the body (`app/core/http_server.py`'s tap)
        and then calls `finish_upload`; `PostStream.abort()` if it cannot."""
        headers = {
            **self._auth(),
            "User-Agent": USER_AGENT,
            "Content-Type": "application/octet-stream",
            "Accept": "application/json",
        }
        try:
            return await open_post(
                str(self.http.base_url),
                "/v2/upload",
                headers,
                content_length=content_length,
                connect_timeout_s=self._settings.connect_timeout_s,
                ssl_context=upstream_ssl_context(self._settings.ca_file),
            )
        except TransportError as exc:
            raise _map_transport_error(exc) from exc

    async def finish_upload(self, stream: PostStream) -> dict[str, Any]:
        """Upstream's answer to an upload sent through `open_upload`, mapped as `upload`."""
        try:
            with UpstreamCall(self.name, "/v2/upload", stream.opened_at) as call:
                answer = await stream.response(self._settings.timeout_s)
                call.status = answer.status
        except TransportError as exc:
            logger.warning(
                "upstream.transport_error",
                extra={"host": self.name, "path": "/v2/upload", "error_type": type(exc).__name__},
            )
            raise _map_transport_error(exc) from exc
        url = str(self.http.base_url).rstrip("/") + "/v2/upload"
        result: dict[str, Any] = _handle_response(_as_response(answer, "POST", url)).json()
        return result

    async def submit(self, payload: dict[str, Any]) -> dict[str, Any]:
        # Retried only when the request provably never left: a second submit costs twice.
        response = await self._send("POST", "/v2/transcript", idempotent=False, json=payload)
        result: dict[str, Any] = response.json()
        return result

    async def get_transcript(self, transcript_id: str) -> dict[str, Any]:
        response = await self._send("GET", f"/v2/transcript/{transcript_id}", idempotent=True)
        result: dict[str, Any] = response.json()
        return result

    async def list_transcripts(self, params: dict[str, Any]) -> dict[str, Any]:
        """Upstream's `GET /v2/transcript` page (newest first; `limit`, `before_id`, ...)."""
        response = await self._send("GET", "/v2/transcript", idempotent=True, params=params)
        result: dict[str, Any] = response.json()
        return result

    async def get_subresource(
        self, transcript_id: str, resource: str, params: dict[str, Any] | None = None
    ) -> httpx.Response:
        return await self._send(
            "GET", f"/v2/transcript/{transcript_id}/{resource}", idempotent=True, params=params
        )

    async def delete_transcript(self, transcript_id: str) -> dict[str, Any]:
        # DELETE is idempotent upstream: repeating it is harmless.
        response = await self._send("DELETE", f"/v2/transcript/{transcript_id}", idempotent=True)
        result: dict[str, Any] = response.json()
        return result


class TokenHost(UpstreamHost):
    """A token host: its mint is the hot path, sent over the keep-alive GET pool that
    `make_token_pool` chooses (the httpx client when it returns None)."""

    token_path = "/v3/token"

    def __init__(self, http: httpx.AsyncClient, settings: UpstreamSettings, base_url: str) -> None:
        super().__init__(http, settings)
        self._base_url = base_url.rstrip("/")
        self._pool: GetPool | None = make_token_pool(settings, self._base_url)
        # Built once: a mint's request differs only in its query string.
        self._headers = {**self._auth(), "User-Agent": USER_AGENT, "Accept": "application/json"}

    def use_httpx(self) -> None:
        """Send mints through the httpx client too (an injected transport, e.g. tests)."""
        self._pool = None

    async def mint(
        self, expires_in_seconds: int, max_session_duration_seconds: int | None = None
    ) -> dict[str, Any]:
        params: dict[str, int] = {"expires_in_seconds": expires_in_seconds}
        if max_session_duration_seconds is not None:
            params["max_session_duration_seconds"] = max_session_duration_seconds
        if self._pool is None:
            response = await self._send("GET", self.token_path, idempotent=True, params=params)
            result: dict[str, Any] = response.json()
            return result
        query = "&".join(f"{name}={int(value)}" for name, value in params.items())
        answer: dict[str, Any] = await self._get_json(self._pool, f"{self.token_path}?{query}")
        return answer

    async def _get_json(self, pool: GetPool, path: str) -> Any:
        """An idempotent GET with `_send`'s policy and `_handle_response`'s mapping: 5xx,
        429 and transport errors retried with jittered exponential backoff (429 waits
        `Retry-After` when within UPSTREAM_RETRY_AFTER_MAX_S, else is passed on)."""
        request = pool.request_bytes(path, self._headers)
        attempts = self._settings.retry_attempts
        attempt = 0
        while True:
            attempt += 1
            try:
                with UpstreamCall(self.name, path) as call:
                    answer = await pool.get(request)
                    call.status = answer.status
            except (TransportError, TimeoutError) as exc:
                if attempt < attempts:
                    await self._retry_wait("GET", path, attempt, type(exc).__name__, None)
                    continue
                logger.warning(
                    "upstream.transport_error",
                    extra={"host": self.name, "path": path, "error_type": type(exc).__name__},
                )
                raise _map_transport_error(exc) from exc
            if answer.status < 400:
                try:
                    return json.loads(answer.body)
                except ValueError:
                    raise UpstreamError("AssemblyAI answered with invalid JSON.") from None
            # A failure (rare): the same httpx.Response `_send` would have, for the same
            # mapping and messages.
            response = _as_response(answer, "GET", self._base_url + path)
            if answer.status in RETRYABLE_STATUS and attempt < attempts:
                retry_after = parse_retry_after(response.headers.get("retry-after"))
                bound = self._settings.retry_after_max_s
                if answer.status != 429 or retry_after is None or retry_after <= bound:
                    reason = f"upstream answered {answer.status}"
                    await self._retry_wait("GET", path, attempt, reason, retry_after)
                    continue
            return _handle_response(response).json()

    async def _retry_wait(
        self, method: str, path: str, attempt: int, reason: str, retry_after: float | None
    ) -> None:
        self._retry_logged(method, path, attempt, reason)
        cap = self._settings.retry_after_max_s
        await asyncio.sleep(wait_for_attempt(self._wait(), attempt, retry_after, cap))

    async def aclose(self) -> None:
        await super().aclose()
        if self._pool is not None:
            await self._pool.aclose()


class StreamingTokenClient(TokenHost):
    """`streaming.assemblyai.com`: temporary tokens for `/v3/ws`."""

    name = "streaming"
    token_path = "/v3/token"


class AgentTokenClient(TokenHost):
    """`agents.assemblyai.com`: temporary tokens for the Voice Agent (Bearer auth)."""

    name = "agents"
    token_path = "/v1/token"

    def _auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._settings.key.get_secret_value()}"}

    async def voices(self) -> Any:
        response = await self._send("GET", "/v1/voices", idempotent=True)
        return response.json()


class LlmGatewayClient(UpstreamHost):
    """`llm-gateway.assemblyai.com`: chat completions and the model list."""

    name = "llm"

    def _timeout(self, timeout: float | None) -> httpx.Timeout | None:
        if timeout is None:
            return None
        return httpx.Timeout(timeout, connect=self._settings.connect_timeout_s)

    async def chat(
        self, payload: dict[str, Any], *, timeout: float | None = None
    ) -> dict[str, Any]:
        # A completion costs money, so a lost answer (read timeout) is not repeated; but a
        # 5xx/429 means no completion was made or billed, so those are retried with backoff.
        kwargs: dict[str, Any] = {"json": payload}
        if timeout is not None:
            kwargs["timeout"] = self._timeout(timeout)
        response = await self._send(
            "POST", "/v1/chat/completions", idempotent=False, retry_status=True, **kwargs
        )
        result: dict[str, Any] = response.json()
        return result

    async def models(self, *, timeout: float | None = None) -> dict[str, Any]:
        """`GET /v1/models`: the gateway's model list (a read: retried like one)."""
        kwargs: dict[str, Any] = {}
        if timeout is not None:
            kwargs["timeout"] = self._timeout(timeout)
        response = await self._send("GET", "/v1/models", idempotent=True, **kwargs)
        result: dict[str, Any] = response.json()
        return result

    @asynccontextmanager
    async def chat_stream(
        self, payload: dict[str, Any], *, timeout: float | None = None
    ) -> AsyncIterator[httpx.Response]:
        """An open streaming response (`stream: true`); the caller iterates its bytes.

        An error status before the first byte is retried like `chat` (nothing was billed);
        once the stream is open nothing is retried.
        """
        attempts = self._settings.retry_attempts
        wait = self._wait()
        attempt = 0
        while True:
            attempt += 1
            request = self.http.build_request(
                "POST",
                "/v1/chat/completions",
                json=payload,
                headers=self._auth(),
                timeout=self._timeout(timeout) or self.http.timeout,
            )
            try:
                response = await self.http.send(request, stream=True)
            except httpx.TransportError as exc:
                if is_connect_failure(exc) and attempt < attempts:
                    await asyncio.sleep(self._settings.retry_wait_initial_s)
                    continue
                raise _map_transport_error(exc) from exc
            if response.status_code in RETRYABLE_STATUS and attempt < attempts:
                retry_after = parse_retry_after(response.headers.get("retry-after"))
                if response.status_code != 429 or (
                    retry_after is None or retry_after <= self._settings.retry_after_max_s
                ):
                    # Closed only when retried: a 429 whose Retry-After is over the cap is
                    # passed on below, and reading a closed stream is StreamClosed (a 500).
                    await response.aclose()
                    delay = wait_for_attempt(
                        wait, attempt, retry_after, self._settings.retry_after_max_s
                    )
                    reason = f"upstream answered {response.status_code}"
                    self._retry_logged("POST", "/v1/chat/completions", attempt, reason)
                    await asyncio.sleep(delay)
                    continue
            break
        try:
            if response.status_code >= 400:
                try:
                    await response.aread()
                except httpx.TransportError as exc:  # the error body broke off
                    raise _map_transport_error(exc) from exc
                _handle_response(response)
            yield response
        finally:
            await response.aclose()


@dataclass
class Upstream:
    rest: RestClient
    streaming: StreamingTokenClient
    agents: AgentTokenClient
    llm: LlmGatewayClient

    async def aclose(self) -> None:
        for host in (self.rest, self.streaming, self.agents, self.llm):
            await host.aclose()


def create_upstream(
    settings: UpstreamSettings, transport: httpx.AsyncBaseTransport | None = None
) -> Upstream:
    """One long-lived pooled client per upstream host (created in the lifespan)."""
    timeout = httpx.Timeout(settings.timeout_s, connect=settings.connect_timeout_s)

    def http(base_url: str) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=base_url,
            transport=transport or make_transport(settings),
            timeout=timeout,
            headers={"User-Agent": USER_AGENT},
            trust_env=False,
        )

    streaming = StreamingTokenClient(
        http(settings.streaming_base_url), settings, settings.streaming_base_url
    )
    agents = AgentTokenClient(http(settings.agents_base_url), settings, settings.agents_base_url)
    if transport is not None:  # an injected transport (tests) carries every call
        streaming.use_httpx()
        agents.use_httpx()
    return Upstream(
        rest=RestClient(http(settings.rest_base_url), settings),
        streaming=streaming,
        agents=agents,
        llm=LlmGatewayClient(http(settings.llm_base_url), settings),
    )
