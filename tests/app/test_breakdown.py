"""GET /api/v1/reports/breakdown on a fixture whose answers are computed by hand (issue 16):
weekday and hour in the program's time zone (a click that is Tuesday in UTC is Monday in New
York), bot and duplicate clicks left out, conversions in their last touch's group (a typed
code has no click), refunds netted, two currencies, advocate kinds, channels and the ask
trigger before a click.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg
from aiohttp import web
from aiohttp.test_utils import TestClient

from tests.helpers import auth
from tracker.scoring.economics import breakdown_report, breakdown_reports

Client = TestClient[web.Request, web.Application]


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


async def build(conn: asyncpg.Connection) -> None:
    pid: int = await conn.fetchval(
        """INSERT INTO programs (slug, name, destination_domains, settings)
           VALUES ('acme', 'Acme', ARRAY['acme.test'], '{"timezone": "America/New_York"}')
           RETURNING id""")
    refs = {}
    for name in ("alice", "bob"):
        refs[name] = await conn.fetchval(
            "INSERT INTO referrers (program_id, external_id) VALUES ($1, $2) RETURNING id",
            pid, name)
    links = {}
    for code, ref, channel, campaign in (("al", "alice", "email", "spring"),
                                         ("bo", "bob", "sms", None)):
        links[code] = await conn.fetchval(
            """INSERT INTO links (program_id, referrer_id, code, destination, channel, campaign)
               VALUES ($1, $2, $3, 'https://acme.test/', $4, $5) RETURNING id""",
            pid, refs[ref], code, channel, campaign)
    await conn.execute("SELECT refguard_ensure_click_partition('2026-01-15T00:00:00Z')")
    clicks: dict[str, tuple[uuid.UUID, datetime, int]] = {}
    for name, code, visitor, when, country, device, os, browser, bot, dup in (
        ("k1", "al", "v1", "2026-01-05T14:00", "US", "desktop", "Windows", "Chrome", False, False),
        ("k2", "al", "v1", "2026-01-05T14:30", "US", "desktop", "Windows", "Chrome", False, False),
        # 03:00 UTC on Tuesday is 22:00 on Monday in New York.
        ("k3", "al", "v2", "2026-01-06T03:00", "FR", "mobile", "iOS", "Safari", False, False),
        ("k4", "bo", "v3", "2026-01-07T15:00", "DE", "mobile", "Android", "Chrome", False, False),
        ("k5", "bo", "v4", "2026-01-07T15:10", "DE", "bot", None, None, True, False),
        ("k6", "bo", "v3", "2026-01-07T15:00", "DE", "mobile", "Android", "Chrome", False, True),
    ):
        click_id = uuid.uuid4()
        ref = refs["alice" if code == "al" else "bob"]
        await conn.execute(
            """INSERT INTO clicks (program_id, click_id, ts, link_id, referrer_id, code,
                   visitor_id, country, ua_device, ua_os, ua_browser, is_bot, is_duplicate)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)""",
            pid, click_id, at(when), links[code], ref, code, visitor, country, device, os,
            browser, bot, dup)
        clicks[name] = (click_id, at(when), ref)
    # alice buys herself (a customer advocate); bob never does (a non-buyer).
    await conn.execute(
        """INSERT INTO conversions (program_id, event_id, type, customer_id, amount, currency,
               occurred_at, body_hash) VALUES ($1, 'own', 'purchase', 'alice', 100, 'USD',
               '2025-12-01T00:00:00Z', '\\x00')""", pid)

    async def conversion(event: str, type_: str, customer: str, when: str, amount: int | None,
                         currency: str | None, touches: list[str],
                         original: str | None = None) -> None:
        cid = await conn.fetchval(
            """INSERT INTO conversions (program_id, event_id, type, customer_id, amount,
                   currency, occurred_at, original_event_id, body_hash, attributed_at)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, '\\x00', now()) RETURNING id""",
            pid, event, type_, customer, amount, currency, at(when), original)
        for pos, touch in enumerate(touches):
            if touch == "code":  # a typed code: bob's, no click
                await conn.execute(
                    """INSERT INTO touchpoints (program_id, conversion_id, position,
                           referrer_id, click_id, ts, via) VALUES ($1, $2, $3, $4, NULL, $5,
                           'code')""", pid, cid, pos, refs["bob"], at(when))
                continue
            click_id, ts, ref = clicks[touch]
            await conn.execute(
                """INSERT INTO touchpoints (program_id, conversion_id, position, referrer_id,
                       click_id, ts, via) VALUES ($1, $2, $3, $4, $5, $6, 'click')""",
                pid, cid, pos, ref, click_id, ts)

    await conversion("s1", "signup", "x1", "2026-01-05T16:00", None, None, ["k1"])
    await conversion("p1", "purchase", "x1", "2026-01-06T10:00", 10000, "USD", ["k1", "k2"])
    await conversion("p1-x", "refund", "x1", "2026-01-09T10:00", 2000, "USD", [],
                     original="p1")
    await conversion("p2", "purchase", "x2", "2026-01-08T10:00", 5000, "EUR", ["k3"])
    await conversion("p3", "purchase", "x3", "2026-01-08T12:00", 3000, "USD", ["k4", "code"])
    await conversion("p4", "purchase", "x4", "2026-01-08T12:00", 999, "USD", [])  # no touch
    # Asks: alice's nps ask reaches k1 and k2; her milestone ask, sent later, reaches k3; an
    # ask that was never sent reaches nothing.
    for i, (who, trigger, sent) in enumerate((("alice", "nps", "2026-01-05T13:00"),
                                              ("alice", "milestone", "2026-01-06T00:00"),
                                              ("bob", "review", None))):
        await conn.execute(
            """INSERT INTO asks (program_id, customer_id, referrer_id, trigger_source,
                   trigger_id, trigger_type, occurred_at, deadline, status, sent_at)
               VALUES ($1, $2, $3, 'event', $4, $5, '2026-01-01T00:00:00Z',
                       '2026-01-02T00:00:00Z', $6, $7)""",
            pid, who, refs[who], i, trigger, "sent" if sent else "queued",
            at(sent) if sent else None)


async def breakdown(client: Client, tokens: dict[str, str], query: str) -> dict[str, Any]:
    resp = await client.get(f"/api/v1/reports/breakdown?program=acme&{query}",
                            headers=auth(tokens["viewer"]))
    assert resp.status == 200, await resp.text()
    body: dict[str, Any] = await resp.json()
    return body


def row(clicks: int, visitors: int, conversions: int, revenue: dict[str, int],
        small: bool = True) -> dict[str, Any]:
    return {"clicks": clicks, "unique_visitors": visitors, "conversions": conversions,
            "conversion_rate": round(conversions / visitors, 6) if visitors else None,
            "revenue": revenue, "small": small}


def groups(body: dict[str, Any]) -> dict[tuple[Any, ...], dict[str, Any]]:
    return {tuple(g.pop("key").values()): g for g in body["groups"]}


async def test_breakdown_by_hand(client: Client, tokens: dict[str, str],
                                 conn: asyncpg.Connection) -> None:
    await build(conn)
    body = await breakdown(client, tokens, "by=weekday")
    assert (body["by"], body["type"], body["timezone"]) == (["weekday"], "purchase",
                                                           "America/New_York")
    # Monday: k1, k2 (v1) and k3 (v2, Tuesday in UTC); p1 (refunded 2000) and p2.
    # Wednesday: k4 (the bot click and the duplicate are left out). p3's last touch is a code.
    assert groups(body) == {
        (1,): row(3, 2, 2, {"EUR": 5000, "USD": 8000}),
        (3,): row(1, 1, 0, {}),
        (None,): row(0, 0, 1, {"USD": 3000}),
    }
    assert body["total"] == row(4, 3, 3, {"EUR": 5000, "USD": 11000})

    body = await breakdown(client, tokens, "by=weekday,hour&min_visitors=1")
    assert groups(body) == {
        (1, 9): row(2, 1, 1, {"USD": 8000}, small=False),
        (1, 22): row(1, 1, 1, {"EUR": 5000}, small=False),
        (3, 10): row(1, 1, 0, {}, small=False),
        (None, None): row(0, 0, 1, {"USD": 3000}),
    }

    body = await breakdown(client, tokens, "by=channel,campaign")
    assert groups(body) == {
        ("email", "spring"): row(3, 2, 2, {"EUR": 5000, "USD": 8000}),
        ("sms", None): row(1, 1, 0, {}),
        (None, None): row(0, 0, 1, {"USD": 3000}),
    }

    # The code touch is bob's: his non-buyer row gets p3.
    body = await breakdown(client, tokens, "by=referrer_kind&min_visitors=2")
    assert groups(body) == {
        ("customer",): row(3, 2, 2, {"EUR": 5000, "USD": 8000}, small=False),
        ("non_buyer",): row(1, 1, 1, {"USD": 3000}),
    }

    body = await breakdown(client, tokens, "by=trigger")
    assert groups(body) == {
        ("milestone",): row(1, 1, 1, {"EUR": 5000}),
        ("nps",): row(2, 1, 1, {"USD": 8000}),
        (None,): row(1, 1, 1, {"USD": 3000}),
    }

    body = await breakdown(client, tokens, "by=country,device")
    assert groups(body) == {
        ("DE", "mobile"): row(1, 1, 0, {}),
        ("FR", "mobile"): row(1, 1, 1, {"EUR": 5000}),
        ("US", "desktop"): row(2, 1, 1, {"USD": 8000}),
        (None, None): row(0, 0, 1, {"USD": 3000}),
    }

    body = await breakdown(client, tokens, "by=os,browser&type=signup")
    assert groups(body) == {
        ("Android", "Chrome"): row(1, 1, 0, {}),
        ("Windows", "Chrome"): row(2, 1, 1, {}),
        ("iOS", "Safari"): row(1, 1, 0, {}),
    }

    # The window: clicks by their time, conversions by theirs (p2 and p3 on 8 January).
    body = await breakdown(client, tokens, "by=hour&since=2026-01-06T00:00:00Z"
                                           "&until=2026-01-08T11:00:00Z")
    assert groups(body) == {
        (22,): row(1, 1, 1, {"EUR": 5000}),
        (10,): row(1, 1, 0, {}),
        (9,): row(0, 0, 1, {"USD": 8000}),  # p1 on 6 January; its clicks are on the 5th
    }


async def test_breakdown_bad_input(client: Client, tokens: dict[str, str],
                                   conn: asyncpg.Connection) -> None:
    await build(conn)
    viewer = auth(tokens["viewer"])
    for query, status, field in (
        ("", 422, "program"),
        ("?program=nope&by=hour", 404, None),
        ("?program=acme", 422, "by"),
        ("?program=acme&by=", 422, "by"),
        ("?program=acme&by=nope", 422, "by"),
        ("?program=acme&by=hour,hour", 422, "by"),
        ("?program=acme&by=hour,weekday,country", 422, "by"),
        ("?program=acme&by=hour,", 422, "by"),
        ("?program=acme&by=hour&by=weekday", 422, "by"),
        ("?program=acme&by=hour&type=refund", 422, "type"),
        ("?program=acme&by=hour&min_visitors=-1", 422, "min_visitors"),
        ("?program=acme&by=hour&min_visitors=", 422, "min_visitors"),
        ("?program=acme&by=hour&min_visitors=99999999", 422, "min_visitors"),
        ("?program=acme&by=hour&since=2026-13-01", 422, "since"),
        ("?program=acme&by=hour&until=2026-01-01T00:00:00Z&since=2026-02-01T00:00:00Z", 422,
         "until"),
    ):
        resp = await client.get(f"/api/v1/reports/breakdown{query}", headers=viewer)
        assert resp.status == status, (query, await resp.text())
        error = (await resp.json())["error"]
        assert error["message"]
        if field:
            assert error["field"] == field, query
    path = "/api/v1/reports/breakdown?program=acme&by=hour"
    assert (await client.get(path)).status == 401
    assert (await client.get(path, headers=auth(tokens["integration"]))).status == 403


async def test_breakdown_of_a_program_without_clicks(client: Client, tokens: dict[str, str],
                                                     conn: asyncpg.Connection) -> None:
    await conn.execute("INSERT INTO programs (slug, name, destination_domains) "
                       "VALUES ('acme', 'Acme', ARRAY['acme.test'])")
    body = await breakdown(client, tokens, "by=weekday,trigger")
    assert body["groups"] == [] and body["timezone"] == "UTC"
    assert body["total"] == row(0, 0, 0, {})


async def test_many_views_in_one_scan_equal_each_alone(conn: asyncpg.Connection) -> None:
    """The reports job computes every default view in one scan (grouping sets); each equals
    the view computed alone, also for the same dimensions in another order."""
    await build(conn)
    pid = await conn.fetchval("SELECT id FROM programs WHERE slug = 'acme'")
    settings = {"timezone": "America/New_York"}
    sets = [["weekday"], ["hour"], ["weekday", "hour"], ["hour", "weekday"], ["trigger"],
            ["referrer_kind", "channel"], ["country"]]
    together = await breakdown_reports(conn, pid, settings, sets)
    for by, report in zip(sets, together, strict=True):
        assert report == await breakdown_report(conn, pid, settings, by), by
    assert together[3]["groups"][0]["key"] == {"hour": 9, "weekday": 1}


async def test_early_years_are_written_with_four_digits(client: Client, tokens: dict[str, str],
                                                        conn: asyncpg.Connection) -> None:
    """A window in the year 10 is echoed as RFC 3339 (`0010-...`, not `10-...`)."""
    await build(conn)
    body = await breakdown(client, tokens, "by=campaign&until=0010-02-02T14:20:01Z")
    assert body["until"] == "0010-02-02T14:20:01.000Z"
    assert body["groups"] == [] and body["total"]["clicks"] == 0
