"""fraud/: a referrer-level finding that holds a stream of conversions (a leaked code's or an
ad's shoppers, a refund farm's accounts) holds only the conversions that look like that stream:
the referrer's friends who took days to decide, or came by a share button or a direct link
where the stream never does, are not held on the referrer's reputation. Plain data, small
hand-built programs at several draws."""

from __future__ import annotations

import random

import pytest

from fraud.assess import DECISIVE, assess_all
from fraud.signals import (
    ClickFacts,
    ConversionFacts,
    ProgramContext,
    like_the_stream,
    referrer_findings,
)
from tests.unit.test_fraud_steady import _Program, _steady

DAY = 86400.0


def _tagged(program: _Program, ref: str, customer: str, day: float, delay: float,
            query: str) -> ConversionFacts:
    """A purchase whose click landed with `query` and no Referer (a share button's link)."""
    at = day * DAY
    conv = ConversionFacts(len(program.conversions), customer, at, (ref,),
                           touches=(ClickFacts("c", at - delay, ref, f"v{customer}",
                                               f"10.200.{len(program.conversions) % 250}.9",
                                               f"d{customer}", query=query),),
                           amount=4500)
    program.conversions.append(conv)
    return conv


def _scores(program: _Program, context: ProgramContext) -> dict[int, float]:
    return {s.assessment.conversion_id: s.assessment.score
            for s in assess_all(program.conversions, {}, context)}


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_leaks_friends_who_took_days_or_came_by_a_share_button_are_not_held(seed: int
                                                                              ) -> None:
    rng = random.Random(seed)
    program = _Program(rng)
    program.honest(40)
    clicks = rng.randint(20, 30)
    program.rhythm["leak"] = _steady(clicks, 40)
    # Shoppers who found the code buy minutes after the click, typed in or from a coupon site.
    takers = [program.buy("leak", f"t{i}", 20 + i * 40 / clicks,
                          max(30.0, rng.lognormvariate(6.4, 0.8)),
                          rng.choice([None, None, "couponfollow.example"]))
              for i in range(int(clicks * 0.7))]
    # A friend who clicked the link in a message and bought two days later; one who came by
    # the program's share button (a tagged landing) and bought that evening.
    slow = program.buy("leak", "friend1", 30, 2 * DAY)
    shared = _tagged(program, "leak", "friend2", 31, 8 * 3600,
                     "utm_source=whatsapp&utm_medium=referral")
    context = program.context()
    assert "steady_converting" in {f.reason.code for f in
                                   referrer_findings(program.conversions, context)["leak"]}
    scores = _scores(program, context)
    assert all(scores[c.conversion_id] >= DECISIVE for c in takers)
    assert scores[slow.conversion_id] < DECISIVE
    assert scores[shared.conversion_id] < DECISIVE


@pytest.mark.parametrize("seed", [4, 5])
def test_an_ad_streams_direct_visitor_is_a_friend_when_slower_than_the_stream(seed: int
                                                                               ) -> None:
    """Every shopper of the referrer's search ads came from the search engine: a customer
    with no Referer who took hours is a friend; one who bought as fast as the ads' shoppers
    is a shopper whose browser sent no Referer, and stays held."""
    rng = random.Random(seed)
    program = _Program(rng)
    program.honest(40)
    program.rhythm["ads"] = _steady(26, 40)
    takers = [program.buy("ads", f"a{i}", 15 + i * 1.5, rng.uniform(120, 7200),
                          "www.bing.com") for i in range(18)]
    friend = program.buy("ads", "friend", 33, 9 * 3600)
    dropped = program.buy("ads", "norefer", 34, 90)
    scores = _scores(program, program.context())
    assert all(scores[c.conversion_id] >= DECISIVE for c in takers)
    assert scores[dropped.conversion_id] >= DECISIVE
    assert scores[friend.conversion_id] < DECISIVE


def test_a_refund_farms_pending_purchases_are_held_and_a_slow_friends_is_not() -> None:
    rng = random.Random(6)
    program = _Program(rng)
    program.honest(40)
    farm = [program.buy("farm", f"f{i}", 5 + i * 3, rng.uniform(200, 1500))
            for i in range(8)]
    farm = [ConversionFacts(c.conversion_id, c.customer, c.at, c.referrers,
                            touches=c.touches, amount=4500) for c in farm]
    program.conversions[-8:] = farm
    pending = program.buy("farm", "f8", 40, 600)
    friend = program.buy("farm", "friend", 42, 2.5 * DAY)
    for conv in (pending, friend):
        program.conversions[conv.conversion_id] = ConversionFacts(
            conv.conversion_id, conv.customer, conv.at, conv.referrers,
            touches=conv.touches, amount=4500)
    context = ProgramContext(reversed_ids=frozenset(c.conversion_id for c in farm[:6]))
    found = {f.reason.code: f for f in referrer_findings(program.conversions, context)["farm"]}
    carries = found["refund_rate"].carries
    assert all(carries(c) for c in farm[:6])
    assert carries(program.conversions[pending.conversion_id])
    assert not carries(program.conversions[friend.conversion_id])


def _direct(i: int, delay: float, query: str | None = None) -> ConversionFacts:
    at = DAY * (10 + i)
    return ConversionFacts(i, f"c{i}", at, ("r",), touches=(
        ClickFacts("c", at - delay, "r", None, None, None, query=query),), amount=4500)


def test_a_tagged_landing_none_of_the_stream_carries_is_another_way_in() -> None:
    """A stream of untagged direct visits (a code copied off a coupon page): a customer who
    came through a share button's tagged link, however fast, came by another way; one with a
    medium tag the stream's others carry too (paid ads) came with the stream."""
    stream = [_direct(i, 400 + 50 * i) for i in range(10)]
    shared = _direct(10, 500, "utm_source=whatsapp&utm_medium=referral")
    untagged = _direct(11, 500)
    alike = like_the_stream([*stream, shared, untagged])
    assert not alike(shared)
    assert alike(untagged)
    paid = [_direct(i, 400 + 50 * i, "utm_source=bing&utm_medium=cpc") for i in range(10)]
    assert all(like_the_stream(paid)(c) for c in paid)


def test_too_few_in_a_stream_to_tell_holds_them_all() -> None:
    """Under three customers there is no pace or place to compare with."""
    convs = [ConversionFacts(i, f"c{i}", 1000.0 + i, ("r",),
                             touches=(ClickFacts("c", 900.0 + i - (9 * DAY if i == 2 else 0),
                                                 "r", None, None, None),))
             for i in range(3)]
    alike = like_the_stream(convs)
    assert all(alike(c) for c in convs)


@pytest.mark.parametrize("seed", [7, 8, 9])
def test_two_friends_who_both_came_by_the_share_button_are_still_friends(seed: int) -> None:
    """A leak's shoppers copy the bare code; two of the referrer's friends both came by the
    program's share button (a tagged landing, no Referer) and bought within hours. Each sees
    the other's tag: a tag a few of the stream carry (DIRECT_RARE) is not the stream's,
    while a tag most of it carries (an ad's paid medium) still is."""
    rng = random.Random(seed)
    program = _Program(rng)
    program.honest(40)
    clicks = rng.randint(24, 30)
    program.rhythm["leak"] = _steady(clicks, 40)
    takers = [program.buy("leak", f"t{i}", 20 + i * 40 / clicks,
                          max(30.0, rng.lognormvariate(6.4, 0.8)),
                          rng.choice([None, None, "couponfollow.example"]))
              for i in range(int(clicks * 0.7))]
    friends = [_tagged(program, "leak", f"friend{i}", 25 + 9 * i, rng.uniform(3, 6) * 3600,
                       "utm_source=whatsapp&utm_medium=referral") for i in range(2)]
    context = program.context()
    scores = _scores(program, context)
    assert all(scores[c.conversion_id] >= DECISIVE for c in takers)
    assert all(scores[c.conversion_id] < DECISIVE for c in friends)
    stream = [c for c in program.conversions if "leak" in c.referrers]
    alike = like_the_stream(stream)
    assert not any(alike(c) for c in friends)
    paid = [_tagged(program, "ads", f"a{i}", 10 + i, rng.uniform(120, 900), "utm_medium=cpc")
            for i in range(10)]
    assert all(like_the_stream(paid)(c) for c in paid)
