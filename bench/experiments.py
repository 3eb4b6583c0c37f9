"""Incentive experiments benchmark: the test's false positive rate and power, and the report's
time on a large program.

    .venv/bin/python -m bench.experiments                 # everything (about a minute of CPU
                                                          #   for the rates, then the report)
    .venv/bin/python -m bench.experiments --no-report     # the rates only (no database)
    .venv/bin/python -m bench.experiments --scale 0.1     # a smaller program for the report

1. False positive rate: many seeded experiments without a real difference (every arm converts
   at the same rate), each judged by `tracker.finance.experiments.significance` exactly as the
   report judges it (Fisher's exact test, Holm's correction over pairs, level 0.05). Printed:
   the family-wise error (some comparison called significant) and how often a winner is
   declared, each with a 95% interval for the measured rate. The stated level bounds both.
2. Power: the same with a real difference, how often the better arm is declared the winner.
3. The report (GET /api/v1/reports/experiments' query and statistics) over a program of
   `--scale` x (1,000,000 clicks, 100,000 referred conversions, 50,000 referrers in two
   variants) in an embedded PostgreSQL, with refunds and rewards: the time of one report
   (target under 2 s, like every report).

Prints a table and writes JSON to bench/results/experiments-<timestamp>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import numpy as np
from scipy import stats

from bench.results import save
from tracker import db
from tracker.finance.experiments import LEVEL, experiments_report, significance


def _interval(k: int, n: int) -> list[float]:
    ci = stats.binomtest(k, n).proportion_ci(method="exact")
    return [round(float(ci.low), 4), round(float(ci.high), 4)]


def rates(arms: int, referrers: int, *, base: float, lift: float, seeds: int, seed: int
          ) -> dict[str, Any]:
    """Seeded experiments: arm 0 converts at base + lift, the others at base."""
    rng = np.random.default_rng(seed)
    p = np.full(arms, base)
    p[0] += lift
    errors = wins = right = 0
    t = time.perf_counter()
    for _ in range(seeds):
        converted = rng.binomial(referrers, p)
        verdict = significance([(f"v{i}", int(k), referrers) for i, k in enumerate(converted)])
        errors += any(c.significant for c in verdict.comparisons)
        wins += verdict.winner is not None
        right += verdict.winner == "v0"
    return {"arms": arms, "referrers_per_arm": referrers, "base_rate": base, "lift": lift,
            "seeds": seeds, "any_significant": round(errors / seeds, 4),
            "any_significant_ci": _interval(errors, seeds),
            "winner_declared": round(wins / seeds, 4),
            "winner_declared_ci": _interval(wins, seeds),
            "right_winner": round(right / seeds, 4),
            "seconds": round(time.perf_counter() - t, 1)}


async def build(conn: asyncpg.Connection, scale: float, seed: int = 7
                ) -> tuple[int, dict[str, int]]:
    """A program with two variants over generated referrers, clicks, referred purchases (some
    refunded), credits and rewards (most approved, some flagged or reversed)."""
    rng = np.random.default_rng(seed)
    n_refs, n_clicks, n_conv = int(50_000 * scale), int(1_000_000 * scale), int(100_000 * scale)
    rule = [{"beneficiary": "referrer", "on": "purchase", "flat": 2000}]
    settings = {"reward": {"currency": "USD", "rules": rule, "variants": [
        {"name": "50/50", "weight": 1, "rules": rule},
        {"name": "75/25", "weight": 1, "rules": rule}]}}
    pid: int = await conn.fetchval(
        "INSERT INTO programs (slug, name, destination_domains, settings) "
        "VALUES ('bench', 'Bench', '{acme.test}', $1::jsonb) RETURNING id", json.dumps(settings))
    variants = rng.choice(["50/50", "75/25"], size=n_refs)
    await conn.copy_records_to_table(
        "referrers", columns=["program_id", "external_id", "variant"],
        records=[(pid, f"r{i}", str(v)) for i, v in enumerate(variants)])
    ids = [r["id"] for r in await conn.fetch(
        "SELECT id FROM referrers WHERE program_id = $1 ORDER BY id", pid)]
    await conn.copy_records_to_table(
        "links", columns=["program_id", "referrer_id", "code", "destination"],
        records=[(pid, rid, f"c{i}", "https://acme.test/") for i, rid in enumerate(ids)])
    links = {r["referrer_id"]: (r["id"], r["code"]) for r in await conn.fetch(
        "SELECT id, referrer_id, code FROM links WHERE program_id = $1", pid)}
    # Power-law popularity: a few referrers bring most clicks and customers.
    weights = 1 / np.arange(1, n_refs + 1) ** 1.1
    weights /= weights.sum()
    start = datetime(2026, 6, 1, tzinfo=UTC)
    await conn.execute("SELECT refguard_ensure_click_partition($1)", start)
    await conn.execute("SELECT refguard_ensure_click_partition($1)", start + timedelta(days=31))
    who = rng.choice(n_refs, size=n_clicks, p=weights)
    secs = rng.uniform(0, 50 * 86400, size=n_clicks)
    await conn.copy_records_to_table(
        "clicks", columns=["program_id", "click_id", "ts", "link_id", "referrer_id", "code",
                           "is_bot", "is_duplicate"],
        records=[(pid, uuid.uuid4(), start + timedelta(seconds=float(s)),
                  links[ids[w]][0], ids[w], links[ids[w]][1], bool(i % 50 == 0),
                  bool(i % 20 == 0)) for i, (w, s) in enumerate(zip(who, secs, strict=True))])
    buyers = rng.choice(n_refs, size=n_conv, p=weights)
    currencies = rng.choice(["USD", "EUR"], size=n_conv, p=[0.8, 0.2])
    amounts = rng.integers(1000, 20000, size=n_conv)
    await conn.copy_records_to_table(
        "conversions", columns=["program_id", "event_id", "type", "customer_id", "amount",
                                "currency", "occurred_at", "body_hash", "attributed_at"],
        records=[(pid, f"o{i}", "purchase", f"k{i}", int(a), str(c), start, b"\x00", start)
                 for i, (a, c) in enumerate(zip(amounts, currencies, strict=True))])
    conv = {r["event_id"]: r["id"] for r in await conn.fetch(
        "SELECT id, event_id FROM conversions WHERE program_id = $1", pid)}
    await conn.copy_records_to_table(
        "credits", columns=["program_id", "conversion_id", "referrer_id", "model", "credit"],
        records=[(pid, conv[f"o{i}"], ids[b], "last_click", 1.0) for i, b in enumerate(buyers)])
    refunds = range(0, n_conv, 25)
    await conn.copy_records_to_table(
        "conversions", columns=["program_id", "event_id", "type", "customer_id", "amount",
                                "currency", "occurred_at", "body_hash", "original_event_id"],
        records=[(pid, f"x{i}", "refund", f"k{i}", int(amounts[i]) // 2, str(currencies[i]),
                  start, b"\x00", f"o{i}") for i in refunds])
    statuses = rng.choice(["approved", "paid", "flagged", "rejected", "reversed"], size=n_conv,
                          p=[0.6, 0.25, 0.05, 0.05, 0.05])
    await conn.copy_records_to_table(
        "rewards", columns=["program_id", "conversion_id", "rule_index", "referrer_id",
                            "beneficiary", "payee", "amount", "currency", "credit", "status",
                            "hold_until", "variant"],
        records=[(pid, conv[f"o{i}"], 0, ids[b], "referrer", f"r{b}", 2000, "USD", 1.0,
                  str(s), start, str(variants[b]))
                 for i, (b, s) in enumerate(zip(buyers, statuses, strict=True))])
    await conn.execute("ANALYZE")
    return pid, {"referrers": n_refs, "clicks": n_clicks, "conversions": n_conv,
                 "refunds": len(refunds)}


async def time_report(scale: float) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="refguard-bench-expt-"))
    server = db.embedded_server(tmp / "pg")
    try:
        conn = await asyncpg.connect(server.get_uri())
        await db.migrate(conn)
        t = time.perf_counter()
        pid, sizes = await build(conn, scale)
        built = time.perf_counter() - t
        settings = json.loads(await conn.fetchval(
            "SELECT settings::text FROM programs WHERE id = $1", pid))
        times = []
        for _ in range(3):
            t = time.perf_counter()
            report = await experiments_report(conn, pid, settings)
            times.append(time.perf_counter() - t)
        await conn.close()
    finally:
        server.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)
    return {"scale": scale, **sizes, "build_seconds": round(built, 1),
            "report_seconds": [round(s, 3) for s in times], "target_seconds": 2,
            "winner": report["winner"],
            "conversion_rates": {v["name"]: v["conversion_rate"] for v in report["variants"]}}


def main(args: argparse.Namespace) -> dict[str, Any]:
    result: dict[str, Any] = {"benchmark": "experiments", "at": datetime.now(UTC).isoformat(),
                              "level": LEVEL, "false_positives": [], "power": []}
    for arms, referrers in ((2, 200), (2, 1000), (3, 300), (4, 300)):
        seeds = args.seeds if arms == 2 else max(1, args.seeds // (arms * (arms - 1) // 2))
        row = rates(arms, referrers, base=0.15, lift=0.0, seeds=seeds,
                    seed=args.seed + arms + referrers)
        result["false_positives"].append(row)
        print(f"no difference  {arms} arms x {referrers:>5} referrers, {seeds:>6} runs: some "
              f"comparison significant {row['any_significant']:.4f} "
              f"{row['any_significant_ci']}, winner declared {row['winner_declared']:.4f} "
              f"{row['winner_declared_ci']}  (level {LEVEL})  {row['seconds']}s")
    for arms, referrers, lift in ((2, 500, 0.05), (2, 1000, 0.05), (3, 500, 0.08)):
        row = rates(arms, referrers, base=0.15, lift=lift, seeds=max(1, args.seeds // 5),
                    seed=args.seed + 1)
        result["power"].append(row)
        print(f"lift {lift:.2f}     {arms} arms x {referrers:>5} referrers, {row['seeds']:>6} "
              f"runs: the better arm declared the winner {row['right_winner']:.4f}")
    if args.report:
        row = asyncio.run(time_report(args.scale))
        result["report"] = row
        print(f"report over {row['referrers']:,} referrers, {row['clicks']:,} clicks, "
              f"{row['conversions']:,} conversions: {row['report_seconds']} s "
              f"(target under 2 s; built in {row['build_seconds']} s)")
    return result


def cli() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.experiments", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=10_000,
                        help="experiments per configuration without a difference (default "
                             "10,000; fewer for more arms, as each has more comparisons)")
    parser.add_argument("--seed", type=int, default=20261206)
    parser.add_argument("--scale", type=float, default=1.0,
                        help="fraction of the report's program (1,000,000 clicks, 100,000 "
                             "conversions, 50,000 referrers)")
    parser.add_argument("--no-report", dest="report", action="store_false",
                        help="only the rates (no database)")
    result = main(parser.parse_args())
    save("experiments", result)


if __name__ == "__main__":
    cli()
