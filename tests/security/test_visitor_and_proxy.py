"""Issue 12, items 1, 4 and 9: the visitor cookie, the client IP behind a proxy, the query.

1. Referral theft by a forged visitor cookie. Alice refers Victor. Mallory, another referrer,
   sees Victor's landing URL (a shared screenshot, a referer log, a chat preview): it carries
   `rg_cid=<Victor's click id>`, and for a new visitor the old redirect made the visitor id
   that same id, believed from any `rg_vid` cookie. Mallory requests his own link with
   `Cookie: rg_vid=<Victor's click id>`, so his click joins Victor's visitor; the merchant
   reports Victor's purchase with Victor's click id, and last-touch attribution credits the
   latest click of that visitor: Mallory's.
4. Client IP spoofing behind a trusted proxy: only the first X-Forwarded-For line was read, and
   a client's X-Forwarded-For won over the proxy's Forwarded.
9. The visitor's query overriding the destination's own parameters (`?coupon=`) and a spelled
   `rg_cid` (`rg%5Fcid`) slipping past the stripping.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, parse_qsl, urlsplit

import asyncpg
from aiohttp import DummyCookieJar, web
from aiohttp.test_utils import TestClient

from tests.helpers import ClientFactory, auth, make_link, make_settings, wait_for_clicks
from tracker.clicks.enrich import ClientIp
from tracker.scoring.credits import attribute_pending
from tracker.web.app import create_app

Client = TestClient[web.Request, web.Application]
UA = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/131.0.0.0 Safari/537.36"
PROXIES = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))


def _cid(location: str) -> str:
    [cid] = parse_qs(urlsplit(location).query)["rg_cid"]
    return cid


def _cookie(resp: Any) -> str:
    """The rg_vid value a response sets."""
    set_cookie: str = resp.headers["Set-Cookie"]
    assert set_cookie.startswith("rg_vid=")
    return set_cookie.split(";", 1)[0].split("=", 1)[1]


async def _credits(conn: asyncpg.Connection, event_id: str) -> dict[str, float]:
    rows = await conn.fetch(
        """SELECT r.external_id, cr.credit FROM credits cr
           JOIN conversions c ON c.program_id = cr.program_id AND c.id = cr.conversion_id
           JOIN referrers r ON r.program_id = cr.program_id AND r.id = cr.referrer_id
           WHERE c.event_id = $1""", event_id)
    return {r["external_id"]: r["credit"] for r in rows}


async def _purchase(client: Client, tokens: dict[str, str], event: str, customer: str,
                    click_id: str) -> None:
    resp = await client.post("/api/v1/conversions", json={
        "program": "acme", "event_id": event, "type": "purchase", "customer_id": customer,
        "amount": 5000, "currency": "USD", "click_id": click_id,
    }, headers=auth(tokens["integration"]))
    assert resp.status == 201, await resp.text()


# -- 1. the visitor cookie ----------------------------------------------------------------------


async def test_a_forged_visitor_cookie_does_not_steal_the_referral(
    client: Client, tokens: dict[str, str], conn: asyncpg.Connection,
) -> None:
    await make_link(client, tokens, referrer="alice", code="alice")
    await make_link(client, tokens, referrer="mallory", code="mallory")
    # Victor follows Alice's link and lands on the shop with his click id in the URL.
    victor = await client.get("/r/alice", allow_redirects=False, headers={"User-Agent": UA})
    assert victor.status == 302
    victor_cid = _cid(victor.headers["Location"])
    victor_cookie = _cookie(victor)
    # Mallory saw that URL: he requests his own link posing as Victor's visitor, with the id
    # the old redirect would have given Victor, and with a cookie of the right shape whose
    # signature he had to make up.
    forged = (victor_cid, victor_cid.replace("-", "")[:24] + "." + "0" * 24)
    answers = []
    for n, cookie in enumerate(forged):
        resp = await client.get("/r/mallory", allow_redirects=False, headers={
            "User-Agent": f"{UA} m{n}", "Cookie": f"rg_vid={cookie}"})
        assert resp.status == 302
        answers.append(resp)
    await wait_for_clicks(conn, 3)
    # The merchant reports Victor's purchase with Victor's click id.
    await _purchase(client, tokens, "p1", "victor", victor_cid)
    assert await attribute_pending(conn) == 1
    assert await _credits(conn, "p1") == {"alice": 1.0}
    # The cookie is nothing the URL shows, and a forged one is a new visitor: Mallory got
    # cookies of his own.
    assert victor_cid not in victor_cookie
    assert all(_cookie(resp) not in forged for resp in answers)
    rows = await conn.fetch("SELECT code, visitor_id, new_visitor FROM clicks ORDER BY ts")
    assert [(r["code"], r["new_visitor"]) for r in rows] == [
        ("alice", True), ("mallory", True), ("mallory", True)]
    vids = [r["visitor_id"] for r in rows]
    assert len(set(vids)) == 3 and victor_cid not in vids
    # Stored and shown without its signature: the id is what precedes the dot in the cookie.
    assert vids[0] == victor_cookie.split(".", 1)[0]
    assert re.fullmatch(r"[0-9a-f]{24}", vids[0])


async def test_victors_own_cookie_keeps_his_visitor_and_a_tampered_one_does_not(
    client: Client, tokens: dict[str, str], conn: asyncpg.Connection,
) -> None:
    await make_link(client, tokens, referrer="alice", code="alice")
    first = await client.get("/r/alice", allow_redirects=False, headers={"User-Agent": UA})
    cookie = _cookie(first)
    again = await client.get("/r/alice", allow_redirects=False,
                             headers={"User-Agent": UA, "Cookie": f"x=1; rg_vid={cookie}"})
    assert "Set-Cookie" not in again.headers
    vid, mac = cookie.split(".")
    flipped = ("0" if vid[0] != "0" else "1") + vid[1:]
    for n, bad in enumerate((f"{flipped}.{mac}", f"{vid}.{mac[:-1]}", vid, f"{vid}.{mac}x")):
        resp = await client.get("/r/alice", allow_redirects=False,
                                headers={"User-Agent": f"{UA} {n}", "Cookie": f"rg_vid={bad}"})
        assert "Set-Cookie" in resp.headers, bad
    await wait_for_clicks(conn, 6)
    rows = await conn.fetch("SELECT visitor_id FROM clicks ORDER BY ts")
    assert [r["visitor_id"] for r in rows][:2] == [vid, vid]
    assert len({r["visitor_id"] for r in rows}) == 5


async def test_unsigned_era_visitor_ids_do_not_pass_a_named_click_to_a_later_referrer(
    client: Client, tokens: dict[str, str], conn: asyncpg.Connection,
) -> None:
    """Clicks stored before the cookie was signed: Mallory's forged click shares Victor's
    visitor id (Victor's click id) in the database. A conversion naming Victor's click still
    does not credit Mallory's later click."""
    await make_link(client, tokens, referrer="alice", code="alice")
    await make_link(client, tokens, referrer="mallory", code="mallory")
    victor = await client.get("/r/alice", allow_redirects=False, headers={"User-Agent": UA})
    victor_cid = _cid(victor.headers["Location"])
    await client.get("/r/mallory", allow_redirects=False, headers={"User-Agent": UA + " m"})
    await wait_for_clicks(conn, 2)
    # What the old redirect stored: both clicks under the visitor id Victor's click id.
    await conn.execute("UPDATE clicks SET visitor_id = $1", victor_cid)
    await _purchase(client, tokens, "p1", "victor", victor_cid)
    assert await attribute_pending(conn) == 1
    assert await _credits(conn, "p1") == {"alice": 1.0}


async def test_a_signed_visitors_later_click_keeps_its_credit(
    client: Client, tokens: dict[str, str], conn: asyncpg.Connection,
) -> None:
    """The rule's other side: with a signed cookie only the visitor's own browser adds clicks,
    so a later click of another referrer is a real later touch (last touch: all the credit),
    even when the merchant reports the earlier click id."""
    await make_link(client, tokens, referrer="alice", code="alice")
    await make_link(client, tokens, referrer="bob", code="bob")
    first = await client.get("/r/alice", allow_redirects=False, headers={"User-Agent": UA})
    await client.get("/r/bob", allow_redirects=False,
                     headers={"User-Agent": UA, "Cookie": f"rg_vid={_cookie(first)}"})
    await wait_for_clicks(conn, 2)
    await _purchase(client, tokens, "p1", "victor", _cid(first.headers["Location"]))
    await attribute_pending(conn)
    assert await _credits(conn, "p1") == {"bob": 1.0}


# -- 4. the client IP behind a trusted proxy ----------------------------------------------------


async def test_a_clients_forwarded_for_does_not_beat_the_trusted_proxy(
    dsn: str, tokens: dict[str, str], conn: asyncpg.Connection, tmp_path: Path,
    aiohttp_client: ClientFactory,
) -> None:
    settings = make_settings(tmp_path / "d", dsn, trusted_proxies=PROXIES)
    client = await aiohttp_client(create_app(settings), cookie_jar=DummyCookieJar())
    await make_link(client, tokens)
    attacks = {
        # The client's own X-Forwarded-For line, then the line the proxy added.
        "two_lines": ([("X-Forwarded-For", "6.6.6.6"), ("X-Forwarded-For", "198.51.100.7")],
                      "198.51.100.7"),
        # The proxy speaks Forwarded; the client made up an X-Forwarded-For.
        "forwarded": ([("X-Forwarded-For", "6.6.6.6"), ("Forwarded", 'for="198.51.100.8"')],
                      "198.51.100.8"),
        # A Forwarded header in two lines, the proxy's last (walked from the right).
        "forwarded_lines": ([("Forwarded", "for=6.6.6.6"),
                             ("Forwarded", "for=198.51.100.9;proto=https")], "198.51.100.9"),
    }
    cids = {}
    for n, (name, (headers, _)) in enumerate(attacks.items()):
        resp = await client.get("/r/alice1", allow_redirects=False,
                                headers=[*headers, ("User-Agent", f"{UA} {n}")])
        assert resp.status == 302
        cids[name] = _cid(resp.headers["Location"])
    await wait_for_clicks(conn, len(attacks))
    stored = {str(r["click_id"]): r["ip"] for r in await conn.fetch(
        "SELECT click_id, host(ip) AS ip FROM clicks")}
    assert {name: stored[cid] for name, cid in cids.items()} == {
        name: ip for name, (_, ip) in attacks.items()}


def test_client_ip_walks_all_hops_from_the_right() -> None:
    client_ip = ClientIp((*PROXIES, ipaddress.ip_network("10.0.0.0/8")))

    def resolve(peer: str, xff: str, forwarded: str) -> str | None:
        found = client_ip.resolve(peer, xff, forwarded)
        return None if found is None else found[0]

    # Joined lines: the client's forged "10.9.9.9, 6.6.6.6", then two trusted hops.
    assert resolve("127.0.0.1", "10.9.9.9, 6.6.6.6, 203.0.113.5, 10.0.0.2", "") == "203.0.113.5"
    # Both headers: Forwarded is the proxy's, whatever X-Forwarded-For claims.
    assert resolve("127.0.0.1", "6.6.6.6", 'for=192.0.2.1, for="[2001:db8::1]:4711"') == (
        "2001:db8::1")
    # Forwarded without any for= (only proto): X-Forwarded-For is all there is.
    assert resolve("127.0.0.1", "203.0.113.6", "proto=https") == "203.0.113.6"
    # An untrusted peer's headers are never read.
    assert resolve("198.51.100.1", "6.6.6.6", "for=6.6.6.7") == "198.51.100.1"


# -- 9. the visitor's query -------------------------------------------------------------------


async def test_the_visitors_query_cannot_override_the_destination_or_the_click_id(
    client: Client, tokens: dict[str, str],
) -> None:
    await make_link(client, tokens, code="alice1",
                    destination="https://shop.acme.test/landing?coupon=REF10&src=ref#top")
    attack = ("/r/alice1?coupon=FREE100&rg%5Fcid=forged&rg.cid=forged2&rg_cid[]=forged3"
              "&coupon%5B%5D=FREE&x=1;coupon=FREE&utm_source=mail&rg_cid=forged4")
    for method in ("GET", "HEAD"):
        resp = await client.request(method, attack, allow_redirects=False,
                                    headers={"User-Agent": UA})
        assert resp.status == 302
        parts = urlsplit(resp.headers["Location"])
        pairs = parse_qsl(parts.query, keep_blank_values=True)
        assert (parts.netloc, parts.fragment) == ("shop.acme.test", "top")
        expected = [("coupon", "REF10"), ("src", "ref"), ("utm_source", "mail")]
        if method == "GET":
            expected.append(("rg_cid", _cid(resp.headers["Location"])))
            assert not _cid(resp.headers["Location"]).startswith("forged")
        assert pairs == expected, method
