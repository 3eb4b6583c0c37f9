"""SQL of scoring: async functions taking `conn` first, returning frozen dataclasses.

One section per caller: attribution and its reports (credits.py, reports.py), risk (risk.py).
"""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from fraud.operators import parts
from fraud.rings import Column, Ring
from fraud.signals import (
    EVEN_MIN_PAIRS,
    GAP_VARIANCE_FACTOR,
    REPEAT_LEASE_SECONDS,
    ClickRhythm,
    even_z_max,
    landing_source,
)
from tracker.formats import CREDITED_TYPES
from tracker.programs.queries import referrer_kind

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
    recent: bool  # arrived less than CLICK_WAIT ago


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


async def attribution_programs(conn: asyncpg.Connection, program_id: int | None
                               ) -> list[ProgramSettings]:
    """Every program (or the one named) with its settings."""
    rows = await conn.fetch(
        "SELECT id, settings::text AS settings FROM programs WHERE $1::bigint IS NULL OR id = $1",
        program_id,
    )
    return [ProgramSettings(r["id"], json.loads(r["settings"])) for r in rows]


# A conversion naming a click that is not stored yet waits this long for it (attribution
# leaves it for a later run): the click may still be in a tracker's journal, flushed within a
# second normally, replayed after a database outage or a failover, or when a crashed host
# comes back. A click id that no tracker answered is then ignored, as before.
CLICK_WAIT = "10 minutes"


async def pending_conversions(conn: asyncpg.Connection, program_id: int, limit: int,
                              after: tuple[datetime, int] | None = None
                              ) -> list[PendingConversion]:
    """The next `limit` conversions not yet attributed, oldest first (after the position
    `after`, (occurred_at, id), when given: past those left waiting)."""
    rows = await conn.fetch(
        f"""SELECT id, type, customer_id, occurred_at, click_id::text AS click_id, visitor_id,
                   referral_code, received_at > now() - interval '{CLICK_WAIT}' AS recent
            FROM conversions WHERE program_id = $1 AND attributed_at IS NULL
              AND ($3::timestamptz IS NULL OR (occurred_at, id) > ($3, $4::bigint))
            ORDER BY occurred_at, id LIMIT $2""",
        program_id, limit, *(after or (None, None)),
    )
    return [PendingConversion(*r) for r in rows]


async def click_visitors(conn: asyncpg.Connection, program_id: int,
                         named: list[tuple[str, datetime | None]]) -> dict[str, str | None]:
    """The visitor of each click named (click id -> visitor id), given with the millisecond
    its UUIDv7 id was made at (None for another kind of id).

    `clicks` has no index on click_id alone, and `click_id = ANY($2)` with an array parameter
    compares every row with every id. A redirect's click id carries its click's millisecond
    (tracker/clicks/journal.py), so most are found through the primary key (program, ts,
    click id); the others (other kinds of id, or a ts that does not match) in one hash join
    over the program's clicks."""
    found: dict[str, str | None] = {}
    timed = [(cid, at) for cid, at in named if at is not None]
    if timed:
        found = {r["click_id"]: r["visitor_id"] for r in await conn.fetch(
            """SELECT k.click_id::text AS click_id, k.visitor_id
               FROM unnest($2::uuid[], $3::timestamptz[]) AS n(click_id, at)
               JOIN clicks k ON k.program_id = $1 AND k.click_id = n.click_id
                 AND k.ts >= n.at AND k.ts < n.at + interval '1 millisecond'""",
            program_id, [cid for cid, _ in timed], [at for _, at in timed])}
    rest = sorted({cid for cid, _ in named} - found.keys())
    if rest:
        found.update({r["click_id"]: r["visitor_id"] for r in await conn.fetch(
            """SELECT k.click_id::text AS click_id, k.visitor_id
               FROM unnest($2::uuid[]) AS n(click_id)
               JOIN clicks k ON k.program_id = $1 AND k.click_id = n.click_id""",
            program_id, rest)})
    return found


async def known_visitors(conn: asyncpg.Connection, program_id: int, customers: list[str]
                         ) -> list[CustomerVisitor]:
    """The visitors earlier conversions of these customers reached."""
    rows = await conn.fetch(
        """SELECT customer_id, visitor_id FROM customer_visitors
           WHERE program_id = $1 AND customer_id = ANY($2::text[])""", program_id, customers)
    return [CustomerVisitor(*r) for r in rows]


async def add_customer_visitors(conn: asyncpg.Connection, program_id: int,
                                links: list[CustomerVisitor]) -> None:
    await conn.execute(
        """INSERT INTO customer_visitors (program_id, customer_id, visitor_id)
           SELECT $1, * FROM unnest($2::text[], $3::text[]) ON CONFLICT DO NOTHING""",
        program_id, [link.customer_id for link in links], [link.visitor_id for link in links])


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


async def attributed_count(conn: asyncpg.Connection, program_id: int) -> int:
    """How many of the program's conversions are attributed."""
    n: int = await conn.fetchval(
        "SELECT count(*) FROM conversions WHERE program_id = $1 AND attributed_at IS NOT NULL",
        program_id)
    return n


async def analyze_attribution_tables(conn: asyncpg.Connection) -> None:
    # ANALYZE needs the tables' owner: the application asks it through refguard_analyze.
    await conn.execute("SELECT refguard_analyze('touchpoints', 'credits', 'customer_visitors', "
                       "'conversions')")


async def converted_paths(conn: asyncpg.Connection, program_id: int) -> list[tuple[int, ...]]:
    """The referrers of each attributed credited conversion's stored touchpoints, in order
    (touchpoints left on a conversion not attributed, which a run is about to replace, are
    not counted)."""
    rows = await conn.fetch(
        """SELECT array_agg(t.referrer_id ORDER BY t.position) AS path
           FROM touchpoints t JOIN conversions c
             ON c.program_id = t.program_id AND c.id = t.conversion_id
           WHERE t.program_id = $1 AND c.type = ANY($2::text[])
             AND c.attributed_at IS NOT NULL
           GROUP BY t.conversion_id""",
        program_id, list(CREDITED_TYPES),
    )
    return [tuple(r["path"]) for r in rows]


async def lost_paths(conn: asyncpg.Connection, program_id: int) -> dict[str, tuple[int, ...]]:
    """The referrers clicked by each visitor no customer is known by, in click order (visitor
    id -> path)."""
    rows = await conn.fetch(
        """SELECT c.visitor_id, array_agg(c.referrer_id ORDER BY c.ts, c.click_id) AS path
           FROM clicks c
           WHERE c.program_id = $1 AND NOT c.is_bot AND NOT c.is_duplicate
             AND c.visitor_id IS NOT NULL
             AND NOT EXISTS (SELECT 1 FROM customer_visitors v
                             WHERE v.program_id = c.program_id AND v.visitor_id = c.visitor_id)
           GROUP BY c.visitor_id""",
        program_id,
    )
    return {r["visitor_id"]: tuple(r["path"]) for r in rows}


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


# -- risk ------------------------------------------------------------------------------------
# Fraud scans (risk.py, facts.py, finance_model.py, backtest.py), and the identity graph that
# finance's evidence draws around a referrer (tracker/finance/evidence.py).

MAX_SHARE = 25  # an IP or device used by more accounts says nothing (a NAT, a cafe)
RING_KINDS = ("ring", "dense_block", "referral_cycle", "collusion_pool", "sleeper_cell")


def _visitor_clicks(scoped: bool) -> str:
    """`customer_visitors cv` joined to its visitors' clicks `c`. For a few customers (an
    incremental scan's) each visitor's clicks are read through the visitor index: a plain join
    is planned as a hash join over every click of the program, as for a full scan, which needs
    it (OFFSET 0 keeps the lateral subquery from being flattened back into that join)."""
    if scoped:
        return """customer_visitors cv CROSS JOIN LATERAL (
                      SELECT * FROM clicks k
                      WHERE k.program_id = cv.program_id AND k.visitor_id = cv.visitor_id
                      OFFSET 0) c"""
    return """customer_visitors cv
              JOIN clicks c ON c.program_id = cv.program_id AND c.visitor_id = cv.visitor_id"""


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


@dataclass(frozen=True, slots=True)
class FullScanStats:
    """What the latest full scan measured of the whole program."""

    program_rate: float | None  # credited conversions per counted click
    headerless_share: float | None
    customer_rate: float | None = None  # converting customers (each once) per counted click


@dataclass(frozen=True, slots=True)
class DecisionState:
    """How many rewards finance decided, and when last."""

    n: int
    last: datetime | None


@dataclass(frozen=True, slots=True)
class FinanceDecision:
    features: list[float]  # the conversion's feature row (fraud.signals.features)
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
           FROM {_visitor_clicks(True)}
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
    """People who share an IP, a device or a visitor cookie with one of `core` (IPs, devices and
    cookies used by more than MAX_SHARE people, a carrier NAT or a cafe, bind nobody)."""
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
    # A cookie's accounts, counted up to MAX_SHARE + 1 through its index (a merchant's
    # placeholder visitor id behind every customer must not be read whole).
    for r in await conn.fetch(
            f"""SELECT o.customer_id, o.visitor_id
               FROM (SELECT DISTINCT visitor_id FROM customer_visitors
                     WHERE program_id = $1 AND customer_id = ANY($2::text[])) m
               JOIN customer_visitors o ON o.program_id = $1 AND o.visitor_id = m.visitor_id
               WHERE (SELECT count(*) FROM (
                          SELECT 1 FROM customer_visitors x
                          WHERE x.program_id = $1 AND x.visitor_id = m.visitor_id
                          LIMIT {MAX_SHARE + 1}) k) <= {MAX_SHARE}""",
            program_id, core):
        by_column[("visitor", r["visitor_id"])].add(r["customer_id"])
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


async def assessed(conn: asyncpg.Connection, program_id: int, conversion_ids: list[int]
                   ) -> set[int]:
    """Those of the conversions a scan has stored a risk for."""
    return {r["conversion_id"] for r in await conn.fetch(
        """SELECT conversion_id FROM conversion_risk
           WHERE program_id = $1 AND conversion_id = ANY($2::bigint[])""",
        program_id, conversion_ids)}


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
           FROM {_visitor_clicks(persons is not None)}
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
    # Some conversions' clicks (an incremental scan's) through the clicks' primary key, one by
    # one: a plain join is planned as a hash join over every click of the program (OFFSET 0
    # keeps the lateral subquery from being flattened back into it); a full scan needs that.
    join = ("""JOIN clicks c ON c.program_id = t.program_id AND c.ts = t.ts
                           AND c.click_id = t.click_id""" if conversion_ids is None else
            """CROSS JOIN LATERAL (
                   SELECT * FROM clicks k
                   WHERE k.program_id = t.program_id AND k.ts = t.ts AND k.click_id = t.click_id
                   OFFSET 0) c""")
    rows = await conn.fetch(
        f"""SELECT t.conversion_id, t.referrer_id, c.click_id::text AS click_id, c.ts,
                  c.visitor_id, {_ip('c')} AS ip, encode(c.fingerprint, 'hex') AS device,
                  c.is_bot, c.bot_rule, c.is_anonymous, c.is_hosting, c.country, c.query,
                  (coalesce(c.accept_language, '') = ''
                   AND c.user_agent IS NOT NULL) AS headerless,
                  nullif(c.accept_language, '') AS language, c.ua_browser AS browser,
                  lower(substring(c.referer from '^[a-zA-Z][a-zA-Z0-9+.-]*://([^/:?#]+)'))
                      AS source, c.user_agent AS agent
           FROM touchpoints t
           {join}
           WHERE t.program_id = $1 {only} ORDER BY t.conversion_id, t.position""",
        program_id, *(() if conversion_ids is None else (conversion_ids,)))
    # The batch path: columns are selected in the field order, so no lookups by name.
    return [TouchRow(*r) for r in rows]


@dataclass(frozen=True, slots=True)
class EarlierVisit:
    """Another visitor's click on the same referrer's link from the same address shortly
    before a click asked about (a household lease starts with one)."""

    index: int  # which of the clicks asked about (its place in the list, from 0)
    at: float  # epoch seconds
    visitor_id: str | None
    agent: str | None


async def earlier_visits(conn: asyncpg.Connection, program_id: int,
                         clicks: list[tuple[int, str, datetime, str | None]]
                         ) -> list[EarlierVisit]:
    """For each click (referrer id, IP, time, visitor cookie): the other visitors'
    clicks on the same referrer's link from the same IP within REPEAT_LEASE_SECONDS before
    it, in time order (a household lease, LEASE_SECONDS; a repeated one, the longer window).

    One join of the clicks asked about, passed as arrays so that the planner knows how many
    there are, with the program's clicks: for a full scan's every first touch, a hash join
    over the clicks once; one index look-up per click instead reads every click of the
    referrer's hour from the heap to test its address (most of a full scan's load)."""
    if not clicks:
        return []
    refs, ips, ats, visitors = (list(column) for column in zip(*clicks, strict=True))
    rows = await conn.fetch(
        f"""SELECT q.k - 1, extract(epoch FROM e.ts)::float8, e.visitor_id, e.user_agent
           FROM unnest($2::bigint[], $3::text[], $4::timestamptz[], $5::text[]) WITH ORDINALITY
                AS q(referrer_id, ip, ts, visitor_id, k)
           JOIN clicks e ON e.program_id = $1 AND e.referrer_id = q.referrer_id
                AND e.ip = q.ip::inet AND e.visitor_id IS DISTINCT FROM q.visitor_id
                AND e.ts >= q.ts - make_interval(secs => {float(REPEAT_LEASE_SECONDS)})
                AND e.ts < q.ts
           WHERE NOT e.reduced ORDER BY 1, 2""",
        program_id, refs, ips, ats, visitors)
    return [EarlierVisit(*r) for r in rows]


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


async def browser_visits(conn: asyncpg.Connection, program_id: int,
                         groups: list[tuple[int, str, str]]
                         ) -> dict[tuple[int, str, str], list[tuple[float, str]]]:
    """Each visitor cookie's first visit on each (referrer's link, IP, User-Agent): where two
    new customers came through one link from one address on one browser, whose browser it
    was before them (fraud.signals.repeat_lease_reasons, private_window_reasons). Only those
    groups are asked for: the program's clicks from the groups' addresses read once (hashed, as
    a set, while scanning them: few clicks come from one address), then joined to the groups.
    (Joined on the referrer alone, the planner walked a referrer's clicks once per group: a
    popular link's 100,000 clicks for each of its hundred groups; read by the groups'
    referrers, a popular link's clicks were all sorted, on disk, to be merged with them.)"""
    if not groups:
        return {}
    rows = await conn.fetch(
        """WITH k AS MATERIALIZED (
               SELECT c.referrer_id, c.ip, c.user_agent, c.visitor_id, c.ts FROM clicks c
               WHERE c.program_id = $1 AND c.ip IN (SELECT unnest($5::inet[]))
                     AND NOT c.reduced AND c.visitor_id IS NOT NULL)
           SELECT k.referrer_id, host(k.ip) AS ip, k.user_agent, k.visitor_id,
                  extract(epoch FROM min(k.ts))::float8 AS at
           FROM k JOIN unnest($2::bigint[], $3::inet[], $4::text[]) AS g(ref, ip, agent)
                ON k.referrer_id = g.ref AND k.ip = g.ip AND k.user_agent = g.agent
           GROUP BY 1, 2, 3, 4""",
        program_id, [g[0] for g in groups], [g[1] for g in groups], [g[2] for g in groups],
        sorted({g[1] for g in groups}))
    out: dict[tuple[int, str, str], list[tuple[float, str]]] = defaultdict(list)
    for r in rows:
        out[(r["referrer_id"], r["ip"], r["user_agent"])].append((r["at"], r["visitor_id"]))
    return dict(out)


async def returning_visitors(conn: asyncpg.Connection, program_id: int,
                             cookies: list[tuple[int, str]]) -> set[tuple[int, str]]:
    """Of these (referrer id, visitor cookie) pairs, those whose cookie opened that referrer's
    link two or more times (counted clicks): a browser that keeps coming back to a link.
    Through the clicks' (program, visitor, time) index, for the few cookies asked about."""
    if not cookies:
        return set()
    rows = await conn.fetch(
        """SELECT c.referrer_id, c.visitor_id
           FROM clicks c JOIN unnest($2::bigint[], $3::text[]) AS q(ref, visitor)
                ON c.program_id = $1 AND c.visitor_id = q.visitor AND c.referrer_id = q.ref
           WHERE NOT c.reduced GROUP BY 1, 2 HAVING count(*) >= 2""",
        program_id, [r for r, _v in cookies], [v for _r, v in cookies])
    return {(r["referrer_id"], r["visitor_id"]) for r in rows}


async def site_browser_visitors(conn: asyncpg.Connection, program_id: int,
                                sites: list[tuple[str, str]]) -> dict[tuple[str, str], int]:
    """Distinct visitor cookies seen with each (IP, User-Agent): many on one address with one
    browser is a site's standard setup (an office's computers) or a popular phone behind a
    NAT, not one person's browser."""
    if not sites:
        return {}
    rows = await conn.fetch(
        """SELECT host(c.ip) AS ip, c.user_agent, count(DISTINCT c.visitor_id) AS n
           FROM clicks c JOIN unnest($2::inet[], $3::text[]) AS s(ip, agent)
                ON c.ip = s.ip AND c.user_agent = s.agent
           WHERE c.program_id = $1 AND NOT c.reduced GROUP BY 1, 2""",
        program_id, [ip for ip, _a in sites], [a for _ip, a in sites])
    return {(r["ip"], r["user_agent"]): r["n"] for r in rows}


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


async def reversed_conversions(conn: asyncpg.Connection, program_id: int
                               ) -> tuple[frozenset[int], frozenset[int]]:
    """Conversions refunded or charged back, and of those the ones charged back (a card's
    owner disputed the payment; a refund is the customer changing their mind): one pass."""
    rows = await conn.fetch(
        """SELECT o.id, bool_or(x.type = 'chargeback') AS charged_back FROM conversions x
           JOIN conversions o ON o.program_id = x.program_id AND o.event_id = x.original_event_id
           WHERE x.program_id = $1 AND x.type IN ('refund', 'chargeback')
           GROUP BY o.id""", program_id)
    return (frozenset(r["id"] for r in rows),
            frozenset(r["id"] for r in rows if r["charged_back"]))


async def referrer_clicks(conn: asyncpg.Connection, program_id: int
                          ) -> dict[str, ClickRhythm]:
    """Counted (not bot, not duplicate) clicks per referrer, with their spread over UTC days
    (fraud.signals.ClickRhythm): one pass over the program's clicks, full scans only."""
    rows = await conn.fetch(
        """SELECT r.external_id, sum(d.n)::bigint AS n, max(d.day) - min(d.day) + 1 AS days,
                  sum(d.n * d.n)::bigint AS squares
           FROM (SELECT c.referrer_id, (c.ts AT TIME ZONE 'UTC')::date AS day, count(*) AS n
                 FROM clicks c
                 WHERE c.program_id = $1 AND NOT c.is_bot AND NOT c.is_duplicate
                 GROUP BY 1, 2) d
           JOIN referrers r ON r.program_id = $1 AND r.id = d.referrer_id
           GROUP BY r.external_id""", program_id)
    return {r["external_id"]: ClickRhythm(r["n"], r["days"], r["squares"]) for r in rows}


async def counted_clicks(conn: asyncpg.Connection, program_id: int, referrers: list[str]
                         ) -> dict[str, int]:
    """Counted (not bot, not duplicate) clicks of each of these referrers (those with any),
    read through the referrer's index: an incremental scan's count, which neither reads the
    other referrers' clicks nor spreads them over days."""
    rows = await conn.fetch(
        """SELECT r.external_id, count(*) AS n
           FROM referrers r
           JOIN clicks c ON c.program_id = r.program_id AND c.referrer_id = r.id
           WHERE r.program_id = $1 AND r.external_id = ANY($2::text[])
             AND NOT c.is_bot AND NOT c.is_duplicate
           GROUP BY r.external_id""", program_id, referrers)
    return {r["external_id"]: r["n"] for r in rows}


@dataclass(frozen=True, slots=True)
class GapEvenness:
    pairs: int  # triples of consecutive counted clicks
    spread: float  # sum over them of |first gap / both gaps - 1/2|
    # Per UTC day (days since the epoch) of the triple's middle click: (day, pairs, spread);
    # of the referrers whose clicks may be even (fraud.signals.even_z_max) only.
    days: tuple[tuple[int, int, float], ...] = ()


async def click_evenness(conn: asyncpg.Connection, program_id: int) -> dict[str, GapEvenness]:
    """Per referrer, how even the gaps between its consecutive counted clicks are
    (fraud.signals.ClickRhythm.even_p_value): over each three consecutive clicks (gaps a and
    b, both positive), the count and the sum of |a / (a + b) - 1/2|, in all and, for the
    referrers whose clicks may be even enough for an even_clicks finding (fraud.signals.
    even_z_max), per UTC day of the middle click (where the clicks were paced: fraud.signals.
    paced_stretch; the others' days are never told). One pass over the program's counted
    clicks in (referrer, time) order: full scans only. The totals are summed in day order,
    as the days' would be."""
    # The counted clicks read in table order, then sorted: read in (referrer, time) order
    # through the index, every click is a random read of the heap (the planner takes the
    # index for cheap, its leading program_id being in table order).
    rows = await conn.fetch(
        """WITH k AS MATERIALIZED (
               SELECT c.referrer_id, date_part('epoch', c.ts) AS at FROM clicks c
               WHERE c.program_id = $1 AND NOT c.is_bot AND NOT c.is_duplicate),
           e AS (
               SELECT g.referrer_id, floor(g.at / 86400)::int AS day, count(*) AS pairs,
                      sum(abs(g.a / (g.a + g.b) - 0.5)) AS spread
               FROM (SELECT k.referrer_id, k.at, k.at - lag(k.at) OVER w AS a,
                            lead(k.at) OVER w - k.at AS b
                     FROM k WINDOW w AS (PARTITION BY k.referrer_id ORDER BY k.at)) g
               WHERE g.a > 0 AND g.b > 0
               GROUP BY 1, 2),
           t AS (
               SELECT e.referrer_id, e.day, e.pairs, e.spread,
                      row_number() OVER d AS nth, sum(e.pairs) OVER d AS total_pairs,
                      sum(e.spread) OVER d AS total_spread
               FROM e WINDOW d AS (PARTITION BY e.referrer_id ORDER BY e.day
                                   ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING))
           SELECT r.external_id, t.day, t.pairs, t.spread, t.total_pairs::bigint AS total_pairs,
                  t.total_spread, t.even
           FROM (SELECT t.*, t.total_pairs >= $2::bigint
                             AND t.total_spread / t.total_pairs::float8 <= 0.25 + $3::float8
                                 * sqrt($4::float8 / (48.0 * t.total_pairs::float8)) AS even
                 FROM t) t
           JOIN referrers r ON r.program_id = $1 AND r.id = t.referrer_id
           WHERE t.even OR t.nth = 1
           ORDER BY r.external_id, t.day""",
        program_id, EVEN_MIN_PAIRS, even_z_max(), GAP_VARIANCE_FACTOR)
    totals: dict[str, tuple[int, float]] = {}
    days: dict[str, list[tuple[int, int, float]]] = {}
    for r in rows:
        ref = r["external_id"]
        totals.setdefault(ref, (r["total_pairs"], r["total_spread"]))
        if r["even"]:
            days.setdefault(ref, []).append((r["day"], r["pairs"], r["spread"]))
    return {ref: GapEvenness(pairs, spread, tuple(days.get(ref, ())))
            for ref, (pairs, spread) in totals.items()}


async def source_clicks(conn: asyncpg.Connection, program_id: int
                        ) -> dict[str, dict[str, int]]:
    """Counted (not bot, not duplicate) clicks per traffic source (fraud.signals.
    traffic_source: the Referer's host, or without one the names of the landing's parameters)
    and per referrer: {source: {referrer: clicks}}."""
    rows = await conn.fetch(
        """SELECT r.external_id, s.host, s.names, s.n
           FROM (SELECT h.referrer_id, h.host,
                        CASE WHEN h.host IS NULL THEN regexp_replace(h.query, '=[^&]*', '', 'g')
                        END AS names, count(*) AS n
                 FROM (SELECT c.referrer_id, c.query,
                              lower(substring(c.referer
                                              from '^[a-zA-Z][a-zA-Z0-9+.-]*://([^/:?#]+)'))
                                  AS host
                       FROM clicks c
                       WHERE c.program_id = $1 AND NOT c.is_bot AND NOT c.is_duplicate
                         AND (coalesce(c.referer, '') <> '' OR coalesce(c.query, '') <> '')
                      ) h
                 GROUP BY 1, 2, 3) s
           JOIN referrers r ON r.program_id = $1 AND r.id = s.referrer_id""", program_id)
    out: dict[str, dict[str, int]] = {}
    for r in rows:
        source = r["host"] or landing_source(r["names"])
        if source:
            by_referrer = out.setdefault(source, {})
            by_referrer[r["external_id"]] = by_referrer.get(r["external_id"], 0) + r["n"]
    return out


async def latest_full_scan(conn: asyncpg.Connection, program_id: int) -> FullScanStats | None:
    row = await conn.fetchrow(
        """SELECT (stats->>'program_rate')::float AS rate,
                  (stats->>'headerless_share')::float AS headerless,
                  (stats->>'customer_rate')::float AS customer_rate FROM fraud_scans
           WHERE program_id = $1 AND mode = 'full' AND finished_at IS NOT NULL
           ORDER BY id DESC LIMIT 1""", program_id)
    return None if row is None else FullScanStats(row["rate"], row["headerless"],
                                                  row["customer_rate"])


async def credited_per_click(conn: asyncpg.Connection, program_id: int) -> float | None:
    """The program's credits per counted click, counted now (None: no counted click)."""
    credited: int = await conn.fetchval("SELECT count(*) FROM credits WHERE program_id = $1",
                                        program_id)
    counted: int = await conn.fetchval(
        "SELECT count(*) FROM clicks WHERE program_id = $1 AND NOT is_bot "
        "AND NOT is_duplicate", program_id)
    return credited / counted if counted else None


@dataclass(frozen=True, slots=True)
class ReferrerCredits:
    """A referrer's credited conversions: how many, the time of the first (unix seconds), and
    their customers, each counted once."""

    conversions: int
    first: float
    customers: int


async def referrer_credits(conn: asyncpg.Connection, program_id: int, referrers: list[str]
                           ) -> dict[str, ReferrerCredits]:
    """Each of these referrers' credited conversions (ReferrerCredits), in one pass over their
    credits (an incremental scan's referrer history and converting customers)."""
    return {r["external_id"]: ReferrerCredits(r["n"], r["first"].timestamp(), r["customers"])
            for r in await conn.fetch(
        """SELECT f.external_id, count(*) AS n, min(c.occurred_at) AS first,
                  count(DISTINCT c.customer_id) AS customers
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
    """The rings (RING_KINDS) earlier scans flagged, with the evidence they were flagged on."""
    rows = await conn.fetch(
        """SELECT kind, score, members::text AS members, evidence::text AS evidence
           FROM fraud_flags
           WHERE program_id = $1 AND kind = ANY($2::text[])""", program_id, list(RING_KINDS))
    rings = []
    for r in rows:
        members = json.loads(r["members"])
        rings.append(Ring(
            r["kind"],
            frozenset((m["type"], m["id"]) for m in members
                      if m["type"] in ("referrer", "customer")),
            frozenset((m["type"], m["id"]) for m in members
                      if m["type"] in ("ip", "device", "cookie", "agent")),
            r["score"], json.loads(r["evidence"]) if r["evidence"] else {}))
    # A review flag merged from several findings of one operator: decided on its parts.
    return [part for ring in rings for part in parts(ring)]


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


# -- economics and breakdowns ----------------------------------------------------------------
# What works (issue 16): tracker/scoring/economics.py. A *paying* conversion is a purchase or
# a renewal with an amount and a currency; its net is its amount less the refunds and
# chargebacks naming it (one without an amount takes back the whole purchase). A customer's
# *first payment* is their earliest paying conversion; they are *referred* when a conversion
# of theirs at or before it carries attribution credit, and their *referrer* is the one with
# the largest credit on the earliest such conversion (ties: the lowest referrer id).

PAID_TYPES = ("purchase", "renewal")

_WINDOW = "($2::timestamptz IS NULL OR {t} >= $2) AND ($3::timestamptz IS NULL OR {t} < $3)"

_FIRSTS = """
firsts AS (
    SELECT DISTINCT ON (customer_id) customer_id, occurred_at AS first_at, currency
    FROM conversions
    WHERE program_id = $1 AND type IN ('purchase', 'renewal') AND amount IS NOT NULL
      AND currency IS NOT NULL
    ORDER BY customer_id, occurred_at, id)"""

# Net money of each paying conversion, and refunds or chargebacks naming none (netted at their
# own time, against their own customer).
_NET = """
net AS (
    SELECT c.customer_id, c.occurred_at, c.currency, true AS paying, c.amount AS gross,
           coalesce(sum(coalesce(x.amount, c.amount)) FILTER (WHERE x.type = 'refund'), 0)
               AS refunds,
           coalesce(sum(coalesce(x.amount, c.amount)) FILTER (WHERE x.type = 'chargeback'), 0)
               AS chargebacks
    FROM conversions c
    LEFT JOIN conversions x ON x.program_id = c.program_id AND x.original_event_id = c.event_id
                           AND x.type IN ('refund', 'chargeback')
    WHERE c.program_id = $1 AND c.type IN ('purchase', 'renewal') AND c.amount IS NOT NULL
      AND c.currency IS NOT NULL
    GROUP BY c.program_id, c.id
    UNION ALL
    SELECT customer_id, occurred_at, currency, false, 0,
           CASE WHEN type = 'refund' THEN amount ELSE 0 END,
           CASE WHEN type = 'chargeback' THEN amount ELSE 0 END
    FROM conversions
    WHERE program_id = $1 AND type IN ('refund', 'chargeback') AND original_event_id IS NULL
      AND amount IS NOT NULL AND currency IS NOT NULL)"""


@dataclass(frozen=True, slots=True)
class RewardMoney:
    """Rewards of one beneficiary side, currency, status and referrer kind (of conversions in
    the window) and the month of their conversion (YYYY-MM, program time zone): how many, their
    amounts and what clawbacks took back of them."""

    month: str
    beneficiary: str
    currency: str
    status: str
    kind: str
    n: int
    amount: int
    clawed_back: int  # positive: the clawback entries' amounts negated


@dataclass(frozen=True, slots=True)
class BreakdownRow:
    keys: tuple[Any, ...]
    clicks: int
    visitors: int


@dataclass(frozen=True, slots=True)
class BreakdownConversions:
    keys: tuple[Any, ...]
    currency: str | None
    conversions: int
    net: int


@dataclass(frozen=True, slots=True)
class CustomerGroup:
    """Customers whose first payment is in the window, of one segment (referred or not, the
    referrer's advocate kind) and first-payment currency."""

    referred: bool
    kind: str | None
    currency: str
    customers: int
    eligible_90d: int  # first payment at least 90 days before as_of
    retained_90d: int
    eligible_365d: int
    net_90d: int  # their net in `currency` within 90 days of the first payment (eligible ones)
    net_365d: int


@dataclass(frozen=True, slots=True)
class MoneyGroup:
    """Paying conversions in the window of one segment's customers, in one currency."""

    referred: bool
    kind: str | None
    currency: str
    gross: int
    refunds: int
    chargebacks: int


@dataclass(frozen=True, slots=True)
class MonthMoney:
    """Paying conversions in the window of referred (or other) customers in one currency, by
    the month (YYYY-MM, program time zone) the conversion occurred."""

    month: str
    referred: bool
    currency: str
    gross: int
    refunds: int
    chargebacks: int


@dataclass(frozen=True, slots=True)
class MonthGroup:
    """Customers by the month (in the program's time zone) of their first payment."""

    month: str  # YYYY-MM
    customers: int  # all of them, whatever the window
    acquired: int  # those in the window
    referred: int  # referred ones in the window
    referrers: int  # distinct referrers of those


async def customer_groups(conn: asyncpg.Connection, program_id: int, *, since: datetime | None,
                          until: datetime | None, currency: str | None, tz: str
                          ) -> tuple[list[CustomerGroup], list[MoneyGroup], list[MonthGroup],
                                     list[MonthMoney]]:
    """The customer side of the economics in one pass over the conversions, aggregated in
    PostgreSQL: per (customer, currency, month of payment) first, then by grouping sets (a
    customer counted once, on the row of their first payment's month; money summed over
    every row, also by the month it was paid in, for the series)."""
    window = _WINDOW.format(t="n.occurred_at")
    acquired = _WINDOW.format(t="first_at")
    rows = await conn.fetch(
        f"""WITH {_FIRSTS}, {_NET},
           acquired AS (
               SELECT DISTINCT ON (c.customer_id) c.customer_id, cr.referrer_id
               FROM firsts f
               JOIN conversions c ON c.program_id = $1 AND c.customer_id = f.customer_id
                                 AND c.occurred_at <= f.first_at
               JOIN credits cr ON cr.program_id = c.program_id AND cr.conversion_id = c.id
               ORDER BY c.customer_id, c.occurred_at, c.id, cr.credit DESC, cr.referrer_id),
           kinds AS (SELECT r.id, {referrer_kind()} AS kind FROM referrers r
                     WHERE r.program_id = $1),
           as_of AS (SELECT max(occurred_at) AS at FROM conversions WHERE program_id = $1),
           per AS (
               SELECT n.customer_id, n.currency, f.first_at, f.currency AS first_currency,
                      a.referrer_id, k.kind, n.currency = f.currency AS own,
                      date_trunc('month', n.occurred_at AT TIME ZONE $5) AS pay_month,
                      bool_or(bool_or(n.paying AND n.occurred_at >= f.first_at
                                                                  + interval '90 days'))
                          OVER (PARTITION BY n.customer_id) AS retained,
                      count(*) FILTER (WHERE {window}) AS in_window,
                      coalesce(sum(n.gross) FILTER (WHERE {window}), 0) AS gross,
                      coalesce(sum(n.refunds) FILTER (WHERE {window}), 0) AS refunds,
                      coalesce(sum(n.chargebacks) FILTER (WHERE {window}), 0) AS chargebacks,
                      coalesce(sum(n.gross - n.refunds - n.chargebacks) FILTER (
                          WHERE n.occurred_at < f.first_at + interval '90 days'), 0) AS net_90d,
                      coalesce(sum(n.gross - n.refunds - n.chargebacks) FILTER (
                          WHERE n.occurred_at < f.first_at + interval '365 days'), 0)
                          AS net_365d
               FROM net n JOIN firsts f USING (customer_id)
               LEFT JOIN acquired a USING (customer_id)
               LEFT JOIN kinds k ON k.id = a.referrer_id
               WHERE $4::text IS NULL OR (n.currency = $4 AND f.currency = $4)
               GROUP BY n.customer_id, n.currency, f.first_at, f.currency, a.referrer_id,
                        k.kind, pay_month),
           marked AS (
               SELECT p.*, p.referrer_id IS NOT NULL AS referred,
                      to_char(p.first_at AT TIME ZONE $5, 'YYYY-MM') AS month,
                      p.own AND {acquired} AS counted,
                      p.own AND p.pay_month = date_trunc('month', p.first_at AT TIME ZONE $5)
                          AS head,
                      p.first_at + interval '90 days' <= (SELECT at FROM as_of) AS e90,
                      p.first_at + interval '365 days' <= (SELECT at FROM as_of) AS e365
               FROM per p)
           SELECT GROUPING(pay_month) AS by_pay_month,
                  GROUPING(first_currency) AS by_customer, GROUPING(currency) AS by_money,
                  referred, kind, first_currency, currency, month,
                  to_char(pay_month, 'YYYY-MM') AS paid_in,
                  count(*) FILTER (WHERE counted AND head) AS customers,
                  count(*) FILTER (WHERE counted AND head AND e90) AS eligible_90d,
                  count(*) FILTER (WHERE counted AND head AND e90 AND retained)
                      AS retained_90d,
                  count(*) FILTER (WHERE counted AND head AND e365) AS eligible_365d,
                  coalesce(sum(net_90d) FILTER (WHERE counted AND e90), 0)::bigint AS net_90d,
                  coalesce(sum(net_365d) FILTER (WHERE counted AND e365), 0)::bigint
                      AS net_365d,
                  count(*) FILTER (WHERE in_window > 0) AS paying,
                  sum(gross)::bigint AS gross, sum(refunds)::bigint AS refunds,
                  sum(chargebacks)::bigint AS chargebacks,
                  count(*) FILTER (WHERE head) AS everyone,
                  count(*) FILTER (WHERE counted AND head AND referred) AS referred_n,
                  count(DISTINCT referrer_id) FILTER (WHERE counted) AS referrers
           FROM marked
           GROUP BY GROUPING SETS ((referred, kind, first_currency), (referred, kind, currency),
                                   (month), (referred, currency, pay_month))""",
        program_id, since, until, currency, tz)
    customers, money, months, by_month = [], [], [], []
    for r in rows:
        if r["by_pay_month"] == 0:
            if r["paying"]:
                by_month.append(MonthMoney(r["paid_in"], r["referred"], r["currency"],
                                           r["gross"], r["refunds"], r["chargebacks"]))
        elif r["by_customer"] == 0:
            if r["customers"]:
                customers.append(CustomerGroup(
                    r["referred"], r["kind"], r["first_currency"], r["customers"],
                    r["eligible_90d"], r["retained_90d"], r["eligible_365d"], r["net_90d"],
                    r["net_365d"]))
        elif r["by_money"] == 0:
            if r["paying"]:
                money.append(MoneyGroup(r["referred"], r["kind"], r["currency"], r["gross"],
                                        r["refunds"], r["chargebacks"]))
        else:
            months.append(MonthGroup(r["month"], r["everyone"], r["customers"], r["referred_n"],
                                     r["referrers"]))
    return customers, money, sorted(months, key=lambda m: m.month), by_month


async def report_settings(conn: asyncpg.Connection) -> None:
    """Memory for a report's sorts and hashes, in the caller's transaction (the default 4 MB
    sends a million-click aggregate to disk, several times slower)."""
    await conn.execute("SET LOCAL work_mem = '64MB'")


Read = Callable[[asyncpg.Connection], Awaitable[Any]]
READ_CONCURRENCY = 3  # connections one report holds at once (of the pool's ten)
VISITOR_PARTS = 2  # a report's longest read (clicks by group) on a pool: a part per core


def visitor_part(clicks: str, param: int) -> str:
    """SQL true for the clicks `clicks` of the visitors in one part of ${param} (by a hash of
    the visitor id; clicks without one in part 0), given ${param + 1} = visitor_part_args'
    second. No visitor is in two parts, so per-group clicks and distinct visitors of the
    parts add up to the whole. Written as "not in any other part": PostgreSQL guesses an
    equality on an expression keeps 0.5 % of the rows, and planned for so few it sorted
    what are half the clicks in parallel workers instead of hashing them (more CPU than the
    whole in one part); an inequality it guesses keeps nearly all, which plans as for the
    whole."""
    return (f"(hashtext(coalesce({clicks}.visitor_id, '')) & 2147483647) % ${param} "
            f"<> ALL (${param + 1}::int[])")


def visitor_part_args(part: int, parts: int) -> list[Any]:
    """The arguments of visitor_part for part `part` of `parts`."""
    return [parts, [other for other in range(parts) if other != part]]


async def report_reads(db: asyncpg.Connection | asyncpg.Pool, *reads: Read) -> list[Any]:
    """A report's independent reads, each in a transaction with report_settings: given a pool,
    at once, each on a connection of its own (PostgreSQL runs a statement on one core, so a
    report of three scans waits for the slowest instead of their sum); given a connection
    (the reports job), one after the other. Each read sees the data as of its own start, as
    the statements of one READ COMMITTED transaction do."""

    async def read_on(conn: asyncpg.Connection, read: Read) -> Any:
        async with conn.transaction():
            await report_settings(conn)
            return await read(conn)

    if isinstance(db, asyncpg.Pool):
        slots = asyncio.Semaphore(READ_CONCURRENCY)

        async def pooled(read: Read) -> Any:
            async with slots, db.acquire() as conn:
                return await read_on(conn, read)

        return list(await asyncio.gather(*(pooled(read) for read in reads)))
    return [await read_on(db, read) for read in reads]


async def latest_conversion(conn: asyncpg.Connection, program_id: int) -> datetime | None:
    """How far the program's data reaches: its latest conversion's occurred_at."""
    at: datetime | None = await conn.fetchval(
        "SELECT max(occurred_at) FROM conversions WHERE program_id = $1", program_id)
    return at


async def reward_money(conn: asyncpg.Connection, program_id: int, since: datetime | None,
                       until: datetime | None, tz: str = "UTC") -> list[RewardMoney]:
    """Rewards of the conversions that occurred in [since, until), by the month of the
    conversion (in `tz`), beneficiary side, currency, status and the advocate kind of the
    credited referrer."""
    window = _WINDOW.format(t="c.occurred_at")
    rows = await conn.fetch(
        f"""WITH kinds AS (SELECT r.id, {referrer_kind()} AS kind
                          FROM referrers r WHERE r.program_id = $1),
           clawed AS (SELECT reward_id, -sum(amount) AS amount FROM ledger_entries
                      WHERE program_id = $1 AND kind = 'clawback' GROUP BY reward_id)
           SELECT to_char(date_trunc('month', c.occurred_at AT TIME ZONE $4), 'YYYY-MM')
                      AS month, w.beneficiary, w.currency, w.status, k.kind, count(*) AS n,
                  sum(w.amount)::bigint AS amount, coalesce(sum(cl.amount), 0)::bigint AS clawed
           FROM rewards w
           JOIN conversions c ON c.program_id = w.program_id AND c.id = w.conversion_id
           JOIN kinds k ON k.id = w.referrer_id
           LEFT JOIN clawed cl ON cl.reward_id = w.id
           WHERE w.program_id = $1 AND {window}
           GROUP BY date_trunc('month', c.occurred_at AT TIME ZONE $4), w.beneficiary,
                    w.currency, w.status, k.kind""",
        program_id, since, until, tz)
    return [RewardMoney(*r) for r in rows]


# Dimensions of a click (alias c, its link l, its referrer's kind k, the ask before it s);
# hours and weekdays in the program's time zone ($4).
BREAKDOWN_DIMENSIONS = {
    "weekday": "extract(isodow FROM c.ts AT TIME ZONE $4)::int",
    "hour": "extract(hour FROM c.ts AT TIME ZONE $4)::int",
    "country": "c.country",
    "device": "c.ua_device",
    "os": "c.ua_os",
    "browser": "c.ua_browser",
    "channel": "l.channel",
    "campaign": "l.campaign",
    "referrer_kind": "k.kind",
    "trigger": "s.trigger_type",
}
ASK_REACH = "30 days"  # how long after an ask a referrer's clicks carry its trigger
# The clicks a breakdown counts: the program's ($1), not bots or duplicates, in [$2, $3).
_COUNTED_CLICKS = ("c.program_id = $1 AND NOT c.is_bot AND NOT c.is_duplicate AND "
                   + _WINDOW.format(t="c.ts"))


def _breakdown_from(by: list[str], touch: str) -> str:
    """The joins of the click dimensions `by` need, onto clicks `c` whose referrer is
    `{touch}.referrer_id` (the kinds and asks are read only when asked for)."""
    joins = ["LEFT JOIN links l ON l.program_id = c.program_id AND l.id = c.link_id"]
    if "referrer_kind" in by:
        joins.append(f"LEFT JOIN kinds k ON k.id = {touch}.referrer_id")
    if "trigger" in by:
        joins.append(f"""LEFT JOIN asked s ON s.referrer_id = {touch}.referrer_id
                           AND c.ts >= s.sent_at AND c.ts < s.until_ts""")
    return "\n".join(joins)


def _breakdown_ctes(by: list[str]) -> str:
    # `zone` types $4 (the time zone) when no dimension reads it.
    ctes = ["zone AS (SELECT $4::text AS name)"]
    if "referrer_kind" in by:
        ctes += [f"kinds AS (SELECT r.id, {referrer_kind()} AS kind FROM referrers r "
                "WHERE r.program_id = $1)"]
    if "trigger" in by:
        # Each sent ask reaches the referrer's clicks until their next ask, ASK_REACH at most.
        ctes.append(f"""asked AS (
            SELECT referrer_id, trigger_type, sent_at,
                   least(lead(sent_at, 1, 'infinity') OVER (
                             PARTITION BY referrer_id ORDER BY sent_at, id),
                         sent_at + interval '{ASK_REACH}') AS until_ts
            FROM asks WHERE program_id = $1 AND sent_at IS NOT NULL
              AND referrer_id IS NOT NULL)""")
    return "WITH " + ",\n".join(ctes)


def _grouping(sets: list[list[str]]) -> tuple[list[str], dict[int, list[int]]]:
    """The dimensions any of `sets` reads (in BREAKDOWN_DIMENSIONS order), and which sets each
    GROUPING() mask of them stands for (a set the same as another but in another order
    shares its mask)."""
    dims = [d for d in BREAKDOWN_DIMENSIONS if any(d in s for s in sets)]
    masks: dict[int, list[int]] = defaultdict(list)
    for i, by in enumerate(sets):
        mask = sum(1 << (len(dims) - 1 - j) for j, d in enumerate(dims) if d not in by)
        masks[mask].append(i)
    return dims, masks


def _keys(dims: list[str]) -> str:
    return ", ".join(f"{BREAKDOWN_DIMENSIONS[d]} AS g_{d}" for d in dims)


def _sets(sets: list[list[str]], masks: dict[int, list[int]], extra: str) -> str:
    """The GROUPING SETS of `sets`, once per mask (a set repeated, in whatever order, would
    give its rows twice)."""
    return ", ".join("(" + ", ".join([*(f"g_{d}" for d in sets[ids[0]]), extra]) + ")"
                     for ids in masks.values())


async def breakdown_clicks(conn: asyncpg.Connection, program_id: int, sets: list[list[str]],
                           *, since: datetime | None, until: datetime | None, tz: str,
                           part: int = 0, parts: int = 1) -> list[list[BreakdownRow]]:
    """For each of `sets` (one or two names of BREAKDOWN_DIMENSIONS): counted (not bot, not
    duplicate) clicks in [since, until) and their distinct visitors per group. One scan for
    every set: hash aggregates by (group, visitor) per set, then by group, rather than
    count(DISTINCT), which sorts every click. (The total is breakdown_total: a (visitor)
    grouping set here hashed every visitor once more, four times its cost: bench.reports.)

    With `parts` > 1, only the clicks of the visitors in part `part` of `parts` (by a hash of
    the visitor id; clicks without one in part 0): the parts share no visitor, so their
    counts add up to the whole, and each can run on a core of its own."""
    dims, masks = _grouping(sets)
    columns = ", ".join(f"g_{d}" for d in dims)
    args: list[Any] = [program_id, since, until, tz]
    split = ""
    if parts > 1:
        split = "AND " + visitor_part("c", 5)
        args += visitor_part_args(part, parts)
    rows = await conn.fetch(
        f"""{_breakdown_ctes(dims)}
           SELECT mask, {columns}, sum(n)::bigint AS clicks, count(visitor_id) AS visitors
           FROM (SELECT GROUPING({columns}) AS mask, {columns}, visitor_id, count(*) AS n
                 FROM (SELECT {_keys(dims)}, c.visitor_id FROM clicks c
                       {_breakdown_from(dims, "c")}
                       WHERE {_COUNTED_CLICKS} {split}) keyed
                 GROUP BY GROUPING SETS ({_sets(sets, masks, "visitor_id")})
                ) per_visitor
           GROUP BY mask, {columns}""", *args)
    out: list[list[BreakdownRow]] = [[] for _ in sets]
    for r in rows:
        for i in masks[r["mask"]]:
            out[i].append(BreakdownRow(tuple(r[f"g_{d}"] for d in sets[i]), r["clicks"],
                                       r["visitors"]))
    return out


async def breakdown_total(conn: asyncpg.Connection, program_id: int, *,
                          since: datetime | None, until: datetime | None) -> BreakdownRow:
    """The counted clicks in [since, until) and their distinct visitors (not the groups' sum:
    a visitor may fall in several groups)."""
    row = await conn.fetchrow(
        f"""SELECT count(*) AS clicks, count(DISTINCT c.visitor_id) AS visitors FROM clicks c
            WHERE {_COUNTED_CLICKS}""", program_id, since, until)
    return BreakdownRow((), row["clicks"], row["visitors"])


async def breakdown_conversions(conn: asyncpg.Connection, program_id: int,
                                sets: list[list[str]], *, type_: str, since: datetime | None,
                                until: datetime | None, tz: str
                                ) -> list[list[BreakdownConversions]]:
    """For each of `sets`: attributed conversions of `type_` that occurred in [since, until),
    each in the group of its last touch (its click; a typed code has no click: null click
    dimensions), with their net amount per currency."""
    dims, masks = _grouping(sets)
    columns = ", ".join(f"g_{d}" for d in dims)
    rows = await conn.fetch(
        f"""{_breakdown_ctes(dims)},
           last_touch AS (
               SELECT DISTINCT ON (t.conversion_id) t.conversion_id, t.ts, t.click_id,
                      t.referrer_id
               FROM touchpoints t
               JOIN conversions v ON v.program_id = t.program_id AND v.id = t.conversion_id
               WHERE t.program_id = $1 AND v.type = $5 AND {_WINDOW.format(t="v.occurred_at")}
               ORDER BY t.conversion_id, t.position DESC)
           SELECT GROUPING({columns}) AS mask, {columns}, currency, count(*) AS n,
                  coalesce(sum(net), 0)::bigint AS net
           FROM (SELECT {_keys(dims)}, v.currency,
                        greatest(coalesce(v.amount, 0) - coalesce((
                            SELECT sum(coalesce(x.amount, v.amount)) FROM conversions x
                            WHERE x.program_id = v.program_id
                              AND x.original_event_id = v.event_id
                              AND x.type IN ('refund', 'chargeback')), 0), 0) AS net
                 FROM last_touch lt
                 JOIN conversions v ON v.program_id = $1 AND v.id = lt.conversion_id
                 LEFT JOIN LATERAL (
                     SELECT * FROM clicks c
                     WHERE c.program_id = $1 AND c.ts = lt.ts AND c.click_id = lt.click_id
                     LIMIT 1) c ON true
                 {_breakdown_from(dims, "lt")}) grouped
           GROUP BY GROUPING SETS ({_sets(sets, masks, "currency")})""",
        program_id, since, until, tz, type_)
    out: list[list[BreakdownConversions]] = [[] for _ in sets]
    for r in rows:
        for i in masks[r["mask"]]:
            out[i].append(BreakdownConversions(tuple(r[f"g_{d}"] for d in sets[i]),
                                               r["currency"], r["n"], r["net"]))
    return out


@dataclass(frozen=True, slots=True)
class CachedReport:
    program_id: int
    slug: str
    body: dict[str, Any]
    computed_at: datetime


async def store_report(conn: asyncpg.Connection, program_id: int, report: str, params: str,
                       body: dict[str, Any]) -> None:
    await conn.execute(
        """INSERT INTO report_cache (program_id, report, params, body)
           VALUES ($1, $2, $3, $4::jsonb)
           ON CONFLICT (program_id, report, params)
           DO UPDATE SET body = excluded.body, computed_at = now()""",
        program_id, report, params, json.dumps(body))


async def cached_report(conn: asyncpg.Connection | asyncpg.Pool, program_id: int, report: str,
                        params: str, max_age_s: float) -> CachedReport | None:
    """The stored view if it was computed less than `max_age_s` seconds ago."""
    row = await conn.fetchrow(
        """SELECT k.program_id, p.slug, k.body::text AS body, k.computed_at
           FROM report_cache k JOIN programs p ON p.id = k.program_id
           WHERE k.program_id = $1 AND k.report = $2 AND k.params = $3
             AND k.computed_at > now() - make_interval(secs => $4)""",
        program_id, report, params, max_age_s)
    return None if row is None else CachedReport(row["program_id"], row["slug"],
                                                 json.loads(row["body"]), row["computed_at"])


async def cached_reports(conn: asyncpg.Connection, report: str, params: str, limit: int
                         ) -> list[CachedReport]:
    """The stored view of the first `limit` programs (by id) that have one."""
    rows = await conn.fetch(
        """SELECT k.program_id, p.slug, k.body::text AS body, k.computed_at
           FROM report_cache k JOIN programs p ON p.id = k.program_id
           WHERE k.report = $1 AND k.params = $2 ORDER BY k.program_id LIMIT $3""",
        report, params, limit)
    return [CachedReport(r["program_id"], r["slug"], json.loads(r["body"]), r["computed_at"])
            for r in rows]
