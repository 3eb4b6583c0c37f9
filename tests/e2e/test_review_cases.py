"""The review page by case (issue 14): the queue grouped by referrer and by ring, filters, group
decisions, automatic decisions overturned, the CSV downloads and the money in view."""

from __future__ import annotations

import csv
import io
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest

from tests.e2e.test_review_page import (
    ORDERS,
    Client,
    Order,
    finance_actor,
    log_in,
    plant,
    statuses,
)
from tests.helpers import ClientFactory, chromium, needs_chromium
from tracker.finance.evidence import Reason
from tracker.finance.ledger import FROM_STATUS
from tracker.finance.payouts import export_payouts

FORMULA = '=HYPERLINK("http://evil.test")'
# o1-o4 flagged, o5 approved by clearance, o6 and o7 rejected by clearance (risk above 0.9).
CASE_ORDERS = (*ORDERS,
               Order("o6", "cust6", "carol", "198.51.100.20", 40_000, 0.95, 0),
               Order("o7", FORMULA, "carol", "198.51.100.21", 60_000, 0.93, 0))


async def plant_cases(aiohttp_client: ClientFactory, dsn: str, tmp_path: Path,
                      tokens: dict[str, str], conn: asyncpg.Connection
                      ) -> tuple[Client, dict[str, int]]:
    client, ids = await plant(aiohttp_client, dsn, tmp_path, tokens, conn, orders=CASE_ORDERS)
    # o3 has a reason of its own, for the reason filter.
    await conn.execute(
        """UPDATE rewards SET reasons = reasons || '[{"code": "device_reuse", "message":
           "the buying device bought for 3 referrers", "value": 3, "threshold": 2,
           "weight": 0.7}]'::jsonb WHERE id = $1""", ids["o3"])
    return client, ids


def shown(html: str) -> list[int]:
    """The rewards listed by referrer (each once; the ring groups repeat them)."""
    part = html.split("<h2>By ring</h2>", maxsplit=1)[0]
    return [int(i) for i in re.findall(r'href="/review/rewards/(\d+)"', part)]


async def test_cases_filter_download_and_decide_by_group(
    dsn: str, tmp_path: Path, tokens: dict[str, str], conn: asyncpg.Connection,
    aiohttp_client: ClientFactory,
) -> None:
    client, ids = await plant_cases(aiohttp_client, dsn, tmp_path, tokens, conn)
    login = await log_in(client, tokens["finance"])

    async def listed(query: str = "") -> set[str]:
        resp = await client.get(f"/review/cases?{query}", headers=login.headers)
        assert resp.status == 200
        by_id = {v: k for k, v in ids.items()}
        return {by_id[i] for i in shown(await resp.text())}

    today = datetime.now(UTC).date()
    expected = {
        "": {"o1", "o2", "o3", "o4"},
        "status=rejected-auto": {"o6", "o7"},
        "status=approved-auto": {"o5"},
        "status=pending": set(),
        "q=cust3": {"o3"},
        "q=ALI": {"o1", "o2"},
        "min=30&max=60": {"o1", "o4"},  # rewards 50.00 and 30.00 USD
        "min=1000": {"o3"},
        "reason=device_reuse": {"o3"},
        "program=acme": {"o1", "o2", "o3", "o4"},
        "program=nope": set(),
        f"from={today + timedelta(days=1)}": set(),
        f"from={today}&to={today}": {"o1", "o2", "o3", "o4"},
        "status=rejected-auto&q=cust6": {"o6"},
    }
    for query, events in expected.items():
        assert await listed(query) == events, query
    html = await (await client.get("/review/cases?min=abc&status=bogus",
                                   headers=login.headers)).text()
    assert "Ignored what could not be read: status, min amount." in html
    assert len(shown(html)) == 4
    # Groups: alice's two rewards, money per currency; the ring of alice and her customers.
    html = await (await client.get("/review/cases", headers=login.headers)).text()
    assert "<strong>referrer:alice</strong>" in html and "2 rewards" in html
    assert "62.00 USD" in html  # 50.00 + 12.00
    assert re.search(r"<strong>ring:\d+</strong>", html)
    assert "customer cust1" in html
    assert "&lt;script&gt;" in html and "<script>x" not in html

    # The CSV is what the page shows, formulas defused (payouts.csv_cell).
    resp = await client.get("/review/cases.csv?status=rejected-auto", headers=login.headers)
    assert resp.status == 200 and resp.content_type == "text/csv"
    assert "attachment" in resp.headers["Content-Disposition"]
    table = list(csv.reader(io.StringIO(await resp.text())))
    assert table[0][:4] == ["reward_id", "program", "status", "amount"]
    assert sorted(int(r[0]) for r in table[1:]) == sorted([ids["o6"], ids["o7"]])
    customers = {r[7] for r in table[1:]}
    assert customers == {"cust6", "'" + FORMULA}
    assert (await client.get("/review/cases.csv", allow_redirects=False)).status == 303

    # A group decision needs the CSRF token, then is one decision (one audit row) per reward.
    form = {"q": "alice", "status": "flagged", "kind": "referrer", "group_program": "acme",
            "key": "alice", "reason": "shared network"}
    refused = await client.post("/review/groups/reject", data=form, headers=login.headers)
    assert refused.status == 403
    # Only the rewards the page showed are decided: o3 is not alice's, so not even posted.
    shown_ids = [("id", str(ids[e])) for e in ("o1", "o2", "o3")]
    resp = await client.post("/review/groups/reject",
                             data=[*{**form, "csrf": login.csrf}.items(), *shown_ids],
                             headers=login.headers, allow_redirects=False)
    assert resp.status == 303
    assert resp.headers["Location"] == "/review/cases?status=flagged&q=alice&rejected=2"
    assert (await statuses(conn, ids))["o1"] == "rejected"
    assert (await statuses(conn, ids))["o2"] == "rejected"
    assert (await statuses(conn, ids))["o3"] == "flagged"
    actor = await finance_actor(conn)
    rows = await conn.fetch("SELECT object_id, actor, reason FROM audit_log WHERE action = "
                            "'reward.reject' AND actor = $1", actor)
    assert sorted((r["object_id"], r["actor"], r["reason"]) for r in rows) == sorted(
        (str(ids[e]), actor, "group referrer:alice — shared network") for e in ("o1", "o2"))
    again = await client.post("/review/groups/reject", data={**form, "csrf": login.csrf},
                              headers=login.headers)
    assert again.status == 409 and "nothing was changed" in await again.text()
    # A group's rewards not on the page that was decided on (no ids posted) stay as they are.
    unseen = await client.post("/review/groups/approve", headers=login.headers, data={
        **form, "q": "", "key": "bob", "csrf": login.csrf})
    assert unseen.status == 409 and (await statuses(conn, ids))["o3"] == "flagged"
    blank = await client.post("/review/groups/approve",
                              data={**form, "csrf": login.csrf, "reason": " "},
                              headers=login.headers)
    assert blank.status == 400 and "Give a reason for the group" in await blank.text()
    # The person who rejected cannot approve it back (or approving a rejection is not
    # supported yet): a 409 that says so, nothing changed.
    own = await client.post(f"/review/rewards/{ids['o1']}/approve",
                            data={"csrf": login.csrf, "reason": "changed my mind"},
                            headers=login.headers)
    assert own.status == 409 and "Not done:" in await own.text()
    assert (await statuses(conn, ids))["o1"] == "rejected"

    # The calculation in words, and the people on the reward.
    detail = await (await client.get(f"/review/rewards/{ids['o6']}",
                                     headers=login.headers)).text()
    assert "10% of 400.00 USD, rule 1 of 1: referrer on purchase" in detail
    assert "automatically (clearance)" in detail


def test_reasons_split_by_whose_they_are() -> None:
    referrer = Reason.from_json({"code": "traffic_outlier", "message": "unlike the program",
                                 "family": "population", "weight": 0.6})
    ring = Reason.from_json({"code": "ring_referrer", "message": "in a ring", "weight": 0.3})
    own = Reason.from_json({"code": "same_device", "message": "same device", "weight": 0.9,
                            "family": "identity"})
    assert [r.about_referrer for r in (referrer, ring, own)] == [True, True, False]


@needs_chromium
async def test_a_real_browser_reviews_by_case(
    dsn: str, tmp_path: Path, tokens: dict[str, str], conn: asyncpg.Connection,
    aiohttp_client: ClientFactory,
) -> None:
    client, ids = await plant_cases(aiohttp_client, dsn, tmp_path, tokens, conn)
    shots = tmp_path / "screenshots"
    shots.mkdir()
    problems: list[str] = []
    batch_text: list[str] = []
    async with chromium() as browser:
        context = await browser.new_context(viewport={"width": 1366, "height": 768},
                                            accept_downloads=True)
        page = await context.new_page()
        page.on("console", lambda msg: problems.append(msg.text)
                if "Content Security Policy" in msg.text else None)
        page.on("pageerror", lambda exc: problems.append(str(exc)))
        await page.goto(str(client.make_url("/review/cases")))
        await page.fill("#token", tokens["finance"])
        await page.click("main form button")
        await page.wait_for_url("**/review")
        await page.click("nav.main a:has-text('Cases')")
        await page.wait_for_url("**/review/cases")
        assert "4 rewards flagged" in await page.inner_text("#summary")

        # Filter: from 30.00 up, flagged.
        await page.fill("#f-min", "30")
        await page.click("#apply")
        await page.wait_for_url("**/review/cases?**min=30**")
        summary = await page.inner_text("#summary")
        assert "3 rewards" in summary and "1,314.50 USD" in summary  # 50 + 1234.50 + 30
        await page.screenshot(path=str(shots / "cases-laptop.png"), full_page=True)

        # The queue CSV: exactly what is shown.
        async with page.expect_download() as info:
            await page.click("#csv")
        download = await info.value
        path = shots / "cases.csv"
        await download.save_as(str(path))
        got = sorted(int(r["reward_id"]) for r in csv.DictReader(io.StringIO(path.read_text())))
        assert got == sorted(ids[e] for e in ("o1", "o3", "o4"))

        # Open alice's group and reject it (only o1 is 30.00 or more).
        await page.fill("#f-min", "")
        await page.fill("#f-q", "alice")
        await page.click("#apply")
        await page.wait_for_url("**q=alice**")
        group = page.locator("details.group", has_text="referrer:alice").first
        await group.locator("summary").click()
        await group.locator("input[name=reason]").last.fill("one household, shared network")
        await page.screenshot(path=str(shots / "cases-group-laptop.png"), full_page=True)
        await group.locator("button:has-text('Reject the group')").click()
        await page.wait_for_url("**rejected=2**")
        assert "Rejected 2 rewards." in await page.inner_text("main")
        assert "0 rewards" in await page.inner_text("#summary")

        # Phone width: nothing wider than the screen.
        await page.set_viewport_size({"width": 390, "height": 844})
        await page.goto(str(client.make_url("/review/cases?status=rejected-auto")))
        await page.locator("details.group summary").first.click()
        assert await page.evaluate("document.documentElement.scrollWidth") <= 390 + 2
        await page.screenshot(path=str(shots / "cases-phone.png"), full_page=True)

        # A payout batch (o5, approved by clearance), then its CSV from the money page.
        batch_id, _lines = await export_payouts(conn, "test:payouts", batch_text.append)
        assert batch_id is not None
        await page.set_viewport_size({"width": 1366, "height": 768})
        await page.click("nav.main a:has-text('Money')")
        await page.wait_for_url("**/review/money")
        totals = await page.inner_text("#totals")
        assert "20.00 USD" in totals  # paid: o5
        assert "62.00 USD" in totals  # rejected by hand (o1 + o2); and o6, o7 automatically
        await page.screenshot(path=str(shots / "money-laptop.png"), full_page=True)
        async with page.expect_download() as info:
            await page.click(f'a[href="/review/payouts/{batch_id}.csv"]')
        download = await info.value
        path = shots / "batch.csv"
        await download.save_as(str(path))
        assert path.read_text() == batch_text[0]
        await page.set_viewport_size({"width": 390, "height": 844})
        assert await page.evaluate("document.documentElement.scrollWidth") <= 390 + 2
        await page.screenshot(path=str(shots / "money-phone.png"), full_page=True)

        # Overturn an automatic rejection: o6, rejected by clearance.
        await page.set_viewport_size({"width": 1366, "height": 768})
        await page.goto(str(client.make_url("/review/cases?status=rejected-auto")))
        await page.locator("details.group summary").first.click()
        await page.click(f'a[href="/review/rewards/{ids["o6"]}"]')
        await page.wait_for_url(f"**/review/rewards/{ids['o6']}")
        await page.screenshot(path=str(shots / "reward-rejected-laptop.png"), full_page=True)
        print("screenshots:", *sorted(str(p) for p in shots.glob("*.png")), sep="\n  ")
        assert problems == []
        if "rejected" not in FROM_STATUS["approve"]:
            pytest.xfail("tracker.finance.ledger.decide cannot approve a rejected reward yet "
                         "(the finance-core helper is adding the overturn)")
        await page.fill("#approve-reason", "customer verified by phone")
        await page.click("#decide button:has-text('Approve')")
        await page.wait_for_url("**/review?approved=1")
    assert problems == []
    row = await conn.fetchrow("SELECT status, decided_by FROM rewards WHERE id = $1", ids["o6"])
    assert dict(row) == {"status": "approved", "decided_by": await finance_actor(conn)}


async def test_a_referees_reward_names_whose_reasons_and_people(
    dsn: str, tmp_path: Path, tokens: dict[str, str], conn: asyncpg.Connection,
    owner_conn: asyncpg.Connection, aiohttp_client: ClientFactory,
) -> None:
    referee_rule = {"currency": "USD",
                    "rules": [{"beneficiary": "referrer", "on": "signup", "flat": 100},
                              {"beneficiary": "referee", "on": "purchase", "flat": 500}]}
    client, ids = await plant(aiohttp_client, dsn, tmp_path, tokens, conn, orders=(ORDERS[1],),
                              reward=referee_rule)
    await conn.execute(
        """UPDATE rewards SET reasons = reasons || '[{"code": "traffic_outlier", "message":
           "the referrer''s traffic is unlike the program''s", "value": 0.99,
           "threshold": 0.95, "weight": 0.5, "family": "population"}]'::jsonb
           WHERE id = $1""", ids["o2"])
    # Display names, where the schema has them (another change adds the column).
    await owner_conn.execute("ALTER TABLE referrers ADD COLUMN IF NOT EXISTS name text")
    await owner_conn.execute("UPDATE referrers SET name = 'Alice Liddell' "
                             "WHERE external_id = 'alice'")
    login = await log_in(client, tokens["finance"])
    html = await (await client.get(f"/review/rewards/{ids['o2']}",
                                   headers=login.headers)).text()
    assert "flat 5.00 USD, rule 2 of 2: referee on purchase" in html
    own = html.index("The referee's own (cust2)")
    theirs = html.index("The referrer's (alice)")
    assert own < html.index("converted 4.2 s after the click") < theirs
    assert theirs < html.index("the referrer&#39;s traffic is unlike the program&#39;s")
    assert "Alice Liddell <span class=\"muted\">alice</span>" in html
    cases = await (await client.get("/review/cases", headers=login.headers)).text()
    assert "<strong>referrer:alice</strong> (Alice Liddell)" in cases
    text = await (await client.get("/review/cases.csv", headers=login.headers)).text()
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [r["referrer_name"] for r in rows] == ["Alice Liddell"]


async def test_money_in_view(
    dsn: str, tmp_path: Path, tokens: dict[str, str], conn: asyncpg.Connection,
    aiohttp_client: ClientFactory,
) -> None:
    client, ids = await plant_cases(aiohttp_client, dsn, tmp_path, tokens, conn)
    login = await log_in(client, tokens["finance"])
    # o5 (20.00, bob) is paid in a batch, then clawed back; o3 (1,234.50, bob) approved by
    # finance is owed; o1-o4 less o3 wait; o6 and o7 were rejected by clearance.
    written: list[str] = []
    batch_id, _ = await export_payouts(conn, "test:payouts", written.append)
    pid = await conn.fetchval("SELECT id FROM programs WHERE slug = 'acme'")
    await conn.execute(
        """INSERT INTO ledger_entries (program_id, payee, currency, amount, kind, reward_id,
                                       actor) VALUES ($1, 'bob', 'USD', -2000, 'clawback', $2,
                                                      'test')""", pid, ids["o5"])
    resp = await client.post(f"/review/rewards/{ids['o3']}/approve", headers=login.headers,
                             data={"csrf": login.csrf, "reason": "known customer"},
                             allow_redirects=False)
    assert resp.status == 303
    html = await (await client.get("/review/money", headers=login.headers)).text()
    totals = html[html.index('id="totals"'):html.index('id="owed"')]
    cells = re.findall(r'<td class="num">([^<]*)', totals)
    assert [c.strip() for c in cells] == ["92.00 USD", "1,234.50 USD", "20.00 USD",
                                          "20.00 USD", "100.00 USD"]
    owed = html[html.index('id="owed"'):html.index('id="batches"')]
    assert "<td>bob</td>" in owed and "1,234.50 USD" in owed
    assert "1,214.50 USD" in owed  # the balance: 1,234.50 earned less the 20.00 clawed back
    assert f'href="/review/payouts/{batch_id}.csv"' in html
    resp = await client.get(f"/review/payouts/{batch_id}.csv", headers=login.headers)
    assert resp.status == 200 and resp.content_type == "text/csv"
    assert await resp.text() == written[0]
    for missing in ("00000000-0000-0000-0000-000000000000", "nope"):
        resp = await client.get(f"/review/payouts/{missing}.csv", headers=login.headers)
        assert resp.status == 404 and "no such payout batch" in await resp.text()
    other = await (await client.get("/review/money?program=nope", headers=login.headers)).text()
    assert "No rewards yet." in other and "No payouts yet." in other
    assert (await client.get(f"/review/payouts/{batch_id}.csv",
                             allow_redirects=False)).status == 303
