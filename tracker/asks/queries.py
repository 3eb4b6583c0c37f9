"""SQL of the growth side: async functions taking `conn` first, returning frozen dataclasses.

Candidates (tracker/asks/candidates.py): the history the model learns from, the customers who
are never candidates, and the stored fit (candidate_models, candidate_scores).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from growth.candidates import Moment, Purchase, Referral, Share

# -- candidates --------------------------------------------------------------------------------

# Who is never a candidate in program $1: a customer or referrer (external id) a fraud flag
# names (rings, flagged conversions), the customer of a flagged conversion, and everyone a
# flagged, rejected or reversed reward touches (its referrer, its payee, the conversion's
# customer). A CTE, so the same rule serves the store (tracker.asks.candidates) and every read.
EXCLUDED_CTE = """excluded AS (
    SELECT m->>'id' AS customer_id
    FROM fraud_flags f CROSS JOIN LATERAL jsonb_array_elements(
        CASE WHEN jsonb_typeof(f.members) = 'array' THEN f.members ELSE '[]'::jsonb END) m
    WHERE f.program_id = $1 AND m->>'type' IN ('customer', 'referrer')
    UNION
    SELECT c.customer_id FROM fraud_flags f
    JOIN conversions c ON c.program_id = f.program_id AND c.id = f.conversion_id
    WHERE f.program_id = $1
    UNION
    SELECT x.customer_id FROM rewards r
    JOIN referrers e ON e.program_id = r.program_id AND e.id = r.referrer_id
    JOIN conversions c ON c.program_id = r.program_id AND c.id = r.conversion_id
    CROSS JOIN LATERAL (VALUES (e.external_id), (r.payee), (c.customer_id)) x (customer_id)
    WHERE r.program_id = $1 AND r.status IN ('flagged', 'rejected', 'reversed')
)"""

# A referred purchase is clean when no reward of it is flagged, rejected or reversed and no
# fraud flag names it.
_REFERRALS = """
    SELECT e.external_id, c.occurred_at,
           NOT EXISTS (SELECT 1 FROM rewards r
                       WHERE r.program_id = c.program_id AND r.conversion_id = c.id
                         AND r.status IN ('flagged', 'rejected', 'reversed'))
           AND c.id NOT IN (SELECT f.conversion_id FROM fraud_flags f
                            WHERE f.program_id = $1 AND f.conversion_id IS NOT NULL) AS clean
    FROM credits cr
    JOIN referrers e ON e.program_id = cr.program_id AND e.id = cr.referrer_id
    JOIN conversions c ON c.program_id = cr.program_id AND c.id = cr.conversion_id
    WHERE cr.program_id = $1 AND cr.credit > 0 AND c.type = 'purchase' AND c.occurred_at <= $2"""


@dataclass(frozen=True, slots=True)
class Watermark:
    """The newest conversion and customer event a fit has seen (0: none)."""
    conversion_id: int
    event_id: int


@dataclass(frozen=True, slots=True)
class DueProgram:
    id: int
    slug: str


@dataclass(frozen=True, slots=True)
class CandidateModel:
    kind: str
    trained_on: int
    auc_holdout: float | None
    as_of: datetime
    details: dict[str, Any]


@dataclass(frozen=True, slots=True)
class CandidateScore:
    customer_id: str
    score: float
    percentile: float
    reasons: list[dict[str, Any]]


async def purchases(conn: asyncpg.Connection, program_id: int, until: datetime
                    ) -> list[Purchase]:
    rows = await conn.fetch(
        """SELECT customer_id, occurred_at, coalesce(amount, 0) FROM conversions
           WHERE program_id = $1 AND type IN ('purchase', 'renewal') AND occurred_at <= $2""",
        program_id, until)
    return [Purchase(*r) for r in rows]


async def moments(conn: asyncpg.Connection, program_id: int, until: datetime) -> list[Moment]:
    rows = await conn.fetch(
        """SELECT customer_id, occurred_at, type, score FROM customer_events
           WHERE program_id = $1 AND occurred_at <= $2""", program_id, until)
    return [Moment(*r) for r in rows]


async def referrals(conn: asyncpg.Connection, program_id: int, until: datetime
                    ) -> list[Referral]:
    """Referred purchases credited to each referrer (its external id: a customer id)."""
    return [Referral(*r) for r in await conn.fetch(_REFERRALS, program_id, until)]


async def shares(conn: asyncpg.Connection, program_id: int, until: datetime) -> list[Share]:
    rows = await conn.fetch(
        """SELECT e.external_id, s.occurred_at FROM shares s
           JOIN referrers e ON e.program_id = s.program_id AND e.id = s.referrer_id
           WHERE s.program_id = $1 AND s.occurred_at <= $2""", program_id, until)
    return [Share(*r) for r in rows]


async def excluded_customers(conn: asyncpg.Connection, program_id: int) -> set[str]:
    rows = await conn.fetch(
        f"WITH {EXCLUDED_CTE} SELECT customer_id FROM excluded WHERE customer_id IS NOT NULL",
        program_id)
    return {r["customer_id"] for r in rows}


async def watermark(conn: asyncpg.Connection, program_id: int) -> Watermark:
    row = await conn.fetchrow(
        """SELECT (SELECT coalesce(max(id), 0) FROM conversions WHERE program_id = $1),
                  (SELECT coalesce(max(id), 0) FROM customer_events WHERE program_id = $1)""",
        program_id)
    return Watermark(int(row[0]), int(row[1]))


async def due_programs(conn: asyncpg.Connection, stale_after_s: float, settle_s: float
                       ) -> list[DueProgram]:
    """Programs never fitted, fitted more than `stale_after_s` ago, or fitted more than
    `settle_s` ago with conversions or customer events newer than the fit saw."""
    rows = await conn.fetch(
        """SELECT p.id, p.slug FROM programs p
           LEFT JOIN candidate_models m ON m.program_id = p.id
           WHERE m.program_id IS NULL
              OR m.as_of < now() - make_interval(secs => $1)
              OR (m.as_of < now() - make_interval(secs => $2) AND (
                  EXISTS (SELECT 1 FROM conversions c WHERE c.program_id = p.id
                          AND c.id > coalesce((m.details->'seen'->>'conversion_id')::bigint, 0))
                  OR EXISTS (SELECT 1 FROM customer_events v WHERE v.program_id = p.id
                          AND v.id > coalesce((m.details->'seen'->>'event_id')::bigint, 0))))
           ORDER BY p.id""", stale_after_s, settle_s)
    return [DueProgram(*r) for r in rows]


async def store_fit(conn: asyncpg.Connection, program_id: int, model: CandidateModel,
                    scores: Sequence[CandidateScore]) -> int:
    """Replace the program's fit (model and scores) in one transaction; customers excluded by
    now are dropped again before it commits. The number of scores kept."""
    async with conn.transaction():
        # The model's row first: its row lock serialises two fits of the program (the job and
        # the CLI), so the second deletes the first's scores instead of colliding with them.
        await conn.execute(
            """INSERT INTO candidate_models (program_id, kind, trained_on, auc_holdout, as_of,
                                             details)
               VALUES ($1, $2, $3, $4, $5, $6::jsonb)
               ON CONFLICT (program_id) DO UPDATE SET kind = excluded.kind,
                   trained_on = excluded.trained_on, auc_holdout = excluded.auc_holdout,
                   as_of = excluded.as_of, details = excluded.details""",
            program_id, model.kind, model.trained_on, model.auc_holdout, model.as_of,
            json.dumps(model.details))
        await conn.execute("DELETE FROM candidate_scores WHERE program_id = $1", program_id)
        await conn.copy_records_to_table(
            "candidate_scores",
            columns=["program_id", "customer_id", "score", "percentile", "reasons", "as_of"],
            records=[(program_id, s.customer_id, s.score, s.percentile, json.dumps(s.reasons),
                      model.as_of) for s in scores])
        dropped = await conn.execute(
            f"""WITH {EXCLUDED_CTE}
                DELETE FROM candidate_scores s WHERE s.program_id = $1
                  AND s.customer_id IN (SELECT customer_id FROM excluded
                                        WHERE customer_id IS NOT NULL)""", program_id)
    return len(scores) - int(dropped.split()[-1])


async def candidate_model(conn: asyncpg.Connection, program_id: int) -> CandidateModel | None:
    row = await conn.fetchrow(
        """SELECT kind, trained_on, auc_holdout, as_of, details::text FROM candidate_models
           WHERE program_id = $1""", program_id)
    if row is None:
        return None
    return CandidateModel(row[0], row[1], row[2], row[3], json.loads(row[4]))


async def top_candidates(conn: asyncpg.Connection, program_id: int, min_percentile: float
                         ) -> list[CandidateScore]:
    """Stored scores at or above `min_percentile`, best first, without anyone excluded by now
    (a flag or a rejection since the fit)."""
    rows = await conn.fetch(
        f"""WITH {EXCLUDED_CTE}
            SELECT s.customer_id, s.score, s.percentile, s.reasons::text FROM candidate_scores s
            WHERE s.program_id = $1 AND s.percentile >= $2
              AND NOT EXISTS (SELECT 1 FROM excluded x WHERE x.customer_id = s.customer_id)
            ORDER BY s.score DESC, s.customer_id""", program_id, min_percentile)
    return [CandidateScore(r[0], r[1], r[2], json.loads(r[3])) for r in rows]
