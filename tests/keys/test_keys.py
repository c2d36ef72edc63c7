from __future__ import annotations

from collections.abc import Callable
from typing import Any

from httpx import AsyncClient
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.audit.models import AuditEvent
from app.core.security import hash_key
from app.identity.models import ApiKey
from app.identity.principal import authenticate
from app.keys import service


async def test_created_key_is_stored_only_as_hash(session: AsyncSession) -> None:
    key, raw = await service.create_key(session, "svc", ["transcripts"])
    assert raw.startswith("aaip_")
    assert len(raw) >= len("aaip_") + 43  # 32 bytes, url-safe base64
    stored = await session.scalar(select(ApiKey).where(ApiKey.id == key.id))
    assert stored is not None
    assert stored.key_hash == hash_key(raw)
    assert raw not in (stored.key_hash, stored.prefix, stored.name)
    assert raw.startswith(stored.prefix)


async def test_unknown_scope_refused(session: AsyncSession) -> None:
    import pytest

    with pytest.raises(ValueError, match="unknown scope"):
        await service.create_key(session, "svc", ["transcripts", "superuser"])


async def test_authenticate_rejects_empty_unknown_and_revoked(session: AsyncSession) -> None:
    key, raw = await service.create_key(session, "svc", ["llm"])
    assert (await authenticate(session, raw)) is not None
    assert (await authenticate(session, "")) is None
    assert (await authenticate(session, raw + "x")) is None
    await service.revoke_key(session, key.id)
    assert (await authenticate(session, raw)) is None


async def test_admin_api_lifecycle_both_header_styles(
    client: AsyncClient, admin_key: str, session: AsyncSession
) -> None:
    # Create with AssemblyAI's raw style.
    created = await client.post(
        "/api/keys",
        json={"name": "worker", "scopes": ["transcripts", "llm"]},
        headers={"Authorization": admin_key},
    )
    assert created.status_code == 201, created.text
    body = created.json()
    raw = body["key"]
    assert raw.startswith("aaip_")
    assert body["scopes"] == ["llm", "transcripts"]

    # List with the Bearer style: no secret in the listing.
    listed = await client.get("/api/keys", headers={"Authorization": f"Bearer {admin_key}"})
    assert listed.status_code == 200
    assert raw not in listed.text
    assert admin_key not in listed.text
    assert {k["name"] for k in listed.json()} >= {"worker", "test admin"}

    # The new key lacks admin: 403, not 401.
    forbidden = await client.get("/api/keys", headers={"Authorization": raw})
    assert forbidden.status_code == 403
    assert forbidden.json()["error"] == "Forbidden"
    assert "admin" in forbidden.json()["detail"]

    # Revoke; the key then gets 401.
    revoked = await client.delete(f"/api/keys/{body['id']}", headers={"Authorization": admin_key})
    assert revoked.status_code == 200
    assert revoked.json()["revoked_at"] is not None
    after = await client.get("/api/keys", headers={"Authorization": raw})
    assert after.status_code == 401

    actions = list(await session.scalars(select(AuditEvent.action).order_by(AuditEvent.id)))
    assert actions[-2:] == ["key.create", "key.revoke"]


async def test_missing_and_malformed_credentials(client: AsyncClient, admin_key: str) -> None:
    for headers in (
        {},
        {"Authorization": ""},
        {"Authorization": "Bearer "},
        {"Authorization": "aaip_nope"},
    ):
        response = await client.get("/api/keys", headers=headers)
        assert response.status_code == 401, headers
        assert set(response.json()) == {"error", "detail"}


async def test_create_key_validation_is_json_422(client: AsyncClient, admin_key: str) -> None:
    response = await client.post(
        "/api/keys", json={"name": "", "scopes": ["nope"]}, headers={"Authorization": admin_key}
    )
    assert response.status_code == 422
    body = response.json()
    assert body["error"] == "ValidationError"
    assert "name" in body["detail"]
    assert "scopes" in body["detail"]


async def test_unknown_key_id_is_404(client: AsyncClient, admin_key: str) -> None:
    response = await client.delete(
        "/api/keys/00000000-0000-0000-0000-000000000000", headers={"Authorization": admin_key}
    )
    assert response.status_code == 404
    assert response.json()["error"] == "NotFound"


async def test_last_used_is_recorded(
    client: AsyncClient, make_key: Callable[..., Any], session: AsyncSession
) -> None:
    raw = await make_key("admin")
    assert (await client.get("/api/keys", headers={"Authorization": raw})).status_code == 200
    key = await session.scalar(select(ApiKey).where(ApiKey.key_hash == hash_key(raw)))
    assert key is not None
    assert key.last_used_at is not None
