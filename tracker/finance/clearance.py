"""Clearance: credited conversions become rewards; holds end; risk decides; refunds reverse.

One pass (`release`, run by the clearance job and by `refguard rewards release`):

1. attribute and fraud-scan whatever those jobs have not seen yet (so one call takes
   everything as far as it can go);
2. create rewards for attributed conversions under the program's rules (tracker.finance.rules),
   whatever their risk: a rejection is a status, never an absence;
3. reverse the rewards of refunded or charged-back conversions: a pending or flagged reward
   becomes `reversed`; an approved or paid one too, with a negative ledger entry that the next
   payout nets;
4. end holds: a pending reward whose hold is over and whose conversion a scan has seen becomes
   `approved` (risk below review_at), `flagged` (up to reject_at) or `rejected` (above, or
   `flagged` when the program's reject_action says so).

Every automatic approval, rejection and reversal writes an audit row, like finance's own.
"""

from __future__ import annotations

import calendar
import json
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from tracker import metrics
from tracker.db import job_lock
from tracker.finance import webhooks
from tracker.finance.ledger import earn
from tracker.finance.rules import Rule, cap, parse_rules, split_by_credit
from tracker.formats import CREDITED_TYPES
from tracker.programs.validation import ADAPTIVE_HOLD
from tracker.scoring.credits import attribute_pending
from tracker.scoring.risk import publish_flag_counts, scan

ACTOR = "system:clearance"
STATUSES = ("pending", "flagged", "approved", "rejected", "paid", "reversed")
BATCH = 5_000


@dataclass
class ReleaseSummary:
    created: int = 0
    reversed: int = 0
    decided: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def as_dict(self) -> dict[str, Any]:
        return {"created": self.created, "reversed": self.reversed,
                "decided": dict(self.decided)}


@dataclass(frozen=True, slots=True)
class ProgramRules:
    id: int
    currency: str
    hold_days: int
    review_at: float
    reject_at: float
    reject_action: str
    adaptive: dict[str, int] | None
    rules: list[Rule]

    @classmethod
    def load(cls, row: asyncpg.Record) -> ProgramRules:
        s = json.loads(row["settings"])
        reward = s.get("reward", {})
        adaptive = s.get("adaptive_hold")
        return cls(row["id"], reward.get("currency", "USD"), int(s.get("hold_days", 30)),
                   float(s.get("review_at", 0.5)), float(s.get("reject_at", 0.9)),
                   s.get("reject_action", "reject"),
                   None if adaptive is None else {**ADAPTIVE_HOLD, **adaptive},
                   parse_rules(reward))


async def release(conn: asyncpg.Connection, slug: str | None = None) -> ReleaseSummary:
    """Everything clearance can do now, for one program or all."""
    programs = await conn.fetch(
        "SELECT id, slug, settings::text AS settings FROM programs "
        "WHERE $1::text IS NULL OR slug = $1 ORDER BY id", slug)
    summary = ReleaseSummary()
    for row in programs:
        # Attribution and scans take their jobs' locks themselves; clearance takes its own,
        # so the clearance job and `refguard rewards release` never clear at once.
        await attribute_pending(conn, row["id"])
        await scan(conn, row["slug"], incremental=True)
        async with conn.transaction():
            await job_lock(conn, "clearance")
            program = ProgramRules.load(row)
            while (n := await create_rewards(conn, program)) > 0:
                summary.created += n
            summary.reversed += await reverse_refunded(conn, program.id)
            while True:
                decided = await end_holds(conn, program)
                for status, n in decided.items():
                    summary.decided[status] += n
                if sum(decided.values()) < BATCH:
                    break
    await publish_metrics(conn)
    return summary


# -- creation ----------------------------------------------------------------------------------


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


class _Usage:
    """Per-referrer amounts already granted per day and month (for caps), and approved counts
    (for tiers), loaded for a batch's referrers and kept current while the batch is built."""

    def __init__(self) -> None:
        self.day: dict[tuple[int, int, str], int] = defaultdict(int)
        self.month: dict[tuple[int, int, str], int] = defaultdict(int)
        self.approved: dict[int, int] = defaultdict(int)
        self.clean: dict[int, bool] = defaultdict(lambda: True)

    async def load(self, conn: asyncpg.Connection, program_id: int, referrers: list[int],
                   since: datetime) -> None:
        rows = await conn.fetch(
            """SELECT r.referrer_id, r.rule_index, c.occurred_at, r.amount
               FROM rewards r JOIN conversions c ON c.program_id = r.program_id
                                                AND c.id = r.conversion_id
               WHERE r.program_id = $1 AND r.referrer_id = ANY($2::bigint[])
                 AND r.beneficiary = 'referrer' AND r.status NOT IN ('rejected', 'reversed')
                 AND c.occurred_at >= $3""", program_id, referrers, since)
        for r in rows:
            self.add(r["referrer_id"], r["rule_index"], r["occurred_at"], r["amount"])
        for r in await conn.fetch(
                """SELECT referrer_id, count(DISTINCT conversion_id)
                          FILTER (WHERE status IN ('approved', 'paid')) AS approved,
                          count(*) FILTER (WHERE status IN ('rejected', 'reversed')) AS bad
                   FROM rewards WHERE program_id = $1 AND referrer_id = ANY($2::bigint[])
                     AND beneficiary = 'referrer' GROUP BY referrer_id""", program_id, referrers):
            self.approved[r["referrer_id"]] = r["approved"]
            self.clean[r["referrer_id"]] = r["bad"] == 0

    def add(self, referrer: int, rule: int, at: datetime, amount: int) -> None:
        at = at.astimezone(UTC)
        self.day[(referrer, rule, at.strftime("%Y-%m-%d"))] += amount
        self.month[(referrer, rule, at.strftime("%Y-%m"))] += amount

    def capped(self, rule: Rule, referrer: int, at: datetime, amount: int
               ) -> tuple[int, list[str]]:
        at = at.astimezone(UTC)
        notes = []
        day = self.day[(referrer, rule.index, at.strftime("%Y-%m-%d"))]
        month = self.month[(referrer, rule.index, at.strftime("%Y-%m"))]
        for name, used, limit in (("cap_per_day", day, rule.cap_per_day),
                                  ("cap_per_month", month, rule.cap_per_month)):
            left = cap(amount, used, limit)
            if left < amount:
                notes.append(f"{name} {limit} reached: {amount} cut to {left}")
                amount = left
        return amount, notes


async def create_rewards(conn: asyncpg.Connection, program: ProgramRules) -> int:
    """Rewards for the next batch of attributed conversions; the number of conversions done."""
    rows = await conn.fetch(
        """SELECT c.id, c.type, c.customer_id, c.amount, c.currency, c.occurred_at,
                  coalesce(array_agg(cr.referrer_id ORDER BY cr.credit DESC, cr.referrer_id)
                           FILTER (WHERE cr.referrer_id IS NOT NULL), '{}') AS referrers,
                  coalesce(array_agg(cr.credit ORDER BY cr.credit DESC, cr.referrer_id)
                           FILTER (WHERE cr.referrer_id IS NOT NULL), '{}') AS credits,
                  coalesce(array_agg(f.external_id ORDER BY cr.credit DESC, cr.referrer_id)
                           FILTER (WHERE cr.referrer_id IS NOT NULL), '{}') AS names
           FROM conversions c
           LEFT JOIN credits cr ON cr.program_id = c.program_id AND cr.conversion_id = c.id
           LEFT JOIN referrers f ON f.program_id = cr.program_id AND f.id = cr.referrer_id
           WHERE c.program_id = $1 AND c.rewarded_at IS NULL AND c.attributed_at IS NOT NULL
           GROUP BY c.program_id, c.id ORDER BY c.occurred_at, c.id LIMIT $2""",
        program.id, BATCH)
    if not rows:
        return 0
    customers = sorted({r["customer_id"] for r in rows})
    # Each customer's first conversion of each type, and their first one of any credited type.
    first_ids: dict[tuple[str, str], int] = {}
    first_any: dict[str, datetime] = {}
    for r in await conn.fetch(
            """SELECT DISTINCT ON (customer_id, type) customer_id, type, id, occurred_at
               FROM conversions
               WHERE program_id = $1 AND customer_id = ANY($2::text[])
                 AND type = ANY($3::text[])
               ORDER BY customer_id, type, occurred_at, id""",
            program.id, customers, list(CREDITED_TYPES)):
        first_ids[(r["customer_id"], r["type"])] = r["id"]
        known = first_any.get(r["customer_id"])
        first_any[r["customer_id"]] = r["occurred_at"] if known is None else min(
            known, r["occurred_at"])
    usage = _Usage()
    earliest = min(r["occurred_at"] for r in rows)
    await usage.load(conn, program.id, sorted({i for r in rows for i in r["referrers"]}),
                     earliest.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0,
                                                      microsecond=0))
    new: list[NewReward] = []
    for row in rows:
        if not row["referrers"]:
            continue
        began = first_any.get(row["customer_id"], row["occurred_at"])
        for rule in program.rules:
            if rule.on != row["type"]:
                continue
            if rule.first_only and first_ids.get((row["customer_id"], row["type"])) != row["id"]:
                continue
            if rule.months is not None and row["occurred_at"] > _add_months(began, rule.months):
                continue
            new += _rewards_for(program, rule, row, usage)
    async with conn.transaction():
        if new:
            await conn.executemany(
                """INSERT INTO rewards (program_id, conversion_id, rule_index, referrer_id,
                       beneficiary, payee, amount, currency, credit, hold_until, calculation,
                       risk_score, reasons)
                   SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11::jsonb, k.score,
                          coalesce(k.reasons, '[]'::jsonb)
                   FROM (SELECT 1) one
                   LEFT JOIN conversion_risk k ON k.program_id = $1 AND k.conversion_id = $2
                   ON CONFLICT (program_id, conversion_id, rule_index, payee) DO NOTHING""",
                [(program.id, n.conversion_id, n.rule_index, n.referrer_id, n.beneficiary,
                  n.payee, n.amount, n.currency, n.credit, n.hold_until,
                  json.dumps(n.calculation)) for n in new])
        await conn.execute(
            "UPDATE conversions SET rewarded_at = now() WHERE program_id = $1 AND id = ANY($2)",
            program.id, [r["id"] for r in rows])
    return len(rows)


def _rewards_for(program: ProgramRules, rule: Rule, row: asyncpg.Record, usage: _Usage
                 ) -> list[NewReward]:
    at: datetime = row["occurred_at"]
    referrers: list[int] = list(row["referrers"])
    credits: list[float] = list(row["credits"])
    names: list[str] = list(row["names"])
    currency = program.currency if rule.rate.flat is not None else (
        row["currency"] or program.currency)
    if rule.beneficiary == "referee":
        amount = rule.rate.amount(row["amount"])
        detail = {"rule": rule.index, "rate": rule.rate.describe(), "base": row["amount"],
                  "whole": amount}
        return [NewReward(row["id"], rule.index, referrers[0], "referee", row["customer_id"],
                          amount, currency, 1.0, _hold(program, at, referrers[0], usage),
                          detail)]
    rates = [rule.rate_after(usage.approved[ref]) for ref in referrers]
    wholes = [rate.amount(row["amount"]) for rate, _tier in rates]
    _total, parts = split_by_credit(wholes, credits)
    out = []
    for ref, name, credit, (rate, tier), whole, part in zip(
            referrers, names, credits, rates, wholes, parts, strict=True):
        amount, notes = usage.capped(rule, ref, at, part)
        usage.add(ref, rule.index, at, amount)
        calc: dict[str, Any] = {"rule": rule.index, "rate": rate.describe(), "tier_after": tier,
                                "base": row["amount"], "whole": whole, "credit": credit,
                                "share": part}
        if notes:
            calc["caps"] = notes
        out.append(NewReward(row["id"], rule.index, ref, "referrer", name, amount, currency,
                             credit, _hold(program, at, ref, usage), calc))
    return out


def _hold(program: ProgramRules, at: datetime, referrer: int, usage: _Usage) -> datetime:
    days = program.hold_days
    adaptive = program.adaptive
    if adaptive is not None and usage.clean[referrer] \
            and usage.approved[referrer] >= adaptive["clean_after"]:
        days = min(days, adaptive["clean_hold_days"])
    return at + timedelta(days=days)


def _add_months(at: datetime, months: int) -> datetime:
    month = at.month - 1 + months
    year, month = at.year + month // 12, month % 12 + 1
    return at.replace(year=year, month=month,
                      day=min(at.day, calendar.monthrange(year, month)[1]))


# -- reversal ----------------------------------------------------------------------------------


async def reverse_refunded(conn: asyncpg.Connection, program_id: int) -> int:
    """Rewards of refunded or charged-back conversions become `reversed`; money already
    granted (approved or paid) is clawed back by a negative ledger entry."""
    async with conn.transaction():
        rows = await conn.fetch(
            """SELECT r.id, r.status, r.amount, r.payee, r.currency, x.event_id, x.type
               FROM conversions x
               JOIN conversions o ON o.program_id = x.program_id
                                 AND o.event_id = x.original_event_id
               JOIN rewards r ON r.program_id = o.program_id AND r.conversion_id = o.id
               WHERE x.program_id = $1 AND x.type IN ('refund', 'chargeback')
                 AND r.status IN ('pending', 'flagged', 'approved', 'paid')
               FOR UPDATE OF r""", program_id)
        # A refund and a chargeback (or two partial refunds) may name the same purchase: each
        # reward is reversed once.
        rows = list({r["id"]: r for r in reversed(rows)}.values())
        if not rows:
            return 0
        await conn.execute(
            """UPDATE rewards SET status = 'reversed', decided_by = $3, decided_at = now(),
                      decision_reason = 'conversion refunded or charged back'
               WHERE program_id = $1 AND id = ANY($2::bigint[])""",
            program_id, [r["id"] for r in rows], ACTOR)
        granted = {r["id"] for r in rows if r["status"] in ("approved", "paid") and r["amount"] > 0}
        if granted:
            await conn.executemany(
                """INSERT INTO ledger_entries (program_id, payee, currency, amount, kind,
                       reward_id, actor) VALUES ($1, $2, $3, $4, 'clawback', $5, $6)""",
                [(program_id, r["payee"], r["currency"], -r["amount"], r["id"], ACTOR)
                 for r in rows if r["id"] in granted])
        await _audit_many(conn, program_id, "reward.reverse", [
            (r["id"], f"{r['type']} {r['event_id']}",
             {"was": r["status"], "clawback": -r["amount"] if r["id"] in granted else 0})
            for r in rows])
    return len(rows)


# -- holds and risk ----------------------------------------------------------------------------


def verdict(program: ProgramRules, risk: float) -> str:
    if risk >= program.reject_at:
        return "rejected" if program.reject_action == "reject" else "flagged"
    if risk >= program.review_at:
        return "flagged"
    return "approved"


async def end_holds(conn: asyncpg.Connection, program: ProgramRules) -> dict[str, int]:
    """Pending rewards past their hold that a fraud scan has seen: approved, flagged or
    rejected by their conversion's current risk."""
    decided: dict[str, int] = defaultdict(int)
    async with conn.transaction():
        rows = await conn.fetch(
            """SELECT r.id, r.amount, r.payee, r.currency, r.hold_until, r.calculation::text
                      AS calculation, k.score, k.reasons::text AS reasons
               FROM rewards r
               JOIN conversion_risk k ON k.program_id = r.program_id
                                     AND k.conversion_id = r.conversion_id
               WHERE r.program_id = $1 AND r.status = 'pending' AND r.hold_until <= now()
               ORDER BY r.id LIMIT $2 FOR UPDATE OF r SKIP LOCKED""", program.id, BATCH)
        extend, settle = [], []
        for r in rows:
            calc = json.loads(r["calculation"])
            if (program.adaptive is not None and r["score"] >= program.review_at
                    and "hold_extended_days" not in calc):
                extend.append(r)
            else:
                settle.append((r, verdict(program, r["score"])))
        if extend and program.adaptive is not None:
            days = program.adaptive["risk_extra_days"]
            await conn.execute(
                """UPDATE rewards SET hold_until = hold_until + make_interval(days => $3),
                          calculation = calculation || jsonb_build_object(
                              'hold_extended_days', $3::int),
                          risk_score = k.score, reasons = k.reasons
                   FROM conversion_risk k
                   WHERE rewards.program_id = $1 AND rewards.id = ANY($2::bigint[])
                     AND k.program_id = rewards.program_id
                     AND k.conversion_id = rewards.conversion_id""",
                program.id, [r["id"] for r in extend], days)
            decided["hold_extended"] += len(extend)
        for status in ("approved", "flagged", "rejected"):
            ids = [r["id"] for r, s in settle if s == status]
            if not ids:
                continue
            decided[status] += len(ids)
            automatic = status != "flagged"
            if automatic:
                metrics.DECISIONS.labels(action=status, by="clearance").inc(len(ids))
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
                program.id, ids, status, automatic, ACTOR,
                f"risk {'below review_at' if status == 'approved' else 'at or above reject_at'}")
            if status == "approved":
                await webhooks.enqueue(conn, "reward.approved", ids)
                await earn(conn, [(program.id, r["payee"], r["currency"], r["amount"], r["id"])
                                  for r, s in settle if s == status], ACTOR)
            if automatic:
                action = "reward.approve" if status == "approved" else "reward.reject"
                await _audit_many(conn, program.id, action,
                                  [(r["id"], f"risk {r['score']:.3f}", {"risk": r["score"]})
                                   for r, s in settle if s == status])
    return dict(decided)


async def _audit_many(conn: asyncpg.Connection, program_id: int, action: str,
                      rows: list[tuple[int, str, dict[str, Any]]]) -> None:
    await conn.executemany(
        """INSERT INTO audit_log (program_id, actor, action, object_type, object_id, reason,
               details) VALUES ($1, $2, $3, 'reward', $4, $5, $6::jsonb)""",
        [(program_id, ACTOR, action, str(i), reason, json.dumps(details))
         for i, reason, details in rows])


async def publish_metrics(conn: asyncpg.Connection) -> None:
    """Rewards by status, the review queue's size and oldest age, money paid out, and the
    fraud flags by kind: program-wide figures, read from the database."""
    await publish_flag_counts(conn)
    counts = {r["status"]: r["n"] for r in await conn.fetch(
        "SELECT status, count(*) AS n FROM rewards GROUP BY status")}
    for status in STATUSES:
        metrics.REWARDS.labels(status=status).set(counts.get(status, 0))
    queue = await conn.fetchrow(
        """SELECT count(*) AS n,
                  coalesce(extract(epoch FROM now() - min(flagged_at)), 0) AS oldest
           FROM rewards WHERE status = 'flagged'""")
    metrics.REVIEW_QUEUE.set(queue["n"])
    metrics.REVIEW_QUEUE_OLDEST.set(float(queue["oldest"]))
    for r in await conn.fetch("""SELECT currency, -sum(amount) AS paid FROM ledger_entries
                                 WHERE kind = 'payout' GROUP BY currency"""):
        metrics.PAID_OUT.labels(currency=r["currency"]).set(r["paid"])
