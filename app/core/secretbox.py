"""Secrets we must store readable (relay signing secrets, callers' relay header values),
encrypted at rest with Fernet keys from `SECRETS_KEY`, so a database dump alone signs and
authenticates nothing.

`SECRETS_KEY` is a comma-separated list of Fernet keys: the first encrypts, every one
decrypts (`MultiFernet`), so a key is rotated by putting a new one first and keeping the
old ones until no row is sealed with them (docs/secrets.md). Outside production, with no
`SECRETS_KEY`, a fixed development key is used (`DEVELOPMENT_KEY`, app/core/config.py: it
protects nothing, and production refuses to start without a real key).
"""

from __future__ import annotations

from functools import lru_cache

from app.core.config import DEVELOPMENT_KEY, SecretsSettings

# `cryptography` (several MB resident) is imported on first use of a SecretBox, not with
# the settings: the serving process of a deployment that stores no secret never loads it
# (tests/uploads/test_footprint.py).


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


@lru_cache(maxsize=8)
def box_for(keys: tuple[str, ...]) -> SecretBox:
    return SecretBox(keys or (DEVELOPMENT_KEY,))


def secret_box(settings: SecretsSettings) -> SecretBox:
    """The box of the secrets part (SECRETS_KEY), shared by every caller with the same keys."""
    return box_for(settings.fernet_keys())
