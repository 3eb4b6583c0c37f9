"""Rewards as finance sees them: list rows, and one reward with all its evidence.

Shared by the API (/api/v1/rewards) and the review page, so both show the same facts.
"""

from __future__ import annotations

import json
from typing import Any

import asyncpg

from fraud.rings import neighbourhood
from tracker.scoring.risk import neighbours, person_columns

SORTS = {"risk": "r.risk_score DESC NULLS LAST, r.id", "amount": "r.amount DESC, r.id",
         "age": "coalesce(r.flagged_at, r.created_at), r.id", "id": "r.id"}
GRAPH_PEOPLE = 40  # referees drawn around a referrer

_COLUMNS = """r.id, p.slug AS program, f.external_id AS referrer, r.beneficiary, r.payee,
    r.conversion_id, c.event_id, r.amount, r.currency, r.status, r.risk_score,
    r.reasons::text AS reasons, r.hold_until, r.created_at, r.flagged_at, r.decided_by,
    r.decided_at, r.decision_reason, r.batch_id, r.paid_at, r.calculation::text AS calculation,
    r.program_id, r.referrer_id"""
_FROM = """FROM rewards r
    JOIN programs p ON p.id = r.program_id
    JOIN referrers f ON f.program_id = r.program_id AND f.id = r.referrer_id
    JOIN conversions c ON c.program_id = r.program_id AND c.id = r.conversion_id"""


def reward_item(r: asyncpg.Record) -> dict[str, Any]:
    """One reward as the API lists it (DESIGN section 5), plus payee and the amount's workings."""
    return {"id": r["id"], "program": r["program"], "referrer": r["referrer"],
            "beneficiary": r["beneficiary"], "payee": r["payee"],
            "conversion": r["conversion_id"], "event_id": r["event_id"], "amount": r["amount"],
            "currency": r["currency"], "status": r["status"], "risk_score": r["risk_score"],
            "reasons": json.loads(r["reasons"]), "hold_until": r["hold_until"],
            "created_at": r["created_at"], "flagged_at": r["flagged_at"],
            "decided_by": r["decided_by"], "decided_at": r["decided_at"],
            "decision_reason": r["decision_reason"], "batch_id": r["batch_id"],
            "paid_at": r["paid_at"], "calculation": json.loads(r["calculation"])}


async def list_rewards(conn: asyncpg.Connection | asyncpg.Pool, *, status: str | None = None,
                       program: str | None = None, referrer: str | None = None,
                       sort: str = "id", after: int = 0, offset: int = 0, limit: int = 100
                       ) -> list[asyncpg.Record]:
    """Rewards by filter. `after` pages by id (sort "id"); other sorts page by `offset`."""
    rows: list[asyncpg.Record] = await conn.fetch(
        f"""SELECT {_COLUMNS} {_FROM}
            WHERE ($1::text IS NULL OR r.status = $1) AND ($2::text IS NULL OR p.slug = $2)
              AND ($3::text IS NULL OR f.external_id = $3) AND r.id > $4
            ORDER BY {SORTS[sort]} LIMIT $5 OFFSET $6""",
        status, program, referrer, after, limit, offset)
    return rows


async def get_reward(conn: asyncpg.Connection, reward_id: int) -> dict[str, Any] | None:
    """One reward as listed, without its evidence."""
    row = await conn.fetchrow(f"SELECT {_COLUMNS} {_FROM} WHERE r.id = $1", reward_id)
    return None if row is None else reward_item(row)


async def reward_detail(conn: asyncpg.Connection, reward_id: int) -> dict[str, Any] | None:
    row = await conn.fetchrow(f"SELECT {_COLUMNS} {_FROM} WHERE r.id = $1", reward_id)
    if row is None:
        return None
    pid, conversion_id = row["program_id"], row["conversion_id"]
    item = reward_item(row)
    conv = await conn.fetchrow(
        """SELECT event_id, type, customer_id, amount, currency, occurred_at, received_at,
                  abbrev(ip) AS ip FROM conversions WHERE program_id = $1 AND id = $2""",
        pid, conversion_id)
    item["conversion_detail"] = dict(conv)
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
    item["touchpoints"] = [dict(t) for t in touches]
    item["credits"] = [dict(c) for c in await conn.fetch(
        """SELECT f.external_id AS referrer, cr.model, cr.credit FROM credits cr
           JOIN referrers f ON f.program_id = cr.program_id AND f.id = cr.referrer_id
           WHERE cr.program_id = $1 AND cr.conversion_id = $2 ORDER BY cr.credit DESC""",
        pid, conversion_id)]
    item["graph"] = await referrer_graph(conn, pid, row["referrer_id"], row["referrer"])
    item["rings"] = [
        {"id": f["id"], "kind": f["kind"], "score": f["score"],
         "reasons": json.loads(f["reasons"]), "members": json.loads(f["members"])}
        for f in await conn.fetch(
            """SELECT id, kind, score, reasons::text AS reasons, members::text AS members
               FROM fraud_flags WHERE program_id = $1 AND conversion_id IS NULL
                 AND members @> jsonb_build_array(jsonb_build_object('type', 'referrer',
                                                                     'id', $2::text))""",
            pid, row["referrer"])]
    item["approvals"] = [dict(a) for a in await conn.fetch(
        """SELECT actor, reason, at FROM reward_approvals
           WHERE program_id = $1 AND reward_id = $2 ORDER BY at""", pid, reward_id)]
    item["history"] = [dict(a) for a in await conn.fetch(
        """SELECT at, actor, action, reason FROM audit_log
           WHERE object_type = 'reward' AND object_id = $1 ORDER BY id""", str(reward_id))]
    return item


async def referrer_graph(conn: asyncpg.Connection, program_id: int, referrer_id: int,
                         referrer: str) -> dict[str, list[dict[str, str]]]:
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
    return neighbourhood(referrer, uses, [(referrer, c) for c in referees if c != referrer])
