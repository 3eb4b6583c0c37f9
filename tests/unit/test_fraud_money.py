"""A referrer whose traffic turns unlike its own, and money that comes back (issue 13, mode 3:
account takeover, gift cards cashed out with stolen cards).

- converting_run: a run of days in which nearly every click on a referrer's link brings a new
  customer, far above its own other days and the program, is someone else's traffic on the
  link; its own audience before and after is not held, nor is a family buying together on
  one day, nor a referrer whose audience always converts well.
- chargebacks: a customer with a purchase charged back has its other purchases held; a ring
  two or more of whose members had purchases charged back is held as one operator; a campus
  of a hundred with two disputes is not, and refunds say nothing.
Hand-built programs at several draws."""

from __future__ import annotations

import random

import pytest

from fraud.assess import DECISIVE, assess_all, chargeback_reasons
from fraud.rings import Ring
from fraud.signals import (
    DAY,
    ClickFacts,
    ClickRhythm,
    ConversionFacts,
    ProgramContext,
    converting_run,
    referrer_findings,
)

START = 20_000 * DAY  # a day boundary, far from the epoch


class Program:
    """Referrers' clicks per day and the customers some of the clicks brought."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.conversions: list[ConversionFacts] = []
        self.daily: dict[str, dict[int, int]] = {}

    def click(self, ref: str, at: float) -> None:
        days = self.daily.setdefault(ref, {})
        days[int(at // DAY)] = days.get(int(at // DAY), 0) + 1

    def customer(self, ref: str, at: float, *, ip: str | None = None) -> str:
        """A click on `ref`'s link at `at` that brought a customer: a sign-up minutes later, a
        purchase within hours."""
        self.click(ref, at)
        rng = self.rng
        name = f"c{len(self.conversions)}"
        ip = ip or f"81.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(256)}"
        touch = ClickFacts(f"k-{name}", at, ref, f"v-{name}", ip, f"d-{name}", country="CA")
        for when, amount in ((at + rng.uniform(60, 600), 0),
                             (at + rng.uniform(1800, 6 * 3600), rng.choice((1900, 4900)))):
            self.conversions.append(ConversionFacts(len(self.conversions), name, when, (ref,),
                                                    touches=(touch,), amount=amount, ip=ip))
        return name

    def shares(self, ref: str, n: int, rate: float, first: float = 2, last: float = 58
               ) -> None:
        """`n` shares of `ref`'s link over the days `first`..`last`, each bringing 2-6 clicks
        within hours, a share `rate` of them customers."""
        for _ in range(n):
            t = START + self.rng.uniform(first, last) * DAY
            for _ in range(self.rng.randint(2, 6)):
                at = t + self.rng.uniform(0, 6 * 3600)
                if self.rng.random() < rate:
                    self.customer(ref, at)
                else:
                    self.click(ref, at)

    def context(self) -> ProgramContext:
        rhythm = {ref: ClickRhythm(sum(days.values()), max(days) - min(days) + 1,
                                   sum(n * n for n in days.values()),
                                   daily=tuple(sorted(days.items())))
                  for ref, days in self.daily.items()}
        return ProgramContext(referrer_clicks={r: x.clicks for r, x in rhythm.items()},
                              click_rhythm=rhythm)


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_a_run_of_clicks_that_all_buy_is_found_and_only_it(seed: int) -> None:
    program = Program(seed)
    for r in range(40):
        program.shares(f"r{r}", program.rng.randint(2, 8), 0.25)
    program.shares("victim", 10, 0.25)
    # Someone else's hands on the link: a click or two a day over ten days, each one buying
    start = START + program.rng.uniform(25, 35) * DAY
    bought = {program.customer("victim", start + program.rng.uniform(0, 10 * DAY))
              for _ in range(program.rng.randint(10, 14))}
    found = referrer_findings(program.conversions, program.context())
    runs = {ref for ref, fs in found.items() for f in fs if f.reason.code == "converting_run"}
    assert runs == {"victim"}
    run = next(f for f in found["victim"] if f.reason.code == "converting_run")
    carried = {c.customer for c in program.conversions
               if "victim" in c.referrers and run.carries(c)}
    assert len(bought & carried) >= 0.6 * len(bought)
    # The victim's own audience outside the run is not carried
    own = {c.customer for c in program.conversions if "victim" in c.referrers} - bought
    assert len(carried - bought) <= len(own) // 3
    scored = {s.assessment.conversion_id: s.assessment.score
              for s in assess_all(program.conversions, {}, program.context())}
    held = {c.customer for c in program.conversions if scored[c.conversion_id] >= DECISIVE}
    assert len(bought & held) >= 0.6 * len(bought)


@pytest.mark.parametrize("seed", [5, 6, 7])
def test_a_family_on_one_day_and_a_well_converting_audience_are_no_run(seed: int) -> None:
    program = Program(seed)
    for r in range(40):
        program.shares(f"r{r}", program.rng.randint(2, 8), 0.25)
    program.shares("family", 6, 0.2)
    day = START + 40 * DAY
    for _ in range(6):  # six of them at home buy within the evening, on one address
        program.customer("family", day + program.rng.uniform(0, 3600), ip="82.1.2.3")
    program.shares("close_friends", 12, 0.7)  # a referrer whose friends nearly all buy
    found = referrer_findings(program.conversions, program.context())
    assert not {ref for ref, fs in found.items() for f in fs
                if f.reason.code == "converting_run"}


def test_converting_run_needs_enough_customers_and_a_rate_beyond_its_own() -> None:
    daily = [(d, 3) for d in range(0, 60, 3)]
    arrivals = dict.fromkeys(range(0, 60, 3), 1)
    steady = converting_run(daily, arrivals, 0.2)  # a third of the clicks, throughout
    assert steady is None or steady.p_value > 0.01
    late = arrivals | dict.fromkeys(range(60, 70), 1)
    run = converting_run(daily + [(60 + i, 1) for i in range(10)], late, 0.2)
    assert run is not None and (run.first, run.last) == (60, 69) and run.customers == 10
    assert run.p_value < 1e-3
    few = arrivals | dict.fromkeys(range(60, 63), 1)
    small = converting_run(daily + [(60 + i, 1) for i in range(3)], few, 0.2)
    assert small is None or small.p_value > 0.01


def _buy(convs: list[ConversionFacts], who: str, at: float, ref: str = "r") -> int:
    convs.append(ConversionFacts(len(convs), who, at, (ref,), amount=5000))
    return len(convs) - 1


def test_a_chargeback_holds_the_customers_other_purchases_and_refunds_do_not() -> None:
    convs: list[ConversionFacts] = []
    disputed = _buy(convs, "thief", DAY)
    _buy(convs, "thief", 2 * DAY)
    _buy(convs, "changed_mind", DAY)
    _buy(convs, "changed_mind", 2 * DAY)
    reasons = chargeback_reasons(convs, [], frozenset({disputed}))
    assert set(reasons) == {"thief"}
    assert reasons["thief"].code == "charged_back_customer"
    assert reasons["thief"].family == "money" and reasons["thief"].weight >= DECISIVE
    assert chargeback_reasons(convs, [], frozenset()) == {}
    context = ProgramContext(reversed_ids=frozenset({disputed, 2}),
                             charged_back_ids=frozenset({disputed}))
    scored = {s.assessment.conversion_id: s.assessment.score
              for s in assess_all(convs, {}, context)}
    assert scored[1] >= DECISIVE  # not charged back yet, paid with the same card
    assert scored[3] < DECISIVE  # a refund is a customer changing their mind


def test_a_ring_with_disputed_members_is_held_and_a_campus_is_not() -> None:
    convs: list[ConversionFacts] = []
    members = [f"m{i}" for i in range(4)]
    disputed = {_buy(convs, m, DAY * (i + 1)) for i, m in enumerate(members[:2])}
    for m in members:
        _buy(convs, m, 10 * DAY)
    students = [f"s{i}" for i in range(100)]
    disputed |= {_buy(convs, s, DAY) for s in students[:2]}
    for s in students:
        _buy(convs, s, 5 * DAY)
    for i in range(400):  # the program's other customers
        _buy(convs, f"o{i}", 3 * DAY, ref=f"x{i % 40}")
    ring = Ring("ring", frozenset(("customer", m) for m in members),
                frozenset({("ip", "1.2.3.4")}), 0.3)
    campus = Ring("ring", frozenset(("customer", s) for s in students),
                  frozenset({("ip", "5.6.7.8")}), 0.3)
    reasons = chargeback_reasons(convs, [ring, campus], frozenset(disputed))
    assert {m for m in members if reasons[m].code == "ring_chargebacks"} == set(members)
    # The campus's two disputed students are held as customers; their classmates are not
    assert set(students) & set(reasons) == set(students[:2])
    assert all(reasons[s].code == "charged_back_customer" for s in students[:2])
