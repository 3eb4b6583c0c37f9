"""The review page's program page (/review/programs/{slug}): who may open it, its charts on a
program with data, and its empty states."""

from __future__ import annotations

import re
import time
from typing import Any

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from tests import program_fixture
from tracker.jobs import report_cache
from tracker.programs import queries
from tracker.scoring.economics import CACHE_MAX_AGE_S
from tracker.web.pages import CSP
from tracker.web.review import program

Client = TestClient[web.Request, web.Application]


async def log_in(client: Client, token: str, landing: str) -> dict[str, str]:
    resp = await client.post("/review/login", data={"token": token}, allow_redirects=False)
    assert resp.status == 303, await resp.text()
    assert resp.headers["Location"] == landing
    return {"Cookie": f"rg_review={resp.cookies['rg_review'].value}"}


async def test_finance_and_viewer_see_the_charts(client: Client, tokens: dict[str, str],
                                                 conn: asyncpg.Connection) -> None:
    await program_fixture.build(conn)
    for role, landing in (("finance", "/review"), ("viewer", "/review/programs")):
        cookie = await log_in(client, tokens[role], landing)
        listing = await client.get("/review/programs", headers=cookie)
        assert listing.status == 200
        assert 'href="/review/programs/acme"' in await listing.text()
        resp = await client.get("/review/programs/acme", headers=cookie)
        assert resp.status == 200 and resp.headers["Content-Security-Policy"] == CSP
        html = await resp.text()
        assert '<a href="/review/programs">Programs</a>' in html
        for chart in ("money", "roi", "funnel", "experiment", "experiment-roi", "heat"):
            assert re.search(rf'<svg class="chart[^"]*" [^>]*id="chart-{chart}"', html), chart
        assert html.count("<svg") == 6
        ids = re.findall(r' id="([^"]+)"', html)
        assert len(ids) == len(set(ids))  # aria-labelledby and #fragments point at one each
        # Data is escaped everywhere (the variant's name and the program's), no inline style
        # or script.
        assert "<script>alert" not in html and "&lt;script&gt;" in html
        assert "Acme &lt;Shop&gt;" in html
        assert "style=" not in html and html.count("<script") == 1
        # The March ROI is negative: 1 purchase of 100 USD against 6 rewards of 20 USD.
        assert "<td>2026-03</td>" in html and ">-0.17<" in html
        # Tables under the charts: the months (Jan..Apr), the funnel's stages, the heatmap.
        assert html.count("<td>2026-0") == 4
        assert "Retained 90 days" in html and "<th scope=\"row\">Wed</th>" in html
        # The EUR money is one click away.
        assert 'href="?currency=EUR"' in html
        eur = await (await client.get("/review/programs/acme?currency=EUR",
                                      headers=cookie)).text()
        assert "50.00 EUR" in eur and 'id="chart-money"' in eur


async def test_a_program_without_data_shows_empty_states(client: Client, tokens: dict[str, str],
                                                         conn: asyncpg.Connection) -> None:
    await conn.execute("INSERT INTO programs (slug, name, destination_domains) "
                       "VALUES ('empty', 'Empty', ARRAY['e.test'])")
    cookie = await log_in(client, tokens["viewer"], "/review/programs")
    resp = await client.get("/review/programs/empty", headers=cookie)
    assert resp.status == 200
    html = await resp.text()
    assert "<svg" not in html
    for sentence in ("No referred revenue and no incentive cost yet", "No month with",
                     "Nobody has been asked", "No experiment", "No clicks yet"):
        assert sentence in html


async def test_who_may_open_it(client: Client, tokens: dict[str, str],
                               conn: asyncpg.Connection) -> None:
    await program_fixture.build(conn)
    for path in ("/review/programs", "/review/programs/acme", "/review/programs/nope"):
        resp = await client.get(path, allow_redirects=False)
        assert resp.status == 303 and resp.headers["Location"] == "/review/login"
    refused = await client.post("/review/login", data={"token": tokens["integration"]},
                                allow_redirects=False)
    assert refused.status == 403 and "Set-Cookie" not in refused.headers
    viewer = await log_in(client, tokens["viewer"], "/review/programs")
    missing = await client.get("/review/programs/nope", headers=viewer)
    assert missing.status == 404 and "There is no such program" in await missing.text()
    # A viewer reads the program pages only: the queue, cases and money are finance's.
    for path in ("/review", "/review/cases", "/review/money"):
        resp = await client.get(path, headers=viewer, allow_redirects=False)
        assert resp.status == 403, path
        assert "A viewer token may open the program pages only" in await resp.text()
    page = await (await client.get("/review/programs", headers=viewer)).text()
    assert 'href="/review/money"' not in page
    csrf = re.search(r'name="csrf" value="([^"]+)"', page)
    assert csrf
    decide = await client.post("/review/bulk-approve", headers=viewer,
                               data={"csrf": csrf.group(1), "id": "1", "reason": "x"})
    assert decide.status == 403
    out = await client.post("/review/logout", headers=viewer, data={"csrf": csrf.group(1)},
                            allow_redirects=False)
    assert out.status == 303
    after = await client.get("/review/programs", headers=viewer, allow_redirects=False)
    assert after.status == 303


async def test_the_months_sum_to_the_total_and_the_page_is_kept_for_a_while(
        conn: asyncpg.Connection, monkeypatch: pytest.MonkeyPatch) -> None:
    await program_fixture.build(conn)
    acme = await queries.get_program(conn, "acme")
    cache: program.PageCache = {}
    data = await program.gather(conn, acme, None, cache)
    assert data.currency == "USD"  # the reward's currency, though EUR sorts first
    # Cohort accounting: the months add up to the whole (Jan..Apr, Feb with nothing).
    assert [(m.label, m.revenue, m.cost) for m in data.months] == [
        ("2026-01", 30000, 2000), ("2026-02", 0, 0), ("2026-03", 10000, 12000),
        ("2026-04", 20000, 4000)]
    assert sum(m.revenue for m in data.months) == data.economics["referred_revenue"]["USD"]["net"]
    assert data.months[2].roi == pytest.approx(-1 / 6, abs=1e-6)
    # A purchase in May: the page's copy is kept for CACHE_MAX_AGE_S, then made again.
    await conn.execute(
        """INSERT INTO conversions (program_id, event_id, type, customer_id, amount, currency,
               occurred_at, body_hash, attributed_at)
           VALUES ($1, 'late', 'purchase', 'cl', 700, 'USD', '2026-05-02T10:00Z', '\\x00',
                   now())""", acme.id)
    again = await program.gather(conn, acme, None, cache)
    assert again is data
    assert (await program.gather(conn, acme, None)).months[-1].label == "2026-05"  # no cache
    later = time.monotonic() + CACHE_MAX_AGE_S + 1
    monkeypatch.setattr(time, "monotonic", lambda: later)
    fresh = await program.gather(conn, acme, None, cache)
    assert [m.label for m in fresh.months][-1] == "2026-05"
    eur = await program.gather(conn, acme, "EUR", cache)
    assert [(m.label, m.revenue) for m in eur.months] == [("2026-04", 5000), ("2026-05", 0)]


async def test_the_page_reads_the_reports_jobs_copies_while_fresh(
        conn: asyncpg.Connection, monkeypatch: pytest.MonkeyPatch) -> None:
    """After the reports job ran, a first view computes nothing: every report is its copy;
    a copy that is stale, missing, or an economics made before it had months is computed
    now, and the page's own copy lasts only as long as its oldest figures stay fresh."""
    await program_fixture.build(conn)
    acme = await queries.get_program(conn, "acme")
    live = await program.gather(conn, acme, None)
    await report_cache(conn)
    computed: list[str] = []

    def counting(name: str, real: Any) -> Any:
        async def run(*args: Any, **kwargs: Any) -> Any:
            computed.append(name)
            return await real(*args, **kwargs)
        return run

    for name in ("economics_report", "funnel_report", "experiments_report",
                 "breakdown_report"):
        monkeypatch.setattr(program, name, counting(name, getattr(program, name)))
    copied = await program.gather(conn, acme, None)
    assert computed == []
    stored = await conn.fetchval("SELECT min(computed_at) FROM report_cache")
    assert copied.computed_at == stored
    assert copied.months == live.months and copied.funnel == live.funnel
    assert copied.experiments == live.experiments and copied.heat == live.heat
    # The funnel's copy is stale, the experiments' missing, the economics' of an older
    # shape: those three are computed now, the heatmap still comes from its copy.
    await conn.execute("UPDATE report_cache SET computed_at = now() - interval '1 hour' "
                       "WHERE report = 'funnel'")
    await conn.execute("DELETE FROM report_cache WHERE report = 'experiments'")
    await conn.execute("UPDATE report_cache SET body = body - 'by_month' "
                       "WHERE report = 'economics'")
    again = await program.gather(conn, acme, None)
    assert sorted(computed) == ["economics_report", "experiments_report", "funnel_report"]
    assert again.months == live.months and again.funnel == live.funnel
    # Copies 14 minutes old: the page keeps what it read for one more minute only.
    await report_cache(conn)
    await conn.execute("UPDATE report_cache SET computed_at = now() - interval '14 minutes'")
    computed.clear()
    cache: program.PageCache = {}
    first = await program.gather(conn, acme, None, cache)
    assert computed == [] and await program.gather(conn, acme, None, cache) is first
    later = time.monotonic() + 61
    monkeypatch.setattr(time, "monotonic", lambda: later)
    await conn.execute("UPDATE report_cache SET computed_at = now() - interval '16 minutes'")
    assert await program.gather(conn, acme, None, cache) is not first
    assert len(computed) == 4  # the copies are stale by then too (CACHE_MAX_AGE_S)
