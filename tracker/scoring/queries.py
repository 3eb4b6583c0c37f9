"""SQL of scoring: async functions taking `conn` first, returning frozen dataclasses.

One section per caller: attribution and its reports (credits.py, reports.py), risk (risk.py).
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from fraud.rings import Column, Ring
from fraud.signals import LEASE_SECONDS
from tracker.formats import CREDITED_TYPES

# -- credits and reports ---------------------------------------------------------------------
# Attribution (tracker/scoring/credits.py) and its reports (tracker/scoring/reports.py).
# On the batch path rows become dataclasses positionally (`Row(*record)`): the SELECT lists
# name their columns in the dataclass's field order.


@dataclass(frozen=True, slots=True)
class ProgramSettings:
    id: int
    settings: dict[str, Any]


@dataclass(frozen=True, slots=True)
class PendingConversion:
    id: int
    type: str
    customer_id: str
    occurred_at: datetime
    click_id: str | None
    visitor_id: str | None
    referral_code: str | None


@dataclass(frozen=True, slots=True, order=True)
class CustomerVisitor:
    customer_id: str
    visitor_id: str


@dataclass(frozen=True, slots=True)
class VisitorClick:
    visitor_id: str
    referrer_id: int
    ts: datetime
    click_id: str


@dataclass(frozen=True, slots=True)
class TypedCode:
    customer_id: str
    occurred_at: datetime
    referral_code: str


@dataclass(frozen=True, slots=True)
class CreditedJourney:
    id: int
    amount: int | None
    occurred_at: datetime
    referrers: tuple[int, ...]
    times: tuple[datetime, ...]


@dataclass(frozen=True, slots=True)
class ReferrerClicks:
    referrer: str
    clicks: int
    visitors: int


@dataclass(frozen=True, slots=True)
class ReferrerTypeCredit:
    referrer: str
    type: str
    credit: float


@dataclass(frozen=True, slots=True)
class ReferrerCredit:
    referrer: str
    credit: float


@dataclass(frozen=True, slots=True)
class ReferrerCount:
    referrer: str
    n: int


async def attribution_programs(conn: asyncpg.Connection, program_id: int | None
                               ) -> list[ProgramSettings]:
    """Every program (or the one named) with its settings."""
    rows = await conn.fetch(
        "SELECT id, settings::text AS settings FROM programs WHERE $1::bigint IS NULL OR id = $1",
        program_id,
    )
    return [ProgramSettings(r["id"], json.loads(r["settings"])) for r in rows]


async def pending_conversions(conn: asyncpg.Connection, program_id: int, limit: int
                              ) -> list[PendingConversion]:
    """The next `limit` conversions not yet attributed, oldest first."""
    rows = await conn.fetch(
        """SELECT id, type, customer_id, occurred_at, click_id::text AS click_id, visitor_id,
                  referral_code
           FROM conversions WHERE program_id = $1 AND attributed_at IS NULL
           ORDER BY occurred_at, id LIMIT $2""",
        program_id, limit,
    )
    return [PendingConversion(*r) for r in rows]


async def click_visitors(conn: asyncpg.Connection, program_id: int, click_ids: list[str]
                         ) -> dict[str, str | None]:
    """The visitor of each click named (click id -> visitor id)."""
    if not click_ids:
        return {}
    return {r["click_id"]: r["visitor_id"] for r in await conn.fetch(
        """SELECT click_id::text AS click_id, visitor_id FROM clicks
           WHERE program_id = $1 AND click_id = ANY($2::uuid[])""", program_id, click_ids)}


async def known_visitors(conn: asyncpg.Connection, program_id: int, customers: list[str]
                         ) -> list[CustomerVisitor]:
    """The visitors earlier conversions of these customers reached."""
    rows = await conn.fetch(
        """SELECT customer_id, visitor_id FROM customer_visitors
           WHERE program_id = $1 AND customer_id = ANY($2::text[])""", program_id, customers)
    return [CustomerVisitor(*r) for r in rows]


async def add_customer_visitors(conn: asyncpg.Connection, program_id: int,
                                links: list[CustomerVisitor]) -> None:
    await conn.executemany(
        """INSERT INTO customer_visitors (program_id, customer_id, visitor_id)
           VALUES ($1, $2, $3) ON CONFLICT DO NOTHING""",
        [(program_id, link.customer_id, link.visitor_id) for link in links])


async def visitor_clicks(conn: asyncpg.Connection, program_id: int, visitors: list[str],
                         since: datetime, until: datetime) -> list[VisitorClick]:
    """These visitors' non-bot, non-duplicate clicks in [since, until], by time then click id."""
    if not visitors:
        return []
    rows = await conn.fetch(
        """SELECT visitor_id, referrer_id, ts, click_id::text AS click_id FROM clicks
           WHERE program_id = $1 AND visitor_id = ANY($2::text[])
             AND ts BETWEEN $3 AND $4 AND NOT is_bot AND NOT is_duplicate
           ORDER BY ts, click_id""", program_id, visitors, since, until)
    return [VisitorClick(*r) for r in rows]


async def typed_codes(conn: asyncpg.Connection, program_id: int, customers: list[str],
                      since: datetime, until: datetime) -> list[TypedCode]:
    """Referral codes these customers typed at checkout in [since, until]."""
    rows = await conn.fetch(
        """SELECT customer_id, occurred_at, referral_code FROM conversions
           WHERE program_id = $1 AND customer_id = ANY($2::text[])
             AND referral_code IS NOT NULL AND occurred_at BETWEEN $3 AND $4""",
        program_id, customers, since, until)
    return [TypedCode(*r) for r in rows]


async def code_referrers(conn: asyncpg.Connection, program_id: int, codes: list[str]
                         ) -> dict[str, int]:
    """The referrer of each link code named (code -> referrer id); unknown codes are left out."""
    if not codes:
        return {}
    return {r["code"]: r["referrer_id"] for r in await conn.fetch(
        "SELECT code, referrer_id FROM links WHERE program_id = $1 AND code = ANY($2)",
        program_id, codes)}


async def delete_attribution(conn: asyncpg.Connection, program_id: int,
                             conversion_ids: list[int]) -> None:
    """Drop the touchpoints and credits of these conversions (a re-run after a crash)."""
    await conn.execute("DELETE FROM touchpoints WHERE program_id = $1 AND conversion_id = "
                       "ANY($2::bigint[])", program_id, conversion_ids)
    await conn.execute("DELETE FROM credits WHERE program_id = $1 AND conversion_id = "
                       "ANY($2::bigint[])", program_id, conversion_ids)


async def copy_touchpoints(conn: asyncpg.Connection, rows: list[tuple[object, ...]]) -> None:
    """COPY rows of (program_id, conversion_id, position, referrer_id, click_id, ts, via)."""
    if rows:
        await conn.copy_records_to_table(
            "touchpoints", records=rows,
            columns=("program_id", "conversion_id", "position", "referrer_id", "click_id",
                     "ts", "via"))


async def copy_credits(conn: asyncpg.Connection, rows: list[tuple[object, ...]]) -> None:
    """COPY rows of (program_id, conversion_id, referrer_id, model, credit)."""
    if rows:
        await conn.copy_records_to_table(
            "credits", records=rows,
            columns=("program_id", "conversion_id", "referrer_id", "model", "credit"))


async def mark_attributed(conn: asyncpg.Connection, program_id: int,
                          conversion_ids: list[int]) -> None:
    await conn.execute(
        "UPDATE conversions SET attributed_at = now() WHERE program_id = $1 AND id = "
        "ANY($2::bigint[])", program_id, conversion_ids)


async def analyze_attribution_tables(conn: asyncpg.Connection) -> None:
    # ANALYZE needs the tables' owner: the application asks it through refguard_analyze.
    await conn.execute("SELECT refguard_analyze('touchpoints', 'credits', 'customer_visitors', "
                       "'conversions')")


async def converted_paths(conn: asyncpg.Connection, program_id: int) -> list[tuple[int, ...]]:
    """The referrers of each credited conversion's stored touchpoints, in order."""
    rows = await conn.fetch(
        """SELECT array_agg(t.referrer_id ORDER BY t.position) AS path
           FROM touchpoints t JOIN conversions c
             ON c.program_id = t.program_id AND c.id = t.conversion_id
           WHERE t.program_id = $1 AND c.type = ANY($2::text[])
           GROUP BY t.conversion_id""",
        program_id, list(CREDITED_TYPES),
    )
    return [tuple(r["path"]) for r in rows]


async def lost_paths(conn: asyncpg.Connection, program_id: int) -> list[tuple[int, ...]]:
    """The referrers clicked by each visitor no customer is known by, in click order."""
    rows = await conn.fetch(
        """SELECT array_agg(c.referrer_id ORDER BY c.ts, c.click_id) AS path
           FROM clicks c
           WHERE c.program_id = $1 AND NOT c.is_bot AND NOT c.is_duplicate
             AND c.visitor_id IS NOT NULL
             AND NOT EXISTS (SELECT 1 FROM customer_visitors v
                             WHERE v.program_id = c.program_id AND v.visitor_id = c.visitor_id)
           GROUP BY c.visitor_id""",
        program_id,
    )
    return [tuple(r["path"]) for r in rows]


async def credited_journeys(conn: asyncpg.Connection, program_id: int
                            ) -> list[CreditedJourney]:
    """Each credited conversion with its touchpoints' referrers and times, in order."""
    rows = await conn.fetch(
        """SELECT c.id, c.amount, c.occurred_at,
                  array_agg(t.referrer_id ORDER BY t.position) AS refs,
                  array_agg(t.ts ORDER BY t.position) AS times
           FROM conversions c JOIN touchpoints t
             ON t.program_id = c.program_id AND t.conversion_id = c.id
           WHERE c.program_id = $1 AND c.type = ANY($2::text[])
           GROUP BY c.program_id, c.id""",
        program_id, list(CREDITED_TYPES),
    )
    return [CreditedJourney(r["id"], r["amount"], r["occurred_at"], tuple(r["refs"]),
                            tuple(r["times"]))
            for r in rows]


async def referrer_external_ids(conn: asyncpg.Connection, program_id: int) -> dict[int, str]:
    """Referrer id -> external id, for the program's referrers."""
    return {r["id"]: r["external_id"] for r in await conn.fetch(
        "SELECT id, external_id FROM referrers WHERE program_id = $1", program_id)}


async def funnel_clicks(conn: asyncpg.Connection, program_id: int) -> list[ReferrerClicks]:
    rows = await conn.fetch(
        """SELECT r.external_id AS referrer, count(*) AS clicks,
                  count(DISTINCT c.visitor_id) AS visitors
           FROM clicks c JOIN referrers r ON r.program_id = c.program_id AND r.id = c.referrer_id
           WHERE c.program_id = $1 AND NOT c.is_bot AND NOT c.is_duplicate
           GROUP BY r.external_id""", program_id)
    return [ReferrerClicks(r["referrer"], r["clicks"], r["visitors"]) for r in rows]


async def funnel_conversions(conn: asyncpg.Connection, program_id: int
                             ) -> list[ReferrerTypeCredit]:
    """Stored credit per referrer and conversion type."""
    rows = await conn.fetch(
        """SELECT r.external_id AS referrer, v.type, sum(cr.credit) AS n
           FROM credits cr
           JOIN conversions v ON v.program_id = cr.program_id AND v.id = cr.conversion_id
           JOIN referrers r ON r.program_id = cr.program_id AND r.id = cr.referrer_id
           WHERE cr.program_id = $1 GROUP BY r.external_id, v.type""", program_id)
    return [ReferrerTypeCredit(r["referrer"], r["type"], r["n"]) for r in rows]


async def funnel_reversals(conn: asyncpg.Connection, program_id: int) -> list[ReferrerCount]:
    """Refunds and chargebacks per referrer credited with the original conversion."""
    rows = await conn.fetch(
        """SELECT r.external_id AS referrer, count(*) AS n
           FROM conversions x
           JOIN conversions o ON o.program_id = x.program_id AND o.event_id = x.original_event_id
           JOIN credits cr ON cr.program_id = o.program_id AND cr.conversion_id = o.id
           JOIN referrers r ON r.program_id = cr.program_id AND r.id = cr.referrer_id
           WHERE x.program_id = $1 AND x.type IN ('refund', 'chargeback')
           GROUP BY r.external_id""", program_id)
    return [ReferrerCount(r["referrer"], r["n"]) for r in rows]


async def funnel_retained(conn: asyncpg.Connection, program_id: int) -> list[ReferrerCredit]:
    """Credit per referrer of purchases whose customer bought again 90 days or more later."""
    rows = await conn.fetch(
        """SELECT r.external_id AS referrer, sum(cr.credit) AS n
           FROM credits cr
           JOIN conversions first
             ON first.program_id = cr.program_id AND first.id = cr.conversion_id
           JOIN referrers r ON r.program_id = cr.program_id AND r.id = cr.referrer_id
           WHERE cr.program_id = $1 AND first.type = 'purchase'
             AND EXISTS (SELECT 1 FROM conversions later
                         WHERE later.program_id = first.program_id
                           AND later.customer_id = first.customer_id
                           AND later.type IN ('purchase', 'renewal')
                           AND later.occurred_at >= first.occurred_at + interval '90 days')
           GROUP BY r.external_id""", program_id)
    return [ReferrerCredit(r["referrer"], r["n"]) for r in rows]


async def funnel_unique_visitors(conn: asyncpg.Connection, program_id: int) -> int:
    n: int = await conn.fetchval(
        """SELECT count(DISTINCT visitor_id) FROM clicks
           WHERE program_id = $1 AND NOT is_bot AND NOT is_duplicate""", program_id)
    return n


# -- risk ------------------------------------------------------------------------------------
# Fraud scans (risk.py, facts.py, finance_model.py, backtest.py), and the identity graph that
# finance's evidence draws around a referrer (tracker/finance/evidence.py).

MAX_SHARE = 25  # an IP or device used by more accounts says nothing (a NAT, a cafe)
RING_KINDS = ("ring", "dense_block", "referral_cycle")


def _ip(table: str = "") -> str:
    """A row's IP as evidence of identity: none once retention has reduced it to its network
    (tracker.privacy), or everyone on that /24 would seem to share one address."""
    prefix = f"{table}." if table else ""
    return f"CASE WHEN {prefix}reduced THEN NULL ELSE host({prefix}ip) END"


@dataclass(frozen=True, slots=True)
class NamedProgram:
    id: int
    slug: str
    settings: dict[str, Any]


@dataclass(frozen=True, slots=True)
class UnscannedConversion:
    id: int
    customer_id: str
    referrers: tuple[str, ...]  # credited referrers' external ids


@dataclass(frozen=True, slots=True)
class ReferrerRow:
    id: int
    external_id: str
    email_hash: bytes | None


@dataclass(frozen=True, slots=True)
class Sighting:
    """A click of a visitor linked to a customer id."""

    customer_id: str
    visitor_id: str
    ip: str | None
    device: str | None  # fingerprint hex
    ts: datetime | None = None
    referrer_id: int | None = None  # whose link the click was on
    agent: str | None = None  # the User-Agent as sent


@dataclass(frozen=True, slots=True)
class ConversionRow:
    id: int
    customer_id: str
    email_hash: bytes | None
    occurred_at: datetime
    ip: str | None
    type: str
    amount: int
    referrer_ids: tuple[int, ...]  # credited referrers
    agent: str | None = None  # the User-Agent the conversion was reported with


@dataclass(frozen=True, slots=True)
class TouchRow:
    """An attributed click of a conversion."""

    conversion_id: int
    referrer_id: int
    click_id: str
    ts: datetime
    visitor_id: str | None
    ip: str | None
    device: str | None  # fingerprint hex
    is_bot: bool
    bot_rule: str | None
    is_anonymous: bool
    is_hosting: bool
    country: str | None
    query: str | None
    headerless: bool
    language: str | None
    browser: str | None
    source: str | None  # the Referer's host
    agent: str | None  # the User-Agent
    # Other visitors' clicks on the same link from the same IP shortly before (parallel arrays)
    before_at: list[float] | None = None
    before_visitors: list[str | None] | None = None
    before_agents: list[str | None] | None = None


@dataclass(frozen=True, slots=True)
class FullScanStats:
    """What the latest full scan measured of the whole program."""

    program_rate: float | None  # credited conversions per counted click
    headerless_share: float | None


@dataclass(frozen=True, slots=True)
class DecisionState:
    """How many rewards finance decided, and when last."""

    n: int
    last: datetime | None


@dataclass(frozen=True, slots=True)
class FinanceDecision:
    features: list[float]  # the conversion's anomaly feature row
    rejected: bool


@dataclass(frozen=True, slots=True)
class StoredRisk:
    event_id: str
    score: float
    reasons: list[dict[str, Any]]


async def programs_named(conn: asyncpg.Connection, slug: str | None) -> list[NamedProgram]:
    """Every program (or the one with this slug), by id."""
    rows = await conn.fetch(
        "SELECT id, slug, settings::text AS settings FROM programs "
        "WHERE $1::text IS NULL OR slug = $1 ORDER BY id", slug)
    return [NamedProgram(r["id"], r["slug"], json.loads(r["settings"])) for r in rows]


async def person_columns(conn: asyncpg.Connection, program_id: int, persons: list[str]
                         ) -> dict[str, set[Column]]:
    """The IPs and devices each person (customer id) was seen on: their visitors' clicks and
    the IPs their conversions were reported from."""
    rows = await conn.fetch(
        f"""SELECT cv.customer_id, {_ip('c')} AS ip, encode(c.fingerprint, 'hex') AS device
           FROM customer_visitors cv
           JOIN clicks c ON c.program_id = cv.program_id AND c.visitor_id = cv.visitor_id
           WHERE cv.program_id = $1 AND cv.customer_id = ANY($2::text[])
           UNION SELECT customer_id, {_ip()}, NULL FROM conversions
           WHERE program_id = $1 AND customer_id = ANY($2::text[]) AND ip IS NOT NULL""",
        program_id, persons)
    out: dict[str, set[Column]] = defaultdict(set)
    for r in rows:
        if r["ip"]:
            out[r["customer_id"]].add(("ip", r["ip"]))
        if r["device"]:
            out[r["customer_id"]].add(("device", r["device"]))
    return dict(out)


async def neighbours(conn: asyncpg.Connection, program_id: int, core: list[str]) -> set[str]:
    """People who share an IP or a device with one of `core` (IPs and devices used by more
    than MAX_SHARE people, a carrier NAT or a cafe, bind nobody)."""
    columns = {c for cs in (await person_columns(conn, program_id, core)).values() for c in cs}
    ips = sorted(v for k, v in columns if k == "ip")
    devices = sorted(bytes.fromhex(v) for k, v in columns if k == "device")
    holders = await conn.fetch(
        f"""SELECT DISTINCT cv.customer_id, {_ip('c')} AS ip, c.fingerprint FROM clicks c
           JOIN customer_visitors cv ON cv.program_id = c.program_id
                                    AND cv.visitor_id = c.visitor_id
           WHERE c.program_id = $1 AND (c.ip IN (SELECT unnest($2::inet[]))
                                        OR c.fingerprint IN (SELECT unnest($3::bytea[])))
           UNION SELECT customer_id, {_ip()}, NULL FROM conversions
           WHERE program_id = $1 AND ip IN (SELECT unnest($2::inet[]))""",
        program_id, ips, devices)
    by_column: dict[Column, set[str]] = defaultdict(set)
    for r in holders:
        if r["ip"]:
            by_column[("ip", r["ip"])].add(r["customer_id"])
        if r["fingerprint"]:
            by_column[("device", bytes(r["fingerprint"]).hex())].add(r["customer_id"])
    return {p for people in by_column.values() if len(people) <= MAX_SHARE for p in people}


async def unscanned_conversions(conn: asyncpg.Connection, program_id: int, limit: int
                                ) -> list[UnscannedConversion]:
    """The first `limit` attributed, credited-type conversions no scan has assessed yet."""
    rows = await conn.fetch(
        """SELECT c.id, c.customer_id,
                  coalesce(array_agg(r.external_id) FILTER (WHERE r.id IS NOT NULL), '{}')
                      AS referrers
           FROM conversions c
           LEFT JOIN credits cr ON cr.program_id = c.program_id AND cr.conversion_id = c.id
           LEFT JOIN referrers r ON r.program_id = cr.program_id AND r.id = cr.referrer_id
           WHERE c.program_id = $1 AND c.attributed_at IS NOT NULL AND c.type = ANY($2::text[])
             AND NOT EXISTS (SELECT 1 FROM conversion_risk k
                             WHERE k.program_id = c.program_id AND k.conversion_id = c.id)
           GROUP BY c.program_id, c.id ORDER BY c.id LIMIT $3""",
        program_id, list(CREDITED_TYPES), limit)
    return [UnscannedConversion(r["id"], r["customer_id"], tuple(r["referrers"])) for r in rows]


async def program_referrers(conn: asyncpg.Connection, program_id: int) -> list[ReferrerRow]:
    rows = await conn.fetch(
        "SELECT id, external_id, email_hash FROM referrers WHERE program_id = $1", program_id)
    return [ReferrerRow(r["id"], r["external_id"],
                        bytes(r["email_hash"]) if r["email_hash"] else None) for r in rows]


async def sightings(conn: asyncpg.Connection, program_id: int, persons: list[str] | None
                    ) -> list[Sighting]:
    """The clicks of the visitors linked to each customer id (of `persons`, or everyone's)."""
    only = "" if persons is None else "AND cv.customer_id = ANY($2::text[])"
    rows = await conn.fetch(
        f"""SELECT cv.customer_id, cv.visitor_id, {_ip('c')} AS ip,
                  encode(c.fingerprint, 'hex') AS device, c.ts, c.referrer_id,
                  c.user_agent AS agent
           FROM customer_visitors cv
           JOIN clicks c ON c.program_id = cv.program_id AND c.visitor_id = cv.visitor_id
           WHERE cv.program_id = $1 {only}""", program_id, *(() if persons is None else (persons,)))
    return [Sighting(*r) for r in rows]


async def attributed_conversions(conn: asyncpg.Connection, program_id: int,
                                 persons: list[str] | None = None,
                                 referrer_ids: list[int] | None = None, latest: int = 0
                                 ) -> list[ConversionRow]:
    """Attributed conversions with their credited referrers: all of them, or (given `persons`)
    those of these customers and the `latest` credited to each of `referrer_ids`."""
    args: tuple[object, ...] = (program_id,)
    only = ""
    if persons is not None:
        args = (program_id, persons, referrer_ids or [])
        only = f"""AND (c.customer_id = ANY($2::text[]) OR c.id IN (
            SELECT conversion_id FROM (
                SELECT conversion_id, row_number() OVER (
                    PARTITION BY referrer_id ORDER BY conversion_id DESC) AS latest
                FROM credits WHERE program_id = $1 AND referrer_id = ANY($3::bigint[])) w
            WHERE w.latest <= {int(latest)}))"""
    rows = await conn.fetch(
        f"""SELECT c.id, c.customer_id, c.email_hash, c.occurred_at, {_ip('c')} AS ip, c.type,
                  coalesce(c.amount, 0) AS amount, c.user_agent AS agent,
                  coalesce(array_agg(cr.referrer_id) FILTER (WHERE cr.referrer_id IS NOT NULL),
                           '{{}}') AS referrers
           FROM conversions c
           LEFT JOIN credits cr ON cr.program_id = c.program_id AND cr.conversion_id = c.id
           WHERE c.program_id = $1 AND c.attributed_at IS NOT NULL {only}
           GROUP BY c.program_id, c.id""", *args)
    return [ConversionRow(r["id"], r["customer_id"],
                          bytes(r["email_hash"]) if r["email_hash"] else None, r["occurred_at"],
                          r["ip"], r["type"], r["amount"], tuple(r["referrers"]), r["agent"])
            for r in rows]


async def touches(conn: asyncpg.Connection, program_id: int, conversion_ids: list[int] | None
                  ) -> list[TouchRow]:
    """The attributed clicks of these conversions (or of all), in each one's order.

    Headerless: no Accept-Language on a click whose data is there (an erased customer's
    clicks have lost their headers, and that says nothing of how they were made).
    """
    only = "" if conversion_ids is None else "AND t.conversion_id = ANY($2::bigint[])"
    rows = await conn.fetch(
        f"""SELECT t.conversion_id, t.referrer_id, c.click_id::text AS click_id, c.ts,
                  c.visitor_id, {_ip('c')} AS ip, encode(c.fingerprint, 'hex') AS device,
                  c.is_bot, c.bot_rule, c.is_anonymous, c.is_hosting, c.country, c.query,
                  (coalesce(c.accept_language, '') = ''
                   AND c.user_agent IS NOT NULL) AS headerless,
                  nullif(c.accept_language, '') AS language, c.ua_browser AS browser,
                  lower(substring(c.referer from '^[a-zA-Z][a-zA-Z0-9+.-]*://([^/:?#]+)'))
                      AS source, c.user_agent AS agent,
                  e.at AS before_at, e.visitors AS before_visitors, e.agents AS before_agents
           FROM touchpoints t
           JOIN clicks c ON c.program_id = t.program_id AND c.ts = t.ts
                        AND c.click_id = t.click_id
           LEFT JOIN LATERAL (
               -- Other visitors on the same referrer's link from the same IP within the lease
               -- window before this click, where the referrer is a customer too (whose own
               -- browser a household lease is recognised by).
               SELECT array_agg(extract(epoch FROM e.ts)::float8 ORDER BY e.ts) AS at,
                      array_agg(e.visitor_id ORDER BY e.ts) AS visitors,
                      array_agg(e.user_agent ORDER BY e.ts) AS agents
               FROM clicks e
               WHERE e.program_id = c.program_id AND e.referrer_id = c.referrer_id
                 AND e.ts >= c.ts - make_interval(secs => {float(LEASE_SECONDS)}) AND e.ts < c.ts
                 AND e.ip = c.ip AND e.visitor_id IS DISTINCT FROM c.visitor_id
                 AND NOT e.reduced AND NOT c.reduced
                 AND EXISTS (SELECT 1 FROM referrers r JOIN conversions x
                                 ON x.program_id = r.program_id AND x.customer_id = r.external_id
                             WHERE r.program_id = c.program_id AND r.id = c.referrer_id)
           ) e ON c.ip IS NOT NULL
           WHERE t.program_id = $1 {only} ORDER BY t.conversion_id, t.position""",
        program_id, *(() if conversion_ids is None else (conversion_ids,)))
    # The batch path: columns are selected in the field order, so no lookups by name.
    return [TouchRow(*r) for r in rows]


async def address_visitors(conn: asyncpg.Connection, program_id: int, ips: list[str]
                           ) -> dict[str, int]:
    """Distinct visitor cookies seen on each of these IPs: many on one address over time is a
    gateway (an office, a campus, a carrier NAT), not a home."""
    if not ips:
        return {}
    rows = await conn.fetch(
        """SELECT host(ip) AS ip, count(DISTINCT visitor_id) AS n FROM clicks
           WHERE program_id = $1 AND ip = ANY($2::inet[]) AND NOT reduced GROUP BY ip""",
        program_id, ips)
    return {r["ip"]: r["n"] for r in rows}


async def agent_customers(conn: asyncpg.Connection, program_id: int, agents: list[str]
                          ) -> tuple[dict[str, int], int]:
    """Customers whose conversions were reported with each of these User-Agents, and how many
    customers were reported with one at all: how rare a browser is in the program."""
    if not agents:
        return {}, 0
    rows = await conn.fetch(
        """SELECT user_agent, count(DISTINCT customer_id) AS n FROM conversions
           WHERE program_id = $1 AND user_agent = ANY($2::text[]) GROUP BY user_agent""",
        program_id, agents)
    total = await conn.fetchval(
        """SELECT count(DISTINCT customer_id) FROM conversions
           WHERE program_id = $1 AND user_agent IS NOT NULL""", program_id)
    return {r["user_agent"]: r["n"] for r in rows}, int(total or 0)


async def reversed_conversions(conn: asyncpg.Connection, program_id: int) -> frozenset[int]:
    """Conversions refunded or charged back."""
    rows = await conn.fetch(
        """SELECT o.id FROM conversions x
           JOIN conversions o ON o.program_id = x.program_id AND o.event_id = x.original_event_id
           WHERE x.program_id = $1 AND x.type IN ('refund', 'chargeback')""", program_id)
    return frozenset(r["id"] for r in rows)


async def referrer_clicks(conn: asyncpg.Connection, program_id: int,
                          referrers: list[str] | None) -> dict[str, int]:
    """Counted (not bot, not duplicate) clicks per referrer (of `referrers`, or every one)."""
    only = "" if referrers is None else "AND r.external_id = ANY($2::text[])"
    rows = await conn.fetch(
        f"""SELECT r.external_id, count(*) AS n FROM clicks c
           JOIN referrers r ON r.program_id = c.program_id AND r.id = c.referrer_id
           WHERE c.program_id = $1 AND NOT c.is_bot AND NOT c.is_duplicate {only}
           GROUP BY r.external_id""", program_id, *(() if referrers is None else (referrers,)))
    return {r["external_id"]: r["n"] for r in rows}


async def source_clicks(conn: asyncpg.Connection, program_id: int) -> dict[str, int]:
    """Counted (not bot, not duplicate) clicks per Referer host."""
    rows = await conn.fetch(
        """SELECT lower(substring(referer from '^[a-zA-Z][a-zA-Z0-9+.-]*://([^/:?#]+)'))
                      AS host, count(*) AS n
           FROM clicks WHERE program_id = $1 AND NOT is_bot AND NOT is_duplicate
             AND referer IS NOT NULL AND referer <> ''
           GROUP BY 1""", program_id)
    return {r["host"]: r["n"] for r in rows if r["host"]}


async def latest_full_scan(conn: asyncpg.Connection, program_id: int) -> FullScanStats | None:
    row = await conn.fetchrow(
        """SELECT (stats->>'program_rate')::float AS rate,
                  (stats->>'headerless_share')::float AS headerless FROM fraud_scans
           WHERE program_id = $1 AND mode = 'full' AND finished_at IS NOT NULL
           ORDER BY id DESC LIMIT 1""", program_id)
    return None if row is None else FullScanStats(row["rate"], row["headerless"])


async def credited_per_click(conn: asyncpg.Connection, program_id: int) -> float | None:
    """The program's credits per counted click, counted now (None: no counted click)."""
    credited: int = await conn.fetchval("SELECT count(*) FROM credits WHERE program_id = $1",
                                        program_id)
    counted: int = await conn.fetchval(
        "SELECT count(*) FROM clicks WHERE program_id = $1 AND NOT is_bot "
        "AND NOT is_duplicate", program_id)
    return credited / counted if counted else None


async def referrer_history(conn: asyncpg.Connection, program_id: int, referrers: list[str]
                           ) -> dict[str, tuple[int, float]]:
    """Each referrer's credited conversions and the time of the first (unix seconds)."""
    return {r["external_id"]: (r["n"], r["first"].timestamp()) for r in await conn.fetch(
        """SELECT f.external_id, count(*) AS n, min(c.occurred_at) AS first
           FROM credits cr
           JOIN referrers f ON f.program_id = cr.program_id AND f.id = cr.referrer_id
           JOIN conversions c ON c.program_id = cr.program_id AND c.id = cr.conversion_id
           WHERE cr.program_id = $1 AND f.external_id = ANY($2::text[])
           GROUP BY f.external_id""", program_id, referrers)}


async def stored_features(conn: asyncpg.Connection, program_id: int, limit: int
                          ) -> list[list[float]]:
    """The feature rows earlier scans stored, latest conversions first."""
    rows = await conn.fetch(
        """SELECT features FROM conversion_risk WHERE program_id = $1 AND features IS NOT NULL
           ORDER BY conversion_id DESC LIMIT $2""", program_id, limit)
    return [r["features"] for r in rows]


async def stored_rings(conn: asyncpg.Connection, program_id: int) -> list[Ring]:
    """The rings (RING_KINDS) earlier scans flagged."""
    rows = await conn.fetch(
        """SELECT kind, score, members::text AS members FROM fraud_flags
           WHERE program_id = $1 AND kind = ANY($2::text[])""", program_id, list(RING_KINDS))
    rings = []
    for r in rows:
        members = json.loads(r["members"])
        rings.append(Ring(
            r["kind"],
            frozenset((m["type"], m["id"]) for m in members
                      if m["type"] in ("referrer", "customer")),
            frozenset((m["type"], m["id"]) for m in members if m["type"] in ("ip", "device")),
            r["score"]))
    return rings


async def finance_decision_state(conn: asyncpg.Connection, program_id: int) -> DecisionState:
    """Finance's own decisions (not clearance's automatic ones)."""
    row = await conn.fetchrow(
        """SELECT count(*) AS n, max(decided_at) AS last FROM rewards
           WHERE program_id = $1 AND decided_by NOT LIKE 'system:%'
             AND status IN ('approved', 'paid', 'rejected')""", program_id)
    return DecisionState(int(row["n"]), row["last"])


async def finance_decisions(conn: asyncpg.Connection, program_id: int, limit: int
                            ) -> list[FinanceDecision]:
    """Finance's latest decisions (one per conversion) on conversions a scan has featured."""
    rows = await conn.fetch(
        """SELECT DISTINCT ON (r.conversion_id) k.features, r.status = 'rejected' AS rejected
           FROM rewards r JOIN conversion_risk k ON k.program_id = r.program_id
                                              AND k.conversion_id = r.conversion_id
           WHERE r.program_id = $1 AND r.decided_by NOT LIKE 'system:%'
             AND r.status IN ('approved', 'paid', 'rejected') AND k.features IS NOT NULL
           ORDER BY r.conversion_id DESC, r.decided_at DESC LIMIT $2""",
        program_id, limit)
    return [FinanceDecision(list(r["features"]), bool(r["rejected"])) for r in rows]


async def start_scan(conn: asyncpg.Connection, program_id: int, mode: str) -> int:
    scan_id: int = await conn.fetchval(
        "INSERT INTO fraud_scans (program_id, mode) VALUES ($1, $2) RETURNING id",
        program_id, mode)
    return scan_id


async def replace_findings(conn: asyncpg.Connection, program_id: int,
                           conversion_ids: list[int] | None, flags: list[tuple[object, ...]],
                           risks: list[tuple[object, ...]]) -> None:
    """Store a scan's flags and conversion risks: in place of all the program's (a full scan,
    `conversion_ids` None), or of these conversions' flags (an incremental scan).

    flags: (program_id, scan_id, kind, score, conversion_id, reasons, members, evidence);
    risks: (program_id, conversion_id, score, reasons, scan_id, features); JSON as text.
    """
    if conversion_ids is None:
        await conn.execute("DELETE FROM fraud_flags WHERE program_id = $1", program_id)
        await conn.execute("DELETE FROM conversion_risk WHERE program_id = $1", program_id)
    else:
        await conn.execute(
            "DELETE FROM fraud_flags WHERE program_id = $1 AND conversion_id = ANY($2)",
            program_id, conversion_ids)
    if flags:
        await conn.executemany(
            """INSERT INTO fraud_flags (program_id, scan_id, kind, score, conversion_id,
                   reasons, members, evidence)
               VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7::jsonb, $8::jsonb)""", flags)
    if risks:
        await conn.executemany(
            """INSERT INTO conversion_risk (program_id, conversion_id, score, reasons,
                   scan_id, features) VALUES ($1, $2, $3, $4::jsonb, $5, $6)
               ON CONFLICT (program_id, conversion_id) DO UPDATE SET
                   score = excluded.score, reasons = excluded.reasons,
                   scan_id = excluded.scan_id, features = excluded.features,
                   scanned_at = now()""", risks)


async def finish_scan(conn: asyncpg.Connection, scan_id: int, stats: dict[str, Any]) -> None:
    await conn.execute(
        "UPDATE fraud_scans SET finished_at = now(), stats = $2::jsonb WHERE id = $1",
        scan_id, json.dumps(stats))


async def flag_counts(conn: asyncpg.Connection) -> dict[str, int]:
    """Fraud flags per kind, over every program."""
    return {r["kind"]: r["n"] for r in await conn.fetch(
        "SELECT kind, count(*) AS n FROM fraud_flags GROUP BY kind")}


async def stored_risks(conn: asyncpg.Connection, program_id: int) -> list[StoredRisk]:
    """The latest scan's risk and reasons of each conversion, by conversion id."""
    rows = await conn.fetch(
        """SELECT c.event_id, r.score, r.reasons::text AS reasons FROM conversion_risk r
           JOIN conversions c ON c.program_id = r.program_id AND c.id = r.conversion_id
           WHERE r.program_id = $1 ORDER BY c.id""", program_id)
    return [StoredRisk(r["event_id"], r["score"], json.loads(r["reasons"])) for r in rows]
