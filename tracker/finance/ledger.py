"""Finance decisions and the ledger: where money is owed, exactly once.

- `decide`: finance approves (from `flagged`, or `rejected`: an overturn) or rejects (from
  `flagged`, `pending`, or `approved` and not yet paid: an overturn) with a reason. The
  reward row is locked, so of two concurrent decisions exactly one wins; the other sees the
  new status and gets `Conflict` (HTTP 409). Each decision writes its audit row and, for an
  approval, the `earned` ledger entry; rejecting an approved reward writes a `reversal` entry
  that undoes what its approval earned (the ledger is append-only: nothing is edited), and
  its webhook event (`reward.approved` or `reward.rejected`). All in the same transaction.
  Above the program's `four_eyes_above`, the first approval is recorded and the reward keeps
  its status (and sends nothing) until a second, different person approves:
  approvals count people (`person`, from `Principal.identity`: a person's several tokens are
  one pair of eyes), not tokens.
- A rejection made by a person is overturned only by another person (each approval of it,
  under four-eyes both); an automatic one (actor `system:clearance`) by any finance person.
- Every completed decision closes the reward's *round* (migration 0020): four-eyes approvals
  count within a round, and each round writes at most one `earned` and one `reversal` entry.
- Finance approving a reward the fraud engine held (flagged, or rejected automatically) is an
  overturn of the engine: `refguard_reward_overturns_total{reason}` counts it per reason code.
- `earn`: the `earned` entries of approvals (finance's here, clearance's automatic ones).
  Clawbacks are written by clearance's reversals, `payout` entries by tracker.finance.payouts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import asyncpg

from tracker import audit, metrics
from tracker.errors import Conflict
from tracker.finance import queries, webhooks
from tracker.finance.payouts import PAYOUT_LOCK

FROM_STATUS = {"approve": ("flagged", "rejected"),
               "reject": ("flagged", "pending", "approved")}
# The decisions that undo an earlier one (the reward had been decided already).
OVERTURNS = {"approve": "rejected", "reject": "approved"}
SYSTEM_ACTOR = "system:clearance"  # tracker.finance.clearance.ACTOR (it imports this module)
_CODE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")


@dataclass(frozen=True, slots=True)
class Decision:
    reward_id: int
    status: str
    approvals: int  # four-eyes approvals so far (0 when the rule does not apply)
    needed: int


def overturn_labels(codes: tuple[str, ...]) -> list[str]:
    """The `reason` labels of an overturn: its reward's codes (a bounded set, the engine's),
    `other` for anything that is not a plain code, `none` when it carries none."""
    labels = sorted({c if _CODE.match(c) else "other" for c in codes})
    return labels or ["none"]


async def decide(conn: asyncpg.Connection, reward_id: int, action: str, actor: str,
                 reason: str, *, person: str | None = None,
                 expected_status: str | None = None) -> Decision:
    """`actor` decides (audit rows and `decided_by` name it); `person` is who that is for the
    four-eyes rule and for overturning a rejection (None: the actor is its own person).

    `expected_status`: the status the decider saw; when the reward has another one now (a
    colleague decided it meanwhile) the decision is a `Conflict` instead of an overturn of a
    decision the decider never saw. None: any status the action may start from."""
    person = actor if person is None else person
    if action not in FROM_STATUS:
        raise ValueError(f"unknown action {action!r}")
    async with conn.transaction():
        row = await queries.lock_reward(conn, reward_id)
        if expected_status is not None and row.status != expected_status:
            raise Conflict(f"the reward is {row.status} now, not {expected_status}: "
                           "someone decided it meanwhile", reward_status=row.status)
        if row.status not in FROM_STATUS[action]:
            raise Conflict(f"the reward is {row.status}; only a "
                           f"{' or '.join(FROM_STATUS[action])} reward can be "
                           f"{'approved' if action == 'approve' else 'rejected'}",
                           reward_status=row.status)
        overturn = OVERTURNS[action] == row.status
        if action == "approve" and row.status == "rejected" and row.decided_by != SYSTEM_ACTOR:
            rejecter = row.decided_person or row.decided_by
            if rejecter in (person, actor):
                raise Conflict("you rejected this reward: another person must overturn it",
                               reward_status=row.status)
        if action == "reject" and row.status == "approved" and not \
                await queries.try_xact_lock_shared(conn, PAYOUT_LOCK):
            # Its reversal is written under the payouts lock (shared), so no export pays the
            # reward meanwhile. An export holds that lock and then waits for the approved
            # rewards' rows: waiting for it here, holding this approved reward's row, could
            # deadlock, so a running (or queued) export makes this a 409 (after it: paid).
            raise Conflict("a payout batch is being exported right now; try again in a moment",
                           reward_status=row.status)
        pid = row.program_id
        limit = row.four_eyes_above
        needed = 2 if action == "approve" and limit is not None and row.amount > limit else 1
        approvals = 0
        if needed == 2:
            if not await queries.add_approval(conn, pid, reward_id, actor, reason,
                                              person=person, round_=row.round):
                raise Conflict("you have approved this reward already (with this or another of "
                               "your tokens); another person must approve it",
                               reward_status=row.status)
            approvals = await queries.count_approvals(conn, pid, reward_id, row.round)
            if approvals < needed:
                await audit.record(conn, actor=actor, action="reward.approve.first",
                                   object_type="reward", object_id=str(reward_id), program_id=pid,
                                   reason=reason,
                                   details={"approvals": approvals, "needed": needed,
                                            "person": person, "from": row.status})
                metrics.DECISIONS.labels(action="first_approval", by="finance").inc()
                return Decision(reward_id, row.status, approvals, needed)
        status = "approved" if action == "approve" else "rejected"
        await queries.set_decision(conn, pid, reward_id, status=status, actor=actor,
                                   reason=reason, person=person)
        reversed_ = 0
        if status == "approved":
            await _grant(conn, row, actor)
        else:
            await webhooks.enqueue(conn, "reward.rejected", [reward_id])
        if status == "rejected" and row.status == "approved":
            # What its approval earned is owed no more: a negative entry nets it.
            reversed_ = await queries.earned_net(conn, pid, reward_id)
            if reversed_ > 0:
                await queries.insert_reversal(conn, pid, payee=row.payee,
                                              currency=row.currency, amount=-reversed_,
                                              reward_id=reward_id, actor=actor,
                                              round_=row.round)
        details: dict[str, object] = {"from": row.status, "amount": row.amount,
                                      "currency": row.currency, "person": person}
        if overturn:
            details["overturn"] = True
        if reversed_:
            details["reversal"] = -reversed_
        await audit.record(conn, actor=actor, action=f"reward.{action}", object_type="reward",
                    object_id=str(reward_id), program_id=pid, reason=reason, details=details)
    metrics.DECISIONS.labels(action=status, by="finance").inc()
    if status == "approved" and row.engine_held:
        for label in overturn_labels(row.reason_codes):
            metrics.OVERTURNS.labels(reason=label).inc()
    return Decision(reward_id, status, approvals, needed if needed == 2 else 0)


async def _grant(conn: asyncpg.Connection, row: queries.RewardToDecide, actor: str) -> None:
    """What an approval gives, in the decision's transaction: a cash reward's `earned` entry
    (only cash is paid out), a coupon reward's code, and the `reward.approved` event (which
    carries the kind and the code)."""
    if row.kind == "cash":
        await earn(conn, [(row.program_id, row.payee, row.currency, row.amount, row.id)],
                   actor, round_=row.round)
    await hand_out_coupon(conn, row)
    await webhooks.enqueue(conn, "reward.approved", [row.id])


async def hand_out_coupon(conn: asyncpg.Connection, row: queries.RewardToDecide) -> None:
    """A coupon reward being approved takes one code of its pool in the caller's transaction
    (the one it has already if it was approved before: a reward never gets a second); an
    empty pool refuses the approval (Conflict) until the merchant uploads codes."""
    if row.kind != "coupon" or row.pool is None:
        return
    if await queries.assign_coupon(conn, row.program_id, row.id, row.pool) is None:
        raise Conflict(f"coupon pool {row.pool!r} is empty; upload codes "
                       "(POST /api/v1/programs/{slug}/coupons) and approve again",
                       reward_status=row.status, field="pool")


async def earn(conn: asyncpg.Connection, rows: list[tuple[int, str, str, int, int]],
               actor: str, *, round_: int = 0) -> None:
    """The `earned` entries of rewards being approved in the caller's transaction:
    (program_id, payee, currency, amount, reward_id). Taken under the payouts lock, shared:
    an export (which holds it exclusively) never sees an approval without its money, nor
    money without its approved reward."""
    rows = [r for r in rows if r[3] > 0]
    if not rows:
        return
    await queries.xact_lock_shared(conn, PAYOUT_LOCK)
    await queries.insert_earned(conn, rows, actor, round_)
