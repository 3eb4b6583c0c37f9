"""The demo's growth step (issue 15), after clearance: the candidates fitted, the asks job run,
its `referral.ask` webhooks delivered to a receiver of the demo's own, and some asked
customers sharing through their share page, whose channel links are then clicked.

The receiver is the merchant's end of the webhook, as small as one can be: an HTTP endpoint on
this machine's loopback, living as long as the demo, that checks each delivery's
`X-Refguard-Signature` with the program's signing secret (as the server gave it when the
program was made) and keeps what it took. A server delivers only to public addresses unless
REFGUARD_WEBHOOK_ALLOW_PRIVATE is set, and it validates `webhook_url` the same way, so the demo
(which holds the server's `webhooks` job lock meanwhile, see tracker.demo.build) puts its
receiver's URL in the program's settings itself and delivers the program's own outbox with
tracker.finance.webhooks.deliver_due (allow_private for that program only, the demo only);
once its receiver stops, the URL is taken off again, so later asks read `no_webhook_url`
rather than going to a closed port.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import asyncpg
from aiohttp import web

from tracker.demo.client import Api, gather, live_click, wait_for_clicks
from tracker.demo.scenario import ORGANIC, Account, Click, Conversion, Scenario
from tracker.settings import Settings
from tracker.signing import SignatureInvalid, verify_signature

SHARE_CHANNELS = ("whatsapp", "email", "sms")  # the buttons the asked customers press
DELIVERY_ROUNDS = 20


@dataclass(slots=True)
class Receiver:
    """A merchant's webhook endpoint for the demo: signed deliveries kept, others refused
    (401)."""

    secret: str
    deliveries: list[dict[str, Any]] = field(default_factory=list)  # (event, payload)
    refused: int = 0
    url: str = ""
    _runner: web.AppRunner | None = None

    async def _take(self, request: web.Request) -> web.Response:
        body = await request.read()
        try:
            verify_signature(request.headers.get("X-Refguard-Signature", ""), body, self.secret)
            payload = json.loads(body)
        except (SignatureInvalid, ValueError):
            self.refused += 1
            return web.Response(status=401)
        self.deliveries.append({"event": request.headers.get("X-Refguard-Event"),
                                "payload": payload})
        return web.Response(status=204)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/refguard", self._take)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}/refguard"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def asks(self) -> list[dict[str, Any]]:
        return [d["payload"]["ask"] for d in self.deliveries if d["event"] == "referral.ask"]


async def set_webhook_url(conn: asyncpg.Connection, program_id: int, url: str | None) -> None:
    """The program's webhook_url (module docstring: the server would refuse a loopback one)."""
    if url is None:
        await conn.execute("UPDATE programs SET settings = settings - 'webhook_url' "
                           "WHERE id = $1", program_id)
    else:
        await conn.execute("UPDATE programs SET settings = settings || jsonb_build_object("
                           "'webhook_url', $2::text) WHERE id = $1", program_id, url)


async def deliver(conn: asyncpg.Connection, settings: Settings, program_id: int) -> int:
    """The program's due webhooks to the demo's receiver; how many it took."""
    from tracker.finance.webhooks import deliver_due  # (late: see tracker.demo.build._decide)

    delivered = 0
    async with aiohttp.ClientSession() as session:
        for _ in range(DELIVERY_ROUNDS):
            n = await deliver_due(conn, settings.secret_key, session, allow_private=True,
                                  program_id=program_id)
            delivered += n
            if n == 0:
                break
    return delivered


async def share_after_asks(api: Api, conn: asyncpg.Connection, scenario: Scenario,
                           asks: list[dict[str, Any]], *, program: str, program_id: int,
                           live_ips: bool) -> list[Conversion]:
    """Asked customers answer: two in three open their share page and press a button (the
    channel's link is clicked by a friend or two), the others share elsewhere (POST
    /api/v1/shares with the ask). Behind a trusted proxy, each first friend signs up seconds
    later (otherwise every live click comes from this machine's address, and converting
    customers on one address would look like a ring). The signups are returned, to be posted
    once their time has come."""
    rng = random.Random(scenario.seed * 1_000_003 + 16)  # noqa: S311 (who shares how)
    clicks: list[Click] = []
    signups: list[Conversion] = []
    for i, ask in enumerate(sorted(asks, key=lambda a: int(a["ask_id"]))):
        channel = SHARE_CHANNELS[i % len(SHARE_CHANNELS)]
        if i % 3 == 2:
            await api.call("POST", "/api/v1/shares", {
                "program": program, "referrer": ask["customer_id"], "channel": "linkedin",
                "ask_id": ask["ask_id"]})
            continue
        token = urlsplit(str(ask["share_url"])).path.rsplit("/", 1)[-1]
        _, pressed = await api.call(
            "POST", f"/s/{token}/share", raw=f"channel={channel}&ask={ask['ask_id']}".encode(),
            token="", headers={"Content-Type": "application/x-www-form-urlencoded",
                               "Accept": "application/json", "Sec-Fetch-Site": "same-origin"},
            expect=(200,))
        code = str(pressed["link"]).rsplit("/r/", 1)[-1]
        sharer = Account(str(ask["customer_id"]), ORGANIC, "", code=code)
        for friend in range(rng.choice((1, 2))):
            click = scenario.click(sharer, scenario.now, scenario.person(), live=True)
            click.channel = channel
            clicks.append(click)
            if live_ips and friend == 0:
                signup = scenario.convert(ORGANIC, "signup", scenario.new_id(), None,
                                          person=click.person, click=click,
                                          after=timedelta(seconds=rng.uniform(0.5, 1.5)),
                                          email=scenario.email())
                if signup is not None:
                    signups.append(signup)

    async def browse(click: Click) -> None:
        await live_click(api.session, api.url, click)

    await gather(clicks, browse)
    if clicks:
        await wait_for_clicks(conn, program_id, [c.click_id for c in clicks])
    return signups

