"""Limits shared by the upload body readers (streaming.py) and the form parser (form.py)."""

from __future__ import annotations

from app.core.errors import PayloadTooLarge

# Form fields other than the file are small JSON or text values.
MAX_FIELD_BYTES = 64 * 1024


def too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"The upload is larger than this service's limit of {limit} bytes.")
