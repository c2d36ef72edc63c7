"""The real service process on a real port, against the real emulator process."""

from __future__ import annotations

import httpx
import pytest

from tests.live import Proc

pytestmark = pytest.mark.e2e


async def test_live_service_is_ready_and_authenticates(
    live_service: Proc, live_admin_key: str
) -> None:
    async with httpx.AsyncClient(base_url=live_service.url) as client:
        assert (await client.get("/healthz")).status_code == 200
        ready = await client.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert (await client.get("/api/keys")).status_code == 401
        listed = await client.get("/api/keys", headers={"Authorization": live_admin_key})
        assert listed.status_code == 200
        assert live_admin_key not in listed.text
