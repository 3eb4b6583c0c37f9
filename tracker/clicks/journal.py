"""The local click journal: append-only segment files, one writer per worker process.

The redirect handler appends one line per click before it answers, so an answered click is in the
kernel's page cache and survives a kill -9 of the worker. The lines of the clicks handled in one
event-loop iteration are written together (`submit`: one `os.write` in a callback scheduled by the
first of them, which every handler of the group awaits before its 302): under concurrency one
syscall serves many clicks, and no click is answered before its line is written.
Every `rotate_ms` (the flush interval, or the fsync interval if shorter) the writer seals its
segment (rename `.open` -> `.sealed`), starts a new one and fdatasyncs the sealed one in a thread:
that bounds what an OS crash could take, and the sync never holds the inode lock of the file the
redirect writes to (an fdatasync of the active segment would, and writes stall behind it). The
flusher (tracker.clicks.flusher) copies sealed segments into PostgreSQL and deletes them only
after the commit.
A worker holds an exclusive flock on its open segment; an `.open` segment nobody holds belongs
to a dead worker and is flushed like a sealed one, so a restart replays everything that was not
yet committed.

Line format: fields joined by NUL, one click per line (see `FIELDS`). A field that itself
contains NUL or a newline (never from a well-formed HTTP request, but possible) makes the line
fall back to JSON, so nothing is ever lost to the framing.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

from tracker.metrics import JOURNAL_WRITE_FAILURES

log = logging.getLogger(__name__)

VERSION = "1"
SEP = "\x00"
FIELDS = (
    "version",
    "ts_us",
    "click_id",
    "program_id",
    "link_id",
    "referrer_id",
    "code",
    "visitor_id",
    "new_visitor",
    "peer",
    "x_forwarded_for",
    "forwarded",
    "user_agent",
    "accept_language",
    "referer",
    "sec_ch_ua",
    "sec_ch_ua_mobile",
    "sec_ch_ua_platform",
    "purpose",
    "accept",
    "query",
    "mode",
)
SIGNALS_VERSION = "S"
SIGNAL_FIELDS = ("version", "ts_us", "click_id", "program_id", "signals")
N_SEPARATORS = len(FIELDS) - 1
OPEN_SUFFIX = ".open"
SEALED_SUFFIX = ".sealed"


class RawClick(NamedTuple):
    """One journal line, as the redirect saw it (no enrichment yet).

    A NamedTuple rather than a frozen dataclass: the flusher builds one per click.
    """

    ts_us: int
    click_id: str
    program_id: int
    link_id: int
    referrer_id: int
    code: str
    visitor_id: str  # the id from a validly signed rg_vid cookie (or a new one), unsigned
    new_visitor: bool
    peer: str
    # All lines of the header, in their order, joined by ", " (one list, as RFC 9110 reads
    # repeated fields): a trusted proxy's own line may follow the client's.
    x_forwarded_for: str
    forwarded: str
    user_agent: str
    accept_language: str
    referer: str
    sec_ch_ua: str
    sec_ch_ua_mobile: str
    sec_ch_ua_platform: str
    purpose: str
    accept: str
    query: str
    mode: str  # "page" when the browser-fingerprint page answered instead of a 302


class RawSignals(NamedTuple):
    """Client signals sent by the browser-fingerprint page for an earlier click."""

    ts_us: int
    click_id: str
    program_id: int
    signals: str  # JSON


class JournalFormatError(ValueError):
    pass


def encode_fallback(fields: list[str]) -> str:
    """JSON form of a line whose fields contain the framing characters."""
    return json.dumps(fields, ensure_ascii=True) + "\n"


def decode_line(line: str) -> RawClick | RawSignals:
    if line.startswith(SIGNALS_VERSION + SEP):
        parts = line.split(SEP)
        if len(parts) != len(SIGNAL_FIELDS):
            raise JournalFormatError("bad signals line")
        try:
            return RawSignals(int(parts[1]), parts[2], int(parts[3]), parts[4])
        except ValueError as exc:
            raise JournalFormatError(f"bad signals line: {exc}") from None
    if line.startswith("["):
        try:
            parts = json.loads(line)
        except ValueError as exc:
            raise JournalFormatError(f"bad JSON journal line: {exc}") from None
    else:
        parts = line.split(SEP)
    if len(parts) != len(FIELDS) or parts[0] != VERSION:
        raise JournalFormatError(f"journal line has {len(parts)} fields, expected {len(FIELDS)}")
    try:
        # Positional, in FIELDS order (keywords cost a third of the flusher's parse).
        return RawClick(int(parts[1]), parts[2], int(parts[3]), int(parts[4]), int(parts[5]),
                        parts[6], parts[7], parts[8] == "1", *parts[9:])
    except ValueError as exc:
        raise JournalFormatError(f"bad journal line: {exc}") from None


def parse_segment(data: bytes, name: str) -> tuple[list[RawClick | RawSignals], int]:
    """The clicks in a segment's bytes and the number of unreadable lines (logged, skipped).

    A last line without its newline can only come from a torn write during an OS crash; that
    click was never answered (the answer follows the write), so it is skipped.
    """
    lines = data.decode("utf-8", "surrogateescape").split("\n")
    tail = lines.pop()  # "" when the data ends with a newline
    bad = 0
    if tail:
        log.error("journal %s: incomplete last line skipped", name)
        bad += 1
    clicks: list[RawClick | RawSignals] = []
    make = RawClick._make
    n_fields = len(FIELDS)
    for n, line in enumerate(lines, 1):
        parts: list[object] = line.split(SEP)  # type: ignore[assignment]
        if len(parts) == n_fields and parts[0] == VERSION:
            # A click's line read here as decode_line reads it, without a call per line and
            # with RawClick made from the split list itself, its fields converted in place (a
            # fifth of the parse, then a tenth of what was left).
            try:
                parts[1] = int(parts[1])  # type: ignore[call-overload]
                parts[3] = int(parts[3])  # type: ignore[call-overload]
                parts[4] = int(parts[4])  # type: ignore[call-overload]
                parts[5] = int(parts[5])  # type: ignore[call-overload]
            except ValueError:
                pass  # (decode_line says why)
            else:
                parts[8] = parts[8] == "1"
                del parts[0]
                clicks.append(make(parts))
                continue
        if not line:
            continue
        try:
            clicks.append(decode_line(line))
        except JournalFormatError as exc:
            bad += 1
            log.error("journal %s line %d skipped: %s", name, n, exc)
    return clicks, bad


class ClickIds:
    """Time-ordered UUIDv7 strings, cheap enough for the redirect hot path.

    48-bit Unix milliseconds, then 26 random bits fixed per process and a 48-bit counter that
    starts at a random value. Unique within a process by the counter, across processes by the
    random bits; formatting the millisecond prefix once per millisecond keeps it to one f-string.
    """

    __slots__ = ("_counter", "_last_ms", "_mid", "_prefix")

    def __init__(self) -> None:
        rnd = int.from_bytes(os.urandom(10), "big")
        self._mid = f"7{rnd >> 68 & 0xFFF:03x}-{0x8000 | (rnd >> 54 & 0x3FFF):04x}-"
        self._counter = rnd & 0xFFFF_FFFF_FFFF
        self._last_ms = -1
        self._prefix = ""

    def new(self, ns: int) -> str:
        ms = ns // 1_000_000
        if ms != self._last_ms:
            self._last_ms = ms
            self._prefix = f"{ms >> 16:08x}-{ms & 0xFFFF:04x}-{self._mid}"
        self._counter = c = (self._counter + 1) & 0xFFFF_FFFF_FFFF
        return f"{self._prefix}{c:012x}"


def pending_segments(directory: Path) -> Iterator[Path]:
    """Sealed segments, then open ones (only usable if their writer is gone), oldest first."""
    try:
        names = sorted(os.listdir(directory))
    except FileNotFoundError:
        return
    for name in names:
        if name.endswith(SEALED_SUFFIX):
            yield directory / name
    for name in names:
        if name.endswith(OPEN_SUFFIX):
            yield directory / name


def try_lock(path: Path) -> int | None:
    """Open and exclusively lock a segment; None if its writer (or another flusher) holds it."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


class JournalWriter:
    """The append side, owned by one worker process."""

    def __init__(
        self, directory: Path, *, fsync_ms: int = 100, max_lines: int = 5000, rotate_ms: int = 100
    ) -> None:
        self.directory = directory
        self.fsync_s = fsync_ms / 1000
        self.rotate_s = min(rotate_ms, fsync_ms) / 1000 if fsync_ms > 0 else rotate_ms / 1000
        self.max_lines = max_lines
        self._tag = f"{socket.gethostname()}-{os.getpid()}-{time.time_ns():x}"
        self._seq = 0
        self._fd = -1
        self._path: Path | None = None
        self.lines = 0  # in the open segment
        self._tasks: list[asyncio.Task[None]] = []
        self._closing: set[asyncio.Future[None]] = set()
        # The group of lines waiting for their write (see `submit`).
        self._group: list[bytes] = []
        self._group_done: asyncio.Future[frozenset[int]] | None = None
        # A torn line whose newline could not be written yet: the next line must not join it.
        self._torn = False

    def open(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self._fd, self._path = self._new_segment()

    def _new_segment(self) -> tuple[int, Path]:
        self._seq += 1
        stem = f"{self._tag}-{self._seq:08d}"
        tmp = self.directory / (stem + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_EXCL, 0o600)
        # Locked before it gets its `.open` name, so a flusher never sees it unlocked.
        fcntl.flock(fd, fcntl.LOCK_EX)
        path = self.directory / (stem + OPEN_SUFFIX)
        os.rename(tmp, path)
        return fd, path

    def _mend(self) -> None:
        """End a torn line before anything follows it (raises OSError if still impossible)."""
        os.write(self._fd, b"\n")
        self._torn = False

    def _end_torn(self) -> None:
        try:
            self._mend()
        except OSError:
            self._torn = True

    def write(self, data: bytes) -> None:
        """Append one encoded line; raises OSError if the journal cannot take it."""
        try:
            if self._torn:
                self._mend()
            written = os.write(self._fd, data)
        except OSError:
            JOURNAL_WRITE_FAILURES.inc()
            raise
        if written != len(data):
            # Only a full disk does this to a regular file; the partial line is skipped on read.
            JOURNAL_WRITE_FAILURES.inc()
            self._end_torn()
            raise OSError(f"short journal write ({written} of {len(data)} bytes)")
        self.lines += 1
        if self.lines >= self.max_lines:
            self.rotate()

    def submit(self, data: bytes) -> tuple[asyncio.Future[frozenset[int]], int]:
        """Queue one encoded line for the group write; await the future before answering.

        Returns the group's future and the line's index in it: the future's result is the set
        of indexes whose lines could not be written (empty when all were), so `index in failed`
        is what an OSError from `write` was. Must be called from the event loop's thread.
        """
        done = self._group_done
        if done is None:
            loop = asyncio.get_running_loop()
            self._group_done = done = loop.create_future()
            loop.call_soon(self._write_group)
        group = self._group
        group.append(data)
        return done, len(group) - 1

    def _write_group(self) -> None:
        """Write the queued lines with one `os.write` (more only after a short write)."""
        done, group = self._group_done, self._group
        if done is None:
            return
        self._group_done, self._group = None, []
        failed: set[int] = set()
        data = b"".join(group) if len(group) > 1 else group[0]
        first = 0  # index of the first line of `data`
        while data:
            try:
                if self._torn:
                    self._mend()
                written = os.write(self._fd, data)
            except OSError:
                log.exception("journal write failed (%d lines)", len(group) - first)
                failed.update(range(first, len(group)))
                break
            if written == len(data):
                break
            # Only a full disk does this to a regular file: the lines wholly written are in, the
            # torn one is ended (and skipped on read), the rest are tried again.
            at = 0
            while at + len(group[first]) <= written:
                at += len(group[first])
                first += 1
            failed.add(first)
            log.error("short journal write (%d of %d bytes)", written, len(data))
            self._end_torn()
            data = data[at + len(group[first]) :]
            first += 1
        if failed:
            JOURNAL_WRITE_FAILURES.inc(len(failed))
        self.lines += len(group) - len(failed)
        done.set_result(frozenset(failed))
        if self.lines >= self.max_lines:
            self.rotate()

    def rotate(self) -> None:
        """Seal the open segment and start a new one (no-op when it is empty)."""
        if self.lines == 0 or self._path is None:
            return
        old_fd, old_path = self._fd, self._path
        try:
            self._fd, self._path = self._new_segment()
        except OSError:
            log.exception("cannot start a new journal segment; keeping the current one")
            return
        self.lines = 0
        # Renamed while still locked: the flusher takes `.sealed` files once the lock is gone.
        # Should the rename fail, the segment stays `.open` and is flushed as an orphan later.
        with contextlib.suppress(OSError):
            os.rename(old_path, old_path.with_suffix(SEALED_SUFFIX))
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            _sync_close(old_fd, self.fsync_s > 0)
            return
        fut = loop.run_in_executor(None, _sync_close, old_fd, self.fsync_s > 0)
        self._closing.add(fut)
        fut.add_done_callback(self._closing.discard)

    async def _rotate_loop(self) -> None:
        while True:
            await asyncio.sleep(self.rotate_s)
            self.rotate()

    def start(self) -> None:
        self._tasks.append(asyncio.create_task(self._rotate_loop(), name="journal-rotate"))

    def writable(self) -> bool:
        return self._fd >= 0 and os.access(self.directory, os.W_OK)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        self._write_group()  # a group still queued is written before the segment is sealed
        if self._path is None:
            return
        if self.lines:
            self.rotate()
        if self._closing:
            await asyncio.gather(*self._closing)
        # The (empty) open segment goes away; nothing was written to it.
        if self.lines == 0:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._path)
        _sync_close(self._fd, self.fsync_s > 0)
        self._fd, self._path = -1, None


def _sync_close(fd: int, sync: bool) -> None:
    try:
        if sync:
            os.fdatasync(fd)
    finally:
        os.close(fd)
