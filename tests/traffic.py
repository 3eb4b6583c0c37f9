"""A labelled traffic generator: organic referral traffic with planted fraud.

Clicks go through the same enrichment and store as live ones (tracker.clicks.enrich, store_clicks);
conversions through the API's store. Every conversion is labelled with the pattern that made it
("organic" or a fraud pattern), so tests can measure precision and recall per pattern.
"""

from __future__ import annotations

import random
import tempfile
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg

from bench.geodb import write_db
from geo.reader import GeoReader
from tests.helpers import SECRET, insert_link
from tracker.clicks.enrich import Enricher
from tracker.clicks.flusher import store_clicks
from tracker.clicks.journal import RawClick
from tracker.demo.scenario import BROWSERS, HEADLESS, IPHONE
from tracker.intake.conversions import parse_conversion
from tracker.intake.queries import store_conversion

HOSTING = "172.104.0.0/15"  # a hosting provider's addresses, in the generator's geo database
PATTERNS = ("self_referral", "ring", "camouflaged_ring", "click_farm", "click_injection",
            "click_spam")


@dataclass
class Traffic:
    program_id: int
    labels: dict[str, str] = field(default_factory=dict)  # event_id -> pattern or "organic"
    rng: random.Random = field(default_factory=lambda: random.Random(11))
    clicks: list[RawClick] = field(default_factory=list)
    conversions: list[dict[str, object]] = field(default_factory=list)
    links: dict[str, tuple[int, int]] = field(default_factory=dict)  # referrer -> (link, ref)
    start: datetime = field(default_factory=lambda: datetime.now(UTC) - timedelta(days=20))

    def click(self, referrer: str, at: datetime, ip: str, ua: str, visitor: str,
              lang: str = "en-US,en;q=0.9") -> str:
        link_id, referrer_id = self.links[referrer]
        cid = str(uuid.UUID(int=self.rng.getrandbits(128), version=4))
        self.clicks.append(RawClick(
            int(at.timestamp() * 1_000_000), cid, self.program_id, link_id, referrer_id,
            f"l-{referrer}", visitor, False, ip, "", "", ua, lang, "", "", "", "", "",
            "text/html", "", ""))
        return cid

    def convert(self, pattern: str, customer: str, at: datetime, cid: str | None,
                ip: str | None = None) -> None:
        event = f"e{len(self.conversions)}"
        self.labels[event] = pattern
        body: dict[str, object] = {
            "program": "gen", "event_id": event, "type": "purchase", "customer_id": customer,
            "amount": self.rng.randint(1000, 9000), "currency": "USD",
            "occurred_at": at.isoformat()}
        if cid:
            body["click_id"] = cid
        if ip:
            body["ip"] = ip
        self.conversions.append(body)

    def when(self) -> datetime:
        return self.start + timedelta(seconds=self.rng.uniform(0, 15 * 86400))

    def browser(self) -> str:
        return self.rng.choice(BROWSERS).format(v=self.rng.randint(1, 130))

    def home_ip(self) -> str:
        r = self.rng
        return f"{r.randint(11, 99)}.{r.randint(0, 255)}.{r.randint(0, 255)}.{r.randint(2, 250)}"


async def generate(conn: asyncpg.Connection, *, organic_referrers: int = 40,
                   organic_customers: int = 400, seed: int = 11) -> Traffic:
    program_id = await conn.fetchval(
        "INSERT INTO programs (slug, name, destination_domains) VALUES ('gen', 'Gen', "
        "'{shop.test}') RETURNING id")
    traffic = Traffic(program_id, rng=random.Random(seed))
    rng = traffic.rng
    names = [f"org{i}" for i in range(organic_referrers)]
    names += [f"self{i}" for i in range(8)] + [f"ring{i}" for i in range(6)]
    names += [f"camo{i}" for i in range(6)] + ["farmer", "injector", "spammer", "farmhand"]
    for name in names:
        _pid, link, ref = await insert_link(conn, program="gen", referrer=name, code=f"l-{name}",
                                            domain="shop.test")
        traffic.links[name] = (link, ref)
    weights = [1 / (i + 1) for i in range(organic_referrers)]
    # Organic: people click one or two referrers' links, many convert hours or days later.
    for i in range(organic_customers):
        ip, ua, vid = traffic.home_ip(), traffic.browser(), f"vo{i}"
        at = traffic.when()
        cid = None
        for ref in rng.choices(names[:organic_referrers], weights=weights,
                               k=rng.choice((1, 1, 2))):
            at += timedelta(minutes=rng.uniform(1, 600))
            cid = traffic.click(ref, at, ip, ua, vid)
        if rng.random() < 0.5:
            traffic.convert("organic", f"cust{i}", at + timedelta(minutes=rng.uniform(5, 3000)),
                            cid, ip)
    # Self-referral: referrers buying through their own link (some under their own id, some
    # under a second account on the same device).
    for i in range(8):
        name, ip, ua = f"self{i}", traffic.home_ip(), traffic.browser()
        # First an honest purchase through someone else's link, then, later, the referrer
        # buys again through their own.
        own_at = traffic.start + timedelta(hours=rng.uniform(0, 12))
        own = traffic.click(f"org{i}", own_at, ip, ua, f"vs{i}")
        traffic.convert("organic", name, own_at + timedelta(hours=2), own, ip)
        at = traffic.when() + timedelta(days=1)
        cid = traffic.click(name, at, ip, ua, f"vs{i}")
        customer = name if i % 2 == 0 else f"{name}-alt"
        traffic.convert("self_referral", customer, at + timedelta(hours=1), cid, ip)
    # A ring: six accounts on two IPs and one browser, referring each other.
    ring_ips = ["185.220.10.5", "185.220.10.6"]
    ring_ua = traffic.browser()
    for i in range(6):
        at = traffic.when()
        cid = traffic.click(f"ring{(i + 1) % 6}", at, ring_ips[i % 2], ring_ua, f"vr{i}")
        traffic.convert("ring", f"ring{i}", at + timedelta(hours=3), cid, ring_ips[i % 2])
    # A camouflaged ring: three phones reused by six accounts, each also clicking honest links.
    phones = [(traffic.home_ip(), traffic.browser()) for _ in range(3)]
    for i in range(6):
        ip, ua = phones[i % 3]
        traffic.click(rng.choice(names[:5]), traffic.when(), ip, ua, f"vc{i}x")
        at = traffic.when()
        cid = traffic.click(f"camo{(i + 1) % 6}", at, ip, ua, f"vc{i}")
        traffic.convert("camouflaged_ring", f"camo{i}", at + timedelta(hours=5), cid, ip)
    # A click farm: scripted browsers on datacenter IPs click and "convert".
    for i in range(10):
        ip = f"34.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(2, 250)}"
        at = traffic.when()
        cid = traffic.click("farmer", at, ip, HEADLESS, f"vf{i}", lang="")
        traffic.convert("click_farm", f"farm{i}", at + timedelta(minutes=30), cid, ip)
    # Click injection: the click fires seconds before a purchase that was happening anyway.
    for i in range(12):
        ip, ua = traffic.home_ip(), traffic.browser()
        at = traffic.when()
        cid = traffic.click("injector", at, ip, ua, f"vi{i}")
        traffic.convert("click_injection", f"inj{i}", at + timedelta(seconds=rng.uniform(1, 6)),
                        cid, ip)
    # Click spam: clicks fired on hundreds of phones (ad stacking, background redirects); the
    # few people who later buy anyway, days afterwards, are claimed by the last click.
    for i in range(300):
        ip, ua = traffic.home_ip(), IPHONE.format(v=rng.randint(1, 6))
        at = traffic.start + timedelta(days=rng.uniform(0, 5))
        cid = traffic.click("spammer", at, ip, ua, f"vp{i}")
        if i % 20 == 0:
            traffic.convert("click_spam", f"spam{i}",
                            at + timedelta(days=rng.uniform(2, 14)), cid, ip)
    # A click farm with real browsers: ordinary user agents and headers, organic-looking delays,
    # but every click from a hosting provider's addresses (as the geo database below says).
    for i in range(10):
        ip = f"172.104.{rng.randint(0, 255)}.{rng.randint(2, 250)}"
        at = traffic.when()
        cid = traffic.click("farmhand", at, ip, traffic.browser(), f"vh{i}")
        traffic.convert("click_farm", f"hand{i}", at + timedelta(minutes=rng.uniform(5, 3000)),
                        cid, ip)
    with tempfile.TemporaryDirectory() as folder:
        write_db(Path(folder) / "GeoIP2-Anonymous-IP.mmdb", "GeoIP2-Anonymous-IP",
                 {HOSTING: {"is_anonymous": True, "is_hosting_provider": True}})
        geo = GeoReader(Path(folder))
        try:
            enricher = Enricher(SECRET, (), geo=geo)
            rows = [enricher.row(c, source="import") for c in traffic.clicks]
        finally:
            geo.close()
    await store_clicks(conn, rows, set())
    for body in traffic.conversions:
        await store_conversion(conn, program_id, parse_conversion(body), None, source="import")
    return traffic
