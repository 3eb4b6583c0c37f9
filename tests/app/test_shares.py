"""Shares and channels (issue 15): POST /api/v1/shares, tracker.asks.shares.record_share (the
only writer of shares; the share page calls it too), links' channel and campaign."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from tests.helpers import auth, make_link
from tracker.asks.shares import ShareInvalid, record_share
from tracker.errors import NotFound

Client = TestClient[web.Request, web.Application]


def share(**extra: Any) -> dict[str, Any]:
    return {"program": "acme", "referrer": "alice", "channel": "whatsapp", **extra}


async def _ask(conn: asyncpg.Connection, customer: str, referrer: str | None,
               trigger: int) -> int:
    """An ask straight into the table (the asks job is another engineer's)."""
    ask_id: int = await conn.fetchval(
        """INSERT INTO asks (program_id, customer_id, referrer_id, trigger_source, trigger_id,
               trigger_type, occurred_at, deadline, status, sent_at)
           SELECT p.id, $1, r.id, 'event', $3, 'nps', now(), now() + interval '1 day', 'sent',
                  now()
           FROM programs p LEFT JOIN referrers r ON r.program_id = p.id AND r.external_id = $2
           WHERE p.slug = 'acme' RETURNING id""", customer, referrer, trigger)
    return ask_id


async def test_a_share_is_recorded_and_answered(
    client: Client, tokens: dict[str, str], conn: asyncpg.Connection
) -> None:
    await make_link(client, tokens)
    headers = auth(tokens["integration"])
    before = datetime.now(UTC)
    resp = await client.post("/api/v1/shares", json=share(), headers=headers)
    assert resp.status == 201, await resp.text()
    answer = await resp.json()
    assert {k: answer[k] for k in ("program", "referrer", "channel", "ask_id", "source")} == {
        "program": "acme", "referrer": "alice", "channel": "whatsapp", "ask_id": None,
        "source": "api"}
    occurred = datetime.fromisoformat(answer["occurred_at"])
    assert before - timedelta(seconds=1) <= occurred <= datetime.now(UTC)  # default: now
    resp = await client.post("/api/v1/shares", headers=headers,
                             json=share(channel="email", occurred_at="2026-02-03T04:05:06+01:00"))
    assert resp.status == 201
    assert (await resp.json())["occurred_at"] == "2026-02-03T03:05:06.000Z"
    # Not idempotent: each report is one share.
    resp = await client.post("/api/v1/shares", json=share(), headers=headers)
    assert resp.status == 201
    rows = await conn.fetch("SELECT channel, source, ask_id FROM shares ORDER BY id")
    assert [(r["channel"], r["source"], r["ask_id"]) for r in rows] == [
        ("whatsapp", "api", None), ("email", "api", None), ("whatsapp", "api", None)]


async def test_a_share_answering_an_ask(
    client: Client, tokens: dict[str, str], conn: asyncpg.Connection
) -> None:
    await make_link(client, tokens)
    await make_link(client, tokens, referrer="bob", code="bob1")
    headers = auth(tokens["integration"])
    alices = await _ask(conn, "alice", "alice", 1)
    # Asked before being a referrer: the ask names the customer, whose id is the external id.
    alices_early = await _ask(conn, "alice", None, 2)
    bobs = await _ask(conn, "bob", "bob", 3)
    for ask_id in (alices, alices_early):
        resp = await client.post("/api/v1/shares", json=share(ask_id=ask_id), headers=headers)
        assert resp.status == 201, await resp.text()
        assert (await resp.json())["ask_id"] == ask_id
    resp = await client.post("/api/v1/shares", json=share(ask_id=bobs), headers=headers)
    assert resp.status == 422
    error = (await resp.json())["error"]
    assert (error["code"], error["field"]) == ("invalid", "ask_id")
    resp = await client.post("/api/v1/shares", json=share(ask_id=bobs + 100), headers=headers)
    assert resp.status == 404
    assert (await resp.json())["error"]["message"] == "ask not found"
    # An ask of another program is unknown in this one.
    resp = await client.post("/api/v1/programs", headers=auth(tokens["admin"]), json={
        "slug": "beta", "name": "Beta", "destination_domains": ["beta.test"]})
    assert resp.status == 201
    resp = await client.post("/api/v1/referrers", headers=headers,
                             json={"program": "beta", "external_id": "alice"})
    assert resp.status == 201
    resp = await client.post("/api/v1/shares", json=share(program="beta", ask_id=alices),
                             headers=headers)
    assert resp.status == 404
    assert await conn.fetchval("SELECT count(*) FROM shares") == 2


async def test_record_share_is_what_the_share_page_calls(conn: asyncpg.Connection) -> None:
    pid = await conn.fetchval("INSERT INTO programs (slug, name, destination_domains) "
                              "VALUES ('acme', 'Acme', '{acme.test}') RETURNING id")
    rid = await conn.fetchval("INSERT INTO referrers (program_id, external_id) "
                              "VALUES ($1, 'alice') RETURNING id", pid)
    at = datetime(2026, 3, 1, 12, tzinfo=UTC)
    recorded = await record_share(conn, pid, rid, "sms", at, "page")
    assert (recorded.program, recorded.referrer, recorded.channel, recorded.source,
            recorded.occurred_at, recorded.ask_id) == ("acme", "alice", "sms", "page", at, None)
    for channel, source in (("SMS", "page"), ("", "page"), ("x" * 33, "page"),
                            ("sms", "email")):
        with pytest.raises(ShareInvalid):
            await record_share(conn, pid, rid, channel, at, source)
    with pytest.raises(NotFound):
        await record_share(conn, pid, rid, "sms", at, "page", 12345)
    assert await conn.fetchval("SELECT count(*) FROM shares") == 1


async def test_share_auth_and_unknowns(client: Client, tokens: dict[str, str]) -> None:
    await make_link(client, tokens)
    assert (await client.post("/api/v1/shares", json=share())).status == 401
    for role in ("finance", "viewer"):
        resp = await client.post("/api/v1/shares", json=share(), headers=auth(tokens[role]))
        assert resp.status == 403, role
    resp = await client.post("/api/v1/shares", json=share(), headers=auth(tokens["admin"]))
    assert resp.status == 201
    headers = auth(tokens["integration"])
    resp = await client.post("/api/v1/shares", json=share(program="ghost"), headers=headers)
    assert resp.status == 404
    resp = await client.post("/api/v1/shares", json=share(referrer="nobody"), headers=headers)
    assert resp.status == 404
    assert (await resp.json())["error"]["message"] == "referrer not found"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"program": None}, "program"),
        ({"program": 5}, "program"),
        ({"referrer": None}, "referrer"),
        ({"referrer": ""}, "referrer"),
        ({"referrer": "x" * 129}, "referrer"),
        ({"referrer": "a\tb"}, "referrer"),
        ({"channel": None}, "channel"),
        ({"channel": "WhatsApp"}, "channel"),
        ({"channel": "e mail"}, "channel"),
        ({"channel": "-x"}, "channel"),
        ({"channel": "x" * 33}, "channel"),
        ({"channel": ["sms"]}, "channel"),
        ({"occurred_at": "soon"}, "occurred_at"),
        ({"occurred_at": "2026-02-03T04:05:06"}, "occurred_at"),
        ({"occurred_at": (datetime.now(UTC) + timedelta(days=2)).isoformat()}, "occurred_at"),
        ({"occurred_at": "1970-01-01T00:00:00Z"}, "occurred_at"),
        ({"ask_id": "1"}, "ask_id"),
        ({"ask_id": 0}, "ask_id"),
        ({"ask_id": -3}, "ask_id"),
        ({"ask_id": 1.5}, "ask_id"),
        ({"ask_id": True}, "ask_id"),
        ({"ask_id": 2**63}, "ask_id"),
        ({"extra": 1}, "extra"),
    ],
)
async def test_bad_shares_are_422_naming_the_field(
    client: Client, tokens: dict[str, str], conn: asyncpg.Connection,
    change: dict[str, Any], field: str,
) -> None:
    await make_link(client, tokens)
    body = {k: v for k, v in share(**change).items() if v is not None}
    resp = await client.post("/api/v1/shares", json=body, headers=auth(tokens["integration"]))
    assert resp.status == 422, (change, await resp.text())
    error = (await resp.json())["error"]
    assert (error["code"], error["field"]) == ("invalid", field)
    assert await conn.fetchval("SELECT count(*) FROM shares") == 0


@pytest.mark.parametrize(("data", "status"), [(b"{oops", 400), (b"[]", 400), (b"7", 400),
                                              (b"[" * 40 + b"]" * 40, 400)])
async def test_malformed_share_bodies_are_400(
    client: Client, tokens: dict[str, str], data: bytes, status: int
) -> None:
    await make_link(client, tokens)
    resp = await client.post("/api/v1/shares", data=data, headers=auth(tokens["integration"]))
    assert resp.status == status


# -- links' channel and campaign ---------------------------------------------------------------


async def test_links_carry_channel_and_campaign(
    client: Client, tokens: dict[str, str], conn: asyncpg.Connection
) -> None:
    plain = await make_link(client, tokens)
    assert (plain["channel"], plain["campaign"]) == (None, None)
    headers = auth(tokens["integration"])
    resp = await client.post("/api/v1/links", headers=headers, json={
        "program": "acme", "referrer": "alice", "code": "al-wa", "channel": "whatsapp",
        "campaign": "Spring sale 2026 — friends"})
    assert resp.status == 201, await resp.text()
    link = await resp.json()
    assert (link["channel"], link["campaign"]) == ("whatsapp", "Spring sale 2026 — friends")
    row = await conn.fetchrow("SELECT channel, campaign FROM links WHERE code = 'al-wa'")
    assert tuple(row) == ("whatsapp", "Spring sale 2026 — friends")
    viewer = auth(tokens["viewer"])
    resp = await client.get("/api/v1/links/al-wa", headers=viewer)
    assert (await resp.json())["channel"] == "whatsapp"
    resp = await client.get("/api/v1/links?program=acme", headers=viewer)
    assert [(x["code"], x["channel"], x["campaign"]) for x in (await resp.json())["items"]] == [
        ("alice1", None, None), ("al-wa", "whatsapp", "Spring sale 2026 — friends")]
    resp = await client.patch("/api/v1/links/al-wa", json={"enabled": False}, headers=headers)
    assert (await resp.json())["campaign"] == "Spring sale 2026 — friends"
    # The redirect still works for a tagged link.
    resp = await client.post("/api/v1/links", headers=headers, json={
        "program": "acme", "referrer": "alice", "code": "al-x", "channel": "x"})
    assert resp.status == 201
    resp = await client.get("/r/al-x", allow_redirects=False)
    assert resp.status == 302


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"channel": "E-Mail"}, "channel"),
        ({"channel": ""}, "channel"),
        ({"channel": "x" * 33}, "channel"),
        ({"channel": "a.b"}, "channel"),
        ({"channel": 3}, "channel"),
        ({"campaign": ""}, "campaign"),
        ({"campaign": "x" * 129}, "campaign"),
        ({"campaign": "a\nb"}, "campaign"),
        ({"campaign": {"name": "x"}}, "campaign"),
    ],
)
async def test_bad_channel_or_campaign_is_422(
    client: Client, tokens: dict[str, str], conn: asyncpg.Connection,
    change: dict[str, Any], field: str,
) -> None:
    await make_link(client, tokens)
    resp = await client.post("/api/v1/links", headers=auth(tokens["integration"]),
                             json={"program": "acme", "referrer": "alice", **change})
    assert resp.status == 422, (change, await resp.text())
    assert (await resp.json())["error"]["field"] == field
    assert await conn.fetchval("SELECT count(*) FROM links") == 1
