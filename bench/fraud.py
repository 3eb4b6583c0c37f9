"""Fraud-scan benchmark: a full scan of a large program, time and peak memory.

    .venv/bin/python -m bench.fraud                # 1,000,000 clicks, 100,000 conversions,
                                                   # 20,000 referrers
    .venv/bin/python -m bench.fraud --scale 0.05   # a quick run

Data come from bench.attribution's generator and the real import and attribution; then one full
`tracker.scoring.risk.scan` is timed. Peak memory is this process's maximum resident set size
during the scan, and the growth over the size before it (PostgreSQL's memory is its own).
Targets: under 60 s and under 4 GiB. Each scan's CPU seconds, in this process and in the
connection's PostgreSQL backend, are printed beside its wall time (on a shared machine the
wall time follows the load).

Then 10,000 new clicks and 1,000 new conversions arrive (imported and attributed, untimed), and
one incremental scan (`scan(..., incremental=True)`) is timed. Target: under 5 s. As the
baseline of the same run, the full scan's time per conversion times the new conversions says
what a full scan would have cost for them had it been that cheap (it is not: a full scan
costs the whole program's time whatever little is new).
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import shutil
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg

from bench.attribution import backend_cpu_seconds, generate, seed
from bench.results import save
from geo.reader import GeoReader
from tracker import db
from tracker.clicks.enrich import Enricher
from tracker.intake.importer import import_clicks, import_conversions
from tracker.scoring.credits import attribute_pending
from tracker.scoring.risk import scan

N_NEW_CLICKS = 10_000
N_NEW_CONVERSIONS = 1_000


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _cpu(backend: int, since: dict[str, float] | None = None) -> dict[str, float]:
    """CPU seconds of this process (the scan's Python) and of the connection's PostgreSQL
    backend (parallel workers not counted), or those spent since `since`: on a shared
    machine the wall time follows the load, the CPU much less."""
    now = {"process": time.process_time(), "backend": backend_cpu_seconds(backend)}
    return now if since is None else {k: round(v - since[k], 2) for k, v in now.items()}


async def main(scale: float) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="refguard-bench-fraud-"))
    server = db.embedded_server(tmp / "pg")
    try:
        n_clicks, n_conv = int(1_000_000 * scale), int(100_000 * scale)
        n_refs = max(100, int(20_000 * scale))
        clicks_file, conv_file = generate(tmp, n_clicks, n_conv, n_refs)
        conn = await asyncpg.connect(server.get_uri())
        await db.migrate(conn)
        await seed(conn, n_refs)
        await import_clicks(conn, clicks_file, Enricher(b"b" * 32, (), geo=GeoReader(None)))
        await import_conversions(conn, conv_file, b"b" * 32)
        attributed = await attribute_pending(conn)
        backend = await conn.fetchval("SELECT pg_backend_pid()")
        before = _rss_mib()
        cpu = _cpu(backend)
        started = time.perf_counter()
        summaries = await scan(conn, "bench")
        seconds = time.perf_counter() - started
        full_cpu = _cpu(backend, since=cpu)
        peak = _rss_mib()
        new_clicks, new_conv = generate(tmp, N_NEW_CLICKS, N_NEW_CONVERSIONS, n_refs, seed=8,
                                        first_visitor=10_000_000, name="-new")
        await import_clicks(conn, new_clicks, Enricher(b"b" * 32, (), geo=GeoReader(None)))
        await import_conversions(conn, new_conv, b"b" * 32)
        new_attributed = await attribute_pending(conn)
        # A side connection for the program's facts (tracker.scoring.risk.scan_program), as
        # the jobs' pool gives it; opened before the clock starts, as the pool's would be.
        pool = await asyncpg.create_pool(server.get_uri(), min_size=1, max_size=1)
        cpu = _cpu(backend)
        started = time.perf_counter()
        incremental = await scan(conn, "bench", incremental=True, pool=pool)
        incremental_seconds = time.perf_counter() - started
        incremental_cpu = _cpu(backend, since=cpu)
        await pool.close()
        await conn.close()
    finally:
        server.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)
    return {"benchmark": "fraud", "at": datetime.now(UTC).isoformat(), "scale": scale,
            "clicks": n_clicks, "conversions": attributed, "referrers": n_refs,
            "scan_seconds": round(seconds, 2), "peak_rss_mib": round(peak, 1),
            "rss_growth_mib": round(peak - before, 1), "scan_cpu_seconds": full_cpu,
            "summary": summaries[0].as_dict(),
            "new_clicks": N_NEW_CLICKS, "new_conversions": new_attributed,
            "incremental_seconds": round(incremental_seconds, 2),
            "incremental_cpu_seconds": incremental_cpu,
            "incremental_summary": incremental[0].as_dict(),
            "full_scan_over_incremental": round(seconds / incremental_seconds, 1),
            "targets": {"scan_seconds": 60, "peak_rss_mib": 4096, "incremental_seconds": 5}}


def cli() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.fraud", description=__doc__)
    parser.add_argument("--scale", type=float, default=1.0)
    result = asyncio.run(main(parser.parse_args().scale))
    print(f"full scan: {result['conversions']:,} conversions, {result['clicks']:,} clicks, "
          f"{result['referrers']:,} referrers in {result['scan_seconds']} s "
          f"(target < 60 s); peak RSS {result['peak_rss_mib']} MiB "
          f"(+{result['rss_growth_mib']} MiB during the scan; target < 4096 MiB); CPU "
          f"{result['scan_cpu_seconds']['process']} s here, "
          f"{result['scan_cpu_seconds']['backend']} s in PostgreSQL")
    print(f"summary: {result['summary']}")
    print(f"incremental scan: {result['new_clicks']:,} new clicks, {result['new_conversions']:,} "
          f"new conversions in {result['incremental_seconds']} s (target < 5 s); the full scan "
          f"took {result['full_scan_over_incremental']}x as long; CPU "
          f"{result['incremental_cpu_seconds']['process']} s here, "
          f"{result['incremental_cpu_seconds']['backend']} s in PostgreSQL")
    print(f"summary: {result['incremental_summary']}")
    save("fraud", result)


if __name__ == "__main__":
    cli()
