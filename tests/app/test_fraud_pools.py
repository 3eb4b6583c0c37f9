"""A collusion pool through the public interfaces: one operator's browser opens the links of
several unrelated referrers (no referral between them) and makes an account through each. No
referrer has two accounts on the cookie, so per-referrer checks see nothing; a full scan finds
the pool, flags it once naming the cookie and the referrers, and holds its accounts. Genuine
referees of the same referrers, on their own browsers, stay clear."""

from __future__ import annotations

import asyncpg
from aiohttp import web
from aiohttp.test_utils import TestClient

from tests.helpers import auth, click_id, make_link, wait_for_clicks
from tests.shop import Street, conversion_risks
from tracker.scoring.credits import attribute_pending
from tracker.scoring.risk import scan

AGENT = "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 Chrome/131.0 Mobile"
REFERRERS = 5


async def test_one_browser_behind_accounts_of_several_referrers_is_one_pool(
    tokens: dict[str, str], conn: asyncpg.Connection,
    proxied_client: TestClient[web.Request, web.Application],
) -> None:
    client = proxied_client
    for k in range(REFERRERS):
        await make_link(client, tokens, referrer=f"ref{k}", code=f"ref{k}")
    cookie: str | None = None

    street = Street(client, tokens, language="en-US,en;q=0.9")

    async def buy(customer: str, location: str, ip: str) -> None:
        await street.convert(customer, customer, ip, AGENT, click_id(location))

    for k in range(REFERRERS):
        # The operator, on their one browser and a different proxy address each time.
        headers = {"X-Forwarded-For": f"45.9.{k}.7", "User-Agent": AGENT,
                   "Accept-Language": "en-US,en;q=0.9"}
        if cookie is not None:
            headers["Cookie"] = f"rg_vid={cookie}"
        resp = await client.get(f"/r/ref{k}", allow_redirects=False, headers=headers)
        assert resp.status == 302
        cookie = cookie or resp.headers["Set-Cookie"].split(";", 1)[0].split("=", 1)[1]
        await buy(f"made{k}", resp.headers["Location"], f"45.9.{k}.7")
        # Each referrer's real friend, in their own browser at their own home.
        resp = await client.get(f"/r/ref{k}", allow_redirects=False, headers={
            "X-Forwarded-For": f"81.2.{k}.44", "User-Agent": AGENT,
            "Accept-Language": "en-GB,en;q=0.8"})
        await buy(f"friend{k}", resp.headers["Location"], f"81.2.{k}.44")
    await wait_for_clicks(conn, 2 * REFERRERS)
    # An hour between visits, each purchase 20 minutes after its visit (in the order made).
    await conn.execute(
        """UPDATE clicks c SET ts = now() - interval '1 day' + o.n * interval '1 hour'
           FROM (SELECT click_id, row_number() OVER (ORDER BY ts) AS n FROM clicks) o
           WHERE o.click_id = c.click_id""")
    await conn.execute(
        """UPDATE conversions c SET occurred_at = now() - interval '1 day'
                                 + o.n * interval '1 hour' + interval '20 minutes'
           FROM (SELECT id, row_number() OVER (ORDER BY id) AS n FROM conversions) o
           WHERE o.id = c.id""")
    await attribute_pending(conn)
    await scan(conn)

    risk = await conversion_risks(conn)
    for k in range(REFERRERS):
        score, reasons = risk[f"made{k}"]
        codes = {r["code"] for r in reasons}
        # One cookie is one person: strong identity evidence, enough to reject.
        assert score >= 0.9 and "pooled_cookie" in codes, reasons
        assert risk[f"friend{k}"][0] < 0.5, risk[f"friend{k}"]
    flags = await client.get("/api/v1/fraud/flags?program=acme&kind=collusion_pool",
                             headers=auth(tokens["finance"]))
    assert flags.status == 200
    pools = [f for f in (await flags.json())["items"] if f["kind"] == "collusion_pool"]
    assert len(pools) == 1
    # The pool as found (what decided): the operator's accounts, no friend.
    found = pools[0]["evidence"]["parts"][0]["accounts"]
    assert {person for _kind, person in found} == {f"made{k}" for k in range(REFERRERS)}
    # The flag for review: one operator's group, the referrers he made the accounts for and
    # their referees (each friend's own purchase is not held: above).
    members = {m["id"] for m in pools[0]["members"] if m["type"] in ("customer", "referrer")}
    assert members == {f"{who}{k}" for k in range(REFERRERS) for who in ("made", "ref",
                                                                         "friend")}
    message = pools[0]["reasons"][0]["message"]
    assert cookie is not None and f"cookie {cookie.split('.')[0]}" in message
    assert all(f"ref{k}" in message for k in range(REFERRERS))
