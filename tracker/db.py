"""PostgreSQL: the DSN in use (embedded or configured), pools, and the migration runner."""

from __future__ import annotations

import hashlib
import logging
import re
import warnings
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import asyncpg

from tracker.settings import Settings

log = logging.getLogger(__name__)

MIGRATION_LOCK = 0x7265_6667_6D69_6772  # "refgmigr": one migrator at a time, cluster-wide
_MIGRATION_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


class DatabaseError(RuntimeError):
    """The database cannot be used (unreachable, or its schema does not fit this code)."""


_embedded: dict[Path, Any] = {}


def database_url(settings: Settings) -> str:
    """The DSN in use: REFGUARD_DATABASE_URL, or the embedded server (started if needed)."""
    if settings.database_url:
        return settings.database_url
    return embedded_server(settings.data_dir / "pg").get_uri()  # type: ignore[no-any-return]


def embedded_server(pgdata: Path, *, stop_on_exit: bool = True) -> Any:
    """Start (or join) the embedded PostgreSQL from the `pgserver` package under `pgdata`.

    pgserver counts the processes holding the server; the last one to exit stops it when
    `stop_on_exit` is true.
    """
    pgdata = pgdata.resolve()
    server = _embedded.get(pgdata)
    if server is None:
        with warnings.catch_warnings():
            # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI); harmless here.
            warnings.simplefilter("ignore")
            import pgserver

            pgdata.parent.mkdir(parents=True, exist_ok=True)
            server = pgserver.get_server(  # type: ignore[attr-defined]
                pgdata, cleanup_mode="stop" if stop_on_exit else None
            )
        _embedded[pgdata] = server
    return server


def lock_key(name: str) -> int:
    """The advisory-lock key of a job (or anything else that must run one at a time)."""
    return int.from_bytes(hashlib.sha256(b"refguard-job:" + name.encode()).digest()[:8],
                          "big", signed=True)


async def job_lock(conn: asyncpg.Connection, name: str) -> None:
    """Wait for job `name`'s lock until the current transaction ends."""
    await conn.execute("SELECT pg_advisory_xact_lock($1)", lock_key(name))


async def connect(dsn: str, **kwargs: Any) -> asyncpg.Connection:
    return await asyncpg.connect(dsn, server_settings={"application_name": "refguard"}, **kwargs)


async def create_pool(dsn: str, *, min_size: int = 1, max_size: int = 10) -> asyncpg.Pool:
    pool = await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        command_timeout=30,
        server_settings={"application_name": "refguard"},
    )
    assert pool is not None  # noqa: S101 (create_pool only returns None when awaited lazily)
    return pool


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def load_migrations(folder: Path | None = None) -> list[Migration]:
    """The numbered .sql files, in order. Files that do not match `NNNN_name.sql` are an error."""
    if folder is None:
        files = [
            (entry.name, entry.read_text(encoding="utf-8"))
            for entry in resources.files("migrations").iterdir()
            if entry.name.endswith(".sql")
        ]
    else:
        files = [(p.name, p.read_text(encoding="utf-8")) for p in folder.glob("*.sql")]
    out: list[Migration] = []
    for name, sql in sorted(files):
        match = _MIGRATION_NAME.match(name)
        if match is None:
            raise DatabaseError(f"migration file {name!r} is not named NNNN_name.sql")
        out.append(Migration(int(match.group(1)), name, sql))
    versions = [m.version for m in out]
    if len(set(versions)) != len(versions):
        raise DatabaseError("two migration files share a number")
    return out


async def migrate(conn: asyncpg.Connection, migrations: list[Migration] | None = None) -> list[str]:
    """Apply pending migrations in order under an advisory lock; returns the names applied.

    A migration already applied whose file changed since, or a database holding migrations this
    code does not know (newer code ran against it), is an error.
    """
    migrations = load_migrations() if migrations is None else migrations
    # Another process may be migrating: wait for it (a long migration is fine), but a
    # migration's own DDL must not queue behind live traffic's table locks for long.
    await conn.execute("SET lock_timeout = '5min'")
    await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK)
    await conn.execute("SET lock_timeout = '10s'")
    try:
        await conn.execute(
            """CREATE TABLE IF NOT EXISTS schema_migrations (
                   version    integer PRIMARY KEY,
                   name       text NOT NULL,
                   checksum   text NOT NULL,
                   applied_at timestamptz NOT NULL DEFAULT now())"""
        )
        rows = await conn.fetch("SELECT version, name, checksum FROM schema_migrations")
        applied = {r["version"]: (r["name"], r["checksum"]) for r in rows}
        known = {m.version for m in migrations}
        unknown = sorted(set(applied) - known)
        if unknown:
            raise DatabaseError(
                f"the database has migrations this code does not know ({applied[unknown[0]][0]}); "
                "it was upgraded by a newer refguard"
            )
        done: list[str] = []
        for mig in migrations:
            if mig.version in applied:
                _name, checksum = applied[mig.version]
                if checksum != mig.checksum:
                    raise DatabaseError(
                        f"migration {mig.name} was changed after it was applied "
                        "(checksum differs); add a new migration instead"
                    )
                continue
            async with conn.transaction():
                await conn.execute("SET LOCAL statement_timeout = '10min'")
                await conn.execute(mig.sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                    mig.version,
                    mig.name,
                    mig.checksum,
                )
            log.info("applied migration %s", mig.name)
            done.append(mig.name)
        return done
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK)


async def migrate_dsn(dsn: str) -> list[str]:
    conn = await connect(dsn)
    try:
        return await migrate(conn)
    finally:
        await conn.close()
