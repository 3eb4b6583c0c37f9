"""A referral chain bound by weak infrastructure (fraud.rings.chain_links, the chain's home) comes
back as one held ring; families, a fraudster's genuine friends and strangers on a carrier's
address stay out. And two decisive findings that share one account stay two flags
(fraud.operators)."""

from __future__ import annotations

import pytest

from fraud.assess import DECISIVE, ring_flag_reasons
from fraud.operators import operator_groups
from fraud.rings import WEAK_RING, Account, Column, Ring, _referral_ties, chain_links, find_rings
from fraud.signals import crowded_columns

HOME = ("ip", "203.0.113.7")


World = tuple[dict[Account, set[Column]], list[tuple[str, str]], dict[str, set[str]],
              dict[str, set[str]]]


def chain(home_crowded: bool) -> World:
    """Seven accounts over weeks: o brought a and d (and g, a genuine friend); a brought b and
    c; c brought e, who bought through a's link too; b brought f, who bought through c's too.
    c, d and e live at one home (each on a phone of its own: with `home_crowded`, the address
    looks like a NAT's), d and c share a device, d and f an address; a, b and o are elsewhere.
    Returns the accounts' IPs and devices, the referrals, each customer's browsers (twenty
    more of the program's people besides) and the browsers seen on the home address."""
    uses: dict[Account, set[Column]] = {
        ("referrer", "a"): {("ip", "198.51.100.1"), ("device", "da")},
        ("referrer", "b"): {("ip", "198.51.100.2"), ("device", "db")},
        ("referrer", "c"): {HOME, ("device", "dc")},
        ("referrer", "d"): {HOME, ("ip", "198.51.100.4"), ("device", "dc")},
        ("customer", "e"): {HOME, ("device", "de")},
        ("customer", "f"): {("ip", "198.51.100.4"), ("device", "df")},
        ("customer", "g"): {("ip", "198.51.100.9"), ("device", "dg")},
    }
    referrals = [("o", "a"), ("o", "d"), ("o", "g"), ("a", "b"), ("a", "c"), ("c", "e"),
                 ("a", "e"), ("b", "f"), ("c", "f")]
    agents = {p: {f"Phone/{p}"} for _kind, p in uses} | {f"x{i}": {f"Phone/x{i}"}
                                                         for i in range(20)}
    # Crowded: the home's three accounts on four browsers (e on two), as many as strangers
    # would bring.
    on = {HOME[1]: {"Phone/c", "Phone/d", "Phone/e", "Tablet/e"} if home_crowded
          else {"Phone/c"}}
    return uses, referrals, agents, on


def rings_of(world: World) -> list[Ring]:
    uses, referrals, agents, on = world
    return [r for r in find_rings(uses, referrals, agents=agents, browsers_on=on)
            if r.kind == "ring"]


@pytest.mark.parametrize("home_crowded", [False, True])
def test_a_referral_chain_on_one_home_and_addresses_of_its_own_is_one_held_ring(
        home_crowded: bool) -> None:
    world = chain(home_crowded)
    uses, _referrals, agents, on = world
    assert (HOME in crowded_columns(uses, on, agents)) is home_crowded
    found = rings_of(world)
    assert len(found) == 1
    ring = found[0]
    assert {p for _kind, p in ring.accounts} == {"o", "a", "b", "c", "d", "e", "f"}
    assert ring.score >= DECISIVE
    assert ring.evidence["recruiting"] is True
    message = str(ring_flag_reasons(ring)[0]["message"])
    assert "one referral chain" in message


def test_a_fraudsters_genuine_friend_and_a_popular_referrers_people_are_no_links() -> None:
    # The group c, d, e; o's friend g (one tie) and p's forty customers (p is tied to the
    # group twice but has forty ties outside it) stay out; b and f, tied to the group once
    # each and to each other, are links together.
    referrals = [("o", "d"), ("o", "g"), ("c", "e"), ("b", "f"), ("c", "f"), ("a", "b"),
                 ("a", "c"), ("a", "e"), ("p", "c"), ("p", "d")]
    referrals += [("p", f"q{i}") for i in range(40)]
    links = chain_links({"c", "d", "e"}, _referral_ties(referrals))
    assert links == {"a", "b", "f"}
    assert "g" not in links and "p" not in links


def test_strangers_on_a_crowded_address_and_a_family_at_home_bind_nobody() -> None:
    # Three strangers behind a carrier's address, each brought by a referrer of its own.
    uses: dict[Account, set[Column]] = {("customer", f"s{i}"): {HOME, ("device", f"d{i}")}
                                        for i in range(3)}
    # A family of three at another home address that looks like a NAT, the mother signing up
    # the others, and nobody elsewhere tied to them twice.
    family = ("ip", "203.0.113.99")
    uses |= {("referrer", "mum"): {family, ("device", "dm")},
             ("customer", "dad"): {family, ("device", "dd")},
             ("customer", "kid"): {family, ("device", "dk")}}
    referrals = [(f"r{i}", f"s{i}") for i in range(3)] + [("mum", "dad"), ("mum", "kid"),
                                                          ("mum", "friend")]
    agents = {p: {f"Phone/{p}"} for _kind, p in uses} | {f"x{i}": {f"Phone/x{i}"}
                                                         for i in range(20)}
    on = {HOME[1]: {"Phone/s0", "Phone/s1", "Phone/s2", "Tablet/s2"},
          family[1]: {"Phone/mum", "Phone/dad", "Phone/kid", "Tablet/kid"}}
    assert {HOME, family} <= crowded_columns(uses, on, agents)
    found = [r for r in find_rings(uses, referrals, agents=agents, browsers_on=on)
             if r.kind == "ring"]
    assert all(r.score <= WEAK_RING for r in found)
    assert not any({p for _kind, p in r.accounts} & {"s0", "s1", "s2"} for r in found)


def test_two_findings_sharing_one_account_stay_two_flags_and_two_accounts_make_one() -> None:
    ring = Ring("ring", frozenset({("referrer", x) for x in "abcdef"}),
                frozenset({HOME}), 0.9, {"accounts": 6})
    # A pool elsewhere that one of the chain's accounts is in (a namesake's mailbox).
    pool = Ring("collusion_pool", frozenset({("customer", "f")} | {
        ("customer", f"p{i}") for i in range(6)}), frozenset({("mailbox", "ab")}), 0.85,
        {"accounts": 7})
    apart = operator_groups([ring, pool], [])
    assert ring in apart and len(apart) == 2
    both = Ring("collusion_pool", pool.accounts | {("customer", "e")}, pool.shared, 0.85,
                {"accounts": 8})
    merged = operator_groups([ring, both], [])
    assert len(merged) == 1
    assert {p for _kind, p in merged[0].accounts} >= {"a", "f", "p0"}
