"""fraud/: a referrer's misuse of the program beyond fake customers: refund farming and paid
clicks (search ads on the brand). Plain data, small hand-built programs."""

from __future__ import annotations

import random

from fraud.assess import DECISIVE, FLAG_CAP, assess_all
from fraud.signals import (
    ClickFacts,
    ConversionFacts,
    ProgramContext,
    paid_markers,
    referrer_reasons,
    touch_reasons,
)

DAY = 86400.0


def _touch(at: float, ref: str, query: str | None = None, ip: str | None = None
           ) -> ClickFacts:
    """A click from a network of its own (unless `ip` says otherwise)."""
    net = int(at) % 65_000
    return ClickFacts("c", at, ref, f"v{at}", ip or f"10.{net // 250}.{net % 250}.1", f"d{at}",
                      query=query)


def test_paid_markers_are_ad_click_ids_and_paid_media_not_organic_share_ids() -> None:
    assert paid_markers("gclid=Cj0K&utm_source=google") == ["gclid"]
    assert paid_markers("utm_source=bing&utm_medium=CPC&msclkid=1") == ["utm_medium=cpc",
                                                                       "msclkid"]
    # Facebook appends fbclid to every outbound link, an organic share's too.
    assert paid_markers("fbclid=IwZX&utm_medium=social") == []
    assert paid_markers(None) == [] and paid_markers("utm_medium=referral") == []
    conv = ConversionFacts(1, "bob", 5000.0, ("alice",),
                           touches=(_touch(1000.0, "alice", "utm_medium=cpc&utm_source=g"),))
    paid = [r for r in touch_reasons(conv) if r.code == "paid_click_id"]
    assert paid and paid[0].family == "click" and paid[0].weight >= DECISIVE
    shared = ConversionFacts(2, "carol", 5000.0, ("alice",),
                             touches=(_touch(1000.0, "alice", "fbclid=IwZX"),))
    assert [r.code for r in touch_reasons(shared)] == []


def _program(rng: random.Random, start: int = 0) -> list[ConversionFacts]:
    """20 ordinary referrers, 10 purchases each over 60 days at varied amounts."""
    out = []
    for i in range(200):
        at = rng.uniform(0, 60) * DAY
        out.append(ConversionFacts(start + i, f"c{i}", at, (f"r{i % 20}",),
                                   touches=(_touch(at - rng.uniform(600, 3 * DAY),
                                                   f"r{i % 20}"),),
                                   amount=rng.choice([1900, 2900, 4500, 7900, 12900])))
    return out


def test_refund_farm_purchases_not_refunded_yet_are_held_and_its_others_are_not() -> None:
    rng = random.Random(3)
    program = _program(rng)
    reversed_ids = {c.conversion_id for c in program[::50]}  # the program's: 2%

    def purchase(cid: int, day: float, amount: int) -> ConversionFacts:
        at = day * DAY
        return ConversionFacts(cid, f"f{cid}", at, ("farm",),
                               touches=(_touch(at - rng.uniform(600, 3 * DAY), "farm"),),
                               amount=amount)

    refunded = [purchase(1000 + i, 2 + 4 * i, 4900 + 100 * (i % 3)) for i in range(10)]
    pending = [purchase(1100 + i, 48 + 3 * i, 5000) for i in range(4)]  # too recent
    had_time = [purchase(1200 + i, 5 + 10 * i, 5000) for i in range(3)]  # never refunded
    elsewhere = [purchase(1300 + i, 50 + 2 * i, 19900) for i in range(3)]  # other amounts
    reversed_ids |= {c.conversion_id for c in refunded}
    conversions = program + refunded + pending + had_time + elsewhere
    context = ProgramContext(reversed_ids=frozenset(reversed_ids))
    assert [r.code for r in referrer_reasons(conversions, context)["farm"]] == ["refund_rate"]
    scored = {s.assessment.conversion_id: s.assessment
              for s in assess_all(conversions, {}, context)}
    for conv in refunded + pending:
        a = scored[conv.conversion_id]
        assert DECISIVE <= a.score <= FLAG_CAP, conv  # held for finance, never rejected
        assert any(r.code == "refund_rate" and r.family == "population" for r in a.reasons)
    for conv in had_time + elsewhere:
        a = scored[conv.conversion_id]
        assert a.score < DECISIVE and "untied_referral" in {r.code for r in a.reasons}, conv
    assert all(scored[c.conversion_id].score < DECISIVE for c in program
               if c.conversion_id not in reversed_ids)


def test_refunds_are_counted_against_a_referrers_payments_not_its_sign_ups() -> None:
    """A subscription program's referees sign up and start a trial before paying: only the
    payment can come back, so a referrer whose paid referees refund half of their payments is
    a refund farm however many free sign-ups and trials each of them also made."""
    rng = random.Random(4)
    program = _program(rng)
    reversed_ids = {c.conversion_id for c in program[::25]}  # the program's: 4%
    conversions = list(program)
    for i in range(10):
        at = (3 + 5 * i) * DAY
        touch = (_touch(at - rng.uniform(600, 3 * DAY), "farm"),)
        for step, amount in enumerate((0, 0, 0, 23900)):  # sign-up, trial, another, payment
            conversions.append(ConversionFacts(5000 + 10 * i + step, f"f{i}", at + step * 60,
                                               ("farm",), touches=touch, amount=amount))
        if i % 2:
            reversed_ids.add(5000 + 10 * i + 3)
    context = ProgramContext(reversed_ids=frozenset(reversed_ids))
    assert "refund_rate" in [r.code for r in referrer_reasons(conversions, context)["farm"]]
