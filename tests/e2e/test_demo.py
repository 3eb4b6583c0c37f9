"""`refguard demo` against a real server: the planted fraud ends on the review page, the
organic traffic is approved, and the finance token it prints opens the review page."""

from __future__ import annotations

import asyncio
import io
import ipaddress
import json
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
from aiohttp import DummyCookieJar
from aiohttp.test_utils import TestServer

from tests.helpers import SECRET, auth, free_port, make_settings
from tracker.demo.build import demo
from tracker.demo.report import DemoResult, print_report
from tracker.demo.scenario import ORGANIC, PATTERNS, SMALL
from tracker.settings import Settings
from tracker.web.app import create_app

HELD = ("flagged", "rejected")


async def _rewards(conn: asyncpg.Connection, slug: str) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        """SELECT r.status, r.reasons::text AS reasons, c.event_id, c.customer_id,
                  f.external_id AS referrer
           FROM rewards r
           JOIN programs p ON p.id = r.program_id
           JOIN conversions c ON c.program_id = r.program_id AND c.id = r.conversion_id
           JOIN referrers f ON f.program_id = r.program_id AND f.id = r.referrer_id
           WHERE p.slug = $1""", slug)
    return [dict(r) for r in rows]


def _planted(result: DemoResult, reward: dict[str, Any]) -> str | None:
    """The fraud pattern a reward's conversion, referrer or customer belongs to, if any."""
    for pattern in (result.labels.get(reward["event_id"]),
                    result.accounts.get(reward["referrer"]),
                    result.customers.get(reward["customer_id"])):
        if pattern is not None and pattern != ORGANIC:
            return pattern
    return None


async def _check_outcome(conn: asyncpg.Connection, result: DemoResult) -> list[dict[str, Any]]:
    rewards = await _rewards(conn, result.program)
    assert rewards and result.statuses.get("flagged", 0) > 0
    # Every flagged reward is planted fraud.
    flagged = [r for r in rewards if r["status"] == "flagged"]
    assert flagged and all(_planted(result, r) for r in flagged), [
        r for r in flagged if not _planted(result, r)]
    # Organic rewards are approved (reversed: refunded), planted ones are not.
    organic = [r for r in rewards if _planted(result, r) is None and r["status"] != "reversed"]
    approved = sum(r["status"] == "approved" for r in organic)
    assert len(organic) > 50 and approved / len(organic) >= 0.97, Counter(
        r["status"] for r in organic)
    planted = [r for r in rewards if _planted(result, r)]
    assert sum(r["status"] == "approved" for r in planted) <= 0.05 * len(planted)
    # Every kind of planted fraud produced a held reward or a fraud flag.
    flagged_people: set[str] = set()
    for row in await conn.fetch(
            """SELECT f.members::text AS members FROM fraud_flags f
               JOIN programs p ON p.id = f.program_id WHERE p.slug = $1""", result.program):
        flagged_people |= {m["id"] for m in json.loads(row["members"])
                           if m["type"] in ("referrer", "customer")}
    for pattern in PATTERNS:
        held = [r for r in rewards if r["status"] in HELD and _planted(result, r) == pattern]
        people = {i for i, p in (result.accounts | result.customers).items() if p == pattern}
        assert held or people & flagged_people, pattern
    # The anomaly watch list (fraud.anomaly: pyod over the referrers) names planted fraudulent
    # referrers, and no organic one.
    flags = await conn.fetch(
        """SELECT f.members::text AS members, f.evidence->'referrers_ranked' AS ranked
           FROM fraud_flags f JOIN programs p ON p.id = f.program_id
           WHERE p.slug = $1 AND f.kind = 'anomaly'""", result.program)
    unusual = {m["id"]: result.accounts.get(m["id"], ORGANIC)
               for row in flags for m in json.loads(row["members"])}
    print(f"anomaly flags: {unusual} of {flags[0]['ranked'] if flags else '?'} ranked")
    assert unusual and ORGANIC not in unusual.values(), unusual
    return rewards


async def _check_geo(conn: asyncpg.Connection, result: DemoResult) -> None:
    """The demo's own geo databases enriched its history: clicks carry countries, and the
    click farm's datacenter clicks are hosting (its room of phones is not)."""
    rows = await conn.fetch(
        """SELECT host(c.ip) AS ip, c.country, c.is_hosting, f.external_id AS referrer
           FROM clicks c JOIN programs p ON p.id = c.program_id
           JOIN referrers f ON f.program_id = c.program_id AND f.id = c.referrer_id
           WHERE p.slug = $1 AND c.source <> 'live'""", result.program)
    countries = Counter(r["country"] for r in rows if r["country"])
    assert sum(countries.values()) > 0.9 * len(rows) and len(countries) > 5, countries
    farm = [r for r in rows if result.accounts.get(r["referrer"]) == "click_farm"]
    datacenter = [r for r in farm if ipaddress.ip_address(r["ip"])
                  in ipaddress.ip_network("34.64.0.0/10")]
    assert datacenter and all(r["is_hosting"] and r["country"] == "US" for r in datacenter)
    assert not any(r["is_hosting"] for r in farm if r not in datacenter)
    assert not any(r["is_hosting"] for r in rows if r["referrer"] not in result.accounts
                   or result.accounts[r["referrer"]] == ORGANIC)


async def _check_growth(conn: asyncpg.Connection, result: DemoResult, url: str) -> None:
    """The growth data (issue 15) is there and consistent: candidates, asks and their webhooks,
    shares, channel links in the funnel, the share page."""
    growth = result.growth
    assert growth is not None
    pid = await conn.fetchval("SELECT id FROM programs WHERE slug = $1", result.program)
    # Customers' moments of every kind the program's rules know.
    types = {r["type"] for r in await conn.fetch(
        "SELECT DISTINCT type FROM customer_events WHERE program_id = $1", pid)}
    assert types == {"nps", "review", "milestone", "support_resolved"}
    # Candidates: a fitted model (the customer base is older than its horizon), no planted
    # fraudster scored, and the advocates (organic referrers) over-represented at the top.
    assert growth.model is not None and growth.model["kind"] == "model", growth.model
    assert growth.model["trained_on"] >= 200 and growth.model["auc_holdout"] > 0.6
    scores = {r["customer_id"]: r["percentile"] for r in await conn.fetch(
        "SELECT customer_id, percentile FROM candidate_scores WHERE program_id = $1", pid)}
    planted = {c for c, p in (result.customers | result.accounts).items() if p != ORGANIC}
    assert not planted & set(scores)
    advocates = {a for a, p in result.accounts.items() if p == ORGANIC} & set(scores)
    top = {c for c, pct in scores.items() if pct >= 0.8 - 1e-9}
    assert advocates and len(advocates & top) / len(top) >= 1.5 * len(advocates) / len(scores)
    # The report's candidates: the top share, best first, each with its reasons.
    assert {c["customer"] for c in growth.candidates} >= top
    assert all(c["reasons"] for c in growth.candidates)
    assert [c["score"] for c in growth.candidates] == sorted(
        (c["score"] for c in growth.candidates), reverse=True)
    # Asks: sent ones (and how far they went), suppressed ones with reasons, expired ones.
    asks = [dict(r) for r in await conn.fetch(
        """SELECT a.id, a.status, a.reason, a.customer_id, a.sent_at,
                  (SELECT count(*) FROM webhook_outbox w WHERE w.program_id = a.program_id
                     AND w.event = 'referral.ask'
                     AND (w.payload->'ask'->>'ask_id')::bigint = a.id) AS webhooks,
                  (SELECT count(*) FROM webhook_outbox w WHERE w.program_id = a.program_id
                     AND w.event = 'referral.ask' AND w.delivered_at IS NOT NULL
                     AND (w.payload->'ask'->>'ask_id')::bigint = a.id) AS delivered
           FROM asks a WHERE a.program_id = $1""", pid)]
    reasons = Counter((a["status"], a["reason"]) for a in asks)
    assert reasons[("expired", "late")] > 0 and reasons[("suppressed", "fraud_flag")] > 0
    # Which other reasons show depends on the fit (an ordinary customer's fresh 10 may lift them
    # into the top share): the asks job's own tests cover each; the demo shows several.
    assert len({r for (status, r) in reasons if status == "suppressed"}) >= 2, reasons
    sent = [a for a in asks if a["status"] == "sent"]
    assert sent and all(a["sent_at"] and a["webhooks"] == a["delivered"] == 1 for a in sent)
    assert all(a["webhooks"] == 0 for a in asks if a["status"] != "sent")
    assert all(scores[a["customer_id"]] >= 0.8 - 1e-9 for a in sent)
    assert not planted & {a["customer_id"] for a in sent}
    # The receiver took every sent ask, signed, with what the merchant needs to send it.
    assert growth.refused == 0
    assert sorted(d["ask_id"] for d in growth.deliveries) == sorted(a["id"] for a in sent)
    for d in growth.deliveries:
        assert d["share_url"] and d["link"] and d["link"] in d["message"]
        assert d["deadline"] > d["trigger"]["occurred_at"]
    assert sum(growth.asks.values()) == len(asks)
    assert sum(n for s, n in growth.asks.items() if s not in ("expired", "suppressed")) \
        == len(sent)
    assert growth.reasons == dict(Counter(a["reason"] for a in asks if a["reason"]))
    # Its receiver gone, the program has no webhook URL left.
    assert await conn.fetchval("SELECT settings ? 'webhook_url' FROM programs WHERE id = $1",
                               pid) is False
    # Shares: the history's on channels, and the asked customers' (page and API), with their ask.
    shares = Counter((r["source"], r["asked"]) for r in await conn.fetch(
        "SELECT source, ask_id IS NOT NULL AS asked FROM shares WHERE program_id = $1", pid))
    assert shares[("api", False)] > 0 and shares[("page", True)] > 0, shares
    assert shares.total() == growth.shares
    # The funnel by channel counts the clicks through each channel's link.
    clicks = {r["channel"]: r["n"] for r in await conn.fetch(
        """SELECT l.channel, count(*) AS n FROM clicks c
           JOIN links l ON l.program_id = c.program_id AND l.id = c.link_id
           WHERE c.program_id = $1 AND NOT c.is_bot AND NOT c.is_duplicate
           GROUP BY 1""", pid)}
    funnel = {row["channel"]: row for row in growth.funnel}
    assert {c: funnel[c]["clicks"] for c in clicks} == clicks
    for channel in ("email", "facebook", "x"):
        assert funnel[channel]["shared"] > 0 and funnel[channel]["signups"] > 0, channel
    # The share page the report names opens, with the referrer's link on it.
    async with aiohttp.ClientSession() as session, session.get(growth.share_url) as resp:
        assert resp.status == 200 and "/r/" in await resp.text()
    text = io.StringIO()
    print_report(result, text)
    assert "funnel by channel" in text.getvalue() and growth.share_url in text.getvalue()
    assert url in growth.share_url


async def _finance_token_works(url: str, token: str, slug: str) -> None:
    async with aiohttp.ClientSession(cookie_jar=DummyCookieJar()) as session:
        async with session.post(f"{url}/review/login", data={"token": token},
                                allow_redirects=False) as resp:
            assert resp.status == 303, await resp.text()
            assert resp.headers["Location"].endswith("/review")
            cookie = resp.cookies["rg_review"].value
        async with session.get(f"{url}/review", headers={"Cookie": f"rg_review={cookie}"}) as resp:
            assert resp.status == 200
            assert "flagged rewards wait for a decision" in await resp.text()
        async with session.get(f"{url}/api/v1/rewards?status=flagged&program={slug}",
                               headers=auth(token)) as resp:
            assert resp.status == 200
            items = (await resp.json())["items"]
            assert items and all(i["status"] == "flagged" and i["reasons"] for i in items)


async def _serve(settings: Settings) -> TestServer:
    server = TestServer(create_app(settings), host="127.0.0.1")
    await server.start_server()
    return server


async def test_demo_plants_fraud_that_ends_on_the_review_page(
    dsn: str, tmp_path: Path, conn: asyncpg.Connection
) -> None:
    # The server as `make run` starts it: jobs on, no trusted proxies.
    settings = make_settings(tmp_path / "data", dsn, run_jobs=True)
    server = await _serve(settings)
    url = str(server.make_url("")).rstrip("/")
    try:
        log = io.StringIO()
        result = await demo(settings, url, size=SMALL, log=log)
        assert result.program == "demo"
        assert not result.live_ips  # the server does not believe X-Forwarded-For from here
        assert result.live_clicks > 10 and result.clicks > 1000 and result.conversions > 200
        await _check_outcome(conn, result)
        # Live clicks went through the redirect and the server's flusher.
        live = await conn.fetchval("SELECT count(*) FROM clicks WHERE source = 'live'")
        assert live == result.live_clicks
        await _check_geo(conn, result)
        await _check_growth(conn, result, url)
        # People carry display names: every referrer, and the customers who bought.
        assert await conn.fetchval("""SELECT count(*) FROM referrers f JOIN programs p
                                      ON p.id = f.program_id WHERE p.slug = 'demo'
                                      AND f.name IS NULL""") == 0
        assert await conn.fetchval("SELECT count(*) FROM customer_names") > 200
        assert result.geo_dir == settings.data_dir / "demo-geoip" and not result.geo_served
        await _finance_token_works(url, result.finance_token, result.program)
        steps = log.getvalue()
        assert "customer events (NPS, reviews, milestones, support) posted" in steps
        assert "referral candidates: model over" in steps
        assert "referral.ask delivered to the demo's webhook receiver" in steps
        # The admin token it drove the API with is revoked; the finance token is not.
        assert await conn.fetchval("""SELECT count(*) FROM api_tokens WHERE name = 'refguard demo'
                                      AND revoked_at IS NOT NULL""") == 1

        # Again, through the command line: a new program, nothing broken.
        env = {"REFGUARD_DATABASE_URL": dsn, "REFGUARD_DATA_DIR": str(tmp_path / "cli"),
               "REFGUARD_SECRET_KEY": SECRET.decode()}
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tracker", "demo", "--url", url, env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), 180)
        assert proc.returncode == 0, err.decode()
        text = out.decode()
        assert "program 'demo-2'" in text and f"{url}/review" in text
        # A server it did not start may run without geo: the report says how to restart it.
        assert f"REFGUARD_GEOIP_DIR={tmp_path / 'cli' / 'demo-geoip'} refguard serve" in text
        assert f"{url}/api/v1/openapi.json" in text and f"{url}/metrics" in text
        # The growth section: candidates, asks, the funnel by channel, a share page.
        assert "top candidates" in text and "funnel by channel" in text
        assert f"share page:    {url}/s/" in text
        token = next(line.split()[2] for line in text.splitlines()
                     if line.strip().startswith("finance token:"))
        await _finance_token_works(url, token, "demo-2")
        assert await conn.fetchval(
            """SELECT count(*) FROM rewards r JOIN programs p ON p.id = r.program_id
               WHERE p.slug = 'demo-2' AND r.status = 'flagged'""") > 0
    finally:
        await server.close()


async def test_demo_sends_live_traffic_with_visitor_ips_behind_a_trusted_proxy(
    dsn: str, tmp_path: Path, conn: asyncpg.Connection
) -> None:
    settings = make_settings(tmp_path / "data", dsn, run_jobs=True,
                             trusted_proxies=(ipaddress.ip_network("127.0.0.0/8"),))
    server = await _serve(settings)
    url = str(server.make_url("")).rstrip("/")
    try:
        result = await demo(settings, url, program="shop", seed=3, size=SMALL,
                            log=io.StringIO())
        await _check_growth(conn, result, url)
    finally:
        await server.close()
    assert result.program == "shop" and result.live_ips
    rewards = await _check_outcome(conn, result)
    # Behind the proxy, friends who clicked an asked customer's channel link signed up: the
    # asks they came from read `converted`.
    assert result.growth is not None and result.growth.asks.get("converted", 0) > 0
    # The click injection happened live: clicks through /r/{code} from the shoppers' own IPs,
    # purchases seconds later, held for finance.
    injector = next(a for a, p in result.accounts.items() if p == "click_injection")
    ips = [r["ip"] for r in await conn.fetch(
        """SELECT host(c.ip) AS ip FROM clicks c JOIN referrers f
             ON f.program_id = c.program_id AND f.id = c.referrer_id
           WHERE f.external_id = $1 AND c.source = 'live'""", injector)]
    assert len(ips) == SMALL.injections and len(set(ips)) == len(ips)
    assert not any(ip.startswith("127.") for ip in ips)
    injected = [r for r in rewards if result.labels[r["event_id"]] == "click_injection"]
    assert injected and all(r["status"] in HELD for r in injected)
    assert all("fast_conversion" in r["reasons"] for r in injected)


def test_demo_without_a_server_is_one_line_and_exit_1(tmp_path: Path) -> None:
    port = free_port()
    env = {"REFGUARD_DATA_DIR": str(tmp_path), "REFGUARD_DATABASE_URL": "postgresql://x@/none"}
    out = subprocess.run([sys.executable, "-m", "tracker", "demo", "--url",
                          f"http://127.0.0.1:{port}"], env=env, capture_output=True, text=True,
                         check=False, timeout=60)
    assert out.returncode == 1, out.stderr
    assert out.stderr.count("\n") == 1 and f"127.0.0.1:{port}" in out.stderr
    assert out.stdout == ""
    for bad in (["--url", "ftp://example.com"], ["--url", "http://127.0.0.1:8080/api"],
                ["--program", "Not A Slug"]):
        out = subprocess.run([sys.executable, "-m", "tracker", "demo", *bad], env=env,
                             capture_output=True, text=True, check=False, timeout=60)
        assert out.returncode == 2 and out.stderr.count("\n") == 1, (bad, out.stderr)


async def test_demo_with_no_server_starts_one_and_keeps_serving_until_stopped(
    dsn: str, tmp_path: Path
) -> None:
    """`refguard demo` alone: nothing answers on its port, so it starts `refguard serve`,
    builds the demo through it, prints where to look, and serves until it is stopped."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {"REFGUARD_DATABASE_URL": dsn, "REFGUARD_DATA_DIR": str(tmp_path / "data"),
           "REFGUARD_SECRET_KEY": SECRET.decode(), "REFGUARD_PORT": str(port),
           "PATH": "/usr/bin:/bin"}
    started = datetime.now(UTC) - timedelta(seconds=1)  # the history ends an hour before
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tracker", "demo", "--seed", "3", env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    errors = asyncio.create_task(proc.stderr.read())  # progress lines: never let the pipe fill
    report = ""
    try:
        async with asyncio.timeout(300):
            while "until you stop it" not in report:
                line = await proc.stdout.readline()
                assert line, (report, await errors)
                report += line.decode()
        assert f"{url}/review" in report and "finance token:" in report
        assert f"geo: demo databases written to {tmp_path / 'data' / 'demo-geoip'}" in report
        assert "restart it with REFGUARD_GEOIP_DIR" not in report  # its own server reads them
        token = report.split("finance token:")[1].split()[0]
        async with aiohttp.ClientSession() as session:
            # The server it started reads the demo's geo: live clicks carry countries too.
            since = started.isoformat().replace("+00:00", "Z")  # live clicks only
            async with session.get(f"{url}/api/v1/clicks", params={
                    "program": "demo", "since": since, "limit": "1000"},
                    headers=auth(token)) as resp:
                assert resp.status == 200, await resp.text()
                recent = (await resp.json())["items"]
            assert any(c["country"] for c in recent), recent[:3]
            async with session.get(f"{url}/api/v1/rewards?program=demo&status=flagged",
                                   headers=auth(token)) as resp:
                assert resp.status == 200 and (await resp.json())["items"]
            proc.terminate()  # a plain kill of the command stops its server too
            assert await asyncio.wait_for(proc.wait(), 120) == 0
            try:
                async with session.get(f"{url}/healthz") as resp:
                    raise AssertionError(f"the demo's server still answers: {resp.status}")
            except aiohttp.ClientConnectionError:
                pass
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert "starting one" in (await errors).decode()
