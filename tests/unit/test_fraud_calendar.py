"""Clean look-alikes of a program's calendar (issue 13): a popular referrer's burst on a
promotion day when everybody's friends arrive at once, and purchases at the promotion's price;
each against the fraud it looks like (a burst on an ordinary day, the cheapest price on
ordinary days)."""

from __future__ import annotations

import random

import pytest

from fraud.signals import (
    DAY,
    ConversionFacts,
    ProgramContext,
    referrer_findings,
)

PRICE, CHEAP = 3000, 1900


def program(rng: random.Random, *, busy_day: int | None, star_day: int,
            cheap_on: str) -> list[ConversionFacts]:
    """Regular referrers with a customer every few days; on `busy_day` (a promotion) twenty
    more referrers gain a friend or two each, at the promotion's price CHEAP; "star" gains 15
    customers on `star_day` and one a week otherwise; "cheap" buys at CHEAP six times, on the
    busy day (`cheap_on` "busy") or on ordinary days."""
    rows: list[ConversionFacts] = []

    def add(ref: str, day: float, amount: int = PRICE) -> None:
        at = day * DAY + rng.uniform(3600, 20 * 3600)
        rows.append(ConversionFacts(len(rows), f"c{len(rows)}", at, (ref,), amount=amount))

    for k in range(12):
        for day in range(k % 4, 40, 4):
            add(f"reg{k}", day)
    if busy_day is not None:
        for k in range(20):
            for _ in range(rng.randint(1, 2)):
                add(f"promo{k}", busy_day, CHEAP)
    for _ in range(15):
        add("star", star_day, CHEAP if star_day == busy_day else PRICE)
    for day in range(3, 40, 7):
        add("star", day)
    for i in range(6):
        add("cheap", busy_day if cheap_on == "busy" and busy_day is not None else 5 + 6 * i,
            CHEAP)
    for i in range(4):
        add("cheap", 7 + 8 * i)
    return rows


def codes(found: dict[str, list[object]], ref: str) -> set[str]:
    return {f.reason.code for f in found.get(ref, [])}  # type: ignore[attr-defined]


@pytest.mark.parametrize("draw", range(3))
def test_a_burst_on_the_programs_promotion_day_is_the_calendar(draw: int) -> None:
    rng = random.Random(70 + draw)
    ordinary = referrer_findings(program(rng, busy_day=None, star_day=30, cheap_on="days"),
                                 ProgramContext())
    assert "velocity" in codes(ordinary, "star")  # a burst on an ordinary day
    promo = referrer_findings(program(rng, busy_day=20, star_day=20, cheap_on="days"),
                              ProgramContext())
    assert "velocity" not in codes(promo, "star")  # everybody's friends came that day
    # A burst on another day than the promotion is still one.
    other = referrer_findings(program(rng, busy_day=20, star_day=30, cheap_on="days"),
                              ProgramContext())
    assert "velocity" in codes(other, "star")


@pytest.mark.parametrize("draw", range(3))
def test_the_minimum_amount_on_a_promotion_day_is_the_days_price(draw: int) -> None:
    rng = random.Random(80 + draw)
    days = referrer_findings(program(rng, busy_day=20, star_day=30, cheap_on="days"),
                             ProgramContext())
    assert "min_amount_share" in codes(days, "cheap")  # the cheapest, day after day
    busy = referrer_findings(program(rng, busy_day=20, star_day=30, cheap_on="busy"),
                             ProgramContext())
    assert "min_amount_share" not in codes(busy, "cheap")
