"""Wave cells: referrer accounts whose clicks nearly all bring a buyer, and whose buyers come
in the same waves again and again (an operator's paid workers after each task post), are one
operator's; converting referrers who share on the program's own busy days are not."""

from __future__ import annotations

import itertools
import random

from fraud.signals import ClickFacts, ConversionFacts
from fraud.sleepers import sleeper_reasons, wave_cells

DAY = 86400.0
T0 = 1_790_000_000.0
_ids = itertools.count(1)


def purchase(customer: str, clicked: float, referrer: str) -> ConversionFacts:
    return ConversionFacts(next(_ids), customer, clicked + 1800, (referrer,),
                           touches=(ClickFacts(f"k{next(_ids)}", clicked, referrer, None, None,
                                               None),), amount=1500)


def genuine(rng: random.Random, busy: tuple[float, ...] = ()
            ) -> tuple[list[ConversionFacts], dict[str, int]]:
    """Sixty referrers, each a few customers of many clicks at its own times (a third of
    them on the program's `busy` days, when many share at once)."""
    out: list[ConversionFacts] = []
    clicks: dict[str, int] = {}
    for i in range(60):
        ref = f"g{i}"
        days = [rng.choice(busy) if busy and rng.random() < 0.35 else rng.uniform(0, 55)
                for _ in range(3)]
        for j in range(6):
            out.append(purchase(f"{ref}-f{j}", T0 + days[j % 3] * DAY + rng.uniform(0, 8 * 3600),
                                ref))
        clicks[ref] = 30
    return out, clicks


def test_referrer_accounts_fed_in_waves_are_one_cell() -> None:
    rng = random.Random(1)
    conversions, clicks = genuine(rng)
    mules = ("m1", "m2", "m3", "m4")
    for wave, day in enumerate((3.0, 11.0, 19.0, 30.0, 41.0)):
        for i in range(8):
            ref = mules[(wave + i) % 4]
            conversions.append(purchase(f"w{wave}-{i}", T0 + day * DAY + rng.uniform(0, 6 * 3600),
                                        ref))
    for ref in mules:
        clicks[ref] = 11
    cells = wave_cells(conversions, clicks)
    assert len(cells) == 1
    assert {i for kind, i in cells[0].accounts if kind == "referrer"} == set(mules)
    reasons = sleeper_reasons(conversions, cells)
    held = {c.customer for c in conversions if c.conversion_id in reasons}
    assert held == {f"w{w}-{i}" for w in range(5) for i in range(8)}
    assert all(r.code == "wave_cell" and r.family == "population" for r in reasons.values())


def test_converting_referrers_on_the_programs_busy_days_are_no_cell() -> None:
    rng = random.Random(2)
    busy = (9.0, 23.0, 37.0)
    conversions, clicks = genuine(rng, busy)
    for n, ref in enumerate(("c1", "c2", "c3", "c4")):  # close friends: nearly every click buys
        for j in range(6):
            day = busy[j % 3] if j < 3 else rng.uniform(0, 55)
            conversions.append(purchase(f"{ref}-f{j}", T0 + day * DAY + n * 3600, ref))
        clicks[ref] = 7
    assert wave_cells(conversions, clicks) == []


def test_converting_referrers_at_their_own_times_are_no_cell() -> None:
    rng = random.Random(3)
    conversions, clicks = genuine(rng)
    for ref in ("c1", "c2", "c3", "c4"):
        for j in range(8):
            conversions.append(purchase(f"{ref}-f{j}", T0 + rng.uniform(0, 55) * DAY, ref))
        clicks[ref] = 9
    assert wave_cells(conversions, clicks) == []


def test_workers_trickling_in_over_a_day_after_each_post_are_found_too() -> None:
    """Smaller waves spread over most of a day, each worker on any of five links: no pair of
    links coincides often enough alone; the group does, against the links' own arrivals
    moved along the program's calendar."""
    rng = random.Random(6)
    conversions, clicks = genuine(rng)
    mules = ("m1", "m2", "m3", "m4", "m5")
    for wave, day in enumerate((2.0, 9.0, 15.0, 22.0, 30.0, 37.0, 45.0)):
        for i in range(4):
            at = T0 + day * DAY + min(rng.expovariate(1 / (8 * 3600)), 22 * 3600)
            conversions.append(purchase(f"w{wave}-{i}", at, rng.choice(mules)))
    for ref in mules:
        clicks[ref] = sum(1 for c in conversions if c.referrers == (ref,)) + 1
    cells = wave_cells(conversions, clicks)
    named = {i for cell in cells for kind, i in cell.accounts if kind == "referrer"}
    assert len(named) >= 3
    assert named <= set(mules)
