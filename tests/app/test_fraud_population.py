"""Referrer-level evidence through the public interfaces: slow click injection (a click fired
between a customer's sign-up and purchase) is held; genuine customers who signed up before
clicking a friend's link are not."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from typing import Any

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from tests.helpers import auth, click_id, make_link, wait_for_clicks
from tracker.clicks.queries import ensure_partition
from tracker.scoring.credits import attribute_pending
from tracker.scoring.risk import scan

UA = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/{v}.0 Safari/537.36"


@pytest.mark.parametrize("seed", [1, 2])
async def test_slow_click_injection_is_held_and_organic_sign_ups_are_not(
    tokens: dict[str, str], conn: asyncpg.Connection,
    proxied_client: TestClient[web.Request, web.Application], seed: int,
) -> None:
    rng = random.Random(seed)
    client = proxied_client
    integration = auth(tokens["integration"])
    clicks = 0

    async def visit(code: str) -> str:
        nonlocal clicks
        ip = f"81.{rng.randrange(1, 250)}.{rng.randrange(1, 250)}.{clicks % 250 + 1}"
        resp = await client.get(f"/r/{code}", allow_redirects=False, headers={
            "X-Forwarded-For": ip, "User-Agent": UA.format(v=100 + clicks % 30),
            "Accept-Language": "en"})
        assert resp.status == 302
        clicks += 1
        cid: str = click_id(resp.headers["Location"])
        return cid

    async def convert(event: str, kind: str, customer: str, at: datetime,
                      cid: str | None) -> None:
        body: dict[str, Any] = {"program": "acme", "event_id": event, "type": kind,
                                "customer_id": customer, "occurred_at": at.isoformat(),
                                "amount": 0 if kind == "signup" else 2900, "currency": "USD"}
        if cid is not None:
            body["click_id"] = cid
        resp = await client.post("/api/v1/conversions", json=body, headers=integration)
        assert resp.status == 201, await resp.text()

    honest: list[tuple[str, str, bool]] = []  # (customer, click id, signed up first)
    for r in range(12):
        await make_link(client, tokens, referrer=f"r{r}", code=f"r{r}")
        for f in range(3):
            honest.append((f"friend{r}-{f}", await visit(f"r{r}"), rng.random() < 0.1))
    honest[0] = (honest[0][0], honest[0][1], True)  # at least one organic sign-up first
    await make_link(client, tokens, referrer="injector", code="injector")
    injected = [(f"victim{i}", await visit("injector")) for i in range(rng.randint(4, 7))]
    await wait_for_clicks(conn, clicks)
    # The visits were days ago: the purchases that followed are in the past too.
    await conn.execute("UPDATE clicks SET ts = ts - interval '3 days'")
    at = {r["click_id"]: r["ts"] for r in await conn.fetch(
        "SELECT click_id::text AS click_id, ts FROM clicks")}

    for customer, cid, first in honest:
        clicked = at[cid]
        if first:  # signed up on the site, then clicked a friend's link, bought later
            await convert(f"s-{customer}", "signup", customer,
                          clicked - timedelta(minutes=rng.uniform(2, 10)), None)
        else:
            await convert(f"s-{customer}", "signup", customer,
                          clicked + timedelta(minutes=rng.uniform(2, 30)), cid)
        await convert(f"p-{customer}", "purchase", customer,
                      clicked + timedelta(hours=rng.uniform(1, 40)), cid)
    for customer, cid in injected:
        clicked = at[cid]  # the click lands after the sign-up, minutes before the purchase
        await convert(f"s-{customer}", "signup", customer,
                      clicked - timedelta(minutes=rng.uniform(2, 10)), None)
        await convert(f"p-{customer}", "purchase", customer,
                      clicked + timedelta(seconds=rng.uniform(30, 400)), cid)
    await attribute_pending(conn)
    await scan(conn)

    risk = {r["event_id"]: r["score"] for r in await conn.fetch(
        """SELECT c.event_id, r.score FROM conversion_risk r
           JOIN conversions c ON c.program_id = r.program_id AND c.id = r.conversion_id""")}
    assert all(risk[f"p-{c}"] >= 0.5 for c, _cid in injected)
    assert all(risk[f"p-{c}"] < 0.5 for c, _cid, _first in honest), {
        c: risk[f"p-{c}"] for c, _cid, _first in honest}
    found = await client.get("/api/v1/fraud/flags?program=acme&kind=interjected_clicks",
                             headers=auth(tokens["viewer"]))
    assert found.status == 200
    items = (await found.json())["items"]
    customers = {m["id"] for f in items for m in f["members"] if m["type"] == "customer"}
    assert customers == {c for c, _cid in injected}
    reason = next(r for f in items for r in f["reasons"] if r["code"] == "interjected_clicks")
    assert "injector" in reason["message"] and reason["value"] is not None


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_steady_click_spam_that_converts_like_the_program_is_held(
    tokens: dict[str, str], conn: asyncpg.Connection,
    proxied_client: TestClient[web.Request, web.Application], seed: int,
) -> None:
    """Click spam that converts as well as the program (retargeting: clicks fired at
    visitors who were going to buy anyway): its clicks come as a steady stream, one or two a
    day, and its customers buy days after their click. Held. Honest referrers' clicks come in
    bursts after each share; one of them whose friends also buy days later is not held."""
    rng = random.Random(seed)
    client = proxied_client
    integration = auth(tokens["integration"])
    now = datetime.now(UTC).replace(microsecond=0)
    when: dict[str, datetime] = {}  # click id -> when it happened

    async def visit(code: str, at: datetime) -> str:
        n = len(when)
        resp = await client.get(f"/r/{code}", allow_redirects=False, headers={
            "X-Forwarded-For": f"82.{n // 250 % 250 + 1}.{rng.randrange(1, 250)}.{n % 250 + 1}",
            "User-Agent": UA.format(v=100 + n % 30), "Accept-Language": "en"})
        assert resp.status == 302
        cid: str = click_id(resp.headers["Location"])
        when[cid] = at
        return cid

    async def buy(customer: str, cid: str, after: timedelta) -> None:
        resp = await client.post("/api/v1/conversions", headers=integration, json={
            "program": "acme", "event_id": f"p-{customer}", "type": "purchase",
            "customer_id": customer, "click_id": cid, "currency": "USD",
            "amount": rng.choice((2900, 4900, 9900)),
            "occurred_at": (when[cid] + after).isoformat()})
        assert resp.status == 201, await resp.text()

    start = now - timedelta(days=50)
    buyers: dict[str, tuple[str, timedelta]] = {}  # customer -> (click id, delay)
    # Honest referrers: clicks on the two or three days they shared, a third of the visitors
    # buy, mostly within the day.
    for r in range(14):
        code = f"r{r}"
        await make_link(client, tokens, referrer=code, code=code)
        shares = [start + timedelta(days=rng.uniform(0, 45)) for _ in range(rng.randint(2, 3))]
        for i in range(rng.randint(6, 10)):
            cid = await visit(code, rng.choice(shares) + timedelta(hours=rng.uniform(0, 6)))
            if i % 3 == 0:
                buyers[f"{code}-{i}"] = (cid, timedelta(hours=rng.lognormvariate(0.5, 1.2)))
    # An honest referrer with a big audience whose buyers take days: clicks in bursts.
    await make_link(client, tokens, referrer="slowfriends", code="slowfriends")
    shares = [start + timedelta(days=d) for d in (3, 20, 38)]
    for i in range(rng.randint(36, 44)):
        cid = await visit("slowfriends", rng.choice(shares) + timedelta(hours=rng.uniform(0, 5)))
        if i % 5 == 0:
            buyers[f"slowfriends-{i}"] = (cid, timedelta(days=rng.uniform(2, 9)))
    # The spammer: a click or two every day, a fifth of them buy, days later.
    await make_link(client, tokens, referrer="spammer", code="spammer")
    spammed: list[str] = []
    for day in range(rng.randint(36, 44)):
        for _ in range(rng.choice((1, 1, 2))):
            cid = await visit("spammer", start + timedelta(days=day, hours=rng.uniform(0, 24)))
            if rng.random() < 0.2 or (len(spammed) < 4 and day > 30):
                customer = f"spam-{len(spammed)}"
                spammed.append(customer)
                buyers[customer] = (cid, timedelta(days=rng.uniform(1.5, 12)))
    await wait_for_clicks(conn, len(when))
    for month in {at.replace(day=1, hour=12) for at in when.values()}:
        await ensure_partition(conn, month)
    await conn.executemany("UPDATE clicks SET ts = $2 WHERE click_id = $1::uuid",
                           list(when.items()))
    for customer, (cid, delay) in buyers.items():
        await buy(customer, cid, delay)
    await attribute_pending(conn)
    await scan(conn)

    risk = {r["event_id"]: r["score"] for r in await conn.fetch(
        """SELECT c.event_id, r.score FROM conversion_risk r
           JOIN conversions c ON c.program_id = r.program_id AND c.id = r.conversion_id""")}
    assert all(risk[f"p-{c}"] >= 0.5 for c in spammed), {c: risk[f"p-{c}"] for c in spammed}
    honest = [c for c in buyers if not c.startswith("spam-")]
    assert all(risk[f"p-{c}"] < 0.5 for c in honest), {c: risk[f"p-{c}"] for c in honest
                                                        if risk[f"p-{c}"] >= 0.5}
    found = await client.get("/api/v1/fraud/flags?program=acme&kind=steady_late_clicks",
                             headers=auth(tokens["viewer"]))
    assert found.status == 200
    items = (await found.json())["items"]
    assert {m["id"] for f in items for m in f["members"] if m["type"] == "referrer"} == {
        "spammer"}
    reason = next(r for f in items for r in f["reasons"] if r["code"] == "steady_late_clicks")
    assert "steady stream" in reason["message"]


@pytest.mark.parametrize("seed", [1, 2])
async def test_a_click_farm_pacing_its_clicks_is_flagged_through_the_api(
    tokens: dict[str, str], conn: asyncpg.Connection,
    proxied_client: TestClient[web.Request, web.Application], seed: int,
) -> None:
    """A click farm's workers open the link one visit after another through a shift, every
    fifteen minutes give or take a third; honest referrers' friends click in bursts after each
    share. The scan measures the gaps between each referrer's counted clicks in the database
    (a bot's clicks left out) and flags the farm's purchases on them (even_clicks); no honest
    referrer is found even."""
    rng = random.Random(seed)
    client = proxied_client
    integration = auth(tokens["integration"])
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(days=30)
    when: dict[str, datetime] = {}

    async def visit(code: str, at: datetime, agent: str | None = None) -> str:
        n = len(when)
        resp = await client.get(f"/r/{code}", allow_redirects=False, headers={
            "X-Forwarded-For": f"83.{n // 250 % 250 + 1}.{rng.randrange(1, 250)}.{n % 250 + 1}",
            "User-Agent": agent or UA.format(v=100 + n % 30), "Accept-Language": "en"})
        assert resp.status == 302
        cid: str = click_id(resp.headers["Location"])
        when[cid] = at
        return cid

    buyers: dict[str, str] = {}
    for r in range(10):
        code = f"r{r}"
        await make_link(client, tokens, referrer=code, code=code)
        shares = [start + timedelta(days=rng.uniform(0, 25)) for _ in range(3)]
        for i in range(rng.randint(12, 18)):
            share = rng.choice(shares)
            cid = await visit(code, share + timedelta(seconds=rng.expovariate(1 / 5400)))
            if i % 4 == 0:
                buyers[f"{code}-{i}"] = cid
    await make_link(client, tokens, referrer="farm", code="farm")
    farm: list[str] = []
    at = start + timedelta(days=10, hours=8)
    for _ in range(rng.randint(18, 22)):
        farm.append(await visit("farm", at))
        at += timedelta(minutes=15 * rng.uniform(0.67, 1.33))
    # A crawler's clicks on the farm's link are not counted, nor measured.
    await visit("farm", at + timedelta(seconds=1), agent="curl/8.5.0")
    await wait_for_clicks(conn, len(when))
    for month in {t.replace(day=1, hour=12) for t in when.values()}:
        await ensure_partition(conn, month)
    await conn.executemany("UPDATE clicks SET ts = $2 WHERE click_id = $1::uuid",
                           list(when.items()))
    for i, cid in enumerate(farm):
        buyers[f"farm-{i}"] = cid
    for customer, cid in buyers.items():
        resp = await client.post("/api/v1/conversions", headers=integration, json={
            "program": "acme", "event_id": f"p-{customer}", "type": "purchase",
            "customer_id": customer, "click_id": cid, "currency": "USD", "amount": 2900,
            "occurred_at": (when[cid] + timedelta(minutes=rng.uniform(5, 90))).isoformat()})
        assert resp.status == 201, await resp.text()
    await attribute_pending(conn)
    await scan(conn)

    found = await client.get("/api/v1/fraud/flags?program=acme&kind=even_clicks",
                             headers=auth(tokens["viewer"]))
    assert found.status == 200
    items = (await found.json())["items"]
    assert {m["id"] for f in items for m in f["members"] if m["type"] == "referrer"} == {
        "farm"}
    reason = next(r for f in items for r in f["reasons"] if r["code"] == "even_clicks")
    times = sorted(when[cid].timestamp() for cid in farm)
    gaps = [b - a for a, b in pairwise(times)]
    spread = [abs(a / (a + b) - 0.5) for a, b in pairwise(gaps)]
    assert reason["value"] == pytest.approx(sum(spread) / len(spread), abs=1e-4)
    risk = {r["event_id"]: r["score"] for r in await conn.fetch(
        """SELECT c.event_id, r.score FROM conversion_risk r
           JOIN conversions c ON c.program_id = r.program_id AND c.id = r.conversion_id""")}
    assert all(risk[f"p-farm-{i}"] >= 0.5 for i in range(len(farm)))
