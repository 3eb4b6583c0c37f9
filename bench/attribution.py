"""Attribution benchmark: import speed, and fitting/applying every model over many journeys.

    .venv/bin/python -m bench.attribution            # 1,000,000 clicks, 200,000 conversions
    .venv/bin/python -m bench.attribution --scale 0.05   # a quick run

One embedded PostgreSQL in a temporary folder; a program with 5,000 referrers (power-law
popularity, `--referrers`); generated NDJSON files; then, timed in this process:

- import of the clicks (`tracker.intake.importer.import_clicks`: parse, enrich like live
  clicks, store idempotently) against a baseline measured in the same run: a bare COPY of the
  same number of ready-made rows into `clicks` (no parsing, no enrichment, no idempotency);
- import of the conversions, and `attribute_pending` (identity, touchpoints, credits) end to
  end under every model in turn (everything re-attributed each time): seconds, conversions per
  second, and the CPU seconds of this process and of its PostgreSQL backend; with `--before`,
  also the path as it was before the named clicks were found by their id's millisecond (an
  array comparison against every click), for the ratio in the same run;
- for each model, fitting (Markov, Shapley) and applying it to every converting journey, on the
  journeys as stored (converting ones from touchpoints, lost ones from visitors who never
  converted). Targets: import >= 40,000 clicks/s; every model under 60 s.

With `--journeys N` only the models are timed, on N journeys generated in memory with the same
distribution (1-5 touches on power-law referrers, 45% converting; no PostgreSQL), with the peak
resident memory of the process: the scale of a large program,

    .venv/bin/python -m bench.attribution --journeys 2000000 --referrers 20000

Target: every model under 60 s and the process under 4 GiB.

With `--import-only` only the clicks import is timed (seconds to iterate on it), each side in a
process of its own with its own PostgreSQL: the rate, the ratio to the bare COPY, and the CPU
split between Python (this process and its worker processes) and the PostgreSQL backend; with
`--against REF` also the importer as it was at git revision REF (its tracker, geo, fraud and
attribution packages extracted to a temporary folder), on the same file in the same run:

    .venv/bin/python -m bench.attribution --import-only --scale 0.2 --against main

Prints a table and writes JSON to bench/results/attribution-<timestamp>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg

from attribution.models import HEURISTIC_MODELS, MODELS, Journey, Touch, heuristic_credits
from bench.results import save
from geo.reader import GeoReader
from tracker import db
from tracker.clicks.enrich import COLUMNS, Enricher
from tracker.intake.importer import import_clicks, import_conversions, import_workers
from tracker.scoring import credits as attributing
from tracker.scoring import queries
from tracker.scoring.credits import attribute_pending, fit, load_journeys

UAS = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    f"Chrome/{v}.0.0.0 Safari/537.36" for v in range(110, 132)
] + [
    f"Mozilla/5.0 (iPhone; CPU iPhone OS 17_{v} like Mac OS X) AppleWebKit/605.1.15 (KHTML, "
    f"like Gecko) Version/17.{v} Mobile/15E148 Safari/604.1" for v in range(6)
]


def generate(folder: Path, n_clicks: int, n_conversions: int, n_referrers: int,
             *, seed: int = 7, first_visitor: int = 0, name: str = "") -> tuple[Path, Path]:
    """NDJSON files: visitors with 1-5 clicks on power-law referrers; some visitors convert.

    Visitors are numbered from `first_visitor`, so a second batch has ids of its own."""
    rng = random.Random(seed)
    weights = [1 / (i + 1) ** 1.1 for i in range(n_referrers)]
    start = datetime(2026, 6, 1, tzinfo=UTC)
    clicks_path = folder / f"clicks{name}.ndjson"
    conv_path = folder / f"conversions{name}.ndjson"
    converting_visitors = n_conversions
    made = 0
    visitor = first_visitor
    with clicks_path.open("w") as clicks, conv_path.open("w") as convs:
        while made < n_clicks:
            visitor += 1
            k = min(rng.choice((1, 1, 1, 2, 2, 3, 4, 5)), n_clicks - made)
            refs = rng.choices(range(n_referrers), weights=weights, k=k)
            t = start + timedelta(seconds=rng.uniform(0, 60 * 86400))
            ip = ".".join(str(x) for x in (rng.randint(1, 223), rng.randint(0, 255),
                                           rng.randint(0, 255), visitor % 250))
            ua = rng.choice(UAS)
            last_cid = None
            for ref in refs:
                t += timedelta(hours=rng.uniform(0.1, 72))
                last_cid = (f"{int(t.timestamp() * 1000):012x}"[:8] + "-"
                            + f"{int(t.timestamp() * 1000):012x}"[8:] + "-7000-8000-"
                            + f"{visitor:06x}{made % 1_000_000:06x}")
                clicks.write(json.dumps({
                    "ts": t.isoformat(), "code": f"c{ref}", "ip": ip, "user_agent": ua,
                    "accept_language": "en-US,en;q=0.9", "visitor_id": f"v{visitor}",
                    "click_id": last_cid}) + "\n")
                made += 1
            if converting_visitors > 0 and rng.random() < 0.45:
                converting_visitors -= 1
                convs.write(json.dumps({
                    "program": "bench", "event_id": f"e{visitor}", "type": "purchase",
                    "customer_id": f"cust{visitor}", "amount": rng.randint(500, 20000),
                    "currency": "USD", "occurred_at": (t + timedelta(hours=1)).isoformat(),
                    "click_id": last_cid}) + "\n")
    return clicks_path, conv_path


def synthetic_journeys(n_journeys: int, n_referrers: int, *, seed: int = 7
                       ) -> tuple[list[Journey], list[tuple[list[Touch], float]]]:
    """Journeys as `generate` draws visitors (1-5 touches on power-law referrers, 45% convert),
    in memory: every journey, and the touches and conversion time of the converting ones."""
    rng = random.Random(seed)
    cum = list(itertools.accumulate(1 / (i + 1) ** 1.1 for i in range(n_referrers)))
    population = range(n_referrers)
    journeys: list[Journey] = []
    converting: list[tuple[list[Touch], float]] = []
    start = datetime(2026, 6, 1, tzinfo=UTC).timestamp()
    for _ in range(n_journeys):
        k = rng.choice((1, 1, 1, 2, 2, 3, 4, 5))
        refs = tuple(rng.choices(population, cum_weights=cum, k=k))
        if rng.random() < 0.45:
            journeys.append(Journey(refs, conversions=1))
            t = start + rng.uniform(0, 60 * 86400)
            touches = []
            for ref in refs:
                t += rng.uniform(0.1, 72) * 3600
                touches.append(Touch(ref, t))
            converting.append((touches, t + 3600))
        else:
            journeys.append(Journey(refs, lost=1))
    return journeys, converting


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def models_only(args: argparse.Namespace) -> dict[str, Any]:
    t = time.perf_counter()
    journeys, converting = synthetic_journeys(args.journeys, args.referrers)
    gen_s = time.perf_counter() - t
    print(f"generated {len(journeys):,} journeys ({len(converting):,} converting) over "
          f"{args.referrers:,} referrers in {gen_s:.1f}s; peak RSS {peak_rss_mib():,.0f} MiB")
    models: dict[str, tuple[float, float]] = {}
    peaks: dict[str, float] = {}
    for model in args.models:  # one at a time, to note the peak after each
        models.update(time_models(journeys, converting, (model,)))
        peaks[model] = round(peak_rss_mib())
        print(f"  {model:<15} fit + apply {models[model][0]:>7.2f}s (CPU "
              f"{models[model][1]:.2f}s)  peak RSS {peaks[model]:,} MiB", flush=True)
    return {
        "benchmark": "attribution-models", "at": datetime.now(UTC).isoformat(),
        "referrers": args.referrers,
        "journeys": {"total": len(journeys), "converting": len(converting),
                     "generate_seconds": round(gen_s, 2)},
        "models_seconds": {m: round(s, 2) for m, (s, _) in models.items()},
        "models_cpu_seconds": {m: round(c, 2) for m, (_, c) in models.items()},
        "peak_rss_mib_after": peaks, "peak_rss_mib": round(peak_rss_mib()),
        "load_average": os.getloadavg(),
        "model_target_seconds": 60, "memory_target_mib": 4096,
    }


async def seed(conn: asyncpg.Connection, n_referrers: int) -> None:
    pid = await conn.fetchval(
        """INSERT INTO programs (slug, name, destination_domains, settings)
           VALUES ('bench', 'Bench', '{shop.test}', '{"attribution_model": "last_touch",
           "attribution_window_days": 30}') RETURNING id""")
    await conn.copy_records_to_table(
        "referrers", records=[(pid, f"r{i}") for i in range(n_referrers)],
        columns=("program_id", "external_id"))
    await conn.execute(
        """INSERT INTO links (program_id, referrer_id, code, destination)
           SELECT program_id, id, 'c' || substr(external_id, 2), 'https://shop.test/'
           FROM referrers WHERE program_id = $1""", pid)


async def baseline_copy(conn: asyncpg.Connection, n: int) -> float:
    """Seconds to COPY n ready-made click rows (no parse, no enrichment), then removed."""
    pid, link, ref = await conn.fetchrow("SELECT program_id, id, referrer_id FROM links LIMIT 1")
    base = datetime(2026, 6, 15, tzinfo=UTC)
    rows = []
    for i in range(n):
        row: dict[str, Any] = dict.fromkeys(COLUMNS)
        row.update(program_id=pid, click_id=f"01900000-0000-7000-9000-{i:012x}",
                   ts=base + timedelta(microseconds=i), link_id=link, referrer_id=ref,
                   code="c0", new_visitor=False, is_bot=False, is_duplicate=False,
                   source="baseline", is_anonymous=False, is_hosting=False,
                   awaiting_signals=False)
        rows.append(tuple(row[c] for c in COLUMNS))
    await conn.execute("SELECT refguard_ensure_click_partition($1)", base)
    started = time.perf_counter()
    for i in range(0, n, 5000):
        await conn.copy_records_to_table("clicks", records=rows[i:i + 5000], columns=COLUMNS)
    elapsed = time.perf_counter() - started
    await conn.execute("DELETE FROM clicks WHERE source = 'baseline'")
    return elapsed


TARGET_IMPORT = 40_000  # clicks a second, enriched (issue 17)


def import_side(clicks_file: Path, n_refs: int, workers: int = 0) -> dict[str, Any]:
    """`--import-only`, one side (run in a process of its own): a fresh PostgreSQL, the bare
    COPY baseline, then the import of `clicks_file` as `refguard import` runs it (or with
    `workers` worker processes)."""
    return asyncio.run(_import_side(clicks_file, n_refs, workers))


async def _import_side(clicks_file: Path, n_refs: int, workers: int) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="refguard-bench-import-"))
    server = db.embedded_server(tmp / "pg")
    try:
        conn = await asyncpg.connect(server.get_uri())
        await db.migrate(conn)
        await seed(conn, n_refs)
        enricher = Enricher(b"b" * 32, (), geo=GeoReader(None))
        n = sum(1 for _ in clicks_file.open("rb"))
        base_rate = min(n, 200_000) / await baseline_copy(conn, min(n, 200_000))
        backend = await conn.fetchval("SELECT pg_backend_pid()")
        workers = workers or import_workers(clicks_file)
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        wall, cpu, db_cpu = (time.perf_counter(), time.process_time(),
                             backend_cpu_seconds(backend))
        result = await import_clicks(conn, clicks_file, enricher, workers=workers)
        wall, cpu, db_cpu = (time.perf_counter() - wall, time.process_time() - cpu,
                             backend_cpu_seconds(backend) - db_cpu)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        workers_cpu = (after.ru_utime + after.ru_stime
                       - children.ru_utime - children.ru_stime)
        await conn.close()
    finally:
        server.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)
    return {"lines": result.read, "stored": result.stored, "bad": len(result.bad),
            "workers": workers, "seconds": round(wall, 2),
            "per_second": round(result.read / wall), "baseline_copy_per_second": round(base_rate),
            "ratio_to_baseline": round(result.read / wall / base_rate, 3),
            "python_cpu_us_per_click": round((cpu + workers_cpu) / result.read * 1e6, 1),
            "postgres_cpu_us_per_click": round(db_cpu / result.read * 1e6, 1)}


def _run_side(clicks_file: Path, n_refs: int, library: Path | None, workers: int = 0
              ) -> dict[str, Any]:
    """`import_side` in a child process; with `library`, its packages come first."""
    root = Path(__file__).resolve().parent.parent
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(p) for p in (library, root) if p] + [env.get("PYTHONPATH", "")])
    code = ("import json, sys, tracker; from pathlib import Path; from bench.attribution import "
            "import_side; print(tracker.__file__, file=sys.stderr); "
            "print(json.dumps(import_side(Path(sys.argv[1]), *map(int, sys.argv[2:]))))")
    # (`-c` puts the working directory first on the path: the library's, when there is one.)
    out = subprocess.run([sys.executable, "-c", code, str(clicks_file), str(n_refs),
                          str(workers)], env=env, cwd=library or root, capture_output=True,
                         text=True, check=True)
    if library is not None and str(library) not in out.stderr:
        raise RuntimeError(f"the 'before' side did not import its tracker: {out.stderr}")
    side: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return side


def import_only(args: argparse.Namespace) -> dict[str, Any]:
    """`--import-only`: the clicks import alone, now and (with `--against`) at a revision."""
    tmp = Path(tempfile.mkdtemp(prefix="refguard-bench-import-"))
    try:
        n_clicks = int(1_000_000 * args.scale)
        n_refs = max(100, int(args.referrers * min(1.0, args.scale * 5)))
        clicks_file, _ = generate(tmp, n_clicks, 0, n_refs)
        sides: dict[str, Any] = {}
        if args.against:
            library = tmp / "before"
            library.mkdir()
            archive = subprocess.run(
                ["git", "archive", args.against, "tracker", "geo", "fraud", "attribution"],
                cwd=Path(__file__).resolve().parent.parent, capture_output=True, check=True)
            subprocess.run(["tar", "-x", "-C", str(library)], input=archive.stdout, check=True)
            sides["before"] = _run_side(clicks_file, n_refs, library)
        sides["now"] = _run_side(clicks_file, n_refs, None, args.workers)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"benchmark": "attribution-import", "at": datetime.now(UTC).isoformat(),
            "scale": args.scale, "against": args.against, "cpus": os.cpu_count(),
            "load_average": os.getloadavg(), "target_per_second": TARGET_IMPORT, **sides}


def report_import(result: dict[str, Any]) -> None:
    for name in ("before", "now"):
        side = result.get(name)
        if side is None:
            continue
        print(f"{name:<7} {side['lines']:>9,} clicks {side['seconds']:>6.1f}s "
              f"{side['per_second']:>7,}/s ({side['workers']} worker process(es)); bare COPY "
              f"{side['baseline_copy_per_second']:,}/s, ratio {side['ratio_to_baseline']}; "
              f"CPU a click: Python {side['python_cpu_us_per_click']} us, PostgreSQL "
              f"{side['postgres_cpu_us_per_click']} us")
    if "before" in result:
        print(f"now / before: {result['now']['per_second'] / result['before']['per_second']:.2f}"
              " (rate)")
    print(f"target >= {TARGET_IMPORT:,}/s: "
          f"{'ok' if result['now']['per_second'] >= TARGET_IMPORT else 'missed'}; load average "
          f"{', '.join(f'{x:.1f}' for x in result['load_average'])} on {result['cpus']} CPUs")


def time_models(journeys: list[Any], converting: list[tuple[list[Touch], float]],
                models: tuple[str, ...] = MODELS) -> dict[str, tuple[float, float]]:
    """Per model, the wall and CPU seconds of fitting it and crediting every converting
    journey."""
    out: dict[str, tuple[float, float]] = {}
    for model in models:
        started, cpu = time.perf_counter(), time.process_time()
        if model in HEURISTIC_MODELS:
            for touches, at in converting:
                heuristic_credits(model, touches, at)
        else:
            fitted = fit(model, journeys)
            for touches, _at in converting:
                fitted.credits([t.referrer for t in touches])
        out[model] = (time.perf_counter() - started, time.process_time() - cpu)
    return out


def backend_cpu_seconds(pid: int) -> float:
    """User plus system CPU seconds of a local process (the PostgreSQL backend) so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _click_visitors_before(conn: asyncpg.Connection, program_id: int,
                                 named: list[tuple[str, datetime | None]]
                                 ) -> dict[str, str | None]:
    """The named-click query before this change: `click_id = ANY($2)` compares every click of
    the program with every id of the batch (no index on click_id alone)."""
    return {r["click_id"]: r["visitor_id"] for r in await conn.fetch(
        """SELECT click_id::text AS click_id, visitor_id FROM clicks
           WHERE program_id = $1 AND click_id = ANY($2::uuid[])""",
        program_id, [cid for cid, _ in named])}


async def attribute_as(conn: asyncpg.Connection, pid: int, model: str, *,
                       before: bool = False) -> dict[str, float]:
    """Everything attributed afresh under `model`: seconds, rate, CPU of client and backend."""
    await conn.execute("TRUNCATE touchpoints, credits, customer_visitors")
    await conn.execute("UPDATE conversions SET attributed_at = NULL WHERE program_id = $1", pid)
    await conn.execute(
        "UPDATE programs SET settings = settings || jsonb_build_object('attribution_model', "
        "$2::text) WHERE id = $1", pid, model)
    await conn.execute("VACUUM ANALYZE conversions")
    backend = await conn.fetchval("SELECT pg_backend_pid()")
    real = queries.click_visitors
    if before:
        queries.click_visitors = _click_visitors_before
    try:
        wall, cpu, db_cpu = (time.perf_counter(), time.process_time(),
                             backend_cpu_seconds(backend))
        n = await attributing.attribute_pending(conn, pid)
        wall, cpu, db_cpu = (time.perf_counter() - wall, time.process_time() - cpu,
                             backend_cpu_seconds(backend) - db_cpu)
    finally:
        queries.click_visitors = real
    return {"conversions": n, "seconds": round(wall, 2), "per_second": round(n / wall),
            "client_cpu_seconds": round(cpu, 2), "postgres_cpu_seconds": round(db_cpu, 2)}


async def main(args: argparse.Namespace) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="refguard-bench-attr-"))
    server = db.embedded_server(tmp / "pg")
    try:
        n_clicks = int(1_000_000 * args.scale)
        n_conv = int(200_000 * args.scale)
        n_refs = max(100, int(args.referrers * min(1.0, args.scale * 5)))
        t = time.perf_counter()
        clicks_file, conv_file = generate(tmp, n_clicks, n_conv, n_refs)
        print(f"generated {n_clicks:,} clicks, conversions file, {n_refs:,} referrers in "
              f"{time.perf_counter() - t:.1f}s")
        conn = await asyncpg.connect(server.get_uri())
        await db.migrate(conn)
        await seed(conn, n_refs)
        enricher = Enricher(b"b" * 32, (), geo=GeoReader(None))
        base_s = await baseline_copy(conn, min(n_clicks, 200_000))
        base_rate = min(n_clicks, 200_000) / base_s
        t = time.perf_counter()
        workers = import_workers(clicks_file)  # as `refguard import` chooses
        clicks = await import_clicks(conn, clicks_file, enricher, workers=workers)
        import_s = time.perf_counter() - t
        t = time.perf_counter()
        convs = await import_conversions(conn, conv_file, b"b" * 32)
        conv_s = time.perf_counter() - t
        t = time.perf_counter()
        attributed = await attribute_pending(conn)
        attr_s = time.perf_counter() - t
        pid = await conn.fetchval("SELECT id FROM programs WHERE slug = 'bench'")
        t = time.perf_counter()
        journeys = await load_journeys(conn, pid)
        load_s = time.perf_counter() - t
        rows = await conn.fetch(
            """SELECT c.occurred_at, array_agg(t.referrer_id ORDER BY t.position) AS refs,
                      array_agg(t.ts ORDER BY t.position) AS times
               FROM conversions c JOIN touchpoints t
                 ON t.program_id = c.program_id AND t.conversion_id = c.id
               GROUP BY c.program_id, c.id""")
        converting = [([Touch(r, ts.timestamp()) for r, ts in zip(row["refs"], row["times"],
                                                                   strict=True)],
                       row["occurred_at"].timestamp()) for row in rows]
        models = time_models(journeys, converting, args.models)
        end_to_end = {}
        for model in args.models:
            end_to_end[model] = await attribute_as(conn, pid, model)
            print(f"  attribute as {model:<15} {end_to_end[model]['seconds']:>7.2f}s", flush=True)
        before = await attribute_as(conn, pid, "last_touch", before=True) if args.before else None
        await conn.close()
    finally:
        server.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)
    return {
        "benchmark": "attribution", "at": datetime.now(UTC).isoformat(), "scale": args.scale,
        "clicks": {"lines": clicks.read, "workers": workers, "stored": clicks.stored,
                   "seconds": round(import_s, 2),
                   "per_second": round(clicks.read / import_s),
                   "baseline_copy_per_second": round(base_rate),
                   "ratio_to_baseline": round(clicks.read / import_s / base_rate, 3),
                   "target_per_second": TARGET_IMPORT},
        "conversions": {"lines": convs.read, "stored": convs.stored,
                        "seconds": round(conv_s, 2), "per_second": round(convs.read / conv_s)},
        "attribute_pending": {"conversions": attributed, "seconds": round(attr_s, 2),
                              "per_second": round(attributed / attr_s),
                              "end_to_end": end_to_end, "before_last_touch": before,
                              "load_average": os.getloadavg()},
        "journeys": {"total": len(journeys), "converting": len(converting),
                     "load_seconds": round(load_s, 2)},
        "models_seconds": {m: round(s, 2) for m, (s, _) in models.items()},
        "models_cpu_seconds": {m: round(c, 2) for m, (_, c) in models.items()},
        "model_target_seconds": 60, "peak_rss_mib": round(peak_rss_mib()),
        "memory_target_mib": 4096,
    }


def report(result: dict[str, Any]) -> None:
    c = result["clicks"]
    print(f"\nimport clicks   {c['lines']:>10,} lines  {c['seconds']:>7.1f}s  "
          f"{c['per_second']:>8,}/s with {c['workers']} worker process(es)  "
          f"(target >= {TARGET_IMPORT:,}/s: "
          f"{'ok' if c['per_second'] >= TARGET_IMPORT else 'missed'})")
    print(f"  baseline: bare COPY of ready rows {c['baseline_copy_per_second']:,}/s; "
          f"import / baseline = {c['ratio_to_baseline']}")
    v = result["conversions"]
    print(f"import convs    {v['lines']:>10,} lines  {v['seconds']:>7.1f}s  "
          f"{v['per_second']:>8,}/s")
    a = result["attribute_pending"]
    print(f"attribute       {a['conversions']:>10,} conv.  {a['seconds']:>7.1f}s  "
          f"{a['per_second']:>8,}/s")
    for model, e in a["end_to_end"].items():
        print(f"  as {model:<15} {e['seconds']:>7.2f}s  {e['per_second']:>7,}/s  CPU: this "
              f"process {e['client_cpu_seconds']:.1f}s, PostgreSQL {e['postgres_cpu_seconds']:.1f}s"
              f"  ({'ok' if e['seconds'] < 60 else 'over'} the 60 s target)")
    if a["before_last_touch"]:
        b, e = a["before_last_touch"], a["end_to_end"]["last_touch"]

        def cpu(x: dict[str, float]) -> float:
            return max(0.01, x["client_cpu_seconds"] + x["postgres_cpu_seconds"])

        print(f"  before (last_touch) {b['seconds']:>7.2f}s  {b['per_second']:>7,}/s  CPU: this "
              f"process {b['client_cpu_seconds']:.1f}s, PostgreSQL {b['postgres_cpu_seconds']:.1f}s"
              f"; before / now = {b['seconds'] / e['seconds']:.1f}x wall, "
              f"{cpu(b) / cpu(e):.1f}x CPU")
    print(f"  load average during the run: "
          f"{', '.join(f'{x:.1f}' for x in a['load_average'])} (2 cores, shared)")
    j = result["journeys"]
    print(f"journeys        {j['total']:>10,} ({j['converting']:,} converting), "
          f"loaded in {j['load_seconds']}s")
    for model, seconds in result["models_seconds"].items():
        print(f"  {model:<15} fit + apply {seconds:>7.2f}s (CPU "
              f"{result['models_cpu_seconds'][model]:.2f}s)  "
              f"({'ok' if seconds < 60 else 'over'} the 60 s target)")
    print(f"peak RSS of this process {result['peak_rss_mib']:,} MiB (target 4,096; PostgreSQL "
          "not counted)")


def cli() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.attribution", description=__doc__)
    parser.add_argument("--scale", type=float, default=1.0,
                        help="fraction of 1,000,000 clicks / 200,000 conversions (default 1)")
    parser.add_argument("--referrers", type=int, default=5000,
                        help="referrers with power-law popularity (default 5,000)")
    parser.add_argument("--before", action="store_true",
                        help="also attribute through the named-click query as it was before, "
                             "for a before / now ratio in the same run")
    parser.add_argument("--journeys", type=int, default=0,
                        help="time only the models, on this many journeys generated in "
                             "memory (no PostgreSQL), with the peak resident memory")
    parser.add_argument("--models", default=",".join(MODELS),
                        help="comma-separated models to time (default: every one)")
    parser.add_argument("--import-only", action="store_true",
                        help="time only the clicks import (each side in a process of its own)")
    parser.add_argument("--workers", type=int, default=0,
                        help="with --import-only, import now with this many worker processes "
                             "(default: as refguard import chooses)")
    parser.add_argument("--against", metavar="REF",
                        help="with --import-only, also the importer at this git revision")
    args = parser.parse_args()
    args.models = tuple(m for m in args.models.split(",") if m)
    if not args.models or set(args.models) - set(MODELS):
        parser.error(f"--models: a comma-separated subset of {', '.join(MODELS)}")
    if args.import_only:
        result = import_only(args)
        report_import(result)
        save("attribution-import", result)
        return
    if args.journeys:
        if args.journeys < 1 or args.referrers < 1:
            parser.error("--journeys and --referrers must be positive")
        result = models_only(args)
        verdict = all(s < 60 for s in result["models_seconds"].values())
        print(f"every model under 60 s: {'ok' if verdict else 'missed'}; peak RSS "
              f"{result['peak_rss_mib']:,} MiB ({'ok' if result['peak_rss_mib'] < 4096 else 'over'}"
              " the 4 GiB target)")
        save("attribution", result)
        return
    result = asyncio.run(main(args))
    report(result)
    save("attribution", result)


if __name__ == "__main__":
    cli()
