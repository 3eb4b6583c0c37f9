"""The funnel report (GET /api/v1/reports/funnel) on a fixture counted by hand: asks, shares from
the share page, clicks through each channel's link, conversions through the API, attribution."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from tests.helpers import auth, click_id, make_link, wait_for_clicks
from tracker.asks.funnel import STAGES, rates
from tracker.jobs import report_cache
from tracker.scoring.credits import attribute_pending

Client = TestClient[web.Request, web.Application]


def ua(n: int) -> str:  # a browser of its own per visitor (the same device twice is a duplicate)
    return f"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/{120 + n}.0 Safari/537.36"


async def visit(client: Client, code: str, n: int, cookie: str | None = None
                ) -> tuple[str, str]:
    """A visit: (click id, the visitor's rg_vid cookie)."""
    headers = {"User-Agent": ua(n) if n >= 0 else "curl/8.5.0"}
    if cookie is not None:
        headers["Cookie"] = cookie
    resp = await client.get(f"/r/{code}", allow_redirects=False, headers=headers)
    assert resp.status == 302
    cid = click_id(resp.headers["Location"])
    return cid, cookie or resp.headers["Set-Cookie"].split(";", 1)[0]


async def convert(client: Client, tokens: dict[str, str], event_id: str, kind: str,
                  customer: str, **extra: Any) -> None:
    body = {"program": "acme", "event_id": event_id, "type": kind, "customer_id": customer,
            "amount": 1000, "currency": "USD", **extra}
    resp = await client.post("/api/v1/conversions", json=body,
                             headers=auth(tokens["integration"]))
    assert resp.status == 201, await resp.text()


async def ask(conn: asyncpg.Connection, customer: str, trigger: str, *, sent: bool = True,
              hours_ago: int = 5) -> int:
    ask_id: int = await conn.fetchval(
        """INSERT INTO asks (program_id, customer_id, referrer_id, trigger_source, trigger_id,
                             trigger_type, occurred_at, deadline, status, sent_at)
           SELECT p.id, $1, r.id, 'event', nextval('asks_id_seq'), $2,
                  now() - make_interval(hours => $4), now() + interval '1 day',
                  CASE WHEN $3 THEN 'sent' ELSE 'suppressed' END,
                  CASE WHEN $3 THEN now() - make_interval(hours => $4) END
           FROM programs p LEFT JOIN referrers r ON r.program_id = p.id AND r.external_id = $1
           WHERE p.slug = 'acme' RETURNING id""", customer, trigger, sent, hours_ago)
    return ask_id


async def share_page(client: Client, tokens: dict[str, str], who: str) -> str:
    resp = await client.post("/api/v1/referrers", headers=auth(tokens["integration"]),
                             json={"program": "acme", "external_id": who})
    share_url: str = (await resp.json())["share_url"]
    return urlsplit(share_url).path


async def press(client: Client, path: str, channel: str, **extra: str) -> None:
    resp = await client.post(f"{path}/share", data={"channel": channel, **extra},
                             allow_redirects=False)
    assert resp.status == 303


async def channel_code(conn: asyncpg.Connection, who: str, channel: str) -> str:
    code: str = await conn.fetchval(
        """SELECT l.code FROM links l JOIN referrers r
             ON r.program_id = l.program_id AND r.id = l.referrer_id
           WHERE r.external_id = $1 AND l.channel = $2""", who, channel)
    return code


async def plant(client: Client, tokens: dict[str, str], conn: asyncpg.Connection) -> None:
    """The fixture (see the hand counts in the tests below)."""
    await make_link(client, tokens, referrer="alice", code="al")
    await make_link(client, tokens, referrer="bob", code="bo")
    alice_ask = await ask(conn, "alice", "nps")
    await ask(conn, "bob", "review")
    await ask(conn, "carol", "nps")  # not a referrer yet
    await ask(conn, "dave", "nps", sent=False)  # suppressed: never asked
    alice, bob = await share_page(client, tokens, "alice"), await share_page(client, tokens, "bob")
    await press(client, alice, "email")
    await press(client, alice, "whatsapp", ask=str(alice_ask))
    await press(client, bob, "email")
    await press(client, bob, "sms")
    # bob's sms share was ten days ago, before his ask.
    await conn.execute("UPDATE shares SET occurred_at = now() - interval '10 days' "
                       "WHERE channel = 'sms'")
    a_mail, a_wa = await channel_code(conn, "alice", "email"), await channel_code(conn, "alice",
                                                                                  "whatsapp")
    b_mail = await channel_code(conn, "bob", "email")
    c1, v1 = await visit(client, a_mail, 1)
    await visit(client, a_mail, 1, v1)  # the same visitor again: a duplicate, not counted
    await visit(client, a_mail, 2)
    c3, _ = await visit(client, a_wa, 3)
    c4, _ = await visit(client, "al", 4)
    await visit(client, "al", -1)  # a bot: not counted
    c5, _ = await visit(client, b_mail, 5)
    assert await wait_for_clicks(conn, 7) == 7
    await conn.execute("UPDATE clicks SET ts = ts - interval '1 hour'")
    await convert(client, tokens, "s1", "signup", "c1", click_id=c1)
    await convert(client, tokens, "p1", "purchase", "c1", click_id=c1)
    await convert(client, tokens, "p3", "purchase", "c3", click_id=c3)
    await convert(client, tokens, "p4", "purchase", "c4", click_id=c4)
    await convert(client, tokens, "s5", "signup", "c5", click_id=c5)
    await convert(client, tokens, "t5", "trial", "c5", click_id=c5)
    assert await attribute_pending(conn) == 6
    # c4 bought first 100 days ago and renews now: retained at 90 days.
    await conn.execute("UPDATE conversions SET occurred_at = occurred_at - interval '100 days' "
                       "WHERE event_id = 'p4'")
    await convert(client, tokens, "r4", "renewal", "c4", click_id=c4)
    await convert(client, tokens, "x3", "refund", "c3", original_event_id="p3")
    assert await attribute_pending(conn) == 2  # the renewal and the refund


async def report(client: Client, tokens: dict[str, str], query: str = "") -> dict[str, Any]:
    resp = await client.get(f"/api/v1/reports/funnel?program=acme{query}",
                            headers=auth(tokens["viewer"]))
    assert resp.status == 200, await resp.text()
    body: dict[str, Any] = await resp.json()
    return body


def stages(row: dict[str, Any]) -> dict[str, Any]:
    return {k: row[k] for k in (*STAGES, "renewals", "refunds")}


def counts(asked: int | None = 0, shared: int = 0, clicks: int = 0, unique_visitors: int = 0,
           signups: float = 0, trials: float = 0, purchases: float = 0,
           retained_90d: float = 0, renewals: float = 0, refunds: int = 0) -> dict[str, Any]:
    return {"asked": asked, "shared": shared, "clicks": clicks,
            "unique_visitors": unique_visitors, "signups": signups, "trials": trials,
            "purchases": purchases, "retained_90d": retained_90d, "renewals": renewals,
            "refunds": refunds}


TOTAL = counts(asked=3, shared=4, clicks=5, unique_visitors=5, signups=2, trials=1, purchases=3,
               retained_90d=1, renewals=1, refunds=1)


async def test_the_funnel_by_referrer_matches_a_hand_count(
        client: Client, tokens: dict[str, str], conn: asyncpg.Connection) -> None:
    await plant(client, tokens, conn)
    body = await report(client, tokens)
    assert body["by"] == "referrer"
    rows = {r["referrer"]: stages(r) for r in body["rows"]}
    assert rows == {
        "alice": counts(asked=1, shared=2, clicks=4, unique_visitors=4, signups=1,
                        purchases=3, retained_90d=1, renewals=1, refunds=1),
        "bob": counts(asked=1, shared=2, clicks=1, unique_visitors=1, signups=1, trials=1),
        "carol": counts(asked=1),
    }
    assert stages(body["total"]) == TOTAL
    assert body["total"]["rates"] == {
        "shared": round(4 / 3, 6), "clicks": 1.25, "unique_visitors": 1.0, "signups": 0.4,
        "trials": 0.5, "purchases": 3.0, "retained_90d": round(1 / 3, 6)}
    alice = next(r for r in body["rows"] if r["referrer"] == "alice")
    assert alice["rates"]["trials"] == 0.0 and alice["rates"]["purchases"] is None


async def test_the_funnel_by_channel_follows_each_channels_link(
        client: Client, tokens: dict[str, str], conn: asyncpg.Connection) -> None:
    await plant(client, tokens, conn)
    body = await report(client, tokens, "&by=channel")
    rows = {r["channel"]: stages(r) for r in body["rows"]}
    assert rows == {
        "email": counts(asked=None, shared=2, clicks=3, unique_visitors=3, signups=2, trials=1,
                        purchases=1),
        "whatsapp": counts(asked=None, shared=1, clicks=1, unique_visitors=1, purchases=1,
                           refunds=1),
        "sms": counts(asked=None, shared=1),
        None: counts(asked=None, clicks=1, unique_visitors=1, purchases=1, retained_90d=1,
                     renewals=1),
    }
    assert stages(body["total"]) == TOTAL
    assert all(r["rates"]["shared"] is None for r in body["rows"])  # asks have no channel


async def test_the_funnel_by_trigger_follows_the_asks(
        client: Client, tokens: dict[str, str], conn: asyncpg.Connection) -> None:
    await plant(client, tokens, conn)
    body = await report(client, tokens, "&by=trigger")
    rows = {r["trigger"]: stages(r) for r in body["rows"]}
    assert rows == {
        # alice's and carol's asks; everything of alice's after her ask (p4 was 100 days ago).
        "nps": counts(asked=2, shared=2, clicks=4, unique_visitors=4, signups=1, purchases=2,
                      renewals=1, refunds=1),
        "review": counts(asked=1, shared=1, clicks=1, unique_visitors=1, signups=1, trials=1),
        None: counts(asked=0, shared=1, purchases=1, retained_90d=1),
    }
    assert stages(body["total"]) == TOTAL


async def test_since_and_until_bound_every_stage(
        client: Client, tokens: dict[str, str], conn: asyncpg.Connection) -> None:
    await plant(client, tokens, conn)
    since = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    body = await report(client, tokens, f"&since={since.replace('+', '%2B')}")
    # bob's old share, and c4's purchase (and so its retention) 100 days ago, fall out.
    assert stages(body["total"]) == counts(asked=3, shared=3, clicks=5, unique_visitors=5,
                                           signups=2, trials=1, purchases=2, renewals=1,
                                           refunds=1)
    assert body["since"].startswith(since[:19])
    until = (datetime.now(UTC) - timedelta(days=2)).isoformat().replace("+", "%2B")
    body = await report(client, tokens, f"&until={until}")
    assert stages(body["total"]) == counts(shared=1, purchases=1, retained_90d=1)


@pytest.mark.parametrize("query", ["&by=country", "&since=yesterday", "&until=2026-13-01",
                                   "&since=2026-02-01T00:00:00Z&until=2026-01-01T00:00:00Z"])
async def test_bad_parameters_are_422(client: Client, tokens: dict[str, str],
                                      query: str) -> None:
    await make_link(client, tokens)
    resp = await client.get(f"/api/v1/reports/funnel?program=acme{query}",
                            headers=auth(tokens["viewer"]))
    assert resp.status == 422


async def test_the_range_is_answered_in_rfc3339(client: Client, tokens: dict[str, str]) -> None:
    await make_link(client, tokens)
    body = await report(client, tokens, "&until=0185-08-03T21:43:52%2B17:02")  # found by fuzzing
    assert body["until"] == "0185-08-03T04:41:52.000Z" and body["since"] is None


def test_rates_are_each_stage_over_the_one_before() -> None:
    got = rates({"asked": 4, "shared": 2, "clicks": 0, "unique_visitors": 0, "signups": 0,
                 "trials": 0, "purchases": 0, "retained_90d": 0})
    assert got["shared"] == 0.5 and got["clicks"] == 0.0 and got["unique_visitors"] is None
    assert rates({"asked": None, "shared": 3})["shared"] is None


async def test_the_default_view_and_the_experiments_come_from_the_jobs_fresh_copy(
        client: Client, tokens: dict[str, str], conn: asyncpg.Connection) -> None:
    """The funnel with no since or until (by any split), and the experiments report, are the
    reports job's copy while it is fresh (`cached`, `computed_at`); a view with a window, or a
    stale copy, is computed now."""
    await plant(client, tokens, conn)
    before = await report(client, tokens)
    assert before["cached"] is False and (before["since"], before["until"]) == (None, None)
    await report_cache(conn)
    computed_at = await conn.fetchval(
        "SELECT computed_at FROM report_cache WHERE report = 'funnel' AND params = ''")
    cached = await report(client, tokens)
    assert cached["cached"] is True
    assert abs(datetime.fromisoformat(cached["computed_at"]) - computed_at) < \
        timedelta(milliseconds=1)  # RFC 3339 to the millisecond
    assert {k: v for k, v in cached.items() if k not in ("cached", "computed_at")} == \
        {k: v for k, v in before.items() if k not in ("cached", "computed_at")}
    # A new sent ask: the copy does not know it yet, a view computed now does.
    await ask(conn, "alice", "nps")
    assert (await report(client, tokens))["total"]["asked"] == before["total"]["asked"]
    live = await report(client, tokens, "&since=2000-01-01T00:00:00Z")
    assert live["cached"] is False and live["total"]["asked"] == before["total"]["asked"] + 1
    # Every split over all time is a copy of the job's (each by its own key).
    by_channel = await report(client, tokens, "&by=channel")
    assert by_channel["cached"] is True and by_channel["by"] == "channel"
    assert by_channel["total"]["asked"] == before["total"]["asked"]
    resp = await client.get("/api/v1/reports/experiments?program=acme",
                            headers=auth(tokens["viewer"]))
    experiments = await resp.json()
    assert resp.status == 200 and experiments["cached"] is True
    assert experiments["program"] == "acme" and "winner" in experiments
    await conn.execute("UPDATE report_cache SET computed_at = now() - interval '1 hour'")
    stale = await report(client, tokens)
    assert stale["cached"] is False and stale["total"]["asked"] == before["total"]["asked"] + 1
    resp = await client.get("/api/v1/reports/experiments?program=acme",
                            headers=auth(tokens["viewer"]))
    experiments = await resp.json()
    assert experiments["cached"] is False and "winner" in experiments
    assert datetime.fromisoformat(experiments["computed_at"]) > computed_at
