"""Secrets: generation, hashing and constant-time comparison."""

from __future__ import annotations

import hashlib
import hmac
import secrets

KEY_PREFIX = "aaip_"
DISPLAY_PREFIX_LEN = len(KEY_PREFIX) + 6


def new_api_key() -> str:
    """A proxy key: recognisable prefix + 32 random bytes (256 bits of entropy)."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def new_secret(nbytes: int = 32) -> str:
    return secrets.token_urlsafe(nbytes)


def hash_key(raw_key: str) -> str:
    """SHA-256 of the key. Keys carry 256 random bits, so a slow KDF adds nothing."""
    return hashlib.sha256(raw_key.encode()).hexdigest()


def display_prefix(raw_key: str) -> str:
    return raw_key[:DISPLAY_PREFIX_LEN]


def secrets_equal(provided: str | bytes | None, expected: str | bytes | None) -> bool:
    """Constant-time comparison in which an empty or missing secret never verifies."""
    if not provided or not expected:
        return False
    a = provided.encode() if isinstance(provided, str) else provided
    b = expected.encode() if isinstance(expected, str) else expected
    return hmac.compare_digest(a, b)
