"""POST /api/v1/conversions: signatures, idempotency and validation."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from tests.helpers import SECRET, ClientFactory, auth, make_link
from tests.shop import Shop
from tracker.finance.clearance import release
from tracker.identity import canonical_email, email_hash
from tracker.intake.conversions import parse_conversion
from tracker.intake.queries import store_conversions
from tracker.privacy import erase_customer
from tracker.programs.queries import names, reward_names
from tracker.signing import program_signing_secret

Client = TestClient[web.Request, web.Application]


def purchase(**extra: Any) -> dict[str, Any]:
    return {"program": "acme", "event_id": "ord-1", "type": "purchase", "customer_id": "c-9",
            "amount": 4999, "currency": "EUR", **extra}


def signed(body: bytes, secret: str, stamp: int | None = None) -> dict[str, str]:
    stamp = int(time.time()) if stamp is None else stamp
    mac = hmac.new(secret.encode(), f"{stamp}.".encode() + body, hashlib.sha256).hexdigest()
    return {"X-Refguard-Signature": f"t={stamp},v1={mac}", "Content-Type": "application/json"}


async def test_signed_conversion_is_accepted_and_bad_signatures_are_401(
    client: Client, tokens: dict[str, str]
) -> None:
    await make_link(client, tokens)
    resp = await client.get("/api/v1/programs/acme", headers=auth(tokens["admin"]))
    secret = (await resp.json())["signing_secret"]
    # Random per program (issue 12 item 18), no longer derived from the slug.
    assert len(secret) == 64 and secret != program_signing_secret(SECRET, "acme")
    resp = await client.get("/api/v1/programs/acme", headers=auth(tokens["viewer"]))
    assert "signing_secret" not in await resp.json()
    body = json.dumps(purchase()).encode()
    cases = {
        "tampered body": (body.replace(b"4999", b"9999"), signed(body, secret)),
        "wrong key": (body, signed(body, "not-the-secret")),
        "old timestamp": (body, signed(body, secret, int(time.time()) - 400)),
        "future timestamp": (body, signed(body, secret, int(time.time()) + 400)),
        "missing header": (body, {"Content-Type": "application/json"}),
        "garbage header": (body, {"X-Refguard-Signature": "nonsense"}),
        "unknown program": (json.dumps(purchase(program="other")).encode(),
                            signed(json.dumps(purchase(program="other")).encode(), secret)),
    }
    for name, (data, headers) in cases.items():
        resp = await client.post("/api/v1/conversions", data=data, headers=headers)
        assert resp.status == 401, name
        assert (await resp.json())["error"]["code"] == "unauthorized"
    resp = await client.post("/api/v1/conversions", data=body, headers=signed(body, secret))
    assert resp.status == 201
    answer = await resp.json()
    assert (answer["event_id"], answer["amount"], answer["currency"]) == ("ord-1", 4999, "EUR")


async def test_idempotency_same_body_200_other_body_409(
    client: Client, tokens: dict[str, str], conn: asyncpg.Connection
) -> None:
    await make_link(client, tokens)
    headers = auth(tokens["integration"])
    first = await client.post("/api/v1/conversions", json=purchase(), headers=headers)
    again = await client.post("/api/v1/conversions", data=json.dumps(purchase(), indent=2),
                              headers=headers)
    assert (first.status, again.status) == (201, 200)
    assert await first.json() == await again.json()
    other = await client.post("/api/v1/conversions", json=purchase(amount=1), headers=headers)
    assert other.status == 409
    assert await conn.fetchval("SELECT count(*) FROM conversions") == 1


async def test_concurrent_identical_posts_store_exactly_one(
    client: Client, tokens: dict[str, str], conn: asyncpg.Connection
) -> None:
    await make_link(client, tokens)
    headers = auth(tokens["integration"])
    body = purchase(event_id="race")
    responses = await asyncio.gather(*(
        client.post("/api/v1/conversions", json=body, headers=headers) for _ in range(20)))
    statuses = sorted(r.status for r in responses)
    assert statuses == [200] * 19 + [201]
    answers = {json.dumps(await r.json(), sort_keys=True) for r in responses}
    assert len(answers) == 1
    assert await conn.fetchval("SELECT count(*) FROM conversions WHERE event_id = 'race'") == 1


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"type": "gift"}, "type"),
        ({"amount": -1}, "amount"),
        ({"amount": 1.5}, "amount"),
        ({"amount": True}, "amount"),
        ({"currency": "euro"}, "currency"),
        ({"occurred_at": "yesterday"}, "occurred_at"),
        ({"occurred_at": "2026-01-01T00:00:00"}, "occurred_at"),
        ({"occurred_at": (datetime.now(UTC) + timedelta(days=1)).isoformat()},
         "occurred_at"),
        ({"click_id": "not-a-uuid"}, "click_id"),
        ({"customer_id": "x" * 129}, "customer_id"),
        ({"event_id": ""}, "event_id"),
        ({"ip": "300.1.1.1"}, "ip"),
        ({"referral_code": "no spaces"}, "referral_code"),
        ({"extra": 1}, "extra"),
        ({"email": "nope"}, "email"),
        ({"customer_name": ""}, "customer_name"),
        ({"customer_name": "  "}, "customer_name"),
        ({"customer_name": "x" * 201}, "customer_name"),
        ({"customer_name": "a\u0000b"}, "customer_name"),
        ({"customer_name": 7}, "customer_name"),
    ],
)
async def test_bad_conversions_are_422(client: Client, tokens: dict[str, str],
                                       change: dict[str, Any], field: str) -> None:
    await make_link(client, tokens)
    body = {k: v for k, v in purchase(**change).items() if v is not None}
    resp = await client.post("/api/v1/conversions", json=body,
                             headers=auth(tokens["integration"]))
    assert resp.status == 422, change
    assert (await resp.json())["error"]["field"] == field


async def test_conversion_auth_and_unknown_program(client: Client, tokens: dict[str, str]) -> None:
    await make_link(client, tokens)
    resp = await client.post("/api/v1/conversions", json=purchase())
    assert resp.status == 401
    resp = await client.post("/api/v1/conversions", json=purchase(),
                             headers=auth(tokens["finance"]))
    assert resp.status == 403
    resp = await client.post("/api/v1/conversions", json=purchase(program="ghost"),
                             headers=auth(tokens["integration"]))
    assert resp.status == 404
    resp = await client.post("/api/v1/conversions", data=b"{oops",
                             headers=auth(tokens["integration"]))
    assert resp.status == 400


@pytest.mark.parametrize(("address", "mailbox"), [
    ("Jo.Doe+promo@GoogleMail.com ", "jodoe@gmail.com"),
    ("j.o.doe@gmail.com", "jodoe@gmail.com"),
    ("jo.doe+a+b@example.org", "jo.doe@example.org"),  # dots matter outside Gmail
    ("+tag@example.org", "+tag@example.org"),  # nothing before the tag: kept whole
    ("no-at-sign", "no-at-sign"),
])
def test_an_email_alias_reaches_the_same_mailbox(address: str, mailbox: str) -> None:
    assert canonical_email(address) == mailbox
    assert email_hash(b"k" * 32, address) == email_hash(b"k" * 32, mailbox)
    assert email_hash(b"k" * 32, address) != email_hash(b"k" * 32, "someone.else@gmail.com")


# -- display names (issue 14) -------------------------------------------------------------------


async def _customer_name(conn: asyncpg.Connection, customer: str) -> str | None:
    name: str | None = await conn.fetchval(
        "SELECT name FROM customer_names WHERE customer_id = $1", customer)
    return name


async def test_a_conversion_names_its_customer_and_the_latest_name_is_kept(
    client: Client, tokens: dict[str, str], conn: asyncpg.Connection
) -> None:
    await make_link(client, tokens)
    headers = auth(tokens["integration"])
    now = datetime.now(UTC)
    at = [(now - timedelta(days=d)).isoformat() for d in (3, 2, 1)]
    first = purchase(event_id="n-1", customer_name=" Dana Ölund ", occurred_at=at[1])
    assert (await client.post("/api/v1/conversions", json=first, headers=headers)).status == 201
    assert await _customer_name(conn, "c-9") == "Dana Ölund"
    # The same event again: 200; the same event under another name is another body: 409.
    assert (await client.post("/api/v1/conversions", json=first, headers=headers)).status == 200
    resp = await client.post("/api/v1/conversions", json=first | {"customer_name": "D. Ölund"},
                             headers=headers)
    assert resp.status == 409
    assert await _customer_name(conn, "c-9") == "Dana Ölund"
    # An older event (an import of history) does not overwrite a newer name; a newer one does;
    # one without a name leaves it.
    older = purchase(event_id="n-0", customer_name="Dana O.", occurred_at=at[0])
    assert (await client.post("/api/v1/conversions", json=older, headers=headers)).status == 201
    assert await _customer_name(conn, "c-9") == "Dana Ölund"
    newer = purchase(event_id="n-2", customer_name="Dana Berg", occurred_at=at[2])
    assert (await client.post("/api/v1/conversions", json=newer, headers=headers)).status == 201
    plain = purchase(event_id="n-3")
    assert (await client.post("/api/v1/conversions", json=plain, headers=headers)).status == 201
    assert await _customer_name(conn, "c-9") == "Dana Berg"
    assert await conn.fetchval("SELECT count(*) FROM customer_names") == 1


async def test_imported_conversions_name_their_customers_latest_first(
    client: Client, tokens: dict[str, str], conn: asyncpg.Connection
) -> None:
    await make_link(client, tokens)
    program_id = await conn.fetchval("SELECT id FROM programs WHERE slug = 'acme'")
    now = datetime.now(UTC)

    def line(event: str, customer: str, days_ago: int, name: str | None) -> Any:
        body = purchase(event_id=event, customer_id=customer,
                        occurred_at=(now - timedelta(days=days_ago)).isoformat())
        if name is not None:
            body["customer_name"] = name
        return (program_id, parse_conversion(body, require_time=True), None)

    batch = [line("i-1", "k1", 5, "Old Name"), line("i-2", "k1", 1, "New Name"),
             line("i-3", "k1", 3, "Middle Name"), line("i-4", "k2", 2, None),
             line("i-5", "k3", 2, "Kim"), line("i-5", "k3", 2, "Kim (a repeat)")]
    assert await store_conversions(conn, batch) == ["created"] * 5 + ["conflict"]
    got = {r["customer_id"]: r["name"] for r in await conn.fetch(
        "SELECT customer_id, name FROM customer_names")}
    assert got == {"k1": "New Name", "k3": "Kim"}
    # Again: nothing is created, nothing renamed.
    assert await store_conversions(conn, [line("i-3", "k1", 3, "Middle Name")]) == ["existing"]
    assert await _customer_name(conn, "k1") == "New Name"


async def test_names_are_answered_for_rewards_and_erased_with_the_person(
    aiohttp_client: ClientFactory, tmp_path: Path, dsn: str, tokens: dict[str, str],
    conn: asyncpg.Connection,
) -> None:
    shop = await Shop.open(aiohttp_client, tmp_path, dsn, tokens, conn, {
        "hold_days": 0, "reward": {"currency": "USD", "rules": [
            {"beneficiary": "referrer", "on": "purchase", "flat": 2000}]}})
    await shop.referrer("alice")
    await shop.referrer("bob")
    headers = auth(tokens["integration"])
    resp = await shop.client.post("/api/v1/referrers", headers=headers, json={
        "program": "acme", "external_id": "alice", "name": "Alice Referrer"})
    assert resp.status == 200
    cid = await shop.click("alice")
    await shop.settle_clicks()
    resp = await shop.client.post("/api/v1/conversions", headers=headers, json={
        "program": "acme", "event_id": "o-1", "type": "purchase", "customer_id": "carl",
        "amount": 5000, "currency": "USD", "click_id": cid, "customer_name": "Carl Customer"})
    assert resp.status == 201
    # bob has no name of his own but bought as a customer under one: one id space.
    resp = await shop.client.post("/api/v1/conversions", headers=headers, json={
        "program": "acme", "event_id": "o-2", "type": "purchase", "customer_id": "bob",
        "amount": 100, "currency": "USD", "customer_name": "Bob Buyer"})
    assert resp.status == 201
    await release(conn)
    program_id = await conn.fetchval("SELECT id FROM programs WHERE slug = 'acme'")
    got = await names(conn, program_id, ["alice", "bob", "nobody"], ["carl", "alice", "zed"])
    assert got.referrers == {"alice": "Alice Referrer", "bob": "Bob Buyer"}
    assert got.customers == {"carl": "Carl Customer", "alice": "Alice Referrer"}
    reward_id = await conn.fetchval("SELECT id FROM rewards")
    assert await reward_names(conn, [reward_id]) == {
        reward_id: ("Alice Referrer", "Carl Customer")}
    listed = await shop.client.get("/api/v1/rewards", headers=auth(tokens["finance"]))
    [item] = (await listed.json())["items"]
    assert (item["referrer_name"], item["customer_name"]) == ("Alice Referrer", "Carl Customer")
    # Erasure removes the name in both roles.
    await erase_customer(conn, program_id, "carl", "admin:test")
    await erase_customer(conn, program_id, "alice", "admin:test")
    assert await reward_names(conn, [reward_id]) == {reward_id: (None, None)}
    assert await conn.fetchval("SELECT name FROM referrers WHERE external_id = 'alice'") is None
    assert await _customer_name(conn, "carl") is None
    assert await _customer_name(conn, "bob") == "Bob Buyer"


async def test_a_refund_names_its_purchases_customer_and_no_more_than_is_left(
    client: Client, tokens: dict[str, str], conn: asyncpg.Connection,
) -> None:
    """DESIGN section 7: a refund names the customer of the purchase it reverses; and refunds
    of one purchase never add up to more than it (each over the rest is a 422)."""
    await make_link(client, tokens, referrer="alice", code="al")
    headers = auth(tokens["integration"])

    async def post(event: str, **extra: Any) -> tuple[int, dict[str, Any]]:
        body = {"program": "acme", "event_id": event, "type": "refund", "customer_id": "c-9",
                "amount": 1000, "currency": "EUR", "original_event_id": "ord-1", **extra}
        resp = await client.post("/api/v1/conversions", json=body, headers=headers)
        answer: dict[str, Any] = await resp.json()
        return resp.status, answer

    status, body = await post("r0")
    assert status == 422 and body["error"]["field"] == "original_event_id"  # not reported yet
    assert (await client.post("/api/v1/conversions", json=purchase(),
                              headers=headers)).status == 201
    status, body = await post("r1", customer_id="someone-else")
    assert status == 422 and body["error"]["field"] == "customer_id"
    assert "customer" in body["error"]["message"]
    status, body = await post("r2", currency="USD")
    assert status == 422 and body["error"]["field"] == "currency"
    assert (await post("r3", amount=3000))[0] == 201
    assert (await post("r3", amount=3000))[0] == 200  # the same body again: idempotent
    status, body = await post("r4", amount=2000, type="chargeback")
    assert status == 422 and body["error"]["field"] == "amount"
    assert "1999" in body["error"]["message"]
    assert (await post("r5", amount=1999, type="chargeback"))[0] == 201
    assert (await post("r6", amount=1))[0] == 422
    assert (await post("r7", original_event_id="r3"))[0] == 422  # a refund is no purchase
    assert await conn.fetchval("SELECT count(*) FROM conversions WHERE type IN "
                               "('refund', 'chargeback')") == 2
    # Concurrent refunds of what is left: exactly one fits.
    await client.post("/api/v1/conversions", json=purchase(event_id="ord-2", amount=1000),
                      headers=headers)
    results = await asyncio.gather(*(post(f"x{i}", original_event_id="ord-2")
                                     for i in range(3)))
    assert sorted(s for s, _ in results) == [201, 422, 422]
