"""What the reports endpoints answer from the stored attribution: credits per model, the funnel."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Hashable
from typing import Any, cast

import asyncpg

from attribution.models import DATA_DRIVEN_MODELS, DEFAULT_HALF_LIFE_DAYS, Journey, MarkovModel
from tracker.scoring import queries
from tracker.scoring.credits import TouchRow, credits_for, fit, load_journeys

FUNNEL_KEYS = ("clicks", "unique_visitors", "signups", "trials", "purchases", "renewals",
               "retained_90d", "refunds")
PLURAL = {"signup": "signups", "trial": "trials", "purchase": "purchases", "renewal": "renewals"}


async def attribution_report(conn: asyncpg.Connection, program_id: int,
                             models: list[str], half_life_days: float = DEFAULT_HALF_LIFE_DAYS
                             ) -> dict[str, list[dict[str, Any]]]:
    """Credited conversions and value per referrer under each model.

    Heuristic models add up per-conversion credits; Markov and Shapley give the program-level
    allocation (conversions and value shared out by removal effect / Shapley credits).
    """
    rows = await queries.credited_journeys(conn, program_id)
    names = await queries.referrer_external_ids(conn, program_id)
    journeys = None
    if any(m in DATA_DRIVEN_MODELS for m in models):
        journeys = await load_journeys(conn, program_id)

    def compute() -> dict[str, list[dict[str, Any]]]:
        return {model: _model_rows(model, rows, names, journeys or [], half_life_days)
                for model in models}

    return await asyncio.get_running_loop().run_in_executor(None, compute)


def _model_rows(model: str, rows: list[queries.CreditedJourney], names: dict[int, str],
                journeys: list[Journey], half_life_days: float) -> list[dict[str, Any]]:
    conv: dict[Hashable, float] = defaultdict(float)
    value: dict[Hashable, float] = defaultdict(float)
    fitted = fit(model, journeys) if model in DATA_DRIVEN_MODELS else None
    if isinstance(fitted, MarkovModel):
        total_value = float(sum(r.amount or 0 for r in rows))
        total_re = sum(fitted.removal_effects_.values())
        for ref, share in fitted.allocation().items():
            conv[ref] = share
            if total_re > 0:
                value[ref] = total_value * fitted.removal_effects_[ref] / total_re
    else:
        for r in rows:
            touches = [TouchRow(ref, ts, None, "click")
                       for ref, ts in zip(r.referrers, r.times, strict=True)]
            for ref, credit in credits_for(model, touches, r.occurred_at,
                                           half_life_days, fitted).items():
                conv[ref] += credit
                value[ref] += credit * (r.amount or 0)
    return sorted(
        ({"referrer": names.get(cast(int, ref), str(ref)), "conversions": round(conv[ref], 9),
          "value": round(value[ref], 6)} for ref in conv),
        key=lambda x: (-x["conversions"], x["referrer"]))


async def funnel_report(conn: asyncpg.Connection, program_id: int) -> dict[str, Any]:
    """Clicks, visitors and conversions per referrer (conversions by stored credit) and total."""
    clicks = await queries.funnel_clicks(conn, program_id)
    conversions = await queries.funnel_conversions(conn, program_id)
    reversals = await queries.funnel_reversals(conn, program_id)
    retained = await queries.funnel_retained(conn, program_id)
    per: dict[str, dict[str, float]] = defaultdict(lambda: dict.fromkeys(FUNNEL_KEYS, 0.0))
    for c in clicks:
        per[c.referrer]["clicks"] = c.clicks
        per[c.referrer]["unique_visitors"] = c.visitors
    for v in conversions:
        if v.type in PLURAL:
            per[v.referrer][PLURAL[v.type]] = round(float(v.credit), 9)
    for k in retained:
        per[k.referrer]["retained_90d"] = round(float(k.credit), 9)
    for x in reversals:
        per[x.referrer]["refunds"] = x.n
    total = dict.fromkeys(FUNNEL_KEYS, 0.0)
    for row in per.values():
        for key in FUNNEL_KEYS:
            total[key] += row[key]
    total["unique_visitors"] = await queries.funnel_unique_visitors(conn, program_id)
    return {"rows": [{"referrer": k, **v} for k, v in sorted(per.items())], "total": total}
