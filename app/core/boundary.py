"""The input boundary: what no handler may ever see.

Every request crosses it before a handler runs (see `ProxyApp` and `BoundaryRoute`):

- **Characters Postgres cannot store.** A `text` column refuses NUL (`\\x00`), and a lone
  UTF-16 surrogate (`\\ud800`, only possible through a JSON escape) cannot be encoded as
  UTF-8 at all. Both are refused in the path, the query string, header values and every
  string (and key) of a JSON body, with a 400 naming where.
- **Nesting.** JSON is scanned for depth on its raw bytes before it becomes Python objects
  (`[` × 10,000 would otherwise end in a RecursionError); more than `MAX_JSON_DEPTH` → 400.
- **Numbers JSON cannot carry back.** `NaN`, `Infinity` and floats that overflow to
  infinity are refused (a `jsonb` column and `json.dumps(allow_nan=False)` refuse them).
- **Forwarded addresses.** `X-Forwarded-For` is honoured only from a trusted peer and only
  when every address in it is an IP address (`ipaddress`); otherwise the peer stays.

Everything here is cheap on the hot paths: a token mint or a webhook pays a few `in`
tests on bytes, and a JSON body is walked only when its raw bytes contain an escape that
could hide one of the refused characters.
"""

from __future__ import annotations

import functools
import ipaddress
import json
import math
import re
from collections.abc import Callable, Coroutine, Iterable
from typing import Any
from urllib.parse import parse_qsl

from fastapi import HTTPException
from fastapi.routing import APIRoute
from pydantic import BeforeValidator
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Scope

from app.core.errors import BadRequest

MAX_JSON_DEPTH = 64
INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1

# A JSON string (the unrolled form: linear, no backtracking) or a bracket.
_STRING_OR_BRACKET = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]', re.DOTALL)
# Prefixes on the compatible surface, which answers errors in upstream's shape.
COMPAT_PREFIXES = ("/v1/", "/v2/", "/v3/")


class InvalidInput(BadRequest):
    """Input the service refuses at its boundary (the detail says where)."""

    message = "The request contains a value this service cannot accept."


def bad_text(value: str) -> str | None:
    """Why `value` cannot be stored as text (NUL, a lone surrogate), or None when it can."""
    if "\x00" in value:
        return "contains a NUL character"
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return "contains an unpaired surrogate (not encodable as UTF-8)"
    return None


def check_text(value: str | None, field: str) -> str | None:
    """`value` unchanged, or InvalidInput naming `field`."""
    if value is not None and (why := bad_text(value)) is not None:
        raise InvalidInput(f"`{field}` {why}.")
    return value


def json_depth_exceeds(raw: bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether the JSON text `raw` nests arrays/objects deeper than `limit` (brackets inside
    strings do not count). Linear in `raw`; nothing is decoded."""
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return False
    depth = 0
    for match in _STRING_OR_BRACKET.finditer(raw):
        token = match.group()
        if token in (b"[", b"{"):
            depth += 1
            if depth > limit:
                return True
        elif token in (b"]", b"}"):
            depth -= 1
    return False


def _finite(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"the number {text[:20]} is out of range")
    return value


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


_DECODER = json.JSONDecoder(parse_float=_finite, parse_constant=_no_constant)


def _path(parts: Iterable[str | int]) -> str:
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out or "body"


def find_bad_text(value: Any, where: tuple[str | int, ...] = ()) -> str | None:
    """The first string (or key) in a decoded JSON value that cannot be stored, described
    with its path (`config.keyterms[3]`), or None."""
    stack: list[tuple[Any, tuple[str | int, ...]]] = [(value, where)]
    while stack:
        item, at = stack.pop()
        if isinstance(item, str):
            if (why := bad_text(item)) is not None:
                return f"`{_path(at)}` {why}"
        elif isinstance(item, dict):
            for key, child in item.items():
                if (why := bad_text(key)) is not None:
                    return f"a key in `{_path(at)}` {why}"
                stack.append((child, (*at, key)))
        elif isinstance(item, list):
            stack.extend((child, (*at, i)) for i, child in enumerate(item))
    return None


def parse_json(raw: bytes | str, *, what: str = "The request body") -> Any:
    """Decode JSON from the outside world, or raise InvalidInput (400) saying why: not
    JSON, nested deeper than MAX_JSON_DEPTH, NaN/Infinity, or a string that cannot be
    stored (NUL, lone surrogate) — the last naming its field."""
    data = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw
    if json_depth_exceeds(data):
        raise InvalidInput(f"{what} is nested deeper than {MAX_JSON_DEPTH} levels.")
    try:
        # As json.loads(bytes) decodes, with one decoder made once (passing the hooks to
        # json.loads builds a new decoder per call, which doubled a small body's cost).
        value = _DECODER.decode(data.decode(json.detect_encoding(data), "surrogatepass"))
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise InvalidInput(f"{what} is not valid JSON.") from None
    # NUL and surrogates reach a decoded string only through a `\u` escape, or (surrogates)
    # as their raw UTF-8-like bytes, which json.loads lets through (`surrogatepass`).
    if b"\\u" in data or b"\xed" in data:
        if (why := find_bad_text(value)) is not None:
            raise InvalidInput(f"{what}: {why}.")
    return value


# --- The ASGI scope: path, query, headers ------------------------------------------------


def scope_refusal(scope: Scope) -> str | None:
    """Why this request's path, query string or headers cannot be accepted, or None."""
    if "\x00" in scope["path"]:
        return "The path contains a NUL character."
    query: bytes = scope.get("query_string", b"")
    if b"%00" in query or b"\x00" in query:
        for name, value in parse_qsl(query.decode("latin-1"), keep_blank_values=True):
            if "\x00" in name:
                return "A query parameter name contains a NUL character."
            if "\x00" in value:
                return f"The query parameter `{name}` contains a NUL character."
    for name, value in scope["headers"]:
        if b"\x00" in value:
            return f"The header `{name.decode('latin-1')}` contains a NUL character."
    return None


def refusal_body(path: str, detail: str) -> dict[str, str]:
    """The error body for a boundary refusal: upstream's shape on the compatible surface
    (`error` is the sentence), ours elsewhere."""
    if path.startswith(COMPAT_PREFIXES):
        return {"error": detail, "detail": detail}
    return {"error": InvalidInput.__name__, "detail": detail}


# --- Forwarded addresses -------------------------------------------------------------------


class TrustedProxies:
    """Peers whose `X-Forwarded-For`/`X-Forwarded-Proto` are believed (FORWARDED_ALLOW_IPS:
    addresses and networks, or `*`)."""

    def __init__(self, spec: str) -> None:
        items = [item.strip() for item in spec.split(",") if item.strip()]
        self.everyone = "*" in items
        self.networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        for item in items:
            if item != "*":
                try:
                    self.networks.append(ipaddress.ip_network(item, strict=False))
                except ValueError:
                    raise ValueError(f"FORWARDED_ALLOW_IPS: {item!r} is not an address") from None
        self._cache: dict[str, bool] = {}

    def __contains__(self, host: str) -> bool:
        if self.everyone:
            return True
        known = self._cache.get(host)
        if known is None:
            address = parse_ip(host)
            known = address is not None and any(address in network for network in self.networks)
            if len(self._cache) < 1024:
                self._cache[host] = known
        return known


def parse_ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """An IP address written alone (IPv6 possibly in brackets), or None."""
    text = text.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    if not text or len(text) > 45:
        return None
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    # A zone (`fe80::1%eth0`) is meaningless beyond this host, and INET refuses it.
    return None if isinstance(address, ipaddress.IPv6Address) and address.scope_id else address


def apply_forwarded(scope: Scope, trusted: TrustedProxies) -> None:
    """Replace the scope's client (and scheme) with what a trusted peer forwarded.

    The client is the nearest address in `X-Forwarded-For` that is not itself a trusted
    proxy. A header with anything but IP addresses in it (`unknown`, `300.1.1.1`, a port)
    is ignored as a whole: the peer's own address stays. Nothing unparsed ever reaches an
    INET column this way."""
    client = scope.get("client")
    if not client or client[0] not in trusted:
        return
    forwarded_for: list[bytes] = []
    proto: bytes | None = None
    for name, value in scope["headers"]:
        if name == b"x-forwarded-for":
            forwarded_for.append(value)
        elif name == b"x-forwarded-proto":
            proto = value
    if proto is not None:
        scheme = proto.decode("latin-1").strip().lower()
        if scheme in ("http", "https", "ws", "wss"):
            if scope["type"] == "websocket":
                scheme = scheme.replace("http", "ws")
            scope["scheme"] = scheme
    if not forwarded_for:
        return
    hops = b",".join(forwarded_for).decode("latin-1").split(",")
    addresses = [parse_ip(hop) for hop in hops]
    if any(address is None for address in addresses):
        return
    chosen = addresses[0]
    for address in reversed(addresses):
        if str(address) not in trusted:
            chosen = address
            break
    scope["client"] = (str(chosen), 0)


@functools.lru_cache(maxsize=4096)
def valid_ip(host: str | None) -> str | None:
    """`host` when it is an IP address (what an INET column takes), else None."""
    if host is None:
        return None
    address = parse_ip(host)
    return str(address) if address is not None else None


# --- FastAPI's own JSON bodies ---------------------------------------------------------------


class BoundaryRequest(Request):
    """A Request whose `json()` is `parse_json` (FastAPI decodes bodies through it)."""

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            try:
                self._json = parse_json(await self.body())
            except InvalidInput as exc:
                # FastAPI turns any other exception from here into a bare 400 without a
                # detail; its HTTPException is passed through to our handler.
                raise HTTPException(400, exc.message) from None
        return self._json


class BoundaryRoute(APIRoute):
    """The route class of every router (a test checks): handlers get a BoundaryRequest."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            return await handler(BoundaryRequest(request.scope, request.receive, request._send))

        return route


# --- Numbers and times as the document says them ---------------------------------------------


def _json_integer(value: object) -> object:
    """JSON Schema's integer: 3 and 3.0, never `true` or "3" (pydantic's lax mode takes
    both, so a schema-violating request would be accepted)."""
    if isinstance(value, bool) or isinstance(value, str):
        raise ValueError("must be an integer")
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _not_a_number(value: object) -> object:
    """A date or date-time given as text: pydantic alone takes `0.5` or `1700000000` as a
    Unix time, which the document (format date / date-time) does not allow."""
    if isinstance(value, str) and re.fullmatch(r"\s*[-+]?[\d.eE+-]+\s*", value):
        if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", value.strip()):
            raise ValueError("must be an ISO 8601 date or date-time, not a number")
    return value


# An integer as JSON Schema means it (request bodies), used after the field's constraints
# (so the document keeps them as minimum/maximum): `Annotated[int, Field(ge=1), JSON_INT]`.
JSON_INT = BeforeValidator(_json_integer)
# A date or date-time query parameter: ISO 8601 text only.
IsoTime = BeforeValidator(_not_a_number)
