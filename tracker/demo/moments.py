"""The demo's growth history (issue 15), pure data like the rest of tracker.demo.scenario:
customers' moments (NPS answers, reviews, milestones, resolved support tickets), the advocates
among them who refer, their shares on channels, and the channel of each organic click's link.

- Advocates: the organic referrers are customers too (a purchase in the history's first days)
  and answer like promoters (NPS 9-10 mostly, four- and five-star reviews). Other customers
  answer as a program's customers do: a minority of promoters, and promoters who never refer
  are the candidate model's noise. Planted fraudsters rave (NPS 10, five stars).
- Channels: an organic click whose referer is X, Gmail or Facebook went through the
  referrer's link for that channel (links.channel), and the referrer shared on that channel
  (a share, as the share page records it) shortly before the first such click.
- Moments of delight in the last day, for the asks job to send, suppress and expire: the
  biggest advocates (a milestone or NPS 10; the first of them twice, the second meets the
  cooldown), a few other customers (mostly outside the top share) and two planted fraudsters
  (suppressed: fraud). Every moment of the history before the last day is past its 24 hours
  (expired, `late`).

Its own random stream (from the seed): the traffic of the scenario is the same with or without
it, and the whole is deterministic for a given seed and `now`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

# (tracker.demo.scenario imports this module when it plans, not at its top.)
from tracker.demo.scenario import (
    BROWSERS,
    LANGUAGES,
    ORGANIC,
    PLANS,
    Account,
    Person,
    Scenario,
)
from tracker.formats import rfc3339

# The referer a click came with -> the share channel of the link it went through.
CHANNEL_OF_REFERER = {"https://t.co/": "x", "https://mail.google.com/": "email",
                      "https://www.facebook.com/": "facebook"}
CHANNELS = tuple(sorted(set(CHANNEL_OF_REFERER.values())))
NPS_ADVOCATE = ((7, 8, 9, 10), (1, 2, 4, 5))
NPS_OTHER = (tuple(range(11)), (2, 1, 1, 2, 2, 4, 6, 9, 12, 9, 6))
STARS_ADVOCATE = ((3, 4, 5), (1, 3, 8))
STARS_OTHER = ((1, 2, 3, 4, 5), (2, 2, 4, 6, 5))
MILESTONES = ("first_order_shipped", "tenth_order", "first_team_member", "one_year")
BASE_DAYS = (95, 220)  # the customer base bought this many days ago: before the model's horizon
RECENT_ADVOCATES = 6  # advocates with a moment of delight in the last day
RECENT_OTHERS = 8  # other customers with one


@dataclass(frozen=True, slots=True)
class Moment:
    """A customer's event, as POST /api/v1/events takes it."""

    event_id: str
    customer: str
    type: str
    at: datetime
    score: float | None = None
    properties: dict[str, Any] | None = None

    def body(self, program: str) -> dict[str, Any]:
        body: dict[str, Any] = {"program": program, "event_id": self.event_id,
                                "customer_id": self.customer, "type": self.type,
                                "occurred_at": rfc3339(self.at)}
        if self.score is not None:
            body["score"] = self.score
        if self.properties:
            body["properties"] = self.properties
        return body


@dataclass(frozen=True, slots=True)
class Share:
    """A share the referrer made on a channel (POST /api/v1/shares)."""

    account: Account
    channel: str
    at: datetime


def plan_growth(s: Scenario) -> None:
    rng = s.growth_rng
    _channels(s, rng)
    _customer_base(s, rng)
    _advocates_refer(s, rng)
    _moments(s, rng)
    _recent_moments(s, rng)


def _channels(s: Scenario, rng: random.Random) -> None:
    first: dict[tuple[str, str], datetime] = {}
    accounts = {a.external_id: a for a in s.organic}
    for click in s.clicks:
        if click.account.pattern == ORGANIC and not click.live:
            click.channel = CHANNEL_OF_REFERER.get(click.referer, "")
            if click.channel:
                key = (click.account.external_id, click.channel)
                first[key] = min(first.get(key, click.at), click.at)
    for (external_id, channel), at in sorted(first.items()):
        shared = max(s.start, at - timedelta(minutes=rng.uniform(5, 600)))
        s.shares.append(Share(accounts[external_id], channel, shared))


def _bought(s: Scenario, rng: random.Random, customer: str) -> None:
    """A customer of before the clicks' history: a purchase, maybe a renewal (their signups
    are older than anything the demo shows)."""
    price = rng.choices([p for p, _ in PLANS], weights=[w for _, w in PLANS])[0]
    bought_at = s.now - timedelta(days=rng.uniform(*BASE_DAYS))
    s.convert(ORGANIC, "purchase", customer, bought_at, amount=price)
    if rng.random() < 0.3:
        s.convert(ORGANIC, "renewal", customer, bought_at + timedelta(days=30), amount=price)


def _customer_base(s: Scenario, rng: random.Random) -> None:
    """The program's customers of before its clicks' history, the referrers among them: most
    never refer (the candidate model's negatives)."""
    for account in (*s.organic, *s.advocates):
        _bought(s, rng, account.external_id)
    for _ in range(s.size.customer_base):
        _bought(s, rng, s.new_id(rng=rng))


def _advocates_refer(s: Scenario, rng: random.Random) -> None:
    """The base's advocates tell friends, who sign up with their code (no click) and mostly
    buy."""
    for account in s.advocates:
        for _ in range(rng.choice((1, 1, 2, 3))):
            person = Person(s.home_ip(rng), rng.choice(BROWSERS).format(v=rng.randint(1, 130)),
                            rng.choice(LANGUAGES))
            at = s.start + (s.history_end - timedelta(days=2) - s.start) * rng.random()
            customer = s.new_id(rng=rng)
            s.convert(ORGANIC, "signup", customer, at, person=person, email=s.email(rng),
                      referral_code=account)
            if rng.random() < 0.8:
                s.convert(ORGANIC, "purchase", customer,
                          at + timedelta(hours=rng.uniform(1, 30)), person=person,
                          amount=rng.choices([p for p, _ in PLANS],
                                             weights=[w for _, w in PLANS])[0],
                          referral_code=account)


def _moment(s: Scenario, customer: str, type_: str, at: datetime, *,
            score: float | None = None, properties: dict[str, Any] | None = None) -> None:
    if at <= s.now - timedelta(minutes=2):
        s.moments.append(Moment(f"evt_{len(s.moments):06d}", customer, type_, at, score,
                                properties))


def _moments(s: Scenario, rng: random.Random) -> None:
    advocates = {a.external_id for a in (*s.organic, *s.advocates)}
    bought: dict[str, datetime] = {}
    for conv in s.conversions:
        if conv.type == "purchase" and conv.at is not None:
            bought.setdefault(conv.customer, conv.at)
    last = s.history_end - timedelta(days=1)
    for customer, at in sorted(bought.items(), key=lambda kv: (kv[1], kv[0])):
        if at >= last:  # bought within the last day: no moment of theirs is history yet
            continue
        advocate = customer in advocates
        fraud = s.customers.get(customer, ORGANIC) != ORGANIC

        def later() -> datetime:
            return min(last, at + timedelta(days=rng.uniform(1, 25)))  # noqa: B023

        if rng.random() < (0.9 if advocate or fraud else 0.55):
            nps = 10 if fraud else rng.choices(*(NPS_ADVOCATE if advocate else NPS_OTHER))[0]
            _moment(s, customer, "nps", later(), score=nps)
        if rng.random() < (0.6 if advocate or fraud else 0.25):
            stars = 5 if fraud else rng.choices(*(STARS_ADVOCATE if advocate else
                                                  STARS_OTHER))[0]
            _moment(s, customer, "review", later(), score=stars)
        if rng.random() < 0.3:
            _moment(s, customer, "milestone", later(),
                    properties={"name": rng.choice(MILESTONES)})
        if rng.random() < 0.12:
            _moment(s, customer, "support_resolved", later(), properties={"channel": "chat"})


def _recent_moments(s: Scenario, rng: random.Random) -> None:
    def recent() -> datetime:
        return s.now - timedelta(hours=rng.uniform(1, 20))

    for i, account in enumerate(s.organic[:RECENT_ADVOCATES]):  # the biggest reach first
        at = recent()
        if i % 2:
            _moment(s, account.external_id, "milestone", at, properties={"name": "tenth_order"})
        else:
            _moment(s, account.external_id, "nps", at, score=10)
        if i == 0:  # a second moment the same day: the cooldown keeps them from a second ask
            _moment(s, account.external_id, "review", at + timedelta(minutes=40), score=5)
    advocates = {a.external_id for a in (*s.organic, *s.advocates)}
    others = sorted(c for c, p in s.customers.items() if p == ORGANIC and c not in advocates
                    and any(m.customer == c for m in s.moments))
    for customer in rng.sample(others, min(RECENT_OTHERS, len(others))):
        _moment(s, customer, "nps", recent(), score=rng.choice((9, 10)))
    for account in (s.ring[0], s.camouflaged[0]):
        _moment(s, account.external_id, "nps", recent(), score=10)
