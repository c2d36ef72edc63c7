"""Secrets we must store readable (relay signing secrets, callers' relay header values),
encrypted at rest with Fernet keys from `SECRETS_KEY`, so a database dump alone signs and
authenticates nothing.

`SECRETS_KEY` is a comma-separated list of Fernet keys: the first encrypts, every one
decrypts (`MultiFernet`), so a key is rotated by putting a new one first and keeping the
old ones until no row is sealed with them (docs/secrets.md). Outside production, with no
`SECRETS_KEY`, a fixed development key is used (it protects nothing: production refuses
to start without a real key).
"""

from __future__ import annotations

import base64
import hashlib
from functools import lru_cache
from typing import Protocol

# `cryptography` (several MB resident) is imported on first use of a SecretBox, not with
# the settings: the serving process of a deployment that stores no secret never loads it
# (tests/uploads/test_footprint.py).

# Public by construction (derived from a fixed phrase): development and tests only.
DEVELOPMENT_KEY = base64.urlsafe_b64encode(
    hashlib.sha256(b"aai-proxy development SECRETS_KEY (not secret)").digest()
).decode()


class SecretUnreadable(Exception):
    """A sealed value no configured key opens (a SECRETS_KEY was dropped too early)."""


class SecretBox:
    def __init__(self, keys: tuple[str, ...]) -> None:
        from cryptography.fernet import Fernet, InvalidToken, MultiFernet

        if not keys:
            raise ValueError("at least one key is needed")
        self._fernet = MultiFernet([Fernet(key) for key in keys])
        self._unreadable = (InvalidToken, UnicodeError)

    def seal(self, value: str) -> str:
        return self._fernet.encrypt(value.encode("utf-8")).decode("ascii")

    def open(self, sealed: str) -> str:
        try:
            return self._fernet.decrypt(sealed.encode("ascii")).decode("utf-8")
        except self._unreadable as exc:
            raise SecretUnreadable(
                "A stored secret cannot be decrypted with any key in SECRETS_KEY."
            ) from exc

    def reseal(self, sealed: str) -> str:
        """The same value sealed with the first key (for rotation)."""
        try:
            return self._fernet.rotate(sealed.encode("ascii")).decode("ascii")
        except self._unreadable as exc:
            raise SecretUnreadable(
                "A stored secret cannot be decrypted with any key in SECRETS_KEY."
            ) from exc


def parse_keys(value: str | None) -> tuple[str, ...]:
    """SECRETS_KEY's keys, in order; each must be a Fernet key (ValueError otherwise)."""
    if value is None:
        return ()
    keys = tuple(part.strip() for part in value.split(",") if part.strip())
    for key in keys:
        # What Fernet itself requires of a key, checked without importing it.
        try:
            valid = len(base64.urlsafe_b64decode(key.encode("ascii"))) == 32
        except (ValueError, UnicodeError):
            valid = False
        if not valid:
            raise ValueError(
                "SECRETS_KEY must be comma-separated Fernet keys (32 url-safe base64 bytes; "
                'make one with: python -c "from cryptography.fernet import Fernet; '
                'print(Fernet.generate_key().decode())")'
            )
    return keys


@lru_cache(maxsize=8)
def box_for(keys: tuple[str, ...]) -> SecretBox:
    return SecretBox(keys or (DEVELOPMENT_KEY,))


class HasSecretsKeys(Protocol):
    """What a secret box is made from: the settings (kept a protocol, so that the settings
    can validate keys with this module without the two importing each other)."""

    def secrets_keys(self) -> tuple[str, ...]: ...


def secret_box(settings: HasSecretsKeys) -> SecretBox:
    return box_for(settings.secrets_keys())
