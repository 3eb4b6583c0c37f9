"""The money in view (the review page): per program and currency, what is at stake, owed, paid,
clawed back and prevented; what each payee is owed.

- at stake: flagged rewards, waiting for finance;
- owed: approved rewards not yet paid (`approved`), and per payee the ledger's balance (earned,
  net of clawbacks and payouts), which is what the next payout pays;
- paid: the `payout` ledger entries (as a positive amount);
- clawed back: the `clawback` ledger entries (rewards reversed after they were paid), as a
  positive amount;
- rejected: rejected rewards (fraud prevented).
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg


@dataclass(frozen=True, slots=True)
class MoneyLine:
    """One program and currency; amounts in minor units, each with how many rewards."""

    program: str
    currency: str
    at_stake: int
    at_stake_count: int
    owed: int
    owed_count: int
    paid: int
    clawed_back: int
    rejected: int
    rejected_count: int


@dataclass(frozen=True, slots=True)
class Owed:
    """What one payee is owed in one program and currency: the approved, unpaid rewards, and
    the ledger balance (net of clawbacks) that the next payout pays if it is positive."""

    program: str
    payee: str
    currency: str
    approved: int
    rewards: int
    balance: int


async def money_lines(conn: asyncpg.Connection | asyncpg.Pool, *, program: str | None = None
                      ) -> list[MoneyLine]:
    rows = await conn.fetch(
        """WITH r AS (
             SELECT r.program_id, r.currency,
                    sum(r.amount) FILTER (WHERE r.status = 'flagged') AS at_stake,
                    count(*) FILTER (WHERE r.status = 'flagged') AS at_stake_count,
                    sum(r.amount) FILTER (WHERE r.status = 'approved') AS owed,
                    count(*) FILTER (WHERE r.status = 'approved') AS owed_count,
                    sum(r.amount) FILTER (WHERE r.status = 'rejected') AS rejected,
                    count(*) FILTER (WHERE r.status = 'rejected') AS rejected_count
             FROM rewards r GROUP BY 1, 2),
           l AS (
             SELECT program_id, currency,
                    -sum(amount) FILTER (WHERE kind = 'payout') AS paid,
                    -sum(amount) FILTER (WHERE kind = 'clawback') AS clawed_back
             FROM ledger_entries GROUP BY 1, 2)
           SELECT p.slug AS program, coalesce(r.currency, l.currency) AS currency,
                  coalesce(r.at_stake, 0) AS at_stake, coalesce(r.at_stake_count, 0)
                    AS at_stake_count,
                  coalesce(r.owed, 0) AS owed, coalesce(r.owed_count, 0) AS owed_count,
                  coalesce(l.paid, 0) AS paid, coalesce(l.clawed_back, 0) AS clawed_back,
                  coalesce(r.rejected, 0) AS rejected,
                  coalesce(r.rejected_count, 0) AS rejected_count
           FROM r FULL JOIN l ON l.program_id = r.program_id AND l.currency = r.currency
           JOIN programs p ON p.id = coalesce(r.program_id, l.program_id)
           WHERE $1::text IS NULL OR p.slug = $1
           ORDER BY 1, 2""", program)
    return [MoneyLine(r["program"], r["currency"], *(int(r[k]) for k in _AMOUNTS))
            for r in rows]


_AMOUNTS = ("at_stake", "at_stake_count", "owed", "owed_count", "paid", "clawed_back",
            "rejected", "rejected_count")


async def owed_by_payee(conn: asyncpg.Connection | asyncpg.Pool, *,
                        program: str | None = None, limit: int = 500) -> list[Owed]:
    """Payees with approved unpaid rewards or a non-zero balance, largest balance first."""
    rows = await conn.fetch(
        """WITH a AS (
             SELECT program_id, payee, currency, sum(amount) AS approved, count(*) AS rewards
             FROM rewards WHERE status = 'approved' GROUP BY 1, 2, 3),
           b AS (
             SELECT program_id, payee, currency, sum(amount) AS balance
             FROM ledger_entries GROUP BY 1, 2, 3)
           SELECT p.slug AS program, coalesce(a.payee, b.payee) AS payee,
                  coalesce(a.currency, b.currency) AS currency,
                  coalesce(a.approved, 0) AS approved, coalesce(a.rewards, 0) AS rewards,
                  coalesce(b.balance, 0) AS balance
           FROM a FULL JOIN b ON b.program_id = a.program_id AND b.payee = a.payee
                             AND b.currency = a.currency
           JOIN programs p ON p.id = coalesce(a.program_id, b.program_id)
           WHERE ($1::text IS NULL OR p.slug = $1)
             AND (coalesce(a.rewards, 0) > 0 OR coalesce(b.balance, 0) <> 0)
           ORDER BY balance DESC, approved DESC, 1, 2, 3 LIMIT $2""", program, limit)
    return [Owed(program=r["program"], payee=r["payee"], currency=r["currency"],
                 approved=int(r["approved"]), rewards=int(r["rewards"]),
                 balance=int(r["balance"])) for r in rows]
