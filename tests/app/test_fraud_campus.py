"""A campus through the public interfaces (issue 13): a club's students behind one to four
campus NAT addresses, on phones whose popular models recur (so their header fingerprints, which
hash the browser with the network, collide), referred by the organiser and by each other,
each buying the club's one product. The redirect records the visits, the conversions API the
purchases, a full scan decides: no student is held. A farm of accounts on two phones at one
address, collected by one referrer, still is."""

from __future__ import annotations

import json
import random

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from tests.helpers import make_link
from tests.shop import Street
from tracker.scoring.credits import attribute_pending
from tracker.scoring.risk import scan

# Phones as their exact User-Agents come: a model, its system and browser versions, the popular
# ones far more often (Zipf): the same model behind one NAT gives the same header fingerprint.
PHONES = [f"Mozilla/5.0 (iPhone; CPU iPhone OS 18_{os} like Mac OS X) Version/26.{v} "
          "Mobile/15E148 Safari/604.1" for os in range(3, 8) for v in range(3)] + [
    f"Mozilla/5.0 (Linux; Android {a}; {m}) Chrome/13{v}.0 Mobile Safari/537.36"
    for a, m in ((14, "SM-S921B"), (15, "Pixel 8"), (14, "SM-A155F"), (13, "moto g54"),
                 (10, "K")) for v in range(3)]
WEIGHTS = [1 / (rank + 1) for rank in range(len(PHONES))]
DESKTOP = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/{v}.0"


@pytest.mark.parametrize("draw", [0, 1, 2])
async def test_a_campus_club_on_shared_nat_addresses_is_not_held_a_farm_is(
    tokens: dict[str, str], conn: asyncpg.Connection,
    proxied_client: TestClient[web.Request, web.Application], draw: int,
) -> None:
    rng = random.Random(70 + draw)
    client = proxied_client
    street = Street(client, tokens, language="en-US,en;q=0.9", amount=1500)
    visit, convert = street.visit, street.convert

    nats = [f"130.{60 + draw}.4.{k}" for k in rng.sample(range(2, 250), rng.randint(1, 4))]
    size = rng.randint(30, 45)
    # The organiser and the first few members share their own links with the rest.
    recruiters = ["club"] + [f"student{i}" for i in range(rng.randint(0, 4))]
    for who in [*recruiters, "farmer"]:
        await make_link(client, tokens, referrer=who, code=who)
    # The program's own customers, on the same kinds of phones and on desktops.
    for i in range(150):
        ua = rng.choices(PHONES, WEIGHTS)[0] if i % 2 else DESKTOP.format(v=120 + i % 9)
        await convert(f"own-{i}", f"shopper{i}", f"100.{i % 7}.{i}.1", ua)
    await convert("club-own", "club", nats[0], PHONES[0])
    students = []
    for i in range(size):
        ua = rng.choices(PHONES, WEIGHTS)[0]
        link = "club" if i < len(recruiters) or rng.random() < 0.6 else rng.choice(recruiters)
        cid = await visit(link, rng.choice(nats), ua)
        students.append((f"order-s{i}", f"student{i}", ua, cid))
    farm_ip = f"185.{draw}.3.3"
    farm = []
    for i in range(12):
        ua = PHONES[i % 2]
        farm.append((f"order-f{i}", f"acct{i}", ua, await visit("farmer", farm_ip, ua)))
    await street.paced(conn, rng, gap=3000, ago="3 days")
    for event, customer, ua, cid in students:
        await convert(event, customer, rng.choice(nats), ua, cid)
    for event, customer, ua, cid in farm:
        await convert(event, customer, farm_ip, ua, cid)
    await attribute_pending(conn)
    await scan(conn)
    rows = await conn.fetch(
        """SELECT c.event_id, r.score, r.reasons::text AS reasons FROM conversion_risk r
           JOIN conversions c ON c.program_id = r.program_id AND c.id = r.conversion_id""")
    risk = {r["event_id"]: r["score"] for r in rows}
    codes = {r["event_id"]: [(x["code"], x["weight"], x["message"][:120])
                             for x in json.loads(r["reasons"]) if x["weight"] >= 0.3]
             for r in rows}
    held = [e for e, *_ in students if risk[e] >= 0.5]
    assert not held, {e: codes[e] for e in held[:3]}
    assert sum(risk[e] >= 0.5 for e, *_ in farm) >= 10, {e: codes[e] for e, *_ in farm[:2]}
