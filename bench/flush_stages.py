"""What the flusher and PostgreSQL spend per click, stage by stage (bench/redirect prints it).

    .venv/bin/python -m bench.flush_stages            # own embedded PostgreSQL, 50,000 clicks/shape
    .venv/bin/python -m bench.flush_stages --clicks 20000
    .venv/bin/python -m bench.flush_stages --geoip     # with bench.geodb's databases, as
                                                       # bench/redirect measures it
    .venv/bin/python -m bench.flush_stages --months 24 # a server with two years of partitions

Journal segments of synthetic clicks (20,000 a segment, as the flusher takes them) go through the
flusher's own steps, one at a time, with the flusher's thread CPU (`time.thread_time`) and its
PostgreSQL backend's CPU (/proc/<pid>/stat of the connection's server process) read between them:

  read      parse the segment's lines (tracker.clicks.journal.parse_segment)
  enrich    client IP, geo, user agent, bot verdict, fingerprint (Enricher.row)
  dedupe    sort, duplicates within the batch (flusher.prepare_rows)
  probe     duplicates against stored clicks: one query per month of the batch
            (mark_stored_duplicates), in the transaction of the COPY that follows
  copy      the COPY into the month's partition and the commit (index maintenance included)
  analyze   the ANALYZE of the month's partition after its first batch and whenever it doubled
            since, until one saw 10,000 rows (flusher.Partitions): a few a month and process,
            so not in the totals
  no index  the same COPY into a plain table without indexes: copy minus this is what the
            indexes of `clicks` cost
  replay    the whole store_clicks again for the same rows: the conflict path (staging table,
            INSERT ... ON CONFLICT DO NOTHING), which must store nothing

Two shapes of traffic: `wrk` (as the redirect bench's wrk sends it: no user agent, no cookie so
a new visitor every click, one address, one link: the hot-fingerprint case) and `browsers`
(real browsers' user agents drawn by their market share, as real traffic repeats a few hundred
of them: fake-useragent's 839 strings with their shares, the most common 28% of clicks, some 750
distinct in 40,000 clicks; Chromium's client hints with them, ten Accept-Languages; addresses in
3,000 /24 networks with 249 hosts each, so almost every click comes from an address not seen
before, 40% returning visitors, 20 links). Until December 2026 `browsers` drew 40 made-up user
agents evenly, without client hints or other languages: its enrichment then parsed 40 devices
a run, where real traffic brings hundreds. A new visitor's id is made by the redirect's own
generator (tracker.clicks.redirect.VisitorIds, imported), so the index on (program_id,
visitor_id, ts) takes the ids production makes; a returning visitor is one of 2,000 made-up
ids, which all sort before any made now (an old visitor's place in the index). `throughput` is
clicks per second of the whole flush (read to commit) on one core, the importer's path.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import asyncpg

from tracker.clicks import flusher as fl
from tracker.clicks.enrich import COLUMNS, Enricher
from tracker.clicks.journal import SEP, VERSION, RawClick, parse_segment
from tracker.clicks.queries import use_click_codecs
from tracker.clicks.redirect import VisitorIds
from tracker.collector import BATCH_COLLECTIONS, few_collections
from tracker.settings import FLUSH_MAX_CLICKS

SEGMENT = FLUSH_MAX_CLICKS  # clicks a batch, as the flusher takes them at most
PROGRAM_ID = 990_000_000  # far from any real program (clicks has no foreign keys)
# Accept-Language values of the browsers shape, and their weights.
LANGUAGES = (("en-US,en;q=0.9", 40), ("en-GB,en;q=0.9", 12), ("de-DE,de;q=0.9,en;q=0.8", 9),
             ("fr-FR,fr;q=0.9,en-US;q=0.8,en;q=0.7", 8), ("es-ES,es;q=0.9", 8),
             ("pt-BR,pt;q=0.9,en-US;q=0.8,en;q=0.7", 7), ("it-IT,it;q=0.9,en;q=0.8", 5),
             ("nl-NL,nl;q=0.9,en;q=0.8", 4), ("ja,en-US;q=0.9,en;q=0.8", 4), ("pl-PL,pl;q=0.9", 3))
# Chromium browsers send client hints (not on iOS, where every browser is WebKit).
_BRANDS = {"Chrome": "Google Chrome", "Chrome Mobile": "Google Chrome", "Edge": "Microsoft Edge",
           "Samsung Internet": "Samsung Internet", "Opera": "Opera"}
_PLATFORMS = {"Windows": "Windows", "Mac OS X": "macOS", "Linux": "Linux", "Ubuntu": "Linux",
              "Chrome OS": "Chrome OS", "Android": "Android"}
Device = tuple[str, str, str, str]  # user agent, Sec-CH-UA, Sec-CH-UA-Mobile, -Platform


def browser_devices() -> tuple[list[Device], list[float]]:
    """The browsers shape's devices and their weights: fake-useragent's real user agents by
    their market share (a test dependency), else 2,000 made-up ones by Zipf's law (1/rank)."""
    try:
        from importlib import resources

        data = resources.files("fake_useragent") / "data" / "browsers.jsonl"
        lines = data.read_text(encoding="utf-8").splitlines()
    except (ImportError, OSError):
        devices: list[Device] = [
            (f"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
             f"Chrome/{100 + i % 40}.0.{i // 40}.0 Safari/537.36", "", "", "") for i in range(2000)]
        return devices, [1 / rank for rank in range(1, len(devices) + 1)]
    weights: dict[Device, float] = {}
    for line in lines:
        if not line:
            continue
        rec = json.loads(line)
        ua, brand = rec["useragent"], _BRANDS.get(rec["browser"])
        platform = _PLATFORMS.get(rec["os"])
        hints = ("", "", "")
        if brand and platform:
            major = str(rec["browser_version"]).split(".")[0]
            hints = (f'"Chromium";v="{major}", "{brand}";v="{major}", "Not-A.Brand";v="99"',
                     "?1" if rec["type"] == "mobile" else "?0", f'"{platform}"')
        device = (ua, *hints)
        weights[device] = weights.get(device, 0.0) + rec["percent"]
    return list(weights), list(weights.values())
STAGES = ("read", "enrich", "dedupe", "probe", "copy", "analyze", "no index", "replay")


_new_visitor = VisitorIds().new  # as the redirect makes them (at the click's time)


def _click(i: int, ts_us: int, shape: str, rnd: random.Random, link0: int, *,
           device: Device = ("", "", "", ""), language: str = "") -> RawClick:
    if shape == "wrk":
        return RawClick(ts_us, _cid(ts_us, i), PROGRAM_ID, link0, 1, "bench",
                        _new_visitor(ts_us * 1000), True, "127.0.0.1", "", "", "", "", "", "", "",
                        "", "", "", "", "")
    returning = rnd.random() < 0.4
    visitor = f"{rnd.randrange(2000):024x}" if returning else _new_visitor(ts_us * 1000)
    link = link0 + rnd.randrange(20)
    return RawClick(ts_us, _cid(ts_us, i), PROGRAM_ID, link, 1, f"l{link}", visitor, not returning,
                    f"10.{rnd.randrange(12)}.{rnd.randrange(250)}.{rnd.randrange(1, 250)}", "", "",
                    device[0], language, "https://news.example/", device[1], device[2], device[3],
                    "", "text/html,application/xhtml+xml", "utm_source=x", "")


def _cid(ts_us: int, i: int) -> str:
    ms = ts_us // 1000
    return f"{ms >> 16:08x}-{ms & 0xFFFF:04x}-7abc-8def-{i:012x}"


def _line(c: RawClick) -> bytes:
    fields = [VERSION, *(str(v) if not isinstance(v, bool) else ("1" if v else "") for v in c)]
    return (SEP.join(fields) + "\n").encode()


def segments(shape: str, clicks: int, link0: int, seed: int = 1) -> list[bytes]:
    """Journal segments of `clicks` synthetic clicks, 20 us apart, ending now."""
    rnd = random.Random(seed)
    start = time.time_ns() // 1000 - clicks * 20
    devices: list[Device] = [("", "", "", "")] * clicks
    languages = [""] * clicks
    if shape == "browsers":
        known, weights = browser_devices()
        devices = rnd.choices(known, weights, k=clicks)
        languages = rnd.choices([lang for lang, _ in LANGUAGES], [w for _, w in LANGUAGES],
                                k=clicks)
    out: list[bytes] = []
    for s in range(0, clicks, SEGMENT):
        out.append(b"".join(_line(_click(i, start + 20 * i, shape, rnd, link0,
                                         device=devices[i], language=languages[i]))
                            for i in range(s, min(clicks, s + SEGMENT))))
    return out


class Clock:
    """This thread's CPU and a PostgreSQL backend's, summed per stage."""

    def __init__(self, backend_pid: int) -> None:
        self.stat = Path(f"/proc/{backend_pid}/stat")
        self.hz = os.sysconf("SC_CLK_TCK")
        self.py: dict[str, float] = dict.fromkeys(STAGES, 0.0)
        self.pg: dict[str, float] = dict.fromkeys(STAGES, 0.0)
        self._py = self._pg0 = 0.0

    def _pg(self) -> float:
        try:
            parts = self.stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # PostgreSQL on another machine: only our side is measured
            return 0.0
        return (int(parts[11]) + int(parts[12])) / self.hz

    def start(self) -> None:
        self._py, self._pg0 = time.thread_time(), self._pg()

    def stop(self, stage: str) -> None:
        """Add what was spent since start() to `stage`, and start again."""
        py, pg = time.thread_time(), self._pg()
        self.py[stage] += py - self._py
        self.pg[stage] += pg - self._pg0
        self._py, self._pg0 = py, pg


async def measure(dsn: str, shape: str, clicks: int, link0: int,
                  geo_dir: Path | None = None) -> dict[str, Any]:
    """Per-click CPU (microseconds) of each stage for one shape, and the flush throughput."""
    from fraud.useragents import parse_user_agent
    from geo.reader import GeoReader

    geo = GeoReader(geo_dir)
    enricher = Enricher(b"bench-secret", (), geo=geo)
    # The user-agent parser compiles its rules on first use (0.4 s, once a process: 7 us a
    # click of 50,000 if counted here), which a running flusher paid long ago.
    parse_user_agent("Mozilla/5.0 (warm-up)")
    conn = await asyncpg.connect(dsn)
    try:
        await use_click_codecs(conn)  # as the flusher sets them on its connection
        await conn.execute("CREATE TABLE IF NOT EXISTS bench_clicks_noindex "
                           "(LIKE clicks INCLUDING DEFAULTS)")
        clock = Clock(conn.get_server_pid())
        partitions = fl.Partitions()
        wall = 0.0
        for data in segments(shape, clicks, link0):
            with few_collections(BATCH_COLLECTIONS):  # as Flusher.flush_once holds it
                t0 = time.perf_counter()
                clock.start()
                raw = parse_segment(data, "bench")[0]
                clock.stop("read")
                rows = [enricher.row(c) for c in raw if isinstance(c, RawClick)]
                clock.stop("enrich")
                ordered = fl.prepare_rows(rows)
                clock.stop("dedupe")
                groups = await partitions.groups(conn, ordered)  # as flusher.store_prepared
                async with conn.transaction():
                    await fl.mark_stored_duplicates(conn, fl.probe_tables(groups))
                    clock.stop("probe")
                    await fl.copy_groups(conn, groups)
                clock.stop("copy")
                wall += time.perf_counter() - t0
                await partitions.wrote(conn, groups)
                clock.stop("analyze")
                await _copy_plain(conn, ordered)
                clock.stop("no index")
                stored = await fl.store_clicks(conn, rows, partitions)
                clock.stop("replay")
            if stored[0]:
                raise RuntimeError(f"the replay stored {stored[0]} clicks again")
        await conn.execute("DROP TABLE bench_clicks_noindex")
    finally:
        await conn.close()
        geo.close()
    us = {s: {"flusher": round(clock.py[s] / clicks * 1e6, 2),
              "postgres": round(clock.pg[s] / clicks * 1e6, 2)} for s in STAGES}
    normal = ("read", "enrich", "dedupe", "probe", "copy")
    return {
        "shape": shape, "clicks": clicks, "us_per_click": us,
        "flusher_us": round(sum(us[s]["flusher"] for s in normal), 2),
        "postgres_us": round(sum(us[s]["postgres"] for s in normal), 2),
        "index_us": round(us["copy"]["postgres"] - us["no index"]["postgres"], 2),
        "throughput": round(clicks / wall) if wall else None,
    }


async def _history(dsn: str, months: int) -> None:
    """The monthly partitions of `months` months before this one (each look-up through
    `clicks` prunes them)."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            "SELECT refguard_ensure_click_partition(now() - make_interval(months => m))"
            " FROM generate_series(1, $1) m", months)
    finally:
        await conn.close()


async def _copy_plain(conn: asyncpg.Connection, ordered: list[list[object]]) -> None:
    async with conn.transaction():
        await conn.copy_records_to_table("bench_clicks_noindex", records=ordered,
                                         columns=COLUMNS)


def report(results: list[dict[str, Any]]) -> list[str]:
    lines = ["flusher and PostgreSQL CPU per click, by stage (us: flusher / postgres)"]
    lines.append(f"{'shape':<9} " + " ".join(f"{s:>14}" for s in STAGES)
                 + f" {'total':>14} {'indexes':>8} {'clicks/s':>9}")
    for r in results:
        us = r["us_per_click"]
        lines.append(
            f"{r['shape']:<9} "
            + " ".join(f"{us[s]['flusher']:>6.1f} / {us[s]['postgres']:>5.1f}" for s in STAGES)
            + f" {r['flusher_us']:>6.1f} / {r['postgres_us']:>5.1f} {r['index_us']:>8.1f}"
            f" {r['throughput'] or 0:>9,}")
    lines.append("  (total: read to copy, the normal path, without analyze (a few a month); "
                 "indexes: copy minus no index, in PostgreSQL; clicks/s: one flusher, "
                 "wall time of read to commit)")
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.flush_stages",
                                description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--clicks", type=int, default=50_000, help="clicks per shape (default 50000)")
    p.add_argument("--dsn", help="a migrated refguard database (default: an embedded one)")
    p.add_argument("--months", type=int, default=0,
                   help="first create the partitions of this many earlier months, as a server "
                        "with that much history has them (default 0)")
    p.add_argument("--geoip", action="store_true",
                   help="enrich with the GeoIP databases bench.geodb writes (as bench/redirect)")
    args = p.parse_args(argv)
    if args.clicks < SEGMENT:
        p.error(f"--clicks must be at least {SEGMENT}")
    with tempfile.TemporaryDirectory(prefix="refguard-flush-") as tmp:
        server = None if args.dsn else _embedded(Path(tmp))
        try:
            dsn = args.dsn or str(server.get_uri())
            geo_dir = None
            if args.geoip:
                from bench.geodb import write_databases

                geo_dir = Path(tmp) / "geoip"
                write_databases(geo_dir)
            if args.months:
                asyncio.run(_history(dsn, args.months))
            results = [asyncio.run(measure(dsn, shape, args.clicks, link0, geo_dir))
                       for shape, link0 in (("wrk", 990_000_000), ("browsers", 990_000_100))]
        finally:
            # Stopped here, before its folder goes: pgserver's own stop at exit finds the
            # folder gone and leaves the postmaster running.
            if server is not None:
                server.cleanup()
    print("\n".join(report(results)))
    return 0


def _embedded(tmp: Path) -> Any:
    """A migrated embedded PostgreSQL under `tmp` (the caller stops it)."""
    import subprocess

    from tracker.db import embedded_server

    server = embedded_server(tmp / "pg", stop_on_exit=True)
    dsn = str(server.get_uri())
    env = {**os.environ, "REFGUARD_DATA_DIR": str(tmp / "data"), "REFGUARD_DATABASE_URL": dsn}
    subprocess.run([sys.executable, "-m", "tracker", "migrate"], env=env, check=True,
                   capture_output=True)
    return server


if __name__ == "__main__":
    sys.exit(main())
