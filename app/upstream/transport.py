"""The HTTP transport behind every upstream client, chosen in one place.

httpx's default async transport (httpcore) degrades badly under concurrency (httpx issue
#3215): `bench/upstream_client.py` measures it against aiohttp's connection pool behind
the same httpx API (`httpx-aiohttp`), which is why `aiohttp` is the default.

The two token mints are the service's hottest upstream call (thousands per second), and
httpx's request/response models (and even aiohttp's own) cost more CPU than the rest of a
mint: with the `aiohttp` transport they go through a small keep-alive GET pool instead
(`make_token_pool`, `app/upstream/http1.py`, measured by `bench/token_mint.py`).
Everything else keeps the httpx API and respx in unit tests.
"""

from __future__ import annotations

import functools
import ssl

import aiohttp
import httpx
from httpx_aiohttp import AiohttpTransport

from app.core.config import UpstreamSettings
from app.upstream.http1 import ConnectFailed, GetPool, TransportError


@functools.cache
def verified_ssl_context(ca_file: str | None = None) -> ssl.SSLContext:
    """One verifying TLS context (certifi's CAs, as httpx makes it) shared by every upstream
    client: each context holds its own parsed CA bundle (~0.65 MB resident apiece).
    `ca_file` (UPSTREAM_CA_FILE) adds the CAs of a PEM file to certifi's."""
    context = httpx.create_ssl_context(trust_env=False)
    if ca_file:
        context.load_verify_locations(cafile=ca_file)
    return context


def upstream_ssl_context(ca_file: str | None) -> ssl.SSLContext:
    """The TLS context for AssemblyAI's hosts: certifi's CAs, plus UPSTREAM_CA_FILE's
    (shared, see above)."""
    return verified_ssl_context(ca_file)


def make_transport(settings: UpstreamSettings) -> httpx.AsyncBaseTransport:
    limits = httpx.Limits(
        max_connections=settings.max_connections,
        max_keepalive_connections=settings.max_connections,
        keepalive_expiry=settings.keepalive_s,
    )
    if settings.transport == "aiohttp":
        return AiohttpTransport(
            limits=limits, trust_env=False, verify=upstream_ssl_context(settings.ca_file)
        )
    return httpx.AsyncHTTPTransport(
        limits=limits, trust_env=False, verify=upstream_ssl_context(settings.ca_file)
    )


def make_token_pool(settings: UpstreamSettings, base_url: str) -> GetPool | None:
    """The keep-alive GET pool for one token host (`app/upstream/http1.py`), or None to
    use the httpx client (`UPSTREAM_TRANSPORT=httpx`)."""
    if settings.transport != "aiohttp":
        return None
    # The same limits as the httpx clients: a pooled connection within the timeout, a new
    # one within the connect timeout, the answer within the timeout.
    return GetPool(
        base_url,
        max_connections=settings.max_connections,
        keepalive_s=settings.keepalive_s,
        connect_timeout_s=settings.connect_timeout_s,
        pool_timeout_s=settings.timeout_s,
        read_timeout_s=settings.timeout_s,
        ssl_context=upstream_ssl_context(settings.ca_file),
    )


def is_timeout(exc: BaseException) -> bool:
    """True when the upstream was too slow, not when it failed or hung up.

    httpx-aiohttp reports a server that closed the connection as `httpx.ConnectTimeout`;
    that is a failure (502), not a timeout (504).
    """
    if isinstance(exc, TransportError | TimeoutError):  # the token GET pool
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
    if isinstance(exc, TransportError | TimeoutError):  # the token GET pool
        return isinstance(exc, ConnectFailed)
    cause = exc.__cause__
    if isinstance(cause, aiohttp.ClientError | TimeoutError):
        return isinstance(cause, aiohttp.ClientConnectorError | aiohttp.ConnectionTimeoutError)
    return isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout)


def error_name(exc: BaseException) -> str:
    """The name of what really failed (aiohttp's exception, not httpx-aiohttp's mapping)."""
    cause = exc.__cause__
    return type(cause if isinstance(cause, aiohttp.ClientError) else exc).__name__
