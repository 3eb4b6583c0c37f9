"""Rewards people can receive (issue 14): cash, store credit and coupon codes from uploaded
pools; a code is handed out once, on approval, never twice; only cash is ever paid out."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from tests.helpers import ClientFactory, auth
from tests.shop import Shop, ShopFactory
from tracker.auth import create_token
from tracker.errors import Conflict
from tracker.finance.clearance import release
from tracker.finance.ledger import decide
from tracker.finance.payouts import export_payouts
from tracker.scoring.credits import attribute_pending
from tracker.scoring.risk import scan

CASH = {"beneficiary": "referrer", "on": "purchase", "flat": 2000}
CREDIT = {"beneficiary": "referrer", "on": "purchase", "flat": 1500, "kind": "credit"}
COUPON = {"beneficiary": "referee", "on": "purchase", "flat": 1000, "kind": "coupon",
          "pool": "spring"}




async def _purchase(shop: Shop, event: str, score: float = 0.0) -> None:
    """A purchase of alice's referee (customer cust-<event>), scanned with risk `score`, then
    cleared."""
    await shop.buy("alice", event, f"cust-{event}")
    await attribute_pending(shop.conn)
    await scan(shop.conn, incremental=True)
    await shop.conn.execute(
        """UPDATE conversion_risk SET score = $2, reasons = $3::jsonb FROM conversions c
           WHERE c.program_id = conversion_risk.program_id
             AND c.id = conversion_risk.conversion_id AND c.event_id = $1""",
        event, score, json.dumps([{"code": "fast_conversion", "message": "a reason",
                                   "value": 2.0, "threshold": 10.0, "weight": score}]))
    await release(shop.conn)


async def _upload(shop: Shop, pool: str, codes: Any, role: str = "integration"
                  ) -> tuple[int, dict[str, Any]]:
    resp = await shop.client.post(f"/api/v1/programs/{shop.program}/coupons",
                                  json={"pool": pool, "codes": codes},
                                  headers=auth(shop.tokens[role]))
    answer: dict[str, Any] = await resp.json()
    return resp.status, answer


async def _counts(shop: Shop, pool: str = "spring") -> dict[str, Any]:
    resp = await shop.client.get(f"/api/v1/programs/{shop.program}/coupons?pool={pool}",
                                 headers=auth(shop.tokens["viewer"]))
    assert resp.status == 200, await resp.text()
    items: list[dict[str, Any]] = (await resp.json())["items"]
    return items[0]


async def _codes(conn: asyncpg.Connection) -> dict[str, int | None]:
    return {r["code"]: r["reward_id"] for r in await conn.fetch(
        "SELECT code, reward_id FROM coupon_codes ORDER BY id")}


async def test_rule_kinds_are_validated(aiohttp_client: ClientFactory, tmp_path: Path, dsn: str,
                                        tokens: dict[str, str],
                                        conn: asyncpg.Connection) -> None:
    shop = await Shop.open(aiohttp_client, tmp_path, dsn, tokens, conn,
                           {"reward": {"rules": [CASH, CREDIT, COUPON]}})
    bad: list[tuple[dict[str, Any], str]] = [
        ({"rules": [{**CASH, "kind": "points"}]}, "reward.rules[0].kind"),
        ({"rules": [{**CASH, "kind": "coupon"}]}, "reward.rules[0].pool"),
        ({"rules": [{**COUPON, "pool": "Not A Slug"}]}, "reward.rules[0].pool"),
        ({"rules": [{**CREDIT, "pool": "spring"}]}, "reward.rules[0].pool"),
        ({"rules": [{**CASH, "kinds": "cash"}]}, "reward.rules[0].kinds"),
        ({"rules": [], "variants": [{"name": "a", "rules": [{**CASH, "kind": 3}]}]},
         "reward.variants[0].rules[0].kind"),
    ]
    for i, (reward, named) in enumerate(bad):
        resp = await shop.client.post("/api/v1/programs", json={
            "slug": f"bad{i}", "name": "Bad", "destination_domains": ["acme.test"],
            "settings": {"reward": reward}}, headers=auth(tokens["admin"]))
        assert resp.status == 422, (reward, await resp.text())
        assert named in (await resp.json())["error"]["message"], reward
    resp = await shop.client.post("/api/v1/programs", json={
        "slug": "variants", "name": "V", "destination_domains": ["acme.test"],
        "settings": {"reward": {"variants": [{"name": "a", "rules": [COUPON]},
                                             {"name": "b", "rules": [CREDIT]}]}}},
        headers=auth(tokens["admin"]))
    assert resp.status == 201, await resp.text()


async def test_upload_and_counts(open_shop: ShopFactory) -> None:
    shop = await open_shop({"reward": {"rules": [COUPON]}})
    status, answer = await _upload(shop, "spring", ["A-1", "A-2", "A-2", "B 3"])
    assert status == 200, answer
    assert answer == {"program": "acme", "pool": "spring", "added": 3, "already": 0,
                           "available": 3, "assigned": 0}
    status, answer = await _upload(shop, "spring", ["A-1", "C-4"], role="admin")
    assert (status, answer["added"], answer["already"], answer["available"]) == (200, 1, 1, 4)
    # Counts, never codes, to every reader.
    for role in ("viewer", "finance", "integration", "admin"):
        resp = await shop.client.get("/api/v1/programs/acme/coupons",
                                     headers=auth(shop.tokens[role]))
        assert resp.status == 200
        assert await resp.json() == {"program": "acme", "items": [
            {"pool": "spring", "available": 4, "assigned": 0}]}
    assert await _counts(shop, "autumn") == {"pool": "autumn", "available": 0, "assigned": 0}
    # Only admin and integration upload; bad bodies are 422 naming the field.
    assert (await _upload(shop, "spring", ["X"], role="viewer"))[0] == 403
    assert (await _upload(shop, "spring", ["X"], role="finance"))[0] == 403
    for pool, codes, field in (("Spring!", ["X"], "pool"), ("spring", [], "codes"),
                               ("spring", ["x" * 65], "codes"), ("spring", [""], "codes"),
                               ("spring", ["a\nb"], "codes"), ("spring", [" pad"], "codes"),
                               ("spring", [7], "codes"), ("spring", "X", "codes"),
                               ("spring", ["c"] * 10_001, "codes")):
        status, answer = await _upload(shop, pool, codes)
        assert status == 422, (pool, codes[:2])
        assert answer["error"]["field"] == field
    resp = await shop.client.get("/api/v1/programs/nope/coupons",
                                 headers=auth(shop.tokens["viewer"]))
    assert resp.status == 404
    status, answer = await _upload(shop, "big", [f"code-{i}" for i in range(10_000)])
    assert (status, answer["added"]) == (200, 10_000)


async def test_a_coupon_reward_gets_one_code_once(open_shop: ShopFactory,
                                                  conn: asyncpg.Connection) -> None:
    shop = await open_shop({"hold_days": 0, "reward": {"rules": [COUPON]}})
    await shop.referrer("alice")
    await _upload(shop, "spring", ["FIRST", "SECOND", "THIRD"])
    await _purchase(shop, "p1")
    reward = (await shop.rewards())["p1/cust-p1"]
    assert (reward["status"], reward["kind"]) == ("approved", "coupon")
    rid = reward["id"]
    assert await _codes(conn) == {"FIRST": rid, "SECOND": None, "THIRD": None}
    # No ledger money for a coupon: it is never paid out.
    assert await conn.fetchval("SELECT count(*) FROM ledger_entries") == 0
    # Finance and admins see the code; viewers see the kind only.
    for role, shown in (("finance", True), ("admin", True), ("viewer", False)):
        resp = await shop.client.get(f"/api/v1/rewards/{rid}", headers=auth(shop.tokens[role]))
        one = await resp.json()
        assert one["kind"] == "coupon"
        assert ("coupon_code" in one) is shown and one.get("coupon_code", "FIRST") == "FIRST"
        resp = await shop.client.get("/api/v1/rewards", headers=auth(shop.tokens[role]))
        listed = (await resp.json())["items"][0]
        assert listed["kind"] == "coupon" and ("coupon_code" in listed) is shown
    # Overturns back and forth never hand out a second code.
    other, _ = await create_token(conn, "finance", "second", person="bea")
    for action, token in (("reject", shop.tokens["finance"]), ("approve", other),
                          ("reject", other), ("approve", shop.tokens["finance"])):
        resp = await shop.client.post(f"/api/v1/rewards/{rid}/{action}",
                                      json={"reason": "checked"}, headers=auth(token))
        assert resp.status == 200, await resp.text()
        assert (await resp.json())["coupon_code"] == "FIRST"
    assert await _codes(conn) == {"FIRST": rid, "SECOND": None, "THIRD": None}
    assert await _counts(shop) == {"pool": "spring", "available": 2, "assigned": 1}
    # The database itself refuses a second code for the reward.
    with pytest.raises(asyncpg.UniqueViolationError):
        await conn.execute("UPDATE coupon_codes SET reward_id = $1, assigned_at = now() "
                           "WHERE code = 'SECOND'", rid)


async def test_an_empty_pool_keeps_the_reward_waiting(open_shop: ShopFactory,
                                                      conn: asyncpg.Connection) -> None:
    shop = await open_shop({"hold_days": 0, "reward": {"rules": [COUPON]}})
    await shop.referrer("alice")
    # Automatic clearance: the reward stays pending until codes exist.
    await _purchase(shop, "p1")
    assert (await shop.rewards())["p1/cust-p1"]["status"] == "pending"
    # Finance approving a flagged one with an empty pool: 409, nothing changes.
    await _purchase(shop, "p2", score=0.6)
    flagged = (await shop.rewards())["p2/cust-p2"]
    assert flagged["status"] == "flagged"
    resp = await shop.client.post(f"/api/v1/rewards/{flagged['id']}/approve",
                                  json={"reason": "fine"}, headers=auth(shop.tokens["finance"]))
    assert resp.status == 409
    assert "spring" in (await resp.json())["error"]["message"]
    assert (await shop.rewards())["p2/cust-p2"]["status"] == "flagged"
    await _upload(shop, "spring", ["ONLY"])
    summary = await release(conn)
    assert summary.decided["approved"] == 1
    pending = (await shop.rewards())["p1/cust-p1"]
    assert pending["status"] == "approved"
    assert await _codes(conn) == {"ONLY": pending["id"]}
    resp = await shop.client.post(f"/api/v1/rewards/{flagged['id']}/approve",
                                  json={"reason": "fine"}, headers=auth(shop.tokens["finance"]))
    assert resp.status == 409
    await _upload(shop, "spring", ["NEXT"])
    resp = await shop.client.post(f"/api/v1/rewards/{flagged['id']}/approve",
                                  json={"reason": "fine"}, headers=auth(shop.tokens["finance"]))
    assert resp.status == 200
    assert (await resp.json())["coupon_code"] == "NEXT"


async def test_concurrent_approvals_share_out_the_last_code(open_shop: ShopFactory, dsn: str,
                                                            conn: asyncpg.Connection) -> None:
    shop = await open_shop({"hold_days": 0, "reward": {"rules": [COUPON]}})
    await shop.referrer("alice")
    await _purchase(shop, "p1", score=0.6)
    await _purchase(shop, "p2", score=0.6)
    rewards = await shop.rewards()
    ids = [rewards["p1/cust-p1"]["id"], rewards["p2/cust-p2"]["id"]]
    await _upload(shop, "spring", ["LAST"])
    conns = [await asyncpg.connect(dsn) for _ in ids]
    try:
        results = await asyncio.gather(
            *(decide(c, rid, "approve", f"token:{n}:fin", "ok", person=f"p{n}")
              for n, (c, rid) in enumerate(zip(conns, ids, strict=True))),
            return_exceptions=True)
        won = [r for r in results if not isinstance(r, BaseException)]
        lost = [r for r in results if isinstance(r, BaseException)]
        assert len(won) == 1 and len(lost) == 1, results
        assert isinstance(lost[0], Conflict)
        codes = await _codes(conn)
        assert list(codes) == ["LAST"] and codes["LAST"] in ids
    finally:
        for c in conns:
            await c.close()
    statuses = sorted(r["status"] for r in (await shop.rewards()).values())
    assert statuses == ["approved", "flagged"]


async def test_only_cash_is_paid_out(open_shop: ShopFactory, conn: asyncpg.Connection) -> None:
    shop = await open_shop({"hold_days": 0, "webhook_url": "http://127.0.0.1:9/hook",
                            "reward": {"rules": [CASH, CREDIT, COUPON]}},
                           webhook_allow_private=True)
    await shop.referrer("alice")
    await _upload(shop, "spring", ["C1"])
    await _purchase(shop, "p1")
    kinds = {r["kind"]: dict(r) for r in await conn.fetch("SELECT * FROM rewards")}
    assert sorted(kinds) == ["cash", "coupon", "credit"]
    assert {r["status"] for r in kinds.values()} == {"approved"}
    # Only the cash reward earned ledger money.
    assert await conn.fetchval("SELECT sum(amount) FROM ledger_entries") == 2000
    written: list[str] = []
    batch_id, lines = await export_payouts(conn, "test", written.append)
    assert batch_id is not None
    assert [ln.reward_ids for ln in lines] == [(kinds["cash"]["id"],)]
    assert [ln.amount for ln in lines] == [2000]
    after = await conn.fetch("SELECT kind, status FROM rewards")
    assert {r["kind"]: r["status"] for r in after} == {
        "cash": "paid", "credit": "approved", "coupon": "approved"}
    # A second export finds nothing: credit and coupon rewards are never paid out.
    batch_id, lines = await export_payouts(conn, "test", written.append)
    assert (batch_id, lines) == (None, [])
    # The reward.approved events carry the kind (and the coupon's code).
    events = {json.loads(r["payload"])["reward"]["kind"]: json.loads(r["payload"])["reward"]
              for r in await conn.fetch("SELECT payload::text AS payload FROM webhook_outbox "
                                        "WHERE event = 'reward.approved'")}
    assert sorted(events) == ["cash", "coupon", "credit"]
    assert events["coupon"]["coupon_code"] == "C1"
    assert events["credit"]["coupon_code"] is None


async def test_refunded_credit_reward_claws_back_nothing(open_shop: ShopFactory,
                                                        conn: asyncpg.Connection) -> None:
    shop = await open_shop({"hold_days": 0, "reward": {"rules": [CREDIT]}})
    await shop.referrer("alice")
    await _purchase(shop, "p1")
    assert (await shop.rewards())["p1/alice"]["status"] == "approved"
    await shop.convert("r1", "cust-p1", type_="refund", original="p1")
    await release(conn)
    assert (await shop.rewards())["p1/alice"]["status"] == "reversed"
    assert await conn.fetchval("SELECT count(*) FROM ledger_entries") == 0
