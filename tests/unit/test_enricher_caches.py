"""The enricher's caches change nothing it computes: the fingerprint hashed in two steps (the
device's hash state, kept with the device, then the address prefix) is the keyed hash of all
the parts at once, and the address cache, keyed by the peer alone when no forwarding header
came and emptied when full, gives what resolving each click afresh gives."""

from __future__ import annotations

import hashlib
import ipaddress

from hypothesis import given, settings
from hypothesis import strategies as st

from fraud.bots import BotDetector
from tracker.clicks import enrich
from tracker.clicks.enrich import Enricher
from tracker.clicks.journal import RawClick

SECRET = b"k" * 32
BOTS = BotDetector()  # (its rules compiled once for every enricher here)
header = st.text(alphabet=st.characters(codec="utf-8") | st.sampled_from(["\udcff", "\x00"]),
                 max_size=40)


def keyed_hash(*parts: str) -> bytes:
    """The fingerprint as its definition reads: one keyed hash of the device headers and the
    prefix, joined by NULs."""
    key = hashlib.blake2b(SECRET, digest_size=32).digest()
    material = "\x00".join(parts).encode("utf-8", "surrogateescape")
    return hashlib.blake2b(material, key=key, digest_size=16).digest()


@given(st.lists(header, min_size=5, max_size=5), st.lists(header, min_size=1, max_size=3))
def test_the_two_step_fingerprint_is_the_keyed_hash_of_all_parts(device: list[str],
                                                                 prefixes: list[str]) -> None:
    enricher = Enricher(SECRET, (), BOTS)
    state = enricher._device_hash(*device)
    for prefix in prefixes:  # one state serves every address of the device
        assert (enricher._fingerprint(state, prefix.encode("utf-8", "surrogateescape"))
                == keyed_hash(*device, prefix))


def click(peer: str, xff: str = "", ua: str = "Mozilla/5.0 (X11; Linux x86_64) Firefox/120.0",
          lang: str = "en") -> RawClick:
    return RawClick(1_700_000_000_000_000, "0190-0000-7abc-8def-000000000001", 1, 2, 3, "c",
                    "v" * 24, True, peer, xff, "", ua, lang, "", "", "?1", "", "", "", "", "")


@settings(max_examples=50)
@given(st.lists(st.tuples(st.sampled_from(["10.0.0.1", "10.0.0.2", "192.0.2.7", "2001:db8::1",
                                           "::ffff:10.0.0.1", "bad"]),
                          st.sampled_from(["", "198.51.100.1", "198.51.100.1, 10.9.9.9"]),
                          st.sampled_from(["Mozilla/5.0 (iPhone) Safari/604.1", "curl/8.0",
                                           ""]),
                          st.sampled_from(["", "fr"])), max_size=30))
def test_the_cached_rows_are_the_rows_of_a_fresh_enricher(clicks: list[tuple[str, str, str, str]]
                                                          ) -> None:
    trusted = (ipaddress.ip_network("10.0.0.0/8"),)
    enricher = Enricher(SECRET, trusted, BOTS)
    old_size, enrich.ADDRESS_CACHE = enrich.ADDRESS_CACHE, 3  # emptied when full, often
    try:
        for peer, xff, ua, lang in clicks:
            raw = click(peer, xff, ua, lang)
            row = enricher.row(raw)
            assert row == Enricher(SECRET, trusted, BOTS).row(raw)
            assert row[enrich.COLUMNS.index("fingerprint")] == keyed_hash(
                ua, lang, "", "?1", "",
                enricher._resolve_address(peer, xff, "")[2].decode("utf-8", "surrogateescape"))
            assert len(enricher._addresses) <= 3
    finally:
        enrich.ADDRESS_CACHE = old_size


class HostingGeo:
    """A geo reader whose addresses ending in .7 are a host's (hosting=True)."""

    folder = None
    databases = object()

    def lookup(self, ip: str | None, prefix: str | None = None) -> enrich.GeoInfo:
        return enrich.GeoInfo(country="NL", hosting=bool(ip) and str(ip).endswith(".7"))


@settings(max_examples=80)
@given(st.lists(st.tuples(st.sampled_from(["10.0.0.1", "192.0.2.7", "198.51.100.7", "2001:db8::1"]),
                          st.sampled_from(["Mozilla/5.0 (iPhone) Safari/604.1", "curl/8.0", "",
                                           "Mozilla/5.0 (compatible; Googlebot/2.1)"]),
                          st.sampled_from(["", "fr"]),
                          st.sampled_from(["", "prefetch", "Prerender", "other"]),
                          st.sampled_from(["", "*/*", "text/html"]),
                          st.sampled_from(["live", "import"])), max_size=30))
def test_the_bot_verdict_is_the_detectors_for_every_purpose_address_and_source(
        clicks: list[tuple[str, str, str, str, str, str]]) -> None:
    """The verdict a device keeps (a click without a purpose header, not from a host) and the
    one asked of the detector otherwise are what BotDetector.classify says of the click."""
    enricher = Enricher(SECRET, (), BOTS, geo=HostingGeo())  # type: ignore[arg-type]
    for peer, ua, lang, purpose, accept, source in clicks:
        raw = click(peer, ua=ua, lang=lang)._replace(purpose=purpose, accept=accept)
        row = enricher.row(raw, source=source)
        verdict = BOTS.classify(ua, purpose=purpose, hosting=peer.endswith(".7"),
                                accept_language=lang,
                                accept=accept if source == "live" else None)
        assert (row[enrich.COLUMNS.index("is_bot")], row[enrich.COLUMNS.index("bot_rule")]
                ) == (verdict.is_bot, verdict.rule)
        assert row[enrich.COLUMNS.index("is_hosting")] is peer.endswith(".7")


def test_the_fingerprint_cache_is_emptied_when_full_and_gives_the_same_fingerprints() -> None:
    enricher = Enricher(SECRET, (), BOTS)
    old_size, enrich.FINGERPRINT_CACHE = enrich.FINGERPRINT_CACHE, 3
    try:
        for i in range(10):
            for lang in ("en", "fr"):
                peer = f"203.0.{i}.9"
                row = enricher.row(click(peer, lang=lang))
                assert row[enrich.COLUMNS.index("fingerprint")] == keyed_hash(
                    "Mozilla/5.0 (X11; Linux x86_64) Firefox/120.0", lang, "", "?1", "",
                    f"203.0.{i}")
                assert len(enricher._fingerprints) <= 3
    finally:
        enrich.FINGERPRINT_CACHE = old_size


def test_the_address_cache_is_emptied_when_full_and_gives_the_same_rows() -> None:
    """A new address (no forwarding header) is resolved and kept in one step; when the cache
    is full it starts again, and every row is what a fresh enricher gives."""
    enricher = Enricher(SECRET, (), BOTS)
    old_size, enrich.ADDRESS_CACHE = enrich.ADDRESS_CACHE, 3
    try:
        for i in (*range(8), *range(8)):
            raw = click(f"198.51.100.{i}")
            assert enricher.row(raw) == Enricher(SECRET, (), BOTS).row(raw)
            assert len(enricher._addresses) <= 3
            assert f"198.51.100.{i}" in enricher._addresses
    finally:
        enrich.ADDRESS_CACHE = old_size
