"""Fraud signals, each a reason with its measured value, its threshold and its weight.

Input is plain data (`ConversionFacts`, `ReferrerFacts`, `ProgramContext`); output is lists of
`Reason`s: a conversion's own (`conversion_reasons`), a referrer's as a whole
(`referrer_reasons`), a shared device's (`shared_device_reasons`), a shared browser cookie's
(`shared_cookie_reasons`). fraud.assess puts them
together with rings and the finance model into a conversion's risk.
"""

from __future__ import annotations

import itertools
import math
import warnings
from bisect import bisect_left, bisect_right
from collections import Counter, defaultdict
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

import numpy as np
from scipy import stats
from scipy.special._ufuncs import _binom_sf  # stats.binom.sf without its checks

from fraud.useragents import parse_user_agent
from geo.reader import ip_prefix

# Ids an ad network appends to the landing URL of a paid click only. Not fbclid (or twclid):
# Facebook (and X) append theirs to every outbound link, an organic share's included.
PAID_CLICK_IDS = ("gclid", "gbraid", "wbraid", "msclkid", "ttclid", "li_fat_id", "dclid")
# utm_medium values of bought traffic (cost per click or per impression, search ads)
PAID_MEDIA = frozenset({"cpc", "ppc", "cpm", "paid", "paidsearch", "paid_search", "paid-search",
                        "sem"})
INJECTION_SECONDS = 10.0


@dataclass(frozen=True, slots=True)
class Reason:
    code: str
    message: str
    value: object
    threshold: object
    weight: float
    # The family of evidence it belongs to (fraud.assess.FAMILIES): a family counts once.
    family: str = ""
    strong: bool = False  # strong identity evidence: enough on its own to reject

    def as_dict(self) -> dict[str, object]:
        return {"code": self.code, "message": self.message, "value": self.value,
                "threshold": self.threshold, "weight": self.weight, "family": self.family,
                "strong": self.strong}


@dataclass(frozen=True, slots=True)
class ClickFacts:
    click_id: str
    at: float  # unix seconds
    referrer: str  # external id
    visitor: str | None
    ip: str | None
    device: str | None  # fingerprint hex
    is_bot: bool = False
    bot_rule: str | None = None
    anonymous: bool = False
    hosting: bool = False
    country: str | None = None
    query: str | None = None
    headerless: bool = False  # no Accept-Language: every browser sends one on a navigation
    language: str | None = None  # the Accept-Language header as sent
    browser: str | None = None  # the user agent's browser family
    source: str | None = None  # the Referer's host: the site the visit came from
    agent: str | None = None  # the User-Agent as sent
    # Other visitors' clicks on the same referrer's link from the same IP within
    # REPEAT_LEASE_SECONDS before this one: (unix seconds, visitor, User-Agent), the visitor
    # None where its cookie is tied to no customer. Where a household lease starts.
    before: tuple[tuple[float, str | None, str | None], ...] = ()
    # (unix seconds, cookie) of the visits in `before` whose cookie is tied to no customer:
    # one such browser before several new customers' first visits is a repeated lease
    # (repeat_lease_reasons).
    untied: tuple[tuple[float, str], ...] = ()
    # (unix seconds, cookie) of earlier visits on the same link from the same IP with this very
    # User-Agent, at any time before, by cookies tied to no customer (loaded only where two or
    # more customers' first visits share the link, address and browser): the link owner's own
    # browser, before accounts made in its private windows (repeat_lease_reasons).
    owner: tuple[tuple[float, str], ...] = ()
    # Of the cookies in `owner`, those that opened this referrer's link two or more times
    # (anywhere): a browser that keeps coming back to a link without ever buying is the
    # link's owner checking it (private_window_reasons). Loaded with `owner`.
    returning: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class ConversionFacts:
    conversion_id: int
    customer: str
    at: float
    referrers: tuple[str, ...]  # credited referrers (external ids)
    email_hash: bytes | None = None
    ip: str | None = None
    country: str | None = None
    touches: tuple[ClickFacts, ...] = ()  # the attributed clicks, in time order
    visitors: frozenset[str] = frozenset()
    devices: frozenset[str] = frozenset()
    ips: frozenset[str] = frozenset()
    amount: int = 0
    # (User-Agent, IP) the customer was seen with: clicks and conversion reports
    agents: frozenset[tuple[str, str | None]] = frozenset()

    @property
    def delay(self) -> float | None:
        """Seconds from the last attributed click to the conversion."""
        return self.at - self.touches[-1].at if self.touches else None


@dataclass(frozen=True, slots=True)
class ReferrerFacts:
    """What is known of a referrer's own activity (the referrer is a customer too)."""

    external_id: str
    email_hash: bytes | None = None
    visitors: frozenset[str] = frozenset()
    devices: frozenset[str] = frozenset()
    ips: frozenset[str] = frozenset()
    # The referrer's own visits to their own link: (unix seconds, IP).
    own_clicks: tuple[tuple[float, str], ...] = ()
    # (User-Agent, IP) the referrer was seen with as a customer: their browsers
    agents: frozenset[tuple[str, str | None]] = frozenset()


def conversion_reasons(conv: ConversionFacts, referrers: Mapping[str, ReferrerFacts],
                       holders: Mapping[tuple[str, str], int] | None = None,
                       visited: Mapping[tuple[str, str], float] | None = None) -> list[Reason]:
    """The reasons to doubt one conversion on its own facts: who it shares an identity with,
    and how its attributed clicks came. `holders` counts the accounts that use each IP and
    device in the program (an address many accounts use says little); `visited`, each
    customer's first visit on each referrer's link (first_visits)."""
    return identity_reasons(conv, referrers, holders, visited) + touch_reasons(conv)


def first_visits(conversions: Iterable[ConversionFacts]) -> dict[tuple[str, str], float]:
    """(customer, referrer) -> the customer's first click on the referrer's link among all
    their conversions' attributed clicks (a later conversion's window may no longer reach
    it)."""
    out: dict[tuple[str, str], float] = {}
    for conv in conversions:
        for t in conv.touches:
            if t.referrer is not None:
                key = (conv.customer, t.referrer)
                out[key] = min(out.get(key, t.at), t.at)
    return out


LEASE_SECONDS = 3600.0  # the referee's first visit this soon after the referrer's own there
REPEAT_LEASE_SECONDS = 3 * LEASE_SECONDS  # one browser before several new customers: a sitting
NAT_ACCOUNTS = 6  # an address or device this many accounts use is a gateway: no evidence
SHARED_DEVICE_WEIGHT = 0.35  # a header fingerprint: a phone model + browser + network
SHARED_IP_WEIGHT = 0.3
SHARED_PREFIX_WEIGHT = 0.15


RARE_AGENT = 0.01  # a browser (User-Agent) at most this share of the program's customers use


def identity_reasons(conv: ConversionFacts, referrers: Mapping[str, ReferrerFacts],
                     holders: Mapping[tuple[str, str], int] | None = None,
                     visited: Mapping[tuple[str, str], float] | None = None) -> list[Reason]:
    """The referee is, or may be, a credited referrer, ranked by strength.

    Strong (identity family, enough to reject): the same customer id, mailbox (identity's
    e-mail normalisation: tags, dots, look-alike provider domains) or visitor cookie.
    Identity, not enough alone to reject (held for review): a household lease (the referee's
    first visit from the referrer's own address within the hour after the referrer's own
    visit to the link there, on a device the referrer never used); the referrer's own browser
    where it is rare in the program (RARE_AGENT), more so on the referrer's own address.
    Weak (network family, never more than a flag): a shared header fingerprint, IP or /24,
    weighted by how few accounts use it, and nothing where many do (a NAT).

    A lease is a new device's first visit: a customer who had visited the link before
    (`visited`: first_visits; an earlier conversion's click the window no longer reaches)
    is a housemate with a life of their own, coming back."""
    reasons: list[Reason] = []
    counts = holders or {}
    for ref_id in conv.referrers:
        ref = referrers.get(ref_id, ReferrerFacts(ref_id))
        shared = _same_person(conv, ref)
        if shared:
            reasons.append(Reason(
                "self_referral",
                f"identity: the referee is referrer {ref_id} (same {', '.join(shared)})",
                shared, "any shared identifier", 0.97, "identity", True))
            continue
        first = next((t for t in conv.touches if t.referrer == ref_id), None)
        if first is not None and (visited or {}).get((conv.customer, ref_id), first.at) < (
                first.at):
            first = None  # not the customer's first visit: no lease to look for
        lease = _lease(conv, ref, counts) if first is not None else None
        if lease is not None:
            reasons.append(_lease_reason(
                f"the referee first came from referrer {ref_id}'s own network "
                f"{lease / 60:.0f} min after {ref_id} opened their own link there",
                lease, LEASE_SECONDS))
            continue
        unseen = _unseen_lease(conv, ref, counts) if first is not None else None
        if unseen is not None:
            reasons.append(_lease_reason(
                f"the referee first came from an address where, {unseen / 60:.0f} min before, "
                f"a browser tied to no customer opened referrer {ref_id}'s link (the referrer "
                "was never seen otherwise: likely their own visit)", unseen,
                UNSEEN_LEASE_SECONDS))
            continue
        device = _same_device(conv, ref, counts)
        if device is not None:
            reasons.append(device)
            continue
        network = _network_reason(conv, ref, counts)
        if network is not None:
            reasons.append(network)
    return reasons


def _same_person(conv: ConversionFacts, ref: ReferrerFacts) -> list[str]:
    """The strong identifiers the referee shares with the referrer: customer id, mailbox
    (identity's e-mail normalisation), visitor cookie."""
    shared: list[str] = []
    if conv.customer == ref.external_id:
        shared.append("customer id")
    if conv.email_hash is not None and conv.email_hash == ref.email_hash:
        shared.append("email")
    if conv.visitors & ref.visitors:
        shared.append("visitor")
    return shared


def self_referrers(conversions: Iterable[ConversionFacts],
                   referrers: Mapping[str, ReferrerFacts]) -> dict[str, str]:
    """Referrers shown to open accounts for themselves: another account (not the referrer's
    own customer id) credited to them is them by mailbox or visitor cookie. -> referrer: that
    account's customer id."""
    out: dict[str, str] = {}
    for conv in conversions:
        for ref_id in conv.referrers:
            ref = referrers.get(ref_id)
            if ref is None or conv.customer == ref.external_id or ref_id in out:
                continue
            if _same_person(conv, ref):
                out[ref_id] = conv.customer
    return out


def _gateway(ip: str, holders: Mapping[tuple[str, str], int]) -> bool:
    """An address many visitors use (an office, a campus, a carrier NAT): it ties nobody."""
    return holders.get(("visitors", ip), 0) >= NAT_ACCOUNTS


def _lease(conv: ConversionFacts, ref: ReferrerFacts,
           holders: Mapping[tuple[str, str], int] | None = None) -> float | None:
    """Seconds from the referrer's own visit to their link to the referee's first visit from
    the same address, on a device and cookie the referrer never used; None if no such lease.

    The referrer's own visit: one of their cookies, the very browser the referrer's own
    purchases were reported from, or, on an address the referrer's own purchases or visits
    came from (their home), a browser tied to no customer at all (the referrer on a browser
    they never bought with: nobody else at home opens the referrer's link without becoming a
    customer minutes before a new device there buys through it). Not on a gateway address,
    where strangers click the same link minutes apart."""
    first = next((t for t in conv.touches if t.referrer == ref.external_id), None)
    if first is None or first.ip is None or _gateway(first.ip, holders or {}):
        return None
    ref_agents = {a for a, _ip in ref.agents}
    if (first.visitor is not None and first.visitor in ref.visitors) or (
            first.device is not None and first.device in ref.devices) or (
            first.agent is not None and first.agent in ref_agents):
        return None
    gaps = [first.at - at for at, ip in ref.own_clicks
            if ip == first.ip and 0 <= first.at - at <= LEASE_SECONDS]
    home = first.ip in ref.ips or any(ip == first.ip for _a, ip in ref.agents)
    gaps += [first.at - at for at, visitor, agent in first.before
             if 0 <= first.at - at <= LEASE_SECONDS and (
                 (visitor is not None and visitor in ref.visitors)
                 or (agent is not None and agent in ref_agents)
                 or (visitor is None and home))]
    return min(gaps) if gaps else None


def repeat_lease_reasons(conversions: Sequence[ConversionFacts],
                         holders: Mapping[tuple[str, str], int]) -> dict[int, Reason]:
    """Two or more different customers whose first visit on a referrer's link came from one
    address (not a gateway) after one and the same browser, tied to no customer, opened that
    link there: someone who never buys opens the link and hands a new device over, or opens
    a private window on it, again and again.

    Counted: the browser's visits at most REPEAT_LEASE_SECONDS before (a hand-over in one
    sitting: a repeated household lease), or at any time before where it is the very
    User-Agent the new customers came with (ClickFacts.owner: the owner's own browser, and
    accounts made in its private windows, new cookie on the same device). A housemate who
    opens a link a friend sent before another one buys is an ordinary household (one lease at
    most, _lease); the same cookie before two different people's first visits is one person
    making accounts, where they came in separate sittings (first visits more than
    REPEAT_LEASE_SECONDS apart: a family who all follow the link one of them opened one
    evening is one sitting). A customer's own earlier cookie (a privacy browser clearing
    cookies) precedes that customer only; on the same browser, only new accounts count (one
    purchase at most: a colleague on the office's standard browser who comes back to buy is
    a customer). Identity evidence for review, never a rejection: a household of three (one
    who never buys, two on identical phones) can show it."""
    # (referrer, IP, cookie) -> customer -> their first visit on the link there
    led: dict[tuple[str, str, str], dict[str, float]] = defaultdict(dict)
    same: set[tuple[str, str, str]] = set()  # of those, on the new customers' own browser
    spent = purchases_by_customer(conversions)
    for conv in conversions:
        for ref_id in conv.referrers:
            first = next((t for t in conv.touches if t.referrer == ref_id), None)
            if ref_id == conv.customer or first is None or first.ip is None or _gateway(
                    first.ip, holders):
                continue
            for at, cookie in first.untied:
                if 0 <= first.at - at <= REPEAT_LEASE_SECONDS:
                    led[(ref_id, first.ip, cookie)][conv.customer] = first.at
            if len(spent.get(conv.customer, ())) > 1:
                continue  # a customer who buys again is one, whatever browser they share
            for at, cookie in first.owner:
                if at < first.at and cookie != first.visitor:
                    led[(ref_id, first.ip, cookie)][conv.customer] = first.at
                    same.add((ref_id, first.ip, cookie))
    most: dict[tuple[str, str], tuple[int, bool]] = {}  # (customer, referrer) -> (k, same)
    for key, people in led.items():
        # Again and again: new customers in separate sittings, not a family who all followed
        # one link its member opened one evening.
        if len(people) >= 2 and max(people.values()) - min(people.values()) > (
                REPEAT_LEASE_SECONDS):
            for customer in people:
                found = (len(people), key in same)
                most[(customer, key[0])] = max(most.get((customer, key[0]), found), found)
    out: dict[int, Reason] = {}
    for conv in conversions:
        found_by = sorted((*most[(conv.customer, r)], r) for r in conv.referrers
                          if (conv.customer, r) in most)
        if found_by:
            k, on_own, ref_id = found_by[-1]
            how = ("with the very browser (User-Agent) each of them came with, before" if on_own
                   else f"at most {REPEAT_LEASE_SECONDS / 3600:.0f} h before")
            out[conv.conversion_id] = Reason(
                "repeat_lease",
                f"identity: one browser that never bought opened referrer {ref_id}'s link on "
                f"this address {how} each of {k} new customers first came there through it: "
                "one person making accounts", k, "one customer per browser", 0.8, "identity")
    return out


PRIVATE_WINDOW_APART = 86_400.0  # the owner's own visit and the new account's: separate days
PRIVATE_WINDOW_WEIGHT = 0.6  # identity evidence for review: held, never rejected on it alone


def private_window_reasons(conversions: Sequence[ConversionFacts],
                           holders: Mapping[tuple[str, str], int]) -> dict[int, Reason]:
    """A new account (one purchase at most) whose first visit on a referrer's link came with
    no Referer (the link typed or pasted, not followed from where it was shared), from an
    address that is not a gateway, with the very browser (User-Agent) that the link's owner
    had opened it with there on another day before (PRIVATE_WINDOW_APART), under another
    cookie: the referrer making an account for himself in a private window or after
    clearing his cookies, on his own device.

    The link's owner: a cookie tied to no customer that opened the link two or more times
    (ClickFacts.returning): someone who keeps coming back to a link without ever buying is
    the person whose link it is. A privacy browser's one earlier look (its cookie cleared)
    is not such a browser; a housemate who owns the same phone model follows the link the
    day its owner shares it (one sitting, not a private window days later); a colleague on an
    office's standard computer who buys again is a customer. Identity evidence for review,
    never a rejection on its own: a family on identical phones can show it by chance."""
    spent = purchases_by_customer(conversions)
    out: dict[int, Reason] = {}
    for conv in conversions:
        if len(spent.get(conv.customer, ())) > 1:
            continue
        for ref_id in conv.referrers:
            first = next((t for t in conv.touches if t.referrer == ref_id), None)
            if (ref_id == conv.customer or first is None or first.ip is None
                    or first.source is not None or not first.returning
                    or _gateway(first.ip, holders)):
                continue
            gaps = [first.at - at for at, cookie in first.owner
                    if cookie != first.visitor and cookie in first.returning
                    and first.at - at >= PRIVATE_WINDOW_APART]
            if gaps:
                out[conv.conversion_id] = Reason(
                    "private_window",
                    f"identity: the referee first came to referrer {ref_id}'s link without a "
                    f"Referer (typed or pasted), with the very browser the link's owner (a "
                    f"browser that opened it again and again and never bought) had opened it "
                    f"with on this address {_span(min(gaps))} before, under a new cookie: the "
                    "referrer's own device in a private window", round(min(gaps), 1),
                    PRIVATE_WINDOW_APART, PRIVATE_WINDOW_WEIGHT, "identity")
                break
    return out


def _lease_reason(how: str, seconds: float, threshold: float) -> Reason:
    """household_lease: identity evidence for review (never a rejection on its own)."""
    return Reason("household_lease", f"identity: {how}, on a new device", round(seconds, 1),
                  threshold, 0.8, "identity")


UNSEEN_LEASE_SECONDS = 900.0  # an unknown browser's visit is the referrer's only this soon


def _unseen_lease(conv: ConversionFacts, ref: ReferrerFacts,
                  holders: Mapping[tuple[str, str], int]) -> float | None:
    """Seconds from a visit that may be the referrer's own to the referee's first visit, for
    a referrer never seen at all (no cookie, address, browser or visit of theirs is known, so
    no visit can be told to be theirs or not): a visit on the link from the same address, by a
    cookie tied to no customer, at most UNSEEN_LEASE_SECONDS before. Someone opened the link
    there and never became a customer, and minutes later a new device there signs up through
    it: the referrer handing a device over. Longer gaps are a housemate's or colleague's own
    browsing; a gateway address ties nobody. None if no such visit."""
    if ref.visitors or ref.ips or ref.agents or ref.own_clicks:
        return None
    first = next((t for t in conv.touches if t.referrer == ref.external_id), None)
    if first is None or first.ip is None or _gateway(first.ip, holders):
        return None
    gaps = [first.at - at for at, visitor, _agent in first.before
            if visitor is None and 0 <= first.at - at <= UNSEEN_LEASE_SECONDS]
    return min(gaps) if gaps else None


def _same_device(conv: ConversionFacts, ref: ReferrerFacts,
                 holders: Mapping[tuple[str, str], int]) -> Reason | None:
    """The referee's browser is one the referrer's own purchases came from, and few of the
    program's customers use it (a header fingerprint: medium evidence, weighted by rarity; a
    popular phone model says nothing). On the referrer's own address (not a gateway) too, it
    is the referrer's device; elsewhere, it must be twice as rare (RARE_AGENT / 2)."""
    best: tuple[float, str, bool] | None = None
    for share, agent, home in _referrer_browsers(conv, ref, holders):
        # Away from the referrer's address the browser is all the evidence: twice as rare.
        if share > (RARE_AGENT if home else RARE_AGENT / 2):
            continue
        if best is None or (home, -share) > (best[2], -best[0]):
            best = (share, agent, home)
    if best is None:
        return None
    share, agent, home = best
    where = " on the referrer's own address" if home else ""
    away = _own_addresses(conv, ref)
    # Where the referrer used it too (a gateway's address: their office, their campus).
    together = home or any((agent, ip) in ref.agents for a, ip in conv.agents if a == agent)
    if not together or away >= OWN_LIFE_ADDRESSES:
        # A browser is a phone model and its version, not a person: on none of the
        # addresses the referrer used it on, or for a referee seen where the referrer never
        # is (a housemate with the same phone model, or on the family's computer beside a
        # phone of their own), two people who own the same model are as likely. A hint,
        # never a hold on its own.
        life = (f"; the referee was seen on {away} addresses the referrer never used"
                if away >= OWN_LIFE_ADDRESSES else "")
        return Reason(
            "same_device", f"identity: the referee used referrer {ref.external_id}'s own "
            f"browser{where}, one only {share:.1%} of the program's customers use{life}: "
            "the same model, not necessarily the same device",
            round(share, 4), RARE_AGENT, SAME_MODEL_WEIGHT, "identity")
    return Reason(
        "same_device", f"identity: the referee used referrer {ref.external_id}'s own browser"
        f"{where or ' where the referrer used it'}, one only {share:.1%} of the program's "
        "customers use", round(share, 4), RARE_AGENT, 0.8 if home else 0.55, "identity")


OWN_LIFE_ADDRESSES = 3  # a referee seen on this many addresses none of them the referrer's
SAME_MODEL_WEIGHT = 0.4  # the referrer's browser where it may be another person's same model


def _own_addresses(conv: ConversionFacts, ref: ReferrerFacts) -> int:
    """The addresses, none of them the referrer's, on which the referee was seen (their
    visits and purchases): a phone of their own that goes where the referrer never is, a
    life of their own. An account made on the referrer's device, at the referrer's place,
    for the reward has none."""
    home = set(ref.ips) | {ip for _a, ip in ref.agents if ip is not None}
    return len({ip for _a, ip in conv.agents if ip is not None and ip not in home})


def _referrer_browsers(conv: ConversionFacts, ref: ReferrerFacts,
                       holders: Mapping[tuple[str, str], int]
                       ) -> list[tuple[float, str, bool]]:
    """The referrer's own browsers (User-Agents their purchases were reported with) that the
    referee used too: (share of the program's customers who use it, User-Agent, whether the
    referee used it on an address the referrer used it on that is not a gateway). A site's
    browser (_site_browser) is not the referrer's own."""
    total = holders.get(("agents", ""), 0)
    if not total or not conv.agents or not ref.agents:
        return []
    out = []
    for agent in {a for a, _ip in conv.agents} & {a for a, _ip in ref.agents}:
        if _site_browser(agent, ref, holders):
            continue
        share = max(holders.get(("agent", agent), 2), 2) / total
        home = any(ip is not None and not _gateway(ip, holders) and (agent, ip) in ref.agents
                   for a, ip in conv.agents if a == agent)
        out.append((share, agent, home))
    return out


def own_browser_reasons(conversions: Sequence[ConversionFacts],
                        referrers: Mapping[str, ReferrerFacts],
                        holders: Mapping[tuple[str, str], int]) -> dict[int, Reason]:
    """Two or more new accounts on one of the referrer's own browsers (the very User-Agent the
    referrer's purchases came from) at the referrer's own address (not a gateway): the
    referrer making accounts on their own device (a private window, cookies cleared), where
    one such account alone may be a housemate who owns the same phone.

    A housemate's phone is the referrer's exact browser by chance about as often as the
    program's customers use that browser (its share), so k accounts on it are all housemates
    with a chance of the share to the k-th: they are held together when that is as small as
    one account's chance on a browser RARE_AGENT of the program uses (the rarity _same_device
    holds one account at). Accounts on different browsers of the referrer do not add up: a
    family's popular phone is as likely beside the referrer's own odd one as without it.
    Counted are accounts with no history of their own (one purchase at most): a housemate who
    comes back to buy again is a customer, whatever phone they share. Identity evidence for
    review (not strong: a large family on identical phones can show it too).

    A referrer shown to open accounts for himself (self_referrers: another of his referees is
    him by mailbox or cookie) is no longer a referrer whose housemate happens to own his
    phone: one new account on his own browser at his own address is then held too, however
    common the browser (a referrer who only ever referred people is not touched by it)."""
    if not holders.get(("agents", ""), 0):
        return {}
    proven = self_referrers(conversions, referrers)
    spent = purchases_by_customer(conversions)
    share_of: dict[str, float] = {}
    on_browser: dict[tuple[str, str], set[str]] = defaultdict(set)  # (referrer, agent)
    at_home: dict[str, set[str]] = defaultdict(set)  # customer -> referrers, of on_browser
    for conv in conversions:
        if len(spent.get(conv.customer, ())) > 1:
            continue
        for ref_id in conv.referrers:
            ref = referrers.get(ref_id)
            if ref is None or ref.external_id == conv.customer:
                continue
            for share, agent, home in _referrer_browsers(conv, ref, holders):
                if home:
                    share_of[agent] = share
                    on_browser[(ref_id, agent)].add(conv.customer)
                    at_home[conv.customer].add(ref_id)
    # customer -> (chance all are housemates, accounts, referrer) of each group it is in
    groups: dict[str, list[tuple[float, int, str]]] = defaultdict(list)
    for (ref_id, agent), people in on_browser.items():
        if len(people) >= 2:
            for customer in people:
                groups[customer].append((share_of[agent] ** len(people), len(people), ref_id))
    out: dict[int, Reason] = {}
    for conv in conversions:
        found = [g for g in groups.get(conv.customer, ()) if g[2] in conv.referrers]
        if not found or min(found)[0] > RARE_AGENT:
            made = sorted(ref_id for ref_id in at_home.get(conv.customer, ())
                          if ref_id in conv.referrers
                          and proven.get(ref_id, conv.customer) != conv.customer)
            if made:
                out[conv.conversion_id] = _self_referrer_browser(made[0], proven[made[0]])
            continue
        chance, k, ref_id = min(found)
        out[conv.conversion_id] = Reason(
            "own_browser_accounts",
            f"identity: {k} new accounts referred by {ref_id} used {ref_id}'s own browser on "
            f"{ref_id}'s own address; that many housemates with exactly that browser is a "
            f"chance of {chance:.2%} (as rare as one account on a browser {RARE_AGENT:.0%} of "
            "the program's customers use)", k, "one account per browser", 0.8, "identity")
    return out


def _self_referrer_browser(ref_id: str, made: str) -> Reason:
    return Reason(
        "self_referrer_browser",
        f"identity: referrer {ref_id} opens accounts for himself ({made} is {ref_id} by mailbox "
        f"or cookie), and this new account used {ref_id}'s own browser on {ref_id}'s own "
        "address", made, "a referrer who never referred himself", 0.8, "identity")


def _site_browser(agent: str, ref: ReferrerFacts,
                  holders: Mapping[tuple[str, str], int]) -> bool:
    """The referrer's browser is a site's: every address the referrer was seen on with it is
    one where NAT_ACCOUNTS or more visitor cookies came with that very browser (an office's
    standard computers, a popular phone behind a campus NAT). Many people's cookies on one
    browser at one place are the place's setup, not one person's device: a colleague on it is
    not the referrer. A browser the referrer also used somewhere of their own stays evidence."""
    ips = {ip for a, ip in ref.agents if a == agent}
    return bool(ips) and all(
        ip is not None and holders.get(("site", f"{agent} @ {ip}"), 0) >= NAT_ACCOUNTS
        for ip in ips)


def _rarity(column: tuple[str, str], holders: Mapping[tuple[str, str], int]) -> float:
    """1 for a column only the two accounts use, less for more, 0 for a gateway."""
    n = max(holders.get(column, 2), 2)
    return 0.0 if n >= NAT_ACCOUNTS else 2.0 / n


def _network_reason(conv: ConversionFacts, ref: ReferrerFacts,
                    holders: Mapping[tuple[str, str], int]) -> Reason | None:
    """The strongest network tie between referee and referrer, weighted by rarity."""
    found: list[tuple[float, str, object]] = []
    for device in conv.devices & ref.devices:
        w = SHARED_DEVICE_WEIGHT * _rarity(("device", device), holders)
        found.append((w, "the same browser fingerprint (phone model, browser and network)",
                      holders.get(("device", device), 2)))
    for ip in conv.ips & ref.ips:
        # Many visitors' cookies on the address over time: a gateway, whoever its accounts.
        w = 0.0 if _gateway(ip, holders) else SHARED_IP_WEIGHT * _rarity(("ip", ip), holders)
        found.append((w, "the same IP address", holders.get(("ip", ip), 2)))
    if not found and ({ip_prefix(i) for i in conv.ips} & {ip_prefix(i) for i in ref.ips}):
        return Reason(
            "shared_network", f"network: referee and referrer {ref.external_id} use the same "
            "network (IPv4 /24, IPv6 /48); weak evidence alone", "same /24",
            "different networks", SHARED_PREFIX_WEIGHT, "network")
    found = [f for f in found if f[0] > 0]
    if not found:
        return None
    weight, what, accounts = max(found, key=lambda f: f[0])
    return Reason(
        "shared_address", f"network: referee and referrer {ref.external_id} use {what}, "
        f"used by {accounts} accounts in the program; weak evidence alone (households, "
        "offices)", accounts, f"fewer than {NAT_ACCOUNTS} accounts", round(weight, 4),
        "network")


def touch_reasons(conv: ConversionFacts) -> list[Reason]:
    """What the attributed clicks say: injected, from a bot, from a hosting or anonymous IP,
    paid traffic, or from another country than the conversion."""
    if not conv.touches:
        return []
    reasons: list[Reason] = []
    last = conv.touches[-1]
    delay = conv.at - last.at
    if 0 <= delay < INJECTION_SECONDS:
        reasons.append(Reason(
            "fast_conversion",
            f"converted {delay:.1f} s after the click (click injection is seconds)",
            round(delay, 3), INJECTION_SECONDS, 0.7, "click"))
    bots = [t for t in conv.touches if t.is_bot]
    if bots:
        reasons.append(Reason("bot_click", "an attributed click came from a bot or script",
                              bots[-1].bot_rule, "no bot rule", 0.8, "click"))
    if any(t.anonymous or t.hosting for t in conv.touches):
        kinds = sorted({"hosting" if t.hosting else "anonymous" for t in conv.touches
                        if t.anonymous or t.hosting})
        reasons.append(Reason("anonymous_ip",
                              f"an attributed click came from a {'/'.join(kinds)} IP",
                              kinds, "a residential IP", 0.35, "click"))
    paid = sorted({marker for t in conv.touches for marker in paid_markers(t.query)})
    if paid:
        reasons.append(Reason("paid_click_id",
                              f"the landing carried {', '.join(paid)}: a bought ad click "
                              "(the link bought as search ads, bidding on the brand), not a "
                              "referral", paid, "none", 0.5, "click"))
    countries = {t.country for t in conv.touches if t.country}
    if conv.country and countries and conv.country not in countries:
        reasons.append(Reason("country_mismatch",
                              f"clicked from {'/'.join(sorted(countries))}, converted from "
                              f"{conv.country}", conv.country, sorted(countries), 0.2, "click"))
    return reasons


def paid_markers(query: str | None) -> list[str]:
    """What in a landing query says the click was bought: an ad network's click id, or a
    utm_medium of paid traffic ("utm_medium=cpc")."""
    out: list[str] = []
    for raw_key, value in parse_qsl(query or ""):
        key = raw_key.lower()
        if key in PAID_CLICK_IDS:
            out.append(key)
        elif key == "utm_medium" and value.strip().lower() in PAID_MEDIA:
            out.append(f"utm_medium={value.strip().lower()}")
    return out


KS_MIN_CONVERSIONS = 10
KS_P_VALUE = 1e-3
REFUND_RATE = 0.3
REFUND_MIN_CONVERSIONS = 5
# Decisive alone (a hold for finance) even where the mixture doubts a conversion a little
REFUND_WEIGHT = 0.6
REFEREES_PER_DEVICE = 5  # one referrer's customers on one device: more than a household
VELOCITY_MIN = 5  # new customers in one day before a burst can count as one
VELOCITY_FACTOR = 5.0  # times the referrer's usual daily rate
PEAK_FACTOR = 3.0  # times the best day of the program's busier referrers (90th percentile)
DAY = 86400.0
SPAM_MIN_CLICKS = 30
HOSTING_SHARE = 0.5  # of a referrer's conversions through hosting/anonymous IPs
HOSTING_MIN_CONVERSIONS = 3
# Decisive alone (a hold for finance) even where the mixture doubts a conversion a little: a
# referrer's customers through anonymising addresses are no share of a genuine audience
HOSTING_WEIGHT = 0.6
# New customers through anonymising addresses abroad, each within a day of the one before, at
# least, before a referrer's departure from its own audience is tested (`_takeover_findings`)
TAKEOVER_MIN = 3
HEADERLESS_SHARE = 0.5  # of a referrer's conversions through visits without Accept-Language
HEADERLESS_MIN_CONVERSIONS = 5
# Above this share of the program's conversions, the data just lacks the header (an import
# that never had it): the signal then says nothing.
HEADERLESS_PROGRAM_MAX = 0.1
# Click spam converts little by design: a few late conversions are enough for the test when
# the conversion rate is already far under the program's.
SPAM_MIN_CONVERSIONS = 5
OTHERS_SAMPLE = 5_000  # delays the program's distribution is estimated from
SPAM_RATE_FACTOR = 0.2  # a conversion rate under a fifth of the program's
# Click spam's credited purchases happen whenever they would have (the click did not bring
# them), so their delays spread over the attribution window: typically days to weeks. A large
# audience of strangers (an influencer's post) converts little and later than friends do, but
# those who decide, decide within a day or two of seeing the post: a median under this is an
# audience's natural spread, not click spam.
SPAM_MEDIAN_SECONDS = 2 * 86400.0


EVEN_MIN_PAIRS = 10  # triples of consecutive counted clicks before their evenness can tell
# The variance of the mean of |x - 1/2| over overlapping triples of a Poisson process, in
# units of independent ones' (1/48 per triple): 1.34-1.39 in simulation at 10-100 triples.
GAP_VARIANCE_FACTOR = 1.4


@dataclass(frozen=True, slots=True)
class ClickRhythm:
    """A referrer's counted clicks over UTC days: how many, over how many days from its first
    to its last, and the sum of the squared daily counts (how bunched they are)."""

    clicks: int
    days: int
    squares: int
    # Of each three consecutive clicks, the first gap's share of the two gaps, x = a / (a + b):
    # how many such triples (`gap_pairs`), and the sum of |x - 1/2| over them (full scans).
    gap_pairs: int = 0
    gap_spread: float = 0.0
    # Where the clicks were paced (paced_stretch): from the start of its first UTC day to the
    # end of its last, unix seconds; None where unknown (the test then covers every click).
    paced: tuple[float, float] | None = None

    def even_p_value(self) -> float:
        """The p-value of "these clicks came from people clicking independently" against
        "at a steady rhythm" (one-sided). People's clicks on a link are a Poisson process
        whose rate changes with the hour and after each share; over two consecutive gaps
        the rate is nearly the same, so the first gap's share x of the two is uniform on
        [0, 1] whatever the rate, and |x - 1/2| has mean 1/4 and variance 1/48. Clicks
        made at a steady pace, however jittered, give gaps of similar length: x near 1/2.
        Consecutive triples share a gap (positively correlated: GAP_VARIANCE_FACTOR
        widens the variance of the mean); a normal approximation of the mean's tail."""
        if self.gap_pairs < EVEN_MIN_PAIRS:
            return 1.0
        mean = self.gap_spread / self.gap_pairs
        sd = math.sqrt(GAP_VARIANCE_FACTOR / (48.0 * self.gap_pairs))
        return float(stats.norm.cdf((mean - 0.25) / sd))

    def burst_p_value(self) -> float:
        """The p-value of "these clicks came as a steady stream" (one-sided chi-square test of
        the index of dispersion of the daily counts, zero days included): small where the
        clicks come in bursts, as a link's clicks do after each time it is shared."""
        if self.days < 2 or self.clicks <= 0:
            return 1.0
        mean = self.clicks / self.days
        variance = max(self.squares - self.clicks * mean, 0.0) / (self.days - 1)
        return float(stats.chi2.sf(variance / mean * (self.days - 1), self.days - 1))


# Days either side of the paced stretch that count as in it: a farm's first or last shift can
# be too short to gain (the gaps to the days around it count against it).
PACED_MARGIN_DAYS = 1


def even_z_max() -> float:
    """The largest z = (mean - 1/4) / sd of ClickRhythm.even_p_value whose p-value can be
    FDR_Q or less, the most any even_clicks finding has (Benjamini-Hochberg never finds a
    p-value above its rate), with a margin for rounding: only such a referrer's paced stretch
    is ever told, so a full scan reads the others' totals, not their days."""
    return float(stats.norm.ppf(FDR_Q)) + 1e-6


def paced_stretch(days: Sequence[tuple[int, int, float]]) -> tuple[float, float] | None:
    """The stretch of days over which a referrer's clicks came at a steady pace: `days` are
    (UTC day since the epoch, triples of consecutive clicks whose middle click fell on it, the
    sum of |x - 1/2| over them; see ClickRhythm), in day order. People clicking on their own
    give |x - 1/2| a mean of 1/4 whatever their rate, so each triple adds 1/4 - |x - 1/2| to
    the evidence of a pace: nothing on average where people click, a steady gain through a
    farm's shifts, a loss at each gap of days between the link's uses. The stretch is the run
    of consecutive days (in the order they have triples) with the largest gain (the
    maximum-sum segment, one pass), and PACED_MARGIN_DAYS either side: a link used by a farm
    for a while and shared by its owner with friends before or after gives the farm's days
    (and, where the friends' clicks gain by chance, some of theirs: the stretch errs towards
    holding); a link paced throughout, all of them. None where no run gains anything."""
    best, total, first = 0.0, 0.0, 0
    span: tuple[int, int] | None = None
    for i, (_day, pairs, spread) in enumerate(days):
        if total <= 0.0:
            total, first = 0.0, i
        total += 0.25 * pairs - spread
        if total > best:
            best, span = total, (first, i)
    if span is None:
        return None
    return (float((days[span[0]][0] - PACED_MARGIN_DAYS) * DAY),
            float((days[span[1]][0] + 1 + PACED_MARGIN_DAYS) * DAY))


@dataclass(frozen=True, slots=True)
class ProgramContext:
    """What a scan knows of the whole program beyond the conversions at hand.

    A full scan has every conversion and needs only the first two. An incremental scan has a
    window (each referrer's latest conversions) and brings the rest as aggregates: the
    program's delays (a sample), its conversions per click, and each referrer's totals.
    """

    reversed_ids: frozenset[int] = frozenset()  # conversions refunded or charged back
    referrer_clicks: Mapping[str, int] = field(default_factory=dict)
    background_delays: np.ndarray | None = None
    program_rate: float | None = None  # credited conversions per counted click
    # Converting customers (each counted once) per counted click, and each referrer's
    # converting customers: an incremental scan's, from the latest full scan and the
    # database (a full scan counts them in its conversions).
    customer_rate: float | None = None
    referrer_customers: Mapping[str, int] = field(default_factory=dict)
    history: Mapping[str, tuple[int, float]] = field(default_factory=dict)  # (n, first at)
    # Counted clicks per traffic source (`traffic_source`: the Referer's host, or the
    # landing's own parameters), where known, and per source the counted clicks of each
    # referrer it brought visits to (full scans only).
    source_clicks: Mapping[str, int] = field(default_factory=dict)
    source_referrers: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    # The program's share of headerless conversions, as the latest full scan measured it
    # (incremental scans see a window, too little to tell what the program's data holds).
    headerless_share: float | None = None
    # Each referrer's counted clicks spread over days (whether they come in share bursts);
    # full scans only.
    click_rhythm: Mapping[str, ClickRhythm] = field(default_factory=dict)
    # Of the reversed conversions, those charged back (a card's owner disputed the payment)
    charged_back_ids: frozenset[int] = frozenset()


Carry = Callable[[ConversionFacts], bool]


@dataclass(frozen=True, slots=True)
class Finding:
    """A referrer-level test that came out significant: its reason, and which of the
    referrer's conversions carry the anomaly it found (`carries`).

    `ties`: whether carrying it ties a conversion to what the test found. A test of the
    referrer as a whole (its conversion rate) is carried by every conversion of the referrer
    and ties none: it only corroborates a tie that another finding makes."""

    reason: Reason
    carries: Carry
    p_value: float = 0.0
    ties: bool = True
    # Where the test placed the anomaly in the referrer's traffic (the days its clicks were
    # paced), None: all of it. A conversion outside does not carry the finding (`shows`);
    # inside, what `carries` says, and the referrer's mixture (fraud.assess) is fitted on
    # `carries` over all its traffic: being inside is the referrer's own evidence, not a trait
    # the program's other conversions can show or lack.
    within: Carry | None = None

    def shows(self, conv: ConversionFacts) -> bool:
        """Whether the conversion carries the anomaly where the test placed it."""
        return self.carries(conv) and (self.within is None or self.within(conv))


def referrer_reasons(conversions: Sequence[ConversionFacts],
                     context: ProgramContext = ProgramContext()) -> dict[str, list[Reason]]:
    """Reasons that concern a referrer as a whole (see `referrer_findings`)."""
    return {ref: [f.reason for f in found]
            for ref, found in referrer_findings(conversions, context).items()}


def referrer_findings(conversions: Sequence[ConversionFacts],
                      context: ProgramContext = ProgramContext(), *,
                      crowds: Collection[tuple[str, str]] | None = None
                      ) -> dict[str, list[Finding]]:
    """Each referrer's traffic tested against the program's own baseline, with the
    Benjamini-Hochberg procedure across referrers (each test at false discovery rate
    FDR_Q, so among hundreds of referrers a few unlucky honest ones do not come out):

    - delay_distribution: delays shorter than the program's (one-sided two-sample KS):
      injection; carried by the conversions faster than the program's first quartile;
    - click_spam: a conversion rate under the program's (binomial) and delays longer than
      the program's (KS): clicks fired at people who were converting anyway; carried by the
      conversions an hour or more after their click;
    - steady_late_clicks: clicks in a steady stream rather than in bursts after shares, and
      customers who converted later than the program's (KS, one delay a customer): click
      spam that converts as well as the program; carried by the late conversions;
    - velocity: a day with far more conversions than usual; carried by the conversions of
      every such day whose click came with the burst too, not through a site where people
      share links (sharing_sites: friends come in bursts after a post there);
    - refund_rate: more refunds and chargebacks than the program's (binomial); carried by
      the reversed conversions and the purchases after the latest of them at their amounts
      (not refunded yet) that look like them (like_the_stream);
    - min_amount_share: more purchases at the program's minimum amount (binomial) than the
      program's referrers not found doing so (`_share_above_clean_rest`: a farm's cheap
      purchases do not raise the bar for a smaller operator); carried by those;
    - language_uniformity: one Accept-Language across different browsers, more often than
      the program's browsers send it (binomial); carried by the visits that sent it;
    - hosting_share: most customers through hosting/anonymous IPs, more than the program's
      (binomial); carried by those conversions;
    - headerless_share: most conversions through visits without Accept-Language where the
      program's have it; carried by those;
    - anonymised_burst: a burst of new customers through anonymising addresses (VPN exits,
      data centres, Tor) abroad, where the referrer's other customers came through ordinary
      networks at home (binomial against the referrer's own share, `departing_burst`): its
      link in someone else's hands; carried by those customers' anonymised conversions;
    - even_clicks: the referrer's clicks at a steady rhythm, their consecutive gaps far more
      even than people's (ClickRhythm.even_p_value): a click farm's workers in shifts, however
      jittered; carried by the conversions through its clicks; full scans only;
    - spending_spree: more of the referrer's new customers bought SPREE_PURCHASES times or
      more within SPREE_SECONDS of their first conversion than the program's customers do
      (binomial): new accounts cashing out a stolen card before it is blocked; family
      "money"; carried by those customers' conversions;
    - interjected_clicks: more conversions whose credited click landed after the customer's
      journey had begun than the program's (binomial): click injection, however slow;
      carried by those.
    - clicks_on_another_device: more customers converting on another device than the one
      their credited clicks came from, or through a visitor cookie that clicked from two
      platforms, than the program's (binomial, `on_another_device`): click spoofing with
      harvested device ids; carried by those conversions (its absence says nothing:
      fraud.assess.ONE_SIDED).
    - fast_purchases: more purchases among the fastest of the program's honest purchases
      than chance gives (binomial), against a baseline without the referrers found so
      (`_fast_purchase_findings`): click injection on a referrer with a few conversions;
      carried by those purchases; full scans only.
    - conversion_rate again, for the referrers another test found, against the rate of the
      referrers no test found (`_suspect_rate_findings`): the program's own rate is inflated
      by its fraud;
    - steady_converting: clicks in a steady stream rather than in bursts after shares, and
      far more of them bringing a new customer than the program's clicks do (binomial):
      a link leaked as a coupon, bought as search ads or fed by a farm; carried by its
      one-time buyers who look like its stream of shoppers (like_the_stream: their pace and
      where they came from); full scans only.
    - referrer_site: of a referrer that another decisive finding already ties conversions
      to, more customers from a site than the program's other referrers' (binomial): where
      its traffic was sourced; weak alone; carried by the conversions from those sites.

    The program's delays are the other referrers' among `conversions` unless the context
    brings them; conversion rates need the context's click counts.
    """
    tally = _tally(conversions, context.reversed_ids)
    totals = {ref: context.history.get(ref, (n, min(tally.times[ref])))
              for ref, n in tally.counts.items()}
    program_rate = context.program_rate
    if program_rate is None and context.referrer_clicks:
        program_rate = sum(tally.counts.values()) / max(sum(context.referrer_clicks.values()), 1)
    sharing = sharing_sites(conversions)
    out: dict[str, list[Finding]] = defaultdict(list)
    # Every referrer's gathered customers, once: its own crowds' and velocity's.
    gathered = gathered_customers(
        conversions, {ref for conv in conversions for ref in conv.referrers}, crowds)
    own_crowds = own_gatherings(conversions, gathered)
    for found in (_delay_findings(tally, context, totals, program_rate, own_crowds),
                  _converts_too_well(tally, context),
                  _quick_findings(tally, context), _agent_findings(conversions, tally),
                  _velocity_findings(tally, context, totals, sharing, gathered),
                  _refund_findings(tally, conversions),
                  _min_amount_findings(tally, conversions), _language_findings(tally),
                  _hosting_findings(conversions), _headerless_findings(tally, context),
                  _takeover_findings(conversions), _spree_findings(conversions)):
        for ref, finding in found.items():
            out[ref].append(finding)
    suspects = {ref for ref, found in out.items()
                if any(f.reason.code != "velocity" for f in found)}
    for ref, finding in _spam_findings(tally, context, totals, program_rate,
                                       suspects).items():
        out[ref].append(finding)
    for ref, finding in _suspect_rate_findings(tally, context, out).items():
        out[ref].append(finding)
    for ref, finding in _steady_late_findings(conversions, context, set(out)).items():
        out[ref].append(finding)
    for ref, finding in _even_findings(context, set(out), sharing).items():
        out[ref].append(finding)
    for ref, finding in _source_findings(conversions, context, program_rate, tally):
        out[ref].append(finding)
    for ref, finding in _interjected_findings(conversions).items():
        out[ref].append(finding)
    for ref, finding in _other_device_findings(conversions).items():
        out[ref].append(finding)
    timed = {ref for ref, found in out.items() if any(f.reason.code in TIMING for f in found)}
    for ref, finding in _fast_purchase_findings(conversions, context, timed).items():
        out[ref].append(finding)
    for ref, finding in _steady_converting_findings(conversions, context, set(out),
                                                    sharing).items():
        out[ref].append(finding)
    tied = {ref for ref, found in out.items()
            if any(f.ties and f.reason.weight >= SITE_SUSPECT_WEIGHT for f in found)}
    for ref, finding in _site_findings(conversions, tied).items():
        out[ref].append(finding)
    return dict(out)


SITE_MIN_CUSTOMERS = 3
SITE_WEIGHT = 0.3  # a referrer's audience on one site is ordinary: alone it holds nothing
SITE_SUSPECT_WEIGHT = 0.5  # a finding this strong (decisive alone) makes a referrer a suspect


def _last_site(conv: ConversionFacts) -> str | None:
    return conv.touches[-1].source if conv.touches else None


def _site_findings(conversions: Sequence[ConversionFacts], suspects: Collection[str]
                   ) -> dict[str, Finding]:
    """referrer_site: of a referrer another finding already ties conversions to, more
    customers came from a site (Referer host) than the program's other referrers' customers
    do (binomial against their share, Benjamini-Hochberg across referrers and sites): where
    its traffic was sourced (a sign-up-for-cash board, a forum it posts to). Weak alone (an
    honest referrer's audience gathers on its blog too); it ties the conversions from those
    sites to the referrer's other findings. Carried by those conversions."""
    came: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    customers: dict[str, set[str]] = defaultdict(set)
    for conv in conversions:
        host = _last_site(conv)
        for ref in conv.referrers:
            customers[ref].add(conv.customer)
            if host is not None:
                came[ref][host].add(conv.customer)
    from_site: Counter[str] = Counter()
    for by_host in came.values():
        for host, people in by_host.items():
            from_site[host] += len(people)
    total = sum(len(c) for c in customers.values())
    pairs: list[tuple[str, str]] = []
    p_values: dict[str, float] = {}
    for ref in sorted(suspects):
        n = len(customers.get(ref, ()))
        for host, people in came.get(ref, {}).items():
            k = len(people)
            if k < SITE_MIN_CUSTOMERS:
                continue
            rest = (from_site[host] - k + 1) / (total - n + 2)
            p_values[str(len(pairs))] = _binom_above(k, n, rest)
            pairs.append((ref, host))
    found: dict[str, list[str]] = defaultdict(list)
    for key in sorted(benjamini_hochberg(p_values), key=int):
        ref, host = pairs[int(key)]
        found[ref].append(host)
    out: dict[str, Finding] = {}
    for ref, hosts in found.items():
        k = len(set().union(*(came[ref][h] for h in hosts)))
        n = len(customers[ref])
        out[ref] = Finding(Reason(
            "referrer_site", f"referrer population: {k} of {ref}'s {n} customers came from "
            f"{', '.join(sorted(hosts))}, where few of the program's other customers come "
            "from", round(k / n, 4), f"FDR {FDR_Q:g}", SITE_WEIGHT, "population"),
            _from_sites(frozenset(hosts)))
    return out


def _from_sites(hosts: frozenset[str]) -> Carry:
    return lambda c: _last_site(c) in hosts


SOURCE_MIN_CONVERSIONS = 5
LATE_EFFECT = 0.5  # the KS distance of a site's or referrer's delays that click spam shows
FAST_EFFECT = 0.4  # the KS distance of a referrer's delays, faster than the program's, to count
FAST_MEDIAN = 0.5  # or its median delay, at most this share of the program's


def traffic_source(click: ClickFacts) -> str | None:
    """Where a visit came from: the site its Referer names; without a Referer, the names of
    the landing's own parameters other than campaign tags (utm_*), as "?name&name": an app or
    ad network that fires clicks without a Referer still marks its landings its own way (a
    sub-publisher id, its click id), and a social network's app its click id. None: a visit
    that says nothing of where it came from (typed, or from a mail app)."""
    return click.source or landing_source(click.query)


def landing_source(query: str | None) -> str | None:
    """A source named by a landing's parameters (see `traffic_source`), or None."""
    names = landing_names(query)
    return "?" + "&".join(names) if names else None


def landing_names(query: str | None) -> list[str]:
    """The parameter names of a landing query (or of a query of names alone, "a&b"), lower
    case, sorted, without campaign tags (utm_*, which any link's sharer adds by hand)."""
    names = {part.split("=", 1)[0].strip().lower()
             for part in (query or "").lstrip("?").split("&")}
    return sorted(n for n in names if n and not n.startswith("utm_"))


def _source_findings(conversions: Sequence[ConversionFacts], context: ProgramContext,
                     program_rate: float | None, tally: _Tally
                     ) -> list[tuple[str, Finding]]:
    """click_spam_source: the visits from one traffic source (`traffic_source`: a site, or an
    app or ad network by the parameters it puts on its landings), pooled over every referrer
    they credit, convert far less than the rest of the program's visits (binomial) and later
    (one-sided KS against the other sources' conversions): an app or page firing clicks at
    people who buy days later anyway, spread over several accounts so that none of them
    stands out. Both baselines leave the source out (a source that is much of the program's
    traffic would otherwise pull the program's rate and delays towards its own). Controlled
    across sources (Benjamini-Hochberg).

    Carried by the late conversions whose last click came from that source; and, of a
    referrer that gets far more of its clicks from the source than the program's referrers do
    (`_runs_on`: its link is placed there), also by its late conversions whose last click says
    nowhere (no Referer, no parameters): the spam's other clicks, with their marks stripped.
    Its conversions that came through a site people share on stay its own."""
    if not program_rate or not context.source_clicks:
        return []
    delays: dict[str, list[float]] = defaultdict(list)
    credited: dict[str, set[str]] = defaultdict(set)
    every: list[tuple[float, str | None]] = []
    for conv in conversions:
        if not conv.touches or conv.delay is None:
            continue
        host = traffic_source(conv.touches[-1])
        every.append((max(conv.delay, 0.0), host))
        if host is None:
            continue
        delays[host].append(max(conv.delay, 0.0))
        credited[host].update(conv.referrers)
    clicks = sum(context.referrer_clicks.values()) or sum(context.source_clicks.values())
    converted = program_rate * clicks
    p_values: dict[str, float] = {}
    rest_rates: dict[str, float] = {}
    others_of: dict[str, np.ndarray] = {}
    for host, own in delays.items():
        n_clicks = context.source_clicks.get(host, 0)
        if len(own) < SOURCE_MIN_CONVERSIONS or n_clicks < SPAM_MIN_CLICKS:
            continue
        # Every source large enough to test counts in the multiple-testing control, the
        # ones that fail the cheaper checks below at p 1: picking the tests by their
        # outcome, then controlling over the picked ones only, finds an honest site whose
        # audience happens to buy late (an influencer's) among a handful of sites.
        p_values[host] = 1.0
        rest = (converted - len(own)) / max(clicks - n_clicks, 1)
        if rest <= 0 or len(own) / n_clicks >= rest:
            continue
        others = (context.background_delays if context.background_delays is not None
                  else np.array([d for d, source in every if source != host]))
        if len(others) < KS_MIN_CONVERSIONS:
            continue
        slower = _ks(own, others, "less")
        if slower.statistic < LATE_EFFECT:
            continue
        # Both must hold (an intersection-union test: the larger p-value): a site whose
        # visitors buy days later but as often as the program's (a professional network's
        # audience) is no click spam.
        p_values[host] = max(float(slower.pvalue), _rate_below(len(own), n_clicks, rest))
        rest_rates[host], others_of[host] = rest, np.asarray(others)
    out: list[tuple[str, Finding]] = []
    for host in sorted(benjamini_hochberg(p_values)):
        own, n_clicks = delays[host], context.source_clicks[host]
        late = min(_split(own, others_of[host], faster=False), LATE_SECONDS)
        placed = _runs_on(host, credited[host], context)
        reason = Reason(
            "click_spam_source", f"referrer population: the {n_clicks} visits from "
            f"{_source_name(host)} (credited to {len(credited[host])} referrers) converted at "
            f"{len(own) / n_clicks:.1%} against the rest of the program's "
            f"{rest_rates[host]:.1%}, and later (median {_median(own) / 3600:.0f} h): clicks "
            "fired at people who were buying anyway", round(len(own) / n_clicks, 4),
            f"FDR {FDR_Q:g}", 0.65, "population")
        out += [(ref, Finding(reason, _from_source(host, late, unmarked=ref in placed),
                              p_values[host])) for ref in sorted(credited[host])]
    return out


def _source_name(host: str) -> str:
    return f"landings marked {host[1:]}" if host.startswith("?") else host


def _runs_on(host: str, credited: Collection[str], context: ProgramContext) -> set[str]:
    """Of the referrers a source brought visits to, those that get far more of their clicks
    from it than the program's clicks come from it (one-sided binomial against the program's
    share, Bonferroni across them): referrers whose link is placed on the source, not ones
    it happened to pass a visit to."""
    by_referrer = context.source_referrers.get(host, {})
    total = sum(context.referrer_clicks.values())
    if not by_referrer or not total or not credited:
        return set()
    share = context.source_clicks.get(host, 0) / total
    return {ref for ref in credited
            if _binom_above(by_referrer.get(ref, 0), max(context.referrer_clicks.get(ref, 0),
                                                         by_referrer.get(ref, 0)), share)
            <= FDR_Q / len(credited)}


def _rate_below(conversions: int, clicks: int, rate: float) -> float:
    """P(X <= conversions) for X ~ Binomial(clicks, rate): the p-value of "converts less than
    the program's `rate`"."""
    return float(stats.binom.cdf(min(conversions, clicks), clicks, min(max(rate, 1e-6), 1.0)))


def _from_source(host: str, after: float, *, unmarked: bool = False) -> Carry:
    """Conversions `after` seconds or more after their last click, which came from `host`
    (or, `unmarked`, from no source it names)."""
    came = {host, None} if unmarked else {host}
    return lambda c: (bool(c.touches) and traffic_source(c.touches[-1]) in came
                      and (c.delay is None or c.delay >= after))


BASELINE_MIN = 20  # the program's other conversions a referrer is compared with, at least
FDR_Q = 0.01  # Benjamini-Hochberg false discovery rate of each referrer-level test
MIN_AMOUNT_SHARE = 0.3
MIN_AMOUNT_MIN_CONVERSIONS = 4
LANGUAGE_SHARE = 0.8
LANGUAGE_MIN_CONVERSIONS = 6
LATE_SECONDS = 3600.0  # a click-spam credited conversion comes this long after its click


def benjamini_hochberg(p_values: Mapping[str, float], q: float = FDR_Q) -> set[str]:
    """The keys whose p-values are discoveries at false discovery rate q."""
    ordered = sorted(p_values.items(), key=lambda kv: kv[1])
    m = len(ordered)
    cut = 0
    for i, (_key, p) in enumerate(ordered, 1):
        if p <= q * i / m:
            cut = i
    return {key for key, _p in ordered[:cut]}


def fisher(p_values: Iterable[float]) -> float:
    """Fisher's method: the p-value of independent p-values together."""
    values = [max(p, 1e-300) for p in p_values]
    return float(stats.chi2.sf(-2 * sum(math.log(p) for p in values), 2 * len(values)))


def _binom_above(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p): what stats.binom.sf(k - 1, n, p) answers, through
    the function it calls (its argument checks cost 400 times the computation, and a scan
    asks this of every referrer several times)."""
    p = min(max(p, 1e-6), 1.0)
    if math.isnan(p):  # what stats.binom.sf answers to an invalid p
        return p
    if k <= 0:
        return 1.0
    if k > n:
        return 0.0
    return min(max(float(_binom_sf(float(k - 1), n, p)), 0.0), 1.0)


def binom_above(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p) (`_binom_above`), for the other modules."""
    return _binom_above(k, n, p)


@dataclass(slots=True)
class _Tally:
    """The conversions at hand, counted per credited referrer."""

    delays: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    # whose each of those delays is (the customer), in the same order
    delayed: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    times: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    counts: Counter[str] = field(default_factory=Counter)
    refunds: Counter[str] = field(default_factory=Counter)
    # Of each referrer's reversed conversions: the latest one's time, the smallest and largest
    # amount
    refunded: dict[str, tuple[float, int, int]] = field(default_factory=dict)
    headerless: Counter[str] = field(default_factory=Counter)
    touched_by: Counter[str] = field(default_factory=Counter)  # conversions with clicks
    touched: int = 0  # the program's conversions with clicks
    headerless_in_program: int = 0
    conversions: int = 0
    reversed: int = 0
    min_amount: int = 0  # the program's smallest positive amount
    at_min: Counter[str] = field(default_factory=Counter)
    with_amount: Counter[str] = field(default_factory=Counter)
    at_min_in_program: int = 0
    with_amount_in_program: int = 0
    # conversions that could come back (paid, or refunded or charged back): refunds' baseline
    paid: Counter[str] = field(default_factory=Counter)
    paid_in_program: int = 0
    reversed_ids: frozenset[int] = frozenset()
    # the customers each referrer is credited with (a customer who signs up and buys counts
    # once)
    customers: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    # when each of those customers first converted through the referrer
    arrivals: dict[str, dict[str, float]] = field(default_factory=lambda: defaultdict(dict))
    # (browser, language) of each touched conversion's last click
    languages: dict[str, list[tuple[str, str]]] = field(
        default_factory=lambda: defaultdict(list))
    # the address of each of those last clicks, in the same order
    language_sites: dict[str, list[str | None]] = field(
        default_factory=lambda: defaultdict(list))
    language_pairs: Counter[tuple[str, str]] = field(default_factory=Counter)
    browsers: Counter[str] = field(default_factory=Counter)
    browser_tongues: Counter[tuple[str, str]] = field(default_factory=Counter)


def _tally(conversions: Sequence[ConversionFacts], reversed_ids: frozenset[int]) -> _Tally:
    tally = _Tally(reversed_ids=reversed_ids)
    amounts = [c.amount for c in conversions if c.amount > 0]
    tally.min_amount = min(amounts) if amounts else 0
    for conv in conversions:
        delay = conv.delay
        no_header = is_headerless(conv)
        tally.touched += bool(conv.touches)
        tally.headerless_in_program += no_header
        tally.conversions += 1
        was_reversed = conv.conversion_id in reversed_ids
        tally.reversed += was_reversed
        cheap = conv.amount > 0 and conv.amount == tally.min_amount
        tally.at_min_in_program += cheap
        tally.with_amount_in_program += conv.amount > 0
        payment = conv.amount > 0 or was_reversed
        tally.paid_in_program += payment
        pair = _language_pair(conv)
        if pair is not None:
            tally.language_pairs[pair] += 1
            tally.browsers[pair[0]] += 1
            tally.browser_tongues[(pair[0], _tongue(pair[1]))] += 1
        for ref in conv.referrers:
            tally.counts[ref] += 1
            tally.customers[ref].add(conv.customer)
            arrived = tally.arrivals[ref]
            arrived[conv.customer] = min(arrived.get(conv.customer, conv.at), conv.at)
            tally.times[ref].append(conv.at)
            tally.paid[ref] += payment
            if was_reversed:
                tally.refunds[ref] += 1
                last, low, high = tally.refunded.get(ref, (conv.at, conv.amount, conv.amount))
                tally.refunded[ref] = (max(last, conv.at), min(low, conv.amount),
                                       max(high, conv.amount))
            if no_header:
                tally.headerless[ref] += 1
            if conv.touches:
                tally.touched_by[ref] += 1
            if delay is not None:
                tally.delays[ref].append(max(delay, 0.0))
                tally.delayed[ref].append(conv.customer)
            if conv.amount > 0:
                tally.with_amount[ref] += 1
                tally.at_min[ref] += cheap
            if pair is not None:
                tally.languages[ref].append(pair)
                tally.language_sites[ref].append(conv.touches[-1].ip)
    return tally


def _language_pair(conv: ConversionFacts) -> tuple[str, str] | None:
    if not conv.touches:
        return None
    last = conv.touches[-1]
    if not last.language or not last.browser:
        return None
    return (last.browser, last.language)


def _delay_sample(delays: Mapping[str, list[float]]) -> tuple[np.ndarray, np.ndarray]:
    """Every delay at hand and whose it is; above OTHERS_SAMPLE, a fixed random sample of
    them: as good for the test, and each referrer's comparison costs the sample's size, not
    the program's."""
    everyone = np.array([d for ds in delays.values() for d in ds])
    owner = np.array([ref for ref, ds in delays.items() for _ in ds], dtype=object)
    if len(everyone) > OTHERS_SAMPLE:
        keep = np.random.default_rng(0).choice(len(everyone), OTHERS_SAMPLE, replace=False)
        everyone, owner = everyone[keep], owner[keep]
    return everyone, owner


def _delay_findings(tally: _Tally, context: ProgramContext,
                    totals: Mapping[str, tuple[int, float]], program_rate: float | None,
                    gathered: Mapping[str, set[str]] | None = None) -> dict[str, Finding]:
    """delay_distribution: a referrer's delays faster than the program's (one-sided KS).
    Its `gathered` customers (`own_gatherings`: a crowd of people who clicked its link from
    one network's NAT addresses, that crowd mostly its own) are left out of its sample and
    never carry the finding: a club's members told at a meeting buy within the hour because
    they were told together, not because a click was fired into a purchase already under
    way (injection's clicks come from each customer's own phone, wherever it is)."""
    gathered = gathered or {}
    everyone, owner = _delay_sample(tally.delays)
    faster_p: dict[str, float] = {}
    made: dict[str, Finding] = {}
    for ref, all_own in tally.delays.items():
        away = gathered.get(ref, set())
        own = ([d for d, c in zip(all_own, tally.delayed[ref], strict=True) if c not in away]
               if away else all_own)
        others = (context.background_delays if context.background_delays is not None
                  else everyone[owner != ref])
        if len(own) < SPAM_MIN_CONVERSIONS or len(others) < KS_MIN_CONVERSIONS:
            continue
        if len(own) >= KS_MIN_CONVERSIONS:
            faster = _ks(own, others, "greater")
            if faster.pvalue == faster.pvalue:  # a NaN p-value says nothing
                faster_p[ref] = float(faster.pvalue)
                # A finding needs an effect as well as significance, which a large sample
                # gives a small shift: the KS distance (a bound on the share of the
                # referrer's conversions that came sooner than the program's would) under
                # FAST_EFFECT and a typical delay more than FAST_MEDIAN of the program's is an
                # audience that buys a little sooner (people who came to buy), not clicks
                # fired into purchases already under way. (Still one of the tests the false
                # discovery rate is controlled over.)
                if faster.statistic < FAST_EFFECT and _median(own) > FAST_MEDIAN * float(
                        np.median(others)):
                    continue
                quick = _split(own, others, faster=True)
                left_out = (f"; {len(all_own) - len(own)} conversions of people who came "
                            "together from shared networks left out" if away else "")
                made[ref] = Finding(Reason(
                    "delay_distribution",
                    f"referrer population: {ref}'s visitors convert faster than the program's "
                    f"(median {_median(own):.0f} s against {float(np.median(others)):.0f} s"
                    f"{left_out})",
                    round(float(faster.statistic), 4), f"FDR {FDR_Q:g}", 0.6, "population"),
                    _faster_than(quick, frozenset(away)),
                    float(faster.pvalue))
    return {ref: made[ref] for ref in benjamini_hochberg(faster_p, KS_P_VALUE) if ref in made}


def _spam_findings(tally: _Tally, context: ProgramContext,
                   totals: Mapping[str, tuple[int, float]], program_rate: float | None,
                   suspects: set[str]) -> dict[str, Finding]:
    """click_spam per referrer, against a baseline without the referrers other tests found
    anomalous: where fraud is much of a program's traffic (fast injected conversions, farms
    converting at will), the raw program's rate and delays would make honest referrers look
    slow and unconverting."""
    clean_delays = {ref: ds for ref, ds in tally.delays.items() if ref not in suspects}
    everyone, owner = _delay_sample(clean_delays)
    program_rate = _clean_rate(tally, context, suspects, program_rate)
    spam_p: dict[str, float] = {}
    spam_made: dict[str, Finding] = {}
    for ref, own in tally.delays.items():
        if ref in suspects:
            continue
        others = (context.background_delays if context.background_delays is not None
                  else everyone[owner != ref])
        if len(own) < SPAM_MIN_CONVERSIONS or len(others) < KS_MIN_CONVERSIONS:
            continue
        spam = _click_spam(ref, own, others, conversions=totals[ref][0],
                           n_clicks=context.referrer_clicks.get(ref, 0),
                           program_rate=program_rate,
                           decided=_median(_decision_delays(own, tally.delayed[ref])))
        if spam is not None:
            spam_p[ref] = spam.p_value
            spam_made[ref] = spam
    return {ref: spam_made[ref] for ref in benjamini_hochberg(spam_p)}


def _clean_rate(tally: _Tally, context: ProgramContext, suspects: Collection[str],
                program_rate: float | None) -> float | None:
    """The program's conversions per click without the `suspects` (a full scan; an
    incremental one has the rate the latest full scan measured)."""
    if context.program_rate is None and context.referrer_clicks:
        clicks = sum(n for ref, n in context.referrer_clicks.items() if ref not in suspects)
        converted = sum(n for ref, n in tally.counts.items() if ref not in suspects)
        return converted / clicks if clicks else program_rate
    return program_rate


STEADY_MIN_CLICKS = 30  # counted clicks of a referrer before its rhythm can tell
STEADY_MIN_DAYS = 7  # days from its first click to its last
STEADY_BURST_P = 0.01  # daily clicks not over-dispersed at this level: a steady stream
STEADY_MIN_CUSTOMERS = 3


def _first_delays(conversions: Sequence[ConversionFacts]) -> dict[str, dict[str, float]]:
    """Per referrer, each of its customers' delay from click to their first conversion
    credited to it: one observation a person (a sign-up and the purchase minutes later say
    the same thing about the click)."""
    out: dict[str, dict[str, float]] = defaultdict(dict)
    for conv in sorted(conversions, key=lambda c: c.at):
        delay = conv.delay
        if delay is None:
            continue
        for ref in conv.referrers:
            out[ref].setdefault(conv.customer, max(delay, 0.0))
    return out


STEADY_SAMPLE_RATIO = 20  # the program's customers' delays, at least this many times its own


def _later_than(own: Sequence[float], program: np.ndarray) -> tuple[float, float]:
    """One-sided Kolmogorov-Smirnov test that `own` delays are later than the program's
    (`program`: sorted, many times more than `own`, so that its empirical distribution
    stands for the program's and the one-sample distribution of the statistic applies; the
    referrer's own delays among them only make the test more cautious): the largest gap
    by which the program's distribution is ahead of the referrer's, and its p-value."""
    n = len(own)
    ahead = np.searchsorted(program, np.sort(np.asarray(own, dtype=float)), side="left")
    statistic = float(np.max(ahead / len(program) - np.arange(n) / n))
    return statistic, float(stats.ksone.sf(max(statistic, 0.0), n))


def _steady_late_findings(conversions: Sequence[ConversionFacts], context: ProgramContext,
                          found: Collection[str]) -> dict[str, Finding]:
    """steady_late_clicks: click spam that converts like the program. A shared link's clicks
    come in bursts after each share; clicks fired at visitors (an app, a retargeting script)
    come as a steady stream, day after day (ClickRhythm.burst_p_value not significant); and
    what converts comes long after its click, from people who were buying anyway. Among the
    referrers with a steady stream of clicks and no other finding, those whose customers'
    first conversions came later than the program's customers' (one-sided two-sample KS,
    one delay a customer) are discoveries under Benjamini-Hochberg. Carried by the
    conversions later than where the two distributions part, of customers whose first
    conversion through the referrer came that late too (the unit the test counts: a friend
    who signed up minutes after the referrer's link and bought days later through the same
    click was brought by it), whatever site their click came through: clicks fired at
    visitors come from the pages the visitors were on, and a popular site many referrers'
    visitors come from (a sharing site, `_unshared`) is where a spammer's placements are too.
    Where the distributions part is the data's own (no floor of LATE_SECONDS): most of the
    program's purchases come an hour or more after their click, so that such a floor ties
    the referrer's genuine customers to the spam as readily as its spammed ones.

    Full scans only (the context's click_rhythm is empty in incremental ones): an
    incremental scan's window (each referrer's latest conversions) is no sample of the
    program's customers' delays."""
    if not context.click_rhythm:
        return {}
    delays = _first_delays(conversions)
    everyone, owner = _delay_sample({ref: list(ds.values()) for ref, ds in delays.items()})
    order = np.argsort(everyone)
    everyone, owner = everyone[order], owner[order]
    median = float(np.median(everyone)) if len(everyone) else 0.0
    p_values: dict[str, float] = {}
    made: dict[str, Finding] = {}
    for ref, rhythm in context.click_rhythm.items():
        own = list(delays.get(ref, {}).values())
        if (ref in found or len(own) < STEADY_MIN_CUSTOMERS
                or rhythm.clicks < STEADY_MIN_CLICKS or rhythm.days < STEADY_MIN_DAYS):
            continue
        bursts = rhythm.burst_p_value()
        if bursts <= STEADY_BURST_P:
            continue
        if len(everyone) >= STEADY_SAMPLE_RATIO * len(own):
            statistic, p_values[ref] = _later_than(own, everyone)
        else:  # a small program: the two-sample test against the others' customers
            others = everyone[owner != ref]
            if len(others) < BASELINE_MIN:
                continue
            slower = _ks(own, others, "less")
            statistic, p_values[ref] = float(slower.statistic), float(slower.pvalue)
        late = _split(own, everyone, faster=False)
        made[ref] = Finding(Reason(
            "steady_late_clicks",
            f"referrer population: {ref}'s {rhythm.clicks} clicks came as a steady stream over "
            f"{rhythm.days} days, not in bursts after shares (p {bursts:.2f}), and its "
            f"{len(own)} customers converted later than the program's (median "
            f"{_median(own) / 3600:.0f} h against {median / 3600:.0f} h): "
            "clicks fired at people who were buying anyway (click spam)",
            round(statistic, 4), f"FDR {FDR_Q:g}", 0.6, "population"),
            _slower_than(late, delays), p_values[ref])
    return {ref: made[ref] for ref in benjamini_hochberg(p_values)}


def _unshared(sharing: frozenset[str]) -> Carry:
    """Whether a conversion's attributed click came other than through a site where people
    pass links to each other (sharing_sites): a link the referrer shared with friends there.
    A referrer-level test of how its clicks came (a steady stream, a steady pace) found
    clicks that nobody passed on: its friends who came by a message or a post did not come
    with those."""
    return lambda c: _last_site(c) not in sharing


def _even_findings(context: ProgramContext, found: Collection[str],
                   sharing: frozenset[str] = frozenset()) -> dict[str, Finding]:
    """even_clicks: a referrer whose clicks came at a steady rhythm (ClickRhythm.
    even_p_value), under Benjamini-Hochberg across the referrers with enough clicks to
    tell. A shared link's clicks come from people who each click when they see it: bursts
    after a post, quiet nights, but independent, so consecutive gaps are as uneven as a
    Poisson process's. A click farm's workers click one visit after another through their
    shift: a pace, jittered to look human, that keeps consecutive gaps alike. The test
    looks at gaps two at a time, so shifts, hours of the day and the ebb of a post's
    attention (the rate changing) do not count against people. Carried by the conversions
    that came through the referrer's clicks within the stretch of days its clicks were paced
    (ClickRhythm.paced), except those that came through a site where people pass links to
    each other (`_unshared`): the referrer's friends before or after the farm, or by a
    message in between, did not come through its paced clicks.

    A farm of a dozen customers makes two dozen clicks: too few for the test to stand out
    among hundreds of referrers. So the referrers another test already `found` (a conversion
    rate far above the program's, a day of many conversions, ...) are also tested as a
    family of their own, each family under Benjamini-Hochberg: how a referrer's visitors
    converted says nothing of the gaps between their clicks where people click on their
    own, so the p-values of the ones picked stay uniform."""
    p_values = {ref: r.even_p_value() for ref, r in context.click_rhythm.items()
                if r.gap_pairs >= EVEN_MIN_PAIRS}
    suspects = {ref: p for ref, p in p_values.items() if ref in found}
    out: dict[str, Finding] = {}
    for ref in sorted(benjamini_hochberg(p_values) | benjamini_hochberg(suspects)):
        rhythm = context.click_rhythm[ref]
        mean = rhythm.gap_spread / rhythm.gap_pairs
        out[ref] = Finding(Reason(
            "even_clicks", f"referrer population: {ref}'s {rhythm.clicks} clicks came at a "
            f"steady rhythm: of each two consecutive gaps between them, the first was "
            f"{0.5 - mean:.0%} to {0.5 + mean:.0%} of the two on average, where people "
            "clicking on their own give 25% to 75% (a click farm's workers, paced)"
            + _stretch_words(rhythm.paced),
            round(mean, 4), 0.25, 0.6, "population"),
            lambda c: bool(c.touches), p_values[ref],
            within=_paced_click(rhythm.paced, _unshared(sharing)))
    return out


def _stretch_words(paced: tuple[float, float] | None) -> str:
    """Where the clicks were paced, in words for the review page."""
    if paced is None:
        return ""
    first, last = (datetime.fromtimestamp(t, UTC).date() for t in (paced[0], paced[1] - DAY))
    return (f"; paced from {first} to {last}: the referrer's conversions through clicks "
            "outside those days, or through a site where people pass links on, do not carry it")


def _paced_click(paced: tuple[float, float] | None, unshared: Carry) -> Carry:
    """Whether a conversion's attributed click came `unshared` and within the stretch where
    the referrer's clicks were paced (ClickRhythm.paced; anywhere where that is unknown): the
    referrer's friends who clicked its link before the farm began or after it ended did not
    come through it."""
    if paced is None:
        return unshared
    start, end = paced
    return lambda c: bool(c.touches) and start <= c.touches[-1].at < end and unshared(c)


STEADY_RATE_MIN_CLICKS = 8  # counted clicks of a referrer before its conversion rate can tell
STEADY_CONVERTING_WEIGHT = 0.5  # a hold for review: one test of the referrer's traffic
SHOPPING_SECONDS = 3 * DAY  # a shopper who came to buy buys within the visit or soon after
FENCE_IQR = 3.0  # Tukey's far-out fence: interquartile ranges above the upper quartile
FENCE_MIN = 4  # a stream's customers before its pace and places can tell
DIRECT_RARE = 0.1  # a stream whose customers come without a Referer this rarely comes by sites
SHARING_SITE_REFERRERS = 5  # a site whose visits credit this many referrers: people share there


def _steady_converting_findings(conversions: Sequence[ConversionFacts],
                                context: ProgramContext, found: Collection[str],
                                sharing: frozenset[str]) -> dict[str, Finding]:
    """steady_converting: a referrer whose clicks came as a steady stream over days
    (ClickRhythm.burst_p_value not significant) and brought far more new customers per click
    than the clicks of the program's referrers no other test found do (one-sided binomial
    against their rate, Benjamini-Hochberg across the referrers with a steady stream; the
    program's own rate is pulled down by its fraud: click spam's and bots' clicks that bring
    nobody).

    A referral link is shared: its clicks come in bursts after each share, and the people who
    click are the referrer's audience, of whom some buy. A link that brings a steady trickle of
    visitors who nearly all buy is being found by people who came to buy anyway: a referral
    code leaked to coupon sites and picked up by shoppers at the checkout, the merchant's own
    brand bought as search ads through the link, or accounts made to buy through it (a
    refund farm). Honest look-alikes: an influencer's followers convert well, but after
    each post (bursts); a merchant's mailing wakes referrers in one burst; a popular genuine
    referrer brings many clicks that convert like the program's.

    All of such a link's traffic is in question, but the referrer's own friends are not
    strangers come to buy: they come back and buy again, may take days to make up their
    minds, and come through the places where people pass links to each other (a social
    network, a mail app: sites whose visits go to many of the program's referrers). Carried
    by the conversions of the referrer's one-time buyers (at most one purchase credited to
    it) who converted within SHOPPING_SECONDS of the click, from no site or one few
    referrers' visitors come from (a coupon site, a landing page). A leak's shoppers are
    strangers, each on a network of their own: colleagues who buy through a link on their
    office's intranet, or students on a campus, click from networks they share (an audience
    of people who know each other). A referrer half of whose customers clicked from a network
    another of its customers clicked from too is not tested, and a customer on such a network
    never carries the finding, nor does one unlike the stream of shoppers (like_the_stream).
    Full scans only (an incremental scan's context has no click rhythm)."""
    if not context.click_rhythm:
        return {}
    customers: dict[str, set[str]] = defaultdict(set)
    purchases: Counter[tuple[str, str]] = Counter()
    by_referrer: dict[str, list[ConversionFacts]] = defaultdict(list)
    for conv in conversions:
        for ref in conv.referrers:
            customers[ref].add(conv.customer)
            by_referrer[ref].append(conv)
            if conv.amount > 0:
                purchases[(ref, conv.customer)] += 1
    crowd = _crowded_customers(conversions)
    # A click that brought a buyer who did not come back: what a leaked code or an ad brings.
    once = {ref: {c for c in people if purchases[(ref, c)] <= 1}
            for ref, people in customers.items()}
    total_once = sum(len(c) for ref, c in once.items() if ref not in found)
    total_clicks = sum(r.clicks for ref, r in context.click_rhythm.items() if ref not in found)
    p_values: dict[str, float] = {}
    baseline: dict[str, float] = {}
    for ref, rhythm in context.click_rhythm.items():
        k, n = len(once.get(ref, ())), rhythm.clicks
        if (n < STEADY_RATE_MIN_CLICKS or rhythm.days < STEADY_MIN_DAYS or not k
                or rhythm.burst_p_value() <= STEADY_BURST_P
                or 2 * len(crowd.get(ref, ())) >= len(customers[ref])):
            continue
        mine = 0 if ref in found else 1  # its own clicks are in the baseline
        rest = (total_once - mine * k + 1) / (total_clicks - mine * n + 2)
        if k / n <= rest:
            continue
        p_values[ref], baseline[ref] = _binom_above(min(k, n), n, rest), rest
    out: dict[str, Finding] = {}
    for ref in benjamini_hochberg(p_values):
        rhythm, k, rest = context.click_rhythm[ref], len(once[ref]), baseline[ref]
        out[ref] = Finding(Reason(
            "steady_converting", f"referrer population: {ref}'s {rhythm.clicks} clicks came "
            f"as a steady stream over {rhythm.days} days, not in bursts after shares, and "
            f"brought {k} buyers who did not come back ({k / rhythm.clicks:.0%} of its "
            f"clicks, the program's {rest:.0%}): a link found by people who came to buy anyway "
            "(a leaked coupon code, bought search ads) or fed with made accounts; its "
            "one-time buyers held for review", round(k / rhythm.clicks, 4), f"FDR {FDR_Q:g}",
            STEADY_CONVERTING_WEIGHT, "population"),
            _came_to_buy(frozenset(once[ref] - crowd.get(ref, set())), sharing,
                         by_referrer[ref]),
            p_values[ref])
    return out


def sharing_sites(conversions: Sequence[ConversionFacts]) -> frozenset[str]:
    """The sites (Referer hosts) whose visits credit SHARING_SITE_REFERRERS of the program's
    referrers or more: where people pass links to each other (a social network, a mail
    app), not a place one referrer's traffic is sourced from."""
    credited_from: dict[str, set[str]] = defaultdict(set)
    for conv in conversions:
        host = _last_site(conv)
        if host is not None:
            credited_from[host].update(conv.referrers)
    return frozenset(h for h, refs in credited_from.items()
                     if len(refs) >= SHARING_SITE_REFERRERS)


def _crowded_customers(conversions: Sequence[ConversionFacts]) -> dict[str, set[str]]:
    """Per referrer, its customers whose attributed click came from a network (IPv4 /24,
    IPv6 /48) from which another of its customers clicked too."""
    nets: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for conv in conversions:
        ip = conv.touches[-1].ip if conv.touches else None
        if ip is None:
            continue
        for ref in conv.referrers:
            nets[ref][ip_prefix(ip)].add(conv.customer)
    return {ref: {c for people in by_net.values() if len(people) > 1 for c in people}
            for ref, by_net in nets.items()}


def _came_to_buy(customers: frozenset[str], sharing: frozenset[str],
                 conversions: Sequence[ConversionFacts]) -> Carry:
    """The conversions of a steady link's one-time buyers (`customers`) that look like
    shoppers who came to buy: within SHOPPING_SECONDS of the click, not through a site where
    people pass links to each other, and like the rest of the link's such traffic
    (`like_the_stream`)."""
    def shopping(c: ConversionFacts) -> bool:
        return (c.customer in customers and c.delay is not None and c.delay <= SHOPPING_SECONDS
                and _last_site(c) not in sharing)

    stream = [c for c in conversions if shopping(c)]
    alike = like_the_stream(stream)
    return lambda c: shopping(c) and alike(c)


def like_the_stream(stream: Sequence[ConversionFacts]) -> Carry:
    """Whether a conversion looks like a referrer's stream of anomalous conversions
    (`stream`: a steady link's one-time buyers within SHOPPING_SECONDS, not through a sharing
    site; a refund farm's refunded purchases), on the two traits a stream of strangers come
    to buy (or of made accounts) has and a friend of the referrer need not share: how long
    they took and where they came from.

    - How long: a leak's or an ad's shoppers buy at one pace (minutes, a tail of hours); a
      customer who took longer than the stream's far-out fence (Tukey: the upper quartile
      plus FENCE_IQR interquartile ranges of its log delays) and came with no Referer did not
      come with it: a friend who took a day or two to make up their mind after a message.
      One who came through a site of its own (a coupon site, a search engine) still did.
    - Where from: where at most DIRECT_RARE of the stream's other customers came without a
      Referer (its traffic comes through its coupon site or search ads), one with none who also
      took longer than the stream's median came by another way: a link the referrer passed
      to a friend. A quicker one is a shopper of the stream whose browser sent no Referer.
      So did a customer with no Referer whose landing carries a medium tag (utm_medium: a
      share button's "referral", say) that at most DIRECT_RARE of the stream's other
      customers' landings carry (two friends who both used the share button are still
      friends): a leak's shoppers copy the bare code, an ad's visitors come tagged as paid.

    Under FENCE_MIN customers in the stream, every conversion is alike (too few to tell)."""
    people = {c.customer for c in stream}
    if len(people) < FENCE_MIN:
        return lambda c: True
    logs = np.log(np.maximum([c.delay for c in stream if c.delay is not None], 1.0))
    if not len(logs):  # credited without a click (a referral code): no pace to tell
        return lambda c: True
    q1, q3 = np.percentile(logs, [25, 75])
    fence, median = math.exp(q3 + FENCE_IQR * (q3 - q1)), math.exp(float(np.median(logs)))
    direct = {c.customer for c in stream if _last_site(c) is None}
    media: dict[str, set[str]] = defaultdict(set)
    for conv in stream:
        medium = _medium(conv)
        if medium is not None:
            media[medium].add(conv.customer)

    def alike(c: ConversionFacts) -> bool:
        if _last_site(c) is not None or c.delay is None:
            return True
        medium = _medium(c)
        others = DIRECT_RARE * (len(people) - 1)
        if medium is not None and len(media.get(medium, set()) - {c.customer}) <= others:
            return False
        rare = len(direct - {c.customer}) <= others
        return c.delay <= fence and (c.delay <= median or not rare)

    return alike


def _medium(conv: ConversionFacts) -> str | None:
    """The utm_medium tag of the landing of a conversion's attributed click, lower case."""
    query = conv.touches[-1].query if conv.touches else None
    for name, value in parse_qsl((query or "").lstrip("?")):
        if name.strip().lower() == "utm_medium" and value.strip():
            return value.strip().lower()
    return None


QUICK_QUANTILE = 0.1  # the program's fastest conversions: an injection's are among them
QUICK_MIN = 3


def _quick_findings(tally: _Tally, context: ProgramContext) -> dict[str, Finding]:
    """injection_timing: more of a referrer's conversions among the program's fastest
    (its QUICK_QUANTILE of click-to-conversion delays) than chance gives (binomial): a click
    fired just before a purchase that was happening anyway, however few the referrer's
    conversions. Carried by those fast conversions."""
    everyone, _owner = _delay_sample(tally.delays)
    base = (context.background_delays if context.background_delays is not None else everyone)
    if len(base) < 50:
        return {}
    cut = float(np.quantile(base, QUICK_QUANTILE))
    p_values: dict[str, float] = {}
    counts: dict[str, tuple[int, int]] = {}
    for ref, own in tally.delays.items():
        k = sum(1 for d in own if d < cut)
        if k < QUICK_MIN:
            continue
        p_values[ref] = _binom_above(k, len(own), QUICK_QUANTILE)
        counts[ref] = (k, len(own))
    out: dict[str, Finding] = {}
    for ref in benjamini_hochberg(p_values):
        k, n = counts[ref]
        out[ref] = Finding(Reason(
            "injection_timing", f"click: {k} of {ref}'s {n} conversions came within "
            f"{cut:.0f} s of the click, the program's fastest {QUICK_QUANTILE:.0%}: clicks "
            "fired just before purchases (click injection)", k, f"FDR {FDR_Q:g}", 0.7, "click"),
            _faster_than(cut), p_values[ref])
    return out


# The findings on how soon after its click a referrer's conversions came: click injection.
TIMING = frozenset({"delay_distribution", "injection_timing", "interjected_clicks"})
FAST_QUANTILE = 0.01  # the program's fastest purchases: an injected one is among them
FAST_ROUNDS = 4  # baselines re-measured without the referrers found so far, at most


def _fast_purchase_findings(conversions: Sequence[ConversionFacts], context: ProgramContext,
                            found: Collection[str]) -> dict[str, Finding]:
    """fast_purchases: more of a referrer's purchases among the program's fastest
    (FAST_QUANTILE of the click-to-purchase delays of its other referrers' purchases) than
    chance gives (one-sided binomial): a click fired just before a purchase the customer was
    making anyway, on a referrer with as few as two purchases. Only purchases whose click
    landed after the customer's journey had begun count (`interjected`: signed up before it,
    or brought by another referrer's link): an honest referral's click starts the journey,
    however quickly its friend then buys. The binomial's rate stays FAST_QUANTILE, which
    bounds the share of the program's purchases that are both fast and interjected.

    Purchases only, against purchases: a sign-up follows its click within seconds where a
    purchase takes a visit, so a baseline of every conversion hides an injected purchase
    among honest sign-ups. The baseline leaves out the referrer's own purchases and those of
    the referrers this test found (`FAST_ROUNDS` rounds: found, the baseline re-measured
    without them, tested again): an injector's purchases are much of the program's fastest,
    and left in, they move the baseline's cut down to their own delays.

    A referrer with few purchases cannot come out significant however fast they were (one
    purchase: at best FAST_QUANTILE), and counted among the tests it only raises the bar for
    the others: Tarone's rule keeps the tests whose smallest possible p-value can pass
    (`_testable`), then Benjamini-Hochberg among them (Gilbert's procedure, which controls
    the false discovery rate). Referrers another timing test already `found` (TIMING) are
    left out: their fast conversions are tied already, and the same evidence twice is no
    corroboration.
    Full scans only (an incremental scan's window holds each referrer's latest conversions,
    and the context's delays are of every kind)."""
    if context.background_delays is not None or context.history:  # an incremental scan
        return {}
    begun = interjected(conversions)
    own: dict[str, list[float]] = defaultdict(list)
    # Of each referrer's purchases, the delays of those whose click landed after the
    # customer's journey had begun (`interjected`): only those can count as injected.
    taken: dict[str, list[float]] = defaultdict(list)
    for conv in conversions:
        if conv.amount > 0 and conv.delay is not None:
            for ref in conv.referrers:
                own[ref].append(max(conv.delay, 0.0))
                if conv.conversion_id in begun:
                    taken[ref].append(max(conv.delay, 0.0))
    mine = {ref: np.sort(np.asarray(ds)) for ref, ds in own.items()}
    late = {ref: np.sort(np.asarray(taken.get(ref, ()))) for ref in own}
    fast: set[str] = set()
    cuts: dict[str, float] = {}
    p_values: dict[str, float] = {}
    for _round in range(FAST_ROUNDS):
        base = np.sort(np.concatenate([ds for ref, ds in mine.items() if ref not in fast]
                                      or [np.zeros(0)]))
        if len(base) * FAST_QUANTILE < 1:  # too few purchases for the quantile to tell
            break
        p_values, cuts = {}, {}
        for ref, ds in mine.items():
            cut = _cut_without(base, ds if ref not in fast else ds[:0], FAST_QUANTILE)
            k = int(np.searchsorted(late[ref], cut, side="left"))
            cuts[ref] = cut
            p_values[ref] = _binom_above(k, len(ds), FAST_QUANTILE) if k else 1.0
        smallest = {ref: FAST_QUANTILE ** len(ds) for ref, ds in mine.items()}
        now = benjamini_hochberg({ref: p_values[ref] for ref in _testable(smallest)})
        if now <= fast:
            break
        fast |= now
    out: dict[str, Finding] = {}
    for ref in sorted(fast - set(found)):
        ds, cut = mine[ref], cuts[ref]
        k = int(np.searchsorted(late[ref], cut, side="left"))
        out[ref] = Finding(Reason(
            "fast_purchases", f"click: {k} of {ref}'s {len(ds)} purchases came within "
            f"{cut:.0f} s of a click that landed after the customer had signed up or arrived "
            "through another link, where the program's other purchases come that fast "
            f"{FAST_QUANTILE:.0%} of the time: clicks fired just before purchases that were "
            "happening anyway (click injection)", k, f"FDR {FDR_Q:g}", 0.7, "click"),
            _purchase_faster_than(cut, frozenset(begun)), p_values[ref])
    return out


def _cut_without(base: np.ndarray, own: np.ndarray, q: float) -> float:
    """The q-quantile (lower order statistic) of sorted `base` less the sorted `own` values
    (all among them): the leave-one-out cut, without copying the baseline."""
    rank = int(q * (len(base) - len(own)))
    taken = 0
    for _ in range(len(own) + 1):  # each step takes in at least one more own value
        at = min(rank + taken, len(base) - 1)
        now = int(np.searchsorted(own, base[at], side="right"))
        if now == taken:
            break
        taken = now
    return float(base[min(rank + taken, len(base) - 1)])


def _testable(smallest: Mapping[str, float], q: float = FDR_Q) -> set[str]:
    """Tarone's rule: of tests whose smallest possible p-values are `smallest`, those that can
    reach q / K, for the least K such that at most K of them can."""
    ordered = sorted(smallest.values())
    for k in range(1, len(ordered) + 1):
        if bisect_right(ordered, q / k) <= k:
            return {key for key, p in smallest.items() if p <= q / k}
    return set(smallest)


def _purchase_faster_than(seconds: float, begun: frozenset[int]) -> Carry:
    return lambda c: (c.amount > 0 and c.delay is not None and c.delay < seconds
                      and c.conversion_id in begun)


AGENT_MIN_CONVERSIONS = 6
AGENT_EFFECT = 0.75  # distinct browsers at most this share of what the program's mix gives


def _agent_findings(conversions: Sequence[ConversionFacts], tally: _Tally
                    ) -> dict[str, Finding]:
    """few_browsers: a referrer's converting visits, one an address, come from far
    fewer distinct browsers (User-Agent strings) than the same number of the program's
    visits would (the expected count of distinct values drawn from the program's mix, a
    normal approximation of its spread): a few phones and computers behind many residential
    addresses, a click farm's workers. Carried by the conversions on a browser the referrer's
    visits use more than once."""
    # One browser per customer (their first converting visit): a customer's repeat
    # purchases from their own phone are one person's browser, not a farm's.
    first: dict[str, ConversionFacts] = {}
    for conv in sorted(conversions, key=lambda c: c.at):
        if conv.touches and conv.touches[-1].agent and conv.customer not in first:
            first[conv.customer] = conv
    # One browser per address, too: colleagues behind an office's address on its standard
    # computer image are one site's browsers, not a farm's (whose workers sit behind
    # addresses of their own).
    sites: dict[str, dict[str, str]] = defaultdict(dict)
    mix: Counter[str] = Counter()
    for conv in first.values():
        last = conv.touches[-1]
        agent = last.agent or ""
        mix[agent] += 1
        for ref in conv.referrers:
            sites[ref].setdefault(last.ip or f"customer {conv.customer}", agent)
    agents = {ref: list(by_site.values()) for ref, by_site in sites.items()}
    total = sum(mix.values())
    if total < 50:
        return {}
    shares = np.array([n / total for n in mix.values()])
    p_values: dict[str, float] = {}
    seen: dict[str, tuple[int, float]] = {}
    for ref, own in agents.items():
        n = len(own)
        if n < AGENT_MIN_CONVERSIONS:
            continue
        miss = (1.0 - shares) ** n
        expected = float(np.sum(1.0 - miss))
        spread = float(np.sqrt(max(np.sum(miss * (1.0 - miss)), 1e-9)))
        distinct = len(set(own))
        if distinct > AGENT_EFFECT * expected:
            continue
        p_values[ref] = float(stats.norm.sf((expected - distinct) / spread))
        seen[ref] = (distinct, expected)
    out: dict[str, Finding] = {}
    for ref in benjamini_hochberg(p_values):
        distinct, expected = seen[ref]
        repeated = {a for a, k in Counter(agents[ref]).items() if k >= 2}
        out[ref] = Finding(Reason(
            "few_browsers", f"referrer population: {ref}'s {len(agents[ref])} converting "
            f"visits came from {distinct} distinct browsers where the program's mix gives "
            f"{expected:.0f}: a few devices behind many addresses (a click farm)", distinct,
            round(AGENT_EFFECT * expected, 1), 0.6, "population"),
            _on_agents(frozenset(repeated)), p_values[ref])
    return out


def _on_agents(agents: frozenset[str]) -> Carry:
    return lambda c: bool(c.touches) and c.touches[-1].agent in agents


HIGH_RATE_FACTOR = 2.5  # a conversion rate this many times the program's, to be tested
HIGH_RATE_MIN = 5  # converting customers
SPREAD_MIN_CLICKS = 10  # a referrer's counted clicks before its rate counts in keen_rate
SPREAD_MIN_REFERRERS = 20  # such referrers before keen_rate measures (else: the pooled rate)


def converted_customers(tally: _Tally, context: ProgramContext
                        ) -> tuple[dict[str, int], float | None]:
    """Each referrer's converting customers (a customer counted once, however many events:
    a friend who signs up and buys is one click that converted, not two) and the program's
    converting customers per counted click, counted the same way: a full scan counts both in
    its conversions; an incremental one takes them from the context (where an older full
    scan stored no customer rate, it falls back on conversion events for both)."""
    if context.program_rate is None:
        converted = {ref: len(c) for ref, c in tally.customers.items()}
        clicks = sum(context.referrer_clicks.values())
        return converted, (sum(converted.values()) / clicks if clicks else None)
    if context.customer_rate is None:
        return ({ref: context.history.get(ref, (n, 0.0))[0] for ref, n in tally.counts.items()},
                context.program_rate)
    return ({ref: context.referrer_customers.get(ref, len(c))
             for ref, c in tally.customers.items()}, context.customer_rate)


KEEN_QUANTILE = 75  # the percentile of the program's referrers' rates a keen honest one reaches


def keen_rate(converted: Mapping[str, int], clicks: Mapping[str, int], rate: float,
              leave_out: Collection[str] = ()) -> float:
    """The conversion rate a single referrer's clicks are tested against: the larger of the
    program's pooled `rate` and the rate the program's keen referrers reach (the
    KEEN_QUANTILE-th percentile of the rates of referrers with SPREAD_MIN_CLICKS counted
    clicks or more, `leave_out` left out; SPREAD_MIN_REFERRERS of them needed). Referrers
    differ: a popular customer's close friends convert far better than an influencer's
    audience of strangers, whose many clicks pull the pooled (click-weighted) rate down, so a
    binomial test against that one rate finds every referrer whose friends are keener than
    average. The upper quartile is the program's own baseline for a referrer and stays put
    when up to a quarter of the referrers are farms converting at will."""
    rates = [min(converted.get(ref, 0), n) / n for ref, n in clicks.items()
             if n >= SPREAD_MIN_CLICKS and ref not in leave_out]
    if len(rates) < SPREAD_MIN_REFERRERS:
        return rate
    return max(rate, float(np.percentile(rates, KEEN_QUANTILE)))


def _converts_too_well(tally: _Tally, context: ProgramContext) -> dict[str, Finding]:
    """conversion_rate: far more of the referrer's clicks bring a customer than the
    program's (binomial, controlled across referrers; customers counted once, however many
    events each reported: `converted_customers`). Alone it is a hint (close friends convert
    well); with another anomaly of the referrer (a burst, say) it corroborates: workers paid
    to click and buy in shifts."""
    converted, program_rate = converted_customers(tally, context)
    if not program_rate:
        return {}
    p_values: dict[str, float] = {}
    rates: dict[str, tuple[int, int]] = {}
    keen = keen_rate(converted, context.referrer_clicks, program_rate)
    for ref, k in converted.items():
        n_clicks = context.referrer_clicks.get(ref, 0)
        if k < HIGH_RATE_MIN or not n_clicks or k / n_clicks < HIGH_RATE_FACTOR * program_rate:
            continue
        p_values[ref] = _binom_above(min(k, n_clicks), n_clicks, keen)
        rates[ref] = (k, n_clicks)
    return {ref: _rate_finding(ref, *rates[ref], f", the program's {program_rate:.0%}, its "
                               f"keen referrers' {keen:.0%}",
                               threshold=max(HIGH_RATE_FACTOR * program_rate, keen),
                               p_value=p_values[ref])
            for ref in benjamini_hochberg(p_values)}


def _rate_finding(ref: str, k: int, n: int, against: str, *, threshold: float,
                  p_value: float) -> Finding:
    """A conversion_rate finding: a fact of the whole referrer, it ties no conversion."""
    return Finding(Reason(
        "conversion_rate", f"referrer population: {ref}'s {n} clicks brought {k} converting "
        f"customers ({k / n:.0%}{against})", round(k / n, 4), round(threshold, 4), 0.4,
        "population"),
        lambda c: True, p_value, ties=False)


def _suspect_rate_findings(tally: _Tally, context: ProgramContext,
                           found: Mapping[str, list[Finding]]) -> dict[str, Finding]:
    """conversion_rate of the referrers another test already `found`, against the program's
    rate without any of them (converting customers per click, `converted_customers`): where
    fraud is much of a program's conversions (farms, paid sign-ups converting at will), the
    raw program's rate is inflated by the fraud itself, and a farm converting at twice the
    honest rate hides under HIGH_RATE_FACTOR times the inflated one. Tested as a family of
    their own (Benjamini-Hochberg across them, like even_clicks' suspects): the other test
    picked them on other data (a day of many conversions, its amounts, its timing), and what
    is tested here is customers per click. Like conversion_rate, it ties no conversion and
    only corroborates the referrer's other findings. Full scans only (an incremental scan
    has the program's rate as a whole)."""
    if context.program_rate is not None:
        return {}
    converted, _rate = converted_customers(tally, context)
    clicks = sum(n for ref, n in context.referrer_clicks.items() if ref not in found)
    clean = sum(k for ref, k in converted.items() if ref not in found) / clicks if clicks else 0
    if not clean:
        return {}
    p_values: dict[str, float] = {}
    rates: dict[str, tuple[int, int]] = {}
    keen = keen_rate(converted, context.referrer_clicks, clean, found)
    for ref, findings in found.items():
        n_clicks = context.referrer_clicks.get(ref, 0)
        k = converted.get(ref, 0)
        if (k < HIGH_RATE_MIN or not n_clicks or k / n_clicks <= keen
                or any(f.reason.code == "conversion_rate" for f in findings)):
            continue
        p_values[ref] = _binom_above(min(k, n_clicks), n_clicks, keen)
        rates[ref] = (k, n_clicks)
    return {ref: _rate_finding(ref, *rates[ref],
                               f"; the program's referrers that no test found: {clean:.0%}, "
                               f"the keen ones among them: {keen:.0%}",
                               threshold=keen, p_value=p_values[ref])
            for ref in benjamini_hochberg(p_values)}


def _decision_delays(delays: Sequence[float], customers: Sequence[str]) -> list[float]:
    """Each customer's shortest delay from a click to a conversion: how long they took to
    decide (their sign-up's), not when the merchant charged a trial's end or a renewal."""
    first: dict[str, float] = {}
    for delay, customer in zip(delays, customers, strict=True):
        first[customer] = min(first.get(customer, delay), delay)
    return list(first.values())


def _click_spam(ref: str, own: list[float], others: np.ndarray, *, conversions: int,
                n_clicks: int, program_rate: float | None,
                decided: float = math.inf) -> Finding | None:
    """Candidates: fewer conversions per click than the program's (its binomial p-value,
    to be controlled across referrers) and delays later than the program's, its customers'
    median time to decide (`decided`: of `_decision_delays`) past what a large audience's
    natural spread gives (SPAM_MEDIAN_SECONDS)."""
    if not program_rate or n_clicks < SPAM_MIN_CLICKS:
        return None
    rate = conversions / n_clicks
    if rate >= SPAM_RATE_FACTOR * program_rate:
        return None
    if decided < SPAM_MEDIAN_SECONDS:
        return None
    slower = _ks(own, others, "less")
    if not slower.pvalue < KS_P_VALUE:
        return None
    low = float(stats.binom.cdf(conversions, n_clicks, min(program_rate, 1.0)))
    return Finding(Reason(
        "click_spam",
        f"referrer population: {ref}'s {n_clicks} clicks converted at {rate:.1%} against the "
        f"program's {program_rate:.1%}, and later than usual (median "
        f"{_median(own) / 3600:.0f} h against {float(np.median(others)) / 3600:.0f} h): "
        "clicks fired at people who were converting anyway", round(rate, 4),
        round(SPAM_RATE_FACTOR * program_rate, 4), 0.65, "population"),
        _slower_than(_split(own, others, faster=False)), low)


def _velocity_findings(tally: _Tally, context: ProgramContext,
                       totals: Mapping[str, tuple[int, float]], sharing: frozenset[str],
                       gathered: Mapping[str, set[str]]) -> dict[str, Finding]:
    """velocity: a day with far more new customers than the referrer's usual and than the
    program's busier referrers' best day. People are counted, not events: a customer who signs
    up and buys the same day is one arrival (`converted_customers`; a club whose friends do
    both on its event day would otherwise count double against referrers whose customers mostly
    do one). Nor does an audience gathered in one place count (`gathered_customers`: people
    who clicked from an address that behaves like a NAT, each on a device of their own, with
    others of the referrer's customers): a club's event on a campus, a talk at an office, come
    in a burst of many real people together; workers paid to sign up click from homes of their
    own. Nor is the gathering's day a burst (`_gathering_day`) for the people of it who were
    not in the room: a club's members who sign up that night from home or a phone come with
    the event, not with a paid campaign. Carried by the conversions of every other such day (a
    referrer posting to a sign-up-for-cash site more than once has more than one), whose click
    came with the burst too (`_in_bursts`). Nor is a burst on one of the program's busy days
    (`BusyDays`: a promotion or a season, when far more of the program's referrers than usual
    gain customers at once) a burst unless it outgrows the day's own surge: a popular
    referrer's post on a promotion day brings many friends at once, as everybody's does that
    day. `gathered`: `gathered_customers` of (at least) the referrers that burst."""
    customers, _rate = converted_customers(tally, context)
    busy = BusyDays.of(tally)
    times = {ref: sorted(arrived.values()) for ref, arrived in tally.arrivals.items()}
    bursts = {ref: _burst(ts, customers[ref], totals[ref][1]) for ref, ts in times.items()}
    typical = (float(np.percentile([b[0] for b in bursts.values()], 90)) if bursts else 0.0)

    def limit(usual: float) -> float:
        return max(VELOCITY_MIN, VELOCITY_FACTOR * usual, PEAK_FACTOR * typical)

    bursting = {ref for ref, (peak, usual, _b) in bursts.items() if peak >= limit(usual)}
    out: dict[str, Finding] = {}
    for ref in sorted(bursting):
        away = gathered.get(ref, set())
        arrivals = {c: t for c, t in tally.arrivals[ref].items() if c not in away}
        if not arrivals:
            continue
        times[ref] = sorted(arrivals.values())
        peak, usual, _begin = _burst(times[ref], customers[ref] - len(away), totals[ref][1])
        if peak < limit(usual):
            continue
        came = tally.arrivals[ref]
        spans = [s for s in _burst_windows(times[ref], limit(usual))
                 if not _gathering_day(s, arrivals, [came[c] for c in away if c in came])
                 and _peak_within(times[ref], s) >= limit(usual) * busy.factor(s, ref)]
        if not spans:
            continue
        together = (f"; {len(away)} customers who came together from shared networks left out"
                    if away else "")
        out[ref] = Finding(Reason(
            "velocity", f"referrer population: {ref} had {peak} new customers within one "
            f"day, against a usual {usual:.1f} a day (the program's busiest referrers' "
            f"best day: {typical:.0f}{together})", peak, round(limit(usual), 2), 0.4,
            "population"),
            _in_bursts(spans, sharing, arrivals, away))
    return out


BUSY_FACTOR = 2.0  # a day on which this many times the usual number of referrers gain customers
BUSY_MIN_REFERRERS = 8  # ... and at least this many
BUSY_P = 0.01  # ... and that many by chance (Poisson, Bonferroni across the days) this unlikely


@dataclass(frozen=True, slots=True)
class BusyDays:
    """The program's calendar: its busy days (UTC) and, for each, how many times the usual
    number of the program's referrers gained a new customer that day (the median day's). A
    busy day of the whole program (a promotion, a season, a holiday) is one on which
    BUSY_FACTOR times as many referrers as usual, and at least BUSY_MIN_REFERRERS, gained
    customers, more than chance gives (a Poisson tail under BUSY_P across the days): many
    independent referrers' friends arrive at once. One operator's accounts, a paid wave
    through a handful of links, do not make one: it is the number of referrers that counts,
    not of customers."""

    referrers: Mapping[int, frozenset[str]]
    usual: float

    @staticmethod
    def of(tally: _Tally) -> BusyDays:
        days: dict[int, set[str]] = defaultdict(set)
        for ref, arrived in tally.arrivals.items():
            for t in arrived.values():
                days[int(t // DAY)].add(ref)
        if not days:
            return BusyDays({}, 0.0)
        counts = [len(days.get(d, ())) for d in range(min(days), max(days) + 1)]
        usual = max(float(np.median(counts)), 1.0)
        level = BUSY_P / len(counts)
        return BusyDays({d: frozenset(refs) for d, refs in days.items()
                         if len(refs) >= max(BUSY_MIN_REFERRERS, BUSY_FACTOR * usual)
                         and float(stats.poisson.sf(len(refs) - 1, usual)) < level}, usual)

    def factor(self, span: tuple[float, float], ref: str = "") -> float:
        """How many times the usual number of referrers (`ref` left out) gained customers on
        the busiest busy day of `span`; 1 if it holds none."""
        best = 1.0
        for d in range(int(span[0] // DAY), int(span[1] // DAY) + 1):
            if d in self.referrers:
                best = max(best, len(self.referrers[d] - {ref}) / self.usual)
        return best

    def busy(self, at: float) -> bool:
        return int(at // DAY) in self.referrers


def _peak_within(ts: Sequence[float], span: tuple[float, float]) -> int:
    """The most of the sorted times `ts` within any 24 hours inside `span`."""
    inside = ts[bisect_left(ts, span[0]):bisect_right(ts, span[1])]
    peak, lo = 0, 0
    for hi, t in enumerate(inside):
        while t - inside[lo] > DAY:
            lo += 1
        peak = max(peak, hi - lo + 1)
    return peak


GATHERED_SHARE = 1 / 3  # of a burst day's new customers came gathered: the gathering's day


def _gathering_day(span: tuple[float, float], arrivals: Mapping[str, float],
                   gathered: Sequence[float]) -> bool:
    """Whether a burst of the referrer's other new customers (`arrivals`, over `span`) is the
    day of a gathering: at least GATHERED_SHARE of the day's new customers came gathered in
    one place (`gathered`: their arrival times; from a day before the span, the event may
    start before its people at home follow). A club's event brings its members who were not
    in the room that night too, each from an address of their own; a campaign of paid
    sign-ups has no room full of real people behind it, and a few workers who share a
    carrier's address by chance are not a third of it."""
    begin, end = span
    others = sum(1 for t in arrivals.values() if begin <= t <= end)
    together = sum(1 for t in gathered if begin - DAY <= t <= end)
    return together >= GATHERED_SHARE * (together + others)


def gathered_customers(conversions: Sequence[ConversionFacts], referrers: Collection[str],
                       crowds: Collection[tuple[str, str]] | None = None
                       ) -> dict[str, set[str]]:
    """Of each of these referrers, the customers whose click on its link came from an address
    that behaves like a NAT (`conversion_crowds`: many accounts, each on a browser of its
    own) from which at least CROWD_BROWSERS of its customers clicked: an audience gathered in
    one place (a campus, an office, an event's venue). The address says nothing against them
    (issue 13: no evidence on its own where it behaves like a NAT), and their coming together
    is what a gathering is, not a sign of paid traffic. Two or three of a referrer's many
    customers on one address of a carrier's pool are chance (a mobile network hands its few
    public addresses to all its subscribers), not a gathering. Nor is an anonymising or
    hosting address (a VPN exit, a data centre): the people behind it are anywhere, and a
    burst that comes through one is someone else's hands on the link (a taken-over account
    pushed through a VPN, a farm behind proxies). `crowds`: the conversions'
    `conversion_crowds`, when the caller has them already."""
    crowds = conversion_crowds(conversions) if crowds is None else crowds
    at: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for conv in conversions:
        if not conv.touches:
            continue
        last = conv.touches[-1]
        ip = last.ip
        if ip is None or ("ip", ip) not in crowds or last.anonymous or last.hosting:
            continue
        for ref in conv.referrers:
            if ref in referrers:
                at[ref][ip].add(conv.customer)
    return {ref: {c for people in by_ip.values() if len(people) >= CROWD_BROWSERS
                  for c in people} for ref, by_ip in at.items()}


OWN_CROWD_SHARE = 0.5  # of the people seen on a crowd's addresses, one referrer's customers


def own_gatherings(conversions: Sequence[ConversionFacts],
                   gathered: Mapping[str, set[str]] | None = None) -> dict[str, set[str]]:
    """Per referrer, its customers gathered in one place that is its own (`gathered_customers`
    of every referrer, kept where the referrer's customers are at least OWN_CROWD_SHARE of all
    the program's customers seen on the crowd's network, an IPv4 /24 or IPv6 /48, whether they
    clicked there or bought there): a club's members behind their campus's few NAT addresses,
    a team behind its office's. A carrier's NAT carries the whole program's mobile customers,
    organic buyers and other referrers' alike, and no one referrer's crowd is most of it: a
    link whose customers happen to share a carrier is not set apart by it. Nor is a crowd of
    accounts on a few devices (a farm's phones on its own address, in a residential network
    that is crowded as a whole): the referrer's crowd there must itself click on at least
    CROWD_BROWSERS different browsers, and on CROWD_SHARE of the number as many of the
    program's customers drawn at random would (`expected_browsers`): people, each on a phone
    of their own. `gathered`: `gathered_customers` of every referrer, when the caller has
    them already."""
    if gathered is None:
        gathered = gathered_customers(
            conversions, {ref for conv in conversions for ref in conv.referrers})
    if not gathered:
        return {}
    seen: dict[str, set[str]] = defaultdict(set)
    last_net: dict[str, set[str]] = defaultdict(set)
    browsers: dict[str, set[str]] = defaultdict(set)  # each customer's, of its last clicks
    mix: Counter[str] = Counter()
    agents: dict[str, set[str]] = defaultdict(set)
    for conv in conversions:
        agents[conv.customer].update(a for a, _ip in conv.agents)
        if conv.touches and conv.touches[-1].agent:
            browsers[conv.customer].add(conv.touches[-1].agent)
        for ip in conv.ips:
            seen[ip_prefix(ip)].add(conv.customer)
        for _agent, at in conv.agents:
            if at is not None:
                seen[ip_prefix(at)].add(conv.customer)
        last = conv.touches[-1].ip if conv.touches else None
        if last is not None:
            net = ip_prefix(last)
            seen[net].add(conv.customer)
            last_net[conv.customer].add(net)
    for own_agents in agents.values():
        mix.update(own_agents)

    def people(crowd: set[str]) -> bool:
        used = len({b for c in crowd for b in browsers[c]})
        return crowd_of_people(used, len(crowd), mix)

    out: dict[str, set[str]] = {}
    for ref, gathered_there in gathered.items():
        nets: dict[str, set[str]] = defaultdict(set)
        for c in gathered_there:
            for net in last_net[c]:
                nets[net].add(c)
        own = {c for net, crowd in nets.items()
               if len(crowd) >= OWN_CROWD_SHARE * len(seen[net]) and people(crowd)
               for c in crowd}
        if own:
            out[ref] = own
    return out


def _burst_windows(ts: Sequence[float], limit: float) -> list[tuple[float, float]]:
    """The spans of sorted times `ts` covered by a day holding at least `limit` of them,
    overlapping days merged: (first time, last time) of each."""
    spans: list[tuple[float, float]] = []
    hi = 0
    for lo, start in enumerate(ts):
        hi = max(hi, lo)
        while hi + 1 < len(ts) and ts[hi + 1] - start <= DAY:
            hi += 1
        if hi - lo + 1 < limit:
            continue
        if spans and start <= spans[-1][1]:
            spans[-1] = (spans[-1][0], max(spans[-1][1], ts[hi]))
        else:
            spans.append((start, ts[hi]))
    return spans


def _share_above_rest(totals: Mapping[str, int], hits: Mapping[str, int], program_total: int,
                      program_hits: int, *, min_total: int, min_share: float
                      ) -> dict[str, float]:
    """Per referrer with at least `min_total` conversions of which at least `min_share` are
    hits: the binomial p-value of its hits against the rate among the program's other
    referrers' conversions (at least 0.02; BASELINE_MIN of them needed)."""
    p_values: dict[str, float] = {}
    for ref, n in totals.items():
        k = hits[ref]
        if n < min_total or k / n < min_share or program_total - n < BASELINE_MIN:
            continue
        rest = (program_hits - k) / max(program_total - n, 1)
        p_values[ref] = _binom_above(k, n, max(rest, 0.02))
    return p_values


CLEAN_ROUNDS = 3  # baselines re-measured without the referrers found so far, at most


def _share_above_clean_rest(totals: Mapping[str, int], hits: Mapping[str, int],
                            program_total: int, program_hits: int, *, min_total: int,
                            min_share: float) -> tuple[dict[str, float], set[str]]:
    """`_share_above_rest` against the program's other referrers without those found so far
    (Benjamini-Hochberg), re-measured up to CLEAN_ROUNDS times: where fraud is much of a
    program's purchases (farms and paid sign-ups buying at the minimum), the raw program's
    share is inflated by the fraud itself, and a smaller operator doing the same hides under
    it. The honest referrers' share is the baseline an honest referrer is measured against,
    so a referrer who is not found keeps the p-value it has against the honest ones.
    -> (each tested referrer's p-value, the referrers found)."""
    found: dict[str, float] = {}  # referrer -> its p-value in the round that found it
    p_values: dict[str, float] = {}
    for _ in range(CLEAN_ROUNDS):
        total = program_total - sum(totals[ref] for ref in found)
        hit = program_hits - sum(hits[ref] for ref in found)
        # A found referrer is out of the baseline already and keeps its p-value: only the
        # others are measured again, against the referrers not found.
        p_values = {ref: p for ref, p in _share_above_rest(
            totals, hits, total, hit, min_total=min_total, min_share=min_share).items()
            if ref not in found} | found
        now = benjamini_hochberg(p_values) - set(found)
        if not now:
            break
        found.update((ref, p_values[ref]) for ref in now)
    return p_values, set(found)


def _refund_findings(tally: _Tally, conversions: Sequence[ConversionFacts] = ()
                     ) -> dict[str, Finding]:
    # Only a payment can come back: a referrer's share of refunds is of its paid conversions
    # (purchases and renewals), the program's too; its sign-ups and trials would dilute it.
    # A program that reports no amounts: any of its conversions could come back.
    payments, paid = ((tally.paid, tally.paid_in_program) if tally.with_amount_in_program
                      else (tally.counts, tally.conversions))
    base = tally.reversed / max(paid, 1)
    p_values = _share_above_rest(payments, tally.refunds, paid, tally.reversed,
                                 min_total=REFUND_MIN_CONVERSIONS, min_share=REFUND_RATE)
    refunded: dict[str, list[ConversionFacts]] = defaultdict(list)
    for conv in conversions:
        if conv.conversion_id in tally.reversed_ids:
            for ref in conv.referrers:
                refunded[ref].append(conv)
    out: dict[str, Finding] = {}
    for ref in benjamini_hochberg(p_values):
        rate = tally.refunds[ref] / payments[ref]
        out[ref] = Finding(Reason(
            "refund_rate", f"money: {rate:.0%} of {ref}'s paid conversions were refunded or "
            f"charged back (the program's: {base:.0%})", round(rate, 4), REFUND_RATE,
            REFUND_WEIGHT, "population"),
            _refunded_or_pending(tally.reversed_ids, *tally.refunded[ref],
                                 like_the_stream(refunded[ref])), p_values[ref])
    return out


def _refunded_or_pending(reversed_ids: frozenset[int], last: float, low: int, high: int,
                         alike: Carry = lambda c: True) -> Carry:
    """Of a referrer found to farm refunds: its reversed conversions, and its purchases after
    its latest reversed one at amounts within its reversed ones' range, and `alike` the
    reversed ones (like_the_stream: at their pace, from where they came). A refund comes days
    after the purchase, so the farm's latest purchases have none yet; an earlier purchase
    that had the time and was not refunded is a genuine one, as is one at other amounts, or
    one by a friend who took days to buy where the farm's accounts buy at once."""
    return lambda c: (c.conversion_id in reversed_ids
                      or (c.at > last and c.amount > 0 and low <= c.amount <= high
                          and alike(c)))


PROMOTION_REFERRERS = 5  # different referrers' customers buying at the minimum on a busy day


def promotion_days(conversions: Iterable[ConversionFacts], lowest: int, busy: BusyDays
                   ) -> frozenset[int]:
    """The program's busy days (BusyDays) on which its minimum amount was the day's price:
    at least MIN_AMOUNT_SHARE of the day's credited purchases were at it, bought by the
    customers of PROMOTION_REFERRERS different referrers or more. A promotion's price brings
    everybody's friends at once at the cheapest amount; a purchase at it that day is the
    promotion's, not a sign of accounts buying the cheapest thing that earns a reward."""
    bought: Counter[int] = Counter()
    cheap: Counter[int] = Counter()
    by: dict[int, set[str]] = defaultdict(set)
    for conv in conversions:
        if conv.amount > 0 and conv.referrers:
            day = int(conv.at // DAY)
            bought[day] += 1
            if conv.amount == lowest:
                cheap[day] += 1
                by[day].update(conv.referrers)
    return frozenset(d for d, k in cheap.items() if len(by[d]) >= PROMOTION_REFERRERS
                     and k >= MIN_AMOUNT_SHARE * bought[d] and busy.busy(d * DAY))


def _min_amount_findings(tally: _Tally, conversions: Sequence[ConversionFacts] = ()
                         ) -> dict[str, Finding]:
    """min_amount_share, leaving out the purchases of the program's promotion days
    (promotion_days): their minimum amount is the day's price for everyone."""
    if not tally.min_amount or not tally.with_amount_in_program:
        return {}
    lowest = tally.min_amount
    promoted = promotion_days(conversions, lowest, BusyDays.of(tally))
    with_amount, at_min = Counter(tally.with_amount), Counter(tally.at_min)
    program_total, program_hits = tally.with_amount_in_program, tally.at_min_in_program
    for conv in conversions:
        if conv.amount > 0 and int(conv.at // DAY) in promoted:
            cheap = conv.amount == lowest
            program_total -= 1
            program_hits -= cheap
            for ref in conv.referrers:
                with_amount[ref] -= 1
                at_min[ref] -= cheap
    if program_total <= 0:
        return {}
    p_values, found = _share_above_clean_rest(
        with_amount, at_min, program_total, program_hits,
        min_total=MIN_AMOUNT_MIN_CONVERSIONS, min_share=MIN_AMOUNT_SHARE)
    out: dict[str, Finding] = {}
    after = (f" ({len(promoted)} promotion day(s), when it was everybody's price, left out)"
             if promoted else "")
    for ref in sorted(found):
        k, n = at_min[ref], with_amount[ref]
        out[ref] = Finding(Reason(
            "min_amount_share", f"money: {k} of {ref}'s {n} purchases were for the program's "
            f"minimum amount ({lowest}), far more than the program's other referrers' (those "
            f"found doing so left out){after}",
            round(k / n, 4), MIN_AMOUNT_SHARE, 0.5, "population"),
            lambda c: c.amount > 0 and c.amount == lowest and int(c.at // DAY) not in promoted,
            p_values[ref])
    return out


LANGUAGE_BASE = 5  # the program's visitors of a browser and language to estimate from
# A string this share of the program's visitors of the same browsers and language send
# themselves is the market's own setting (an office's managed browsers, a community's
# phones), not one operator's: one of them across browsers is weak alone (SITE_WEIGHT).
MARKET_SETTING = 1 / 3


def _tongue(language: str) -> str:
    """The primary language of an Accept-Language header (`pt-BR,pt;q=0.9` -> `pt`)."""
    return language.split(",", 1)[0].split(";", 1)[0].split("-", 1)[0].strip().lower()


def _language_findings(tally: _Tally) -> dict[str, Finding]:
    """One Accept-Language across different browsers: each browser family sends its own
    default (Chrome `en-US,en;q=0.9`, Firefox `en-US,en;q=0.5`, Safari `en-US`), so visitors of
    one referrer who all send the same one from different browsers are one operator's setup.
    The expected share is what the program's visitors of the same browsers send."""
    p_values: dict[str, float] = {}
    modal: dict[str, tuple[str, float]] = {}
    for ref in tally.languages:
        pairs = _one_per_site(tally.languages[ref], tally.language_sites[ref])
        n = len(pairs)
        if n < LANGUAGE_MIN_CONVERSIONS or sum(tally.browsers.values()) - n < BASELINE_MIN:
            continue
        language, k = Counter(lang for _b, lang in pairs).most_common(1)[0]
        browsers = {b for b, lang in pairs if lang == language}
        if k / n < LANGUAGE_SHARE or len(browsers) < 2:
            continue
        own_pairs = Counter(pairs)
        tongue = _tongue(language)
        own_tongues = Counter(b for b, lang in pairs if _tongue(lang) == tongue)
        # What the program's other visitors of each browser who read the same language send
        # (this referrer's left out): a community of one language is not one operator. Where
        # the program has too few such visitors to tell, no evidence (1).
        shares = []
        for b, _lang in pairs:
            base = tally.browser_tongues[(b, tongue)] - own_tongues[b]
            same = tally.language_pairs[(b, language)] - own_pairs[(b, language)]
            shares.append(same / base if base >= LANGUAGE_BASE else 1.0)
        expected = float(np.mean(shares))
        p_values[ref] = _binom_above(k, n, max(expected, 0.02))
        modal[ref] = (language, expected)
    out: dict[str, Finding] = {}
    for ref in benjamini_hochberg(p_values):
        language, expected = modal[ref]
        pairs = _one_per_site(tally.languages[ref], tally.language_sites[ref])
        k = sum(1 for _b, lang in pairs if lang == language)
        market = expected >= MARKET_SETTING
        out[ref] = Finding(Reason(
            "language_uniformity", f"referrer population: {k} of {ref}'s {len(pairs)} "
            f"visitors sent the same Accept-Language ({language!r}) from "
            f"{len({b for b, lang in pairs if lang == language})} different browsers" + (
                f", the market's own setting ({expected:.0%} of the program's visitors of "
                "those browsers send it): an office's or a community's setup, weak alone"
                if market else ": one operator's setup, not many people's"),
            round(k / len(pairs), 4), LANGUAGE_SHARE, SITE_WEIGHT if market else 0.6,
            "population"),
            _sent_language(language),
            p_values[ref])
    return out


def _one_per_site(pairs: Sequence[tuple[str, str]], sites: Sequence[str | None]
                  ) -> list[tuple[str, str]]:
    """A referrer's (browser, language) visits, one an address (as few_browsers counts
    browsers): colleagues behind an office's address share its managed browsers' language
    setting, one site's setup and not many people's; a farm's workers sit behind addresses
    of their own. A visit without an address counts on its own."""
    by_site: dict[str, tuple[str, str]] = {}
    for i, (pair, site) in enumerate(zip(pairs, sites, strict=True)):
        by_site.setdefault(site if site is not None else f"visit {i}", pair)
    return list(by_site.values())


def _split(own: Sequence[float], others: np.ndarray, *, faster: bool) -> float:
    """The delay where the referrer's distribution is furthest from the program's (where the
    one-sided KS statistic is attained): faster conversions than this carry a `faster`
    anomaly, slower ones a slower one."""
    grid = np.sort(np.asarray(own, dtype=float))
    mine = np.searchsorted(grid, grid, side="right") / len(grid)
    theirs = np.searchsorted(np.sort(others), grid, side="right") / max(len(others), 1)
    gap = mine - theirs if faster else theirs - mine
    at = int(np.argmax(gap))
    return float(grid[at]) + (1e-6 if faster else 0.0)


def _faster_than(seconds: float, away: Collection[str] = frozenset()) -> Carry:
    return lambda c: c.delay is not None and c.delay < seconds and c.customer not in away


def _slower_than(seconds: float, first: Mapping[str, Mapping[str, float]] | None = None
                 ) -> Carry:
    """Conversions `seconds` or more after their click. With `first` (per referrer, each of
    its customers' delay to their first conversion credited to it, `_first_delays`), only
    those of customers whose first conversion through the credited referrer was that late
    too: a late test counts one delay a customer, and a customer who signed up minutes after
    the click was brought by it, not found later by a click fired at someone buying anyway;
    their purchase days after through the same click is theirs, not the stream's. (The same
    rule on the program's other conversions gives the share of them that would carry it.)"""
    if first is None:
        return lambda c: c.delay is None or c.delay >= seconds
    return lambda c: ((c.delay is None or c.delay >= seconds)
                      and all(first.get(ref, {}).get(c.customer, seconds) >= seconds
                              for ref in c.referrers))


def _in_bursts(spans: Sequence[tuple[float, float]], sharing: frozenset[str],
               arrivals: Mapping[str, float], gathered: Collection[str] = frozenset()
               ) -> Carry:
    """A conversion of a burst: its customer arrived (first converted through the referrer,
    `arrivals`; a customer unknown there, when the conversion came) within one of the `spans`,
    and so did the click that brought it (up to an hour before: a visitor of the burst's first
    minutes may have clicked a little earlier). A customer who clicked weeks ago and happened
    to buy that day came with the referrer's usual traffic, not with the burst. Nor does a
    customer who came through a site where people pass links to each other (`sharing`:
    sharing_sites): a post to the referrer's friends on a social network brings a burst of
    them too. Nor do the `gathered` customers (`gathered_customers`)."""
    def carries(c: ConversionFacts) -> bool:
        clicked = c.touches[-1].at if c.touches else c.at
        came = arrivals.get(c.customer, c.at)
        return c.customer not in gathered and _last_site(c) not in sharing and any(
            begin <= came <= end and clicked >= begin - LATE_SECONDS for begin, end in spans)
    return carries


def _sent_language(language: str) -> Carry:
    return lambda c: bool(c.touches) and c.touches[-1].language == language


def _marked_customers(conversions: Sequence[ConversionFacts],
                      marked: Callable[[ConversionFacts], bool], *, touched_only: bool = False
                      ) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """Per referrer, its customers and those of them with a conversion `marked`: counted in
    people, not conversions (one person's sign-up and purchase are one observation)."""
    customers: dict[str, set[str]] = defaultdict(set)
    marked_by: dict[str, set[str]] = defaultdict(set)
    for conv in conversions:
        if touched_only and not conv.touches:
            continue
        is_marked = marked(conv)
        for ref in conv.referrers:
            customers[ref].add(conv.customer)
            if is_marked:
                marked_by[ref].add(conv.customer)
    return customers, marked_by


def _excess_customers(customers: dict[str, set[str]], marked_by: dict[str, set[str]],
                      tested: Callable[[int, int, int], bool]) -> dict[str, float]:
    """p-values of referrers with more marked customers than the program's other referrers'
    share (binomial, Laplace-smoothed), for those `tested(k, n, total)` admits; the caller
    controls them across referrers (Benjamini-Hochberg)."""
    total = sum(len(v) for v in customers.values())
    marked_total = sum(len(v) for v in marked_by.values())
    p_values: dict[str, float] = {}
    for ref, marked in marked_by.items():
        k, n = len(marked), len(customers[ref])
        if not tested(k, n, total):
            continue
        rest = (marked_total - k + 1) / (total - n + 2)
        p_values[ref] = _binom_above(k, n, rest)
    return p_values


def _through_hosting(conv: ConversionFacts) -> bool:
    return any(t.anonymous or t.hosting for t in conv.touches)


def _a_person_on_hosting(click: ClickFacts) -> bool:
    """A click from a hosting network (not an anonymiser) that carries what a person's
    browser sends on a navigation (a User-Agent and its Accept-Language) and a visitor
    cookie: a company's VPN egress or a cloud browser, which real colleagues share, not a
    script in a data centre (those send no Accept-Language, or are marked bots)."""
    return (click.hosting and not click.anonymous and not click.is_bot
            and not click.headerless and bool(click.language) and bool(click.agent)
            and click.visitor is not None)


def _through_concealment(conv: ConversionFacts) -> bool:
    """Through a click from an anonymiser (VPN, Tor, relay, proxy) or from a data centre
    without a person's browser navigation (`_a_person_on_hosting`)."""
    return any((t.anonymous or t.hosting) and not _a_person_on_hosting(t)
               for t in conv.touches)


def _hosting_findings(conversions: Sequence[ConversionFacts]) -> dict[str, Finding]:
    """hosting_share: most of a referrer's customers came through clicks from hosting or
    anonymous IPs, far more than the program's other referrers' (`_excess_customers`,
    Benjamini-Hochberg across referrers). Counted in customers, not conversions (a customer's
    sign-up and purchase through one VPN are one person), so that two friends on a VPN in a
    program where many use one are unremarkable. A person's browser navigation through a
    hosting network (`_a_person_on_hosting`: colleagues behind their company's VPN egress)
    is not counted: the address is their office's, as another office's is an ISP's."""
    customers, hosted = _marked_customers(conversions, _through_concealment)
    p_values = _excess_customers(
        customers, hosted,
        lambda k, n, _total: k >= HOSTING_MIN_CONVERSIONS and k / n >= HOSTING_SHARE)
    total = sum(len(v) for v in customers.values())
    hosted_total = sum(len(v) for v in hosted.values())
    out: dict[str, Finding] = {}
    for ref in benjamini_hochberg(p_values):
        k, n = len(hosted[ref]), len(customers[ref])
        out[ref] = Finding(Reason(
            "hosting_share", f"referrer population: {k} of {ref}'s {n} customers came "
            "through clicks from hosting or anonymous IPs (a click farm; the program's other "
            f"referrers: {hosted_total / max(total, 1):.0%})", round(k / n, 4),
            HOSTING_SHARE, HOSTING_WEIGHT, "population"), _through_concealment, p_values[ref])
    return out


@dataclass(frozen=True, slots=True)
class Arrival:
    """A referrer's new customer: when it first converted through the referrer, whether any of
    its conversions came through an anonymising address (`_through_hosting`), and the
    countries of its clicks (their last click's)."""

    customer: str
    at: float
    anonymised: bool
    countries: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Departure:
    """A burst of a referrer's new customers through anonymising addresses abroad (`departing`
    of the `arrived` meanwhile), against the referrer's other customers (`anonymised` of
    `others` came through anonymising addresses; `home`: the countries its earlier customers
    on ordinary networks came from)."""

    departing: frozenset[str]
    arrived: int
    others: int
    anonymised: int
    home: frozenset[str]
    abroad: frozenset[str]
    p_value: float


def departing_burst(arrivals: Sequence[Arrival]) -> Departure | None:
    """Whether a referrer's customers (`arrivals`) hold a burst of new customers through
    anonymising addresses (VPN exits, data centres, Tor) from countries none of its earlier
    customers on ordinary networks came from (its home markets; for a burst before any of
    them, those after), more than the referrer's own
    history gives: a run of TAKEOVER_MIN or more such customers, each within a day of the one
    before (`_runs`), its count among the customers who arrived meanwhile tested (binomial)
    against the share of the referrer's other customers, before and after,
    who came through anonymising addresses anywhere (Laplace: (j + 1) / (m + 2), so that a
    short history says little). A referrer whose audience is always on VPNs (a privacy-minded
    community) has that share high and is not a departure; nor is a referrer with no customer
    on an ordinary network (nothing to depart from: `hosting_share` weighs its audience
    against the program's), colleagues behind their office's VPN at home, nor a VPN
    user or a traveller now and then (one at a time, not a burst), nor a popular referrer's
    post (an influencer's), whose audience's VPN users come with the day's crowd of its
    people: the customers who arrived meanwhile are counted over the day either side of the
    run as well."""
    ordered = sorted(arrivals, key=lambda a: a.at)
    anywhere = frozenset(c for a in ordered if not a.anonymised for c in a.countries)
    home: set[str] = set()
    away: list[bool] = []
    for a in ordered:  # abroad: where none of the customers before it (or else after) came from
        known = home or anywhere
        away.append(a.anonymised and bool(known) and bool(a.countries) and not a.countries & known)
        if not a.anonymised:
            home |= a.countries
    before = [0, *itertools.accumulate(away)]  # departing customers before each index
    hidden = [0, *itertools.accumulate(a.anonymised for a in ordered)]  # anonymised ones
    times = [a.at for a in ordered]
    spans = _runs([a.at for a, out in zip(ordered, away, strict=True) if out], TAKEOVER_MIN)
    best: tuple[float, int, int] | None = None  # (p-value, first index, end index)
    for first, last in spans:
        # The day either side of the run too: a run's span drawn tight around its own
        # members would count only them (a popular referrer's post brings a few of the
        # program's VPN users among hundreds of its people, and they are a run).
        lo, hi = bisect_left(times, first - DAY), bisect_right(times, last + DAY)
        m, j = len(ordered) - (hi - lo), hidden[-1] - (hidden[hi] - hidden[lo])
        # Bonferroni across the referrer's bursts: each is a test
        p = min(_binom_above(before[hi] - before[lo], hi - lo, (j + 1) / (m + 2)) * len(spans),
                1.0)
        if best is None or p < best[0]:
            best = (p, lo, hi)
    if best is None:
        return None
    p, lo, hi = best
    departing = [a for a, out in zip(ordered[lo:hi], away[lo:hi], strict=True) if out]
    m = len(ordered) - (hi - lo)
    return Departure(frozenset(a.customer for a in departing), hi - lo, m,
                     hidden[-1] - (hidden[hi] - hidden[lo]),
                     frozenset(c for a in ordered[:lo] if not a.anonymised for c in a.countries)
                     or anywhere,
                     frozenset(c for a in departing for c in a.countries), p)


def departure_floor(customers: int) -> float:
    """The smallest p-value `departing_burst` can give a referrer with this many customers:
    k of them departing together, every one of the day's arrivals, against the Laplace share of
    the other customers none of whom was anonymised ((0 + 1) / (customers - k + 2)), at its
    best k (TAKEOVER_MIN or more). A referrer with a handful of customers cannot show a
    departure, however its few arrive, and is no test in the multiple-testing family."""
    return min(((1.0 / (customers - k + 2)) ** k for k in range(TAKEOVER_MIN, customers + 1)),
               default=1.0)


def _runs(ts: Sequence[float], least: int) -> list[tuple[float, float]]:
    """The runs of sorted times `ts` each within a day of the one before, of at least `least`
    times: (first, last) of each."""
    runs: list[tuple[float, float]] = []
    start = 0
    for i in range(1, len(ts) + 1):
        if i == len(ts) or ts[i] - ts[i - 1] > DAY:
            if i - start >= least:
                runs.append((ts[start], ts[i - 1]))
            start = i
    return runs


def _takeover_findings(conversions: Sequence[ConversionFacts]) -> dict[str, Finding]:
    """anonymised_burst: a referrer's link taken over (its account stolen, its link sold) and
    pushed through anonymising addresses abroad: a burst of new customers through VPN exits or
    data centres, where its own customers came through home and mobile networks in its home
    markets (`departing_burst`), Benjamini-Hochberg across referrers. However small the burst:
    velocity weighs a day against the program's busiest referrers, and a stolen link brings a
    handful. Carried by those customers' conversions through anonymising addresses; the
    referrer's own audience, before and after, is not."""
    seen: dict[str, dict[str, tuple[float, bool, set[str]]]] = defaultdict(dict)
    for conv in conversions:
        anonymised = _through_hosting(conv)
        country = conv.touches[-1].country if conv.touches else None
        for ref in conv.referrers:
            mine = seen[ref]
            was = mine.get(conv.customer)
            if was is None:
                mine[conv.customer] = was = (conv.at, anonymised, set())
            elif conv.at < was[0] or anonymised > was[1]:
                mine[conv.customer] = was = (min(conv.at, was[0]), was[1] or anonymised, was[2])
            if country:
                was[2].add(country)
    tested = {ref: by for ref, by in seen.items() if len(by) > TAKEOVER_MIN}
    found = {ref: d for ref, by in tested.items() if (
        d := departing_burst([Arrival(c, at, hidden, frozenset(countries))
                              for c, (at, hidden, countries) in by.items()]))}
    # Every referrer that could have shown a departure is a test, not only those that did
    # (a run of VPN users is what is rare: picking the referrers by it and correcting only
    # among them is no correction); those that can never reach significance are not
    # (Tarone's rule on the smallest p-value each could give, `departure_floor`).
    family = _testable({ref: departure_floor(len(by)) for ref, by in tested.items()})
    out: dict[str, Finding] = {}
    for ref in benjamini_hochberg({ref: found[ref].p_value if ref in found else 1.0
                                   for ref in family}):
        if ref not in found:
            continue
        d = found[ref]
        out[ref] = Finding(Reason(
            "anonymised_burst", f"referrer population: {len(d.departing)} of {ref}'s new "
            "customers came in a burst (each within a day of the one before) through "
            "anonymising addresses (VPN exits, data centres, Tor) from "
            f"{'/'.join(sorted(d.abroad))}, where its own customers came through ordinary "
            f"networks from {'/'.join(sorted(d.home))} and {d.anonymised} of its {d.others} "
            "other customers through anonymising ones: someone else's hands on "
            "its link (an account taken over)", len(d.departing), TAKEOVER_MIN, 0.5, "population"),
            _departed(d.departing), d.p_value)
    return out


def _departed(customers: frozenset[str]) -> Carry:
    return lambda c: c.customer in customers and _through_hosting(c)


def _headerless_findings(tally: _Tally, context: ProgramContext) -> dict[str, Finding]:
    out: dict[str, Finding] = {}
    for ref, n in tally.counts.items():
        headerless = tally.headerless[ref]
        if headerless < HEADERLESS_MIN_CONVERSIONS:
            continue
        if context.headerless_share is not None:
            rest = context.headerless_share
        else:  # the program's share without this referrer's own conversions
            others = tally.touched - tally.touched_by[ref]
            rest = (max(tally.headerless_in_program - headerless, 0) / others if others > 0
                    else 1.0)
        share = headerless / n
        if share >= HEADERLESS_SHARE and rest <= HEADERLESS_PROGRAM_MAX:
            out[ref] = Finding(Reason(
                "headerless_share", f"referrer population: {headerless} of {ref}'s {n} "
                "conversions came through visits without the Accept-Language header every "
                f"browser sends (the rest of the program: {rest:.0%}): automation posing as a "
                "browser", round(share, 4), HEADERLESS_SHARE, 0.5, "population"),
                is_headerless)
    return out


def is_headerless(conv: ConversionFacts) -> bool:
    """Every click that led to the conversion came without Accept-Language."""
    return bool(conv.touches) and all(t.headerless for t in conv.touches)


def headerless_share(conversions: Sequence[ConversionFacts]) -> float | None:
    """The share of touched conversions that are headerless (None: no touched conversion)."""
    touched = [c for c in conversions if c.touches]
    return sum(map(is_headerless, touched)) / len(touched) if touched else None


def _ks(own: Sequence[float], others: Sequence[float] | np.ndarray, alternative: str
        ) -> Any:
    """Two-sample Kolmogorov-Smirnov; the asymptotic p-value once the samples are large (the
    exact one is slow there, and scipy warns when it gives up on it)."""
    method = "exact" if len(own) * len(others) <= 10_000 else "asymp"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return stats.ks_2samp(own, others, alternative=alternative, method=method)


def _burst(ts: list[float], total: int, first: float) -> tuple[int, float, float]:
    """The most conversions within any 24 hours, and the daily rate outside that day over the
    referrer's whole history (`total` conversions since `first`; at least a week, so a new
    referrer's first day is not its own baseline)."""
    peak, lo, begin = 0, 0, ts[0]
    for hi, t in enumerate(ts):
        while t - ts[lo] > DAY:
            lo += 1
        if hi - lo + 1 > peak:
            peak, begin = hi - lo + 1, ts[lo]
    span = (ts[-1] - min(first, ts[0])) / DAY - 1
    return peak, (total - peak) / max(span, 7.0), begin


def shared_device_reasons(conversions: Sequence[ConversionFacts],
                          crowds: Collection[tuple[str, str]] | None = None
                          ) -> dict[int, Reason]:
    """Conversions whose customer uses a device that several customers referred by the same
    referrer use: one person making accounts for their own link. A device whose customers
    came through different people's links is a common phone model behind one campus or
    carrier network (the fingerprint includes the network), not one person's device; and
    customers who are also seen on addresses of their own (colleagues on an office's standard
    computer, at home in the evening) are people, not a farm's accounts."""
    customers_of: dict[tuple[str, str], set[str]] = defaultdict(set)
    on_device: dict[str, set[str]] = defaultdict(set)
    ips_of: dict[str, set[str]] = defaultdict(set)
    crowds = conversion_crowds(conversions) if crowds is None else crowds
    for conv in conversions:
        ips_of[conv.customer] |= conv.ips
        for device in conv.devices:
            if ("device", device) in crowds:  # a popular phone model behind a NAT
                continue
            on_device[device].add(conv.customer)
            for ref in conv.referrers:
                customers_of[(device, ref)].add(conv.customer)
    shares, spent = amount_shares(conversions), purchases_by_customer(conversions)
    # A farm's accounts live on its addresses and buy alike; colleagues on an office's
    # standard computer, who buy in working hours only, live there too but buy what they want.
    living = {key: living_on([ips_of[c] for c in people])
              for key, people in customers_of.items() if len(people) >= REFEREES_PER_DEVICE
              and not varied_purchases([a for c in people for a in spent.get(c, ())], shares)}
    out: dict[int, Reason] = {}
    for conv in conversions:
        # Most of the device's customers must be the referrer's: a popular phone model behind
        # a carrier NAT has a few customers of every busy referrer among many others'.
        crowded = max((len(customers_of[(d, r)]) for d in conv.devices for r in conv.referrers
                       if 2 * len(customers_of[(d, r)]) >= len(on_device[d])
                       and living.get((d, r), 0.0) >= LIVING_ON), default=0)
        if crowded >= REFEREES_PER_DEVICE:
            out[conv.conversion_id] = Reason(
                "many_referees_one_device",
                f"{crowded} customers referred by the same referrer use this customer's device",
                crowded, REFEREES_PER_DEVICE, 0.6, "network")
    return out


ONE_PERSON_WITHIN = DAY  # two accounts on one browser profile this close: one person
SHARED_COOKIE_WEIGHT = 0.97
SHARED_COOKIE_APART_WEIGHT = 0.8  # further apart: a family's shared tablet, for review
# A "cookie" behind more accounts than this is a merchant's placeholder visitor id ("null",
# "undefined"), not a browser; a farm that large on one browser is one device to the rings.
PLACEHOLDER_ACCOUNTS = 25


def shared_cookie_reasons(conversions: Sequence[ConversionFacts]) -> dict[int, Reason]:
    """Conversions whose customer shares a visitor cookie with another customer credited to
    the same referrer: one browser profile behind two accounts that earned that referrer a
    reward (multi-accounting, or a referrer making accounts for their own link).

    A cookie is one browser profile, so two accounts on it whose first conversions for the
    referrer came within ONE_PERSON_WITHIN of each other are one person: strong identity
    evidence, enough to reject. Further apart, it may be a family's shared tablet or computer,
    used by two people days apart: identity evidence for review, not for rejection. A cookie
    most of whose accounts converted for other referrers (or for nobody) is a public terminal
    or a merchant's placeholder id (so is one behind more than PLACEHOLDER_ACCOUNTS), not one
    person's browser: no evidence."""
    first: dict[tuple[str, str], float] = {}  # (referrer, customer) -> first credited at
    cookies: dict[str, frozenset[str]] = defaultdict(frozenset)
    # (customer, cookie) -> the customer's attributed clicks made by that cookie
    clicked: dict[tuple[str, str], frozenset[str]] = defaultdict(frozenset)
    for conv in conversions:
        cookies[conv.customer] |= conv.visitors
        for t in conv.touches:
            if t.visitor in conv.visitors:
                clicked[(conv.customer, t.visitor)] |= {t.click_id}
        for ref in conv.referrers:
            first[(ref, conv.customer)] = min(first.get((ref, conv.customer), conv.at),
                                              conv.at)
    people: Counter[str] = Counter()  # cookie -> accounts behind it
    theirs: dict[tuple[str, str], list[str]] = defaultdict(list)  # (cookie, referrer) -> them
    for visitors in cookies.values():
        people.update(visitors)
    for ref, customer in first:
        for cookie in cookies[customer]:
            theirs[(cookie, ref)].append(customer)
    # Each account's nearest other account in time on the cookie, for the referrer.
    nearest: dict[tuple[str, str, str], tuple[float, str]] = {}
    for (cookie, ref), accounts in theirs.items():
        if (len(accounts) < 2 or 2 * len(accounts) < people[cookie]
                or people[cookie] > PLACEHOLDER_ACCOUNTS):
            continue
        accounts.sort(key=lambda c: (first[(ref, c)], c))
        for i, customer in enumerate(accounts):
            near = [accounts[j] for j in (i - 1, i + 1) if 0 <= j < len(accounts)]
            other = min(near, key=lambda c: abs(first[(ref, c)] - first[(ref, customer)]))
            nearest[(cookie, ref, customer)] = (
                abs(first[(ref, other)] - first[(ref, customer)]), other)
    out: dict[int, Reason] = {}
    for conv in conversions:
        found = [(gap, cookie, ref, other) for ref in conv.referrers for cookie in conv.visitors
                 for gap, other in [nearest.get((cookie, ref, conv.customer), (-1.0, ""))]
                 if gap >= 0]
        if not found:
            continue
        gap, cookie, ref, other = min(found)
        n = len(theirs[(cookie, ref)])
        # Both reach the cookie through one and the same click, and no other: the second may
        # have opened a landing address the first forwarded (its click id in the query), which
        # is two people as well as one.
        forwarded = (len(clicked[(conv.customer, cookie)]) == 1
                     and clicked[(conv.customer, cookie)] == clicked[(other, cookie)])
        close = gap <= ONE_PERSON_WITHIN and not forwarded
        more = f" and {n - 2} more" if n > 2 else ""
        if close:
            how = f"their first conversions {_span(gap)} apart (one person)"
        elif forwarded:
            how = (f"{_span(gap)} apart, both through the same single click (one person, or a "
                   "landing link forwarded to a friend: for review)")
        else:
            how = (f"{_span(gap)} apart (one person, or a family sharing one tablet or "
                   "computer: for review)")
        out[conv.conversion_id] = Reason(
            "shared_cookie",
            f"identity: one browser (visitor cookie {cookie}) is behind {n} accounts referred "
            f"by {ref}: this customer, {other}{more}; " + how,
            n, "one account per browser",
            SHARED_COOKIE_WEIGHT if close else SHARED_COOKIE_APART_WEIGHT, "identity", close)
    return out


def _span(seconds: float) -> str:
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * DAY:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / DAY:.0f} days"


LIVING_ON = 0.8  # the mean share of a farm's accounts' addresses that are the farm's
ALIKE_P = 0.001  # a group's purchases at one amount, against the program's share of it
ALIKE_MIN_PURCHASES = 4  # fewer purchases than this cannot tell people from a script


def amount_shares(conversions: Iterable[ConversionFacts]) -> dict[int, float]:
    """The share of the program's purchases (conversions with an amount) at each amount."""
    counts = Counter(c.amount for c in conversions if c.amount > 0)
    total = sum(counts.values())
    return {amount: n / total for amount, n in counts.items()}


def first_referred(conversions: Iterable[ConversionFacts]
                   ) -> dict[str, tuple[str, ConversionFacts]]:
    """Each customer's referrer, the one credited with its first referred conversion (not the
    customer itself; the first by id of several), with that conversion."""
    out: dict[str, tuple[str, ConversionFacts]] = {}
    for conv in sorted(conversions, key=lambda c: (c.at, c.conversion_id)):
        credited = sorted(r for r in conv.referrers if r != conv.customer)
        if credited and conv.customer not in out:
            out[conv.customer] = (credited[0], conv)
    return out


def purchases_by_customer(conversions: Iterable[ConversionFacts]) -> dict[str, list[int]]:
    """The amounts each customer paid (conversions with an amount)."""
    out: dict[str, list[int]] = defaultdict(list)
    for conv in conversions:
        if conv.amount > 0:
            out[conv.customer].append(conv.amount)
    return out


def varied_purchases(amounts: Sequence[int], shares: Mapping[int, float]) -> bool:
    """Whether a group's purchases vary the way people's do. Accounts made for a reward buy
    the cheapest purchase that earns it, or one fixed basket, again and again; colleagues or
    classmates behind one address buy whatever each of them wants. Alike: the group's
    commonest amount is far more common in it than in the program's purchases (binomial
    tail, Bonferroni over the group's distinct amounts, under ALIKE_P). Too few purchases
    (or a program with one price) cannot tell, and count as alike: the group's other
    evidence decides then, as before."""
    counts = Counter(a for a in amounts if a > 0)
    n = sum(counts.values())
    if n < ALIKE_MIN_PURCHASES:
        return False
    amount, k = max(counts.items(), key=lambda kv: (kv[1], -kv[0]))
    base = shares.get(amount, 0.0)
    if base >= 0.5:  # most of the program buys it: buying it says nothing
        return False
    return len(counts) * _binom_above(k, n, base) >= ALIKE_P


CROWD_BROWSERS = 4  # different browsers on one address, at least, before it can be a crowd
# of the browsers as many of the program's customers drawn at random would bring
CROWD_SHARE = 0.5


def expected_browsers(n: int, mix: Mapping[str, int]) -> float:
    """How many different browsers n of the program's customers drawn at random use: the
    expected number of distinct values in n draws from the program's mix (customers per
    exact User-Agent)."""
    total = sum(mix.values())
    if total <= 0:
        return 0.0
    return sum(1.0 - (1.0 - k / total) ** n for k in mix.values())


def crowded_columns(uses: Mapping[tuple[str, str], Collection[tuple[str, str]]],
                    browsers_on: Mapping[str, Collection[str]],
                    agents: Mapping[str, Collection[str]]) -> set[tuple[str, str]]:
    """The addresses that behave like a NAT (a campus, a carrier, a public network) and the
    fingerprints seen only behind them. On a crowded address the accounts came on at least
    CROWD_BROWSERS different browsers (exact User-Agents; `browsers_on`: per IP, those the
    program's customers were seen with there), and on at least CROWD_SHARE of the number
    that as many of the program's customers drawn at random would bring (`agents`: each
    customer's browsers, the program's mix): people, each on a phone of their own, as a
    random crowd of them would be. An operator makes many accounts on a few devices (a
    farm's address carries two or three browsers), and an office's standard computer is one.

    A device fingerprint hashes the browser's headers with the network, so students with the
    same phone model behind a campus NAT share one: a fingerprint whose every account is on a
    crowded address is a popular phone model there, not a device, and says no more than the
    address does (nothing)."""
    mix: Counter[str] = Counter(b for browsers in agents.values() for b in set(browsers))
    holders: dict[tuple[str, str], set[tuple[str, str]]] = defaultdict(set)
    for account, columns in uses.items():
        for column in columns:
            holders[column].add(account)
    # A NAT's pool of addresses lies in one network (IPv4 /24, IPv6 /48), which a
    # fingerprint hashes in too: the pool is crowded as a whole.
    pools: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for column in holders:
        if column[0] == "ip":
            pools[ip_prefix(column[1])].append(column)
    crowds: set[tuple[str, str]] = set()
    expected: dict[int, float] = {}

    def browsers(part: list[tuple[str, str]]) -> int:
        return len({b for c in part for b in browsers_on.get(c[1], ())})

    for pool in pools.values():
        # Fewer than CROWD_BROWSERS browsers is never a crowd (crowd_of_people): most
        # addresses are, and their accounts need not be counted.
        for part in [[c] for c in pool] + ([pool] if len(pool) > 1 else []):
            seen = browsers(part)
            if seen >= CROWD_BROWSERS and crowd_of_people(
                    seen, len({a for c in part for a in holders[c]}), mix, expected):
                crowds.update(part)
    if not crowds:
        return crowds
    behind = {a for c in crowds for a in holders[c]}
    return crowds | {c for c, accounts in holders.items()
                     if c[0] == "device" and accounts <= behind}


def crowd_of_people(browsers: int, accounts: int, mix: Mapping[str, int],
                    expected: dict[int, float] | None = None) -> bool:
    """Whether `accounts` seen on `browsers` different browsers are people each on a device of
    their own: at least CROWD_BROWSERS browsers, and CROWD_SHARE of the number as many of the
    program's customers drawn at random would use (expected_browsers; `expected` caches it by
    the number of accounts)."""
    if browsers < CROWD_BROWSERS:
        return False
    cache = {} if expected is None else expected
    if accounts not in cache:
        cache[accounts] = expected_browsers(accounts, mix)
    return browsers >= CROWD_SHARE * cache[accounts]


def conversion_crowds(conversions: Sequence[ConversionFacts]) -> set[tuple[str, str]]:
    """crowded_columns over the conversions' customers: the addresses that behave like a NAT
    and the fingerprints seen only behind them (a popular phone model there, not one phone)."""
    uses: dict[tuple[str, str], set[tuple[str, str]]] = defaultdict(set)
    browsers_on: dict[str, set[str]] = defaultdict(set)
    agents: dict[str, set[str]] = defaultdict(set)
    for conv in conversions:
        mine = uses[("customer", conv.customer)]
        mine.update(("ip", ip) for ip in conv.ips)
        mine.update(("device", d) for d in conv.devices)
        for agent, ip in conv.agents:
            agents[conv.customer].add(agent)
            if ip is not None:
                mine.add(("ip", ip))
                browsers_on[ip].add(agent)
    return crowded_columns(uses, browsers_on, agents)


def living_on(ips: Sequence[Collection[str]]) -> float:
    """The mean share of each account's addresses that two or more of the accounts use (1
    where none has an address). A farm's accounts live on its few addresses; people who share
    a network (an office, a campus) are also seen on addresses of their own."""
    counts: Counter[str] = Counter(ip for own in ips for ip in own)
    shares = [sum(1 for ip in own if counts[ip] >= 2) / len(own) for own in ips if own]
    return sum(shares) / len(shares) if shares else 1.0


def features(conv: ConversionFacts, referrer_conversions: Mapping[str, int],
             referrer_clicks: Mapping[str, int]) -> list[float]:
    """The finance model's view of a conversion (fraud.supervised)."""
    delay = conv.delay
    ref_conv = max((referrer_conversions.get(r, 0) for r in conv.referrers), default=0)
    ref_rate = max((referrer_conversions.get(r, 0) / max(referrer_clicks.get(r, 0), 1)
                    for r in conv.referrers), default=0.0)
    return [
        math.log1p(max(delay, 0.0)) if delay is not None else 0.0,
        float(len(conv.touches)),
        float(len({t.ip for t in conv.touches if t.ip})),
        float(sum(t.is_bot for t in conv.touches)),
        float(sum(t.anonymous or t.hosting for t in conv.touches)),
        math.log1p(conv.amount),
        math.log1p(ref_conv),
        min(ref_rate, 1.0),
    ]


def _median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2



INTERJECTED_MIN = 2  # a referrer's customers with an interjected conversion, at least


def interjected(conversions: Sequence[ConversionFacts]) -> set[int]:
    """Conversions whose credited click came after the customer's purchase journey had
    begun: the customer had already converted (signed up, say) within the hour before the
    conversion, or another referrer's link had brought the visitor there minutes before, or
    (at any time) the customer had converted through another referrer's link. A click fired
    into a purchase that was happening anyway takes its credit as the last touch: click
    injection, however slow its clicks."""
    history: dict[str, list[tuple[float, tuple[str, ...]]]] = defaultdict(list)
    for conv in conversions:
        history[conv.customer].append((conv.at, conv.referrers))
    out: set[int] = set()
    for conv in conversions:
        if not conv.touches or not conv.referrers:
            continue
        last = conv.touches[-1]
        mine = set(conv.referrers)
        begun = any(at < last.at and (conv.at - at <= LATE_SECONDS or (refs and not
                                                                        set(refs) & mine))
                    for at, refs in history[conv.customer])
        brought = any(t.referrer not in mine and last.at - t.at <= LATE_SECONDS
                      for t in conv.touches[:-1])
        if begun or brought:
            out.add(conv.conversion_id)
    return out


def _interjected_findings(conversions: Sequence[ConversionFacts]) -> dict[str, Finding]:
    """interjected_clicks: more of a referrer's customers converted through a click that
    landed after their journey had begun (`interjected`) than the program's other referrers'
    customers do (`_excess_customers`, Benjamini-Hochberg across referrers). Counted in
    customers, not conversions: one person's sign-up and purchase after the same click are
    one observation, not two. Carried by those conversions."""
    late = frozenset(interjected(conversions))
    customers, taken_by = _marked_customers(
        conversions, lambda c: c.conversion_id in late, touched_only=True)
    p_values = _excess_customers(
        customers, taken_by,
        lambda k, n, total: k >= INTERJECTED_MIN and total - n >= BASELINE_MIN)
    total = sum(len(c) for c in customers.values())
    rate = sum(len(c) for c in taken_by.values()) / max(total, 1)
    out: dict[str, Finding] = {}
    for ref in benjamini_hochberg(p_values):
        k, n = len(taken_by[ref]), len(customers[ref])
        out[ref] = Finding(Reason(
            "interjected_clicks", f"click: {k} of {ref}'s {n} customers came through a click "
            "that landed after they had already signed up or arrived through another link "
            f"(the program's other referrers: {rate:.0%}): clicks fired into purchases that "
            "were happening anyway (click injection)", round(k / n, 4),
            f"FDR {FDR_Q:g}", 0.6, "click"), _in_set(late), p_values[ref])
    return out


# The platform a User-Agent names, as far as it tells one device from another: an iPad's
# Safari asks for desktop pages as a Mac, so Apple's systems are one platform; a phone asking
# for the desktop site says Linux, which names no platform.
_PLATFORMS = {"iOS": "apple", "iPadOS": "apple", "Mac OS X": "apple", "Android": "android",
              "Windows": "windows", "Chrome OS": "chromeos"}
OTHER_DEVICE = "clicks_on_another_device"
OTHER_DEVICE_MIN = 5  # a referrer's customers converting on another device, at least: a few
# friends of one desktop-heavy referrer who click on laptops and buy on phones are alike
OTHER_DEVICE_SHARE = 0.2  # of the referrer's customers, at least
OTHER_DEVICE_WEIGHT = 0.6


def platform(agent: str | None) -> str | None:
    """The platform (apple, android, windows, chromeos) a User-Agent names, or None."""
    return _PLATFORMS.get(parse_user_agent(agent).os or "") if agent else None


def on_another_device(conv: ConversionFacts) -> bool:
    """Whether the conversion's credited clicks were not made on the device that converted:
    one visitor cookie among them clicked from two platforms (a cookie lives in one browser
    on one device), or none of them came from a platform the customer's own reports (sign-up,
    purchase) came from. A person who clicked on a laptop and bought on a phone shows it too,
    now and then: only a referrer with far more such customers than the program's (the
    referrer-level test) says the clicks were made by someone else (click spoofing: clicks
    fired with harvested device ids, so that their owners' own purchases are credited)."""
    if not conv.touches:
        return False
    by_cookie: dict[str, str] = {}
    clicked: set[str] = set()
    for t in conv.touches:
        made = platform(t.agent)
        if made is None:
            continue
        clicked.add(made)
        if t.visitor is not None and by_cookie.setdefault(t.visitor, made) != made:
            return True
    if not clicked:
        return False
    touched = {(t.agent, t.ip) for t in conv.touches}
    reported = {platform(agent) for agent, ip in conv.agents if (agent, ip) not in touched}
    reported.discard(None)
    return bool(reported) and not reported & clicked


def _other_device_findings(conversions: Sequence[ConversionFacts]) -> dict[str, Finding]:
    """clicks_on_another_device: more of a referrer's customers converted on another device
    than the one their credited clicks came from (`on_another_device`) than the program's
    other referrers' customers do (`_excess_customers`, Benjamini-Hochberg across referrers):
    clicks that no person on the converting device made (click spoofing from harvested device
    ids on residential proxies, with current browsers and the market's language). Counted in
    customers; carried by those conversions."""
    customers, elsewhere = _marked_customers(conversions, on_another_device, touched_only=True)
    p_values = _excess_customers(
        customers, elsewhere,
        lambda k, n, total: (k >= OTHER_DEVICE_MIN and k >= OTHER_DEVICE_SHARE * n
                             and total - n >= BASELINE_MIN))
    total = sum(len(c) for c in customers.values())
    rate = sum(len(c) for c in elsewhere.values()) / max(total, 1)
    out: dict[str, Finding] = {}
    for ref in benjamini_hochberg(p_values):
        k, n = len(elsewhere[ref]), len(customers[ref])
        out[ref] = Finding(Reason(
            OTHER_DEVICE, f"click: {k} of {ref}'s {n} customers converted on "
            "another device than the one their credited clicks came from, or one visitor "
            f"cookie clicked from two platforms (the program's other referrers: {rate:.0%}): "
            "clicks no person on the converting device made (click spoofing)", round(k / n, 4),
            f"FDR {FDR_Q:g}", OTHER_DEVICE_WEIGHT, "click"), on_another_device, p_values[ref])
    return out


SPREE_SECONDS = 3 * DAY  # from a customer's first conversion: a new account's first days
SPREE_PURCHASES = 2  # purchases in them, at least: a spree
# A customer who still buys this long after their first conversion has a life of their own
# (a real customer who came back), not an account made to be cashed out and dropped
SPREE_LIFE_SECONDS = 7 * DAY
SPREE_MIN = 2  # a referrer's customers on a spree, at least, before the test can tell
SPREE_SHARE = 0.3  # of the referrer's buying customers, at least
# Decisive alone (a hold for finance) even where the mixture doubts a conversion a little
SPREE_WEIGHT = 0.6


def spree_customers(conversions: Iterable[ConversionFacts]) -> set[str]:
    """The customers who bought SPREE_PURCHASES times or more within SPREE_SECONDS of their
    first conversion (of those at hand): a new account spending at once, several orders in its
    first days, and none after SPREE_LIFE_SECONDS. A customer buys once and comes back weeks
    later; a stolen card is spent before its owner notices (gift cards, resalable goods),
    order after order, and the account is dropped: one that still buys a week on is a
    customer who came back."""
    first: dict[str, float] = {}
    purchases: dict[str, list[float]] = defaultdict(list)
    for conv in conversions:
        first[conv.customer] = min(first.get(conv.customer, conv.at), conv.at)
        if conv.amount > 0:
            purchases[conv.customer].append(conv.at)
    return {who for who, times in purchases.items()
            if sum(1 for t in times if t - first[who] <= SPREE_SECONDS) >= SPREE_PURCHASES
            and max(times) - first[who] <= SPREE_LIFE_SECONDS}


def _spree_findings(conversions: Sequence[ConversionFacts]) -> dict[str, Finding]:
    """spending_spree: of a referrer's buying customers, more on a spree (spree_customers)
    than among the program's other referrers' (binomial against their share, at least 2%,
    Benjamini-Hochberg across referrers): accounts made to cash out stolen cards (gift cards
    bought order after order soon after sign-up, charged back weeks later), whether or not
    they share a device. A customer buying twice in a week is ordinary; most of a
    referrer's new customers doing so, far beyond the program's, is not. Carried by those
    customers' conversions; the referrer's other customers are its own audience."""
    spree = spree_customers(conversions)
    if len(spree) < SPREE_MIN:
        return {}
    buyers: dict[str, set[str]] = defaultdict(set)
    for conv in conversions:
        if conv.amount > 0:
            for ref in conv.referrers:
                buyers[ref].add(conv.customer)
    totals = {ref: len(who) for ref, who in buyers.items()}
    hits = {ref: len(who & spree) for ref, who in buyers.items()}
    p_values = _share_above_rest(totals, hits, sum(totals.values()), sum(hits.values()),
                                 min_total=SPREE_MIN, min_share=SPREE_SHARE)
    p_values = {ref: p for ref, p in p_values.items() if hits[ref] >= SPREE_MIN}
    out: dict[str, Finding] = {}
    rest = sum(hits.values()) / max(sum(totals.values()), 1)
    for ref in benjamini_hochberg(p_values):
        mine = frozenset(buyers[ref] & spree)
        out[ref] = Finding(Reason(
            "spending_spree", f"money: {len(mine)} of {ref}'s {totals[ref]} new customers "
            f"bought {SPREE_PURCHASES} times or more within {_span(SPREE_SECONDS)} of signing "
            f"up (the program's customers: {rest:.0%}): new accounts spending at once, as a "
            "stolen card is cashed out (gift cards, resalable goods) before it is blocked",
            round(len(mine) / totals[ref], 4), SPREE_SHARE, SPREE_WEIGHT, "money"),
            _customers_in(mine), p_values[ref])
    return out


def _customers_in(customers: frozenset[str]) -> Carry:
    return lambda c: c.customer in customers


def _in_set(ids: frozenset[int]) -> Carry:
    return lambda c: c.conversion_id in ids
