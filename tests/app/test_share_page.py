"""The share page (GET /s/{token}, POST /s/{token}/share) and share_url in referrer answers."""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from tests.helpers import SECRET, auth, make_link
from tracker.asks.sharing import channels, target
from tracker.programs.validation import SHARE_CHANNELS
from tracker.signing import share_token

Client = TestClient[web.Request, web.Application]
SETTINGS: dict[str, Any] = {
    "reward": {"currency": "USD", "rules": [
        {"beneficiary": "referrer", "on": "purchase", "flat": 2000},
        {"beneficiary": "referee", "on": "purchase", "flat": 1000}]},
    "share": {"message": "{name} says: 10% off at Acme, {referee_reward} for you. {link}",
              "channels": ["copy", "email", "sms", {"name": "whatsapp",
                                                    "message": "psst {link}"}, "x"]},
}


async def referrer(client: Client, tokens: dict[str, str], name: str = "Dana Berg",
                   external_id: str = "alice") -> dict[str, Any]:
    await make_link(client, tokens, referrer=external_id, code=f"{external_id}1",
                    settings=SETTINGS)
    resp = await client.post("/api/v1/referrers", headers=auth(tokens["integration"]),
                             json={"program": "acme", "external_id": external_id,
                                   "name": name})
    assert resp.status == 200, await resp.text()
    body: dict[str, Any] = await resp.json()
    return body


def path_of(share_url: str) -> str:
    return urlsplit(share_url).path


async def press(client: Client, path: str, channel: str, **extra: str) -> Any:
    return await client.post(f"{path}/share", data={"channel": channel, **extra},
                             allow_redirects=False)


async def test_referrer_answers_carry_their_share_page(
        client: Client, tokens: dict[str, str], conn: asyncpg.Connection) -> None:
    body = await referrer(client, tokens)
    ids = await conn.fetchrow("SELECT program_id, id FROM referrers WHERE external_id = 'alice'")
    assert body["share_url"] == ("http://localhost:8080/s/"
                                 + share_token(SECRET, ids["program_id"], ids["id"]))
    resp = await client.get("/api/v1/referrers?program=acme", headers=auth(tokens["viewer"]))
    assert [r["share_url"] for r in (await resp.json())["items"]] == [body["share_url"]]


async def test_the_page_shows_the_link_message_and_the_programs_channels(
        client: Client, tokens: dict[str, str]) -> None:
    path = path_of((await referrer(client, tokens))["share_url"])
    resp = await client.get(path)
    assert resp.status == 200
    html = await resp.text()
    assert "http://localhost:8080/r/alice1" in html  # the referrer's own link
    assert "Dana Berg says: 10% off at Acme, 10.00 USD for you. http://localhost:8080/r/alice1" \
        in html
    buttons = [v for v in ("copy", "share_sheet", "email", "sms", "whatsapp", "x", "linkedin",
                           "facebook") if f'value="{v}"' in html]
    assert buttons == ["copy", "email", "sms", "whatsapp", "x"]
    csp = resp.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "form-action 'self' mailto: sms:" in csp
    assert "<script>" not in html and "style=" not in html
    assert resp.headers["Referrer-Policy"] == "same-origin"


@pytest.mark.parametrize("token", [
    "nonsense", "1.1.000000000000000000000000", "1.1." + "g" * 24, "%00", "1" * 300,
    "ffffffffffffffff.ffffffffffffffff.000000000000000000000000",
])
async def test_a_bad_token_is_a_plain_404(client: Client, tokens: dict[str, str],
                                          token: str) -> None:
    await referrer(client, tokens)
    for resp in (await client.get(f"/s/{token}"),
                 await press(client, f"/s/{token}", "email")):
        assert resp.status == 404
        assert "does not exist" in await resp.text()


async def test_a_signed_token_of_no_referrer_is_a_404(client: Client, tokens: dict[str, str],
                                                       conn: asyncpg.Connection) -> None:
    await referrer(client, tokens)
    pid = await conn.fetchval("SELECT id FROM programs")
    resp = await client.get(f"/s/{share_token(SECRET, pid, 999)}")
    assert resp.status == 404
    resp = await client.get(f"/s/{share_token(SECRET, 999, 1)}")
    assert resp.status == 404


async def test_each_button_records_a_share_on_its_own_channel_link(
        client: Client, tokens: dict[str, str], conn: asyncpg.Connection) -> None:
    path = path_of((await referrer(client, tokens))["share_url"])
    resp = await press(client, path, "email")
    assert resp.status == 303
    location = resp.headers["Location"]
    assert location.startswith("mailto:?subject=Acme&body=")
    link = await conn.fetchrow("SELECT code, destination, channel FROM links "
                               "WHERE channel = 'email'")
    assert link["destination"] == "https://shop.acme.test/landing?src=ref#top"
    body = unquote(parse_qs(urlsplit(location).query)["body"][0])
    assert body.endswith(f"http://localhost:8080/r/{link['code']}")
    resp = await press(client, path, "whatsapp")
    wa = resp.headers["Location"]
    wa_code = await conn.fetchval("SELECT code FROM links WHERE channel = 'whatsapp'")
    # WhatsApp has a message of its own.
    assert wa == f"https://wa.me/?text=psst%20http%3A%2F%2Flocalhost%3A8080%2Fr%2F{wa_code}"
    shares = await conn.fetch("SELECT channel, source, ask_id FROM shares ORDER BY id")
    assert [tuple(s) for s in shares] == [("email", "page", None), ("whatsapp", "page", None)]

    # The same button again within the minute: led on, not recorded again, no second link.
    resp = await press(client, path, "email")
    assert resp.status == 303 and resp.headers["Location"] == location
    assert await conn.fetchval("SELECT count(*) FROM shares") == 2
    assert await conn.fetchval("SELECT count(*) FROM links WHERE channel = 'email'") == 1
    # A minute later it counts again.
    await conn.execute("UPDATE shares SET created_at = created_at - interval '61 seconds'")
    await press(client, path, "email")
    assert await conn.fetchval("SELECT count(*) FROM shares WHERE channel = 'email'") == 2


async def test_copy_answers_json_to_the_script_and_a_page_without_it(
        client: Client, tokens: dict[str, str], conn: asyncpg.Connection) -> None:
    path = path_of((await referrer(client, tokens))["share_url"])
    resp = await client.post(f"{path}/share", data={"channel": "copy"},
                             headers={"Accept": "application/json"})
    assert resp.status == 200
    answer = await resp.json()
    code = await conn.fetchval("SELECT code FROM links WHERE channel = 'copy'")
    assert answer["link"] == f"http://localhost:8080/r/{code}"
    assert answer["message"].endswith(answer["link"]) and answer["target"] is None
    assert answer["recorded"] is True
    await conn.execute("DELETE FROM shares")
    resp = await press(client, path, "copy")
    assert resp.status == 303 and resp.headers["Location"] == f"{path}?copy=1#message"
    html = await (await client.get(resp.headers["Location"])).text()
    assert f"/r/{code}</textarea>" in html and "Select the message and copy it." in html
    assert await conn.fetchval("SELECT channel FROM shares") == "copy"


async def test_an_ask_is_kept_only_when_it_is_the_referrers(
        client: Client, tokens: dict[str, str], conn: asyncpg.Connection) -> None:
    path = path_of((await referrer(client, tokens))["share_url"])
    await referrer(client, tokens, name="Bo", external_id="bob")
    asks = {}
    for who in ("alice", "bob"):
        asks[who] = await conn.fetchval(
            """INSERT INTO asks (program_id, customer_id, referrer_id, trigger_source, trigger_id,
                                 trigger_type, occurred_at, deadline, status, sent_at)
               SELECT program_id, external_id, id, 'event', id, 'nps', now(),
                      now() + interval '1 day', 'sent', now()
               FROM referrers WHERE external_id = $1 RETURNING id""", who)
    page = await (await client.get(f"{path}?ask={asks['alice']}")).text()
    assert f'name="ask" value="{asks["alice"]}"' in page
    await press(client, path, "sms", ask=str(asks["alice"]))
    await press(client, path, "x", ask=str(asks["bob"]))
    await press(client, path, "email", ask="12x")
    rows = await conn.fetch("SELECT channel, ask_id FROM shares ORDER BY id")
    assert [tuple(r) for r in rows] == [("sms", asks["alice"]), ("x", None), ("email", None)]


async def test_bad_presses_are_refused_plainly(client: Client, tokens: dict[str, str],
                                               conn: asyncpg.Connection) -> None:
    path = path_of((await referrer(client, tokens))["share_url"])
    for channel in ("facebook", "nonsense", ""):  # facebook is not on this program's page
        resp = await press(client, path, channel)
        assert resp.status == 404, channel
    resp = await client.post(f"{path}/share", data={"channel": "email"},
                             headers={"Sec-Fetch-Site": "cross-site"}, allow_redirects=False)
    assert resp.status == 403
    resp = await client.post(f"{path}/share", data="x" * 5000, allow_redirects=False,
                             headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert resp.status == 413
    resp = await client.post(f"{path}/share", json={"channel": "email"},
                             allow_redirects=False)
    assert resp.status == 415
    assert await conn.fetchval("SELECT count(*) FROM shares") == 0


async def test_a_disabled_link_closes_the_page(client: Client, tokens: dict[str, str],
                                               conn: asyncpg.Connection) -> None:
    path = path_of((await referrer(client, tokens))["share_url"])
    await conn.execute("UPDATE links SET enabled = false WHERE code = 'alice1'")
    assert (await client.get(path)).status == 404


async def test_a_referrer_without_a_link_gets_one_on_the_default_destination(
        client: Client, tokens: dict[str, str], conn: asyncpg.Connection) -> None:
    await referrer(client, tokens)
    resp = await client.post("/api/v1/referrers", headers=auth(tokens["integration"]),
                             json={"program": "acme", "external_id": "nolink"})
    path = path_of((await resp.json())["share_url"])
    assert (await client.get(path)).status == 200
    assert (await client.get(path)).status == 200
    rows = await conn.fetch("SELECT l.destination, l.channel FROM links l JOIN referrers r "
                            "ON r.program_id = l.program_id AND r.id = l.referrer_id "
                            "WHERE r.external_id = 'nolink'")
    assert [tuple(r) for r in rows] == [("https://acme.test/", None)]


def test_every_channel_has_a_target_or_stays_on_the_page() -> None:
    made = {c: target(c, text="hi & bye https://x.test/r/a", link="https://x.test/r/a",
                      subject="Acme") for c in SHARE_CHANNELS}
    assert made == {
        "copy": None, "share_sheet": None,
        "email": "mailto:?subject=Acme&body=hi%20%26%20bye%20https%3A%2F%2Fx.test%2Fr%2Fa",
        "sms": "sms:?&body=hi%20%26%20bye%20https%3A%2F%2Fx.test%2Fr%2Fa",
        "whatsapp": "https://wa.me/?text=hi%20%26%20bye%20https%3A%2F%2Fx.test%2Fr%2Fa",
        "x": "https://x.com/intent/post?text=hi%20%26%20bye%20https%3A%2F%2Fx.test%2Fr%2Fa",
        "linkedin": "https://www.linkedin.com/sharing/share-offsite/?url="
                    "https%3A%2F%2Fx.test%2Fr%2Fa",
        "facebook": "https://www.facebook.com/sharer/sharer.php?u=https%3A%2F%2Fx.test%2Fr%2Fa",
    }
    assert channels({}) == list(SHARE_CHANNELS)
    assert channels({"share": {"channels": ["x", {"name": "copy"}]}}) == ["copy", "x"]


@pytest.mark.parametrize(("share", "message"), [
    ({"channels": ["telegram"]}, "must be one of"),
    ({"channels": ["x", "x"]}, "listed twice"),
    ({"channels": [{"name": "x", "mesage": "m"}]}, "'message'"),
    ({"channels": [{"name": "x", "message": 5}]}, "share.channels[0].message"),
    ({"channels": "email"}, "must be a list"),
])
async def test_share_channels_are_checked(client: Client, tokens: dict[str, str],
                                          share: dict[str, Any], message: str) -> None:
    resp = await client.post("/api/v1/programs", headers=auth(tokens["admin"]), json={
        "slug": "acme", "name": "Acme", "destination_domains": ["acme.test"],
        "settings": {"share": share}})
    assert resp.status == 422
    assert message in (await resp.json())["error"]["message"]


async def test_presses_at_once_make_one_link_and_one_share(
        client: Client, tokens: dict[str, str], conn: asyncpg.Connection) -> None:
    await referrer(client, tokens)
    resp = await client.post("/api/v1/referrers", headers=auth(tokens["integration"]),
                             json={"program": "acme", "external_id": "fresh"})
    path = path_of((await resp.json())["share_url"])  # no link yet at all
    answers = await asyncio.gather(*(press(client, path, "sms") for _ in range(8)),
                                   *(client.get(path) for _ in range(4)))
    assert [a.status for a in answers] == [303] * 8 + [200] * 4
    rows = await conn.fetch("SELECT l.channel FROM links l JOIN referrers r ON r.program_id = "
                            "l.program_id AND r.id = l.referrer_id WHERE r.external_id = 'fresh'"
                            " ORDER BY l.channel NULLS FIRST")
    assert [r["channel"] for r in rows] == [None, "sms"]
    assert await conn.fetchval("SELECT count(*) FROM shares") == 1
