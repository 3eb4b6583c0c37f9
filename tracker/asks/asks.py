"""Asks at the moment of delight: the asks job (DESIGN sections 1 and 5, issue 15).

Every run takes up, per program whose settings have `asks`, the customer events and purchase
conversions it has not taken yet (`asked_at IS NULL`) and decides, for each one a rule matches,
whether to ask that customer to refer, now:

- a rule matches on `on` (the event's type, or `purchase` for a purchase conversion), with
  `min_score` (the event's score at least this; a trigger without a score never matches it) and
  `nth` (the customer's nth purchase, counted by occurred_at);
- the trigger's deadline is occurred_at + within_hours (default 24): past it, the ask is
  `expired` (reason `late`) and nothing is sent;
- a program without `webhook_url` cannot hand an ask to its messaging: `suppressed`
  (`no_webhook_url`);
- never a customer with a fraud flag, a rejected, reversed or flagged reward (`fraud_flag`,
  `rejected_reward`, `reversed_reward`, `flagged_reward`: tracker.asks.queries.EXCLUDED_CTE, the
  same rule that keeps them out of the candidates), nor one outside the top share (default 0.2) of
  the program's candidate scores, i.e. percentile < 1 - top_share or not scored (`not_top_share`);
  a program with no candidate model yet has its triggers left untaken until their deadline,
  then expired (`no_candidate_scores`);
- not again within cooldown_days (default 30) of an earlier ask (`cooldown`), nor beyond
  max_per_customer (default 3) asks in all (`cap`); only asks sent or being sent count;
- otherwise the customer becomes a referrer (external_id = the customer id, named from
  customer_names when known) with a plain link to the program's default destination if they
  have none, the ask is stored `queued`, and `referral.ask` is written to the webhook outbox in
  the same transaction (tracker.finance.webhooks delivers it before the deadline, or never).

Taking the triggers (asked_at), the asks and the outbox events of a program commit together,
and an ask is unique per trigger, so running the job twice asks once and no ask has two
webhooks. Every trigger a rule matches leaves an ask row (with its status and reason), so the
asks list says why nobody was asked; triggers no rule matches are only marked taken.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from tracker import metrics, privacy
from tracker.asks import queries
from tracker.asks.messages import share_message
from tracker.asks.queries import Trigger
from tracker.asks.sharing import share_url
from tracker.errors import NotFound
from tracker.finance import webhooks
from tracker.formats import rfc3339
from tracker.programs import queries as program_queries
from tracker.programs.queries import Program
from tracker.settings import Settings

log = logging.getLogger(__name__)

WITHIN_HOURS = 24
TOP_SHARE = 0.2
COOLDOWN_DAYS = 30
MAX_PER_CUSTOMER = 3
BATCH = 500  # triggers of each kind per program and transaction
BATCHES_PER_RUN = 20
# Why an ask was not sent (asks.reason; the `reason` label of refguard_asks_total).
REASONS = ("late", "no_candidate_scores", "no_webhook_url", *queries.EXCLUSION_REASONS,
           "not_top_share", "cooldown", "cap", webhooks.PAST_DEADLINE, webhooks.UNDELIVERED,
           privacy.ERASED_ASK)
_EPS = 1e-9  # percentile >= 1 - top_share, whatever 1 - 0.3 rounds to


@dataclass(frozen=True, slots=True)
class Rule:
    on: str
    min_score: float | None = None
    nth: int | None = None

    def matches(self, trigger: Trigger) -> bool:
        if trigger.type != self.on:
            return False
        if self.min_score is not None and (trigger.score is None
                                           or trigger.score < self.min_score):
            return False
        return self.nth is None or trigger.nth == self.nth


@dataclass(frozen=True, slots=True)
class AskSettings:
    """A program's `settings.asks` (checked by tracker.programs.validation) with defaults."""

    rules: tuple[Rule, ...]
    within_hours: int = WITHIN_HOURS
    top_share: float = TOP_SHARE
    cooldown_days: int = COOLDOWN_DAYS
    max_per_customer: int = MAX_PER_CUSTOMER

    @classmethod
    def of(cls, raw: Mapping[str, Any]) -> AskSettings:
        def get(key: str, default: Any) -> Any:
            value = raw.get(key)
            return default if value is None else value

        return cls(
            rules=tuple(Rule(str(r["on"]),
                             None if r.get("min_score") is None else float(r["min_score"]),
                             None if r.get("nth") is None else int(r["nth"]))
                        for r in raw.get("rules") or []),
            within_hours=int(get("within_hours", WITHIN_HOURS)),
            top_share=float(get("top_share", TOP_SHARE)),
            cooldown_days=int(get("cooldown_days", COOLDOWN_DAYS)),
            max_per_customer=int(get("max_per_customer", MAX_PER_CUSTOMER)),
        )

    def matches(self, trigger: Trigger) -> bool:
        return any(rule.matches(trigger) for rule in self.rules)


@dataclass(slots=True)
class AskSummary:
    """What a run decided: asks by (status, reason), reason "" for queued ones."""

    asks: Counter[tuple[str, str]] = field(default_factory=Counter)
    taken: int = 0  # triggers taken up (matched or not)
    full: bool = False  # a kind filled its batch: more may be waiting

    def add(self, other: AskSummary) -> None:
        self.asks.update(other.asks)
        self.taken += other.taken


async def run_asks(conn: asyncpg.Connection, settings: Settings) -> AskSummary:
    """One run of the asks job over every program with `asks`; each program's batch commits
    on its own (call it outside a transaction, or inside one that is all or nothing)."""
    summary = AskSummary()
    for slug in await queries.programs_with_asks(conn):
        # A long backlog (a program that just turned asks on) is worked off in batches, each
        # committed on its own, a bounded number per run.
        for _ in range(BATCHES_PER_RUN):
            async with conn.transaction():
                try:
                    program = await program_queries.get_program(conn, slug)
                except NotFound:  # deleted meanwhile
                    break
                done = await _program_asks(conn, settings, program)
            for (status, reason), n in done.asks.items():  # counted once committed
                metrics.ASKS.labels(outcome=status, reason=reason).inc(n)
            summary.add(done)
            if not done.full:
                break
    return summary


def asks_job(settings: Settings) -> Callable[[asyncpg.Connection], Awaitable[None]]:
    """The `asks` job of tracker.jobs."""

    async def run(conn: asyncpg.Connection) -> None:
        summary = await run_asks(conn, settings)
        if summary.asks:
            log.info("asks: %s", ", ".join(f"{s}{'/' + r if r else ''} {n}"
                                            for (s, r), n in sorted(summary.asks.items())))

    return run


async def _program_asks(conn: asyncpg.Connection, settings: Settings,
                        program: Program) -> AskSummary:
    raw = program.settings.get("asks")
    cfg = AskSettings.of(raw if isinstance(raw, Mapping) else {})
    scored = await queries.has_candidate_model(conn, program.id)
    # Without a model nobody can be in the top share yet: a trigger waits for one until its
    # deadline, so only the late ones are taken (and expire).
    triggers = await queries.untaken_triggers(conn, program.id, within_hours=cfg.within_hours,
                                              late_only=not scored, limit=BATCH)
    # In the order they happened: an earlier moment asks, a later one meets the cooldown.
    triggers.sort(key=lambda t: (t.occurred_at, t.source, t.id))
    matched = [t for t in triggers if cfg.matches(t)]
    customers = sorted({t.customer_id for t in matched})
    percentiles = await queries.percentiles(conn, program.id, customers)
    fraud = await queries.fraud_marks(conn, program.id, customers)
    now: datetime = await conn.fetchval("SELECT now()")
    has_webhook = bool(program.settings.get("webhook_url"))
    summary = AskSummary(taken=len(triggers), full=max(
        sum(t.source == "event" for t in triggers),
        sum(t.source == "conversion" for t in triggers)) >= BATCH)
    for trigger in matched:
        deadline = trigger.occurred_at + timedelta(hours=cfg.within_hours)
        reason: str | None = None
        if deadline <= now:
            reason = "late" if scored else "no_candidate_scores"
        elif not has_webhook:
            reason = "no_webhook_url"
        elif trigger.customer_id in fraud:
            reason = fraud[trigger.customer_id]
        elif percentiles.get(trigger.customer_id, -1.0) < 1 - cfg.top_share - _EPS:
            reason = "not_top_share"
        else:
            history = await queries.ask_history(conn, program.id, trigger.customer_id,
                                                cfg.cooldown_days)
            if history.recent > 0:
                reason = "cooldown"
            elif history.total >= cfg.max_per_customer:
                reason = "cap"
        if reason is not None:
            status = "expired" if reason in ("late", "no_candidate_scores") else "suppressed"
            if await queries.insert_ask(conn, program.id, trigger, referrer_id=None,
                                        deadline=deadline, status=status, reason=reason):
                summary.asks[(status, reason)] += 1
            continue
        if await _ask(conn, settings, program, trigger, deadline):
            summary.asks[("queued", "")] += 1
    await queries.mark_taken(conn, program.id,
                             [t.id for t in triggers if t.source == "event"],
                             [t.id for t in triggers if t.source == "conversion"])
    return summary


async def _ask(conn: asyncpg.Connection, settings: Settings, program: Program,
               trigger: Trigger, deadline: datetime) -> bool:
    """Ask this customer: a referrer with a link, the ask and its referral.ask; False when the
    trigger has an ask already."""
    customer = trigger.customer_id
    name = (await program_queries.names(conn, program.id, [], [customer])).customers.get(
        customer)
    try:
        referrer = await program_queries.get_referrer(conn, program.id, customer)
    except NotFound:  # a name the referrer has already is theirs to keep; a new one gets it
        referrer, _ = await program_queries.upsert_referrer(conn, program, customer, None, name)
    link = await program_queries.ensure_plain_link(conn, program, referrer.id)
    ask_id = await queries.insert_ask(conn, program.id, trigger, referrer_id=referrer.id,
                                      deadline=deadline, status="queued", reason=None)
    if ask_id is None:
        return False
    base = settings.base_url
    link_url = f"{base}/r/{link.code}"
    await webhooks.enqueue_ask(conn, program.id, {"event": "referral.ask", "ask": {
        "ask_id": ask_id,
        "program": program.slug,
        "customer_id": customer,
        "name": name,
        "trigger": {"type": trigger.type, "score": trigger.score,
                    "occurred_at": rfc3339(trigger.occurred_at)},
        "deadline": rfc3339(deadline),
        "share_url": share_url(settings.secret_key, base, program.id, referrer.id),
        "link": link_url,
        "message": share_message(program.settings, name=name, link=link_url),
    }})
    return True
