"""Signing secrets: shown at key creation, rotation keeps the old one valid, both sign."""

from __future__ import annotations

import time
import uuid

import pytest
from httpx import AsyncClient
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.config import Settings
from app.core.secretbox import secret_box
from app.keys import service as keys_service
from app.webhooks.signing import new_signing_secret, valid_secrets, webhook_headers
from tests.webhooks.verifier import VerificationError, verify


def test_signature_verifies_with_independent_verifier() -> None:
    secret = new_signing_secret()
    body = b'{"type":"transcript.completed"}'
    headers = webhook_headers([secret], "msg_1", int(time.time()), body)
    verify(secret, headers, body)
    with pytest.raises(VerificationError):
        verify(secret, headers, body + b" ")
    with pytest.raises(VerificationError):
        verify(new_signing_secret(), headers, body)


def test_known_vector() -> None:
    # The example from the Standard Webhooks specification.
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    body = b'{"test": 2432232314}'
    headers = webhook_headers([secret], "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body)
    assert headers["webhook-signature"] == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


async def test_key_creation_shows_secret_and_rotation_keeps_both(
    client: AsyncClient, session: AsyncSession, admin_key: str, settings: Settings
) -> None:
    r = await client.post(
        "/api/keys",
        json={"name": "app", "scopes": ["transcripts"]},
        headers={"Authorization": admin_key},
    )
    assert r.status_code == 201, r.text
    created = r.json()
    first = created["webhook_signing_secret"]
    assert first.startswith("whsec_")
    r = await client.post(
        f"/api/keys/{created['id']}/signing-secret/rotate",
        headers={"Authorization": created["key"]},
    )
    assert r.status_code == 200, r.text
    second = r.json()["webhook_signing_secret"]
    assert second != first
    assert r.json()["previous_valid_until"] is not None

    secrets_ = await valid_secrets(session, secret_box(settings.secrets), uuid.UUID(created["id"]))
    assert secrets_ == [second, first]
    body = b"{}"
    headers = webhook_headers(secrets_, "msg_2", int(time.time()), body)
    assert len(headers["webhook-signature"].split(" ")) == 2
    verify(first, headers, body)  # a receiver still on the old secret verifies
    verify(second, headers, body)
    # A third rotation ends the first secret at once: at most two are valid.
    r = await client.post(
        f"/api/keys/{created['id']}/signing-secret/rotate", headers={"Authorization": admin_key}
    )
    third = r.json()["webhook_signing_secret"]
    assert await valid_secrets(session, secret_box(settings.secrets), uuid.UUID(created["id"])) == [
        third,
        second,
    ]


async def test_other_keys_may_not_rotate(client: AsyncClient, session: AsyncSession) -> None:
    a, _ = await keys_service.create_key(session, "a", ["transcripts"])
    _, raw_b = await keys_service.create_key(session, "b", ["transcripts"])
    r = await client.post(
        f"/api/keys/{a.id}/signing-secret/rotate", headers={"Authorization": raw_b}
    )
    assert r.status_code == 403
