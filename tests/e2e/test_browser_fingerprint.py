"""Programs with `fingerprint: "browser"`: the signals page, its beacon, and automation flags."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import asyncpg
from aiohttp import web
from aiohttp.test_utils import TestClient

from tests.helpers import SECRET, chromium, make_link, needs_chromium, wait_for_clicks
from tracker.clicks.browser_signals import fold_browser_signals
from tracker.clicks.enrich import Enricher
from tracker.clicks.redirect import fingerprint_page

Client = TestClient[web.Request, web.Application]


async def browser_link(client: Client, tokens: dict[str, str]) -> None:
    await make_link(client, tokens, settings={"fingerprint": "browser"})


async def fold(conn: asyncpg.Connection) -> None:
    await fold_browser_signals(Enricher(SECRET, ()))(conn)


def page_values(html: str) -> tuple[str, str, str]:
    cid = re.search(r'cid:"([^"]+)"', html)
    tok = re.search(r'tok:"([^"]+)"', html)
    url = re.search(r'var u="([^"]+)"', html)
    assert cid and tok and url
    return cid.group(1), tok.group(1), url.group(1)


def test_the_page_keeps_hostile_values_inside_their_strings() -> None:
    """The destination (it carries the visitor's query) can hold anything: in the script it
    stays one JSON string that cannot close the element, in the attributes it is escaped."""
    location = 'https://shop.test/?q="></script><script>alert(1)</script>&x=\'\u2028'
    html = fingerprint_page("c0de", "0192-cid", location, "t</script>")
    assert html.count("</script>") == 1  # the page's own
    assert "var u=" + json.dumps(location).replace("</", "<\\/") + "," in html
    assert 'tok:"t<\\/script>"' in html and 'sendBeacon("/r/c0de/s",' in html
    escaped = ("https://shop.test/?q=&#34;&gt;&lt;/script&gt;&lt;script&gt;alert(1)"
               "&lt;/script&gt;&amp;x=&#39;\u2028")
    assert f'content="0;url={escaped}"' in html and f'<a href="{escaped}">Continue</a>' in html


async def test_default_stays_a_plain_redirect(client: Client, tokens: dict[str, str]) -> None:
    await make_link(client, tokens)
    resp = await client.get("/r/alice1", allow_redirects=False)
    assert resp.status == 302


async def test_page_records_the_click_and_navigates_without_js(
    client: Client, tokens: dict[str, str], conn: asyncpg.Connection
) -> None:
    await browser_link(client, tokens)
    resp = await client.get("/r/alice1?utm=x", allow_redirects=False,
                            headers={"User-Agent": "Mozilla/5.0 (Windows NT 10.0) Firefox/133.0"})
    assert resp.status == 200
    assert "no-store" in resp.headers["Cache-Control"]
    assert resp.headers["Set-Cookie"].startswith("rg_vid=")
    html = await resp.text()
    cid, _tok, url = page_values(html)
    assert url.startswith("https://shop.acme.test/landing?src=ref&utm=x&rg_cid=" + cid)
    assert 'http-equiv="refresh" content="0;url=https://shop.acme.test/landing' in html
    await wait_for_clicks(conn, 1)
    assert await conn.fetchval("SELECT awaiting_signals FROM clicks") is True
    # No signals ever come: once the wait is over the click is marked as no JavaScript.
    await conn.execute("UPDATE clicks SET received_at = now() - interval '1 minute'")
    await fold(conn)
    row = await conn.fetchrow("SELECT is_bot, bot_rule, awaiting_signals FROM clicks")
    assert dict(row) == {"is_bot": True, "bot_rule": "no_javascript", "awaiting_signals": False}


async def test_signals_refine_the_fingerprint_and_webdriver_is_automation(
    client: Client, tokens: dict[str, str], conn: asyncpg.Connection
) -> None:
    await browser_link(client, tokens)
    ua = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0"
    cids = []
    for webdriver in (False, True):
        html = await (await client.get("/r/alice1", allow_redirects=False,
                                       headers={"User-Agent": ua})).text()
        cid, tok, _ = page_values(html)
        cids.append(cid)
        signals = {"cid": cid, "tok": tok, "tz": "Europe/Paris", "tzo": -60, "sw": 1920,
                   "sh": 1080, "dpr": 1, "cd": 24, "langs": ["fr-FR", "fr"], "wd": webdriver,
                   "canvas": 123456, "hc": 8, "plat": "Linux x86_64", "junk": "x" * 100}
        resp = await client.post("/r/alice1/s", data=json.dumps(signals))
        assert resp.status == 204
    await wait_for_clicks(conn, 2)
    for _ in range(300):
        if await conn.fetchval("SELECT count(*) FROM click_signals") == 2:
            break
        await asyncio.sleep(0.05)
    before = {str(r["click_id"]): r["fingerprint"] for r in
              await conn.fetch("SELECT click_id, fingerprint FROM clicks")}
    await fold(conn)
    rows = {str(r["click_id"]): r for r in await conn.fetch(
        "SELECT click_id, fingerprint, browser_signals, is_bot, bot_rule, awaiting_signals "
        "FROM clicks")}
    human, robot = rows[cids[0]], rows[cids[1]]
    assert (human["is_bot"], human["awaiting_signals"]) == (False, False)
    assert (robot["is_bot"], robot["bot_rule"]) == (True, "automation_webdriver")
    stored = json.loads(human["browser_signals"])
    assert stored["tz"] == "Europe/Paris" and stored["sw"] == 1920 and "junk" not in stored
    assert human["fingerprint"] != before[cids[0]]
    # Same device, same signals: the same refined fingerprint.
    assert human["fingerprint"] == robot["fingerprint"]
    assert await conn.fetchval("SELECT count(*) FROM click_signals") == 0


async def test_forged_or_oversized_signals_are_refused(
    client: Client, tokens: dict[str, str]
) -> None:
    await browser_link(client, tokens)
    html = await (await client.get("/r/alice1", allow_redirects=False)).text()
    cid, tok, _ = page_values(html)
    cases = [
        (json.dumps({"cid": cid, "tok": "0" * 32, "wd": True}), 403),
        (json.dumps({"cid": "not-a-uuid", "tok": tok}), 403),
        ("{not json", 400),
        (json.dumps({"cid": cid, "tok": tok, "pad": "x" * 5000}), 413),
    ]
    for body, status in cases:
        resp = await client.post("/r/alice1/s", data=body)
        assert resp.status == status, body[:40]
    resp = await client.post("/r/nope/s", data="{}")
    assert resp.status == 404


@needs_chromium
async def test_a_real_browser_sends_signals_and_is_seen_as_automated(
    client: Client, tokens: dict[str, str], conn: asyncpg.Connection, tmp_path: Path
) -> None:
    await browser_link(client, tokens)
    url = str(client.make_url("/r/alice1?utm_source=pw"))
    async with chromium() as browser:
        # An ordinary user agent: only the browser's own webdriver flag can give it away.
        page = await browser.new_page(user_agent=(
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
            "Chrome/131.0.0.0 Safari/537.36"))
        # The destination is not reachable from here; the browser is shown a stand-in.
        await page.route("https://shop.acme.test/**",
                         lambda route: route.fulfill(body="<h1>landed</h1>",
                                                     content_type="text/html"))
        await page.goto(url)
        await page.wait_for_url("https://shop.acme.test/**")
        landed = page.url
        await page.screenshot(path=str(tmp_path / "landed.png"))
    assert "utm_source=pw" in landed and "rg_cid=" in landed
    await wait_for_clicks(conn, 1)
    for _ in range(100):
        if await conn.fetchval("SELECT count(*) FROM click_signals") == 1:
            break
        await asyncio.sleep(0.05)
    await fold(conn)
    row = await conn.fetchrow("SELECT is_bot, bot_rule, browser_signals FROM clicks")
    signals = json.loads(row["browser_signals"])
    assert signals["wd"] is True  # Playwright-driven Chromium says so itself
    assert signals["sw"] > 0 and isinstance(signals["canvas"], int) and signals["tz"]
    assert (row["is_bot"], row["bot_rule"]) == (True, "automation_webdriver")
