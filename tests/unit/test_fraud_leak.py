"""fraud/: a referrer's misuse of the program beyond fake customers: refund farming, a link
leaked as a public coupon or bought as search ads. Plain data, small hand-built programs."""

from __future__ import annotations

import random
from dataclasses import replace

from fraud.assess import DECISIVE, FLAG_CAP, assess_all
from fraud.signals import (
    ClickFacts,
    ClickRhythm,
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


def _link(ref: str, start: int, n: int, delay: tuple[float, float], rng: random.Random,
          fast: float = 0.0) -> list[ConversionFacts]:
    """n purchases of ref's customers, a share `fast` of them within minutes of the click,
    the others `delay` seconds after it."""
    out = []
    for i in range(n):
        at = rng.uniform(1, 60) * DAY
        wait = rng.uniform(60, 1800) if rng.random() < fast else rng.uniform(*delay)
        out.append(ConversionFacts(start + i, f"{ref}-c{i}", at, (ref,),
                                   touches=(_touch(at - wait, ref),), amount=4500))
    return out


def test_leaked_link_is_held_for_review_and_an_influencer_in_bursts_is_not() -> None:
    rng = random.Random(6)
    conversions: list[ConversionFacts] = []
    clicks: dict[str, int] = {}
    rhythm: dict[str, ClickRhythm] = {}
    for r in range(30):  # ordinary referrers: 8 of 100 clicks convert, a third at once
        ref = f"r{r}"
        conversions += _link(ref, 100 * r, 8, (3600, 5 * DAY), rng, fast=0.3)
        clicks[ref] = 100
        rhythm[ref] = ClickRhythm(100, 30, 3 * 33 ** 2)  # three shares, a burst each
    # A code on a coupon page: half of its 32 clicks buy, sooner than the program's buyers,
    # one or two clicks every day (no burst).
    conversions += _link("leak", 5000, 16, (1800, 1.5 * DAY), rng, fast=0.3)
    clicks["leak"], rhythm["leak"] = 32, ClickRhythm(32, 30, 28 + 2 * 4)
    # An influencer: half of 200 clicks buy, as the program's do, in bursts after each post.
    conversions += _link("star", 6000, 100, (3600, 5 * DAY), rng, fast=0.3)
    clicks["star"], rhythm["star"] = 200, ClickRhythm(200, 30, 4 * 50 ** 2)
    context = ProgramContext(referrer_clicks=clicks, click_rhythm=rhythm)
    reasons = referrer_reasons(conversions, context)
    assert {r.code for r in reasons["leak"]} == {"conversion_rate", "leaked_link"}
    assert {r.code for r in reasons["star"]} == {"conversion_rate"}
    assert not any(f"r{r}" in reasons for r in range(30))
    scored = {s.assessment.conversion_id: s.assessment
              for s in assess_all(conversions, {}, context)}
    held = [scored[i] for i in range(5000, 5016) if scored[i].score >= DECISIVE]
    assert len(held) >= 12 and all(a.score <= FLAG_CAP for a in held)  # flagged, not rejected
    leaked = next(r for r in held[0].reasons if r.code == "leaked_link")
    assert leaked.family == "population" and "steady stream" in leaked.message
    assert all(scored[i].score < DECISIVE for i in range(6000, 6100))
    assert all(scored[i].score < DECISIVE for r in range(30) for i in range(100 * r,
                                                                          100 * r + 8))
    # The same link shared in bursts is an audience, not a leak.
    bursts = ProgramContext(referrer_clicks=clicks, click_rhythm={
        **rhythm, "leak": ClickRhythm(32, 30, 2 * 16 ** 2)})
    assert {r.code for r in referrer_reasons(conversions, bursts)["leak"]} == {
        "conversion_rate"}
    # Colleagues buying through a link on the office intranet: one network, an audience.
    office = [c if c.referrers != ("leak",) else replace(c, touches=(
        replace(c.touches[0], ip=f"81.2.69.{c.conversion_id % 3}"),)) for c in conversions]
    assert {r.code for r in referrer_reasons(office, context)["leak"]} == {"conversion_rate"}
