"""Test fixtures: one embedded PostgreSQL per session, a fresh database per test.

Migrations run once into a template database; each test gets `CREATE DATABASE ... TEMPLATE`,
which copies files and takes a fraction of a second. Tests and their apps connect as the
application's role (`dsn`, `conn`: refguard_app, which owns nothing), so the whole suite runs on
the grants production has; a test that must act as the owner (migrations, the triggers behind
the grants) asks for `owner_dsn` or `owner_conn`. Helpers that tests import live in
tests/helpers.py; this file holds only fixtures.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import hypothesis
import pytest
from aiohttp import DummyCookieJar, web
from aiohttp.test_utils import TestClient

from tests.helpers import (
    TEMPLATE,
    ClientFactory,
    PgServer,
    WorkerServer,
    create_database,
    drop_database,
    make_settings,
)
from tests.shop import Shop, ShopFactory
from tracker import db
from tracker.auth import create_token
from tracker.settings import Settings
from tracker.web.app import create_app

# Property tests: no per-example deadline (the machines are shared and noisy) and the same
# examples on every run, so main stays green or red for a reason; HYPOTHESIS_PROFILE=explore
# draws new examples each run.
hypothesis.settings.register_profile("ci", deadline=None, derandomize=True)
hypothesis.settings.register_profile("explore", deadline=None)
hypothesis.settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(scope="session")
def pg(tmp_path_factory: pytest.TempPathFactory) -> PgServer:
    server = PgServer(tmp_path_factory.mktemp("pg") / "data")

    async def make_template() -> None:
        conn = await asyncpg.connect(server.uri())
        try:
            # Nothing is fsynced, as in tests/pgcluster.py: a killed process keeps the operating
            # system's page cache, only a machine crash would need it. Each test's CREATE
            # DATABASE (a checkpoint and a copy) and DROP then cost a fraction of what they
            # cost with every file synced, on a disk other work shares.
            await conn.execute("ALTER SYSTEM SET fsync = off")
            await conn.execute("SELECT pg_reload_conf()")
            await conn.execute(f"DROP DATABASE IF EXISTS {TEMPLATE}")
            await conn.execute(f"CREATE DATABASE {TEMPLATE}")
        finally:
            await conn.close()
        conn = await asyncpg.connect(server.uri(TEMPLATE))
        try:
            await db.migrate(conn)
            # The role belongs to the cluster: one LOGIN serves every database copied below.
            await db.ensure_app_login(conn, server.app_uri(TEMPLATE))
        finally:
            await conn.close()

    asyncio.run(make_template())
    return server


@pytest.fixture
async def database(pg: PgServer) -> AsyncIterator[str]:
    """A fresh, migrated database of its own (its name)."""
    name = await create_database(pg)
    yield name
    await drop_database(pg, name)


@pytest.fixture
def dsn(pg: PgServer, database: str) -> str:
    """The application's DSN of the test's database (role refguard_app)."""
    return pg.app_uri(database)


@pytest.fixture
def owner_dsn(pg: PgServer, database: str) -> str:
    """The owner's DSN of the same database (migrations, the tables' triggers)."""
    return pg.uri(database)


@pytest.fixture
async def conn(dsn: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(dsn)
    yield connection
    await connection.close()


@pytest.fixture
async def owner_conn(owner_dsn: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(owner_dsn)
    yield connection
    await connection.close()


@pytest.fixture
def settings(tmp_path: Path, dsn: str) -> Settings:
    return make_settings(tmp_path / "data", dsn)


@pytest.fixture
async def client(
    settings: Settings, aiohttp_client: ClientFactory
) -> TestClient[web.Request, web.Application]:
    # No cookie jar: tests send rg_vid explicitly, like distinct visitors would or would not.
    # Served as the workers serve: GET /r/{code} of a known link takes the fast path.
    return await aiohttp_client(WorkerServer(create_app(settings)), cookie_jar=DummyCookieJar())


@pytest.fixture
async def proxied_client(
    tmp_path: Path, dsn: str, aiohttp_client: ClientFactory
) -> TestClient[web.Request, web.Application]:
    """The app behind a trusted proxy on the loopback: a test names each visitor's address in
    X-Forwarded-For (households, offices, carrier NATs). No cookie jar, as `client`."""
    settings = make_settings(tmp_path / "proxied", dsn,
                             trusted_proxies=(ipaddress.ip_network("127.0.0.0/8"),))
    return await aiohttp_client(create_app(settings), cookie_jar=DummyCookieJar())


@pytest.fixture
async def tokens(conn: asyncpg.Connection) -> dict[str, str]:
    """One bearer token per role."""
    out = {}
    for role in ("admin", "integration", "finance", "viewer"):
        token, _ = await create_token(conn, role, f"test-{role}")
        out[role] = token
    return out


@pytest.fixture
def open_shop(aiohttp_client: ClientFactory, tmp_path: Path, dsn: str, tokens: dict[str, str],
              conn: asyncpg.Connection) -> ShopFactory:
    """A shop whose program has the given settings (Shop.open)."""

    async def open_(settings: dict[str, Any], **kwargs: Any) -> Shop:
        return await Shop.open(aiohttp_client, tmp_path, dsn, tokens, conn, settings, **kwargs)

    return open_
