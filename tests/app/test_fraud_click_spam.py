"""Click spam through the public interfaces: an app fires clicks through three referrers'
links, without a Referer, each landing marked with its sub-publisher id (`?sub_id=`); a few
of the visitors it reached buy days later, as they would have anyway. No referrer has enough
conversions for a test of its own; the app's marked visits, pooled over the referrers,
convert far less and later than the program's other visits, and a full scan holds their
purchases as click spam, saying so. The honest referrers' friends, who came through links
shared on a social network and bought within the hour, stay clear."""

from __future__ import annotations

import asyncpg
from aiohttp import web
from aiohttp.test_utils import TestClient

from tests.helpers import auth, click_id, make_link, wait_for_clicks
from tests.shop import Street, conversion_risks
from tracker.scoring.credits import attribute_pending
from tracker.scoring.risk import scan

AGENT = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/131.0 Safari/537.36"
SPAMMERS, FIRED, SPAMMED = 3, 20, 2  # referrers, clicks the app fires through each, buyers
HONEST, FRIENDS, LOOKERS = 4, 6, 6  # referrers, friends who buy, friends who only look


async def test_an_apps_marked_landings_are_one_click_spam_source(
    tokens: dict[str, str], conn: asyncpg.Connection,
    proxied_client: TestClient[web.Request, web.Application],
) -> None:
    client = proxied_client
    for k in range(SPAMMERS):
        await make_link(client, tokens, referrer=f"spam{k}", code=f"spam{k}")
    for k in range(HONEST):
        await make_link(client, tokens, referrer=f"honest{k}", code=f"honest{k}")
    visits = 0

    async def visit(code: str, query: str = "", referer: str | None = None) -> tuple[str, str]:
        nonlocal visits
        visits += 1
        ip = f"81.{visits // 200}.{visits % 200}.9"
        headers = {"X-Forwarded-For": ip, "User-Agent": AGENT,
                   "Accept-Language": "en-US,en;q=0.9"}
        if referer is not None:
            headers["Referer"] = referer
        resp = await client.get(f"/r/{code}{query}", allow_redirects=False, headers=headers)
        assert resp.status == 302, await resp.text()
        return resp.headers["Location"], ip

    street = Street(client, tokens, language="en-US,en;q=0.9", amount=2500)

    async def buy(customer: str, location: str, ip: str) -> None:
        await street.convert(customer, customer, ip, AGENT, click_id(location))

    for k in range(HONEST):
        for j in range(FRIENDS + LOOKERS):
            location, ip = await visit(f"honest{k}", referer="https://www.facebook.com/")
            if j < FRIENDS:
                await buy(f"friend{k}-{j}", location, ip)
    for k in range(SPAMMERS):
        for j in range(FIRED):
            location, ip = await visit(f"spam{k}", f"?sub_id={4000 + visits}")
            if j < SPAMMED:
                await buy(f"spammed{k}-{j}", location, ip)
    await wait_for_clicks(conn, visits)
    # Visits in the order made, from 20 days ago, an hour apart on average with the gaps of
    # people clicking on their own (exponential, from a fixed pseudo-random sequence); a
    # friend buys 20 minutes after the click, the app's visitors five days after it.
    await conn.execute(
        """UPDATE clicks c SET ts = now() - interval '20 days' + o.t * interval '1 second'
           FROM (SELECT click_id, sum(g) OVER (ORDER BY n) AS t
                 FROM (SELECT click_id, n,
                              -ln(((n * 48271) % 65521 + 1)::float8 / 65522) * 3600 AS g
                       FROM (SELECT click_id, row_number() OVER (ORDER BY ts) AS n
                             FROM clicks) a) b) o
           WHERE o.click_id = c.click_id""")
    await conn.execute(
        """UPDATE conversions c
           SET occurred_at = k.ts + CASE WHEN c.event_id LIKE 'spammed%'
                                         THEN interval '5 days' ELSE interval '20 minutes' END
           FROM clicks k WHERE k.click_id = c.click_id""")
    await attribute_pending(conn)
    await scan(conn)

    risk = await conversion_risks(conn)
    for k in range(SPAMMERS):
        for j in range(SPAMMED):
            score, reasons = risk[f"spammed{k}-{j}"]
            spam = [r for r in reasons if r["code"] == "click_spam_source"]
            assert score >= 0.5 and spam, reasons
            assert "landings marked sub_id" in spam[0]["message"], spam[0]
    for k in range(HONEST):
        for j in range(FRIENDS):
            assert risk[f"friend{k}-{j}"][0] < 0.5, risk[f"friend{k}-{j}"]
    flags = await client.get("/api/v1/fraud/flags?program=acme&kind=click_spam_source",
                             headers=auth(tokens["finance"]))
    assert flags.status == 200
    flagged = {m["id"] for f in (await flags.json())["items"] for m in f["members"]
               if m["type"] == "customer"}
    assert flagged == {f"spammed{k}-{j}" for k in range(SPAMMERS) for j in range(SPAMMED)}
