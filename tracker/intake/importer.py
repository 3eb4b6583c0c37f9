"""`refguard import`: historical clicks and conversions from NDJSON (DESIGN section 6).

Clicks are enriched exactly as live ones (the same `Enricher`: geo, device, fingerprint, bots)
and stored with the flusher's idempotent insert; a click without a `click_id` gets one derived
from its content, so importing the same file twice adds nothing. Conversions go through the
API's validation and idempotent store. A bad line is reported with its number and skipped.
Customers' events (tracker.asks.events.import_events) are read and stored a batch at a time
with the same pieces (numbered_lines, Batches, ImportResult).
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import json
import multiprocessing as mp
import operator
import os
import re
import socket
import sys
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Generic, TextIO, TypeVar

import asyncpg
import orjson

from tracker.clicks.enrich import MAX_QUERY, Enricher
from tracker.clicks.flusher import Partitions, prepare_rows, store_prepared
from tracker.clicks.journal import RawClick
from tracker.clicks.queries import reset_click_codecs, use_click_codecs
from tracker.collector import BATCH_COLLECTIONS, few_collections
from tracker.identity import email_hash
from tracker.intake import queries
from tracker.intake.conversions import ConversionInput, FieldInvalid, parse_conversion
from tracker.settings import FLUSH_MAX_CLICKS

BATCH = FLUSH_MAX_CLICKS  # lines a batch (and a worker's chunk), as the flusher takes them
# Lines enriched between two yields to the event loop, in one process: each of a batch's
# round trips to PostgreSQL (its transactions, the probe, each partition's COPY) waits for the
# next yield, PostgreSQL idle meanwhile (250 lines, 3-4 ms, cost 10-15% of the import's rate).
SLICE = 50
PARALLEL_BYTES = 8 << 20  # a clicks file this big is enriched by worker processes
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
# A line PostgreSQL refuses (a value out of a type's range, a constraint) is a bad line.
REFUSED = (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError)
# The fields a click is made of (parse_click_line), which must be text PostgreSQL can store.
_TEXT_FIELDS = ("ts", "code", "ip", "user_agent", "accept_language", "referer", "visitor_id",
                "click_id", "query")
_RAW_ORDER = operator.attrgetter("ts_us", "click_id")
_UUID = re.compile(r"[0-9a-fA-F-]{36}")
T = TypeVar("T")


class LineError(ValueError):
    pass


@dataclass
class ImportResult:
    read: int = 0
    stored: int = 0
    skipped_existing: int = 0
    bad: list[str] = field(default_factory=list)


class Progress:
    """A progress bar on a terminal, a plain line every few seconds otherwise."""

    def __init__(self, label: str, total_bytes: int, out: TextIO = sys.stderr) -> None:
        self.label = label
        self.total = max(total_bytes, 1)
        self.out = out
        self.tty = out.isatty()
        self.started = time.monotonic()
        self._last = 0.0

    def update(self, done_bytes: int, items: int, *, final: bool = False) -> None:
        now = time.monotonic()
        if not final and now - self._last < (0.2 if self.tty else 5.0):
            return
        self._last = now
        fraction = min(1.0, done_bytes / self.total)
        rate = items / max(now - self.started, 1e-9)
        if self.tty:
            bar = "#" * int(fraction * 30)
            self.out.write(f"\r{self.label} [{bar:<30}] {fraction:6.1%} {items:,} "
                           f"({rate:,.0f}/s)")
            if final:
                self.out.write("\n")
        else:
            self.out.write(f"{self.label}: {fraction:.1%} {items:,} lines ({rate:,.0f}/s)\n")
        self.out.flush()


def numbered_lines(path: Path) -> Iterator[tuple[int, int, str]]:
    """(line number, bytes read so far, text) of each non-blank line."""
    done = 0
    with path.open("rb") as fh:
        for number, raw in enumerate(fh, 1):
            done += len(raw)
            text = raw.decode("utf-8", "replace").strip()
            if text:
                yield number, done, text


def _chunks(path: Path, size: int) -> Iterator[tuple[list[tuple[int, str]], int]]:
    """Lists of up to `size` (line number, text), with the bytes read so far."""
    chunk: list[tuple[int, str]] = []
    done = 0
    for number, done, text in numbered_lines(path):
        chunk.append((number, text))
        if len(chunk) >= size:
            yield chunk, done
            chunk = []
    if chunk:
        yield chunk, done


def derived_click_id(obj: dict[str, Any], ts: datetime) -> str:
    """A UUIDv7-shaped id from the click's content and time: the same line, the same id."""
    digest = hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()
    ms = int(ts.timestamp() * 1000) & 0xFFFF_FFFF_FFFF
    variant = "89ab"[int(digest[3], 16) & 3]
    return (f"{ms >> 16:08x}-{ms & 0xFFFF:04x}-7{digest[:3]}-{variant}{digest[4:7]}-"
            f"{digest[7:19]}")


def _is_ip(text: str) -> bool:
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, text)
        except (OSError, ValueError):  # (ValueError: a NUL in the text)
            continue
        return True
    return False


def _json_line(text: str) -> object:
    """A line's JSON value: read by orjson (three times as fast), or by the json module where
    orjson refuses what json reads (NaN, a lone surrogate, an integer past 64 bits, nesting
    past 1,024), so every line reads as it always did (a derived click id included)."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        pass
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError):  # (nested deeper than the parser goes)
        raise LineError("not valid JSON") from None
    if isinstance(obj, dict):
        for key in _TEXT_FIELDS:
            value = obj.get(key)
            if isinstance(value, str) and not _encodable(value):
                raise LineError(f"{key} holds a lone surrogate (\\ud800-\\udfff), not text")
    return obj


def _encodable(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def parse_click_line(text: str, links: dict[str, tuple[int, int, int]],
                     latest: datetime | None = None) -> RawClick:
    obj = _json_line(text)
    if not isinstance(obj, dict):
        raise LineError("not a JSON object")
    for key in ("ts", "code", "ip", "user_agent"):
        if not isinstance(obj.get(key), str):
            raise LineError(f"{key} is required (a string)")
    try:
        ts = datetime.fromisoformat(obj["ts"])
    except ValueError:
        raise LineError("ts is not an RFC 3339 timestamp") from None
    if ts.tzinfo is None:
        raise LineError("ts needs a time zone (Z or +hh:mm)")
    if latest is None:
        latest = datetime.now(UTC) + timedelta(minutes=5)
    if not EARLIEST <= ts <= latest:
        raise LineError("ts is out of range")
    link = links.get(obj["code"])
    if link is None:
        raise LineError(f"unknown link code {obj['code'][:64]!r}")
    ip = obj["ip"]
    if not _is_ip(ip):  # (inet_pton: the C check; the enricher normalises the text, cached)
        raise LineError("ip is not an IP address")
    optional: dict[str, str] = {}
    for key, limit in (("accept_language", 256), ("referer", 2048), ("visitor_id", 64),
                       ("click_id", 36), ("query", MAX_QUERY)):
        value = obj.get(key)
        if value is None:
            continue
        if not isinstance(value, str) or len(value) > limit:
            raise LineError(f"{key} must be a string of at most {limit} characters")
        optional[key] = value
    click_id = optional.get("click_id")
    if click_id is not None and not _UUID.fullmatch(click_id):
        raise LineError("click_id must be a UUID")
    program_id, link_id, referrer_id = link
    us = int(ts.timestamp()) * 1_000_000 + ts.microsecond
    # In RawClick's order, by position: binding its 21 fields by keyword took a fifth of the
    # CPU of reading a line. What an import does not carry (proxies' headers, client hints,
    # Purpose, Accept, the page mode) is empty. The query is the landing URL's (its ad click
    # ids and utm tags say whether the visit was bought), without a leading "?".
    return RawClick(
        us, (click_id or derived_click_id(obj, ts)).lower(), program_id, link_id, referrer_id,
        obj["code"], optional.get("visitor_id", ""), False, ip, "", "", obj["user_agent"],
        optional.get("accept_language", ""), optional.get("referer", ""), "", "", "", "", "",
        optional.get("query", "").removeprefix("?"), "",
    )


@dataclass(frozen=True, slots=True)
class _Enrich:
    """Parse and enrich lines of a clicks file: (rows ready for `store_clicks`, bad lines).
    Pickles to worker processes (the enricher travels as its recipe, see Enricher)."""

    links: dict[str, tuple[int, int, int]]
    enricher: Enricher
    latest: datetime

    def __call__(self, lines: list[tuple[int, str]]
                 ) -> tuple[list[list[object]], list[tuple[int, str]]]:
        raws: list[RawClick] = []
        bad: list[tuple[int, str]] = []
        for number, text in lines:
            try:
                raws.append(parse_click_line(text, self.links, self.latest))
            except LineError as exc:
                bad.append((number, str(exc)))
        # Enriched in the file's order, where a visitor's clicks follow each other and the
        # enricher's caches are warm (in time order, a worker's 5,000-line chunk cost 2-3 us a
        # click more), then put in time order by the lines' keys, where prepare_rows compares
        # the rows' own: its sort then finds the order made (by time, then click id; stable).
        row = self.enricher.row
        rows = [row(raw, source="import") for raw in raws]
        keys = list(map(_RAW_ORDER, raws))
        return [rows[i] for i in sorted(range(len(rows)), key=keys.__getitem__)], bad


_WORKER: dict[str, _Enrich] = {}  # in an import worker process: its `_Enrich`


def _start_worker(enrich: _Enrich) -> None:
    _WORKER["enrich"] = enrich
    gc.set_threshold(*BATCH_COLLECTIONS)


def _enrich_in_worker(lines: list[tuple[int, str]]
                      ) -> tuple[list[list[object]], list[tuple[int, str]]]:
    """A chunk's rows prepared for `store_prepared` (time order, duplicates within the chunk
    marked: the worker's CPU, not the storing process's), and its bad lines."""
    rows, bad = _WORKER["enrich"](lines)
    return prepare_rows(rows), bad


def import_workers(path: Path) -> int:
    """Processes worth starting for a clicks file: none for a small one, where starting them
    would cost more than they save, nor with fewer than 4 CPUs; else one per CPU beyond the two
    that storing needs (this process and its PostgreSQL backend), at most 4.

    Workers add CPU of their own (29 us of Python a click with two of them, 19-20 us in one
    process, measured with bench.attribution --import-only): each prepared row is pickled in the
    worker and unpickled here (135 bytes; 2.9 and 1.0 us a row at load 20), each worker compiles
    the user-agent and crawler rules again, and this process still encodes the probe and the
    COPY. So they pay only where CPUs would otherwise idle: on 2 CPUs one process imports faster."""
    cpus = os.cpu_count() or 1
    if path.stat().st_size < PARALLEL_BYTES or cpus < 4:
        return 1
    return min(cpus - 2, 4)


async def import_clicks(conn: asyncpg.Connection, path: Path, enricher: Enricher,
                        progress: Callable[[int, int, bool], None] | None = None,
                        *, workers: int = 1) -> ImportResult:
    """Load a clicks file. With `workers` > 1, that many processes parse and enrich chunks of
    lines while this one stores the previous chunks; either way, PostgreSQL stores one batch
    while the next is being prepared."""
    await use_click_codecs(conn)  # (the rows' addresses come packed, times as ints)
    with few_collections(BATCH_COLLECTIONS):
        result = await _load_clicks(conn, path, enricher, progress, workers)
    # (After a failure the codecs stay: the same values, decoded in Python.)
    await reset_click_codecs(conn)
    return result


async def _load_clicks(conn: asyncpg.Connection, path: Path, enricher: Enricher,
                       progress: Callable[[int, int, bool], None] | None, workers: int
                       ) -> ImportResult:
    links = await queries.link_ids(conn)
    enrich = _Enrich(links, enricher, datetime.now(UTC) + timedelta(minutes=5))
    result = ImportResult()
    months = Partitions()
    storing: asyncio.Task[tuple[int, int, int]] | None = None
    queued = 0
    done = 0  # bytes of the file read

    async def store(rows: list[list[object]], bad: list[tuple[int, str]]) -> None:
        """Store a chunk of prepared rows, once the previous one is stored (in order)."""
        nonlocal storing, queued
        result.bad.extend(f"{path.name}:{number}: {reason}" for number, reason in bad)
        if storing is not None:
            result.stored += (await storing)[0]
            storing = None
        if rows:
            queued += len(rows)
            storing = asyncio.create_task(store_prepared(conn, rows, months))
        if progress:
            progress(done, result.read, False)

    if workers > 1:
        loop = asyncio.get_running_loop()
        in_flight: deque[asyncio.Future[tuple[list[list[object]],
                                              list[tuple[int, str]]]]] = deque()
        with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"),
                                 initializer=_start_worker, initargs=(enrich,)) as pool:
            for lines, done in _chunks(path, BATCH):  # noqa: B007 (store reports it)
                result.read += len(lines)
                in_flight.append(loop.run_in_executor(pool, _enrich_in_worker, lines))
                while len(in_flight) > 2 * workers:
                    await store(*await in_flight.popleft())
            while in_flight:
                await store(*await in_flight.popleft())
    else:
        rows: list[list[object]] = []
        bad: list[tuple[int, str]] = []
        for lines, done in _chunks(path, SLICE):  # noqa: B007 (store reports it)
            result.read += len(lines)
            more, wrong = enrich(lines)
            rows += more
            bad += wrong
            if len(rows) >= BATCH:
                await store(prepare_rows(rows), bad)
                rows, bad = [], []
            else:
                await asyncio.sleep(0)  # the store task's COPY data keeps flowing
        await store(prepare_rows(rows), bad)
    await store([], [])
    result.skipped_existing = queued - result.stored
    if progress:
        progress(done, result.read, True)
    if result.stored:
        # Bulk-loaded rows: fresh planner statistics, or the jobs' joins plan for one row.
        await queries.analyze_clicks(conn)
    return result


def _conversion_line(text: str, programs: dict[str, int]) -> tuple[int, ConversionInput] | str:
    """A conversion line's program id and conversion, or why it is bad."""
    try:
        conv = parse_conversion(json.loads(text), require_time=True)
    except FieldInvalid as exc:
        return str(exc)
    except (ValueError, RecursionError):  # (nested deeper than the parser goes)
        return "not valid JSON"
    program_id = programs.get(conv.program)
    if program_id is None:
        return f"unknown program {conv.program!r}"
    return program_id, conv


async def _store_reversal(conn: asyncpg.Connection,
                          item: tuple[int, ConversionInput, bytes | None], where: str,
                          result: ImportResult) -> None:
    """A refund or chargeback line (queries.store_checked: linked to its customer's purchase
    when it names none): stored once its purchase allows it, else a bad line."""
    program_id, conv, digest = item
    try:
        stored = await queries.store_checked(conn, program_id, conv, digest, source="import")
    except REFUSED as exc:
        result.bad.append(f"{where}: refused by the database: {exc}")
        return
    if isinstance(stored, queries.ReversalProblem):
        result.bad.append(f"{where}: {stored.message}")
    elif stored.conflict:
        result.bad.append(f"{where}: event {conv.event_id!r} exists with another body")
    elif stored.created:
        result.stored += 1
    else:
        result.skipped_existing += 1


@dataclass
class Batches(Generic[T]):
    """Lines of an import stored a batch at a time by `store`, which answers per item
    "created", "existing" or "conflict" (queries.store_conversions, events alike), or any other
    text for a line the database refused; counted in `result`, bad lines by number."""

    name: str  # the file's name, for line errors
    store: Callable[[list[T]], Awaitable[list[str]]]
    result: ImportResult
    items: list[T] = field(default_factory=list)
    lines: list[tuple[int, str]] = field(default_factory=list)  # (line number, event id)

    async def add(self, number: int, event_id: str, item: T) -> bool:
        """Queue a line; True when that stored a full batch."""
        self.items.append(item)
        self.lines.append((number, event_id))
        if len(self.items) < BATCH:
            return False
        await self.flush()
        return True

    async def flush(self) -> None:
        if not self.items:
            return
        try:
            outcome = await self.store(self.items)
        except REFUSED:
            # A value PostgreSQL refuses that validation let through: find the line, keep the
            # rest (each batch is one transaction, so nothing of it was stored).
            outcome = []
            for item in self.items:
                try:
                    outcome += await self.store([item])
                except REFUSED as exc:
                    outcome.append(f"refused by the database: {exc}")
        for (number, event_id), status in zip(self.lines, outcome, strict=True):
            if status == "created":
                self.result.stored += 1
            elif status == "existing":
                self.result.skipped_existing += 1
            elif status == "conflict":
                self.result.bad.append(f"{self.name}:{number}: event {event_id!r} exists "
                                       "with another body")
            else:
                self.result.bad.append(f"{self.name}:{number}: {status}")
        self.items.clear()
        self.lines.clear()


async def import_conversions(conn: asyncpg.Connection, path: Path, secret_key: bytes,
                             progress: Callable[[int, int, bool], None] | None = None
                             ) -> ImportResult:
    programs = await queries.program_ids(conn)
    result = ImportResult()
    done = 0

    async def store(items: list[tuple[int, ConversionInput, bytes | None]]) -> list[str]:
        return await queries.store_conversions(conn, items, source="import")

    batches = Batches(path.name, store, result)
    for number, done, text in numbered_lines(path):
        result.read += 1
        parsed = _conversion_line(text, programs)
        if isinstance(parsed, str):
            result.bad.append(f"{path.name}:{number}: {parsed}")
            continue
        program_id, conv = parsed
        digest = email_hash(secret_key, conv.email) if conv.email else None
        if conv.type in queries.REVERSAL_TYPES:
            # Checked against its purchase, alone, after the lines before it are stored: the
            # one it names, or for one naming only its customer the purchase
            # queries.resolve_original finds among that customer's stored conversions.
            await batches.flush()
            await _store_reversal(conn, (program_id, conv, digest), f"{path.name}:{number}",
                                  result)
            continue
        if await batches.add(number, conv.event_id, (program_id, conv, digest)) and progress:
            progress(done, result.read, False)
    await batches.flush()
    if progress:
        progress(done, result.read, True)
    if result.stored:
        # Bulk-loaded rows: fresh planner statistics, or the jobs' joins plan for one row.
        await queries.analyze_conversions(conn)
    return result
