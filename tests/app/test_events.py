"""Customers' events (issue 15): POST /api/v1/events by token or signature, idempotent on
(program, event_id); `refguard import --events`; erasure of a customer's growth data."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from tests.helpers import PgServer, auth, create_database, drop_database, insert_link, make_link
from tracker.asks.events import PROPERTIES_MAX_BYTES

Client = TestClient[web.Request, web.Application]


def nps(**extra: Any) -> dict[str, Any]:
    return {"program": "acme", "event_id": "nps-1", "customer_id": "c-9", "type": "nps",
            "occurred_at": "2026-03-01T10:00:00Z", "score": 10,
            "properties": {"survey": "q1", "comment": "love it", "tags": ["fast", "kind"]},
            **extra}


def signed(body: bytes, secret: str, stamp: int | None = None) -> dict[str, str]:
    stamp = int(time.time()) if stamp is None else stamp
    mac = hmac.new(secret.encode(), f"{stamp}.".encode() + body, hashlib.sha256).hexdigest()
    return {"X-Refguard-Signature": f"t={stamp},v1={mac}", "Content-Type": "application/json"}


async def _secret(client: Client, tokens: dict[str, str]) -> str:
    resp = await client.get("/api/v1/programs/acme", headers=auth(tokens["admin"]))
    secret: str = (await resp.json())["signing_secret"]
    return secret


async def test_an_event_is_stored_and_answered_idempotently(
    client: Client, tokens: dict[str, str], conn: asyncpg.Connection
) -> None:
    await make_link(client, tokens)
    headers = auth(tokens["integration"])
    first = await client.post("/api/v1/events", json=nps(), headers=headers)
    assert first.status == 201, await first.text()
    answer = await first.json()
    assert {k: answer[k] for k in ("program", "event_id", "customer_id", "type", "score",
                                   "occurred_at", "properties")} == {
        "program": "acme", "event_id": "nps-1", "customer_id": "c-9", "type": "nps",
        "score": 10.0, "occurred_at": "2026-03-01T10:00:00.000Z",
        "properties": {"survey": "q1", "comment": "love it", "tags": ["fast", "kind"]}}
    # The same body, keys in another order and laid out otherwise: the first answer, 200.
    same = json.dumps(dict(reversed(list(nps().items()))), indent=2)
    again = await client.post("/api/v1/events", data=same, headers=headers)
    assert again.status == 200
    assert await again.json() == answer
    # Another body under the same event id: 409, and nothing changes.
    for change in ({"score": 9}, {"properties": {"survey": "q2"}}, {"type": "review"},
                   {"occurred_at": "2026-03-01T10:00:01Z"}):
        other = await client.post("/api/v1/events", json=nps(**change), headers=headers)
        assert other.status == 409, change
        assert (await other.json())["error"]["code"] == "conflict"
    row = await conn.fetchrow("SELECT customer_id, type, score, properties::text AS p, source, "
                              "asked_at FROM customer_events")
    assert (row["customer_id"], row["type"], row["score"], row["source"], row["asked_at"]) == (
        "c-9", "nps", 10.0, "api", None)
    assert json.loads(row["p"])["tags"] == ["fast", "kind"]
    assert await conn.fetchval("SELECT count(*) FROM customer_events") == 1
    # Without score and properties: null and {}.
    bare = {k: v for k, v in nps(event_id="m-1", type="milestone").items()
            if k not in ("score", "properties")}
    resp = await client.post("/api/v1/events", json=bare, headers=headers)
    assert resp.status == 201
    assert ((await resp.json())["score"], (await resp.json())["properties"]) == (None, {})


async def test_concurrent_identical_events_store_exactly_one(
    client: Client, tokens: dict[str, str], conn: asyncpg.Connection
) -> None:
    await make_link(client, tokens)
    headers = auth(tokens["integration"])
    responses = await asyncio.gather(*(
        client.post("/api/v1/events", json=nps(event_id="race"), headers=headers)
        for _ in range(12)))
    assert sorted(r.status for r in responses) == [200] * 11 + [201]
    assert len({json.dumps(await r.json(), sort_keys=True) for r in responses}) == 1
    assert await conn.fetchval("SELECT count(*) FROM customer_events") == 1


async def test_signed_events_as_conversions_are_signed(
    client: Client, tokens: dict[str, str], conn: asyncpg.Connection
) -> None:
    await make_link(client, tokens)
    secret = await _secret(client, tokens)
    body = json.dumps(nps()).encode()
    other = json.dumps(nps(program="other")).encode()
    cases = {
        "tampered body": (body.replace(b'"score": 10', b'"score": 0'), signed(body, secret)),
        "wrong key": (body, signed(body, "not-the-secret")),
        "old timestamp": (body, signed(body, secret, int(time.time()) - 400)),
        "missing header": (body, {"Content-Type": "application/json"}),
        "garbage header": (body, {"X-Refguard-Signature": "nonsense"}),
        "unknown program": (other, signed(other, secret)),
        "not JSON": (b"{nope", signed(b"{nope", secret)),
    }
    for name, (data, headers) in cases.items():
        resp = await client.post("/api/v1/events", data=data, headers=headers)
        assert resp.status == 401, name
        assert (await resp.json())["error"]["code"] == "unauthorized", name
    assert await conn.fetchval("SELECT count(*) FROM customer_events") == 0
    resp = await client.post("/api/v1/events", data=body, headers=signed(body, secret))
    assert resp.status == 201
    resp = await client.post("/api/v1/events", data=body, headers=signed(body, secret))
    assert resp.status == 200
    # A signed body that is well signed but invalid is told so (after the signature).
    bad = json.dumps(nps(event_id="n2", score="ten")).encode()
    resp = await client.post("/api/v1/events", data=bad, headers=signed(bad, secret))
    assert resp.status == 422 and (await resp.json())["error"]["field"] == "score"
    # A stranger's body is read only so far.
    huge = json.dumps(nps(event_id="n3", properties={"x": "y" * 20000})).encode()
    resp = await client.post("/api/v1/events", data=huge, headers=signed(huge, secret))
    assert resp.status == 413
    # During a rotation's overlap the previous secret is still accepted.
    resp = await client.post("/api/v1/programs/acme/secret/rotate", json={},
                             headers=auth(tokens["admin"]))
    assert resp.status == 200
    late = json.dumps(nps(event_id="n4")).encode()
    resp = await client.post("/api/v1/events", data=late, headers=signed(late, secret))
    assert resp.status == 201


async def test_event_auth_roles_and_unknown_program(
    client: Client, tokens: dict[str, str]
) -> None:
    await make_link(client, tokens)
    assert (await client.post("/api/v1/events", json=nps())).status == 401
    for role in ("finance", "viewer"):
        resp = await client.post("/api/v1/events", json=nps(), headers=auth(tokens[role]))
        assert resp.status == 403, role
    resp = await client.post("/api/v1/events", json=nps(), headers=auth("rg_" + "x" * 43))
    assert resp.status == 401
    resp = await client.post("/api/v1/events", json=nps(event_id="a"),
                             headers=auth(tokens["admin"]))
    assert resp.status == 201
    resp = await client.post("/api/v1/events", json=nps(program="ghost"),
                             headers=auth(tokens["integration"]))
    assert resp.status == 404


def _deep(levels: int) -> dict[str, Any]:
    value: dict[str, Any] = {"leaf": 1}
    for _ in range(levels - 1):
        value = {"k": value}
    return value


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"program": None}, "program"),
        ({"event_id": None}, "event_id"),
        ({"event_id": ""}, "event_id"),
        ({"event_id": "x" * 129}, "event_id"),
        ({"event_id": 7}, "event_id"),
        ({"customer_id": None}, "customer_id"),
        ({"customer_id": "a\nb"}, "customer_id"),
        ({"type": None}, "type"),
        ({"type": "NPS"}, "type"),
        ({"type": "five stars"}, "type"),
        ({"type": "_x"}, "type"),
        ({"type": "x" * 65}, "type"),
        ({"type": ["nps"]}, "type"),
        ({"type": "purchase"}, "type"),
        ({"type": "refund"}, "type"),
        ({"occurred_at": None}, "occurred_at"),
        ({"occurred_at": "yesterday"}, "occurred_at"),
        ({"occurred_at": "2026-01-01T00:00:00"}, "occurred_at"),
        ({"occurred_at": 1767225600}, "occurred_at"),
        ({"occurred_at": "1999-12-31T23:59:59Z"}, "occurred_at"),
        ({"occurred_at": (datetime.now(UTC) + timedelta(hours=1)).isoformat()}, "occurred_at"),
        ({"occurred_at": "9999-12-31T23:59:59-23:59"}, "occurred_at"),
        ({"score": "10"}, "score"),
        ({"score": True}, "score"),
        ({"score": 1e10}, "score"),
        ({"score": -(10**30)}, "score"),
        ({"score": [1]}, "score"),
        ({"properties": []}, "properties"),
        ({"properties": "x"}, "properties"),
        ({"properties": 3}, "properties"),
        ({"properties": _deep(5)}, "properties"),
        ({"properties": {"a": [[[["x"]]]]}}, "properties"),
        ({"properties": {"": 1}}, "properties"),
        ({"properties": {"k" * 65: 1}}, "properties"),
        ({"properties": {"a": "b\u0000c"}}, "properties"),
        ({"properties": {"a\u0000": 1}}, "properties"),
        ({"properties": {"a": "x" * PROPERTIES_MAX_BYTES}}, "properties"),
        ({"properties": {f"k{i}": i for i in range(600)}}, "properties"),
        ({"extra": 1}, "extra"),
    ],
)
async def test_bad_events_are_422_naming_the_field(
    client: Client, tokens: dict[str, str], conn: asyncpg.Connection,
    change: dict[str, Any], field: str,
) -> None:
    await make_link(client, tokens)
    body = {k: v for k, v in nps(**change).items() if v is not None}
    resp = await client.post("/api/v1/events", json=body, headers=auth(tokens["integration"]))
    assert resp.status == 422, (change, await resp.text())
    error = (await resp.json())["error"]
    assert (error["code"], error["field"]) == ("invalid", field)
    assert await conn.fetchval("SELECT count(*) FROM customer_events") == 0


@pytest.mark.parametrize(
    ("data", "status"),
    [
        (b"{oops", 400),
        (b"", 400),
        (b"[1, 2]", 422),
        (b'"text"', 422),
        (b"null", 422),
        (b'{"program": "acme", "event_id": "\\ud800"}', 400),  # a lone surrogate
        (b"[" * 40 + b"]" * 40, 400),  # deeper than any body may be
        (b'{"program": "acme", "event_id": "e", "customer_id": "c", "type": "nps", '
         b'"occurred_at": "2026-03-01T10:00:00Z", "score": NaN}', 422),
        (b'{"program": "acme", "event_id": "e", "customer_id": "c", "type": "nps", '
         b'"occurred_at": "2026-03-01T10:00:00Z", "score": Infinity}', 422),
        (b'{"program": "acme", "event_id": "e", "customer_id": "c", "type": "nps", '
         b'"occurred_at": "2026-03-01T10:00:00Z", "properties": {"x": -Infinity}}', 422),
    ],
)
async def test_malformed_event_bodies_are_4xx(
    client: Client, tokens: dict[str, str], conn: asyncpg.Connection, data: bytes, status: int
) -> None:
    await make_link(client, tokens)
    resp = await client.post("/api/v1/events", data=data, headers=auth(tokens["integration"]))
    assert resp.status == status, (data[:60], await resp.text())
    assert (await resp.json())["error"]["code"] in ("bad_request", "invalid")
    assert await conn.fetchval("SELECT count(*) FROM customer_events") == 0


async def test_properties_at_their_limits_are_taken(
    client: Client, tokens: dict[str, str]
) -> None:
    await make_link(client, tokens)
    near = PROPERTIES_MAX_BYTES - len('{"a":""}')
    for i, properties in enumerate([_deep(4), {"a": "x" * near}, {"k" * 64: "é"},
                                    {"n": 1.5, "b": False, "z": None, "big": 10**40}]):
        resp = await client.post("/api/v1/events",
                                 json=nps(event_id=f"ok-{i}", properties=properties),
                                 headers=auth(tokens["integration"]))
        assert resp.status == 201, (i, await resp.text())
        assert (await resp.json())["properties"] == properties


# -- refguard import --events ------------------------------------------------------------------


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tracker", "import", *args], env=env,
                          capture_output=True, text=True, timeout=300, check=False)


async def test_import_events_reports_bad_lines_and_adds_nothing_twice(
    pg: PgServer, tmp_path: Path
) -> None:
    name = await create_database(pg)
    dsn = pg.uri(name)
    try:
        conn = await asyncpg.connect(dsn)
        try:
            await insert_link(conn, program="acme", referrer="alice", code="al",
                              domain="acme.test")
        finally:
            await conn.close()
        good = [nps(event_id=f"e{i}", customer_id=f"c{i % 3}", score=i % 11) for i in range(7)]
        lines = [json.dumps(x) for x in good[:3]]
        lines += [
            "{broken json",                                              # 4
            json.dumps(nps(event_id="b1", type="purchase")),             # 5
            json.dumps(nps(event_id="b2", program="ghost")),             # 6
            json.dumps(nps(event_id="e0", score=3)),                     # 7: another body
            json.dumps(good[0]),                                         # 8: the same again
            "[1]",                                                       # 9
            "",                                                          # 10 (blank)
            json.dumps(nps(event_id="b3", properties={"a": "\u0000"})),  # 11
            "[" * 100000 + "]" * 100000,                                  # 12
            json.dumps({k: v for k, v in nps(event_id="b4").items() if k != "occurred_at"}),
        ]
        lines += [json.dumps(x) for x in good[3:]]
        events = tmp_path / "events.ndjson"
        events.write_text("\n".join(lines) + "\n")
        conversions = tmp_path / "conversions.ndjson"
        conversions.write_text(json.dumps({
            "program": "acme", "event_id": "o1", "type": "purchase", "customer_id": "c1",
            "amount": 500, "currency": "USD", "occurred_at": "2026-02-01T11:00:00Z"}) + "\n"
            + "[" * 100000 + "]" * 100000 + "\n")  # a bad line, not a crash
        env = {"REFGUARD_DATABASE_URL": dsn, "REFGUARD_DATA_DIR": str(tmp_path / "d"),
               "REFGUARD_SECRET_KEY": "s" * 32}
        first = run(env, "--conversions", str(conversions), "--events", str(events))
        assert first.returncode == 2, first.stderr
        errors = [e for e in first.stderr.splitlines() if e.startswith("events.ndjson:")]
        # (Line errors of parsing come as read, conflicts as their batch is stored.)
        assert sorted(int(e.split(":")[1]) for e in errors) == [4, 5, 6, 7, 9, 11, 12, 13]
        assert "events.ndjson:5: 'purchase' is a conversion" in first.stderr
        assert "events.ndjson:6: unknown program 'ghost'" in first.stderr
        assert "events.ndjson:7: event 'e0' exists with another body" in first.stderr
        assert "events.ndjson:13: occurred_at is required" in first.stderr
        assert "conversions: 2 read, 1 stored" in first.stdout
        assert "conversions.ndjson:2: not valid JSON" in first.stderr
        assert "events: 16 read, 7 stored, 1 already there, 8 bad" in first.stdout
        # Conversions first, then events: both in one command.
        assert first.stdout.index("conversions:") < first.stdout.index("events:")
        conn = await asyncpg.connect(dsn)
        try:
            rows = await conn.fetch("SELECT event_id, customer_id, score, source "
                                    "FROM customer_events ORDER BY event_id")
            assert [(r["event_id"], r["customer_id"], r["score"]) for r in rows] == [
                (g["event_id"], g["customer_id"], float(g["score"])) for g in good]
            assert {r["source"] for r in rows} == {"import"}
        finally:
            await conn.close()
        again = run(env, "--events", str(events))
        assert again.returncode == 2
        assert "events: 16 read, 0 stored, 8 already there, 8 bad" in again.stdout
        clean = tmp_path / "clean.ndjson"
        clean.write_text("\n".join(json.dumps(x) for x in good) + "\n")
        ok = run(env, "--events", str(clean))
        assert ok.returncode == 0, ok.stderr
        assert "events: 7 read, 0 stored, 7 already there, 0 bad" in ok.stdout
        missing = run(env, "--events", str(tmp_path / "nope.ndjson"))
        assert missing.returncode == 2 and missing.stderr.count("\n") == 1
    finally:
        await drop_database(pg, name)


# -- erasure -----------------------------------------------------------------------------------


async def test_erasure_removes_events_and_scores_and_reduces_asks(
    client: Client, tokens: dict[str, str], conn: asyncpg.Connection
) -> None:
    await make_link(client, tokens, referrer="c-9")
    headers = auth(tokens["integration"])
    for i, customer in enumerate(("c-9", "c-9", "other")):
        resp = await client.post("/api/v1/events", headers=headers,
                                 json=nps(event_id=f"e{i}", customer_id=customer))
        assert resp.status == 201
    pid = await conn.fetchval("SELECT id FROM programs WHERE slug = 'acme'")
    rid = await conn.fetchval("SELECT id FROM referrers WHERE external_id = 'c-9'")
    await conn.execute(
        """INSERT INTO candidate_scores (program_id, customer_id, score, percentile, as_of)
           VALUES ($1, 'c-9', 0.9, 0.95, now()), ($1, 'other', 0.2, 0.3, now())""", pid)
    asks = {}
    for status, trigger in (("sent", 1), ("queued", 2)):
        asks[status] = await conn.fetchval(
            """INSERT INTO asks (program_id, customer_id, referrer_id, trigger_source,
                   trigger_id, trigger_type, trigger_score, occurred_at, deadline, status,
                   sent_at)
               VALUES ($1, 'c-9', $2, 'event', $3, 'nps', 10, now(), now() + interval '1 day',
                       $4, CASE WHEN $4 = 'sent' THEN now() END) RETURNING id""",
            pid, rid, trigger, status)
    for status, delivered in (("sent", True), ("queued", False)):
        payload = {"event": "referral.ask", "ask": {
            "ask_id": asks[status], "program": "acme", "customer_id": "c-9", "name": "Ann Lee",
            "trigger": {"type": "nps", "score": 10, "occurred_at": "2026-03-01T10:00:00Z"},
            "message": "Ann Lee says hi", "link": "https://x/r/a", "share_url": "https://x/s/t"}}
        await conn.execute(
            """INSERT INTO webhook_outbox (program_id, event, payload, delivered_at)
               VALUES ($1, 'referral.ask', $2::jsonb, CASE WHEN $3 THEN now() END)""",
            pid, json.dumps(payload), delivered)
    share = await client.post("/api/v1/shares", headers=headers, json={
        "program": "acme", "referrer": "c-9", "channel": "email", "ask_id": asks["sent"]})
    assert share.status == 201

    resp = await client.delete("/api/v1/customers/c-9?program=acme", headers=headers)
    assert resp.status == 200, await resp.text()
    erased = (await resp.json())["erased"]
    assert (erased["events"], erased["candidate_scores"], erased["asks"]) == (2, 1, 2)
    assert [r["customer_id"] for r in await conn.fetch(
        "SELECT customer_id FROM customer_events")] == ["other"]
    assert [r["customer_id"] for r in await conn.fetch(
        "SELECT customer_id FROM candidate_scores")] == ["other"]
    rows = await conn.fetch("SELECT id, status, reason, trigger_score, trigger_type FROM asks "
                            "ORDER BY id")
    assert [(r["status"], r["trigger_score"], r["trigger_type"]) for r in rows] == [
        ("sent", None, "nps"), ("suppressed", None, "nps")]
    assert rows[1]["reason"] == "customer_erased"
    hooks = await conn.fetch("SELECT payload::text AS p, delivered_at, failed_at "
                             "FROM webhook_outbox ORDER BY id")
    for hook in hooks:
        assert "Ann" not in hook["p"]
        ask = json.loads(hook["p"])["ask"]
        assert "name" not in ask and "message" not in ask and "score" not in ask["trigger"]
        assert ask["customer_id"] == "c-9" and ask["trigger"]["type"] == "nps"
    # The undelivered one is never sent; the delivered one stays delivered.
    assert hooks[0]["delivered_at"] is not None and hooks[0]["failed_at"] is None
    assert hooks[1]["delivered_at"] is None and hooks[1]["failed_at"] is not None
    # The share stays (nothing personal in it): the funnel still counts it.
    assert await conn.fetchval("SELECT count(*) FROM shares") == 1
    details = await conn.fetchval("SELECT details::text FROM audit_log "
                                  "WHERE action = 'customer.erase'")
    assert json.loads(details)["events"] == 2
    # A customer known only by events is found (and erased) too.
    resp = await client.delete("/api/v1/customers/other?program=acme", headers=headers)
    assert resp.status == 200
    assert await conn.fetchval("SELECT count(*) FROM customer_events") == 0
