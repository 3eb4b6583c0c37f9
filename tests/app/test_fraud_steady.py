"""A referrer whose traffic is unlike the program's (steady_converting), through the public
interfaces: clicks and purchases imported, attribution run, a full fraud scan, rewards released,
then GET /api/v1/rewards. A link whose clicks come as a steady stream, day after day, and nearly
all bring a one-time buyer (a code leaked to coupon sites) has those buyers' rewards held for
review, and its referrer's friend who came through a share on a social network is paid. A
genuine referrer with a steady stream of clicks that convert like the program's (a blog's
sidebar link) is paid, and so are the referrers who share their links in bursts. Several
parameter draws."""

from __future__ import annotations

import json
import random
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from tests.helpers import auth, make_link
from tracker.clicks.enrich import Enricher
from tracker.finance.clearance import release
from tracker.intake.importer import import_clicks, import_conversions
from tracker.scoring.credits import attribute_pending
from tracker.scoring.risk import scan

AGENTS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/{v}.0 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 Version/{v}.0"
    " Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 Chrome/{v}.0 Mobile Safari/537.36",
)
SETTINGS = {"hold_days": 0, "reward": {"currency": "USD", "rules": [
    {"beneficiary": "referrer", "on": "purchase", "flat": 1000}]}}
HONEST = 24
SOCIAL = "https://l.facebook.com/"


class _Traffic:
    """A program's 60 days of clicks and purchases, written as import files."""

    def __init__(self, rng: random.Random, start: datetime) -> None:
        self.rng, self.start = rng, start
        self.clicks: list[dict[str, Any]] = []
        self.conversions: list[dict[str, Any]] = []
        self.buyers: dict[str, str] = {}  # event id -> referrer

    def visit(self, code: str, at: datetime, referer: str | None = None) -> str:
        """A visitor of their own, on a network of their own."""
        n, rng = len(self.clicks), self.rng
        cid = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        line = {"ts": at.isoformat(), "code": code, "click_id": cid, "visitor_id": f"v{n}",
                "ip": f"{rng.randrange(20, 200)}.{rng.randrange(1, 250)}.{n % 250}.{n % 7 + 2}",
                "user_agent": rng.choice(AGENTS).format(v=100 + n % 30),
                "accept_language": "en-US,en;q=0.9"}
        if referer is not None:
            line["referer"] = referer
        self.clicks.append(line)
        return cid

    def buy(self, code: str, cid: str, at: datetime, customer: str | None = None) -> str:
        """A purchase minutes to a day after the click: people who came to buy do so soon."""
        event = f"p{len(self.conversions)}-{code}"
        delay = timedelta(minutes=min(self.rng.lognormvariate(3.5, 1.5), 1440.0))
        self.conversions.append({
            "program": "acme", "event_id": event, "type": "purchase",
            "customer_id": customer or f"cust-{event}", "click_id": cid, "currency": "USD",
            "amount": self.rng.choice((1900, 2900, 4900, 9900)),
            "occurred_at": (at + delay).isoformat()})
        self.buyers[event] = code
        return event

    def write(self, folder: Path) -> tuple[Path, Path]:
        clicks, conversions = folder / "clicks.ndjson", folder / "conversions.ndjson"
        clicks.write_text("".join(json.dumps(c) + "\n" for c in self.clicks))
        conversions.write_text("".join(json.dumps(c) + "\n" for c in self.conversions))
        return clicks, conversions


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_a_steady_stream_of_one_time_buyers_is_held_and_a_steady_blog_is_not(
    tokens: dict[str, str], conn: asyncpg.Connection,
    client: TestClient[web.Request, web.Application], tmp_path: Path, seed: int,
) -> None:
    rng = random.Random(seed)
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(days=61)
    traffic = _Traffic(rng, start)
    codes = [f"r{i}" for i in range(HONEST)] + ["leak", "blog"]
    for code in codes:
        await make_link(client, tokens, referrer=code, code=code, settings=SETTINGS)
    # Honest referrers share their link two or three times: a burst of clicks after each
    # share (on a social network or passed on in messages), a fifth of the visitors buy.
    rate = rng.uniform(0.15, 0.25)
    for code in codes[:HONEST]:
        for _share in range(rng.randint(2, 3)):
            shared = start + timedelta(days=rng.uniform(1, 55))
            for _ in range(rng.randint(6, 12)):
                at = shared + timedelta(hours=rng.expovariate(1 / 3))
                cid = traffic.visit(code, at, rng.choice((SOCIAL, None)))
                if rng.random() < rate:
                    traffic.buy(code, cid, at)
    # The leak: its code on coupon sites from day 15 on, a visit or two a day, most of
    # them shoppers who buy once.
    takes = rng.uniform(0.6, 0.85)
    first = rng.randint(10, 20)
    leaked: list[str] = []
    for day in range(first, 59):
        for _ in range(rng.choice((1, 1, 2))):
            at = start + timedelta(days=day, hours=rng.uniform(0, 24))
            cid = traffic.visit("leak", at, rng.choice(("https://www.coupons.example/acme",
                                                        None)))
            if rng.random() < takes:
                leaked.append(traffic.buy("leak", cid, at))
    # The leaking referrer's own friend, who opened a link the referrer posted to friends.
    at = start + timedelta(days=rng.uniform(30, 50))
    friend = traffic.buy("leak", traffic.visit("leak", at, SOCIAL), at, "leak-friend")
    # A blog's sidebar link: a visit or two every day, converting like the program.
    for day in range(2, 59):
        for _ in range(rng.choice((0, 1, 1, 2))):
            at = start + timedelta(days=day, hours=rng.uniform(0, 24))
            cid = traffic.visit("blog", at, "https://blog.example/")
            if rng.random() < rate:
                traffic.buy("blog", cid, at)

    clicks, conversions = traffic.write(tmp_path)
    imported = await import_clicks(conn, clicks, Enricher(b"k" * 32, ()))
    assert imported.stored == len(traffic.clicks), imported.bad
    assert (await import_conversions(conn, conversions, b"k" * 32)).stored == len(
        traffic.conversions)
    await attribute_pending(conn)
    await scan(conn)
    await release(conn)

    resp = await client.get("/api/v1/rewards?program=acme&limit=1000",
                            headers=auth(tokens["finance"]))
    assert resp.status == 200, await resp.text()
    rewards = {r["event_id"]: r for r in (await resp.json())["items"]}
    assert set(rewards) == set(traffic.buyers)
    # The leak's shoppers: held for finance on the referrer's traffic (one family of
    # evidence: flagged, not rejected), saying why.
    held = [e for e in leaked if rewards[e]["status"] == "flagged"]
    assert len(held) >= 0.9 * len(leaked), {e: rewards[e]["status"] for e in leaked}
    codes_of = {c["code"] for e in held for c in rewards[e]["reasons"]}
    assert "steady_converting" in codes_of
    reason = next(c for c in rewards[held[0]]["reasons"] if c["code"] == "steady_converting")
    assert "steady stream" in reason["message"] and reason["family"] == "population"
    # Everyone else is paid: the honest referrers' friends, the blog's readers, and the
    # leaking referrer's own friend.
    paid = [e for e, ref in traffic.buyers.items() if ref != "leak"] + [friend]
    assert all(rewards[e]["status"] == "approved" for e in paid), {
        e: (rewards[e]["status"], [c["code"] for c in rewards[e]["reasons"]])
        for e in paid if rewards[e]["status"] != "approved"}
