"""The HTTP transport behind every upstream client, chosen in one place.

httpx's default async transport (httpcore) degrades badly under concurrency (httpx issue
#3215): `bench/upstream_client.py` measures it against aiohttp's connection pool behind
the same httpx API (`httpx-aiohttp`), which is why `aiohttp` is the default.
"""

from __future__ import annotations

import aiohttp
import httpx
from httpx_aiohttp import AiohttpTransport

from app.core.config import Settings


def make_transport(settings: Settings) -> httpx.AsyncBaseTransport:
    limits = httpx.Limits(
        max_connections=settings.upstream_max_connections,
        max_keepalive_connections=settings.upstream_max_connections,
        keepalive_expiry=30.0,
    )
    if settings.upstream_transport == "aiohttp":
        return AiohttpTransport(limits=limits, trust_env=False)
    return httpx.AsyncHTTPTransport(limits=limits, trust_env=False)


def is_timeout(exc: BaseException) -> bool:
    """True when the upstream was too slow, not when it failed or hung up.

    httpx-aiohttp reports a server that closed the connection as `httpx.ConnectTimeout`;
    that is a failure (502), not a timeout (504).
    """
    cause = exc.__cause__
    if isinstance(cause, aiohttp.ClientError):
        return isinstance(cause, TimeoutError)
    return isinstance(exc, httpx.TimeoutException)


def is_connect_failure(exc: BaseException) -> bool:
    """True only when the request provably never reached the server.

    httpx-aiohttp maps every aiohttp connection error (a refused connect and a server
    that hung up mid-response alike) to `httpx.ConnectTimeout`, so look at the cause.
    """
    cause = exc.__cause__
    if isinstance(cause, aiohttp.ClientError | TimeoutError):
        return isinstance(cause, aiohttp.ClientConnectorError | aiohttp.ConnectionTimeoutError)
    return isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout)
