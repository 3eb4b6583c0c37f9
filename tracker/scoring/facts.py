"""A program's rows as fraud/ reads them: conversion and referrer facts, the identity graph
(who uses which IP and device, who referred whom) and what is known of the whole program.

A full scan loads everything. An incremental scan loads a `Scope`: the conversions no scan has
seen yet, at most WINDOW at a time, with their neighbourhood (their customers and referrers, the
accounts that share an IP or a device with them, and the latest REFERRER_WINDOW conversions
credited to each of those referrers); the referrers' totals and the program's baseline come as
aggregates (fraud.signals.ProgramContext).
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import TypeVar

import asyncpg
import numpy as np

from fraud.rings import Account, Column
from fraud.signals import (
    ClickFacts,
    ConversionFacts,
    ProgramContext,
    ReferrerFacts,
    paced_stretch,
    purchases_by_customer,
)
from tracker.formats import CREDITED_TYPES
from tracker.scoring import queries
from tracker.scoring.queries import (
    ConversionRow,
    EarlierVisit,
    ReferrerRow,
    Sighting,
    TouchRow,
)

_Rows = TypeVar("_Rows")
_Done = TypeVar("_Done")

WINDOW = 20_000  # conversions per incremental scan, to bound its memory
BASELINE_ROWS = 10_000  # stored feature rows an incremental scan compares against
REFERRER_WINDOW = 100  # an incremental scan's latest conversions of each referrer involved


@dataclass(frozen=True, slots=True)
class Scope:
    """What an incremental scan looks at."""

    new_ids: set[int]
    persons: list[str]  # customers and referrers (external ids) whose facts are loaded
    referrers: list[str]  # referrers whose latest REFERRER_WINDOW conversions are loaded


@dataclass(frozen=True, slots=True)
class Facts:
    """The conversions at hand, their referrers, and the graph between their accounts."""

    conversions: list[ConversionFacts]
    referrers: dict[str, ReferrerFacts]
    uses: dict[Account, set[Column]]  # the IPs and devices each account was seen on
    referrals: list[tuple[str, str]]  # (referrer, customer) of each credit
    # How common what a referee shares with a referrer is in the whole program:
    # ("visitors", ip) distinct visitor cookies on an address, ("site", "agent @ ip") those
    # with that browser there, ("agent", user agent) customers
    # reported with a browser, ("agents", "") customers reported with any (fraud.signals).
    rarity: dict[tuple[str, str], int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ProgramFacts:
    context: ProgramContext


@dataclass(slots=True)
class _People:
    """Every person's identifiers: the clicks of the visitors linked to a customer id, the IPs
    their conversions were reported from, the email their conversions carried."""

    visitors: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    devices: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    ips: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    email_of: dict[str, bytes] = field(default_factory=dict)
    # (user agent, IP) each person was seen with: their clicks and their conversions' reports
    agents: dict[str, set[tuple[str, str | None]]] = field(
        default_factory=lambda: defaultdict(set))
    # (unix seconds, IP, referrer id of the link) of each person's clicks
    clicks: dict[str, list[tuple[float, str, int]]] = field(
        default_factory=lambda: defaultdict(list))


async def unscanned(conn: asyncpg.Connection, program_id: int, *,
                    primary: asyncpg.Connection | None = None) -> Scope | None:
    """An incremental scan's first step: the conversions no scan has seen yet, as `conn` has
    them, with their customers and referrers only as its persons (what the program's facts
    need: load_program_facts). `primary`: `conn` is a replica, and the conversions the primary
    holds a risk for are left out (the replica may not have replayed the scan that assessed
    them, on newer facts)."""
    rows = await queries.unscanned_conversions(conn, program_id, WINDOW)
    if rows and primary is not None:
        assessed = await queries.assessed(primary, program_id, [r.id for r in rows])
        rows = [r for r in rows if r.id not in assessed]
    if not rows:
        return None
    referrers = sorted({ref for r in rows for ref in r.referrers})
    core = sorted({r.customer_id for r in rows} | set(referrers))
    return Scope({r.id for r in rows}, core, referrers)


async def widened(conn: asyncpg.Connection, program_id: int, scope: Scope) -> Scope:
    """An incremental scan's second step: the people around `unscanned`'s (who share an IP, a
    device or a cookie with them) added to its persons."""
    around = await queries.neighbours(conn, program_id, scope.persons)
    return Scope(scope.new_ids, sorted(set(scope.persons) | around), scope.referrers)


async def load_facts(conn: asyncpg.Connection, program_id: int, scope: Scope | None) -> Facts:
    """The program's facts (a full scan), or those of an incremental scan's scope."""
    referrer_rows = await queries.program_referrers(conn, program_id)
    referrer_name = {r.id: r.external_id for r in referrer_rows}
    if scope is None:
        sightings = await queries.sightings(conn, program_id, None)
        conv_rows = await queries.attributed_conversions(conn, program_id)
    else:
        wanted = set(scope.referrers)
        sightings = await queries.sightings(conn, program_id, scope.persons)
        conv_rows = await queries.attributed_conversions(
            conn, program_id, scope.persons,
            [r.id for r in referrer_rows if r.external_id in wanted], REFERRER_WINDOW)
    wanted_ids = None if scope is None else [r.id for r in conv_rows]
    # What does not need the next query's rows is worked out while PostgreSQL answers it.
    touch_rows, (people, referrers) = await _meanwhile(
        queries.touches(conn, program_id, wanted_ids),
        lambda: _persons(referrer_rows, sightings, conv_rows, scope))
    before, clicks = await _meanwhile(
        _earlier_visits(conn, program_id, touch_rows, None if scope is None else scope.new_ids),
        lambda: _clicks(touch_rows, referrer_name, people))
    conversions = _conversion_facts(conv_rows, _click_facts(touch_rows, before, referrer_name,
                                                                 people, clicks),
                                    people, referrer_name)
    conversions = await _with_owners(conn, program_id, conversions, referrer_rows, people,
                                     assessed=None if scope is None else scope.new_ids)
    uses, referrals = _graph(people, referrers, conversions)
    rarity = await _rarity(conn, program_id, conversions, referrers)
    return Facts(conversions, referrers, uses, referrals, rarity)


async def _meanwhile(query: Awaitable[_Rows], work: Callable[[], _Done]
                     ) -> tuple[_Rows, _Done]:
    """`query`'s rows and `work`'s result, `work` run in a thread while `query` waits on
    PostgreSQL (which works on the other core meanwhile)."""
    done = asyncio.get_running_loop().run_in_executor(None, work)
    try:
        rows = await query
    except BaseException:
        await asyncio.wait([done])
        raise
    return rows, await done


def _persons(referrer_rows: list[ReferrerRow], sightings: list[Sighting],
             conv_rows: list[ConversionRow], scope: Scope | None
             ) -> tuple[_People, dict[str, ReferrerFacts]]:
    people = _people(sightings, conv_rows, None if scope is None else set(scope.persons))
    return people, _referrer_facts(referrer_rows, people)


async def _rarity(conn: asyncpg.Connection, program_id: int,
                  conversions: list[ConversionFacts], referrers: dict[str, ReferrerFacts]
                  ) -> dict[tuple[str, str], int]:
    """How common, in the whole program, the addresses and browsers are that a referee shares
    with a credited referrer (counted for those only: a count over every click is costly)."""
    ips: set[str] = set()
    agents: set[str] = set()
    sites: set[tuple[str, str]] = set()  # (IP, User-Agent) of a referrer's shared browser
    for conv in conversions:
        for ref_id in conv.referrers:
            ref = referrers.get(ref_id)
            if ref is None:
                continue
            ref_ips = ref.ips | {ip for _a, ip in ref.agents if ip}
            ips |= (conv.ips | {ip for _a, ip in conv.agents if ip}) & ref_ips
            shared = {a for a, _ip in conv.agents} & {a for a, _ip in ref.agents}
            agents |= shared
            sites |= {(ip, a) for a, ip in ref.agents if ip and a in shared}
        ips |= {t.ip for t in conv.touches if (t.before or t.owner) and t.ip}
    out: dict[tuple[str, str], int] = {}
    for ip, n in (await queries.address_visitors(conn, program_id, sorted(ips))).items():
        out[("visitors", ip)] = n
    for (ip, agent), n in (await queries.site_browser_visitors(
            conn, program_id, sorted(sites))).items():
        out[("site", f"{agent} @ {ip}")] = n
    counts, total = await queries.agent_customers(conn, program_id, sorted(agents))
    out |= {("agent", a): n for a, n in counts.items()}
    out[("agents", "")] = total
    return out


async def _with_owners(conn: asyncpg.Connection, program_id: int,
                       conversions: list[ConversionFacts], referrer_rows: list[ReferrerRow],
                       people: _People, *, assessed: set[int] | None = None
                       ) -> list[ConversionFacts]:
    """Where two or more customers' first visits on a referrer's link came from one address
    with one User-Agent, or a new account's first visit came there without a Referer, the
    first visits there with that browser of cookies tied to no customer, at any time
    (ClickFacts.owner: whose browser it was before them), and which of those cookies opened
    the link two or more times (ClickFacts.returning). Asked for those groups only (a new
    account's, for the conversions `assessed` only: an incremental scan's new ones).

    An incremental scan asks only on the (link, address) pairs of the first visits of its
    assessed conversions' customers (any of their conversions): what the owners say of a
    conversion (fraud.signals.repeat_lease_reasons, private_window_reasons) comes from the
    first visits on its customer's links and addresses, and from the others' there."""
    ref_id = {r.external_id: r.id for r in referrer_rows}
    firsts: dict[tuple[str, str, str], set[str]] = defaultdict(set)
    direct: set[tuple[str, str, str]] = set()  # a new account's first visit without Referer
    spent = purchases_by_customer(conversions)
    mine = (None if assessed is None else
            {c.customer for c in conversions if c.conversion_id in assessed})
    near: set[tuple[str, str]] = set()  # (link, address) of those customers' first visits
    for conv in conversions:
        for ref in conv.referrers:
            t = next((t for t in conv.touches if t.referrer == ref), None)
            if ref != conv.customer and ref in ref_id and t is not None and t.ip and t.agent:
                firsts[(ref, t.ip, t.agent)].add(conv.customer)
                if mine is not None and conv.customer in mine:
                    near.add((ref, t.ip))
                if t.source is None and len(spent.get(conv.customer, ())) <= 1 and (
                        assessed is None or conv.conversion_id in assessed):
                    direct.add((ref, t.ip, t.agent))
    visits = await queries.browser_visits(conn, program_id, [
        (ref_id[ref], ip, agent) for (ref, ip, agent), who in firsts.items()
        if (len(who) >= 2 or (ref, ip, agent) in direct)
        and (mine is None or (ref, ip) in near)])
    if not visits:
        return conversions
    tied = set().union(*people.visitors.values()) if people.visitors else set()
    name = {r.id: r.external_id for r in referrer_rows}
    owners = {(name[ref], ip, agent): tuple(sorted((at, v) for at, v in seen if v not in tied))
              for (ref, ip, agent), seen in visits.items()}
    # Which of those cookies opened the link two or more times (anywhere): the link's owner
    # coming back to it (fraud.signals.private_window_reasons).
    returning = await queries.returning_visitors(conn, program_id, sorted(
        {(ref, v) for (ref, _ip, _agent), seen in visits.items() for _at, v in seen
         if v not in tied}))

    def marked(conv: ConversionFacts) -> ConversionFacts:
        touches = list(conv.touches)
        for ref in conv.referrers:
            i = next((i for i, t in enumerate(touches) if t.referrer == ref), None)
            if i is None or touches[i].ip is None or touches[i].agent is None:
                continue
            found = owners.get((ref, touches[i].ip or "", touches[i].agent or ""))
            if found:
                touches[i] = replace(touches[i], owner=found, returning=frozenset(
                    v for _at, v in found if (ref_id[ref], v) in returning))
        return replace(conv, touches=tuple(touches)) if touches != list(conv.touches) else conv

    return [marked(c) for c in conversions]


def _people(sightings: list[Sighting], conv_rows: list[ConversionRow],
            persons: set[str] | None) -> _People:
    """Identifiers per person; a conversion's IP counts for its customer only if they are one
    of `persons` (an incremental scan's), or in a full scan."""
    people = _People()
    for s in sightings:
        people.visitors[s.customer_id].add(s.visitor_id)
        if s.device:
            people.devices[s.customer_id].add(s.device)
        if s.agent:
            people.agents[s.customer_id].add((s.agent, s.ip))
        if s.ip:
            people.ips[s.customer_id].add(s.ip)
            if s.ts is not None and s.referrer_id is not None:
                people.clicks[s.customer_id].append((s.ts.timestamp(), s.ip, s.referrer_id))
    for r in conv_rows:
        if persons is None or r.customer_id in persons:
            if r.ip:
                people.ips[r.customer_id].add(r.ip)
            if r.agent:
                people.agents[r.customer_id].add((r.agent, r.ip))
        if r.email_hash:
            people.email_of[r.customer_id] = r.email_hash
    return people


async def _earlier_visits(conn: asyncpg.Connection, program_id: int,
                          touch_rows: list[TouchRow], assessed: set[int] | None
                          ) -> dict[int, list[EarlierVisit]]:
    """The other visits on the same link from the same address shortly before each assessed
    conversion's first click through each referrer (where a household lease would start),
    by the touch's index in `touch_rows` (`assessed`: an incremental scan's new conversions;
    the others are context, whose leases are not told)."""
    firsts: dict[tuple[int, int], int] = {}
    for i, t in enumerate(touch_rows):
        if assessed is None or t.conversion_id in assessed:
            firsts.setdefault((t.conversion_id, t.referrer_id), i)
    asked = [i for i in firsts.values() if touch_rows[i].ip is not None]
    visits = await queries.earlier_visits(conn, program_id, [
        (touch_rows[i].referrer_id, touch_rows[i].ip or "", touch_rows[i].ts,
         touch_rows[i].visitor_id) for i in asked])
    out: dict[int, list[EarlierVisit]] = defaultdict(list)
    for v in visits:
        out[asked[v.index]].append(v)
    return out


def _clicks(touch_rows: list[TouchRow], referrer_name: dict[int, str], people: _People
            ) -> list[ClickFacts]:
    """Each attributed click (of `touch_rows`, in their order) without the visits before it
    (_click_facts adds them)."""
    return [ClickFacts(
        t.click_id, t.ts.timestamp(), referrer_name.get(t.referrer_id, ""), t.visitor_id,
        t.ip, t.device, t.is_bot, t.bot_rule, t.is_anonymous, t.is_hosting, t.country,
        t.query, t.headerless, t.language, t.browser, t.source, t.agent)
        for t in touch_rows]


def _click_facts(touch_rows: list[TouchRow], before: dict[int, list[EarlierVisit]],
                 referrer_name: dict[int, str], people: _People,
                 clicks: list[ClickFacts] | None = None) -> dict[int, list[ClickFacts]]:
    """Each conversion's attributed clicks, in order, with the other visits on the same link
    from the same address shortly before the first through each referrer (their cookie None
    where it is tied to no customer: whose visit it was is not known, only where it came
    from). `clicks`: `_clicks(touch_rows, referrer_name, people)`, when made already."""
    if clicks is None:
        clicks = _clicks(touch_rows, referrer_name, people)
    tied = set().union(*people.visitors.values()) if people.visitors else set()
    out: dict[int, list[ClickFacts]] = defaultdict(list)
    for i, (t, click) in enumerate(zip(touch_rows, clicks, strict=True)):
        seen = before.get(i)
        out[t.conversion_id].append(click if not seen else replace(
            click,
            before=tuple((v.at, v.visitor_id if v.visitor_id in tied else None, v.agent)
                         for v in seen),
            untied=tuple((v.at, v.visitor_id) for v in seen
                         if v.visitor_id is not None and v.visitor_id not in tied)))
    return out


def _referrer_facts(referrer_rows: list[ReferrerRow], people: _People
                    ) -> dict[str, ReferrerFacts]:
    return {
        r.external_id: ReferrerFacts(
            r.external_id,
            r.email_hash if r.email_hash else people.email_of.get(r.external_id),
            frozenset(people.visitors.get(r.external_id, ())),
            frozenset(people.devices.get(r.external_id, ())),
            frozenset(people.ips.get(r.external_id, ())),
            # The referrer's own visits to their own link (a household lease starts there).
            tuple(sorted((at, ip) for at, ip, ref in people.clicks.get(r.external_id, ())
                         if ref == r.id)),
            frozenset(people.agents.get(r.external_id, ())))
        for r in referrer_rows}


def _conversion_facts(conv_rows: list[ConversionRow], clicks: dict[int, list[ClickFacts]],
                      people: _People, referrer_name: dict[int, str]
                      ) -> list[ConversionFacts]:
    """The conversions of the types that earn credit, with their clicks and customer."""
    return [
        ConversionFacts(
            r.id, r.customer_id, r.occurred_at.timestamp(),
            tuple(sorted(referrer_name[i] for i in r.referrer_ids if i in referrer_name)),
            # A merchant may send the email with the sign-up only: the customer's is theirs.
            r.email_hash if r.email_hash else people.email_of.get(r.customer_id),
            r.ip, None,
            tuple(clicks.get(r.id, ())), frozenset(people.visitors.get(r.customer_id, ())),
            frozenset(people.devices.get(r.customer_id, ())),
            frozenset(people.ips.get(r.customer_id, ())), r.amount,
            frozenset(people.agents.get(r.customer_id, ())))
        for r in conv_rows if r.type in CREDITED_TYPES]


def _graph(people: _People, referrers: dict[str, ReferrerFacts],
           conversions: list[ConversionFacts]
           ) -> tuple[dict[Account, set[Column]], list[tuple[str, str]]]:
    """The accounts' IPs and devices, and who referred whom."""
    uses: dict[Account, set[Column]] = defaultdict(set)
    for person in set(people.visitors) | set(people.ips):
        kind = "referrer" if person in referrers else "customer"
        uses[(kind, person)] |= {("ip", i) for i in people.ips.get(person, ())}
        uses[(kind, person)] |= {("device", d) for d in people.devices.get(person, ())}
    referrals = [(ref, conv.customer) for conv in conversions for ref in conv.referrers]
    return dict(uses), referrals


async def load_program_facts(conn: asyncpg.Connection, program_id: int,
                             scope: Scope | None) -> ProgramFacts:
    """What a scan knows of the whole program beyond the conversions at hand."""
    reversed_ids, charged_back = await queries.reversed_conversions(conn, program_id)
    if scope is None:
        rhythm = await queries.referrer_clicks(conn, program_id)
        clicks = {ref: r.clicks for ref, r in rhythm.items()}
        # Visits per site they came from (full scans only: a count over every click).
        sources = await queries.source_clicks(conn, program_id)
        even = await queries.click_evenness(conn, program_id)
        rhythm = {ref: replace(r, gap_pairs=even[ref].pairs, gap_spread=even[ref].spread,
                               paced=paced_stretch(even[ref].days))
                  if ref in even else r for ref, r in rhythm.items()}
        return ProgramFacts(ProgramContext(reversed_ids, clicks, charged_back_ids=charged_back,
                                           source_clicks={source: sum(by.values()) for
                                                          source, by in sources.items()},
                                           source_referrers=sources,
                                           click_rhythm=rhythm))
    clicks = await queries.counted_clicks(conn, program_id, scope.referrers)
    # The program's conversions per click, as the latest full scan measured it (counting a
    # million clicks again every 30 seconds would cost more than the whole incremental scan).
    latest = await queries.latest_full_scan(conn, program_id)
    rate = latest.program_rate if latest else None
    # The program's headerless share as a full scan measured it; before any full scan, the
    # signal compares with the other conversions at hand (None).
    headerless = latest.headerless_share if latest else None
    if rate is None:
        rate = await queries.credited_per_click(conn, program_id)
    credits = await queries.referrer_credits(conn, program_id, scope.referrers)
    history = {ref: (c.conversions, c.first) for ref, c in credits.items()}
    customers = ({ref: c.customers for ref, c in credits.items()}
                 if latest is not None and latest.customer_rate is not None else {})
    rows = await queries.stored_features(conn, program_id, BASELINE_ROWS)
    background = None
    if rows:  # stored feature rows (fraud.signals.features): the delays of touched rows
        stored = np.asarray(rows, dtype=float)
        background = np.expm1(stored[stored[:, 1] > 0][:, 0])
    return ProgramFacts(ProgramContext(reversed_ids, clicks, background, rate, history=history,
                                       charged_back_ids=charged_back,
                                       headerless_share=headerless,
                                       customer_rate=latest.customer_rate if latest else None,
                                       referrer_customers=customers))
