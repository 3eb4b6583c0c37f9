"""REFGUARD_READ_DATABASE_URL: fraud scans, reports and fits read there and write the primary.

The replica stands in as a role of its own that cannot write (`default_transaction_read_only`
on, so a write through the read side fails the test) on the test's database, or on a copy of
it taken earlier (a replica that stopped replaying: what the copy answers proves where a
report read). The lag rule is tested with a real snapshot: a conversion committed on the
primary after the read side's snapshot was taken is there for the primary and not for the
scan, which must leave it pending.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp import DummyCookieJar
from prometheus_client import REGISTRY

from bench.candidates import generate
from tests.app.test_candidates import store as store_candidates_history
from tests.helpers import (
    ClientFactory,
    PgServer,
    auth,
    cached_reports,
    make_settings,
    scan_findings,
)
from tests.program_fixture import build
from tests.shop import Shop
from tracker import db
from tracker.asks import candidates
from tracker.jobs import report_cache
from tracker.programs.queries import get_program
from tracker.scoring.credits import attribute_pending
from tracker.scoring.risk import scan, scan_program
from tracker.settings import Settings, SettingsError
from tracker.web.app import create_app
from tracker.web.review.program import gather

READER = "refguard_reader"
REPORTS = ("/api/v1/reports/economics?program=acme&since=2026-01-01T00:00:00Z",
           "/api/v1/reports/economics?program=acme",
           "/api/v1/reports/funnel?program=acme&by=channel",
           "/api/v1/reports/breakdown?program=acme&by=weekday&type=purchase&min_visitors=1",
           "/api/v1/reports/attribution?program=acme",
           "/api/v1/reports/decisions?program=acme",
           "/api/v1/reports/experiments?program=acme",
           "/api/v1/reports/candidates?program=acme")
UNREACHABLE = "postgresql://refguard_app@127.0.0.1:9/nowhere?connect_timeout=2"


@pytest.fixture(scope="session")
def reader_role(pg: PgServer) -> str:
    """A login role with the application's grants whose transactions are read-only."""
    import asyncio

    async def create() -> None:
        conn = await asyncpg.connect(pg.uri())
        try:
            if not await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", READER):
                await conn.execute(f"CREATE ROLE {READER} LOGIN IN ROLE {db.APP_ROLE}")
            await conn.execute(f"ALTER ROLE {READER} SET default_transaction_read_only = on")
        finally:
            await conn.close()

    asyncio.run(create())
    return READER


@pytest.fixture
def reader_dsn(pg: PgServer, database: str, reader_role: str) -> str:
    return db.with_user(pg.uri(database), reader_role)


def _counter(outcome: str) -> float:
    value = REGISTRY.get_sample_value("refguard_replica_unavailable_total",
                                      {"outcome": outcome})
    return value or 0.0


async def _open_shop(aiohttp_client: ClientFactory, tmp_path: Path, dsn: str,
                     tokens: dict[str, str], conn: asyncpg.Connection) -> Shop:
    """A program with honest referrals and a self-referral, attributed."""
    shop = await Shop.open(aiohttp_client, tmp_path, dsn, tokens, conn,
                           {"hold_days": 0, "reward": {"currency": "USD", "rules": [
                               {"beneficiary": "referrer", "on": "purchase", "flat": 1000}]}})
    for name in ("alice", "bob", "sam"):
        await shop.referrer(name)
    for i in range(6):
        await shop.buy("alice" if i % 2 else "bob", f"o{i}", f"friend{i}")
    await shop.buy("sam", "o-sam", "sam")
    await attribute_pending(conn)
    return shop


async def test_a_scan_reads_the_replica_decides_what_it_has_and_answers_as_the_primary(
        aiohttp_client: ClientFactory, tmp_path: Path, dsn: str, reader_dsn: str,
        tokens: dict[str, str], conn: asyncpg.Connection) -> None:
    shop = await _open_shop(aiohttp_client, tmp_path, dsn, tokens, conn)
    replica = db.Replica(reader_dsn)
    await replica.open()
    try:
        # The same full scan, on the primary and on the replica: the same findings.
        [on_primary] = await scan(conn, "acme")
        assert on_primary.read == {"source": "primary", "replay_lsn": None}
        before = await scan_findings(conn)
        assert len(before[0]) == 7 and before[1]
        [on_replica] = await scan(conn, "acme", replica=replica)
        # The stand-in is a primary itself: it has everything, and no replay position.
        assert on_replica.read == {"source": "replica", "replay_lsn": None}
        assert on_replica.conversions == on_primary.conversions == 7
        assert await scan_findings(conn) == before
        stored = json.loads(await conn.fetchval(
            "SELECT stats::text FROM fraud_scans WHERE id = $1", on_replica.scan_id))
        assert stored["read"]["source"] == "replica"

        # The read side cannot write: an accidental write through it fails.
        async with replica.view(conn) as read:
            with pytest.raises(asyncpg.ReadOnlySQLTransactionError):
                await read.conn.execute("DELETE FROM conversion_risk")

        # Lag: a conversion reaches the primary (and attribution) after the replica's
        # snapshot. The scan decides what the replica has and leaves it pending.
        await shop.buy("alice", "o-late", "late")
        assert await attribute_pending(conn) == 1
        pid = await conn.fetchval("SELECT id FROM programs WHERE slug = 'acme'")
        async with conn.transaction():
            await db.job_lock(conn, "fraud_scan")
            async with replica.view(conn) as read:
                await shop.buy("bob", "o-later", "later")
                other = await asyncpg.connect(dsn)
                try:
                    assert await attribute_pending(other) == 1
                finally:
                    await other.close()
                later = "SELECT count(*) FROM conversions WHERE event_id = 'o-later' " \
                        "AND attributed_at IS NOT NULL"
                assert await conn.fetchval(later) == 1  # the primary has it ...
                assert await read.conn.fetchval(later) == 0  # ... the replica not yet
                summary = await scan_program(conn, pid, "acme", incremental=True, read=read)
        assert summary.conversions == 1  # o-late only
        scanned = {r["event_id"] for r in await conn.fetch(
            """SELECT c.event_id FROM conversion_risk k
               JOIN conversions c ON c.program_id = k.program_id AND c.id = k.conversion_id
               WHERE k.scan_id = $1""", summary.scan_id)}
        assert scanned == {"o-late"}
        # The next scan, on a later snapshot, decides it.
        [nxt] = await scan(conn, "acme", incremental=True, replica=replica)
        assert nxt.conversions == 1
        assert await conn.fetchval(
            """SELECT count(*) FROM conversion_risk k JOIN conversions c
                 ON c.program_id = k.program_id AND c.id = k.conversion_id
               WHERE c.event_id = 'o-later' AND k.scan_id = $1""", nxt.scan_id) == 1
        # Nothing left: a replica that had not yet replayed that scan would list o-later as
        # unscanned, but the primary holds its risk, so it is not decided twice.
        assert (await scan(conn, "acme", incremental=True, replica=replica))[0].scan_id is None
    finally:
        await replica.close()


async def test_an_unreachable_replica_the_scan_reads_the_primary_and_says_so(
        aiohttp_client: ClientFactory, tmp_path: Path, dsn: str, tokens: dict[str, str],
        conn: asyncpg.Connection, caplog: pytest.LogCaptureFixture) -> None:
    await _open_shop(aiohttp_client, tmp_path, dsn, tokens, conn)
    replica = db.Replica(UNREACHABLE)
    await replica.open()  # an unreachable replica does not stop start-up
    fallbacks = _counter("primary")
    try:
        with caplog.at_level(logging.WARNING, logger="tracker.db"):
            [summary] = await scan(conn, "acme", replica=replica)
    finally:
        await replica.close()
    assert summary.read["source"] == "primary" and summary.conversions == 7
    assert _counter("primary") == fallbacks + 1
    assert any("read replica is unavailable" in r.getMessage() for r in caplog.records)


async def test_reports_and_the_reports_job_read_the_replica_and_answer_as_the_primary(
        pg: PgServer, database: str, reader_role: str, tmp_path: Path,
        aiohttp_client: ClientFactory) -> None:
    primary_dsn = pg.app_uri(database)
    conn = await asyncpg.connect(primary_dsn)
    try:
        await build(conn)
        token = await _viewer_token(conn)
    finally:
        await conn.close()  # a database is copied only while nobody is connected to it
    # A replica that stopped replaying here: a copy, read-only for the reader.
    copy = "r_" + uuid.uuid4().hex[:12]
    owner = await asyncpg.connect(pg.uri())
    try:
        await owner.execute(f"CREATE DATABASE {copy} TEMPLATE {database} STRATEGY FILE_COPY")
    finally:
        await owner.close()
    reader_dsn = db.with_user(pg.uri(copy), reader_role)
    headers = auth(token)
    plain = await aiohttp_client(create_app(make_settings(tmp_path / "a", primary_dsn)),
                                 cookie_jar=DummyCookieJar())
    replicated = await aiohttp_client(
        create_app(make_settings(tmp_path / "b", primary_dsn, read_database_url=reader_dsn)),
        cookie_jar=DummyCookieJar())
    conn = await asyncpg.connect(primary_dsn)
    try:
        # While the copy has what the primary has, every report answers the same.
        for path in REPORTS:
            a, b = await plain.get(path, headers=headers), await replicated.get(path,
                                                                                headers=headers)
            assert a.status == b.status == 200, (path, await b.text())
            assert _body(await a.json()) == _body(await b.json()), path
        # The program page, before the reports job ran: its reports computed on the replica
        # are those computed on the primary.
        acme = await get_program(conn, "acme")
        replica = db.Replica(reader_dsn)
        await replica.open()
        try:
            page = await gather(conn, acme, None)
            assert replace(await gather(conn, acme, None, replica=replica),
                           computed_at=page.computed_at) == page
            # The reports job: the same default views from the replica as from the primary.
            await report_cache(conn)
            from_primary = await cached_reports(conn)
            await report_cache(conn, replica)
        finally:
            await replica.close()
        assert await cached_reports(conn) == from_primary and len(from_primary) >= 4

        # A purchase the replica never gets: the primary counts it, the replica's report not,
        # so the replicated app's report was read on the replica.
        pid = await conn.fetchval("SELECT id FROM programs WHERE slug = 'acme'")
        await conn.execute(
            """INSERT INTO conversions (program_id, event_id, type, customer_id, amount,
                   currency, occurred_at, body_hash, attributed_at)
               VALUES ($1, 'late', 'purchase', 'late', 7000, 'USD', '2026-04-20T10:00Z',
                       '\\x00', now())""", pid)
        path = "/api/v1/reports/economics?program=acme&since=2026-01-01T00:00:00Z"
        a = await (await plain.get(path, headers=headers)).json()
        b = await (await replicated.get(path, headers=headers)).json()
        assert a["customers"]["other"]["customers"] == b["customers"]["other"]["customers"] + 1
    finally:
        await conn.close()
        await plain.close()
        await replicated.close()
        owner = await asyncpg.connect(pg.uri())
        try:
            await owner.execute(f"DROP DATABASE IF EXISTS {copy} WITH (FORCE)")
        finally:
            await owner.close()


async def _viewer_token(conn: asyncpg.Connection) -> str:
    from tracker.auth import create_token

    token, _ = await create_token(conn, "viewer", "test-viewer")
    return token


def _body(answer: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in answer.items() if k != "computed_at"}


async def test_an_unreachable_replica_a_report_answers_503_and_the_cache_still_answers(
        tmp_path: Path, dsn: str, tokens: dict[str, str],
        conn: asyncpg.Connection, aiohttp_client: ClientFactory) -> None:
    await build(conn)
    await report_cache(conn)
    app = create_app(make_settings(tmp_path / "r", dsn, read_database_url=UNREACHABLE))
    replicated = await aiohttp_client(app, cookie_jar=DummyCookieJar())
    viewer = auth(tokens["viewer"])
    refused = _counter("refused")
    live = await replicated.get(
        "/api/v1/reports/economics?program=acme&since=2026-01-01T00:00:00Z", headers=viewer)
    assert live.status == 503 and live.headers["Retry-After"]
    assert (await live.json())["error"]["code"] == "unavailable"
    assert _counter("refused") == refused + 1
    # The default view the reports job keeps on the primary still answers.
    cached = await replicated.get("/api/v1/reports/economics?program=acme", headers=viewer)
    assert cached.status == 200 and (await cached.json())["cached"] is True


async def test_a_candidates_fit_on_the_replica_is_the_fit_on_the_primary(
        conn: asyncpg.Connection, reader_dsn: str) -> None:
    data = generate(21, customers=300)
    pid, _never = await store_candidates_history(conn, "shop", data)
    scores = "SELECT customer_id, score, percentile FROM candidate_scores ORDER BY 1"
    on_primary = await candidates.refresh(conn, pid, as_of=data.as_of)
    expected = [tuple(r) for r in await conn.fetch(scores)]
    replica = db.Replica(reader_dsn)
    await replica.open()
    try:
        on_replica = await candidates.refresh(conn, pid, as_of=data.as_of, replica=replica)
    finally:
        await replica.close()
    assert on_replica == on_primary
    assert [tuple(r) for r in await conn.fetch(scores)] == expected and expected


async def test_the_fraud_scan_command_reads_the_replica(
        dsn: str, reader_dsn: str, tmp_path: Path, conn: asyncpg.Connection) -> None:
    await conn.execute("INSERT INTO programs (slug, name, destination_domains) "
                       "VALUES ('acme', 'A', '{acme.test}')")
    env = {"REFGUARD_DATABASE_URL": dsn, "REFGUARD_DATA_DIR": str(tmp_path),
           "REFGUARD_READ_DATABASE_URL": reader_dsn}
    out = subprocess.run([sys.executable, "-m", "tracker", "fraud", "scan", "--json"], env=env,
                         capture_output=True, text=True, check=False, timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)[0]["read"]["source"] == "replica"
    bad = subprocess.run([sys.executable, "-m", "tracker", "fraud", "scan"],
                         env={**env, "REFGUARD_READ_DATABASE_URL": "mysql://x:secret@h/db"},
                         capture_output=True, text=True, check=False, timeout=120)
    assert bad.returncode == 2 and "REFGUARD_READ_DATABASE_URL" in bad.stderr
    assert "secret" not in bad.stderr


def test_the_read_url_is_a_postgresql_dsn_kept_out_of_repr(tmp_path: Path) -> None:
    env = {"REFGUARD_DATA_DIR": str(tmp_path), "REFGUARD_SECRET_KEY": "k" * 16}
    assert Settings.from_env(env).read_database_url is None
    dsn = "postgresql://reader:hunter22@replica/refguard"
    settings = Settings.from_env({**env, "REFGUARD_READ_DATABASE_URL": dsn})
    assert settings.read_database_url == dsn and "hunter22" not in repr(settings)
    with pytest.raises(SettingsError, match="REFGUARD_READ_DATABASE_URL"):
        Settings.from_env({**env, "REFGUARD_READ_DATABASE_URL": "replica:5432"})
