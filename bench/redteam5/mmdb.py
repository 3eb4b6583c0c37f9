"""A small writer of MaxMind DB files (format 2.0, IPv4 tree, 32-bit records), enough for the
red team's own City, ASN and Anonymous-IP databases. Written from the published format
specification (maxmind.github.io/MaxMind-DB), not from any other file in this repository.
"""

from __future__ import annotations

import ipaddress
import struct
import time
from pathlib import Path
from typing import Any

Value = Any


def _ctrl(type_no: int, size: int) -> bytes:
    """Control byte(s) for a field of type `type_no` and payload size `size`."""
    if size < 29:
        first, extra = size, b""
    elif size < 29 + 256:
        first, extra = 29, bytes([size - 29])
    elif size < 285 + 65536:
        first, extra = 30, (size - 285).to_bytes(2, "big")
    else:
        first, extra = 31, (size - 65821).to_bytes(3, "big")
    if type_no <= 7:
        return bytes([(type_no << 5) | first]) + extra
    return bytes([first, type_no - 7]) + extra


def _uint(type_no: int, n: int) -> bytes:
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big") if n else b""
    return _ctrl(type_no, len(raw)) + raw


def encode(v: Value) -> bytes:
    if isinstance(v, bool):
        return _ctrl(14, int(v))
    if isinstance(v, str):
        raw = v.encode()
        return _ctrl(2, len(raw)) + raw
    if isinstance(v, float):
        return _ctrl(3, 8) + struct.pack(">d", v)
    if isinstance(v, int):
        if v < 0:
            return _ctrl(8, 4) + struct.pack(">i", v)
        if v < 1 << 32:
            return _uint(6, v)
        return _uint(9, v)
    if isinstance(v, dict):
        out = _ctrl(7, len(v))
        for k, x in v.items():
            out += encode(str(k)) + encode(x)
        return out
    if isinstance(v, list | tuple):
        out = _ctrl(11, len(v))
        for x in v:
            out += encode(x)
        return out
    raise TypeError(f"cannot encode {type(v).__name__}")


def _u16(n: int) -> bytes:
    return _ctrl(5, 2) + n.to_bytes(2, "big")


def write(path: Path, database_type: str, networks: list[tuple[str, dict[str, Value]]]) -> None:
    """`networks`: (CIDR, record) pairs, IPv4, not overlapping."""
    # The tree: node i = [left, right]; an int >= 0 is a node, ("d", offset) a data pointer,
    # None "not found".
    nodes: list[list[Any]] = [[None, None]]
    data = b""
    offsets: dict[bytes, int] = {}
    for cidr, record in networks:
        net = ipaddress.IPv4Network(cidr, strict=False)
        blob = encode(record)
        if blob not in offsets:
            offsets[blob] = len(data)
            data += blob
        bits = int(net.network_address)
        node = 0
        for depth in range(net.prefixlen):
            bit = (bits >> (31 - depth)) & 1
            if depth == net.prefixlen - 1:
                nodes[node][bit] = ("d", offsets[blob])
                break
            nxt = nodes[node][bit]
            if not isinstance(nxt, int):
                nodes.append([None, None])
                nxt = len(nodes) - 1
                nodes[node][bit] = nxt
            node = nxt
    count = len(nodes)

    def rec(x: Any) -> int:
        if x is None:
            return count
        if isinstance(x, int):
            return x
        return count + 16 + int(x[1])

    tree = b"".join(struct.pack(">II", rec(a), rec(b)) for a, b in nodes)
    meta = (_ctrl(7, 9) + encode("node_count") + _uint(6, count)
            + encode("record_size") + _u16(32) + encode("ip_version") + _u16(4)
            + encode("database_type") + encode(database_type)
            + encode("languages") + encode(["en"])
            + encode("binary_format_major_version") + _u16(2)
            + encode("binary_format_minor_version") + _u16(0)
            + encode("build_epoch") + _uint(9, int(time.time()))
            + encode("description") + encode({"en": f"refguard redteam5 {database_type}"}))
    path.write_bytes(tree + b"\x00" * 16 + data + b"\xab\xcd\xefMaxMind.com" + meta)
