"""Sleeper cells: dormant referrers waking together whose referees buy minutes after the
click are one operator; a merchant's mailing that wakes as many is not."""

from __future__ import annotations

import itertools

from fraud.assess import assess_all, ring_flag_reasons
from fraud.signals import ClickFacts, ConversionFacts, ProgramContext
from fraud.sleepers import sleeper_cells, sleeper_reasons

DAY = 86400.0
T0 = 1_790_000_000.0
# People's click-to-purchase delays: minutes to days (the program's slow tail).
PEOPLE = (90.0, 600.0, 1500.0, 2400.0, 3600.0, 4 * 3600.0, 9 * 3600.0, DAY, 3 * DAY, 5 * DAY)
_ids = itertools.count(1)


def purchase(customer: str, at: float, referrer: str | None, delay: float = 600.0
             ) -> ConversionFacts:
    touches = () if referrer is None else (
        ClickFacts(f"k{next(_ids)}", at - delay, referrer, None, None, None),)
    return ConversionFacts(next(_ids), customer, at, () if referrer is None else (referrer,),
                           touches=touches, amount=1500)


def dormant(referrer: str, own: float, woke: float, delays: tuple[float, ...]
            ) -> list[ConversionFacts]:
    """A referrer with a purchase of its own at `own`, then its referees from `woke` on."""
    out = [purchase(referrer, own, None)]
    for i, delay in enumerate(delays):
        out.append(purchase(f"{referrer}-friend{i}", woke + i * 3600 + delay, referrer, delay))
    return out


def program() -> list[ConversionFacts]:
    """Forty genuine referrers who wake over two months, their friends buying like people."""
    out: list[ConversionFacts] = []
    cycle = itertools.cycle(PEOPLE)
    for i in range(40):
        out += dormant(f"g{i}", T0 + (i % 10) * DAY, T0 + 10 * DAY + i * 1.25 * DAY,
                       (next(cycle), next(cycle)))
    return out


def test_dormant_referrers_waking_together_with_buyers_in_minutes_are_a_cell() -> None:
    cell: list[ConversionFacts] = []
    for i in range(8):
        cell += dormant(f"s{i}", T0 + i * DAY, T0 + 33 * DAY + i * 1800,
                        (300.0 + 60 * i, 700.0 + 30 * i))
    conversions = program() + cell
    rings = sleeper_cells(conversions)
    assert len(rings) == 1
    ring = rings[0]
    assert ring.kind == "sleeper_cell"
    # A genuine referrer whose first friend happened to buy in the same hours is in the
    # cohort, but its friend, who took his time, is not held.
    referrers = {i for kind, i in ring.accounts if kind == "referrer"}
    assert referrers >= {f"s{i}" for i in range(8)} and len(referrers) <= 9
    assert {i for kind, i in ring.accounts if kind == "customer"} == {
        f"s{i}-friend{j}" for i in range(8) for j in range(2)}
    assert f"{len(referrers)} referrers quiet" in str(ring_flag_reasons(ring)[0]["message"])
    # Each of their purchases is held on the population family; nobody else's is.
    reasons = sleeper_reasons(conversions, rings)
    assert {c.customer for c in conversions if c.conversion_id in reasons} == {
        f"s{i}-friend{j}" for i in range(8) for j in range(2)}
    scored = {s.assessment.conversion_id: s.assessment
              for s in assess_all(conversions, {}, ProgramContext(), rings)}
    held = {c.customer for c in conversions if scored[c.conversion_id].score >= 0.5}
    assert held == {f"s{i}-friend{j}" for i in range(8) for j in range(2)}
    assert all(r.family == "population" for r in reasons.values())


def test_a_cell_woken_over_days_is_still_found() -> None:
    cell: list[ConversionFacts] = []
    for i in range(10):
        cell += dormant(f"s{i}", T0 + i * DAY, T0 + 33 * DAY + i * 0.3 * DAY,
                        (240.0 + 60 * i, 900.0))
    # A genuine referrer a mailing woke in the same hours: one quick friend, one slow.
    mailed = dormant("mailed", T0 + 2 * DAY, T0 + 33 * DAY + 2000, (120.0, 2 * DAY))
    rings = sleeper_cells(program() + cell + mailed)
    assert len(rings) == 1
    customers = {i for kind, i in rings[0].accounts if kind == "customer"}
    assert not {"mailed-friend0", "mailed-friend1"} & customers
    # A genuine referrer who woke among them with two quick friends goes with them (a limit of
    # a cohort test: its friends look like the operator's); no slow friend does.
    assert customers >= {f"s{i}-friend{j}" for i in range(10) for j in range(2)}
    assert len(customers) <= 22


def test_a_mailing_that_wakes_many_referrers_at_once_is_not_a_cell() -> None:
    """As synchronised as a cell, but the readers' friends buy when they like."""
    mailing: list[ConversionFacts] = []
    cycle = itertools.cycle(PEOPLE)
    for i in range(12):
        mailing += dormant(f"m{i}", T0 + i * DAY, T0 + 33 * DAY + i * 1200,
                           (next(cycle), next(cycle)))
    assert sleeper_cells(program() + mailing) == []
    # Nor are buyers in minutes from referrers who woke at their own times.
    quick: list[ConversionFacts] = []
    for i in range(8):
        quick += dormant(f"q{i}", T0 + i * DAY, T0 + 12 * DAY + i * 5 * DAY, (300.0, 600.0))
    assert sleeper_cells(program() + quick) == []


def leak(n: int) -> list[ConversionFacts]:
    """A referrer whose code leaked: `n` strangers buying a minute or two after the click."""
    return [purchase(f"leaked{i}", T0 + 5 * DAY + i * 3 * 3600, "leaky", 60.0 + i % 90)
            for i in range(n)]


def test_a_cell_woken_over_several_days_among_genuine_wakings_is_found() -> None:
    """Ten aged accounts woken one every half day, over five days, while genuine referrers
    wake too; a leak's hundred quick buyers do not make quick buying the program's norm."""
    for seed in range(3):
        cell: list[ConversionFacts] = []
        for i in range(10):
            cell += dormant(f"s{i}", T0 + i * DAY, T0 + (30 + seed) * DAY + i * 0.5 * DAY,
                            (200.0 + 90 * i, 500.0 + 60 * ((i + seed) % 7)))
        rings = sleeper_cells(program() + leak(100) + cell)
        assert len(rings) == 1
        referrers = {i for kind, i in rings[0].accounts if kind == "referrer"}
        customers = {i for kind, i in rings[0].accounts if kind == "customer"}
        assert referrers >= {f"s{i}" for i in range(10)} and len(referrers) <= 12
        assert customers >= {f"s{i}-friend{j}" for i in range(10) for j in range(2)}
        assert not any(c.startswith("leaked") for c in customers)


def clicks_of(conversions: list[ConversionFacts], idle: int) -> dict[str, int]:
    """Counted clicks per referrer: one per referee who bought, and `idle` more for each
    referrer whose name starts with "g" or "m" (genuine: friends who looked and left)."""
    out: dict[str, int] = {}
    for conv in conversions:
        for ref in conv.referrers:
            out[ref] = out.get(ref, 0) + 1
    return {ref: n + (idle if ref[0] in "gm" else 0) for ref, n in out.items()}


def test_a_staggered_cell_is_named_on_its_clicks_converting_as_well_as_its_delays() -> None:
    """Ten aged accounts woken over four days whose buyers are quick but not all under any one
    cut (one in three takes an hour or two), each click on their links bringing a buyer; two
    genuine referrers woken in the same days whose friends bought quickly too, but most of
    whose clicks brought nobody. The cell is every sleeper and every one of their buyers, and
    neither genuine referrer."""
    cell: list[ConversionFacts] = []
    for i in range(10):
        cell += dormant(f"s{i}", T0 + i * DAY, T0 + 33 * DAY + i * 0.4 * DAY,
                        (300.0 + 60 * i, 600.0 + 40 * i, 3600.0 + 900 * i) if i % 3 == 0
                        else (300.0 + 60 * i, 900.0 + 30 * i))
    mailed = (dormant("m0", T0 + 2 * DAY, T0 + 34 * DAY + 500, (240.0, 500.0))
              + dormant("m1", T0 + 3 * DAY, T0 + 35 * DAY + 900, (400.0, 700.0)))
    conversions = program() + cell + mailed
    rings = sleeper_cells(conversions, clicks_of(conversions, idle=9))
    assert len(rings) == 1
    referrers = {i for kind, i in rings[0].accounts if kind == "referrer"}
    customers = {i for kind, i in rings[0].accounts if kind == "customer"}
    assert referrers == {f"s{i}" for i in range(10)}
    assert customers == {c.customer for c in cell if c.referrers}
    assert rings[0].evidence["converting_p_value"] < 0.01
    assert "brought a buyer" in str(ring_flag_reasons(rings[0])[0]["message"])

