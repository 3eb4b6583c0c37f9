"""Referral candidates of a program: its history from the database into the growth library's
model (growth.candidates), the fit stored (candidate_models, candidate_scores; a refit replaces
them), and the report GET /api/v1/reports/candidates reads.

A customer is a candidate only while nothing marks them: a fraud flag naming them (as a
referrer or as a referred customer) or a flagged, rejected or reversed reward touching them
keeps them out when the fit is stored and again whenever the scores are read
(tracker.asks.queries.EXCLUDED_CTE).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from growth.candidates import HORIZON, History, Ranking, rank
from tracker.asks import queries
from tracker.db import PRIMARY, Replica

log = logging.getLogger(__name__)

STALE_AFTER = timedelta(hours=24)  # refit at least this often
SETTLE = timedelta(hours=1)  # and, when new conversions or events arrived, at most this often
# `percentile >= 1 - top` reads "in the top share"; the tolerance keeps 1 - 0.7
# (0.30000000000000004) from dropping a customer at exactly 0.3.
TOP_TOLERANCE = 1e-9


@dataclass(frozen=True, slots=True)
class Refit:
    program_id: int
    kind: str
    trained_on: int
    positives: int
    auc_holdout: float | None
    scored: int

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "trained_on": self.trained_on, "positives": self.positives,
                "auc_holdout": self.auc_holdout, "scored": self.scored}


async def load_history(conn: asyncpg.Connection, program_id: int, until: datetime) -> History:
    """Everything the features read, up to `until`, from one snapshot (the caller's, inside a
    transaction)."""
    snapshot = conn.transaction() if conn.is_in_transaction() else conn.transaction(
        isolation="repeatable_read", readonly=True)
    async with snapshot:
        return History(await queries.purchases(conn, program_id, until),
                       await queries.moments(conn, program_id, until),
                       await queries.referrals(conn, program_id, until),
                       await queries.shares(conn, program_id, until))


async def refresh(conn: asyncpg.Connection, program_id: int, *, as_of: datetime | None = None,
                  horizon: timedelta = HORIZON, seed: int = 0, replica: Replica = PRIMARY,
                  catch_up_s: float = 0.0) -> Refit:
    """Fit the program's candidates as of `as_of` (now) and store them in place of the last
    fit. What it learns from is read on `replica` (one snapshot; the primary without one),
    the watermark of what it saw with it, so a conversion the replica lacked still makes the
    program due; the number crunching runs in an executor, outside any transaction."""
    as_of = as_of or datetime.now(UTC)
    async with replica.view(conn, catch_up_s=catch_up_s) as read:
        seen = await queries.watermark(read.conn, program_id)
        history = await load_history(read.conn, program_id, as_of)
        exclude = frozenset(await queries.excluded_customers(read.conn, program_id))
    fit = functools.partial(rank, history, as_of, horizon=horizon, exclude=exclude, seed=seed)
    ranking: Ranking = await asyncio.get_running_loop().run_in_executor(None, fit)
    details = {**ranking.details, "cutoff": ranking.cutoff.isoformat(),
               "positives": ranking.positives, "excluded": len(exclude),
               "seen": {"conversion_id": seen.conversion_id, "event_id": seen.event_id}}
    model = queries.CandidateModel(ranking.kind, ranking.trained_on, ranking.auc_holdout,
                                   as_of, details)
    scores = [queries.CandidateScore(c.customer, c.score, c.percentile,
                                     [r.as_dict() for r in c.reasons]) for c in ranking.items]
    kept = await queries.store_fit(conn, program_id, model, scores)
    return Refit(program_id, ranking.kind, ranking.trained_on, ranking.positives,
                 ranking.auc_holdout, kept)


async def refresh_due(conn: asyncpg.Connection, *, stale_after: timedelta = STALE_AFTER,
                      settle: timedelta = SETTLE, replica: Replica = PRIMARY) -> list[Refit]:
    """Refit every program whose fit is missing, old, or behind new conversions or events."""
    done = []
    for program in await queries.due_programs(conn, stale_after.total_seconds(),
                                              settle.total_seconds()):
        try:
            done.append(await refresh(conn, program.id, replica=replica))
        except ValueError:  # a fit the data defeated: the other programs still get theirs
            log.exception("candidates of %s could not be fitted", program.slug)
            continue
        log.info("candidates of %s refitted: %s", program.slug, done[-1].as_dict())
    return done


async def report(conn: asyncpg.Connection, program_id: int, top: float) -> dict[str, Any]:
    """The best `top` share of the stored candidates (an empty list and `model: null` before
    the first fit)."""
    model = await queries.candidate_model(conn, program_id)
    if model is None:
        return {"model": None, "items": []}
    items = await queries.top_candidates(conn, program_id, 1.0 - top - TOP_TOLERANCE)
    return {
        "model": {"kind": model.kind, "trained_on": model.trained_on,
                  "auc_holdout": model.auc_holdout, "as_of": model.as_of.isoformat(),
                  "positives": model.details.get("positives"),
                  "why": model.details.get("why")},
        "items": [{"customer": s.customer_id, "score": s.score, "percentile": s.percentile,
                   "reasons": s.reasons} for s in items],
    }
