"""POST /api/v1/conversions: signatures, idempotency and validation."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from tests.helpers import SECRET, auth, make_link
from tracker.identity import canonical_email, email_hash
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
