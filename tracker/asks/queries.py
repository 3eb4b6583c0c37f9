"""The SQL of asks: the triggers the asks job takes up (customer events and purchases), what is
known of a customer when deciding (candidate score, fraud, earlier asks), the asks themselves
and their list with the derived statuses.

Async functions that take `conn` first and return frozen dataclasses; the transaction is the
caller's (tracker.asks.asks).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import asyncpg

Source = Literal["event", "conversion"]

# A customer's asks that count for the cooldown and the cap: the ones that were (or are being)
# sent. An ask suppressed or expired never reached the customer.
_COUNTED = "('queued', 'sent')"


@dataclass(frozen=True, slots=True)
class Trigger:
    """A moment the asks job takes up: a customer event or a purchase conversion."""

    source: Source
    id: int
    customer_id: str
    type: str  # the event's type; "purchase" for a purchase
    score: float | None  # the event's score (a purchase has none)
    occurred_at: datetime
    nth: int | None  # a purchase: the customer's nth purchase by occurred_at (then id)


async def programs_with_asks(conn: asyncpg.Connection) -> list[str]:
    """Slugs of the programs whose settings have `asks`."""
    rows = await conn.fetch("SELECT slug FROM programs WHERE settings ? 'asks' ORDER BY id")
    return [r["slug"] for r in rows]


async def has_candidate_model(conn: asyncpg.Connection, program_id: int) -> bool:
    return bool(await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM candidate_models WHERE program_id = $1)", program_id))


async def untaken_triggers(conn: asyncpg.Connection, program_id: int, *, within_hours: int,
                           late_only: bool, limit: int) -> list[Trigger]:
    """Events and purchases not yet taken up (asked_at IS NULL), up to `limit` of each, oldest
    first by id; `late_only`: only those whose deadline (occurred_at + within_hours) passed."""
    rows = await conn.fetch(
        """(SELECT 'event' AS source, e.id, e.customer_id, e.type, e.score, e.occurred_at,
                   NULL::bigint AS nth
            FROM customer_events e
            WHERE e.program_id = $1 AND e.asked_at IS NULL
              AND (NOT $3 OR e.occurred_at + make_interval(hours => $2) <= now())
            ORDER BY e.id LIMIT $4)
           UNION ALL
           (SELECT 'conversion', c.id, c.customer_id, 'purchase', NULL, c.occurred_at,
                   (SELECT count(*) FROM conversions o
                    WHERE o.program_id = c.program_id AND o.customer_id = c.customer_id
                      AND o.type = 'purchase'
                      AND (o.occurred_at, o.id) <= (c.occurred_at, c.id))
            FROM conversions c
            WHERE c.program_id = $1 AND c.asked_at IS NULL AND c.type = 'purchase'
              AND (NOT $3 OR c.occurred_at + make_interval(hours => $2) <= now())
            ORDER BY c.id LIMIT $4)""",
        program_id, within_hours, late_only, limit)
    return [Trigger(r["source"], r["id"], r["customer_id"], r["type"], r["score"],
                    r["occurred_at"], r["nth"]) for r in rows]


async def mark_taken(conn: asyncpg.Connection, program_id: int, event_ids: list[int],
                     conversion_ids: list[int]) -> None:
    """The asks job has taken these up (in the transaction that stores what it decided)."""
    await conn.execute(
        """UPDATE customer_events SET asked_at = now()
           WHERE program_id = $1 AND id = ANY($2::bigint[]) AND asked_at IS NULL""",
        program_id, event_ids)
    await conn.execute(
        """UPDATE conversions SET asked_at = now()
           WHERE program_id = $1 AND id = ANY($2::bigint[]) AND asked_at IS NULL""",
        program_id, conversion_ids)


async def percentiles(conn: asyncpg.Connection, program_id: int,
                      customers: list[str]) -> dict[str, float]:
    """The candidate percentile of these customers (the scored ones only)."""
    rows = await conn.fetch(
        """SELECT customer_id, percentile FROM candidate_scores
           WHERE program_id = $1 AND customer_id = ANY($2::text[])""", program_id, customers)
    return {r["customer_id"]: float(r["percentile"]) for r in rows}


async def fraud_marks(conn: asyncpg.Connection, program_id: int,
                      customers: list[str]) -> dict[str, str]:
    """Why each of these customers must never be asked, for those with a reason:
    `fraud_flag` (a member of a fraud flag, as a customer or a referrer), else
    `rejected_reward` or `reversed_reward` (a reward rejected or reversed that they were paid,
    earned as a referrer, or that rested on their own conversion)."""
    flagged = await conn.fetch(
        """SELECT DISTINCT m->>'id' AS id
           FROM fraud_flags f, jsonb_array_elements(f.members) m
           WHERE f.program_id = $1 AND m->>'type' IN ('customer', 'referrer')
             AND m->>'id' = ANY($2::text[])""", program_id, customers)
    out = {r["id"]: "fraud_flag" for r in flagged}
    rewards = await conn.fetch(
        """SELECT DISTINCT x.who, w.status
           FROM rewards w
           JOIN referrers f ON f.program_id = w.program_id AND f.id = w.referrer_id
           JOIN conversions c ON c.program_id = w.program_id AND c.id = w.conversion_id
           CROSS JOIN LATERAL (VALUES (w.payee), (f.external_id), (c.customer_id)) x (who)
           WHERE w.program_id = $1 AND w.status IN ('rejected', 'reversed')
             AND x.who = ANY($2::text[])
           ORDER BY w.status""", program_id, customers)
    for r in rewards:  # rejected before reversed: the graver word
        out.setdefault(r["who"], f"{r['status']}_reward")
    return out


@dataclass(frozen=True, slots=True)
class AskHistory:
    recent: int  # asks counted (queued or sent) created within the cooldown
    total: int  # asks counted ever


async def ask_history(conn: asyncpg.Connection, program_id: int, customer_id: str,
                      cooldown_days: int) -> AskHistory:
    row = await conn.fetchrow(
        f"""SELECT count(*) FILTER (
                       WHERE created_at > now() - make_interval(days => $3)) AS recent,
                   count(*) AS total
            FROM asks WHERE program_id = $1 AND customer_id = $2 AND status IN {_COUNTED}""",
        program_id, customer_id, cooldown_days)
    return AskHistory(int(row["recent"]), int(row["total"]))


async def insert_ask(conn: asyncpg.Connection, program_id: int, trigger: Trigger, *,
                     referrer_id: int | None, deadline: datetime, status: str,
                     reason: str | None) -> int | None:
    """The trigger's ask; None when it has one already (one ask per trigger)."""
    ask_id: int | None = await conn.fetchval(
        """INSERT INTO asks (program_id, customer_id, referrer_id, trigger_source, trigger_id,
                             trigger_type, trigger_score, occurred_at, deadline, status, reason)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
           ON CONFLICT (program_id, trigger_source, trigger_id) DO NOTHING
           RETURNING id""",
        program_id, trigger.customer_id, referrer_id, trigger.source, trigger.id, trigger.type,
        trigger.score, trigger.occurred_at, deadline, status, reason)
    return ask_id


# -- the list (GET /api/v1/asks) ---------------------------------------------------------------

# What an ask led to, furthest stage first; only a sent ask has stages beyond `sent`. Shares
# count when made in answer to it (ask_id) or by its referrer after it was sent; clicks and
# conversions credited to the referrer after it was sent (bots' clicks, e.g. a messenger's link
# preview, are not a person clicking).
_STAGE = """
CASE WHEN a.status <> 'sent' THEN a.status
     WHEN EXISTS (SELECT 1 FROM credits x
                  JOIN conversions c ON c.program_id = x.program_id AND c.id = x.conversion_id
                  WHERE x.program_id = a.program_id AND x.referrer_id = a.referrer_id
                    AND c.occurred_at >= a.sent_at
                    AND c.type IN ('signup', 'trial', 'purchase', 'renewal'))
          THEN 'converted'
     WHEN EXISTS (SELECT 1 FROM clicks k
                  WHERE k.program_id = a.program_id AND k.referrer_id = a.referrer_id
                    AND k.ts >= a.sent_at AND NOT k.is_bot)
          THEN 'clicked'
     WHEN EXISTS (SELECT 1 FROM shares s
                  WHERE s.program_id = a.program_id
                    AND (s.ask_id = a.id
                         OR (s.referrer_id = a.referrer_id AND s.occurred_at >= a.sent_at)))
          THEN 'shared'
     ELSE 'sent' END"""
STAGES = ("queued", "sent", "shared", "clicked", "converted", "expired", "suppressed")


@dataclass(frozen=True, slots=True)
class AskItem:
    id: int
    program_id: int
    program: str
    customer_id: str
    referrer_id: int | None
    trigger_type: str
    trigger_score: float | None
    occurred_at: datetime
    status: str  # STAGES: the ask's own status, or how far a sent one went
    reason: str | None
    deadline: datetime
    sent_at: datetime | None
    created_at: datetime


async def list_asks(conn: asyncpg.Connection | asyncpg.Pool, *, program_id: int | None,
                    status: str | None, after: int, limit: int) -> list[AskItem]:
    """Asks by program and (derived) status, paged by id."""
    rows = await conn.fetch(
        f"""SELECT * FROM (
                SELECT a.id, a.program_id, p.slug AS program, a.customer_id, a.referrer_id,
                       a.trigger_type, a.trigger_score, a.occurred_at, {_STAGE} AS stage,
                       a.reason, a.deadline, a.sent_at, a.created_at
                FROM asks a JOIN programs p ON p.id = a.program_id
                WHERE ($1::bigint IS NULL OR a.program_id = $1) AND a.id > $3
                  AND ($2::text IS NULL OR a.status = CASE
                       WHEN $2 IN ('shared', 'clicked', 'converted') THEN 'sent' ELSE $2 END)
                ) t
            WHERE $2::text IS NULL OR t.stage = $2
            ORDER BY t.id LIMIT $4""",
        program_id, status, after, limit)
    return [AskItem(r["id"], r["program_id"], r["program"], r["customer_id"], r["referrer_id"],
                    r["trigger_type"], r["trigger_score"], r["occurred_at"], r["stage"],
                    r["reason"], r["deadline"], r["sent_at"], r["created_at"]) for r in rows]
