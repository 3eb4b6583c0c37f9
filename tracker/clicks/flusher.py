"""Copies sealed journal segments into PostgreSQL.

One batch = whole segments (up to `flush_max_clicks` clicks) in one transaction: the batch is
checked for duplicates of stored clicks, then COPYed straight into its monthly partition. A
segment replayed after a crash that followed its commit fails that COPY on the primary key and
goes through a temporary staging table and INSERT ... ON CONFLICT DO NOTHING instead, so it adds
nothing twice (the statements are in tracker.clicks.queries).
Segment files are deleted only after the commit, which is synchronous (the server's
synchronous_commit, never turned off here): the journal is the only record of an answered click
until then, so an asynchronous commit would let a segment go while its rows may still be lost
to a crash of PostgreSQL (or fail over without them). Keeping segments until the WAL flush (and
a synchronous standby) passed the commit would make that safe, but it buys nothing: the commit
is one WAL flush per batch of up to 20,000 clicks, and the WAL itself (most of what a COPY
writes) is written either way (the same PostgreSQL CPU a click with it off, by
bench.flush_stages' clock).
While PostgreSQL is unreachable the flusher retries with exponential backoff; the journal keeps
growing and the backlog gauge shows it.

Duplicates (same visitor or fingerprint on the same link within an hour) are flagged, not
dropped: in Python within a batch, and against stored clicks by one query for each month of
the batch (its partition; all of `clicks` for the hour either side of a month's turn). The
window is checked on both sides of a click because workers flush independently, so a click can
reach the table after a later one; either way exactly one click of such a pair counts.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import itertools
import logging
import operator
import os
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from operator import itemgetter
from pathlib import Path

import asyncpg

from tracker import db, metrics
from tracker.clicks import queries
from tracker.clicks.enrich import COLUMNS, Enricher
from tracker.clicks.journal import (
    SEALED_SUFFIX,
    RawClick,
    RawSignals,
    parse_segment,
    pending_segments,
    try_lock,
)
from tracker.collector import BATCH_COLLECTIONS, few_collections
from tracker.settings import FLUSH_MAX_CLICKS

log = logging.getLogger(__name__)

DUPLICATE_WINDOW = timedelta(hours=1)
# The window in the rows' time unit: Enricher.row gives a click's ts as an int of Unix
# microseconds (UTC), which this module compares and sorts as it is.
_WINDOW_US = 3_600_000_000
_I_TS, _I_LINK, _I_VISITOR, _I_FP, _I_BOT, _I_DUP = (
    COLUMNS.index("ts"), COLUMNS.index("link_id"), COLUMNS.index("visitor_id"),
    COLUMNS.index("fingerprint"), COLUMNS.index("is_bot"), COLUMNS.index("is_duplicate"),
)
_TIME = itemgetter(_I_TS)
_CLICK_ID = itemgetter(COLUMNS.index("click_id"))

@dataclass(frozen=True, slots=True)
class FlushResult:
    clicks: int  # read from the journal
    stored: int  # new rows (the rest were already there: a replay)
    bots: int
    duplicates: int
    bad_lines: int


def mark_duplicates(rows: list[list[object]]) -> None:
    """Flag, in place, rows that repeat a visitor or fingerprint on a link within the window.

    A fingerprint repeat is a duplicate only when it may be the same browser: the same
    visitor, or a click without any visitor id. Two visitors with cookies of their own are
    two people, whatever their fingerprint (the same phone model behind one carrier NAT),
    a freshly issued cookie included: on a shared address the newcomer is far more often
    another person than one who cleared cookies, and a duplicate is not a touchpoint.

    `rows` must be sorted by time (Unix microseconds, as Enricher.row gives it).

    Where every row has a visitor id (live traffic: the redirect gives every visit one), a
    fingerprint repeat can only be a duplicate of the same visitor, which that visitor's own
    repeat already flags (its last click on the link is at least as recent), so the
    fingerprints are not looked at (a third of this loop).
    """
    window = _WINDOW_US
    if all(row[_I_VISITOR] for row in rows):
        last: dict[tuple[object, object], int] = {}
        for row in rows:
            key = (row[_I_LINK], row[_I_VISITOR])
            ts: int = row[_I_TS]  # type: ignore[assignment]  # (built by Enricher.row)
            prev = last.get(key)
            if prev is not None and ts - prev <= window:
                row[_I_DUP] = True
            last[key] = ts
        return
    last_visitor: dict[tuple[object, object], int] = {}
    last_fp: dict[tuple[object, object], tuple[int, object]] = {}
    for row in rows:
        ts = row[_I_TS]  # type: ignore[assignment]  # (built by Enricher.row)
        link, visitor, fp = row[_I_LINK], row[_I_VISITOR] or None, row[_I_FP]
        dup = False
        if visitor is not None:
            key = (link, visitor)  # (each key built once: a tenth of the loop)
            prev = last_visitor.get(key)
            dup = prev is not None and ts - prev <= window
            last_visitor[key] = ts
        if fp is not None:
            key = (link, fp)
            seen = last_fp.get(key)
            if seen is not None and ts - seen[0] <= window:
                other = seen[1]
                dup = dup or visitor is None or other is None or other == visitor
            last_fp[key] = (ts, visitor)
        if dup:
            row[_I_DUP] = True


async def store_clicks(
    conn: asyncpg.Connection, rows: list[list[object]], partitions: Partitions,
) -> tuple[int, int, int]:
    """Insert enriched click rows idempotently; returns (stored, bots, duplicates).

    Used by the flusher and the importer. `partitions` is what the process knows of the
    monthly partitions across calls; missing partitions are created first. The rows are COPYed
    straight into their partitions; should one of them be stored already (a replay), that
    transaction fails on the primary key and the batch goes through the staging table instead,
    where ON CONFLICT DO NOTHING skips what is there.
    """
    return await store_prepared(conn, prepare_rows(rows), partitions)


async def store_prepared(
    conn: asyncpg.Connection, ordered: list[list[object]], partitions: Partitions,
) -> tuple[int, int, int]:
    """`store_clicks` of rows `prepare_rows` made (the importer prepares them in its workers).

    The rows carry addresses packed and times as ints (Enricher.row); the flusher's and the
    importer's connections encode them without an object each (queries.use_click_codecs, set
    when they connect), any other connection's COPY gets datetimes (with_datetimes)."""
    groups = await partitions.groups(conn, ordered)
    await partitions.index_fingerprints(conn, ordered)
    try:
        async with conn.transaction():
            await mark_stored_duplicates(conn, probe_tables(groups))
            await copy_groups(conn, groups)
    except asyncpg.UniqueViolationError:
        return await _store_staged(conn, ordered)
    await partitions.wrote(conn, groups)
    bots = dups = 0
    for r in ordered:
        if r[_I_BOT]:
            bots += 1
        elif r[_I_DUP]:
            dups += 1
    return len(ordered), bots, dups


def prepare_rows(rows: list[list[object]]) -> list[list[object]]:
    """The rows (Enricher.row's lists, flagged in place) in time order, duplicates within
    them marked (mark_duplicates)."""
    ordered = time_ordered(rows)
    mark_duplicates(ordered)
    return ordered


def time_ordered(rows: list[list[object]]) -> list[list[object]]:
    """The rows sorted by (ts, click_id): by their times (ints), then each run of equal times
    by click id. Both sorts are stable, so rows equal in both keep their order, as one sort by
    the pair keeps it; a key of ints sorts in a third to a half of the CPU of a key of pairs
    (a batch's segments of several workers interleave in time), and equal microseconds are
    rare."""
    ordered = sorted(rows, key=_TIME)
    times: list[int] = list(map(_TIME, ordered))
    end = 0
    for i in itertools.compress(range(1, len(times)), map(operator.eq, times[1:], times)):
        if i <= end:
            continue  # (within the run just sorted)
        start, end = i - 1, i
        while end + 1 < len(times) and times[end + 1] == times[start]:
            end += 1
        ordered[start : end + 1] = sorted(ordered[start : end + 1], key=_CLICK_ID)
    return ordered


def probe_tables(groups: list[tuple[str, list[list[object]]]]
                 ) -> list[tuple[str, list[list[object]]]]:
    """Where to look for stored duplicates of the rows of each month (Partitions.groups): its
    own partition for those whose hour either side is in their month, all of `clicks` for the
    rest (the first and last hour of a month), so that each look-up reads one partition and
    does not first prune the others (a third of the probe's CPU with two years of partitions,
    and an import's batch spans several months)."""
    probes: list[tuple[str, list[list[object]]]] = []
    edges: list[list[object]] = []
    for name, part in groups:
        start, following = _month_bounds(part[0][_I_TS])  # type: ignore[arg-type]
        inner = bisect.bisect_left(part, start + _WINDOW_US, key=_TIME)
        outer = bisect.bisect_left(part, following - _WINDOW_US, lo=inner, key=_TIME)
        edges += part[:inner]
        edges += part[outer:]
        if outer > inner:
            probes.append((name, part[inner:outer]))
    if edges:
        probes.append(("clicks", edges))
    return probes


def _month_bounds(ts_us: int) -> tuple[int, int]:
    """The start of the month (UTC, as the partitions are) of `ts_us`, and of the next one, in
    Unix microseconds as the rows' times are."""
    ts = as_datetime(ts_us)
    return (_unix_us(datetime(ts.year, ts.month, 1, tzinfo=UTC)),
            _unix_us(datetime(ts.year + ts.month // 12, ts.month % 12 + 1, 1, tzinfo=UTC)))


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def as_datetime(ts_us: int) -> datetime:
    """A row's time (Unix microseconds) as the datetime PostgreSQL stores for it."""
    return _EPOCH + timedelta(0, 0, ts_us)


def _unix_us(ts: datetime) -> int:
    delta = ts - _EPOCH
    return (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds


async def mark_stored_duplicates(conn: asyncpg.Connection,
                                 probes: list[tuple[str, list[list[object]]]]) -> None:
    """Mark, in place, rows that repeat a click already stored (one query for each table
    probe_tables names, in the caller's transaction)."""
    for table, rows in probes:
        todo = [r for r in rows if not r[_I_DUP]]
        if todo:
            for i in await queries.stored_duplicates(conn, todo, table):
                todo[i][_I_DUP] = True


async def copy_groups(conn: asyncpg.Connection,
                      groups: list[tuple[str, list[list[object]]]]) -> None:
    """COPY each partition's rows into it (in the caller's transaction: UniqueViolationError if
    one of them is stored already)."""
    if not queries.has_click_codecs(conn):
        # (A connection the storing code did not open, a test's: its COPY takes datetimes.)
        groups = [(name, with_datetimes(part)) for name, part in groups]
    for name, part in groups:
        await conn.copy_records_to_table(name, records=part, columns=COLUMNS)


def with_datetimes(rows: list[list[object]]) -> list[list[object]]:
    """Copies of the rows with their times as datetimes, for a connection whose timestamptz
    codec is asyncpg's own (not queries.use_click_codecs)."""
    out = []
    for row in rows:
        copy = row.copy()
        copy[_I_TS] = as_datetime(row[_I_TS])  # type: ignore[arg-type]
        out.append(copy)
    return out


class Partitions:
    """The monthly partitions of `clicks` a process writes to (created when missing), and how
    much each grew since its planner statistics were taken.

    The planner reads a partition as its last ANALYZE saw it, scaled to its size. Taken at a
    month's first batch, which may be the one click after midnight, those statistics say every
    column is unique: `program_id = $1` looks like one row, so the duplicate probe of a visitor
    may go through the primary key, `clicks_referrer_ts` or the link's fingerprints, and once
    the partition holds 15,000-25,000 clicks that walks every click of the program or link in
    the hour for each click of a batch (9-14 s of PostgreSQL a batch, until autovacuum analyzes
    it again; tests/app/test_flusher_store.py shows the plan). So a partition is
    analyzed when this process first writes to it, and again whenever the rows this process
    wrote to it since reach what it held at its last ANALYZE (it doubled), until an ANALYZE
    has seen `SETTLED` rows: from there its statistics scale with it (a sample of 20 clicks
    already kept the plan to 40,000) and autovacuum re-analyzes it every 10% of growth.
    Not for ever, because an ANALYZE costs 5-8 us of PostgreSQL CPU a row up to the 30,000 it
    samples (measured at load 25): doubling to 100,000 clicks a month cost an import 9 us a
    click; to `SETTLED`, a month's partition takes a few ANALYZEs of under 20,000 rows each.
    """

    SETTLED = 10_000

    def __init__(self) -> None:
        self.names: dict[tuple[int, int], str] = {}  # (year, month) -> partition
        # partition -> (its rows at its last ANALYZE, rows this process wrote to it since);
        # a partition is here only once it was analyzed after this process wrote to it.
        self.growth: dict[str, tuple[float, int]] = {}
        self.fingerprinted: set[tuple[int, int]] = set()  # months indexed by fingerprint

    async def index_fingerprints(self, conn: asyncpg.Connection,
                                 ordered: list[list[object]]) -> None:
        """Have the partitions within the hour of a click without a visitor id indexed by
        fingerprint (that click's duplicate probe reads them so; migration 0033), once."""
        due: dict[tuple[int, int], datetime] = {}
        for row in ordered:
            if not row[_I_VISITOR]:
                ts = as_datetime(row[_I_TS])  # type: ignore[arg-type]
                for at in (ts - DUPLICATE_WINDOW, ts + DUPLICATE_WINDOW):
                    month = (at.year, at.month)
                    if month not in self.fingerprinted:
                        due.setdefault(month, at)
        if due:
            # A month without a partition yet is asked again (it may be created meanwhile).
            indexed = await queries.index_fingerprints(conn, list(due.values()))
            self.fingerprinted.update(m for m, at in due.items() if at in indexed)

    async def groups(self, conn: asyncpg.Connection, ordered: list[list[object]]
                     ) -> list[tuple[str, list[list[object]]]]:
        """Time-ordered rows split by monthly partition (created if missing), in order: each
        month's end found by bisection (a batch is one month but at its turn)."""
        groups: list[tuple[str, list[list[object]]]] = []
        start = 0
        while start < len(ordered):
            ts_us: int = ordered[start][_I_TS]  # type: ignore[assignment]
            ts = as_datetime(ts_us)
            month = (ts.year, ts.month)
            name = self.names.get(month)
            if name is None:
                name = self.names[month] = await queries.ensure_partition(conn, ts)
            # Partitions are months of UTC, as the rows' times are (Enricher.row).
            following = _month_bounds(ts_us)[1]
            end = bisect.bisect_left(ordered, following, lo=start, key=_TIME)
            groups.append((name, ordered[start:end]))
            start = end
        return groups

    async def wrote(self, conn: asyncpg.Connection,
                    groups: list[tuple[str, list[list[object]]]]) -> None:
        """Count the rows just committed to each partition, and ANALYZE those new to this
        process or doubled since their last ANALYZE. Should that fail (the database going
        away), they stay due and the next batch analyzes them."""
        due = []
        for name, part in groups:
            rows, since = self.growth.get(name, (-1.0, 0))
            since += len(part)
            if rows < 0 or (rows < self.SETTLED and since >= max(rows, 1.0)):
                due.append(name)
            if rows >= 0:
                self.growth[name] = (rows, since)
        if due:
            analyzed = await queries.analyze(conn, due)
            self.growth.update((name, (estimate, 0)) for name, estimate in analyzed.items())


async def _store_staged(conn: asyncpg.Connection, ordered: list[list[object]]
                        ) -> tuple[int, int, int]:
    """The replay path: stage the rows, insert those not stored yet."""
    async with conn.transaction():
        await conn.execute(queries.STAGE_SQL)
        if not queries.has_click_codecs(conn):
            ordered = with_datetimes(ordered)
        await conn.copy_records_to_table(queries.STAGE_TABLE, records=ordered, columns=COLUMNS)
        result = await conn.fetchrow(queries.INSERT_SQL)
    assert result is not None  # noqa: S101 (an aggregate always returns a row)
    return result["stored"], result["bots"], result["duplicates"]


class Flusher:
    def __init__(
        self,
        directory: Path,
        dsn: str,
        enricher: Enricher,
        *,
        interval_ms: int = 100,
        max_clicks: int = FLUSH_MAX_CLICKS,
    ) -> None:
        self.directory = directory
        self.dsn = dsn
        self.enricher = enricher
        self.interval_s = interval_ms / 1000
        self.max_clicks = max_clicks
        self._conn: asyncpg.Connection | None = None
        self._partitions = Partitions()
        self._task: asyncio.Task[None] | None = None
        self._backoff = 0.0
        self._backlog_checked = 0.0
        self._sealed_lines: dict[str, int] = {}  # sealed segment name -> its clicks
        self._geo_names: set[str] = set()

    async def _connection(self) -> asyncpg.Connection:
        """The flusher's connection: a new one (to whichever host is primary now) after a
        failure dropped the last, with the codecs its COPYs use set once (packed addresses,
        times as ints)."""
        if self._conn is None or self._conn.is_closed():
            conn = await db.connect(self.dsn, timeout=5)
            try:
                await queries.use_click_codecs(conn)
            except BaseException:
                conn.terminate()
                raise
            self._conn = conn
        return self._conn

    async def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.terminate()

    def _take_batch(self) -> tuple[list[tuple[Path, int]], list[RawClick | RawSignals], int]:
        """Lock and read whole segments until the batch is full."""
        taken: list[tuple[Path, int]] = []
        clicks: list[RawClick | RawSignals] = []
        bad = 0
        for path in pending_segments(self.directory):
            if clicks and len(clicks) >= self.max_clicks:
                break
            fd = try_lock(path)
            if fd is None:
                continue
            data = _read_fd(fd)
            taken.append((path, fd))
            seg_clicks, seg_bad = parse_segment(data, path.name)
            clicks.extend(seg_clicks)
            bad += seg_bad
            if path.suffix == ".open":
                metrics.JOURNAL_REPLAYED.inc()
        return taken, clicks, bad

    async def flush_once(self) -> FlushResult | None:
        """Flush one batch; None when the journal is empty. Raises when PostgreSQL fails."""
        with few_collections(BATCH_COLLECTIONS):
            return await self._flush_batch()

    async def _flush_batch(self) -> FlushResult | None:
        cpu = time.thread_time
        t0 = cpu()
        taken, clicks, bad = self._take_batch()
        if not taken:
            return None
        try:
            started = time.perf_counter()
            t1 = cpu()
            rows = [self.enricher.row(c) for c in clicks if isinstance(c, RawClick)]
            signal_rows = [r for r in (self.enricher.signal_row(s) for s in clicks
                                       if isinstance(s, RawSignals)) if r is not None]
            t2 = cpu()
            stored = bots = dups = 0
            if rows or signal_rows:
                conn = await self._connection()
            if rows:
                stored, bots, dups = await store_clicks(conn, rows, self._partitions)
            if signal_rows:
                await queries.store_signals(conn, signal_rows)
            metrics.FLUSH_SECONDS.observe(time.perf_counter() - started)
            # This thread's CPU only: the waits for PostgreSQL count in its own processes.
            metrics.FLUSH_CPU.labels(stage="read").inc(t1 - t0)
            metrics.FLUSH_CPU.labels(stage="enrich").inc(t2 - t1)
            metrics.FLUSH_CPU.labels(stage="store").inc(cpu() - t2)
            for path, _fd in taken:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
        finally:
            for _path, fd in taken:
                os.close(fd)
        metrics.CLICKS.labels(outcome="recorded").inc(stored - bots - dups)
        metrics.CLICKS.labels(outcome="bot").inc(bots)
        metrics.CLICKS.labels(outcome="duplicate").inc(dups)
        return FlushResult(len(clicks), stored, bots, dups, bad)

    def _refresh_geo(self) -> None:
        """Pick up changed GeoIP files and publish each database's age."""
        self.enricher.geo.maybe_reload()
        ages = self.enricher.geo.ages_s()
        for name in self._geo_names - set(ages):
            metrics.GEOIP_AGE.remove(name)
        for name, age in ages.items():
            metrics.GEOIP_AGE.labels(database=name).set(age)
        self._geo_names = set(ages)

    def update_backlog(self, force: bool = False) -> int:
        """Count journaled clicks not yet flushed, and refresh the geo databases (at most
        every second unless forced)."""
        now = time.monotonic()
        if not force and now - self._backlog_checked < 1.0:
            return -1
        self._backlog_checked = now
        self._refresh_geo()
        segments = clicks = 0
        counted: dict[str, int] = {}
        for path in pending_segments(self.directory):
            # A sealed segment never changes: read once, however long an outage keeps it.
            lines = self._sealed_lines.get(path.name)
            if lines is None:
                try:
                    lines = path.read_bytes().count(b"\n")
                except FileNotFoundError:
                    continue
            if path.name.endswith(SEALED_SUFFIX):
                counted[path.name] = lines
            if lines:
                clicks += lines
                segments += 1
        self._sealed_lines = counted
        metrics.JOURNAL_BACKLOG_SEGMENTS.set(segments)
        metrics.JOURNAL_BACKLOG_CLICKS.set(clicks)
        return clicks

    async def run(self) -> None:
        while True:
            try:
                result = await self.flush_once()
                self._backoff = 0.0
                metrics.DATABASE_UP.set(1)
            except db.RETRYABLE as exc:
                metrics.FLUSH_FAILURES.inc()
                metrics.DATABASE_UP.set(0)
                await self._drop_connection()
                self._backoff = min(max(self._backoff * 2, 0.1), 5.0)
                log.warning("flush failed (%s); retrying in %.1fs", exc, self._backoff)
                self.update_backlog()
                await asyncio.sleep(self._backoff)
                continue
            except Exception:
                metrics.FLUSH_FAILURES.inc()
                log.exception("flush failed unexpectedly")
                await self._drop_connection()
                await asyncio.sleep(5.0)
                continue
            self.update_backlog()
            if result is None or result.clicks < self.max_clicks:
                await asyncio.sleep(self.interval_s)

    async def drain(self, within_s: float = 30.0) -> bool:
        """Flush until the journal is empty; False if it could not be emptied in time.

        Segments still held by live workers are waited for: at shutdown the workers seal theirs
        as they stop (a terminal's Ctrl-C reaches every process at once).
        """
        deadline = time.monotonic() + within_s
        while time.monotonic() < deadline:
            try:
                if await self.flush_once() is None:
                    if next(pending_segments(self.directory), None) is None:
                        self.update_backlog(force=True)
                        return True
                    await asyncio.sleep(0.05)
            except db.RETRYABLE as exc:
                log.warning("flush during drain failed: %s", exc)
                await self._drop_connection()
                await asyncio.sleep(0.5)
        self.update_backlog(force=True)
        return False

    def start(self) -> None:
        self._task = asyncio.create_task(self.run(), name="flusher")

    async def close(self, drain_timeout: float = 30.0) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        ok = await self.drain(drain_timeout)
        if not ok:
            log.warning("journal not fully flushed at shutdown; it will be replayed at start")
        if self._conn is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._conn.close(), timeout=2)
            self._conn = None


def _read_fd(fd: int) -> bytes:
    size = os.fstat(fd).st_size
    chunks = []
    offset = 0
    while offset < size:
        chunk = os.pread(fd, size - offset, offset)
        if not chunk:
            break
        chunks.append(chunk)
        offset += len(chunk)
    return b"".join(chunks)
