"""GET /r/{code}: the redirect, its cookie, and what reaches the visit log."""

from __future__ import annotations

import asyncio
import ipaddress
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import asyncpg
import pytest
from aiohttp import DummyCookieJar, web
from aiohttp.test_utils import TestClient

from tests.helpers import ClientFactory, auth, make_link, make_settings, wait_for_clicks
from tracker.clicks.links import LinkEntry
from tracker.settings import Settings
from tracker.web import keys
from tracker.web.app import create_app

Client = TestClient[web.Request, web.Application]
BROWSER_UA = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36"
)


def cid_of(location: str) -> str:
    values = parse_qs(urlsplit(location).query)["rg_cid"]
    assert len(values) == 1
    return values[0]


async def test_redirect_keeps_destination_and_incoming_query(
    client: Client, tokens: dict[str, str]
) -> None:
    await make_link(client, tokens)
    resp = await client.get(
        "/r/alice1?utm_source=mail&x=%C3%A9", allow_redirects=False,
        headers={"User-Agent": BROWSER_UA},
    )
    assert resp.status == 302
    location = resp.headers["Location"]
    parts = urlsplit(location)
    assert (parts.scheme, parts.netloc, parts.path, parts.fragment) == (
        "https", "shop.acme.test", "/landing", "top"
    )
    query = parse_qs(parts.query)
    assert query["src"] == ["ref"]
    assert query["utm_source"] == ["mail"]
    assert query["x"] == ["é"]
    assert len(query["rg_cid"]) == 1
    assert "no-store" in resp.headers["Cache-Control"]


async def test_visitor_cookie_is_set_once_and_kept(client: Client, tokens: dict[str, str],
                                                   conn: asyncpg.Connection) -> None:
    await make_link(client, tokens)
    first = await client.get("/r/alice1", allow_redirects=False)
    cookie = first.headers["Set-Cookie"]
    assert cookie.startswith("rg_vid=")
    for attribute in ("Max-Age=31536000", "HttpOnly", "SameSite=Lax", "Path=/"):
        assert attribute in cookie
    vid = cookie.split(";", 1)[0].split("=", 1)[1]
    again = await client.get(
        "/r/alice1", allow_redirects=False, headers={"Cookie": f"other=1; rg_vid={vid}"}
    )
    assert "Set-Cookie" not in again.headers
    await wait_for_clicks(conn, 2)
    rows = await conn.fetch("SELECT visitor_id, new_visitor FROM clicks ORDER BY ts")
    stored = vid.split(".", 1)[0]  # the id without its signature
    assert [(r["visitor_id"], r["new_visitor"]) for r in rows] == [(stored, True), (stored, False)]


async def test_a_thousand_redirects_make_exactly_a_thousand_rows(
    client: Client, tokens: dict[str, str], conn: asyncpg.Connection
) -> None:
    await make_link(client, tokens)
    answered: list[str] = []

    async def hit(i: int) -> None:
        resp = await client.get("/r/alice1", allow_redirects=False,
                                headers={"User-Agent": f"{BROWSER_UA} n{i}"})
        assert resp.status == 302
        answered.append(cid_of(resp.headers["Location"]))

    for start in range(0, 1000, 100):
        await asyncio.gather(*(hit(i) for i in range(start, start + 100)))
    assert len(set(answered)) == 1000
    assert await wait_for_clicks(conn, 1000) == 1000
    await asyncio.sleep(0.2)  # nothing more arrives
    stored = {str(r["click_id"]) for r in await conn.fetch("SELECT click_id FROM clicks")}
    assert stored == set(answered)


async def test_head_redirects_but_is_not_recorded(
    client: Client, tokens: dict[str, str], conn: asyncpg.Connection
) -> None:
    await make_link(client, tokens)
    resp = await client.head("/r/alice1", allow_redirects=False)
    assert resp.status == 302
    assert "rg_cid" not in resp.headers["Location"]
    resp = await client.get("/r/alice1", allow_redirects=False)  # a marker that flushing works
    assert await wait_for_clicks(conn, 1) == 1
    await asyncio.sleep(0.2)
    assert await conn.fetchval("SELECT count(*) FROM clicks") == 1


@pytest.mark.parametrize(
    ("user_agent", "rule"),
    [
        ("Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)", "Slackbot"),
        ("Twitterbot/1.0", "Twitterbot"),
        ("facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)",
         "facebookexternalhit"),
        ("WhatsApp/2.23.20.0 A", "WhatsApp"),
        ("TelegramBot (like TwitterBot)", "TelegramBot"),
        ("Mozilla/5.0 (compatible; Discordbot/2.0; +https://discordapp.com)", "Discordbot"),
        ("LinkedInBot/1.0 (compatible; Mozilla/5.0; Apache-HttpClient +http://www.linkedin.com)",
         "LinkedInBot"),
        ("curl/8.5.0", "curl"),
        ("python-requests/2.32.3", "python-requests"),
        ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
         "HeadlessChrome/120.0.0.0 Safari/537.36", "HeadlessChrome"),
        ("", "empty_user_agent"),
    ],
)
async def test_bots_are_recorded_with_the_rule_that_fired(
    client: Client, tokens: dict[str, str], conn: asyncpg.Connection, user_agent: str, rule: str
) -> None:
    await make_link(client, tokens)
    resp = await client.get("/r/alice1", allow_redirects=False,
                            headers={"User-Agent": user_agent})
    assert resp.status == 302  # bots are answered like anyone, only flagged
    await wait_for_clicks(conn, 1)
    row = await conn.fetchrow("SELECT is_bot, bot_rule FROM clicks")
    assert row["is_bot"] is True
    assert rule.lower() in row["bot_rule"].lower()


async def test_browser_is_not_a_bot_and_prefetch_is(
    client: Client, tokens: dict[str, str], conn: asyncpg.Connection
) -> None:
    await make_link(client, tokens)
    await client.get("/r/alice1", allow_redirects=False, headers={"User-Agent": BROWSER_UA})
    await client.get("/r/alice1", allow_redirects=False,
                     headers={"User-Agent": BROWSER_UA + " x", "Sec-Purpose": "prefetch"})
    await wait_for_clicks(conn, 2)
    rows = await conn.fetch("SELECT is_bot, bot_rule FROM clicks ORDER BY ts")
    assert [(r["is_bot"], r["bot_rule"]) for r in rows] == [(False, None), (True, "prefetch")]


async def test_duplicates_are_flagged_not_dropped(
    client: Client, tokens: dict[str, str], conn: asyncpg.Connection
) -> None:
    await make_link(client, tokens)
    await make_link(client, tokens, code="alice2")
    first = await client.get("/r/alice1", allow_redirects=False,
                             headers={"User-Agent": BROWSER_UA})
    vid = first.headers["Set-Cookie"].split(";", 1)[0].split("=", 1)[1]
    cookie = {"Cookie": f"rg_vid={vid}", "User-Agent": BROWSER_UA}
    await client.get("/r/alice1", allow_redirects=False, headers=cookie)  # same visitor
    await client.get("/r/alice2", allow_redirects=False, headers=cookie)  # other link: counts
    # Same device headers without the cookie, in a later flush batch: a new visitor, so another
    # person as far as duplicates go (behind one carrier NAT, most newcomers with the same
    # phone are; issue 13), not a duplicate that would cost a real referral its touchpoint.
    await wait_for_clicks(conn, 3)
    await client.get("/r/alice1", allow_redirects=False, headers={"User-Agent": BROWSER_UA})
    # A different device on the same link is not a duplicate.
    await client.get("/r/alice1", allow_redirects=False,
                     headers={"User-Agent": BROWSER_UA.replace("131", "130")})
    await wait_for_clicks(conn, 5)
    rows = await conn.fetch("SELECT code, is_duplicate FROM clicks ORDER BY ts")
    assert [(r["code"], r["is_duplicate"]) for r in rows] == [
        ("alice1", False), ("alice1", True), ("alice2", False), ("alice1", False),
        ("alice1", False),
    ]


async def test_incoming_rg_cid_cannot_be_forged(client: Client, tokens: dict[str, str]) -> None:
    await make_link(client, tokens)
    resp = await client.get("/r/alice1?rg_cid=forged&a=1", allow_redirects=False)
    query = parse_qs(urlsplit(resp.headers["Location"]).query)
    assert query["a"] == ["1"]
    assert query["rg_cid"] != ["forged"]
    assert len(query["rg_cid"]) == 1


@pytest.mark.parametrize(
    "path",
    [
        "/r/unknown",
        "/r/%00%01",
        "/r/bad%20code",
        "/r/..%2F..%2Fetc",
        "/r/" + "a" * 65,
        "/r/é",
        "/r/abc;def",
    ],
)
async def test_unknown_or_odd_codes_are_404(client: Client, tokens: dict[str, str],
                                           path: str) -> None:
    await make_link(client, tokens)
    resp = await client.get(path, allow_redirects=False)
    assert resp.status == 404


async def test_over_long_paths_and_huge_headers_are_4xx(
    client: Client, tokens: dict[str, str]
) -> None:
    await make_link(client, tokens)
    resp = await client.get("/r/" + "a" * 20000, allow_redirects=False)
    assert 400 <= resp.status < 500
    resp = await client.get("/r/alice1", allow_redirects=False,
                            headers={"User-Agent": "x" * 20000})
    assert 400 <= resp.status < 500
    resp = await client.get("/r/alice1?" + "q=1&" * 3000, allow_redirects=False)
    assert 400 <= resp.status < 500
    # Still healthy afterwards.
    resp = await client.get("/r/alice1", allow_redirects=False)
    assert resp.status == 302


async def test_odd_header_values_are_stored_safely(
    client: Client, tokens: dict[str, str], conn: asyncpg.Connection
) -> None:
    await make_link(client, tokens)
    resp = await client.get(
        "/r/alice1", allow_redirects=False,
        headers={"User-Agent": "Mozilla/5.0 \u00e9\u00e8 \udcff", "Referer": "x\ty",
                 "Accept-Language": "fr" * 500},
    )
    assert resp.status == 302
    assert await wait_for_clicks(conn, 1) == 1
    row = await conn.fetchrow("SELECT user_agent, referer, accept_language FROM clicks")
    assert row["user_agent"].startswith("Mozilla/5.0")
    assert len(row["accept_language"]) == 256


async def test_disabled_link_is_404_or_program_fallback(
    client: Client, tokens: dict[str, str]
) -> None:
    await make_link(client, tokens)
    resp = await client.patch("/api/v1/links/alice1", json={"enabled": False},
                              headers=auth(tokens["integration"]))
    assert resp.status == 200
    resp = await client.get("/r/alice1", allow_redirects=False)
    assert resp.status == 404
    resp = await client.patch(
        "/api/v1/programs/acme", json={"settings": {"fallback_url": "https://acme.test/sorry"}},
        headers=auth(tokens["admin"]),
    )
    assert resp.status == 200
    for _ in range(300):  # the program notification refreshes the cache
        resp = await client.get("/r/alice1", allow_redirects=False)
        if resp.status == 302:
            break
        await asyncio.sleep(0.05)
    assert resp.status == 302
    assert resp.headers["Location"] == "https://acme.test/sorry"


async def test_link_created_elsewhere_works_at_once(
    client: Client, tokens: dict[str, str], conn: asyncpg.Connection
) -> None:
    """A link inserted by another worker (here: straight into the database) is served."""
    await make_link(client, tokens)
    program_id, referrer_id = await conn.fetchrow("SELECT program_id, id FROM referrers")
    resp = await client.get("/r/fresh1", allow_redirects=False)
    assert resp.status == 404  # and now remembered as unknown ...
    await conn.execute(
        "INSERT INTO links (program_id, referrer_id, code, destination) "
        "VALUES ($1, $2, 'fresh1', 'https://acme.test/new')",
        program_id, referrer_id,
    )
    # ... until the notification arrives and forgets that.
    for _ in range(300):
        resp = await client.get("/r/fresh1", allow_redirects=False)
        if resp.status == 302:
            break
        await asyncio.sleep(0.05)
    assert resp.status == 302
    assert resp.headers["Location"].startswith("https://acme.test/new?rg_cid=")


async def test_untrusted_forwarded_for_is_ignored(
    client: Client, tokens: dict[str, str], conn: asyncpg.Connection
) -> None:
    await make_link(client, tokens)
    await client.get("/r/alice1", allow_redirects=False,
                     headers={"X-Forwarded-For": "203.0.113.9", "Forwarded": "for=198.51.100.1"})
    await wait_for_clicks(conn, 1)
    ip = await conn.fetchval("SELECT host(ip) FROM clicks")
    assert ipaddress.ip_address(ip).is_loopback


async def test_trusted_proxy_forwarded_for_is_believed(
    dsn: str, tokens: dict[str, str], conn: asyncpg.Connection, tmp_path: Path,
    aiohttp_client: ClientFactory,
) -> None:
    settings: Settings = make_settings(
        tmp_path / "d",
        dsn,
        trusted_proxies=(ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"),
                         ipaddress.ip_network("10.0.0.0/8")),
    )
    client = await aiohttp_client(create_app(settings), cookie_jar=DummyCookieJar())
    await make_link(client, tokens)
    # Client, then an untrusted hop the client may have forged, then our own proxy.
    await client.get("/r/alice1", allow_redirects=False,
                     headers={"X-Forwarded-For": "1.2.3.4, 203.0.113.9, 10.1.1.1"})
    await wait_for_clicks(conn, 1)
    assert await conn.fetchval("SELECT host(ip) FROM clicks") == "203.0.113.9"


async def test_redirect_never_leaves_the_stored_destination(
    client: Client, tokens: dict[str, str]
) -> None:
    await make_link(client, tokens)
    for suffix in ("?next=https://evil.test", "?%0d%0aLocation:%20https://evil.test",
                   "?@evil.test", "?#https://evil.test"):
        resp = await client.get("/r/alice1" + suffix, allow_redirects=False)
        assert resp.status == 302
        parts = urlsplit(resp.headers["Location"])
        assert parts.netloc == "shop.acme.test"
        assert "\r" not in resp.headers["Location"]


async def test_unknown_codes_share_look_ups_and_a_flood_does_not_queue(
    client: Client, tokens: dict[str, str]
) -> None:
    """Many requests for one unknown code make one database look-up; a flood of distinct
    unknown codes (a scanner) is answered 404 without queueing a look-up for each."""
    await make_link(client, tokens)
    links = client.app[keys.LINKS]
    calls: list[str] = []
    load_code = links._load_code

    async def counted(conn: asyncpg.Connection, code: str) -> LinkEntry | None:
        if code != "alice1":  # the listener may still be refreshing the link just made
            calls.append(code)
        return await load_code(conn, code)

    links._load_code = counted  # type: ignore[method-assign]
    answers = await asyncio.gather(*(client.get("/r/same404", allow_redirects=False)
                                     for _ in range(30)))
    assert {r.status for r in answers} == {404} and calls == ["same404"]
    calls.clear()
    answers = await asyncio.gather(*(client.get(f"/r/scan{i:03d}", allow_redirects=False)
                                     for i in range(100)))
    assert {r.status for r in answers} == {404}
    assert 1 <= len(calls) < 100, len(calls)
    assert (await client.get("/r/alice1", allow_redirects=False)).status == 302
