"""Rewards as finance sees them: list rows, and one reward with all its evidence.

Shared by the API (/api/v1/rewards) and the review page, so both show the same facts: frozen
dataclasses whose field names are the API's JSON keys (tracker.web.api.rewards.as_json turns
them into JSON, the review templates read them as they are).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
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
    r.program_id, r.referrer_id"""
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

    @property
    def top_reason(self) -> Reason | None:
        """The reason that weighs most (the queue shows it)."""
        return max(self.reasons, key=lambda r: r.weight or 0.0, default=None)

    @property
    def waiting_since(self) -> datetime:
        return self.flagged_at or self.created_at


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
        calculation=json.loads(r["calculation"]))


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
