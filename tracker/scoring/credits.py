"""Attribution as a service: stitch identities, gather touchpoints, store credits, report.

Identity: a conversion reaches visitors through its `click_id` (that click's visitor), its
`visitor_id`, and every visitor an earlier conversion of the same customer reached
(`customer_visitors`). Touchpoints are those visitors' non-bot, non-duplicate clicks within the
program's window at or before `occurred_at`, plus a referral code typed by hand (a touch at the
conversion's own time). The credits of the program's model are stored (they sum to 1 per
conversion); refunds and chargebacks are marked seen and earn nothing.

The models come from attribution/ (pure functions and fitted models); this module only moves
data between them and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import defaultdict
from collections.abc import Hashable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from attribution.models import (
    DATA_DRIVEN_MODELS,
    DEFAULT_HALF_LIFE_DAYS,
    HEURISTIC_MODELS,
    Journey,
    MarkovModel,
    ShapleyModel,
    Touch,
    heuristic_credits,
)
from tracker.db import job_lock
from tracker.formats import CREDITED_TYPES

log = logging.getLogger(__name__)

BATCH = 5000


@dataclass(frozen=True, slots=True)
class ProgramModel:
    program_id: int
    model: str
    window: timedelta
    half_life_days: float

    @classmethod
    def from_settings(cls, program_id: int, settings: dict[str, Any]) -> ProgramModel:
        return cls(
            program_id=program_id,
            model=str(settings.get("attribution_model", "last_touch")),
            window=timedelta(days=int(settings.get("attribution_window_days", 30))),
            half_life_days=float(settings.get("time_decay_half_life_days",
                                              DEFAULT_HALF_LIFE_DAYS)),
        )


@dataclass(frozen=True, slots=True)
class TouchRow:
    referrer_id: int
    ts: datetime
    click_id: str | None
    via: str


def credits_for(model: str, touches: list[TouchRow], occurred_at: datetime,
                half_life_days: float, fitted: MarkovModel | ShapleyModel | None
                ) -> dict[Hashable, float]:
    if not touches:
        return {}
    if model in HEURISTIC_MODELS:
        points = [Touch(t.referrer_id, t.ts.timestamp()) for t in touches]
        return heuristic_credits(model, points, occurred_at.timestamp(), half_life_days)
    assert fitted is not None  # noqa: S101 (data-driven models are fitted before use)
    return fitted.credits([t.referrer_id for t in touches])


async def load_journeys(conn: asyncpg.Connection, program_id: int) -> list[Journey]:
    """Converting journeys (stored touchpoints) and lost ones (visitors who never converted)."""
    converted = await conn.fetch(
        """SELECT array_agg(t.referrer_id ORDER BY t.position) AS path
           FROM touchpoints t JOIN conversions c
             ON c.program_id = t.program_id AND c.id = t.conversion_id
           WHERE t.program_id = $1 AND c.type = ANY($2::text[])
           GROUP BY t.conversion_id""",
        program_id, list(CREDITED_TYPES),
    )
    lost = await conn.fetch(
        """SELECT array_agg(c.referrer_id ORDER BY c.ts, c.click_id) AS path
           FROM clicks c
           WHERE c.program_id = $1 AND NOT c.is_bot AND NOT c.is_duplicate
             AND c.visitor_id IS NOT NULL
             AND NOT EXISTS (SELECT 1 FROM customer_visitors v
                             WHERE v.program_id = c.program_id AND v.visitor_id = c.visitor_id)
           GROUP BY c.visitor_id""",
        program_id,
    )
    return ([Journey(tuple(r["path"]), conversions=1) for r in converted]
            + [Journey(tuple(r["path"]), lost=1) for r in lost])


def fit(model: str, journeys: list[Journey]) -> MarkovModel | ShapleyModel:
    return MarkovModel().fit(journeys) if model == "markov" else ShapleyModel().fit(journeys)


async def _program_models(conn: asyncpg.Connection, program_id: int | None
                          ) -> list[ProgramModel]:
    rows = await conn.fetch(
        "SELECT id, settings::text AS settings FROM programs WHERE $1::bigint IS NULL OR id = $1",
        program_id,
    )
    return [ProgramModel.from_settings(r["id"], json.loads(r["settings"])) for r in rows]


ANALYZE_AFTER = 5_000


async def attribute_pending(conn: asyncpg.Connection, program_id: int | None = None) -> int:
    """Attribute every conversion not yet attributed; returns how many were processed.

    Each batch holds the attribution job's lock, so the job, `refguard attribution run` and
    clearance never attribute the same conversions at once."""
    done = 0
    for pm in await _program_models(conn, program_id):
        while True:
            async with conn.transaction():
                await job_lock(conn, "attribution")
                n = await _attribute_batch(conn, pm)
            done += n
            if n < BATCH:
                break
    if done >= ANALYZE_AFTER:
        # Many new rows at once (an import, a backlog): fresh planner statistics for the
        # fraud scan's and clearance's joins.
        await conn.execute("ANALYZE touchpoints, credits, customer_visitors, conversions")
    return done


async def _attribute_batch(conn: asyncpg.Connection, pm: ProgramModel) -> int:
    pending = await conn.fetch(
        """SELECT id, type, customer_id, occurred_at, click_id::text AS click_id, visitor_id,
                  referral_code
           FROM conversions WHERE program_id = $1 AND attributed_at IS NULL
           ORDER BY occurred_at, id LIMIT $2""",
        pm.program_id, BATCH,
    )
    if not pending:
        return 0
    pid = pm.program_id
    # Identity: the clicks named by click id, the visitors named, the customers' known visitors.
    click_ids = [r["click_id"] for r in pending if r["click_id"]]
    named_clicks = {
        r["click_id"]: r["visitor_id"] for r in await conn.fetch(
            """SELECT click_id::text AS click_id, visitor_id FROM clicks
               WHERE program_id = $1 AND click_id = ANY($2::uuid[])""", pid, click_ids)
    } if click_ids else {}
    customers = sorted({r["customer_id"] for r in pending})
    known: dict[str, set[str]] = defaultdict(set)
    for r in await conn.fetch(
        """SELECT customer_id, visitor_id FROM customer_visitors
           WHERE program_id = $1 AND customer_id = ANY($2::text[])""", pid, customers):
        known[r["customer_id"]].add(r["visitor_id"])
    new_links: set[tuple[str, str]] = set()
    visitors_of: dict[int, set[str]] = {}
    for r in pending:
        own = set()
        if r["click_id"] and named_clicks.get(r["click_id"]):
            own.add(named_clicks[r["click_id"]])
        if r["visitor_id"]:
            own.add(r["visitor_id"])
        for v in own - known[r["customer_id"]]:
            new_links.add((r["customer_id"], v))
        known[r["customer_id"]] |= own
        visitors_of[r["id"]] = set(known[r["customer_id"]])
    all_visitors = sorted({v for vs in visitors_of.values() for v in vs})
    earliest = min(r["occurred_at"] for r in pending) - pm.window
    latest = max(r["occurred_at"] for r in pending)
    clicks_of: dict[str, list[asyncpg.Record]] = defaultdict(list)
    if all_visitors:
        for c in await conn.fetch(
            """SELECT visitor_id, referrer_id, ts, click_id::text AS click_id FROM clicks
               WHERE program_id = $1 AND visitor_id = ANY($2::text[])
                 AND ts BETWEEN $3 AND $4 AND NOT is_bot AND NOT is_duplicate
               ORDER BY ts, click_id""", pid, all_visitors, earliest, latest):
            clicks_of[c["visitor_id"]].append(c)
    # Referral codes typed at checkout, by these customers, in this batch or before it: a code
    # is a touch for the conversion that carries it and for the customer's later ones.
    typed: dict[str, list[tuple[datetime, str]]] = defaultdict(list)
    for c in await conn.fetch(
            """SELECT customer_id, occurred_at, referral_code FROM conversions
               WHERE program_id = $1 AND customer_id = ANY($2::text[])
                 AND referral_code IS NOT NULL AND occurred_at BETWEEN $3 AND $4""",
            pid, customers, earliest, latest):
        typed[c["customer_id"]].append((c["occurred_at"], c["referral_code"]))
    codes = sorted({code for entries in typed.values() for _at, code in entries})
    code_referrer = {
        r["code"]: r["referrer_id"] for r in await conn.fetch(
            "SELECT code, referrer_id FROM links WHERE program_id = $1 AND code = ANY($2)",
            pid, codes)
    } if codes else {}

    touches_of: dict[int, list[TouchRow]] = {}
    for r in pending:
        if r["type"] not in CREDITED_TYPES:
            continue
        start = r["occurred_at"] - pm.window
        found = [c for v in visitors_of[r["id"]] for c in clicks_of.get(v, ())
                 if start <= c["ts"] <= r["occurred_at"]]
        found.sort(key=lambda c: (c["ts"], c["click_id"]))
        touches = [TouchRow(c["referrer_id"], c["ts"], c["click_id"],
                            "click" if c["click_id"] == r["click_id"] else "visitor")
                   for c in found]
        touches += [TouchRow(code_referrer[code], at, None, "code")
                    for at, code in typed.get(r["customer_id"], ())
                    if start <= at <= r["occurred_at"] and code in code_referrer]
        touches.sort(key=lambda t: t.ts)
        touches_of[r["id"]] = touches

    if new_links:
        # Before the fit: a visitor who converts in this batch is not a lost journey.
        await conn.executemany(
            """INSERT INTO customer_visitors (program_id, customer_id, visitor_id)
               VALUES ($1, $2, $3) ON CONFLICT DO NOTHING""",
            [(pid, c, v) for c, v in sorted(new_links)])
    fitted = None
    if pm.model in DATA_DRIVEN_MODELS:
        journeys = await load_journeys(conn, pid)
        journeys += [Journey(tuple(t.referrer_id for t in ts), conversions=1)
                     for ts in touches_of.values() if ts]
        fitted = await asyncio.get_running_loop().run_in_executor(None, fit, pm.model, journeys)

    touch_rows: list[tuple[object, ...]] = []
    credit_rows: list[tuple[object, ...]] = []
    for r in pending:
        touches = touches_of.get(r["id"], [])
        for pos, t in enumerate(touches):
            touch_rows.append((pid, r["id"], pos, t.referrer_id, t.click_id, t.ts, t.via))
        for referrer, credit in credits_for(pm.model, touches, r["occurred_at"],
                                            pm.half_life_days, fitted).items():
            credit_rows.append((pid, r["id"], referrer, pm.model, credit))
    async with conn.transaction():
        ids = [r["id"] for r in pending]
        # A re-run after a crash between batches must not add twice.
        await conn.execute("DELETE FROM touchpoints WHERE program_id = $1 AND conversion_id = "
                           "ANY($2::bigint[])", pid, ids)
        await conn.execute("DELETE FROM credits WHERE program_id = $1 AND conversion_id = "
                           "ANY($2::bigint[])", pid, ids)
        if touch_rows:
            await conn.copy_records_to_table(
                "touchpoints", records=touch_rows,
                columns=("program_id", "conversion_id", "position", "referrer_id", "click_id",
                         "ts", "via"))
        if credit_rows:
            await conn.copy_records_to_table(
                "credits", records=credit_rows,
                columns=("program_id", "conversion_id", "referrer_id", "model", "credit"))
        await conn.execute(
            "UPDATE conversions SET attributed_at = now() WHERE program_id = $1 AND id = "
            "ANY($2::bigint[])", pid, ids)
    return len(pending)


# -- reports -----------------------------------------------------------------------------------


async def attribution_report(conn: asyncpg.Connection, program_id: int,
                             models: list[str], half_life_days: float = DEFAULT_HALF_LIFE_DAYS
                             ) -> dict[str, list[dict[str, Any]]]:
    """Credited conversions and value per referrer under each model.

    Heuristic models add up per-conversion credits; Markov and Shapley give the program-level
    allocation (conversions and value shared out by removal effect / Shapley credits).
    """
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
    names = {r["id"]: r["external_id"] for r in await conn.fetch(
        "SELECT id, external_id FROM referrers WHERE program_id = $1", program_id)}
    journeys = None
    if any(m in DATA_DRIVEN_MODELS for m in models):
        journeys = await load_journeys(conn, program_id)

    def compute() -> dict[str, list[dict[str, Any]]]:
        out: dict[str, list[dict[str, Any]]] = {}
        for model in models:
            conv: dict[Hashable, float] = defaultdict(float)
            value: dict[Hashable, float] = defaultdict(float)
            fitted = fit(model, journeys or []) if model in DATA_DRIVEN_MODELS else None
            if isinstance(fitted, MarkovModel):
                total_value = float(sum(r["amount"] or 0 for r in rows))
                total_re = sum(fitted.removal_effects_.values())
                for ref, share in fitted.allocation().items():
                    conv[ref] = share
                    if total_re > 0:
                        value[ref] = total_value * fitted.removal_effects_[ref] / total_re
            else:
                for r in rows:
                    touches = [TouchRow(ref, ts, None, "click")
                               for ref, ts in zip(r["refs"], r["times"], strict=True)]
                    for ref, credit in credits_for(model, touches, r["occurred_at"],
                                                   half_life_days, fitted).items():
                        conv[ref] += credit
                        value[ref] += credit * (r["amount"] or 0)
            out[model] = sorted(
                ({"referrer": names.get(ref, str(ref)), "conversions": round(conv[ref], 9),
                  "value": round(value[ref], 6)} for ref in conv),
                key=lambda x: (-x["conversions"], x["referrer"]))
        return out

    return await asyncio.get_running_loop().run_in_executor(None, compute)


async def funnel_report(conn: asyncpg.Connection, program_id: int) -> dict[str, Any]:
    """Clicks, visitors and conversions per referrer (conversions by stored credit) and total."""
    clicks = await conn.fetch(
        """SELECT r.external_id AS referrer, count(*) AS clicks,
                  count(DISTINCT c.visitor_id) AS visitors
           FROM clicks c JOIN referrers r ON r.program_id = c.program_id AND r.id = c.referrer_id
           WHERE c.program_id = $1 AND NOT c.is_bot AND NOT c.is_duplicate
           GROUP BY r.external_id""", program_id)
    conversions = await conn.fetch(
        """SELECT r.external_id AS referrer, v.type, sum(cr.credit) AS n
           FROM credits cr
           JOIN conversions v ON v.program_id = cr.program_id AND v.id = cr.conversion_id
           JOIN referrers r ON r.program_id = cr.program_id AND r.id = cr.referrer_id
           WHERE cr.program_id = $1 GROUP BY r.external_id, v.type""", program_id)
    reversals = await conn.fetch(
        """SELECT r.external_id AS referrer, count(*) AS n
           FROM conversions x
           JOIN conversions o ON o.program_id = x.program_id AND o.event_id = x.original_event_id
           JOIN credits cr ON cr.program_id = o.program_id AND cr.conversion_id = o.id
           JOIN referrers r ON r.program_id = cr.program_id AND r.id = cr.referrer_id
           WHERE x.program_id = $1 AND x.type IN ('refund', 'chargeback')
           GROUP BY r.external_id""", program_id)
    retained = await conn.fetch(
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
    keys = ("clicks", "unique_visitors", "signups", "trials", "purchases", "renewals",
            "retained_90d", "refunds")
    per: dict[str, dict[str, float]] = defaultdict(lambda: dict.fromkeys(keys, 0.0))
    for r in clicks:
        per[r["referrer"]]["clicks"] = r["clicks"]
        per[r["referrer"]]["unique_visitors"] = r["visitors"]
    plural = {"signup": "signups", "trial": "trials", "purchase": "purchases",
              "renewal": "renewals"}
    for r in conversions:
        if r["type"] in plural:
            per[r["referrer"]][plural[r["type"]]] = round(float(r["n"]), 9)
    for r in retained:
        per[r["referrer"]]["retained_90d"] = round(float(r["n"]), 9)
    for r in reversals:
        per[r["referrer"]]["refunds"] = r["n"]
    total = dict.fromkeys(keys, 0.0)
    for row in per.values():
        for k in keys:
            total[k] += row[k]
    total["unique_visitors"] = await conn.fetchval(
        """SELECT count(DISTINCT visitor_id) FROM clicks
           WHERE program_id = $1 AND NOT is_bot AND NOT is_duplicate""", program_id)
    return {"rows": [{"referrer": k, **v} for k, v in sorted(per.items())], "total": total}

