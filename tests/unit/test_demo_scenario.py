"""The demo's scenario (tracker.demo.scenario) and its growth history (tracker.demo.moments):
deterministic, the traffic the same with or without the growth part, and the growth part
consistent with the traffic."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tracker.demo import moments
from tracker.demo.scenario import ORGANIC, SMALL, Scenario

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)


def _planned(seed: int = 7) -> Scenario:
    scenario = Scenario(seed, NOW, SMALL)
    scenario.plan(live_injection=False)
    return scenario


def _traffic(s: Scenario) -> tuple[list[Any], list[Any]]:
    clicks = [(c.account.external_id, c.at, c.person.ip, c.person.user_agent, c.click_id,
               c.referer) for c in s.clicks]
    conversions = [(c.event_id, c.pattern, c.type, c.customer, c.at, c.amount)
                   for c in s.conversions]
    return clicks, conversions


def test_the_same_seed_plans_the_same_history() -> None:
    one, two = _planned(), _planned()
    assert _traffic(one) == _traffic(two)
    assert one.moments == two.moments
    assert [(s.account.external_id, s.channel, s.at) for s in one.shares] == \
        [(s.account.external_id, s.channel, s.at) for s in two.shares]
    assert [c.channel for c in one.clicks] == [c.channel for c in two.clicks]
    assert _traffic(_planned(8)) != _traffic(one)


def test_the_growth_history_leaves_the_traffic_as_it_was(monkeypatch: pytest.MonkeyPatch
                                                         ) -> None:
    grown = _planned()
    monkeypatch.setattr(moments, "plan_growth", lambda s: None)
    plain = _planned()
    assert not plain.moments and not plain.shares
    clicks, conversions = _traffic(grown)
    assert clicks == _traffic(plain)[0]
    # The growth history's conversions come after the traffic's, which are unchanged.
    assert conversions[:len(plain.conversions)] == _traffic(plain)[1]
    assert len(conversions) > len(plain.conversions)


def test_the_growth_history_is_consistent() -> None:
    s = _planned()
    bought: dict[str, datetime] = {}
    for c in s.conversions:
        if c.type == "purchase" and c.at is not None:
            bought[c.customer] = min(bought.get(c.customer, c.at), c.at)
    # Every moment is a customer's, after their first purchase, before now, with a unique id.
    assert len({m.event_id for m in s.moments}) == len(s.moments)
    assert all(m.customer in bought and bought[m.customer] < m.at < NOW for m in s.moments)
    assert {m.type for m in s.moments} == {"nps", "review", "milestone", "support_resolved"}
    assert all(0 <= (m.score or 0) <= 10 for m in s.moments if m.type == "nps")
    assert all(1 <= (m.score or 0) <= 5 for m in s.moments if m.type == "review")
    # Moments of delight in the last day, for advocates and for planted fraudsters alike.
    recent = {m.customer for m in s.moments if m.at > NOW - timedelta(days=1)}
    assert {a.external_id for a in s.organic[:moments.RECENT_ADVOCATES]} <= recent
    assert s.ring[0].external_id in recent and s.camouflaged[0].external_id in recent
    # Advocates (organic referrers and the base's) bought before the candidate model's
    # horizon (90 days), and the base's advocates referred friends by code.
    advocates = [*s.organic, *s.advocates]
    assert all(bought[a.external_id] < NOW - timedelta(days=90) for a in advocates)
    by_code = {c.referral_code.external_id for c in s.conversions
               if c.referral_code is not None and c.type == "purchase"}
    assert len(by_code & {a.external_id for a in s.advocates}) > len(s.advocates) // 2
    # Advocates answer NPS higher than the other customers (with noise: not all of them).
    ids = {a.external_id for a in advocates}
    theirs = [m.score or 0 for m in s.moments if m.type == "nps" and m.customer in ids]
    others = [m.score or 0 for m in s.moments if m.type == "nps" and m.customer not in ids
              and s.customers.get(m.customer) == ORGANIC]
    assert sum(theirs) / len(theirs) > sum(others) / len(others) + 1
    # Channel links: organic clicks only; each referrer shared on a channel before its first
    # click there.
    first: dict[tuple[str, str], datetime] = {}
    for k in s.clicks:
        if k.channel:
            assert k.account.pattern == ORGANIC and not k.live
            key = (k.account.external_id, k.channel)
            first[key] = min(first.get(key, k.at), k.at)
    assert {(sh.account.external_id, sh.channel) for sh in s.shares} == set(first)
    assert all(sh.at <= first[(sh.account.external_id, sh.channel)] for sh in s.shares)
    assert {sh.channel for sh in s.shares} == set(moments.CHANNELS)
