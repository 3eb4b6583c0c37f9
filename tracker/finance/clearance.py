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
   `flagged` when the program's reject_action says so). A reward whose referee or referrer
   was erased before it cleared is never approved here: it is `flagged` for finance with an
   `erased_before_clearance` reason (tracker.privacy), or rejected as its risk says. A coupon
   reward about to be approved takes a code of its pool (queries.assign_coupon); while the
   pool has none it stays `pending` and a later pass approves it, once codes are uploaded;
5. complete the erasures whose rewards are all decided now (tracker.privacy.finish_erasures).

Every automatic approval, rejection and reversal writes an audit row, like finance's own, and
every change writes its webhook event in its transaction (tracker.finance.webhooks):
`referral.converted` once per credited conversion taken up in step 2, `reward.created`,
`reward.reversed`, and the status each reward takes in step 4.
"""

from __future__ import annotations

import calendar
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from tracker import metrics
from tracker.db import PRIMARY, Replica, job_lock
from tracker.finance import queries, webhooks
from tracker.finance.ledger import earn
from tracker.finance.queries import CreditedConversion, HeldReward, NewReward
from tracker.finance.rules import Rule, cap, parse_rules, split_by_credit
from tracker.formats import CREDITED_TYPES
from tracker.privacy import finish_erasures, name_erasures
from tracker.programs.queries import assign_variants
from tracker.programs.validation import ADAPTIVE_HOLD
from tracker.programs.variants import Variant, variants_of
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
    # An incentive experiment (settings.reward.variants): the variants to assign, and each
    # one's rules by name. Empty for a program without one.
    variants: list[Variant] = field(default_factory=list)
    variant_rules: dict[str, list[Rule]] = field(default_factory=dict)

    @classmethod
    def load(cls, program: queries.ProgramSettings) -> ProgramRules:
        s = program.settings
        reward = s.get("reward", {})
        adaptive = s.get("adaptive_hold")
        return cls(program.id, reward.get("currency", "USD"), int(s.get("hold_days", 30)),
                   float(s.get("review_at", 0.5)), float(s.get("reject_at", 0.9)),
                   s.get("reject_action", "reject"),
                   None if adaptive is None else {**ADAPTIVE_HOLD, **adaptive},
                   parse_rules(reward), variants_of(s),
                   {v["name"]: parse_rules(v) for v in reward.get("variants") or []})

    def variant(self, recorded: str | None) -> str | None:
        """The variant whose rules apply to a referrer with this recorded variant: itself
        while the program still has it; None (the plain `reward.rules`) for a referrer with
        none, or whose variant has been removed from the settings (its arm has ended)."""
        return recorded if recorded in self.variant_rules else None

    def rules_of(self, variant: str | None) -> list[Rule]:
        return self.rules if variant is None else self.variant_rules[variant]


async def release(conn: asyncpg.Connection, slug: str | None = None, *,
                  replica: Replica = PRIMARY, catch_up_s: float = 0.0) -> ReleaseSummary:
    """Everything clearance can do now, for one program or all; its scan reads `replica`
    (tracker.scoring.risk.scan)."""
    summary = ReleaseSummary()
    for settings in await queries.programs(conn, slug):
        # Attribution and scans take their jobs' locks themselves; clearance takes its own,
        # so the clearance job and `refguard rewards release` never clear at once.
        await attribute_pending(conn, settings.id)
        await scan(conn, settings.slug, incremental=True, replica=replica,
                   catch_up_s=catch_up_s)
        async with conn.transaction():
            await job_lock(conn, "clearance")
            program = ProgramRules.load(settings)
            # Referrers made before the experiment began, or not through the API, are
            # assigned now: before their first reward is made.
            await assign_variants(conn, program.id, program.variants)
            while (n := await create_rewards(conn, program)) > 0:
                summary.created += n
            summary.reversed += await reverse_refunded(conn, program.id)
            while True:
                decided = await end_holds(conn, program)
                for status, n in decided.items():
                    summary.decided[status] += n
                # Coupon rewards left waiting for codes are no progress.
                if sum(n for s, n in decided.items() if s != "coupon_pool_empty") < BATCH:
                    break
            await finish_erasures(conn, program.id)
    await publish_metrics(conn)
    return summary


# -- creation ----------------------------------------------------------------------------------


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
        for g in await queries.granted_rewards(conn, program_id, referrers, since):
            self.add(g.referrer_id, g.rule_index, g.occurred_at, g.amount)
        for r in await queries.referrer_records(conn, program_id, referrers):
            self.approved[r.referrer_id] = r.approved
            self.clean[r.referrer_id] = r.bad == 0

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


@dataclass(frozen=True, slots=True)
class _Firsts:
    """Each customer's first conversion of each type (its id), and the time of their first
    one of any credited type: what `first_only` and `months` rules look at."""

    of_type: dict[tuple[str, str], int]
    of_any: dict[str, datetime]

    @classmethod
    async def load(cls, conn: asyncpg.Connection, program_id: int, customers: list[str]
                   ) -> _Firsts:
        of_type: dict[tuple[str, str], int] = {}
        of_any: dict[str, datetime] = {}
        for f in await queries.first_conversions(conn, program_id, customers,
                                                 list(CREDITED_TYPES)):
            of_type[(f.customer_id, f.type)] = f.id
            known = of_any.get(f.customer_id)
            of_any[f.customer_id] = f.occurred_at if known is None else min(
                known, f.occurred_at)
        return cls(of_type, of_any)


async def create_rewards(conn: asyncpg.Connection, program: ProgramRules) -> int:
    """Rewards for the next batch of attributed conversions; the number of conversions done."""
    rows = await queries.conversions_to_reward(conn, program.id, BATCH)
    if not rows:
        return 0
    firsts = await _Firsts.load(conn, program.id, sorted({r.customer_id for r in rows}))
    usage = _Usage()
    earliest = min(r.occurred_at for r in rows)
    await usage.load(conn, program.id, sorted({i for r in rows for i in r.referrers}),
                     earliest.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0,
                                                      microsecond=0))
    # In conversion order: caps and tiers count the rewards made before in the same batch.
    new = [n for row in rows for n in _earned(program, row, firsts, usage)]
    async with conn.transaction():
        # Marked once (`rewarded_at`): its referral.converted is told once, in this transaction.
        await webhooks.enqueue_converted(conn, program.id, [r.id for r in rows if r.referrers])
        if new:
            created = await queries.insert_rewards(conn, program.id, new)
            await webhooks.enqueue(conn, "reward.created", created)
        await queries.mark_rewarded(conn, program.id, [r.id for r in rows])
    return len(rows)


def _earned(program: ProgramRules, row: CreditedConversion, firsts: _Firsts, usage: _Usage
            ) -> list[NewReward]:
    """The rewards of one conversion under the rules that apply to it: each credited
    referrer's under its variant's rules (all of them under the plain rules when the program
    has no variants); a referee reward under the rules of the referrer with the most credit."""
    if not row.referrers:
        return []
    began = firsts.of_any.get(row.customer_id, row.occurred_at)
    new: list[NewReward] = []
    for variant, members in _by_variant(program, row):
        for rule in program.rules_of(variant):
            if rule.on != row.type:
                continue
            if rule.first_only and firsts.of_type.get((row.customer_id, row.type)) != row.id:
                continue
            if rule.months is not None and row.occurred_at > _add_months(began, rule.months):
                continue
            if rule.beneficiary == "referee" and members[0] != 0:
                continue
            new += _rewards_for(program, rule, row, usage, (members, variant))
    return new


def _by_variant(program: ProgramRules, row: CreditedConversion
                ) -> list[tuple[str | None, list[int]]]:
    """The conversion's referrers (their indexes, by credit) grouped by the variant whose
    rules apply to them, the top referrer's group first."""
    groups: dict[str | None, list[int]] = {}
    for i in range(len(row.referrers)):
        recorded = row.variants[i] if i < len(row.variants) else None
        groups.setdefault(program.variant(recorded), []).append(i)
    return list(groups.items())


def _rewards_for(program: ProgramRules, rule: Rule, row: CreditedConversion, usage: _Usage,
                 group: tuple[list[int], str | None]) -> list[NewReward]:
    """The rule's rewards for one variant's group of the conversion's referrers (indexes)."""
    members, variant = group
    at = row.occurred_at
    referrers = [row.referrers[i] for i in members]
    credits = [row.credits[i] for i in members]
    names = [row.names[i] for i in members]
    currency = program.currency if rule.rate.flat is not None else (
        row.currency or program.currency)
    if rule.beneficiary == "referee":
        amount = rule.rate.amount(row.amount)
        detail = {"rule": rule.index, "rate": rule.rate.describe(), "base": row.amount,
                  "whole": amount}
        return [NewReward(row.id, rule.index, referrers[0], "referee", row.customer_id,
                          amount, currency, 1.0, _hold(program, at, referrers[0], usage),
                          detail, rule.kind, rule.pool, variant)]
    rates = [rule.rate_after(usage.approved[ref]) for ref in referrers]
    wholes = [rate.amount(row.amount) for rate, _tier in rates]
    _total, parts = split_by_credit(wholes, credits)
    out = []
    for ref, name, credit, (rate, tier), whole, part in zip(
            referrers, names, credits, rates, wholes, parts, strict=True):
        amount, notes = usage.capped(rule, ref, at, part)
        usage.add(ref, rule.index, at, amount)
        calc: dict[str, Any] = {"rule": rule.index, "rate": rate.describe(), "tier_after": tier,
                                "base": row.amount, "whole": whole, "credit": credit,
                                "share": part}
        if notes:
            calc["caps"] = notes
        out.append(NewReward(row.id, rule.index, ref, "referrer", name, amount, currency,
                             credit, _hold(program, at, ref, usage), calc, rule.kind,
                             rule.pool, variant))
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
        found = await queries.refunded_rewards(conn, program_id)
        # A refund and a chargeback (or two partial refunds) may name the same purchase: each
        # reward is reversed once.
        rows = list({r.id: r for r in reversed(found)}.values())
        if not rows:
            return 0
        await queries.reverse_rewards(conn, program_id, [r.id for r in rows], ACTOR)
        await webhooks.enqueue(conn, "reward.reversed", [r.id for r in rows])
        # Only cash rewards earned ledger money (credit and coupon rewards are the merchant's
        # to give): only theirs is clawed back.
        granted = {r.id for r in rows if r.status in ("approved", "paid") and r.amount > 0
                   and r.kind == "cash"}
        if granted:
            await queries.insert_clawbacks(
                conn, program_id,
                [(r.payee, r.currency, -r.amount, r.id) for r in rows if r.id in granted], ACTOR)
        await queries.audit_rewards(conn, program_id, ACTOR, "reward.reverse", [
            (r.id, f"{r.type} {r.event_id}",
             {"was": r.status, "clawback": -r.amount if r.id in granted else 0})
            for r in rows])
    return len(rows)


# -- holds and risk ----------------------------------------------------------------------------


def verdict(program: ProgramRules, risk: float, *, erased: bool = False) -> str:
    """What the risk gives a reward; one touching an erased person (`erased`) is at least
    flagged: its evidence is incomplete, so only finance approves it."""
    if risk >= program.reject_at:
        return "rejected" if program.reject_action == "reject" else "flagged"
    if risk >= program.review_at or erased:
        return "flagged"
    return "approved"


async def end_holds(conn: asyncpg.Connection, program: ProgramRules) -> dict[str, int]:
    """Pending rewards past their hold that a fraud scan has seen: approved, flagged or
    rejected by their conversion's current risk."""
    decided: dict[str, int] = defaultdict(int)
    async with conn.transaction():
        rows = await queries.rewards_past_hold(conn, program.id, BATCH, program.review_at)
        extend: list[HeldReward] = []
        settle: list[tuple[HeldReward, str]] = []
        for r in rows:
            if (program.adaptive is not None and r.score >= program.review_at
                    and "hold_extended_days" not in r.calculation):
                extend.append(r)
            else:
                settle.append((r, verdict(program, r.score, erased=bool(r.erased))))
        if extend and program.adaptive is not None:
            await queries.extend_holds(conn, program.id, [r.id for r in extend],
                                       program.adaptive["risk_extra_days"])
            decided["hold_extended"] += len(extend)
        for status in ("approved", "flagged", "rejected"):
            chosen = [r for r, s in settle if s == status]
            if status == "approved":
                chosen, waiting = await _hand_out_coupons(conn, program.id, chosen)
                if waiting:
                    decided["coupon_pool_empty"] += waiting
            if chosen:
                decided[status] += len(chosen)
                await _settle(conn, program, status, chosen)
        # Settling and extending take the conversion's reasons: the erasure is named again.
        erased = [r.id for r in rows if r.erased]
        if erased:
            await name_erasures(conn, program.id, erased)
    return dict(decided)


async def _hand_out_coupons(conn: asyncpg.Connection, program_id: int,
                            rewards: list[HeldReward]) -> tuple[list[HeldReward], int]:
    """The rewards that may be approved now, and how many wait: a coupon reward takes one free
    code of its pool (in this transaction); when its pool has none it stays `pending` and is
    tried again by the next pass, once the merchant has uploaded codes."""
    ready: list[HeldReward] = []
    waiting = 0
    for r in rewards:
        if r.kind == "coupon" and r.pool is not None and \
                await queries.assign_coupon(conn, program_id, r.id, r.pool) is None:
            waiting += 1
            continue
        ready.append(r)
    return ready, waiting


async def _settle(conn: asyncpg.Connection, program: ProgramRules, status: str,
                  rewards: list[HeldReward]) -> None:
    """Rewards take the status their risk gives them and tell the program's webhook; an
    approval earns its money, and every automatic decision (not a flag) writes its audit
    row."""
    ids = [r.id for r in rewards]
    automatic = status != "flagged"
    if automatic:
        metrics.DECISIONS.labels(action=status, by="clearance").inc(len(ids))
    await queries.settle_rewards(
        conn, program.id, ids, status=status, automatic=automatic, actor=ACTOR,
        reason=f"risk {'below review_at' if status == 'approved' else 'at or above reject_at'}")
    await webhooks.enqueue(conn, f"reward.{status}", ids)
    if status == "approved":
        # Only cash is owed through the ledger (and so paid out); credit and coupon rewards
        # are the merchant's to give, told by the reward.approved webhook.
        await earn(conn, [(program.id, r.payee, r.currency, r.amount, r.id) for r in rewards
                          if r.kind == "cash"], ACTOR)
    if automatic:
        action = "reward.approve" if status == "approved" else "reward.reject"
        await queries.audit_rewards(conn, program.id, ACTOR, action,
                                    [(r.id, f"risk {r.score:.3f}", {"risk": r.score})
                                     for r in rewards])


async def publish_metrics(conn: asyncpg.Connection) -> None:
    """Rewards by status, the review queue's size and oldest age, money paid out, and the
    fraud flags by kind: program-wide figures, read from the database."""
    await publish_flag_counts(conn)
    counts = {c.status: c.n for c in await queries.reward_counts(conn)}
    for status in STATUSES:
        metrics.REWARDS.labels(status=status).set(counts.get(status, 0))
    queue = await queries.review_queue(conn)
    metrics.REVIEW_QUEUE.set(queue.size)
    metrics.REVIEW_QUEUE_OLDEST.set(queue.oldest_s)
    for p in await queries.paid_out(conn):
        metrics.PAID_OUT.labels(currency=p.currency).set(p.amount)
