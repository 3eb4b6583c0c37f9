"""Program page benchmark (issue 16): what /review/programs/{slug} reads, over the data of
bench.reports (1M clicks and about 100k conversions at --scale 1).

    .venv/bin/python -m bench.program_page --scale 0.1

Times `tracker.web.review.program.gather` (the economics with its months, the funnel, the
experiment, the weekday x hour breakdown), cold (no copy of the reports job: a first view
before the job ran), the reports job itself, with the reports job's copies fresh (a first view
after it ran), and with the page's own copy (what a page view within 15 minutes of another
costs), and the charts' drawing. Median of `--repeat` runs, the first run reported too, with a
baseline measured in the same run (a bare count of the program's clicks, as bench.reports) so
that figures compare across loaded machines. `--keep DIR` shares bench.reports' folder: the
data is generated once and reused.
Prints a table and writes JSON to bench/results/program_page-<timestamp>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg

from bench.reports import generate
from bench.results import save
from tracker import db
from tracker.jobs import report_cache
from tracker.programs import queries
from tracker.scoring.economics import economics_report
from tracker.web.review import program as page


async def _median(repeat: int, run: Any) -> tuple[float, float]:
    runs = []
    for _ in range(repeat):
        t = time.perf_counter()
        await run()
        runs.append(time.perf_counter() - t)
    return round(runs[0], 3), round(statistics.median(runs), 3)


async def main(args: argparse.Namespace) -> dict[str, Any]:
    tmp = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(
        prefix="refguard-bench-page-"))
    reuse = (tmp / "generated").exists()
    server = db.embedded_server(tmp / "pg")
    out: dict[str, Any] = {"benchmark": "program_page", "at": datetime.now(UTC).isoformat(),
                           "scale": args.scale}
    try:
        conn = await asyncpg.connect(server.get_uri())
        await db.migrate(conn)
        if not reuse:
            await generate(conn, int(1_000_000 * args.scale), int(76_000 * args.scale))
            if args.keep:
                (tmp / "generated").touch()
        out["reused_data"] = reuse  # then `scale` is that of the run that generated it
        await conn.execute("DELETE FROM report_cache")  # a first view: no copy of the job's
        out["rows"] = {n: await conn.fetchval(f"SELECT count(*) FROM {n}")
                       for n in ("clicks", "conversions")}
        program = await queries.get_program(conn, "bench")
        data = await page.gather(conn, program, None)
        out["months"] = [(m.label, m.revenue, m.cost) for m in data.months]
        out["as_of"] = data.economics["as_of"]

        async def economics() -> None:  # once, with its months (12 reports before)
            await economics_report(conn, program.id, program.settings)

        pid = program.id
        timings = {"baseline: count(*) of the clicks": await _median(
            args.repeat, lambda: conn.fetchval("SELECT count(*) FROM clicks WHERE program_id = $1",
                                               pid)),
            "gather, no cached copy": await _median(args.repeat, lambda: page.gather(
            conn, program, None)),
            "economics with its months": await _median(args.repeat, economics)}
        t = time.perf_counter()
        await report_cache(conn)
        timings["reports job (all programs)"] = (round(time.perf_counter() - t, 3),
                                                 round(time.perf_counter() - t, 3))
        timings["gather, job's copies fresh"] = await _median(
            args.repeat, lambda: page.gather(conn, program, None))
        cache: page.PageCache = {}
        await page.gather(conn, program, None, cache)
        timings["gather, all copies fresh"] = await _median(
            args.repeat, lambda: page.gather(conn, program, None, cache))
        t = time.perf_counter()
        for _ in range(args.repeat):
            page.draw("bench", data.currency, data.months,
                      steps=page.funnel_steps(data.funnel["total"]),
                      experiments=data.experiments, cells=page.heat_cells(data.heat))
        timings["draw (all charts)"] = (0.0, round((time.perf_counter() - t) / args.repeat, 4))
        out["seconds"] = {k: {"first": v[0], "median": v[1]} for k, v in timings.items()}
        for name, (first, median) in timings.items():
            print(f"  {name:<30} median {median:>7.3f}s  first {first:>7.3f}s")
        await conn.close()
    finally:
        server.cleanup()
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def cli() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.program_page", description=__doc__)
    parser.add_argument("--scale", type=float, default=0.1,
                        help="fraction of bench.reports' 1,000,000 clicks (default 0.1)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--keep", metavar="DIR",
                        help="keep the database in DIR and reuse it on the next run (shared "
                             "with bench.reports --keep; --scale then has no effect)")
    result = asyncio.run(main(parser.parse_args()))
    print(result)
    save("program_page", result)


if __name__ == "__main__":
    cli()
