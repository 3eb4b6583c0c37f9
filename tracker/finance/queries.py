"""The SQL of finance (clearance, the ledger, payouts, webhooks).

Async functions that take `conn` first, use `$n` parameters and return frozen dataclasses. The
service modules keep the transactions and the logic: a row lock taken here (`FOR UPDATE`,
`SKIP LOCKED`) or an advisory lock lasts until the caller's transaction ends.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from tracker.errors import NotFound
from tracker.formats import CREDITED_TYPES

# -- clearance: programs -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ProgramSettings:
    id: int
    slug: str
    settings: dict[str, Any]


async def programs(conn: asyncpg.Connection, slug: str | None) -> list[ProgramSettings]:
    """One program by slug, or all of them (slug None), in id order."""
    rows = await conn.fetch(
        "SELECT id, slug, settings::text AS settings FROM programs "
        "WHERE $1::text IS NULL OR slug = $1 ORDER BY id", slug)
    return [ProgramSettings(r["id"], r["slug"], json.loads(r["settings"])) for r in rows]


# -- clearance: creation -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CreditedConversion:
    """An attributed conversion without rewards yet, with its credited referrers (by credit,
    highest first): their ids, credits and external ids, index for index."""

    id: int
    type: str
    customer_id: str
    amount: int | None
    currency: str | None
    occurred_at: datetime
    referrers: tuple[int, ...]
    credits: tuple[float, ...]
    names: tuple[str, ...]
    # Each referrer's recorded reward variant (None: none assigned), index for index.
    variants: tuple[str | None, ...] = ()


async def conversions_to_reward(conn: asyncpg.Connection, program_id: int,
                                limit: int) -> list[CreditedConversion]:
    """The next `limit` attributed conversions that have not been rewarded, oldest first."""
    rows = await conn.fetch(
        """SELECT c.id, c.type, c.customer_id, c.amount, c.currency, c.occurred_at,
                  coalesce(array_agg(cr.referrer_id ORDER BY cr.credit DESC, cr.referrer_id)
                           FILTER (WHERE cr.referrer_id IS NOT NULL), '{}') AS referrers,
                  coalesce(array_agg(cr.credit ORDER BY cr.credit DESC, cr.referrer_id)
                           FILTER (WHERE cr.referrer_id IS NOT NULL), '{}') AS credits,
                  coalesce(array_agg(f.external_id ORDER BY cr.credit DESC, cr.referrer_id)
                           FILTER (WHERE cr.referrer_id IS NOT NULL), '{}') AS names,
                  coalesce(array_agg(f.variant ORDER BY cr.credit DESC, cr.referrer_id)
                           FILTER (WHERE cr.referrer_id IS NOT NULL), '{}') AS variants
           FROM conversions c
           LEFT JOIN credits cr ON cr.program_id = c.program_id AND cr.conversion_id = c.id
           LEFT JOIN referrers f ON f.program_id = cr.program_id AND f.id = cr.referrer_id
           WHERE c.program_id = $1 AND c.rewarded_at IS NULL AND c.attributed_at IS NOT NULL
           GROUP BY c.program_id, c.id ORDER BY c.occurred_at, c.id LIMIT $2""",
        program_id, limit)
    return [CreditedConversion(r["id"], r["type"], r["customer_id"], r["amount"], r["currency"],
                               r["occurred_at"], tuple(r["referrers"]), tuple(r["credits"]),
                               tuple(r["names"]), tuple(r["variants"]))
            for r in rows]


@dataclass(frozen=True, slots=True)
class FirstConversion:
    customer_id: str
    type: str
    id: int
    occurred_at: datetime


async def first_conversions(conn: asyncpg.Connection, program_id: int, customers: list[str],
                            types: list[str]) -> list[FirstConversion]:
    """Each of these customers' first conversion of each of these types."""
    rows = await conn.fetch(
        """SELECT DISTINCT ON (customer_id, type) customer_id, type, id, occurred_at
           FROM conversions
           WHERE program_id = $1 AND customer_id = ANY($2::text[])
             AND type = ANY($3::text[])
           ORDER BY customer_id, type, occurred_at, id""",
        program_id, customers, types)
    return [FirstConversion(r["customer_id"], r["type"], r["id"], r["occurred_at"])
            for r in rows]


@dataclass(frozen=True, slots=True)
class GrantedReward:
    referrer_id: int
    rule_index: int
    occurred_at: datetime  # the conversion's
    amount: int


async def granted_rewards(conn: asyncpg.Connection, program_id: int, referrers: list[int],
                          since: datetime) -> list[GrantedReward]:
    """These referrers' own rewards (neither rejected nor reversed) for conversions since
    `since`: what caps have already spent."""
    rows = await conn.fetch(
        """SELECT r.referrer_id, r.rule_index, c.occurred_at, r.amount
           FROM rewards r JOIN conversions c ON c.program_id = r.program_id
                                            AND c.id = r.conversion_id
           WHERE r.program_id = $1 AND r.referrer_id = ANY($2::bigint[])
             AND r.beneficiary = 'referrer' AND r.status NOT IN ('rejected', 'reversed')
             AND c.occurred_at >= $3""", program_id, referrers, since)
    return [GrantedReward(r["referrer_id"], r["rule_index"], r["occurred_at"], r["amount"])
            for r in rows]


@dataclass(frozen=True, slots=True)
class ReferrerRecord:
    referrer_id: int
    approved: int  # conversions with an approved or paid reward
    bad: int  # rejected or reversed rewards


async def referrer_records(conn: asyncpg.Connection, program_id: int,
                           referrers: list[int]) -> list[ReferrerRecord]:
    """Approved and bad reward counts of these referrers (for tiers and adaptive holds); a
    referrer without rewards has no row."""
    rows = await conn.fetch(
        """SELECT referrer_id, count(DISTINCT conversion_id)
                  FILTER (WHERE status IN ('approved', 'paid')) AS approved,
                  count(*) FILTER (WHERE status IN ('rejected', 'reversed')) AS bad
           FROM rewards WHERE program_id = $1 AND referrer_id = ANY($2::bigint[])
             AND beneficiary = 'referrer' GROUP BY referrer_id""", program_id, referrers)
    return [ReferrerRecord(r["referrer_id"], r["approved"], r["bad"]) for r in rows]


@dataclass(frozen=True, slots=True)
class NewReward:
    conversion_id: int
    rule_index: int
    referrer_id: int
    beneficiary: str
    payee: str
    amount: int
    currency: str
    credit: float
    hold_until: datetime
    calculation: dict[str, Any]
    kind: str = "cash"  # cash | credit | coupon (tracker.finance.rules)
    pool: str | None = None  # a coupon reward's pool
    variant: str | None = None  # the reward variant whose rules made it (None: plain rules)


async def insert_rewards(conn: asyncpg.Connection, program_id: int,
                         rewards: Sequence[NewReward]) -> list[int]:
    """The rewards, with their conversion's current risk (if a scan has seen it); one that
    exists already (same conversion, rule and payee) is left as it is. The ids of those
    created, in the order given (for their `reward.created` webhooks).

    A hold is never earlier than the reward's creation (`created_at`, the same `now()`): a
    conversion reported long after it happened (imported history) has its refund window
    behind it, so its hold ends when its reward is made, not before it existed."""
    rows = await conn.fetch(
        """INSERT INTO rewards (program_id, conversion_id, rule_index, referrer_id,
               beneficiary, payee, amount, currency, credit, hold_until, calculation,
               risk_score, reasons, kind, pool, variant)
           SELECT $1, n.conversion_id, n.rule_index, n.referrer_id, n.beneficiary, n.payee,
                  n.amount, n.currency, n.credit, greatest(n.hold_until, now()),
                  n.calculation::jsonb, k.score, coalesce(k.reasons, '[]'::jsonb), n.kind,
                  n.pool, n.variant
           FROM unnest($2::bigint[], $3::int[], $4::bigint[], $5::text[], $6::text[],
                       $7::bigint[], $8::text[], $9::float8[], $10::timestamptz[],
                       $11::text[], $12::text[], $13::text[], $14::text[])
                WITH ORDINALITY AS n(conversion_id, rule_index, referrer_id, beneficiary,
                                     payee, amount, currency, credit, hold_until,
                                     calculation, kind, pool, variant, ord)
           LEFT JOIN conversion_risk k ON k.program_id = $1
                                      AND k.conversion_id = n.conversion_id
           ORDER BY n.ord
           ON CONFLICT (program_id, conversion_id, rule_index, payee) DO NOTHING
           RETURNING id""",
        program_id, [n.conversion_id for n in rewards], [n.rule_index for n in rewards],
        [n.referrer_id for n in rewards], [n.beneficiary for n in rewards],
        [n.payee for n in rewards], [n.amount for n in rewards],
        [n.currency for n in rewards], [n.credit for n in rewards],
        [n.hold_until for n in rewards], [json.dumps(n.calculation) for n in rewards],
        [n.kind for n in rewards], [n.pool for n in rewards], [n.variant for n in rewards])
    return sorted(r["id"] for r in rows)


async def mark_rewarded(conn: asyncpg.Connection, program_id: int,
                        conversion_ids: list[int]) -> None:
    await conn.execute(
        "UPDATE conversions SET rewarded_at = now() WHERE program_id = $1 AND id = ANY($2)",
        program_id, conversion_ids)


# -- clearance: reversal -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RefundedReward:
    """A reward still standing whose conversion a refund or chargeback names."""

    id: int
    status: str
    amount: int
    payee: str
    currency: str
    event_id: str  # the refund's or chargeback's
    type: str  # refund | chargeback
    kind: str = "cash"  # only a cash reward's money is in the ledger


async def refunded_rewards(conn: asyncpg.Connection, program_id: int) -> list[RefundedReward]:
    """Locks them; a reward appears once per refund or chargeback that names its conversion."""
    rows = await conn.fetch(
        """SELECT r.id, r.status, r.amount, r.payee, r.currency, x.event_id, x.type, r.kind
           FROM conversions x
           JOIN conversions o ON o.program_id = x.program_id
                             AND o.event_id = x.original_event_id
           JOIN rewards r ON r.program_id = o.program_id AND r.conversion_id = o.id
           WHERE x.program_id = $1 AND x.type IN ('refund', 'chargeback')
             AND r.status IN ('pending', 'flagged', 'approved', 'paid')
           FOR UPDATE OF r""", program_id)
    return [RefundedReward(r["id"], r["status"], r["amount"], r["payee"], r["currency"],
                           r["event_id"], r["type"], r["kind"]) for r in rows]


async def reverse_rewards(conn: asyncpg.Connection, program_id: int, reward_ids: list[int],
                          actor: str) -> None:
    await conn.execute(
        """UPDATE rewards SET status = 'reversed', decided_by = $3, decided_at = now(),
                  decision_reason = 'conversion refunded or charged back'
           WHERE program_id = $1 AND id = ANY($2::bigint[])""",
        program_id, reward_ids, actor)


async def insert_clawbacks(conn: asyncpg.Connection, program_id: int,
                           entries: Sequence[tuple[str, str, int, int]], actor: str) -> None:
    """`clawback` ledger entries: (payee, currency, amount (negative), reward_id)."""
    await conn.executemany(
        """INSERT INTO ledger_entries (program_id, payee, currency, amount, kind,
               reward_id, actor) VALUES ($1, $2, $3, $4, 'clawback', $5, $6)""",
        [(program_id, payee, currency, amount, reward_id, actor)
         for payee, currency, amount, reward_id in entries])


# -- clearance: holds and risk -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HeldReward:
    """A pending reward past its hold, with its conversion's current risk."""

    id: int
    amount: int
    payee: str
    currency: str
    hold_until: datetime
    calculation: dict[str, Any]
    score: float
    reasons: str  # JSON text
    # The roles ('referee', 'referrer') in which erased people touch it (tracker.privacy).
    erased: tuple[str, ...] = ()
    kind: str = "cash"
    pool: str | None = None


async def rewards_past_hold(conn: asyncpg.Connection, program_id: int,
                            limit: int, review_at: float = 0.5) -> list[HeldReward]:
    """Up to `limit` pending rewards whose hold is over and whose conversion a scan has seen,
    locked; rewards another transaction holds are skipped, and so are coupon rewards that
    would be approved (risk below `review_at`, nobody erased) while their pool has no free
    code: they wait for an upload, and never fill a batch that others could use."""
    rows = await conn.fetch(
        """SELECT r.id, r.amount, r.payee, r.currency, r.hold_until, r.calculation::text
                  AS calculation, k.score, k.reasons::text AS reasons,
                  refguard_erased_roles(r.program_id, r.conversion_id) AS erased,
                  r.kind, r.pool
           FROM rewards r
           JOIN conversion_risk k ON k.program_id = r.program_id
                                 AND k.conversion_id = r.conversion_id
           WHERE r.program_id = $1 AND r.status = 'pending' AND r.hold_until <= now()
             -- A coupon reward about to be approved waits while its pool has no free code.
             AND (r.kind <> 'coupon' OR k.score >= $3
                  OR cardinality(refguard_erased_roles(r.program_id, r.conversion_id)) > 0
                  OR EXISTS (SELECT 1 FROM coupon_codes k
                             WHERE k.program_id = r.program_id AND k.pool = r.pool
                               AND k.reward_id IS NULL)
                  OR EXISTS (SELECT 1 FROM coupon_codes k WHERE k.reward_id = r.id))
           ORDER BY r.id LIMIT $2 FOR UPDATE OF r SKIP LOCKED""", program_id, limit,
        review_at)
    return [HeldReward(r["id"], r["amount"], r["payee"], r["currency"], r["hold_until"],
                       json.loads(r["calculation"]), r["score"], r["reasons"],
                       tuple(r["erased"]), r["kind"], r["pool"]) for r in rows]


async def extend_holds(conn: asyncpg.Connection, program_id: int, reward_ids: list[int],
                       days: int) -> None:
    """Holds extended by `days` (noted in the calculation), with the current risk."""
    await conn.execute(
        """UPDATE rewards SET hold_until = hold_until + make_interval(days => $3),
                  calculation = calculation || jsonb_build_object(
                      'hold_extended_days', $3::int),
                  risk_score = k.score, reasons = k.reasons
           FROM conversion_risk k
           WHERE rewards.program_id = $1 AND rewards.id = ANY($2::bigint[])
             AND k.program_id = rewards.program_id
             AND k.conversion_id = rewards.conversion_id""",
        program_id, reward_ids, days)


async def settle_rewards(conn: asyncpg.Connection, program_id: int, reward_ids: list[int], *,
                         status: str, automatic: bool, actor: str, reason: str) -> None:
    """The rewards take `status` and their conversion's current risk; an `automatic`
    decision records its actor, time and reason, a `flagged` one its time of flagging."""
    await conn.execute(
        """UPDATE rewards SET status = $3, risk_score = k.score, reasons = k.reasons,
                  flagged_at = CASE WHEN $3 = 'flagged' THEN now() END,
                  decided_by = CASE WHEN $4 THEN $5 END,
                  decided_at = CASE WHEN $4 THEN now() END,
                  decision_reason = CASE WHEN $4 THEN $6 END
           FROM conversion_risk k
           WHERE rewards.program_id = $1 AND rewards.id = ANY($2::bigint[])
             AND k.program_id = rewards.program_id
             AND k.conversion_id = rewards.conversion_id""",
        program_id, reward_ids, status, automatic, actor, reason)


async def audit_rewards(conn: asyncpg.Connection, program_id: int, actor: str, action: str,
                        rows: Sequence[tuple[int, str, dict[str, Any]]]) -> None:
    """One audit row per reward: (reward_id, reason, details)."""
    await conn.executemany(
        """INSERT INTO audit_log (program_id, actor, action, object_type, object_id, reason,
               details) VALUES ($1, $2, $3, 'reward', $4, $5, $6::jsonb)""",
        [(program_id, actor, action, str(i), reason, json.dumps(details))
         for i, reason, details in rows])


# -- clearance: metrics ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StatusCount:
    status: str
    n: int


async def reward_counts(conn: asyncpg.Connection) -> list[StatusCount]:
    """Rewards per status, all programs; a status without rewards has no row."""
    rows = await conn.fetch("SELECT status, count(*) AS n FROM rewards GROUP BY status")
    return [StatusCount(r["status"], r["n"]) for r in rows]


@dataclass(frozen=True, slots=True)
class ReviewQueue:
    size: int
    oldest_s: float  # age of the longest-waiting flagged reward; 0 when none waits


async def review_queue(conn: asyncpg.Connection) -> ReviewQueue:
    row = await conn.fetchrow(
        """SELECT count(*) AS n,
                  coalesce(extract(epoch FROM now() - min(flagged_at)), 0) AS oldest
           FROM rewards WHERE status = 'flagged'""")
    return ReviewQueue(row["n"], float(row["oldest"]))


@dataclass(frozen=True, slots=True)
class PaidOut:
    currency: str
    amount: int


async def paid_out(conn: asyncpg.Connection) -> list[PaidOut]:
    """Money paid out so far, per currency."""
    rows = await conn.fetch("""SELECT currency, -sum(amount) AS paid FROM ledger_entries
                               WHERE kind = 'payout' GROUP BY currency""")
    return [PaidOut(r["currency"], int(r["paid"])) for r in rows]


# -- decisions and the ledger ------------------------------------------------------------------


async def xact_lock(conn: asyncpg.Connection, key: int) -> None:
    """Wait for the advisory lock `key`, exclusive, until the transaction ends."""
    await conn.execute("SELECT pg_advisory_xact_lock($1)", key)


async def xact_lock_shared(conn: asyncpg.Connection, key: int) -> None:
    """Wait for the advisory lock `key`, shared, until the transaction ends."""
    await conn.execute("SELECT pg_advisory_xact_lock_shared($1)", key)


async def try_xact_lock_shared(conn: asyncpg.Connection, key: int) -> bool:
    """The advisory lock `key`, shared, until the transaction ends, if it is free now (no
    exclusive holder or waiter); False without waiting otherwise."""
    got: bool = await conn.fetchval("SELECT pg_try_advisory_xact_lock_shared($1)", key)
    return got


@dataclass(frozen=True, slots=True)
class RewardToDecide:
    program_id: int
    id: int
    status: str
    amount: int
    payee: str
    currency: str
    four_eyes_above: float | None  # the program's setting
    round: int = 0  # the round of this decision (migration 0020)
    decided_by: str | None = None  # the actor of the last decision
    decided_person: str | None = None  # ...and the person behind it (None before 0020)
    engine_held: bool = False  # the fraud engine flagged it or rejected it automatically
    reason_codes: tuple[str, ...] = ()  # the codes of its fraud reasons
    kind: str = "cash"  # cash | credit | coupon
    pool: str | None = None  # a coupon reward's pool


async def lock_reward(conn: asyncpg.Connection, reward_id: int) -> RewardToDecide:
    """The reward, locked until the transaction ends; NotFound if there is none."""
    row = await conn.fetchrow(
        """SELECT r.program_id, r.id, r.status, r.amount, r.payee, r.currency,
                  p.settings->'four_eyes_above' AS limit_, r.round, r.decided_by,
                  r.decided_person,
                  (r.flagged_at IS NOT NULL OR EXISTS (
                       SELECT 1 FROM audit_log a
                       WHERE a.object_type = 'reward' AND a.object_id = r.id::text
                         AND a.actor = 'system:clearance' AND a.action = 'reward.reject'))
                      AS engine_held,
                  coalesce(ARRAY(SELECT DISTINCT x->>'code'
                                 FROM jsonb_array_elements(
                                     CASE WHEN jsonb_typeof(r.reasons) = 'array'
                                          THEN r.reasons ELSE '[]'::jsonb END) x
                                 WHERE x->>'code' IS NOT NULL ORDER BY 1), '{}') AS codes,
                  r.kind, r.pool
           FROM rewards r JOIN programs p ON p.id = r.program_id
           WHERE r.id = $1 FOR UPDATE OF r""", reward_id)
    if row is None:
        raise NotFound("reward")
    return RewardToDecide(row["program_id"], row["id"], row["status"], row["amount"],
                          row["payee"], row["currency"],
                          json.loads(row["limit_"]) if row["limit_"] is not None else None,
                          row["round"], row["decided_by"], row["decided_person"],
                          row["engine_held"], tuple(row["codes"]), row["kind"], row["pool"])


async def add_approval(conn: asyncpg.Connection, program_id: int, reward_id: int, actor: str,
                       reason: str, *, person: str | None = None, round_: int = 0) -> bool:
    """Records `actor`'s approval on behalf of `person` (None: the actor) in the reward's
    decision round `round_`; False if that actor or person had approved it already in that
    round (a unique index on the person)."""
    added = await conn.fetchval(
        """INSERT INTO reward_approvals (program_id, reward_id, actor, reason, person, round)
           VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING RETURNING 1""",
        program_id, reward_id, actor, reason, person, round_)
    return added is not None


async def count_approvals(conn: asyncpg.Connection, program_id: int, reward_id: int,
                          round_: int = 0) -> int:
    """How many people approved in the round (rows from before people were recorded count by
    actor)."""
    n: int = await conn.fetchval(
        """SELECT count(DISTINCT coalesce(person, actor)) FROM reward_approvals
           WHERE program_id = $1 AND reward_id = $2 AND round = $3""",
        program_id, reward_id, round_)
    return n


async def set_decision(conn: asyncpg.Connection, program_id: int, reward_id: int, *,
                       status: str, actor: str, reason: str,
                       person: str | None = None) -> None:
    """The decision, by `actor` (on behalf of `person`); it closes the reward's round."""
    await conn.execute(
        """UPDATE rewards SET status = $3, decided_by = $4, decided_at = now(),
                  decision_reason = $5, decided_person = $6, round = round + 1
           WHERE program_id = $1 AND id = $2""",
        program_id, reward_id, status, actor, reason, person)


async def insert_earned(conn: asyncpg.Connection,
                        entries: Sequence[tuple[int, str, str, int, int]], actor: str,
                        round_: int = 0) -> None:
    """`earned` ledger entries: (program_id, payee, currency, amount, reward_id), of the
    rewards' decision round `round_` (clearance's automatic approvals: 0)."""
    await conn.executemany(
        """INSERT INTO ledger_entries (program_id, payee, currency, amount, kind, reward_id,
               actor, round) VALUES ($1, $2, $3, $4, 'earned', $5, $6, $7)""",
        [(*e, actor, round_) for e in entries])


async def earned_net(conn: asyncpg.Connection, program_id: int, reward_id: int) -> int:
    """What the reward's approvals earned, net of their reversals (0: nothing standing)."""
    n = await conn.fetchval(
        """SELECT coalesce(sum(amount), 0) FROM ledger_entries
           WHERE program_id = $1 AND reward_id = $2 AND kind IN ('earned', 'reversal')""",
        program_id, reward_id)
    return int(n)


async def insert_reversal(conn: asyncpg.Connection, program_id: int, *, payee: str,
                          currency: str, amount: int, reward_id: int, actor: str,
                          round_: int) -> None:
    """The `reversal` entry (amount negative) that undoes an approval's earning."""
    await conn.execute(
        """INSERT INTO ledger_entries (program_id, payee, currency, amount, kind, reward_id,
               actor, round) VALUES ($1, $2, $3, $4, 'reversal', $5, $6, $7)""",
        program_id, payee, currency, amount, reward_id, actor, round_)


# -- payouts -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ApprovedReward:
    program_id: int
    id: int
    payee: str
    currency: str
    amount: int


async def approved_rewards(conn: asyncpg.Connection) -> list[ApprovedReward]:
    """Every approved cash reward, locked, grouped by program, payee and currency (credit
    and coupon rewards are the merchant's to give: never paid out)."""
    rows = await conn.fetch(
        """SELECT program_id, id, payee, currency, amount FROM rewards
           WHERE status = 'approved' AND kind = 'cash'
           ORDER BY program_id, payee, currency, id FOR UPDATE""")
    return [ApprovedReward(r["program_id"], r["id"], r["payee"], r["currency"], r["amount"])
            for r in rows]


@dataclass(frozen=True, slots=True)
class Balance:
    program_id: int
    payee: str
    currency: str
    amount: int


async def balances(conn: asyncpg.Connection,
                   accounts: Sequence[tuple[int, str, str]]) -> list[Balance]:
    """The ledger balance of each (program_id, payee, currency) that has entries."""
    rows = await conn.fetch(
        """SELECT program_id, payee, currency, sum(amount) AS balance
           FROM ledger_entries
           WHERE (program_id, payee, currency) IN (
               SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[]))
           GROUP BY program_id, payee, currency""",
        [a[0] for a in accounts], [a[1] for a in accounts], [a[2] for a in accounts])
    return [Balance(r["program_id"], r["payee"], r["currency"], int(r["balance"]))
            for r in rows]


async def insert_batch(conn: asyncpg.Connection, batch_id: uuid.UUID, actor: str, lines: int,
                       totals: dict[str, int]) -> None:
    await conn.execute(
        "INSERT INTO payout_batches (id, actor, lines, totals) VALUES ($1, $2, $3, $4::jsonb)",
        batch_id, actor, lines, json.dumps(totals))


async def insert_payouts(conn: asyncpg.Connection, batch_id: uuid.UUID, actor: str,
                         entries: Sequence[tuple[int, str, str, int]]) -> None:
    """`payout` ledger entries: (program_id, payee, currency, amount (negative))."""
    await conn.executemany(
        """INSERT INTO ledger_entries (program_id, payee, currency, amount, kind, batch_id,
               actor) VALUES ($1, $2, $3, $4, 'payout', $5, $6)""",
        [(*e, batch_id, actor) for e in entries])


async def mark_paid(conn: asyncpg.Connection, reward_ids: list[int],
                    batch_id: uuid.UUID) -> int:
    """The approved ones among these rewards become `paid` in the batch; how many did."""
    n: int = await conn.fetchval(
        """WITH paid AS (
               UPDATE rewards SET status = 'paid', batch_id = $2, paid_at = now()
               WHERE id = ANY($1::bigint[]) AND status = 'approved' RETURNING 1)
           SELECT count(*) FROM paid""", reward_ids, batch_id)
    return n


async def program_slugs(conn: asyncpg.Connection, program_ids: list[int]) -> dict[int, str]:
    """These programs' slugs by id."""
    rows = await conn.fetch("SELECT id, slug FROM programs WHERE id = ANY($1::bigint[])",
                            program_ids)
    return {r["id"]: r["slug"] for r in rows}


@dataclass(frozen=True, slots=True)
class PayoutBatchRow:
    id: uuid.UUID
    created_at: datetime
    actor: str
    lines: int
    totals: dict[str, int]


def _batch(r: asyncpg.Record) -> PayoutBatchRow:
    return PayoutBatchRow(r["id"], r["created_at"], r["actor"], r["lines"],
                          {k: int(v) for k, v in json.loads(r["totals"]).items()})


async def payout_batches(conn: asyncpg.Connection, *, program_id: int | None, limit: int,
                         before: uuid.UUID | None) -> list[PayoutBatchRow]:
    """Batches newest first (created_at, then id), older than batch `before` if given, with
    a payout entry of `program_id` if given."""
    rows = await conn.fetch(
        """SELECT b.id, b.created_at, b.actor, b.lines, b.totals::text AS totals
           FROM payout_batches b
           WHERE ($1::bigint IS NULL OR EXISTS (
                      SELECT 1 FROM ledger_entries e
                      WHERE e.program_id = $1 AND e.kind = 'payout' AND e.batch_id = b.id))
             AND ($2::uuid IS NULL OR (b.created_at, b.id) < (
                      SELECT o.created_at, o.id FROM payout_batches o WHERE o.id = $2))
           ORDER BY b.created_at DESC, b.id DESC LIMIT $3""", program_id, before, limit)
    return [_batch(r) for r in rows]


async def payout_batch(conn: asyncpg.Connection, batch_id: uuid.UUID) -> PayoutBatchRow | None:
    row = await conn.fetchrow(
        """SELECT id, created_at, actor, lines, totals::text AS totals FROM payout_batches
           WHERE id = $1""", batch_id)
    return None if row is None else _batch(row)


@dataclass(frozen=True, slots=True)
class PayoutBatchLine:
    program_id: int
    program: str
    payee: str
    currency: str
    amount: int
    reward_ids: tuple[int, ...]


async def payout_batch_lines(conn: asyncpg.Connection,
                             batch_id: uuid.UUID) -> list[PayoutBatchLine]:
    """A batch's lines: its payout entries (paid amounts, positive) with the rewards it paid
    for each, in the order its export wrote them (program, payee, currency)."""
    rows = await conn.fetch(
        """SELECT e.program_id, p.slug, e.payee, e.currency, -e.amount AS amount,
                  coalesce(ARRAY(SELECT r.id FROM rewards r
                                 WHERE r.program_id = e.program_id AND r.batch_id = e.batch_id
                                   AND r.payee = e.payee AND r.currency = e.currency
                                 ORDER BY r.id), '{}') AS reward_ids
           FROM ledger_entries e JOIN programs p ON p.id = e.program_id
           WHERE e.kind = 'payout' AND e.batch_id = $1
           ORDER BY e.program_id, e.payee, e.currency""", batch_id)
    return [PayoutBatchLine(r["program_id"], r["slug"], r["payee"], r["currency"],
                            int(r["amount"]), tuple(r["reward_ids"])) for r in rows]


# -- the decisions report (tracker.finance.decisions) -------------------------------------------


@dataclass(frozen=True, slots=True)
class HeldRewardsByReason:
    """Rewards the engine held (flagged, or rejected automatically) carrying one reason code,
    in one currency: counts and amounts (tracker.finance.decisions defines each)."""

    code: str  # `none`: a held reward without reasons
    currency: str
    flagged: int
    rejected: int
    awaiting: int
    overturned: int
    held_amount: int
    overturned_amount: int


async def held_rewards_by_reason(conn: asyncpg.Connection, program_id: int, *,
                                 by_reason: bool = True) -> list[HeldRewardsByReason]:
    """Per reason code and currency; with `by_reason` false, per currency alone (code `*`),
    each reward once."""
    codes = ("""SELECT DISTINCT x->>'code' AS code
               FROM jsonb_array_elements(CASE WHEN jsonb_typeof(h.reasons) = 'array'
                                              THEN h.reasons ELSE '[]'::jsonb END) x
               WHERE x->>'code' IS NOT NULL""" if by_reason else "SELECT '*' AS code")
    rows = await conn.fetch(
        """WITH r AS (
               SELECT r.id, r.amount, r.currency, r.status, r.reasons,
                      r.flagged_at IS NOT NULL AS flagged,
                      EXISTS (SELECT 1 FROM audit_log a
                              WHERE a.object_type = 'reward' AND a.object_id = r.id::text
                                AND a.actor = 'system:clearance'
                                AND a.action = 'reward.reject') AS auto_rejected,
                      EXISTS (SELECT 1 FROM audit_log a
                              WHERE a.object_type = 'reward' AND a.object_id = r.id::text
                                AND a.actor NOT LIKE 'system:%'
                                AND a.action = 'reward.approve') AS overturned
               FROM rewards r WHERE r.program_id = $1),
           held AS (SELECT * FROM r WHERE flagged OR auto_rejected)
           SELECT coalesce(c.code, 'none') AS code, h.currency,
                  count(*) FILTER (WHERE h.flagged) AS flagged,
                  count(*) FILTER (WHERE h.auto_rejected AND NOT h.flagged) AS rejected,
                  count(*) FILTER (WHERE h.status = 'flagged') AS awaiting,
                  count(*) FILTER (WHERE h.overturned) AS overturned,
                  coalesce(sum(h.amount), 0) AS held_amount,
                  coalesce(sum(h.amount) FILTER (WHERE h.overturned), 0) AS overturned_amount
           FROM held h
           LEFT JOIN LATERAL (""" + codes + """) c ON true
           GROUP BY 1, 2 ORDER BY 1, 2""", program_id)
    return [HeldRewardsByReason(r["code"], r["currency"], r["flagged"], r["rejected"],
                                r["awaiting"], r["overturned"], int(r["held_amount"]),
                                int(r["overturned_amount"])) for r in rows]


# -- webhooks ----------------------------------------------------------------------------------


async def enqueue_webhooks(conn: asyncpg.Connection, event: str, reward_ids: list[int]) -> None:
    """An outbox event per reward, for the programs that have a webhook URL."""
    await conn.execute(
        """INSERT INTO webhook_outbox (program_id, event, payload)
           SELECT r.program_id, $1, jsonb_build_object(
                      'event', $1::text,
                      'reward', jsonb_build_object(
                          'id', r.id, 'program', p.slug, 'referrer', f.external_id,
                          'beneficiary', r.beneficiary, 'payee', r.payee,
                          'conversion', r.conversion_id, 'event_id', c.event_id,
                          'amount', r.amount, 'currency', r.currency, 'status', r.status,
                          'batch_id', r.batch_id, 'kind', r.kind, 'variant', r.variant,
                          'coupon_code', (SELECT k.code FROM coupon_codes k
                                          WHERE k.reward_id = r.id)))
           FROM rewards r
           JOIN programs p ON p.id = r.program_id
           JOIN referrers f ON f.program_id = r.program_id AND f.id = r.referrer_id
           JOIN conversions c ON c.program_id = r.program_id AND c.id = r.conversion_id
           WHERE r.id = ANY($2::bigint[]) AND coalesce(p.settings->>'webhook_url', '') <> ''
           ORDER BY r.id""", event, reward_ids)


_UTC_TEXT = """'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'"""


async def enqueue_conversion_webhooks(conn: asyncpg.Connection, program_id: int,
                                      conversion_ids: list[int]) -> None:
    """A `referral.converted` event per conversion credited to a referrer, if the program
    has a webhook URL: the conversion and its referrers with their credits."""
    await conn.execute(
        """INSERT INTO webhook_outbox (program_id, event, payload)
           SELECT c.program_id, 'referral.converted', jsonb_build_object(
                      'event', 'referral.converted',
                      'referral', jsonb_build_object(
                          'program', p.slug, 'conversion', c.id, 'event_id', c.event_id,
                          'type', c.type, 'customer_id', c.customer_id, 'amount', c.amount,
                          'currency', c.currency,
                          'occurred_at', to_char(c.occurred_at AT TIME ZONE 'UTC', """
        + _UTC_TEXT + """),
                          'referrers', cr.referrers))
           FROM conversions c
           JOIN programs p ON p.id = c.program_id
           JOIN LATERAL (
               SELECT jsonb_agg(jsonb_build_object('referrer', f.external_id,
                                                   'credit', x.credit)
                                ORDER BY x.credit DESC, x.referrer_id) AS referrers
               FROM credits x
               JOIN referrers f ON f.program_id = x.program_id AND f.id = x.referrer_id
               WHERE x.program_id = c.program_id AND x.conversion_id = c.id) cr
             ON cr.referrers IS NOT NULL
           WHERE c.program_id = $1 AND c.id = ANY($2::bigint[])
             AND coalesce(p.settings->>'webhook_url', '') <> ''
           ORDER BY c.occurred_at, c.id""", program_id, conversion_ids)


async def enqueue_payout_webhooks(conn: asyncpg.Connection, batch_id: uuid.UUID) -> None:
    """A `payout.created` event per program the batch paid (with a webhook URL): the batch
    with that program's lines and totals only."""
    await conn.execute(
        """INSERT INTO webhook_outbox (program_id, event, payload)
           SELECT p.id, 'payout.created', jsonb_build_object(
                      'event', 'payout.created',
                      'payout', jsonb_build_object(
                          'batch_id', b.id, 'program', p.slug,
                          'created_at', to_char(b.created_at AT TIME ZONE 'UTC', """
        + _UTC_TEXT + """),
                          'created_by', b.actor, 'lines', l.lines, 'totals', l.totals))
           FROM payout_batches b
           JOIN LATERAL (
               SELECT e.program_id,
                      jsonb_agg(jsonb_build_object(
                          'beneficiary', e.payee, 'amount', -e.amount, 'currency', e.currency,
                          'reward_ids', coalesce((
                              SELECT jsonb_agg(r.id ORDER BY r.id) FROM rewards r
                              WHERE r.program_id = e.program_id AND r.batch_id = e.batch_id
                                AND r.payee = e.payee AND r.currency = e.currency),
                              '[]'::jsonb))
                          ORDER BY e.payee, e.currency) AS lines,
                      (SELECT jsonb_object_agg(t.currency, t.total) FROM (
                           SELECT t.currency, sum(-t.amount) AS total FROM ledger_entries t
                           WHERE t.program_id = e.program_id AND t.kind = 'payout'
                             AND t.batch_id = b.id GROUP BY t.currency) t) AS totals
               FROM ledger_entries e
               WHERE e.kind = 'payout' AND e.batch_id = b.id
               GROUP BY e.program_id) l ON true
           JOIN programs p ON p.id = l.program_id
           WHERE b.id = $1 AND coalesce(p.settings->>'webhook_url', '') <> ''
           ORDER BY p.id""", batch_id)


async def enqueue_ask_webhook(conn: asyncpg.Connection, program_id: int,
                              payload: dict[str, Any]) -> None:
    """A `referral.ask` event (the payload as built by tracker.asks.asks)."""
    await conn.execute(
        """INSERT INTO webhook_outbox (program_id, event, payload)
           VALUES ($1, 'referral.ask', $2::jsonb)""", program_id, json.dumps(payload))


@dataclass(frozen=True, slots=True)
class DueWebhook:
    program_id: int
    id: int
    event: str
    payload: str  # JSON text, sent as it is
    attempts: int  # before this one
    slug: str
    url: str | None  # the program's webhook_url now
    # referral.ask only: its ask (None when it no longer exists), the ask's status and deadline.
    ask_id: int | None = None
    ask_status: str | None = None
    deadline: datetime | None = None


async def claim_due_webhooks(conn: asyncpg.Connection, limit: int, lease_s: float,
                             program_id: int | None = None) -> list[DueWebhook]:
    """Up to `limit` due events (of one program, when given), claimed by moving them `lease_s`
    into the future (events another transaction holds are skipped); a `referral.ask` with its
    ask as it is now."""
    rows = await conn.fetch(
        """WITH due AS (
               SELECT w.program_id, w.id, a.id AS ask_id, a.status AS ask_status, a.deadline
               FROM webhook_outbox w
               LEFT JOIN asks a
                 ON w.event = 'referral.ask' AND a.program_id = w.program_id
                AND a.id = (w.payload->'ask'->>'ask_id')::bigint
               WHERE w.delivered_at IS NULL AND w.failed_at IS NULL
                 AND w.next_attempt_at <= now()
                 AND ($3::bigint IS NULL OR w.program_id = $3)
               ORDER BY w.next_attempt_at, w.id LIMIT $1
               FOR UPDATE OF w SKIP LOCKED)
           UPDATE webhook_outbox o SET next_attempt_at = now() + make_interval(secs => $2)
           FROM due, programs p
           WHERE o.program_id = due.program_id AND o.id = due.id AND p.id = o.program_id
           RETURNING o.program_id, o.id, o.event, o.payload::text AS payload, o.attempts,
                     p.slug, p.settings->>'webhook_url' AS url,
                     due.ask_id, due.ask_status, due.deadline""", limit, lease_s, program_id)
    return [DueWebhook(r["program_id"], r["id"], r["event"], r["payload"], r["attempts"],
                       r["slug"], r["url"], r["ask_id"], r["ask_status"], r["deadline"])
            for r in rows]


async def mark_delivered(conn: asyncpg.Connection, program_id: int, event_id: int) -> None:
    await conn.execute(
        """UPDATE webhook_outbox SET delivered_at = now(), attempts = attempts + 1,
                  last_error = NULL WHERE program_id = $1 AND id = $2""",
        program_id, event_id)


async def mark_failed(conn: asyncpg.Connection, program_id: int, event_id: int, *,
                      attempts: int, error: str, retry_in_s: float, gave_up: bool) -> None:
    """A failed attempt: due again in `retry_in_s`, or never again when `gave_up`."""
    await conn.execute(
        """UPDATE webhook_outbox SET attempts = $3, last_error = $4,
                  next_attempt_at = now() + make_interval(secs => $5),
                  failed_at = CASE WHEN $6 THEN now() END
           WHERE program_id = $1 AND id = $2""",
        program_id, event_id, attempts, error, retry_in_s, gave_up)


async def mark_ask_sent(conn: asyncpg.Connection, program_id: int, ask_id: int) -> None:
    """A queued ask whose referral.ask was delivered: sent now."""
    await conn.execute(
        """UPDATE asks SET status = 'sent', sent_at = now()
           WHERE program_id = $1 AND id = $2 AND status = 'queued'""", program_id, ask_id)


async def expire_ask(conn: asyncpg.Connection, program_id: int, ask_id: int,
                     reason: str) -> bool:
    """A queued ask whose referral.ask will never be delivered: expired with `reason`."""
    status: str = await conn.execute(
        """UPDATE asks SET status = 'expired', reason = $3
           WHERE program_id = $1 AND id = $2 AND status = 'queued'""",
        program_id, ask_id, reason)
    return status == "UPDATE 1"


# -- coupons (migration 0023) ------------------------------------------------------------------


async def assign_coupon(conn: asyncpg.Connection, program_id: int, reward_id: int,
                        pool: str) -> str | None:
    """The reward's code: the one it has already (a reward never gets a second), or one free
    code of its pool, taken in the caller's transaction; None when the pool has none free.
    Codes other transactions are taking are skipped (SKIP LOCKED), so of two approvals that
    race for the last code one gets it and the other finds none."""
    have: str | None = await conn.fetchval(
        "SELECT code FROM coupon_codes WHERE reward_id = $1", reward_id)
    if have is not None:
        return have
    code: str | None = await conn.fetchval(
        """UPDATE coupon_codes SET reward_id = $3, assigned_at = now()
           WHERE id = (SELECT id FROM coupon_codes
                       WHERE program_id = $1 AND pool = $2 AND reward_id IS NULL
                       ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED)
           RETURNING code""", program_id, pool, reward_id)
    return code


async def add_coupons(conn: asyncpg.Connection, program_id: int, pool: str,
                      codes: Sequence[str]) -> int:
    """The codes added to the pool (those it has already are left as they are)."""
    n: int = await conn.fetchval(
        """WITH added AS (
               INSERT INTO coupon_codes (program_id, pool, code)
               SELECT $1, $2, c FROM unnest($3::text[]) WITH ORDINALITY AS u(c, o) ORDER BY o
               ON CONFLICT (program_id, pool, code) DO NOTHING RETURNING 1)
           SELECT count(*) FROM added""", program_id, pool, list(codes))
    return n


@dataclass(frozen=True, slots=True)
class CouponCounts:
    pool: str
    available: int
    assigned: int


async def coupon_counts(conn: asyncpg.Connection | asyncpg.Pool, program_id: int,
                        pool: str | None) -> list[CouponCounts]:
    """Free and assigned codes per pool of the program (one pool, or all)."""
    rows = await conn.fetch(
        """SELECT pool, count(*) FILTER (WHERE reward_id IS NULL) AS available,
                  count(*) FILTER (WHERE reward_id IS NOT NULL) AS assigned
           FROM coupon_codes WHERE program_id = $1 AND ($2::text IS NULL OR pool = $2)
           GROUP BY pool ORDER BY pool""", program_id, pool)
    return [CouponCounts(r["pool"], r["available"], r["assigned"]) for r in rows]


# -- incentive experiments (tracker.finance.experiments) ----------------------------------------
# Per referrer with a recorded variant: the unit the experiment randomises. A conversion one of
# whose rewards is fraud-flagged (`flagged` or `rejected`) counts for nothing here.

_NOT_FRAUD = """NOT EXISTS (SELECT 1 FROM rewards w
                        WHERE w.program_id = c.program_id AND w.conversion_id = c.id
                          AND w.status IN ('flagged', 'rejected'))"""


@dataclass(frozen=True, slots=True)
class ExperimentArm:
    variant: str
    referrers: int
    shares: int
    clicks: int  # not bots, not duplicates
    converted: int  # referrers with at least one referred customer
    customers: int  # distinct referred customers (a customer two referrers brought: once)


@dataclass(frozen=True, slots=True)
class ExperimentMoney:
    """Money of one referrer in one currency: revenue, or the cost of its approved or paid
    rewards to one side."""

    referrer_id: int
    variant: str
    currency: str
    kind: str  # revenue | referrer | referee (the beneficiary of a cost)
    amount: float  # minor units (revenue is fractional: credit)


@dataclass(frozen=True, slots=True)
class ExperimentRewardCount:
    variant: str
    status: str
    n: int


async def experiment_arms(conn: asyncpg.Connection, program_id: int) -> list[ExperimentArm]:
    """Per recorded variant: its referrers, their shares, counted clicks, how many brought a
    referred customer (credited conversion, not fraud-flagged), and those customers. One
    grouped pass over each table (a program may have many referrers)."""
    rows = await conn.fetch(
        f"""WITH s AS (SELECT referrer_id, count(*) AS n FROM shares WHERE program_id = $1
                      GROUP BY referrer_id),
                k AS (SELECT referrer_id, count(*) AS n FROM clicks
                      WHERE program_id = $1 AND NOT is_bot AND NOT is_duplicate
                      GROUP BY referrer_id),
                v AS (SELECT DISTINCT cr.referrer_id, c.customer_id
                      FROM credits cr
                      JOIN conversions c
                        ON c.program_id = cr.program_id AND c.id = cr.conversion_id
                      WHERE cr.program_id = $1 AND cr.credit > 0
                        AND c.type = ANY($2::text[]) AND {_NOT_FRAUD}),
                won AS (SELECT DISTINCT referrer_id FROM v),
                per AS (SELECT f.variant, coalesce(s.n, 0) AS shares, coalesce(k.n, 0) AS clicks,
                               won.referrer_id IS NOT NULL AS converted
                        FROM referrers f
                        LEFT JOIN s ON s.referrer_id = f.id
                        LEFT JOIN k ON k.referrer_id = f.id
                        LEFT JOIN won ON won.referrer_id = f.id
                        WHERE f.program_id = $1 AND f.variant IS NOT NULL),
                cust AS (SELECT variant, count(*) AS n
                         FROM (SELECT DISTINCT f.variant, v.customer_id
                               FROM v JOIN referrers f
                                 ON f.program_id = $1 AND f.id = v.referrer_id
                               WHERE f.variant IS NOT NULL) d
                         GROUP BY variant)
           SELECT per.variant, count(*) AS referrers, sum(shares)::bigint AS shares,
                  sum(clicks)::bigint AS clicks, count(*) FILTER (WHERE converted) AS converted,
                  coalesce(max(cust.n), 0) AS customers
           FROM per LEFT JOIN cust ON cust.variant = per.variant
           GROUP BY per.variant ORDER BY per.variant""", program_id, list(CREDITED_TYPES))
    return [ExperimentArm(r["variant"], r["referrers"], r["shares"], r["clicks"],
                          r["converted"], r["customers"]) for r in rows]


async def experiment_money(conn: asyncpg.Connection, program_id: int, currency: str
                           ) -> list[ExperimentMoney]:
    """Per referrer with a variant, currency and kind: referred revenue, each credited
    purchase or renewal (not fraud-flagged) at its credit, net of what refunds and chargebacks
    took back (one without an amount takes the whole; never more than the amount; `currency`
    is the program's, for a conversion that names none); and the cost of its rewards made
    under its variant that are approved or paid (a reversed one costs nothing: its clawback
    settles what was paid), by beneficiary (a referee reward's referrer is the credited one
    whose variant made it)."""
    rows = await conn.fetch(
        f"""WITH x AS (SELECT original_event_id AS event_id, sum(amount) AS amount,
                             bool_or(amount IS NULL) AS whole
                      FROM conversions
                      WHERE program_id = $1 AND type IN ('refund', 'chargeback')
                      GROUP BY original_event_id)
           SELECT cr.referrer_id, f.variant, coalesce(c.currency, $2) AS currency,
                  'revenue' AS kind,
                  sum(cr.credit::numeric * (c.amount - CASE
                      WHEN x.whole THEN c.amount
                      ELSE least(c.amount, coalesce(x.amount, 0)) END))::float8 AS amount
           FROM credits cr
           JOIN conversions c ON c.program_id = cr.program_id AND c.id = cr.conversion_id
           JOIN referrers f ON f.program_id = cr.program_id AND f.id = cr.referrer_id
           LEFT JOIN x ON x.event_id = c.event_id
           WHERE cr.program_id = $1 AND f.variant IS NOT NULL AND cr.credit > 0
             AND c.type IN ('purchase', 'renewal') AND c.amount IS NOT NULL AND {_NOT_FRAUD}
           GROUP BY cr.referrer_id, f.variant, coalesce(c.currency, $2)
           UNION ALL
           SELECT w.referrer_id, w.variant, w.currency, w.beneficiary,
                  sum(w.amount)::float8
           FROM rewards w
           JOIN referrers f ON f.program_id = w.program_id AND f.id = w.referrer_id
           WHERE w.program_id = $1 AND w.variant = f.variant
             AND w.status IN ('approved', 'paid')
           GROUP BY w.referrer_id, w.variant, w.currency, w.beneficiary""",
        program_id, currency)
    return [ExperimentMoney(r["referrer_id"], r["variant"], r["currency"], r["kind"],
                            r["amount"]) for r in rows]


async def experiment_reward_counts(conn: asyncpg.Connection, program_id: int
                                   ) -> list[ExperimentRewardCount]:
    """Rewards made under their referrer's variant, per variant and status."""
    rows = await conn.fetch(
        """SELECT w.variant, w.status, count(*) AS n
           FROM rewards w
           JOIN referrers f ON f.program_id = w.program_id AND f.id = w.referrer_id
           WHERE w.program_id = $1 AND w.variant = f.variant
           GROUP BY w.variant, w.status""", program_id)
    return [ExperimentRewardCount(r["variant"], r["status"], r["n"]) for r in rows]
