"""The upstream client for uploads: a `RestClient` whose connections are never reused.

An upload can't be retried (its body is consumed as it goes), so it must not start on a
pooled keep-alive connection that the server may be closing at that very moment (a server
drops idle connections after its own keep-alive timeout; uvicorn's is 5 s, shorter than a
client pool's expiry): the request would fail a few bytes in. A fresh connection per upload
costs one handshake, nothing next to the body it carries. Everything else (submits, reads)
keeps using the pooled clients, where a failed reuse is retried safely.
"""

from __future__ import annotations

import aiohttp
import httpx
from httpx_aiohttp import AiohttpTransport

from app.core.config import UpstreamSettings
from app.upstream.client import USER_AGENT, RestClient
from app.upstream.transport import upstream_ssl_context


def _transport(settings: UpstreamSettings) -> httpx.AsyncBaseTransport:
    if settings.transport == "aiohttp":

        def session() -> aiohttp.ClientSession:
            # The transport's `verify` is not used with a session of our own: the
            # connector carries the TLS context (certifi's CAs and UPSTREAM_CA_FILE's).
            connector = aiohttp.TCPConnector(
                force_close=True,
                limit=settings.max_connections,
                ssl=upstream_ssl_context(settings.ca_file),
            )
            return aiohttp.ClientSession(connector=connector, trust_env=False)

        return AiohttpTransport(
            client=session, trust_env=False, verify=upstream_ssl_context(settings.ca_file)
        )
    limits = httpx.Limits(max_connections=settings.max_connections, max_keepalive_connections=0)
    return httpx.AsyncHTTPTransport(
        limits=limits, trust_env=False, verify=upstream_ssl_context(settings.ca_file)
    )


def create_upload_client(settings: UpstreamSettings) -> RestClient:
    """Created and closed in the lifespan, beside the pooled upstream clients."""
    http = httpx.AsyncClient(
        base_url=settings.rest_base_url,
        transport=_transport(settings),
        timeout=httpx.Timeout(settings.timeout_s, connect=settings.connect_timeout_s),
        headers={"User-Agent": USER_AGENT},
        trust_env=False,
    )
    return RestClient(http, settings)
