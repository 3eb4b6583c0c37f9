"""Finance decisions, the ledger and payouts: where money moves, exactly once.

- `decide`: finance approves (from `flagged`) or rejects (from `flagged` or `pending`) with a
  reason. The reward row is locked, so of two concurrent decisions exactly one wins; the other
  sees the new status and gets `Conflict` (HTTP 409). Each decision writes its audit row and,
  for an approval, the `earned` ledger entry, in the same transaction. Above the program's
  `four_eyes_above`, the first approval is recorded and the reward stays flagged until a
  second, different finance user approves.
- `export_payouts`: one batch of every payee's balance (approved rewards, net of clawbacks),
  under a transaction-wide advisory lock, so two exports running at once never pay a reward
  twice: the second waits, then finds nothing new. The CSV is written and synced before the
  transaction commits; the rewards become `paid` and a `payout` entry zeroes each balance.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

import asyncpg

from tracker import audit, metrics
from tracker.errors import Conflict, NotFound
from tracker.finance import webhooks

PAYOUT_HEADER = ("batch_id", "beneficiary", "amount", "currency", "reward_ids")
PAYOUT_LOCK = int.from_bytes(hashlib.sha256(b"refguard-payouts").digest()[:8], "big",
                             signed=True)
FROM_STATUS = {"approve": ("flagged",), "reject": ("flagged", "pending")}


@dataclass(frozen=True, slots=True)
class Decision:
    reward_id: int
    status: str
    approvals: int  # four-eyes approvals so far (0 when the rule does not apply)
    needed: int


async def decide(conn: asyncpg.Connection, reward_id: int, action: str, actor: str,
                 reason: str) -> Decision:
    if action not in FROM_STATUS:
        raise ValueError(f"unknown action {action!r}")
    async with conn.transaction():
        row = await conn.fetchrow(
            """SELECT r.program_id, r.id, r.status, r.amount, r.payee, r.currency,
                      p.settings->'four_eyes_above' AS limit_
               FROM rewards r JOIN programs p ON p.id = r.program_id
               WHERE r.id = $1 FOR UPDATE OF r""", reward_id)
        if row is None:
            raise NotFound("reward")
        if row["status"] not in FROM_STATUS[action]:
            raise Conflict(f"the reward is {row['status']}; only a "
                           f"{' or '.join(FROM_STATUS[action])} reward can be "
                           f"{'approved' if action == 'approve' else 'rejected'}",
                           reward_status=row["status"])
        pid = row["program_id"]
        limit = json.loads(row["limit_"]) if row["limit_"] is not None else None
        needed = 2 if action == "approve" and limit is not None and row["amount"] > limit else 1
        approvals = 0
        if needed == 2:
            added = await conn.fetchval(
                """INSERT INTO reward_approvals (program_id, reward_id, actor, reason)
                   VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING RETURNING 1""",
                pid, reward_id, actor, reason)
            if added is None:
                raise Conflict("you have approved this reward already; a second finance user "
                               "must approve it", reward_status=row["status"])
            approvals = await conn.fetchval(
                "SELECT count(*) FROM reward_approvals WHERE program_id = $1 AND reward_id = $2",
                pid, reward_id)
            if approvals < needed:
                await audit.record(conn, actor=actor, action="reward.approve.first",
                                   object_type="reward", object_id=str(reward_id), program_id=pid,
                                   reason=reason,
                                   details={"approvals": approvals, "needed": needed})
                metrics.DECISIONS.labels(action="first_approval", by="finance").inc()
                return Decision(reward_id, row["status"], approvals, needed)
        status = "approved" if action == "approve" else "rejected"
        await conn.execute(
            """UPDATE rewards SET status = $3, decided_by = $4, decided_at = now(),
                      decision_reason = $5 WHERE program_id = $1 AND id = $2""",
            pid, reward_id, status, actor, reason)
        if status == "approved":
            await earn(conn, [(pid, row["payee"], row["currency"], row["amount"], reward_id)],
                       actor)
            await webhooks.enqueue(conn, "reward.approved", [reward_id])
        await audit.record(conn, actor=actor, action=f"reward.{action}", object_type="reward",
                    object_id=str(reward_id), program_id=pid, reason=reason,
                    details={"from": row["status"], "amount": row["amount"],
                             "currency": row["currency"]})
    metrics.DECISIONS.labels(action=status, by="finance").inc()
    return Decision(reward_id, status, approvals, needed if needed == 2 else 0)


async def earn(conn: asyncpg.Connection, rows: list[tuple[int, str, str, int, int]],
               actor: str) -> None:
    """The `earned` entries of rewards being approved in the caller's transaction:
    (program_id, payee, currency, amount, reward_id). Taken under the payouts lock, shared:
    an export (which holds it exclusively) never sees an approval without its money, nor
    money without its approved reward."""
    rows = [r for r in rows if r[3] > 0]
    if not rows:
        return
    await conn.execute("SELECT pg_advisory_xact_lock_shared($1)", PAYOUT_LOCK)
    await conn.executemany(
        """INSERT INTO ledger_entries (program_id, payee, currency, amount, kind, reward_id,
               actor) VALUES ($1, $2, $3, $4, 'earned', $5, $6)""",
        [(*r, actor) for r in rows])


# -- payouts -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PayoutLine:
    program_id: int
    payee: str
    amount: int
    currency: str
    reward_ids: tuple[int, ...]


def payout_csv(batch_id: uuid.UUID | None, lines: list[PayoutLine]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(PAYOUT_HEADER)
    for line in lines:
        writer.writerow((batch_id, line.payee, line.amount, line.currency,
                         ";".join(str(i) for i in line.reward_ids)))
    return out.getvalue()


async def export_payouts(conn: asyncpg.Connection, actor: str,
                         write: Callable[[str], None]) -> tuple[uuid.UUID | None,
                                                                 list[PayoutLine]]:
    """Pay every payee with approved rewards and a positive balance, as one batch.

    `write` receives the CSV text inside the transaction; if it raises, nothing is paid.
    With nothing to pay it receives the header alone and no batch is recorded.
    """
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", PAYOUT_LOCK)
        rows = await conn.fetch(
            """SELECT program_id, id, payee, currency, amount FROM rewards
               WHERE status = 'approved'
               ORDER BY program_id, payee, currency, id FOR UPDATE""")
        groups: dict[tuple[int, str, str], list[int]] = defaultdict(list)
        for r in rows:
            groups[(r["program_id"], r["payee"], r["currency"])].append(r["id"])
        balances = {(r["program_id"], r["payee"], r["currency"]): r["balance"]
                    for r in await conn.fetch(
                        """SELECT program_id, payee, currency, sum(amount) AS balance
                           FROM ledger_entries
                           WHERE (program_id, payee, currency) IN (
                               SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[]))
                           GROUP BY program_id, payee, currency""",
                        [k[0] for k in groups], [k[1] for k in groups], [k[2] for k in groups])}
        # A payee whose clawbacks exceed their earnings is not paid; their approved rewards
        # wait for a later batch, when new earnings cover the debt.
        lines = [PayoutLine(pid, payee, int(balances.get((pid, payee, cur), 0)), cur,
                            tuple(ids))
                 for (pid, payee, cur), ids in groups.items()
                 if balances.get((pid, payee, cur), 0) > 0]
        if not lines:
            write(payout_csv(None, []))
            return None, []
        # Approved rewards of nothing (a cap used up) whose payee gets no line: settled with
        # this batch, so they do not wait for a payment that will never come.
        paying = {(ln.program_id, ln.payee, ln.currency) for ln in lines}
        settled = [r["id"] for r in rows if r["amount"] == 0
                   and (r["program_id"], r["payee"], r["currency"]) not in paying]
        batch_id = uuid.uuid4()
        totals: dict[str, int] = defaultdict(int)
        for line in lines:
            totals[line.currency] += line.amount
        await conn.execute(
            "INSERT INTO payout_batches (id, actor, lines, totals) VALUES ($1, $2, $3, $4::jsonb)",
            batch_id, actor, len(lines), json.dumps(totals))
        await conn.executemany(
            """INSERT INTO ledger_entries (program_id, payee, currency, amount, kind, batch_id,
                   actor) VALUES ($1, $2, $3, $4, 'payout', $5, $6)""",
            [(ln.program_id, ln.payee, ln.currency, -ln.amount, batch_id, actor)
             for ln in lines])
        paid = [i for ln in lines for i in ln.reward_ids] + settled
        updated = await conn.fetchval(
            """WITH paid AS (
                   UPDATE rewards SET status = 'paid', batch_id = $2, paid_at = now()
                   WHERE id = ANY($1::bigint[]) AND status = 'approved' RETURNING 1)
               SELECT count(*) FROM paid""", paid, batch_id)
        if updated != len(paid):  # cannot happen under the lock; refuse rather than guess
            raise RuntimeError("rewards changed during the payout; nothing was paid")
        await webhooks.enqueue(conn, "reward.paid", paid)
        await audit.record(conn, actor=actor, action="payout.export", object_type="payout_batch",
                    object_id=str(batch_id), details={"lines": len(lines), "totals": totals,
                                                      "rewards": len(paid),
                                                      "settled_at_zero": len(settled)})
        write(payout_csv(batch_id, lines))
    return batch_id, lines

