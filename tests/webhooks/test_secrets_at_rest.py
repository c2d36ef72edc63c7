"""Relay signing secrets and callers' relay header values are stored sealed with
SECRETS_KEY: a database dump alone signs nothing; keys rotate (first encrypts, all
decrypt); production refuses to start without a key; migration 0050 seals and unseals."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography.fernet import Fernet
from httpx import AsyncClient
from pydantic import SecretStr, ValidationError
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.config import DEVELOPMENT_KEY, Settings
from app.core.db import create_engine
from app.core.migrate import downgrade, upgrade
from app.core.secretbox import SecretUnreadable, box_for, secret_box
from app.webhooks.models import SigningSecret
from app.webhooks.signing import valid_secrets


async def test_stored_signing_secrets_are_sealed(
    client: AsyncClient, session: AsyncSession, admin_key: str, settings: Settings
) -> None:
    created = await client.post(
        "/api/keys",
        json={"name": "app", "scopes": ["transcripts"]},
        headers={"Authorization": admin_key},
    )
    assert created.status_code == 201, created.text
    raw = created.json()["webhook_signing_secret"]
    key_id = uuid.UUID(created.json()["id"])
    stored = list(
        await session.scalars(select(SigningSecret.secret).where(SigningSecret.key_id == key_id))
    )
    assert len(stored) == 1
    assert raw not in stored[0]
    assert raw.removeprefix("whsec_") not in stored[0]
    assert secret_box(settings.secrets).open(stored[0]) == raw
    assert await valid_secrets(session, secret_box(settings.secrets), key_id) == [raw]
    # The dump without the key: nothing opens it.
    with pytest.raises(SecretUnreadable):
        await valid_secrets(session, box_for((Fernet.generate_key().decode(),)), key_id)


async def test_rotating_secrets_key_keeps_old_rows_readable(
    session: AsyncSession, settings: Settings
) -> None:
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    key_id = await _key(session)
    old_box = box_for((old,))
    session.add(SigningSecret(key_id=key_id, secret=old_box.seal("whsec_b2xk")))
    await session.flush()
    rotated = box_for((new, old))  # SECRETS_KEY="new,old"
    assert await valid_secrets(session, rotated, key_id) == ["whsec_b2xk"]
    sealed = rotated.seal("x")
    assert box_for((new,)).open(sealed) == "x"  # the first key encrypts
    with pytest.raises(SecretUnreadable):
        old_box.open(sealed)
    resealed = rotated.reseal(old_box.seal("y"))
    assert box_for((new,)).open(resealed) == "y"


async def test_unreadable_previous_secret_is_skipped_current_still_signs(
    session: AsyncSession, caplog: pytest.LogCaptureFixture
) -> None:
    """An old SECRETS_KEY dropped before `reseal-secrets`: the grace-period secret sealed
    with it is left out (one warning naming the key), the current one keeps signing; an
    unreadable current secret still refuses."""
    dropped, kept = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    key_id = await _key(session)
    now = datetime.now(UTC)
    session.add(
        SigningSecret(
            key_id=key_id,
            secret=box_for((dropped,)).seal("whsec_b2xk"),
            created_at=now - timedelta(minutes=5),
            expires_at=now + timedelta(hours=1),
        )
    )
    session.add(
        SigningSecret(key_id=key_id, secret=box_for((kept,)).seal("whsec_bmV3"), created_at=now)
    )
    await session.flush()
    with caplog.at_level(logging.WARNING, logger="app.webhooks.signing"):
        assert await valid_secrets(session, box_for((kept,)), key_id) == ["whsec_bmV3"]
    warnings = [r for r in caplog.records if r.name == "app.webhooks.signing"]
    assert len(warnings) == 1
    assert getattr(warnings[0], "key_id", None) == str(key_id)
    assert "whsec_b2xk" not in caplog.text
    assert "b2xk" not in repr([r.__dict__ for r in warnings])
    with pytest.raises(SecretUnreadable):
        await valid_secrets(session, box_for((dropped,)), key_id)


async def _key(session: AsyncSession) -> uuid.UUID:
    from app.keys import service as keys_service

    key, _ = await keys_service.create_key(session, "k", ["transcripts"])
    return key.id


def test_settings_parse_and_require_secrets_key(make_settings: Callable[..., Settings]) -> None:
    a, b = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    assert make_settings(secrets_key=SecretStr(f"{a}, {b}")).secrets_keys() == (a, b)
    assert make_settings().secrets_keys() == ()
    with pytest.raises(ValidationError, match="Fernet"):
        make_settings(secrets_key=SecretStr("not-a-key"))
    production: dict[str, Any] = {
        "APP_ENV": "production",
        "assemblyai_api_key": SecretStr("k" * 32),
    }
    with pytest.raises(ValidationError, match="SECRETS_KEY is required"):
        make_settings(**production)
    with pytest.raises(ValidationError, match="development key"):
        make_settings(**production, secrets_key=SecretStr(DEVELOPMENT_KEY))
    assert make_settings(**production, secrets_key=SecretStr(a)).secrets_keys() == (a,)
    # The keys are redacted from logs like every other secret.
    assert a in make_settings(secrets_key=SecretStr(a)).secret_values()


async def _run(url: str, *statements: str) -> list[Any]:
    engine = create_engine(url, pool_size=1)
    try:
        async with engine.begin() as conn:
            result: list[Any] = []
            for sql in statements:
                rows = await conn.execute(text(sql))
                result = list(rows.all()) if rows.returns_rows else []
            return result
    finally:
        await engine.dispose()


def test_migration_0050_seals_and_unseals(
    make_database: Callable[..., str], monkeypatch: pytest.MonkeyPatch
) -> None:
    key = Fernet.generate_key().decode()
    monkeypatch.setenv("SECRETS_KEY", key)
    url = make_database(migrate=False)
    upgrade(url, "0040")
    key_id = uuid.uuid4()
    asyncio.run(
        _run(
            url,
            f"INSERT INTO api_keys (id, name, key_hash, prefix, scopes, created_at) "
            f"VALUES ('{key_id}', 'k', 'h', 'p', ARRAY['transcripts'], now())",
            f"INSERT INTO webhook_signing_secrets (id, key_id, secret, created_at) "
            f"VALUES ('{uuid.uuid4()}', '{key_id}', 'whsec_cGxhaW4=', now())",
            f"INSERT INTO jobs (id, key_id, status, audio_url, request, created_at, updated_at, "
            f"check_attempts, version, caller_webhook_auth_header_name, "
            f"caller_webhook_auth_header_value) VALUES ('{uuid.uuid4()}', '{key_id}', 'queued', "
            f"'https://x/a.wav', '{{}}', now(), now(), 0, 0, 'X-Caller', 'caller-secret')",
            f"INSERT INTO uploads (id, key_id, status, body_format, bytes, upload_url, started_at) "
            f"VALUES ('{uuid.uuid4()}', '{key_id}', 'completed', 'raw', 1, "
            f"'https://cdn.example/upload/abc', now())",
        )
    )
    upgrade(url, "0050")
    secret, header, digest = asyncio.run(
        _run(
            url,
            "SELECT (SELECT secret FROM webhook_signing_secrets), "
            "(SELECT caller_webhook_auth_header_value FROM jobs), "
            "(SELECT upload_url_hash FROM uploads)",
        )
    )[0]
    box = box_for((key,))
    assert "cGxhaW4" not in secret
    assert box.open(secret) == "whsec_cGxhaW4="
    assert "caller-secret" not in header
    assert box.open(header) == "caller-secret"
    from app.uploads.ownership import url_digest

    assert digest == url_digest("https://cdn.example/upload/abc")
    downgrade(url, "0040")
    assert asyncio.run(
        _run(
            url,
            "SELECT (SELECT secret FROM webhook_signing_secrets), "
            "(SELECT caller_webhook_auth_header_value FROM jobs)",
        )
    )[0] == ("whsec_cGxhaW4=", "caller-secret")


def test_rotation_end_to_end_with_the_cli(
    make_database: Callable[..., str], monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    """Sealed under `old`; SECRETS_KEY=new,old and `aai-proxy reseal-secrets`; then `new`
    alone opens every row."""
    from typer.testing import CliRunner

    from app.cli import cli
    from app.core.config import get_settings

    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)
    monkeypatch.chdir(tmp_path)  # no `.env` from the checkout
    url = make_database()
    key_id = uuid.uuid4()
    asyncio.run(
        _run(
            url,
            f"INSERT INTO api_keys (id, name, key_hash, prefix, scopes, created_at) "
            f"VALUES ('{key_id}', 'k', 'h-{key_id}', 'p', ARRAY['transcripts'], now())",
            f"INSERT INTO webhook_signing_secrets (id, key_id, secret, created_at) "
            f"VALUES ('{uuid.uuid4()}', '{key_id}', '{box_for((old,)).seal('whsec_b2xk')}', now())",
            f"INSERT INTO jobs (id, key_id, status, audio_url, request, created_at, updated_at, "
            f"check_attempts, version, caller_webhook_auth_header_name, "
            f"caller_webhook_auth_header_value) VALUES ('{uuid.uuid4()}', '{key_id}', 'queued', "
            f"'https://x/a.wav', '{{}}', now(), now(), 0, 0, 'X-Caller', "
            f"'{box_for((old,)).seal('caller-secret')}')",
        )
    )
    env = {"DATABASE_URL": url, "APP_ENV": "test", "SECRETS_KEY": f"{new},{old}"}
    get_settings.cache_clear()
    result = CliRunner().invoke(cli, ["reseal-secrets"], env=env)
    get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    assert "Resealed 2 stored secrets" in result.output
    secret, header = asyncio.run(
        _run(
            url,
            f"SELECT (SELECT secret FROM webhook_signing_secrets WHERE key_id = '{key_id}'), "
            f"(SELECT caller_webhook_auth_header_value FROM jobs WHERE key_id = '{key_id}')",
        )
    )[0]
    only_new = box_for((new,))
    assert only_new.open(secret) == "whsec_b2xk"
    assert only_new.open(header) == "caller-secret"


async def test_a_secret_no_key_opens_is_never_sent(
    engine: Any, make_settings: Callable[..., Settings]
) -> None:
    """A relay whose stored secret no configured key opens (a key dropped too early) is
    not sent unsigned or without its header: the attempt records why, retried later."""
    import httpx

    from app.core.db import create_sessionmaker, utcnow
    from app.keys import service as keys_service
    from app.transcripts.models import Job
    from app.webhooks import relay
    from app.webhooks.models import RelayAttempt, RelayDelivery, RelayEndpoint

    sm = create_sessionmaker(engine)
    lost_key = Fernet.generate_key().decode()
    async with sm() as session, session.begin():
        key, _ = await keys_service.create_key(session, "relay", ["transcripts"])
        session.add(SigningSecret(key_id=key.id, secret=box_for((lost_key,)).seal("whsec_eA==")))
        job = Job(
            key_id=key.id,
            status="completed",
            audio_url="https://x/a.wav",
            request={},
            caller_webhook_url="https://hooks.example/relay",
        )
        session.add(job)
        await session.flush()
        endpoint = RelayEndpoint(key_id=key.id, url="https://hooks.example/relay")
        session.add(endpoint)
        await session.flush()
        delivery = RelayDelivery(
            job_id=job.id,
            endpoint_id=endpoint.id,
            job_status="completed",
            webhook_id=f"msg_{uuid.uuid4().hex}",
            status="pending",
            attempts=0,
            lease_owner="me",
            lease_expires_at=utcnow(),
        )
        session.add(delivery)
    sent: list[httpx.Request] = []
    http = httpx.AsyncClient(
        transport=httpx.MockTransport(lambda r: sent.append(r) or httpx.Response(200))
    )
    settings = make_settings(secrets_key=SecretStr(Fernet.generate_key().decode()))
    async with http:
        status = await relay.deliver(sm, http, settings.webhooks, delivery.id, "me")
    assert status == "pending"  # retried on the schedule
    assert sent == []
    async with sm() as session:
        attempt = await session.scalar(
            select(RelayAttempt).where(RelayAttempt.delivery_id == delivery.id)
        )
    assert attempt is not None
    assert attempt.error is not None
    assert "SECRETS_KEY" in attempt.error
