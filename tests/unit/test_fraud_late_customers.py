"""fraud/: click spam that converts like the program (steady_late_clicks) is carried by the
customers whose first conversion through the referrer came late, the unit its test counts: a
friend who signed up minutes after the referrer's link and bought days later through the same
click was brought by the click, not found by one fired at someone buying anyway. Plain data,
small hand-built programs at several draws."""

from __future__ import annotations

import random

import pytest

from fraud.assess import DECISIVE, assess_all
from fraud.signals import (
    ClickFacts,
    ClickRhythm,
    ConversionFacts,
    ProgramContext,
    _steady_late_findings,
)

DAY = 86400.0
HOUR = 3600.0


class _Program:
    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.conversions: list[ConversionFacts] = []
        self.rhythm: dict[str, ClickRhythm] = {}

    def visit(self, ref: str, customer: str, clicked: float, delays: list[float],
              source: str | None = None) -> list[ConversionFacts]:
        """A click at `clicked` (days), then a sign-up and purchases `delays` seconds after."""
        net = len(self.conversions) % 60_000
        touch = ClickFacts("c", clicked * DAY, ref, f"v-{customer}",
                           f"10.{net // 250}.{net % 250}.1", f"d-{customer}", source=source)
        made = []
        for i, delay in enumerate(delays):
            conv = ConversionFacts(
                len(self.conversions), customer, clicked * DAY + delay, (ref,),
                touches=(touch,),
                amount=0 if i == 0 else self.rng.choice([1900, 2900, 4500, 7900]))
            self.conversions.append(conv)
            made.append(conv)
        return made

    def honest(self, n: int) -> None:
        """Referrers who share their link a few times (bursts of clicks): their customers sign
        up minutes to hours after the click, and buy then or days later."""
        for i in range(n):
            ref = f"r{i}"
            clicks = self.rng.randint(20, 40)
            bursts = self.rng.randint(2, 4)
            each = clicks // bursts
            self.rhythm[ref] = ClickRhythm(clicks, 40, bursts * each * each)
            for j in range(max(3, clicks // 5)):
                signup = self.rng.uniform(60, 6 * HOUR)
                buys = [signup + self.rng.choice([300.0, self.rng.uniform(1, 9) * DAY])]
                self.visit(ref, f"{ref}-c{j}", self.rng.uniform(2, 50), [signup, *buys],
                           self.rng.choice([None, "t.co", "www.facebook.com"]))

    def spam(self, ref: str, n: int) -> tuple[list[ConversionFacts], list[ConversionFacts]]:
        """A steady stream of clicks fired at visitors, whose customers came days later; and
        two friends of the referrer who signed up minutes after its link, and bought days
        later through the same click."""
        self.rhythm[ref] = ClickRhythm(12 * n, 50, 12 * n)
        spammed = []
        for j in range(n):
            late = self.rng.uniform(2, 20) * DAY
            spammed += self.visit(ref, f"{ref}-s{j}", self.rng.uniform(2, 40),
                                  [late, late + 600])[1:]
        friends = []
        for j in range(2):
            signup = self.rng.uniform(5, 40) * 60
            friends += self.visit(ref, f"{ref}-f{j}", self.rng.uniform(2, 40),
                                  [signup, signup + self.rng.uniform(2, 5) * DAY])[1:]
        return spammed, friends

    def context(self) -> ProgramContext:
        return ProgramContext(referrer_clicks={r: x.clicks for r, x in self.rhythm.items()},
                              click_rhythm=self.rhythm)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_late_click_spam_is_carried_by_late_customers_not_by_friends_buying_later(
        seed: int) -> None:
    rng = random.Random(seed)
    program = _Program(rng)
    program.honest(60)
    spammed, friends = program.spam("spam", rng.randint(14, 22))
    found = _steady_late_findings(program.conversions, program.context(), set())
    assert "spam" in found
    finding = found["spam"]
    assert all(finding.carries(c) for c in spammed)
    assert not any(finding.carries(c) for c in friends)

    scored = {s.assessment.conversion_id: s.assessment
              for s in assess_all(program.conversions, {}, program.context())}
    held = [c for c in spammed if scored[c.conversion_id].score >= DECISIVE]
    assert len(held) >= 0.9 * len(spammed)
    assert all(scored[c.conversion_id].score < DECISIVE for c in friends)
