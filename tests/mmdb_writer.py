"""A minimal MaxMind DB writer for tests: one IPv4 network mapped to one record.

Follows the MaxMind DB format spec 2.0 (24-bit records, a search tree, a 16-byte
separator, the data section, then the metadata marker and map), so the real
``maxminddb`` reader can open what it writes.
"""

from __future__ import annotations

import ipaddress
import time
from pathlib import Path
from typing import Any

METADATA_MARKER = b"\xab\xcd\xefMaxMind.com"


def _control(type_id: int, size: int) -> bytes:
    assert size < 29
    if type_id <= 7:
        return bytes([(type_id << 5) | size])
    return bytes([size, type_id - 7])  # extended type


def _uint(type_id: int, value: int) -> bytes:
    raw = value.to_bytes((value.bit_length() + 7) // 8, "big") if value else b""
    return _control(type_id, len(raw)) + raw


def encode(value: Any) -> bytes:
    if isinstance(value, str):
        raw = value.encode()
        return _control(2, len(raw)) + raw
    if isinstance(value, dict):
        out = _control(7, len(value))
        for k, v in value.items():
            out += encode(k) + encode(v)
        return out
    if isinstance(value, list):
        out = _control(11, len(value))
        for v in value:
            out += encode(v)
        return out
    if isinstance(value, tuple) and value[0] in ("u16", "u32", "u64"):
        return _uint({"u16": 5, "u32": 6, "u64": 9}[value[0]], value[1])
    raise TypeError(value)


def write(path: Path, network: str, record: dict[str, Any]) -> None:
    net = ipaddress.ip_network(network)
    assert net.version == 4
    bits = [(int(net.network_address) >> (31 - i)) & 1 for i in range(net.prefixlen)]
    node_count = len(bits)
    data_pointer = node_count + 16  # data offset 0
    tree = b""
    for depth, bit in enumerate(bits):
        nxt = depth + 1 if depth + 1 < node_count else data_pointer
        records = [node_count, node_count]  # node_count means "no data"
        records[bit] = nxt
        tree += records[0].to_bytes(3, "big") + records[1].to_bytes(3, "big")
    metadata = {
        "binary_format_major_version": ("u16", 2),
        "binary_format_minor_version": ("u16", 0),
        "build_epoch": ("u64", int(time.time())),
        "database_type": "Bastion-Test-City",
        "description": {"en": "test data"},
        "ip_version": ("u16", 4),
        "languages": ["en"],
        "node_count": ("u32", node_count),
        "record_size": ("u16", 24),
    }
    path.write_bytes(tree + b"\x00" * 16 + encode(record) + METADATA_MARKER + encode(metadata))


def city_record(city: str, country: str, iso: str) -> dict[str, Any]:
    return {
        "city": {"names": {"en": city}},
        "country": {"iso_code": iso, "names": {"en": country}},
    }
