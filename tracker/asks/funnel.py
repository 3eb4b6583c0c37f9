"""The funnel report (GET /api/v1/reports/funnel): asked -> shared -> clicks -> unique visitors
-> signups -> trials -> purchases -> retained at 90 days, with the rate between stages, by
referrer, channel or trigger, and the total, for a since/until range.

What each stage counts (the OpenAPI document says the same to users):
- asked: asks sent (handed to the merchant's messaging), by `sent_at`;
- shared: shares (share page or POST /api/v1/shares), by `occurred_at`;
- clicks: clicks that count (no bots, no duplicates); unique_visitors: their distinct visitors;
- signups, trials, purchases (and renewals): conversions by their stored attribution credit
  (a conversion shared by two referrers counts half for each), by `occurred_at`;
- retained_90d: a referred customer's first purchase (by its credit) when the customer bought
  or renewed again 90 days or more after it, counted at the first purchase's time;
- refunds: refunds and chargebacks of credited conversions, by their time.
Groups: `referrer` (an ask's customer is its referrer); `channel` (a share's channel, a click's
link's channel, a conversion's: that of the referrer's last click among its touchpoints; asks
have none, so `asked` is null in channel rows); `trigger` (the trigger type of the share's ask,
else of the referrer's latest ask sent before the share, click or conversion, at most
ASK_REACH (30 days) before it, as the breakdown report reads it; null: none).
`rates[stage]` is that stage over the one before it (null when that one is 0 or null).
"""

from __future__ import annotations

import functools
import itertools
from datetime import datetime
from typing import Any

import asyncpg

from tracker.asks import queries
from tracker.scoring.queries import VISITOR_PARTS, report_reads

STAGES = ("asked", "shared", "clicks", "unique_visitors", "signups", "trials", "purchases",
          "retained_90d")
EXTRA = ("renewals", "refunds")  # kept from the earlier report's fields
GROUPS = ("referrer", "channel", "trigger")
_COUNTED = ("asked", "shared", "clicks", "refunds")  # whole numbers; the others are credit


def rates(row: dict[str, Any]) -> dict[str, float | None]:
    """Each stage over the one before it."""
    out: dict[str, float | None] = {}
    for before, stage in itertools.pairwise(STAGES):
        prev, here = row.get(before), row.get(stage)
        out[stage] = (round(here / prev, 6) if prev and here is not None else None)
    return out


def _value(stage: str, n: float) -> float | int:
    return round(n) if stage in _COUNTED else round(n, 9)


async def funnel_report(db: asyncpg.Connection | asyncpg.Pool, program_id: int, *,
                        since: datetime | None = None, until: datetime | None = None,
                        by: str = "referrer") -> dict[str, Any]:
    """`{by, rows: [{<by>: key, <stage>: n, ..., rates}], total: {...}}`. Given a pool, the
    stages' reads run a few at once (report_reads)."""
    per: dict[str | None, dict[str, Any]] = {}
    total: dict[str, Any] = dict.fromkeys((*STAGES, *EXTRA), 0)

    def zero() -> dict[str, Any]:
        return dict.fromkeys((*STAGES, *EXTRA), 0) | ({"asked": None} if by == "channel" else {})

    # On a pool the clicks by group, the longest read, runs in parts of disjoint visitors
    # whose counts add up; the longest reads go first.
    split = VISITOR_PARTS if isinstance(db, asyncpg.Pool) else 1
    reads = [(stage, group, part, parts)
             for stage in ("clicks", "asked", "shared", "signups", "trials", "purchases",
                           "retained_90d", *EXTRA)
             for group in (by, "total") if not (group == "channel" and stage == "asked")
             for parts in [split if stage == "clicks" and group != "total" else 1]
             for part in range(parts)]
    counts = await report_reads(db, *(
        functools.partial(queries.funnel_stage, stage=stage, program_id=program_id,
                          since=since, until=until, by=group, part=part, parts=parts)
        for stage, group, part, parts in reads))
    for (stage, group, _, _), stage_counts in zip(reads, counts, strict=True):
        for count in stage_counts:
            row = total if group == "total" else per.setdefault(count.key, zero())
            row[stage] += count.n
            if stage == "clicks":
                row["unique_visitors"] += count.visitors
    for row in (*per.values(), total):
        row.update({stage: _value(stage, n) for stage, n in row.items() if n is not None})
    rows = [{by: key, **row, "rates": rates(row)}
            for key, row in sorted(per.items(), key=lambda kv: (kv[0] is None, kv[0] or ""))]
    return {"by": by, "rows": rows, "total": {**total, "rates": rates(total)}}
