"""Token limits: mints per minute and a daily budget of granted session-seconds.

Two kinds of counter, both per key and per end user (an end user is namespaced by its key:
"alice" of one app is not "alice" of another):

- **Mints per minute** use the `limits` library's sliding-window-counter strategy. Its
  `hit` is an atomic test-and-increment (a Lua script on Redis; no await between test and
  increment in memory), so a refused mint never consumes a slot.
- **The daily budget** (session-seconds granted per UTC day) must be reserved for the key
  and the end user together, or for neither: reserving one and refunding it after the other
  refused could, around a window shift, let a concurrent request through. `limits` has no
  multi-counter operation, so the reservation is one Lua script on the very Redis
  connection `limits` opened (same URL, same prefix), and in memory a check-and-add with no
  await in between (asyncio runs it without interleaving). The counters are named by the
  UTC day, so a refund (a failed upstream call) decrements exactly what was reserved.

With Redis unreachable, both answer 503 unless `TOKEN_LIMITS_FAIL_OPEN=true`.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from limits import RateLimitItemPerMinute
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import SlidingWindowCounterRateLimiter

from app.core.errors import RateLimited, ServiceUnavailable

logger = logging.getLogger(__name__)

DAY_S = 86_400

# KEYS: counters; ARGV[1]: cost; ARGV[2]: ttl (s); ARGV[2+i]: limit of KEYS[i] (0 = none).
# Returns {0, 0} when reserved on every counter, else {i, used} for the first one refusing.
_RESERVE_LUA = """
local cost = tonumber(ARGV[1])
for i, key in ipairs(KEYS) do
  local limit = tonumber(ARGV[2 + i])
  if limit > 0 then
    local used = tonumber(redis.call('get', key) or '0')
    if used + cost > limit then
      return {i, used}
    end
  end
end
for _, key in ipairs(KEYS) do
  redis.call('incrby', key, cost)
  redis.call('expire', key, tonumber(ARGV[2]))
end
return {0, 0}
"""


class LimitExceeded(RateLimited):
    """A token limit refused the request: 429 with Retry-After and a sentence naming it."""

    def __init__(self, message: str, *, retry_after: float, limit: str) -> None:
        super().__init__(message, retry_after=retry_after)
        self.limit = limit


class LimiterUnavailable(ServiceUnavailable):
    message = "Rate-limit storage is unreachable; token minting is paused. Retry shortly."


@dataclass(frozen=True)
class Quota:
    """The limits that apply to one caller (0 = unlimited)."""

    key_mints_per_minute: int
    end_user_mints_per_minute: int
    key_daily_session_s: int
    end_user_daily_session_s: int


@dataclass(frozen=True)
class Reservation:
    """Session-seconds held on the named counters; `refund` gives them back."""

    counters: tuple[str, ...]
    cost: int


def _utc_day(now: datetime) -> str:
    return f"{now.year:04d}{now.month:02d}{now.day:02d}"  # strftime costs more, per mint


def seconds_to_midnight(now: datetime) -> float:
    tomorrow = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return (tomorrow - now).total_seconds()


class TokenLimiter:
    """Counters in memory (one process) or in Redis (shared by every instance)."""

    def __init__(self, redis_url: str | None, *, prefix: str, fail_open: bool) -> None:
        self.prefix = prefix
        self.fail_open = fail_open
        self.storage: Storage
        self._redis: Any = None
        self._reserve_script: Any = None
        if redis_url:
            uri = redis_url if redis_url.startswith("async+") else "async+" + redis_url
            self.storage = RedisStorage(
                uri,
                implementation="redispy",
                key_prefix=f"{prefix}:limits",
                socket_timeout=2,
                socket_connect_timeout=2,
            )
            self._redis = self.storage.bridge.get_connection()  # type: ignore[attr-defined]
            self._reserve_script = self._redis.register_script(_RESERVE_LUA)
        else:
            self.storage = MemoryStorage()
        self._minute = SlidingWindowCounterRateLimiter(self.storage)
        self._memory_budget: dict[str, int] = {}
        self._memory_day = ""

    @property
    def backend(self) -> str:
        return "redis" if self._redis is not None else "memory"

    @property
    def _errors(self) -> tuple[type[BaseException], ...]:
        base = self.storage.base_exceptions
        return base if isinstance(base, tuple) else (base,)

    def _budget_key(self, day: str, *parts: str) -> str:
        return ":".join((self.prefix, "budget", day, *parts))

    # --- mints per minute ------------------------------------------------------------------

    async def hit_mint(self, quota: Quota, key_id: uuid.UUID, end_user: str | None) -> None:
        """Count one mint against the per-minute limits, or raise LimitExceeded."""
        # The end user first: one user hitting their (lower) limit must not use up the
        # key's slots, which every other user of the app shares.
        checks: list[tuple[int, tuple[str, ...], str]] = []
        if end_user is not None:
            checks.append(
                (quota.end_user_mints_per_minute, ("user", str(key_id), end_user), "per end user")
            )
        checks.append((quota.key_mints_per_minute, ("key", str(key_id)), "per key"))
        try:
            for amount, ident, label in checks:
                if amount <= 0:
                    continue
                item = RateLimitItemPerMinute(amount, namespace=f"{self.prefix}-mint")
                if not await self._minute.hit(item, *ident):
                    stats = await self._minute.get_window_stats(item, *ident)
                    retry = max(1.0, stats.reset_time - time.time())
                    raise LimitExceeded(
                        f"Token mint rate limit reached: at most {amount} tokens per minute "
                        f"{label}. Retry in {int(retry + 0.999)} s.",
                        retry_after=retry,
                        limit=f"mints_per_minute_{label.replace(' ', '_')}",
                    )
        except self._errors as exc:
            self._storage_failed("mint", exc)

    # --- daily session-seconds budget ------------------------------------------------------

    async def reserve_budget(
        self,
        quota: Quota,
        key_id: uuid.UUID,
        end_user: str | None,
        cost: int,
        *,
        now: datetime | None = None,
    ) -> Reservation | None:
        """Reserve `cost` session-seconds on the key's and the end user's daily budget, on
        both or neither; None when storage failed and the limiter fails open."""
        now = now or datetime.now(UTC)
        day = _utc_day(now)
        counters = [self._budget_key(day, "key", str(key_id))]
        limits_ = [quota.key_daily_session_s]
        labels = ["per key"]
        if end_user is not None:
            counters.append(self._budget_key(day, "user", str(key_id), end_user))
            limits_.append(quota.end_user_daily_session_s)
            labels.append("per end user")
        try:
            if self._reserve_script is not None:
                refused, used = await self._reserve_script(
                    keys=counters, args=[cost, DAY_S + 3600, *limits_]
                )
                refused, used = int(refused), int(used)
            else:
                refused, used = self._reserve_in_memory(day, counters, limits_, cost)
        except self._errors as exc:
            self._storage_failed("budget", exc)
            return None
        if refused:
            limit = limits_[refused - 1]
            label = labels[refused - 1]
            left = max(0, limit - used)
            raise LimitExceeded(
                f"Daily session budget reached: {limit} granted session-seconds per UTC day "
                f"{label}; {left} s left today and this token needs {cost} s. Ask for a "
                "shorter max_session_duration_seconds or retry after midnight UTC.",
                retry_after=seconds_to_midnight(now),
                limit=f"daily_session_seconds_{label.replace(' ', '_')}",
            )
        return Reservation(tuple(counters), cost)

    def _reserve_in_memory(
        self, day: str, counters: list[str], limits_: list[int], cost: int
    ) -> tuple[int, int]:
        # No await in here: asyncio cannot interleave another reservation, so this is atomic.
        if day != self._memory_day:
            self._memory_budget = {k: v for k, v in self._memory_budget.items() if f":{day}:" in k}
            self._memory_day = day
        budget = self._memory_budget
        for i, (counter, limit) in enumerate(zip(counters, limits_, strict=True), start=1):
            used = budget.get(counter, 0)
            if limit > 0 and used + cost > limit:
                return i, used
        for counter in counters:
            budget[counter] = budget.get(counter, 0) + cost
        return 0, 0

    async def refund(self, reservation: Reservation | None) -> None:
        """Give back a reservation whose token was never granted (upstream failed)."""
        if reservation is None:
            return
        try:
            if self._redis is not None:
                async with self._redis.pipeline(transaction=True) as pipe:
                    for counter in reservation.counters:
                        pipe.decrby(counter, reservation.cost)
                    await pipe.execute()
            else:
                for counter in reservation.counters:
                    if counter in self._memory_budget:
                        self._memory_budget[counter] -= reservation.cost
        except self._errors as exc:
            logger.warning("tokens.limits.refund_failed", extra={"error_type": type(exc).__name__})

    async def budget_used(
        self, key_id: uuid.UUID, end_user: str | None = None, *, now: datetime | None = None
    ) -> int:
        """Session-seconds granted today (UTC) on a key's or an end user's counter."""
        day = _utc_day(now or datetime.now(UTC))
        parts = ("user", str(key_id), end_user) if end_user else ("key", str(key_id))
        counter = self._budget_key(day, *parts)
        if self._redis is None:
            return self._memory_budget.get(counter, 0)
        return int(await self._redis.get(counter) or 0)

    def _storage_failed(self, what: str, exc: BaseException) -> None:
        logger.error(
            "tokens.limits.storage_unreachable",
            extra={"counter": what, "fail_open": self.fail_open, "error_type": type(exc).__name__},
        )
        if not self.fail_open:
            raise LimiterUnavailable() from exc

    async def check(self) -> bool:
        try:
            return bool(await self.storage.check())
        except Exception:
            return False

    async def aclose(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()
