"""Helpers the test suites share: database set-up, app settings, API shortcuts, a browser."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from aiohttp.web_runner import BaseRunner

from tracker import db
from tracker.settings import Settings
from tracker.web.protocol import WorkerRunner

if TYPE_CHECKING:
    from playwright.async_api import Browser


TEMPLATE = "refguard_template"


SECRET = b"test-secret-key-0123456789abcdef"


class WorkerServer(TestServer):
    """A test server that serves as `refguard serve`'s workers do: the redirect's fast path
    ahead of the application (tracker.web.protocol)."""

    async def _make_runner(self, **kwargs: Any) -> BaseRunner:
        return WorkerRunner(self.app, **kwargs)


class PgServer:
    def __init__(self, pgdata: Path) -> None:
        self.pgdata = pgdata
        self.server = db.embedded_server(pgdata)

    def uri(self, database: str = "postgres") -> str:
        """The owner's DSN (the server's superuser, who runs migrations)."""
        return str(self.server.get_uri(database))

    def app_uri(self, database: str = "postgres") -> str:
        """The application's DSN: the refguard_app role, which owns nothing and may only read
        and write rows (migrations/0013_app_role.sql), as in production."""
        return db.with_user(self.uri(database), db.APP_ROLE)


async def create_database(pg: PgServer) -> str:
    name = "t_" + uuid.uuid4().hex[:12]
    conn = await asyncpg.connect(pg.uri())
    try:
        await conn.execute(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE} STRATEGY FILE_COPY")
    finally:
        await conn.close()
    return name


async def drop_database(pg: PgServer, name: str) -> None:
    conn = await asyncpg.connect(pg.uri())
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        await conn.close()


def make_settings(data_dir: Path, dsn: str, **overrides: Any) -> Settings:
    """Settings for an app under test. Its background jobs are off unless a test asks for
    them (run_jobs=True): tests call the jobs themselves and count what they did."""
    base = Settings(
        data_dir=data_dir,
        database_url=dsn,
        secret_key=SECRET,
        flush_interval_ms=20,
        journal_fsync_ms=50,
        run_jobs=False,
    )
    return base.with_overrides(**overrides) if overrides else base


ClientFactory = Callable[..., Awaitable[TestClient[web.Request, web.Application]]]


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def click_id(location: str) -> str:
    """The click id (`rg_cid`) a redirect added to its Location."""
    return parse_qs(urlsplit(location).query)["rg_cid"][0]


async def make_link(
    client: TestClient[web.Request, web.Application],
    tokens: dict[str, str],
    *,
    program: str = "acme",
    referrer: str = "alice",
    code: str | None = "alice1",
    destination: str = "https://shop.acme.test/landing?src=ref#top",
    settings: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A program (if new), a referrer and a link, through the API."""
    token = tokens["integration"]
    resp = await client.get(f"/api/v1/programs/{program}", headers=auth(token))
    if resp.status == 404:
        resp = await client.post(
            "/api/v1/programs",
            json={"slug": program, "name": program.title(),
                  "destination_domains": ["acme.test"], "settings": settings or {}},
            headers=auth(tokens["admin"]),
        )
        assert resp.status == 201, await resp.text()
    resp = await client.post(
        "/api/v1/referrers", json={"program": program, "external_id": referrer},
        headers=auth(token),
    )
    assert resp.status in (200, 201), await resp.text()
    body: dict[str, Any] = {"program": program, "referrer": referrer, "destination": destination}
    if code is not None:
        body["code"] = code
    resp = await client.post("/api/v1/links", json=body, headers=auth(token))
    assert resp.status == 201, await resp.text()
    link: dict[str, Any] = await resp.json()
    return link


async def insert_link(conn: asyncpg.Connection, *, program: str = "p", referrer: str = "r",
                      code: str = "abc", domain: str = "a.test") -> tuple[int, int, int]:
    """A program (if new), a referrer and a link straight into the database, for tests below
    the API: (program_id, link_id, referrer_id); the link points at https://<domain>/."""
    pid: int = await conn.fetchval(
        """INSERT INTO programs (slug, name, destination_domains) VALUES ($1, $1, ARRAY[$2])
           ON CONFLICT (slug) DO UPDATE SET slug = excluded.slug RETURNING id""",
        program, domain)
    rid: int = await conn.fetchval(
        "INSERT INTO referrers (program_id, external_id) VALUES ($1, $2) RETURNING id",
        pid, referrer)
    lid: int = await conn.fetchval(
        "INSERT INTO links (program_id, referrer_id, code, destination) VALUES ($1, $2, $3, $4)"
        " RETURNING id", pid, rid, code, f"https://{domain}/")
    return pid, lid, rid


async def wait_for_clicks(
    conn: asyncpg.Connection, expected: int, timeout: float = 15.0
) -> int:
    """Poll until `clicks` holds `expected` rows (or the timeout passes); returns the count."""
    deadline = time.monotonic() + timeout
    count = 0
    while time.monotonic() < deadline:
        count = await conn.fetchval("SELECT count(*) FROM clicks")
        if count >= expected:
            return int(count)
        await asyncio.sleep(0.05)
    return int(count)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


needs_chromium = pytest.mark.skipif(not Path(CHROMIUM).exists(),
                                    reason="Debian chromium is installed by make")


@contextlib.asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    """Debian's chromium driven by Playwright (no browser download)."""
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"],
        )
        try:
            yield browser
        finally:
            await browser.close()


async def scan_findings(conn: asyncpg.Connection) -> tuple[list[Any], list[Any]]:
    """Every stored conversion risk and fraud flag, in an order that does not depend on ids or
    on which scan wrote them: two scans that decided alike give equal findings."""
    risks = await conn.fetch(
        "SELECT conversion_id, score, reasons::text FROM conversion_risk ORDER BY 1")
    flags = await conn.fetch(
        """SELECT kind, score, conversion_id, reasons::text, members::text, evidence::text
           FROM fraud_flags ORDER BY kind, conversion_id NULLS FIRST, members::text""")
    return [tuple(r) for r in risks], [tuple(r) for r in flags]


async def cached_reports(conn: asyncpg.Connection) -> dict[tuple[str, str], Any]:
    """The reports job's stored views, by (report, params)."""
    return {(r["report"], r["params"]): json.loads(r["body"]) for r in await conn.fetch(
        "SELECT report, params, body::text AS body FROM report_cache")}
