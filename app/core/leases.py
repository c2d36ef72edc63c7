"""Leases: how instances share periodic work without running it twice.

A claim is one short transaction: `FOR UPDATE SKIP LOCKED` picks due rows no other
instance is claiming right now, and the same statement stamps `lease_owner` and
`lease_expires_at` on them. The slow work runs outside any transaction and writes its
result only while the lease is still ours; a crashed instance's leases expire and another
instance takes the work over.
"""

from __future__ import annotations

import os
import socket
import uuid


def instance_owner() -> str:
    """A lease owner name unique to this process."""
    return f"{socket.gethostname()[:40]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
