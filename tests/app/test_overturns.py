"""Overturns (issue 14): finance approves a rejected reward, rejects an approved one not yet
paid; the ledger stays append-only and balanced, concurrency stays exactly-one-wins."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import asyncpg

from tests.helpers import auth
from tests.shop import Shop, ShopFactory
from tracker.auth import create_token
from tracker.finance.clearance import release
from tracker.finance.payouts import PAYOUT_LOCK, export_payouts
from tracker.scoring.credits import attribute_pending
from tracker.scoring.risk import scan

REFERRER_2000 = {"beneficiary": "referrer", "on": "purchase", "flat": 2000}




async def _held(shop: Shop, event: str, score: float,
                codes: tuple[str, ...] = ("fast_conversion",)) -> int:
    """A purchase of alice's referee whose scan said `score` (for these reason codes),
    cleared: its reward's id."""
    await shop.buy("alice", event, f"cust-{event}")
    await attribute_pending(shop.conn)
    await scan(shop.conn, incremental=True)
    reasons = json.dumps([{"code": code, "message": "a reason", "value": 2.0,
                           "threshold": 10.0, "weight": score} for code in codes])
    await shop.conn.execute(
        """UPDATE conversion_risk SET score = $2, reasons = $3::jsonb FROM conversions c
           WHERE c.program_id = conversion_risk.program_id
             AND c.id = conversion_risk.conversion_id AND c.event_id = $1""",
        event, score, reasons)
    await release(shop.conn)
    rid: int = await shop.conn.fetchval(
        "SELECT r.id FROM rewards r JOIN conversions c ON c.id = r.conversion_id "
        "WHERE c.event_id = $1", event)
    return rid


async def _balance(conn: asyncpg.Connection) -> int:
    return int(await conn.fetchval(
        "SELECT coalesce(sum(amount), 0) FROM ledger_entries WHERE payee = 'alice'"))


async def _post(shop: Shop, rid: int, action: str, token: str,
                **body: Any) -> tuple[int, dict[str, Any]]:
    resp = await shop.client.post(f"/api/v1/rewards/{rid}/{action}",
                                  json={"reason": "checked by hand", **body},
                                  headers=auth(token))
    answer: dict[str, Any] = await resp.json()
    return resp.status, answer


async def test_every_overturn_through_the_api(open_shop: ShopFactory,
                                              conn: asyncpg.Connection) -> None:
    shop = await open_shop({"hold_days": 0, "reward": {"rules": [REFERRER_2000]}})
    await shop.referrer("alice")
    finance = shop.tokens["finance"]
    other, _ = await create_token(conn, "finance", "second", person="bea")
    rid = await _held(shop, "p1", 0.95)
    assert (await shop.rewards())["p1/alice"]["status"] == "rejected"
    assert await _balance(conn) == 0
    # rejected (automatically) -> approved, by any finance person.
    status, body = await _post(shop, rid, "approve", finance)
    assert (status, body["status"]) == (200, "approved")
    assert await _balance(conn) == 2000
    # approved -> rejected: the earning is reversed by a negative entry, never edited.
    status, body = await _post(shop, rid, "reject", other)
    assert (status, body["status"]) == (200, "rejected")
    assert [(e["kind"], e["amount"]) for e in await conn.fetch(
        "SELECT kind, amount FROM ledger_entries WHERE reward_id = $1 ORDER BY id", rid)] == [
        ("earned", 2000), ("reversal", -2000)]
    assert await _balance(conn) == 0
    # bea rejected it: only another person overturns that rejection.
    status, body = await _post(shop, rid, "approve", other)
    assert status == 409 and body["error"]["reward_status"] == "rejected"
    status, body = await _post(shop, rid, "approve", finance)
    assert (status, body["status"]) == (200, "approved")
    assert await _balance(conn) == 2000
    # Paid once, then no rejection any more.
    written: list[str] = []
    batch_id, lines = await export_payouts(conn, "test", written.append)
    assert batch_id is not None and [(ln.payee, ln.amount) for ln in lines] == [("alice", 2000)]
    status, body = await _post(shop, rid, "reject", other)
    assert status == 409 and body["error"]["reward_status"] == "paid"
    assert await _balance(conn) == 0
    audit = await conn.fetch("SELECT action, details::text AS d FROM audit_log "
                             "WHERE object_type = 'reward' AND object_id = $1 ORDER BY id",
                             str(rid))
    assert [a["action"] for a in audit] == ["reward.reject", "reward.approve", "reward.reject",
                                            "reward.approve"]
    assert all(json.loads(a["d"]).get("overturn") for a in audit[1:])
    assert json.loads(audit[2]["d"])["reversal"] == -2000
    # flagged -> approved and pending -> rejected stay as they were; a flagged one is no
    # overturn of a person, but the engine is overruled: the metric counts it by reason.
    flagged = await _held(shop, "p2", 0.7)
    status, body = await _post(shop, flagged, "approve", finance, expected_status="flagged")
    assert (status, body["status"]) == (200, "approved")
    exposition = await (await shop.client.get("/metrics")).text()
    assert 'refguard_reward_overturns_total{reason="fast_conversion"}' in exposition


async def test_a_person_does_not_overturn_their_own_rejection(
    open_shop: ShopFactory, conn: asyncpg.Connection,
) -> None:
    shop = await open_shop({"hold_days": 0, "reward": {"rules": [REFERRER_2000]}})
    await shop.referrer("alice")
    mine, _ = await create_token(conn, "finance", "laptop", person="carl")
    my_other, _ = await create_token(conn, "finance", "phone", person="carl")
    someone, _ = await create_token(conn, "finance", "desk", person="dora")
    rid = await _held(shop, "p1", 0.7)
    assert (await _post(shop, rid, "reject", mine))[0] == 200
    for token in (mine, my_other):  # another token of the same person is the same eyes
        status, body = await _post(shop, rid, "approve", token)
        assert status == 409 and "another person" in body["error"]["message"]
    assert (await _post(shop, rid, "approve", someone))[0] == 200
    # A decision that expected another status is refused, not an unseen overturn.
    status, body = await _post(shop, rid, "reject", mine, expected_status="flagged")
    assert status == 409 and body["error"]["reward_status"] == "approved"
    status, body = await _post(shop, rid, "reject", mine, expected_status="lost")
    assert status == 422 and body["error"]["field"] == "expected_status"


async def test_four_eyes_apply_to_an_overturn(open_shop: ShopFactory,
                                              conn: asyncpg.Connection) -> None:
    shop = await open_shop({"hold_days": 0, "four_eyes_above": 1500,
                            "reward": {"rules": [REFERRER_2000]}})
    await shop.referrer("alice")
    a, _ = await create_token(conn, "finance", "a", person="ann")
    b, _ = await create_token(conn, "finance", "b", person="ben")
    c, _ = await create_token(conn, "finance", "c", person="cid")
    rid = await _held(shop, "p1", 0.7)
    # ann's first approval of the flagged reward, then ben rejects it: a new round.
    assert (await _post(shop, rid, "approve", a))[0] == 202
    assert (await _post(shop, rid, "reject", b))[0] == 200
    # ben may not overturn his own rejection; ann and cid together may.
    assert (await _post(shop, rid, "approve", b))[0] == 409
    status, body = await _post(shop, rid, "approve", a)
    assert status == 202 and body["approvals"] == 1 and body["status"] == "rejected"
    assert (await _post(shop, rid, "approve", a))[0] == 409
    status, body = await _post(shop, rid, "approve", c)
    assert (status, body["status"]) == (200, "approved")
    assert await _balance(conn) == 2000
    # Rejecting the approved reward and approving it again: two more eyes again.
    assert (await _post(shop, rid, "reject", c))[0] == 200
    assert await _balance(conn) == 0
    assert (await _post(shop, rid, "approve", a))[0] == 202
    assert (await _post(shop, rid, "approve", b))[0] == 200
    assert await _balance(conn) == 2000
    assert await conn.fetchval("SELECT count(*) FROM ledger_entries WHERE kind = 'earned' "
                               "AND reward_id = $1", rid) == 2


async def test_two_concurrent_overturns_one_wins(open_shop: ShopFactory,
                                                 conn: asyncpg.Connection) -> None:
    shop = await open_shop({"hold_days": 0, "reward": {"rules": [REFERRER_2000]}})
    await shop.referrer("alice")
    rid = await _held(shop, "p1", 0.95)
    x, _ = await create_token(conn, "finance", "x", person="xia")
    y, _ = await create_token(conn, "finance", "y", person="yan")
    results = await asyncio.gather(_post(shop, rid, "approve", x),
                                   _post(shop, rid, "approve", y))
    assert sorted(s for s, _ in results) == [200, 409]
    loser = next(b for s, b in results if s == 409)
    assert loser["error"]["reward_status"] == "approved"
    assert await _balance(conn) == 2000
    # And two concurrent rejections of the approved reward: one reversal.
    results = await asyncio.gather(_post(shop, rid, "reject", x),
                                   _post(shop, rid, "reject", y))
    assert sorted(s for s, _ in results) == [200, 409]
    assert await _balance(conn) == 0
    assert await conn.fetchval("SELECT count(*) FROM audit_log WHERE object_id = $1 "
                               "AND action LIKE 'reward.%'", str(rid)) == 3


async def test_the_decisions_report_matches_hand_computed_rates(
    open_shop: ShopFactory, conn: asyncpg.Connection,
) -> None:
    shop = await open_shop({"hold_days": 0, "reward": {"rules": [REFERRER_2000]}})
    await shop.referrer("alice")
    finance = shop.tokens["finance"]
    other, _ = await create_token(conn, "finance", "other", person="olga")
    fast, shared = ("fast_conversion",), ("shared_device",)
    r1 = await _held(shop, "p1", 0.7, fast)  # flagged, approved: overturned
    r2 = await _held(shop, "p2", 0.7, fast + shared)  # flagged, rejected by finance
    r3 = await _held(shop, "p3", 0.95, fast)  # rejected automatically, overturned, re-rejected
    await _held(shop, "p4", 0.95, shared)  # rejected automatically, stands
    await _held(shop, "p5", 0.7, shared)  # flagged, awaiting finance
    await _held(shop, "p6", 0.1, fast)  # approved automatically: never held
    assert (await _post(shop, r1, "approve", finance))[0] == 200
    assert (await _post(shop, r2, "reject", finance))[0] == 200
    assert (await _post(shop, r3, "approve", finance))[0] == 200
    assert (await _post(shop, r3, "reject", other))[0] == 200
    resp = await shop.client.get("/api/v1/reports/decisions?program=acme",
                                 headers=auth(shop.tokens["viewer"]))
    assert resp.status == 200
    body = await resp.json()
    by_code = {r.pop("code"): r for r in body["reasons"]}
    assert by_code == {
        "fast_conversion": {"flagged": 2, "rejected": 1, "held": 3, "awaiting": 0, "decided": 3,
                            "overturned": 2, "overturn_rate": round(2 / 3, 6),
                            "money": {"held": {"USD": 6000}, "overturned": {"USD": 4000}}},
        "shared_device": {"flagged": 2, "rejected": 1, "held": 3, "awaiting": 1, "decided": 2,
                          "overturned": 0, "overturn_rate": 0.0,
                          "money": {"held": {"USD": 6000}, "overturned": {"USD": 0}}},
    }
    assert body["total"] == {"flagged": 3, "rejected": 2, "held": 5, "awaiting": 1,
                             "decided": 4, "overturned": 2, "overturn_rate": 0.5,
                             "money": {"held": {"USD": 10000}, "overturned": {"USD": 4000}}}
    assert body["program"] == "acme"
    for path, status in (("/api/v1/reports/decisions", 422),
                         ("/api/v1/reports/decisions?program=nope", 404)):
        assert (await shop.client.get(path, headers=auth(finance))).status == status
    assert (await shop.client.get("/api/v1/reports/decisions?program=acme",
                                  headers=auth(shop.tokens["integration"]))).status == 403


async def test_rejecting_an_approved_reward_during_an_export_is_a_409(
    open_shop: ShopFactory, conn: asyncpg.Connection, dsn: str,
) -> None:
    """An export holds the payouts lock, then waits for the approved rewards' rows: a
    rejection of an approved reward meanwhile is refused rather than risk a deadlock."""
    shop = await open_shop({"hold_days": 0, "reward": {"rules": [REFERRER_2000]}})
    await shop.referrer("alice")
    rid = await _held(shop, "p1", 0.1)
    assert (await shop.rewards())["p1/alice"]["status"] == "approved"
    exporter = await asyncpg.connect(dsn)
    try:
        async with exporter.transaction():
            await exporter.execute("SELECT pg_advisory_xact_lock($1)", PAYOUT_LOCK)
            status, body = await _post(shop, rid, "reject", shop.tokens["finance"])
            assert status == 409 and "export" in body["error"]["message"]
    finally:
        await exporter.close()
    assert await _balance(conn) == 2000
    assert (await _post(shop, rid, "reject", shop.tokens["finance"]))[0] == 200
    assert await _balance(conn) == 0
