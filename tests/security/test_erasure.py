"""Issue 12, item 2: erasure wipes the evidence.

A fraudster refers himself: a second account with his own e-mail, bought from his own address.
The scan holds the reward at a high risk. He then asks the merchant to erase one of the two
accounts (DELETE /api/v1/customers/{id}), hoping the next scan finds nothing and the reward is
approved when its hold ends. It must not be: the stored risk does not drop, the reward waits for
finance with the erasure as a reason, and the evidence the open decision needs is kept until
finance has decided (then it goes too).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import asyncpg
import pytest

from tests.helpers import ClientFactory, auth
from tests.shop import Shop
from tracker.finance.clearance import release
from tracker.scoring.credits import attribute_pending
from tracker.scoring.risk import scan

SETTINGS = {"hold_days": 30, "reject_action": "flag", "reward": {"rules": [
    {"beneficiary": "referrer", "on": "purchase", "flat": 2000}]}}
EMAIL = "mallory@example.com"
HOME = "203.0.113.7"  # the fraudster's address, for both of his accounts
REVIEW_AT = 0.5  # the program's default: at or above, a reward is held for finance


async def _post(shop: Shop, path: str, body: dict[str, Any], role: str = "integration"
                ) -> dict[str, Any]:
    resp = await shop.client.post(path, json=body, headers=auth(shop.tokens[role]))
    assert resp.status in (200, 201), await resp.text()
    answer: dict[str, Any] = await resp.json()
    return answer


async def _self_referral(shop: Shop) -> None:
    """Mallory, a referrer who signed up from home, buys through his own link as `mule`, from
    home and with his own e-mail."""
    await _post(shop, "/api/v1/referrers", {"program": "acme", "external_id": "mallory",
                                            "email": EMAIL})
    await _post(shop, "/api/v1/links", {"program": "acme", "referrer": "mallory",
                                        "code": "mallory"})
    await _post(shop, "/api/v1/conversions", {
        "program": "acme", "event_id": "s0", "type": "signup", "customer_id": "mallory",
        "email": EMAIL, "ip": HOME})
    click = await shop.click("mallory", person=7)
    await shop.settle_clicks()
    await _post(shop, "/api/v1/conversions", {
        "program": "acme", "event_id": "p1", "type": "purchase", "customer_id": "mule",
        "amount": 5000, "currency": "USD", "click_id": click, "email": EMAIL, "ip": HOME})


async def _conversion_risk(conn: asyncpg.Connection, event_id: str) -> float:
    score: float = await conn.fetchval(
        """SELECT k.score FROM conversion_risk k JOIN conversions c
           ON c.program_id = k.program_id AND c.id = k.conversion_id WHERE c.event_id = $1""",
        event_id)
    return score


async def _reward(shop: Shop) -> dict[str, Any]:
    """The reward of the self-referred purchase, as finance's API shows it."""
    resp = await shop.client.get("/api/v1/rewards?program=acme",
                                 headers=auth(shop.tokens["finance"]))
    assert resp.status == 200, await resp.text()
    items = [r for r in (await resp.json())["items"] if r["event_id"] == "p1"]
    assert len(items) == 1, items
    reward: dict[str, Any] = items[0]
    return reward


@pytest.mark.parametrize("erased", [
    "mule",  # the referee account is erased
    "mallory",  # the referrer erases himself
])
async def test_erasing_a_self_referral_never_gets_its_reward_approved(
    aiohttp_client: ClientFactory, tmp_path: Path, dsn: str, tokens: dict[str, str],
    conn: asyncpg.Connection, erased: str,
) -> None:
    shop = await Shop.open(aiohttp_client, tmp_path, dsn, tokens, conn, SETTINGS)
    await _self_referral(shop)
    await attribute_pending(conn)
    await scan(conn, "acme")
    await release(conn)
    held = await _reward(shop)
    assert held["status"] == "pending" and held["risk_score"] >= REVIEW_AT, held
    assert "self_referral" in {r["code"] for r in held["reasons"]}
    risk = await _conversion_risk(conn, "p1")

    # The attack: erase one of the accounts, let a scan run and the hold end.
    resp = await shop.client.delete(f"/api/v1/customers/{erased}?program=acme",
                                    headers=auth(tokens["integration"]))
    assert resp.status == 200, await resp.text()
    await scan(conn, "acme")
    await conn.execute("UPDATE rewards SET hold_until = now() - interval '1 second'")
    await release(conn)

    reward = await _reward(shop)
    assert reward["status"] == "flagged", reward  # waits for finance, never auto-approved
    assert reward["risk_score"] >= held["risk_score"]  # the stored risk did not drop
    assert await _conversion_risk(conn, "p1") >= risk
    reasons = {r["code"]: r for r in reward["reasons"]}
    assert "self_referral" in reasons  # the evidence as it stood
    erasure = reasons["erased_before_clearance"]
    assert erasure["message"] and erasure["value"] == [
        "referee" if erased == "mule" else "referrer"]
    assert await conn.fetchval("SELECT count(*) FROM ledger_entries") == 0

    # The person's address is gone at once; the keyed e-mail hash and visitor links the open
    # decision needs are kept until finance decides, then they go too.
    person = await conn.fetch("SELECT ip, email_hash FROM conversions WHERE customer_id = $1",
                              erased)
    assert person and all(r["ip"] is None and r["email_hash"] is not None for r in person)
    await _post(shop, f"/api/v1/rewards/{reward['id']}/reject",
                {"reason": "self-referral"}, role="finance")
    await release(conn)
    assert await conn.fetchval("SELECT count(*) FROM conversions WHERE customer_id = $1 "
                               "AND email_hash IS NOT NULL", erased) == 0
    assert await conn.fetchval("SELECT count(*) FROM customer_visitors WHERE customer_id = $1",
                               erased) == 0
    assert await conn.fetchval("SELECT email_hash FROM referrers WHERE external_id = $1",
                               erased) is None
    # The next scan finds nothing left to tie the accounts together, and still does not lower
    # the risk: the floor recorded at the erasure holds.
    await scan(conn, "acme")
    assert await _conversion_risk(conn, "p1") >= risk
