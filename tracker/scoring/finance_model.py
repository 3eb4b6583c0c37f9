"""The model of finance's decisions: fraud.supervised trained on the rewards finance approved or
rejected (not clearance's automatic decisions), over the feature rows scans stored.

Kept per program in this process and retrained only when finance has decided again since.
"""

from __future__ import annotations

import asyncio

import asyncpg

from fraud.supervised import MIN_DECISIONS, SupervisedRisk
from tracker.scoring import queries

FINANCE_ROWS = 5_000  # the latest decisions it learns from
_models: dict[int, tuple[tuple[int, object], SupervisedRisk]] = {}  # per program, by state


async def finance_model(conn: asyncpg.Connection, program_id: int) -> SupervisedRisk | None:
    """The program's model: None below MIN_DECISIONS; else trained, and on (`enabled`) when
    the decisions were enough of both kinds."""
    state = await queries.finance_decision_state(conn, program_id)
    if state.n < MIN_DECISIONS:
        return None
    key = (state.n, state.last)
    cached = _models.get(program_id)
    if cached is not None and cached[0] == key:
        return cached[1]
    decisions = await queries.finance_decisions(conn, program_id, FINANCE_ROWS)
    x = [d.features for d in decisions]
    y = [d.rejected for d in decisions]
    model = await asyncio.get_running_loop().run_in_executor(
        None, lambda: SupervisedRisk().fit(x, y))
    _models[program_id] = (key, model)
    return model
