"""A referrer's conversion rate is tested against what the program's keen referrers reach, not
the click-weighted pooled rate (issue 13: referrer-level tests against the program's own
baseline). Influencers' large audiences of strangers convert little and pull the pooled rate
down; a popular customer's friends convert as well as other keen referrers' and are no farm.
Hand-built programs at several draws."""

from __future__ import annotations

import random

import pytest

from fraud.signals import DAY, ClickFacts, ConversionFacts, ProgramContext, referrer_findings


class Program:
    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.conversions: list[ConversionFacts] = []
        self.clicks: dict[str, int] = {}

    def link(self, ref: str, clicks: int, rate: float) -> None:
        """`clicks` visitors on `ref`'s link over two months, `rate` of them buying."""
        self.clicks[ref] = clicks
        for _ in range(round(clicks * rate)):
            name = f"c{len(self.conversions)}"
            at = self.rng.uniform(2 * DAY, 58 * DAY)
            ip = f"81.{self.rng.randrange(256)}.{self.rng.randrange(256)}.{self.rng.randrange(256)}"
            touch = ClickFacts(f"k-{name}", at, ref, f"v-{name}", ip, f"d-{name}")
            self.conversions.append(ConversionFacts(
                len(self.conversions), name, at + self.rng.uniform(1800, 6 * 3600), (ref,),
                touches=(touch,), amount=self.rng.choice((1900, 2900, 4900))))

    def codes(self, ref: str) -> set[str]:
        found = referrer_findings(self.conversions, ProgramContext(referrer_clicks=self.clicks))
        return {f.reason.code for f in found.get(ref, [])}


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_popular_referrer_converts_like_the_keen_ones(seed: int) -> None:
    program = Program(seed)
    rng = program.rng
    for r in range(40):  # friends' links: a tenth to two fifths of their clicks buy
        program.link(f"r{r}", rng.randint(12, 30), rng.uniform(0.1, 0.4))
    for i in range(4):  # influencers: hundreds of clicks, a few percent buy
        program.link(f"creator{i}", rng.randint(500, 800), rng.uniform(0.02, 0.04))
    program.link("popular", rng.randint(120, 150), 0.36)
    program.link("farm", rng.randint(16, 22), 0.9)
    assert "conversion_rate" not in program.codes("popular")
    assert "conversion_rate" in program.codes("farm")
