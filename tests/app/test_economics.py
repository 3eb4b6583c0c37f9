"""GET /api/v1/reports/economics on a fixture whose answers are computed by hand (issue 16):
refunds, a chargeback, a clawback, a rejected and a reversed reward, two currencies, a credit
after the first payment (not referred), explicit and derived advocate kinds, and a month
boundary that only the program's time zone puts in the next month.

Rows go straight into the tables (conversions, credits, rewards, ledger) as the intake,
attribution and clearance would have written them, so that every figure is known exactly.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
from aiohttp import web
from aiohttp.test_utils import TestClient
from prometheus_client import REGISTRY, generate_latest

from tests.helpers import auth
from tracker.scoring.economics import (
    economics_report,
    publish_economics_metrics,
    refresh_report_cache,
)

Client = TestClient[web.Request, web.Application]


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


class Fixture:
    def __init__(self, conn: asyncpg.Connection, pid: int) -> None:
        self.conn = conn
        self.pid = pid
        self.referrers: dict[str, int] = {}
        self.conversions: dict[str, int] = {}

    async def referrer(self, external_id: str, kind: str | None = None) -> int:
        rid: int = await self.conn.fetchval(
            "INSERT INTO referrers (program_id, external_id, kind) VALUES ($1, $2, $3) "
            "RETURNING id", self.pid, external_id, kind)
        self.referrers[external_id] = rid
        return rid

    async def conversion(self, event: str, type_: str, customer: str, when: str,
                         amount: int | None = None, currency: str | None = None, *,
                         original: str | None = None,
                         credits: dict[str, float] | None = None) -> int:
        cid: int = await self.conn.fetchval(
            """INSERT INTO conversions (program_id, event_id, type, customer_id, amount,
                   currency, occurred_at, original_event_id, body_hash, attributed_at)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, '\\x00', now()) RETURNING id""",
            self.pid, event, type_, customer, amount, currency, at(when), original)
        for ref, credit in (credits or {}).items():
            await self.conn.execute(
                "INSERT INTO credits (program_id, conversion_id, referrer_id, model, credit) "
                "VALUES ($1, $2, $3, 'last_touch', $4)", self.pid, cid, self.referrers[ref],
                credit)
        self.conversions[event] = cid
        return cid

    async def reward(self, event: str, referrer: str, beneficiary: str, payee: str,
                     amount: int, currency: str, status: str, *,
                     ledger: tuple[str, ...] = ()) -> int:
        wid: int = await self.conn.fetchval(
            """INSERT INTO rewards (program_id, conversion_id, rule_index, referrer_id,
                   beneficiary, payee, amount, currency, credit, status, hold_until)
               VALUES ($1, $2, 0, $3, $4, $5, $6, $7, 1, $8, now()) RETURNING id""",
            self.pid, self.conversions[event], self.referrers[referrer], beneficiary, payee,
            amount, currency, status)
        signs = {"earned": 1, "payout": -1, "clawback": -1}
        for kind in ledger:
            await self.conn.execute(
                """INSERT INTO ledger_entries (program_id, payee, currency, amount, kind,
                       reward_id, actor) VALUES ($1, $2, $3, $4, $5, $6, 'test')""",
                self.pid, payee, currency, signs[kind] * amount, kind, wid)
        return wid


async def build(conn: asyncpg.Connection) -> Fixture:
    pid: int = await conn.fetchval(
        """INSERT INTO programs (slug, name, destination_domains, settings)
           VALUES ('acme', 'Acme', ARRAY['acme.test'], '{"timezone": "Europe/Paris"}')
           RETURNING id""")
    f = Fixture(conn, pid)
    await f.referrer("alice")                 # derived: customer (she buys)
    await f.referrer("bob")                   # derived: non_buyer
    await f.referrer("dave", kind="customer")  # set explicitly, no purchase of his own
    # alice: another customer (not referred), retained (renewal 111 days later).
    await f.conversion("a-p", "purchase", "alice", "2026-01-10T12:00", 10000, "USD")
    await f.conversion("a-r", "renewal", "alice", "2026-05-01T12:00", 10000, "USD")
    # c1: referred by alice (credited signup before the purchase); a partial refund; a renewal
    # 94 days later (retained, but outside the 90-day LTV).
    await f.conversion("c1-s", "signup", "c1", "2026-01-20T12:00", credits={"alice": 1.0})
    await f.conversion("c1-p", "purchase", "c1", "2026-01-21T12:00", 20000, "USD",
                       credits={"alice": 1.0})
    await f.conversion("c1-x", "refund", "c1", "2026-02-01T12:00", 5000, "USD",
                       original="c1-p")
    await f.conversion("c1-r", "renewal", "c1", "2026-04-25T12:00", 20000, "USD",
                       credits={"alice": 1.0})
    # c2: bob has the larger credit; charged back in full.
    await f.conversion("c2-p", "purchase", "c2", "2026-02-05T12:00", 30000, "USD",
                       credits={"bob": 0.6, "alice": 0.4})
    await f.conversion("c2-x", "chargeback", "c2", "2026-02-20T12:00", 30000, "USD",
                       original="c2-p")
    # c3: EUR, referred by bob; 23:30 UTC on 31 January is February in Paris.
    await f.conversion("c3-p", "purchase", "c3", "2026-01-31T23:30", 15000, "EUR",
                       credits={"bob": 1.0})
    # c4: EUR, not referred; pays again 55 days later (inside 90 days: not retained).
    await f.conversion("c4-p", "purchase", "c4", "2026-01-05T12:00", 8000, "EUR")
    await f.conversion("c4-r", "renewal", "c4", "2026-03-01T12:00", 8000, "EUR")
    # c5: referred by dave.
    await f.conversion("c5-p", "purchase", "c5", "2026-03-15T12:00", 5000, "USD",
                       credits={"dave": 1.0})
    # c6: paid before any referral: another customer, though a later purchase is credited.
    await f.conversion("c6-p", "purchase", "c6", "2026-01-25T12:00", 7000, "USD")
    await f.conversion("c6-q", "purchase", "c6", "2026-02-15T12:00", 4000, "USD",
                       credits={"alice": 1.0})
    # c7: the latest conversion: how far the data reaches (as_of).
    await f.conversion("c7-p", "purchase", "c7", "2027-01-20T12:00", 1000, "USD")

    # Rewards. c1's purchase reward was paid, then clawed back by the refund.
    await f.reward("c1-p", "alice", "referrer", "alice", 2000, "USD", "reversed",
                   ledger=("earned", "payout", "clawback"))
    await f.reward("c1-s", "alice", "referee", "c1", 500, "USD", "approved", ledger=("earned",))
    await f.reward("c1-r", "alice", "referrer", "alice", 2000, "USD", "approved",
                   ledger=("earned",))
    await f.reward("c2-p", "bob", "referrer", "bob", 3000, "USD", "reversed")  # never granted
    await f.reward("c3-p", "bob", "referrer", "bob", 1500, "EUR", "approved", ledger=("earned",))
    await f.reward("c3-p", "bob", "referee", "c3", 1000, "EUR", "paid",
                   ledger=("earned", "payout"))
    await f.reward("c5-p", "dave", "referrer", "dave", 2500, "USD", "rejected")
    await f.reward("c6-q", "alice", "referrer", "alice", 2000, "USD", "flagged")
    return f


async def economics(client: Client, tokens: dict[str, str], query: str = ""
                    ) -> dict[str, Any]:
    resp = await client.get(f"/api/v1/reports/economics?program=acme{query}",
                            headers=auth(tokens["viewer"]))
    assert resp.status == 200, await resp.text()
    body: dict[str, Any] = await resp.json()
    return body


def side(granted: int, clawed_back: int, open_: int = 0) -> dict[str, int]:
    return {"granted": granted, "clawed_back": clawed_back, "net": granted - clawed_back,
            "open": open_}


async def test_economics_by_hand(client: Client, tokens: dict[str, str],
                                 conn: asyncpg.Connection) -> None:
    await build(conn)
    body = await economics(client, tokens)
    assert body["program"] == "acme"
    assert body["as_of"] == "2027-01-20T12:00:00.000Z"
    assert body["referred_customers"] == 4  # c1, c2, c3, c5 (not c6: paid before its credit)
    # USD: c1 20000 - 5000 refund + 20000 renewal; c2 30000 charged back; c5 5000.
    assert body["referred_revenue"] == {
        "EUR": {"gross": 15000, "refunds": 0, "chargebacks": 0, "net": 15000},
        "USD": {"gross": 75000, "refunds": 5000, "chargebacks": 30000, "net": 40000}}
    # USD referrer side: the paid-then-clawed-back 2000 nets to 0, the approved renewal
    # reward 2000 counts, the flagged 2000 is open, the reversed-before-grant and the rejected
    # ones are no cost. Referee: 500.
    assert body["incentive_cost"] == {
        "EUR": {"referrer": side(1500, 0), "referee": side(1000, 0), "total": side(2500, 0)},
        "USD": {"referrer": side(4000, 2000, 2000), "referee": side(500, 0),
                "total": side(4500, 2000, 2000)}}
    assert body["roi"] == {"EUR": (15000 - 2500) / 2500, "USD": (40000 - 2500) / 2500}
    assert body["cost_per_referred_customer"] == {"EUR": 2500.0, "USD": round(2500 / 3, 2)}
    assert body["fraud_prevented"] == {
        "rejected": {"count": 1, "money": {"USD": 2500}},
        "reversed": {"count": 2, "money": {"USD": 5000}}}

    referred, other = body["customers"]["referred"], body["customers"]["other"]
    assert referred["customers"] == 4
    assert referred["customers_by_currency"] == {"EUR": 1, "USD": 3}
    assert referred["revenue_per_customer"] == {"EUR": 15000.0, "USD": round(40000 / 3, 2)}
    # Only c1 paid again 90 days or more after the first payment.
    assert referred["retention_90d"] == {"eligible": 4, "retained": 1, "rate": 0.25}
    # Within 90 days: c1 15000 (the renewal is day 94), c2 0, c5 5000; c3 15000 EUR.
    assert referred["ltv_90d"] == {"EUR": {"customers": 1, "value": 15000.0},
                                   "USD": {"customers": 3, "value": round(20000 / 3, 2)}}
    assert referred["ltv_365d"] == {}  # none paid first 365 days before as_of
    assert other["customers"] == 4  # alice, c4, c6, c7
    assert other["revenue"] == {
        "EUR": {"gross": 16000, "refunds": 0, "chargebacks": 0, "net": 16000},
        "USD": {"gross": 32000, "refunds": 0, "chargebacks": 0, "net": 32000}}
    # c7 is too recent to tell; alice came back, c4 and c6 did not (within 90 days only).
    assert other["retention_90d"] == {"eligible": 3, "retained": 1, "rate": round(1 / 3, 6)}
    assert other["ltv_90d"] == {"EUR": {"customers": 1, "value": 16000.0},
                                "USD": {"customers": 2, "value": 10500.0}}
    # alice (10 Jan 2026) and c4 (5 Jan) paid first at least 365 days before as_of.
    assert other["ltv_365d"] == {"EUR": {"customers": 1, "value": 16000.0},
                                 "USD": {"customers": 1, "value": 20000.0}}

    # alice derives `customer`, dave is set so; bob derives `non_buyer`.
    assert body["by_referrer_kind"] == {
        "customer": {"referred_customers": 2, "revenue": {"USD": 40000},
                     "incentive_cost": {"USD": 2500}, "roi": {"USD": 15.0}},
        "non_buyer": {"referred_customers": 2, "revenue": {"EUR": 15000, "USD": 0},
                      "incentive_cost": {"EUR": 2500, "USD": 0},
                      "roi": {"EUR": 5.0, "USD": None}}}

    # Months in Paris: c3 (23:30 UTC on 31 January) falls in February.
    assert body["viral"] == [
        {"month": "2026-01", "referred_customers": 1, "referrers": 1, "per_referrer": 1.0,
         "customers_before": 0, "per_customer": None},
        {"month": "2026-02", "referred_customers": 2, "referrers": 1, "per_referrer": 2.0,
         "customers_before": 4, "per_customer": 0.5},
        {"month": "2026-03", "referred_customers": 1, "referrers": 1, "per_referrer": 1.0,
         "customers_before": 6, "per_customer": round(1 / 6, 6)},
        {"month": "2027-01", "referred_customers": 0, "referrers": 0, "per_referrer": None,
         "customers_before": 7, "per_customer": 0.0}]


async def test_economics_window_and_currency(client: Client, tokens: dict[str, str],
                                             conn: asyncpg.Connection) -> None:
    await build(conn)
    body = await economics(client, tokens,
                           "&since=2026-02-01T00:00:00Z&until=2026-03-01T00:00:00Z")
    assert (body["since"], body["until"]) == ("2026-02-01T00:00:00.000Z",
                                              "2026-03-01T00:00:00.000Z")
    # Only c2 paid first in February (UTC); c1's refund belongs to its January purchase.
    assert body["referred_customers"] == 1
    assert body["referred_revenue"] == {
        "USD": {"gross": 30000, "refunds": 0, "chargebacks": 30000, "net": 0}}
    # c2's reward was reversed before it was granted; c6's February reward is still flagged.
    assert body["incentive_cost"] == {"USD": {"referrer": side(0, 0, 2000),
                                              "referee": side(0, 0),
                                              "total": side(0, 0, 2000)}}
    assert body["roi"] == {"USD": None}
    assert body["fraud_prevented"]["reversed"] == {"count": 1, "money": {"USD": 3000}}
    assert body["customers"]["other"]["revenue"]["USD"]["net"] == 4000  # c6's 2nd purchase
    assert body["viral"] == [{"month": "2026-02", "referred_customers": 1, "referrers": 1,
                              "per_referrer": 1.0, "customers_before": 4,
                              "per_customer": 0.25}]

    body = await economics(client, tokens, "&currency=EUR")
    assert body["currency"] == "EUR"
    assert body["referred_customers"] == 1
    assert body["referred_revenue"] == {
        "EUR": {"gross": 15000, "refunds": 0, "chargebacks": 0, "net": 15000}}
    assert body["incentive_cost"] == {"EUR": {"referrer": side(1500, 0),
                                              "referee": side(1000, 0),
                                              "total": side(2500, 0)}}
    assert body["roi"] == {"EUR": 5.0}
    assert body["fraud_prevented"] == {"rejected": {"count": 0, "money": {}},
                                       "reversed": {"count": 0, "money": {}}}
    assert body["customers"]["other"]["customers"] == 1  # c4


async def test_empty_program_answers_zeros(client: Client, tokens: dict[str, str],
                                           conn: asyncpg.Connection) -> None:
    await conn.execute("INSERT INTO programs (slug, name, destination_domains) "
                       "VALUES ('acme', 'Acme', ARRAY['acme.test'])")
    body = await economics(client, tokens)
    assert body["referred_customers"] == 0
    assert body["as_of"] is None
    assert body["roi"] == {} and body["viral"] == []
    assert body["customers"]["referred"]["retention_90d"]["rate"] is None


async def test_economics_bad_input(client: Client, tokens: dict[str, str],
                                   conn: asyncpg.Connection) -> None:
    await build(conn)
    viewer = auth(tokens["viewer"])
    for query, status, field in (
        ("", 422, "program"),
        ("?program=nope", 404, None),
        ("?program=acme&currency=usd", 422, "currency"),
        ("?program=acme&currency=USDX", 422, "currency"),
        ("?program=acme&since=yesterday", 422, "since"),
        ("?program=acme&since=2026-03-01T00:00:00Z&until=2026-02-01T00:00:00Z", 422, "until"),
        ("?program=acme&since=2026-03-01T00:00:00Z&until=2026-03-01T00:00:00Z", 422, "until"),
        ("?program=acme&currency=USD&currency=EUR", 422, "currency"),
    ):
        resp = await client.get(f"/api/v1/reports/economics{query}", headers=viewer)
        assert resp.status == status, (query, await resp.text())
        error = (await resp.json())["error"]
        assert error["message"]
        if field:
            assert error["field"] == field, query
    path = "/api/v1/reports/economics?program=acme"
    assert (await client.get(path)).status == 401
    assert (await client.get(path, headers=auth(tokens["integration"]))).status == 403
    assert (await client.get(path, headers=auth(tokens["finance"]))).status == 200


async def test_referrer_kind_derived_and_set(client: Client, tokens: dict[str, str],
                                             conn: asyncpg.Connection) -> None:
    """POST /api/v1/referrers answers `kind`: derived from the referrer's own purchases until
    the merchant sets it; a bad kind is a 422."""
    f = await build(conn)
    integration = auth(tokens["integration"])

    async def post(body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        resp = await client.post("/api/v1/referrers", json={"program": "acme", **body},
                                 headers=integration)
        return resp.status, await resp.json()

    assert (await post({"external_id": "alice"}))[1]["kind"] == "customer"
    status, bob = await post({"external_id": "bob"})
    assert (status, bob["kind"], bob["kind_set"]) == (200, "non_buyer", False)
    await f.conversion("bob-p", "purchase", "bob", "2026-04-01T12:00", 100, "USD")
    assert (await post({"external_id": "bob"}))[1]["kind"] == "customer"  # he bought now
    status, bob = await post({"external_id": "bob", "kind": "non_buyer"})
    assert (status, bob["kind"], bob["kind_set"]) == (200, "non_buyer", True)
    status, new = await post({"external_id": "erin", "kind": "customer"})
    assert (status, new["kind"], new["kind_set"]) == (201, "customer", True)
    status, err = await post({"external_id": "erin", "kind": "employee"})
    assert status == 422 and err["error"]["field"] == "kind"
    resp = await client.get("/api/v1/referrers?program=acme", headers=integration)
    kinds = {r["external_id"]: r["kind"] for r in (await resp.json())["items"]}
    assert kinds == {"alice": "customer", "bob": "non_buyer", "dave": "customer",
                     "erin": "customer"}


async def test_reports_job_caches_default_views_and_publishes_gauges(
    client: Client, tokens: dict[str, str], conn: asyncpg.Connection,
) -> None:
    """The reports job stores the default views; the API answers them from the copy while it
    is fresh (a filtered view is always computed now), and the per-program gauges come from
    it: referred revenue, incentive cost and ROI per currency."""
    f = await build(conn)
    await refresh_report_cache(conn)
    await publish_economics_metrics(conn)
    live = await economics(client, tokens, "&currency=USD")
    assert live["cached"] is False and live["referred_customers"] == 3  # c1, c2, c5
    # A new referred purchase: the copy does not know it yet, a filtered view does.
    await f.conversion("c8-p", "purchase", "c8", "2026-04-01T12:00", 1000, "USD",
                       credits={"bob": 1.0})
    cached = await economics(client, tokens)
    assert cached["cached"] is True and cached["referred_customers"] == 4  # as computed
    assert (await economics(client, tokens, "&currency=USD"))["referred_customers"] == 4  # + c8
    resp = await client.get("/api/v1/reports/breakdown?program=acme&by=weekday,hour",
                            headers=auth(tokens["viewer"]))
    assert (await resp.json())["cached"] is True
    resp = await client.get("/api/v1/reports/breakdown?program=acme&by=hour,weekday",
                            headers=auth(tokens["viewer"]))
    assert (await resp.json())["cached"] is False  # not a cached view: computed now
    await conn.execute("UPDATE report_cache SET computed_at = now() - interval '1 hour'")
    stale = await economics(client, tokens)
    assert stale["cached"] is False and stale["referred_customers"] == 5

    text = generate_latest(REGISTRY).decode()
    assert 'refguard_program_referred_revenue{currency="USD",program="acme"} 40000.0' in text
    assert 'refguard_program_referred_revenue{currency="EUR",program="acme"} 15000.0' in text
    assert 'refguard_program_incentive_cost{currency="USD",program="acme"} 2500.0' in text
    assert 'refguard_program_roi{currency="USD",program="acme"} 15.0' in text
    assert 'refguard_program_roi{currency="EUR",program="acme"} 5.0' in text


async def test_economics_by_month_by_hand(conn: asyncpg.Connection) -> None:
    """The report's money per calendar month of the program's time zone, from the same pass:
    referred revenue (net, a refund with its purchase), incentive cost (net) and ROI; the
    months sum to the totals, and each is the report over that month."""
    f = await build(conn)
    paris = {"timezone": "Europe/Paris"}
    body = await economics_report(conn, f.pid, paris)
    assert body["by_month"] == [
        # c1's purchase 20000 less its refund 5000; c1's signup reward 500 (its purchase
        # reward was paid and clawed back: 0).
        {"month": "2026-01", "referred_revenue": {"USD": 15000},
         "incentive_cost": {"USD": 500}, "roi": {"USD": 29.0}},
        # c2's 30000 charged back; c3 (23:30 UTC on 31 January: February in Paris) 15000 EUR
        # with 2500 EUR of rewards; c2's reversed and c6's flagged rewards cost nothing.
        {"month": "2026-02", "referred_revenue": {"EUR": 15000, "USD": 0},
         "incentive_cost": {"EUR": 2500, "USD": 0}, "roi": {"EUR": 5.0, "USD": None}},
        # c5's purchase; its reward was rejected.
        {"month": "2026-03", "referred_revenue": {"USD": 5000},
         "incentive_cost": {"USD": 0}, "roi": {"USD": None}},
        # c1's renewal and its approved reward.
        {"month": "2026-04", "referred_revenue": {"USD": 20000},
         "incentive_cost": {"USD": 2000}, "roi": {"USD": 9.0}}]
    for cur in ("USD", "EUR"):
        assert sum(m["referred_revenue"].get(cur, 0) for m in body["by_month"]) == (
            body["referred_revenue"][cur]["net"])
        assert sum(m["incentive_cost"].get(cur, 0) for m in body["by_month"]) == (
            body["incentive_cost"][cur]["total"]["net"])
    paris_tz = ZoneInfo("Europe/Paris")
    for m, (start, end) in zip(body["by_month"], ((1, 2), (2, 3), (3, 4), (4, 5)), strict=True):
        month = await economics_report(conn, f.pid, paris,
                                       since=datetime(2026, start, 1, tzinfo=paris_tz),
                                       until=datetime(2026, end, 1, tzinfo=paris_tz))
        assert m["referred_revenue"] == {c: v["net"]
                                         for c, v in month["referred_revenue"].items()}
        assert m["incentive_cost"] == {c: v["total"]["net"]
                                       for c, v in month["incentive_cost"].items()}
        assert m["roi"] == month["roi"]
    # In UTC, c3 and its rewards fall in January.
    utc = await economics_report(conn, f.pid, {"timezone": "UTC"})
    assert utc["by_month"][:2] == [
        {"month": "2026-01", "referred_revenue": {"EUR": 15000, "USD": 15000},
         "incentive_cost": {"EUR": 2500, "USD": 500}, "roi": {"EUR": 5.0, "USD": 29.0}},
        {"month": "2026-02", "referred_revenue": {"USD": 0}, "incentive_cost": {"USD": 0},
         "roi": {"USD": None}}]
    # A currency keeps that currency's months; a window, its months.
    eur = await economics_report(conn, f.pid, paris, currency="EUR")
    assert [m["month"] for m in eur["by_month"]] == ["2026-02"]
    window = await economics_report(conn, f.pid, paris, since=at("2026-03-01T00:00"))
    assert [m["month"] for m in window["by_month"]] == ["2026-03", "2026-04"]
