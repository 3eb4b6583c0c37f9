"""Issue 12, items 5, 11 and 6: tokens that cannot be revoked, four-eyes that counts tokens, and
an application role that could switch the ledger's guards off.

- Item 5: a finance token leaks. The admin revokes it; the thief keeps using it on a worker
  that has it cached (for 30 s then; here the cache would keep it an hour), and in the review
  page session he opened with it. Both must end at once.
- Item 11: one person holds two finance tokens and approves a reward above the four-eyes limit
  with both, alone. The second approval must be refused: four-eyes counts people.
- Item 6: whoever runs SQL as the application (a bug, an injection, a stolen DSN) switches the
  ledger's append-only triggers off (`SET session_replication_role = replica`, `ALTER TABLE ...
  DISABLE TRIGGER`) and rewrites the money. The application's role must not be able to, and the
  application must still do everything it does under it.
"""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from tests.helpers import ClientFactory, PgServer, auth, insert_link, make_settings
from tracker import db
from tracker.auth import create_token
from tracker.db import Migration, load_migrations, migrate
from tracker.web import keys
from tracker.web.app import create_app

Client = TestClient[web.Request, web.Application]
WAIT_S = 15.0  # the longest a test waits for something that happens on its own


async def _until(check: Callable[[], object], what: str) -> None:
    """Wait for something another task or process does (never a timed assertion: the wait
    only bounds a hang)."""
    deadline = time.monotonic() + WAIT_S
    while not check():
        assert time.monotonic() < deadline, f"never happened: {what}"
        await asyncio.sleep(0.02)


async def _worker(aiohttp_client: ClientFactory, tmp_path: Path, dsn: str, name: str) -> Client:
    """One worker of a multi-worker server (own process in production: own token cache)."""
    app = create_app(make_settings(tmp_path / name, dsn))
    app[keys.TOKENS].ttl_s = 3600.0  # only the revocation itself may make it forget a token
    client = await aiohttp_client(app)
    cache = app[keys.TOKENS]
    await _until(lambda: getattr(cache, "following", True), f"{name} follows token changes")
    return client


# -- item 5 -----------------------------------------------------------------------------------


async def test_a_revoked_token_stops_at_once_on_every_worker_and_its_sessions_end(
    aiohttp_client: ClientFactory, tmp_path: Path, dsn: str, conn: asyncpg.Connection,
) -> None:
    admin, _ = await create_token(conn, "admin", "ops")
    leaked, leaked_id = await create_token(conn, "finance", "finance laptop")
    a = await _worker(aiohttp_client, tmp_path, dsn, "a")
    b = await _worker(aiohttp_client, tmp_path, dsn, "b")
    # The thief uses the token on both workers (now cached there) and opens a review session.
    for worker in (a, b):
        assert (await worker.get("/api/v1/rewards", headers=auth(leaked))).status == 200
    login = await b.post("/review/login", data={"token": leaked}, allow_redirects=False)
    assert login.status == 303 and login.headers["Location"] == "/review"
    assert (await b.get("/review", allow_redirects=False)).status == 200

    # The admin revokes it through worker a.
    resp = await a.post(f"/api/v1/tokens/{leaked_id}/revoke", headers=auth(admin))
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["revoked_at"] is not None

    # Worker a refuses it at once; worker b as soon as the database's notice arrives.
    assert (await a.get("/api/v1/rewards", headers=auth(leaked))).status == 401
    statuses: list[int] = []

    async def refused_on_b() -> bool:
        statuses.append((await b.get("/api/v1/rewards", headers=auth(leaked))).status)
        return statuses[-1] == 401

    deadline = time.monotonic() + WAIT_S
    while not await refused_on_b():
        assert time.monotonic() < deadline, f"worker b still takes the revoked token: {statuses}"
        await asyncio.sleep(0.02)
    # The review session ended with it.
    page = await b.get("/review", allow_redirects=False)
    assert (page.status, page.headers.get("Location")) == (303, "/review/login")
    assert await conn.fetchval("SELECT count(*) FROM review_sessions") == 0
    assert await conn.fetchval(
        "SELECT count(*) FROM audit_log WHERE action = 'token.revoke' AND object_id = $1",
        str(leaked_id)) == 1
    # The admin's own token still works; and it lists tokens without their secrets.
    listed = await a.get("/api/v1/tokens", headers=auth(admin))
    assert listed.status == 200
    text = await listed.text()
    assert leaked not in text and admin not in text and "token_hash" not in text
    rows = {t["id"]: t for t in json.loads(text)["items"]}
    assert rows[leaked_id]["revoked_at"] is not None and rows[leaked_id]["role"] == "finance"


async def test_token_api_refuses_others_and_unknown_ids(
    client: Client, tokens: dict[str, str], conn: asyncpg.Connection,
) -> None:
    admin_id = await conn.fetchval("SELECT id FROM api_tokens WHERE role = 'admin'")
    for role in ("integration", "finance", "viewer"):
        assert (await client.get("/api/v1/tokens", headers=auth(tokens[role]))).status == 403
        assert (await client.post(f"/api/v1/tokens/{admin_id}/revoke",
                                  headers=auth(tokens[role]))).status == 403
    admin = auth(tokens["admin"])
    for path in ("/api/v1/tokens/999999/revoke", "/api/v1/tokens/x/revoke"):
        assert (await client.post(path, headers=admin)).status == 404
    own = await client.post(f"/api/v1/tokens/{admin_id}/revoke", headers=admin)
    assert own.status == 409 and (await own.json())["error"]["code"] == "conflict"
    viewer_id = await conn.fetchval("SELECT id FROM api_tokens WHERE role = 'viewer'")
    first = await client.post(f"/api/v1/tokens/{viewer_id}/revoke", headers=admin)
    again = await client.post(f"/api/v1/tokens/{viewer_id}/revoke", headers=admin)
    assert first.status == again.status == 200
    assert (await first.json())["revoked_at"] == (await again.json())["revoked_at"]
    page = await client.get("/api/v1/tokens?limit=2", headers=admin)
    body = await page.json()
    assert len(body["items"]) == 2 and body["next"]
    rest = await client.get(f"/api/v1/tokens?limit=2&cursor={body['next']}", headers=admin)
    assert [t["role"] for t in (await rest.json())["items"]] == ["finance", "viewer"]


# -- item 11 ----------------------------------------------------------------------------------


async def _flagged_reward(conn: asyncpg.Connection, amount: int = 5000) -> int:
    """A reward waiting for finance, above the program's four-eyes limit (1000)."""
    pid = await conn.fetchval(
        """INSERT INTO programs (slug, name, destination_domains, settings)
           VALUES ('acme', 'Acme', '{acme.test}', '{"four_eyes_above": 1000}') RETURNING id""")
    rid = await conn.fetchval(
        "INSERT INTO referrers (program_id, external_id) VALUES ($1, 'alice') RETURNING id", pid)
    cid = await conn.fetchval(
        """INSERT INTO conversions (program_id, event_id, type, customer_id, amount, currency,
                                    occurred_at, body_hash)
           VALUES ($1, 'p1', 'purchase', 'bob', 10000, 'USD', now(), '\\x00') RETURNING id""",
        pid)
    reward_id: int = await conn.fetchval(
        """INSERT INTO rewards (program_id, conversion_id, rule_index, referrer_id, beneficiary,
                                payee, amount, currency, credit, status, hold_until)
           VALUES ($1, $2, 0, $3, 'referrer', 'alice', $4, 'USD', 1, 'flagged', now())
           RETURNING id""", pid, cid, rid, amount)
    return reward_id


async def test_one_person_with_two_tokens_cannot_be_both_pairs_of_eyes(
    client: Client, conn: asyncpg.Connection,
) -> None:
    reward = await _flagged_reward(conn)
    laptop, _ = await create_token(conn, "finance", "mallory laptop", "mallory")
    phone, _ = await create_token(conn, "finance", "mallory phone", "mallory")
    url = f"/api/v1/rewards/{reward}/approve"
    first = await client.post(url, json={"reason": "fine"}, headers=auth(laptop))
    assert first.status == 202, await first.text()
    second = await client.post(url, json={"reason": "fine, says me again"}, headers=auth(phone))
    assert second.status == 409, await second.text()
    assert await conn.fetchval("SELECT status FROM rewards WHERE id = $1", reward) == "flagged"
    assert await conn.fetchval("SELECT count(*) FROM ledger_entries") == 0
    # Another person (tokens tied to nobody count as their own person) completes it.
    bob, _ = await create_token(conn, "finance", "bob")
    done = await client.post(url, json={"reason": "agreed"}, headers=auth(bob))
    assert done.status == 200 and (await done.json())["status"] == "approved"
    assert await conn.fetchval("SELECT sum(amount) FROM ledger_entries") == 5000
    people = [r["person"] for r in await conn.fetch(
        "SELECT details->>'person' AS person FROM audit_log WHERE object_type = 'reward' "
        "ORDER BY id")]
    assert people[0] == "person:mallory" and people[1].endswith(":bob"), people


# -- item 6 -----------------------------------------------------------------------------------


ATTACKS = (
    "SET session_replication_role = replica",
    "ALTER TABLE ledger_entries DISABLE TRIGGER ALL",
    "ALTER TABLE ledger_entries DISABLE TRIGGER ledger_append_only",
    "ALTER TABLE audit_log DISABLE TRIGGER ALL",
    "DROP TRIGGER ledger_append_only ON ledger_entries",
    "ALTER TABLE ledger_entries OWNER TO refguard_app",
    "CREATE OR REPLACE FUNCTION refguard_append_only() RETURNS trigger LANGUAGE plpgsql "
    "AS $$ BEGIN RETURN NEW; END $$",
    "UPDATE ledger_entries SET amount = 1",
    "DELETE FROM ledger_entries",
    "TRUNCATE ledger_entries",
    "UPDATE audit_log SET reason = 'nothing happened'",
    "DELETE FROM audit_log",
    "TRUNCATE audit_log",
    "SET ROLE postgres",
    "DELETE FROM schema_migrations",
)


async def test_the_application_role_cannot_switch_off_or_bypass_the_append_only_ledger(
    conn: asyncpg.Connection,
) -> None:
    pid = await conn.fetchval("INSERT INTO programs (slug, name, destination_domains) "
                              "VALUES ('l', 'L', '{l.test}') RETURNING id")
    await conn.execute("INSERT INTO ledger_entries (program_id, payee, currency, amount, kind, "
                       "actor) VALUES ($1, 'alice', 'USD', 2000, 'earned', 'test')", pid)
    await conn.execute("INSERT INTO audit_log (actor, action, object_type, object_id) "
                       "VALUES ('test', 'reward.approve', 'reward', '1')")
    for attack in ATTACKS:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute(attack)
        # Whatever the attack, the guards stay where they were.
        assert await conn.fetchval("SHOW session_replication_role") == "origin", attack
    assert await conn.fetchval("SELECT amount FROM ledger_entries") == 2000
    assert await conn.fetchval("SELECT count(*) FROM audit_log") == 1
    assert await conn.fetchval(
        "SELECT count(*) FROM pg_trigger WHERE tgname IN ('ledger_append_only', "
        "'audit_log_append_only') AND tgenabled = 'O'") == 2
    # It is no superuser and owns nothing (so no ALTER, DROP or DISABLE TRIGGER anywhere).
    assert await conn.fetchval("SELECT rolsuper FROM pg_roles WHERE rolname = current_user") \
        is False
    assert await conn.fetchval(
        "SELECT count(*) FROM pg_class WHERE relowner = (SELECT oid FROM pg_roles "
        "WHERE rolname = current_user) "
        "AND relpersistence <> 't'") == 0


async def test_the_application_keeps_doing_its_own_ddl_under_its_role(
    conn: asyncpg.Connection, owner_conn: asyncpg.Connection,
) -> None:
    """What the flusher, importer and jobs do at run time still works: a click partition for
    any month (through the owner's function), temporary staging tables, fresh planner
    statistics (ANALYZE through the owner, not skipped with a warning), and a month's index by
    fingerprint (through the owner, for a month that exists)."""
    name = await conn.fetchval("SELECT refguard_ensure_click_partition('2019-03-15T10:00:00Z')")
    assert name == "clicks_2019m03"
    assert await conn.fetchval(
        "SELECT pg_get_userbyid(relowner) FROM pg_class WHERE relname = $1", name) == "postgres"
    await conn.execute("INSERT INTO clicks (program_id, click_id, ts, link_id, referrer_id, code)"
                       " VALUES (1, gen_random_uuid(), '2019-03-15T10:00:00Z', 1, 1, 'x')")
    await conn.execute("CREATE TEMP TABLE clicks_stage (LIKE clicks INCLUDING DEFAULTS)")
    assert await conn.fetchval(
        "SELECT last_analyze FROM pg_stat_all_tables WHERE relname = 'clicks_2019m03'") is None
    await conn.execute("SELECT refguard_analyze('clicks', 'conversions')")
    await _until_analyzed(conn, "clicks_2019m03")
    assert await conn.fetchval("SELECT count(*) FROM refguard_index_fingerprints("
                               "'2019-03-15T10:00:00Z', '1990-01-01T00:00:00Z')") == 1
    assert await conn.fetchval("SELECT to_regclass('clicks_2019m03_link_fingerprint')::text"
                               ) == "clicks_2019m03_link_fingerprint"
    with pytest.raises(asyncpg.UndefinedTableError):
        await conn.execute("SELECT refguard_analyze('pg_authid')")
    # Only the application (and the owner) may call the owner's functions.
    await owner_conn.execute("CREATE ROLE refguard_test_stranger")
    try:
        await owner_conn.execute("SET ROLE refguard_test_stranger")
        for call in ("SELECT refguard_ensure_click_partition(now())",
                     "SELECT refguard_analyze('clicks')", "SELECT refguard_grant_app()",
                     "SELECT refguard_index_fingerprints(now())"):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await owner_conn.execute(call)
    finally:
        await owner_conn.execute("RESET ROLE")
        await owner_conn.execute("DROP ROLE refguard_test_stranger")


async def _until_analyzed(conn: asyncpg.Connection, table: str) -> None:
    # The statistics collector reports asynchronously; the ANALYZE itself is done already.
    deadline = time.monotonic() + WAIT_S
    while await conn.fetchval(
            "SELECT last_analyze FROM pg_stat_all_tables WHERE relname = $1", table) is None:
        assert time.monotonic() < deadline, f"{table} was not analyzed"
        await asyncio.sleep(0.05)
        await conn.execute("SELECT pg_stat_clear_snapshot()")


async def test_an_import_under_the_application_role_makes_its_partitions_and_statistics(
    pg: PgServer, database: str, conn: asyncpg.Connection, tmp_path: Path,
) -> None:
    """`refguard import` as the application: clicks of a month without a partition are stored
    (the owner's function makes it), and the planner's statistics are fresh afterwards."""
    await insert_link(conn, program="acme", referrer="alice", code="al", domain="acme.test")
    clicks = tmp_path / "clicks.ndjson"
    clicks.write_text("".join(json.dumps({
        "ts": f"2018-05-0{1 + i % 9}T10:00:00Z", "code": "al", "ip": f"81.2.69.{i}",
        "user_agent": "Mozilla/5.0 (X11; Linux x86_64) Chrome/120.0 Safari/537.36",
        "visitor_id": f"v{i}"}) + "\n" for i in range(60)))
    conversions = tmp_path / "conversions.ndjson"
    conversions.write_text(json.dumps({
        "program": "acme", "event_id": "o1", "type": "signup", "customer_id": "c1",
        "visitor_id": "v1", "occurred_at": "2018-05-02T10:00:00Z"}) + "\n")
    env = {"REFGUARD_DATA_DIR": str(tmp_path / "d"), "PATH": "/usr/bin:/bin",
           "REFGUARD_SECRET_KEY": "s" * 32, "REFGUARD_DATABASE_URL": pg.app_uri(database)}
    done = _cli("import", "--clicks", str(clicks), "--conversions", str(conversions), env=env)
    assert done.returncode == 0, done.stderr
    assert "clicks: 60 read, 60 stored" in done.stdout
    assert "WARNING" not in done.stderr and "skipping" not in done.stderr
    assert await conn.fetchval(
        "SELECT pg_get_userbyid(relowner) FROM pg_class WHERE relname = 'clicks_2018m05'") \
        == "postgres"
    for table in ("clicks_2018m05", "conversions", "customer_visitors"):
        await _until_analyzed(conn, table)


async def test_tables_of_later_migrations_are_granted_and_append_only_ones_stay_so(
    conn: asyncpg.Connection, owner_conn: asyncpg.Connection,
) -> None:
    later = Migration(9001, "9001_later.sql", """
        CREATE TABLE later_notes (id bigint GENERATED ALWAYS AS IDENTITY, note text);
        CREATE TABLE later_log (id bigint GENERATED ALWAYS AS IDENTITY, what text);
        CREATE TRIGGER later_log_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON later_log
            FOR EACH STATEMENT EXECUTE FUNCTION refguard_append_only();""")
    assert await migrate(owner_conn, [*load_migrations(), later]) == ["9001_later.sql"]
    await conn.execute("INSERT INTO later_notes (note) VALUES ('a')")
    await conn.execute("UPDATE later_notes SET note = 'b'")
    await conn.execute("INSERT INTO later_log (what) VALUES ('a')")
    for attack in ("UPDATE later_log SET what = 'b'", "DELETE FROM later_log",
                   "TRUNCATE later_log", "TRUNCATE later_notes"):
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="permission denied"):
            await conn.execute(attack)


async def test_migrate_sets_up_a_login_role_of_the_application_with_its_password(
    pg: PgServer, database: str, owner_conn: asyncpg.Connection,
) -> None:
    """Your own PostgreSQL: REFGUARD_DATABASE_URL names a login role of your choosing; the
    owner's `refguard migrate` makes it a member of refguard_app with the DSN's password, sent
    as a SCRAM verifier the server takes as it is (the same one it computes itself)."""
    user, password = "refguard_test_login", "s3cret-Pa55"
    app_dsn = db.with_user(pg.uri(database), user).replace(f"{user}@", f"{user}:{password}@")
    try:
        assert await db.ensure_app_login(owner_conn, app_dsn) == []
        stored = await owner_conn.fetchval(
            "SELECT rolpassword FROM pg_authid WHERE rolname = $1", user)
        salt = base64.b64decode(stored.split("$")[1].split(":")[1])
        assert stored == db._password_verifier(password, salt)
        await owner_conn.execute(f"SET password_encryption = 'scram-sha-256'; "
                                 f"ALTER ROLE {user} PASSWORD '{password}'")
        by_server = await owner_conn.fetchval(
            "SELECT rolpassword FROM pg_authid WHERE rolname = $1", user)
        salt = base64.b64decode(by_server.split("$")[1].split(":")[1])
        assert by_server == db._password_verifier(password, salt)
        assert await db.ensure_app_login(owner_conn, app_dsn) == []  # again: nothing to do
        conn = await asyncpg.connect(app_dsn)
        try:
            await conn.execute("INSERT INTO audit_log (actor, action, object_type, object_id) "
                               "VALUES ('t', 'a', 'o', '1')")
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute("ALTER TABLE audit_log DISABLE TRIGGER ALL")
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute("DELETE FROM audit_log")
        finally:
            await conn.close()
        # The owner (here a superuser) as the application: warned about, not refused (one
        # DSN for both, as before).
        [warning] = await db.role_warnings(owner_conn, "postgres")
        assert "is a superuser" in warning and "REFGUARD_MIGRATE_DATABASE_URL" in warning
    finally:
        await owner_conn.execute(f"DROP ROLE IF EXISTS {user}")


# -- the embedded server and the command line -------------------------------------------------


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tracker", *args], env=env, capture_output=True,
                          text=True, timeout=180, check=False)


async def test_the_embedded_server_runs_the_application_as_its_own_role(tmp_path: Path) -> None:
    data = tmp_path / "data"
    db.embedded_server(data / "pg")  # held by this test, so the commands below share it
    env = {"REFGUARD_DATA_DIR": str(data), "PATH": "/usr/bin:/bin"}
    migrated = _cli("migrate", env=env)
    assert migrated.returncode == 0, migrated.stderr
    app_dsn = _cli("db-url", env=env).stdout.strip()
    owner_dsn = _cli("db-url", "--owner", env=env).stdout.strip()
    assert db.dsn_user(app_dsn)[0] == "refguard_app"
    assert db.dsn_user(owner_dsn)[0] == "postgres"
    conn = await asyncpg.connect(app_dsn)
    try:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("ALTER TABLE ledger_entries DISABLE TRIGGER ALL")
        assert await db.role_warnings(conn) == []
    finally:
        await conn.close()
    token = _cli("token", "create", "--role", "admin", "--name", "me", env=env)
    assert token.returncode == 0 and token.stdout.startswith("rg_"), token.stderr


def test_token_list_and_revoke_commands(pg: PgServer, database: str, tmp_path: Path) -> None:
    env = {"REFGUARD_DATA_DIR": str(tmp_path), "PATH": "/usr/bin:/bin",
           "REFGUARD_DATABASE_URL": pg.app_uri(database),
           "REFGUARD_MIGRATE_DATABASE_URL": pg.uri(database)}
    made = [_cli("token", "create", "--role", role, "--name", "ops", "--person", "alice",
                 env=env) for role in ("finance", "admin")]
    assert [m.returncode for m in made] == [0, 0], [m.stderr for m in made]
    secrets = [m.stdout.strip() for m in made]
    listed = _cli("token", "list", env=env)
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0].split() == ["ID", "ROLE", "NAME", "PERSON", "CREATED", "REVOKED"]
    assert [ln.split()[1:4] for ln in lines[1:]] == [["finance", "ops", "alice"],
                                                      ["admin", "ops", "alice"]]
    assert not any(s in listed.stdout for s in secrets)

    ambiguous = _cli("token", "revoke", "ops", env=env)
    assert ambiguous.returncode == 2 and "give the id" in ambiguous.stderr
    assert ambiguous.stderr.count("\n") == 1
    missing = _cli("token", "revoke", "nobody", env=env)
    assert missing.returncode == 2 and missing.stderr.startswith("refguard: no token")
    bad_person = _cli("token", "create", "--role", "viewer", "--name", "x", "--person", "",
                      env=env)
    assert bad_person.returncode == 2 and bad_person.stderr.count("\n") == 1

    first_id = lines[1].split()[0]
    revoked = _cli("token", "revoke", first_id, env=env)
    assert revoked.returncode == 0 and f"revoked token {first_id}" in revoked.stdout
    again = _cli("token", "revoke", first_id, env=env)
    assert again.returncode == 0 and "revoked already" in again.stdout
    # One live token is named ops now: the name is enough.
    by_name = _cli("token", "revoke", "ops", env=env)
    assert by_name.returncode == 0 and "revoked token" in by_name.stdout, by_name.stderr
    as_json = json.loads(_cli("token", "list", "--json", env=env).stdout)
    assert [t["revoked_at"] is not None for t in as_json] == [True, True]
    assert {t["person"] for t in as_json} == {"alice"}
    assert not any(s in json.dumps(as_json) for s in secrets)
