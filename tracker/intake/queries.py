"""SQL of intake: async functions taking `conn` first, returning frozen dataclasses.

One section per caller: storing conversions (POST /api/v1/conversions and `refguard import`),
the importer's look-ups (importer.py). Imported clicks are stored with the flusher's statements
(tracker.clicks.flusher.store_clicks, tracker.clicks.queries).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from tracker.intake.conversions import ConversionInput

# -- conversions -------------------------------------------------------------------------------
# tracker/web/api/conversions.py (one at a time) and importer.py (batches).


@dataclass(frozen=True, slots=True)
class Conversion:
    """A stored conversion, as the API answers it."""

    id: int
    event_id: str
    type: str
    customer_id: str
    amount: int | None
    currency: str | None
    occurred_at: datetime
    body_hash: bytes
    received_at: datetime


@dataclass(frozen=True, slots=True)
class Stored:
    conversion: Conversion
    created: bool
    conflict: bool


_RETURNING = """id, event_id, type, customer_id, amount, currency, occurred_at, body_hash,
                received_at"""
# A customer's name: the one of their latest conversion (an import of older ones keeps it).
_NAME_UPSERT = """ON CONFLICT (program_id, customer_id) DO UPDATE
                      SET name = excluded.name, name_at = excluded.name_at, updated_at = now()
                      WHERE excluded.name_at >= customer_names.name_at"""


async def store_conversion(conn: asyncpg.Connection, program_id: int, conv: ConversionInput,
                           email_hash: bytes | None, *, source: str = "api") -> Stored:
    """Insert idempotently; concurrent identical posts store exactly one row.

    The first body stored under an event id wins: the same body again answers the stored
    conversion (`created` false), another body is a `conflict`. A `customer_name` is kept as
    the customer's name (in the same statement) when the conversion is stored and is the
    customer's latest by occurred_at."""
    row = await conn.fetchrow(
        f"""WITH stored AS (
                INSERT INTO conversions (program_id, event_id, type, customer_id, email_hash,
                    amount, currency, occurred_at, click_id, visitor_id, referral_code,
                    original_event_id, ip, user_agent, body_hash, source)
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9::uuid, $10, $11, $12, $13::inet, $14,
                        $15, $16)
                ON CONFLICT (program_id, event_id) DO NOTHING
                RETURNING {_RETURNING}),
            named AS (
                INSERT INTO customer_names (program_id, customer_id, name, name_at)
                SELECT $1, customer_id, $17::text, occurred_at FROM stored
                WHERE $17::text IS NOT NULL
                {_NAME_UPSERT})
            SELECT * FROM stored""",
        program_id, conv.event_id, conv.type, conv.customer_id, email_hash, conv.amount,
        conv.currency, conv.occurred_at, conv.click_id, conv.visitor_id, conv.referral_code,
        conv.original_event_id, conv.ip, conv.user_agent, conv.body_hash, source,
        conv.customer_name,
    )
    if row is not None:
        return Stored(Conversion(**dict(row)), created=True, conflict=False)
    existing = await conn.fetchrow(
        f"SELECT {_RETURNING} FROM conversions WHERE program_id = $1 AND event_id = $2",
        program_id, conv.event_id,
    )
    assert existing is not None  # noqa: S101 (the conflicting row exists; rows are never deleted)
    return Stored(Conversion(**dict(existing)), created=False,
                  conflict=bytes(existing["body_hash"]) != conv.body_hash)


_STAGE_COLUMNS = ("n", "program_id", "event_id", "type", "customer_id", "email_hash", "amount",
                  "currency", "occurred_at", "click_id", "visitor_id", "referral_code",
                  "original_event_id", "ip", "user_agent", "body_hash", "customer_name")
_STORED = ", ".join(_STAGE_COLUMNS[1:-1])


async def store_conversions(
    conn: asyncpg.Connection, items: list[tuple[int, ConversionInput, bytes | None]],
    *, source: str = "import",
) -> list[str]:
    """Many conversions in one round trip; per item "created", "existing" or "conflict".

    The same rules as `store_conversion`: the first body stored under an event id wins; the
    same body again is "existing", another body is a "conflict" (also within one batch).
    Plain strings, not objects: an import stores millions and only counts them.
    """
    records = [
        (i, pid, c.event_id, c.type, c.customer_id, digest, c.amount, c.currency, c.occurred_at,
         c.click_id, c.visitor_id, c.referral_code, c.original_event_id, c.ip, c.user_agent,
         c.body_hash, c.customer_name)
        for i, (pid, c, digest) in enumerate(items)
    ]
    async with conn.transaction():
        await conn.execute(
            """CREATE TEMP TABLE IF NOT EXISTS conversions_stage (
                   n int, program_id bigint, event_id text, type text, customer_id text,
                   email_hash bytea, amount bigint, currency text, occurred_at timestamptz,
                   click_id uuid, visitor_id text, referral_code text, original_event_id text,
                   ip inet, user_agent text, body_hash bytea, customer_name text)
               ON COMMIT DELETE ROWS""")
        await conn.copy_records_to_table("conversions_stage", records=records,
                                         columns=_STAGE_COLUMNS)
        created = await conn.fetch(
            f"""WITH created AS (
                    INSERT INTO conversions ({_STORED}, source)
                    SELECT DISTINCT ON (program_id, event_id) {_STORED}, $1
                    FROM conversions_stage ORDER BY program_id, event_id, n
                    ON CONFLICT (program_id, event_id) DO NOTHING
                    RETURNING program_id, event_id),
                firsts AS (  -- the stage line each created conversion was stored from
                    SELECT DISTINCT ON (s.program_id, s.event_id) s.*
                    FROM conversions_stage s JOIN created c USING (program_id, event_id)
                    ORDER BY s.program_id, s.event_id, s.n),
                named AS (
                    INSERT INTO customer_names (program_id, customer_id, name, name_at)
                    SELECT DISTINCT ON (program_id, customer_id)
                           program_id, customer_id, customer_name, occurred_at
                    FROM firsts WHERE customer_name IS NOT NULL
                    ORDER BY program_id, customer_id, occurred_at DESC, n DESC
                    {_NAME_UPSERT})
                SELECT program_id, event_id FROM created""", source)
        stored = await conn.fetch(
            """SELECT s.n, c.body_hash = s.body_hash AS same FROM conversions_stage s
               JOIN conversions c ON c.program_id = s.program_id AND c.event_id = s.event_id""")
    return batch_statuses([(pid, c.event_id) for pid, c, _digest in items],
                          {(r["program_id"], r["event_id"]) for r in created},
                          {r["n"]: r["same"] for r in stored})


def batch_statuses(keys: list[tuple[int, str]], created: set[tuple[int, str]],
                   same: dict[int, bool]) -> list[str]:
    """Per item of a batch stored idempotently on (program_id, event_id): "created" for the
    first item of a key stored now, else "existing" when its body hash is the stored one's
    (`same`, by the item's index), else "conflict". Conversions and customers' events alike."""
    statuses: list[str] = []
    claimed: set[tuple[int, str]] = set()
    for i, key in enumerate(keys):
        if key in created and key not in claimed:
            claimed.add(key)
            statuses.append("created")
        else:
            statuses.append("existing" if same.get(i) else "conflict")
    return statuses


REVERSAL_TYPES = ("refund", "chargeback")


@dataclass(frozen=True, slots=True)
class ReversalProblem:
    """Why a refund or chargeback may not be stored: the field at fault and a message."""

    field: str
    message: str


async def reversal_problem(conn: asyncpg.Connection, program_id: int,
                           conv: ConversionInput) -> ReversalProblem | None:
    """A refund or chargeback naming `original_event_id` must reverse a stored purchase (or
    other non-reversal conversion) of the same customer, in its currency, for no more than
    what earlier reversals of it left; None when it may be stored (or is no such reversal, or
    its event id is stored already: the idempotent path answers it). One that names only its
    customer was given its purchase by `resolve_original` first, and is checked the same way.

    Call it in the transaction that then stores the conversion: the original is locked until
    that transaction ends, so concurrent refunds of one purchase are checked one at a time."""
    if conv.type not in REVERSAL_TYPES or conv.original_event_id is None:
        return None
    original = await conn.fetchrow(
        """SELECT id, type, customer_id, amount, currency FROM conversions
           WHERE program_id = $1 AND event_id = $2 FOR UPDATE""",
        program_id, conv.original_event_id)
    if await conn.fetchval("SELECT 1 FROM conversions WHERE program_id = $1 AND event_id = $2",
                           program_id, conv.event_id):
        return None
    if original is None or original["type"] in REVERSAL_TYPES:
        return ReversalProblem("original_event_id",
                               f"original_event_id {conv.original_event_id!r} names no "
                               "purchase of this program (report the purchase first)")
    if original["customer_id"] != conv.customer_id:
        return ReversalProblem("customer_id",
                               f"a {conv.type} names the customer of the purchase it reverses: "
                               f"{conv.original_event_id!r} is another customer's")
    if conv.amount is None or original["amount"] is None:
        return None
    if conv.currency is not None and original["currency"] is not None \
            and conv.currency != original["currency"]:
        return ReversalProblem("currency", f"the purchase {conv.original_event_id!r} was in "
                               f"{original['currency']}, not {conv.currency}")
    earlier = int(await conn.fetchval(
        """SELECT coalesce(sum(amount), 0) FROM conversions
           WHERE program_id = $1 AND original_event_id = $2
             AND type IN ('refund', 'chargeback')""",
        program_id, conv.original_event_id))
    left = max(int(original["amount"]) - earlier, 0)
    if conv.amount > left:
        return ReversalProblem("amount",
                               f"amount {conv.amount} is more than what is left of the purchase "
                               f"{conv.original_event_id!r} after earlier refunds "
                               f"({left} of {original['amount']})")
    return None


# The conversions a refund or chargeback naming no `original_event_id` may reverse: the same
# customer's purchases, renewals and trials with an amount (never a signup, never a reversal)
# at or before it. migrations/0035_refund_purchases.sql linked stored ones by the same rule.
_REVERSIBLE = """program_id = $1 AND customer_id = $2 AND occurred_at <= $3
                 AND (type IN ('purchase', 'renewal') OR (type = 'trial' AND amount > 0))"""


async def resolve_original(conn: asyncpg.Connection, program_id: int,
                           conv: ConversionInput) -> ConversionInput:
    """A refund or chargeback that names only its customer (DESIGN section 7: "a refund names
    the customer of the purchase it reverses"; `original_event_id` is optional) with the
    purchase it reverses as its `original_event_id`, so every join on that column (rewards'
    reversal, reports, fraud's money signals) sees it as it sees an explicit one.

    The purchase is the customer's latest reversible conversion (`_REVERSIBLE`) preferring, in
    this order: one in the refund's currency (or one of them naming none), one with at least
    the refund's amount left after the reversals stored so far (any money left, for a refund
    without an amount; one without an amount is left while nothing names it; a reversal without
    an amount takes all of it), one with any money left; then the latest (occurred_at, id).
    The checks of an explicit original (`reversal_problem`) then apply: another currency, or
    more than is left, is refused as it is for an explicit one. With no such conversion the
    refund is stored unlinked, as before (a later purchase is never linked to it).

    Any other conversion, one naming its original, or one whose event id is stored already
    (the idempotent path answers that) comes back unchanged. Call it in the transaction that
    then stores the conversion: the customer's candidates are locked (FOR UPDATE, in id
    order) until it ends, so concurrent refunds of one customer choose one at a time and each
    sees what the others took."""
    if conv.type not in REVERSAL_TYPES or conv.original_event_id is not None:
        return conv
    locked = [r["id"] for r in await conn.fetch(
        f"SELECT id FROM conversions WHERE {_REVERSIBLE} ORDER BY id FOR UPDATE",
        program_id, conv.customer_id, conv.occurred_at)]
    if not locked or await conn.fetchval(
            "SELECT 1 FROM conversions WHERE program_id = $1 AND event_id = $2",
            program_id, conv.event_id):
        return conv
    # A new statement after the lock: it sees the reversals that concurrent refunds committed.
    chosen: str | None = await conn.fetchval(
        """SELECT c.event_id FROM conversions c
           CROSS JOIN LATERAL (
               SELECT coalesce(sum(x.amount), 0) AS taken, bool_or(x.amount IS NULL) AS whole,
                      count(*) AS n
               FROM conversions x
               WHERE x.program_id = c.program_id AND x.original_event_id = c.event_id
                 AND x.type IN ('refund', 'chargeback')) x
           CROSS JOIN LATERAL (
               SELECT CASE WHEN c.amount IS NULL THEN x.n = 0
                           ELSE NOT coalesce(x.whole, false) AND c.amount - x.taken > 0
                      END AS open) o
           WHERE c.program_id = $1 AND c.id = ANY($2::bigint[])
           ORDER BY ($4::text IS NULL OR c.currency IS NULL OR c.currency = $4) DESC,
                    (o.open AND ($3::bigint IS NULL OR c.amount IS NULL
                                 OR c.amount - x.taken >= $3)) DESC,
                    o.open DESC, c.occurred_at DESC, c.id DESC
           LIMIT 1""",
        program_id, locked, conv.amount, conv.currency)
    return conv if chosen is None else dataclasses.replace(conv, original_event_id=chosen)


async def store_checked(conn: asyncpg.Connection, program_id: int, conv: ConversionInput,
                        email_hash: bytes | None, *,
                        source: str = "api") -> Stored | ReversalProblem:
    """`store_conversion` after `resolve_original` and `reversal_problem`, in one transaction:
    the one way a refund or chargeback is stored (the API's and `refguard import`'s), so one
    that names only its customer is linked to its purchase whichever way it came."""
    async with conn.transaction():
        conv = await resolve_original(conn, program_id, conv)
        problem = await reversal_problem(conn, program_id, conv)
        if problem is not None:
            return problem
        return await store_conversion(conn, program_id, conv, email_hash, source=source)


# -- the importer ------------------------------------------------------------------------------
# tracker/intake/importer.py.


async def link_ids(conn: asyncpg.Connection) -> dict[str, tuple[int, int, int]]:
    """Every link's code -> (program_id, link_id, referrer_id). A dict of tuples, as the
    importer has always used it: it is pickled to each worker process and read per line."""
    return {r["code"]: (r["program_id"], r["id"], r["referrer_id"]) for r in await conn.fetch(
        "SELECT code, program_id, id, referrer_id FROM links")}


async def program_ids(conn: asyncpg.Connection) -> dict[str, int]:
    """Every program's slug -> id."""
    return {r["slug"]: r["id"] for r in await conn.fetch("SELECT slug, id FROM programs")}


async def analyze_clicks(conn: asyncpg.Connection) -> None:
    """Fresh planner statistics after a bulk load, or the jobs' joins plan for one row.
    (ANALYZE needs the tables' owner: the application asks it through refguard_analyze.)"""
    await conn.execute("SELECT refguard_analyze('clicks')")


async def analyze_conversions(conn: asyncpg.Connection) -> None:
    """Fresh planner statistics after a bulk load of conversions (and the visitors they
    linked to customers)."""
    await conn.execute("SELECT refguard_analyze('conversions', 'customer_visitors')")
