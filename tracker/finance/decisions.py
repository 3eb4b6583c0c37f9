"""The decisions report: how often finance overturns the fraud engine, per reason code
(GET /api/v1/reports/decisions, DESIGN section 5), so that the engine's reasons can be judged.

Definitions, per reason code (a reward *carries* a code when its stored `reasons` name it;
a reward carries several codes and counts under each; a held reward without reasons counts
under `none`):

- `flagged`: rewards carrying it that clearance flagged for finance;
- `rejected`: rewards carrying it that clearance rejected automatically (actor
  `system:clearance`); `held` = flagged + rejected (the engine's verdict was against them);
- `awaiting`: flagged ones still waiting for finance (status `flagged`);
- `decided` = held - awaiting: held rewards whose verdict stands decided, by finance or
  automatically;
- `overturned`: held rewards that finance approved at least once (a completed `reward.approve`
  decision in the audit log by a person, not the system), whatever happened after;
- `overturn_rate` = overturned / decided, null when nothing is decided;
- `money` per currency of the held rewards (minor units, 0 included): `held` (sum of held
  rewards' amounts) and `overturned` (sum of overturned ones').

`total` is the same over all held rewards (each counted once). The metric
`refguard_reward_overturns_total{reason}` counts the same approvals as events, as they happen.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import asyncpg

from tracker.finance import queries


def _row() -> dict[str, Any]:
    return {"flagged": 0, "rejected": 0, "held": 0, "awaiting": 0, "decided": 0,
            "overturned": 0, "overturn_rate": None,
            "money": {"held": defaultdict(int), "overturned": defaultdict(int)}}


def _finish(row: dict[str, Any]) -> dict[str, Any]:
    row["held"] = row["flagged"] + row["rejected"]
    row["decided"] = row["held"] - row["awaiting"]
    row["overturn_rate"] = (round(row["overturned"] / row["decided"], 6)
                            if row["decided"] else None)
    row["money"] = {k: dict(sorted(v.items())) for k, v in row["money"].items()}
    return row


async def decisions_report(conn: asyncpg.Connection, program_id: int) -> dict[str, Any]:
    """`{reasons: [{code, flagged, rejected, held, awaiting, decided, overturned,
    overturn_rate, money {held, overturned}}], total {...}}`, reasons by code."""
    by_code: dict[str, dict[str, Any]] = defaultdict(_row)
    for r in await queries.held_rewards_by_reason(conn, program_id):
        row = by_code[r.code]
        for key in ("flagged", "rejected", "awaiting", "overturned"):
            row[key] += getattr(r, key)
        row["money"]["held"][r.currency] += r.held_amount
        row["money"]["overturned"][r.currency] += r.overturned_amount
    total = _row()
    for r in await queries.held_rewards_by_reason(conn, program_id, by_reason=False):
        for key in ("flagged", "rejected", "awaiting", "overturned"):
            total[key] += getattr(r, key)
        total["money"]["held"][r.currency] += r.held_amount
        total["money"]["overturned"][r.currency] += r.overturned_amount
    return {"reasons": [{"code": code, **_finish(row)} for code, row in sorted(by_code.items())],
            "total": _finish(total)}
