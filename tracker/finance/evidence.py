"""Rewards as finance sees them: list rows, and one reward with all its evidence.

Shared by the API (/api/v1/rewards) and the review page, so both show the same facts: frozen
dataclasses whose field names are the API's JSON keys (tracker.web.api.rewards.as_json turns
them into JSON, the review templates read them as they are).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any, TypeAlias

import asyncpg

from fraud.rings import neighbourhood
from tracker.scoring.queries import neighbours, person_columns

SORTS = {"risk": "r.risk_score DESC NULLS LAST, r.id", "amount": "r.amount DESC, r.id",
         "age": "coalesce(r.flagged_at, r.created_at), r.id", "id": "r.id"}
GRAPH_PEOPLE = 40  # referees drawn around a referrer

# A stored JSON document as json.loads gives it (reasons and calculations are open-ended:
# scans and clearance may add keys, and the API answers them as stored).
Json: TypeAlias = Any

_COLUMNS = """r.id, p.slug AS program, f.external_id AS referrer, r.beneficiary, r.payee,
    r.conversion_id, c.event_id, r.amount, r.currency, r.status, r.risk_score,
    r.reasons::text AS reasons, r.hold_until, r.created_at, r.flagged_at, r.decided_by,
    r.decided_at, r.decision_reason, r.batch_id, r.paid_at, r.calculation::text AS calculation,
    r.program_id, r.referrer_id, r.kind, r.variant,
    (SELECT k.code FROM coupon_codes k WHERE k.reward_id = r.id) AS coupon_code"""
_FROM = """FROM rewards r
    JOIN programs p ON p.id = r.program_id
    JOIN referrers f ON f.program_id = r.program_id AND f.id = r.referrer_id
    JOIN conversions c ON c.program_id = r.program_id AND c.id = r.conversion_id"""


@dataclass(frozen=True, slots=True)
class Reason:
    """One reason a conversion or a ring looks wrong, with what was measured against what.

    `stored` is the object as the scan wrote it (its keys, their order, any extra ones); the
    typed fields read it."""

    code: str | None
    message: str | None
    value: Json
    threshold: Json
    weight: float | None
    stored: Mapping[str, Json] = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, raw: Mapping[str, Json]) -> Reason:
        code, message, weight = raw.get("code"), raw.get("message"), raw.get("weight")
        return cls(code=None if code is None else str(code),
                   message=None if message is None else str(message),
                   value=raw.get("value"), threshold=raw.get("threshold"),
                   weight=float(weight) if isinstance(weight, int | float) else None,
                   stored=raw)

    @property
    def about_referrer(self) -> bool:
        family = self.stored.get("family")
        return family in REFERRER_FAMILIES or (self.code or "") in REFERRER_CODES \
            or (self.code or "").startswith("referrer_")


# Reasons that speak of the credited referrer rather than of the conversion's customer: the
# referrer's traffic against the program's (fraud.assess family "population"), the referrer's
# ring.
REFERRER_FAMILIES = frozenset({"population"})
REFERRER_CODES = frozenset({"ring_referrer"})


def _reasons(text: str) -> tuple[Reason, ...]:
    return tuple(Reason.from_json(r) for r in json.loads(text))


@dataclass(frozen=True, slots=True)
class RewardItem:
    """One reward as the API lists it (DESIGN section 5), plus payee and the amount's workings.

    `calculation` is clearance's account of the amount (rule, rate, base, tier, credit, caps)."""

    id: int
    program: str
    referrer: str
    beneficiary: str
    payee: str
    conversion: int
    event_id: str
    amount: int
    currency: str
    status: str
    risk_score: float | None
    reasons: tuple[Reason, ...]
    hold_until: datetime
    created_at: datetime
    flagged_at: datetime | None
    decided_by: str | None
    decided_at: datetime | None
    decision_reason: str | None
    batch_id: uuid.UUID | None
    paid_at: datetime | None
    calculation: Mapping[str, Json]
    kind: str = "cash"  # cash | credit | coupon (migration 0023)
    # A coupon reward's code once approved; the API shows it to finance and admins only.
    coupon_code: str | None = None
    # The reward variant whose rules made it (incentive experiments, migration 0030); None
    # for the program's plain rules.
    variant: str | None = None

    @property
    def top_reason(self) -> Reason | None:
        """The reason that weighs most (the queue shows it)."""
        return max(self.reasons, key=lambda r: r.weight or 0.0, default=None)

    @property
    def waiting_since(self) -> datetime:
        return self.flagged_at or self.created_at

    @property
    def own_reasons(self) -> tuple[Reason, ...]:
        """The reasons about this conversion and its customer (for a referee's reward: the
        referee's own)."""
        return tuple(r for r in self.reasons if not r.about_referrer)

    @property
    def referrer_reasons(self) -> tuple[Reason, ...]:
        """The reasons about the credited referrer (their traffic, their ring)."""
        return tuple(r for r in self.reasons if r.about_referrer)


@dataclass(frozen=True, slots=True)
class Conversion:
    """The conversion a reward was earned on."""

    event_id: str
    type: str
    customer_id: str
    amount: int | None
    currency: str | None
    occurred_at: datetime
    received_at: datetime
    ip: str | None


@dataclass(frozen=True, slots=True)
class Touchpoint:
    """An attributed click of the conversion, with what enrichment found (None where the click
    itself is gone)."""

    position: int
    click_id: str | None
    ts: datetime
    referrer: str
    ip: str | None
    country: str | None
    device: str | None
    ua_browser: str | None
    ua_os: str | None
    is_bot: bool | None
    bot_rule: str | None
    is_anonymous: bool | None
    is_hosting: bool | None


@dataclass(frozen=True, slots=True)
class Credit:
    referrer: str
    model: str
    credit: float


@dataclass(frozen=True, slots=True)
class Node:
    """An account (referrer, customer), an IP address or a device; id is "type:label"."""

    id: str
    type: str
    label: str


@dataclass(frozen=True, slots=True)
class Edge:
    source: str
    target: str
    kind: str  # "referred" or "uses"


@dataclass(frozen=True, slots=True)
class Graph:
    """The referrer's neighbourhood (fraud.rings.neighbourhood chooses what to draw)."""

    nodes: tuple[Node, ...]
    edges: tuple[Edge, ...]


@dataclass(frozen=True, slots=True)
class Member:
    id: str
    type: str  # referrer, customer, ip, device, visitor


@dataclass(frozen=True, slots=True)
class Ring:
    """A fraud flag over a group of accounts the referrer belongs to."""

    id: int
    kind: str
    score: float
    reasons: tuple[Reason, ...]
    members: tuple[Member, ...]

    @property
    def accounts(self) -> int:
        return sum(m.type in ("referrer", "customer") for m in self.members)


@dataclass(frozen=True, slots=True)
class Approval:
    """A first approval of a reward that needs two people."""

    actor: str
    reason: str
    at: datetime


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One audit row about the reward."""

    at: datetime
    actor: str
    action: str
    reason: str | None


@dataclass(frozen=True, slots=True)
class RewardDetail:
    """One reward with its evidence. The API answers the reward's fields and these side by
    side."""

    reward: RewardItem
    conversion_detail: Conversion
    touchpoints: tuple[Touchpoint, ...]
    credits: tuple[Credit, ...]
    graph: Graph
    rings: tuple[Ring, ...]
    approvals: tuple[Approval, ...]
    history: tuple[HistoryEntry, ...]


def reward_item(r: asyncpg.Record) -> RewardItem:
    """One reward row (of _COLUMNS) as a RewardItem."""
    return RewardItem(
        id=r["id"], program=r["program"], referrer=r["referrer"], beneficiary=r["beneficiary"],
        payee=r["payee"], conversion=r["conversion_id"], event_id=r["event_id"],
        amount=r["amount"], currency=r["currency"], status=r["status"],
        risk_score=r["risk_score"], reasons=_reasons(r["reasons"]), hold_until=r["hold_until"],
        created_at=r["created_at"], flagged_at=r["flagged_at"], decided_by=r["decided_by"],
        decided_at=r["decided_at"], decision_reason=r["decision_reason"],
        batch_id=r["batch_id"], paid_at=r["paid_at"],
        calculation=json.loads(r["calculation"]), kind=r["kind"], coupon_code=r["coupon_code"],
        variant=r["variant"])


async def list_rewards(conn: asyncpg.Connection | asyncpg.Pool, *, status: str | None = None,
                       program: str | None = None, referrer: str | None = None,
                       sort: str = "id", after: int = 0, offset: int = 0, limit: int = 100
                       ) -> list[RewardItem]:
    """Rewards by filter. `after` pages by id (sort "id"); other sorts page by `offset`."""
    rows: list[asyncpg.Record] = await conn.fetch(
        f"""SELECT {_COLUMNS} {_FROM}
            WHERE ($1::text IS NULL OR r.status = $1) AND ($2::text IS NULL OR p.slug = $2)
              AND ($3::text IS NULL OR f.external_id = $3) AND r.id > $4
            ORDER BY {SORTS[sort]} LIMIT $5 OFFSET $6""",
        status, program, referrer, after, limit, offset)
    return [reward_item(r) for r in rows]


async def get_reward(conn: asyncpg.Connection, reward_id: int) -> RewardItem | None:
    """One reward as listed, without its evidence."""
    row = await conn.fetchrow(f"SELECT {_COLUMNS} {_FROM} WHERE r.id = $1", reward_id)
    return None if row is None else reward_item(row)


async def reward_detail(conn: asyncpg.Connection, reward_id: int) -> RewardDetail | None:
    row = await conn.fetchrow(f"SELECT {_COLUMNS} {_FROM} WHERE r.id = $1", reward_id)
    if row is None:
        return None
    pid, conversion_id = row["program_id"], row["conversion_id"]
    conv = await conn.fetchrow(
        """SELECT event_id, type, customer_id, amount, currency, occurred_at, received_at,
                  abbrev(ip) AS ip FROM conversions WHERE program_id = $1 AND id = $2""",
        pid, conversion_id)
    touches = await conn.fetch(
        """SELECT t.position, t.click_id::text AS click_id, t.ts, f.external_id AS referrer,
                  abbrev(c.ip) AS ip, c.country, encode(c.fingerprint, 'hex') AS device,
                  c.ua_browser, c.ua_os, c.is_bot, c.bot_rule, c.is_anonymous, c.is_hosting
           FROM touchpoints t
           JOIN referrers f ON f.program_id = t.program_id AND f.id = t.referrer_id
           LEFT JOIN clicks c ON c.program_id = t.program_id AND c.ts = t.ts
                             AND c.click_id = t.click_id
           WHERE t.program_id = $1 AND t.conversion_id = $2 ORDER BY t.position""",
        pid, conversion_id)
    credits = await conn.fetch(
        """SELECT f.external_id AS referrer, cr.model, cr.credit FROM credits cr
           JOIN referrers f ON f.program_id = cr.program_id AND f.id = cr.referrer_id
           WHERE cr.program_id = $1 AND cr.conversion_id = $2 ORDER BY cr.credit DESC""",
        pid, conversion_id)
    graph = await referrer_graph(conn, pid, row["referrer_id"], row["referrer"])
    rings = await conn.fetch(
        """SELECT id, kind, score, reasons::text AS reasons, members::text AS members
           FROM fraud_flags WHERE program_id = $1 AND conversion_id IS NULL
             AND members @> jsonb_build_array(jsonb_build_object('type', 'referrer',
                                                                 'id', $2::text))""",
        pid, row["referrer"])
    approvals = await conn.fetch(
        """SELECT actor, reason, at FROM reward_approvals
           WHERE program_id = $1 AND reward_id = $2 ORDER BY at""", pid, reward_id)
    history = await conn.fetch(
        """SELECT at, actor, action, reason FROM audit_log
           WHERE object_type = 'reward' AND object_id = $1 ORDER BY id""", str(reward_id))
    return RewardDetail(
        reward=reward_item(row),
        conversion_detail=Conversion(**dict(conv)),
        touchpoints=tuple(Touchpoint(**dict(t)) for t in touches),
        credits=tuple(Credit(**dict(c)) for c in credits),
        graph=graph,
        rings=tuple(
            Ring(id=f["id"], kind=f["kind"], score=f["score"], reasons=_reasons(f["reasons"]),
                 members=tuple(Member(id=m["id"], type=m["type"])
                               for m in json.loads(f["members"])))
            for f in rings),
        approvals=tuple(Approval(**dict(a)) for a in approvals),
        history=tuple(HistoryEntry(**dict(h)) for h in history))


async def referrer_graph(conn: asyncpg.Connection, program_id: int, referrer_id: int,
                         referrer: str) -> Graph:
    """The referrer, their latest referees, the IPs and devices they share, and anyone else on
    those (fraud.rings.neighbourhood chooses what to draw)."""
    referees = [r["customer_id"] for r in await conn.fetch(
        """SELECT c.customer_id, max(c.occurred_at) AS last FROM credits cr
           JOIN conversions c ON c.program_id = cr.program_id AND c.id = cr.conversion_id
           WHERE cr.program_id = $1 AND cr.referrer_id = $2
           GROUP BY c.customer_id ORDER BY last DESC LIMIT $3""",
        program_id, referrer_id, GRAPH_PEOPLE)]
    core = sorted({referrer, *referees})
    people = sorted(set(core) | await neighbours(conn, program_id, core))[:GRAPH_PEOPLE * 2]
    columns = await person_columns(conn, program_id, people)
    known = {r["external_id"] for r in await conn.fetch(
        "SELECT external_id FROM referrers WHERE program_id = $1 AND external_id = ANY($2)",
        program_id, people)}
    uses = {("referrer" if p in known else "customer", p): cs for p, cs in columns.items()}
    drawn = neighbourhood(referrer, uses, [(referrer, c) for c in referees if c != referrer])
    return Graph(nodes=tuple(Node(id=n["id"], type=n["type"], label=n["label"])
                             for n in drawn["nodes"]),
                 edges=tuple(Edge(source=e["source"], target=e["target"], kind=e["kind"])
                             for e in drawn["edges"]))


# -- the queue by case (the review page) ------------------------------------------------------

AUTOMATIC = "system:clearance"  # tracker.finance.clearance.ACTOR: its decisions are automatic
# The review page's status filter: name -> (reward status, decided by clearance or not (None:
# either)).
CASE_STATUSES: dict[str, tuple[str, bool | None]] = {
    "flagged": ("flagged", None),
    "rejected-auto": ("rejected", True),
    "approved-auto": ("approved", True),
    "pending": ("pending", None),
    "rejected": ("rejected", None),
    "approved": ("approved", None),
    "paid": ("paid", None),
}
# ISO 4217 minor units where they are not 2 (as tracker.web.review.filters shows money).
ZERO_PLACES = ("BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG", "RWF", "UGX",
               "VND", "VUV", "XAF", "XOF", "XPF")
THREE_PLACES = ("BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND")


@dataclass(frozen=True, slots=True)
class CaseFilter:
    """What the review page's queue shows. Amounts are in major units (20 is 20.00 USD, 20 JPY)
    of each reward's currency; `until` is inclusive; `search` is part of a referrer's or a
    customer's id (or the payee's)."""

    program: str | None = None
    status: str = "flagged"
    reason: str | None = None
    min_amount: Decimal | None = None
    max_amount: Decimal | None = None
    since: date | None = None
    until: date | None = None
    search: str | None = None


@dataclass(frozen=True, slots=True)
class CaseRow:
    """A reward of the queue, with whom it concerns and the rings (fraud flag ids) its
    referrer or customer belongs to."""

    item: RewardItem
    customer: str
    rings: tuple[int, ...]


async def list_cases(conn: asyncpg.Connection | asyncpg.Pool, f: CaseFilter, *,
                     limit: int = 1000) -> tuple[list[CaseRow], dict[int, Ring]]:
    """The rewards the filter selects, riskiest first, at most `limit`; and the rings (by
    fraud flag id) their referrers and customers belong to."""
    status, automatic = CASE_STATUSES.get(f.status, CASE_STATUSES["flagged"])
    until = None if f.until is None else f.until + timedelta(days=1)
    rows: list[asyncpg.Record] = await conn.fetch(
        f"""WITH picked AS (
              SELECT {_COLUMNS}, c.customer_id,
                     r.amount::numeric / (CASE WHEN r.currency = ANY($10::text[]) THEN 1
                                               WHEN r.currency = ANY($11::text[]) THEN 1000
                                               ELSE 100 END) AS major
              {_FROM}
              WHERE r.status = $1
                AND ($2::boolean IS NULL OR (r.decided_by = $12) = $2)
                AND ($3::text IS NULL OR p.slug = $3)
                AND ($4::text IS NULL OR r.reasons @> jsonb_build_array(
                                                        jsonb_build_object('code', $4::text)))
                AND ($7::timestamptz IS NULL OR r.created_at >= $7)
                AND ($8::timestamptz IS NULL OR r.created_at < $8)
                AND ($9::text IS NULL OR strpos(lower(f.external_id), lower($9)) > 0
                     OR strpos(lower(c.customer_id), lower($9)) > 0
                     OR strpos(lower(r.payee), lower($9)) > 0))
            SELECT * FROM picked
            WHERE ($5::numeric IS NULL OR major >= $5) AND ($6::numeric IS NULL OR major <= $6)
            ORDER BY risk_score DESC NULLS LAST, id LIMIT $13""",
        status, automatic, f.program, f.reason, f.min_amount, f.max_amount,
        None if f.since is None else datetime.combine(f.since, datetime.min.time(), UTC),
        None if until is None else datetime.combine(until, datetime.min.time(), UTC),
        f.search, list(ZERO_PLACES), list(THREE_PLACES), AUTOMATIC, limit)
    people: dict[int, set[str]] = {}
    for r in rows:
        people.setdefault(r["program_id"], set()).update((r["referrer"], r["customer_id"]))
    rings = await rings_with(conn, people)
    out = []
    for r in rows:
        mine = tuple(ring.id for ring in rings.get(r["program_id"], ())
                     if any(m.id in (r["referrer"], r["customer_id"])
                            and m.type in ("referrer", "customer") for m in ring.members))
        out.append(CaseRow(item=reward_item(r), customer=r["customer_id"], rings=mine))
    return out, {ring.id: ring for found in rings.values() for ring in found}


async def rings_with(conn: asyncpg.Connection | asyncpg.Pool, people: Mapping[int, set[str]]
                     ) -> dict[int, list[Ring]]:
    """Per program, the ring flags (fraud flags over a group, not one conversion) with any
    of these referrers or customers among their members."""
    out: dict[int, list[Ring]] = {}
    for pid, ids in people.items():
        flags = await conn.fetch(
            """SELECT id, kind, score, reasons::text AS reasons, members::text AS members
               FROM fraud_flags f WHERE program_id = $1 AND conversion_id IS NULL
                 AND EXISTS (SELECT 1 FROM jsonb_array_elements(f.members) m
                             WHERE m->>'type' IN ('referrer', 'customer')
                               AND m->>'id' = ANY($2::text[]))
               ORDER BY score DESC, id""", pid, sorted(ids))
        out[pid] = [_ring(f) for f in flags]
    return out


def _ring(f: asyncpg.Record) -> Ring:
    return Ring(id=f["id"], kind=f["kind"], score=f["score"], reasons=_reasons(f["reasons"]),
                members=tuple(Member(id=m["id"], type=m["type"])
                              for m in json.loads(f["members"])))


async def reason_codes(conn: asyncpg.Connection | asyncpg.Pool) -> list[str]:
    """The reason codes of the rewards still open or decided (for the reason filter)."""
    rows = await conn.fetch(
        """SELECT DISTINCT x->>'code' AS code FROM rewards r, jsonb_array_elements(r.reasons) x
           WHERE r.status IN ('flagged', 'pending', 'approved', 'rejected')
             AND x->>'code' IS NOT NULL ORDER BY 1 LIMIT 100""")
    return [r["code"] for r in rows]


async def display_names(conn: asyncpg.Connection | asyncpg.Pool,
                        people: Iterable[tuple[str, str]]) -> dict[tuple[str, str], str]:
    """(program slug, external id) -> the person's display name, for those who have one.
    Read from a `name` column of referrers (and of a `customers` table keyed by customer_id
    or external_id) where the schema has one; nobody has a name otherwise."""
    wanted = sorted({p for _, p in people})
    if not wanted:
        return {}
    columns = {(r["table_name"], r["column_name"]) for r in await conn.fetch(
        """SELECT table_name, column_name FROM information_schema.columns
           WHERE table_schema = current_schema() AND table_name IN ('referrers', 'customers')
             AND column_name IN ('name', 'external_id', 'customer_id', 'program_id')""")}
    names: dict[tuple[str, str], str] = {}
    sources = []
    if ("referrers", "name") in columns:
        sources.append(("referrers", "external_id"))
    if ("customers", "name") in columns and ("customers", "program_id") in columns:
        key = next((k for k in ("customer_id", "external_id") if ("customers", k) in columns),
                   None)
        if key is not None:
            sources.append(("customers", key))
    for table, key in sources:  # fixed identifiers, never input
        for r in await conn.fetch(
                f"""SELECT p.slug, t.{key} AS id, t.name FROM {table} t
                    JOIN programs p ON p.id = t.program_id
                    WHERE t.{key} = ANY($1::text[]) AND t.name IS NOT NULL AND t.name <> ''""",
                wanted):
            names.setdefault((r["slug"], r["id"]), r["name"])
    return names


async def reward_rules(conn: asyncpg.Connection, reward_id: int) -> tuple[Mapping[str, Json], ...]:
    """The reward rules of the reward's program (settings.reward.rules), as stored."""
    text = await conn.fetchval(
        """SELECT coalesce(p.settings->'reward'->'rules', '[]'::jsonb)::text
           FROM rewards r JOIN programs p ON p.id = r.program_id WHERE r.id = $1""", reward_id)
    rules = json.loads(text) if text else []
    return tuple(r for r in rules if isinstance(r, dict)) if isinstance(rules, list) else ()
