"""geoip2fast's country data as a compact, memory-mapped table (docs/performance.md).

geoip2fast keeps its 790,000 IPv4 and IPv6 networks as Python ints in lists: about
47 MB in every worker process, a third of a worker's memory. The same ranges as
fixed-width arrays take 15 MB, and memory-mapped from a file they are shared by all
workers and paged in only where a lookup touches them (a binary search reads about
twenty entries).

The file is built from geoip2fast's own data (no download, same answers): by a child
process, so that the server process never holds the 47 MB, written to a cache
directory (core/devices.py: ``~/.cache/bastion``, else ``BASTION_DATA_DIR``) and renamed
into place, so workers starting together never read a
half-written file. Its name carries the geoip2fast data file's size and modification
time, so an upgraded package builds a new one.
"""

from __future__ import annotations

import bisect
import json
import mmap
import os
import subprocess
import sys
import tempfile
from array import array
from pathlib import Path
from typing import Any

MAGIC = b"BASTION-GEOIP-1\n"
MAX_IPV4 = 2**32 - 1
PRIVATE_CODES = 16  # geoip2fast: the first names are reserved and private ranges
DATA_FILE = "geoip2fast-ipv6.dat.gz"  # holds the IPv4 networks too


class _Wide:
    """A read-only sequence of 128-bit ints stored as high and low 64-bit halves,
    for ``bisect``."""

    def __init__(self, hi: Any, lo: Any) -> None:
        self.hi, self.lo = hi, lo

    def __len__(self) -> int:
        return len(self.hi)

    def __getitem__(self, i: int) -> int:
        return (int(self.hi[i]) << 64) | int(self.lo[i])


class CountryTable:
    """Range lookups over the mapped arrays: the network containing an address, and
    its country name."""

    def __init__(self, path: Path) -> None:
        with path.open("rb") as f:
            self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        if self._map[: len(MAGIC)] != MAGIC:
            raise ValueError("not a Bastion GeoIP table")
        end = self._map.find(b"\n", len(MAGIC))
        header = json.loads(self._map[len(MAGIC) : end])
        self.names: list[str] = header["names"]
        view = memoryview(self._map)
        arrays = {}
        for name, (offset, length, fmt) in header["arrays"].items():
            arrays[name] = view[offset : offset + length].cast(fmt)
        self._v4 = (arrays["v4_first"], arrays["v4_last"], arrays["v4_country"])
        self._v6 = (
            _Wide(arrays["v6_first_hi"], arrays["v6_first_lo"]),
            _Wide(arrays["v6_last_hi"], arrays["v6_last_lo"]),
            arrays["v6_country"],
        )

    def country(self, address: int, v6: bool) -> str | None:
        """The English country name, or None (private, reserved or not found)."""
        first, last, country = self._v6 if v6 else self._v4
        i = bisect.bisect_right(first, address) - 1
        if i < 0 or address > last[i]:
            return None
        index = int(country[i])
        if index < PRIVATE_CODES or index >= len(self.names):
            return None
        code, _, name = self.names[index].partition(":")
        if len(code) != 2 or not code.isalpha() or not name or name.startswith("<"):
            return None
        return name


def build(path: Path) -> None:
    """Write the table from geoip2fast's data (run in a child process: ``main``)."""
    import geoip2fast.geoip2fast as g
    from geoip2fast import GeoIP2Fast

    GeoIP2Fast(geoip2fast_data_file=DATA_FILE)
    out: dict[str, array[int]] = {
        "v4_first": array("I"),
        "v4_last": array("I"),
        "v6_first_hi": array("Q"),
        "v6_first_lo": array("Q"),
        "v6_last_hi": array("Q"),
        "v6_last_lo": array("Q"),
        "v4_country": array("H"),
        "v6_country": array("H"),
    }
    mask = 2**64 - 1
    for firsts, lengths, countries in zip(
        g.mainListFirstIP, g.mainListNetlength, g.mainListIDCountryCodes, strict=True
    ):
        for first, netlen, country in zip(firsts, lengths, countries, strict=True):
            if first <= MAX_IPV4:
                out["v4_first"].append(first)
                out["v4_last"].append(first + g.numIPsv4[netlen] - 1)
                out["v4_country"].append(country)
            else:
                last = first + g.numIPsv6[netlen] - 1
                out["v6_first_hi"].append(first >> 64)
                out["v6_first_lo"].append(first & mask)
                out["v6_last_hi"].append(last >> 64)
                out["v6_last_lo"].append(last & mask)
                out["v6_country"].append(country)
    # Offsets are relative to the start of the file; arrays are 8-byte aligned.
    layout: dict[str, tuple[int, int, str]] = {}
    names = list(g.mainListNamesCountry)
    probe = json.dumps({"names": names, "arrays": {k: (0, 0, "Q") for k in out}})
    offset = len(MAGIC) + len(probe) + 200  # room for the real offsets' digits
    offset += -offset % 8
    for key, arr in out.items():
        size = len(arr) * arr.itemsize
        layout[key] = (offset, size, arr.typecode)
        offset += size + (-size % 8)
    header = json.dumps({"names": names, "arrays": layout}).encode() + b"\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".geoip-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(MAGIC + header)
            for key, arr in out.items():
                f.seek(layout[key][0])
                arr.tofile(f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def table_path(cache_dir: Path) -> Path:
    """Where the table for the installed geoip2fast data lives."""
    import geoip2fast

    source = Path(geoip2fast.__file__).parent / DATA_FILE
    st = source.stat()
    return cache_dir / f"geoip-country-{st.st_size}-{int(st.st_mtime)}.bin"


def load(cache_dir: Path) -> CountryTable:
    """The table, built first by a child process when missing or unreadable."""
    path = table_path(cache_dir)
    try:
        return CountryTable(path)
    except (OSError, ValueError):
        pass
    subprocess.run(  # noqa: S603 - our own module, our own interpreter
        [sys.executable, "-m", "bastion.core.geoip_table", str(path)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    return CountryTable(path)


if __name__ == "__main__":
    build(Path(sys.argv[1]))
