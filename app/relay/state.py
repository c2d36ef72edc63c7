"""Shared state of the relay: single-use relay tokens and open-session counters.

Both live in Redis when REDIS_URL is set (every instance sees the same tokens and counts),
else in this process's memory. A relay token is stored only as its SHA-256 hash, with its
grant (key, end user, kind, session cap) and a TTL; redeeming is one atomic GETDEL, so a
token opens at most one session on any instance.

Open sessions are counted per key and per end user in sorted sets whose members are
session ids scored by a lease deadline: a session renews its lease while it runs, and an
instance that dies without releasing stops counting once its leases lapse.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
import uuid
from dataclasses import dataclass
from typing import Any

from app.core.security import hash_key

logger = logging.getLogger(__name__)

# Shaped like a proxy key ("aaip_" + URL-safe characters), so log redaction removes it
# anywhere; a key is always 48 characters and a relay token 51, so they cannot be confused.
TOKEN_PREFIX = "aaip_rt_"
TOKEN_LENGTH = len(TOKEN_PREFIX) + 43
LEASE_S = 30.0  # a session renews its slot every LEASE_S / 3

# KEYS: the sets to join; ARGV[1]: now; ARGV[2]: lease deadline; ARGV[3]: member;
# ARGV[3+i]: limit of KEYS[i] (0 = none). Returns 0, or the 1-based index of the full set.
_ACQUIRE_LUA = """
local now = tonumber(ARGV[1])
for i, key in ipairs(KEYS) do
  redis.call('zremrangebyscore', key, '-inf', now)
  local limit = tonumber(ARGV[3 + i])
  if limit > 0 and redis.call('zcard', key) >= limit then
    return i
  end
end
for _, key in ipairs(KEYS) do
  redis.call('zadd', key, tonumber(ARGV[2]), ARGV[3])
  redis.call('expire', key, 3600)
end
return 0
"""


@dataclass(frozen=True)
class RelayGrant:
    """What a relay token stands for (never the token itself)."""

    kind: str  # "streaming" or "agents"
    key_id: uuid.UUID
    end_user: str | None
    session_s: int | None
    via: str


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def looks_like_relay_token(value: str | None) -> bool:
    return value is not None and len(value) == TOKEN_LENGTH and value.startswith(TOKEN_PREFIX)


class RelayState:
    def __init__(self, redis_url: str | None, prefix: str) -> None:
        self.prefix = f"{prefix}:relay"
        self._redis: Any = None
        self._acquire: Any = None
        # What a store failure raises. redis is imported only when it is the store: imported
        # lazily on a session's hot path instead, its first import stalled every open
        # session for a quarter of a second.
        self.errors: tuple[type[BaseException], ...] = (OSError,)
        if redis_url:
            import redis.asyncio as redis_asyncio
            import redis.exceptions

            self.errors = (redis.exceptions.RedisError, OSError)

            self._redis = redis_asyncio.from_url(
                redis_url, socket_timeout=2, socket_connect_timeout=2
            )
            self._acquire = self._redis.register_script(_ACQUIRE_LUA)
        self._tokens: dict[str, tuple[float, RelayGrant]] = {}
        self._sessions: dict[str, dict[str, float]] = {}

    @property
    def backend(self) -> str:
        return "redis" if self._redis is not None else "memory"

    # --- relay tokens ----------------------------------------------------------------------

    async def issue(self, grant: RelayGrant, ttl_s: int) -> str:
        token = new_token()
        digest = hash_key(token)
        if self._redis is not None:
            value = json.dumps(
                {
                    "kind": grant.kind,
                    "key_id": str(grant.key_id),
                    "end_user": grant.end_user,
                    "session_s": grant.session_s,
                    "via": grant.via,
                }
            )
            await self._redis.set(f"{self.prefix}:token:{digest}", value, ex=ttl_s)
        else:
            now = time.monotonic()
            if len(self._tokens) > 10_000:
                self._tokens = {k: v for k, v in self._tokens.items() if v[0] > now}
            self._tokens[digest] = (now + ttl_s, grant)
        return token

    async def redeem(self, token: str | None) -> RelayGrant | None:
        """The token's grant, once; None when unknown, expired, used or empty."""
        if not looks_like_relay_token(token):
            return None
        assert token is not None
        digest = hash_key(token)
        if self._redis is not None:
            raw = await self._redis.getdel(f"{self.prefix}:token:{digest}")
            if raw is None:
                return None
            data = json.loads(raw)
            return RelayGrant(
                kind=data["kind"],
                key_id=uuid.UUID(data["key_id"]),
                end_user=data["end_user"],
                session_s=data["session_s"],
                via=data["via"],
            )
        entry = self._tokens.pop(digest, None)
        if entry is None or entry[0] <= time.monotonic():
            return None
        return entry[1]

    # --- open sessions ---------------------------------------------------------------------

    def _sets(self, kind: str, key_id: uuid.UUID, end_user: str | None) -> list[str]:
        sets = [f"{self.prefix}:open:{kind}:key:{key_id}"]
        if end_user is not None:
            sets.append(f"{self.prefix}:open:{kind}:user:{key_id}:{end_user}")
        return sets

    async def acquire(
        self,
        kind: str,
        key_id: uuid.UUID,
        end_user: str | None,
        session_id: str,
        limits: tuple[int, int],
    ) -> str | None:
        """Take a slot on the key's and the end user's counters (both or neither); None
        when taken, else which limit refused ("per key" or "per end user")."""
        sets = self._sets(kind, key_id, end_user)
        wanted = list(limits[: len(sets)])
        labels = ["per key", "per end user"]
        now = time.time()
        if self._redis is not None:
            refused = int(
                await self._acquire(keys=sets, args=[now, now + LEASE_S, session_id, *wanted])
            )
            return labels[refused - 1] if refused else None
        for i, (name, limit) in enumerate(zip(sets, wanted, strict=True)):
            members = self._sessions.setdefault(name, {})
            for member, deadline in list(members.items()):
                if deadline <= now:
                    del members[member]
            if limit > 0 and len(members) >= limit:
                return labels[i]
        for name in sets:
            self._sessions[name][session_id] = now + LEASE_S
        return None

    async def renew(
        self, kind: str, key_id: uuid.UUID, end_user: str | None, session_id: str
    ) -> None:
        deadline = time.time() + LEASE_S
        sets = self._sets(kind, key_id, end_user)
        if self._redis is not None:
            async with self._redis.pipeline(transaction=False) as pipe:
                for name in sets:
                    pipe.zadd(name, {session_id: deadline}, xx=True)
                await pipe.execute()
            return
        for name in sets:
            members = self._sessions.get(name)
            if members is not None and session_id in members:
                members[session_id] = deadline

    async def release(
        self, kind: str, key_id: uuid.UUID, end_user: str | None, session_id: str
    ) -> None:
        sets = self._sets(kind, key_id, end_user)
        if self._redis is not None:
            async with self._redis.pipeline(transaction=False) as pipe:
                for name in sets:
                    pipe.zrem(name, session_id)
                await pipe.execute()
            return
        for name in sets:
            members = self._sessions.get(name)
            if members is not None:
                members.pop(session_id, None)
                if not members:
                    self._sessions.pop(name, None)

    async def aclose(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()
