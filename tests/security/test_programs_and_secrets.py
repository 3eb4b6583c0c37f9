"""Issue 12, items 3, 10, 13, 18 and 19: program domains, webhook targets, signing secrets and
settings, each test written as the attack (or the mistake) it stops.

3. Open redirect through `ß`: Python's IDNA 2003 codec reads `claßic.com` as `classic.com`, so
   the destination passed for the program domain classic.com; browsers (UTS #46
   non-transitional) go to `xn--claic-nqa.com`, a domain anyone can register.
10. Removing a domain from a program while enabled links still lead there: the redirect kept
   sending visitors to a domain the program no longer owns.
13. Webhook URLs at internal addresses (loopback, cloud metadata at 169.254.169.254, private
   ranges, a public name whose DNS later answers 127.0.0.1), and the credentials of a webhook
   URL shown to every viewer and written to the logs.
18. The signing secret was HMAC(server key, slug): it could not be rotated after a leak.
19. Unknown settings keys stored silently: `{"reward": {"purchase": {"flat": 100}}}` or
   `atribution_model` made a program that never paid, or ignored the model asked for, with a 201.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import socket
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from bench.redteam import setup_program
from tests.helpers import SECRET, ClientFactory, PgServer, auth, drop_database, make_settings
from tests.shop import Shop
from tracker.db import load_migrations, migrate
from tracker.demo.build import PROGRAM_SETTINGS
from tracker.demo.scenario import DOMAIN
from tracker.finance.clearance import release
from tracker.finance.webhooks import deliver_due
from tracker.programs.validation import validate_settings
from tracker.settings import Settings, SettingsError
from tracker.signing import program_signing_secret, verify_signature
from tracker.web.app import create_app

Client = TestClient[web.Request, web.Application]
RULES = {"hold_days": 0, "reward": {"rules": [
    {"beneficiary": "referrer", "on": "purchase", "flat": 2000}]}}


async def _program(client: Client, tokens: dict[str, str], domains: list[str],
                   settings: dict[str, Any] | None = None, slug: str = "acme") -> Any:
    return await client.post("/api/v1/programs", json={
        "slug": slug, "name": "Acme", "destination_domains": domains,
        "settings": settings or {}}, headers=auth(tokens["admin"]))


async def _referrer(client: Client, tokens: dict[str, str], name: str = "mallory") -> None:
    resp = await client.post("/api/v1/referrers", json={"program": "acme", "external_id": name},
                             headers=auth(tokens["integration"]))
    assert resp.status in (200, 201), await resp.text()


# -- 3 -----------------------------------------------------------------------------------------


async def test_a_sharp_s_destination_is_not_an_open_redirect(
    client: Client, tokens: dict[str, str]
) -> None:
    resp = await _program(client, tokens, ["classic.com"])
    assert resp.status == 201, await resp.text()
    await _referrer(client, tokens)
    # Mallory's link "on classic.com": browsers send its visitors to xn--claic-nqa.com.
    for host in ("claßic.com", "CLAẞIC.com", "login.claßic.com", "cla%C3%9Fic.com"):
        resp = await client.post("/api/v1/links", json={
            "program": "acme", "referrer": "mallory", "destination": f"http://{host}/login"},
            headers=auth(tokens["integration"]))
        assert resp.status == 422, (host, await resp.text())
        error = (await resp.json())["error"]
        assert error["field"] == "destination" and "xn--claic-nqa.com" in error["message"]
    # Settings URLs are checked the same way.
    resp = await client.patch("/api/v1/programs/acme", json={
        "settings": {"fallback_url": "https://claßic.com/"}}, headers=auth(tokens["admin"]))
    assert resp.status == 422 and (await resp.json())["error"]["field"] == "fallback_url"

    # The program that really owns claßic.com gets it in the form browsers resolve, and its
    # links are stored, and redirected to, in that form.
    resp = await _program(client, tokens, ["Claßic.com"], slug="sharp")
    assert resp.status == 201, await resp.text()
    assert (await resp.json())["destination_domains"] == ["xn--claic-nqa.com"]
    await client.post("/api/v1/referrers", json={"program": "sharp", "external_id": "ann"},
                      headers=auth(tokens["integration"]))
    resp = await client.post("/api/v1/links", json={
        "program": "sharp", "referrer": "ann", "code": "ann1",
        "destination": "https://shop.CLAẞIC.com/p?x=1"}, headers=auth(tokens["integration"]))
    assert resp.status == 201, await resp.text()
    assert (await resp.json())["destination"] == "https://shop.xn--claic-nqa.com/p?x=1"
    resp = await client.get("/r/ann1", allow_redirects=False)
    assert resp.headers["Location"].startswith("https://shop.xn--claic-nqa.com/p?x=1&")
    # ...and the program that owns classic.com takes what browsers read as classic.com.
    resp = await client.post("/api/v1/links", json={
        "program": "acme", "referrer": "mallory", "destination": "https://ClAsSiC.com/"},
        headers=auth(tokens["integration"]))
    assert resp.status == 201


# -- 10 ----------------------------------------------------------------------------------------


async def test_a_domain_that_enabled_links_use_cannot_be_removed(
    client: Client, tokens: dict[str, str]
) -> None:
    resp = await _program(client, tokens, ["acme.test", "old-acme.test"])
    assert resp.status == 201
    await _referrer(client, tokens, "alice")
    for code, destination in (("a1", "https://shop.old-acme.test/x"),
                              ("a2", "https://old-acme.test/"),
                              ("a3", "https://acme.test/")):
        resp = await client.post("/api/v1/links", json={
            "program": "acme", "referrer": "alice", "code": code, "destination": destination},
            headers=auth(tokens["integration"]))
        assert resp.status == 201
    # The domain is sold; the admin drops it from the program. Two links still lead there.
    resp = await client.patch("/api/v1/programs/acme", json={"destination_domains": ["acme.test"]},
                              headers=auth(tokens["admin"]))
    assert resp.status == 409, await resp.text()
    error = (await resp.json())["error"]
    assert error["field"] == "destination_domains"
    assert "'old-acme.test' (2 enabled links)" in error["message"]
    assert error["links_by_domain"] == {"old-acme.test": 2}
    resp = await client.get("/api/v1/programs/acme", headers=auth(tokens["admin"]))
    assert (await resp.json())["destination_domains"] == ["acme.test", "old-acme.test"]

    # Once those links are disabled (or re-pointed), the domain goes...
    await client.patch("/api/v1/links/a1", json={"destination": "https://acme.test/x"},
                       headers=auth(tokens["integration"]))
    await client.patch("/api/v1/links/a2", json={"enabled": False},
                       headers=auth(tokens["integration"]))
    resp = await client.patch("/api/v1/programs/acme", json={"destination_domains": ["acme.test"]},
                              headers=auth(tokens["admin"]))
    assert resp.status == 200, await resp.text()
    # ...and a disabled link cannot be switched back on towards it.
    resp = await client.patch("/api/v1/links/a2", json={"enabled": True},
                              headers=auth(tokens["integration"]))
    assert resp.status == 422 and (await resp.json())["error"]["field"] == "enabled"
    resp = await client.get("/r/a2", allow_redirects=False)
    assert resp.status == 404


# -- 13 ----------------------------------------------------------------------------------------


INTERNAL_URLS = [
    "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
    "http://127.0.0.1:5432/", "http://localhost:8080/admin", "http://api.localhost/",
    "http://10.0.0.5/hook", "http://192.168.1.1/", "http://172.16.0.1/", "http://100.64.0.1/",
    "http://[::1]/", "http://[fe80::1]/", "http://[fd00::1]/", "http://[::ffff:169.254.169.254]/",
    "http://2130706433/", "http://0x7f.1/", "http://127.1/", "http://0.0.0.0/",
    "http://metadata.google.internal/computeMetadata/v1/", "http://224.0.0.1/",
]


async def test_webhook_urls_at_internal_addresses_are_refused(
    client: Client, tokens: dict[str, str], aiohttp_client: ClientFactory, tmp_path: Path,
    dsn: str,
) -> None:
    resp = await _program(client, tokens, ["acme.test"])
    assert resp.status == 201
    for url in INTERNAL_URLS:
        resp = await client.patch("/api/v1/programs/acme", json={"settings": {"webhook_url": url}},
                                  headers=auth(tokens["admin"]))
        assert resp.status == 422, (url, await resp.text())
        error = (await resp.json())["error"]
        assert error["field"] == "webhook_url"
        assert "REFGUARD_WEBHOOK_ALLOW_PRIVATE" in error["message"]
        resp = await _program(client, tokens, ["acme.test"], {"webhook_url": url}, slug="other")
        assert resp.status == 422, url
    resp = await client.patch("/api/v1/programs/acme", json={
        "settings": {"webhook_url": "https://hooks.example.com/refguard"}},
        headers=auth(tokens["admin"]))
    assert resp.status == 200
    # With REFGUARD_WEBHOOK_ALLOW_PRIVATE=1 (an internal receiver) they are taken.
    internal = await aiohttp_client(create_app(make_settings(
        tmp_path / "internal", dsn, webhook_allow_private=True)))
    for i, url in enumerate(INTERNAL_URLS):
        resp = await internal.post("/api/v1/programs", json={
            "slug": f"internal{i}", "name": "Internal", "destination_domains": ["acme.test"],
            "settings": {"webhook_url": url}}, headers=auth(tokens["admin"]))
        assert resp.status == 201, (url, await resp.text())


def test_the_allow_private_switch_takes_only_0_or_1(tmp_path: Path) -> None:
    env = {"REFGUARD_DATA_DIR": str(tmp_path), "REFGUARD_SECRET_KEY": "k" * 32}
    assert not Settings.from_env(env).webhook_allow_private
    assert Settings.from_env(env | {"REFGUARD_WEBHOOK_ALLOW_PRIVATE": "1"}).webhook_allow_private
    with pytest.raises(SettingsError, match=r"^REFGUARD_WEBHOOK_ALLOW_PRIVATE: expected 1"):
        Settings.from_env(env | {"REFGUARD_WEBHOOK_ALLOW_PRIVATE": "yes"})


@pytest.fixture
def rebound(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[str]]:
    """A DNS that answers what the test says for some names (a rebinding attacker's)."""
    answers: dict[str, list[str]] = {}
    real = socket.getaddrinfo

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else host
        if name in answers:
            return [(socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM,
                     6, "", (a, int(port or 0))) for a in answers[name]]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return answers


async def test_a_webhook_name_rebound_to_loopback_is_not_posted_to(
    aiohttp_client: ClientFactory, tmp_path: Path, dsn: str, tokens: dict[str, str],
    conn: asyncpg.Connection, rebound: dict[str, list[str]], caplog: pytest.LogCaptureFixture,
) -> None:
    received: list[bytes] = []

    async def handle(request: web.Request) -> web.Response:
        received.append(await request.read())  # e.g. an internal admin API
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hooks", handle)
    internal = TestServer(app, host="127.0.0.1")
    await internal.start_server()
    try:
        # A public name at configuration time, with credentials in it...
        url = f"http://hook:hunter2-pass@hooks.rebind.test:{internal.port}/hooks"
        shop = await Shop.open(aiohttp_client, tmp_path, dsn, tokens, conn,
                               {**RULES, "webhook_url": url})
        await shop.referrer("alice")
        await shop.buy("alice", "p1", "c1")
        await release(conn)
        # ...whose DNS answers 127.0.0.1 by delivery time (first, before a public address).
        rebound["hooks.rebind.test"] = ["127.0.0.1", "93.184.215.14"]
        with caplog.at_level(logging.WARNING):
            async with aiohttp.ClientSession() as session:
                assert await deliver_due(conn, SECRET, session) == 0
        assert received == []
        error = await conn.fetchval("SELECT last_error FROM webhook_outbox")
        assert "non-public address 127.0.0.1" in error
        # The credentials of the URL are in no log line, no error, no answer.
        assert "hunter2" not in caplog.text and "hunter2" not in error
        assert "***@hooks.rebind.test" in caplog.text
        for role in ("viewer", "admin"):
            resp = await shop.client.get("/api/v1/programs/acme", headers=auth(tokens[role]))
            shown = (await resp.json())["settings"]["webhook_url"]
            assert shown == f"http://***@hooks.rebind.test:{internal.port}/hooks"
        resp = await shop.client.get("/api/v1/programs", headers=auth(tokens["viewer"]))
        assert "hunter2" not in await resp.text()
        # Sending the settings back as shown keeps the stored credentials.
        resp = await shop.client.patch("/api/v1/programs/acme", json={
            "settings": {"webhook_url": shown, "hold_days": 1}}, headers=auth(tokens["admin"]))
        assert resp.status == 200, await resp.text()
        assert await conn.fetchval(
            "SELECT settings->>'webhook_url' FROM programs WHERE slug = 'acme'") == url
    finally:
        await internal.close()


# -- 18 ----------------------------------------------------------------------------------------


def _signed(body: bytes, secret: str) -> dict[str, str]:
    stamp = int(time.time())
    mac = hmac.new(secret.encode(), f"{stamp}.".encode() + body, hashlib.sha256).hexdigest()
    return {"X-Refguard-Signature": f"t={stamp},v1={mac}", "Content-Type": "application/json"}


async def test_a_leaked_signing_secret_is_rotated_with_an_overlap(
    aiohttp_client: ClientFactory, tmp_path: Path, dsn: str, tokens: dict[str, str],
    conn: asyncpg.Connection,
) -> None:
    received: list[tuple[str, bytes]] = []

    async def handle(request: web.Request) -> web.Response:
        received.append((request.headers["X-Refguard-Signature"], await request.read()))
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hooks", handle)
    receiver = TestServer(app, host="127.0.0.1")
    await receiver.start_server()
    try:
        shop = await Shop.open(aiohttp_client, tmp_path, dsn, tokens, conn,
                               {**RULES, "webhook_url": str(receiver.make_url("/hooks"))},
                               webhook_allow_private=True)
        client, admin = shop.client, auth(tokens["admin"])
        leaked = (await (await client.get("/api/v1/programs/acme", headers=admin)).json())[
            "signing_secret"]
        # Not computable from the slug (by anyone holding the server key, e.g. an old backup).
        assert leaked != program_signing_secret(SECRET, "acme")

        async def convert(event: str, secret: str) -> int:
            body = json.dumps({"program": "acme", "event_id": event, "type": "signup",
                               "customer_id": event}).encode()
            resp = await client.post("/api/v1/conversions", data=body,
                                     headers=_signed(body, secret))
            return resp.status

        assert await convert("e1", leaked) == 201
        resp = await client.post("/api/v1/programs/acme/secret/rotate", headers=admin)
        assert resp.status == 200, await resp.text()
        rotated = await resp.json()
        fresh = rotated["signing_secret"]
        assert fresh != leaked and rotated["previous_signing_secret_until"] is not None
        shown = await (await client.get("/api/v1/programs/acme", headers=admin)).json()
        assert shown["signing_secret"] == fresh
        assert await conn.fetchval("SELECT count(*) FROM audit_log "
                                   "WHERE action = 'program.secret_rotate'") == 1
        # During the overlap the merchant's servers may still send the old signature...
        assert await convert("e2", fresh) == 201
        assert await convert("e3", leaked) == 201
        # ...and after it, the leaked secret signs nothing.
        await conn.execute("UPDATE programs SET previous_signing_until = now() - interval '1 s'"
                           " WHERE slug = 'acme'")
        assert await convert("e4", leaked) == 401
        assert await convert("e5", fresh) == 201
        # A rotation with no overlap (the secret leaked for real) ends the old one at once.
        resp = await client.post("/api/v1/programs/acme/secret/rotate",
                                  json={"overlap_hours": 0}, headers=admin)
        newest = (await resp.json())["signing_secret"]
        assert await convert("e6", fresh) == 401 and await convert("e7", newest) == 201
        for bad in ({"overlap_hours": -1}, {"overlap_hours": "24"}, {"overlap": 1}):
            resp = await client.post("/api/v1/programs/acme/secret/rotate", json=bad,
                                     headers=admin)
            assert resp.status == 422, bad
        resp = await client.post("/api/v1/programs/acme/secret/rotate",
                                 headers=auth(tokens["integration"]))
        assert resp.status == 403
        # Webhooks are signed with the current secret.
        await shop.referrer("alice")
        await shop.buy("alice", "p1", "c1")
        await release(conn)
        async with aiohttp.ClientSession() as session:
            # referral.converted, reward.created, reward.approved (issue 14)
            assert await deliver_due(conn, SECRET, session, allow_private=True) == 3
        assert len(received) == 3
        for signature, body in received:
            verify_signature(signature, body, newest)
            with pytest.raises(ValueError, match="does not match"):
                verify_signature(signature, body, fresh)
    finally:
        await receiver.close()


async def test_the_migration_keeps_secrets_and_disables_links_browsers_read_otherwise(
    pg: PgServer,
) -> None:
    """The migration keeps each existing program's secret (merchants keep working; only a
    rotation replaces it), and disables links stored with an `ß` host (item 3): they were
    checked as `ss` and lead browsers elsewhere."""
    name = "m_" + uuid.uuid4().hex[:12]
    admin = await asyncpg.connect(pg.uri())
    await admin.execute(f"CREATE DATABASE {name}")
    await admin.close()
    try:
        conn = await asyncpg.connect(pg.uri(name))
        try:
            await migrate(conn, [m for m in load_migrations() if m.version <= 10])
            pid = await conn.fetchval("INSERT INTO programs (slug, name, destination_domains) "
                                      "VALUES ('legacy', 'Legacy', '{classic.com}') RETURNING id")
            rid = await conn.fetchval("INSERT INTO referrers (program_id, external_id) "
                                      "VALUES ($1, 'mallory') RETURNING id", pid)
            for code, destination in (("evil", "http://claßic.com/login?x=ß"),
                                      ("fine", "https://classic.com/straße")):
                await conn.execute("INSERT INTO links (program_id, referrer_id, code, destination)"
                                   " VALUES ($1, $2, $3, $4)", pid, rid, code, destination)
            await migrate(conn)
            enabled = dict(await conn.fetch("SELECT code, enabled FROM links"))
            assert enabled == {"evil": False, "fine": True}
            assert await conn.fetchval("SELECT object_id FROM audit_log "
                                       "WHERE action = 'link.disable'") == "evil"
            seed = await conn.fetchval("SELECT signing_seed FROM programs WHERE slug = 'legacy'")
            assert program_signing_secret(SECRET, seed) == hmac.new(
                SECRET, b"conversions:legacy", hashlib.sha256).hexdigest()
            fresh = await conn.fetchval(
                "INSERT INTO programs (slug, name, destination_domains) "
                "VALUES ('new', 'New', '{a.test}') RETURNING signing_seed")
            assert len(fresh) == 64 and fresh != "new"
        finally:
            await conn.close()
    finally:
        await drop_database(pg, name)


# -- 19 ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("program_settings", "field", "hint"), [
    ({"reward": {"purchase": {"flat": 100}}}, "reward.purchase", "reward.rules"),
    ({"atribution_model": "linear"}, "atribution_model", "'attribution_model'"),
    ({"reward": {"rules": [{"beneficiary": "referrer", "on": "purchase", "flat": 100,
                            "frist_only": True}]}}, "reward.rules[0].frist_only", "'first_only'"),
    ({"reward": {"rules": [{"beneficiary": "referrer", "on": "purchase", "flat": 100,
                            "tiers": [{"after": 5, "flat": 200, "afer": 1}]}]}},
     "reward.rules[0].tiers[0].afer", "'after'"),
    ({"adaptive_hold": {"clean_afer": 3}}, "adaptive_hold.clean_afer", "'clean_after'"),
    ({"hold_day": 0}, "hold_day", "'hold_days'"),
    ({"asks": {"within_hour": 24}}, "asks.within_hour", "'within_hours'"),
    ({"share": {"mesage": "hi {name}"}}, "share.mesage", "'message'"),
    ({"reward": {"variants": [{"name": "a", "weight": 1, "rule": []}]}},
     "reward.variants[0].rule", "'rules'"),
])
async def test_an_unknown_settings_key_is_refused_with_the_closest_known_one(
    client: Client, tokens: dict[str, str], program_settings: dict[str, Any], field: str,
    hint: str,
) -> None:
    resp = await _program(client, tokens, ["acme.test"], program_settings)
    assert resp.status == 422, await resp.text()
    error = (await resp.json())["error"]
    assert error["field"] == field and repr(field) in error["message"]
    assert hint in error["message"]
    resp = await _program(client, tokens, ["acme.test"])
    assert resp.status == 201
    resp = await client.patch("/api/v1/programs/acme", json={"settings": program_settings},
                              headers=auth(tokens["admin"]))
    assert resp.status == 422 and (await resp.json())["error"]["field"] == field


def test_every_program_the_demo_and_the_red_team_make_still_validates() -> None:
    validate_settings(PROGRAM_SETTINGS, [DOMAIN])
    made: list[dict[str, Any]] = []

    class Api:
        def req(self, method: str, path: str, body: dict[str, Any]) -> None:
            if path == "/api/v1/programs":
                made.append(body)

    class World:
        slug, seed = "rt", 1
        referrers: list[object] = []

    setup_program(Api(), World(), [])  # type: ignore[arg-type]
    [program] = made
    validate_settings(program["settings"], program["destination_domains"])
    validate_settings({
        "attribution_model": "time_decay", "attribution_window_days": 60,
        "time_decay_half_life_days": 3.5, "hold_days": 14, "review_at": 0.4, "reject_at": 0.8,
        "reject_action": "flag", "four_eyes_above": 10000, "fingerprint": "browser",
        "adaptive_hold": {"risk_extra_days": 30, "clean_after": 20, "clean_hold_days": 7},
        "webhook_url": "https://hooks.example.com/x", "fallback_url": "https://acme.test/sorry",
        "default_destination": "https://acme.test/", "timezone": "Europe/Paris",
        "reward": {"currency": "EUR", "rules": [
            {"beneficiary": "referrer", "on": "purchase", "flat": 2000, "first_only": True,
             "tiers": [{"after": 10, "flat": 3000}], "cap_per_day": 10000,
             "cap_per_month": 100000},
            {"beneficiary": "referrer", "on": "renewal", "percent": 10, "months": 12}],
            "variants": [{"name": "a", "weight": 1, "rules": [
                {"beneficiary": "referee", "on": "signup", "flat": 500}]}]},
        "asks": {"rules": [{"on": "nps", "min_score": 9}, {"on": "milestone"},
                           {"on": "purchase", "nth": 2}], "within_hours": 24, "top_share": 0.2,
                 "cooldown_days": 30, "max_per_customer": 3},
        "share": {"message": "{name}: {reward} with {link}", "channels": ["email", "whatsapp"]},
    }, ["acme.test"])
