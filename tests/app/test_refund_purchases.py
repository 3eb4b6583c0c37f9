"""A refund or chargeback that names only its customer (DESIGN's contract has no
original_event_id: "a refund names the customer of the purchase it reverses") is linked to the
purchase it reverses when it is stored (tracker.intake.queries.resolve_original), by the API and
the import alike, and migration 0035 links the ones stored before; every reader then sees it as
an explicit one: rewards are reversed, fraud's money signals count it."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from pathlib import Path
from typing import Any

import asyncpg

from tests.helpers import auth, insert_link, make_link
from tests.shop import Client, ShopFactory
from tracker.db import load_migrations
from tracker.finance.clearance import release
from tracker.finance.payouts import export_payouts
from tracker.intake.importer import import_conversions
from tracker.scoring.queries import reversed_conversions

REFERRER_2000 = {"beneficiary": "referrer", "on": "purchase", "flat": 2000}




async def _links(conn: asyncpg.Connection) -> dict[str, str | None]:
    """Each refund's or chargeback's original_event_id, by its event id."""
    return {r["event_id"]: r["original_event_id"] for r in await conn.fetch(
        "SELECT event_id, original_event_id FROM conversions "
        "WHERE type IN ('refund', 'chargeback')")}


async def _paid(conn: asyncpg.Connection) -> list[dict[str, str]]:
    written: list[str] = []
    await export_payouts(conn, "test", written.append)
    return list(csv.DictReader(io.StringIO(written[0])))


async def _ledger(conn: asyncpg.Connection) -> list[tuple[str, int]]:
    return [(e["kind"], e["amount"]) for e in await conn.fetch(
        "SELECT kind, amount FROM ledger_entries ORDER BY id")]


async def test_refunds_naming_only_the_customer_reverse_their_purchases_one_each(
    open_shop: ShopFactory, conn: asyncpg.Connection,
) -> None:
    """The latest purchase with money left first: a paid reward is reversed with a clawback,
    an approved one too (its earned money was in the ledger); a repeat answers 200."""
    shop = await open_shop({"hold_days": 0, "reward": {"rules": [REFERRER_2000]}})
    await shop.referrer("alice")
    await shop.buy("alice", "p1", "c1")
    await release(conn)
    assert [b["amount"] for b in await _paid(conn)] == ["2000"]  # p1's reward is paid
    await shop.buy("alice", "p2", "c1")
    await release(conn)
    rewards = await shop.rewards()
    assert (rewards["p1/alice"]["status"], rewards["p2/alice"]["status"]) == ("paid", "approved")

    first = await shop.convert("x1", "c1", type_="refund")  # 5000, all of p2
    assert await shop.convert("x1", "c1", type_="refund", expect=200) == first
    assert await _links(conn) == {"x1": "p2"}
    assert (await release(conn)).reversed == 1
    rewards = await shop.rewards()
    assert (rewards["p1/alice"]["status"], rewards["p2/alice"]["status"]) == ("paid", "reversed")
    assert await _ledger(conn) == [("earned", 2000), ("payout", -2000), ("earned", 2000),
                                   ("clawback", -2000)]

    await shop.convert("x2", "c1", type_="chargeback", amount=None)  # the rest: p1
    assert await _links(conn) == {"x1": "p2", "x2": "p1"}
    assert (await release(conn)).reversed == 1
    assert (await shop.rewards())["p1/alice"]["status"] == "reversed"
    assert (await _ledger(conn))[-1] == ("clawback", -2000)
    program_id = await conn.fetchval("SELECT id FROM programs WHERE slug = 'acme'")
    ids = {r["event_id"]: r["id"] for r in await conn.fetch(
        "SELECT event_id, id FROM conversions WHERE type = 'purchase'")}
    assert await reversed_conversions(conn, program_id) == (
        frozenset({ids["p1"], ids["p2"]}), frozenset({ids["p1"]}))
    assert (await release(conn)).reversed == 0


async def _post(client: Client, tokens: dict[str, str], event: str, type_: str, customer: str,
                amount: int | None = None, **extra: Any) -> tuple[int, dict[str, Any]]:
    body = {"program": "acme", "event_id": event, "type": type_, "customer_id": customer,
            **({} if amount is None else {"amount": amount, "currency": "EUR"}), **extra}
    resp = await client.post("/api/v1/conversions", json=body,
                             headers=auth(tokens["integration"]))
    answer: dict[str, Any] = await resp.json()
    return resp.status, answer


async def test_a_customer_only_refund_is_checked_as_an_explicit_one(
    client: Client, tokens: dict[str, str], conn: asyncpg.Connection,
) -> None:
    """No purchase yet: stored unlinked (201), and a later purchase does not adopt it. Then
    the same checks as for a named original: no more than is left (422), the currency (422);
    never a signup; a trial with an amount is a purchase."""
    await make_link(client, tokens, referrer="alice", code="al")
    assert (await _post(client, tokens, "x0", "refund", "c1", 100))[0] == 201
    assert (await _post(client, tokens, "s1", "signup", "c1"))[0] == 201
    assert (await _post(client, tokens, "x1", "refund", "c1", 100))[0] == 201  # not the signup
    assert (await _post(client, tokens, "p1", "purchase", "c1", 5000))[0] == 201
    assert (await _post(client, tokens, "x2", "refund", "c1", 3000))[0] == 201
    status, body = await _post(client, tokens, "x3", "chargeback", "c1", 2001)
    assert status == 422 and body["error"]["field"] == "amount"
    assert "2000" in body["error"]["message"] and "'p1'" in body["error"]["message"]
    status, body = await _post(client, tokens, "x4", "refund", "c1", 100, currency="USD")
    assert status == 422 and body["error"]["field"] == "currency"
    assert (await _post(client, tokens, "x5", "chargeback", "c1", 2000))[0] == 201
    assert (await _post(client, tokens, "t1", "trial", "c2", 900))[0] == 201
    assert (await _post(client, tokens, "x6", "refund", "c2", 900))[0] == 201
    assert await _links(conn) == {"x0": None, "x1": None, "x2": "p1", "x5": "p1", "x6": "t1"}
    # Two purchases with money left, three concurrent refunds of all of either: one each.
    for event in ("q1", "q2"):
        assert (await _post(client, tokens, event, "purchase", "c3", 1000))[0] == 201
    results = await asyncio.gather(*(_post(client, tokens, f"y{i}", "refund", "c3", 1000)
                                     for i in range(3)))
    assert sorted(s for s, _ in results) == [201, 201, 422]
    assert sorted(str(v) for k, v in (await _links(conn)).items() if k.startswith("y")) == [
        "q1", "q2"]


async def test_imported_refunds_naming_only_the_customer_reverse_earlier_lines(
    conn: asyncpg.Connection, tmp_path: Path,
) -> None:
    """An import's customer-only refund lines are linked to purchases of earlier lines (stored
    first, though they share a batch); one for more than is left is a bad line."""
    await insert_link(conn, program="acme", referrer="alice", code="al", domain="acme.test")

    def line(event: str, type_: str, customer: str, amount: int, at: str) -> str:
        return json.dumps({"program": "acme", "event_id": event, "type": type_,
                           "customer_id": customer, "amount": amount, "currency": "USD",
                           "occurred_at": f"2025-03-0{at}T10:00:00Z"}) + "\n"

    path = tmp_path / "conversions.ndjson"
    path.write_text(line("x0", "refund", "c2", 100, "1")  # no purchase: stored unlinked
                    + line("p1", "purchase", "c1", 5000, "1")
                    + line("p2", "purchase", "c1", 4000, "2")
                    + line("x1", "refund", "c1", 4000, "3")
                    + line("x2", "chargeback", "c1", 5000, "3")
                    + line("x3", "refund", "c1", 1, "4"))
    result = await import_conversions(conn, path, b"k" * 32)
    assert (result.read, result.stored) == (6, 5)
    assert len(result.bad) == 1 and result.bad[0].startswith("conversions.ndjson:6:")
    assert "more than what is left" in result.bad[0]
    assert await _links(conn) == {"x0": None, "x1": "p2", "x2": "p1"}
    again = await import_conversions(conn, path, b"k" * 32)
    assert (again.stored, again.skipped_existing, len(again.bad)) == (0, 5, 1)


async def test_the_migration_links_stored_refunds_and_release_reverses_their_rewards(
    open_shop: ShopFactory, conn: asyncpg.Connection, owner_conn: asyncpg.Connection,
) -> None:
    """Refunds stored unlinked before 0035 (as the code before it stored them) are linked by
    the same rule, in the order they were stored; one in another currency, or of a customer
    without a purchase before it, stays unlinked; the next release reverses the rewards."""
    shop = await open_shop({"hold_days": 0, "reward": {"rules": [REFERRER_2000]}})
    await shop.referrer("alice")
    await shop.buy("alice", "p1", "c1")
    await shop.buy("alice", "p2", "c1")
    await shop.buy("alice", "p3", "c3")
    await release(conn)
    await shop.convert("x1", "c1", type_="refund", amount=5000)
    await shop.convert("x2", "c1", type_="refund", amount=5000)
    await shop.convert("x3", "c2", type_="chargeback")
    await shop.convert("x4", "c3", type_="refund", currency="EUR", expect=422)
    await conn.execute("UPDATE conversions SET original_event_id = NULL")  # stored as before
    await conn.execute(
        """INSERT INTO conversions (program_id, event_id, type, customer_id, amount, currency,
               occurred_at, body_hash)
           SELECT id, 'x4', 'refund', 'c3', 5000, 'EUR', now(), '\\x00'
           FROM programs""")
    assert (await release(conn)).reversed == 0
    [migration] = [m for m in load_migrations() if m.name == "0035_refund_purchases.sql"]
    await owner_conn.execute(migration.sql)
    assert await _links(conn) == {"x1": "p2", "x2": "p1", "x3": None, "x4": None}
    assert (await release(conn)).reversed == 2
    rewards = await shop.rewards()
    assert [rewards[f"p{n}/alice"]["status"] for n in (1, 2, 3)] == [
        "reversed", "reversed", "approved"]
    assert await _ledger(conn) == [("earned", 2000)] * 3 + [("clawback", -2000)] * 2
