"""What the reports endpoints answer from the stored attribution: credits per model. (The funnel
is tracker.asks.funnel: it reads asks and shares too.)"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Hashable
from typing import Any, cast

import asyncpg

from attribution.models import DATA_DRIVEN_MODELS, DEFAULT_HALF_LIFE_DAYS, Journey, MarkovModel
from tracker.scoring import queries
from tracker.scoring.credits import TouchRow, credits_for, fit, load_journeys


def half_life_days(settings: dict[str, Any]) -> float:
    """The time-decay model's half-life: the program's `time_decay_half_life_days`."""
    return float(settings.get("time_decay_half_life_days", DEFAULT_HALF_LIFE_DAYS))


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
