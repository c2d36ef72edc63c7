"""Standard Webhooks signing (https://www.standardwebhooks.com) and per-key signing secrets.

A message is signed as `v1,<base64(HMAC-SHA256(secret, "{id}.{timestamp}.{body}"))>`, where
the secret is the base64-decoded part after `whsec_`. During a rotation both the new and the
previous secret sign, and the header carries both signatures separated by a space, so a
receiver holding either secret verifies.

Secrets are stored sealed with SECRETS_KEY (app/core/secretbox.py): signing needs the raw
secret, but a database dump alone must sign nothing.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import secrets
import uuid
from datetime import timedelta

from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.db import utcnow
from app.core.events import KeyCreated
from app.core.secretbox import SecretBox, SecretUnreadable
from app.transcripts.models import Job
from app.webhooks.models import SigningSecret

SECRET_PREFIX = "whsec_"

logger = logging.getLogger(__name__)


def new_signing_secret() -> str:
    """A fresh `whsec_` secret: 32 random bytes, base64."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def _secret_bytes(secret: str) -> bytes:
    return base64.b64decode(secret.removeprefix(SECRET_PREFIX))


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """One `v1,<signature>` entry."""
    to_sign = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(_secret_bytes(secret), to_sign, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signature_header(secrets_: list[str], msg_id: str, timestamp: int, body: bytes) -> str:
    return " ".join(sign(s, msg_id, timestamp, body) for s in secrets_)


def webhook_headers(
    secrets_: list[str], msg_id: str, timestamp: int, body: bytes
) -> dict[str, str]:
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature_header(secrets_, msg_id, timestamp, body),
    }


async def create_signing_secret(session: AsyncSession, box: SecretBox, key_id: uuid.UUID) -> str:
    """A new current secret for a key (the raw value is returned once to show the caller);
    stored sealed with SECRETS_KEY."""
    secret = new_signing_secret()
    session.add(SigningSecret(key_id=key_id, secret=box.seal(secret)))
    await session.flush()
    return secret


async def on_key_created(event: KeyCreated) -> None:
    """A new key's signing secret, shown once in the key's creation answer."""
    secret = await create_signing_secret(event.session, event.box, event.key_id)
    event.shown_once["webhook_signing_secret"] = secret


async def rotate_signing_secret(
    session: AsyncSession, box: SecretBox, key_id: uuid.UUID, grace_s: float
) -> tuple[str, int]:
    """Replace the key's current secret; the old one keeps signing for `grace_s` seconds.

    Returns the new secret and how many previous secrets remain valid.
    """
    now = utcnow()
    # Older rotated-out secrets stop now: at most two are valid at any time.
    await session.execute(
        update(SigningSecret)
        .where(
            SigningSecret.key_id == key_id,
            SigningSecret.expires_at.is_not(None),
            SigningSecret.expires_at > now,
        )
        .values(expires_at=now)
    )
    result = await session.execute(
        update(SigningSecret)
        .where(SigningSecret.key_id == key_id, SigningSecret.expires_at.is_(None))
        .values(expires_at=now + timedelta(seconds=grace_s))
    )
    previous = int(getattr(result, "rowcount", 0) or 0) if grace_s > 0 else 0
    secret = await create_signing_secret(session, box, key_id)
    return secret, previous


async def valid_secrets(session: AsyncSession, box: SecretBox, key_id: uuid.UUID) -> list[str]:
    """The secrets that sign a message for this key now, newest first.

    A key without one (created before this feature, or by the CLI) gets one here; its
    owner reads it by rotating. A previous (grace-period) secret that no SECRETS_KEY opens
    (a key dropped before `aai-proxy reseal-secrets`) is left out with a warning, so the
    current secret keeps signing; only an unreadable current secret raises SecretUnreadable.
    """
    now = utcnow()
    rows = list(
        await session.scalars(
            select(SigningSecret)
            .where(
                SigningSecret.key_id == key_id,
                or_(SigningSecret.expires_at.is_(None), SigningSecret.expires_at > now),
            )
            .order_by(SigningSecret.created_at.desc())
            .limit(2)
        )
    )
    if not rows:
        return [await create_signing_secret(session, box, key_id)]
    current, *previous = rows
    opened = [box.open(current.secret)]
    for row in previous:
        try:
            opened.append(box.open(row.secret))
        except SecretUnreadable:
            logger.warning(
                "webhooks.signing.previous_secret_unreadable",
                extra={"key_id": str(key_id), "signing_secret_id": str(row.id)},
            )
    return opened


async def reseal_stored_secrets(session: AsyncSession, box: SecretBox) -> int:
    """Re-encrypt every stored relay secret (signing secrets, callers' relay header values)
    with the first key of SECRETS_KEY, so the keys after it can be dropped. Returns how many
    values were rewritten; SecretUnreadable if one opens with no key."""
    count = 0
    for model, column in (
        (SigningSecret, SigningSecret.secret),
        (Job, Job.caller_webhook_auth_header_value),
    ):
        rows = (await session.execute(select(model.id, column).where(column.is_not(None)))).all()
        for row_id, sealed in rows:
            if sealed is None:  # pragma: no cover - filtered above
                continue
            await session.execute(
                update(model).where(model.id == row_id).values({column: box.reseal(sealed)})
            )
            count += 1
    return count
