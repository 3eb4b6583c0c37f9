"""The finance review page: sessions and CSRF, the queue, one reward's evidence, decisions."""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import asyncpg
from aiohttp import DummyCookieJar, web
from aiohttp.test_utils import TestClient

from tests.helpers import (
    ClientFactory,
    auth,
    chromium,
    click_id,
    make_link,
    make_settings,
    needs_chromium,
    wait_for_clicks,
)
from tracker.finance.clearance import release
from tracker.scoring.credits import attribute_pending
from tracker.scoring.risk import scan
from tracker.web.app import create_app

Client = TestClient[web.Request, web.Application]
EVIL = "<script>x</script>"
PROGRAM: dict[str, Any] = {
    "reward": {"currency": "USD",
               "rules": [{"beneficiary": "referrer", "on": "purchase", "percent": 10}]},
    "hold_days": 0,
}


@dataclass(frozen=True)
class Order:
    event: str
    customer: str
    referrer: str
    ip: str
    amount: int  # the purchase; the reward is 10 %
    risk: float
    hours_flagged: int


# Risk order o2 o4 o1 o3; amount order o3 o1 o4 o2; age order (oldest first) o1 o4 o3 o2.
# o5 is below review_at and is approved by clearance, so never queued.
ORDERS = (
    Order("o1", "cust1", "alice", "203.0.113.7", 50_000, 0.62, 5),
    Order("o2", "cust2", "alice", "203.0.113.7", 12_000, 0.85, 1),
    Order("o3", "cust3", "bob", "81.2.69.10", 1_234_500, 0.55, 2),
    Order("o4", "cust4", EVIL, "81.2.69.11", 30_000, 0.70, 3),
    Order("o5", "cust5", "bob", "81.2.69.12", 20_000, 0.10, 0),
)


def risk_reasons(order: Order) -> list[dict[str, Any]]:
    return [
        {"code": "fast_conversion",
         "message": "converted 4.2 s after the click (click injection is seconds)",
         "value": 4.2, "threshold": 10.0, "weight": order.risk},
        {"code": "shared_network",
         "message": f"referee and referrer {order.referrer} use the same /24 network",
         "value": "same /24", "threshold": "different networks", "weight": 0.4},
    ]


def expected_status(order: Order) -> str:
    """What clearance does with the order's risk (review_at 0.5, reject_at 0.9)."""
    return "approved" if order.risk < 0.5 else "flagged" if order.risk < 0.9 else "rejected"


async def plant(aiohttp_client: ClientFactory, dsn: str, tmp_path: Path, tokens: dict[str, str],
                conn: asyncpg.Connection, orders: tuple[Order, ...] = ORDERS, **program: Any
                ) -> tuple[Client, dict[str, int]]:
    """Clicks and purchases through the real flow, risks set by hand, then clearance: of
    ORDERS, rewards o1-o4 flagged, o5 approved. Returns the client and the reward id of each
    order."""
    settings = make_settings(tmp_path / "d", dsn,
                             trusted_proxies=(ipaddress.ip_network("127.0.0.0/8"),))
    client = await aiohttp_client(create_app(settings), cookie_jar=DummyCookieJar())
    codes = {}
    for i, name in enumerate(dict.fromkeys(o.referrer for o in orders)):
        codes[name] = f"code{i}"
        await make_link(client, tokens, referrer=name, code=codes[name],
                        settings={**PROGRAM, **program})
    clicks = {}
    for i, order in enumerate(orders):
        # A browser of their own each: the same device on the same link again is a duplicate.
        resp = await client.get(f"/r/{codes[order.referrer]}", allow_redirects=False,
                                headers={"X-Forwarded-For": order.ip, "User-Agent": (
                                    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 "
                                    f"Chrome/{120 + i}.0 Safari/537.36")})
        assert resp.status == 302
        clicks[order.event] = click_id(resp.headers["Location"])
    assert await wait_for_clicks(conn, len(orders)) == len(orders)
    await conn.execute("UPDATE clicks SET ts = ts - interval '3 hours'")
    for order in orders:
        resp = await client.post("/api/v1/conversions", headers=auth(tokens["integration"]),
                                 json={"program": "acme", "event_id": order.event,
                                       "type": "purchase", "customer_id": order.customer,
                                       "amount": order.amount, "currency": "USD",
                                       "click_id": clicks[order.event]})
        assert resp.status == 201, await resp.text()
    assert await attribute_pending(conn) == len(orders)
    await scan(conn)
    for order in orders:
        await conn.execute(
            """UPDATE conversion_risk k SET score = $2, reasons = $3::jsonb FROM conversions c
               WHERE c.program_id = k.program_id AND c.id = k.conversion_id
                 AND c.event_id = $1""", order.event, order.risk, json.dumps(risk_reasons(order)))
    await release(conn)
    ids = {}
    for order in orders:
        ids[order.event] = await conn.fetchval(
            """UPDATE rewards r SET flagged_at = now() - make_interval(hours => $2)
               FROM conversions c WHERE c.program_id = r.program_id AND c.id = r.conversion_id
                 AND c.event_id = $1 RETURNING r.id""", order.event, order.hours_flagged)
    assert await statuses(conn, ids) == {o.event: expected_status(o) for o in orders}
    return client, ids


async def statuses(conn: asyncpg.Connection, ids: dict[str, int]) -> dict[str, str]:
    by_id = {r["id"]: r["status"] for r in await conn.fetch("SELECT id, status FROM rewards")}
    return {event: by_id[rid] for event, rid in ids.items()}


@dataclass(frozen=True)
class Login:
    cookie: str
    csrf: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Cookie": f"rg_review={self.cookie}"}


async def log_in(client: Client, token: str) -> Login:
    resp = await client.post("/review/login", data={"token": token}, allow_redirects=False)
    assert resp.status == 303, await resp.text()
    assert resp.headers["Location"] == "/review"
    cookie = resp.cookies["rg_review"].value
    html = await (await client.get("/review", headers={"Cookie": f"rg_review={cookie}"},
                                   allow_redirects=False)).text()
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, html
    return Login(cookie, found.group(1))


async def queue_ids(client: Client, login: Login, query: str = "") -> list[int]:
    resp = await client.get(f"/review{query}", headers=login.headers, allow_redirects=False)
    assert resp.status == 200
    return [int(i) for i in re.findall(r'name="id" value="(\d+)"', await resp.text())]


async def finance_actor(conn: asyncpg.Connection) -> str:
    token_id = await conn.fetchval("SELECT id FROM api_tokens WHERE name = 'test-finance'")
    return f"token:{token_id}:test-finance"


async def test_login_roles_session_cookie_and_logout(
    client: Client, tokens: dict[str, str], conn: asyncpg.Connection, dsn: str, tmp_path: Path,
    aiohttp_client: ClientFactory,
) -> None:
    for path in ("/review", "/review/rewards/1"):
        resp = await client.get(path, allow_redirects=False)
        assert (resp.status, resp.headers["Location"]) == (303, "/review/login")
    form = await client.get("/review/login")
    assert form.status == 200
    assert 'name="token"' in await form.text()
    assert form.headers["X-Frame-Options"] == "DENY"
    assert form.headers["Cache-Control"] == "no-store"
    csp = form.headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "unsafe-inline" not in csp
    # The stylesheet and the script are files of the app, each pinned by its integrity hash.
    html = await form.text()
    for tag in ('<link rel="stylesheet"', "<script"):
        found = re.search(tag + r' [^>]*(?:href|src)="([^"]+)" integrity="sha256-([^"]+)"', html)
        assert found, tag
        asset = await client.get(found.group(1))
        assert asset.status == 200 and asset.headers["X-Content-Type-Options"] == "nosniff"
        assert asset.content_type in ("text/css", "text/javascript")
        digest = base64.b64encode(hashlib.sha256(await asset.read()).digest()).decode()
        assert digest == found.group(2)
    assert (await client.get("/review/static/nope.js")).status == 404

    wrong = await client.post("/review/login", data={"token": "rg_nope"}, allow_redirects=False)
    assert wrong.status == 401 and "unknown or revoked" in await wrong.text()
    assert "Set-Cookie" not in wrong.headers
    refused = await client.post("/review/login", data={"token": tokens["integration"]},
                                allow_redirects=False)
    assert refused.status == 403 and "Set-Cookie" not in refused.headers
    assert "A integration token may not review rewards" in await refused.text()
    # A viewer signs in to the program pages only (tests/app/test_program_page.py).
    viewer = await client.post("/review/login", data={"token": tokens["viewer"]},
                               allow_redirects=False)
    assert viewer.status == 303 and viewer.headers["Location"] == "/review/programs"

    resp = await client.post("/review/login", data={"token": tokens["finance"]},
                             allow_redirects=False)
    assert resp.status == 303
    morsel = resp.cookies["rg_review"]
    assert (morsel["path"], morsel["samesite"], morsel["httponly"], morsel["secure"]) == (
        "/review", "Strict", True, "")
    login = await log_in(client, tokens["finance"])
    page = await client.get("/review", headers=login.headers, allow_redirects=False)
    assert page.status == 200
    html = await page.text()
    assert "0 flagged rewards wait" in html and "Nothing to review" in html
    assert "test-finance (finance)" in html
    # The viewer's session and the finance user's two.
    assert await conn.fetchval("SELECT count(*) FROM review_sessions") == 3
    # The database keeps only the session id's hash.
    assert await conn.fetchval("SELECT count(*) FROM review_sessions WHERE id_hash = $1",
                               login.cookie.encode()) == 0

    out = await client.post("/review/logout", data={"csrf": login.csrf}, headers=login.headers,
                            allow_redirects=False)
    assert (out.status, out.headers["Location"]) == (303, "/review/login")
    gone = await client.get("/review", headers=login.headers, allow_redirects=False)
    assert gone.status == 303
    assert await conn.fetchval("SELECT count(*) FROM review_sessions") == 2

    # Revoking the token ends its sessions at once.
    other = await log_in(client, tokens["finance"])
    await conn.execute("UPDATE api_tokens SET revoked_at = now() WHERE name = 'test-finance'")
    assert (await client.get("/review", headers=other.headers,
                             allow_redirects=False)).status == 303

    secure_app = create_app(make_settings(tmp_path / "s", dsn, public_url="https://ref.test"))
    secure = await aiohttp_client(secure_app, cookie_jar=DummyCookieJar())
    resp = await secure.post("/review/login", data={"token": tokens["admin"]},
                             allow_redirects=False)
    assert resp.status == 303 and resp.cookies["rg_review"]["secure"] is True


async def test_decisions_need_the_session_csrf_token(
    dsn: str, tmp_path: Path, tokens: dict[str, str], conn: asyncpg.Connection,
    aiohttp_client: ClientFactory,
) -> None:
    client, ids = await plant(aiohttp_client, dsn, tmp_path, tokens, conn)
    login = await log_in(client, tokens["finance"])
    url = f"/review/rewards/{ids['o1']}/approve"
    attempts = [({"reason": "ok"}, login.headers), ({"reason": "ok", "csrf": "x" * 43},
                                                    login.headers),
                ({"reason": "ok", "csrf": login.csrf}, {})]
    for data, headers in attempts:
        resp = await client.post(url, data=data, headers=headers, allow_redirects=False)
        assert resp.status == 403
        assert "Nothing was changed" in await resp.text()
    assert (await statuses(conn, ids))["o1"] == "flagged"
    assert await conn.fetchval("SELECT count(*) FROM audit_log WHERE action = 'reward.approve' "
                               "AND actor LIKE 'token:%'") == 0

    resp = await client.post(url, data={"reason": "  known customer,\n checked by phone ",
                                        "csrf": login.csrf},
                             headers=login.headers, allow_redirects=False)
    assert (resp.status, resp.headers["Location"]) == (303, "/review?approved=1")
    actor = await finance_actor(conn)
    row = await conn.fetchrow("SELECT status, decided_by, decision_reason FROM rewards "
                              "WHERE id = $1", ids["o1"])
    assert dict(row) == {"status": "approved", "decided_by": actor,
                         "decision_reason": "known customer, checked by phone"}
    audit = await conn.fetch("SELECT actor, reason FROM audit_log WHERE action = "
                             "'reward.approve' AND object_id = $1", str(ids["o1"]))
    assert [dict(a) for a in audit] == [{"actor": actor,
                                         "reason": "known customer, checked by phone"}]
    assert await conn.fetchval("SELECT amount FROM ledger_entries WHERE reward_id = $1",
                               ids["o1"]) == 5000
    html = await (await client.get("/review?approved=1", headers=login.headers)).text()
    assert "Approved 1 reward." in html and "3 flagged rewards wait" in html
    assert ids["o1"] not in await queue_ids(client, login)


async def test_queue_sorts_pages_and_bulk_approves_the_selection(
    dsn: str, tmp_path: Path, tokens: dict[str, str], conn: asyncpg.Connection,
    aiohttp_client: ClientFactory,
) -> None:
    client, ids = await plant(aiohttp_client, dsn, tmp_path, tokens, conn)
    login = await log_in(client, tokens["finance"])
    expected = {"risk": ["o2", "o4", "o1", "o3"], "amount": ["o3", "o1", "o4", "o2"],
                "age": ["o1", "o4", "o3", "o2"]}
    for sort, events in expected.items():
        assert await queue_ids(client, login, f"?sort={sort}") == [ids[e] for e in events], sort
    assert await queue_ids(client, login) == [ids[e] for e in expected["risk"]]
    resp = await client.get("/review?sort=amount", headers=login.headers)
    html = await resp.text()
    assert "4 flagged rewards wait" in html
    assert "1,234.50 USD" in html and "12.00 USD" in html and "0.85" in html
    assert "converted 4.2 s after the click" in html  # the top reason
    assert re.search(r"<td[^>]*>5 h</td>", html)  # o1's age
    # Odd parameters fall back to the defaults.
    assert await queue_ids(client, login, "?sort=bogus&offset=%C2%B2") == [
        ids[e] for e in expected["risk"]]
    beyond = await (await client.get("/review?offset=100", headers=login.headers)).text()
    assert "Nothing on this page" in beyond
    second = await client.get("/review?sort=risk&offset=2", headers=login.headers)
    assert await queue_ids(client, login, "?sort=risk&offset=2") == [ids["o1"], ids["o3"]]
    assert "Previous" in await second.text() and ">Next<" not in await second.text()

    chosen = [ids["o1"], ids["o3"], ids["o5"]]  # o5 was approved already: skipped
    resp = await client.post(
        "/review/bulk-approve", headers=login.headers, allow_redirects=False,
        data=[("csrf", login.csrf), ("sort", "amount"), ("reason", "batch checked")]
        + [("id", str(i)) for i in chosen])
    assert resp.status == 303
    assert parse_qs(urlsplit(resp.headers["Location"]).query) == {
        "sort": ["amount"], "approved": ["2"], "skipped": ["1"]}
    assert await statuses(conn, ids) == {"o1": "approved", "o2": "flagged", "o3": "approved",
                                         "o4": "flagged", "o5": "approved"}
    assert await conn.fetchval("SELECT count(*) FROM audit_log WHERE action = 'reward.approve' "
                               "AND actor = $1 AND reason = 'batch checked'",
                               await finance_actor(conn)) == 2
    # No selection, or no reason: nothing happens.
    for data in ([("csrf", login.csrf), ("reason", "x")],
                 [("csrf", login.csrf), ("reason", " "), ("id", str(ids["o2"]))]):
        refused = await client.post("/review/bulk-approve", data=data, headers=login.headers)
        assert refused.status == 400
        assert "Select at least one reward and give a reason" in await refused.text()
    assert (await statuses(conn, ids))["o2"] == "flagged"


async def test_user_text_is_escaped(
    dsn: str, tmp_path: Path, tokens: dict[str, str], conn: asyncpg.Connection,
    aiohttp_client: ClientFactory,
) -> None:
    client, ids = await plant(aiohttp_client, dsn, tmp_path, tokens, conn)
    login = await log_in(client, tokens["finance"])
    escaped = "&lt;script&gt;x&lt;/script&gt;"
    for path in ("/review", f"/review/rewards/{ids['o4']}"):
        html = await (await client.get(path, headers=login.headers)).text()
        assert EVIL not in html, path
        assert escaped in html, path
    detail = await (await client.get(f"/review/rewards/{ids['o4']}",
                                     headers=login.headers)).text()
    assert f"referee and referrer {escaped} use the same /24 network" in detail
    assert f"<title>referrer: {escaped}</title>" in detail


async def test_detail_evidence_missing_rewards_and_conflicts(
    dsn: str, tmp_path: Path, tokens: dict[str, str], conn: asyncpg.Connection,
    aiohttp_client: ClientFactory,
) -> None:
    # Above 25.00 two finance users must approve (o1: 50.00).
    client, ids = await plant(aiohttp_client, dsn, tmp_path, tokens, conn,
                              four_eyes_above=2500)
    login = await log_in(client, tokens["finance"])
    for path in ("/review/rewards/999999", "/review/rewards/abc", "/review/rewards/%C2%B2"):
        resp = await client.get(path, headers=login.headers)
        assert resp.status == 404 and "There is no such reward" in await resp.text()

    resp = await client.get(f"/review/rewards/{ids['o2']}", headers=login.headers)
    html = await resp.text()
    assert "12.00 USD" in html and "120.00 USD" in html  # the reward, the purchase
    assert "measured 4.2, threshold 10" in html
    assert "measured same /24, threshold different networks" in html
    assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", html)
    # The timeline: the click, then three hours later the purchase.
    assert html.index("click 1 via alice") < html.index("3 h later") < html.index(
        "purchase o2 by cust2")
    assert "10% of 120.00 USD, rule 1 of 1: referrer on purchase; " in html
    assert "credit 100%" in html
    assert "<svg" in html and html.count("<circle") >= 2 and 'class="t-referrer me"' in html
    # alice and her two customers share one address: the ring counts people, not the IP.
    assert "3 accounts): 3 accounts share 1 IP address that almost nobody else uses" in html
    assert 'action="/review/rewards/{}/approve"'.format(ids["o2"]) in html

    approve = f"/review/rewards/{ids['o1']}/approve"
    first = await client.post(approve, data={"csrf": login.csrf, "reason": "looks fine"},
                              headers=login.headers, allow_redirects=False)
    assert (first.status, first.headers["Location"]) == (303, "/review?first=1")
    assert (await statuses(conn, ids))["o1"] == "flagged"
    again = await client.post(approve, data={"csrf": login.csrf, "reason": "still fine"},
                              headers=login.headers)
    assert again.status == 409
    assert "you have approved this reward already" in await again.text()
    admin = await log_in(client, tokens["admin"])
    second = await client.post(approve, data={"csrf": admin.csrf, "reason": "agreed"},
                               headers=admin.headers, allow_redirects=False)
    assert (second.status, second.headers["Location"]) == (303, "/review?approved=1")
    assert (await statuses(conn, ids))["o1"] == "approved"

    blank = await client.post(f"/review/rewards/{ids['o2']}/reject",
                              data={"csrf": login.csrf, "reason": "\n "}, headers=login.headers)
    assert blank.status == 400 and "Give a reason" in await blank.text()
    rejected = await client.post(f"/review/rewards/{ids['o2']}/reject",
                                 data={"csrf": login.csrf, "reason": "shared network"},
                                 headers=login.headers, allow_redirects=False)
    assert rejected.headers["Location"] == "/review?rejected=1"
    assert (await statuses(conn, ids))["o2"] == "rejected"
    late = await client.post(f"/review/rewards/{ids['o2']}/reject",
                             data={"csrf": login.csrf, "reason": "again"},
                             headers=login.headers)
    assert late.status == 409
    text = await late.text()
    assert "Not done: the reward is rejected" in text and "Reward {}".format(ids["o2"]) in text
    history = await (await client.get(f"/review/rewards/{ids['o1']}",
                                      headers=login.headers)).text()
    for action in ("reward.approve.first", "reward.approve"):
        assert f"<td>{action}</td>" in history


@needs_chromium
async def test_a_real_browser_reviews_and_approves(
    dsn: str, tmp_path: Path, tokens: dict[str, str], conn: asyncpg.Connection,
    aiohttp_client: ClientFactory,
) -> None:
    client, ids = await plant(aiohttp_client, dsn, tmp_path, tokens, conn)
    target = ids["o2"]
    problems: list[str] = []
    async with chromium() as browser:
        page = await browser.new_page(viewport={"width": 1280, "height": 800})
        page.on("console", lambda msg: problems.append(msg.text)
                if "Content Security Policy" in msg.text else None)
        page.on("pageerror", lambda exc: problems.append(str(exc)))
        await page.goto(str(client.make_url("/review")))
        assert page.url.endswith("/review/login")
        await page.fill("#token", tokens["finance"])
        await page.click("main form button")
        await page.wait_for_url("**/review")
        assert "4 flagged rewards wait" in await page.inner_text("main")
        # The script ran: nothing selected yet, so the bulk button waits.
        assert await page.inner_text("#bulk") == "Approve selected (0)"
        assert await page.is_disabled("#bulk")
        await page.screenshot(path=str(tmp_path / "review.png"), full_page=True)

        await page.click(f'a[href="/review/rewards/{target}"]')
        await page.wait_for_url(f"**/review/rewards/{target}")
        main = await page.inner_text("main")
        assert "converted 4.2 s after the click" in main
        assert "measured 4.2, threshold 10" in main
        assert await page.locator("svg circle").count() >= 2
        assert await page.locator("svg circle.me").count() == 1
        # The stylesheet applied (served by the app, its integrity checked): the referrer dot
        # is orange.
        fill = await page.eval_on_selector("svg circle.me", "c => getComputedStyle(c).fill")
        assert fill == "rgb(217, 72, 15)"

        await page.screenshot(path=str(tmp_path / "review-detail.png"), full_page=True)

        await page.set_viewport_size({"width": 390, "height": 844})
        width = await page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390 + 2
        await page.screenshot(path=str(tmp_path / "review-detail-phone.png"), full_page=True)

        await page.fill("#approve-reason", "customer verified by phone")
        await page.click("#decide button:has-text('Approve')")
        await page.wait_for_url("**/review?approved=1")
        main = await page.inner_text("main")
        assert "Approved 1 reward." in main and "3 flagged rewards wait" in main
        assert await page.locator(f'a[href="/review/rewards/{target}"]').count() == 0
        assert await page.evaluate("document.documentElement.scrollWidth") <= 390 + 2
        await page.screenshot(path=str(tmp_path / "review-phone.png"), full_page=True)
    assert problems == []
    row = await conn.fetchrow("SELECT status, decided_by, decision_reason FROM rewards "
                              "WHERE id = $1", target)
    assert dict(row) == {"status": "approved", "decided_by": await finance_actor(conn),
                         "decision_reason": "customer verified by phone"}
