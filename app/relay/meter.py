"""Charging a live session to the daily session-seconds budget by actual use.

The budget is the one token mints reserve (`app.tokens.limits`: per key and per end user,
per UTC day, in Redis or memory). A session reserves WS_RELAY_BUDGET_SLICE_S seconds ahead
of use, the next slice a second before the current one runs out, and gives back what it
did not use when it ends: the counter ends up charged with the session's whole seconds.
When a slice is refused, single seconds are tried; when those are refused too, the session
runs to the end of what it holds and is then terminated (4029).
"""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from collections.abc import Awaitable, Callable

from app.relay import policy as codes
from app.relay.state import LEASE_S
from app.tokens.limits import LimiterUnavailable, LimitExceeded, Quota, Reservation, TokenLimiter


class Meter:
    def __init__(
        self,
        limiter: TokenLimiter,
        quota: Quota,
        key_id: uuid.UUID,
        end_user: str | None,
        *,
        slice_s: int,
        cap_s: int,
    ) -> None:
        self.limiter = limiter
        self.quota = quota
        self.key_id = key_id
        self.end_user = end_user
        self.slice_s = slice_s
        self.cap_s = cap_s
        self.reserved = 0
        self.reservations: list[tuple[Reservation | None, int]] = []
        self.exhausted: str | None = None  # the refusal's sentence once no more can be had

    async def _reserve(self, cost: int) -> None:
        reservation = await self.limiter.reserve_budget(
            self.quota, self.key_id, self.end_user, cost
        )
        self.reservations.append((reservation, cost))
        self.reserved += cost

    async def take(self) -> None:
        """Reserve the next slice (or a single second); LimitExceeded when neither fits."""
        want = max(1, min(self.slice_s, self.cap_s - self.reserved))
        try:
            await self._reserve(want)
        except LimitExceeded:
            if want == 1:
                raise
            await self._reserve(1)

    async def run(
        self, started: float, renew: Callable[[], Awaitable[None]]
    ) -> tuple[int, str, str]:
        """Sleep, reserve and renew until the session must end: (code, ended_by, reason)."""
        next_renew = started + LEASE_S / 3
        while True:
            now = time.monotonic()
            elapsed = now - started
            if elapsed >= self.cap_s:
                return (
                    codes.SESSION_CAP,
                    "cap",
                    f"Session expired: the relay's session cap of {self.cap_s} s was reached",
                )
            if (
                self.exhausted is None
                and elapsed >= self.reserved - 1
                and self.reserved < self.cap_s
            ):
                try:
                    await self.take()
                except LimitExceeded as exc:
                    self.exhausted = exc.message
                except LimiterUnavailable:
                    return (
                        codes.STORAGE_UNAVAILABLE,
                        "storage",
                        "Budget storage unreachable: the session cannot be metered",
                    )
                continue
            if self.exhausted is not None and elapsed >= self.reserved:
                return (
                    codes.BUDGET_EXHAUSTED,
                    "budget",
                    "Daily session budget exhausted: no session-seconds left today",
                )
            if now >= next_renew:
                await renew()
                next_renew = now + LEASE_S / 3
            wake = min(
                self.cap_s,
                self.reserved if self.exhausted is not None else self.reserved - 1,
            )
            await asyncio.sleep(max(0.0, min(started + wake, next_renew) - time.monotonic()))

    async def settle(self, session_s: float) -> int:
        """Give back what the session held but did not use; the seconds charged."""
        charged = min(self.reserved, max(0, math.ceil(session_s - 1e-6)))
        excess = self.reserved - charged
        for reservation, cost in reversed(self.reservations):
            if excess <= 0:
                break
            back = min(cost, excess)
            excess -= back
            if reservation is not None:
                await self.limiter.refund(Reservation(reservation.counters, back))
        return charged
