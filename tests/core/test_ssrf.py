"""Relay URL checks: schemes, metadata and private addresses, the allowlist."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from app.core.config import Settings
from app.core.ssrf import RelayUrlRefused, resolve_relay_url, validate_relay_url

ALWAYS_REFUSED = [
    "http://169.254.169.254/latest/meta-data/",
    "http://[fd00:ec2::254]/latest/meta-data/",
    "http://[fe80::1]/",
    "http://100.100.100.200/",
    "http://0.0.0.0:8080/",
    "http://[::ffff:169.254.169.254]/",
    "ftp://example.com/hook",
    "file:///etc/passwd",
    "gopher://127.0.0.1:6379/",
    "http://user:pass@example.com/",
    "http:///nohost",
]
PRIVATE = [
    "http://127.0.0.1:8000/hook",
    "http://localhost/hook",
    "http://10.1.2.3/",
    "http://192.168.1.1/",
    "http://172.16.0.1/",
    "http://[::1]/",
    "http://[fc00::1]/",
    "http://100.64.0.1/",
]


@pytest.mark.parametrize("url", ALWAYS_REFUSED + PRIVATE)
async def test_refused_by_default(make_settings: Callable[..., Settings], url: str) -> None:
    with pytest.raises(RelayUrlRefused) as info:
        await validate_relay_url(url, make_settings().relay_urls)
    assert info.value.status_code == 400


@pytest.mark.parametrize("url", ALWAYS_REFUSED)
async def test_metadata_refused_even_with_private_allowed(
    make_settings: Callable[..., Settings], url: str
) -> None:
    with pytest.raises(RelayUrlRefused):
        await validate_relay_url(url, make_settings(relay_allow_private_networks=True).relay_urls)


@pytest.mark.parametrize("url", PRIVATE)
async def test_private_allowed_when_configured(
    make_settings: Callable[..., Settings], url: str
) -> None:
    resolved = await resolve_relay_url(
        url, make_settings(relay_allow_private_networks=True).relay_urls
    )
    assert resolved.address


async def test_public_address_passes_and_allowlist_applies(
    make_settings: Callable[..., Settings],
) -> None:
    await validate_relay_url("https://93.184.215.14/hook", make_settings().relay_urls)
    allow = make_settings(relay_allowed_hosts="hooks.example.com,*.trusted.test").relay_urls
    with pytest.raises(RelayUrlRefused):
        await validate_relay_url("https://93.184.215.14/hook", allow)
    with pytest.raises(RelayUrlRefused):
        await validate_relay_url("https://evil.example.org/", allow)


async def test_unresolvable_host_refused(make_settings: Callable[..., Settings]) -> None:
    with pytest.raises(RelayUrlRefused):
        await validate_relay_url("https://no-such-host.invalid/hook", make_settings().relay_urls)
