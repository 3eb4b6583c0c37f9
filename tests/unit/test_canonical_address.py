"""geo.reader.canonical_packed: an address's packed bytes only for the text `ip_address` prints
(the flusher's first-seen addresses skip inet_ntop where inet_pton is strict)."""

from __future__ import annotations

import ipaddress
import socket

import pytest
from hypothesis import given
from hypothesis import strategies as st

from geo import reader
from geo.reader import canonical_packed

NEAR_MISSES = ["01.2.3.4", "1.2.3.04", "00.0.0.0", "1.2.3.4 ", " 1.2.3.4", "1.2.3.4\n",
               "0x1.2.3.4", "1.2.3", "1.2.3.4.5", "1.2.3.256", "1.2.3.-4", "1.2.3.+4", "1..3.4",
               "1.2.3.4/24", "1.2.3.4\x00", "\uff11.2.3.4", "", "::ffff:1.2.3.4"]


def canonical(text: str) -> bytes | None:
    try:
        address = ipaddress.IPv4Address(text)
    except ValueError:
        return None
    return address.packed if str(address) == text else None


def test_this_c_library_reads_ipv4_strictly() -> None:
    """glibc and musl do; elsewhere canonical_packed checks the text with inet_ntop."""
    assert reader._STRICT_IPV4


def test_near_misses_are_not_canonical() -> None:
    assert [canonical_packed(t) for t in NEAR_MISSES] == [None] * len(NEAR_MISSES)
    assert canonical_packed("203.0.113.7") == bytes((203, 0, 113, 7))
    assert canonical_packed("0.0.0.0") == bytes(4)  # noqa: S104 (an address, not a bind)


@given(st.lists(st.integers(0, 999), min_size=3, max_size=5),
       st.sampled_from(["", "0", "00", " ", "+"]))
def test_canonical_packed_is_what_ip_address_prints(parts: list[int], pad: str) -> None:
    for text in (".".join(map(str, parts)), ".".join(pad + str(p) for p in parts)):
        assert canonical_packed(text) == canonical(text)


def test_without_a_strict_inet_pton_the_text_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where inet_pton would take a leading zero, inet_ntop's text is compared instead."""
    monkeypatch.setattr(reader, "_STRICT_IPV4", False)
    loose = socket.inet_pton

    def lenient(family: int, text: str) -> bytes:
        if family == socket.AF_INET:
            text = ".".join(str(int(p)) for p in text.split("."))
        return loose(family, text)

    monkeypatch.setattr(reader.socket, "inet_pton", lenient)
    assert canonical_packed("1.2.3.04") is None
    assert canonical_packed("1.2.3.4") == bytes((1, 2, 3, 4))
