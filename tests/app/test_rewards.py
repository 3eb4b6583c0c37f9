"""Rewards: rule arithmetic, holds and release, reversal and clawback, decisions, payouts."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import sys
from fractions import Fraction
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.helpers import auth
from tests.shop import Shop, ShopFactory
from tracker.auth import create_token
from tracker.errors import Conflict
from tracker.finance import queries
from tracker.finance.clearance import ProgramRules, create_rewards, end_holds, release
from tracker.finance.ledger import decide
from tracker.finance.payouts import export_payouts
from tracker.finance.rules import Rate, apportion, cap, split_by_credit
from tracker.scoring.credits import attribute_pending
from tracker.scoring.risk import scan

REFERRER_2000 = {"beneficiary": "referrer", "on": "purchase", "flat": 2000}




# -- arithmetic --------------------------------------------------------------------------------


@given(st.integers(0, 10**9), st.lists(st.floats(0.0, 1.0, allow_nan=False), min_size=1,
                                       max_size=12))
def test_apportion_adds_up_exactly_and_stays_within_a_unit(total: int,
                                                           weights: list[float]) -> None:
    parts = apportion(total, weights)
    assert sum(parts) == total and all(p >= 0 for p in parts)
    whole = sum(Fraction(w) for w in weights)
    if whole:
        for part, w in zip(parts, weights, strict=True):
            exact = total * Fraction(w) / whole
            assert exact - 1 < part < exact + 1


def test_rounding_examples() -> None:
    assert apportion(100, [1, 1, 1]) == [34, 33, 33]  # the tie goes to the first
    assert apportion(2001, [0.5, 0.5]) == [1001, 1000]
    assert apportion(10, [0.7, 0.2, 0.1]) == [7, 2, 1]
    assert apportion(1, [0.3, 0.3, 0.4]) == [0, 0, 1]  # the largest remainder wins
    assert Rate(percent=10).amount(12345) == 1235  # 1234.5 rounds half up
    assert Rate(percent=12.5).amount(999) == 125
    assert Rate(percent=10).amount(None) == 0 and Rate(flat=700).amount(None) == 700
    # Two referrers at different tier rates, half credit each: 1000 + 1500.
    assert split_by_credit([2000, 3000], [0.5, 0.5]) == (2500, [1000, 1500])
    assert split_by_credit([2001, 2001], [0.5, 0.5]) == (2001, [1001, 1000])
    assert cap(3000, 4000, 5000) == 1000 and cap(3000, 6000, 5000) == 0
    assert cap(3000, 10**6, None) == 3000


@pytest.mark.parametrize("rule", [
    {"beneficiary": "referrer", "on": "purchase"},
    {"beneficiary": "referrer", "on": "purchase", "flat": 1, "percent": 2},
    {"beneficiary": "friend", "on": "purchase", "flat": 1},
    {"beneficiary": "referrer", "on": "refund", "flat": 1},
    {"beneficiary": "referrer", "on": "purchase", "flat": -5},
    {"beneficiary": "referrer", "on": "purchase", "percent": 101},
    {**REFERRER_2000, "tiers": [{"after": 0, "flat": 3000}]},
    {**REFERRER_2000, "tiers": [{"after": 5, "percent": 10}]},
    {**REFERRER_2000, "cap_per_day": "lots"},
    {**REFERRER_2000, "months": 0},
    {**REFERRER_2000, "first_only": "yes"},
])
async def test_bad_rules_are_refused(client: Any, tokens: dict[str, str],
                                     rule: dict[str, Any]) -> None:
    resp = await client.post("/api/v1/programs", json={
        "slug": "bad", "name": "Bad", "destination_domains": ["acme.test"],
        "settings": {"reward": {"rules": [rule]}}}, headers=auth(tokens["admin"]))
    assert resp.status == 422
    assert (await resp.json())["error"]["field"] == "reward"


# -- creation under the rules ------------------------------------------------------------------


async def test_an_amount_without_a_currency_is_in_the_programs_currency(
    open_shop: ShopFactory, conn: asyncpg.Connection
) -> None:
    shop = await open_shop({"hold_days": 0, "reward": {"currency": "EUR", "rules": [
        {"beneficiary": "referrer", "on": "purchase", "percent": 10}]}})
    await shop.referrer("alice")
    await shop.buy("alice", "p1", "c1", amount=12345, currency=None)
    await shop.buy("alice", "p2", "c2", amount=20000, currency="EUR")
    await release(conn)
    rewards = await shop.rewards()
    assert (rewards["p1/alice"]["amount"], rewards["p1/alice"]["currency"]) == (1235, "EUR")
    assert (rewards["p2/alice"]["amount"], rewards["p2/alice"]["currency"]) == (2000, "EUR")


async def test_rewards_follow_the_rules(open_shop: ShopFactory, conn: asyncpg.Connection) -> None:
    shop = await open_shop({
        "hold_days": 0, "reward": {"currency": "USD", "rules": [
            {**REFERRER_2000, "first_only": True, "tiers": [{"after": 2, "flat": 3000}],
             "cap_per_day": 5000},
            {"beneficiary": "referee", "on": "signup", "flat": 500},
            {"beneficiary": "referrer", "on": "renewal", "percent": 10, "months": 1}]}})
    await shop.referrer("alice")
    await shop.buy("alice", "s1", "c1", type_="signup", amount=None)
    await shop.buy("alice", "p1", "c1")
    await shop.buy("alice", "p2", "c2")
    await release(conn)
    await shop.buy("alice", "r1", "c1", type_="renewal", amount=12345)
    await shop.buy("alice", "p1b", "c1")  # c1's second purchase: first_only gives nothing
    await shop.buy("alice", "p3", "c3")  # third approved referral: the 3000 tier, but capped
    summary = await release(conn)
    assert summary.created == 3
    rewards = await shop.rewards()
    assert rewards["s1/c1"]["amount"] == 500 and rewards["s1/c1"]["beneficiary"] == "referee"
    assert rewards["p1/alice"]["amount"] == 2000 and rewards["p2/alice"]["amount"] == 2000
    assert rewards["r1/alice"]["amount"] == 1235
    assert "p1b/alice" not in rewards
    p3 = rewards["p3/alice"]
    calc = json.loads(p3["calculation"])
    assert calc["tier_after"] == 2 and calc["whole"] == 3000
    assert p3["amount"] == 1000 and "cap_per_day 5000 reached" in calc["caps"][0]
    assert {r["status"] for r in rewards.values()} == {"approved"}
    # Conversions already rewarded are not rewarded again.
    assert (await release(conn)).created == 0
    assert await conn.fetchval("SELECT count(*) FROM rewards") == len(rewards)


async def test_fractional_credit_splits_the_reward_exactly(
    open_shop: ShopFactory, conn: asyncpg.Connection,
) -> None:
    shop = await open_shop({
        "attribution_model": "linear", "hold_days": 0,
        "reward": {"rules": [{"beneficiary": "referrer", "on": "purchase", "flat": 2001}]}})
    await shop.referrer("alice")
    await shop.referrer("bob")
    await shop.click("alice", person=7)
    cid = await shop.click("bob", person=7)
    await shop.settle_clicks()
    await shop.convert("p1", "c1", click_id=cid)
    await release(conn)
    rewards = await shop.rewards()
    amounts = sorted(r["amount"] for r in rewards.values())
    assert amounts == [1000, 1001] and {r["credit"] for r in rewards.values()} == {0.5}


# -- holds, risk and release -------------------------------------------------------------------


async def _risk(conn: asyncpg.Connection, event: str, score: float) -> None:
    """What a fraud scan would have said of this conversion."""
    reasons = json.dumps([{"code": "fast_conversion", "message": "converted 2.0 s after the "
                           "click", "value": 2.0, "threshold": 10.0, "weight": score}])
    await conn.execute(
        """UPDATE conversion_risk SET score = $2, reasons = $3::jsonb FROM conversions c
           WHERE c.program_id = conversion_risk.program_id
             AND c.id = conversion_risk.conversion_id AND c.event_id = $1""",
        event, score, reasons)


async def _scanned(conn: asyncpg.Connection) -> None:
    await attribute_pending(conn)
    await scan(conn, incremental=True)


async def _program(conn: asyncpg.Connection) -> ProgramRules:
    return ProgramRules.load((await queries.programs(conn, None))[0])


async def test_holds_wait_for_the_refund_window_and_a_scan(
    open_shop: ShopFactory, conn: asyncpg.Connection,
) -> None:
    shop = await open_shop({
        "hold_days": 30, "reward": {"rules": [REFERRER_2000]}})
    await shop.referrer("alice")
    for i in range(5):
        await shop.buy("alice", f"p{i}", f"c{i}")
    # Not yet attributed nor scanned: rewards are made only from attributed conversions.
    await attribute_pending(conn)
    program = await _program(conn)
    assert await create_rewards(conn, program) == 5
    rewards = await shop.rewards()
    assert {r["status"] for r in rewards.values()} == {"pending"}
    occurred = {r["event_id"]: r["occurred_at"] for r in await conn.fetch(
        "SELECT event_id, occurred_at FROM conversions")}
    for key, r in rewards.items():
        held = (r["hold_until"] - occurred[key.split("/")[0]]).total_seconds()
        assert held == 30 * 86400
    # The hold is over (time passes), but no scan has seen the conversions: still pending.
    await conn.execute("UPDATE rewards SET hold_until = now() - interval '1 second'")
    assert await end_holds(conn, program) == {}
    await scan(conn, incremental=True)
    await _risk(conn, "p1", 0.6)
    await _risk(conn, "p2", 0.95)
    await conn.execute("""UPDATE rewards SET hold_until = now() + interval '1 day'
                          WHERE conversion_id = (SELECT id FROM conversions
                                                 WHERE event_id = 'p4')""")
    decided = await end_holds(conn, program)
    assert decided == {"approved": 2, "flagged": 1, "rejected": 1}
    status = {k.split("/")[0]: r["status"] for k, r in (await shop.rewards()).items()}
    assert status == {"p0": "approved", "p1": "flagged", "p2": "rejected", "p3": "approved",
                      "p4": "pending"}
    earned = await conn.fetch("SELECT payee, amount, kind, actor FROM ledger_entries")
    assert sorted((e["payee"], e["amount"], e["kind"]) for e in earned) == [
        ("alice", 2000, "earned")] * 2
    audit = await conn.fetch("SELECT actor, action, reason FROM audit_log "
                             "WHERE object_type = 'reward' ORDER BY id")
    assert sorted(a["action"] for a in audit) == ["reward.approve", "reward.approve",
                                                   "reward.reject"]
    assert all(a["actor"] == "system:clearance" and a["reason"] for a in audit)
    flagged = (await shop.rewards())["p1/alice"]
    assert flagged["risk_score"] == 0.6 and flagged["flagged_at"] is not None
    assert json.loads(flagged["reasons"])[0]["code"] == "fast_conversion"


async def test_reject_action_flag_and_risk_adaptive_holds(
    open_shop: ShopFactory, conn: asyncpg.Connection,
) -> None:
    shop = await open_shop({
        "hold_days": 0, "reject_action": "flag",
        "adaptive_hold": {"risk_extra_days": 10, "clean_after": 2, "clean_hold_days": 0},
        "reward": {"rules": [REFERRER_2000]}})
    await shop.referrer("alice")
    await shop.buy("alice", "p1", "c1")
    await shop.buy("alice", "p2", "c2")
    await _scanned(conn)
    await _risk(conn, "p1", 0.95)
    await release(conn)
    rewards = await shop.rewards()
    # Risky: the hold grows by 10 days instead of a decision now.
    assert rewards["p1/alice"]["status"] == "pending"
    assert json.loads(rewards["p1/alice"]["calculation"])["hold_extended_days"] == 10
    assert rewards["p2/alice"]["status"] == "approved"
    # After the longer hold, a risk above reject_at is flagged for finance, not rejected.
    await conn.execute("UPDATE rewards SET hold_until = now() WHERE status = 'pending'")
    await release(conn)
    assert (await shop.rewards())["p1/alice"]["status"] == "flagged"


async def test_a_clean_record_shortens_the_hold(
    open_shop: ShopFactory, conn: asyncpg.Connection,
) -> None:
    shop = await open_shop({
        "hold_days": 30,
        "adaptive_hold": {"risk_extra_days": 10, "clean_after": 2, "clean_hold_days": 3},
        "reward": {"rules": [REFERRER_2000]}})
    await shop.referrer("alice")
    await shop.buy("alice", "p1", "c1")
    await shop.buy("alice", "p2", "c2")
    await release(conn)
    await conn.execute("UPDATE rewards SET hold_until = now()")
    await release(conn)
    await shop.buy("alice", "p3", "c3")
    await release(conn)
    rewards = await shop.rewards()
    assert [rewards[f"p{i}/alice"]["status"] for i in (1, 2)] == ["approved"] * 2
    p3 = await conn.fetchrow(
        """SELECT r.hold_until - c.occurred_at AS held FROM rewards r JOIN conversions c
           ON c.id = r.conversion_id WHERE c.event_id = 'p3'""")
    assert p3["held"].days == 3


async def test_a_hold_never_ends_before_its_reward_was_made(
    open_shop: ShopFactory, conn: asyncpg.Connection,
) -> None:
    """Imported history: a purchase of 90 days ago is rewarded today. Its 30-day refund window
    is over, so its hold ends when the reward is made, never before ("Hold until" earlier
    than "Created" was the bug)."""
    shop = await open_shop({"hold_days": 30, "reward": {"rules": [REFERRER_2000]}})
    await shop.referrer("alice")
    await shop.buy("alice", "old", "c-old")
    await shop.buy("alice", "new", "c-new")
    await attribute_pending(conn)
    await conn.execute("UPDATE conversions SET occurred_at = now() - interval '90 days' "
                       "WHERE event_id = 'old'")
    assert await create_rewards(conn, await _program(conn)) == 2
    rewards = await shop.rewards()
    old, new = rewards["old/alice"], rewards["new/alice"]
    assert old["hold_until"] == old["created_at"]
    assert (new["hold_until"] - new["created_at"]).days in (29, 30)
    assert all(r["hold_until"] >= r["created_at"] for r in rewards.values())


# -- reversal, clawback and payouts ------------------------------------------------------------


def _csv(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


async def _export(conn: asyncpg.Connection) -> list[dict[str, str]]:
    written: list[str] = []
    await export_payouts(conn, "test", written.append)
    return _csv(written[0])



async def test_a_reward_capped_to_nothing_is_settled_not_left_approved(
    open_shop: ShopFactory, conn: asyncpg.Connection,
) -> None:
    """Alice's daily cap is used up by her first reward, so her second is worth 0: it must
    not wait forever for a payment, though she gets no line of her own in the next batch."""
    shop = await open_shop({"hold_days": 0, "reward": {"rules": [
        {**REFERRER_2000, "cap_per_day": 2000}]}})
    await shop.referrer("alice")
    await shop.referrer("bob")
    await shop.buy("alice", "p1", "c1")
    await release(conn)
    assert [b["beneficiary"] for b in await _export(conn)] == ["alice"]
    await shop.buy("alice", "p2", "c2")
    await shop.buy("bob", "p3", "c3")
    await release(conn)
    rewards = await shop.rewards()
    assert (rewards["p2/alice"]["amount"], rewards["p2/alice"]["status"]) == (0, "approved")
    batch = await _export(conn)
    assert [(b["beneficiary"], b["amount"]) for b in batch] == [("bob", "2000")]
    settled = (await shop.rewards())["p2/alice"]
    assert settled["status"] == "paid" and str(settled["batch_id"]) == batch[0]["batch_id"]
    assert await conn.fetchval(
        "SELECT sum(amount) FROM ledger_entries WHERE payee = 'alice'") == 0
    details = json.loads(await conn.fetchval(
        "SELECT details::text FROM audit_log WHERE action = 'payout.export' ORDER BY id DESC "
        "LIMIT 1"))
    assert details["settled_at_zero"] == 1 and details["rewards"] == 2
    assert await _export(conn) == []

async def test_refunds_reverse_rewards_and_claw_back_paid_money(
    open_shop: ShopFactory, conn: asyncpg.Connection,
) -> None:
    shop = await open_shop({
        "hold_days": 0, "reward": {"rules": [REFERRER_2000]}})
    await shop.referrer("alice")
    await shop.buy("alice", "p1", "c1")
    await release(conn)
    batch = await _export(conn)
    assert [(b["beneficiary"], b["amount"], b["currency"]) for b in batch] == [
        ("alice", "2000", "USD")]
    # A pending reward (its hold is long) is simply reversed by a refund.
    await conn.execute("""UPDATE programs SET settings = settings || '{"hold_days": 30}'""")
    await shop.buy("alice", "p2", "c2")
    await release(conn)
    await shop.convert("x2", "c2", type_="refund", original="p2", amount=5000)
    # The paid one is charged back: reversed, and a negative entry nets the next payout.
    await shop.convert("x1", "c1", type_="chargeback", original="p1", amount=5000)
    summary = await release(conn)
    assert summary.reversed == 2
    rewards = await shop.rewards()
    assert rewards["p1/alice"]["status"] == rewards["p2/alice"]["status"] == "reversed"
    entries = [(e["kind"], e["amount"]) for e in await conn.fetch(
        "SELECT kind, amount FROM ledger_entries ORDER BY id")]
    assert entries == [("earned", 2000), ("payout", -2000), ("clawback", -2000)]
    # Alice owes 2000: her next approved reward pays that back first, and nothing is paid.
    await conn.execute("""UPDATE programs SET settings = settings || '{"hold_days": 0}'""")
    await shop.buy("alice", "p3", "c3")
    await release(conn)
    assert await _export(conn) == []
    await shop.buy("alice", "p4", "c4")
    await release(conn)
    batch = await _export(conn)
    ids = await conn.fetch("SELECT r.id, c.event_id FROM rewards r JOIN conversions c "
                           "ON c.id = r.conversion_id WHERE c.event_id IN ('p3', 'p4') "
                           "ORDER BY r.id")
    assert [(b["beneficiary"], b["amount"], b["reward_ids"]) for b in batch] == [
        ("alice", "2000", ";".join(str(r["id"]) for r in ids))]
    assert await conn.fetchval("SELECT sum(amount) FROM ledger_entries") == 0
    assert (await release(conn)).reversed == 0  # reversal happens once


async def test_the_ledger_is_append_only(owner_conn: asyncpg.Connection) -> None:
    conn = owner_conn  # the trigger holds even for the owner (the application may not try)
    pid = await conn.fetchval("INSERT INTO programs (slug, name, destination_domains) "
                              "VALUES ('l', 'L', '{l.test}') RETURNING id")
    await conn.execute("INSERT INTO ledger_entries (program_id, payee, currency, amount, kind, "
                       "actor) VALUES ($1, 'alice', 'USD', 2000, 'earned', 'test')", pid)
    for sql in ("UPDATE ledger_entries SET amount = 1", "DELETE FROM ledger_entries",
                "TRUNCATE ledger_entries"):
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
            await conn.execute(sql)
    assert await conn.fetchval("SELECT amount FROM ledger_entries") == 2000


async def _approved_rewards(shop: Shop, n: int) -> None:
    for i in range(4):
        await shop.referrer(f"ref{i}")
    for i in range(n):
        await shop.buy(f"ref{i % 4}", f"p{i}", f"c{i}")
    await release(shop.conn)


async def test_two_exports_at_once_never_pay_a_reward_twice(
    open_shop: ShopFactory, conn: asyncpg.Connection, dsn: str,
) -> None:
    shop = await open_shop({
        "hold_days": 0, "reward": {"rules": [REFERRER_2000]}})
    await _approved_rewards(shop, 12)
    first, second = await asyncpg.connect(dsn), await asyncpg.connect(dsn)
    try:
        out: list[list[str]] = [[], []]
        results = await asyncio.gather(export_payouts(first, "a", out[0].append),
                                       export_payouts(second, "b", out[1].append))
    finally:
        await first.close()
        await second.close()
    batches = [_csv(text[0]) for text in out]
    paid = [int(i) for b in batches for line in b for i in line["reward_ids"].split(";")]
    assert len(paid) == len(set(paid)) == 12
    assert sorted(len(b) for b in batches) == [0, 4]  # one batch of four payees, one empty
    assert sorted(r[0] is None for r in results) == [False, True]
    assert await conn.fetchval("SELECT count(*) FROM rewards WHERE status = 'paid'") == 12
    assert await conn.fetchval("SELECT sum(amount) FROM ledger_entries") == 0


async def test_payouts_command(open_shop: ShopFactory, tmp_path: Path, dsn: str) -> None:
    shop = await open_shop({
        "hold_days": 0, "reward": {"rules": [REFERRER_2000]}})
    env = {"REFGUARD_DATABASE_URL": dsn, "REFGUARD_DATA_DIR": str(tmp_path / "cli")}

    async def refguard(*args: str) -> tuple[int, str, str]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tracker", *args, env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await proc.communicate()
        assert proc.returncode is not None
        return proc.returncode, out.decode(), err.decode()

    empty = tmp_path / "empty.csv"
    code, _, _ = await refguard("payouts", "export", "--out", str(empty))
    assert code == 0 and empty.read_text() == (
        "batch_id,beneficiary,amount,currency,reward_ids,program\n")
    code, _, err = await refguard("payouts", "export", "--out", str(tmp_path / "no/such.csv"))
    assert code == 2 and err.count("\n") == 1
    await _approved_rewards(shop, 6)
    code, _, err = await refguard("rewards", "release")
    assert code == 0, err
    # Two exports at once, from two processes: every reward is in exactly one file.
    results = await asyncio.gather(*(refguard("payouts", "export", "--out",
                                              str(tmp_path / f"batch{i}.csv"))
                                     for i in range(2)))
    assert [r[0] for r in results] == [0, 0], results
    lines = [line for i in range(2) for line in _csv((tmp_path / f"batch{i}.csv").read_text())]
    paid = [i for line in lines for i in line["reward_ids"].split(";")]
    assert len(paid) == len(set(paid)) == 6
    assert sum(int(line["amount"]) for line in lines) == 12000
    assert len({line["batch_id"] for line in lines}) == 1
    assert not list(tmp_path.glob(".*.partial"))


# -- finance decisions -------------------------------------------------------------------------


async def _flagged(shop: Shop, n: int, prefix: str = "f") -> list[int]:
    for i in range(n):
        await shop.buy("alice", f"{prefix}{i}", f"{prefix}c{i}")
    await _scanned(shop.conn)
    for i in range(n):
        await _risk(shop.conn, f"{prefix}{i}", 0.7)
    await release(shop.conn)
    return [r["id"] for r in await shop.conn.fetch(
        "SELECT id FROM rewards WHERE status = 'flagged' ORDER BY id")]


async def test_two_concurrent_approvals_one_wins(
    open_shop: ShopFactory, conn: asyncpg.Connection, dsn: str,
) -> None:
    shop = await open_shop({
        "hold_days": 0, "reward": {"rules": [REFERRER_2000]}})
    await shop.referrer("alice")
    [reward] = await _flagged(shop, 1)
    other, _ = await create_token(conn, "finance", "second finance")
    responses = await asyncio.gather(*(
        shop.client.post(f"/api/v1/rewards/{reward}/approve", json={"reason": "known customer"},
                         headers=auth(token)) for token in (shop.tokens["finance"], other)))
    assert sorted(r.status for r in responses) == [200, 409]
    loser = next(r for r in responses if r.status == 409)
    assert (await loser.json())["error"]["reward_status"] == "approved"
    assert await conn.fetchval("SELECT count(*) FROM audit_log WHERE action = 'reward.approve' "
                               "AND object_id = $1", str(reward)) == 1
    assert await conn.fetchval("SELECT count(*) FROM ledger_entries WHERE reward_id = $1",
                               reward) == 1
    # Library level too: of two decisions at once on two connections, exactly one wins.
    [second] = await _flagged(shop, 1, "g")
    a, b = await asyncpg.connect(dsn), await asyncpg.connect(dsn)
    try:
        # Each says what it saw: the slower one is refused, never an unseen overturn.
        outcomes = await asyncio.gather(
            decide(a, second, "approve", "finance:a", "ok", expected_status="flagged"),
            decide(b, second, "reject", "finance:b", "no", expected_status="flagged"),
            return_exceptions=True)
    finally:
        await a.close()
        await b.close()
    assert sorted(type(o).__name__ for o in outcomes) == ["Conflict", "Decision"]


async def test_finance_api_lists_explains_and_decides(
    open_shop: ShopFactory, conn: asyncpg.Connection,
) -> None:
    shop = await open_shop({
        "hold_days": 0, "four_eyes_above": 1500, "reward": {"rules": [REFERRER_2000]}})
    await shop.referrer("alice")
    flagged = await _flagged(shop, 3)
    finance = auth(shop.tokens["finance"])
    exposition = await (await shop.client.get("/metrics")).text()
    assert 'refguard_rewards{status="flagged"} 3.0' in exposition
    assert "refguard_review_queue_size 3.0" in exposition
    listed = await shop.client.get("/api/v1/rewards?status=flagged&program=acme&referrer=alice",
                                   headers=auth(shop.tokens["viewer"]))
    items = (await listed.json())["items"]
    assert [i["id"] for i in items] == flagged
    assert {"id", "program", "referrer", "beneficiary", "conversion", "event_id", "amount",
            "currency", "status", "risk_score", "reasons", "hold_until", "created_at",
            "decided_by", "decided_at"} <= set(items[0])
    assert items[0]["referrer"] == "alice" and items[0]["event_id"] == "f0"
    assert items[0]["hold_until"].endswith("Z")
    page = await shop.client.get("/api/v1/rewards?limit=2", headers=finance)
    body = await page.json()
    assert len(body["items"]) == 2 and body["next"]
    rest = await shop.client.get(f"/api/v1/rewards?limit=2&cursor={body['next']}",
                                 headers=finance)
    assert [i["id"] for i in (await rest.json())["items"]] == flagged[2:]
    detail = await (await shop.client.get(f"/api/v1/rewards/{flagged[0]}",
                                          headers=finance)).json()
    assert detail["reasons"][0]["threshold"] == 10.0
    assert detail["touchpoints"][0]["referrer"] == "alice"
    assert detail["credits"] == [{"referrer": "alice", "model": "last_touch", "credit": 1.0}]
    assert {"id": "referrer:alice", "type": "referrer", "label": "alice"} in \
        detail["graph"]["nodes"]
    assert any(e["kind"] == "referred" and e["source"] == "referrer:alice"
               for e in detail["graph"]["edges"])
    assert detail["history"] == [] and detail["conversion_detail"]["event_id"] == "f0"
    for path, status in (("/api/v1/rewards?status=lost", 422), ("/api/v1/rewards/999999", 404),
                         ("/api/v1/rewards/abc", 404)):
        assert (await shop.client.get(path, headers=finance)).status == status
    # Decisions need a reason and the right state.
    url = f"/api/v1/rewards/{flagged[0]}"
    assert (await shop.client.post(url + "/approve", json={}, headers=finance)).status == 422
    assert (await shop.client.post(url + "/approve", json={"reason": "ok"},
                                   headers=auth(shop.tokens["viewer"]))).status == 403
    # Four eyes: 2000 is above 1500, so the first approval waits for a second person.
    first = await shop.client.post(url + "/approve", json={"reason": "looks fine"},
                                   headers=finance)
    assert first.status == 202
    assert (await first.json())["approvals"] == 1
    again = await shop.client.post(url + "/approve", json={"reason": "still fine"},
                                   headers=finance)
    assert again.status == 409
    other, _ = await create_token(conn, "finance", "second pair of eyes")
    second = await shop.client.post(url + "/approve", json={"reason": "agreed"},
                                    headers=auth(other))
    assert second.status == 200 and (await second.json())["status"] == "approved"
    reject = await shop.client.post(f"/api/v1/rewards/{flagged[1]}/reject",
                                    json={"reason": "ring member"}, headers=finance)
    assert reject.status == 200 and (await reject.json())["decided_by"].endswith("test-finance")
    late = await shop.client.post(f"/api/v1/rewards/{flagged[1]}/approve",
                                  json={"reason": "changed my mind"}, headers=finance)
    assert late.status == 409
    history = (await (await shop.client.get(url, headers=finance)).json())["history"]
    assert [h["action"] for h in history] == ["reward.approve.first", "reward.approve"]
    with pytest.raises(Conflict):
        await decide(conn, flagged[0], "approve", "finance:x", "twice")


async def test_a_refund_and_a_chargeback_of_one_purchase_reverse_it_once(
    open_shop: ShopFactory, conn: asyncpg.Connection,
) -> None:
    shop = await open_shop({"hold_days": 0, "reward": {"rules": [REFERRER_2000]}})
    await shop.referrer("alice")
    await shop.buy("alice", "p1", "c1")
    await release(conn)
    await shop.convert("x1", "c1", type_="refund", original="p1", amount=2000)
    await shop.convert("x2", "c1", type_="chargeback", original="p1", amount=3000)
    assert (await release(conn)).reversed == 1
    assert [(e["kind"], e["amount"]) for e in await conn.fetch(
        "SELECT kind, amount FROM ledger_entries ORDER BY id")] == [
        ("earned", 2000), ("clawback", -2000)]
    assert await conn.fetchval(
        "SELECT count(*) FROM audit_log WHERE action = 'reward.reverse'") == 1
    assert (await release(conn)).reversed == 0
