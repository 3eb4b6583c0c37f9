"""fraud/: referrer tests against a baseline the fraud itself does not pollute."""

from __future__ import annotations

import random

from fraud.assess import assess_all
from fraud.signals import (
    DAY,
    ClickFacts,
    ConversionFacts,
    ProgramContext,
    referrer_findings,
)


def _program(seed: int, farm_clicks: int, farm_conversions: int
             ) -> tuple[list[ConversionFacts], dict[str, int]]:
    """Thirty honest referrers converting a fifth of their clicks over 60 days, three paid
    sign-up referrers converting nearly every click (they inflate the program's rate), and a
    farm whose conversions all come in one afternoon."""
    rng = random.Random(seed)
    conversions: list[ConversionFacts] = []

    def convert(ref: str, at: float, delay: float) -> None:
        n = len(conversions)
        conversions.append(ConversionFacts(
            n, f"c{n}", at, (ref,), amount=1000 + 100 * rng.randrange(20),
            touches=(ClickFacts(f"k{n}", at - delay, ref, f"v{n}", f"10.0.{n // 250}.{n % 250}",
                                f"d{n}"),)))

    clicks: dict[str, int] = {}
    for r in range(30):
        clicks[f"r{r}"] = 100
        for _ in range(20):
            convert(f"r{r}", rng.uniform(0, 60 * DAY), rng.uniform(60, 3600))
    for p in range(3):
        clicks[f"paid{p}"] = 100
        for _ in range(90):
            convert(f"paid{p}", rng.uniform(0, 60 * DAY), rng.uniform(60, 3600))
    clicks["farm"] = farm_clicks
    start = 40 * DAY + rng.uniform(0, DAY)
    for _ in range(farm_conversions):
        convert("farm", start + rng.uniform(0, 6 * 3600), rng.uniform(60, 3600))
    return conversions, clicks


def test_a_farm_converting_well_is_found_against_the_rate_of_referrers_no_test_found() -> None:
    for seed in (1, 2, 3):
        # 60% of its clicks convert: three times the honest referrers' fifth, but under
        # HIGH_RATE_FACTOR times the program's rate, which the paid sign-ups inflate.
        conversions, clicks = _program(seed, 40, 24)
        context = ProgramContext(referrer_clicks=clicks)
        found = referrer_findings(conversions, context)
        codes = {ref: sorted(f.reason.code for f in fs) for ref, fs in found.items()}
        assert codes["farm"] == ["conversion_rate", "velocity"], codes
        rate = next(f for f in found["farm"] if f.reason.code == "conversion_rate")
        assert not rate.ties and 0.15 < float(str(rate.reason.threshold)) < 0.25
        assert not any(ref.startswith("r") for ref in found)
        scored = {s.assessment.conversion_id: s.assessment.score
                  for s in assess_all(conversions, {}, context)}
        farm = [scored[c.conversion_id] for c in conversions if c.referrers == ("farm",)]
        honest = [scored[c.conversion_id] for c in conversions if c.referrers[0][0] == "r"]
        assert min(farm) >= 0.5 and max(honest) < 0.5


def test_a_burst_that_converts_like_the_program_stays_a_hint() -> None:
    # A referrer's post gone viral: many clicks, conversions in one afternoon, but a fifth
    # of the clicks convert, like the honest referrers': the day alone holds nothing.
    conversions, clicks = _program(4, 120, 24)
    context = ProgramContext(referrer_clicks=clicks)
    found = referrer_findings(conversions, context)
    assert [f.reason.code for f in found["farm"]] == ["velocity"]
    scored = [s.assessment.score for s in assess_all(conversions, {}, context)
              if conversions[s.assessment.conversion_id].referrers == ("farm",)]
    assert max(scored) < 0.5
