"""User agent → device, IP → location (SPEC §7). Pure: no I/O beyond loading the
offline databases shipped with the libraries, once and lazily.

- Browser, OS and device type come from ua-parser (the uap-core regexes). ua-parser has
  no notion of "device type", so it is derived: tablets first (iPad, Android without
  "Mobile", the generic tablet brands), then phones, else desktop. Bots and command-line
  clients count as desktop, the spec's three types being desktop, mobile and tablet.
- The country comes from geoip2fast's offline data (IPv4 and IPv6), kept as a compact
  memory-mapped table (core/geoip_table.py, built once from that data) and loaded on
  first use. Private, loopback, link-local and other non-global addresses are "Unknown" without
  a lookup, as is anything the database does not know.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
import subprocess
import tempfile
import threading
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import ua_parser

UNKNOWN = "Unknown"
MAX_UA = 512

_OS_NAMES = {"Mac OS X": "macOS", "Other": UNKNOWN}
_BROWSER_NAMES = {"Other": UNKNOWN}
_TABLET_UA = re.compile(r"iPad|Tablet|Kindle|Silk/|PlayBook|Nexus (7|9|10)\b", re.I)
_MOBILE_UA = re.compile(r"Mobi|iPhone|iPod|Android.*Mobile|Windows Phone|BlackBerry|Opera Mini")


@dataclass(frozen=True)
class Device:
    device_name: str
    device_type: str  # desktop, mobile or tablet
    browser: str
    os: str


def _family(value: Any, names: dict[str, str]) -> str:
    family = getattr(value, "family", None) or UNKNOWN
    return names.get(family, family)[:100]


def _device_type(ua: str, result: ua_parser.Result | ua_parser.PartialResult) -> str:
    device = result.device
    brand = (getattr(device, "brand", None) or "").lower()
    family = (getattr(device, "family", None) or "").lower()
    os_family = getattr(result.os, "family", None) or ""
    if "tablet" in brand or "ipad" in family or _TABLET_UA.search(ua):
        return "tablet"
    if os_family == "Android" and "Mobile" not in ua:
        return "tablet"  # Android's convention: phones say "Mobile", tablets do not
    if _MOBILE_UA.search(ua) or os_family in ("iOS", "Windows Phone", "BlackBerry OS"):
        return "mobile"
    return "desktop"


@lru_cache(maxsize=2048)
def parse_user_agent(user_agent: str | None) -> Device:
    """The device a User-Agent header describes; "Unknown" parts for anything else."""
    ua = (user_agent or "")[:MAX_UA]
    if not ua.strip():
        return Device(f"{UNKNOWN} device", "desktop", UNKNOWN, UNKNOWN)
    result = ua_parser.parse(ua)
    browser = _family(result.user_agent, _BROWSER_NAMES)
    os_name = _family(result.os, _OS_NAMES)
    if browser == UNKNOWN and os_name == UNKNOWN:
        name = f"{UNKNOWN} device"
    else:
        name = f"{browser} on {os_name}"
    return Device(name[:200], _device_type(ua, result), browser, os_name)


class _Geo:
    """The country table (core/geoip_table.py), loaded once per process on first use."""

    _lock = threading.Lock()
    _table: Any = None
    cache_dir: Path | None = None

    @classmethod
    def table(cls) -> Any:
        if cls._table is None:
            with cls._lock:
                if cls._table is None:
                    cls._table = cls._load()
        return cls._table

    @classmethod
    def _load(cls) -> Any:
        from bastion.core import geoip_table

        # The table depends only on the installed geoip2fast data, so one copy per user
        # serves every server and data directory; then DATA_DIR, then the temp directory
        # (a read-only image); failing all, no countries rather than a failure per request.
        places = [_user_cache_dir(), cls.cache_dir, Path(tempfile.gettempdir()) / "bastion-geoip"]
        for place in places:
            if place is None:
                continue
            try:
                return geoip_table.load(place)
            except (OSError, subprocess.SubprocessError):
                continue
        logging.getLogger("bastion.devices").warning(
            "GeoIP data could not be loaded: locations read Unknown"
        )
        return _NoCountries()


def _user_cache_dir() -> Path | None:
    try:
        base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    except RuntimeError:  # no home directory
        return None
    return Path(base) / "bastion"


class _NoCountries:
    def country(self, address: int, v6: bool) -> str | None:
        return None


def load_geoip(cache_dir: Path | None = None) -> None:
    """Load the offline country data now (called at start-up, off the event loop); the
    compact table is cached under ``cache_dir`` (BASTION_DATA_DIR)."""
    if cache_dir is not None:
        _Geo.cache_dir = cache_dir
    _Geo.table()


class _CityDatabase:
    """An optional MaxMind DB (``.mmdb``, e.g. GeoLite2-City) for city-level locations;
    geoip2fast's country data answers where it has no record."""

    reader: Any = None

    @classmethod
    def open(cls, path: str | None) -> None:
        if cls.reader is not None:
            cls.reader.close()
            cls.reader = None
        if path:
            import maxminddb

            cls.reader = maxminddb.open_database(path)

    @classmethod
    def locate(cls, addr: str) -> str | None:
        if cls.reader is None:
            return None
        try:
            record = cls.reader.get(addr)
        except ValueError:
            return None
        if not isinstance(record, dict):
            return None
        country = _english(record.get("country"))
        city = _english(record.get("city"))
        if city and country:
            return f"{city}, {country}"[:100]
        name = country or city
        return name[:100] if name else None


def _english(part: Any) -> str | None:
    if isinstance(part, dict) and isinstance(part.get("names"), dict):
        name = part["names"].get("en")
        return str(name) if name else None
    return None


def use_city_database(path: str | None) -> None:
    """Use a MaxMind DB file for lookups from now on (None: country data only)."""
    _CityDatabase.open(path)
    _described.cache_clear()


def locate(ip: str | None) -> str:
    """Country name for a public address; "Unknown" for private, loopback or unknown."""
    if not ip:
        return UNKNOWN
    try:
        addr = ipaddress.ip_address(ip.strip())
    except ValueError:
        return UNKNOWN
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    if not addr.is_global:
        return UNKNOWN
    city_level = _CityDatabase.locate(str(addr))
    if city_level:
        return city_level
    try:
        name = _Geo.table().country(int(addr), addr.version == 6)
    except Exception:  # noqa: BLE001 - a location is informative, never worth a failure
        return UNKNOWN
    return str(name)[:100] if name else UNKNOWN


def describe(user_agent: str | None, ip: str | None) -> dict[str, Any]:
    """The session columns for a sign-in: the ``flows.sessions.describe_device`` hook."""
    return dict(_described(user_agent, ip))


@lru_cache(maxsize=1024)
def _described(user_agent: str | None, ip: str | None) -> dict[str, Any]:
    """Sign-ins repeat the same browsers from the same addresses: parsed once each."""
    return {**asdict(parse_user_agent(user_agent)), "location": locate(ip)}
