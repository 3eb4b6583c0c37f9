"""SQL of clicks: async functions taking `conn` first, and the statement texts of the hot paths.

One section per caller: the visit log (the API), the link cache (links.py), the flusher
(flusher.py), the browser-signal fold (browser_signals.py). Rows that come back to code off the
hot path are frozen dataclasses; the link cache and the flusher keep the shapes that are
fastest for them (see their sections).
"""

from __future__ import annotations

import functools
import ipaddress
import operator
import uuid
import weakref
from dataclasses import dataclass
from datetime import MAXYEAR, MINYEAR, UTC, date, datetime, timedelta, timezone

import asyncpg

from tracker.clicks.enrich import COLUMNS, SIGNAL_COLUMNS

# -- the visit log -----------------------------------------------------------------------------
# GET /api/v1/clicks (tracker/web/api/resources.py).


@dataclass(frozen=True, slots=True)
class Click:
    click_id: str
    ts: datetime
    code: str
    referrer: str
    visitor_id: str | None
    ip: str | None
    country: str | None
    asn: int | None
    ua_browser: str | None
    ua_os: str | None
    ua_device: str | None
    fingerprint: bytes | None
    is_bot: bool
    is_duplicate: bool
    is_anonymous: bool
    is_hosting: bool
    bot_rule: str | None


async def list_clicks(
    conn: asyncpg.Connection,
    *,
    program_id: int,
    referrer_id: int | None,
    link_id: int | None,
    since: datetime | None,
    after: tuple[datetime, str] | None,
    limit: int,
) -> list[Click]:
    rows = await conn.fetch(
        """
        SELECT c.click_id::text AS click_id, c.ts, c.code, r.external_id AS referrer, c.visitor_id,
               abbrev(c.ip) AS ip, c.country, c.asn, c.ua_browser, c.ua_os, c.ua_device,
               c.fingerprint, c.is_bot, c.is_duplicate, c.is_anonymous, c.is_hosting, c.bot_rule
        FROM clicks c
        JOIN referrers r ON r.program_id = c.program_id AND r.id = c.referrer_id
        WHERE c.program_id = $1
          AND ($2::bigint IS NULL OR c.referrer_id = $2)
          AND ($3::bigint IS NULL OR c.link_id = $3)
          AND ($4::timestamptz IS NULL OR c.ts >= $4)
          AND ($5::timestamptz IS NULL OR (c.ts, c.click_id) > ($5, $6::uuid))
        ORDER BY c.ts, c.click_id
        LIMIT $7
        """,
        program_id, referrer_id, link_id, since,
        after[0] if after else None, after[1] if after else None, limit,
    )
    return [Click(**dict(r)) for r in rows]


# -- the link cache ----------------------------------------------------------------------------
# tracker/clicks/links.py. These return asyncpg records, as the cache always read them: it
# builds its own LinkEntry from each row at once, so a dataclass in between would only be a
# second object per link (on every full load: all links, at start-up and after a reconnect).

LINK_SQL = """
SELECT l.code, l.program_id, l.id AS link_id, l.referrer_id, l.destination, l.enabled,
       p.settings->>'fallback_url' AS fallback_url,
       coalesce(p.settings->>'fingerprint', '') = 'browser' AS browser_page
FROM links l JOIN programs p ON p.id = l.program_id
"""
_LINK_BY_CODE_SQL = LINK_SQL + " WHERE l.code = $1"
_LINKS_OF_PROGRAM_SQL = LINK_SQL + " WHERE l.program_id = $1"


async def all_links(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await conn.fetch(LINK_SQL)
    return rows


async def link_by_code(conn: asyncpg.Connection, code: str) -> asyncpg.Record | None:
    return await conn.fetchrow(_LINK_BY_CODE_SQL, code)


async def links_of_program(conn: asyncpg.Connection, program_id: int) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await conn.fetch(_LINKS_OF_PROGRAM_SQL, program_id)
    return rows


# -- the flusher -------------------------------------------------------------------------------
# tracker/clicks/flusher.py (and the importer, through flusher.store_clicks). A batch is checked
# for duplicates of stored clicks (stored_duplicates_sql), then COPYed straight into its monthly
# partition in the same transaction; only when that meets a click already stored (a segment
# replayed after a crash that followed its commit) does it go through the staging table and
# INSERT ... ON CONFLICT DO NOTHING.
# The COPYs and their transactions stay in flusher.store_clicks, next to the rows they carry, and
# the texts are built once here at import.

STAGE_SQL = """
CREATE TEMP TABLE IF NOT EXISTS clicks_stage (LIKE clicks INCLUDING DEFAULTS)
ON COMMIT DELETE ROWS
"""
STAGE_TABLE = "clicks_stage"

_COLS = ", ".join(COLUMNS)
# Answers one row: stored, bots, duplicates.
INSERT_SQL = f"""
WITH ins AS (
    INSERT INTO clicks ({_COLS})
    SELECT {_COLS} FROM clicks_stage
    ON CONFLICT DO NOTHING
    RETURNING is_bot, is_duplicate
)
SELECT count(*) AS stored,
       count(*) FILTER (WHERE is_bot) AS bots,
       count(*) FILTER (WHERE is_duplicate AND NOT is_bot) AS duplicates
FROM ins
"""

# The positions (from 1) of the given clicks that repeat a stored click on their link within the
# hour before or after them, by flusher.mark_duplicates' rule: the same visitor, or the same
# fingerprint where one of the two has no visitor id (two visitors with ids of their own are two
# people). A click without a visitor id (only imports bring them) looks for any click of its
# fingerprint, through the index its month's partition gets with its first such click
# (flusher.Partitions.index_fingerprints; live traffic alone never pays for it). A click with
# one looks only for clicks without: an index of those alone (clicks_link_fingerprint_anonymous)
# answers it at once, however many other visitors share the fingerprint (the same phone model
# behind a carrier NAT, a bot rotating cookies); and where the table holds none at all (live
# traffic alone), one look at that index for the batch spares every click its own probe of it.
# A click stored already is found by nobody but itself: a batch holding one is a replay, whose
# COPY then fails and whose rows go through INSERT_SQL, which skips the stored ones whatever
# their marks. The times come as Unix seconds (float8, exact to the microsecond for any date
# this century): a third of the CPU of passing datetimes. `{table}` is `clicks`, or the monthly
# partition that holds every click within the hour of the given ones (flusher.probe_tables).
_STORED_DUPLICATES_SQL = """
SELECT s.i FROM (SELECT u.program_id, u.link_id, u.visitor_id, u.fingerprint,
                        to_timestamp(u.epoch) - interval '1 hour' AS early,
                        to_timestamp(u.epoch) + interval '1 hour' AS late, u.i
                 FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::bytea[], $5::float8[])
                     WITH ORDINALITY AS u(program_id, link_id, visitor_id, fingerprint, epoch, i)
                ) s
WHERE (coalesce(s.visitor_id, '') <> '' AND EXISTS (
        SELECT 1 FROM {table} c
        WHERE c.program_id = s.program_id AND c.visitor_id = s.visitor_id
          AND c.link_id = s.link_id AND c.ts BETWEEN s.early AND s.late))
   OR (coalesce(s.visitor_id, '') = '' AND EXISTS (
        SELECT 1 FROM {table} c
        WHERE c.link_id = s.link_id AND c.fingerprint = s.fingerprint
          AND c.ts BETWEEN s.early AND s.late))
   OR (coalesce((SELECT true FROM {table} a WHERE coalesce(a.visitor_id, '') = ''
                 ORDER BY a.link_id, a.fingerprint, a.ts LIMIT 1), false) AND EXISTS (
        SELECT 1 FROM {table} c
        WHERE c.link_id = s.link_id AND c.fingerprint = s.fingerprint
          AND coalesce(c.visitor_id, '') = '' AND c.ts BETWEEN s.early AND s.late))
"""


# The same probe where the batch has no click without a visitor id and `table` holds none either
# (live traffic alone, the flusher's every batch): only its first branch can find anything, so
# neither the fingerprints (a bytea[] of the batch: a quarter of the probe's encoding in the
# flusher) nor the other two branches are sent. ANONYMOUS_SQL answers the second condition, just
# before, in the same transaction: the gate the full probe reads once per batch, asked on its
# own (an import storing clicks without visitor ids meanwhile can commit just after either, as
# it can after the full probe's snapshot).
# Its visitor ids come as the text of an array literal (visitor_probe_arguments), which Python
# joins in C: asyncpg's binary text[] cost the flusher 0.35 us an element (it asks of each whether
# it is itself a sequence), for 0.09 us of PostgreSQL's; the literal costs 0.09 us to make and
# 0.19 us for PostgreSQL to read, 0.15 us a click less in all. (The ints and times stay binary: as
# literals they saved as much CPU in the flusher as they cost PostgreSQL, or less.)
_VISITOR_DUPLICATES_SQL = """
SELECT u.i FROM unnest($1::bigint[], $2::bigint[], $3::text::text[], $4::float8[])
    WITH ORDINALITY AS u(program_id, link_id, visitor_id, epoch, i)
WHERE EXISTS (
    SELECT 1 FROM {table} c
    WHERE c.program_id = u.program_id AND c.visitor_id = u.visitor_id
      AND c.link_id = u.link_id
      AND c.ts BETWEEN to_timestamp(u.epoch) - interval '1 hour'
                   AND to_timestamp(u.epoch) + interval '1 hour')
"""
_ANONYMOUS_SQL = """
SELECT coalesce((SELECT true FROM {table} a WHERE coalesce(a.visitor_id, '') = ''
                 ORDER BY a.link_id, a.fingerprint, a.ts LIMIT 1), false)
"""


@functools.cache
def visitor_duplicates_sql(table: str) -> str:
    """_VISITOR_DUPLICATES_SQL reading `table` (as stored_duplicates_sql)."""
    return _VISITOR_DUPLICATES_SQL.format(table=quote_ident(table))


@functools.cache
def anonymous_sql(table: str) -> str:
    """Whether `table` holds a click without a visitor id (through its partial index)."""
    return _ANONYMOUS_SQL.format(table=quote_ident(table))


@functools.cache
def stored_duplicates_sql(table: str) -> str:
    """The duplicate probe reading `table`: `clicks`, or a monthly partition of it (a name that
    refguard_ensure_click_partition gave). Through the parent, each of the probe's index look-ups
    first prunes the month's partitions at run time, once per click and sub-query: a third of
    the probe's CPU with two years of partitions, which reading the one partition saves."""
    return _STORED_DUPLICATES_SQL.format(table=quote_ident(table))


def quote_ident(name: str) -> str:
    """`name` as a PostgreSQL identifier."""
    return '"' + name.replace('"', '""') + '"'


_DUPLICATE_KEYS = tuple(COLUMNS.index(c) for c in ("program_id", "link_id", "visitor_id",
                                                    "fingerprint"))
_VISITOR_KEYS = _DUPLICATE_KEYS[:3]
_TS = COLUMNS.index("ts")
_VISITOR = COLUMNS.index("visitor_id")


async def stored_duplicates(conn: asyncpg.Connection, rows: list[list[object]],
                            table: str = "clicks") -> list[int]:
    """Positions (from 0) of the rows (in COLUMNS order) that repeat a click stored in `table`
    (all of `clicks`, or the partition that holds the rows' hour either side).

    Runs in the caller's transaction (the one that then COPYs the rows), with sequential scans
    off until it ends: statistics taken when the partition was small (a new month, or just
    before an outage whose backlog then arrives at once) make a scan of the partition per row
    look cheap, and the batch then takes minutes. That does not pin the index, though: with
    statistics of a partition's first click, grown to 15,000-25,000, the visitor probe went
    through another index (every click of the program or link in the hour), which
    flusher.Partitions prevents by analyzing a partition again when it doubled."""
    await conn.execute("SET LOCAL enable_seqscan = off")
    visitors = visitor_probe_arguments(rows) if all(r[_VISITOR] for r in rows) else None
    if visitors is not None and not await conn.fetchval(anonymous_sql(table)):
        found = await conn.fetch(visitor_duplicates_sql(table), *visitors)
    else:
        found = await conn.fetch(stored_duplicates_sql(table), *probe_arguments(rows))
    return [r[0] - 1 for r in found]


_PROGRAM, _LINK = (operator.itemgetter(COLUMNS.index(c)) for c in ("program_id", "link_id"))
_VISITOR_OF, _TS_OF = operator.itemgetter(_VISITOR), operator.itemgetter(_TS)


def visitor_probe_arguments(rows: list[list[object]]) -> list[object] | None:
    """visitor_duplicates_sql's parameters for these rows (each with a visitor id): those of
    probe_arguments with _VISITOR_KEYS, the visitor ids as the text of an array literal, each
    quoted; None when one holds a double quote or a backslash (it would need escaping: the
    whole probe then runs, which finds the same where the visitor probe may run)."""
    visitors = '","'.join(map(_VISITOR_OF, rows))
    if visitors.count('"') != 2 * len(rows) - 2 or "\\" in visitors:
        return None
    return [list(map(_PROGRAM, rows)), list(map(_LINK, rows)), '{"' + visitors + '"}',
            [ts / 1e6 for ts in map(_TS_OF, rows)]]


def probe_arguments(rows: list[list[object]], keys: tuple[int, ...] = _DUPLICATE_KEYS
                    ) -> list[list[object]]:
    """stored_duplicates_sql's parameters for these rows (visitor_duplicates_sql's with
    _VISITOR_KEYS)."""
    # (Unix microseconds / 1e6: the same correctly rounded float as datetime.timestamp(),
    # a fifth of its cost.)
    return [*([r[i] for r in rows] for i in keys),
            [r[_TS] / 1e6 for r in rows]]  # type: ignore[operator]


# asyncpg encodes an inet through ipaddress.ip_address, an object built for every value (0.8 us
# of the flusher's 2.6 us a click for its COPY); the rows carry the address packed already
# (Enricher.row), whose wire form is four header bytes before it. Anything else goes the way
# asyncpg's own codec takes, and inet values read back are what it gives.
_INET_HEADERS = {4: b"\x02\x20\x00\x04", 16: b"\x03\x80\x00\x10"}  # family, bits, cidr, size
_INET_FAMILIES = {4: 2, 6: 3}


def encode_inet(value: object) -> bytes:
    """An inet's binary wire form: from packed bytes (4 or 16) at once, else as asyncpg does
    (an address, or an interface such as 10.0.0.1/24)."""
    if type(value) is bytes:
        header = _INET_HEADERS.get(len(value))
        if header is not None:
            return header + value
    try:
        addr = ipaddress.ip_address(value)  # type: ignore[arg-type]
    except ValueError:
        iface = ipaddress.ip_interface(value)  # type: ignore[arg-type]
        return bytes((_INET_FAMILIES[iface.version], iface.network.prefixlen, 1,
                      len(iface.packed))) + iface.packed
    return bytes((_INET_FAMILIES[addr.version], addr.max_prefixlen, 0,
                  len(addr.packed))) + addr.packed


def decode_inet(data: bytes) -> ipaddress.IPv4Address | ipaddress.IPv6Address | (
        ipaddress.IPv4Interface | ipaddress.IPv6Interface):
    """An inet as asyncpg's own codec reads it: an address, or an interface when it has a
    shorter prefix."""
    family, bits, addr = data[0], data[1], data[4:]
    if bits != (32 if family == 2 else 128):
        return ipaddress.ip_interface((addr, bits))
    return ipaddress.ip_address(addr)


# A click row's time is an int, microseconds since the Unix epoch (Enricher.row): building a
# datetime for each click, comparing and subtracting them in the duplicate check and taking
# .timestamp() for the probe cost about 1.5 us a click, and asyncpg's datetime encoder in the
# COPY more than this codec's tuple. PostgreSQL's wire form of a timestamptz is microseconds
# since 2000-01-01 UTC (int64, with the two extremes for +-infinity). Every other value is
# encoded and decoded as asyncpg's own codec does (asyncpg/pgproto/codecs/datetime.pyx), so the
# storing connection reads and writes datetimes as any other.
_PG_EPOCH_US = 946_684_800_000_000  # 2000-01-01 UTC in Unix microseconds
_PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
_PG_INFINITY, _PG_NEGATIVE_INFINITY = 0x7FFF_FFFF_FFFF_FFFF, -0x8000_0000_0000_0000
_INFINITY = datetime(MAXYEAR, 12, 31, 23, 59, 59, 999999)  # (naive, as asyncpg gives them)
_NEGATIVE_INFINITY = datetime(MINYEAR, 1, 1)
_INFINITY_US, _NEGATIVE_INFINITY_US = 252_455_615_999_999_999, -63_082_281_600_000_000


def encode_timestamptz(value: object) -> tuple[int]:
    """A timestamptz as microseconds since 2000-01-01 UTC: from an int of Unix microseconds
    (a click row's time) at once, else from a datetime (or date) as asyncpg encodes it."""
    if type(value) is int:
        return (value - _PG_EPOCH_US,)
    if not isinstance(value, datetime):
        if not isinstance(value, date):
            raise TypeError("expected a datetime.date or datetime.datetime instance, "
                            f"got {type(value).__name__!r}")
        local = datetime.now(UTC).astimezone()
        value = datetime(value.year, value.month, value.day,
                         tzinfo=timezone(local.utcoffset() or timedelta(0)))
    if value == _INFINITY:
        return (_PG_INFINITY,)
    if value == _NEGATIVE_INFINITY:
        return (_PG_NEGATIVE_INFINITY,)
    delta = value.astimezone(UTC) - _PG_EPOCH
    us = (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds
    if us == _INFINITY_US:
        return (_PG_INFINITY,)
    if us == _NEGATIVE_INFINITY_US:
        return (_PG_NEGATIVE_INFINITY,)
    return (us,)


def decode_timestamptz(value: tuple[int]) -> datetime:
    """A timestamptz read as asyncpg's own codec reads it."""
    us = value[0]
    if us == _PG_INFINITY:
        return _INFINITY
    if us == _PG_NEGATIVE_INFINITY:
        return _NEGATIVE_INFINITY
    return _PG_EPOCH + timedelta(0, us // 1_000_000, us % 1_000_000)


# The connections use_click_codecs was called on (the flusher's and the importer's).
_CODED: weakref.WeakSet[asyncpg.Connection] = weakref.WeakSet()


async def use_click_codecs(conn: asyncpg.Connection) -> None:
    """Encode this connection's inet values with encode_inet and its timestamptz values with
    encode_timestamptz (the flusher's and the importer's COPYs and probes; set once on the
    flusher's connection as it connects, and by the importer on the connection it stores
    through). Values read back are what asyncpg's own codecs give."""
    await conn.set_type_codec("inet", schema="pg_catalog", encoder=encode_inet,
                              decoder=decode_inet, format="binary")
    await conn.set_type_codec("timestamptz", schema="pg_catalog", encoder=encode_timestamptz,
                              decoder=decode_timestamptz, format="tuple")
    _CODED.add(conn)


async def reset_click_codecs(conn: asyncpg.Connection) -> None:
    """Give the connection asyncpg's own inet and timestamptz codecs back (the importer, whose
    caller may go on reading through it: a scan of a million clicks' times decodes them in
    C there, where decode_timestamptz would be Python)."""
    _CODED.discard(conn)
    await conn.reset_type_codec("inet", schema="pg_catalog")
    await conn.reset_type_codec("timestamptz", schema="pg_catalog")


def has_click_codecs(conn: asyncpg.Connection) -> bool:
    """Whether use_click_codecs was called on this very connection object (a pool's proxy of
    one is not it)."""
    return conn in _CODED


_SIGNALS_SQL = f"""INSERT INTO click_signals ({", ".join(SIGNAL_COLUMNS)})
            VALUES ($1, $2, $3, $4::jsonb, $5, $6) ON CONFLICT DO NOTHING"""


async def ensure_partition(conn: asyncpg.Connection, ts: datetime) -> str:
    """The name of the monthly partition of `clicks` that holds `ts`, created if missing (the
    flusher asks once per month)."""
    name: str = await conn.fetchval("SELECT refguard_ensure_click_partition($1)", ts)
    return name


async def index_fingerprints(conn: asyncpg.Connection, times: list[datetime]
                             ) -> set[datetime]:
    """Index by link and fingerprint the partitions holding these times, as the probe of a
    click without a visitor id needs (migration 0033); returns the times whose partitions
    exist."""
    rows = await conn.fetch("SELECT refguard_index_fingerprints(VARIADIC $1::timestamptz[])",
                            times)
    return {r[0] for r in rows}


async def analyze(conn: asyncpg.Connection, partitions: list[str]) -> dict[str, float]:
    """Refresh the planner's statistics of these click partitions (ANALYZE needs the owner:
    the application asks it through refguard_analyze); returns the rows each holds, as the
    ANALYZE estimated them."""
    await conn.execute("SELECT refguard_analyze(VARIADIC $1::text[])", partitions)
    rows = await conn.fetch(
        """SELECT relname::text, reltuples::float8 FROM pg_class
           WHERE relname = ANY($1::text[]) AND relnamespace = current_schema()::regnamespace""",
        partitions)
    return {name: max(tuples, 0.0) for name, tuples in rows}


async def store_signals(conn: asyncpg.Connection, rows: list[tuple[object, ...]]) -> None:
    """Keep browser signals (rows in SIGNAL_COLUMNS order, as Enricher.signal_row builds them)
    until the `browser_signals` job folds them into their clicks."""
    await conn.executemany(_SIGNALS_SQL, rows)


# -- the browser-signal fold -------------------------------------------------------------------
# tracker/clicks/browser_signals.py (the `browser_signals` job).


@dataclass(frozen=True, slots=True)
class PendingSignals:
    """A click waiting for its browser signals, with the signals that arrived for it."""

    program_id: int
    click_id: uuid.UUID
    ts: datetime
    fingerprint: bytes | None
    signals: str  # the JSON text as the page sent it
    webdriver: bool


async def pending_signals(conn: asyncpg.Connection) -> list[PendingSignals]:
    """Up to 10,000 clicks still awaiting signals whose signals have arrived."""
    rows = await conn.fetch(
        """SELECT c.program_id, c.click_id, c.ts, c.fingerprint, s.signals::text AS signals,
                  s.webdriver
           FROM click_signals s
           JOIN clicks c ON c.program_id = s.program_id AND c.click_id = s.click_id
            AND c.ts >= s.click_ms AND c.ts < s.click_ms + interval '1 millisecond'
           WHERE c.awaiting_signals
           LIMIT 10000"""
    )
    return [PendingSignals(**dict(r)) for r in rows]


async def fold_signals(
    conn: asyncpg.Connection,
    folded: list[tuple[int, uuid.UUID, datetime, bytes, str, bool]],
) -> None:
    """Store each click's refined fingerprint and signals: (program_id, click_id, ts,
    fingerprint, signals JSON, webdriver); webdriver marks the click a bot."""
    await conn.executemany(
        """UPDATE clicks SET fingerprint = $4, browser_signals = $5::jsonb,
                  awaiting_signals = false, is_bot = is_bot OR $6,
                  bot_rule = CASE WHEN NOT is_bot AND $6 THEN 'automation_webdriver'
                                  ELSE bot_rule END
           WHERE program_id = $1 AND click_id = $2 AND ts = $3""",
        folded,
    )


async def delete_signals(
    conn: asyncpg.Connection, program_ids: list[int], click_ids: list[uuid.UUID]
) -> None:
    """Drop the signals of these clicks (pairs by position), once folded."""
    await conn.execute(
        """DELETE FROM click_signals
           WHERE (program_id, click_id) IN (SELECT * FROM unnest($1::bigint[], $2::uuid[]))""",
        program_ids, click_ids,
    )


async def mark_no_javascript(conn: asyncpg.Connection, after: str) -> None:
    """Clicks whose page never reported back within `after` (an interval literal of the code,
    such as "30 seconds", never user input): no JavaScript ran, so a bot."""
    await conn.execute(
        f"""UPDATE clicks SET awaiting_signals = false, is_bot = true,
                  bot_rule = coalesce(bot_rule, 'no_javascript')
           WHERE awaiting_signals AND received_at < now() - interval '{after}'"""
    )


async def delete_stale_signals(conn: asyncpg.Connection) -> None:
    """Signals whose click never arrived within a day."""
    await conn.execute(
        "DELETE FROM click_signals WHERE received_at < now() - interval '1 day'"
    )
