"""`refguard import`: historical clicks and conversions from NDJSON (DESIGN section 6).

Clicks are enriched exactly as live ones (the same `Enricher`: geo, device, fingerprint, bots)
and stored with the flusher's idempotent insert; a click without a `click_id` gets one derived
from its content, so importing the same file twice adds nothing. Conversions go through the
API's validation and idempotent store. A bad line is reported with its number and skipped.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import socket
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

import asyncpg

from tracker.conversions import (
    ConversionInput,
    ConversionInvalid,
    parse_conversion,
    store_conversions,
)
from tracker.enrich import Enricher
from tracker.flusher import store_clicks
from tracker.identity import email_hash
from tracker.journal import RawClick

BATCH = 5000
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
_UUID_CHARS = set("0123456789abcdefABCDEF-")


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


def _lines(path: Path) -> Iterator[tuple[int, int, str]]:
    """(line number, bytes read so far, text) of each non-blank line."""
    done = 0
    with path.open("rb") as fh:
        for number, raw in enumerate(fh, 1):
            done += len(raw)
            text = raw.decode("utf-8", "replace").strip()
            if text:
                yield number, done, text


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
        except OSError:
            continue
        return True
    return False


def parse_click_line(text: str, links: dict[str, tuple[int, int, int]],
                     latest: datetime | None = None) -> RawClick:
    try:
        obj = json.loads(text)
    except ValueError:
        raise LineError("not valid JSON") from None
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
                       ("click_id", 36)):
        value = obj.get(key)
        if value is None:
            continue
        if not isinstance(value, str) or len(value) > limit:
            raise LineError(f"{key} must be a string of at most {limit} characters")
        optional[key] = value
    click_id = optional.get("click_id")
    if click_id is not None and (len(click_id) != 36 or not set(click_id) <= _UUID_CHARS):
        raise LineError("click_id must be a UUID")
    program_id, link_id, referrer_id = link
    us = int(ts.timestamp()) * 1_000_000 + ts.microsecond
    return RawClick(
        ts_us=us, click_id=(click_id or derived_click_id(obj, ts)).lower(),
        program_id=program_id, link_id=link_id, referrer_id=referrer_id, code=obj["code"],
        visitor_id=optional.get("visitor_id", ""), new_visitor=False, peer=ip,
        x_forwarded_for="", forwarded="", user_agent=obj["user_agent"],
        accept_language=optional.get("accept_language", ""),
        referer=optional.get("referer", ""), sec_ch_ua="", sec_ch_ua_mobile="",
        sec_ch_ua_platform="", purpose="", accept="", query="", mode="",
    )


async def import_clicks(conn: asyncpg.Connection, path: Path, enricher: Enricher,
                        progress: Callable[[int, int, bool], None] | None = None
                        ) -> ImportResult:
    links = {r["code"]: (r["program_id"], r["id"], r["referrer_id"]) for r in await conn.fetch(
        "SELECT code, program_id, id, referrer_id FROM links")}
    result = ImportResult()
    batch: list[tuple[object, ...]] = []
    months: set[tuple[int, int]] = set()
    done = 0
    # PostgreSQL stores one batch while this process parses and enriches the next: the store
    # runs as a task, and parsing yields to the event loop now and then so the task's COPY
    # data keeps flowing. Two CPUs, two stages.
    storing: asyncio.Task[tuple[int, int, int]] | None = None

    async def settle() -> None:
        nonlocal storing
        if storing is not None:
            stored, _bots, _dups = await storing
            result.stored += stored
            storing = None

    queued = 0

    async def flush() -> None:
        nonlocal storing, batch, queued
        await settle()
        if batch:
            full, batch = batch, []
            queued += len(full)
            storing = asyncio.create_task(store_clicks(conn, full, months))

    latest = datetime.now(UTC) + timedelta(minutes=5)
    for number, done, text in _lines(path):
        result.read += 1
        if result.read % 250 == 0:
            await asyncio.sleep(0)
        try:
            raw = parse_click_line(text, links, latest)
        except LineError as exc:
            result.bad.append(f"{path.name}:{number}: {exc}")
            continue
        batch.append(enricher.row(raw, source="import"))
        if len(batch) >= BATCH:
            await flush()
            if progress:
                progress(done, result.read, False)
    await flush()
    await settle()
    result.skipped_existing = queued - result.stored
    if progress:
        progress(done, result.read, True)
    if result.stored:
        # Bulk-loaded rows: fresh planner statistics, or the jobs' joins plan for one row.
        await conn.execute("ANALYZE clicks")
    return result


async def import_conversions(conn: asyncpg.Connection, path: Path, secret_key: bytes,
                             progress: Callable[[int, int, bool], None] | None = None
                             ) -> ImportResult:
    programs = {r["slug"]: r["id"] for r in await conn.fetch("SELECT slug, id FROM programs")}
    result = ImportResult()
    done = 0
    batch: list[tuple[int, ConversionInput, bytes | None]] = []

    async def flush() -> None:
        if batch:
            outcome = await store_conversions(conn, batch, source="import")
            for (number, conv), status in zip(numbers, outcome, strict=True):
                if status == "created":
                    result.stored += 1
                elif status == "existing":
                    result.skipped_existing += 1
                else:
                    result.bad.append(f"{path.name}:{number}: event {conv.event_id!r} exists "
                                      "with another body")
            batch.clear()
            numbers.clear()

    numbers: list[tuple[int, ConversionInput]] = []
    for number, done, text in _lines(path):
        result.read += 1
        try:
            body = json.loads(text)
            conv = parse_conversion(body, require_time=True)
        except ValueError as exc:
            reason = str(exc) if isinstance(exc, ConversionInvalid) else "not valid JSON"
            result.bad.append(f"{path.name}:{number}: {reason}")
            continue
        program_id = programs.get(conv.program)
        if program_id is None:
            result.bad.append(f"{path.name}:{number}: unknown program {conv.program!r}")
            continue
        digest = email_hash(secret_key, conv.email) if conv.email else None
        batch.append((program_id, conv, digest))
        numbers.append((number, conv))
        if len(batch) >= BATCH:
            await flush()
            if progress:
                progress(done, result.read, False)
    await flush()
    if progress:
        progress(done, result.read, True)
    if result.stored:
        # Bulk-loaded rows: fresh planner statistics, or the jobs' joins plan for one row.
        await conn.execute("ANALYZE conversions, customer_visitors")
    return result
