"""SQL of the growth side: async functions taking `conn` first, returning frozen dataclasses.

One section per caller: customers' events (tracker/asks/events.py: the API one at a time,
`refguard import --events` in batches) and shares (tracker/asks/shares.py).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from tracker.errors import NotFound
from tracker.intake.queries import batch_statuses

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
