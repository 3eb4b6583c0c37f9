"""Click spam and click injection that hide in small pieces (issue 13), at several parameter
draws, through the library: an app that fires clicks through several referrers' links without
a Referer, marking its landings its own way, and an injector with two purchases beside a big
one whose purchases are much of the program's fastest."""

from __future__ import annotations

import math
from collections import Counter, defaultdict

import pytest

from fraud.assess import DECISIVE, assess_all
from fraud.signals import (
    DAY,
    ConversionFacts,
    ProgramContext,
    referrer_findings,
    traffic_source,
)
from tests.unit.test_fraud_population import Program


def _sources(program: Program) -> tuple[dict[str, int], dict[str, dict[str, int]]]:
    """The program's visits per traffic source and per referrer, counted from the clicks its
    conversions came through."""
    by: dict[str, Counter[str]] = defaultdict(Counter)
    seen: set[str] = set()
    for conv in program.conversions:
        for t in conv.touches:
            source = traffic_source(t)
            if source is not None and t.click_id not in seen:
                seen.add(t.click_id)
                by[source][t.referrer] += 1
    return {s: sum(c.values()) for s, c in by.items()}, {s: dict(c) for s, c in by.items()}


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_an_app_that_marks_its_landings_is_one_source_of_click_spam(seed: int) -> None:
    """An app fires clicks through the links of four to six referrers, without a Referer;
    half its landings carry its sub-publisher id, the rest nothing. The visitors it reaches
    buy days later, as they would have anyway, and few of them: each referrer alone has too
    few conversions to tell. The app's marked landings, pooled over the referrers, convert
    far less and later than the program's: click spam, and every late purchase of the
    referrers placed on it (marked or not) carries it; the honest referrers' do not."""
    program = Program(seed)
    rng = program.rng
    program.visited(40, ("www.facebook.com", "mail.google.com", None))
    spammers = [f"spam{i}" for i in range(rng.randint(4, 6))]
    marked: Counter[str] = Counter()
    spammed: list[ConversionFacts] = []
    for ref in spammers:
        for i in range(rng.randint(2, 4)):
            query = f"sub_id={rng.randrange(10 ** 5)}" if i % 2 == 0 else None
            marked[ref] += query is not None
            spammed += program.referral(ref, program.when(), delay=rng.uniform(2 * DAY, 14 * DAY),
                                        query=query)
    source_clicks, source_referrers = _sources(program)
    for ref in spammers:  # the visitors it reached who never bought
        fired = rng.randint(60, 120)
        program.clicks[ref] += fired
        source_referrers["?sub_id"][ref] += fired // 2
        source_clicks["?sub_id"] += fired // 2
    context = ProgramContext(referrer_clicks=program.clicks, source_clicks=source_clicks,
                             source_referrers=source_referrers)

    found = referrer_findings(program.conversions, context)
    spam = {ref: f for ref, fs in found.items() for f in fs
            if f.reason.code == "click_spam_source"}
    assert set(spam) == set(spammers), sorted(spam)
    assert all("landings marked sub_id" in f.reason.message for f in spam.values())
    purchases = [c for c in spammed if c.amount > 0]
    assert all(spam[c.referrers[0]].carries(c) for c in purchases)
    risk = {a.assessment.conversion_id: a.assessment.score
            for a in assess_all(program.conversions, {}, context)}
    assert all(risk[c.conversion_id] >= DECISIVE for c in purchases)


def _honest_delay(program: Program) -> float:
    """People's click-to-purchase delays: a minute to weeks, log-uniform."""
    return math.exp(program.rng.uniform(math.log(60), math.log(20 * DAY)))


def _injected(program: Program, ref: str, purchases: int, fastest: float, slowest: float
              ) -> list[ConversionFacts]:
    """Customers who signed up on their own, then bought; a click on `ref`'s link was fired
    seconds before each purchase."""
    return [program.referral(ref, program.when(), signup_first=True,
                             delay=program.rng.uniform(fastest, slowest))[1]
            for _ in range(purchases)]


def _program(seed: int) -> Program:
    program = Program(seed)
    for r in range(60):
        for _ in range(program.rng.randint(2, 6)):
            program.referral(f"r{r}", program.when(), delay=_honest_delay(program),
                             signup_first=program.rng.random() < 0.1)
    return program


@pytest.mark.parametrize("seed", [5, 6, 7, 8])
def test_two_injected_purchases_stand_out_beside_a_big_injector(seed: int) -> None:
    """A big injector's purchases (seconds after the click) are much of the program's
    fastest: a cut measured with them in it sits at their delays, and a small injector's two
    purchases, 5 to 40 s after the click, are not under it. Measured again without the
    referrers found, the cut is the honest purchases' and the two purchases are under it:
    held as click injection."""
    program = _program(seed)
    _injected(program, "big", program.rng.randint(8, 14), 2, 30)
    small = _injected(program, "small", 2, 5, 40)
    context = ProgramContext(referrer_clicks=program.clicks)

    found = referrer_findings(program.conversions, context)
    codes = {ref: {f.reason.code for f in fs} for ref, fs in found.items()}
    # Found on the fastest purchases (or, where its customers' journeys tell, on clicks
    # that landed after they had signed up).
    assert codes.get("small", set()) & {"fast_purchases", "interjected_clicks"}, codes
    assert not any("fast_purchases" in c for ref, c in codes.items() if ref.startswith("r"))
    risk = {a.assessment.conversion_id: a.assessment.score
            for a in assess_all(program.conversions, {}, context)}
    assert all(risk[c.conversion_id] >= DECISIVE for c in small)


@pytest.mark.parametrize("seed", [9, 10, 11])
def test_one_fast_buyer_or_quick_friends_are_not_injection(seed: int) -> None:
    """One purchase a few seconds after its click happens to honest referrers (a buyer who
    had the page open); friends who buy within minutes buy at a person's pace. Neither is
    click injection."""
    program = _program(seed)
    _injected(program, "lucky", 1, 5, 40)
    for _ in range(program.rng.randint(3, 5)):
        program.referral("friends", program.when(), delay=program.rng.uniform(70, 300))
    found = referrer_findings(program.conversions, ProgramContext(referrer_clicks=program.clicks))
    fast = {ref for ref, fs in found.items() for f in fs if f.reason.code == "fast_purchases"}
    assert not fast, fast
