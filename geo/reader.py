"""Lookups over a folder of MaxMind-format databases (GeoLite2 / GeoIP2 / DB-IP lite).

Each file is optional. Records are read by the published MaxMind DB layouts, whatever the file's
vendor: `country.iso_code` (else `registered_country`), `subdivisions[0]`, `city.names.en`,
`autonomous_system_number` / `autonomous_system_organization` (ASN databases, or `traits.*` in
Enterprise/ISP ones), and the Anonymous-IP flags `is_anonymous`, `is_anonymous_vpn`,
`is_hosting_provider`, `is_public_proxy`, `is_residential_proxy`, `is_tor_exit_node` (top level,
or under `traits` in Enterprise). The same fields from several files are merged, City before
Country.

Lookups never raise: a bad address or a missing database gives an empty `GeoInfo`. A corrupt file
found at start-up is a `GeoError` naming it; a corrupt replacement found later is logged and the
previous copy stays in use. Files are re-opened when they change (checked on an interval) and the
new set replaces the old one in a single assignment, so a lookup sees either the old or the new
databases, never a mix.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import shutil
import socket
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import maxminddb

log = logging.getLogger(__name__)

# Databases that carry location: a city database answers before a country one.
_LOCATION_RANK = {"city": 0, "enterprise": 0, "country": 1}
_ANON_FLAGS = (
    "is_anonymous", "is_anonymous_vpn", "is_hosting_provider", "is_public_proxy",
    "is_residential_proxy", "is_tor_exit_node",
)


class GeoError(RuntimeError):
    """A database file cannot be used; the message names it."""



def ip_prefix(ip: str | None) -> str:
    """/24 of an IPv4 address, /48 of an IPv6 one: the part of the address a device (or a
    household's network) keeps."""
    if not ip:
        return ""
    if ":" in ip:
        return str(ipaddress.ip_network(f"{ip}/48", strict=False).network_address)
    return ip.rsplit(".", 1)[0]

@dataclass(frozen=True, slots=True)
class GeoInfo:
    country: str | None = None
    region: str | None = None
    city: str | None = None
    asn: int | None = None
    as_org: str | None = None
    anonymous: bool = False
    hosting: bool = False
    vpn: bool = False
    tor: bool = False
    proxy: bool = False
    residential_proxy: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "country": self.country, "region": self.region, "city": self.city, "asn": self.asn,
            "as_org": self.as_org, "anonymous": self.anonymous, "hosting": self.hosting,
            "vpn": self.vpn, "tor": self.tor, "proxy": self.proxy,
            "residential_proxy": self.residential_proxy,
        }


EMPTY = GeoInfo()
NETWORK_CACHE = 65536  # prefixes GeoReader.lookup keeps (emptied when full)


@dataclass(frozen=True, slots=True)
class LoadedDatabase:
    path: Path
    database_type: str
    build_epoch: int
    mtime_ns: int
    size: int
    reader: Any = field(repr=False)

    @property
    def location_rank(self) -> int:
        kind = self.database_type.lower()
        for word, rank in _LOCATION_RANK.items():
            if word in kind:
                return rank
        return 9


def _open(path: Path) -> LoadedDatabase:
    """Open a private copy of `path`.

    The C reader maps the file into memory; a database overwritten in place (`cp new old`) would
    change under the mapping (or crash the process with SIGBUS if it shrank). A private, already
    unlinked copy cannot change, and a copy taken mid-write fails to open and is retried later.
    """
    copy = ""
    try:
        stat = path.stat()
        fd, copy = tempfile.mkstemp(prefix="refguard-geo-", suffix=".mmdb")
        with os.fdopen(fd, "wb") as out, path.open("rb") as src:
            shutil.copyfileobj(src, out, 1 << 20)
        reader = maxminddb.open_database(copy, maxminddb.MODE_AUTO)
        meta = reader.metadata()
        # Touch the tree once, so a file with a valid footer but a broken body fails here.
        reader.get("1.1.1.1" if meta.ip_version == 4 else "::1.1.1.1")
    except (OSError, ValueError, maxminddb.InvalidDatabaseError) as exc:
        raise GeoError(f"{path}: not a usable MaxMind database ({exc})") from None
    finally:
        if copy:
            with contextlib.suppress(OSError):
                os.unlink(copy)
    return LoadedDatabase(path, str(meta.database_type), int(meta.build_epoch),
                          stat.st_mtime_ns, stat.st_size, reader)


def _get(record: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(record, dict):
            return None
        record = record.get(key)
    return record


def _name(node: Any) -> str | None:
    names = _get(node, "names")
    if isinstance(names, dict):
        value = names.get("en") or next(iter(names.values()), None)
        return str(value) if value else None
    return None


def merge_record(info: dict[str, Any], record: dict[str, Any]) -> None:
    """Fold one database's record into `info` (fields already set win)."""
    country = _get(record, "country", "iso_code") or _get(record, "registered_country", "iso_code")
    if country and not info.get("country"):
        info["country"] = str(country)
    subdivisions = record.get("subdivisions")
    if isinstance(subdivisions, list) and subdivisions and not info.get("region"):
        sub = subdivisions[0]
        region = _get(sub, "iso_code") or _name(sub)
        if region:
            info["region"] = str(region)
    city = _name(record.get("city"))
    if city and not info.get("city"):
        info["city"] = city
    for source in (record, record.get("traits") or {}):
        asn = source.get("autonomous_system_number") if isinstance(source, dict) else None
        if isinstance(asn, int) and not info.get("asn"):
            info["asn"] = asn
        org = source.get("autonomous_system_organization") if isinstance(source, dict) else None
        if org and not info.get("as_org"):
            info["as_org"] = str(org)
        if isinstance(source, dict):
            for flag in _ANON_FLAGS:
                if source.get(flag) is True:
                    info[flag] = True


def _to_info(merged: dict[str, Any]) -> GeoInfo:
    return GeoInfo(
        country=merged.get("country"),
        region=merged.get("region"),
        city=merged.get("city"),
        asn=merged.get("asn"),
        as_org=merged.get("as_org"),
        anonymous=bool(merged.get("is_anonymous") or merged.get("is_anonymous_vpn")
                       or merged.get("is_public_proxy") or merged.get("is_tor_exit_node")
                       or merged.get("is_residential_proxy")),
        hosting=bool(merged.get("is_hosting_provider")),
        vpn=bool(merged.get("is_anonymous_vpn")),
        tor=bool(merged.get("is_tor_exit_node")),
        proxy=bool(merged.get("is_public_proxy")),
        residential_proxy=bool(merged.get("is_residential_proxy")),
    )


def _strict_ipv4_pton() -> bool:
    """Whether this C library's inet_pton reads IPv4 only in its canonical text (glibc's and
    musl's do: four decimal parts of 0 to 255 without leading zeros, nothing around them), so
    that what it accepts needs no inet_ntop back to be known canonical."""
    for text in ("01.2.3.4", "1.2.3.04", "00.0.0.0", "1.2.3.4 ", " 1.2.3.4", "0x1.2.3.4",
                 "1.2.3", "1.2.3.4.5", "1.2.3.256", "1.2.3.+4"):
        try:
            socket.inet_pton(socket.AF_INET, text)
        except (OSError, ValueError):
            continue
        return False
    return True


_STRICT_IPV4 = _strict_ipv4_pton()


def canonical_packed(text: str, family: int = socket.AF_INET) -> bytes | None:
    """The packed address when `text` is the canonical text of an address of `family` (what
    `ip_address` prints; read in C, several times as fast as `ip_address`: the cost of a
    first-seen address in the flusher), else None. IPv4 text that a strict inet_pton accepts
    is canonical already (_strict_ipv4_pton: a third of this call for a new address)."""
    try:
        packed = socket.inet_pton(family, text)
    except (OSError, ValueError):  # (ValueError: a NUL in the text)
        return None
    if family == socket.AF_INET and _STRICT_IPV4:
        return packed
    return packed if socket.inet_ntop(family, packed) == text else None


def _address(ip: str) -> str | ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """What the readers are asked for `ip`: the text itself when it is the canonical text of
    an address (the C reader parses that text as `ip_address` would, and faster), else the
    address `ip_address` reads in it; None when it holds none."""
    if canonical_packed(ip) is not None or canonical_packed(ip, socket.AF_INET6) is not None:
        return ip
    try:
        return ipaddress.ip_address(ip.strip())
    except ValueError:
        return None


class GeoReader:
    """All `.mmdb` files of a folder, hot reload. Lookups of an address are not cached here:
    the enricher caches what an address gives, geo included (a second cache of the same
    addresses cost a first-seen address more than it saved); what is kept here is the answer
    for a whole /24 (/48) that every database answers alike (lookup's `prefix`), for the
    distinct addresses of one network."""

    def __init__(self, folder: Path | None, *, check_interval_s: float = 5.0) -> None:
        self.folder = folder
        self.check_interval_s = check_interval_s
        self._databases: tuple[LoadedDatabase, ...] = ()
        self._checked = 0.0
        self._lock = threading.Lock()  # one reloader at a time; lookups never take it
        # Answers by address prefix, for the databases they came from (lookup's `prefix`).
        self._networks: tuple[tuple[LoadedDatabase, ...], dict[str, GeoInfo]] = ((), {})
        if folder is not None:
            self._databases = self._load_all(strict=True)
            self._checked = time.monotonic()

    @property
    def databases(self) -> tuple[LoadedDatabase, ...]:
        return self._databases

    def _files(self) -> list[Path]:
        assert self.folder is not None  # noqa: S101 (only called with a folder)
        try:
            names = sorted(os.listdir(self.folder))
        except OSError as exc:
            raise GeoError(f"{self.folder}: cannot list it ({exc.strerror})") from None
        return [self.folder / n for n in names if n.endswith(".mmdb")]

    def _load_all(self, *, strict: bool) -> tuple[LoadedDatabase, ...]:
        previous = {db.path: db for db in self._databases}
        loaded: list[LoadedDatabase] = []
        for path in self._files():
            old = previous.get(path)
            try:
                stat = path.stat()
            except OSError:
                continue
            if old is not None and (old.mtime_ns, old.size) == (stat.st_mtime_ns, stat.st_size):
                loaded.append(old)
                continue
            try:
                loaded.append(_open(path))
            except GeoError as exc:
                if strict:
                    raise
                log.error("%s; keeping the previous copy", exc)
                if old is not None:
                    loaded.append(old)
        loaded.sort(key=lambda d: (d.location_rank, d.path.name))
        return tuple(loaded)

    def maybe_reload(self, *, force: bool = False) -> bool:
        """Re-open changed files; True when the set of databases changed."""
        if self.folder is None:
            return False
        now = time.monotonic()
        if not force and now - self._checked < self.check_interval_s:
            return False
        if not self._lock.acquire(blocking=False):
            return False
        try:
            self._checked = now
            try:
                fresh = self._load_all(strict=False)
            except GeoError as exc:
                log.error("%s", exc)
                return False
            if fresh == self._databases:
                return False
            self._databases = fresh
            log.info("geo databases reloaded: %s", ", ".join(d.path.name for d in fresh))
            return True
        finally:
            self._lock.release()

    def lookup(self, ip: str | None, prefix: str | None = None) -> GeoInfo:
        """What the databases say of `ip`; empty for a bad address or no databases.

        `prefix`, when given, is `ip_prefix(ip)` (the enricher has it already): the answer is
        then kept for that /24 (/48) when every database answered for a network at least that
        wide, since each address of it gets the very same records, and the next address of
        the network is answered without asking them (many distinct addresses of one carrier's
        or provider's block). A database that holds a narrower network there, or that failed,
        leaves the prefix uncached: its addresses are asked one by one, as without `prefix`."""
        databases = self._databases  # (one set, should a reload replace it meanwhile)
        if not ip or not databases:
            return EMPTY
        networks: dict[str, GeoInfo] = {}
        if prefix is not None:
            cached_for, networks = self._networks
            if cached_for is not databases:  # (reloaded: places may have moved)
                networks = {}
                self._networks = (databases, networks)
            info = networks.get(prefix)
            if info is not None:
                return info
        address = _address(ip)
        if address is None:
            return EMPTY
        merged: dict[str, Any] = {}
        widest = 48 if ":" in ip else 24  # (the prefix lengths a network of `prefix` may have)
        same = prefix is not None
        for database in databases:
            try:
                record, length = database.reader.get_with_prefix_len(address)
            except (ValueError, maxminddb.InvalidDatabaseError, OSError) as exc:
                # An IPv6 address in an IPv4-only file, or a file damaged in place.
                log.debug("lookup of %s in %s failed: %s", ip, database.path.name, exc)
                same = False
                continue
            if length > widest:
                same = False
            if isinstance(record, dict):
                merge_record(merged, record)
        info = _to_info(merged) if merged else EMPTY
        if same and prefix is not None:
            if len(networks) >= NETWORK_CACHE:
                networks.clear()
            networks[prefix] = info
        return info

    def ages_s(self) -> dict[str, float]:
        """Age of each loaded database (now minus its build time), by file name."""
        now = time.time()
        return {d.path.name: max(0.0, now - d.build_epoch) for d in self._databases}

    def close(self) -> None:
        for database in self._databases:
            try:
                database.reader.close()
            except (OSError, ValueError):
                log.debug("closing %s failed", database.path)
        self._databases = ()
