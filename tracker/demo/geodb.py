"""The demo's geo databases: small MaxMind-format (.mmdb) files covering the demo's IP ranges
(tracker.demo.scenario), written at demo time, so its clicks carry countries and ASNs and its
click farm's datacenter range reads as hosting.

Illustrative data, not a geo database: each home network (a /8 of scenario.HOME_NETWORKS) is
given one country and one consumer ISP, the click farm's 34.64.0.0/10 is a cloud provider's
hosting range, the ring's 185.220.101.0/24 Tor exits. Real deployments point
REFGUARD_GEOIP_DIR at MaxMind GeoLite2/GeoIP2 or DB-IP lite files instead.

The writer is the minimum of the MaxMind DB format 2.0 (https://maxmind.github.io/MaxMind-DB/)
the demo needs, so a runtime install carries no test-only writer package: an IPv6 search tree
(IPv4 under ::/96, as MaxMind ships it) with 24-bit records, a data section of maps, strings,
doubles, booleans, arrays and unsigned integers, and the metadata. The maxminddb reader (C and
pure Python) reads it back in tests/e2e/test_demo.py.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import struct
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tracker.demo.scenario import HOME_NETWORKS
from tracker.settings import Settings

FOLDER = "demo-geoip"  # under the data dir
PREFIX = "refguard-demo-"
_MARKER = b"\xab\xcd\xefMaxMind.com"
_RECORD_BYTES = 3  # 24-bit records
_MAX_RECORD = 1 << 24

# country ISO -> (continent code, continent, country name, ASN, ISP)
_COUNTRIES: dict[str, tuple[str, str, str, int, str]] = {
    "US": ("NA", "North America", "United States", 7922, "Comcast Cable Communications, LLC"),
    "CA": ("NA", "North America", "Canada", 812, "Rogers Communications Canada Inc."),
    "GB": ("EU", "Europe", "United Kingdom", 2856, "British Telecommunications PLC"),
    "DE": ("EU", "Europe", "Germany", 3320, "Deutsche Telekom AG"),
    "FR": ("EU", "Europe", "France", 3215, "Orange"),
    "ES": ("EU", "Europe", "Spain", 3352, "Telefonica de Espana SAU"),
    "IT": ("EU", "Europe", "Italy", 3269, "Telecom Italia S.p.A."),
    "NL": ("EU", "Europe", "Netherlands", 1136, "KPN B.V."),
    "PL": ("EU", "Europe", "Poland", 5617, "Orange Polska Spolka Akcyjna"),
    "SE": ("EU", "Europe", "Sweden", 3301, "Telia Company AB"),
    "VN": ("AS", "Asia", "Vietnam", 45899, "VNPT Corp"),
}
# First octet of a home network -> its country (every one of scenario.HOME_NETWORKS).
HOME_COUNTRIES: dict[int, str] = {
    24: "US", 50: "US", 62: "DE", 67: "US", 71: "US", 73: "US", 76: "US", 77: "GB", 78: "FR",
    79: "IT", 80: "DE", 81: "GB", 82: "FR", 83: "ES", 84: "NL", 86: "GB", 87: "IT", 88: "ES",
    89: "PL", 90: "FR", 91: "DE", 92: "FR", 93: "IT", 94: "SE", 95: "ES", 98: "US", 99: "CA",
    109: "GB", 151: "IT", 174: "CA", 176: "DE", 178: "NL", 188: "PL", 217: "DE",
}
# The fraud's ranges (scenario.plan_click_farm, plan_ring): network -> (country, ASN, org, flags)
HOSTING = "34.64.0.0/10"  # the click farm's headless browsers
FRAUD_NETWORKS: dict[str, tuple[str, int, str, dict[str, bool]]] = {
    HOSTING: ("US", 396982, "GOOGLE-CLOUD-PLATFORM",
              {"is_anonymous": True, "is_hosting_provider": True}),
    "185.220.101.0/24": ("DE", 60729, "Stiftung Erneuerbare Freiheit",
                         {"is_anonymous": True, "is_tor_exit_node": True}),
    "45.83.12.0/24": ("VN", 45899, "VNPT Corp", {}),  # the farm's room of phones
}


# A search tree record: a node's index, ("data", offset in the data section), or nothing.
_Child = int | tuple[str, int] | None


class U16(int):
    """An unsigned integer stored as uint16 (the metadata's types are fixed by the format)."""


class U64(int):
    """An unsigned integer stored as uint64."""


def _control(kind: int, size: int) -> bytes:
    if size < 29:
        first, extra = size, b""
    elif size < 29 + 256:
        first, extra = 29, bytes([size - 29])
    elif size < 285 + 65_536:
        first, extra = 30, (size - 285).to_bytes(2, "big")
    else:
        first, extra = 31, (size - 65_821).to_bytes(3, "big")
    if kind <= 7:
        return bytes([(kind << 5) | first]) + extra
    return bytes([first, kind - 7]) + extra  # an extended type


def encode(value: object) -> bytes:
    """One value in the data section's encoding. Integers are uint32 unless typed U16 / U64."""
    if isinstance(value, bool):
        return _control(14, int(value))
    if isinstance(value, int):
        kind, limit = (5, 1 << 16) if isinstance(value, U16) else (
            (9, 1 << 64) if isinstance(value, U64) else (6, 1 << 32))
        if not 0 <= value < limit:
            raise ValueError(f"{value} does not fit its unsigned type")
        raw = value.to_bytes((value.bit_length() + 7) // 8, "big")
        return _control(kind, len(raw)) + raw
    if isinstance(value, float):
        return _control(3, 8) + struct.pack(">d", value)
    if isinstance(value, str):
        raw = value.encode()
        return _control(2, len(raw)) + raw
    if isinstance(value, Mapping):
        return _control(7, len(value)) + b"".join(encode(str(k)) + encode(v)
                                                   for k, v in value.items())
    if isinstance(value, list | tuple):
        return _control(11, len(value)) + b"".join(encode(v) for v in value)
    raise TypeError(f"cannot encode {type(value).__name__}")


def _bits(network: str) -> tuple[int, int]:
    """The network's address as 128 bits (IPv4 under ::/96) and its prefix length there."""
    net = ipaddress.ip_network(network)
    if net.version == 4:
        return int(net.network_address), net.prefixlen + 96
    return int(net.network_address), net.prefixlen


def write_mmdb(path: Path, database_type: str, records: Mapping[str, Mapping[str, Any]], *,
               description: str) -> Path:
    """Write one database (networks must not overlap), beside `path` then renamed into place
    (a reader never sees half a file)."""
    data = bytearray()
    offsets: dict[bytes, int] = {}
    nodes: list[list[_Child]] = [[None, None]]
    for network, record in records.items():
        raw = encode(record)
        if raw not in offsets:
            offsets[raw] = len(data)
            data += raw
        address, length = _bits(network)
        if length == 0:
            raise ValueError(f"{network}: a network must have a prefix")
        node = 0
        for depth in range(length):
            bit = (address >> (127 - depth)) & 1
            child = nodes[node][bit]
            if depth == length - 1:
                if child is not None:
                    raise ValueError(f"{network} overlaps another network")
                nodes[node][bit] = ("data", offsets[raw])
            elif child is None:
                nodes.append([None, None])
                nodes[node][bit] = node = len(nodes) - 1
            elif isinstance(child, tuple):
                raise ValueError(f"{network} overlaps another network")
            else:
                node = child
    count = len(nodes)

    def record_value(child: _Child) -> int:
        if child is None:
            return count
        if isinstance(child, tuple):
            return count + 16 + child[1]
        return child

    tree = bytearray()
    for left, right in nodes:
        for child in (left, right):
            value = record_value(child)
            if value >= _MAX_RECORD:
                raise ValueError("the database is too large for 24-bit records")
            tree += value.to_bytes(_RECORD_BYTES, "big")
    metadata = {
        "binary_format_major_version": U16(2), "binary_format_minor_version": U16(0),
        "build_epoch": U64(int(time.time())), "database_type": database_type,
        "description": {"en": description}, "ip_version": U16(6), "languages": ["en"],
        "node_count": count, "record_size": U16(8 * _RECORD_BYTES),
    }
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(bytes(tree) + bytes(16) + bytes(data) + _MARKER + encode(metadata))
    os.replace(tmp, path)
    return path


def _names(en: str) -> dict[str, str]:
    return {"en": en}


def _city_record(iso: str) -> dict[str, Any]:
    continent_code, continent, country, _asn, _org = _COUNTRIES[iso]
    node = {"iso_code": iso, "names": _names(country)}
    return {"continent": {"code": continent_code, "names": _names(continent)},
            "country": node, "registered_country": node}


def _asn_record(asn: int, org: str) -> dict[str, Any]:
    return {"autonomous_system_number": asn, "autonomous_system_organization": org}


def write_demo_databases(folder: Path) -> list[Path]:
    """The demo's City, ASN and Anonymous-IP databases in `folder` (created if need be)."""
    folder.mkdir(parents=True, exist_ok=True)
    city: dict[str, dict[str, Any]] = {}
    asn: dict[str, dict[str, Any]] = {}
    anonymous: dict[str, dict[str, Any]] = {}
    for octet in HOME_NETWORKS:
        iso = HOME_COUNTRIES[octet]
        city[f"{octet}.0.0.0/8"] = _city_record(iso)
        asn[f"{octet}.0.0.0/8"] = _asn_record(*_COUNTRIES[iso][3:])
    for network, (iso, number, org, flags) in FRAUD_NETWORKS.items():
        city[network] = _city_record(iso)
        asn[network] = _asn_record(number, org)
        if flags:
            anonymous[network] = flags
    note = "refguard demo data (illustrative, not a geo database)"
    return [write_mmdb(folder / f"{PREFIX}{kind}.mmdb", f"{PREFIX}{kind}", records,
                       description=note)
            for kind, records in (("City", city), ("ASN", asn), ("Anonymous-IP", anonymous))]


def demo_geo(settings: Settings) -> tuple[Settings, Path | None]:
    """Settings with geo databases: the user's REFGUARD_GEOIP_DIR when set (then None), else
    the demo's, written now under the data dir (and that folder)."""
    if settings.geoip_dir is not None:
        return settings, None
    folder = settings.data_dir / FOLDER
    write_demo_databases(folder)
    return dataclasses.replace(settings, geoip_dir=folder), folder
