"""Retention (old IPs and user agents reduced), erasure of a customer, and request-id logs."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import asyncpg

from tests.helpers import ClientFactory, auth
from tests.shop import Shop
from tracker.finance.clearance import release
from tracker.jobs import reduce_old_data
from tracker.logs import JsonFormatter
from tracker.privacy import reduce_old
from tracker.scoring.credits import attribute_pending
from tracker.scoring.risk import scan

RULES = {"hold_days": 0, "reward": {"rules": [
    {"beneficiary": "referrer", "on": "purchase", "flat": 2000}]}}


async def _shop(aiohttp_client: ClientFactory, tmp_path: Path, dsn: str,
                tokens: dict[str, str], conn: asyncpg.Connection) -> Shop:
    shop = await Shop.open(aiohttp_client, tmp_path, dsn, tokens, conn, RULES)
    await shop.referrer("alice")
    for i in range(3):
        await shop.buy("alice", f"p{i}", f"c{i}")
    await conn.execute("UPDATE conversions SET ip = '81.0.1.10', user_agent = 'Mozilla/5.0 x'")
    await _room_40_days_back(conn)
    return shop


async def _room_40_days_back(conn: asyncpg.Connection) -> None:
    """The tests age clicks by 40 days: their month may be older than the partitions made."""
    await conn.execute("SELECT refguard_ensure_click_partition(now() - interval '40 days')")


async def test_old_ips_and_user_agents_are_reduced(
    aiohttp_client: ClientFactory, tmp_path: Path, dsn: str, tokens: dict[str, str],
    conn: asyncpg.Connection,
) -> None:
    shop = await _shop(aiohttp_client, tmp_path, dsn, tokens, conn)
    await shop.click("alice", person=300)
    await shop.settle_clicks()
    before = {r["click_id"]: dict(r) for r in await conn.fetch(
        "SELECT click_id, host(ip) AS ip, user_agent, fingerprint, country, ua_browser, ts "
        "FROM clicks")}
    # Nothing is old enough yet.
    assert await reduce_old(conn, 1) == 0
    old = await conn.fetch("UPDATE clicks SET ts = ts - interval '40 days' WHERE click_id IN "
                           "(SELECT click_id FROM clicks ORDER BY ts LIMIT 2) RETURNING click_id")
    await conn.execute("UPDATE conversions SET occurred_at = occurred_at - interval '40 days' "
                       "WHERE event_id = 'p0'")
    await reduce_old_data(30)(conn)
    after = {r["click_id"]: dict(r) for r in await conn.fetch(
        "SELECT click_id, ip::text AS ip, user_agent, fingerprint, referer, reduced FROM clicks")}
    reduced = {r["click_id"] for r in old}
    assert len(reduced) == 2
    for cid, row in after.items():
        if cid in reduced:
            assert row["reduced"] and row["ip"].endswith(".0/24"), row
            assert row["ip"].startswith(before[cid]["ip"].rsplit(".", 1)[0] + ".")
            assert row["user_agent"] == f"{before[cid]['ua_browser']} / Windows"
            assert row["fingerprint"] == before[cid]["fingerprint"]  # kept
        else:
            assert not row["reduced"] and row["ip"] == before[cid]["ip"] + "/32"
            assert row["user_agent"] == before[cid]["user_agent"]
    conversions = {r["event_id"]: dict(r) for r in await conn.fetch(
        "SELECT event_id, ip::text AS ip, user_agent, reduced FROM conversions")}
    assert conversions["p0"] == {"event_id": "p0", "ip": "81.0.1.0/24", "user_agent": None,
                                 "reduced": True}
    assert conversions["p1"]["ip"] == "81.0.1.10/32" and not conversions["p1"]["reduced"]
    assert await reduce_old(conn, 30) == 0  # done once
    # Reduced rows still read fine through the API.
    resp = await shop.client.get("/api/v1/clicks?program=acme", headers=auth(tokens["viewer"]))
    assert resp.status == 200 and len((await resp.json())["items"]) == len(before)



async def test_reduced_ips_bind_nobody_and_old_flags_name_networks(
    aiohttp_client: ClientFactory, tmp_path: Path, dsn: str, tokens: dict[str, str],
    conn: asyncpg.Connection,
) -> None:
    """Two people on different addresses of one /24 are not the same person once their IPs are
    reduced to that network; and a ring flag older than the retention age keeps no address."""
    shop = await Shop.open(aiohttp_client, tmp_path, dsn, tokens, conn, RULES)
    await shop.referrer("zed")
    await shop.referrer("alice")
    await shop.buy("zed", "own", "alice")  # alice's own purchase: her visitor and address
    await shop.buy("alice", "friend", "bob")  # bob, through alice's link
    await conn.execute("UPDATE clicks SET ip = '81.0.1.20' WHERE ip <> '81.0.1.10'")
    await conn.execute("UPDATE conversions SET ip = NULL")
    await conn.execute("UPDATE conversions SET ip = '81.0.1.10' WHERE event_id = 'own'")
    await _room_40_days_back(conn)

    await attribute_pending(conn)

    async def reasons_of_bob() -> set[str]:
        await scan(conn, "acme")
        rows = await conn.fetchval(
            """SELECT r.reasons::text FROM conversion_risk r JOIN conversions c
               ON c.program_id = r.program_id AND c.id = r.conversion_id
               WHERE c.event_id = 'friend'""")
        return {x["code"] for x in json.loads(rows)}

    assert await reasons_of_bob() == {"shared_network"}  # different addresses, one /24
    await conn.execute("UPDATE clicks SET ts = ts - interval '40 days'")
    await conn.execute("UPDATE conversions SET occurred_at = occurred_at - interval '40 days'")
    assert await reduce_old(conn, 30) == 4  # two clicks, two conversions
    assert await conn.fetchval("SELECT count(DISTINCT ip) FROM clicks") == 1  # one /24 now
    assert await reasons_of_bob() == set()  # not the same address, hence no self-referral
    flag = await conn.fetchval(
        """INSERT INTO fraud_flags (program_id, scan_id, kind, score, reasons, members, created_at)
           SELECT program_id, id, 'ring', 0.9, '[]', $1::jsonb, now() - interval '40 days'
           FROM fraud_scans LIMIT 1 RETURNING id""",
        json.dumps([{"type": "referrer", "id": "alice"}, {"type": "ip", "id": "81.0.1.10"},
                    {"type": "ip", "id": "2001:db8:7:1::5"}, {"type": "device", "id": "ab"}]))
    assert await reduce_old(conn, 30) == 1
    members = json.loads(await conn.fetchval(
        "SELECT members::text FROM fraud_flags WHERE id = $1", flag))
    assert members == [{"type": "referrer", "id": "alice"}, {"type": "ip", "id": "81.0.1.0/24"},
                       {"type": "ip", "id": "2001:db8:7::/48"}, {"type": "device", "id": "ab"}]
    assert await reduce_old(conn, 30) == 0


async def test_erasing_a_customer_keeps_the_money(
    aiohttp_client: ClientFactory, tmp_path: Path, dsn: str, tokens: dict[str, str],
    conn: asyncpg.Connection,
) -> None:
    shop = await _shop(aiohttp_client, tmp_path, dsn, tokens, conn)
    await conn.execute("UPDATE conversions SET email_hash = '\\x0102'")
    await release(conn)
    ledger = await conn.fetch("SELECT payee, amount FROM ledger_entries ORDER BY id")
    rewards = await conn.fetch("SELECT id, amount, status FROM rewards ORDER BY id")
    url = "/api/v1/customers/c1?program=acme"
    assert (await shop.client.delete(url, headers=auth(tokens["viewer"]))).status == 403
    resp = await shop.client.delete(url, headers=auth(tokens["integration"]))
    body: dict[str, Any] = await resp.json()
    assert resp.status == 200, body
    assert body["erased"] == {"conversions": 1, "visitors": 1, "clicks": 1, "referrer": False,
                              "events": 0, "candidate_scores": 0, "asks": 0}
    c1 = await conn.fetchrow("SELECT email_hash, ip, user_agent, visitor_id, amount FROM "
                             "conversions WHERE customer_id = 'c1'")
    assert (c1["email_hash"], c1["ip"], c1["user_agent"], c1["visitor_id"]) == (None,) * 4
    assert c1["amount"] == 5000
    assert await conn.fetchval("SELECT count(*) FROM customer_visitors "
                               "WHERE customer_id = 'c1'") == 0
    assert await conn.fetchval("SELECT count(*) FROM clicks WHERE ip IS NULL") == 1
    # Everybody else is untouched; the books still add up.
    assert await conn.fetchval("SELECT count(*) FROM conversions WHERE email_hash IS NOT NULL"
                               ) == 2
    assert await conn.fetch("SELECT payee, amount FROM ledger_entries ORDER BY id") == ledger
    assert await conn.fetch("SELECT id, amount, status FROM rewards ORDER BY id") == rewards
    audit = await conn.fetchrow("SELECT actor, details FROM audit_log "
                                "WHERE action = 'customer.erase'")
    assert audit["actor"].endswith("test-integration")
    assert json.loads(audit["details"])["clicks"] == 1
    for path, status in (("/api/v1/customers/nobody?program=acme", 404),
                         ("/api/v1/customers/c1?program=nope", 404),
                         ("/api/v1/customers/c1", 422)):
        assert (await shop.client.delete(path, headers=auth(tokens["admin"]))).status == status


async def test_api_answers_carry_a_request_id_that_logs_name(
    client: Any, tokens: dict[str, str],
) -> None:
    resp = await client.get("/api/v1/programs", headers=auth(tokens["viewer"]))
    generated = resp.headers["X-Request-Id"]
    assert len(generated) == 32
    resp = await client.get("/api/v1/programs/nope", headers={
        **auth(tokens["viewer"]), "X-Request-Id": "req-42"})
    assert resp.status == 404 and resp.headers["X-Request-Id"] == "req-42"
    odd = await client.get("/api/v1/programs", headers={
        **auth(tokens["viewer"]), "X-Request-Id": "<script>"})
    assert odd.headers["X-Request-Id"] != "<script>"
    # A log line written while a request is handled names it, as one JSON object.
    from tracker.logs import REQUEST_ID

    token = REQUEST_ID.set("req-7")
    try:
        record = logging.LogRecord("tracker.x", logging.WARNING, __file__, 1, "flush %s", ("ok",),
                                   None)
        line = json.loads(JsonFormatter().format(record))
    finally:
        REQUEST_ID.reset(token)
    assert line["request_id"] == "req-7" and line["message"] == "flush ok"
    assert line["level"] == "warning" and line["ts"].endswith("Z")
