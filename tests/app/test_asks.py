"""Asks at the moment of delight (issue 15): the asks job, referral.ask delivery before the
deadline, GET /api/v1/asks and its derived statuses.

Customer events and candidate scores are written straight into their tables (0024): their
writers (POST /api/v1/events, the candidates job) are other parts of the issue. The receivers
listen on 127.0.0.1, so the app and deliveries run with REFGUARD_WEBHOOK_ALLOW_PRIVATE.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import REGISTRY

from tests.helpers import SECRET, ClientFactory, auth, make_settings
from tracker.asks.asks import run_asks
from tracker.asks.messages import share_message
from tracker.clicks.enrich import Enricher
from tracker.finance.webhooks import deliver_due
from tracker.jobs import JobRunner, default_jobs
from tracker.settings import Settings
from tracker.signing import share_token_ids, verify_signature
from tracker.web.app import create_app

Client = TestClient[web.Request, web.Application]

ASKS = {"rules": [{"on": "nps", "min_score": 9}, {"on": "review", "min_score": 5},
                  {"on": "milestone"}, {"on": "purchase", "nth": 2}],
        "within_hours": 24, "top_share": 0.2, "cooldown_days": 30, "max_per_customer": 3}
MESSAGE = "Hi from {name}! Get {referee_reward} off: {link}"
REWARD = {"currency": "USD", "rules": [{"beneficiary": "referrer", "on": "purchase", "flat": 2000},
                                       {"beneficiary": "referee", "on": "purchase", "flat": 500}]}


class Receiver:
    """The merchant's messaging: takes referral.ask (answering `status`, after `delay_s`)."""

    def __init__(self, status: int = 204, delay_s: float = 0.0) -> None:
        self.status = status
        self.delay_s = delay_s
        self.received: list[tuple[dict[str, str], bytes, float]] = []
        self.arrived = asyncio.Event()
        app = web.Application()
        app.router.add_post("/hooks", self.handle)
        self.server = TestServer(app, host="127.0.0.1")

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        await asyncio.sleep(self.delay_s)
        self.received.append((dict(request.headers), body, time.monotonic()))
        self.arrived.set()
        return web.Response(status=self.status)

    def asks(self) -> list[dict[str, Any]]:
        return [json.loads(body)["ask"] for headers, body, _ in self.received
                if headers["X-Refguard-Event"] == "referral.ask"]


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = Receiver()
    await r.server.start_server()
    yield r
    await r.server.close()


@pytest.fixture
def app_settings(tmp_path: Path, dsn: str) -> Settings:
    return make_settings(tmp_path / "data", dsn, webhook_allow_private=True)


@pytest.fixture
async def api(app_settings: Settings, aiohttp_client: ClientFactory) -> Client:
    return await aiohttp_client(create_app(app_settings))


async def _program(api: Client, tokens: dict[str, str], conn: asyncpg.Connection, *,
                   slug: str = "acme", webhook: str | None = None, model: bool = True,
                   asks: dict[str, Any] | None = None) -> int:
    """A program with asks (through the API) and, if `model`, a fitted candidate model."""
    settings: dict[str, Any] = {"asks": asks or ASKS, "share": {"message": MESSAGE},
                                "reward": REWARD}
    if webhook is not None:
        settings["webhook_url"] = webhook
    resp = await api.post("/api/v1/programs", json={
        "slug": slug, "name": slug.title(), "destination_domains": ["acme.test"],
        "settings": settings}, headers=auth(tokens["admin"]))
    assert resp.status == 201, await resp.text()
    pid: int = (await resp.json())["id"]
    if model:
        await conn.execute(
            """INSERT INTO candidate_models (program_id, kind, trained_on, as_of)
               VALUES ($1, 'heuristic', 0, now())""", pid)
    return pid


async def _score(conn: asyncpg.Connection, pid: int, customer: str, percentile: float) -> None:
    await conn.execute(
        """INSERT INTO candidate_scores (program_id, customer_id, score, percentile, as_of)
           VALUES ($1, $2, $3, $3, now())""", pid, customer, percentile)


async def _event(conn: asyncpg.Connection, pid: int, customer: str, type_: str = "nps",
                 score: float | None = 10, ago: timedelta = timedelta(0)) -> int:
    event_id: int = await conn.fetchval(
        """INSERT INTO customer_events (program_id, event_id, customer_id, type, occurred_at,
                                        score, body_hash)
           VALUES ($1, gen_random_uuid()::text, $2, $3, now() - $4::interval, $5, '\\x00')
           RETURNING id""", pid, customer, type_, ago, score)
    return event_id


async def _purchase(conn: asyncpg.Connection, pid: int, event_id: str, customer: str,
                    at: datetime) -> int:
    conversion_id: int = await conn.fetchval(
        """INSERT INTO conversions (program_id, event_id, type, customer_id, amount, currency,
                                    occurred_at, body_hash)
           VALUES ($1, $2, 'purchase', $3, 5000, 'USD', $4, '\\x00') RETURNING id""",
        pid, event_id, customer, at)
    return conversion_id


async def _deliver(conn: asyncpg.Connection) -> int:
    async with aiohttp.ClientSession() as session:
        return await deliver_due(conn, SECRET, session, allow_private=True)


async def _asks(conn: asyncpg.Connection) -> dict[str, tuple[str, str | None]]:
    """Each customer's (status, reason), for customers with one ask."""
    rows = await conn.fetch("SELECT customer_id, status, reason FROM asks ORDER BY id")
    return {r["customer_id"]: (r["status"], r["reason"]) for r in rows}


async def test_a_moment_of_delight_is_asked_and_its_referral_ask_arrives_signed_within_a_minute(
    api: Client, tokens: dict[str, str], conn: asyncpg.Connection, dsn: str,
    app_settings: Settings, receiver: Receiver,
) -> None:
    pid = await _program(api, tokens, conn, webhook=str(receiver.server.make_url("/hooks")))
    await _score(conn, pid, "cust-1", 0.95)
    await conn.execute(
        """INSERT INTO customer_names (program_id, customer_id, name, name_at)
           VALUES ($1, 'cust-1', 'Ada Lovelace', now())""", pid)
    # The jobs as `serve` runs them (their own intervals), only the two that matter here.
    jobs = tuple(j for j in default_jobs(Enricher(SECRET, ()), app_settings)
                 if j.name in ("asks", "webhooks"))
    assert len(jobs) == 2
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=4)
    runner = JobRunner(pool, jobs)
    try:
        runner.start()
        started = time.monotonic()
        event = await _event(conn, pid, "cust-1", "nps", 10)
        await asyncio.wait_for(receiver.arrived.wait(), timeout=60)
        took = receiver.received[0][2] - started
        for _ in range(200):  # the job records the delivery once the receiver has answered
            if await conn.fetchval("SELECT status FROM asks") == "sent":
                break
            await asyncio.sleep(0.05)
    finally:
        await runner.close()
        await pool.close()
    assert took < 60
    resp = await api.get("/api/v1/programs/acme", headers=auth(tokens["admin"]))
    secret = (await resp.json())["signing_secret"]
    (headers, body, _), = receiver.received
    verify_signature(headers["X-Refguard-Signature"], body, secret)  # raises if forged
    assert headers["X-Refguard-Event"] == "referral.ask"
    sent = json.loads(body)
    assert sent["event"] == "referral.ask"
    ask = sent["ask"]
    row = await conn.fetchrow(
        """SELECT a.id, a.status, a.sent_at, a.referrer_id, a.deadline, e.occurred_at,
                  e.asked_at FROM asks a
           JOIN customer_events e ON e.program_id = a.program_id AND e.id = a.trigger_id
           WHERE a.trigger_source = 'event' AND a.trigger_id = $1""", event)
    assert row["status"] == "sent" and row["sent_at"] is not None and row["asked_at"]
    assert row["deadline"] == row["occurred_at"] + timedelta(hours=24)
    referrer = await conn.fetchrow(
        "SELECT id, external_id, name FROM referrers WHERE id = $1", row["referrer_id"])
    assert (referrer["external_id"], referrer["name"]) == ("cust-1", "Ada Lovelace")
    link = await conn.fetchrow("SELECT code, destination FROM links WHERE referrer_id = $1",
                               referrer["id"])
    assert link["destination"] == "https://acme.test/"
    base = app_settings.base_url
    assert ask["share_url"].startswith(f"{base}/s/")
    assert share_token_ids(SECRET, ask["share_url"].rsplit("/", 1)[1]) == (pid, referrer["id"])
    link_url = f"{base}/r/{link['code']}"
    assert ask == {
        "ask_id": row["id"], "program": "acme", "customer_id": "cust-1", "name": "Ada Lovelace",
        "trigger": {"type": "nps", "score": 10,
                    "occurred_at": ask["trigger"]["occurred_at"]},
        "deadline": ask["deadline"], "share_url": ask["share_url"], "link": link_url,
        "message": "Hi from Ada Lovelace! Get 5.00 USD off: " + link_url,
    }
    assert ask["message"] == share_message(
        {"share": {"message": MESSAGE}, "reward": REWARD}, name="Ada Lovelace", link=link_url)
    assert datetime.fromisoformat(ask["deadline"]) - datetime.fromisoformat(
        ask["trigger"]["occurred_at"]) == timedelta(hours=24)
    resp = await api.get("/api/v1/asks?program=acme", headers=auth(tokens["viewer"]))
    assert resp.status == 200
    (item,) = (await resp.json())["items"]
    assert (item["id"], item["customer"], item["status"], item["reason"], item["share_url"],
            item["trigger"]["type"]) == (row["id"], "cust-1", "sent", None, ask["share_url"],
                                         "nps")
    assert item["sent_at"] is not None


async def test_suppressed_and_late_triggers_are_recorded_and_send_no_webhook(
    api: Client, tokens: dict[str, str], conn: asyncpg.Connection, receiver: Receiver,
    app_settings: Settings,
) -> None:
    pid = await _program(api, tokens, conn, webhook=str(receiver.server.make_url("/hooks")))
    for customer in ("happy", "flagged", "rejected", "refunder", "cooled", "capped", "late",
                     "meh"):
        await _score(conn, pid, customer, 0.9)
    await _score(conn, pid, "lowly", 0.79)  # below the top 20%
    # A fraud flag naming "flagged" (as a referrer).
    await conn.execute(
        """WITH s AS (INSERT INTO fraud_scans (program_id, mode) VALUES ($1, 'full')
                      RETURNING id)
           INSERT INTO fraud_flags (program_id, scan_id, kind, score, reasons, members)
           SELECT $1, s.id, 'ring', 0.9, '[]', $2::jsonb FROM s""",
        pid, json.dumps([{"type": "referrer", "id": "flagged"}, {"type": "ip", "id": "1.2.3.4"}]))
    # "rejected" earned a reward that was rejected.
    rid = await conn.fetchval(
        "INSERT INTO referrers (program_id, external_id) VALUES ($1, 'rejected') RETURNING id",
        pid)
    cid = await _purchase(conn, pid, "friend-1", "friend", datetime.now(UTC) - timedelta(days=9))
    await conn.execute("UPDATE conversions SET asked_at = now() WHERE id = $1", cid)
    await conn.execute(
        """INSERT INTO rewards (program_id, conversion_id, rule_index, referrer_id, beneficiary,
                                payee, amount, currency, credit, status, hold_until)
           VALUES ($1, $2, 0, $3, 'referrer', 'rejected', 2000, 'USD', 1, 'rejected', now())""",
        pid, cid, rid)
    # "refunder" bought as a referee and charged it back: the referrer's reward was reversed.
    cid = await _purchase(conn, pid, "r-1", "refunder", datetime.now(UTC) - timedelta(days=9))
    await conn.execute("UPDATE conversions SET asked_at = now() WHERE id = $1", cid)
    await conn.execute(
        """INSERT INTO rewards (program_id, conversion_id, rule_index, referrer_id, beneficiary,
                                payee, amount, currency, credit, status, hold_until)
           VALUES ($1, $2, 0, $3, 'referrer', 'rejected', 2000, 'USD', 1, 'reversed', now())""",
        pid, cid, rid)
    # "cooled" was asked 3 days ago; "capped" three times, long ago.
    old = await _event(conn, pid, "cooled", ago=timedelta(days=3))
    await conn.execute(
        """INSERT INTO asks (program_id, customer_id, trigger_source, trigger_id, trigger_type,
                             occurred_at, deadline, status, created_at, sent_at)
           VALUES ($1, 'cooled', 'event', $2, 'nps', now() - interval '3 days',
                   now() - interval '2 days', 'sent', now() - interval '3 days',
                   now() - interval '3 days')""", pid, old)
    for days in (100, 200, 300):
        e = await _event(conn, pid, "capped", ago=timedelta(days=days))
        await conn.execute(
            """INSERT INTO asks (program_id, customer_id, trigger_source, trigger_id,
                                 trigger_type, occurred_at, deadline, status, created_at)
               VALUES ($1, 'capped', 'event', $2, 'nps', now(), now(), 'sent',
                       now() - make_interval(days => $3))""", pid, e, days)
    await conn.execute("UPDATE customer_events SET asked_at = now()")  # the history is taken
    for customer in ("happy", "flagged", "rejected", "refunder", "cooled", "capped", "lowly",
                     "unscored"):
        await _event(conn, pid, customer, "review", 5)
    await _event(conn, pid, "late", "milestone", None, ago=timedelta(hours=25))
    await _event(conn, pid, "meh", "nps", 8)  # below min_score: no rule, no ask
    await _event(conn, pid, "happy", "login", None)  # no rule for this type

    def counted(outcome: str, reason: str) -> float:
        return REGISTRY.get_sample_value(
            "refguard_asks_total", {"outcome": outcome, "reason": reason}) or 0.0

    before = {k: counted(*k) for k in (("suppressed", "not_top_share"), ("expired", "late"),
                                       ("queued", ""), ("sent", ""))}
    await run_asks(conn, app_settings)
    assert await _deliver(conn) == 1
    assert [a["customer_id"] for a in receiver.asks()] == ["happy"]
    assert {k: counted(*k) - v for k, v in before.items()} == {
        ("suppressed", "not_top_share"): 2, ("expired", "late"): 1, ("queued", ""): 1,
        ("sent", ""): 1}
    got = {c: s for c, s in (await _asks(conn)).items() if c not in ("cooled", "capped")}
    assert got == {
        "happy": ("sent", None),
        "flagged": ("suppressed", "fraud_flag"),
        "rejected": ("suppressed", "rejected_reward"),
        "refunder": ("suppressed", "reversed_reward"),
        "lowly": ("suppressed", "not_top_share"),
        "unscored": ("suppressed", "not_top_share"),
        "late": ("expired", "late"),
    }
    new = await conn.fetch(
        "SELECT status, reason FROM asks WHERE customer_id IN ('cooled', 'capped') "
        "AND created_at > now() - interval '1 minute' ORDER BY customer_id")
    assert [(r["status"], r["reason"]) for r in new] == [("suppressed", "cap"),
                                                         ("suppressed", "cooldown")]
    assert await conn.fetchval("SELECT count(*) FROM customer_events WHERE asked_at IS NULL") == 0
    assert await conn.fetchval("SELECT count(*) FROM asks WHERE customer_id = 'meh'") == 0
    # Only the customer asked became a referrer (with a link).
    assert {r["external_id"] for r in await conn.fetch(
        "SELECT f.external_id FROM referrers f JOIN links l ON l.referrer_id = f.id")} == {
        "happy"}
    assert await conn.fetchval(
        "SELECT count(*) FROM webhook_outbox WHERE event = 'referral.ask'") == 1

    resp = await api.get("/api/v1/asks?program=acme&status=suppressed",
                         headers=auth(tokens["finance"]))
    items = (await resp.json())["items"]
    assert {(i["customer"], i["reason"]) for i in items} == {
        ("flagged", "fraud_flag"), ("rejected", "rejected_reward"),
        ("refunder", "reversed_reward"), ("lowly", "not_top_share"),
        ("unscored", "not_top_share"), ("cooled", "cooldown"), ("capped", "cap")}
    assert all(i["share_url"] is None and i["sent_at"] is None for i in items)


async def test_without_a_candidate_model_a_trigger_waits_until_its_deadline_then_expires(
    api: Client, tokens: dict[str, str], conn: asyncpg.Connection, receiver: Receiver,
    app_settings: Settings,
) -> None:
    pid = await _program(api, tokens, conn, webhook=str(receiver.server.make_url("/hooks")),
                         model=False)
    event = await _event(conn, pid, "cust-1", "milestone", None)
    await run_asks(conn, app_settings)
    assert await conn.fetchval("SELECT asked_at FROM customer_events WHERE id = $1",
                               event) is None
    assert await conn.fetchval("SELECT count(*) FROM asks") == 0
    await conn.execute("UPDATE customer_events SET occurred_at = now() - interval '25 hours'")
    await run_asks(conn, app_settings)
    assert await _asks(conn) == {"cust-1": ("expired", "no_candidate_scores")}
    assert await conn.fetchval("SELECT asked_at FROM customer_events WHERE id = $1", event)
    assert await _deliver(conn) == 0
    assert receiver.received == []


async def test_a_program_without_webhook_url_suppresses_its_asks(
    api: Client, tokens: dict[str, str], conn: asyncpg.Connection, app_settings: Settings,
) -> None:
    pid = await _program(api, tokens, conn)
    await _score(conn, pid, "cust-1", 1.0)
    await _event(conn, pid, "cust-1")
    await run_asks(conn, app_settings)
    assert await _asks(conn) == {"cust-1": ("suppressed", "no_webhook_url")}
    assert await conn.fetchval("SELECT count(*) FROM webhook_outbox") == 0


async def test_the_nth_purchase_rule_counts_purchases_by_when_they_happened(
    api: Client, tokens: dict[str, str], conn: asyncpg.Connection, receiver: Receiver,
    app_settings: Settings,
) -> None:
    pid = await _program(api, tokens, conn, webhook=str(receiver.server.make_url("/hooks")),
                         asks={"rules": [{"on": "purchase", "nth": 2}], "cooldown_days": 0})
    await _score(conn, pid, "buyer", 0.99)
    now = datetime.now(UTC)
    # Reported out of order: the second purchase (by occurred_at) arrives first.
    second = await _purchase(conn, pid, "p-2", "buyer", now - timedelta(hours=2))
    first = await _purchase(conn, pid, "p-1", "buyer", now - timedelta(hours=5))
    third = await _purchase(conn, pid, "p-3", "buyer", now - timedelta(hours=1))
    other = await _purchase(conn, pid, "o-1", "someone", now - timedelta(hours=1))
    await conn.execute(
        """INSERT INTO conversions (program_id, event_id, type, customer_id, occurred_at,
                                    body_hash)
           VALUES ($1, 's-1', 'signup', 'buyer', $2, '\\x00')""", pid, now - timedelta(hours=6))
    await run_asks(conn, app_settings)
    rows = await conn.fetch("SELECT trigger_source, trigger_id, trigger_type, status FROM asks")
    assert [(r["trigger_source"], r["trigger_id"], r["trigger_type"], r["status"])
            for r in rows] == [("conversion", second, "purchase", "queued")]
    taken = await conn.fetch("SELECT id FROM conversions WHERE asked_at IS NOT NULL")
    assert {r["id"] for r in taken} == {first, second, third, other}  # signups are no trigger
    assert await _deliver(conn) == 1
    (ask,) = receiver.asks()
    assert (ask["customer_id"], ask["trigger"]["type"], ask["trigger"]["score"]) == (
        "buyer", "purchase", None)


async def test_running_the_job_twice_or_at_once_asks_once(
    api: Client, tokens: dict[str, str], conn: asyncpg.Connection, dsn: str,
    receiver: Receiver, app_settings: Settings,
) -> None:
    pid = await _program(api, tokens, conn, webhook=str(receiver.server.make_url("/hooks")))
    await _score(conn, pid, "cust-1", 0.9)
    await _event(conn, pid, "cust-1")
    other = await asyncpg.connect(dsn)
    try:
        # Two nodes at once (without the job's leader lock): one ask, one webhook.
        await asyncio.gather(run_asks(conn, app_settings), run_asks(other, app_settings))
    finally:
        await other.close()
    await run_asks(conn, app_settings)
    # Even a trigger taken up again (asked_at lost) gets no second ask: one per trigger.
    await conn.execute("UPDATE customer_events SET asked_at = NULL")
    await run_asks(conn, app_settings)
    assert await conn.fetchval("SELECT count(*) FROM asks") == 1
    assert await conn.fetchval("SELECT count(*) FROM webhook_outbox") == 1
    assert await conn.fetchval("SELECT count(*) FROM referrers") == 1
    assert await conn.fetchval("SELECT count(*) FROM links") == 1
    assert await _deliver(conn) == 1
    await conn.execute("UPDATE webhook_outbox SET next_attempt_at = now()")
    assert await _deliver(conn) == 0
    assert len(receiver.received) == 1


async def _queued_ask(api: Client, tokens: dict[str, str], conn: asyncpg.Connection,
                      settings: Settings, url: str) -> int:
    pid = await _program(api, tokens, conn, webhook=url)
    await _score(conn, pid, "cust-1", 0.9)
    await _event(conn, pid, "cust-1")
    await run_asks(conn, settings)
    ask_id: int = await conn.fetchval("SELECT id FROM asks WHERE status = 'queued'")
    return ask_id


async def test_a_referral_ask_is_never_delivered_after_its_deadline(
    api: Client, tokens: dict[str, str], conn: asyncpg.Connection, receiver: Receiver,
    app_settings: Settings,
) -> None:
    ask_id = await _queued_ask(api, tokens, conn, app_settings,
                               str(receiver.server.make_url("/hooks")))
    # The webhooks job did not run in time (a node down, a long backlog): too late now.
    await conn.execute("UPDATE asks SET deadline = now() - interval '1 second'")
    assert await _deliver(conn) == 0
    assert receiver.received == []
    assert await _asks(conn) == {"cust-1": ("expired", "past_deadline")}
    row = await conn.fetchrow("SELECT failed_at, delivered_at, last_error FROM webhook_outbox")
    assert row["failed_at"] is not None and row["delivered_at"] is None
    assert "deadline" in row["last_error"]
    await conn.execute("UPDATE webhook_outbox SET next_attempt_at = now()")
    assert await _deliver(conn) == 0  # given up for good
    resp = await api.get("/api/v1/asks?status=expired", headers=auth(tokens["viewer"]))
    assert [(i["id"], i["reason"]) for i in (await resp.json())["items"]] == [
        (ask_id, "past_deadline")]


async def test_a_failing_or_slow_receiver_is_not_retried_past_the_deadline(
    api: Client, tokens: dict[str, str], conn: asyncpg.Connection, app_settings: Settings,
) -> None:
    failing = Receiver(status=500)
    await failing.server.start_server()
    try:
        await _queued_ask(api, tokens, conn, app_settings, str(failing.server.make_url("/hooks")))
        # 5 seconds left: the first retry (in 10) would come too late.
        await conn.execute("UPDATE asks SET deadline = now() + interval '5 seconds'")
        assert await _deliver(conn) == 0
        assert len(failing.received) == 1
        assert await _asks(conn) == {"cust-1": ("expired", "undelivered")}
        row = await conn.fetchrow("SELECT failed_at, last_error FROM webhook_outbox")
        assert row["failed_at"] is not None and row["last_error"] == "HTTP 500"
        # With a minute left, a failure is retried as usual.
        await conn.execute("UPDATE asks SET status = 'queued', reason = NULL, "
                           "deadline = now() + interval '1 minute'")
        await conn.execute("UPDATE webhook_outbox SET failed_at = NULL, attempts = 0, "
                           "next_attempt_at = now()")
        assert await _deliver(conn) == 0
        assert await _asks(conn) == {"cust-1": ("queued", None)}
        assert await conn.fetchval("SELECT failed_at IS NULL AND next_attempt_at > now() "
                                   "FROM webhook_outbox")
    finally:
        await failing.server.close()
    # A receiver slower than the time left is cut off at the deadline.
    slow = Receiver(delay_s=5.0)
    await slow.server.start_server()
    try:
        await conn.execute("UPDATE programs SET settings = settings || jsonb_build_object("
                           "'webhook_url', $1::text)", str(slow.server.make_url("/hooks")))
        await conn.execute("UPDATE asks SET deadline = now() + interval '1 second'")
        await conn.execute("UPDATE webhook_outbox SET next_attempt_at = now()")
        started = time.monotonic()
        assert await _deliver(conn) == 0
        assert time.monotonic() - started < 4
    finally:
        await slow.server.close()
    assert await _asks(conn) == {"cust-1": ("expired", "undelivered")}


async def test_the_list_derives_shared_clicked_and_converted_from_what_followed(
    api: Client, tokens: dict[str, str], conn: asyncpg.Connection, app_settings: Settings,
) -> None:
    pid = await _program(api, tokens, conn, webhook="http://127.0.0.1:9/hooks")
    await conn.execute("SELECT refguard_ensure_click_partition(now())")
    await conn.execute("SELECT refguard_ensure_click_partition(now() - interval '1 day')")
    people = ("quiet", "shared", "shared_by_ask", "clicked", "bot_clicked", "converted",
              "before", "queued")
    asks: dict[str, int] = {}
    refs: dict[str, tuple[int, int]] = {}
    for person in people:
        rid = await conn.fetchval(
            "INSERT INTO referrers (program_id, external_id) VALUES ($1, $2) RETURNING id",
            pid, person)
        lid = await conn.fetchval(
            """INSERT INTO links (program_id, referrer_id, code, destination)
               VALUES ($1, $2, $3, 'https://acme.test/') RETURNING id""", pid, rid, person)
        refs[person] = (rid, lid)
        event = await _event(conn, pid, person, ago=timedelta(hours=2))
        asks[person] = await conn.fetchval(
            """INSERT INTO asks (program_id, customer_id, referrer_id, trigger_source,
                                 trigger_id, trigger_type, trigger_score, occurred_at,
                                 deadline, status, sent_at)
               VALUES ($1, $2, $3, 'event', $4, 'nps', 10, now() - interval '2 hours',
                       now() + interval '22 hours', $5,
                       CASE WHEN $5 = 'sent' THEN now() - interval '1 hour' END)
               RETURNING id""", pid, person, rid, event,
            "queued" if person == "queued" else "sent")

    async def click(person: str, ago: str, bot: bool = False) -> None:
        rid, lid = refs[person]
        await conn.execute(
            """INSERT INTO clicks (program_id, click_id, ts, link_id, referrer_id, code, is_bot)
               VALUES ($1, gen_random_uuid(), now() - $2::text::interval, $3, $4, $5, $6)""",
            pid, ago, lid, rid, person, bot)

    async def share(person: str, ago: str, ask_id: int | None = None) -> None:
        await conn.execute(
            """INSERT INTO shares (program_id, referrer_id, channel, ask_id, occurred_at, source)
               VALUES ($1, $2, 'whatsapp', $3, now() - $4::text::interval, 'page')""",
            pid, refs[person][0], ask_id, ago)

    await share("shared", "30 minutes")
    await share("shared_by_ask", "3 hours", asks["shared_by_ask"])  # answers that very ask
    await share("before", "3 hours")  # before it was sent, not in answer to it
    await click("before", "3 hours")
    await click("clicked", "20 minutes")
    await click("bot_clicked", "20 minutes", bot=True)  # a messenger's preview
    await share("converted", "40 minutes")
    await click("converted", "30 minutes")
    cid = await _purchase(conn, pid, "friend-p1", "friend",
                          datetime.now(UTC) - timedelta(minutes=10))
    await conn.execute(
        """INSERT INTO credits (program_id, conversion_id, referrer_id, model, credit)
           VALUES ($1, $2, $3, 'last_touch', 1)""", pid, cid, refs["converted"][0])
    viewer = auth(tokens["viewer"])
    resp = await api.get("/api/v1/asks?program=acme", headers=viewer)
    assert resp.status == 200
    got = {i["customer"]: i["status"] for i in (await resp.json())["items"]}
    assert got == {"quiet": "sent", "shared": "shared", "shared_by_ask": "shared",
                   "clicked": "clicked", "bot_clicked": "sent", "converted": "converted",
                   "before": "sent", "queued": "queued"}
    for status, who in (("sent", {"quiet", "bot_clicked", "before"}),
                        ("shared", {"shared", "shared_by_ask"}), ("clicked", {"clicked"}),
                        ("converted", {"converted"}), ("queued", {"queued"}),
                        ("expired", set())):
        resp = await api.get(f"/api/v1/asks?program=acme&status={status}", headers=viewer)
        assert {i["customer"] for i in (await resp.json())["items"]} == who, status
    # Pages of 3, in id order, by cursor.
    seen: list[int] = []
    url = "/api/v1/asks?program=acme&limit=3"
    while True:
        body = await (await api.get(url, headers=viewer)).json()
        assert len(body["items"]) <= 3
        seen += [i["id"] for i in body["items"]]
        if body["next"] is None:
            break
        url = f"/api/v1/asks?program=acme&limit=3&cursor={body['next']}"
    assert seen == sorted(asks.values())
    # Bad input: clear 4xx.
    assert (await api.get("/api/v1/asks?status=happy", headers=viewer)).status == 422
    assert (await api.get("/api/v1/asks?program=nope", headers=viewer)).status == 404
    assert (await api.get("/api/v1/asks?cursor=%%%", headers=viewer)).status == 422
    assert (await api.get("/api/v1/asks", headers=auth(tokens["integration"]))).status == 403
    assert (await api.get("/api/v1/asks")).status == 401


async def test_a_backlog_is_taken_up_in_batches_a_bounded_number_per_run(
    api: Client, tokens: dict[str, str], conn: asyncpg.Connection, app_settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("tracker.asks.asks.BATCH", 2)
    monkeypatch.setattr("tracker.asks.asks.BATCHES_PER_RUN", 2)
    pid = await _program(api, tokens, conn, webhook="http://127.0.0.1:9/hooks")
    for n in range(5):
        await _event(conn, pid, f"c{n}", "login", None)  # no rule: taken, never asked
    summary = await run_asks(conn, app_settings)
    assert summary.taken == 4  # two batches of two
    assert await conn.fetchval(
        "SELECT count(*) FROM customer_events WHERE asked_at IS NULL") == 1
    assert (await run_asks(conn, app_settings)).taken == 1
    assert await conn.fetchval("SELECT count(*) FROM asks") == 0
