"""A merchant's shop for tests: people click referral links and buy, through the real endpoints.

Clicks go through `/r/{code}` from their own IP and browser (the app trusts 127.0.0.0/8 as a
proxy, so X-Forwarded-For names the visitor); conversions through POST /api/v1/conversions.
Clicks are moved three hours into the past before anyone buys, so purchases do not look like
click injection.
"""

from __future__ import annotations

import ipaddress
import json
import random
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
from aiohttp import DummyCookieJar, web
from aiohttp.test_utils import TestClient

from tests.helpers import ClientFactory, auth, click_id, make_link, make_settings, wait_for_clicks
from tracker.web.app import create_app

UA = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/{v}.0 Safari/537.36"
Client = TestClient[web.Request, web.Application]


class Shop:
    def __init__(self, client: Client, tokens: dict[str, str], conn: asyncpg.Connection,
                 program: str = "acme") -> None:
        self.client = client
        self.tokens = tokens
        self.conn = conn
        self.program = program
        self.clicks = 0
        self.people = 0
        self.cookies: dict[int, str] = {}  # person -> their signed rg_vid, as a browser keeps it

    @classmethod
    async def open(cls, aiohttp_client: ClientFactory, tmp_path: Path, dsn: str,
                   tokens: dict[str, str], conn: asyncpg.Connection,
                   settings: dict[str, Any], *, webhook_allow_private: bool = False) -> Shop:
        """A shop whose program has these settings. Jobs are off: tests run clearance.
        `webhook_allow_private`: its webhook_url may be a local receiver."""
        app_settings = make_settings(tmp_path / "data", dsn,
                                     trusted_proxies=(ipaddress.ip_network("127.0.0.0/8"),),
                                     webhook_allow_private=webhook_allow_private)
        client = await aiohttp_client(create_app(app_settings), cookie_jar=DummyCookieJar())
        shop = cls(client, tokens, conn)
        resp = await client.post("/api/v1/programs", json={
            "slug": shop.program, "name": "Acme", "destination_domains": ["acme.test"],
            "settings": settings}, headers=auth(tokens["admin"]))
        assert resp.status == 201, await resp.text()
        return shop

    async def referrer(self, name: str) -> None:
        await make_link(self.client, self.tokens, program=self.program, referrer=name, code=name)

    async def click(self, code: str, person: int | None = None) -> str:
        """A click on a link by person n (their own IP and browser); the click id."""
        if person is None:
            self.people += 1
            person = self.people
        headers = {"X-Forwarded-For": f"81.{person // 250}.{person % 250}.10",
                   "User-Agent": UA.format(v=60 + person % 70), "Accept-Language": "en"}
        if person in self.cookies:
            headers["Cookie"] = f"rg_vid={self.cookies[person]}"
        resp = await self.client.get(f"/r/{code}", allow_redirects=False, headers=headers)
        assert resp.status == 302
        if "Set-Cookie" in resp.headers:
            self.cookies[person] = resp.headers["Set-Cookie"].split(";", 1)[0].split("=", 1)[1]
        self.clicks += 1
        cid: str = click_id(resp.headers["Location"])
        return cid

    async def settle_clicks(self) -> None:
        await wait_for_clicks(self.conn, self.clicks)
        await self.conn.execute(
            "UPDATE clicks SET ts = ts - interval '3 hours' WHERE ts > now() - interval '1 hour'")

    async def convert(self, event: str, customer: str, *, type_: str = "purchase",
                      amount: int | None = 5000, currency: str | None = "USD",
                      click_id: str | None = None, original: str | None = None,
                      expect: int = 201) -> dict[str, Any]:
        body: dict[str, Any] = {"program": self.program, "event_id": event, "type": type_,
                                "customer_id": customer}
        if amount is not None:
            body["amount"] = amount
            if currency is not None:
                body["currency"] = currency
        if click_id is not None:
            body["click_id"] = click_id
        if original is not None:
            body["original_event_id"] = original
        resp = await self.client.post("/api/v1/conversions", json=body,
                                      headers=auth(self.tokens["integration"]))
        assert resp.status == expect, await resp.text()
        answer: dict[str, Any] = await resp.json()
        return answer

    async def buy(self, code: str, event: str, customer: str, **kwargs: Any) -> None:
        """Click, then (three hours later) buy."""
        cid = await self.click(code)
        await self.settle_clicks()
        await self.convert(event, customer, click_id=cid, **kwargs)

    async def rewards(self) -> dict[str, dict[str, Any]]:
        """Rewards by "<event_id>/<payee>"."""
        rows = await self.conn.fetch(
            """SELECT r.*, c.event_id FROM rewards r
               JOIN conversions c ON c.program_id = r.program_id AND c.id = r.conversion_id""")
        return {f"{r['event_id']}/{r['payee']}": dict(r) for r in rows}


class Street:
    """Visits from an address and a browser the test names (through the redirect, behind a
    trusted proxy) and purchases reported with them (the conversions API's ip and user_agent):
    for tests where who shares a network or a phone is the point."""

    def __init__(self, client: Client, tokens: dict[str, str], *,
                 language: str = "en-GB,en;q=0.9", amount: int = 1000) -> None:
        self.client = client
        self.integration = auth(tokens["integration"])
        self.language = language
        self.amount = amount
        self.clicks = 0

    async def visit(self, code: str, ip: str, ua: str) -> str:
        resp = await self.client.get(f"/r/{code}", allow_redirects=False,
                                     headers={"X-Forwarded-For": ip, "User-Agent": ua,
                                              "Accept-Language": self.language})
        assert resp.status == 302
        self.clicks += 1
        cid: str = click_id(resp.headers["Location"])
        return cid

    async def convert(self, event: str, customer: str, ip: str, ua: str,
                      cid: str | None = None) -> None:
        body: dict[str, Any] = {"program": "acme", "event_id": event, "type": "purchase",
                                "customer_id": customer, "amount": self.amount,
                                "currency": "USD", "ip": ip, "user_agent": ua}
        if cid is not None:
            body["click_id"] = cid
        resp = await self.client.post("/api/v1/conversions", json=body,
                                      headers=self.integration)
        assert resp.status == 201, await resp.text()

    async def paced(self, conn: asyncpg.Connection, rng: random.Random, *,
                    gap: float = 300, ago: str = "3 hours") -> None:
        """People click `gap` seconds apart on average, not at the test's machine pace (a paced
        stream is a click farm's), in the same order, ending `ago`, and buy a while after
        (seconds would be click injection)."""
        await wait_for_clicks(conn, self.clicks)
        ids = [r["click_id"] for r in await conn.fetch("SELECT click_id FROM clicks ORDER BY ts")]
        gaps = [rng.expovariate(1 / gap) for _ in ids]
        await conn.executemany(
            f"UPDATE clicks SET ts = now() - interval '{ago}' - make_interval(secs => $2) "
            "WHERE click_id = $1", [(cid, sum(gaps[i + 1:])) for i, cid in enumerate(ids)])


async def conversion_risks(conn: asyncpg.Connection
                           ) -> dict[str, tuple[float, list[dict[str, Any]]]]:
    """Each scored conversion's risk and reasons, by event id."""
    rows = await conn.fetch(
        """SELECT c.event_id, r.score, r.reasons::text AS reasons FROM conversion_risk r
           JOIN conversions c ON c.program_id = r.program_id AND c.id = r.conversion_id""")
    return {r["event_id"]: (r["score"], json.loads(r["reasons"])) for r in rows}


# What the `open_shop` fixture (tests/conftest.py) gives: Shop.open with the test's own server,
# database and tokens, called with the program's settings (and Shop.open's keywords).
ShopFactory = Callable[..., Awaitable[Shop]]
