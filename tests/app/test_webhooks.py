"""Signed webhooks: the events reach the program's URL, with retries (which event is written
when: tests/app/test_webhook_lifecycle.py).

The receivers here listen on 127.0.0.1, so these tests run with REFGUARD_WEBHOOK_ALLOW_PRIVATE
(`webhook_allow_private` / `allow_private=True`); the refusal of private receivers is tested in
tests/security/test_programs_and_secrets.py."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from tests.helpers import SECRET, ClientFactory, auth
from tests.shop import Shop
from tracker.finance.clearance import release
from tracker.finance.payouts import export_payouts
from tracker.finance.webhooks import MAX_ATTEMPTS, deliver_due
from tracker.signing import verify_signature

RULES = {"hold_days": 0, "reward": {"rules": [
    {"beneficiary": "referrer", "on": "purchase", "flat": 2000}]}}


class Receiver:
    """A merchant endpoint that fails the first `failures` deliveries of `failing` events."""

    def __init__(self, failures: int, failing: str = "reward.approved") -> None:
        self.failures = failures
        self.failing = failing
        self.received: list[tuple[dict[str, str], bytes]] = []
        app = web.Application()
        app.router.add_post("/hooks", self.handle)
        self.server = TestServer(app, host="127.0.0.1")

    async def handle(self, request: web.Request) -> web.Response:
        self.received.append((dict(request.headers), await request.read()))
        if self.failures > 0 and request.headers["X-Refguard-Event"] == self.failing:
            self.failures -= 1
            return web.Response(status=500)
        return web.Response(status=204)


async def _deliver(conn: asyncpg.Connection) -> int:
    async with aiohttp.ClientSession() as session:
        return await deliver_due(conn, SECRET, session, allow_private=True)


async def test_events_are_signed_retried_and_delivered_once(
    aiohttp_client: ClientFactory, tmp_path: Path, dsn: str, tokens: dict[str, str],
    conn: asyncpg.Connection,
) -> None:
    receiver = Receiver(failures=1)
    await receiver.server.start_server()
    try:
        url = str(receiver.server.make_url("/hooks"))
        shop = await Shop.open(aiohttp_client, tmp_path, dsn, tokens, conn,
                               {**RULES, "webhook_url": url}, webhook_allow_private=True)
        await shop.referrer("alice")
        await shop.buy("alice", "p1", "c1")
        await release(conn)
        # referral.converted and reward.created go; the receiver answers reward.approved 500:
        # retried later.
        assert await _deliver(conn) == 2
        row = await conn.fetchrow("SELECT attempts, last_error, next_attempt_at > now() AS later,"
                                  " delivered_at FROM webhook_outbox "
                                  "WHERE event = 'reward.approved'")
        assert (row["attempts"], row["last_error"], row["later"]) == (1, "HTTP 500", True)
        assert await _deliver(conn) == 0  # not due yet: nothing sent
        assert len(receiver.received) == 3
        await conn.execute("UPDATE webhook_outbox SET next_attempt_at = now()")
        assert await _deliver(conn) == 1
        assert await _deliver(conn) == 0  # delivered once
        written: list[str] = []
        await export_payouts(conn, "test", written.append)
        assert await _deliver(conn) == 2  # reward.paid, payout.created
        resp = await shop.client.get("/api/v1/programs/acme", headers=auth(tokens["admin"]))
        secret = (await resp.json())["signing_secret"]  # the program's current one
    finally:
        await receiver.server.close()
    events = []
    for headers, body in receiver.received:
        verify_signature(headers["X-Refguard-Signature"], body, secret)  # raises if forged
        if headers["X-Refguard-Event"] in ("reward.approved", "reward.paid"):
            events.append((headers["X-Refguard-Event"], headers["X-Refguard-Delivery"],
                           json.loads(body)))
    (first, d1, _), (again, d2, approved), (paid_event, d3, paid) = events
    assert (first, again, paid_event) == ("reward.approved", "reward.approved", "reward.paid")
    assert d1 == d2 != d3  # a retry keeps its delivery id: receivers deduplicate on it
    reward: dict[str, Any] = approved["reward"]
    assert (reward["referrer"], reward["payee"], reward["amount"], reward["currency"],
            reward["event_id"], reward["status"]) == ("alice", "alice", 2000, "USD", "p1",
                                                      "approved")
    assert paid["reward"]["status"] == "paid" and paid["reward"]["batch_id"]


async def test_no_url_no_events_and_bad_urls_are_refused(
    aiohttp_client: ClientFactory, tmp_path: Path, dsn: str, tokens: dict[str, str],
    conn: asyncpg.Connection,
) -> None:
    shop = await Shop.open(aiohttp_client, tmp_path, dsn, tokens, conn, RULES)
    await shop.referrer("alice")
    await shop.buy("alice", "p1", "c1")
    await release(conn)
    assert await conn.fetchval("SELECT count(*) FROM rewards WHERE status = 'approved'") == 1
    assert await conn.fetchval("SELECT count(*) FROM webhook_outbox") == 0
    for bad in ("ftp://x.test/", "not a url", "https://", 7):
        resp = await shop.client.patch("/api/v1/programs/acme",
                                       json={"settings": {"webhook_url": bad}},
                                       headers=auth(tokens["admin"]))
        assert resp.status == 422, bad


@pytest.fixture
def refused_port() -> Iterator[int]:
    """A port bound and never listened on: connections to it are refused, and nobody else
    can take it while the test runs."""
    with socket.socket() as hole:
        hole.bind(("127.0.0.1", 0))
        yield hole.getsockname()[1]


async def test_an_unreachable_receiver_is_given_up_after_the_last_retry(
    aiohttp_client: ClientFactory, tmp_path: Path, dsn: str, tokens: dict[str, str],
    conn: asyncpg.Connection, refused_port: int,
) -> None:
    shop = await Shop.open(aiohttp_client, tmp_path, dsn, tokens, conn,
                           {**RULES, "webhook_url": f"http://127.0.0.1:{refused_port}/gone"},
                           webhook_allow_private=True)
    await shop.referrer("alice")
    await shop.buy("alice", "p1", "c1")
    await release(conn)
    for _ in range(MAX_ATTEMPTS):
        await conn.execute("UPDATE webhook_outbox SET next_attempt_at = now()")
        assert await _deliver(conn) == 0
    rows = await conn.fetch("SELECT attempts, failed_at, last_error FROM webhook_outbox")
    assert len(rows) == 3  # referral.converted, reward.created, reward.approved
    for row in rows:
        assert row["attempts"] == MAX_ATTEMPTS and row["failed_at"] is not None
        assert "Connect" in row["last_error"]
    await conn.execute("UPDATE webhook_outbox SET next_attempt_at = now()")
    assert await _deliver(conn) == 0
    assert {r["attempts"] for r in await conn.fetch("SELECT attempts FROM webhook_outbox")} == {
        MAX_ATTEMPTS}


async def test_no_transaction_is_held_while_a_receiver_answers_and_no_event_goes_twice(
    aiohttp_client: ClientFactory, tmp_path: Path, dsn: str, tokens: dict[str, str],
    conn: asyncpg.Connection,
) -> None:
    """A slow receiver must not keep a transaction (and row locks) open, and another node's run
    meanwhile must not send the event being delivered."""
    seen: dict[str, object] = {}
    other = await asyncpg.connect(dsn)

    async def slow(request: web.Request) -> web.Response:
        if seen:  # the events are POSTed at once: the first one looks (on one connection)
            return web.Response(status=204)
        seen["state"] = None
        seen["state"] = await other.fetchval(
            "SELECT state FROM pg_stat_activity WHERE pid = $1", conn.get_server_pid())
        seen["second_run"] = await _deliver(other)  # another node, while this one waits
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hooks", slow)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        shop = await Shop.open(aiohttp_client, tmp_path, dsn, tokens, conn,
                               {**RULES, "webhook_url": str(server.make_url("/hooks"))},
                               webhook_allow_private=True)
        await shop.referrer("alice")
        await shop.buy("alice", "p1", "c1")
        await release(conn)
        assert await _deliver(conn) == 3  # referral.converted, reward.created, .approved
    finally:
        await server.close()
        await other.close()
    assert seen == {"state": "idle", "second_run": 0}
    rows = await conn.fetch("SELECT attempts, delivered_at FROM webhook_outbox")
    assert len(rows) == 3
    assert all(r["attempts"] == 1 and r["delivered_at"] is not None for r in rows)


async def test_delivering_one_programs_events_leaves_the_others_untouched(
    aiohttp_client: ClientFactory, tmp_path: Path, dsn: str, tokens: dict[str, str],
    conn: asyncpg.Connection,
) -> None:
    """deliver_due(program_id=...) (the demo's, to its own receiver): only that program's due
    events are claimed; another program's stay due as they were."""
    receiver = Receiver(failures=0)
    await receiver.server.start_server()
    try:
        url = str(receiver.server.make_url("/hooks"))
        shop = await Shop.open(aiohttp_client, tmp_path, dsn, tokens, conn,
                               {**RULES, "webhook_url": url}, webhook_allow_private=True)
        await shop.referrer("alice")
        await shop.buy("alice", "p1", "c1")
        await release(conn)
        acme = await conn.fetchval("SELECT id FROM programs WHERE slug = 'acme'")
        due = await conn.fetch("SELECT id, next_attempt_at FROM webhook_outbox ORDER BY id")
        assert due
        async with aiohttp.ClientSession() as session:
            assert await deliver_due(conn, SECRET, session, allow_private=True,
                                     program_id=acme + 1) == 0
            # Not claimed either: their next attempt is where it was.
            assert await conn.fetch(
                "SELECT id, next_attempt_at FROM webhook_outbox ORDER BY id") == due
            assert not receiver.received
            assert await deliver_due(conn, SECRET, session, allow_private=True,
                                     program_id=acme) == len(due)
    finally:
        await receiver.server.close()
    assert len(receiver.received) == len(due)
