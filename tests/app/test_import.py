"""`refguard import`: enriched like live clicks, bad lines reported, re-import adds nothing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest

from tests.helpers import PgServer, create_database, drop_database, insert_link
from tracker import db
from tracker.clicks.enrich import COLUMNS, Enricher
from tracker.clicks.queries import has_click_codecs
from tracker.intake.importer import import_clicks, import_conversions

UA = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/131.0 Safari/537.36"


async def seed(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await insert_link(conn, program="acme", referrer="alice", code="al", domain="acme.test")
    finally:
        await conn.close()


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tracker", "import", *args], env=env,
                          capture_output=True, text=True, timeout=300, check=False)


async def test_import_clicks_and_conversions(pg: PgServer, tmp_path: Path) -> None:
    name = await create_database(pg)
    dsn = pg.uri(name)
    try:
        await seed(dsn)
        clicks = tmp_path / "clicks.ndjson"
        lines = [
            {"ts": "2025-03-01T10:00:00Z", "code": "al", "ip": "81.2.69.160", "user_agent": UA,
             "visitor_id": "v1", "click_id": "0195511a-4c00-7000-8000-000000000001"},
            {"ts": "2025-03-01T10:05:00Z", "code": "al", "ip": "81.2.69.161",
             "user_agent": "curl/8.0", "accept_language": "en"},
            {"ts": "2025-03-02T10:00:00+01:00", "code": "al", "ip": "2001:db8::1",
             "user_agent": UA, "visitor_id": "v2"},
        ]
        text = "\n".join(json.dumps(x) for x in lines)
        text += "\n{broken json\n" + json.dumps({"ts": "2025-03-01T10:00:00Z", "code": "zz",
                                                 "ip": "1.2.3.4", "user_agent": UA})
        text += "\n" + json.dumps({"ts": "yesterday", "code": "al", "ip": "1.2.3.4",
                                   "user_agent": UA}) + "\n\n"
        clicks.write_text(text)
        conversions = tmp_path / "conversions.ndjson"
        conversions.write_text("\n".join([
            json.dumps({"program": "acme", "event_id": "o1", "type": "purchase",
                        "customer_id": "c1", "amount": 500, "currency": "USD",
                        "occurred_at": "2025-03-01T11:00:00Z",
                        "click_id": "0195511a-4c00-7000-8000-000000000001"}),
            json.dumps({"program": "acme", "event_id": "o2", "type": "signup",
                        "customer_id": "c2"}),  # no occurred_at: required here
        ]) + "\n")
        env = {"REFGUARD_DATABASE_URL": dsn, "REFGUARD_DATA_DIR": str(tmp_path / "d"),
               "REFGUARD_SECRET_KEY": "s" * 32}
        first = run(env, "--clicks", str(clicks), "--conversions", str(conversions))
        assert first.returncode == 2, first.stderr
        assert "clicks.ndjson:4:" in first.stderr and "clicks.ndjson:5: unknown link code" \
            in first.stderr and "clicks.ndjson:6:" in first.stderr
        assert "conversions.ndjson:2: occurred_at is required" in first.stderr
        assert "clicks: 6 read, 3 stored" in first.stdout
        conn = await asyncpg.connect(dsn)
        try:
            rows = await conn.fetch("SELECT click_id::text, ts, host(ip) AS ip, is_bot, "
                                    "bot_rule, source, fingerprint, ua_browser FROM clicks "
                                    "ORDER BY ts")
            assert [r["ip"] for r in rows] == ["81.2.69.160", "81.2.69.161", "2001:db8::1"]
            assert rows[0]["click_id"] == "0195511a-4c00-7000-8000-000000000001"
            assert [r["is_bot"] for r in rows] == [False, True, False]
            assert rows[1]["bot_rule"].startswith("crawler_list:")
            assert {r["source"] for r in rows} == {"import"}
            assert all(r["fingerprint"] for r in rows) and rows[0]["ua_browser"] == "Chrome"
            assert await conn.fetchval("SELECT count(*) FROM conversions") == 1
        finally:
            await conn.close()
        # The same files again: nothing new.
        again = run(env, "--clicks", str(clicks), "--conversions", str(conversions))
        assert "clicks: 6 read, 0 stored, 3 already there" in again.stdout
        assert "conversions: 2 read, 0 stored, 1 already there" in again.stdout
        conn = await asyncpg.connect(dsn)
        try:
            assert await conn.fetchval("SELECT count(*) FROM clicks") == 3
            await db.migrate(conn)
        finally:
            await conn.close()
        missing = run(env, "--clicks", str(tmp_path / "nope.ndjson"))
        assert missing.returncode == 2 and missing.stderr.count("\n") == 1
    finally:
        await drop_database(pg, name)


async def test_worker_processes_import_exactly_what_one_process_does(
    pg: PgServer, tmp_path: Path
) -> None:
    """A big file is enriched by worker processes: the same rows, the same bad lines (by line
    number, in order), the same counts as in one process."""
    clicks = tmp_path / "clicks.ndjson"
    with clicks.open("w") as out:
        for i in range(12_000):
            if i % 1000 == 7:
                out.write("{not json\n")
                continue
            twin = i % 1000 in (500, 501)  # one visitor twice within the hour: a duplicate
            out.write(json.dumps({
                "ts": (f"2025-03-15T11:{i % 2:02d}:00Z" if twin
                       else f"2025-03-{1 + i % 28:02d}T10:{i % 60:02d}:00Z"),
                "code": "al" if i % 3000 else "zz", "ip": f"81.2.{i % 200}.{i % 250}",
                "user_agent": UA.replace("131.0", f"{100 + i % 30}.0"),
                "visitor_id": f"twin{i // 1000}" if twin else f"v{i // 3}"}) + "\n")
    outcomes = []
    for workers in (1, 2):
        name = await create_database(pg)
        try:
            await seed(pg.uri(name))
            conn = await asyncpg.connect(pg.uri(name))
            try:
                result = await import_clicks(conn, clicks, Enricher(b"k" * 32, ()),
                                             workers=workers)
                # The importer's codecs are gone again: its caller reads through asyncpg's.
                assert not has_click_codecs(conn)
                rows = await conn.fetch(
                    f"SELECT {', '.join(COLUMNS)} FROM clicks ORDER BY click_id")
                outcomes.append(((result.read, result.stored, result.bad),
                                 [tuple(r) for r in rows]))
            finally:
                await conn.close()
        finally:
            await drop_database(pg, name)
    (counts, rows), (counts2, rows2) = outcomes
    # Which click of a repeated pair is the duplicate depends on how lines fall into batches
    # (the later one within a batch, the one stored second across batches); all else is equal.
    dup = COLUMNS.index("is_duplicate")
    diff = [(COLUMNS[i], a[i], b[i]) for a, b in zip(rows, rows2, strict=True)
            for i in range(len(COLUMNS)) if a[i] != b[i] and i != dup]
    assert counts == counts2 and not diff, diff[:5]
    assert all(any(r[dup] for r in x) for x in (rows, rows2))
    assert counts[0] == 12_000 and counts[1] == len(rows) == 12_000 - 12 - 4
    assert counts[2][:2] == ["clicks.ndjson:1: unknown link code 'zz'",
                             "clicks.ndjson:8: not valid JSON"]


async def test_a_line_the_database_refuses_is_reported_and_the_rest_load(
    pg: PgServer, tmp_path: Path
) -> None:
    """A NUL in a user agent is cleaned, as for clicks; a line PostgreSQL still refuses (here a
    constraint this test adds) is reported by number, and the rest of its batch is stored."""
    name = await create_database(pg)
    try:
        await seed(pg.uri(name))
        conn = await asyncpg.connect(pg.uri(name))
        try:
            await conn.execute("ALTER TABLE conversions ADD CONSTRAINT test_refuses "
                               "CHECK (customer_id <> 'refused')")
            path = tmp_path / "conversions.ndjson"
            path.write_text("".join(json.dumps({
                "program": "acme", "event_id": f"e{i}", "type": "signup",
                "customer_id": "refused" if i == 3 else f"c{i}",
                "occurred_at": "2025-03-01T10:00:00Z",
                "user_agent": "Mozilla/5.0 \u0000x"}) + "\n" for i in range(1, 6)))
            result = await import_conversions(conn, path, b"k" * 32)
            assert (result.read, result.stored) == (5, 4)
            assert len(result.bad) == 1 and result.bad[0].startswith(
                "conversions.ndjson:3: refused by the database:")
            assert await conn.fetchval(
                "SELECT array_agg(DISTINCT user_agent) FROM conversions") == ["Mozilla/5.0 x"]
        finally:
            await conn.close()
    finally:
        await drop_database(pg, name)


async def test_an_imported_refund_of_another_customer_or_too_much_is_a_bad_line(
    pg: PgServer, tmp_path: Path
) -> None:
    name = await create_database(pg)
    try:
        await seed(pg.uri(name))
        conn = await asyncpg.connect(pg.uri(name))
        try:
            def line(event: str, type_: str, amount: int, **extra: str) -> str:
                return json.dumps({"program": "acme", "event_id": event, "type": type_,
                                   "customer_id": "c1", "amount": amount, "currency": "USD",
                                   "occurred_at": "2025-03-01T10:00:00Z", **extra}) + "\n"

            path = tmp_path / "conversions.ndjson"
            path.write_text(
                line("x0", "refund", 100, original_event_id="p1")  # before its purchase
                + line("p1", "purchase", 5000)
                + line("s1", "signup", 0)
                + line("x1", "refund", 2000, original_event_id="p1")
                + line("x2", "refund", 100, original_event_id="p1", customer_id="c2")
                + line("x3", "chargeback", 3001, original_event_id="p1")
                + line("x4", "chargeback", 3000, original_event_id="p1"))
            result = await import_conversions(conn, path, b"k" * 32)
            assert (result.read, result.stored) == (7, 4)
            assert [b.split(":")[1] for b in result.bad] == ["1", "5", "6"]
            assert "names no purchase" in result.bad[0]
            assert "customer" in result.bad[1] and "more than what is left" in result.bad[2]
            again = await import_conversions(conn, path, b"k" * 32)
            assert (again.stored, again.skipped_existing, len(again.bad)) == (0, 4, 3)
        finally:
            await conn.close()
    finally:
        await drop_database(pg, name)


async def test_one_phone_model_behind_one_address_is_two_people_across_imports(
    pg: PgServer, tmp_path: Path
) -> None:
    """Two visitors with one header fingerprint (same phone, same NAT address) on one link
    within the hour are two people, also when their clicks arrive in separate batches (the
    database's check, not only the in-batch one); the same visitor again is a duplicate."""
    name = await create_database(pg)
    try:
        await seed(pg.uri(name))
        conn = await asyncpg.connect(pg.uri(name))
        try:
            for n, visitor in enumerate(("va", "vb", "va")):
                part = tmp_path / f"part{n}.ndjson"
                part.write_text(json.dumps({
                    "ts": f"2025-03-01T10:{10 * n:02d}:00Z", "code": "al", "ip": "81.2.69.160",
                    "user_agent": UA, "accept_language": "en-US", "visitor_id": visitor}) + "\n")
                assert (await import_clicks(conn, part, Enricher(b"k" * 32, ()))).stored == 1
            rows = await conn.fetch("SELECT visitor_id, is_duplicate FROM clicks ORDER BY ts")
            assert [(r["visitor_id"], r["is_duplicate"]) for r in rows] == [
                ("va", False), ("vb", False), ("va", True)]
        finally:
            await conn.close()
    finally:
        await drop_database(pg, name)


async def test_imported_clicks_are_stored_as_the_redirects_flusher_stores_them(
    pg: PgServer, tmp_path: Path
) -> None:
    """Every column of every imported click (worker processes: rows prepared there, lines read
    by orjson) equals what the flusher stores for the same clicks enriched one by one, edge
    cases included; a second import adds nothing; bad lines are named, none crashes it."""
    from tracker.clicks.flusher import Partitions, store_clicks
    from tracker.intake import queries
    from tracker.intake.importer import parse_click_line

    good = [
        {"ip": "81.2.69.160", "visitor_id": "v1"},
        {"ip": "81.2.69.160", "visitor_id": "v1"},  # the same visitor within the hour
        {"ip": "81.2.70.161"},  # no visitor id: the fingerprint decides
        {"ip": "81.2.70.161"},
        {"ip": "::ffff:81.2.69.162", "accept_language": "de"},  # IPv4-mapped
        {"ip": "2001:DB8::1", "click_id": "0195511A-4C00-7000-8000-0000000000AB"},
        {"ip": "0.0.0.0", "user_agent": "curl/8.0"},  # noqa: S104 (a click from it); a bot
        {"ip": "10.0.0.1", "user_agent": "Mozilla/5.0 \u00e9\u4e2d \x01" + "x" * 3000},
        {"ip": "10.0.0.3", "referer": "https://blog.test/\u00e9", "visitor_id": "v\u00e9"},
    ]
    lines = []
    for i, extra in enumerate(good):
        line = {"ts": f"2025-03-01T10:{i:02d}:00Z", "code": "al", "user_agent": UA, **extra}
        lines.append(json.dumps(line))
    # What orjson refuses and json reads: the same click (and derived id) as before.
    lines.append('{"ts": "2025-03-01T11:00:00Z", "code": "al", "ip": "10.0.0.4", '
                 '"user_agent": "x", "weight": NaN, "big": 123456789012345678901234567890}')
    bad = [
        "[" * 5000,  # deeper than either parser goes
        json.dumps({"ts": "2025-03-01T10:00:00Z", "code": "al", "ip": "1.2.3.04",
                    "user_agent": UA}),  # leading zero: not an address
        json.dumps({"ts": "2025-03-01T10:00:00Z", "code": "al", "ip": "1.2.3.4",
                    "user_agent": UA, "click_id": "0195511a-4c00-7000-8000-00000000000g"}),
        json.dumps({"ts": "2025-03-01T10:00:00Z", "code": "al", "ip": "1.2.3.4",
                    "user_agent": "Mozilla/5.0 \ud800"}),  # a lone surrogate: not text
        json.dumps({"ts": "2025-03-01T10:00:00Z", "code": "al", "ip": "1.2.3.4\u0000",
                    "user_agent": UA}),  # a NUL after an address (the C check raised on it)
    ]
    clicks = tmp_path / "clicks.ndjson"
    clicks.write_text("\n".join(lines + bad) + "\n")
    enricher = Enricher(b"k" * 32, ())
    stored = []
    for imported in (True, False):
        name = await create_database(pg)
        try:
            await seed(pg.uri(name))
            conn = await asyncpg.connect(pg.uri(name))
            try:
                if imported:
                    result = await import_clicks(conn, clicks, enricher, workers=2)
                    assert (result.read, result.stored) == (len(lines) + len(bad), len(lines))
                    assert [b.split(": ")[0] for b in result.bad] == [
                        f"clicks.ndjson:{len(lines) + i}" for i in range(1, len(bad) + 1)]
                    again = await import_clicks(conn, clicks, enricher, workers=2)
                    assert (again.stored, again.skipped_existing) == (0, len(lines))
                else:
                    links = await queries.link_ids(conn)
                    rows = [enricher.row(parse_click_line(t, links), source="import")
                            for t in lines]
                    await store_clicks(conn, rows, Partitions())
                stored.append([tuple(r) for r in await conn.fetch(
                    f"SELECT {', '.join(COLUMNS)} FROM clicks ORDER BY ts, click_id")])
            finally:
                await conn.close()
        finally:
            await drop_database(pg, name)
    assert stored[0] == stored[1] and len(stored[0]) == len(lines)
    dup = COLUMNS.index("is_duplicate")
    assert [r[dup] for r in stored[0]][:4] == [False, True, False, True]


def test_an_imported_click_keeps_its_landing_query() -> None:
    """The landing URL's query (ad click ids, utm tags: whether the visit was bought) is read
    from an import line as the redirect reads it from a live one; too long, a bad line."""
    from tracker.intake.importer import LineError, parse_click_line

    links = {"al": (1, 2, 3)}
    line = {"ts": "2025-03-01T10:00:00Z", "code": "al", "ip": "81.2.69.160", "user_agent": UA,
            "query": "?gclid=Cj0K&utm_medium=cpc"}
    assert parse_click_line(json.dumps(line), links).query == "gclid=Cj0K&utm_medium=cpc"
    assert parse_click_line(json.dumps({**line, "query": None}), links).query == ""
    for bad in ("x" * 2049, 7):
        with pytest.raises(LineError, match="query"):
            parse_click_line(json.dumps({**line, "query": bad}), links)
