"""A real streaming standby (tests/pgcluster.py) as REFGUARD_READ_DATABASE_URL: a scan and the
reports job read it and answer as on the primary; while its replay is paused, a conversion the
primary has is not decided, and the scan after the standby replays it decides it."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg

from tests.helpers import cached_reports, scan_findings
from tests.pgcluster import pg_cluster
from tests.program_fixture import build
from tracker import db
from tracker.jobs import report_cache
from tracker.scoring.risk import scan


async def test_a_streaming_standby_as_the_read_replica(tmp_path: Path) -> None:
    with pg_cluster(tmp_path / "pg") as cluster:
        primary = cluster.start_primary()
        cluster.sql(primary, "CREATE DATABASE refguard")
        standby = await asyncio.to_thread(cluster.add_standby, synchronous=False)
        owner = await asyncpg.connect(primary.dsn("refguard"))
        try:
            await db.migrate(owner)
            await db.ensure_app_login(owner, primary.dsn("refguard", db.APP_ROLE))
        finally:
            await owner.close()
        conn = await asyncpg.connect(primary.dsn("refguard", db.APP_ROLE))
        replica = db.Replica(standby.dsn("refguard", db.APP_ROLE))
        await replica.open()
        try:
            pid = await build(conn)
            [on_primary] = await scan(conn, "acme")
            before = await scan_findings(conn)
            await report_cache(conn)
            reports = await cached_reports(conn)
            await asyncio.to_thread(cluster.wait_replayed, standby)
            [on_standby] = await scan(conn, "acme", replica=replica)
            assert on_standby.read["source"] == "replica" and on_standby.read["replay_lsn"]
            assert on_standby.conversions == on_primary.conversions > 0
            assert await scan_findings(conn) == before
            await report_cache(conn, replica)
            assert await cached_reports(conn) == reports

            # Replay paused: the primary has a new attributed conversion, the standby not.
            cluster.sql(standby, "SELECT pg_wal_replay_pause()")
            for _ in range(100):
                if cluster.sql(standby, "SELECT pg_get_wal_replay_pause_state()") == "paused":
                    break
                await asyncio.sleep(0.1)
            paused_at = cluster.replay_lsn(standby)
            cid = await conn.fetchval(
                """INSERT INTO conversions (program_id, event_id, type, customer_id, amount,
                       currency, occurred_at, body_hash, attributed_at)
                   VALUES ($1, 'late', 'purchase', 'late', 7000, 'USD', now(), '\\x00', now())
                   RETURNING id""", pid)
            await conn.execute(
                """INSERT INTO credits (program_id, conversion_id, referrer_id, model, credit)
                   SELECT $1, $2, id, 'last_touch', 1 FROM referrers
                   WHERE program_id = $1 AND external_id = 'r1'""", pid, cid)
            # The catch-up wait gives up (replay is paused) and the scan reads what it has.
            [lagging] = await scan(conn, "acme", incremental=True, replica=replica,
                                   catch_up_s=0.5)
            assert lagging.scan_id is None and lagging.read["replay_lsn"] == paused_at
            assert not await conn.fetchval(
                "SELECT count(*) FROM conversion_risk WHERE conversion_id = $1", cid)

            cluster.sql(standby, "SELECT pg_wal_replay_resume()")
            [caught_up] = await scan(conn, "acme", incremental=True, replica=replica,
                                     catch_up_s=30)
            assert caught_up.conversions == 1
            assert await conn.fetchval(
                "SELECT scan_id FROM conversion_risk WHERE conversion_id = $1",
                cid) == caught_up.scan_id
        finally:
            await replica.close()
            await conn.close()
    assert not cluster.leftovers()
