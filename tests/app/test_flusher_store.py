"""How the flusher stores clicks: straight COPY into the partition, the staging path for a replay,
duplicates against stored clicks in both, and the enrichment caches giving what a cold
enricher gives; the garbage collector held back per batch."""

from __future__ import annotations

import gc
import ipaddress
import shutil
import time
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path

import asyncpg
import pytest

from bench.geodb import write_db
from geo.reader import GeoReader
from tests.helpers import SECRET, insert_link
from tracker.clicks import flusher as flusher_module
from tracker.clicks.enrich import Enricher
from tracker.clicks.flusher import (
    Flusher,
    Partitions,
    prepare_rows,
    probe_tables,
    store_clicks,
)
from tracker.clicks.journal import RawClick
from tracker.clicks.queries import (
    anonymous_sql,
    has_click_codecs,
    probe_arguments,
    reset_click_codecs,
    stored_duplicates,
    stored_duplicates_sql,
    use_click_codecs,
    visitor_duplicates_sql,
    visitor_probe_arguments,
)
from tracker.clicks.redirect import VisitorIds
from tracker.collector import FEW_COLLECTIONS, few_collections

T0 = 1_700_000_000_000_000  # microseconds
HOUR = 3600 * 1_000_000
UA = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari"


def click(n: int, link: tuple[int, int, int], *, visitor: str = "", ts_us: int = T0,
          ua: str = UA, peer: str = "203.0.113.7") -> RawClick:
    program_id, link_id, referrer_id = link
    return RawClick(ts_us, f"01890000-0000-7000-8000-{n:012d}", program_id, link_id, referrer_id,
                    "abc", visitor, not visitor, peer, "", "", ua, "en", "", "", "", "", "",
                    "text/html", "", "")


async def duplicates(conn: asyncpg.Connection) -> dict[str, bool]:
    rows = await conn.fetch("SELECT click_id::text AS id, is_duplicate FROM clicks")
    return {r["id"][-2:]: r["is_duplicate"] for r in rows}


async def test_duplicates_of_stored_clicks_follow_the_batch_rule(
    conn: asyncpg.Connection,
) -> None:
    link = await insert_link(conn)
    enricher = Enricher(SECRET, ())
    partitions = Partitions()
    second, third, fourth = (UA.replace("131", v) for v in ("130", "129", "128"))
    stored = [click(1, link, visitor="a" * 24),
              click(2, link, ua=second),  # no visitor id
              click(3, link, visitor="b" * 24, ua=third)]
    assert await store_clicks(conn, [enricher.row(c) for c in stored], partitions) == (3, 0, 0)
    later = [
        click(11, link, visitor="a" * 24, ts_us=T0 + 10),  # the same visitor: a repeat
        click(12, link, visitor="c" * 24, ts_us=T0 + 20, ua=fourth),  # a new device
        # Another visitor with click 2's device: click 2 had no visitor id, so maybe the same.
        click(13, link, visitor="d" * 24, ts_us=T0 + 30, ua=second),
        # Another visitor with click 3's device: two people with ids of their own.
        click(14, link, visitor="e" * 24, ts_us=T0 + 40, ua=third),
        click(15, link, ts_us=T0 + 50, ua=third),  # no visitor id, click 3's device
        click(16, link, visitor="a" * 24, ts_us=T0 + 2 * HOUR),  # beyond the hour
        click(17, link, visitor="b" * 24, ts_us=T0 - 30, ua=third),  # before click 3
    ]
    assert await store_clicks(conn, [enricher.row(c) for c in later], partitions) == (7, 0, 4)
    flags = await duplicates(conn)
    assert [flags[f"{n:02d}"] for n in (1, 2, 3, 11, 12, 13, 14, 15, 16, 17)] == [
        False, False, False, True, False, True, False, True, False, True]


async def test_the_stored_duplicate_window_is_exact_and_spans_a_month_turn(
    conn: asyncpg.Connection,
) -> None:
    """The probe reads a click's partition when its hour either side lies in its month, and
    all of them when it does not, a batch of several months split so; the hour is to the
    microsecond either way."""
    link = await insert_link(conn)
    enricher = Enricher(SECRET, ())
    partitions = Partitions()
    new_year = 1_924_992_000_000_000  # 2031-01-01T00:00:00Z
    mid_january = new_year + 14 * 24 * HOUR
    stored = [click(1, link, visitor="a" * 24, ts_us=new_year - 1),  # December's last microsecond
              click(2, link, visitor="b" * 24, ts_us=new_year - 1),
              click(3, link, visitor="c" * 24, ts_us=mid_january),
              click(4, link, visitor="d" * 24, ts_us=mid_january),
              click(5, link, visitor="e" * 24, ts_us=new_year - 1),
              click(6, link, visitor="f" * 24, ts_us=mid_january)]
    assert await store_clicks(conn, [enricher.row(c) for c in stored], partitions) == (6, 0, 0)
    across = [click(11, link, visitor="a" * 24, ts_us=new_year - 1 + HOUR),  # the hour: a repeat
              click(12, link, visitor="b" * 24, ts_us=new_year + HOUR)]  # a microsecond beyond
    assert await store_clicks(conn, [enricher.row(c) for c in across], partitions) == (2, 0, 1)
    within = [click(13, link, visitor="c" * 24, ts_us=mid_january - HOUR),
              click(14, link, visitor="d" * 24, ts_us=mid_january + HOUR + 1)]
    assert await store_clicks(conn, [enricher.row(c) for c in within], partitions) == (2, 0, 1)
    mid_february = new_year + 45 * 24 * HOUR
    mixed = [click(15, link, visitor="e" * 24, ts_us=new_year - 1 + HOUR),  # across the turn
             click(16, link, visitor="f" * 24, ts_us=mid_january + HOUR),  # within January
             click(17, link, visitor="a" * 24, ts_us=mid_february)]  # another month
    rows = [enricher.row(c) for c in mixed]
    assert [(table, len(part)) for table, part in probe_tables(
        await partitions.groups(conn, prepare_rows(rows)))] == [
        ("clicks_2031m01", 1), ("clicks_2031m02", 1), ("clicks", 1)]
    assert await store_clicks(conn, rows, partitions) == (3, 0, 2)
    flags = await duplicates(conn)
    assert [flags[f"{n:02d}"] for n in range(11, 18)] == [
        True, False, True, False, True, True, False]


async def test_visitors_are_probed_without_fingerprints_while_no_anonymous_click_is_stored(
    conn: asyncpg.Connection,
) -> None:
    """Live traffic (every click with a visitor id, none stored without one) is probed by the
    visitor branch alone, which finds what the whole probe finds; once a click without a visitor
    id is stored, the whole probe runs again and finds a visitor's click of that device."""
    link = await insert_link(conn)
    other = await insert_link(conn, referrer="r2", code="abd")
    enricher = Enricher(SECRET, ())
    partitions = Partitions()
    stored = [click(1, link, visitor="a" * 24), click(2, other, visitor="b" * 24),
              click(3, link, visitor="c" * 24, ts_us=T0 - 2 * HOUR)]
    assert await store_clicks(conn, [enricher.row(c) for c in stored], partitions) == (3, 0, 0)
    batch = prepare_rows([enricher.row(c) for c in (
        click(11, link, visitor="a" * 24, ts_us=T0 + HOUR),  # the hour: a repeat
        click(12, link, visitor="b" * 24, ts_us=T0 + 10),  # b's click was on another link
        click(13, link, visitor="c" * 24, ts_us=T0 - HOUR + 1),  # c's is beyond the hour
        click(14, link, visitor="d" * 24, ts_us=T0 + 20, ua=UA.replace("131", "99")))])
    table = (await partitions.groups(conn, batch))[0][0]

    async def probe() -> tuple[list[int], list[int], list[int]]:
        async with conn.transaction():
            await conn.execute("SET LOCAL enable_seqscan = off")
            whole = [r[0] - 1 for r in await conn.fetch(stored_duplicates_sql(table),
                                                         *probe_arguments(batch))]
            visitors = [r[0] - 1 for r in await conn.fetch(
                visitor_duplicates_sql(table), *(visitor_probe_arguments(batch) or []))]
            return whole, visitors, await stored_duplicates(conn, batch, table)

    assert not await conn.fetchval(anonymous_sql(table))
    assert await probe() == ([3], [3], [3])  # (in time order: click 11 is the last)
    # A click without a visitor id on click 14's device: click 14 may be that browser.
    anonymous = enricher.row(click(5, link, ts_us=T0, ua=UA.replace("131", "99")))
    assert await store_clicks(conn, [anonymous], partitions) == (1, 0, 0)
    assert await conn.fetchval(anonymous_sql(table))
    whole, visitors, found = await probe()
    assert whole == found == [2, 3] and visitors == [3]


async def test_the_visitor_probe_reads_any_visitor_id_as_it_is(conn: asyncpg.Connection) -> None:
    """The visitor probe sends its arrays as the text of array literals: visitor ids that such
    a literal would read otherwise (NULL, blanks, commas, braces) are quoted, and one with a
    double quote or a backslash goes through the whole probe, which finds the same."""
    link = await insert_link(conn)
    enricher = Enricher(SECRET, ())
    partitions = Partitions()
    odd = ["NULL", " x ", "a,b", "{c}", 'd"e', "f\\g", "é"]
    stored = [click(n, link, visitor=v) for n, v in enumerate(odd, 1)]
    assert await store_clicks(conn, [enricher.row(c) for c in stored], partitions) == (7, 0, 0)
    again = prepare_rows([enricher.row(click(n, link, visitor=v, ts_us=T0 + HOUR))
                          for n, v in enumerate([*odd, "null", "x"], 11)])
    assert visitor_probe_arguments(again) is None  # (d"e and f\\g)
    assert visitor_probe_arguments(again[:4]) is not None
    table = (await partitions.groups(conn, again))[0][0]
    async with conn.transaction():
        assert sorted(await stored_duplicates(conn, again, table)) == list(range(7))
        assert sorted(await stored_duplicates(conn, again[:4], table)) == list(range(4))


async def test_the_visitor_probe_reads_the_visitor_index_in_its_collation(
    conn: asyncpg.Connection,
) -> None:
    """Visitor ids compare byte by byte (COLLATE "C", migration 0034), the clicks' and those
    they are joined with: the probe's text parameters take the column's collation, so its
    look-ups still go through the visitor index."""
    collations = await conn.fetch(
        "SELECT DISTINCT c.collname FROM pg_attribute a"
        " JOIN pg_collation c ON c.oid = a.attcollation"
        " WHERE a.attname = 'visitor_id' AND a.attrelid IN ('clicks'::regclass,"
        " 'conversions'::regclass, 'customer_visitors'::regclass)")
    assert [r[0] for r in collations] == ["C"]
    link = await insert_link(conn)
    enricher = Enricher(SECRET, ())
    partitions = Partitions()
    rows = prepare_rows([enricher.row(click(n, link, visitor=f"{n:024x}", ts_us=T0 + n))
                         for n in range(1, 4)])
    await store_clicks(conn, rows, partitions)
    (name,) = partitions.names.values()
    async with conn.transaction():
        await conn.execute("SET LOCAL enable_seqscan = off")  # as stored_duplicates
        plan = "\n".join(r[0] for r in await conn.fetch(
            "EXPLAIN " + visitor_duplicates_sql(name), *(visitor_probe_arguments(rows) or [])))
    assert "_program_id_visitor_id_ts_idx on" in plan, plan


async def test_a_replay_that_meets_stored_clicks_stores_only_the_new_ones_once(
    conn: asyncpg.Connection,
) -> None:
    link = await insert_link(conn)
    enricher = Enricher(SECRET, ())
    partitions = Partitions()
    first = [click(n, link, visitor=f"{n:024x}", ts_us=T0 + n) for n in range(1, 6)]
    assert await store_clicks(conn, [enricher.row(c) for c in first], partitions) == (5, 0, 0)
    # The same segment again with two clicks that were not in it, one a repeat of click 1.
    replay = [*first, click(6, link, visitor=f"{1:024x}", ts_us=T0 + 6),
              click(7, link, visitor=f"{7:024x}", ts_us=T0 + 7)]
    rows = [enricher.row(c) for c in replay]
    assert await store_clicks(conn, rows, partitions) == (2, 0, 1)
    assert await store_clicks(conn, rows, partitions) == (0, 0, 0)
    assert await conn.fetchval("SELECT count(*) FROM clicks") == 7
    flags = await duplicates(conn)
    assert [flags[f"{n:02d}"] for n in range(1, 8)] == [False] * 5 + [True, False]


async def test_a_partition_gets_statistics_once_the_flusher_first_writes_to_it(
    conn: asyncpg.Connection, owner_conn: asyncpg.Connection,
) -> None:
    """Without them the duplicate probes of the next batch walk the primary key."""
    link = await insert_link(conn)
    year_2031 = 1_930_000_000_000_000  # a month no job created ahead
    rows = [Enricher(SECRET, ()).row(click(n, link, visitor=f"{n:024x}", ts_us=year_2031 + n))
            for n in range(1, 4)]
    partitions = Partitions()
    await store_clicks(conn, rows, partitions)
    (name,) = partitions.names.values()
    assert await owner_conn.fetchval(
        "SELECT reltuples FROM pg_class WHERE relname = $1", name) == 3


async def test_a_partition_is_analyzed_again_whenever_it_doubled(
    conn: asyncpg.Connection, owner_conn: asyncpg.Connection,
) -> None:
    """A month's first batch may be one click (just after midnight). Statistics of one row say
    every column is unique, `program_id = $1` or `link_id = $1` one row: by 15,000-20,000 clicks
    the visitor probe went through another index (the link's fingerprints here,
    clicks_referrer_ts or the primary key in other shapes), every click of the link or program
    in the hour for each click of a batch (9-14 s of PostgreSQL a batch). Analyzed again
    whenever it doubled until an ANALYZE saw Partitions.SETTLED rows, the partition never looks
    to the planner like less than half of itself or than that, and the probe keeps its index."""
    link = await insert_link(conn)
    enricher = Enricher(SECRET, ())
    year_2031 = 1_930_000_000_000_000  # a month no job created ahead

    def batch(first: int, size: int) -> list[list[object]]:
        # As wrk sends them: a new visitor each click, one address and device, 50 ms apart.
        return [enricher.row(click(n, link, visitor=f"{n:024x}", ts_us=year_2031 + n * 50_000))
                for n in range(first, first + size)]

    partitions = Partitions()
    await store_clicks(conn, batch(0, 1), partitions)
    (name,) = partitions.names.values()
    # Only the flusher analyzes it here (autovacuum would, within a minute, a real server).
    await owner_conn.execute(f"ALTER TABLE {name} SET (autovacuum_enabled = false)")
    stored = 1
    for first in range(1, 25_001, 5000):
        rows = batch(first, 5000)
        async with conn.transaction():
            await conn.execute("SET LOCAL enable_seqscan = off")  # as stored_duplicates
            plan = [r[0] for r in await conn.fetch(
                "EXPLAIN " + stored_duplicates_sql(name), *probe_arguments(rows))]
        visitor_probe = plan[plan.index("  SubPlan 1") + 1]
        assert "_program_id_visitor_id_ts_idx on" in visitor_probe, (stored, plan)
        await store_clicks(conn, rows, partitions)
        stored += len(rows)
        assert await owner_conn.fetchval(
            "SELECT reltuples FROM pg_class WHERE relname = $1", name) >= min(
                stored / 2, Partitions.SETTLED)


def test_cached_enrichment_is_what_a_cold_enricher_gives(tmp_path: Path) -> None:
    geo_dir = tmp_path / "geo"
    geo_dir.mkdir()
    write_db(geo_dir / "GeoLite2-Country.mmdb", "GeoLite2-Country",
             {"203.0.113.0/24": {"country": {"iso_code": "FR"}}})
    geo = GeoReader(geo_dir, check_interval_s=0)
    warm = Enricher(SECRET, (), geo=geo)
    link = (1, 2, 3)
    clicks = [click(n, link, visitor=f"{n % 3:024x}", peer=f"203.0.113.{n % 4}",
                    ua=(UA, "curl/8.0", "")[n % 3]) for n in range(30)]
    for c in clicks:
        assert warm.row(c) == Enricher(SECRET, (), geo=geo).row(c)
        assert warm.row(c, source="import") == Enricher(SECRET, (), geo=geo).row(
            c, source="import")
    assert warm.row(clicks[0])[19] == "FR"
    # The databases change: the cached places go with them.
    other = tmp_path / "other"
    other.mkdir()
    write_db(other / "GeoLite2-Country.mmdb", "GeoLite2-Country",
             {"203.0.113.0/24": {"country": {"iso_code": "DE"}}})
    shutil.copy(other / "GeoLite2-Country.mmdb", geo_dir / "GeoLite2-Country.mmdb")
    assert geo.maybe_reload(force=True)
    assert warm.row(clicks[0])[19] == "DE"


def test_visitor_ids_are_random_hex_and_unique_across_refills() -> None:
    ids = VisitorIds()
    made = [ids.new(time.time_ns()) for _ in range(3 * VisitorIds.BATCH + 7)]
    assert len(set(made)) == len(made)
    assert all(len(v) == 24 and int(v, 16) >= 0 for v in made)


def test_the_collector_comes_back_as_it_was_when_the_last_batch_ends() -> None:
    """Batches of two flushers in one process (the tests' apps) overlap at their awaits and
    end in any order: the thresholds are held until the last ends, then are what they were."""
    before = gc.get_threshold()
    first, second = few_collections(), few_collections()
    first.__enter__()
    second.__enter__()
    assert gc.get_threshold() == FEW_COLLECTIONS
    first.__exit__(None, None, None)
    assert gc.get_threshold() == FEW_COLLECTIONS
    second.__exit__(None, None, None)
    assert gc.get_threshold() == before


async def test_a_new_partition_takes_the_statistics_targets_of_clicks(
    conn: asyncpg.Connection,
) -> None:
    """Columns only ever read out get no planner statistics (ANALYZE skips them), in the
    partitions the flusher creates as in those the migration found."""
    name = await conn.fetchval("SELECT refguard_ensure_click_partition('2033-05-05Z')")
    targets = {r["relname"]: r["attstattarget"] for r in await conn.fetch(
        """SELECT c.relname::text AS relname, a.attstattarget FROM pg_attribute a
           JOIN pg_class c ON c.oid = a.attrelid
           WHERE a.attname = $1 AND c.relname IN ('clicks', $2)""", "city", name)}
    assert targets == {"clicks": 0, name: 0}
    assert await conn.fetchval(
        """SELECT a.attstattarget FROM pg_attribute a
           WHERE a.attrelid = to_regclass($1) AND a.attname = 'visitor_id'""", name) == -1


async def test_the_packed_inet_codec_reads_and_writes_what_asyncpg_does(
    conn: asyncpg.Connection,
) -> None:
    """The flusher's connection encodes packed addresses itself; any inet the connection then
    writes or reads is what asyncpg's own codec gives."""
    values = ["203.0.113.7", "2001:db8::1", "10.1.2.3/24", "2001:db8::5/64",
              ipaddress.ip_address("198.51.100.1"), ipaddress.ip_interface("10.9.8.7/8")]
    sql = "SELECT $1::inet AS v, $1::inet::text AS t"
    before = [tuple(await conn.fetchrow(sql, v)) for v in values]
    await use_click_codecs(conn)
    assert [tuple(await conn.fetchrow(sql, v)) for v in values] == before
    packed = [ipaddress.ip_address(v).packed for v in ("203.0.113.7", "2001:db8::1")]
    assert [await conn.fetchval("SELECT abbrev($1::inet)", p) for p in packed] == [
        "203.0.113.7", "2001:db8::1"]


async def test_the_click_codecs_read_and_write_times_as_asyncpg_does(
    conn: asyncpg.Connection,
) -> None:
    """The storing connection encodes a row's time from its int (Unix microseconds) and any
    other timestamptz as asyncpg does: the same values written and read back, infinities,
    naive datetimes (local time) and dates included."""
    values: list[object] = [
        datetime(2026, 12, 7, 18, 9, 31, 240585, tzinfo=UTC),
        datetime(2026, 12, 7, 20, 9, 31, 1, tzinfo=timezone(timedelta(hours=2))),
        datetime(1999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),  # before PostgreSQL's epoch
        datetime(1969, 7, 20, 20, 17, 40, 5, tzinfo=UTC),  # before the Unix epoch
        datetime(2026, 3, 29, 1, 30),  # naive: local time
        date(2026, 2, 28),
        datetime.max, datetime.min, datetime.max.replace(tzinfo=UTC),
    ]
    sql = "SELECT $1::timestamptz AS v, $1::timestamptz::text AS t"
    read = ("SELECT 'infinity'::timestamptz, '-infinity'::timestamptz, "
            "'2026-12-07 18:09:31.240585+00'::timestamptz, '1900-01-01 00:00:00.5+00'::timestamptz")
    before = [tuple(await conn.fetchrow(sql, v)) for v in values]
    read_before = tuple(await conn.fetchrow(read))
    await use_click_codecs(conn)
    assert [tuple(await conn.fetchrow(sql, v)) for v in values] == before
    assert tuple(await conn.fetchrow(read)) == read_before
    for at in values[:4]:
        assert isinstance(at, datetime)
        us = round((at - datetime(1970, 1, 1, tzinfo=UTC)) / timedelta(microseconds=1))
        assert tuple(await conn.fetchrow(sql, us)) == tuple(await conn.fetchrow(sql, at))
    assert has_click_codecs(conn)
    await reset_click_codecs(conn)  # (as the importer leaves its connection)
    assert not has_click_codecs(conn)
    assert [tuple(await conn.fetchrow(sql, v)) for v in values] == before
    with pytest.raises(asyncpg.DataError):  # asyncpg's own encoder again
        await conn.fetchval(sql, 1_700_000_000_000_000)


async def test_a_click_is_stored_with_its_journal_time_through_any_connection(
    conn: asyncpg.Connection, dsn: str,
) -> None:
    """A row's time is the journal's int of Unix microseconds: stored as that instant through
    the flusher's connection (its codec) and through one without it (datetimes for its COPY),
    on the direct path and the replay's staging path alike."""
    link = await insert_link(conn)
    at = [T0 + 123_457, T0 + HOUR + 1, T0 + 2 * HOUR + 999_999]
    expect = {f"{n:012d}": datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=us)
              for n, us in enumerate(at, 1)}
    enricher = Enricher(SECRET, ())
    plain = [enricher.row(click(1, link, visitor="a" * 24, ts_us=at[0]))]
    assert type(plain[0][2]) is int
    assert await store_clicks(conn, plain, Partitions()) == (1, 0, 0)
    coded = await asyncpg.connect(dsn)
    try:
        await use_click_codecs(coded)
        rows = [enricher.row(click(n, link, visitor=f"{n:024x}", ts_us=us))
                for n, us in enumerate(at, 1)]
        # The first is stored already: a replay, through the staging table.
        assert await store_clicks(coded, rows, Partitions()) == (2, 0, 0)
        assert await store_clicks(coded, [rows[2]], Partitions()) == (0, 0, 0)
        replayed = [enricher.row(click(n, link, visitor=f"{n:024x}", ts_us=us))
                    for n, us in enumerate(at, 1)]
        assert await store_clicks(conn, replayed, Partitions()) == (0, 0, 0)
    finally:
        await coded.close()
    stored = {r["id"][-12:]: r["ts"] for r in await conn.fetch(
        "SELECT click_id::text AS id, ts FROM clicks")}
    assert stored == expect


async def test_the_flushers_connection_has_the_codec_from_its_start_and_after_a_reconnect(
    dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The codec is set as the flusher connects, on the connection a failure made it open
    again too (to whichever host is primary then); storing through it sets nothing more."""
    coded: list[asyncpg.Connection] = []
    real = flusher_module.queries.use_click_codecs

    async def recording(conn: asyncpg.Connection) -> None:
        coded.append(conn)
        await real(conn)

    monkeypatch.setattr(flusher_module.queries, "use_click_codecs", recording)
    flusher = Flusher(tmp_path, dsn, Enricher(SECRET, ()))
    first = await flusher._connection()
    link = await insert_link(first)
    rows = [flusher.enricher.row(click(1, link, visitor="a" * 24))]
    assert await store_clicks(first, rows, flusher._partitions) == (1, 0, 0)
    assert coded == [first]
    await flusher._drop_connection()  # as a failed flush does
    second = await flusher._connection()
    assert second is not first and coded == [first, second]
    rows = [flusher.enricher.row(click(2, link, visitor="b" * 24, peer="2001:db8::7"))]
    assert await store_clicks(second, rows, flusher._partitions) == (1, 0, 0)
    assert coded == [first, second]
    assert await second.fetchval("SELECT array_agg(abbrev(ip) ORDER BY click_id) FROM clicks"
                                 ) == ["203.0.113.7", "2001:db8::7"]
    await flusher.close(drain_timeout=1)


async def test_a_month_is_indexed_by_fingerprint_once_a_click_without_a_visitor_id_comes(
    conn: asyncpg.Connection,
) -> None:
    """Live clicks (each with a visitor id) leave their month without the index; an imported
    click without one has the months within its hour indexed, and still finds a stored click
    of its device there, with a visitor id or without."""
    link = await insert_link(conn)
    enricher = Enricher(SECRET, ())
    partitions = Partitions()
    new_year = 1_924_992_000_000_000  # 2031-01-01T00:00:00Z
    indexes = ("SELECT array_agg(tablename::text ORDER BY tablename) FROM pg_indexes "
               "WHERE indexname LIKE 'clicks_%_link_fingerprint'")
    live = [click(1, link, visitor="a" * 24, ts_us=new_year - HOUR // 2),
            click(2, link, visitor="b" * 24, ts_us=new_year + 10 * HOUR)]
    assert await store_clicks(conn, [enricher.row(c) for c in live], partitions) == (2, 0, 0)
    assert await conn.fetchval(indexes) is None
    imported = [click(3, link, ts_us=new_year + HOUR // 4),  # click 1's device, across the turn
                click(4, link, ts_us=new_year + 10 * HOUR + 5),  # click 2's
                click(5, link, ts_us=new_year + 12 * HOUR)]  # click 2's, beyond the hour
    rows = [enricher.row(c, source="import") for c in imported]
    assert await store_clicks(conn, rows, partitions) == (3, 0, 2)
    assert await conn.fetchval(indexes) == ["clicks_2030m12", "clicks_2031m01"]
    flags = await duplicates(conn)
    assert [flags[f"{n:02d}"] for n in range(1, 6)] == [False, False, True, True, False]
