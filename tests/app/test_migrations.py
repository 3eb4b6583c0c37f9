"""Migrations: order, idempotence, checksums, concurrency, append-only audit log, partitions."""

from __future__ import annotations

import asyncio
import sys
import uuid
from pathlib import Path

import asyncpg
import pytest

from tests.helpers import PgServer, create_database, drop_database
from tracker.db import DatabaseError, Migration, load_migrations, migrate


async def test_template_has_every_migration_and_rerun_does_nothing(
    conn: asyncpg.Connection,
) -> None:
    names = [r["name"] for r in await conn.fetch(
        "SELECT name FROM schema_migrations ORDER BY version")]
    assert names == [m.name for m in load_migrations()]
    assert await migrate(conn) == []


async def test_concurrent_migrators_apply_once(pg: PgServer) -> None:
    name = "m_" + uuid.uuid4().hex[:12]
    admin = await asyncpg.connect(pg.uri())
    await admin.execute(f"CREATE DATABASE {name}")
    await admin.close()
    try:
        conns = [await asyncpg.connect(pg.uri(name)) for _ in range(3)]
        results = await asyncio.gather(*(migrate(c) for c in conns))
        assert sorted(len(r) for r in results) == [0, 0, len(load_migrations())]
        for c in conns:
            await c.close()
    finally:
        await drop_database(pg, name)


async def test_changed_applied_migration_is_an_error(conn: asyncpg.Connection) -> None:
    migrations = load_migrations()
    changed = [Migration(m.version, m.name, m.sql + "\n-- edited") for m in migrations]
    with pytest.raises(DatabaseError, match="changed after it was applied"):
        await migrate(conn, changed)


async def test_database_newer_than_code_is_refused(conn: asyncpg.Connection,
                                                  owner_conn: asyncpg.Connection) -> None:
    await owner_conn.execute(
        "INSERT INTO schema_migrations (version, name, checksum) "
        "VALUES (9999, '9999_future.sql', 'x')"
    )
    with pytest.raises(DatabaseError, match="newer refguard"):
        await migrate(conn)


def test_badly_named_migration_file_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "0001_ok.sql").write_text("SELECT 1;")
    (tmp_path / "two.sql").write_text("SELECT 1;")
    with pytest.raises(DatabaseError, match=r"NNNN_name\.sql"):
        load_migrations(tmp_path)


async def test_failed_migration_rolls_back_and_is_not_recorded(
    owner_conn: asyncpg.Connection,
) -> None:
    conn = owner_conn  # migrations run as the owner
    migrations = [*load_migrations(), Migration(9000, "9000_bad.sql",
                                                "CREATE TABLE half (x int); SELECT 1/0;")]
    with pytest.raises(asyncpg.DivisionByZeroError):
        await migrate(conn, migrations)
    assert await conn.fetchval("SELECT to_regclass('half')") is None
    assert await conn.fetchval("SELECT count(*) FROM schema_migrations WHERE version = 9000") == 0


async def test_the_application_role_cannot_apply_a_migration(conn: asyncpg.Connection) -> None:
    """A pending migration under the application's role is a clear error naming the owner's
    DSN, and nothing of it stays."""
    migrations = [*load_migrations(), Migration(9000, "9000_new.sql", "CREATE TABLE t (x int);")]
    with pytest.raises(DatabaseError, match="REFGUARD_MIGRATE_DATABASE_URL"):
        await migrate(conn, migrations)
    assert await conn.fetchval("SELECT to_regclass('t')") is None


async def test_audit_log_is_append_only(owner_conn: asyncpg.Connection) -> None:
    """Even for its owner, whose privileges allow it (the application's role has no UPDATE,
    DELETE or TRUNCATE there at all: tests/security/test_tokens_and_roles.py)."""
    conn = owner_conn
    await conn.execute(
        "INSERT INTO audit_log (actor, action, object_type, object_id) VALUES ('t', 'a', 'o', '1')"
    )
    for statement in ("UPDATE audit_log SET reason = 'x'", "DELETE FROM audit_log",
                      "TRUNCATE audit_log"):
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
            await conn.execute(statement)
    assert await conn.fetchval("SELECT count(*) FROM audit_log") == 1


async def test_click_partitions_exist_ahead_and_on_demand(conn: asyncpg.Connection) -> None:
    names = {r["relname"] for r in await conn.fetch(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = 'clicks'::regclass")}
    now = await conn.fetchval("SELECT to_char(now(), 'YYYY\"m\"MM')")
    nxt = await conn.fetchval("SELECT to_char(now() + interval '1 month', 'YYYY\"m\"MM')")
    assert {f"clicks_{now}", f"clicks_{nxt}"} <= names
    old = await conn.fetchval("SELECT refguard_ensure_click_partition('2019-03-15T10:00:00Z')")
    assert old == "clicks_2019m03"
    again = await conn.fetchval("SELECT refguard_ensure_click_partition('2019-03-31T23:59:59Z')")
    assert again == old


async def test_migrate_command_and_db_url(pg: PgServer, tmp_path: Path) -> None:
    name = await create_database(pg)
    try:
        env = {"REFGUARD_DATABASE_URL": pg.uri(name), "REFGUARD_DATA_DIR": str(tmp_path),
               "PATH": "/usr/bin:/bin"}
        proc = await asyncio.create_subprocess_exec(
            *_refguard(), "migrate", env=env, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE)
        out, err = await proc.communicate()
        assert proc.returncode == 0, err
        assert b"applied 0 migration(s)" in out
        proc = await asyncio.create_subprocess_exec(
            *_refguard(), "db-url", env=env, stdout=asyncio.subprocess.PIPE)
        out, _ = await proc.communicate()
        assert out.decode().strip() == pg.uri(name)
    finally:
        await drop_database(pg, name)


def _refguard() -> list[str]:
    return [sys.executable, "-m", "tracker"]
