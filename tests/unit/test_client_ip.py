"""The enricher's address parsing: the C fast path for IPv4 text reads exactly what
`ipaddress` reads (the redirect's flusher and the importer store the same address), and so do
the client address's and the geo reader's shortcuts."""

from __future__ import annotations

import ipaddress

from hypothesis import given
from hypothesis import strategies as st

from geo.reader import _address as geo_address
from tracker.clicks.enrich import ClientIp, _parse_ip


def reference(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """_parse_ip as it was, with `ipaddress` alone."""
    text = text.strip().strip('"')
    if text.startswith("["):
        text = text[1 : text.find("]")] if "]" in text else text[1:]
    elif text.count(":") == 1:
        text = text.split(":", 1)[0]
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


octet = st.one_of(st.integers(0, 300).map(str), st.sampled_from(["00", "01", "007", "0x1", "",
                                                                  " 1", "1 ", "+1", "\u0661"]))
dotted = st.lists(octet, min_size=3, max_size=5).map(".".join)


@given(st.one_of(dotted, dotted.map(lambda t: t + ":8080"), dotted.map(lambda t: "::ffff:" + t),
                 st.text(alphabet="0123456789.:abcdefABCDEF[]\" ", max_size=24)))
def test_the_fast_path_reads_every_text_as_ipaddress_does(text: str) -> None:
    assert _parse_ip(text) == reference(text)


def test_canonical_addresses() -> None:
    for text in ("0.0.0.0", "255.255.255.255", "81.2.69.160", "81.2.69.160:443",  # noqa: S104
                 "[2001:db8::1]:80", "::ffff:1.2.3.4", "1.2.3.04", "1.2.3", "256.1.1.1"):
        assert _parse_ip(text) == reference(text), text


@given(st.one_of(dotted, dotted.map(lambda t: t + ":8080"), dotted.map(lambda t: "::ffff:" + t),
                 st.text(alphabet="0123456789.:abcdefABCDEF[]\" \x00", max_size=24)))
def test_an_untrusted_peer_resolves_as_its_parsed_address(text: str) -> None:
    """ClientIp's shortcut (a canonical IPv4 peer is its own text) answers what the address
    `_parse_ip` reads gives, text and packed bytes."""
    addr = reference(text)
    expected = None if addr is None else (str(addr), addr.packed)
    assert ClientIp(()).resolve(text, "6.6.6.6", "for=6.6.6.7") == expected


@given(st.one_of(dotted, dotted.map(lambda t: "::ffff:" + t), st.sampled_from(
    ["2001:db8::1", "2001:DB8::1", "2001:db8:0::1", "::1", "::", " 81.2.69.160", "fe80::1%eth0"]),
    st.text(alphabet="0123456789.:abcdefABCDEF \x00", max_size=24)))
def test_geo_asks_by_text_only_what_ipaddress_reads_the_same(text: str) -> None:
    """The geo reader hands the C reader an address's text only when it is that address's
    canonical text; anything else is read by `ipaddress` as before (or is no address)."""
    try:
        parsed: ipaddress.IPv4Address | ipaddress.IPv6Address | None = ipaddress.ip_address(
            text.strip())
    except ValueError:
        parsed = None
    asked = geo_address(text)
    if isinstance(asked, str):
        assert asked == text and ipaddress.ip_address(asked) == parsed
    else:
        assert asked == parsed
