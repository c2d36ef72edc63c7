"""`GET /v1/models`: LLM Gateway's model list, governed: only the models this service lets
callers use (LLM_MODELS, else the region's list) are shown.

Upstream's list is cached per client for CATALOG_TTL_S: it changes when models ship or
retire, not between calls. The filter is applied on every call, so a cached list never
shows a model the settings do not allow.
"""

from __future__ import annotations

import time
import weakref
from typing import Any

from app.core.config import LlmSettings
from app.core.errors import UpstreamError
from app.upstream.client import LlmGatewayClient

CATALOG_TTL_S = 60.0

# client -> (fetched at, monotonic; upstream's `data` list)
_cache: weakref.WeakKeyDictionary[LlmGatewayClient, tuple[float, list[dict[str, Any]]]] = (
    weakref.WeakKeyDictionary()
)


async def upstream_models(client: LlmGatewayClient, settings: LlmSettings) -> list[dict[str, Any]]:
    """Upstream's model entries (cached briefly); a malformed answer is a 502."""
    now = time.monotonic()
    cached = _cache.get(client)
    if cached is not None and now - cached[0] < CATALOG_TTL_S:
        return cached[1]
    answer = await client.models(timeout=settings.timeout_s)
    data = answer.get("data") if isinstance(answer, dict) else None
    if data is None:
        data = []
    if not isinstance(data, list):
        raise UpstreamError("LLM Gateway answered a model list without a `data` list.")
    entries = [m for m in data if isinstance(m, dict) and isinstance(m.get("id"), str)]
    _cache[client] = (now, entries)
    return entries


async def allowed_models(client: LlmGatewayClient, settings: LlmSettings) -> dict[str, Any]:
    """`{"data": [...]}` in the gateway's shape: upstream's entries for allowed models only."""
    allowed = set(settings.allowed_models)
    return {"data": [m for m in await upstream_models(client, settings) if m["id"] in allowed]}
