"""Cash-out cohorts: one referrer whose referees each buy several times, for far more than the
program's customers spend, within days of signing up, is one operator's, though no address or
device binds them; big spenders alone, or customers who come back the next day alone, are not."""

from __future__ import annotations

import itertools

from fraud.assess import ring_flag_reasons
from fraud.cashout import KIND, cash_out_cohorts
from fraud.signals import ConversionFacts

DAY = 86400.0
T0 = 1_790_000_000.0
AMOUNTS = (1299, 1999, 2499, 2999, 3499, 3999, 4999, 5999, 7999, 9999)
_ids = itertools.count(1)


def joins(customer: str, referrer: str, at: float, amounts: tuple[int, ...],
          gaps: float = 2 * 3600) -> list[ConversionFacts]:
    """A referee's sign-up through `referrer`'s link, then its purchases `gaps` apart."""
    out = [ConversionFacts(next(_ids), customer, at, (referrer,))]
    for i, amount in enumerate(amounts, 1):
        out.append(ConversionFacts(next(_ids), customer, at + i * gaps, (referrer,),
                                   amount=amount))
    return out


def program() -> list[ConversionFacts]:
    """Sixty genuine referrers, four friends each who buy once at the program's prices (one
    in twenty comes back the next day)."""
    out: list[ConversionFacts] = []
    cycle = itertools.cycle(AMOUNTS)
    k = 0
    for i in range(60):
        for j in range(4):
            k += 1
            amounts = (next(cycle), next(cycle)) if k % 20 == 0 else (next(cycle),)
            out += joins(f"g{i}-f{j}", f"g{i}", T0 + (i + j) * DAY, amounts, gaps=DAY / 2)
    return out


def test_referees_rushing_large_purchases_are_one_operators_cohort() -> None:
    op: list[ConversionFacts] = []
    # Five accounts weeks apart, each on its own address and browser: two or three purchases
    # of gift-card sums within hours of signing up.
    for j, amounts in enumerate(((20000, 10000), (25000, 10000, 5000), (10000, 20000),
                                 (5000, 20000), (20000, 20000))):
        op += joins(f"op-a{j}", "op", T0 + 7 * j * DAY, amounts)
    op += joins("op-friend", "op", T0 + 3 * DAY, (2499,))  # a genuine friend: bought once
    rings = cash_out_cohorts(program() + op)
    assert [r.kind for r in rings] == [KIND]
    assert rings[0].accounts == {("referrer", "op")} | {("customer", f"op-a{j}")
                                                        for j in range(5)}
    reasons = ring_flag_reasons(rings[0])
    assert {r["family"] for r in reasons} == {"timing", "money"}


def test_one_family_alone_is_no_cohort() -> None:
    # Big spenders who buy once, and friends who come back the next day at the program's
    # prices: each is one family's anomaly only.
    big: list[ConversionFacts] = []
    for j in range(5):
        big += joins(f"big-f{j}", "big", T0 + 5 * j * DAY, (20000 + 1000 * j,))
    again: list[ConversionFacts] = []
    for j in range(5):
        again += joins(f"again-f{j}", "again", T0 + 5 * j * DAY, (1999, 2499), gaps=DAY / 2)
    assert cash_out_cohorts(program() + big + again) == []


def test_chargebacks_count_as_money() -> None:
    # Rushed purchases at the program's prices, most of them charged back later.
    op: list[ConversionFacts] = []
    for j in range(5):
        op += joins(f"cb-a{j}", "cb", T0 + 6 * j * DAY, (2999, 3499))
    reversed_ids = {c.conversion_id for c in op if c.amount > 0}
    assert cash_out_cohorts(program() + op) == []
    rings = cash_out_cohorts(program() + op, reversed_ids)
    assert [r.evidence["referrer"] for r in rings] == ["cb"]
