"""Clicks through the redirect, conversions through the API, attribution, reports."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from attribution.models import Journey
from tests.helpers import auth, click_id, make_link, wait_for_clicks
from tracker.scoring import credits as attributing
from tracker.scoring.credits import attribute_pending, load_journeys
from tracker.scoring.queries import CLICK_WAIT

Client = TestClient[web.Request, web.Application]
UA = "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_0) AppleWebKit/605.1.15 Version/17.0 Safari/605"


async def visit(client: Client, code: str, vid: str | None = None,
                ua: str = UA) -> tuple[str, str]:
    headers = {"User-Agent": ua}
    if vid:
        headers["Cookie"] = f"rg_vid={vid}"
    resp = await client.get(f"/r/{code}", allow_redirects=False, headers=headers)
    assert resp.status == 302
    cid = click_id(resp.headers["Location"])
    if vid is None:
        vid = resp.headers["Set-Cookie"].split(";", 1)[0].split("=", 1)[1]
    return cid, vid


async def convert(client: Client, tokens: dict[str, str], **body: Any) -> dict[str, Any]:
    body = {"program": "acme", "type": "purchase", "amount": 1000, "currency": "USD", **body}
    resp = await client.post("/api/v1/conversions", json=body,
                             headers=auth(tokens["integration"]))
    assert resp.status == 201, await resp.text()
    answer: dict[str, Any] = await resp.json()
    return answer


async def credits(conn: asyncpg.Connection, event_id: str) -> dict[str, float]:
    rows = await conn.fetch(
        """SELECT r.external_id, cr.credit FROM credits cr
           JOIN conversions c ON c.program_id = cr.program_id AND c.id = cr.conversion_id
           JOIN referrers r ON r.program_id = cr.program_id AND r.id = cr.referrer_id
           WHERE c.event_id = $1""", event_id)
    return {r["external_id"]: r["credit"] for r in rows}


async def test_identity_stitching_and_models(client: Client, tokens: dict[str, str],
                                             conn: asyncpg.Connection) -> None:
    await make_link(client, tokens, referrer="alice", code="al",
                    settings={"attribution_model": "linear"})
    await make_link(client, tokens, referrer="bob", code="bo")
    await make_link(client, tokens, referrer="carol", code="ca")
    # One visitor meets alice, then bob, then converts with bob's click id.
    _, vid = await visit(client, "al")
    cid_bob, _ = await visit(client, "bo", vid, ua=UA + " 2")
    # Another visitor, never converting (a lost journey), and a bot that touches carol.
    await visit(client, "ca", ua=UA + " 3")
    await visit(client, "ca", ua="curl/8.0")
    await wait_for_clicks(conn, 4)
    await convert(client, tokens, event_id="e1", customer_id="cust-1", click_id=cid_bob)
    # Later, the same customer buys again from another device, naming only themselves:
    # the earlier visitor is theirs, so alice and bob still get credit.
    await convert(client, tokens, event_id="e2", customer_id="cust-1", type="renewal")
    # Someone types carol's code at checkout, without any click.
    await convert(client, tokens, event_id="e3", customer_id="cust-2", referral_code="ca")
    # A refund earns nothing.
    await convert(client, tokens, event_id="e4", customer_id="cust-1", type="refund",
                  original_event_id="e1")
    # Nothing to attribute to: an organic conversion.
    await convert(client, tokens, event_id="e5", customer_id="cust-3")
    assert await attribute_pending(conn) == 5
    assert await attribute_pending(conn) == 0
    assert await credits(conn, "e1") == {"alice": 0.5, "bob": 0.5}
    assert await credits(conn, "e2") == {"alice": 0.5, "bob": 0.5}
    assert await credits(conn, "e3") == {"carol": 1.0}
    assert await credits(conn, "e4") == {}
    assert await credits(conn, "e5") == {}
    vias = [r["via"] for r in await conn.fetch(
        """SELECT t.via FROM touchpoints t JOIN conversions c ON c.id = t.conversion_id
           WHERE c.event_id = 'e1' ORDER BY t.position""")]
    assert vias == ["visitor", "click"]

    viewer = auth(tokens["viewer"])
    resp = await client.get("/api/v1/reports/attribution?program=acme", headers=viewer)
    assert resp.status == 200
    body = await resp.json()
    report = body["models"]
    assert {r["model"] for r in body["rows"]} == set(report)
    assert len(body["rows"]) == sum(len(rows) for rows in report.values())
    assert set(report) == {"first_touch", "last_touch", "linear", "time_decay",
                           "position_based", "markov", "shapley"}
    first = {r["referrer"]: r["conversions"] for r in report["first_touch"]}
    last = {r["referrer"]: r["conversions"] for r in report["last_touch"]}
    assert first == {"alice": 2, "carol": 1}
    assert last == {"bob": 2, "carol": 1}
    for model, rows in report.items():
        assert math.isclose(sum(r["conversions"] for r in rows), 3, abs_tol=1e-6), model
    resp = await client.get("/api/v1/reports/attribution?program=acme&model=markov",
                            headers=viewer)
    body = await resp.json()  # one model
    assert body["model"] == "markov" and body["rows"]
    resp = await client.get("/api/v1/reports/attribution?program=acme&model=magic",
                            headers=viewer)
    assert resp.status == 422

    resp = await client.get("/api/v1/reports/funnel?program=acme", headers=viewer)
    funnel = await resp.json()
    rows = {r["referrer"]: r for r in funnel["rows"]}
    assert rows["alice"]["clicks"] == 1 and rows["carol"]["clicks"] == 1  # the bot is out
    assert rows["alice"]["purchases"] == 0.5 and rows["bob"]["renewals"] == 0.5
    assert rows["alice"]["refunds"] == 1 and rows["bob"]["refunds"] == 1
    assert funnel["total"]["purchases"] == 2 and funnel["total"]["unique_visitors"] == 2


async def test_window_and_future_touches_are_excluded(
    client: Client, tokens: dict[str, str], conn: asyncpg.Connection
) -> None:
    await make_link(client, tokens, referrer="alice", code="al",
                    settings={"attribution_window_days": 7})
    cid, _vid = await visit(client, "al")
    await wait_for_clicks(conn, 1)
    # Converted before the click: the click cannot have caused it.
    past = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    await convert(client, tokens, event_id="before", customer_id="x", click_id=cid,
                  occurred_at=past)
    # Converted 8 days after the click (moved back in time to simulate it).
    await conn.execute("UPDATE clicks SET ts = ts - interval '8 days'")
    await convert(client, tokens, event_id="late", customer_id="y", click_id=cid)
    await attribute_pending(conn)
    assert await credits(conn, "before") == {}
    assert await credits(conn, "late") == {}


async def test_data_driven_program_model_credits_sum_to_one(
    client: Client, tokens: dict[str, str], conn: asyncpg.Connection
) -> None:
    await make_link(client, tokens, referrer="alice", code="al",
                    settings={"attribution_model": "shapley"})
    await make_link(client, tokens, referrer="bob", code="bo")
    for i in range(6):
        _, vid = await visit(client, "al", ua=f"{UA} {i}")
        cid, _ = await visit(client, "bo", vid, ua=f"{UA} {i}b")
        if i < 3:
            await wait_for_clicks(conn, 2 * (i + 1))
            await convert(client, tokens, event_id=f"s{i}", customer_id=f"c{i}", click_id=cid)
    _, lone = await visit(client, "bo", ua=UA + " lone")
    await wait_for_clicks(conn, 13)
    assert await attribute_pending(conn) == 3
    for i in range(3):
        shares = await credits(conn, f"s{i}")
        assert set(shares) == {"alice", "bob"}
        assert math.isclose(sum(shares.values()), 1.0, abs_tol=1e-12)
    assert await conn.fetchval("SELECT DISTINCT model FROM credits") == "shapley"
    # The lone visitor never converted: a lost journey the data-driven models are fitted on.
    program_id = await conn.fetchval("SELECT id FROM programs WHERE slug = 'acme'")
    bob = await conn.fetchval("SELECT id FROM referrers WHERE external_id = 'bob'")
    lost = [j for j in await load_journeys(conn, program_id) if j.lost]
    assert [j.referrers for j in lost].count((bob,)) >= 1
    assert await conn.fetchval(
        "SELECT count(*) FROM customer_visitors WHERE visitor_id = $1",
        lone.split(".", 1)[0]) == 0


async def test_a_typed_referral_code_credits_the_customers_later_conversions(
    client: Client, tokens: dict[str, str], conn: asyncpg.Connection,
) -> None:
    await make_link(client, tokens, referrer="carol", code="ca")
    await make_link(client, tokens, referrer="dave", code="da")
    now = datetime.now(UTC)
    # Signed up with carol's code at checkout (no click, no visitor), then bought twice
    # without it; another customer's code credits only that customer.
    await convert(client, tokens, event_id="s1", customer_id="cust-9", type="signup",
                  referral_code="ca", occurred_at=(now - timedelta(days=3)).isoformat())
    assert await attribute_pending(conn) == 1  # the later ones come in another run
    await convert(client, tokens, event_id="p1", customer_id="cust-9",
                  occurred_at=(now - timedelta(days=1)).isoformat())
    await convert(client, tokens, event_id="x1", customer_id="cust-8", referral_code="da",
                  occurred_at=(now - timedelta(days=2)).isoformat())
    await convert(client, tokens, event_id="p2", customer_id="cust-9")
    # Long before the code, and outside the window: no credit.
    await convert(client, tokens, event_id="old", customer_id="cust-9",
                  occurred_at=(now - timedelta(days=40)).isoformat())
    assert await attribute_pending(conn) == 4
    for event in ("s1", "p1", "p2"):
        assert await credits(conn, event) == {"carol": 1.0}, event
    assert await credits(conn, "x1") == {"dave": 1.0}
    assert await credits(conn, "old") == {}


async def test_data_driven_fits_do_not_count_this_batchs_converters_as_lost(
    client: Client, tokens: dict[str, str], conn: asyncpg.Connection,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    await make_link(client, tokens, referrer="alice", code="al",
                    settings={"attribution_model": "markov"})
    _, vid = await visit(client, "al")  # will convert
    await visit(client, "al", ua=UA + " other")  # never converts: the one lost journey
    await wait_for_clicks(conn, 2)
    await convert(client, tokens, event_id="m1", customer_id="cust-m", visitor_id=vid)
    fitted: list[list[Journey]] = []
    real_fit = attributing.fit

    def spy(model: str, journeys: list[Journey]) -> Any:
        fitted.append(journeys)
        return real_fit(model, journeys)

    monkeypatch.setattr(attributing, "fit", spy)
    assert await attribute_pending(conn) == 1
    [journeys] = fitted
    assert sum(j.conversions for j in journeys) == 1
    assert sum(j.lost for j in journeys) == 1


@pytest.mark.parametrize("batch", [attributing.BATCH, 1])
async def test_a_conversion_waits_for_its_click_while_it_is_still_in_a_journal(
    client: Client, tokens: dict[str, str], conn: asyncpg.Connection,
    owner_conn: asyncpg.Connection, monkeypatch: pytest.MonkeyPatch, batch: int,
) -> None:
    """After an outage or a failover the journal replays clicks while conversions naming them
    already arrive: attribution waits for the click rather than lose the referrer's credit,
    and the conversions after it (a batch full of waiting ones too) do not wait."""
    monkeypatch.setattr(attributing, "BATCH", batch)
    await make_link(client, tokens, referrer="alice", code="al")
    cid, _ = await visit(client, "al")
    await wait_for_clicks(conn, 1)
    # As if the click were still in a tracker's journal.
    await owner_conn.execute("CREATE TEMP TABLE held AS SELECT * FROM clicks")
    await owner_conn.execute("DELETE FROM clicks")
    await convert(client, tokens, event_id="e1", customer_id="c1", click_id=cid)
    await convert(client, tokens, event_id="e2", customer_id="c2")  # names no click: not held
    assert await attribute_pending(conn) == 1
    await owner_conn.execute("INSERT INTO clicks SELECT * FROM held")  # the journal replayed
    assert await attribute_pending(conn) == 1
    assert await credits(conn, "e1") == {"alice": 1.0}
    # A click id that no tracker answered is ignored once it had its time to arrive.
    await convert(client, tokens, event_id="e3", customer_id="c3",
                  click_id="0195511a-4c00-7000-8000-000000000001")
    assert await attribute_pending(conn) == 0
    await owner_conn.execute(
        f"""UPDATE conversions SET received_at = now() - interval '{CLICK_WAIT}'
                                                  - interval '1 second'
            WHERE event_id = 'e3'""")
    assert await attribute_pending(conn) == 1
    assert await credits(conn, "e3") == {}
