"""A full fraud scan over real clicks and conversions: rings, self-referral, honest traffic."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import asyncpg
from aiohttp import web
from aiohttp.test_utils import TestClient

from tests.helpers import ClientFactory, auth, click_id, make_link, wait_for_clicks
from tests.shop import Shop
from tracker.scoring.credits import attribute_pending
from tracker.scoring.queries import RING_KINDS, stored_rings
from tracker.scoring.risk import scan

UA = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/{v}.0 Safari/537.36"


async def test_scan_flags_rings_and_self_referrals_but_not_honest_users(
    tokens: dict[str, str], conn: asyncpg.Connection,
    proxied_client: TestClient[web.Request, web.Application],
) -> None:
    client = proxied_client
    integration = auth(tokens["integration"])
    clicks = 0

    async def visit(code: str, ip: str, ua: str) -> str:
        nonlocal clicks
        resp = await client.get(f"/r/{code}", allow_redirects=False,
                                headers={"X-Forwarded-For": ip, "User-Agent": ua,
                                         "Accept-Language": "en"})
        assert resp.status == 302
        clicks += 1
        cid: str = click_id(resp.headers["Location"])
        return cid

    async def convert(event: str, customer: str, cid: str) -> None:
        body: dict[str, Any] = {"program": "acme", "event_id": event, "type": "purchase",
                                "customer_id": customer, "amount": 1000, "currency": "USD",
                                "click_id": cid}
        resp = await client.post("/api/v1/conversions", json=body, headers=integration)
        assert resp.status == 201

    await make_link(client, tokens, referrer="alice", code="alice")
    # Honest: alice's friends, each on their own network and browser.
    honest = []
    for i in range(8):
        cid = await visit("alice", f"81.{i}.{i}.10", UA.format(v=100 + i))
        honest.append((f"order-h{i}", f"friend{i}", cid))
    # A ring: six fake accounts cross-refer from two IPs and one kind of browser.
    fakes = [f"fake{i}" for i in range(6)]
    for fake in fakes:
        await make_link(client, tokens, referrer=fake, code=fake)
    ring = []
    for i, fake in enumerate(fakes):
        sponsor = fakes[(i + 1) % len(fakes)]
        cid = await visit(sponsor, f"203.0.113.{5 + i % 2}", UA.format(v=120))
        ring.append((f"order-f{i}", fake, cid))
    # Self-referral: sam buys through his own link.
    await make_link(client, tokens, referrer="sam", code="sam")
    sam_cid = await visit("sam", "90.1.2.3", UA.format(v=99))
    await wait_for_clicks(conn, clicks)
    # People buy hours after they click (seconds would be click injection).
    await conn.execute("UPDATE clicks SET ts = ts - interval '3 hours'")
    for event, customer, cid in honest + ring + [("order-sam", "sam", sam_cid)]:
        await convert(event, customer, cid)
    assert await attribute_pending(conn) == 15

    summaries = await scan(conn)
    assert summaries[0].conversions == 15
    flags = await client.get("/api/v1/fraud/flags?program=acme", headers=auth(tokens["finance"]))
    assert flags.status == 200
    items = (await flags.json())["items"]
    assert items, "nothing flagged"
    for flag in items:
        assert flag["reasons"], flag
        for reason in flag["reasons"]:
            assert {"code", "message", "value", "threshold"} <= set(reason)
            assert reason["value"] is not None and reason["threshold"] is not None
    rings = [f for f in items if f["kind"] in ("ring", "dense_block", "referral_cycle")]
    assert rings
    ring_members = {m["id"] for f in rings for m in f["members"] if m["type"] == "referrer"}
    assert set(fakes) <= ring_members
    assert not ring_members & {"alice", "sam"} and not any(
        m["id"].startswith("friend") for f in rings for m in f["members"])
    # An incremental scan reads the rings back with the evidence they were flagged on, which
    # their members' reasons quote (a sleeper cell's within how many days its referrers woke),
    # and a flag merged from one operator's findings as the findings it was decided on.
    program_id = await conn.fetchval("SELECT id FROM programs WHERE slug = 'acme'")
    known = await stored_rings(conn, program_id)
    assert any(r.evidence for r in known)
    assert sorted((r.kind, json.dumps(r.evidence, sort_keys=True)) for r in known) == sorted(
        (p["kind"], json.dumps(p["evidence"], sort_keys=True)) for f in items
        if f["kind"] in RING_KINDS for p in f["evidence"].get("parts") or [f])
    # The fakes' ring and their pool are one operator's: one flag.
    merged = [f for f in items if f["evidence"].get("parts")]
    assert len(merged) == 1
    assert set(fakes) <= {m["id"] for m in merged[0]["members"]}
    assert "operator_group" in {r["code"] for r in merged[0]["reasons"]}
    # Sam is himself (strong identity); the fakes share only a device and an IP with their
    # sponsors (the network family: weak alone), but their ring holds them.
    self_referrals = [f for f in items if f["kind"] == "self_referral"]
    flagged = {m["id"] for f in self_referrals for m in f["members"] if m["type"] == "customer"}
    assert flagged == {"sam"}
    # Risk per conversion: every fake and sam's purchase are risky, no friend's is.
    risk = {r["event_id"]: r["score"] for r in await conn.fetch(
        """SELECT c.event_id, r.score FROM conversion_risk r
           JOIN conversions c ON c.program_id = r.program_id AND c.id = r.conversion_id""")}
    assert all(risk[e] >= 0.5 for e, _c, _x in ring)
    assert risk["order-sam"] >= 0.9
    assert all(risk[e] < 0.5 for e, _c, _x in honest), {e: risk[e] for e, _c, _x in honest}
    only_self = await client.get("/api/v1/fraud/flags?program=acme&kind=self_referral",
                                 headers=auth(tokens["viewer"]))
    assert {f["kind"] for f in (await only_self.json())["items"]} == {"self_referral"}
    # `kind` also finds a reason that is not a flag's kind: every held conversion's flag
    # says which families decided it, in plain words (the `decided_by` reason).
    in_ring = await client.get("/api/v1/fraud/flags?program=acme&kind=ring_member",
                               headers=auth(tokens["viewer"]))
    found = (await in_ring.json())["items"]
    assert {m["id"] for f in found for m in f["members"] if m["type"] == "customer"} == set(fakes)
    decided = await client.get("/api/v1/fraud/flags?program=acme&kind=decided_by",
                               headers=auth(tokens["viewer"]))
    held = (await decided.json())["items"]
    assert {f["kind"] for f in held} == {"ring_member", "self_referral"}
    assert all(any(r["code"] == "decided_by" and r["message"].startswith("held on ")
                   for r in f["reasons"]) for f in held)
    # Without a program, every program's flags, each naming its program; an unknown one is 404.
    everyone = await client.get("/api/v1/fraud/flags", headers=auth(tokens["viewer"]))
    assert [f["id"] for f in (await everyone.json())["items"]] == [f["id"] for f in items]
    assert {f["program"] for f in items} == {"acme"}
    unknown = await client.get("/api/v1/fraud/flags?program=nosuch",
                               headers=auth(tokens["viewer"]))
    assert unknown.status == 404
    refused = await client.get("/api/v1/fraud/flags?program=acme",
                               headers=auth(tokens["integration"]))
    assert refused.status == 403


async def test_fraud_scan_command(dsn: str, tmp_path: Path, conn: asyncpg.Connection) -> None:
    await conn.execute("INSERT INTO programs (slug, name, destination_domains) "
                       "VALUES ('acme', 'A', '{acme.test}')")
    env = {"REFGUARD_DATABASE_URL": dsn, "REFGUARD_DATA_DIR": str(tmp_path)}
    out = subprocess.run([sys.executable, "-m", "tracker", "fraud", "scan", "--json"], env=env,
                         capture_output=True, text=True, check=False, timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)[0]["program"] == "acme"
    out = subprocess.run([sys.executable, "-m", "tracker", "fraud", "scan"], env=env,
                         capture_output=True, text=True, check=False, timeout=120)
    assert out.returncode == 0 and "0 unusual referrers (anomaly flags)" in out.stdout, out
    out = subprocess.run([sys.executable, "-m", "tracker", "fraud", "scan", "--program", "nope"],
                         env=env, capture_output=True, text=True, check=False, timeout=120)
    assert out.returncode == 2 and out.stderr.count("\n") == 1


async def test_an_email_alias_is_a_self_referral_and_so_are_the_aliass_later_purchases(
    aiohttp_client: ClientFactory, tmp_path: Path, dsn: str, tokens: dict[str, str],
    conn: asyncpg.Connection,
) -> None:
    """Alice refers "herself" under a Gmail alias. The merchant sends the email with the
    sign-up only; the purchase that follows is the same person's, so it is held too."""
    shop = await Shop.open(aiohttp_client, tmp_path, dsn, tokens, conn, {})
    resp = await shop.client.post(
        "/api/v1/referrers", json={"program": "acme", "external_id": "alice",
                                   "email": "a.lice@gmail.com"},
        headers=auth(tokens["integration"]))
    assert resp.status == 201
    await shop.referrer("alice")

    async def journey(customer: str, email: str) -> None:
        for event, kind, body in ((f"{customer}-signup", "signup", {"email": email}),
                                  (f"{customer}-order", "purchase", {})):
            cid = await shop.click("alice")
            await shop.settle_clicks()
            resp = await shop.client.post("/api/v1/conversions", json={
                "program": "acme", "event_id": event, "type": kind, "customer_id": customer,
                "amount": 5000, "currency": "USD", "click_id": cid, **body},
                headers=auth(tokens["integration"]))
            assert resp.status == 201, await resp.text()

    await journey("alt", "Alice+shop@googlemail.com")
    await journey("bob", "bob@gmail.com")
    await attribute_pending(conn)
    await scan(conn, "acme")
    reasons = {r["event_id"]: {x["code"] for x in json.loads(r["reasons"])}
               for r in await conn.fetch(
                   """SELECT c.event_id, k.reasons::text AS reasons FROM conversion_risk k
                      JOIN conversions c ON c.program_id = k.program_id
                                        AND c.id = k.conversion_id""")}
    assert "self_referral" in reasons["alt-signup"] and "self_referral" in reasons["alt-order"]
    assert reasons["bob-signup"] == reasons["bob-order"] == set()


async def test_scans_read_missing_accept_language_and_incremental_scans_reuse_the_share(
    aiohttp_client: ClientFactory, tmp_path: Path, dsn: str, tokens: dict[str, str],
    conn: asyncpg.Connection,
) -> None:
    """A click without Accept-Language is headerless; an erased customer's click, which lost
    all its headers to the erasure, is not. The full scan stores the program's headerless
    share, and an incremental scan compares with it instead of its small window."""
    from tracker.scoring.facts import Scope, load_facts, load_program_facts

    shop = await Shop.open(aiohttp_client, tmp_path, dsn, tokens, conn, {"hold_days": 0})
    await shop.referrer("alice")
    for i in range(4):
        await shop.buy("alice", f"p{i}", f"c{i}")
    await attribute_pending(conn)
    await conn.execute("""UPDATE clicks SET accept_language = NULL WHERE click_id =
                          (SELECT click_id FROM conversions WHERE event_id = 'p1')""")
    resp = await shop.client.delete("/api/v1/customers/c2?program=acme",
                                    headers=auth(tokens["admin"]))
    assert resp.status == 200
    erased = await conn.fetchrow("""SELECT accept_language, user_agent FROM clicks WHERE
                                    click_id = (SELECT click_id FROM conversions
                                                WHERE event_id = 'p2')""")
    assert tuple(erased) == (None, None)
    program_id = await conn.fetchval("SELECT id FROM programs WHERE slug = 'acme'")
    conversions = (await load_facts(conn, program_id, None)).conversions
    assert {c.customer: c.touches[0].headerless for c in conversions} == {
        "c0": False, "c1": True, "c2": False, "c3": False}
    await scan(conn, "acme")
    assert await conn.fetchval("""SELECT (stats->>'headerless_share')::float FROM fraud_scans
                                  WHERE mode = 'full'""") == 0.25
    facts = await load_program_facts(conn, program_id, Scope(set(), [], ["alice"]))
    assert facts.context.headerless_share == 0.25
