"""Fraud scans: load a program's facts, assess them with fraud.assess, store flags and risks.

fraud/ takes and returns plain data; tracker.scoring.queries holds the SQL, facts turns its
rows into fraud facts, finance_model keeps the model of finance's decisions.

- A full scan looks at the whole program and replaces its flags and risks (derived data; the
  scans table keeps the history of when and how much).
- An incremental scan assesses only conversions no scan has seen yet, on their neighbourhood
  (tracker.scoring.facts.Scope). Rings found earlier still count; new rings are looked for by
  shared infrastructure and referral cycles (FRAUDAR needs the whole graph and is left to full
  scans). The program's delay distribution comes from the feature rows stored by earlier
  scans (a bounded sample), so the program baseline does not have to be recomputed.
- A full scan also ranks the program's referrers with the anomaly detectors
  (fraud.anomaly, pyod) and stores each unusual referrer as a fraud flag of kind `anomaly`:
  a watch list for finance with its reasons and feature table. It changes no conversion's
  risk and no reward's decision (the risks are assessed without it). Like rings, these
  referrer-level flags are replaced by the next full scan and kept by incremental ones (a
  window of new conversions cannot rank the program's referrers).

With a read replica (tracker.db.Replica) a scan reads its facts from one snapshot of the
replica and writes its flags and risks to the primary. The replica lags, so a scan decides only
conversions the replica has: the pending set is the replica's (less any the primary already
holds a risk for, when the replica has not replayed the last scan yet), and the facts about
them come from that same snapshot, so nothing is decided on facts the replica lacks; a
conversion newer than the snapshot stays pending for the next scan. The flags that earlier
scans stored, which an incremental scan builds on, are read from the primary. The scan's row
notes where it read (`read`: replica or primary, the replica's replay position). A full scan
replaces the program's findings with what the replica has: a conversion a scan assessed on
newer facts (one that read the primary while the replica was away) loses its risk until the
replica has it and a scan assesses it again; clearance holds its reward meanwhile, as for any
conversion awaiting a scan.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from fraud.anomaly import FLAG_KIND as ANOMALY
from fraud.anomaly import Unusual, anomalous_referrers
from fraud.assess import Scored, assess_all, decision_reason, people_rings
from fraud.cashout import cash_out_cohorts
from fraud.operators import group_flag_reasons, operator_groups
from fraud.phonepools import phone_pools
from fraud.pools import account_keys, collusion_pools
from fraud.rings import (
    Account,
    Column,
    Ring,
    find_rings,
    referral_cycles,
    shared_infrastructure,
)
from fraud.signals import conversion_crowds, crowded_columns, headerless_share
from fraud.sleepers import sleeper_cells, wave_cells
from fraud.stacking import device_stacks
from fraud.supervised import SupervisedRisk
from fraud.swaps import credit_swaps
from tracker import metrics
from tracker.collector import few_collections
from tracker.db import PRIMARY, ReadView, Replica, job_lock
from tracker.scoring import queries
from tracker.scoring.facts import (
    Facts,
    ProgramFacts,
    Scope,
    load_facts,
    load_program_facts,
    unscanned,
    widened,
)
from tracker.scoring.finance_model import finance_model
from tracker.scoring.queries import MAX_SHARE

SIDE_WAIT_S = 1.0  # how long an incremental scan waits for a side connection (_load)
FLAG_AT = 0.5  # conversions at or above this risk get a flag of their own


@dataclass
class ScanSummary:
    program: str
    scan_id: int | None
    mode: str = "full"
    conversions: int = 0
    flagged_conversions: int = 0
    rings: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    phases: dict[str, float] = field(default_factory=dict)  # seconds per phase
    # The model trained on finance's decisions: off, or on with its validation ROC AUC.
    supervised: dict[str, Any] = field(default_factory=lambda: {"enabled": False})
    program_rate: float | None = None  # credited conversions per counted click (full scans)
    # converting customers (each once) per counted click (full scans)
    customer_rate: float | None = None
    headerless_share: float | None = None  # of touched conversions (full scans)
    # Where the scan read its facts: {"source": "primary" | "replica", "replay_lsn"}.
    read: dict[str, Any] = field(default_factory=lambda: {"source": "primary",
                                                          "replay_lsn": None})
    unusual_referrers: int | None = None  # anomaly flags (full scans)

    def as_dict(self) -> dict[str, Any]:
        return {"program": self.program, "scan_id": self.scan_id, "mode": self.mode,
                "conversions": self.conversions, "flagged_conversions": self.flagged_conversions,
                "rings": self.rings, "seconds": round(self.seconds, 3),
                "phases": {k: round(v, 3) for k, v in self.phases.items()},
                "supervised": self.supervised, "program_rate": self.program_rate,
                "customer_rate": self.customer_rate,
                "headerless_share": self.headerless_share, "read": self.read,
                "unusual_referrers": self.unusual_referrers}


@dataclass(frozen=True, slots=True)
class _Loaded:
    """Everything a scan assesses, loaded."""

    program_id: int
    scope: Scope | None  # None: a full scan
    facts: Facts
    program: ProgramFacts
    known: list[Ring]  # rings earlier scans found (incremental scans)


@dataclass(frozen=True, slots=True)
class _Found:
    rings: list[Ring]  # new ones (an incremental scan's known rings are stored already)
    scored: list[Scored]  # the conversions assessed
    unusual: list[Unusual] = field(default_factory=list)  # full scans: the anomaly flags


async def scan(conn: asyncpg.Connection, slug: str | None = None, *,
               incremental: bool = False, replica: Replica = PRIMARY,
               catch_up_s: float = 0.0, pool: asyncpg.Pool | None = None
               ) -> list[ScanSummary]:
    """Scan each program (or one) under the fraud-scan job's lock, so the job, clearance and
    `refguard fraud scan` never scan a program at the same time; each program's facts from
    one snapshot of `replica` (the primary without one; `catch_up_s`: Replica.view).
    `pool`: the primary's, for an incremental scan's side reads (scan_program)."""
    summaries = []
    for program in await queries.programs_named(conn, slug):
        async with conn.transaction():
            await job_lock(conn, "fraud_scan")
            async with replica.view(conn, catch_up_s=catch_up_s) as read:
                summaries.append(await scan_program(conn, program.id, program.slug,
                                                    incremental=incremental, read=read,
                                                    pool=pool))
    return summaries


async def scan_program(conn: asyncpg.Connection, program_id: int, slug: str, *,
                       incremental: bool = False, read: ReadView | None = None,
                       pool: asyncpg.Pool | None = None) -> ScanSummary:
    """Scan one program: everything, or (incremental) the conversions no scan has seen, with
    the facts `read` has (the primary, `conn`, by default); the findings go to `conn`.

    `pool` (the primary's): an incremental scan that reads the primary reads the program's
    facts (the referrers' clicks and credits, its baseline: load_program_facts) on one of its
    connections while `conn` reads the conversions' neighbourhood, at the same time (on a
    replica, whose one snapshot they must share, it reads them in turn). Both read what is
    committed, as `conn` does: give no pool where the caller's transaction holds uncommitted
    facts the scan must see. The scan waits SIDE_WAIT_S for one of its connections, then reads
    in turn."""
    read = read or ReadView(conn)
    started = time.perf_counter()
    mode = "incremental" if incremental else "full"
    scope = (await unscanned(read.conn, program_id, primary=conn if read.replica else None)
             if incremental else None)
    if incremental and scope is None:
        return ScanSummary(slug, None, mode, read=read.as_dict())
    phases = {"scope": time.perf_counter() - started}
    scan_id = await queries.start_scan(conn, program_id, mode)
    # Every row loaded is a container, alive until the scan ends: at the default thresholds
    # the collector would trace them all again and again (a third of a full scan's CPU).
    with few_collections():
        loaded = await _load(read.conn, conn, program_id, scope,
                             None if read.replica else pool)
        phases["load"] = time.perf_counter() - started - phases["scope"]
        mark = time.perf_counter()
        model = await finance_model(read.conn, program_id)
        found = await asyncio.get_running_loop().run_in_executor(None, _assess, loaded, model)
        phases["compute"] = time.perf_counter() - mark
        summary = _summary(ScanSummary(slug, scan_id, mode, phases=phases,
                                       read=read.as_dict()), loaded, found, model)
        await _store(conn, scan_id, loaded, found, summary, started=started)
    metrics.SCAN_SECONDS.labels(mode=mode).observe(summary.seconds)
    await publish_flag_counts(conn)
    return summary


async def publish_flag_counts(conn: asyncpg.Connection) -> None:
    for kind, n in (await queries.flag_counts(conn)).items():
        metrics.FRAUD_FLAGS.labels(kind=kind).set(n)


async def _load(read: asyncpg.Connection, conn: asyncpg.Connection, program_id: int,
                scope: Scope | None, pool: asyncpg.Pool | None = None) -> _Loaded:
    """The facts from `read`; the rings earlier scans stored from the primary, `conn` (a
    lagging replica may not have the last scan's yet: a ring found again would be doubled).
    An incremental scan's `scope` (facts.unscanned's) is widened to its neighbours here; with
    `pool`, the program's facts are read on another connection meanwhile (scan_program)."""
    if scope is None:
        facts = await load_facts(read, program_id, None)
        program = await load_program_facts(read, program_id, None)
        return _Loaded(program_id, None, facts, program, [])
    side = None
    if pool is not None:
        # A pool with no connection to spare (its others may wait on this scan's lock) lends
        # none: the scan reads in turn rather than wait.
        with contextlib.suppress(asyncio.TimeoutError):
            side = await pool.acquire(timeout=SIDE_WAIT_S)
    if pool is None or side is None:
        scope = await widened(read, program_id, scope)
        facts = await load_facts(read, program_id, scope)
        program = await load_program_facts(read, program_id, scope)
    else:
        try:
            # The program's facts need the scope's referrers only, not its neighbours.
            aside = asyncio.ensure_future(load_program_facts(side, program_id, scope))
            try:
                scope = await widened(read, program_id, scope)
                facts = await load_facts(read, program_id, scope)
            except BaseException:
                aside.cancel()
                await asyncio.wait([aside])  # its connection goes back to the pool idle
                raise
            program = await aside
        finally:
            await pool.release(side)
    known = await queries.stored_rings(conn, program_id)
    return _Loaded(program_id, scope, facts, program, known)


def _assess(loaded: _Loaded, model: SupervisedRisk | None) -> _Found:
    """The rings a scan finds, and its conversions' assessments (CPU work: run off the loop)."""
    facts, program = loaded.facts, loaded.program
    holders = column_holders(facts.uses) | facts.rarity
    if loaded.scope is None:
        agents = {c.customer: {a for a, _ip in c.agents} for c in facts.conversions}
        # Stored as assessed: an office whose colleagues buy like people is a weak ring.
        rings = people_rings(find_rings(facts.uses, facts.referrals, max_share=MAX_SHARE,
                                        agents=agents, browsers_on=browsers_on(facts)),
                             facts.conversions)
        crowds = conversion_crowds(facts.conversions)  # computed once for every test
        keys = account_keys(facts.conversions, crowds)  # pools' and operators' ties, once
        rings += collusion_pools(facts.conversions, keys)
        rings += phone_pools(facts.conversions)  # shell referrers' referees on a few phones
        rings += sleeper_cells(facts.conversions, program.context.referrer_clicks)
        rings += wave_cells(facts.conversions, program.context.referrer_clicks)
        swaps = credit_swaps(facts.conversions, facts.referrers)  # once: rings and reasons
        rings += swaps.rings
        stacks = device_stacks(facts.conversions)  # once: rings and reasons
        rings += stacks.rings
        scored = assess_all(facts.conversions, facts.referrers, program.context, rings,
                            model=model, holders=holders, crowds=crowds, swaps=swaps,
                            stacks=stacks)
        # Decided on the parts; flagged for review as one group per operator. A cash-out
        # cohort (one referrer's referees rushing money through new accounts, bound by no
        # infrastructure) is a review flag only: its conversions' own evidence decides them.
        groups = operator_groups(rings, facts.conversions, keys)
        groups += cash_out_cohorts(facts.conversions, program.context.reversed_ids)
        return _Found(groups, scored,
                      anomalous_referrers(facts.conversions, program.context))
    rings = people_rings(_local_rings(facts, loaded.known), facts.conversions)
    return _Found(rings, assess_all(facts.conversions, facts.referrers, program.context,
                                    loaded.known + rings, only=loaded.scope.new_ids,
                                    model=model, holders=holders))


def browsers_on(facts: Facts) -> dict[str, set[str]]:
    """The browsers (User-Agents) the program's customers were seen with on each IP."""
    out: dict[str, set[str]] = defaultdict(set)
    for conv in facts.conversions:
        for agent, ip in conv.agents:
            if ip is not None:
                out[ip].add(agent)
    return out


def column_holders(uses: dict[Account, set[Column]]) -> dict[Column, int]:
    """How many accounts use each IP and device (an address many use says little)."""
    counts: dict[Column, int] = {}
    for columns in uses.values():
        for column in columns:
            counts[column] = counts.get(column, 0) + 1
    return counts


def _local_rings(facts: Facts, known: list[Ring]) -> list[Ring]:
    """Rings in an incremental scan's neighbourhood that no earlier ring already holds."""
    found = shared_infrastructure(facts.uses, facts.referrals, max_share=MAX_SHARE,
                                  crowds=crowded_columns(facts.uses, browsers_on(facts), {
                                      c.customer: {a for a, _ip in c.agents}
                                      for c in facts.conversions}))
    found += referral_cycles(facts.referrals)
    seen = set().union(*(r.accounts for r in known)) if known else set()
    return [r for r in found if not r.accounts <= seen]


def _summary(summary: ScanSummary, loaded: _Loaded, found: _Found,
             model: SupervisedRisk | None) -> ScanSummary:
    summary.conversions = len(found.scored)
    if loaded.scope is None:
        conversions = loaded.facts.conversions
        counted = sum(loaded.program.context.referrer_clicks.values())
        summary.program_rate = (sum(len(c.referrers) for c in conversions) / counted
                                if counted else None)
        summary.customer_rate = (len({(ref, c.customer) for c in conversions
                                      for ref in c.referrers}) / counted if counted else None)
        summary.headerless_share = headerless_share(conversions)
        summary.unusual_referrers = len(found.unusual)
    if model is not None:
        summary.supervised = {"enabled": model.enabled, "decisions": model.trained_on_,
                              "validation_auc": None if model.validation_auc_ is None
                              else round(model.validation_auc_, 4)}
    for ring in found.rings:
        summary.rings[ring.kind] = summary.rings.get(ring.kind, 0) + 1
        metrics.RING_SIZE.observe(len(ring.accounts))
    summary.flagged_conversions = sum(1 for s in found.scored if _flagged(s))
    return summary


def _flagged(scored: Scored) -> bool:
    return scored.assessment.score >= FLAG_AT and bool(scored.assessment.reasons)


async def _store(conn: asyncpg.Connection, scan_id: int, loaded: _Loaded, found: _Found,
                 summary: ScanSummary, *, started: float) -> None:
    """Replace the flags and risks the scan looked at, and finish the scan's row."""
    program_id = loaded.program_id
    by_id = {c.conversion_id: c for c in loaded.facts.conversions}
    flags: list[tuple[object, ...]] = [
        (program_id, scan_id, ring.kind, ring.score, None, json.dumps(group_flag_reasons(ring)),
         json.dumps(ring.members), json.dumps(ring.evidence, default=str))
        for ring in found.rings]
    flags += [(program_id, scan_id, ANOMALY, u.rank, None, json.dumps(u.reasons()),
               json.dumps([{"type": "referrer", "id": u.referrer}]), json.dumps(u.evidence()))
              for u in found.unusual]
    risks: list[tuple[object, ...]] = []
    for s in found.scored:
        a = s.assessment
        told = [r.as_dict() for r in a.reasons]
        if _flagged(s):  # which families decided it, in plain words
            told.append(decision_reason(a.reasons, a.score).as_dict())
        reasons = json.dumps(told)
        risks.append((program_id, a.conversion_id, a.score, reasons, scan_id, s.features))
        if _flagged(s):
            conv = by_id[a.conversion_id]
            top = max(a.reasons, key=lambda r: r.weight)
            members = [{"type": "customer", "id": conv.customer}] + [
                {"type": "referrer", "id": r} for r in conv.referrers]
            flags.append((program_id, scan_id, top.code, a.score, a.conversion_id, reasons,
                          json.dumps(members), json.dumps({"conversion_id": a.conversion_id})))
    scope = loaded.scope
    async with conn.transaction():
        await queries.replace_findings(conn, program_id,
                                       None if scope is None else list(scope.new_ids),
                                       flags, risks)
        summary.seconds = time.perf_counter() - started
        summary.phases["store"] = summary.seconds - sum(summary.phases.values())
        await queries.finish_scan(conn, scan_id, summary.as_dict())
