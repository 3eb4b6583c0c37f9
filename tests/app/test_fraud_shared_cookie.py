"""One browser behind several accounts of one referrer (issue 13), through the public interfaces:
the redirect sets the visitor cookie, the conversions API names the clicks, scans decide.

The fraudster opens a referrer's link in one browser and makes an account, then a second one in
the same browser a little later: one visitor cookie behind two accounts that each earned the
referrer a reward. They sit on a carrier NAT address with a popular phone, so the address and
the header fingerprint bind nobody (dozens of accounts use them): only the cookie ties the two
accounts, and an incremental scan of the second account must find the first through it."""

from __future__ import annotations

import json
from typing import Any

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from tests.helpers import auth, click_id, make_link, wait_for_clicks
from tracker.scoring.credits import attribute_pending
from tracker.scoring.queries import MAX_SHARE
from tracker.scoring.risk import scan

PHONE = "Mozilla/5.0 (iPhone; CPU iPhone OS 18_6 like Mac OS X) Version/26.2 Safari/604.1"
NAT = "100.64.7.9"
REFERRERS = 10


@pytest.mark.parametrize("side", ["none", "spare", "busy"])
async def test_one_cookie_behind_two_accounts_of_a_referrer_is_rejected_a_friend_is_not(
    tokens: dict[str, str], conn: asyncpg.Connection, dsn: str, side: str,
    proxied_client: TestClient[web.Request, web.Application],
) -> None:
    """`side`: the incremental scan reads on `conn` alone, with a side connection lent by a
    pool (the fraud-scan job's), or with a pool that has none to spare (it reads in turn)."""
    client = proxied_client
    pool = None if side == "none" else await asyncpg.create_pool(dsn, min_size=1, max_size=1)
    taken = await pool.acquire() if pool is not None and side == "busy" else None
    integration = auth(tokens["integration"])
    clicks = 0

    async def visit(code: str, ip: str, cookie: str | None = None) -> tuple[str, str]:
        """A visit: (click id, the rg_vid cookie the browser holds after it)."""
        nonlocal clicks
        headers = {"X-Forwarded-For": ip, "User-Agent": PHONE,
                   "Accept-Language": "en-US,en;q=0.9"}
        if cookie is not None:
            headers["Cookie"] = f"rg_vid={cookie}"
        resp = await client.get(f"/r/{code}", allow_redirects=False, headers=headers)
        assert resp.status == 302
        clicks += 1
        if cookie is None:
            cookie = resp.headers["Set-Cookie"].split(";", 1)[0].split("=", 1)[1]
        return click_id(resp.headers["Location"]), cookie

    async def convert(event: str, customer: str, cid: str, ip: str = NAT) -> None:
        body: dict[str, Any] = {"program": "acme", "event_id": event, "type": "purchase",
                                "customer_id": customer, "amount": 1000, "currency": "USD",
                                "ip": ip, "user_agent": PHONE, "click_id": cid}
        resp = await client.post("/api/v1/conversions", json=body, headers=integration)
        assert resp.status == 201, await resp.text()

    async def settle(*, incremental: bool) -> dict[str, tuple[float, list[dict[str, Any]]]]:
        await wait_for_clicks(conn, clicks)
        # People buy a while after they click (seconds would be click injection).
        await conn.execute("UPDATE clicks SET ts = ts - interval '3 hours' "
                           "WHERE ts > now() - interval '1 hour'")
        await attribute_pending(conn)
        await scan(conn, incremental=incremental, pool=pool if incremental else None)
        rows = await conn.fetch(
            """SELECT c.event_id, r.score, r.reasons::text AS reasons FROM conversion_risk r
               JOIN conversions c ON c.program_id = r.program_id AND c.id = r.conversion_id""")
        return {r["event_id"]: (r["score"], json.loads(r["reasons"])) for r in rows}

    await make_link(client, tokens, referrer="alice", code="alice")
    for k in range(REFERRERS):
        await make_link(client, tokens, referrer=f"ref{k}", code=f"ref{k}")
    # Commuters behind the carrier NAT, on the same popular phone, each in their own browser,
    # referred by many people, buying later at home: the address and the fingerprint are
    # everybody's.
    for i in range(MAX_SHARE + 5):
        cid, _cookie = await visit(f"ref{i % REFERRERS}", NAT)
        await convert(f"commuter-{i}", f"commuter{i}", cid, f"81.3.{i}.2")
    # The first account, in the fraudster's browser; a friend of alice's on their own.
    first, cookie = await visit("alice", NAT)
    await convert("acct-1", "acct1", first)
    friend, _other = await visit("alice", "81.2.69.44")
    await convert("friend", "frank", friend, "81.2.69.44")
    before = await settle(incremental=False)
    assert before["acct-1"][0] < 0.5 and before["friend"][0] < 0.5, before
    # The second account, in the same browser (the same cookie), an hour later.
    second, same = await visit("alice", NAT, cookie)
    assert same == cookie
    await convert("acct-2", "acct2", second)
    risk = await settle(incremental=True)
    if pool is not None:
        if taken is not None:
            await pool.release(taken)
        assert pool.get_idle_size() == 1  # the side connection went back
        await pool.close()
    score, reasons = risk["acct-2"]
    shared = [r for r in reasons if r["code"] == "shared_cookie"]
    assert score >= 0.9 and shared and shared[0]["strong"], reasons
    assert "acct1" in shared[0]["message"] and shared[0]["value"] == 2
    decided = [r for r in reasons if r["code"] == "decided_by"]
    assert decided and "strong identity evidence" in decided[0]["message"]
    flags = await client.get("/api/v1/fraud/flags?program=acme&kind=shared_cookie",
                             headers=auth(tokens["finance"]))
    assert flags.status == 200
    named = {m["id"] for f in (await flags.json())["items"] for m in f["members"]
             if m["type"] == "customer"}
    assert named == {"acct2"}
    # A full scan decides both accounts; the friend and the commuters stay clear.
    await scan(conn)
    rows = await conn.fetch(
        """SELECT c.event_id, r.score FROM conversion_risk r
           JOIN conversions c ON c.program_id = r.program_id AND c.id = r.conversion_id""")
    full = {r["event_id"]: r["score"] for r in rows}
    assert full["acct-1"] >= 0.9 and full["acct-2"] >= 0.9
    assert all(v < 0.5 for e, v in full.items() if not e.startswith("acct")), full
