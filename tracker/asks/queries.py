"""The SQL of the growth side (tracker/asks/): async functions that take `conn` first and
return frozen dataclasses; the transaction is the caller's.

- Asks (tracker.asks.asks): the triggers the asks job takes up (customer events and purchases),
  what is known of a customer when deciding (candidate score, fraud, earlier asks), the asks
  themselves and their list with the derived statuses.
- Candidates (tracker.asks.candidates): the history the model learns from, the customers who
  are never candidates, and the stored fit (candidate_models, candidate_scores).
- Customers' events (tracker.asks.events: the API one at a time, `refguard import --events` in
  batches) and shares (tracker.asks.shares).
- The share page (tracker.asks.sharing) and the funnel report (tracker.asks.funnel).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import asyncpg

from growth import candidates as growth
from tracker.errors import NotFound
from tracker.intake.queries import batch_statuses
from tracker.scoring.queries import ASK_REACH, visitor_part, visitor_part_args

# -- asks --------------------------------------------------------------------------------------

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
    """Why each of these customers must never be asked (EXCLUDED_CTE), for those with a
    reason; the gravest of EXCLUSION_REASONS when there are several."""
    rows = await conn.fetch(
        f"""WITH {EXCLUDED_CTE}
            SELECT customer_id, array_agg(reason) AS reasons FROM excluded
            WHERE customer_id = ANY($2::text[]) GROUP BY customer_id""", program_id, customers)
    return {r["customer_id"]: min(r["reasons"], key=EXCLUSION_REASONS.index) for r in rows}


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


# -- candidates --------------------------------------------------------------------------------

# Who is never a candidate, and never asked, in program $1, and why: a customer or referrer
# (external id) a fraud flag names (rings, flagged conversions, and the referrers on the anomaly
# watch list: finance looks at an unusual referrer before anyone asks them for more referrals)
# or the customer of a flagged conversion (`fraud_flag`), and everyone a flagged, rejected or
# reversed reward touches: its referrer, its payee, the conversion's customer
# (`flagged_reward`, `rejected_reward`, `reversed_reward`). A CTE, so the same rule serves the
# candidates' store and reads (tracker.asks.candidates) and the asks job's suppression
# (tracker.asks.asks).
EXCLUDED_CTE = """excluded AS (
    SELECT m->>'id' AS customer_id, 'fraud_flag' AS reason
    FROM fraud_flags f CROSS JOIN LATERAL jsonb_array_elements(
        CASE WHEN jsonb_typeof(f.members) = 'array' THEN f.members ELSE '[]'::jsonb END) m
    WHERE f.program_id = $1 AND m->>'type' IN ('customer', 'referrer')
    UNION
    SELECT c.customer_id, 'fraud_flag' FROM fraud_flags f
    JOIN conversions c ON c.program_id = f.program_id AND c.id = f.conversion_id
    WHERE f.program_id = $1
    UNION
    SELECT x.customer_id, r.status || '_reward' FROM rewards r
    JOIN referrers e ON e.program_id = r.program_id AND e.id = r.referrer_id
    JOIN conversions c ON c.program_id = r.program_id AND c.id = r.conversion_id
    CROSS JOIN LATERAL (VALUES (e.external_id), (r.payee), (c.customer_id)) x (customer_id)
    WHERE r.program_id = $1 AND r.status IN ('flagged', 'rejected', 'reversed')
)"""
# The graver reason first when a customer has several.
EXCLUSION_REASONS = ("fraud_flag", "rejected_reward", "reversed_reward", "flagged_reward")

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
                    ) -> list[growth.Purchase]:
    rows = await conn.fetch(
        """SELECT customer_id, occurred_at, coalesce(amount, 0) FROM conversions
           WHERE program_id = $1 AND type IN ('purchase', 'renewal') AND occurred_at <= $2""",
        program_id, until)
    return [growth.Purchase(*r) for r in rows]


async def moments(conn: asyncpg.Connection, program_id: int, until: datetime
                  ) -> list[growth.Moment]:
    rows = await conn.fetch(
        """SELECT customer_id, occurred_at, type, score FROM customer_events
           WHERE program_id = $1 AND occurred_at <= $2""", program_id, until)
    return [growth.Moment(*r) for r in rows]


async def referrals(conn: asyncpg.Connection, program_id: int, until: datetime
                    ) -> list[growth.Referral]:
    """Referred purchases credited to each referrer (its external id: a customer id)."""
    return [growth.Referral(*r) for r in await conn.fetch(_REFERRALS, program_id, until)]


async def shares(conn: asyncpg.Connection, program_id: int, until: datetime
                 ) -> list[growth.Share]:
    rows = await conn.fetch(
        """SELECT e.external_id, s.occurred_at FROM shares s
           JOIN referrers e ON e.program_id = s.program_id AND e.id = s.referrer_id
           WHERE s.program_id = $1 AND s.occurred_at <= $2""", program_id, until)
    return [growth.Share(*r) for r in rows]


async def excluded_customers(conn: asyncpg.Connection, program_id: int) -> set[str]:
    rows = await conn.fetch(
        f"WITH {EXCLUDED_CTE} SELECT DISTINCT customer_id FROM excluded "
        "WHERE customer_id IS NOT NULL",
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


# -- customers' events -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Event:
    """A stored customer event, as the API answers it."""

    id: int
    program: str
    event_id: str
    customer_id: str
    type: str
    occurred_at: datetime
    score: float | None
    properties: dict[str, Any]
    source: str
    received_at: datetime


@dataclass(frozen=True, slots=True)
class EventRow:
    """What is stored of one event (validated already: tracker.asks.events.parse_event)."""

    program_id: int
    event_id: str
    customer_id: str
    type: str
    occurred_at: datetime
    score: float | None
    properties: str  # canonical JSON text of an object
    body_hash: bytes


async def store_events(conn: asyncpg.Connection, rows: list[EventRow], *,
                       source: str) -> list[str]:
    """Many events in two statements; per row "created", "existing" or "conflict".

    Idempotent on (program, event_id) as conversions are (intake.queries.store_conversions):
    the first body stored under an event id wins, the same body again is "existing", another
    body a "conflict" (also within one batch). Concurrent stores of one event store one row:
    ON CONFLICT waits for the other transaction, then sees its row."""
    columns = (
        list(range(len(rows))), [r.program_id for r in rows], [r.event_id for r in rows],
        [r.customer_id for r in rows], [r.type for r in rows], [r.occurred_at for r in rows],
        [r.score for r in rows], [r.properties for r in rows], [r.body_hash for r in rows],
    )
    batch = """unnest($1::int[], $2::bigint[], $3::text[], $4::text[], $5::text[],
                      $6::timestamptz[], $7::float8[], $8::text[], $9::bytea[])
               AS b(n, program_id, event_id, customer_id, type, occurred_at, score,
                    properties, body_hash)"""
    async with conn.transaction():
        created = await conn.fetch(
            f"""INSERT INTO customer_events (program_id, event_id, customer_id, type,
                    occurred_at, score, properties, body_hash, source)
                SELECT DISTINCT ON (program_id, event_id) program_id, event_id, customer_id,
                       type, occurred_at, score, properties::jsonb, body_hash, $10
                FROM {batch} ORDER BY program_id, event_id, n
                ON CONFLICT (program_id, event_id) DO NOTHING
                RETURNING program_id, event_id""", *columns, source)
        stored = await conn.fetch(
            f"""SELECT b.n, e.body_hash = b.body_hash AS same FROM {batch}
                JOIN customer_events e
                  ON e.program_id = b.program_id AND e.event_id = b.event_id""",
            *columns)
    return batch_statuses([(r.program_id, r.event_id) for r in rows],
                          {(r["program_id"], r["event_id"]) for r in created},
                          {r["n"]: r["same"] for r in stored})


async def get_event(conn: asyncpg.Connection, program_id: int, event_id: str) -> Event:
    row = await conn.fetchrow(
        """SELECT e.id, p.slug AS program, e.event_id, e.customer_id, e.type, e.occurred_at,
                  e.score, e.properties::text AS properties, e.source, e.received_at
           FROM customer_events e JOIN programs p ON p.id = e.program_id
           WHERE e.program_id = $1 AND e.event_id = $2""", program_id, event_id)
    if row is None:
        raise NotFound("event")
    return Event(**{**dict(row), "properties": json.loads(row["properties"])})


# -- shares ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Share:
    id: int
    program: str
    referrer: str  # external id
    channel: str
    ask_id: int | None
    occurred_at: datetime
    source: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class AskOwner:
    """Whether an ask was made to a referrer: to it as a referrer, or (made before the
    referrer existed) to the customer whose id is the referrer's external id."""

    ask_id: int
    theirs: bool


async def ask_owner(conn: asyncpg.Connection, program_id: int, ask_id: int,
                    referrer_id: int) -> AskOwner:
    row = await conn.fetchrow(
        """SELECT a.id, coalesce(a.referrer_id = $3,
                                 a.referrer_id IS NULL AND a.customer_id = r.external_id,
                                 false) AS theirs
           FROM asks a LEFT JOIN referrers r ON r.program_id = a.program_id AND r.id = $3
           WHERE a.program_id = $1 AND a.id = $2""", program_id, ask_id, referrer_id)
    if row is None:
        raise NotFound("ask")
    return AskOwner(row["id"], bool(row["theirs"]))


async def insert_share(conn: asyncpg.Connection, program_id: int, referrer_id: int, *,
                       channel: str, occurred_at: datetime, source: str,
                       ask_id: int | None) -> Share:
    row = await conn.fetchrow(
        """WITH s AS (
               INSERT INTO shares (program_id, referrer_id, channel, ask_id, occurred_at, source)
               VALUES ($1, $2, $3, $4, $5, $6)
               RETURNING id, program_id, referrer_id, channel, ask_id, occurred_at, source,
                         created_at)
           SELECT s.id, p.slug AS program, r.external_id AS referrer, s.channel, s.ask_id,
                  s.occurred_at, s.source, s.created_at
           FROM s JOIN programs p ON p.id = s.program_id
           JOIN referrers r ON r.program_id = s.program_id AND r.id = s.referrer_id""",
        program_id, referrer_id, channel, ask_id, occurred_at, source)
    assert row is not None  # noqa: S101 (INSERT ... RETURNING under foreign keys)
    return Share(**dict(row))


# -- share page ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ShareReferrer:
    program_id: int
    program: str  # slug
    program_name: str
    destination_domains: list[str]
    settings: dict[str, Any]
    referrer_id: int
    external_id: str
    name: str | None


async def share_referrer(conn: asyncpg.Connection, program_id: int, referrer_id: int
                         ) -> ShareReferrer | None:
    row = await conn.fetchrow(
        """SELECT p.id AS program_id, p.slug, p.name AS program_name, p.destination_domains,
                  p.settings::text AS settings, r.id AS referrer_id, r.external_id, r.name
           FROM referrers r JOIN programs p ON p.id = r.program_id
           WHERE r.program_id = $1 AND r.id = $2""", program_id, referrer_id)
    if row is None:
        return None
    return ShareReferrer(row["program_id"], row["slug"], row["program_name"],
                         list(row["destination_domains"]), json.loads(row["settings"]),
                         row["referrer_id"], row["external_id"], row["name"])


async def lock_referrer(conn: asyncpg.Connection, program_id: int, referrer_id: int) -> None:
    """Serialises the share page's writes for one referrer (its channel links, its shares'
    rate limit) until the transaction ends; foreign-key checks (KEY SHARE) are not blocked."""
    await conn.execute("SELECT 1 FROM referrers WHERE program_id = $1 AND id = $2 "
                       "FOR NO KEY UPDATE", program_id, referrer_id)


async def ask_of_referrer(conn: asyncpg.Connection, program_id: int, ask_id: int,
                          referrer_id: int) -> bool:
    found: bool = await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM asks WHERE program_id = $1 AND id = $2 "
        "AND referrer_id = $3)", program_id, ask_id, referrer_id)
    return found


async def page_shared_within(conn: asyncpg.Connection, program_id: int, referrer_id: int,
                             channel: str, seconds: float) -> bool:
    """Whether the share page recorded a share of the referrer on the channel in the last
    `seconds` (by the database's clock)."""
    found: bool = await conn.fetchval(
        """SELECT EXISTS (SELECT 1 FROM shares WHERE program_id = $1 AND referrer_id = $2
                            AND channel = $3 AND source = 'page'
                            AND created_at > now() - make_interval(secs => $4))""",
        program_id, referrer_id, channel, seconds)
    return found


# -- funnel ----------------------------------------------------------------------------------
# Each stage's rows carry the referrer (external id; an ask names its customer, the same id),
# the channel and the trigger they fall under, a weight (1, or a conversion's credit) and the
# visitor; the report groups them by one of those (or none: the total) in SQL, so that unique
# visitors are counted distinct within each group. $1 program, $2 since, $3 until (either may be
# NULL: open).

FUNNEL_GROUPS = {"referrer": "x.referrer", "channel": "x.channel", "trigger": "x.trigger",
                 "total": "NULL::text"}


def _in_range(column: str) -> str:
    return (f"($2::timestamptz IS NULL OR {column} >= $2) "
            f"AND ($3::timestamptz IS NULL OR {column} < $3)")


def _trigger(referrer_id: str, at: str) -> str:
    """The trigger type of the referrer's latest ask sent at or before `at`, within ASK_REACH
    of it (the breakdown report's rule: tracker.scoring.queries)."""
    return f"""(SELECT a.trigger_type FROM asks a
               WHERE a.program_id = $1 AND a.referrer_id = {referrer_id} AND a.sent_at <= {at}
                 AND {at} < a.sent_at + interval '{ASK_REACH}'
               ORDER BY a.sent_at DESC, a.id DESC LIMIT 1)"""


def _conversion_channel(conversion_id: str, referrer_id: str) -> str:
    """The channel of the link of the referrer's last click among a conversion's
    touchpoints."""
    return f"""(SELECT l.channel FROM touchpoints t
               JOIN clicks k ON k.program_id = t.program_id AND k.ts = t.ts
                            AND k.click_id = t.click_id
               JOIN links l ON l.program_id = k.program_id AND l.id = k.link_id
               WHERE t.program_id = $1 AND t.conversion_id = {conversion_id}
                 AND t.referrer_id = {referrer_id}
               ORDER BY t.position DESC LIMIT 1)"""


# A stage of credited conversions `v` (their credits `cr`, referrers `r`); its WHERE follows.
_CREDITS_OF = f"""
SELECT r.external_id AS referrer, {_conversion_channel("v.id", "cr.referrer_id")} AS channel,
       {_trigger("cr.referrer_id", "v.occurred_at")} AS trigger,
       cr.credit::float8 AS weight, NULL::text AS visitor
FROM credits cr
JOIN conversions v ON v.program_id = cr.program_id AND v.id = cr.conversion_id
JOIN referrers r ON r.program_id = cr.program_id AND r.id = cr.referrer_id"""

_CREDITED = _CREDITS_OF + f"""
WHERE cr.program_id = $1 AND v.type = $4 AND {_in_range("v.occurred_at")}"""

FUNNEL_STAGES = {
    # Asks handed to the merchant's messaging (sent), by the time they were sent.
    "asked": f"""
SELECT a.customer_id AS referrer, NULL::text AS channel, a.trigger_type AS trigger,
       1::float8 AS weight, NULL::text AS visitor
FROM asks a
WHERE a.program_id = $1 AND a.sent_at IS NOT NULL AND {_in_range("a.sent_at")}""",
    # Shares, by when they were made; the trigger is the share's ask, else the referrer's
    # latest ask before it.
    "shared": f"""
SELECT r.external_id AS referrer, s.channel,
       coalesce((SELECT a.trigger_type FROM asks a
                 WHERE a.program_id = s.program_id AND a.id = s.ask_id),
                {_trigger("s.referrer_id", "s.occurred_at")}) AS trigger,
       1::float8 AS weight, NULL::text AS visitor
FROM shares s JOIN referrers r ON r.program_id = s.program_id AND r.id = s.referrer_id
WHERE s.program_id = $1 AND {_in_range("s.occurred_at")}""",
    "signups": _CREDITED,
    "trials": _CREDITED,
    "purchases": _CREDITED,
    "renewals": _CREDITED,
    # A referred customer's first purchase (by its credit), when the customer bought or renewed
    # again 90 days or more after it; by the first purchase's time.
    "retained_90d": _CREDITS_OF + f"""
WHERE cr.program_id = $1 AND v.type = 'purchase' AND {_in_range("v.occurred_at")}
  AND NOT EXISTS (SELECT 1 FROM conversions e
                  WHERE e.program_id = v.program_id AND e.customer_id = v.customer_id
                    AND e.type = 'purchase'
                    AND (e.occurred_at, e.id) < (v.occurred_at, v.id))
  AND EXISTS (SELECT 1 FROM conversions later
              WHERE later.program_id = v.program_id AND later.customer_id = v.customer_id
                AND later.type IN ('purchase', 'renewal')
                AND later.occurred_at >= v.occurred_at + interval '90 days')""",
    # Refunds and chargebacks of credited conversions, counted once per referrer credited, by
    # the refund's time, under the original's channel and trigger.
    "refunds": f"""
SELECT r.external_id AS referrer, {_conversion_channel("o.id", "cr.referrer_id")} AS channel,
       {_trigger("cr.referrer_id", "o.occurred_at")} AS trigger,
       1::float8 AS weight, NULL::text AS visitor
FROM conversions x
JOIN conversions o ON o.program_id = x.program_id AND o.event_id = x.original_event_id
JOIN credits cr ON cr.program_id = o.program_id AND cr.conversion_id = o.id
JOIN referrers r ON r.program_id = cr.program_id AND r.id = cr.referrer_id
WHERE x.program_id = $1 AND x.type IN ('refund', 'chargeback') AND {_in_range("x.occurred_at")}
""",
}


def _clicks_stage(by: str) -> str:
    """The clicks stage: clicks that count (not bots, not duplicates) with what grouping by
    `by` reads (null otherwise): the referrer, the link's channel, the trigger. Each click
    has its link and its referrer (the redirect and the import take both from the link, and
    neither is ever deleted), so a join left out drops no click. The trigger by _trigger's
    rule, joined: each sent ask reaches until the referrer's next ask (by sent_at, id) or
    ASK_REACH after it, whichever is first; a referrer's windows do not overlap, so a click
    meets one at most (one look-up per click was most of the trigger funnel's time on a
    million clicks, and the join a third of the other splits': bench.reports)."""
    columns = {"referrer": "r.external_id", "channel": "l.channel", "trigger": "w.trigger_type"}
    joins = {
        "referrer": "JOIN referrers r ON r.program_id = c.program_id AND r.id = c.referrer_id",
        "channel": "JOIN links l ON l.program_id = c.program_id AND l.id = c.link_id",
        "trigger": f"""
LEFT JOIN (SELECT a.referrer_id, a.trigger_type, a.sent_at,
                  least(a.sent_at + interval '{ASK_REACH}',
                        lead(a.sent_at) OVER (PARTITION BY a.referrer_id
                                              ORDER BY a.sent_at, a.id)) AS reach
           FROM asks a
           WHERE a.program_id = $1 AND a.sent_at IS NOT NULL AND a.referrer_id IS NOT NULL) w
  ON w.referrer_id = c.referrer_id AND w.sent_at <= c.ts AND c.ts < w.reach"""}
    keys = ", ".join(f"{columns[g] if g == by else 'NULL::text'} AS {g}" for g in columns)
    return f"""
SELECT {keys}, 1::float8 AS weight, c.visitor_id AS visitor
FROM clicks c {joins.get(by, "")}
WHERE c.program_id = $1 AND NOT c.is_bot AND NOT c.is_duplicate AND {_in_range("c.ts")}"""


_CONVERSION_TYPE = {"signups": "signup", "trials": "trial", "purchases": "purchase",
                    "renewals": "renewal"}


@dataclass(frozen=True, slots=True)
class FunnelCount:
    key: str | None  # the group (None: no channel, no ask, or the total)
    n: float  # sum of weights
    visitors: int  # distinct visitors (clicks only)


async def funnel_stage(conn: asyncpg.Connection, stage: str, program_id: int, *,
                       since: datetime | None, until: datetime | None, by: str,
                       part: int = 0, parts: int = 1) -> list[FunnelCount]:
    """One stage of the funnel (FUNNEL_STAGES, or "clicks"), grouped by `by` (a key of
    FUNNEL_GROUPS); of the clicks, with `parts` > 1, only those of the visitors in part
    `part` (scoring's visitor_part: the parts' counts add up)."""
    args: list[Any] = [program_id, since, until]
    if stage in _CONVERSION_TYPE:
        args.append(_CONVERSION_TYPE[stage])
    if stage == "clicks":
        stage_sql = _clicks_stage(by)
        if parts > 1:
            stage_sql += " AND " + visitor_part("c", 4)
            args += visitor_part_args(part, parts)
    else:
        stage_sql = FUNNEL_STAGES[stage]
    # Distinct visitors per group by hashing (group, visitor) first, then counting: a third
    # faster on a million clicks than count(DISTINCT), which sorts them (bench.reports); the
    # total (one group) is faster with count(DISTINCT).
    if by == "total":
        sql = f"""WITH x AS ({stage_sql})
                  SELECT NULL::text AS key, sum(x.weight) AS n,
                         count(DISTINCT x.visitor) AS visitors FROM x GROUP BY 1"""
    else:
        sql = f"""WITH x AS ({stage_sql})
                  SELECT key, sum(n) AS n, count(visitor) AS visitors
                  FROM (SELECT {FUNNEL_GROUPS[by]} AS key, x.visitor, sum(x.weight) AS n
                        FROM x GROUP BY 1, 2) y
                  GROUP BY 1"""
    rows = await conn.fetch(sql, *args)
    return [FunnelCount(r["key"], float(r["n"]), int(r["visitors"])) for r in rows]
