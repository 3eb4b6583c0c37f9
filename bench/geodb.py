"""Small but realistic MaxMind-format databases for bench/redirect.py (`--geoip on|both`).

    .venv/bin/python -m bench.geodb FOLDER      # write them into FOLDER and look a few IPs up

Three files in the published record layouts (the same as tests/test_geo.py, written with
mmdb-writer): GeoLite2-City, GeoLite2-ASN and GeoIP2-Anonymous-IP, IPv6 trees with the IPv4 space
under ::/96 as MaxMind ships them. Each covers a few thousand networks drawn with a fixed seed from
public-looking IPv4 and IPv6 space (so the files, their tree depth and their size are those of a
real, if thin, database), plus 127.0.0.0/8 in City and ASN, so the bench's loopback clicks get a
country, region, city and ASN. Loopback is left out of Anonymous-IP on purpose: flagging it as a
hosting range would turn the bot rules on and change what the bench measures.
"""

from __future__ import annotations

import argparse
import ipaddress
import random
import sys
import time
from pathlib import Path
from typing import Any

from mmdb_writer import MmdbF64, MmdbU16, MmdbU32, MMDBWriter
from netaddr import IPSet

from geo.reader import GeoReader

SEED = 20_261_123
LOOPBACK = "127.0.0.0/8"
FILES = {
    "city": ("GeoLite2-City.mmdb", "GeoLite2-City"),
    "asn": ("GeoLite2-ASN.mmdb", "GeoLite2-ASN"),
    "anonymous": ("GeoIP2-Anonymous-IP.mmdb", "GeoIP2-Anonymous-IP"),
}

# (continent, country ISO, country name, EU, subdivision ISO, subdivision name, city, time zone,
#  latitude, longitude, postal code prefix)
PLACES: tuple[tuple[str, str, str, bool, str, str, str, str, float, float, str], ...] = (
    ("EU", "GB", "United Kingdom", False, "ENG", "England", "London", "Europe/London",
     51.5072, -0.1276, "EC1"),
    ("EU", "GB", "United Kingdom", False, "SCT", "Scotland", "Edinburgh", "Europe/London",
     55.9533, -3.1883, "EH1"),
    ("EU", "DE", "Germany", True, "BE", "Land Berlin", "Berlin", "Europe/Berlin",
     52.52, 13.405, "101"),
    ("EU", "DE", "Germany", True, "BY", "Bavaria", "Munich", "Europe/Berlin",
     48.1351, 11.582, "803"),
    ("EU", "FR", "France", True, "IDF", "Ile-de-France", "Paris", "Europe/Paris",
     48.8566, 2.3522, "750"),
    ("EU", "NL", "Netherlands", True, "NH", "North Holland", "Amsterdam", "Europe/Amsterdam",
     52.3676, 4.9041, "101"),
    ("EU", "ES", "Spain", True, "MD", "Madrid", "Madrid", "Europe/Madrid",
     40.4168, -3.7038, "280"),
    ("EU", "PL", "Poland", True, "14", "Mazovia", "Warsaw", "Europe/Warsaw",
     52.2297, 21.0122, "00-"),
    ("NA", "US", "United States", False, "VA", "Virginia", "Ashburn", "America/New_York",
     39.0438, -77.4874, "201"),
    ("NA", "US", "United States", False, "CA", "California", "San Jose", "America/Los_Angeles",
     37.3382, -121.8863, "951"),
    ("NA", "US", "United States", False, "NY", "New York", "New York", "America/New_York",
     40.7128, -74.006, "100"),
    ("NA", "US", "United States", False, "TX", "Texas", "Dallas", "America/Chicago",
     32.7767, -96.797, "752"),
    ("NA", "CA", "Canada", False, "ON", "Ontario", "Toronto", "America/Toronto",
     43.6532, -79.3832, "M5V"),
    ("SA", "BR", "Brazil", False, "SP", "Sao Paulo", "Sao Paulo", "America/Sao_Paulo",
     -23.5558, -46.6396, "010"),
    ("AS", "JP", "Japan", False, "13", "Tokyo", "Tokyo", "Asia/Tokyo",
     35.6762, 139.6503, "100"),
    ("AS", "SG", "Singapore", False, "01", "Central Singapore", "Singapore", "Asia/Singapore",
     1.3521, 103.8198, "018"),
    ("AS", "IN", "India", False, "MH", "Maharashtra", "Mumbai", "Asia/Kolkata",
     19.076, 72.8777, "400"),
    ("OC", "AU", "Australia", False, "NSW", "New South Wales", "Sydney", "Australia/Sydney",
     -33.8688, 151.2093, "200"),
    ("AF", "ZA", "South Africa", False, "GP", "Gauteng", "Johannesburg",
     "Africa/Johannesburg", -26.2041, 28.0473, "200"),
)
CONTINENTS = {"EU": ("Europe", 6255148), "NA": ("North America", 6255149),
              "SA": ("South America", 6255150), "AS": ("Asia", 6255147),
              "OC": ("Oceania", 6255151), "AF": ("Africa", 6255146)}
AS_ORGS = (
    "AMAZON-02", "GOOGLE", "MICROSOFT-CORP-MSN-AS-BLOCK", "Deutsche Telekom AG", "Orange",
    "British Telecommunications PLC", "Comcast Cable Communications, LLC", "Vodafone GmbH",
    "Telefonica de Espana SAU", "Hetzner Online GmbH", "OVH SAS", "DIGITALOCEAN-ASN",
    "Cloudflare, Inc.", "Akamai International B.V.", "NTT Communications Corporation",
    "Reliance Jio Infocomm Limited", "Telstra Limited", "Rogers Communications Canada Inc.",
    "Claro NXT Telecomunicacoes Ltda", "Orange Polska Spolka Akcyjna", "KPN B.V.",
    "Liberty Global B.V.", "Charter Communications Inc", "Verizon Business",
)
# First 16 bits of real RIR IPv6 allocations (RIPE, ARIN, APNIC, LACNIC, AFRINIC).
V6_TOP = (0x2001, 0x2003, *range(0x2400, 0x2410), *range(0x2600, 0x2610), 0x2800, 0x2801,
          0x2803, *range(0x2A00, 0x2A10), 0x2C0F)
# First octets left out of the IPv4 draw: this network, private, CGNAT, loopback, link-local,
# documentation and multicast ranges.
V4_SKIP = {0, 10, 100, 127, 169, 172, 192, 198, 203}


def _names(en: str) -> dict[str, str]:
    return {"en": en, "de": en, "fr": en, "ja": en}


def _geoname_id(*parts: str) -> MmdbU32:
    return MmdbU32(sum((i + 1) * ord(c) for i, c in enumerate("".join(parts))) * 97 + 2_000_000)


def city_records() -> list[dict[str, Any]]:
    """One GeoLite2-City record per place, in MaxMind's published layout."""
    records = []
    for (cont, iso, country, eu, sub_iso, sub, city, tz, lat, lon, postal) in PLACES:
        cont_name, cont_id = CONTINENTS[cont]
        country_node: dict[str, Any] = {"geoname_id": _geoname_id(iso), "iso_code": iso,
                                        "names": _names(country)}
        if eu:
            country_node["is_in_european_union"] = True
        records.append({
            "city": {"geoname_id": _geoname_id(iso, city), "names": _names(city)},
            "continent": {"code": cont, "geoname_id": MmdbU32(cont_id),
                          "names": _names(cont_name)},
            "country": country_node,
            "location": {"accuracy_radius": MmdbU16(20), "latitude": MmdbF64(lat),
                         "longitude": MmdbF64(lon), "time_zone": tz},
            "postal": {"code": postal},
            "registered_country": country_node,
            "subdivisions": [{"geoname_id": _geoname_id(iso, sub_iso), "iso_code": sub_iso,
                              "names": _names(sub)}],
        })
    return records


def random_networks(rng: random.Random, v4: int, v6: int) -> list[str]:
    """Non-overlapping networks: IPv4 /16../24 in distinct /16s, IPv6 /32../48 in distinct /32s."""
    out: list[str] = []
    seen: set[tuple[int, int]] = set()
    while len(seen) < v4:
        a = rng.randint(1, 223)
        if a in V4_SKIP:
            continue
        b = rng.randint(0, 255)
        if (a, b) in seen:
            continue
        seen.add((a, b))
        plen = rng.choice((16, 18, 20, 22, 24, 24, 24))
        low = rng.getrandbits(16) & ~((1 << (32 - plen)) - 1) & 0xFFFF
        out.append(str(ipaddress.IPv4Network(((a << 24) | (b << 16) | low, plen))))
    seen6: set[tuple[int, int]] = set()
    while len(seen6) < v6:
        top, second = rng.choice(V6_TOP), rng.getrandbits(16)
        if (top, second) in seen6:
            continue
        seen6.add((top, second))
        plen = rng.choice((32, 36, 40, 44, 48, 48))
        low = rng.getrandbits(96) & ~((1 << (128 - plen)) - 1) & ((1 << 96) - 1)
        out.append(str(ipaddress.IPv6Network(((top << 112) | (second << 96) | low, plen))))
    return out


def write_db(path: Path, database_type: str, records: dict[str, Any]) -> Path:
    """One MaxMind DB file in the published record layout (also the tests' geo data), written
    beside `path` and renamed into place, as a real update lands."""
    writer = MMDBWriter(ip_version=6, ipv4_compatible=True, database_type=database_type,
                        languages=["en"],
                        description={"en": f"refguard generated {database_type}"})
    for network, record in records.items():
        writer.insert_network(IPSet([network]), record)
    tmp = path.with_suffix(".tmp")
    writer.to_db_file(str(tmp))
    tmp.replace(path)
    return path


def write_databases(folder: Path, *, v4: int = 2500, v6: int = 1500,
                    seed: int = SEED) -> dict[str, Any]:
    """Write the three databases into `folder`; returns what was written (for the JSON)."""
    t0 = time.monotonic()
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    places = city_records()
    loopback_place = places[0]  # London
    city_db = {LOOPBACK: loopback_place}
    city_db.update({net: rng.choice(places) for net in random_networks(rng, v4, v6)})
    asn_db: dict[str, Any] = {LOOPBACK: {"autonomous_system_number": MmdbU32(64512),
                                         "autonomous_system_organization": "refguard bench"}}
    for net in random_networks(rng, v4, v6):
        org = rng.randrange(len(AS_ORGS))
        asn_db[net] = {"autonomous_system_number": MmdbU32(1000 + 7919 * org % 400_000),
                       "autonomous_system_organization": AS_ORGS[org]}
    flags = (
        {"is_anonymous": True, "is_anonymous_vpn": True},
        {"is_anonymous": True, "is_hosting_provider": True},
        {"is_anonymous": True, "is_anonymous_vpn": True, "is_hosting_provider": True},
        {"is_anonymous": True, "is_public_proxy": True},
        {"is_anonymous": True, "is_residential_proxy": True},
        {"is_anonymous": True, "is_tor_exit_node": True},
    )
    anon_db = {net: rng.choice(flags) for net in random_networks(rng, v4 // 2, v6 // 2)}
    written: dict[str, Any] = {}
    for key, records in (("city", city_db), ("asn", asn_db), ("anonymous", anon_db)):
        name, database_type = FILES[key]
        path = folder / name
        write_db(path, database_type, records)
        written[name] = {
            "database_type": database_type, "networks": len(records),
            "ipv4": sum(1 for n in records if ":" not in n),
            "ipv6": sum(1 for n in records if ":" in n),
            "bytes": path.stat().st_size,
        }
    # An address inside the last IPv4 and the last IPv6 network drawn for each database.
    samples: dict[str, str] = {}
    for key, records in (("city", city_db), ("asn", asn_db), ("anonymous", anon_db)):
        for version in (4, 6):
            net = next(n for n in reversed(records) if (":" in n) == (version == 6))
            samples[f"{key}_v{version}"] = str(ipaddress.ip_network(net)[1])
    return {"folder": str(folder), "seed": seed, "files": written, "samples": samples,
            "write_s": round(time.monotonic() - t0, 2)}


def check_databases(folder: Path, samples: dict[str, str]) -> dict[str, Any]:
    """Open the folder the way refguard does: loopback must get a country and an ASN (and no
    anonymity flag), and an address of a drawn IPv4 and IPv6 network of each file its answer."""
    reader = GeoReader(folder)
    try:
        loaded = {d.path.name for d in reader.databases}
        missing = {name for name, _ in FILES.values()} - loaded
        if missing:
            raise RuntimeError(f"geo databases not loaded: {sorted(missing)}")
        info = reader.lookup("127.0.0.1")
        if info.country is None or info.asn is None or info.anonymous or info.hosting:
            raise RuntimeError(f"127.0.0.1 should have a country and an ASN and no flags: {info}")
        for key, ip in samples.items():
            got = reader.lookup(ip)
            answered = {"city": got.city, "asn": got.asn, "anonymous": got.anonymous or None}
            if answered[key.rsplit("_", 1)[0]] is None:
                raise RuntimeError(f"{ip} ({key}) not found in the geo databases: {got}")
        return info.as_dict()
    finally:
        reader.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.geodb", description=__doc__)
    p.add_argument("folder", type=Path)
    args = p.parse_args(argv)
    written = write_databases(args.folder)
    for name, meta in written["files"].items():
        print(f"{name}: {meta['networks']} networks ({meta['ipv4']} IPv4, {meta['ipv6']} IPv6), "
              f"{meta['bytes']:,} bytes")
    print(f"written in {written['write_s']}s")
    print(f"127.0.0.1: {check_databases(args.folder, written['samples'])}")
    reader = GeoReader(args.folder)
    for key, ip in written["samples"].items():
        print(f"{ip} ({key}): {reader.lookup(ip).as_dict()}")
    reader.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
