"""Finance decisions and the ledger: where money is owed, exactly once.

- `decide`: finance approves (from `flagged`) or rejects (from `flagged` or `pending`) with a
  reason. The reward row is locked, so of two concurrent decisions exactly one wins; the other
  sees the new status and gets `Conflict` (HTTP 409). Each decision writes its audit row and,
  for an approval, the `earned` ledger entry, in the same transaction. Above the program's
  `four_eyes_above`, the first approval is recorded and the reward stays flagged until a
  second, different person approves: approvals count people (`person`, from
  `Principal.identity`: a person's several tokens are one pair of eyes), not tokens.
- `earn`: the `earned` entries of approvals (finance's here, clearance's automatic ones).
  Clawbacks are written by clearance's reversals, `payout` entries by tracker.finance.payouts.
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from tracker import audit, metrics
from tracker.errors import Conflict
from tracker.finance import queries, webhooks
from tracker.finance.payouts import PAYOUT_LOCK

FROM_STATUS = {"approve": ("flagged",), "reject": ("flagged", "pending")}


@dataclass(frozen=True, slots=True)
class Decision:
    reward_id: int
    status: str
    approvals: int  # four-eyes approvals so far (0 when the rule does not apply)
    needed: int


async def decide(conn: asyncpg.Connection, reward_id: int, action: str, actor: str,
                 reason: str, *, person: str | None = None) -> Decision:
    """`actor` decides (audit rows and `decided_by` name it); `person` is who that is for the
    four-eyes rule (None: the actor is its own person)."""
    person = actor if person is None else person
    if action not in FROM_STATUS:
        raise ValueError(f"unknown action {action!r}")
    async with conn.transaction():
        row = await queries.lock_reward(conn, reward_id)
        if row.status not in FROM_STATUS[action]:
            raise Conflict(f"the reward is {row.status}; only a "
                           f"{' or '.join(FROM_STATUS[action])} reward can be "
                           f"{'approved' if action == 'approve' else 'rejected'}",
                           reward_status=row.status)
        pid = row.program_id
        limit = row.four_eyes_above
        needed = 2 if action == "approve" and limit is not None and row.amount > limit else 1
        approvals = 0
        if needed == 2:
            if not await queries.add_approval(conn, pid, reward_id, actor, reason,
                                              person=person):
                raise Conflict("you have approved this reward already (with this or another of "
                               "your tokens); another person must approve it",
                               reward_status=row.status)
            approvals = await queries.count_approvals(conn, pid, reward_id)
            if approvals < needed:
                await audit.record(conn, actor=actor, action="reward.approve.first",
                                   object_type="reward", object_id=str(reward_id), program_id=pid,
                                   reason=reason,
                                   details={"approvals": approvals, "needed": needed,
                                            "person": person})
                metrics.DECISIONS.labels(action="first_approval", by="finance").inc()
                return Decision(reward_id, row.status, approvals, needed)
        status = "approved" if action == "approve" else "rejected"
        await queries.set_decision(conn, pid, reward_id, status=status, actor=actor, reason=reason)
        if status == "approved":
            await earn(conn, [(pid, row.payee, row.currency, row.amount, reward_id)], actor)
            await webhooks.enqueue(conn, "reward.approved", [reward_id])
        await audit.record(conn, actor=actor, action=f"reward.{action}", object_type="reward",
                    object_id=str(reward_id), program_id=pid, reason=reason,
                    details={"from": row.status, "amount": row.amount,
                             "currency": row.currency, "person": person})
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
    await queries.xact_lock_shared(conn, PAYOUT_LOCK)
    await queries.insert_earned(conn, rows, actor)
