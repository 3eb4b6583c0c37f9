"""Read-replica benchmark: what the heavy reads cost the primary, with and without a replica.

    .venv/bin/python -m bench.replica                # 200,000 clicks, 20,000 conversions
    .venv/bin/python -m bench.replica --scale 0.05   # a quick run

A real primary and a streaming standby (tests/pgcluster.py: the embedded server's binaries),
the program of bench.fraud (bench.attribution's generator, the real import and attribution).
Then, each on the primary alone and with the standby as REFGUARD_READ_DATABASE_URL: one full
fraud scan and one run of the reports job (tracker.jobs.report_cache). Measured: the CPU time
of each node's PostgreSQL processes (user + system, from /proc, so a busy machine does not
inflate it the way it inflates wall time) and the wall time. The baseline is the same
operation reading the primary, in the same run; the figure that matters is the share of the
primary's CPU the replica takes away (the scan's own writes stay on the primary).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import psutil

from bench.attribution import generate, seed
from bench.results import save
from geo.reader import GeoReader
from tracker import db
from tracker.clicks.enrich import Enricher
from tracker.intake.importer import import_clicks, import_conversions
from tracker.jobs import report_cache
from tracker.scoring.credits import attribute_pending
from tracker.scoring.risk import scan


def _cpu(postmaster: int) -> dict[int, float]:
    """CPU seconds so far of a node's postmaster and every process under it."""
    out: dict[int, float] = {}
    try:
        root = psutil.Process(postmaster)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return out
    for proc in procs:
        try:
            times = proc.cpu_times()
        except psutil.Error:
            continue
        out[proc.pid] = times.user + times.system
    return out


def _spent(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU spent between two readings (a process that ended in between is not counted: the
    connections measured live through both)."""
    return sum(t - before.get(pid, 0.0) for pid, t in after.items())


async def _measure(nodes: dict[str, int], work: Callable[[], Awaitable[object]]
                   ) -> dict[str, float]:
    before = {name: _cpu(pid) for name, pid in nodes.items()}
    started = time.perf_counter()
    await work()
    wall = time.perf_counter() - started
    return {**{f"{name}_cpu_s": round(_spent(before[name], _cpu(pid)), 3)
               for name, pid in nodes.items()}, "wall_s": round(wall, 3)}


async def main(scale: float) -> dict[str, Any]:
    from tests.pgcluster import pg_cluster  # the failover tests' cluster (h/failover)

    tmp = Path(tempfile.mkdtemp(prefix="refguard-bench-replica-"))
    try:
        with pg_cluster(tmp / "pg") as cluster:
            primary = cluster.start_primary(shared_buffers="256MB")
            cluster.sql(primary, "CREATE DATABASE refguard")
            standby = cluster.add_standby(synchronous=False)
            n_clicks, n_conv = int(1_000_000 * scale), int(100_000 * scale)
            n_refs = max(100, int(20_000 * scale))
            clicks_file, conv_file = generate(tmp, n_clicks, n_conv, n_refs)
            conn = await asyncpg.connect(primary.dsn("refguard"))
            replica = db.Replica(standby.dsn("refguard"))
            await replica.open()
            try:
                await db.migrate(conn)
                await seed(conn, n_refs)
                await import_clicks(conn, clicks_file,
                                    Enricher(b"b" * 32, (), geo=GeoReader(None)))
                await import_conversions(conn, conv_file, b"b" * 32)
                attributed = await attribute_pending(conn)
                await conn.execute("ANALYZE")
                cluster.wait_replayed(standby, timeout=600)
                nodes = {"primary": primary.postmaster_pid() or 0,
                         "standby": standby.postmaster_pid() or 0}
                figures: dict[str, Any] = {}
                for name, work in (
                        ("scan", lambda r: scan(conn, "bench", replica=r)),
                        ("reports", lambda r: report_cache(conn, r))):
                    # Warm both nodes' caches the same way, then measure each side.
                    await work(db.PRIMARY)
                    await work(replica)
                    cluster.wait_replayed(standby, timeout=600)
                    on_primary = await _measure(nodes, lambda w=work: w(db.PRIMARY))
                    cluster.wait_replayed(standby, timeout=600)
                    on_replica = await _measure(nodes, lambda w=work: w(replica))
                    figures[name] = {
                        "primary_only": on_primary, "with_replica": on_replica,
                        "primary_cpu_kept": round(on_replica["primary_cpu_s"]
                                                  / on_primary["primary_cpu_s"], 3)
                        if on_primary["primary_cpu_s"] else None}
            finally:
                await replica.close()
                await conn.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"benchmark": "replica", "at": datetime.now(UTC).isoformat(), "scale": scale,
            "clicks": n_clicks, "conversions": attributed, "referrers": n_refs,
            "load_average": os.getloadavg(), **figures}


def cli() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.replica", description=__doc__)
    parser.add_argument("--scale", type=float, default=0.2)
    result = asyncio.run(main(parser.parse_args().scale))
    print(f"{result['conversions']:,} conversions, {result['clicks']:,} clicks, "
          f"{result['referrers']:,} referrers; load average {result['load_average']}")
    for name in ("scan", "reports"):
        r = result[name]
        a, b = r["primary_only"], r["with_replica"]
        print(f"{name}: primary alone {a['primary_cpu_s']} s CPU on the primary "
              f"({a['wall_s']} s wall); with the replica {b['primary_cpu_s']} s on the primary, "
              f"{b['standby_cpu_s']} s on the standby ({b['wall_s']} s wall): the primary keeps "
              f"{r['primary_cpu_kept']} of its CPU")
    save("replica", result)


if __name__ == "__main__":
    cli()
