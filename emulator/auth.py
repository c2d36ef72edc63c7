"""Auth as upstream: REST, streaming and LLM Gateway take the raw key; Voice Agent only Bearer."""

from __future__ import annotations

import hashlib
import hmac

from starlette.requests import HTTPConnection

from emulator.config import EmulatorSettings


def secrets_equal(provided: str | None, expected: str | None) -> bool:
    """Constant-time comparison in which an empty or missing key never verifies (the
    emulator is a separate program and imports nothing from app/)."""
    if not provided or not expected:
        return False
    return hmac.compare_digest(provided.encode(), expected.encode())


def check_raw_key(conn: HTTPConnection, settings: EmulatorSettings) -> bool:
    """`Authorization: <key>` exactly; `Bearer <key>` fails (upstream answers 401)."""
    provided = conn.headers.get("authorization")
    return _matches_any(provided, settings)


def check_bearer(conn: HTTPConnection, settings: EmulatorSettings) -> bool:
    """Only `Authorization: Bearer <key>` (the Voice Agent's rule)."""
    header = conn.headers.get("authorization") or ""
    scheme, _, value = header.partition(" ")
    if scheme != "Bearer":
        return False
    return _matches_any(value, settings)


def _matches_any(provided: str | None, settings: EmulatorSettings) -> bool:
    # Every key is compared (no early exit), so timing does not tell which one matched.
    matched = False
    for key in settings.api_keys():
        matched |= secrets_equal(provided, key)
    return matched


def owner_of(conn: HTTPConnection) -> str:
    """A stable, non-secret identity for the caller's key (its sha256), for ownership checks."""
    header = conn.headers.get("authorization") or ""
    if header.startswith("Bearer "):
        header = header[len("Bearer ") :]
    return hashlib.sha256(header.encode()).hexdigest()
