"""Sleeper cells through the public interfaces: `refguard import` of a program's 60 days,
`attribution run`, `fraud scan`, `rewards release`, then GET /api/v1/fraud/flags and
/api/v1/rewards.

An operator's aged accounts (each with a purchase of its own early on, then quiet) all get
their first referees in one window, within hours or spread over days, and those referees, his
too, buy minutes after the click: nothing else ties them (their own addresses, browsers and
ordinary amounts). The scan flags
them as one `sleeper_cell` flag naming the referrers, and holds the referees' rewards. A
merchant's mailing that wakes as many less active genuine referrers within hours is not a
cell: their friends buy when they like, and their rewards are approved."""

from __future__ import annotations

import asyncio
import json
import random
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from tests.helpers import auth, make_link

DAY = 86400.0
PROGRAM = "sleepy"
SETTINGS = {"attribution_model": "last_touch", "attribution_window_days": 30, "hold_days": 0,
            "reward": {"currency": "USD", "rules": [
                {"beneficiary": "referrer", "on": "purchase", "flat": 1000}]}}
UA = ("Mozilla/5.0 (Linux; Android {a}; SM-G99{m}B) AppleWebKit/537.36 (KHTML, like Gecko) "
      "Chrome/{v}.0.0.0 Mobile Safari/537.36")


class Traffic:
    """One program's clicks and purchases, each visitor on their own phone and address."""

    def __init__(self, rng: random.Random, start: datetime) -> None:
        self.rng = rng
        self.start = start
        self.clicks: list[dict[str, Any]] = []
        self.purchases: list[dict[str, Any]] = []
        self.referrers: list[str] = []

    def at(self, day: float) -> datetime:
        return self.start + timedelta(days=day)

    def own_purchase(self, referrer: str, day: float) -> None:
        """The referrer buys for themself (no link): they are a customer."""
        self.referrers.append(referrer)
        self._buy(referrer, self.at(day), None, f"own-{referrer}")

    def referee(self, referrer: str, customer: str, day: float, delay_s: float) -> None:
        """A visitor on the referrer's link who buys `delay_s` after the click."""
        rng, n = self.rng, len(self.clicks)
        click = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        clicked = self.at(day)
        self.clicks.append({
            "ts": clicked.isoformat(), "code": referrer, "click_id": click,
            "ip": f"{rng.choice((81, 86, 92, 176))}.{rng.randrange(1, 255)}."
                  f"{rng.randrange(1, 255)}.{n % 250 + 2}",
            "user_agent": UA.format(a=rng.randint(11, 14), m=rng.randint(0, 9),
                                    v=rng.randint(118, 131)),
            "accept_language": rng.choice(("en-US,en;q=0.9", "en-GB,en;q=0.8", "en")),
            "visitor_id": f"v-{customer}"})
        bought = clicked + timedelta(seconds=delay_s)
        if bought < self.at(60):  # (a later buyer has not bought yet)
            self._buy(customer, bought, click, f"p-{customer}")

    def _buy(self, customer: str, at: datetime, click: str | None, event: str) -> None:
        body: dict[str, Any] = {
            "program": PROGRAM, "event_id": event, "type": "purchase", "customer_id": customer,
            "amount": self.rng.choice((1900, 2900, 4500, 7900)), "currency": "USD",
            "occurred_at": at.isoformat()}
        if click is not None:
            body["click_id"] = click
        self.purchases.append(body)

    def person_delay(self) -> float:
        """How long people take from the click to the purchase: minutes to days."""
        return min(self.rng.lognormvariate(8.2, 1.9), 20 * DAY)


def draw(seed: int, spread_days: float, size: tuple[int, int]
         ) -> tuple[Traffic, list[str], list[str], list[str]]:
    """60 days of a program: genuine referrers (some quiet for weeks after their own
    purchase), a merchant's mailing waking genuine dormant referrers within hours, and a
    sleeper cell of `size` referrers (at least, at most) who wake within `spread_days`.
    Returns the traffic, the cell's referrers and referees, and the mailing's referrers."""
    rng = random.Random(seed)
    t = Traffic(rng, datetime.now(UTC).replace(microsecond=0) - timedelta(days=61))
    for i in range(rng.randint(35, 45)):  # referrers who share their link now and then
        ref = f"friendly{i}"
        t.own_purchase(ref, rng.uniform(0, 50))
        for f in range(rng.randint(1, 4)):
            t.referee(ref, f"{ref}-f{f}", rng.uniform(1, 58), t.person_delay())
    for i in range(rng.randint(25, 35)):  # quiet for weeks, then one share
        ref = f"quiet{i}"
        own = rng.uniform(0, 20)
        t.own_purchase(ref, own)
        woke = own + rng.uniform(8, 38)
        for f in range(rng.randint(1, 3)):
            t.referee(ref, f"{ref}-f{f}", woke + rng.uniform(0, 2), t.person_delay())
    mailing = [f"mailed{i}" for i in range(rng.randint(12, 25))]
    sent = rng.uniform(46, 52)
    for ref in mailing:
        t.own_purchase(ref, rng.uniform(0, 25))
        for f in range(rng.randint(1, 3)):
            t.referee(ref, f"{ref}-f{f}", sent + rng.expovariate(1 / 0.15), t.person_delay())
    cell = [f"sleeper{i}" for i in range(rng.randint(*size))]
    woke = rng.uniform(24, 32)
    bought: list[str] = []
    for ref in cell:
        t.own_purchase(ref, rng.uniform(0, 12))
        first = woke + rng.uniform(0, max(spread_days, 0.1))
        for f in range(rng.randint(1, 3)):
            bought.append(f"{ref}-f{f}")
            t.referee(ref, bought[-1], first + rng.uniform(0, 0.2), rng.uniform(120, 1200))
    return t, cell, bought, mailing


async def pages(client: TestClient[web.Request, web.Application], token: str, path: str,
                **params: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    query = {"program": PROGRAM, "limit": "500", **params}
    while True:
        resp = await client.get(path, params=query, headers=auth(token))
        assert resp.status == 200, await resp.text()
        page = await resp.json()
        items += page["items"]
        if not page.get("next"):
            return items
        query["cursor"] = page["next"]


# A cell woken within hours, and one woken over days among the program's own wakings.
@pytest.mark.parametrize(("seed", "spread_days", "size"), [
    (1, 0.1, (6, 10)), (2, 0.1, (6, 10)), (3, 2.5, (10, 14)), (4, 4.0, (10, 14))])
async def test_a_sleeper_cell_is_one_flag_and_a_mailing_is_not(
    dsn: str, tmp_path: Path, tokens: dict[str, str],
    client: TestClient[web.Request, web.Application], seed: int, spread_days: float,
    size: tuple[int, int],
) -> None:
    traffic, cell, bought, mailing = draw(seed, spread_days, size)
    for ref in traffic.referrers:
        await make_link(client, tokens, program=PROGRAM, referrer=ref, code=ref,
                        destination="https://shop.acme.test/", settings=SETTINGS)
    for name, rows in (("clicks", traffic.clicks), ("conversions", traffic.purchases)):
        (tmp_path / f"{name}.ndjson").write_text(
            "".join(json.dumps(row) + "\n" for row in rows))
    env = {"REFGUARD_DATABASE_URL": dsn, "REFGUARD_DATA_DIR": str(tmp_path / "cli")}

    async def refguard(*args: str) -> None:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tracker", *args, env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        _out, err = await proc.communicate()
        assert proc.returncode == 0, err.decode()

    await refguard("import", "--clicks", str(tmp_path / "clicks.ndjson"),
                   "--conversions", str(tmp_path / "conversions.ndjson"))
    await refguard("attribution", "run")
    await refguard("fraud", "scan")
    await refguard("rewards", "release")

    found = await pages(client, tokens["viewer"], "/api/v1/fraud/flags", kind="sleeper_cell")
    # One flag for the cell (each held purchase has its own flag, naming the cell's reason).
    flags = [f for f in found if f["conversion"] is None]
    assert len(flags) == 1, flags
    [flag] = flags
    referrers = {m["id"] for m in flag["members"] if m["type"] == "referrer"}
    customers = {m["id"] for m in flag["members"] if m["type"] == "customer"}
    # The cell's referrers and their buyers; no referrer the mailing woke, none of its readers'
    # friends.
    assert referrers >= set(cell) and not referrers & set(mailing), referrers
    assert customers >= set(bought) and not any(c.startswith("mailed") for c in customers)
    message = flag["reasons"][0]["message"]
    assert f"{len(referrers)} referrers quiet since their own first purchase" in message

    rewards = await pages(client, tokens["finance"], "/api/v1/rewards")
    status = {r["event_id"]: r["status"] for r in rewards if r["beneficiary"] == "referrer"}
    # Each of the cell's purchases is held for review (or rejected), none paid out.
    assert {status.get(f"p-{c}", "absent") for c in bought} <= {"flagged", "rejected"}, {
        c: status.get(f"p-{c}") for c in bought}
    # The mailing's readers' friends are rewarded.
    mailed = [e for e in status if e.startswith("p-mailed")]
    assert mailed and {status[e] for e in mailed} == {"approved"}, {
        e: status[e] for e in mailed if status[e] != "approved"}
