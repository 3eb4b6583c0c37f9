"""The reports' fast paths equal their definitions (issue 16).

The breakdown's SQL (a (group, visitor) hash aggregate per set, the total's distinct visitors
counted on their own, last-touch clicks probed by key, its reads run at once on a pool) against
the breakdown computed in Python from the raw rows by the words of its definition, on a seeded
fixture with the edges that break shortcuts: clicks on both sides of hour boundaries and of a
daylight-saving change in the program's time zone, visitors who fall in several groups (their
unique-visitor counts are not additive), clicks without a visitor, bots and duplicates, a
referrer with two asks, typed codes, refunds; then late clicks (an import or a journal replay
of old timestamps) and a click turned bot, and the reports read again. The economics and the
funnel give the same answers on a pool (reads at once) as on one connection, and the reports
job's copies of the funnel and the attribution the same as computed on request.
"""

from __future__ import annotations

import itertools
import random
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from attribution.models import MODELS
from tests.helpers import auth
from tracker import db
from tracker.asks.funnel import GROUPS, funnel_report
from tracker.jobs import report_cache
from tracker.scoring import economics
from tracker.scoring.economics import breakdown_report, economics_report
from tracker.scoring.queries import BREAKDOWN_DIMENSIONS, BreakdownConversions, BreakdownRow
from tracker.scoring.reports import attribution_report

Client = TestClient[web.Request, web.Application]

TZ = "America/New_York"
SETTINGS = {"timezone": TZ}
# New York springs forward at 07:00 UTC on 8 March 2026: 01:59 EST, then 03:00 EDT.
DST = datetime(2026, 3, 8, 7, tzinfo=UTC)
REACH = timedelta(days=30)


@pytest.fixture
async def pool(dsn: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await db.create_pool(dsn, max_size=4)
    yield pool
    await pool.close()


async def build(conn: asyncpg.Connection, rng: random.Random) -> int:
    pid: int = await conn.fetchval(
        """INSERT INTO programs (slug, name, destination_domains, settings)
           VALUES ('acme', 'Acme', ARRAY['acme.test'], '{"timezone": "America/New_York"}')
           RETURNING id""")
    refs = [await conn.fetchval(
        "INSERT INTO referrers (program_id, external_id, kind) VALUES ($1, $2, $3) RETURNING id",
        pid, name, kind) for name, kind in (("alice", None), ("bob", None), ("carol", "customer"))]
    # alice buys herself: a customer advocate by the data; bob never does; carol is set.
    await conn.execute(
        """INSERT INTO conversions (program_id, event_id, type, customer_id, amount, currency,
               occurred_at, body_hash) VALUES ($1, 'own', 'purchase', 'alice', 100, 'USD',
               '2025-12-01T00:00:00Z', '\\x00')""", pid)
    for i, (ref, channel, campaign) in enumerate(((0, "email", "spring"), (0, None, None),
                                                  (1, "sms", "spring"), (2, "x", None))):
        await conn.execute(
            """INSERT INTO links (program_id, referrer_id, code, destination, channel, campaign)
               VALUES ($1, $2, $3, 'https://acme.test/', $4, $5)""",
            pid, refs[ref], f"c{i}", channel, campaign)
    # alice: two asks 10 days apart (the second ends the first's reach); bob: one whose 30 days
    # end inside the clicks; two at the same time for carol (the later id wins); one unsent.
    for ref, trigger, sent in ((0, "nps", DST - timedelta(days=12)),
                               (0, "review", DST - timedelta(days=2)),
                               (1, "milestone", DST - timedelta(days=25)),
                               (2, "nps", DST - timedelta(hours=3)),
                               (2, "review", DST - timedelta(hours=3)),
                               (1, "review", None)):
        await conn.execute(
            """INSERT INTO asks (program_id, customer_id, referrer_id, trigger_source,
                   trigger_id, trigger_type, occurred_at, deadline, status, sent_at)
               VALUES ($1, $2, $3, 'event', $4, $5, $6, $6, $7, $8)""",
            pid, f"r{ref}", refs[ref], rng.randrange(10**9), trigger,
            DST - timedelta(days=40), "sent" if sent else "queued", sent)
    for month in (1, 2, 3, 4):
        await conn.execute("SELECT refguard_ensure_click_partition($1)",
                           datetime(2026, month, 1, tzinfo=UTC))
    await add_clicks(conn, pid, rng, 400, DST - timedelta(days=6), DST + timedelta(days=6))
    clicks = await conn.fetch(
        "SELECT click_id, ts, referrer_id FROM clicks WHERE program_id = $1 ORDER BY ts, click_id",
        pid)
    for n in range(60):
        type_ = "purchase" if n % 5 else "signup"
        amount = rng.choice((None, 1000, 2500, 9900)) if type_ == "purchase" else None
        currency = rng.choice(("USD", "EUR")) if amount else None
        at = DST + timedelta(hours=rng.uniform(-100, 140))
        cid = await conn.fetchval(
            """INSERT INTO conversions (program_id, event_id, type, customer_id, amount,
                   currency, occurred_at, body_hash, attributed_at)
               VALUES ($1, $2, $3, $4, $5, $6, $7, '\\x00', now()) RETURNING id""",
            pid, f"e{n}", type_, f"x{n}", amount, currency, at)
        for pos in range(rng.choice((0, 1, 1, 2, 3))):
            if rng.random() < 0.15:  # a typed code: no click
                await conn.execute(
                    """INSERT INTO touchpoints (program_id, conversion_id, position,
                           referrer_id, click_id, ts, via)
                       VALUES ($1, $2, $3, $4, NULL, $5, 'code')""",
                    pid, cid, pos, rng.choice(refs), at)
                continue
            k = rng.choice(clicks)
            await conn.execute(
                """INSERT INTO touchpoints (program_id, conversion_id, position, referrer_id,
                       click_id, ts, via) VALUES ($1, $2, $3, $4, $5, $6, 'click')""",
                pid, cid, pos, k["referrer_id"], k["click_id"], k["ts"])
        if amount and n % 4 == 0:  # refunds, one of them without an amount (the whole)
            await conn.execute(
                """INSERT INTO conversions (program_id, event_id, type, customer_id, amount,
                       currency, occurred_at, body_hash, original_event_id)
                   VALUES ($1, $2, $3, $4, $5, $6, $7, '\\x00', $8)""",
                pid, f"x{n}-r", rng.choice(("refund", "chargeback")), f"x{n}",
                rng.choice((None, 300, amount * 2)), currency, at + timedelta(days=3), f"e{n}")
    # Credits as last-touch attribution writes them (the funnel and attribution read them).
    await conn.execute(
        """INSERT INTO credits (program_id, conversion_id, referrer_id, model, credit)
           SELECT DISTINCT ON (conversion_id) program_id, conversion_id, referrer_id,
                  'last_touch', 1
           FROM touchpoints WHERE program_id = $1 ORDER BY conversion_id, position DESC""", pid)
    return pid


async def add_clicks(conn: asyncpg.Connection, pid: int, rng: random.Random, n: int,
                     start: datetime, end: datetime) -> None:
    """`n` clicks in [start, end), a third of them within a second of an hour boundary, from
    a small crowd of visitors (most fall in several groups of every dimension)."""
    links = await conn.fetch("SELECT id, referrer_id, code FROM links WHERE program_id = $1",
                             pid)
    rows = []
    for _ in range(n):
        ts = start + (end - start) * rng.random()
        if rng.random() < 0.35:
            ts = ts.replace(minute=0, second=0, microsecond=0) + timedelta(
                microseconds=rng.choice((-1, 0, 1)))
        link = rng.choice(links)
        rows.append((pid, uuid.UUID(int=rng.getrandbits(128)), ts, link["id"],
                     link["referrer_id"], link["code"],
                     None if rng.random() < 0.05 else f"v{rng.randrange(40)}",
                     rng.choice(("US", "DE", None)), rng.choice(("desktop", "mobile")),
                     rng.choice(("iOS", "Windows", None)), rng.choice(("Chrome", "Safari")),
                     rng.random() < 0.05, rng.random() < 0.05))
    await conn.executemany(
        """INSERT INTO clicks (program_id, click_id, ts, link_id, referrer_id, code, visitor_id,
               country, ua_device, ua_os, ua_browser, is_bot, is_duplicate)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)""", rows)


async def by_definition(conn: asyncpg.Connection, pid: int, by: list[str], *, type_: str,
                        since: datetime | None, until: datetime | None) -> dict[str, Any]:
    """The breakdown computed in Python from the raw rows, by the words of its definition
    (tracker.scoring.economics), assembled as the report assembles its rows."""
    zone = ZoneInfo(TZ)
    links = {r["id"]: r for r in await conn.fetch(
        "SELECT id, channel, campaign FROM links WHERE program_id = $1", pid)}
    buyers = {r["customer_id"] for r in await conn.fetch(
        """SELECT customer_id FROM conversions WHERE program_id = $1
             AND type IN ('purchase', 'renewal')""", pid)}
    kinds = {r["id"]: r["kind"] or ("customer" if r["external_id"] in buyers else "non_buyer")
             for r in await conn.fetch(
                 "SELECT id, external_id, kind FROM referrers WHERE program_id = $1", pid)}
    asks = await conn.fetch(
        """SELECT id, referrer_id, trigger_type, sent_at FROM asks
           WHERE program_id = $1 AND sent_at IS NOT NULL""", pid)

    def trigger(referrer: int, ts: datetime) -> str | None:
        """The referrer's latest ask (by sent_at, id) sent at or before ts, within 30 days."""
        before = [a for a in asks if a["referrer_id"] == referrer and a["sent_at"] <= ts]
        if not before:
            return None
        last = max(before, key=lambda a: (a["sent_at"], a["id"]))
        return str(last["trigger_type"]) if ts < last["sent_at"] + REACH else None

    def keys(click: Any, referrer: int) -> tuple[Any, ...]:
        if click is None:  # a typed code: only the referrer's kind is known
            return tuple(kinds[referrer] if d == "referrer_kind" else None for d in by)
        local = click["ts"].astimezone(zone)
        link = links[click["link_id"]]
        value = {"weekday": local.isoweekday(), "hour": local.hour,
                 "country": click["country"], "device": click["ua_device"],
                 "os": click["ua_os"], "browser": click["ua_browser"],
                 "channel": link["channel"], "campaign": link["campaign"],
                 "referrer_kind": kinds[referrer], "trigger": trigger(referrer, click["ts"])}
        return tuple(value[d] for d in by)

    def inside(ts: datetime) -> bool:
        return (since is None or ts >= since) and (until is None or ts < until)

    clicks = await conn.fetch("SELECT * FROM clicks WHERE program_id = $1", pid)
    by_key = {(r["ts"], r["click_id"]): r for r in clicks}
    counted = [c for c in clicks if not c["is_bot"] and not c["is_duplicate"]
               and inside(c["ts"])]
    n: dict[tuple[Any, ...], int] = defaultdict(int)
    seen: dict[tuple[Any, ...], set[str]] = defaultdict(set)
    for c in counted:
        k = keys(c, c["referrer_id"])
        n[k] += 1
        if c["visitor_id"] is not None:
            seen[k].add(c["visitor_id"])
    groups = [BreakdownRow(k, n[k], len(seen[k])) for k in n]
    total = BreakdownRow((), len(counted), len({c["visitor_id"] for c in counted
                                                if c["visitor_id"] is not None}))
    conversions = await conn.fetch("SELECT * FROM conversions WHERE program_id = $1", pid)
    touches = await conn.fetch("SELECT * FROM touchpoints WHERE program_id = $1", pid)
    money: dict[tuple[tuple[Any, ...], str | None], list[int]] = defaultdict(lambda: [0, 0])
    for v in conversions:
        mine = [t for t in touches if t["conversion_id"] == v["id"]]
        if v["type"] != type_ or not mine or not inside(v["occurred_at"]):
            continue
        last = max(mine, key=lambda t: t["position"])
        click = by_key.get((last["ts"], last["click_id"]))
        taken = sum(x["amount"] if x["amount"] is not None else (v["amount"] or 0)
                    for x in conversions if x["original_event_id"] == v["event_id"]
                    and x["type"] in ("refund", "chargeback"))
        row = money[(keys(click, last["referrer_id"]), v["currency"])]
        row[0] += 1
        row[1] += max((v["amount"] or 0) - taken, 0)
    convs = [BreakdownConversions(k, cur, c, net) for (k, cur), (c, net) in money.items()]
    return economics._breakdown(by, groups, total, convs, tz=TZ, type_=type_, since=since,
                                until=until, min_visitors=economics.MIN_VISITORS)


WINDOWS = [(None, None),
           # edges inside an hour and across the change of time: partial hours at both ends
           (DST - timedelta(hours=30, minutes=17), DST + timedelta(hours=5, seconds=1))]
SETS = [[d] for d in BREAKDOWN_DIMENSIONS] + [
    ["weekday", "hour"], ["hour", "country"], ["trigger", "channel"],
    ["referrer_kind", "device"], ["campaign", "trigger"]]


async def check_breakdowns(conn: asyncpg.Connection, pool: asyncpg.Pool, pid: int) -> None:
    for (since, until), by, type_ in itertools.product(WINDOWS, SETS, ("purchase", "signup")):
        expected = await by_definition(conn, pid, by, type_=type_, since=since, until=until)
        on_pool = await breakdown_report(pool, pid, SETTINGS, by, type_=type_, since=since,
                                         until=until)
        assert on_pool == expected, (by, type_, since)
        on_conn = await breakdown_report(conn, pid, SETTINGS, by, type_=type_, since=since,
                                         until=until)
        assert on_conn == expected, (by, type_, since)


async def test_breakdown_equals_its_definition(conn: asyncpg.Connection,
                                               pool: asyncpg.Pool) -> None:
    pid = await build(conn, random.Random(16))
    hours = await breakdown_report(pool, pid, SETTINGS, ["hour"])
    # The fixture reaches its edges: 02:00 does not exist in New York on 8 March, the visitors
    # in the groups add up to more than the total (a visitor in several hours), both
    # currencies and a typed code's conversion (no click: null hour) are there.
    assert {g["key"]["hour"] for g in hours["groups"]} >= {0, 1, 3, 23, None}
    assert sum(g["unique_visitors"] for g in hours["groups"]) > \
        hours["total"]["unique_visitors"] > 0
    assert set(hours["total"]["revenue"]) == {"EUR", "USD"}
    await check_breakdowns(conn, pool, pid)


async def test_late_clicks_and_changed_flags_are_read_again(conn: asyncpg.Connection,
                                                            pool: asyncpg.Pool) -> None:
    """Nothing is kept between two reports: clicks imported or replayed late with old
    timestamps, and a click found to be a bot afterwards, show in the next report."""
    rng = random.Random(61)
    pid = await build(conn, rng)
    before = await breakdown_report(pool, pid, SETTINGS, ["weekday", "hour"])
    await add_clicks(conn, pid, rng, 80, DST - timedelta(days=20), DST - timedelta(days=1))
    await conn.execute(
        """UPDATE clicks SET is_bot = true WHERE program_id = $1 AND click_id = (
               SELECT click_id FROM clicks WHERE program_id = $1 AND NOT is_bot
                 AND NOT is_duplicate ORDER BY ts LIMIT 1)""", pid)
    after = await breakdown_report(pool, pid, SETTINGS, ["weekday", "hour"])
    assert after["total"]["clicks"] > before["total"]["clicks"]
    assert after["groups"] != before["groups"]
    await check_breakdowns(conn, pool, pid)


async def test_reads_at_once_answer_as_one_connection(conn: asyncpg.Connection,
                                                      pool: asyncpg.Pool) -> None:
    """The economics and the funnel (every split, with and without a window) read on a pool
    at once give what they give on one connection."""
    pid = await build(conn, random.Random(5))
    for since, until in WINDOWS:
        assert await economics_report(pool, pid, SETTINGS, since=since, until=until) == \
            await economics_report(conn, pid, SETTINGS, since=since, until=until)
        for group in GROUPS:
            assert await funnel_report(pool, pid, by=group, since=since, until=until) == \
                await funnel_report(conn, pid, by=group, since=since, until=until)


async def test_the_jobs_copies_answer_every_funnel_split_and_attribution_model(
        client: Client, tokens: dict[str, str], conn: asyncpg.Connection) -> None:
    """The reports job keeps the funnel by each split and the attribution under every model;
    the API answers them from its copy, equal to what is computed on request."""
    pid = await build(conn, random.Random(3))
    await report_cache(conn)
    viewer = auth(tokens["viewer"])
    for by in GROUPS:
        resp = await client.get(f"/api/v1/reports/funnel?program=acme&by={by}", headers=viewer)
        body = await resp.json()
        assert body.pop("cached") is True and body.pop("computed_at")
        assert body == {"program": "acme", "since": None, "until": None,
                        **await funnel_report(conn, pid, by=by)}
    live = await attribution_report(conn, pid, list(MODELS))
    assert live["last_touch"] and live["shapley"]
    resp = await client.get("/api/v1/reports/attribution?program=acme", headers=viewer)
    body = await resp.json()
    assert body["cached"] is True and body["models"] == live
    resp = await client.get("/api/v1/reports/attribution?program=acme&model=markov",
                            headers=viewer)
    body = await resp.json()
    assert body["cached"] is True and body["rows"] == live["markov"]
