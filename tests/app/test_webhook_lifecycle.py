"""Webhooks for the whole life of a referral (issue 14): each change of a conversion, reward or
payout batch writes exactly one event into the outbox, in the transaction of the change, and
the events reach the merchant signed, each `{"event": NAME, <object>: {...}}`.

The receiver listens on 127.0.0.1, so the app runs with REFGUARD_WEBHOOK_ALLOW_PRIVATE."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from tests.helpers import SECRET, ClientFactory, auth
from tests.shop import Shop
from tracker.auth import create_token
from tracker.finance.clearance import release
from tracker.finance.payouts import export_payouts
from tracker.finance.webhooks import EVENTS, deliver_due
from tracker.scoring.credits import attribute_pending
from tracker.scoring.risk import scan
from tracker.signing import verify_signature

SETTINGS = {"hold_days": 0, "reward": {"rules": [
    {"beneficiary": "referrer", "on": "purchase", "flat": 2000}]}}
OBJECT = {"referral.converted": "referral", "payout.created": "payout"}


class Receiver:
    def __init__(self) -> None:
        self.received: list[tuple[dict[str, str], bytes]] = []
        app = web.Application()
        app.router.add_post("/hooks", self.handle)
        self.server = TestServer(app, host="127.0.0.1")

    async def handle(self, request: web.Request) -> web.Response:
        self.received.append((dict(request.headers), await request.read()))
        return web.Response(status=204)


async def _converted(shop: Shop, event: str, customer: str, risk: float | None, *,
                     type_: str = "purchase") -> None:
    """alice's referee converts; the scan's risk is set to `risk` (None: as scanned), then
    clearance runs."""
    kwargs: dict[str, Any] = {"type_": type_}
    if type_ != "purchase":
        kwargs["amount"] = None
    await shop.buy("alice", event, customer, **kwargs)
    await attribute_pending(shop.conn)
    await scan(shop.conn, incremental=True)
    if risk is not None:
        await shop.conn.execute(
            """UPDATE conversion_risk SET score = $2, reasons = '[]'::jsonb FROM conversions c
               WHERE c.program_id = conversion_risk.program_id
                 AND c.id = conversion_risk.conversion_id AND c.event_id = $1""",
            event, risk)
    await release(shop.conn)


async def _outbox(conn: asyncpg.Connection, since: int = 0) -> list[tuple[str, str]]:
    """(event, what it is about) of the outbox after id `since`, in the order written."""
    rows = await conn.fetch(
        "SELECT event, payload::text AS p FROM webhook_outbox WHERE id > $1 ORDER BY id", since)
    out = []
    for r in rows:
        body = json.loads(r["p"])
        assert body["event"] == r["event"]
        key = OBJECT.get(r["event"], "reward")
        assert set(body) == {"event", key}
        thing = body[key]
        about = (thing["event_id"] if key == "referral" else
                 thing["program"] if key == "payout" else
                 f"{thing['event_id']}:{thing['status']}")
        out.append((r["event"], about))
    return out


async def _last_id(conn: asyncpg.Connection) -> int:
    n: int = await conn.fetchval("SELECT coalesce(max(id), 0) FROM webhook_outbox")
    return n


async def _decide(shop: Shop, rid: int, action: str, token: str) -> None:
    resp = await shop.client.post(f"/api/v1/rewards/{rid}/{action}",
                                  json={"reason": "checked by hand"}, headers=auth(token))
    assert resp.status == 200, await resp.text()


async def test_a_rewards_life_writes_each_event_once_and_they_arrive_signed(
    aiohttp_client: ClientFactory, tmp_path: Path, dsn: str, tokens: dict[str, str],
    conn: asyncpg.Connection,
) -> None:
    receiver = Receiver()
    await receiver.server.start_server()
    try:
        shop = await Shop.open(aiohttp_client, tmp_path, dsn, tokens, conn,
                               {**SETTINGS,
                                "webhook_url": str(receiver.server.make_url("/hooks"))},
                               webhook_allow_private=True)
        await shop.referrer("alice")
        finance = tokens["finance"]
        bea, _ = await create_token(conn, "finance", "second", person="bea")

        # Flagged by its risk, approved, overturned (rejected), approved again, paid.
        await _converted(shop, "p1", "cust-1", 0.7)
        assert await _outbox(conn) == [("referral.converted", "p1"),
                                       ("reward.created", "p1:pending"),
                                       ("reward.flagged", "p1:flagged")]
        rid = (await shop.rewards())["p1/alice"]["id"]
        mark = await _last_id(conn)
        await _decide(shop, rid, "approve", finance)
        await _decide(shop, rid, "reject", bea)
        await _decide(shop, rid, "approve", finance)
        resp = await shop.client.post(f"/api/v1/rewards/{rid}/approve",
                                      json={"reason": "again"}, headers=auth(finance))
        assert resp.status == 409  # no change, no event
        assert await _outbox(conn, mark) == [("reward.approved", "p1:approved"),
                                             ("reward.rejected", "p1:rejected"),
                                             ("reward.approved", "p1:approved")]
        mark = await _last_id(conn)
        written: list[str] = []
        batch_id, _lines = await export_payouts(conn, "test", written.append)
        assert batch_id is not None
        assert await _outbox(conn, mark) == [("reward.paid", "p1:paid"),
                                             ("payout.created", "acme")]

        # Clean: approved by clearance; then refunded: reversed.
        mark = await _last_id(conn)
        await _converted(shop, "p2", "cust-2", 0.0)
        await shop.convert("r2", "cust-2", type_="refund", original="p2")
        await release(conn)
        # Risky: rejected by clearance. A signup earns nothing: converted alone.
        await _converted(shop, "p3", "cust-3", 0.95)
        await _converted(shop, "s4", "cust-4", 0.0, type_="signup")
        # A run with nothing new tells nothing again.
        await release(conn)
        assert await _outbox(conn, mark) == [
            ("referral.converted", "p2"), ("reward.created", "p2:pending"),
            ("reward.approved", "p2:approved"),
            ("reward.reversed", "p2:reversed"),
            ("referral.converted", "p3"), ("reward.created", "p3:pending"),
            ("reward.rejected", "p3:rejected"),
            ("referral.converted", "s4")]
        assert {e for e, _ in await _outbox(conn)} == set(EVENTS)

        async with aiohttp.ClientSession() as session:
            sent = await deliver_due(conn, SECRET, session, allow_private=True)
        resp = await shop.client.get("/api/v1/programs/acme", headers=auth(tokens["admin"]))
        secret = (await resp.json())["signing_secret"]
    finally:
        await receiver.server.close()
    stored = {r["id"]: (r["event"], json.loads(r["p"])) for r in await conn.fetch(
        "SELECT id, event, payload::text AS p FROM webhook_outbox ORDER BY id")}
    assert sent == len(stored) == len(receiver.received)
    assert await conn.fetchval(
        "SELECT count(*) FROM webhook_outbox WHERE delivered_at IS NULL") == 0
    for headers, body in receiver.received:
        verify_signature(headers["X-Refguard-Signature"], body, secret)  # raises if forged
        event_id = int(headers["X-Refguard-Delivery"].split("-")[1])
        assert (headers["X-Refguard-Event"], json.loads(body)) == stored[event_id]
    by_event: dict[str, list[dict[str, Any]]] = {}
    for event, payload in stored.values():
        by_event.setdefault(event, []).append(payload)
    referral = by_event["referral.converted"][0]["referral"]
    assert (referral["program"], referral["event_id"], referral["type"],
            referral["customer_id"], referral["amount"], referral["currency"],
            referral["referrers"]) == ("acme", "p1", "purchase", "cust-1", 5000, "USD",
                                       [{"referrer": "alice", "credit": 1.0}])
    assert referral["occurred_at"].endswith("Z")
    payout = by_event["payout.created"][0]["payout"]
    assert (payout["batch_id"], payout["program"], payout["created_by"], payout["lines"],
            payout["totals"]) == (str(batch_id), "acme", "test", [
                {"beneficiary": "alice", "amount": 2000, "currency": "USD",
                 "reward_ids": [rid]}], {"USD": 2000})
    created = by_event["reward.created"][0]["reward"]
    assert (created["id"], created["referrer"], created["payee"], created["amount"],
            created["status"]) == (rid, "alice", "alice", 2000, "pending")


async def test_a_program_without_a_webhook_url_queues_nothing(
    aiohttp_client: ClientFactory, tmp_path: Path, dsn: str, tokens: dict[str, str],
    conn: asyncpg.Connection,
) -> None:
    shop = await Shop.open(aiohttp_client, tmp_path, dsn, tokens, conn, SETTINGS)
    await shop.referrer("alice")
    await _converted(shop, "p1", "cust-1", 0.7)
    rid = (await shop.rewards())["p1/alice"]["id"]
    await _decide(shop, rid, "approve", tokens["finance"])
    written: list[str] = []
    await export_payouts(conn, "test", written.append)
    assert await conn.fetchval("SELECT count(*) FROM webhook_outbox") == 0


async def test_the_outbox_refuses_an_unknown_event(conn: asyncpg.Connection) -> None:
    program = await conn.fetchval(
        "INSERT INTO programs (slug, name, destination_domains) VALUES ('x', 'X', '{}') "
        "RETURNING id")
    for event in EVENTS:  # migration 0021 allows every event the code writes
        await conn.execute("INSERT INTO webhook_outbox (program_id, event, payload) "
                           "VALUES ($1, $2, '{}')", program, event)
    with pytest.raises(asyncpg.CheckViolationError):
        await conn.execute("INSERT INTO webhook_outbox (program_id, event, payload) "
                           "VALUES ($1, 'reward.spent', '{}')", program)
