"""Turns journal lines into click rows: client IP, geo, device, fingerprint, bot verdict.

Runs in the flusher (and the importer), never on the redirect path; every lookup is cached.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any

import orjson

from fraud.bots import BotDetector
from fraud.useragents import parse_user_agent
from geo.reader import GeoInfo, GeoReader, canonical_packed, ip_prefix
from tracker.clicks.journal import RawClick, RawSignals
from tracker.formats import MAX_UA, clean_text
from tracker.settings import IPNetwork

MAX_LANG = 256
MAX_REFERER = 2048
MAX_QUERY = 2048
MAX_HINT = 256
MAX_VISITOR = 64
ADDRESS_CACHE = 65536  # addresses the enricher keeps (Enricher._addresses)
FINGERPRINT_CACHE = 65536  # fingerprints the enricher keeps (Enricher._fingerprints)

# Order of the COPY into the staging table; tracker.clicks.flusher relies on it.
COLUMNS = (
    "program_id", "click_id", "ts", "link_id", "referrer_id", "code", "visitor_id",
    "new_visitor", "ip", "user_agent", "accept_language", "referer", "query", "client_hints",
    "fingerprint", "is_bot", "bot_rule", "is_duplicate", "source", "country", "region", "city",
    "asn", "as_org", "is_anonymous", "is_hosting", "ua_browser", "ua_os", "ua_device", "is_mobile",
    "awaiting_signals",
)
SIGNAL_COLUMNS = ("program_id", "click_id", "click_ms", "signals", "webdriver", "received_at")
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# What the enricher keeps of a device (Enricher._parse_device).
Device = tuple[str | None, str | None, str | None, str | None, str | None, str | None, bool, Any,
               tuple[bool, str | None]]


def _parse_ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    text = text.strip().strip('"')
    if text.startswith("["):  # Forwarded: for="[2001:db8::1]:4711"
        text = text[1 : text.find("]")] if "]" in text else text[1:]
    elif text.count(":") == 1:  # IPv4 with a port
        text = text.split(":", 1)[0]
    packed = canonical_packed(text)
    if packed is not None:
        return ipaddress.IPv4Address(packed)
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


class ClientIp:
    """The client address: the peer, unless the peer is a trusted proxy.

    Behind trusted proxies the hops a header lists are read right to left, skipping trusted
    proxies: the first hop that is not one is the client. `Forwarded` (RFC 7239) is read when it
    names any hop, else `X-Forwarded-For`: a proxy that sets the standard header means it, and
    an X-Forwarded-For next to it may be the client's own invention. Each header holds all its
    lines, joined in order (the redirect journals them so), since a proxy may add its own line
    after the client's. Garbage in a hop falls back to the last address that could be verified.
    """

    def __init__(self, trusted: tuple[IPNetwork, ...]) -> None:
        self.trusted = trusted

    def _is_trusted(self, addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        return any(addr in net for net in self.trusted)

    def resolve(self, peer: str, xff: str, forwarded: str) -> tuple[str, bytes] | None:
        """The client address as text and packed bytes (asyncpg encodes inet from bytes
        without parsing text again). Not cached: the enricher caches it with the rest of
        what an address gives."""
        if not self.trusted:
            # The common case, with no address object: a peer in canonical IPv4 text is its
            # own text.
            packed = canonical_packed(peer)
            if packed is not None:
                return peer, packed
        addr = _parse_ip(peer)
        if addr is None:
            return None
        if not self.trusted or not self._is_trusted(addr):
            return str(addr), addr.packed
        hops = forwarded_hops(forwarded) if forwarded else []
        if not hops and xff:
            hops = [h for h in (p.strip() for p in xff.split(",")) if h]
        for hop in reversed(hops):
            hop_addr = _parse_ip(hop)
            if hop_addr is None:
                break
            addr = hop_addr
            if not self._is_trusted(hop_addr):
                break
        return str(addr), addr.packed


def forwarded_hops(forwarded: str) -> list[str]:
    """The `for=` values of a Forwarded header (all its lines joined by commas), in order."""
    hops: list[str] = []
    for element in forwarded.split(","):
        for pair in element.split(";"):
            key, _, value = pair.strip().partition("=")
            if key.lower() == "for":
                hops.append(value)
    return hops


class Enricher:
    """Enrichment with four caches, since the same addresses and devices come back often: the
    address part (client IP behind proxies, geo, the IP's prefix) by the connection's peer and
    forwarding headers, emptied when the geo databases change; the device part (user agent,
    client hints, and the fingerprint's hash state after them) by the device headers; the
    fingerprint by that state and the address's prefix; and the bot verdict by the headers it
    reads and whether the address is a host's."""

    def __init__(self, secret_key: bytes, trusted: tuple[IPNetwork, ...],
                 bots: BotDetector | None = None, geo: GeoReader | None = None) -> None:
        self._secret_key = secret_key
        self._key = hashlib.blake2b(secret_key, digest_size=32).digest()
        # The fingerprint of a device (its hash state, kept with the device's columns) at an
        # address prefix (as bytes, kept with the address): a device comes back often from the
        # same network. A plain dict emptied when full, as the addresses: with many distinct
        # networks most clicks miss, and an LRU's bookkeeping of a miss was a third of the
        # hash it saved.
        self._fingerprints: dict[tuple[object, bytes], bytes] = {}
        self.client_ip = ClientIp(trusted)
        self.bots = bots or BotDetector()
        self.geo = geo or GeoReader(None)
        # What an address gives, by the peer alone when no forwarding header came (most
        # clicks), else by all three. A plain dict emptied when full rather than an LRU: with
        # many distinct addresses (browsers, not a load generator) most clicks miss, and an
        # LRU's bookkeeping of a miss cost as much as the resolution itself.
        self._addresses: dict[object, tuple[bytes | None, GeoInfo, bytes]] = {}
        self._device = lru_cache(maxsize=65536)(self._parse_device)
        # (is_bot, rule): a tuple the row unpacks. Only for a click with a purpose header or
        # from a hosting address: any other click's verdict is its user agent's, which the
        # device keeps (_parse_device).
        self._verdict = lru_cache(maxsize=65536)(self._verdict_of)
        self._geo_databases = self.geo.databases

    def __reduce__(self) -> tuple[object, ...]:
        """Sent to another process (the importer's workers) as its recipe: the same key,
        proxies and geo folder, with fresh caches and its own open databases there."""
        return (_rebuild, (self._secret_key, self.client_ip.trusted, self.geo.folder))

    def _device_hash(self, *device: str) -> Any:
        """The fingerprint's hash state after the device headers and the separator before the
        prefix: what a fingerprint of that device at any address starts from (the key's block
        and the headers' are hashed once a device rather than once a click). The fingerprint is
        a keyed hash of the device headers and the IP's /24 (/48), joined by NULs: stable for a
        device, meaningless without the server's secret."""
        material = "\x00".join((*device, "")).encode("utf-8", "surrogateescape")
        return hashlib.blake2b(material, key=self._key, digest_size=16)

    @staticmethod
    def _fingerprint(device_hash: Any, prefix: bytes) -> bytes:
        """The fingerprint of the device whose _device_hash is given, at `prefix` (its UTF-8
        bytes, surrogates escaped, as the address cache keeps them)."""
        h = device_hash.copy()
        h.update(prefix)
        digest: bytes = h.digest()
        return digest

    def _remember(self, key: object, peer: str, xff: str, forwarded: str
                  ) -> tuple[bytes | None, GeoInfo, bytes]:
        """_resolve_address of an address the cache does not hold (Enricher.row looked it up
        by `key`), kept under `key` (the cache emptied when full)."""
        if len(self._addresses) >= ADDRESS_CACHE:
            self._addresses.clear()
        found = self._addresses[key] = self._resolve_address(peer, xff, forwarded)
        return found

    def _resolve_address(self, peer: str, xff: str, forwarded: str
                         ) -> tuple[bytes | None, GeoInfo, bytes]:
        """The client IP (packed), its place, and its prefix as the bytes the fingerprint
        hashes."""
        if not xff and not forwarded and not self.client_ip.trusted:
            # The common case, in one call: an untrusted peer in canonical IPv4 text is the
            # client, its own text, and its prefix the text before the last dot (ip_prefix).
            packed = canonical_packed(peer)
            if packed is not None:
                prefix = peer.rsplit(".", 1)[0]
                return packed, self.geo.lookup(peer, prefix), prefix.encode()
        resolved = self.client_ip.resolve(peer, xff, forwarded)
        ip, packed_ip = resolved if resolved is not None else (None, None)
        prefix = ip_prefix(ip)
        return packed_ip, self.geo.lookup(ip, prefix), prefix.encode("utf-8", "surrogateescape")

    def _parse_device(self, user_agent: str, accept_language: str, sec_ch_ua: str,
                      sec_ch_ua_mobile: str, sec_ch_ua_platform: str) -> Device:
        """The device columns: user_agent, accept_language, client_hints, then ua_browser,
        ua_os, ua_device, is_mobile; then the device's hash state (_device_hash), and last the
        bot verdict (is_bot, rule) of a click of it without a purpose header from an address
        that is not a host's: its user agent's alone (BotDetector.classify reads the other
        headers only for those)."""
        device = parse_user_agent(user_agent)
        hints = None
        if sec_ch_ua or sec_ch_ua_mobile or sec_ch_ua_platform:
            # (orjson: a fifth of json.dumps' CPU, and the same jsonb once stored: only the
            # spaces and the escaping of non-ASCII characters differ in the text.)
            hints = orjson.dumps({
                "sec_ch_ua": clean_text(sec_ch_ua, MAX_HINT),
                "mobile": clean_text(sec_ch_ua_mobile, MAX_HINT),
                "platform": clean_text(sec_ch_ua_platform, MAX_HINT),
            }).decode()
        return (clean_text(user_agent, MAX_UA), clean_text(accept_language, MAX_LANG), hints,
                device.browser, device.os, device.device,
                device.mobile or sec_ch_ua_mobile == "?1",
                self._device_hash(user_agent, accept_language, sec_ch_ua, sec_ch_ua_mobile,
                                  sec_ch_ua_platform),
                self._verdict_of(user_agent, "", False, accept_language, ""))

    def _verdict_of(self, user_agent: str, purpose: str, hosting: bool, accept_language: str,
                    accept: str | None) -> tuple[bool, str | None]:
        verdict = self.bots.classify(user_agent, purpose=purpose, hosting=hosting,
                                     accept_language=accept_language, accept=accept)
        return verdict.is_bot, verdict.rule

    def row(self, raw: RawClick, *, source: str = "live") -> list[object]:
        """The click's row in COLUMNS order: a list, since the flusher flags duplicates in
        it (flusher.prepare_rows). Its `ts` is the journal's int, microseconds since the Unix
        epoch (UTC), not a datetime: the storing connections encode it so
        (queries.use_click_codecs), and the flusher compares and sorts ints."""
        if self.geo.databases is not self._geo_databases:
            # Reloaded: an address may now have another place.
            self._geo_databases = self.geo.databases
            self._addresses.clear()
        # Unpacked at once: reading 21 fields by name cost a tenth of the row.
        (ts_us, click_id, program_id, link_id, referrer_id, code, visitor_id, new_visitor, peer,
         xff, forwarded, ua, lang, referer, ch_ua, ch_mobile, ch_platform, purpose, accept,
         query, mode) = raw
        key: object = peer if not xff and not forwarded else (peer, xff, forwarded)
        address = self._addresses.get(key)
        if address is None:
            address = self._remember(key, peer, xff, forwarded)
        packed_ip, place, prefix = address
        (clean_ua, clean_lang, hints, browser, os_name, device, mobile, device_hash, verdict
         ) = self._device(ua, lang, ch_ua, ch_mobile, ch_platform)
        hosting = place.hosting
        # Imported clicks carry no Accept header (DESIGN section 6): unknown, not absent.
        is_bot, rule = (self._verdict(ua, purpose, hosting, lang,
                                      accept if source == "live" else None)
                        if purpose or hosting else verdict)
        key = (device_hash, prefix)
        fingerprint = self._fingerprints.get(key)
        if fingerprint is None:
            if len(self._fingerprints) >= FINGERPRINT_CACHE:
                self._fingerprints.clear()
            fingerprint = self._fingerprints[key] = self._fingerprint(device_hash, prefix)
        return [
            program_id,
            click_id,
            ts_us,
            link_id,
            referrer_id,
            code,
            clean_text(visitor_id, MAX_VISITOR),
            new_visitor,
            packed_ip,
            clean_ua,
            clean_lang,
            clean_text(referer, MAX_REFERER),
            clean_text(query, MAX_QUERY),
            hints,
            fingerprint,
            is_bot,
            rule,
            False,
            source,
            place.country,
            place.region,
            place.city,
            place.asn,
            place.as_org,
            place.anonymous,
            hosting,
            browser,
            os_name,
            device,
            mobile,
            mode == "page",
        ]

    def signal_row(self, raw: RawSignals) -> tuple[object, ...] | None:
        """A `click_signals` row, or None when the line does not hold sane signals."""
        try:
            signals = json.loads(raw.signals)
            click_ms = int(raw.click_id.replace("-", "")[:12], 16)
        except ValueError:
            return None
        if not isinstance(signals, dict):
            return None
        return (
            raw.program_id, raw.click_id, EPOCH + timedelta(milliseconds=click_ms),
            raw.signals, signals.get("wd") is True, EPOCH + timedelta(microseconds=raw.ts_us),
        )

    def fingerprint_with_signals(self, header_fingerprint: bytes, signals: dict[str, object]
                                 ) -> bytes:
        """The device fingerprint refined by what the browser itself reported."""
        stable = {k: signals.get(k) for k in ("tz", "tzo", "sw", "sh", "dpr", "cd", "langs",
                                              "canvas", "hc", "plat")}
        material = header_fingerprint + json.dumps(stable, sort_keys=True).encode()
        return hashlib.blake2b(material, key=self._key, digest_size=16).digest()


def _rebuild(secret_key: bytes, trusted: tuple[IPNetwork, ...], geo_folder: Path | None
             ) -> Enricher:
    return Enricher(secret_key, trusted, geo=GeoReader(geo_folder))
