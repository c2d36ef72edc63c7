"""The HTTP transport behind every upstream client, chosen in one place.

httpx's default async transport (httpcore) degrades badly under concurrency (httpx issue
#3215): `bench/upstream_client.py` measures it against aiohttp's connection pool behind
the same httpx API (`httpx-aiohttp`), which is why `aiohttp` is the default.

The two token mints are the service's hottest upstream call (thousands per second), and
httpx's request/response models plus the adapter cost more CPU than the rest of a mint:
with the `aiohttp` transport they go through a plain `aiohttp.ClientSession` instead
(`make_token_session`, measured by `bench/token_mint.py`). Everything else keeps the httpx
API and respx in unit tests.
"""

from __future__ import annotations

import functools
import ssl

import aiohttp
import httpx
from httpx_aiohttp import AiohttpTransport

from app.core.config import Settings


@functools.cache
def verified_ssl_context() -> ssl.SSLContext:
    """One verifying TLS context (certifi's CAs, as httpx makes it) shared by every upstream
    client: each context holds its own parsed CA bundle (~0.65 MB resident apiece)."""
    return httpx.create_ssl_context(trust_env=False)


def make_transport(settings: Settings) -> httpx.AsyncBaseTransport:
    limits = httpx.Limits(
        max_connections=settings.upstream_max_connections,
        max_keepalive_connections=settings.upstream_max_connections,
        keepalive_expiry=settings.upstream_keepalive_s,
    )
    if settings.upstream_transport == "aiohttp":
        return AiohttpTransport(limits=limits, trust_env=False, verify=verified_ssl_context())
    return httpx.AsyncHTTPTransport(limits=limits, trust_env=False, verify=verified_ssl_context())


def make_token_session(settings: Settings) -> aiohttp.ClientSession | None:
    """A plain pooled aiohttp session for the token GETs, or None to use the httpx client
    (`UPSTREAM_TRANSPORT=httpx`). Call it inside the running event loop."""
    if settings.upstream_transport != "aiohttp":
        return None
    connector = aiohttp.TCPConnector(
        limit=settings.upstream_max_connections,
        limit_per_host=settings.upstream_max_connections,
        keepalive_timeout=settings.upstream_keepalive_s,
    )
    # The same limits as the httpx clients: connect (including waiting for a pooled
    # connection) within the connect timeout, then each read within the timeout.
    timeout = aiohttp.ClientTimeout(
        total=None,
        connect=settings.upstream_timeout_s,
        sock_connect=settings.upstream_connect_timeout_s,
        sock_read=settings.upstream_timeout_s,
    )
    return aiohttp.ClientSession(
        connector=connector,
        timeout=timeout,
        trust_env=False,
        # No cookie jar: a token call is stateless, and the jar costs per request.
        cookie_jar=aiohttp.DummyCookieJar(),
    )


def is_timeout(exc: BaseException) -> bool:
    """True when the upstream was too slow, not when it failed or hung up.

    httpx-aiohttp reports a server that closed the connection as `httpx.ConnectTimeout`;
    that is a failure (502), not a timeout (504).
    """
    if isinstance(exc, aiohttp.ClientError | TimeoutError):  # the plain aiohttp session
        return isinstance(exc, TimeoutError)
    cause = exc.__cause__
    if isinstance(cause, aiohttp.ClientError):
        return isinstance(cause, TimeoutError)
    return isinstance(exc, httpx.TimeoutException)


def is_connect_failure(exc: BaseException) -> bool:
    """True only when the request provably never reached the server.

    httpx-aiohttp maps every aiohttp connection error (a refused connect and a server
    that hung up mid-response alike) to `httpx.ConnectTimeout`, so look at the cause.
    """
    if isinstance(exc, aiohttp.ClientError | TimeoutError):  # the plain aiohttp session
        return isinstance(exc, aiohttp.ClientConnectorError | aiohttp.ConnectionTimeoutError)
    cause = exc.__cause__
    if isinstance(cause, aiohttp.ClientError | TimeoutError):
        return isinstance(cause, aiohttp.ClientConnectorError | aiohttp.ConnectionTimeoutError)
    return isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout)


def error_name(exc: BaseException) -> str:
    """The name of what really failed (aiohttp's exception, not httpx-aiohttp's mapping)."""
    cause = exc.__cause__
    return type(cause if isinstance(cause, aiohttp.ClientError) else exc).__name__
