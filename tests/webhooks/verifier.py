"""An independent Standard Webhooks verifier, written from the spec, not from app code.

Spec: signed content is `{webhook-id}.{webhook-timestamp}.{body}`; signature is
base64(HMAC-SHA256(base64decode(secret without "whsec_"), content)); the header holds
space-separated `v1,<sig>` entries, any one of which may match; the timestamp must be
within a tolerance (5 minutes) of now.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Mapping


class VerificationError(Exception):
    pass


def verify(secret: str, headers: Mapping[str, str], body: bytes, tolerance_s: int = 300) -> None:
    lower = {k.lower(): v for k, v in headers.items()}
    try:
        msg_id = lower["webhook-id"]
        ts = lower["webhook-timestamp"]
        sig_header = lower["webhook-signature"]
    except KeyError as exc:
        raise VerificationError(f"missing header {exc}") from None
    if abs(time.time() - int(ts)) > tolerance_s:
        raise VerificationError("timestamp out of tolerance")
    key = base64.b64decode(secret[len("whsec_") :] if secret.startswith("whsec_") else secret)
    mac = hmac.new(key, msg_id.encode() + b"." + ts.encode() + b"." + body, hashlib.sha256)
    expected = base64.b64encode(mac.digest())
    for part in sig_header.split(" "):
        version, _, sig = part.partition(",")
        if version == "v1" and hmac.compare_digest(sig.encode(), expected):
            return
    raise VerificationError("no matching signature")
