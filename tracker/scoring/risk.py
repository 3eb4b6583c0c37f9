"""Fraud scans: load a program's facts, run fraud/ on them, store flags and conversion risk.

fraud/ takes and returns plain data; this module is the only one that knows the tables.

- A full scan looks at the whole program and replaces its flags and risks (derived data; the
  scans table keeps the history of when and how much).
- An incremental scan assesses only conversions no scan has seen yet, at most `WINDOW` at a
  time, on their neighbourhood: their customers and referrers, the accounts that share an IP
  or a device with them, and the latest REFERRER_WINDOW conversions credited to each of
  those referrers (their totals come as aggregates, fraud.signals.ProgramContext). Rings
  found earlier still count; new rings are looked for by shared infrastructure and referral
  cycles (FRAUDAR needs the whole graph and is left to full scans). Anomaly scores and the
  program's delay distribution come from the feature rows stored by earlier scans (a bounded
  sample), so the program baseline does not have to be recomputed.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import numpy as np

from fraud.anomaly import score_rows
from fraud.rings import Account, Column, Ring, find_rings, referral_cycles, shared_infrastructure
from fraud.signals import (
    Assessment,
    ClickFacts,
    ConversionFacts,
    ProgramContext,
    Reason,
    ReferrerFacts,
    assess,
    combine,
    features,
    headerless_share,
    referrer_reasons,
    shared_device_reasons,
)
from fraud.supervised import MIN_DECISIONS, SupervisedRisk
from tracker import metrics
from tracker.db import job_lock
from tracker.formats import CREDITED_TYPES

FLAG_AT = 0.5  # conversions at or above this risk get a flag of their own
ANOMALY_AT = 0.99  # anomaly percentile that becomes a reason
WINDOW = 20_000  # conversions per incremental scan, to bound its memory
BASELINE_ROWS = 10_000  # stored feature rows an incremental scan compares against
REFERRER_WINDOW = 100  # an incremental scan's latest conversions of each referrer involved
MAX_SHARE = 25  # an IP or device used by more accounts says nothing (a NAT, a cafe)
RING_REFERRER = 0.3  # the weight of "a credited referrer is in a ring": alone, not held


def _ip(table: str = "") -> str:
    """A row's IP as evidence of identity: none once retention has reduced it to its network
    (tracker.privacy), or everyone on that /24 would seem to share one address."""
    prefix = f"{table}." if table else ""
    return f"CASE WHEN {prefix}reduced THEN NULL ELSE host({prefix}ip) END"
RING_KINDS = ("ring", "dense_block", "referral_cycle")


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
    headerless_share: float | None = None  # of touched conversions (full scans)

    def as_dict(self) -> dict[str, Any]:
        return {"program": self.program, "scan_id": self.scan_id, "mode": self.mode,
                "conversions": self.conversions, "flagged_conversions": self.flagged_conversions,
                "rings": self.rings, "seconds": round(self.seconds, 3),
                "phases": {k: round(v, 3) for k, v in self.phases.items()},
                "supervised": self.supervised, "program_rate": self.program_rate,
                "headerless_share": self.headerless_share}


@dataclass(frozen=True, slots=True)
class ProgramFacts:
    context: ProgramContext
    baseline: np.ndarray | None = None  # stored feature rows (incremental scans)


@dataclass(frozen=True, slots=True)
class Scope:
    """What an incremental scan looks at."""

    new_ids: set[int]
    persons: list[str]  # customers and referrers (external ids) whose facts are loaded
    referrers: list[str]  # referrers whose latest REFERRER_WINDOW conversions are loaded


async def _program_facts(conn: asyncpg.Connection, program_id: int,
                         scope: Scope | None) -> ProgramFacts:
    reversed_rows = await conn.fetch(
        """SELECT o.id FROM conversions x
           JOIN conversions o ON o.program_id = x.program_id AND o.event_id = x.original_event_id
           WHERE x.program_id = $1 AND x.type IN ('refund', 'chargeback')""", program_id)
    reversed_ids = frozenset(r["id"] for r in reversed_rows)
    only = "" if scope is None else "AND r.external_id = ANY($2::text[])"
    click_rows = await conn.fetch(
        f"""SELECT r.external_id, count(*) AS n FROM clicks c
           JOIN referrers r ON r.program_id = c.program_id AND r.id = c.referrer_id
           WHERE c.program_id = $1 AND NOT c.is_bot AND NOT c.is_duplicate {only}
           GROUP BY r.external_id""", program_id, *(() if scope is None else (scope.referrers,)))
    clicks = {r["external_id"]: r["n"] for r in click_rows}
    if scope is None:
        return ProgramFacts(ProgramContext(reversed_ids, clicks))
    # The program's conversions per click, as the latest full scan measured it (counting a
    # million clicks again every 30 seconds would cost more than the whole incremental scan).
    latest = await conn.fetchrow(
        """SELECT (stats->>'program_rate')::float AS rate,
                  (stats->>'headerless_share')::float AS headerless FROM fraud_scans
           WHERE program_id = $1 AND mode = 'full' AND finished_at IS NOT NULL
           ORDER BY id DESC LIMIT 1""", program_id)
    rate = latest["rate"] if latest else None
    # The program's headerless share as a full scan measured it; before any full scan, the
    # signal compares with the other conversions at hand (None).
    headerless = latest["headerless"] if latest else None
    if rate is None:
        credited = await conn.fetchval("SELECT count(*) FROM credits WHERE program_id = $1",
                                       program_id)
        counted = await conn.fetchval(
            "SELECT count(*) FROM clicks WHERE program_id = $1 AND NOT is_bot "
            "AND NOT is_duplicate", program_id)
        rate = credited / counted if counted else None
    history = {r["external_id"]: (r["n"], r["first"].timestamp()) for r in await conn.fetch(
        """SELECT f.external_id, count(*) AS n, min(c.occurred_at) AS first
           FROM credits cr
           JOIN referrers f ON f.program_id = cr.program_id AND f.id = cr.referrer_id
           JOIN conversions c ON c.program_id = cr.program_id AND c.id = cr.conversion_id
           WHERE cr.program_id = $1 AND f.external_id = ANY($2::text[])
           GROUP BY f.external_id""", program_id, scope.referrers)}
    rows = await conn.fetch(
        """SELECT features FROM conversion_risk WHERE program_id = $1 AND features IS NOT NULL
           ORDER BY conversion_id DESC LIMIT $2""", program_id, BASELINE_ROWS)
    baseline = np.asarray([r["features"] for r in rows], dtype=float) if rows else None
    background = None
    if baseline is not None:
        background = np.expm1(baseline[baseline[:, 1] > 0][:, 0])  # delays of touched rows
    return ProgramFacts(ProgramContext(reversed_ids, clicks, background, rate, history=history,
                                       headerless_share=headerless), baseline)


def assess_all(conversions: list[ConversionFacts], referrers: dict[str, ReferrerFacts],
               rings: list[Ring], facts: ProgramFacts, only: set[int] | None = None
               ) -> list[tuple[Assessment, list[float]]]:
    """Every conversion's reasons (its own, its referrers', its device's, rings, anomaly),
    with its anomaly feature row; `only` limits the answer to those conversion ids."""
    context = facts.context
    per_referrer = referrer_reasons(conversions, context)
    per_device = shared_device_reasons(conversions)
    referrer_conversions: dict[str, int] = defaultdict(int)
    for conv in conversions:
        for ref in conv.referrers:
            referrer_conversions[ref] += 1
    referrer_conversions |= {ref: n for ref, (n, _first) in context.history.items()}
    wanted = [c for c in conversions if only is None or c.conversion_id in only]
    rows = [features(c, referrer_conversions, context.referrer_clicks) for c in wanted]
    percentiles, scorer = score_rows(rows, facts.baseline)
    out = []
    for i, conv in enumerate(wanted):
        base = _with_rings(assess(conv, referrers), conv, rings)
        extra: list[Reason] = [r for ref in conv.referrers for r in per_referrer.get(ref, ())]
        if conv.conversion_id in per_device:
            extra.append(per_device[conv.conversion_id])
        if scorer is not None and percentiles[i] >= ANOMALY_AT:
            top = scorer.explain(np.asarray(rows[i]))
            extra.append(Reason(
                "anomaly", "unusual among this program's conversions: " + ", ".join(
                    f"{name} {z:+.1f} sd" for name, z in top),
                round(float(percentiles[i]), 4), ANOMALY_AT, 0.3))
        reasons = base.reasons + tuple(extra)
        out.append((Assessment(conv.conversion_id, combine(reasons), reasons), rows[i]))
    return out


async def _new_scope(conn: asyncpg.Connection, program_id: int) -> Scope | None:
    """The conversions no scan has seen yet, and the people around them."""
    rows = await conn.fetch(
        """SELECT c.id, c.customer_id,
                  coalesce(array_agg(r.external_id) FILTER (WHERE r.id IS NOT NULL), '{}')
                      AS referrers
           FROM conversions c
           LEFT JOIN credits cr ON cr.program_id = c.program_id AND cr.conversion_id = c.id
           LEFT JOIN referrers r ON r.program_id = cr.program_id AND r.id = cr.referrer_id
           WHERE c.program_id = $1 AND c.attributed_at IS NOT NULL AND c.type = ANY($2::text[])
             AND NOT EXISTS (SELECT 1 FROM conversion_risk k
                             WHERE k.program_id = c.program_id AND k.conversion_id = c.id)
           GROUP BY c.program_id, c.id ORDER BY c.id LIMIT $3""",
        program_id, list(CREDITED_TYPES), WINDOW)
    if not rows:
        return None
    referrers = sorted({ref for r in rows for ref in r["referrers"]})
    core = sorted({r["customer_id"] for r in rows} | set(referrers))
    around = await neighbours(conn, program_id, core)
    return Scope({r["id"] for r in rows}, sorted(set(core) | around), referrers)


async def person_columns(conn: asyncpg.Connection, program_id: int, persons: list[str]
                         ) -> dict[str, set[Column]]:
    """The IPs and devices each person (customer id) was seen on: their visitors' clicks and
    the IPs their conversions were reported from."""
    rows = await conn.fetch(
        f"""SELECT cv.customer_id, {_ip('c')} AS ip, encode(c.fingerprint, 'hex') AS device
           FROM customer_visitors cv
           JOIN clicks c ON c.program_id = cv.program_id AND c.visitor_id = cv.visitor_id
           WHERE cv.program_id = $1 AND cv.customer_id = ANY($2::text[])
           UNION SELECT customer_id, {_ip()}, NULL FROM conversions
           WHERE program_id = $1 AND customer_id = ANY($2::text[]) AND ip IS NOT NULL""",
        program_id, persons)
    out: dict[str, set[Column]] = defaultdict(set)
    for r in rows:
        if r["ip"]:
            out[r["customer_id"]].add(("ip", r["ip"]))
        if r["device"]:
            out[r["customer_id"]].add(("device", r["device"]))
    return dict(out)


async def neighbours(conn: asyncpg.Connection, program_id: int, core: list[str]) -> set[str]:
    """People who share an IP or a device with one of `core` (IPs and devices used by more
    than MAX_SHARE people, a carrier NAT or a cafe, bind nobody)."""
    columns = {c for cs in (await person_columns(conn, program_id, core)).values() for c in cs}
    ips = sorted(v for k, v in columns if k == "ip")
    devices = sorted(bytes.fromhex(v) for k, v in columns if k == "device")
    holders = await conn.fetch(
        f"""SELECT DISTINCT cv.customer_id, {_ip('c')} AS ip, c.fingerprint FROM clicks c
           JOIN customer_visitors cv ON cv.program_id = c.program_id
                                    AND cv.visitor_id = c.visitor_id
           WHERE c.program_id = $1 AND (c.ip IN (SELECT unnest($2::inet[]))
                                        OR c.fingerprint IN (SELECT unnest($3::bytea[])))
           UNION SELECT customer_id, {_ip()}, NULL FROM conversions
           WHERE program_id = $1 AND ip IN (SELECT unnest($2::inet[]))""",
        program_id, ips, devices)
    by_column: dict[Column, set[str]] = defaultdict(set)
    for r in holders:
        if r["ip"]:
            by_column[("ip", r["ip"])].add(r["customer_id"])
        if r["fingerprint"]:
            by_column[("device", bytes(r["fingerprint"]).hex())].add(r["customer_id"])
    return {p for people in by_column.values() if len(people) <= MAX_SHARE for p in people}


async def _facts(conn: asyncpg.Connection, program_id: int, scope: Scope | None) -> tuple[
        list[ConversionFacts], dict[str, ReferrerFacts], dict[Account, set[Column]],
        list[tuple[str, str]]]:
    referrer_rows = await conn.fetch(
        "SELECT id, external_id, email_hash FROM referrers WHERE program_id = $1", program_id)
    referrer_name = {r["id"]: r["external_id"] for r in referrer_rows}
    args: tuple[object, ...] = (program_id,)
    persons_only = conversions_only = ""
    persons = set(scope.persons) if scope is not None else set()
    if scope is not None:
        wanted = set(scope.referrers)
        args = (program_id, scope.persons,
                [r["id"] for r in referrer_rows if r["external_id"] in wanted])
        persons_only = "AND cv.customer_id = ANY($2::text[])"
        conversions_only = f"""AND (c.customer_id = ANY($2::text[]) OR c.id IN (
            SELECT conversion_id FROM (
                SELECT conversion_id, row_number() OVER (
                    PARTITION BY referrer_id ORDER BY conversion_id DESC) AS latest
                FROM credits WHERE program_id = $1 AND referrer_id = ANY($3::bigint[])) w
            WHERE w.latest <= {REFERRER_WINDOW}))"""
    # Every person's infrastructure: the clicks of the visitors linked to a customer id, and
    # the IPs their conversions were reported from.
    person_rows = await conn.fetch(
        f"""SELECT cv.customer_id, cv.visitor_id, {_ip('c')} AS ip,
                  encode(c.fingerprint, 'hex') AS device
           FROM customer_visitors cv
           JOIN clicks c ON c.program_id = cv.program_id AND c.visitor_id = cv.visitor_id
           WHERE cv.program_id = $1 {persons_only}""", *args[:2])
    visitors: dict[str, set[str]] = defaultdict(set)
    devices: dict[str, set[str]] = defaultdict(set)
    ips: dict[str, set[str]] = defaultdict(set)
    for r in person_rows:
        visitors[r["customer_id"]].add(r["visitor_id"])
        if r["device"]:
            devices[r["customer_id"]].add(r["device"])
        if r["ip"]:
            ips[r["customer_id"]].add(r["ip"])
    conv_rows = await conn.fetch(
        f"""SELECT c.id, c.customer_id, c.email_hash, c.occurred_at, {_ip('c')} AS ip, c.type,
                  coalesce(c.amount, 0) AS amount,
                  coalesce(array_agg(cr.referrer_id) FILTER (WHERE cr.referrer_id IS NOT NULL),
                           '{{}}') AS referrers
           FROM conversions c
           LEFT JOIN credits cr ON cr.program_id = c.program_id AND cr.conversion_id = c.id
           WHERE c.program_id = $1 AND c.attributed_at IS NOT NULL {conversions_only}
           GROUP BY c.program_id, c.id""", *args)
    email_of: dict[str, bytes] = {}
    for r in conv_rows:
        if r["ip"] and (scope is None or r["customer_id"] in persons):
            ips[r["customer_id"]].add(r["ip"])
        if r["email_hash"]:
            email_of[r["customer_id"]] = bytes(r["email_hash"])
    touches_only = "" if scope is None else "AND t.conversion_id = ANY($2::bigint[])"
    # Headerless: no Accept-Language on a click whose data is there (an erased customer's
    # clicks have lost their headers, and that says nothing of how they were made).
    touch_rows = await conn.fetch(
        f"""SELECT t.conversion_id, t.referrer_id, c.click_id::text AS click_id, c.ts,
                  c.visitor_id, {_ip('c')} AS ip, encode(c.fingerprint, 'hex') AS device,
                  c.is_bot, c.bot_rule, c.is_anonymous, c.is_hosting, c.country, c.query,
                  (coalesce(c.accept_language, '') = ''
                   AND c.user_agent IS NOT NULL) AS headerless
           FROM touchpoints t
           JOIN clicks c ON c.program_id = t.program_id AND c.ts = t.ts
                        AND c.click_id = t.click_id
           WHERE t.program_id = $1 {touches_only} ORDER BY t.conversion_id, t.position""",
        program_id, *(() if scope is None else ([r["id"] for r in conv_rows],)))
    touches: dict[int, list[ClickFacts]] = defaultdict(list)
    for r in touch_rows:
        touches[r["conversion_id"]].append(ClickFacts(
            r["click_id"], r["ts"].timestamp(), referrer_name.get(r["referrer_id"], ""),
            r["visitor_id"], r["ip"], r["device"], r["is_bot"], r["bot_rule"],
            r["is_anonymous"], r["is_hosting"], r["country"], r["query"], r["headerless"]))
    referrers = {
        r["external_id"]: ReferrerFacts(
            r["external_id"],
            bytes(r["email_hash"]) if r["email_hash"] else email_of.get(r["external_id"]),
            frozenset(visitors.get(r["external_id"], ())),
            frozenset(devices.get(r["external_id"], ())),
            frozenset(ips.get(r["external_id"], ())))
        for r in referrer_rows}
    conversions = [
        ConversionFacts(
            r["id"], r["customer_id"], r["occurred_at"].timestamp(),
            tuple(sorted(referrer_name[i] for i in r["referrers"] if i in referrer_name)),
            # A merchant may send the email with the sign-up only: the customer's is theirs.
            bytes(r["email_hash"]) if r["email_hash"] else email_of.get(r["customer_id"]),
            r["ip"], None,
            tuple(touches.get(r["id"], ())), frozenset(visitors.get(r["customer_id"], ())),
            frozenset(devices.get(r["customer_id"], ())),
            frozenset(ips.get(r["customer_id"], ())), r["amount"])
        for r in conv_rows if r["type"] in CREDITED_TYPES]
    uses: dict[Account, set[Column]] = defaultdict(set)
    for person in set(visitors) | set(ips):
        kind = "referrer" if person in referrers else "customer"
        uses[(kind, person)] |= {("ip", i) for i in ips.get(person, ())}
        uses[(kind, person)] |= {("device", d) for d in devices.get(person, ())}
    referrals = [(ref, conv.customer) for conv in conversions for ref in conv.referrers]
    return conversions, referrers, dict(uses), referrals


def _with_rings(assessment: Assessment, conv: ConversionFacts, rings: list[Ring]
                ) -> Assessment:
    """A customer inside a ring is strong evidence against their conversion. A ring referrer's
    customer outside it is weak evidence only: fraudsters have real friends too, and those
    rewards should not all wait for finance because of the ring."""
    customer = {("customer", conv.customer), ("referrer", conv.customer)}
    credited = {("referrer", r) for r in conv.referrers}
    inside = [ring for ring in rings if ring.accounts & customer]
    if inside:
        ring = inside[0]
        extra = Reason(f"{ring.kind}_member",
                       f"the customer belongs to a {ring.kind.replace('_', ' ')} of "
                       f"{len(ring.accounts)} accounts", len(ring.accounts), 3, 0.85)
    else:
        beside = [ring for ring in rings if ring.accounts & credited]
        if not beside:
            return assessment
        ring = beside[0]
        who = ", ".join(sorted(r for _kind, r in ring.accounts & credited))
        extra = Reason("ring_referrer",
                       f"the credited referrer {who} belongs to a "
                       f"{ring.kind.replace('_', ' ')} of {len(ring.accounts)} accounts "
                       "(this customer is not in it)", len(ring.accounts), 3, RING_REFERRER)
    reasons = (*assessment.reasons, extra)
    return Assessment(assessment.conversion_id, combine(reasons), reasons)


def _ring_reasons(ring: Ring) -> list[dict[str, object]]:
    if ring.kind == "referral_cycle":
        return [{"code": "referral_cycle", "message": "these referrers referred each other in "
                 "a cycle", "value": ring.evidence.get("length"), "threshold": 2}]
    ips = sum(1 for kind, _ in ring.shared if kind == "ip")
    devices = len(ring.shared) - ips
    what = " and ".join(f"{n} {noun}{'' if n == 1 else plural}" for n, noun, plural in
                        ((ips, "IP address", "es"), (devices, "device", "s")) if n)
    return [{"code": "shared_infrastructure" if ring.kind == "ring" else "dense_block",
             "message": f"{len(ring.accounts)} accounts share {what or 'nothing'} that almost "
                        "nobody else uses",
             "value": len(ring.accounts), "threshold": 3}]


# -- the model of finance's decisions ------------------------------------------------------------

FINANCE_MODEL_AT = 0.8  # its probability that finance would reject, to become a reason
FINANCE_ROWS = 5_000  # the latest decisions it learns from
_models: dict[int, tuple[tuple[int, object], SupervisedRisk]] = {}  # per program, by state


async def _finance_model(conn: asyncpg.Connection, program_id: int) -> SupervisedRisk | None:
    """fraud.supervised trained on finance's own decisions (not clearance's automatic ones):
    None below MIN_DECISIONS. Retrained only when a decision was added since."""
    state = await conn.fetchrow(
        """SELECT count(*) AS n, max(decided_at) AS last FROM rewards
           WHERE program_id = $1 AND decided_by NOT LIKE 'system:%'
             AND status IN ('approved', 'paid', 'rejected')""", program_id)
    if state["n"] < MIN_DECISIONS:
        return None
    key = (int(state["n"]), state["last"])
    cached = _models.get(program_id)
    if cached is not None and cached[0] == key:
        return cached[1]
    rows = await conn.fetch(
        """SELECT DISTINCT ON (r.conversion_id) k.features, r.status = 'rejected' AS rejected
           FROM rewards r JOIN conversion_risk k ON k.program_id = r.program_id
                                              AND k.conversion_id = r.conversion_id
           WHERE r.program_id = $1 AND r.decided_by NOT LIKE 'system:%'
             AND r.status IN ('approved', 'paid', 'rejected') AND k.features IS NOT NULL
           ORDER BY r.conversion_id DESC, r.decided_at DESC LIMIT $2""",
        program_id, FINANCE_ROWS)
    x = [list(r["features"]) for r in rows]
    y = [bool(r["rejected"]) for r in rows]
    model = await asyncio.get_running_loop().run_in_executor(
        None, lambda: SupervisedRisk().fit(x, y))
    _models[program_id] = (key, model)
    return model


def _with_finance_model(assessments: list[tuple[Assessment, list[float]]],
                        model: SupervisedRisk) -> list[tuple[Assessment, list[float]]]:
    if not assessments:
        return assessments
    risks = model.risk([row for _a, row in assessments])
    out = []
    for (a, row), p in zip(assessments, risks, strict=True):
        if p < FINANCE_MODEL_AT:
            out.append((a, row))
            continue
        reason = Reason(
            "finance_model", f"resembles conversions finance rejected (probability "
            f"{p:.2f}; model validated at ROC AUC {model.validation_auc_ or 0:.2f} on "
            f"{model.trained_on_} decisions)", round(float(p), 4), FINANCE_MODEL_AT, 0.5)
        reasons = (*a.reasons, reason)
        out.append((Assessment(a.conversion_id, combine(reasons), reasons), row))
    return out


async def _stored_rings(conn: asyncpg.Connection, program_id: int) -> list[Ring]:
    rows = await conn.fetch(
        """SELECT kind, score, members::text AS members FROM fraud_flags
           WHERE program_id = $1 AND kind = ANY($2::text[])""", program_id, list(RING_KINDS))
    rings = []
    for r in rows:
        members = json.loads(r["members"])
        rings.append(Ring(
            r["kind"],
            frozenset((m["type"], m["id"]) for m in members
                      if m["type"] in ("referrer", "customer")),
            frozenset((m["type"], m["id"]) for m in members if m["type"] in ("ip", "device")),
            r["score"]))
    return rings


def _local_rings(uses: dict[Account, set[Column]], referrals: list[tuple[str, str]],
                 known: list[Ring]) -> list[Ring]:
    """Rings in an incremental scan's neighbourhood that no earlier ring already holds."""
    found = shared_infrastructure(uses, referrals, max_share=MAX_SHARE)
    found += referral_cycles(referrals)
    seen = set().union(*(r.accounts for r in known)) if known else set()
    return [r for r in found if not r.accounts <= seen]


async def scan_program(conn: asyncpg.Connection, program_id: int, slug: str, *,
                       incremental: bool = False) -> ScanSummary:
    """Scan one program: everything, or (incremental) the conversions no scan has seen."""
    started = time.perf_counter()
    mode = "incremental" if incremental else "full"
    scope = await _new_scope(conn, program_id) if incremental else None
    if incremental and scope is None:
        return ScanSummary(slug, None, mode)
    phases = {"scope": time.perf_counter() - started}
    scan_id = await conn.fetchval(
        "INSERT INTO fraud_scans (program_id, mode) VALUES ($1, $2) RETURNING id",
        program_id, mode)
    conversions, referrers, uses, referrals = await _facts(conn, program_id, scope)
    facts = await _program_facts(conn, program_id, scope)
    known = await _stored_rings(conn, program_id) if scope is not None else []
    phases["load"] = time.perf_counter() - started - phases["scope"]

    def compute() -> tuple[list[Ring], list[tuple[Assessment, list[float]]]]:
        if scope is None:
            rings = find_rings(uses, referrals, max_share=MAX_SHARE)
            return rings, assess_all(conversions, referrers, rings, facts)
        rings = _local_rings(uses, referrals, known)
        return rings, assess_all(conversions, referrers, known + rings, facts, scope.new_ids)

    mark = time.perf_counter()
    rings, assessments = await asyncio.get_running_loop().run_in_executor(None, compute)
    model = await _finance_model(conn, program_id)
    if model is not None and model.enabled:
        assessments = _with_finance_model(assessments, model)
    phases["compute"] = time.perf_counter() - mark
    by_id = {c.conversion_id: c for c in conversions}
    summary = ScanSummary(slug, scan_id, mode, conversions=len(assessments), phases=phases)
    if scope is None:
        counted = sum(facts.context.referrer_clicks.values())
        summary.program_rate = (sum(len(c.referrers) for c in conversions) / counted
                                if counted else None)
        summary.headerless_share = headerless_share(conversions)
    if model is not None:
        summary.supervised = {"enabled": model.enabled, "decisions": model.trained_on_,
                              "validation_auc": None if model.validation_auc_ is None
                              else round(model.validation_auc_, 4)}
    flag_rows: list[tuple[object, ...]] = []
    for ring in rings:
        summary.rings[ring.kind] = summary.rings.get(ring.kind, 0) + 1
        metrics.RING_SIZE.observe(len(ring.accounts))
        flag_rows.append((program_id, scan_id, ring.kind, ring.score, None,
                          json.dumps(_ring_reasons(ring)), json.dumps(ring.members),
                          json.dumps(ring.evidence, default=str)))
    risk_rows = []
    for a, row in assessments:
        reasons = [r.as_dict() for r in a.reasons]
        risk_rows.append((program_id, a.conversion_id, a.score, json.dumps(reasons), scan_id,
                          row))
        if a.score >= FLAG_AT and a.reasons:
            summary.flagged_conversions += 1
            conv = by_id[a.conversion_id]
            top = max(a.reasons, key=lambda r: r.weight)
            members = [{"type": "customer", "id": conv.customer}] + [
                {"type": "referrer", "id": r} for r in conv.referrers]
            flag_rows.append((program_id, scan_id, top.code, a.score, a.conversion_id,
                              json.dumps(reasons), json.dumps(members),
                              json.dumps({"conversion_id": a.conversion_id})))
    async with conn.transaction():
        if scope is None:
            await conn.execute("DELETE FROM fraud_flags WHERE program_id = $1", program_id)
            await conn.execute("DELETE FROM conversion_risk WHERE program_id = $1", program_id)
        else:
            await conn.execute(
                "DELETE FROM fraud_flags WHERE program_id = $1 AND conversion_id = ANY($2)",
                program_id, list(scope.new_ids))
        if flag_rows:
            await conn.executemany(
                """INSERT INTO fraud_flags (program_id, scan_id, kind, score, conversion_id,
                       reasons, members, evidence)
                   VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7::jsonb, $8::jsonb)""", flag_rows)
        if risk_rows:
            await conn.executemany(
                """INSERT INTO conversion_risk (program_id, conversion_id, score, reasons,
                       scan_id, features) VALUES ($1, $2, $3, $4::jsonb, $5, $6)
                   ON CONFLICT (program_id, conversion_id) DO UPDATE SET
                       score = excluded.score, reasons = excluded.reasons,
                       scan_id = excluded.scan_id, features = excluded.features,
                       scanned_at = now()""", risk_rows)
        summary.seconds = time.perf_counter() - started
        phases["store"] = summary.seconds - sum(phases.values())
        await conn.execute(
            "UPDATE fraud_scans SET finished_at = now(), stats = $2::jsonb WHERE id = $1",
            scan_id, json.dumps(summary.as_dict()))
    metrics.SCAN_SECONDS.labels(mode=mode).observe(summary.seconds)
    await publish_flag_counts(conn)
    return summary


async def publish_flag_counts(conn: asyncpg.Connection) -> None:
    for row in await conn.fetch("SELECT kind, count(*) AS n FROM fraud_flags GROUP BY kind"):
        metrics.FRAUD_FLAGS.labels(kind=row["kind"]).set(row["n"])


async def scan(conn: asyncpg.Connection, slug: str | None = None, *,
               incremental: bool = False) -> list[ScanSummary]:
    """Scan each program (or one) under the fraud-scan job's lock, so the job, clearance and
    `refguard fraud scan` never scan a program at the same time."""
    rows = await conn.fetch(
        "SELECT id, slug FROM programs WHERE $1::text IS NULL OR slug = $1 ORDER BY id", slug)
    summaries = []
    for r in rows:
        async with conn.transaction():
            await job_lock(conn, "fraud_scan")
            summaries.append(await scan_program(conn, r["id"], r["slug"],
                                                incremental=incremental))
    return summaries


# -- backtest ----------------------------------------------------------------------------------


class BacktestSettingsInvalid(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Replay:
    review_at: float
    reject_at: float
    weights: dict[str, float]
    disabled: frozenset[str]

    @classmethod
    def parse(cls, raw: object, current: dict[str, Any]) -> Replay:
        if not isinstance(raw, dict):
            raise BacktestSettingsInvalid("the settings file must hold a JSON object")
        unknown = sorted(set(raw) - {"review_at", "reject_at", "weights", "disabled_reasons"})
        if unknown:
            raise BacktestSettingsInvalid(f"unknown setting {unknown[0]!r}")
        review = raw.get("review_at", current.get("review_at", 0.5))
        reject = raw.get("reject_at", current.get("reject_at", 0.9))
        for name, value in (("review_at", review), ("reject_at", reject)):
            if isinstance(value, bool) or not isinstance(value, int | float) \
                    or not 0 <= value <= 1:
                raise BacktestSettingsInvalid(f"{name} must be a number between 0 and 1")
        if review > reject:
            raise BacktestSettingsInvalid("review_at must not exceed reject_at")
        weights = raw.get("weights", {})
        if not isinstance(weights, dict) or not all(
                isinstance(k, str) and isinstance(v, int | float) and not isinstance(v, bool)
                and 0 <= v <= 1 for k, v in weights.items()):
            raise BacktestSettingsInvalid("weights must map reason codes to numbers in [0, 1]")
        disabled = raw.get("disabled_reasons", [])
        if not isinstance(disabled, list) or not all(isinstance(d, str) for d in disabled):
            raise BacktestSettingsInvalid("disabled_reasons must be a list of reason codes")
        return cls(float(review), float(reject), {k: float(v) for k, v in weights.items()},
                   frozenset(disabled))

    def status(self, score: float) -> str:
        if score >= self.reject_at:
            return "rejected"
        if score >= self.review_at:
            return "flagged"
        return "approved"

    def rescore(self, reasons: list[dict[str, Any]]) -> float:
        keep = 1.0
        for reason in reasons:
            code = str(reason.get("code"))
            if code in self.disabled:
                continue
            weight = self.weights.get(code, float(reason.get("weight", 0.0)))
            keep *= 1.0 - min(max(weight, 0.0), 1.0)
        return round(1.0 - keep, 6)


@dataclass(frozen=True, slots=True)
class Change:
    program: str
    event_id: str
    before: str
    after: str
    score_before: float
    score_after: float
    reasons: tuple[str, ...]


async def backtest(conn: asyncpg.Connection, raw_settings: object, slug: str | None = None
                   ) -> tuple[list[Change], int]:
    """Conversions whose outcome would change under other thresholds or reason weights, and
    how many stored risk assessments were replayed. Replays the latest scan's reasons."""
    programs = await conn.fetch(
        "SELECT id, slug, settings::text AS settings FROM programs "
        "WHERE $1::text IS NULL OR slug = $1 ORDER BY id", slug)
    changes: list[Change] = []
    replayed = 0
    for program in programs:
        current_settings = json.loads(program["settings"])
        now = Replay.parse({}, current_settings)
        then = Replay.parse(raw_settings, current_settings)
        rows = await conn.fetch(
            """SELECT c.event_id, r.score, r.reasons::text AS reasons FROM conversion_risk r
               JOIN conversions c ON c.program_id = r.program_id AND c.id = r.conversion_id
               WHERE r.program_id = $1 ORDER BY c.id""", program["id"])
        for row in rows:
            replayed += 1
            reasons = json.loads(row["reasons"])
            before = now.status(row["score"])
            score = then.rescore(reasons)
            after = then.status(score)
            if before != after:
                changes.append(Change(program["slug"], row["event_id"], before, after,
                                      row["score"], score,
                                      tuple(str(r.get("code")) for r in reasons)))
    return changes, replayed
