"""Every link in memory, so the redirect never awaits the database.

The cache loads all links at start-up, then follows `NOTIFY refguard_links` (sent by triggers on
links and programs) on the worker's listener connection (tracker.listener, shared with the token
cache); after a reconnect it reloads everything, since notifications sent while it was away are
lost. A code that is not in memory is looked up once (the link may have been created a moment
ago on another worker, before its notification arrived) and then remembered as unknown for a
while: repeated unknown codes never reach the database.
A snapshot file lets a worker that restarts while PostgreSQL is down serve the links it knew.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote_plus

import asyncpg

from tracker import db, metrics
from tracker.clicks import queries
from tracker.listener import Listener

log = logging.getLogger(__name__)

CODE_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
NEGATIVE_TTL_S = 30.0
NEGATIVE_MAX = 100_000
LOOKUPS = 4  # database look-ups of unknown codes at once, per worker
CHANNEL = "refguard_links"


@dataclass(frozen=True, slots=True)
class LinkEntry:
    code: str
    program_id: int
    link_id: int
    referrer_id: int
    destination: str
    enabled: bool
    fallback_url: str | None
    browser_page: bool  # program setting fingerprint = "browser"
    # Precomputed for the hot path: destination up to its query separator, its fragment, and the
    # journal fields that identify the link.
    prefix: str
    fragment: str
    journal_key: str
    # The parameter names the destination sets itself, and rg_cid: a visitor's query may not
    # set them (tracker.clicks.redirect drops them).
    taken: frozenset[str]

    @classmethod
    def build(
        cls,
        *,
        code: str,
        program_id: int,
        link_id: int,
        referrer_id: int,
        destination: str,
        enabled: bool,
        fallback_url: str | None,
        browser_page: bool = False,
    ) -> LinkEntry:
        base, _, frag = destination.partition("#")
        if "?" not in base:
            prefix = base + "?"
        elif base.endswith(("?", "&")):
            prefix = base
        else:
            prefix = base + "&"
        return cls(
            code=code,
            program_id=program_id,
            link_id=link_id,
            referrer_id=referrer_id,
            destination=destination,
            enabled=enabled,
            fallback_url=fallback_url,
            browser_page=browser_page,
            prefix=prefix,
            fragment="#" + frag if frag else "",
            journal_key=f"{program_id}\x00{link_id}\x00{referrer_id}\x00{code}",
            taken=_taken(prefix),
        )


def parameter_names(key: str) -> tuple[str, ...]:
    """The parameter names a backend may read a raw query key as: decoded, with PHP's folding
    of " " and "." into "_", and before a "[" (PHP's arrays override the plain name)."""
    if "%" in key or "+" in key:
        key = unquote_plus(key)
    return key, key.replace(".", "_").replace(" ", "_").replace("[", "_"), key.partition("[")[0]


def _taken(prefix: str) -> frozenset[str]:
    """The names the destination's own query sets (its prefix is "<url>?<query>&"), and
    rg_cid."""
    names = {"rg_cid"}
    for key, _ in parse_qsl(prefix.partition("?")[2], keep_blank_values=True):
        names.update(parameter_names(key))
    names.discard("")
    return frozenset(names)


def _entry(row: asyncpg.Record) -> LinkEntry:
    return LinkEntry.build(
        code=row["code"],
        program_id=row["program_id"],
        link_id=row["link_id"],
        referrer_id=row["referrer_id"],
        destination=row["destination"],
        enabled=row["enabled"],
        fallback_url=row["fallback_url"],
        browser_page=row["browser_page"],
    )


class LinkCache:
    def __init__(self, dsn: str, snapshot: Path | None = None, *,
                 listener: Listener | None = None) -> None:
        """`listener`: the worker's shared listener (tracker.web.app); else one of its own."""
        self.dsn = dsn
        self.snapshot = snapshot
        self.links: dict[str, LinkEntry] = {}
        self._negative: OrderedDict[str, float] = OrderedDict()
        self._in_flight: dict[str, asyncio.Future[LinkEntry | None]] = {}
        # One connection serves the listener, refreshes and miss look-ups, one query at a time
        # (under listener.lock).
        self.listener = listener or Listener(dsn, name="link-cache")
        self.listener.subscribe(CHANNEL, self._on_notify, on_connect=self._load_all)
        self._started = False

    @property
    def _conn(self) -> asyncpg.Connection | None:
        return self.listener.conn

    # -- queries -------------------------------------------------------------------------------

    async def _load_all(self, conn: asyncpg.Connection) -> None:
        rows = await queries.all_links(conn)
        self.links = {row["code"]: _entry(row) for row in rows}
        self._negative.clear()
        self._counted()
        self._write_snapshot()

    async def _load_code(self, conn: asyncpg.Connection, code: str) -> LinkEntry | None:
        row = await queries.link_by_code(conn, code)
        if row is None:
            self.links.pop(code, None)
            self._counted()
            return None
        entry = _entry(row)
        self.links[code] = entry
        self._counted()
        self._negative.pop(code, None)
        return entry

    async def _load_program(self, conn: asyncpg.Connection, program_id: int) -> None:
        rows = await queries.links_of_program(conn, program_id)
        for row in rows:
            self.links[row["code"]] = _entry(row)
        self._counted()

    # -- the miss path -------------------------------------------------------------------------

    def known_missing(self, code: str) -> bool:
        """True when `code` can be answered 404 without asking the database."""
        if not CODE_RE.match(code):
            return True
        at = self._negative.get(code)
        if at is not None and time.monotonic() - at < NEGATIVE_TTL_S:
            return True
        return self._conn is None or self._conn.is_closed()

    async def lookup_missing(self, code: str) -> LinkEntry | None:
        """One database look-up for a code not in memory; remembers a miss.

        Requests for the same code share one look-up. When LOOKUPS look-ups are already under
        way (a scanner trying codes), a miss is answered from memory at once instead of
        queueing: a link created a moment ago reaches memory through the listener anyway."""
        if self.known_missing(code):
            return None
        shared = self._in_flight.get(code)
        if shared is None:
            if len(self._in_flight) >= LOOKUPS:
                return None
            shared = asyncio.ensure_future(self._lookup(code))
            self._in_flight[code] = shared
            shared.add_done_callback(lambda _done: self._in_flight.pop(code, None))
        return await asyncio.shield(shared)

    async def _lookup(self, code: str) -> LinkEntry | None:
        entry = self.links.get(code)
        if entry is not None:
            return entry
        conn = self._conn
        if conn is None:
            return None
        try:
            async with asyncio.timeout(1.0), self.listener.lock:
                entry = await self._load_code(conn, code)
        except db.RETRYABLE as exc:
            log.warning("link lookup for a missing code failed: %s", exc)
            return None
        if entry is None:
            self._negative[code] = time.monotonic()
            while len(self._negative) > NEGATIVE_MAX:
                self._negative.popitem(last=False)
        return entry

    def get(self, code: str) -> LinkEntry | None:
        return self.links.get(code)

    def put(self, entry: LinkEntry) -> None:
        """Make a link known at once in this worker (the API that created it calls this)."""
        self.links[entry.code] = entry
        self._negative.pop(entry.code, None)
        self._counted()

    def _counted(self) -> None:
        metrics.LINKS_CACHED.set(len(self.links))

    # -- the listener --------------------------------------------------------------------------

    def _on_notify(self, conn: Any, pid: int, channel: str, payload: str) -> None:
        kind, _, value = payload.partition(":")
        if kind == "link":
            self._negative.pop(value, None)
            asyncio.get_running_loop().create_task(self._refresh_code(value))
        elif kind == "program":
            asyncio.get_running_loop().create_task(self._refresh_program(int(value)))

    async def _refresh_code(self, code: str) -> None:
        conn = self._conn
        if conn is None:
            return
        try:
            async with self.listener.lock:
                await self._load_code(conn, code)
        except db.RETRYABLE as exc:
            log.warning("link refresh failed: %s", exc)

    async def _refresh_program(self, program_id: int) -> None:
        conn = self._conn
        if conn is None:
            return
        try:
            async with self.listener.lock:
                await self._load_program(conn, program_id)
        except db.RETRYABLE as exc:
            log.warning("program refresh failed: %s", exc)

    async def start(self, wait_s: float = 10.0) -> None:
        """Start following the database; waits for the first load (or uses the snapshot)."""
        self.listener.start()
        self._started = True
        try:
            await asyncio.wait_for(self.listener.connected.wait(), timeout=wait_s)
        except TimeoutError:
            self._read_snapshot()
            log.warning("database unreachable at start; serving %d links from the snapshot",
                        len(self.links))

    async def close(self) -> None:
        if self._started:
            self._started = False
            await self.listener.close()
        for lookup in list(self._in_flight.values()):
            lookup.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await lookup

    # -- snapshot ------------------------------------------------------------------------------

    def _write_snapshot(self) -> None:
        if self.snapshot is None:
            return
        tmp = self.snapshot.with_name(f"{self.snapshot.name}.{os.getpid()}.tmp")
        try:
            rows = [
                {k: v for k, v in asdict(e).items() if k not in ("prefix", "fragment",
                                                                  "journal_key", "taken")}
                for e in self.links.values()
            ]
            tmp.write_text(json.dumps(rows), encoding="utf-8")
            os.replace(tmp, self.snapshot)
        except OSError as exc:
            log.warning("cannot write the link snapshot: %s", exc)

    def _read_snapshot(self) -> None:
        if self.snapshot is None or self.links:
            return
        try:
            rows = json.loads(self.snapshot.read_text(encoding="utf-8"))
            self.links = {r["code"]: LinkEntry.build(**r) for r in rows}
            self._counted()
        except (OSError, ValueError, TypeError, KeyError) as exc:
            log.warning("no usable link snapshot: %s", exc)
