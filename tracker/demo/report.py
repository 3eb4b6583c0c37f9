"""What the demo built: its outcome per planted pattern, read back from the database, and the
report `refguard demo` prints."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import asyncpg

from tracker.demo.scenario import DOMAIN, ORGANIC, PATTERNS, Scenario, display_name

if TYPE_CHECKING:
    from tracker.demo.growth import Receiver

TOP_SHOWN = 5  # top candidates the report names


@dataclass
class Growth:
    """What the growth step left (tracker.demo.growth), as the API reports it."""

    model: dict[str, Any] | None  # the candidate model (GET /api/v1/reports/candidates)
    candidates: list[dict[str, Any]]  # the top 20 %, best first
    asks: dict[str, int]  # derived status (GET /api/v1/asks) -> n
    reasons: dict[str, int]  # why the suppressed and expired were not sent -> n
    funnel: list[dict[str, Any]]  # the funnel by channel (GET /api/v1/reports/funnel)
    events: int
    shares: int
    deliveries: list[dict[str, Any]]  # the referral.ask payloads the receiver took
    refused: int  # deliveries the receiver refused for their signature
    share_url: str  # the best candidate's share page


@dataclass
class DemoResult:
    program: str
    url: str
    seconds: float
    live_ips: bool  # the server believed X-Forwarded-For: live clicks carry visitors' IPs
    referrers: int
    clicks: int
    live_clicks: int
    conversions: int
    statuses: dict[str, int]  # rewards of the program by status
    flagged: int  # all programs' flagged rewards: what the review page shows
    finance_token: str
    per_pattern: dict[str, Counter[str]]  # pattern -> reward statuses, "conversions", ...
    flags: dict[str, int]  # fraud flags of the program by kind
    labels: dict[str, str]  # event id -> pattern
    accounts: dict[str, str]  # referrer external id -> pattern
    customers: dict[str, str]  # customer id -> pattern
    examples: dict[str, list[str]] = field(default_factory=dict)  # pattern -> referrer ids
    # The geo databases the demo wrote (tracker.demo.geodb; None: REFGUARD_GEOIP_DIR was set),
    # and whether the server the demo started reads them (a running one may not).
    geo_dir: Path | None = None
    geo_served: bool = False
    growth: Growth | None = None


def print_report(result: DemoResult, out: TextIO) -> None:
    base = result.url
    statuses = ", ".join(f"{n:,} {s}" for s, n in sorted(
        result.statuses.items(), key=lambda kv: -kv[1])) or "none"
    how = ("live clicks carry each visitor's own IP: the server trusts this machine as a proxy"
           if result.live_ips else
           "live clicks are recorded from this machine's address; to forward each visitor's "
           "IP, serve with REFGUARD_TRUSTED_PROXIES=127.0.0.0/8")
    lines = [
        "",
        f"refguard demo: program {result.program!r} on {DOMAIN} with {result.referrers} "
        f"referrers, {result.clicks:,} clicks ({result.live_clicks} live through /r/{{code}}) "
        f"and {result.conversions:,} conversions, in {result.seconds:.1f} s",
        f"  ({how})",
        *_geo_lines(result),
        "",
        f"  rewards: {statuses}",
        "",
        "  planted fraud         conversions  no credit  approved  flagged  rejected  flags",
    ]
    for pattern in (*PATTERNS, ORGANIC):
        c = result.per_pattern.get(pattern, Counter())
        name = "organic (no fraud)" if pattern == ORGANIC else pattern
        lines.append(f"  {name:<20} {c['conversions']:>12,} {c['uncredited']:>10,} "
                     f"{c['approved']:>9,} {c['flagged']:>8,} {c['rejected']:>9,} "
                     f"{c['flags']:>6,}")
    lines.append("")
    for pattern in PATTERNS:
        ids = result.examples.get(pattern, [])
        if ids:
            lines.append(f"  {pattern} referrers: {', '.join(ids)}")
    lines += _growth_lines(result)
    lines += [
        "",
        f"  review page:   {base}/review   ({result.flagged:,} flagged reward(s) wait there, "
        f"{result.statuses.get('flagged', 0):,} of them from this program)",
        f"  finance token: {result.finance_token}   (shown once; log in with it)",
        f"  API reference: {base}/api/v1/openapi.json",
        f"  metrics:       {base}/metrics",
        f"  try:           curl -H 'Authorization: Bearer <finance token>' "
        f"'{base}/api/v1/rewards?program={result.program}&status=flagged'",
        "",
    ]
    out.write("\n".join(lines))
    out.flush()


def _reasons(reasons: list[dict[str, Any]]) -> str:
    top = sorted(reasons, key=lambda r: -abs(float(r.get("effect") or 0)))[:3]
    return ", ".join(f"{r['feature']} {'+' if float(r.get('effect') or 0) >= 0 else '-'}"
                     for r in top) or "-"


def _growth_lines(result: DemoResult) -> list[str]:
    g = result.growth
    if g is None:
        return []
    model = g.model or {}
    auc = model.get("auc_holdout")
    lines = [
        "",
        f"  growth: {g.events:,} customer events, {g.shares:,} shares; referral candidates "
        f"by {model.get('kind', 'no model')} over {model.get('trained_on', 0):,} customers"
        + (f" (holdout AUC {auc:.2f})" if isinstance(auc, float) else ""),
        "  top candidates              percentile  why",
    ]
    for c in g.candidates[:TOP_SHOWN]:
        who = f"{display_name(c['customer'])} ({c['customer']})"
        lines.append(f"  {who:<28} {c['percentile']:>9.2f}  {_reasons(c['reasons'])}")
    asks = ", ".join(f"{n:,} {s}" for s, n in sorted(g.asks.items(), key=lambda kv: -kv[1]))
    why = ", ".join(f"{n:,} {r}" for r, n in sorted(g.reasons.items(), key=lambda kv: -kv[1]))
    lines += [
        f"  asks: {asks or 'none'}" + (f" (not sent: {why})" if why else ""),
        f"  referral.ask webhooks: {len(g.deliveries):,} delivered to the demo's receiver, "
        f"signatures checked" + (f", {g.refused} refused" if g.refused else ""),
        "  funnel by channel       shared   clicks  signups  purchases",
    ]
    for row in g.funnel:
        name = row["channel"] or "(plain link)"
        lines.append(f"  {name:<20} {row['shared']:>9,} {row['clicks']:>8,} "
                     f"{row['signups']:>8,.0f} {row['purchases']:>10,.0f}")
    base, slug = result.url, result.program
    lines += [
        f"  share page:    {g.share_url}",
        f"  try:           curl -H 'Authorization: Bearer <finance token>' "
        f"'{base}/api/v1/reports/candidates?program={slug}&top=0.2'",
        f"                 ... '{base}/api/v1/asks?program={slug}', "
        f"'{base}/api/v1/reports/funnel?program={slug}&by=channel'",
    ]
    return lines


def _geo_lines(result: DemoResult) -> list[str]:
    if result.geo_dir is None:
        return []
    lines = [f"  (geo: demo databases written to {result.geo_dir}: the history's clicks carry "
             "countries and ASNs, the click farm's datacenter range reads as hosting; they are "
             "illustrative, real deployments point REFGUARD_GEOIP_DIR at GeoLite2 or DB-IP "
             "files)"]
    if not result.geo_served:
        lines.append("  (a server started without REFGUARD_GEOIP_DIR records live clicks "
                     "without geo: restart it with "
                     f"REFGUARD_GEOIP_DIR={result.geo_dir} refguard serve)")
    return lines


async def summarise(conn: asyncpg.Connection, scenario: Scenario, program_id: int
                    ) -> dict[str, Any]:
    """DemoResult's outcome fields: the program's rewards, credits and fraud flags, counted
    per planted pattern."""
    labels = {c.event_id: c.pattern for c in scenario.conversions}
    accounts = {a.external_id: a.pattern for a in scenario.accounts}
    statuses: Counter[str] = Counter()
    per_pattern: dict[str, Counter[str]] = defaultdict(Counter)
    for conv in scenario.conversions:
        per_pattern[conv.pattern]["conversions"] += 1
    for r in await conn.fetch(
            """SELECT c.event_id, r.status FROM rewards r
               JOIN conversions c ON c.program_id = r.program_id AND c.id = r.conversion_id
               WHERE r.program_id = $1""", program_id):
        statuses[r["status"]] += 1
        per_pattern[labels.get(r["event_id"], ORGANIC)][r["status"]] += 1
    for r in await conn.fetch(
            """SELECT c.event_id FROM conversions c
               WHERE c.program_id = $1 AND c.type IN ('signup', 'trial', 'purchase', 'renewal')
                 AND NOT EXISTS (SELECT 1 FROM credits cr WHERE cr.program_id = c.program_id
                                 AND cr.conversion_id = c.id)""", program_id):
        per_pattern[labels.get(r["event_id"], ORGANIC)]["uncredited"] += 1
    flags: Counter[str] = Counter()
    for r in await conn.fetch("SELECT kind, members::text AS members FROM fraud_flags "
                              "WHERE program_id = $1", program_id):
        flags[r["kind"]] += 1
        people = [m["id"] for m in json.loads(r["members"])
                  if m["type"] in ("referrer", "customer")]
        for pattern in {p for i in people
                        if (p := accounts.get(i) or scenario.customers.get(i)) is not None}:
            per_pattern[pattern]["flags"] += 1
    flagged = await conn.fetchval("SELECT count(*) FROM rewards WHERE status = 'flagged'")
    examples = {p: [a.external_id for a in scenario.accounts if a.pattern == p][:6]
                for p in PATTERNS}
    return {"statuses": dict(statuses), "flagged": flagged, "per_pattern": dict(per_pattern),
            "flags": dict(flags), "labels": labels, "accounts": accounts,
            "customers": dict(scenario.customers), "examples": examples}



async def summarise_growth(conn: asyncpg.Connection, scenario: Scenario, program_id: int, *,
                           url: str, secret_key: bytes, receiver: Receiver) -> Growth:
    """The growth step's outcome, read back through the functions the API answers with."""
    from tracker.asks import candidates, funnel  # (late: numpy and friends)
    from tracker.asks.queries import list_asks
    from tracker.asks.sharing import share_url

    top = await candidates.report(conn, program_id, 0.2)
    asks: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    after = 0
    while page := await list_asks(conn, program_id=program_id, status=None, after=after,
                                  limit=1000):
        for ask in page:
            asks[ask.status] += 1
            if ask.reason:
                reasons[ask.reason] += 1
        after = page[-1].id
    by_channel = await funnel.funnel_report(conn, program_id, by="channel")
    counts = await conn.fetchrow(
        """SELECT (SELECT count(*) FROM customer_events WHERE program_id = $1) AS events,
                  (SELECT count(*) FROM shares WHERE program_id = $1) AS shares""", program_id)
    best = next((c["customer"] for c in top["items"]), None)
    referrer = None if best is None else await conn.fetchval(
        "SELECT id FROM referrers WHERE program_id = $1 AND external_id = $2", program_id, best)
    if referrer is None:  # no candidate refers yet: the biggest organic referrer's page
        referrer = await conn.fetchval(
            "SELECT id FROM referrers WHERE program_id = $1 AND external_id = $2", program_id,
            scenario.organic[0].external_id)
    return Growth(
        model=top["model"], candidates=top["items"], asks=dict(asks), reasons=dict(reasons),
        funnel=by_channel["rows"], events=counts["events"], shares=counts["shares"],
        deliveries=receiver.asks(), refused=receiver.refused,
        share_url=share_url(secret_key, url, program_id, referrer))
