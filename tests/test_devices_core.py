"""core/devices.py: user agent → device, IP → country (SPEC §7). Pure, no server."""

from __future__ import annotations

import ipaddress
import random
from pathlib import Path

import pytest

from bastion.core import devices

FIREFOX_UBUNTU = "Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0"
CHROME_WINDOWS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.0.0 Safari/537.36"
)
SAFARI_MAC = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.1 Safari/605.1.15"
)
IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1"
)
IPAD = (
    "Mozilla/5.0 (iPad; CPU OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.0 Mobile/15E148 Safari/604.1"
)
ANDROID_PHONE = (
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.0.0 Mobile Safari/537.36"
)
ANDROID_TABLET = (
    "Mozilla/5.0 (Linux; Android 14; SM-X710) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.0.0 Safari/537.36"
)


@pytest.mark.parametrize(
    ("ua", "name", "kind", "browser", "os"),
    [
        (FIREFOX_UBUNTU, "Firefox on Ubuntu", "desktop", "Firefox", "Ubuntu"),
        (CHROME_WINDOWS, "Chrome on Windows", "desktop", "Chrome", "Windows"),
        (SAFARI_MAC, "Safari on macOS", "desktop", "Safari", "macOS"),
        (IPHONE, "Mobile Safari on iOS", "mobile", "Mobile Safari", "iOS"),
        (IPAD, "Mobile Safari on iOS", "tablet", "Mobile Safari", "iOS"),
        (ANDROID_PHONE, "Chrome Mobile on Android", "mobile", "Chrome Mobile", "Android"),
        (ANDROID_TABLET, "Chrome on Android", "tablet", "Chrome", "Android"),
    ],
)
def test_user_agent_parsed_into_device(
    ua: str, name: str, kind: str, browser: str, os: str
) -> None:
    d = devices.parse_user_agent(ua)
    assert (d.device_name, d.device_type, d.browser, d.os) == (name, kind, browser, os)


@pytest.mark.parametrize("ua", [None, "", "   ", "python-httpx/0.27.0", "\x00\xff garbage"])
def test_unknown_user_agent_is_unknown_desktop(ua: str | None) -> None:
    d = devices.parse_user_agent(ua)
    assert d.device_type in ("desktop", "mobile", "tablet")
    assert d.os == "Unknown"
    assert d.device_name == "Unknown device" or d.device_name.endswith(" on Unknown")


def test_huge_user_agent_is_truncated_not_slow() -> None:
    d = devices.parse_user_agent("Mozilla/5.0 " + "A" * 100_000)
    assert len(d.device_name) <= 200 and len(d.browser) <= 100


@pytest.mark.parametrize(
    ("ip", "country"),
    [
        ("8.8.8.8", "United States"),
        ("81.2.69.160", "United Kingdom"),
        ("2a00:1450:4001:80b::200e", "Germany"),
        ("::ffff:8.8.8.8", "United States"),
    ],
)
def test_public_ip_located_to_country_offline(ip: str, country: str) -> None:
    assert devices.locate(ip) == country


@pytest.mark.parametrize(
    "ip",
    [
        "127.0.0.1",
        "::1",
        "10.1.2.3",
        "192.168.1.1",
        "172.16.0.1",
        "100.64.0.1",
        "169.254.1.1",
        "fe80::1",
        "fc00::1",
        "0.0.0.0",  # noqa: S104
        "not-an-ip",
        "",
        None,
    ],
)
def test_private_loopback_and_invalid_addresses_are_unknown(ip: str | None) -> None:
    assert devices.locate(ip) == "Unknown"


def test_describe_returns_session_columns() -> None:
    d = devices.describe(FIREFOX_UBUNTU, "127.0.0.1")
    assert d == {
        "device_name": "Firefox on Ubuntu",
        "device_type": "desktop",
        "browser": "Firefox",
        "os": "Ubuntu",
        "location": "Unknown",
    }


def test_compact_country_table_answers_like_geoip2fast(tmp_path: Path) -> None:
    """core/geoip_table.py gives geoip2fast's own answer for any address, IPv4 and IPv6,
    from a file built once and then reused; a damaged file is rebuilt."""
    from geoip2fast import GeoIP2Fast

    from bastion.core import geoip_table

    table = geoip_table.load(tmp_path)
    path = geoip_table.table_path(tmp_path)
    assert path.exists()
    built = path.stat().st_mtime_ns
    assert geoip_table.load(tmp_path).names == table.names
    assert path.stat().st_mtime_ns == built  # reused, not rebuilt

    reference = GeoIP2Fast(geoip2fast_data_file=geoip_table.DATA_FILE)
    rng = random.Random(7)
    checked = 0
    while checked < 3000:
        v6 = checked % 2 == 1
        addr = (
            ipaddress.IPv6Address((0x2 << 124) | rng.getrandbits(124))
            if v6
            else ipaddress.IPv4Address(rng.getrandbits(32))
        )
        if not addr.is_global:
            continue
        checked += 1
        r = reference.lookup(str(addr))
        public = not r.is_private and len(r.country_code or "") == 2
        expected = r.country_name if public and not r.country_name.startswith("<") else None
        assert table.country(int(addr), v6) == expected, addr

    path.write_bytes(b"garbage")
    assert geoip_table.load(tmp_path).country(int(ipaddress.ip_address("8.8.8.8")), False)
