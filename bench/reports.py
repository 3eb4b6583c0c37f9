"""Reports benchmark (issue 16): every report (economics, breakdown, funnel by referrer,
channel and trigger, experiments, attribution per referrer, candidates) over 1M clicks and 100k
conversions, target under 2 s each, computed on request or served from the reports job's copy.

    .venv/bin/python -m bench.reports               # 1,000,000 clicks, 100,000 conversions
    .venv/bin/python -m bench.reports --scale 0.05  # a quick run
    .venv/bin/python -m bench.reports --keep DIR --previous OLD  # OLD: an earlier checkout

One embedded PostgreSQL in a temporary folder. The data is generated inside PostgreSQL (the
reports are measured, not the import, which bench.attribution measures): a program (time zone
Europe/Paris) with 5,000 referrers of power-law popularity (1,000 of them customers
themselves), one link each with a channel and a campaign, clicks over six months with
countries, devices, browsers, 2 % bots and 3 % duplicates; purchases (80 % USD, 20 % EUR), most
credited to the referrer of a stored click (touchpoints and credits as attribution writes
them), renewals 100 days later, refunds and chargebacks, signups; rewards on both sides in
every status, with earned, payout and clawback ledger entries; sent asks.

Each report is run `--repeat` times (default 3) as the API calls it (given the pool, so the
economics, breakdown and funnel run their independent reads a few at once), with and without
a window and filters; the figure is the median wall time, with the first (cold) run, and the
CPU seconds the database server (every backend) and this process spent, since the machines
are shared and noisy and CPU time is what a report costs wherever it runs. A bare count of
the program's clicks is the baseline measured in the same run. With `--previous OLD`, each
report is also timed as the checkout OLD computes it (its bench.reports, in a subprocess on
the same database), in turns with this one's, with the ratios. Then the reports job
(tracker.jobs.report_cache: every default view, as `serve` runs it) is timed, and the look-up
of each default view in its copy, which is what the API answers while the copy is fresh.
Prints a table and writes JSON to bench/results/reports-<timestamp>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg

from attribution.models import MODELS
from bench.results import save
from tracker import db
from tracker.asks.candidates import refresh as candidates_refresh
from tracker.asks.candidates import report as candidates_report
from tracker.asks.funnel import GROUPS, funnel_report
from tracker.finance.experiments import experiments_report
from tracker.jobs import EXPERIMENTS, FUNNEL, funnel_params, report_cache
from tracker.scoring.economics import (
    ATTRIBUTION,
    CACHE_MAX_AGE_S,
    CACHED_BREAKDOWNS,
    breakdown_params,
    breakdown_report,
    economics_report,
)
from tracker.scoring.queries import cached_report
from tracker.scoring.reports import attribution_report

TARGET_S = 2.0
SETTINGS = {"timezone": "Europe/Paris"}
START = datetime(2026, 1, 1, tzinfo=UTC)

# Every step is one statement; $1 = program id; {clicks} and {purchases} are formatted in.
GENERATE = [
    # Referrers: 'cust<k>' for the first 1,000 (customer advocates), 'r<k>' for the others.
    """INSERT INTO referrers (program_id, external_id)
       SELECT $1, CASE WHEN k <= 1000 THEN 'cust' || k ELSE 'r' || k END
       FROM generate_series(1, 5000) k""",
    """INSERT INTO links (program_id, referrer_id, code, destination, channel, campaign)
       SELECT $1, id, 'c' || id, 'https://shop.test/',
              (ARRAY['email', 'sms', 'whatsapp', 'x', NULL])[1 + id % 5],
              (ARRAY['spring', 'summer', NULL])[1 + id % 3]
       FROM referrers WHERE program_id = $1""",
    # Click i: every 15 s from START; a power-law referrer; a visitor per two clicks.
    """INSERT INTO clicks (program_id, click_id, ts, link_id, referrer_id, code, visitor_id,
                           country, ua_device, ua_os, ua_browser, is_bot, is_duplicate)
       SELECT $1, md5('c' || i)::uuid, '2026-01-01T00:00:00Z'::timestamptz + i * interval '15 s',
              l.id, l.referrer_id, l.code, 'v' || (i / 2),
              (ARRAY['US', 'DE', 'FR', 'GB', 'BR', 'IN', NULL])[1 + (i / 5) % 7],
              (ARRAY['desktop', 'mobile', 'tablet'])[1 + i % 3],
              (ARRAY['Windows', 'iOS', 'Android', 'Mac OS X'])[1 + i % 4],
              (ARRAY['Chrome', 'Safari', 'Firefox', 'Edge'])[1 + (i / 3) % 4],
              i % 50 = 0, i % 33 = 0
       FROM generate_series(1, {clicks}) i
       JOIN (SELECT id, referrer_id, code, row_number() OVER (ORDER BY id) - 1 AS n
             FROM links WHERE program_id = $1) l
         ON l.n = floor(5000 * power(((i::bigint * 7919) % 10007) / 10007.0, 3))::int""",
    # Purchase n: on click 7n (when it is a counted click) an hour later; 5 in 7 credited.
    """INSERT INTO conversions (program_id, event_id, type, customer_id, amount, currency,
                                occurred_at, body_hash, attributed_at, click_id, visitor_id)
       SELECT $1, 'p' || n, 'purchase', 'cust' || n, 500 + (n * 37) % 19500,
              CASE WHEN n % 5 = 0 THEN 'EUR' ELSE 'USD' END,
              '2026-01-01T00:00:00Z'::timestamptz + (7 * n) * interval '15 s' + interval '1 h',
              '\\x00', now(), md5('c' || (7 * n))::uuid, 'v' || (7 * n / 2)
       FROM generate_series(1, {purchases}) n""",
    """INSERT INTO touchpoints (program_id, conversion_id, position, referrer_id, click_id, ts,
                                via)
       SELECT $1, v.id, 0, c.referrer_id, c.click_id, c.ts, 'click'
       FROM conversions v JOIN clicks c ON c.program_id = v.program_id AND c.click_id = v.click_id
        AND c.ts = v.occurred_at - interval '1 h'
       WHERE v.program_id = $1 AND v.type = 'purchase'
         AND substr(v.event_id, 2)::int % 7 < 5""",
    """INSERT INTO credits (program_id, conversion_id, referrer_id, model, credit)
       SELECT $1, conversion_id, referrer_id, 'last_touch', 1 FROM touchpoints
       WHERE program_id = $1""",
    # Renewals 100 days later for one purchaser in four; refunds (half) and chargebacks.
    """INSERT INTO conversions (program_id, event_id, type, customer_id, amount, currency,
                                occurred_at, body_hash)
       SELECT $1, 'n' || substr(event_id, 2), 'renewal', customer_id, amount, currency,
              occurred_at + interval '100 days', '\\x00'
       FROM conversions WHERE program_id = $1 AND type = 'purchase'
         AND substr(event_id, 2)::int % 4 = 0""",
    """INSERT INTO conversions (program_id, event_id, type, customer_id, amount, currency,
                                occurred_at, body_hash, original_event_id)
       SELECT $1, 'x' || substr(event_id, 2),
              CASE WHEN substr(event_id, 2)::int % 30 = 1 THEN 'chargeback' ELSE 'refund' END,
              customer_id, amount / 2, currency, occurred_at + interval '10 days', '\\x00',
              event_id
       FROM conversions WHERE program_id = $1 AND type = 'purchase'
         AND substr(event_id, 2)::int % 12 = 1""",
    # Rewards: the referrer's on every credited purchase, the referee's on one in three.
    """INSERT INTO rewards (program_id, conversion_id, rule_index, referrer_id, beneficiary,
                            payee, amount, currency, credit, status, hold_until)
       SELECT $1, v.id, 0, cr.referrer_id, 'referrer', 'ref' || cr.referrer_id, 2000,
              v.currency, 1,
              CASE WHEN substr(v.event_id, 2)::int % 12 = 1 THEN 'reversed'
                   ELSE (ARRAY['approved', 'approved', 'approved', 'paid', 'paid', 'rejected',
                               'flagged', 'pending'])[1 + v.id % 8] END, now()
       FROM conversions v JOIN credits cr ON cr.program_id = v.program_id
                                         AND cr.conversion_id = v.id
       WHERE v.program_id = $1""",
    """INSERT INTO rewards (program_id, conversion_id, rule_index, referrer_id, beneficiary,
                            payee, amount, currency, credit, status, hold_until)
       SELECT $1, conversion_id, 1, referrer_id, 'referee', 'cust' || conversion_id, 500,
              currency, 1, status, now()
       FROM rewards WHERE program_id = $1 AND conversion_id % 3 = 0""",
    """INSERT INTO ledger_entries (program_id, payee, currency, amount, kind, reward_id, actor)
       SELECT $1, payee, currency, amount, 'earned', id, 'bench' FROM rewards
       WHERE program_id = $1 AND (status IN ('approved', 'paid')
                                  OR (status = 'reversed' AND id % 2 = 0))""",
    """INSERT INTO ledger_entries (program_id, payee, currency, amount, kind, reward_id, actor)
       SELECT $1, payee, currency, -amount, 'clawback', id, 'bench' FROM rewards
       WHERE program_id = $1 AND status = 'reversed' AND id % 2 = 0""",
    """INSERT INTO asks (program_id, customer_id, referrer_id, trigger_source, trigger_id,
                         trigger_type, occurred_at, deadline, status, sent_at)
       SELECT $1, external_id, id, 'event', id, (ARRAY['nps', 'milestone', 'review'])[1 + id % 3],
              '2026-02-01T00:00:00Z'::timestamptz + (id % 120) * interval '1 day',
              '2026-02-02T00:00:00Z'::timestamptz + (id % 120) * interval '1 day', 'sent',
              '2026-02-01T01:00:00Z'::timestamptz + (id % 120) * interval '1 day'
       FROM referrers WHERE program_id = $1 AND id % 2 = 0""",
    # An incentive experiment: every referrer in one of two variants (EXPERIMENT).
    """UPDATE referrers SET variant = (ARRAY['50/50', '75/25'])[1 + id % 2]
       WHERE program_id = $1""",
]
# The settings the experiments report is timed with: the two variants above.
EXPERIMENT = {**SETTINGS, "reward": {"currency": "USD", "variants": [
    {"name": "50/50", "weight": 1}, {"name": "75/25", "weight": 1}]}}

Report = Callable[[asyncpg.Pool, int], Awaitable[Any]]


def on_conn(run: Callable[[asyncpg.Connection, int], Awaitable[Any]]) -> Report:
    """A report that reads on one connection (as the API calls it)."""
    async def report(pool: asyncpg.Pool, pid: int) -> Any:
        async with pool.acquire() as conn:
            return await run(conn, pid)
    return report


def reports() -> dict[str, Report]:
    """Every report as the API calls it (given the pool: economics, breakdown and funnel run
    their reads a few at once), with and without a window and filters."""
    month = (datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 4, 1, tzinfo=UTC))
    out: dict[str, Report] = {
        "economics": lambda c, p: economics_report(c, p, SETTINGS),
        "economics month": lambda c, p: economics_report(c, p, SETTINGS, since=month[0],
                                                         until=month[1]),
        "economics EUR": lambda c, p: economics_report(c, p, SETTINGS, currency="EUR"),
    }
    for by in (["weekday"], ["hour"], ["country"], ["device"], ["os"], ["browser"],
               ["channel"], ["campaign"], ["referrer_kind"], ["trigger"], ["weekday", "hour"],
               ["channel", "referrer_kind"], ["country", "device"], ["trigger", "channel"]):
        def run(c: asyncpg.Pool, p: int, by: list[str] = by) -> Awaitable[dict[str, Any]]:
            return breakdown_report(c, p, SETTINGS, by)
        out["breakdown " + ",".join(by)] = run
    out["breakdown trigger,hour signups month"] = lambda c, p: breakdown_report(
        c, p, SETTINGS, ["trigger", "hour"], type_="signup", since=month[0], until=month[1])
    out["breakdown os,browser renewals"] = lambda c, p: breakdown_report(
        c, p, SETTINGS, ["os", "browser"], type_="renewal", min_visitors=1000)
    for group in GROUPS:
        def run_funnel(c: asyncpg.Pool, p: int, group: str = group
                       ) -> Awaitable[dict[str, Any]]:
            return funnel_report(c, p, by=group)
        out["funnel " + group] = run_funnel
    out["funnel channel month"] = lambda c, p: funnel_report(c, p, by="channel",
                                                             since=month[0], until=month[1])
    out["experiments"] = on_conn(lambda c, p: experiments_report(c, p, EXPERIMENT))
    out["attribution last_touch"] = on_conn(
        lambda c, p: attribution_report(c, p, ["last_touch"]))
    out["attribution every model"] = on_conn(lambda c, p: attribution_report(c, p, list(MODELS)))
    out["candidates"] = on_conn(lambda c, p: candidates_report(c, p, 0.2))
    return out


class Cpu:
    """CPU seconds of the database server (the postmaster, its live backends and the
    children it reaped: parallel workers) and of this process, so that figures taken on a
    loaded machine still say what a report costs."""

    def __init__(self, pgdata: Path) -> None:
        self.postmaster = int((pgdata / "postmaster.pid").read_text().split()[0])
        self.tick = os.sysconf("SC_CLK_TCK")

    def _server(self) -> float:
        total = 0
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:  # the process ended meanwhile
                continue
            pid, ppid = int(stat.parent.name), int(fields[1])
            if pid == self.postmaster:
                total += sum(int(f) for f in fields[11:15])  # own and reaped children's
            elif ppid == self.postmaster:
                total += int(fields[11]) + int(fields[12])
        return total / self.tick

    def now(self) -> tuple[float, float]:
        return self._server(), time.process_time()


async def measure(run: Callable[[], Awaitable[Any]], repeat: int, cpu: Cpu
                  ) -> dict[str, float]:
    """Median and first (cold) wall time of `repeat` runs, and the median CPU seconds of the
    server and of this process."""
    walls, db_cpu, py_cpu = [], [], []
    for _ in range(repeat):
        before = cpu.now()
        t = time.perf_counter()
        await run()
        walls.append(time.perf_counter() - t)
        after = cpu.now()
        db_cpu.append(after[0] - before[0])
        py_cpu.append(after[1] - before[1])
    return {"first": round(walls[0], 3), "median": round(statistics.median(walls), 3),
            "db_cpu": round(statistics.median(db_cpu), 2),
            "py_cpu": round(statistics.median(py_cpu), 2)}


# Runs in a subprocess against the same database: the reports of another checkout of refguard
# (`--previous`, e.g. the commit before a change), each on one connection as that code did.
# It reads a report's name per line and answers when it has run it once (an empty line for a
# name it does not have), so that the two are timed in turns under the same load.
PREVIOUS = """
import asyncio, sys
import asyncpg
from bench.reports import reports

async def main(uri):
    conn = await asyncpg.connect(uri)
    pid = await conn.fetchval("SELECT id FROM programs WHERE slug = 'bench'")
    known = reports()
    for line in sys.stdin:
        name = line.strip()
        if name in known:
            await known[name](conn, pid)
            print("ran", flush=True)
        else:
            print("", flush=True)

asyncio.run(main(sys.argv[1]))
"""


class Previous:
    """Another checkout's bench.reports, run in a subprocess on the same database."""

    def __init__(self, checkout: Path, uri: str) -> None:
        self.checkout, self.uri = checkout, uri

    async def __aenter__(self) -> Previous:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", PREVIOUS, self.uri, cwd=self.checkout,
            env={**os.environ, "PYTHONPATH": str(self.checkout)},
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        await self.proc.wait()

    async def run(self, name: str) -> bool:
        """Run the report `name` once; False when that checkout has none of the name."""
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        self.proc.stdin.write(name.encode() + b"\n")
        await self.proc.stdin.drain()
        answer = await self.proc.stdout.readline()
        if not answer:
            raise SystemExit(f"--previous {self.checkout}: its reports failed")
        return answer.strip() == b"ran"


async def main(args: argparse.Namespace) -> dict[str, Any]:
    tmp = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(
        prefix="refguard-bench-reports-"))
    reuse = (tmp / "generated").exists()
    server = db.embedded_server(tmp / "pg")
    n_clicks = int(1_000_000 * args.scale)
    n_purchases = int(76_000 * args.scale)
    timings: dict[str, dict[str, float]] = {}
    cached: dict[str, float] = {}
    before: dict[str, dict[str, float]] = {}
    try:
        conn = await asyncpg.connect(server.get_uri())
        await db.migrate(conn)
        pool = await db.create_pool(server.get_uri())
        cpu = Cpu(tmp / "pg")
        t = time.perf_counter()
        if not reuse:
            await generate(conn, n_clicks, n_purchases)
            (tmp / "generated").touch()
        gen_s = time.perf_counter() - t
        pid: int = await conn.fetchval("SELECT id FROM programs WHERE slug = 'bench'")
        counts = {name: await conn.fetchval(f"SELECT count(*) FROM {name}")
                  for name in ("clicks", "conversions", "credits", "rewards", "ledger_entries")}
        print(f"{'reused' if reuse else 'generated'} {counts} in {gen_s:.1f}s; load average "
              f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
        # The candidates report reads what their job fitted: fit once, as the job does.
        t = time.perf_counter()
        try:
            await candidates_refresh(conn, pid)
        except ValueError as exc:  # a fit the data defeated: the report then says so
            print(f"  candidates not fitted: {exc}")
        fit_s = round(time.perf_counter() - t, 3)
        print(f"  {'candidates fit (its job)':<40} {fit_s:>13.3f}s")
        async with contextlib.AsyncExitStack() as stack:
            before_ = (await stack.enter_async_context(
                Previous(Path(args.previous), server.get_uri())) if args.previous else None)
            for name, report in reports().items():
                if args.only and args.only not in name:
                    continue
                timings[name] = now = await measure(functools.partial(report, pool, pid),
                                                    args.repeat, cpu)
                print(f"  {name:<40} median {now['median']:>6.3f}s  first "
                      f"{now['first']:>6.3f}s  cpu db {now['db_cpu']:>5.2f}s py "
                      f"{now['py_cpu']:>5.2f}s", flush=True)
                if before_ is not None and await before_.run(name):
                    # Turns under the same load: previous, now, previous, ...
                    then = await measure(functools.partial(before_.run, name), args.repeat,
                                         cpu)
                    before[name] = then
                    print(f"    previous{'':<32} median {then['median']:>6.3f}s  first "
                          f"{then['first']:>6.3f}s  cpu db {then['db_cpu']:>5.2f}s: "
                          f"x{then['median'] / now['median']:.1f} the time, "
                          f"x{then['db_cpu'] / max(now['db_cpu'], 0.01):.1f} the CPU",
                          flush=True)
        # The baseline, measured in the same run: a bare count of the program's clicks (one
        # scan of what every breakdown reads), so that figures compare across loaded machines.
        base = await measure(lambda: conn.fetchval(
            "SELECT count(*) FROM clicks WHERE program_id = $1", pid), args.repeat, cpu)
        baseline = base["median"]
        print(f"  {'baseline: count(*) of the clicks':<40} median {baseline:>6.3f}s  "
              f"{'':>14}cpu db {base['db_cpu']:>5.2f}s")
        t = time.perf_counter()
        await report_cache(conn)
        job_s = round(time.perf_counter() - t, 3)
        print(f"  {'reports job (all default views)':<40} {job_s:>13.3f}s")
        for name, params in (("economics", ""),
                             *(("breakdown", breakdown_params(by)) for by in CACHED_BREAKDOWNS),
                             *((FUNNEL[0], funnel_params(by)) for by in GROUPS),
                             EXPERIMENTS, ATTRIBUTION):
            runs = []
            for _ in range(args.repeat):
                t = time.perf_counter()
                found = await cached_report(conn, pid, name, params, CACHE_MAX_AGE_S)
                runs.append(time.perf_counter() - t)
                assert found is not None
            cached[f"{name} {params}".strip()] = round(statistics.median(runs), 4)
        print(f"  default views from the cache: slowest {max(cached.values()):.4f}s")
        await pool.close()
        await conn.close()
    finally:
        server.cleanup()
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    return {"benchmark": "reports", "at": datetime.now(UTC).isoformat(), "scale": args.scale,
            "rows": counts, "generate_seconds": round(gen_s, 1), "target_seconds": TARGET_S,
            "load_average": os.getloadavg()[0], "baseline_count_seconds": baseline,
            "candidates_fit_seconds": fit_s, "reports": timings,
            "ratio_to_baseline": {n: round(t["median"] / baseline, 1)
                                  for n, t in timings.items()},
            "previous": before,
            "speedup_over_previous": {n: round(t["median"] / timings[n]["median"], 2)
                                      for n, t in before.items()},
            "job_seconds": job_s, "cached_seconds": cached}


async def generate(conn: asyncpg.Connection, n_clicks: int, n_purchases: int) -> None:
    """The program and its data (GENERATE), then ANALYZE."""
    pid: int = await conn.fetchval(
        """INSERT INTO programs (slug, name, destination_domains, settings)
           VALUES ('bench', 'Bench', '{shop.test}', '{"timezone": "Europe/Paris"}')
           RETURNING id""")
    for m in range(8):
        await conn.execute("SELECT refguard_ensure_click_partition($1)",
                           datetime(2026, 1 + m, 1, tzinfo=UTC))
    for sql in GENERATE:
        await conn.execute(sql.format(clicks=n_clicks, purchases=n_purchases), pid)
    await conn.execute("ANALYZE")


def report(result: dict[str, Any]) -> None:
    worst = max(result["reports"].items(), key=lambda kv: kv[1]["median"])
    over = [n for n, t in result["reports"].items() if t["median"] >= TARGET_S]
    print(f"\n{len(result['reports'])} reports over {result['rows']['clicks']:,} clicks and "
          f"{result['rows']['conversions']:,} conversions; slowest: {worst[0]} "
          f"{worst[1]['median']:.3f}s (median); "
          + (f"computed live over the {TARGET_S} s target: {', '.join(over)}" if over else
             f"all under the {TARGET_S} s target computed live"))
    print(f"baseline (count of the clicks) {result['baseline_count_seconds']:.3f}s; the reports "
          f"job computes every default view in {result['job_seconds']:.1f}s; served from its "
          f"copy, the slowest takes {max(result['cached_seconds'].values()):.4f}s")


def cli() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.reports", description=__doc__)
    parser.add_argument("--scale", type=float, default=1.0,
                        help="fraction of 1,000,000 clicks / 100,000 conversions (default 1)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each report (default 3)")
    parser.add_argument("--keep", metavar="DIR",
                        help="keep the database in DIR and reuse it on the next run (the data "
                             "is generated once; --scale then has no effect)")
    parser.add_argument("--only", metavar="TEXT", help="only the reports whose name has TEXT")
    parser.add_argument("--previous", metavar="CHECKOUT",
                        help="also time the same reports as another checkout of refguard "
                             "computes them (e.g. a worktree of the commit before a change), "
                             "on the same database in the same run, and print the speed-up")
    args = parser.parse_args()
    result = asyncio.run(main(args))
    report(result)
    save("reports", result)


if __name__ == "__main__":
    cli()
