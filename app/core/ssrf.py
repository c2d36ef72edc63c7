"""Relay URL checks against server-side request forgery.

http(s) only; the host is resolved and every address must be public (link-local and cloud
metadata addresses are refused always; loopback and private ranges only when
RELAY_ALLOW_PRIVATE_NETWORKS=true); RELAY_ALLOWED_HOSTS, when set, is an allowlist. The
relay connects to the address checked here (not a second lookup), so a DNS answer that
changes between check and use (rebinding) cannot redirect it.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from app.core.config import RelayUrlSettings
from app.core.errors import BadRequest

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Refused even when private networks are allowed: instance metadata and link-local.
ALWAYS_BLOCKED = [
    ipaddress.ip_network(n)
    for n in (
        "169.254.0.0/16",  # link-local, AWS/GCP/Azure metadata 169.254.169.254
        "fe80::/10",  # IPv6 link-local
        "fd00:ec2::254/128",  # AWS metadata over IPv6
        "100.100.100.200/32",  # Alibaba Cloud metadata
        "0.0.0.0/8",
        "::/128",
        "224.0.0.0/4",  # multicast
        "ff00::/8",
        "240.0.0.0/4",  # reserved
        "255.255.255.255/32",
    )
]
# Refused unless RELAY_ALLOW_PRIVATE_NETWORKS=true.
PRIVATE = [
    ipaddress.ip_network(n)
    for n in (
        "127.0.0.0/8",
        "::1/128",
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "100.64.0.0/10",  # carrier-grade NAT
        "fc00::/7",  # unique local
        "192.0.0.0/24",
        "198.18.0.0/15",
    )
]


class RelayUrlRefused(BadRequest):
    message = "The webhook URL is not allowed."


@dataclass(frozen=True)
class ResolvedUrl:
    url: str
    scheme: str
    host: str
    port: int
    address: str  # the checked IP the relay connects to


def check_address(address: IPAddress, settings: RelayUrlSettings) -> str | None:
    """Why `address` is refused, or None when it may be called."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if any(address in net for net in ALWAYS_BLOCKED):
        return "a link-local, metadata or reserved address"
    if any(address in net for net in PRIVATE) or not address.is_global:
        if not settings.allow_private_networks:
            return "a loopback or private-network address"
    return None


def _host_allowed(host: str, allowlist: Sequence[str]) -> bool:
    for entry in allowlist:
        if entry.startswith("*.") and (host.endswith(entry[1:]) or host == entry[2:]):
            return True
        if host == entry:
            return True
    return False


def _parse(url: str, settings: RelayUrlSettings) -> tuple[str, str, int]:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise RelayUrlRefused("The webhook URL is not a valid URL.") from None
    scheme = parts.scheme.lower()
    if scheme not in {"http", "https"}:
        raise RelayUrlRefused("The webhook URL must be http or https.")
    host = (parts.hostname or "").lower().rstrip(".")
    if not host:
        raise RelayUrlRefused("The webhook URL has no host.")
    if parts.username or parts.password:
        raise RelayUrlRefused("The webhook URL must not carry credentials.")
    allowlist = settings.allowed_hosts
    if allowlist and not _host_allowed(host, allowlist):
        raise RelayUrlRefused("The webhook URL's host is not in RELAY_ALLOWED_HOSTS.")
    return scheme, host, port or (443 if scheme == "https" else 80)


async def resolve_relay_url(url: str, settings: RelayUrlSettings) -> ResolvedUrl:
    """Check `url` and resolve its host; every resolved address must pass."""
    scheme, host, port = _parse(url, settings)
    try:
        literal: IPAddress | None = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    if literal is not None:
        addresses: list[IPAddress] = [literal]
    else:
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(
                host, port, type=socket.SOCK_STREAM
            )
        except (socket.gaierror, UnicodeError):
            raise RelayUrlRefused("The webhook URL's host does not resolve.") from None
        addresses = []
        for info in infos:
            raw = str(info[4][0]).split("%", 1)[0]
            addresses.append(ipaddress.ip_address(raw))
        if not addresses:
            raise RelayUrlRefused("The webhook URL's host does not resolve.")
    for address in addresses:
        reason = check_address(address, settings)
        if reason is not None:
            raise RelayUrlRefused(f"The webhook URL resolves to {reason}.")
    return ResolvedUrl(url=url, scheme=scheme, host=host, port=port, address=str(addresses[0]))


async def validate_relay_url(url: str, settings: RelayUrlSettings) -> None:
    """Refuse (400, RelayUrlRefused) a caller webhook URL we would not call."""
    await resolve_relay_url(url, settings)
