"""Money that comes back (issue 13, mode 3: gift cards bought with stolen cards through
accounts one operator controls, charged back weeks later).

- A group of accounts bound by shared devices or addresses (weak alone: a household shares
  them too) two or more of whose customers had purchases charged back, far more than the
  program's customers, is held: each of its customers, purchases not yet charged back too.
- One customer's chargeback says nothing on its own (friendly fraud, a dispute); nor do a
  campus's two disputes among a hundred students, nor refunds."""

from __future__ import annotations

import pytest

from fraud.assess import (
    DECISIVE,
    assess_all,
    decision_reason,
    ring_chargeback_reasons,
)
from fraud.rings import WEAK_RING, Ring
from fraud.signals import DAY, ConversionFacts, ProgramContext


def _buy(convs: list[ConversionFacts], who: str, at: float, ref: str = "r",
         amount: int = 5000, ip: str | None = None) -> int:
    convs.append(ConversionFacts(len(convs), who, at, (ref,), amount=amount, ip=ip))
    return len(convs) - 1


def _program(members: int, disputed_members: int, *, others: int = 400
             ) -> tuple[list[ConversionFacts], set[int], list[str]]:
    convs: list[ConversionFacts] = []
    names = [f"m{i}" for i in range(members)]
    disputed = {_buy(convs, m, DAY * (i + 1), amount=20000, ip="1.2.3.4")
                for i, m in enumerate(names[:disputed_members])}
    for m in names:
        _buy(convs, m, 10 * DAY, amount=2500, ip="1.2.3.4")
    for i in range(others):  # the program's other customers, one of them disputing
        cid = _buy(convs, f"o{i}", 3 * DAY, ref=f"x{i % 40}")
        if i == 7:
            disputed.add(cid)
    return convs, disputed, names


def _ring(names: list[str], ip: str = "1.2.3.4") -> Ring:
    return Ring("ring", frozenset(("customer", m) for m in names),
                frozenset({("ip", ip)}), WEAK_RING)


@pytest.mark.parametrize(("members", "disputed"), [(4, 2), (5, 3), (8, 4)])
def test_a_group_with_disputed_customers_is_held_as_one_operator(members: int,
                                                                 disputed: int) -> None:
    convs, charged, names = _program(members, disputed)
    ring = _ring(names)
    reasons = ring_chargeback_reasons(convs, [ring], frozenset(charged))
    assert set(reasons) == set(names)
    assert all(r.code == "ring_chargebacks" and r.family == "money" for r in reasons.values())
    context = ProgramContext(reversed_ids=frozenset(charged), charged_back_ids=frozenset(charged))
    scored = {s.assessment.conversion_id: s.assessment for s in
              assess_all(convs, {}, context, [ring])}
    # The purchases not charged back (yet) are held: the ring alone would not hold them
    later = [c.conversion_id for c in convs if c.customer in names and c.at == 10 * DAY]
    assert all(scored[i].score >= DECISIVE for i in later)
    # The program's one customer with a chargeback is not held on it
    lone = next(c.conversion_id for c in convs if c.customer == "o7")
    assert scored[lone].score < DECISIVE


def test_one_dispute_a_campus_and_refunds_are_no_operator() -> None:
    convs, charged, names = _program(4, 1)
    assert ring_chargeback_reasons(convs, [_ring(names)], frozenset(charged)) == {}
    # A campus of a hundred on three addresses, two of whom disputed a payment
    convs, charged, names = _program(100, 2)
    assert ring_chargeback_reasons(convs, [_ring(names)], frozenset(charged)) == {}
    # Refunds are customers changing their minds: reversed, not charged back
    convs, refunded, names = _program(4, 3)
    context = ProgramContext(reversed_ids=frozenset(refunded))
    scored = assess_all(convs, {}, context, [_ring(names)])
    assert not [r for s in scored for r in s.assessment.reasons if r.family == "money"]
    # A group bound by timing alone (a sleeper cell) is no shared infrastructure
    cell = Ring("sleeper_cell", frozenset(("customer", m) for m in names), frozenset(), 0.5)
    assert ring_chargeback_reasons(convs, [cell], frozenset(refunded)) == {}


def test_a_crowd_the_group_swept_in_does_not_carry_the_cards() -> None:
    """A group that joined an operator's accounts to a campus (one of the operator's accounts
    on the campus's address too): the operator's accounts, tied to the disputed purchases'
    address, carry the chargebacks; the students, who share only the campus's, do not."""
    convs, charged, names = _program(6, 5)
    students = [f"s{i}" for i in range(30)]
    for i, s in enumerate(students):
        _buy(convs, s, 5 * DAY + i, ref="club", ip="10.9.8.7")
    _buy(convs, names[0], 6 * DAY, ip="10.9.8.7")  # the bridge: one account on campus
    ring = Ring("ring", frozenset(("customer", m) for m in names + students),
                frozenset({("ip", "1.2.3.4"), ("ip", "10.9.8.7")}), WEAK_RING)
    reasons = ring_chargeback_reasons(convs, [ring], frozenset(charged))
    assert set(reasons) == set(names)


def _customer(convs: list[ConversionFacts], who: str, ref: str, at: float,
              buys: list[tuple[float, int]]) -> None:
    """A sign-up at `at`, then purchases (seconds after it, amount)."""
    convs.append(ConversionFacts(len(convs), who, at, (ref,)))
    for after, amount in buys:
        convs.append(ConversionFacts(len(convs), who, at + after, (ref,), amount=amount))


def _spree_program(seed: int) -> list[ConversionFacts]:
    """Forty referrers whose friends buy once (a few come back weeks later, one in fifty buys
    twice in a day), at several draws."""
    import random

    rng = random.Random(seed)
    convs: list[ConversionFacts] = []
    for i in range(600):
        ref, at = f"r{i % 40}", rng.uniform(0, 50) * DAY
        buys = [(rng.uniform(60, 2 * DAY), rng.choice((1999, 2999, 4999)))]
        if rng.random() < 0.02:
            buys.append((buys[0][0] + rng.uniform(3600, DAY), 1999))
        if rng.random() < 0.2:
            buys.append((rng.uniform(10, 30) * DAY, 2999))
        _customer(convs, f"c{i}", ref, at, buys)
    return convs


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_new_accounts_spending_at_once_are_held_and_their_referrers_friends_are_not(
        seed: int) -> None:
    import random

    from fraud.signals import referrer_findings, spree_customers

    rng = random.Random(seed)
    convs = _spree_program(seed)
    # A cash-out referrer: a few new accounts, each on its own address, buying two or three
    # gift cards within a day or two of signing up and never again
    cards = [f"g{i}" for i in range(rng.randint(3, 5))]
    for who in cards:
        _customer(convs, who, "cashout", rng.uniform(5, 50) * DAY,
                  [(rng.uniform(300, 2 * DAY), rng.choice((2500, 5000, 10000)))
                   for _ in range(rng.randint(2, 3))])
    # ... and a friend of theirs who bought twice in a week and came back a month later
    _customer(convs, "friend", "cashout", 3 * DAY, [(DAY, 2999), (2 * DAY, 4999),
                                                    (35 * DAY, 1999)])
    assert set(cards) <= spree_customers(convs) and "friend" not in spree_customers(convs)
    found = referrer_findings(convs)
    sprees = {ref for ref, fs in found.items() for f in fs if f.reason.code == "spending_spree"}
    assert sprees == {"cashout"}
    scored = {s.assessment.conversion_id: s.assessment for s in assess_all(convs, {},
                                                                           ProgramContext())}
    for conv in convs:
        if conv.customer in cards and conv.amount:
            assert scored[conv.conversion_id].score >= DECISIVE
            assert any(r.family == "money" for r in scored[conv.conversion_id].reasons)
            told = decision_reason(scored[conv.conversion_id].reasons,
                                   scored[conv.conversion_id].score).message
            assert "sprees of purchases" in told  # which family decided, in plain words
        if conv.customer == "friend" or conv.referrers[0] != "cashout":
            assert not any(r.code == "spending_spree" and r.weight >= DECISIVE
                           for r in scored[conv.conversion_id].reasons)


def test_a_takeover_through_anonymising_addresses_is_held_where_the_mixture_doubts_a_little(
        ) -> None:
    """A referrer's link taken over and pushed through VPN exits and data centres: its
    customers through them carry hosting_share, decisive alone, although the referrer's own
    friends (on home networks) make the mixture doubt each one a little."""
    from fraud.signals import ClickFacts

    convs: list[ConversionFacts] = []
    for i in range(60):  # the program's friends on home networks, two on a VPN
        touch = ClickFacts(f"k{i}", 40_000.0, f"r{i % 12}", f"v{i}", f"81.0.0.{i}", None,
                           anonymous=i in (5, 40))
        convs.append(ConversionFacts(i, f"c{i}", 50_000.0, (f"r{i % 12}",), touches=(touch,),
                                     amount=2999))
    taken = []
    for i in range(60, 68):  # the victim: two friends, then six through anonymising exits
        touch = ClickFacts(f"k{i}", 40_000.0 + i, "victim", f"v{i}", f"185.1.1.{i}", None,
                           hosting=i >= 62)
        convs.append(ConversionFacts(i, f"c{i}", 50_000.0 + i, ("victim",), touches=(touch,),
                                     amount=4999))
        if i >= 62:
            taken.append(i)
    scored = {s.assessment.conversion_id: s.assessment for s in
              assess_all(convs, {}, ProgramContext())}
    for i in taken:
        assert scored[i].score >= DECISIVE, scored[i].reasons
    assert scored[60].score < DECISIVE and scored[61].score < DECISIVE
