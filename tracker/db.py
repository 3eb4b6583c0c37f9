"""PostgreSQL: the DSNs in use (embedded or configured), pools, the migration runner and the
application's database role.

Two roles touch the database. The owner (REFGUARD_MIGRATE_DATABASE_URL, else
REFGUARD_DATABASE_URL) applies migrations and owns every table. The application
(REFGUARD_DATABASE_URL) connects as `refguard_app` or a login role that is a member of it: it
owns nothing and may only read and write rows, and the ledger and the audit log only take
INSERTs from it (migrations/0013_app_role.sql), so no bug or injected statement of the
application can disable or bypass their append-only triggers. The embedded server is set up
that way by itself: the owner is its superuser, the application logs in as `refguard_app`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import getpass
import hashlib
import hmac
import logging
import os
import re
import secrets
import warnings
from collections.abc import AsyncIterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit, urlunsplit

import asyncpg

from tracker import metrics
from tracker.settings import Settings

log = logging.getLogger(__name__)

# Errors that mean "the database cannot answer now; retry later": it is unreachable,
# restarting or failing over (a standby not yet promoted refuses writes as read-only), or the
# connection was lost under a query (a pooled connection that sat idle while the primary died
# fails its next query with asyncpg's InternalClientError). The API answers these 503 with
# Retry-After; background loops drop the connection and retry.
UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError, TimeoutError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError,
    asyncpg.InternalClientError, asyncpg.exceptions.ReadOnlySQLTransactionError,
    asyncpg.exceptions.OperatorInterventionError)
# What a background loop (flusher, listeners, jobs) survives and retries: the above and any
# other error the server reports.
RETRYABLE: tuple[type[BaseException], ...] = (*UNAVAILABLE, asyncpg.PostgresError)

MIGRATION_LOCK = 0x7265_6667_6D69_6772  # "refgmigr": one migrator at a time per database
_MIGRATION_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")
APP_ROLE = "refguard_app"  # created by migrations/0013_app_role.sql; holds the app's grants
OWNER_HELP = ("migrations run as the owner of the schema: set REFGUARD_MIGRATE_DATABASE_URL "
              "to the owner's DSN (README, \"Database roles\")")


class DatabaseError(RuntimeError):
    """The database cannot be used (unreachable, or its schema does not fit this code)."""


_embedded: dict[Path, Any] = {}


def database_url(settings: Settings) -> str:
    """The application's DSN: REFGUARD_DATABASE_URL, or the embedded server (started if
    needed) as the `refguard_app` role, which `migrate_dsn` lets log in."""
    if settings.database_url:
        return settings.database_url
    return with_user(_embedded_uri(settings), APP_ROLE)


def migrate_database_url(settings: Settings) -> str:
    """The owner's DSN, for migrations: REFGUARD_MIGRATE_DATABASE_URL, else
    REFGUARD_DATABASE_URL (one role for both: the application then owns its tables), else the
    embedded server's superuser."""
    if settings.migrate_database_url:
        return settings.migrate_database_url
    if settings.database_url:
        return settings.database_url
    return _embedded_uri(settings)


def _embedded_uri(settings: Settings) -> str:
    return embedded_server(settings.data_dir / "pg").get_uri()  # type: ignore[no-any-return]


def with_user(dsn: str, user: str) -> str:
    """`dsn` logging in as `user` (without a password: the embedded server trusts its socket)."""
    parts = urlsplit(dsn)
    hostport = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{quote(user, safe='')}@{hostport}"))


def dsn_user(dsn: str) -> tuple[str, str | None]:
    """The role and password a DSN logs in with (libpq's defaults when it names no user)."""
    parts = urlsplit(dsn)
    query = parse_qs(parts.query)
    user = (unquote(parts.username) if parts.username else None) or next(
        iter(query.get("user", [])), None) or os.environ.get("PGUSER") or getpass.getuser()
    password = (unquote(parts.password) if parts.password else None) or next(
        iter(query.get("password", [])), None)
    return user, password


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


async def create_pool(dsn: str, *, min_size: int = 1, max_size: int = 10,
                      connect_timeout_s: float = 60.0) -> asyncpg.Pool:
    pool = await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        command_timeout=30,
        timeout=connect_timeout_s,
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
        if await conn.fetchval("SELECT to_regclass('schema_migrations')") is None:
            # Only then: the application's role may check the schema but not create in it.
            await _owner_ddl(conn, "the schema_migrations table", """
                CREATE TABLE IF NOT EXISTS schema_migrations (
                    version    integer PRIMARY KEY,
                    name       text NOT NULL,
                    checksum   text NOT NULL,
                    applied_at timestamptz NOT NULL DEFAULT now())""")
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
                await _owner_ddl(conn, f"migration {mig.name}", mig.sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                    mig.version,
                    mig.name,
                    mig.checksum,
                )
            log.info("applied migration %s", mig.name)
            done.append(mig.name)
        if done and await conn.fetchval("SELECT to_regprocedure('refguard_grant_app()')"):
            # The application's grants, again: tables that this run added are covered too.
            await conn.execute("SELECT refguard_grant_app()")
        return done
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK)


async def _owner_ddl(conn: asyncpg.Connection, what: str, sql: str) -> None:
    try:
        await conn.execute(sql)
    except asyncpg.InsufficientPrivilegeError as exc:
        raise DatabaseError(f"{what}: {exc}; {OWNER_HELP}") from None


async def migrate_dsn(dsn: str, app_dsn: str | None = None) -> tuple[list[str], list[str]]:
    """Migrate as the owner (`dsn`), then let the application's role (`app_dsn`) log in.
    Returns the migrations applied and warnings about the application's role."""
    conn = await connect(dsn)
    try:
        applied = await migrate(conn)
        if app_dsn is None or app_dsn == dsn:
            return applied, await role_warnings(conn)
        return applied, await ensure_app_login(conn, app_dsn)
    finally:
        await conn.close()


async def role_warnings(conn: asyncpg.Connection, role: str | None = None) -> list[str]:
    """What is wrong with `role` (default: this connection's) as the application's role: the
    append-only ledger and audit log hold only against a role that neither owns them nor is a
    superuser."""
    row = await conn.fetchrow(
        """SELECT r.rolname, r.rolsuper,
                  pg_has_role(r.oid, c.relowner, 'USAGE') AS owns_ledger
           FROM pg_roles r LEFT JOIN pg_class c ON c.oid = to_regclass('ledger_entries')
           WHERE r.rolname = coalesce($1, current_user)""", role)
    if row is None:
        return []
    if row["rolsuper"]:
        problem = "is a superuser"
    elif row["owns_ledger"]:
        problem = "owns the ledger's table"
    else:
        return []
    return [f"the application connects as {row['rolname']}, which {problem}: it could disable "
            "the triggers that keep the ledger and the audit log append-only; give it a role of "
            f"its own (a member of {APP_ROLE}) in REFGUARD_DATABASE_URL and the owner in "
            "REFGUARD_MIGRATE_DATABASE_URL (README, \"Database roles\")"]


async def ensure_app_login(conn: asyncpg.Connection, app_dsn: str) -> list[str]:
    """As the owner, after migrating: let the role of `app_dsn` log in with the application's
    privileges. `refguard_app` itself is given LOGIN; another role is created (or found) as a
    member of it. A password in the DSN becomes the role's password (sent as a SCRAM verifier,
    never in plain text). Returns warnings (a role that is a superuser, or one the owner may not
    manage) rather than failing: the DBA may manage the login role by hand."""
    user, password = dsn_user(app_dsn)
    if user == await conn.fetchval("SELECT current_user"):
        return await role_warnings(conn)
    found = await conn.fetchrow(
        """SELECT rolcanlogin, pg_has_role(rolname, $2, 'MEMBER') AS member
           FROM pg_roles WHERE rolname = $1""", user, APP_ROLE)
    statements: list[tuple[str, list[str]]] = []
    secret = [] if password is None else [_password_verifier(password)]
    if found is None:
        member_of = [] if user == APP_ROLE else [APP_ROLE]
        statements.append((
            "CREATE ROLE %I LOGIN" + (" IN ROLE %I" if member_of else "")
            + (" PASSWORD %L" if secret else ""), [user, *member_of, *secret]))
    else:
        if not found["member"]:
            statements.append(("GRANT %I TO %I", [APP_ROLE, user]))
        if not found["rolcanlogin"] or secret:
            statements.append(("ALTER ROLE %I LOGIN" + (" PASSWORD %L" if secret else ""),
                               [user, *secret]))
    try:
        for template, args in statements:
            sql = await conn.fetchval(
                "SELECT format($1, " + ", ".join(f"${i + 2}::text" for i in range(len(args)))
                + ")", template, *args)
            await conn.execute(sql)
    except asyncpg.InsufficientPrivilegeError as exc:
        return [f"cannot set up the application's login role {user}: {exc}; create it as a "
                f"member of {APP_ROLE} yourself (README, \"Database roles\")"]
    return await role_warnings(conn, user)


def _password_verifier(password: str, salt: bytes | None = None) -> str:
    """What `ALTER ROLE ... PASSWORD` should store: a SCRAM-SHA-256 verifier (RFC 5803), so the
    password itself never reaches the server or its logs. A password that is not ASCII is sent
    as is: the server would normalize it (SASLprep) before hashing."""
    if not password.isascii():
        return password
    salt, iterations = salt or secrets.token_bytes(16), 4096
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.digest(salted, b"Client Key", "sha256")
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.digest(salted, b"Server Key", "sha256")

    def b64(raw: bytes) -> str:
        return base64.b64encode(raw).decode()

    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


# -- the read replica --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReadView:
    """Where a heavy read reads: `conn`, on the replica or the primary. `replay_lsn` is the
    standby's replay position when the snapshot was taken (None on a primary, which has all)."""

    conn: asyncpg.Connection
    replica: bool = False
    replay_lsn: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"source": "replica" if self.replica else "primary",
                "replay_lsn": self.replay_lsn}


REPLICA_CONNECT_TIMEOUT_S = 5.0


class Replica:
    """The heavy reads' database (REFGUARD_READ_DATABASE_URL): fraud scans, reports and model
    fits read there and write to the primary. Without one (`dsn` None) they read the caller's
    primary connection, as if this class did not exist: one pool, the same transactions.

    A replica lags: what a reader decides must rest on what the replica has (the scan's rule,
    tracker.scoring.risk). When it cannot be reached, `view` reads the primary instead (jobs
    and commands must go on: a scan that waits holds every reward) with a warning and
    REPLICA_UNAVAILABLE{outcome="primary"}; `connection`, for API reports, does not: an
    unbounded number of report requests belongs on the replica, so the API answers 503 with
    Retry-After (REPLICA_UNAVAILABLE{outcome="refused"}) rather than loading the primary that
    takes clicks and conversions.
    """

    def __init__(self, dsn: str | None = None, *, max_size: int = 4) -> None:
        self.dsn = dsn
        self.max_size = max_size
        self.pool: asyncpg.Pool | None = None

    async def open(self) -> None:
        if self.dsn is not None and self.pool is None:
            # min_size 0: an unreachable replica does not stop start-up; and a replica that
            # does not answer costs a scan a few seconds, not asyncpg's default minute.
            self.pool = await create_pool(self.dsn, min_size=0, max_size=self.max_size,
                                          connect_timeout_s=REPLICA_CONNECT_TIMEOUT_S)

    async def close(self) -> None:
        if self.pool is not None:
            await self.pool.close()
            self.pool = None

    @contextlib.asynccontextmanager
    async def view(self, primary: asyncpg.Connection, *, catch_up_s: float = 0.0
                   ) -> AsyncIterator[ReadView]:
        """One consistent snapshot to read from: a read-only repeatable-read transaction on the
        replica, or `primary` itself (as it is: in the caller's transaction, if any) without
        a replica or when it is unreachable. With `catch_up_s`, first wait that long at most
        for the replica to replay what the primary has committed (a command run by hand
        expects to see what was just written); after that it reads what the replica has."""
        opened = None if self.pool is None else await self._begin(self.pool, primary,
                                                                  catch_up_s)
        if opened is None:
            yield ReadView(primary)
            return
        conn, transaction, view = opened
        try:
            yield view
        finally:
            with contextlib.suppress(*RETRYABLE):
                await transaction.rollback()  # read only: nothing to keep
            await self.pool.release(conn)  # type: ignore[union-attr]

    async def _begin(self, pool: asyncpg.Pool, primary: asyncpg.Connection, catch_up_s: float
                     ) -> tuple[asyncpg.Connection, Any, ReadView] | None:
        conn = None
        try:
            conn = await pool.acquire()
            if catch_up_s > 0:
                await _catch_up(primary, conn, catch_up_s)
            transaction = conn.transaction(isolation="repeatable_read", readonly=True)
            await transaction.start()
            # The snapshot is taken by this first statement: it and the position agree.
            lsn = await conn.fetchval("SELECT pg_last_wal_replay_lsn()::text")
        except RETRYABLE as exc:  # down, or refusing this role: the reads go on regardless
            if conn is not None:
                await pool.release(conn)
            log.warning("the read replica is unavailable (%s); reading the primary", exc)
            metrics.REPLICA_UNAVAILABLE.labels(outcome="primary").inc()
            return None
        return conn, transaction, ReadView(conn, True, lsn)

    @contextlib.asynccontextmanager
    async def reads(self, primary: asyncpg.Pool) -> AsyncIterator[asyncpg.Pool]:
        """The pool for one API report: the replica's (checked reachable first), or `primary`
        without a replica. An unreachable replica raises (the API's 503), never falls back."""
        if self.pool is None:
            yield primary
            return
        try:
            conn = await self.pool.acquire()
        except RETRYABLE as exc:
            log.warning("the read replica is unavailable (%s); report refused", exc)
            metrics.REPLICA_UNAVAILABLE.labels(outcome="refused").inc()
            if isinstance(exc, UNAVAILABLE):
                raise
            raise ConnectionError(f"the read replica refused the connection: {exc}") from exc
        await self.pool.release(conn)
        yield self.pool


PRIMARY = Replica()  # no replica: heavy reads read the primary


async def _catch_up(primary: asyncpg.Connection, replica: asyncpg.Connection,
                    timeout_s: float) -> None:
    """Wait (at most `timeout_s`) until `replica` has replayed what `primary` had written."""
    target = await primary.fetchval("SELECT pg_current_wal_lsn()::text")
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not await replica.fetchval(
            "SELECT coalesce(pg_last_wal_replay_lsn() >= $1::text::pg_lsn, true)", target):
        if asyncio.get_running_loop().time() >= deadline:
            log.warning("the read replica has not replayed %s after %.0f s; reading what it "
                        "has", target, timeout_s)
            return
        await asyncio.sleep(0.05)
