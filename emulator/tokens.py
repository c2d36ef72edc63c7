"""Temporary tokens for browsers: `GET /v3/token` (streaming STT) and `GET /v1/token` (Voice Agent).

One in-memory store serves both products. A token is single use (the first WebSocket that
presents it consumes it), expires `expires_in_seconds` after minting, and opens only the
product that minted it: a /v3 token does not open /v1/ws and vice versa.

The mint path is deliberately lean (one key check, two int parses, 32 random bytes, one
dict insert, one heap push): the benchmark wants >= 5,000 mints/s at 64 concurrent.
"""

from __future__ import annotations

import heapq
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse, Response

from emulator.auth import check_bearer, check_raw_key
from emulator.config import EmulatorSettings
from emulator.faults import apply_fault

Product = Literal["streaming", "agent"]

EXPIRES_MIN, EXPIRES_MAX = 1, 600
SESSION_MIN, SESSION_MAX = 60, 10_800
DEFAULT_MAX_SESSION_S = 10_800  # 3 hours, upstream's cap


@dataclass(slots=True)
class Grant:
    product: Product
    expires_at: float  # time.monotonic()
    max_session_s: int


class TokenStore:
    """Single-use, expiring tokens. Event-loop only (no locks needed)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._grants: dict[str, Grant] = {}
        self._expiry: list[tuple[float, str]] = []  # min-heap for the lazy purge

    def __len__(self) -> int:
        return len(self._grants)

    def mint(self, product: Product, expires_in_s: int, max_session_s: int) -> str:
        now = self._clock()
        self._purge(now)
        token = secrets.token_urlsafe(32)
        expires_at = now + expires_in_s
        self._grants[token] = Grant(product, expires_at, max_session_s)
        heapq.heappush(self._expiry, (expires_at, token))
        return token

    def redeem(self, token: str | None, product: Product) -> Grant | None:
        """The grant of a live token of `product`, consumed; None when unknown/used/expired.

        A token of the other product is left untouched (it may still open its own).
        """
        if not token:
            return None
        grant = self._grants.get(token)
        if grant is None or grant.product != product:
            return None
        del self._grants[token]
        if grant.expires_at <= self._clock():
            return None
        return grant

    def _purge(self, now: float) -> None:
        # Amortised O(log n) per mint: only tokens already expired are popped.
        heap = self._expiry
        while heap and heap[0][0] <= now:
            _, token = heapq.heappop(heap)
            grant = self._grants.get(token)
            if grant is not None and grant.expires_at <= now:
                del self._grants[token]


def get_tokens(conn: HTTPConnection) -> TokenStore:
    """The app's token store (created on first use; one per emulator app)."""
    app_state = conn.app.state
    store: TokenStore | None = getattr(app_state, "emu_tokens", None)
    if store is None:
        store = TokenStore()
        app_state.emu_tokens = store
    return store


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


UNAUTHORIZED = "Authentication error, API token missing/invalid"


def _int_param(request: Request, name: str) -> int | str | None:
    """The int value of a query parameter, None when absent, or an error message."""
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return None
    try:
        return int(raw)
    except ValueError:
        return f"{name} must be an integer"


def parse_token_params(request: Request) -> tuple[int, int] | str:
    """(expires_in_seconds, max_session_duration_seconds) or upstream-like error text."""
    expires = _int_param(request, "expires_in_seconds")
    if expires is None:
        return "expires_in_seconds is required"
    if isinstance(expires, str):
        return expires
    if not EXPIRES_MIN <= expires <= EXPIRES_MAX:
        return f"expires_in_seconds must be between {EXPIRES_MIN} and {EXPIRES_MAX}"
    session = _int_param(request, "max_session_duration_seconds")
    if isinstance(session, str):
        return session
    if session is None:
        session = DEFAULT_MAX_SESSION_S
    elif not SESSION_MIN <= session <= SESSION_MAX:
        return f"max_session_duration_seconds must be between {SESSION_MIN} and {SESSION_MAX}"
    return expires, session


async def _mint(
    request: Request,
    route: str,
    product: Product,
    authorized: Callable[[HTTPConnection, EmulatorSettings], bool],
) -> Response:
    state = request.app.state.emu
    answer = await apply_fault(state, route)  # one dict lookup when nothing is queued
    if answer is not None:
        return answer
    if not authorized(request, state.settings):
        return _error(401, UNAUTHORIZED)
    parsed = parse_token_params(request)
    if isinstance(parsed, str):
        return _error(400, parsed)
    expires, session = parsed
    return JSONResponse({"token": get_tokens(request).mint(product, expires, session)})


async def v3_token(request: Request) -> Response:
    """Mint a single-use streaming STT token (raw-key auth)."""
    return await _mint(request, "GET /v3/token", "streaming", check_raw_key)


async def v1_token(request: Request) -> Response:
    """Mint a single-use Voice Agent token (Bearer auth only)."""
    return await _mint(request, "GET /v1/token", "agent", check_bearer)
