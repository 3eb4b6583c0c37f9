"""A referral chain whose accounts live at a few homes, each shared by some of them, and buy from
their phones too, comes back as one held ring (fraud.rings: weak ties that repeat along the
chain), with its founder in the review flag but not the founder's genuine friends
(fraud.operators._roots); two households whose referrers sign up their housemates stay weak."""

from __future__ import annotations

from fraud.assess import DECISIVE
from fraud.operators import operator_groups
from fraud.rings import Account, Column, Ring, find_rings
from fraud.signals import ConversionFacts

World = tuple[dict[Account, set[Column]], list[tuple[str, str]], dict[str, set[str]],
              dict[str, set[str]]]


def evasive_chain(crowded: bool) -> World:
    """o (founder, friends g1..g6 elsewhere) brought a and d; a brought b, b brought c, d
    brought e, e brought f. a, b, d and f live at one home H (with `crowded`, each on a phone of
    its own, as a NAT's crowd would be), c and d at another, K; every account has a phone on a
    carrier address of its own as well and a device of its own."""
    home, other = ("ip", "203.0.113.7"), ("ip", "203.0.113.80")
    where = {"a": {home}, "b": {home}, "c": {other}, "d": {home, other}, "e": set(),
             "f": {home}}
    uses: dict[Account, set[Column]] = {}
    for i, (person, homes) in enumerate(where.items()):
        uses[("referrer", person)] = homes | {("ip", f"100.64.0.{i}"), ("device", f"d{person}")}
    friends = [f"g{i}" for i in range(1, 7)]
    for i, friend in enumerate(friends):
        uses[("customer", friend)] = {("ip", f"198.51.100.{i}"), ("device", f"d{friend}")}
    # A stranger on d's carrier address, referred by nobody of the chain.
    uses[("customer", "s")] = {("ip", "100.64.0.3"), ("device", "ds")}
    referrals = [("o", "a"), ("o", "d"), *(("o", g) for g in friends), ("a", "b"), ("b", "c"),
                 ("d", "e"), ("e", "f"), ("c", "e"), ("z", "s")]
    agents = {p: {f"Phone/{p}"} for _kind, p in uses} | {f"x{i}": {f"Phone/x{i}"}
                                                         for i in range(30)}
    on = {home[1]: {"Phone/a", "Phone/b", "Phone/d", "Phone/f"} if crowded else {"Phone/a"}}
    return uses, referrals, agents, on


def households() -> World:
    """Two referrers, each signing up the two people he lives with (on phones of their own,
    and the carrier's network besides); one housemate signs up a friend elsewhere."""
    uses: dict[Account, set[Column]] = {}
    referrals: list[tuple[str, str]] = []
    for h in ("1", "2"):
        home = ("ip", f"203.0.113.{h}")
        for j, person in enumerate((f"h{h}", f"m{h}a", f"m{h}b")):
            kind = "referrer" if j == 0 else "customer"
            uses[(kind, person)] = {home, ("ip", f"100.64.{h}.{j}"), ("device", f"d{person}")}
        referrals += [(f"h{h}", f"m{h}a"), (f"h{h}", f"m{h}b")]
    referrals += [("m1a", "x"), ("h1", "h2")]
    uses[("customer", "x")] = {("ip", "198.51.100.50"), ("device", "dx")}
    agents = {p: {f"Phone/{p}"} for _kind, p in uses}
    return uses, referrals, agents, {}


def held(world: World) -> list[Ring]:
    uses, referrals, agents, on = world
    return [r for r in find_rings(uses, referrals, agents=agents, browsers_on=on)
            if r.kind == "ring" and r.score >= DECISIVE]


def test_a_chain_on_a_few_shared_homes_is_one_held_ring() -> None:
    for crowded in (False, True):
        ring, = held(evasive_chain(crowded))
        assert {p for _kind, p in ring.accounts} >= {"a", "b", "c", "d", "e", "f"}
        assert not {p for _kind, p in ring.accounts} & {"g1", "g2", "s"}


def test_the_founder_joins_the_flag_but_not_his_friends() -> None:
    """o signed up the chain's first account only (d came through a, here), and his friends."""
    uses, referrals, agents, on = evasive_chain(True)
    referrals = [("a", "d") if pair == ("o", "d") else pair for pair in referrals]
    ring, = held((uses, referrals, agents, on))
    assert ("referrer", "o") not in ring.accounts
    conversions = [ConversionFacts(i, customer, 1_790_000_000.0 + i * 3600, (referrer,),
                                   amount=1000)
                   for i, (referrer, customer) in enumerate(referrals)]
    flag, = operator_groups([ring], conversions)
    people = {p for _kind, p in flag.accounts}
    assert "o" in people
    assert not people & {"g1", "g2"}


def test_households_that_sign_up_their_housemates_are_no_held_ring() -> None:
    assert held(households()) == []


def test_a_stranger_on_the_same_odd_browser_is_not_of_the_ring() -> None:
    """t shares nothing with the chain but a's rare browser, and no referral."""
    uses, referrals, agents, on = evasive_chain(False)
    # Living on their homes only (no phones elsewhere): the group passes as concentrated.
    uses = {a: {c for c in cols if not c[1].startswith("100.64.")} for a, cols in uses.items()}
    uses[("customer", "t")] = {("ip", "198.51.100.77"), ("device", "dt")}
    referrals = [*referrals, ("y", "t")]
    agents = {**agents, "a": {"Odd/1"}, "t": {"Odd/1"}} | {f"w{i}": {f"Web/{i}"}
                                                          for i in range(200)}
    ring, = held((uses, referrals, agents, on))
    assert ("customer", "t") not in ring.accounts
    assert ("referrer", "a") in ring.accounts


def _move_other_home(uses: dict[Account, set[Column]], people: set[str]) -> None:
    """The chain's second home, K, moved off H's network (a NAT's pool is crowded as a whole)
    and onto `people`."""
    for (_kind, person), columns in uses.items():
        columns.discard(("ip", "203.0.113.80"))
        if person in people:
            columns.add(("ip", "198.18.0.80"))


def chain_through_its_founder() -> World:
    """H's people a, b (a brought b) and d, f (d brought e, who brought f) are tied to each
    other only through o, the founder who brought a and d (and has friends of his own, so he
    is no link of the chain); d and f share a second home, K."""
    uses, referrals, agents, on = evasive_chain(True)
    referrals = [pair for pair in referrals if pair != ("c", "e")]
    _move_other_home(uses, {"d", "f"})
    return uses, referrals, agents, on


def chain_through_another_home() -> World:
    """H's people a, b (a brought b) and d, f (d brought c and f; e bought through d's and
    f's links and brought k) are tied to each other only through K, the home a shares with c
    and k; d came through y, a referrer with friends of his own."""
    uses, referrals, agents, on = evasive_chain(True)
    gone = {("c", "e"), ("o", "d"), ("b", "c"), ("e", "f")}
    referrals = [pair for pair in referrals if pair not in gone]
    referrals += [("y", "d"), ("d", "c"), ("d", "f"), ("f", "e"), ("e", "k")]
    referrals += [("y", f"h{i}") for i in range(6)]
    for i, person in enumerate(["k"] + [f"h{i}" for i in range(6)]):
        uses[("customer", person)] = {("ip", f"198.51.100.{20 + i}"), ("device", f"d{person}")}
        agents[person] = {f"Phone/{person}"}
    _move_other_home(uses, {"a", "c", "k"})
    return uses, referrals, agents, on


def short_chain() -> World:
    """a brought b, b brought c, c brought d; a, b and c share one home, b, c and d another,
    and each has a phone on a carrier address of its own."""
    first, second = ("ip", "203.0.113.21"), ("ip", "203.0.113.22")
    where = {"a": {first}, "b": {first, second}, "c": {first, second}, "d": {second}}
    uses: dict[Account, set[Column]] = {
        ("referrer", p): homes | {("ip", f"100.64.1.{i}"), ("device", f"d{p}")}
        for i, (p, homes) in enumerate(where.items())}
    agents = {p: {f"Phone/{p}"} for p in where} | {f"x{i}": {f"Phone/x{i}"} for i in range(30)}
    return uses, [("a", "b"), ("b", "c"), ("c", "d")], agents, {}


def test_a_crowded_home_whose_people_meet_through_the_founder_binds_them() -> None:
    """The founder who signed up two of a crowded home's people is of its chain
    (fraud.rings._chain_homes' anchors): the home binds them and the ring holds."""
    ring, = held(chain_through_its_founder())
    assert {p for _kind, p in ring.accounts} >= {"a", "b", "d", "e", "f"}


def test_a_crowded_home_whose_people_meet_at_another_home_binds_them() -> None:
    """A crowded home's people tied to each other only through another home one of them
    shares with an account the chain's referrals reach (_chain_homes' other homes) are one
    ring with it, the stranger on d's carrier address left out."""
    ring, = held(chain_through_another_home())
    people = {p for _kind, p in ring.accounts}
    assert people >= {"a", "b", "c", "d", "e", "f"}
    assert "s" not in people


def test_a_chain_of_four_on_two_homes_holds() -> None:
    """Four accounts signing each other up in a chain on two shared homes hold (CHAIN_HOLD),
    fewer than a group on one address needs (HOLD_ACCOUNTS)."""
    ring, = held(short_chain())
    assert {p for _kind, p in ring.accounts} == {"a", "b", "c", "d"}


def test_a_pools_founder_joins_its_flag_but_not_his_friends() -> None:
    """o brought a, who brought b and c; b brought d: a collusion pool of a, b and their
    referees. o is the chain's root (fraud.operators._roots): named, but his own friends
    g0..g2, tied to nothing of the pool, are not of the flag."""
    referrals = [("o", "a"), ("a", "b"), ("a", "c"), ("b", "d"),
                 *(("o", f"g{i}") for i in range(3))]
    conversions = [ConversionFacts(i, customer, 1_790_000_000.0 + i * 3600, (referrer,),
                                   amount=1000)
                   for i, (referrer, customer) in enumerate(referrals)]
    pool = Ring("collusion_pool", frozenset({("referrer", "a"), ("referrer", "b")} | {
        ("customer", p) for p in "abcd"}), frozenset(), 0.9)
    flag, = operator_groups([pool], conversions)
    people = {p for _kind, p in flag.accounts}
    assert "o" in people
    assert not people & {"g0", "g1", "g2"}
