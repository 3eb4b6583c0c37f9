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
from tracker.clicks.flusher import Partitions, store_clicks
from tracker.clicks.journal import RawClick
from tracker.demo.scenario import BROWSERS, HEADLESS, IPHONE
from tracker.identity import email_hash
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
        _pid, link, ref_id = await insert_link(conn, program="gen", referrer=name, code=f"l-{name}",
                                            domain="shop.test")
        traffic.links[name] = (link, ref_id)
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
    await _store_clicks(conn, traffic.clicks)
    for body in traffic.conversions:
        await store_conversion(conn, program_id, parse_conversion(body), None, source="import")
    return traffic


async def _store_clicks(conn: asyncpg.Connection, clicks: list[RawClick]) -> None:
    """Enrich clicks as the importer does, with HOSTING a hosting provider's range, and store
    them."""
    with tempfile.TemporaryDirectory() as folder:
        write_db(Path(folder) / "GeoIP2-Anonymous-IP.mmdb", "GeoIP2-Anonymous-IP",
                 {HOSTING: {"is_anonymous": True, "is_hosting_provider": True}})
        geo = GeoReader(Path(folder))
        try:
            enricher = Enricher(SECRET, (), geo=geo)
            rows = [enricher.row(c, source="import") for c in clicks]
        finally:
            geo.close()
    await store_clicks(conn, rows, Partitions())


# -- look-alikes and the harder mechanisms (issue 13) -------------------------------------------
# Honest shapes that look like fraud on the network alone (households, small offices, a campus
# behind a few NAT addresses, a carrier NAT), and fraud that hides in ordinary-looking traffic
# (a click farm on residential IPs, incentivised sign-ups, a typo'd e-mail domain, a household
# lease, a device farm). `draw` varies the parameters, so a test runs each at several draws.

HARD_PATTERNS = ("typo_email", "household_lease", "residential_farm", "incentivised",
                 "device_farm")
LOOKALIKES = ("household", "office", "campus", "carrier_nat")
SAFARI = ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like "
          "Gecko) Version/17.{v} Safari/605.1.15")
FIREFOX = "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:12{v}.0) Gecko/20100101 Firefox/12{v}.0"
LANGS = {"chrome": "en-US,en;q=0.9", "safari": "en-US", "firefox": "en-US,en;q=0.5"}


@dataclass
class Hard:
    traffic: Traffic
    kinds: dict[str, str] = field(default_factory=dict)  # event_id -> look-alike or pattern
    emails: dict[str, str] = field(default_factory=dict)  # event_id -> e-mail
    reversals: list[dict[str, object]] = field(default_factory=list)


def _device(rng: random.Random) -> tuple[str, str]:
    kind = rng.choice(("chrome", "safari", "firefox"))
    v = rng.randint(1, 9)
    ua = {"chrome": BROWSERS[0].format(v=120 + v), "safari": SAFARI.format(v=v),
          "firefox": FIREFOX.format(v=v)}[kind]
    return ua, LANGS[kind]


async def generate_hard(conn: asyncpg.Connection, *, draw: int = 0) -> Hard:
    """Organic traffic (as `generate`, smaller) with the look-alikes and harder mechanisms
    planted; `draw` (0, 1, 2) picks their sizes and timings."""
    program_id = await conn.fetchval(
        "INSERT INTO programs (slug, name, destination_domains) VALUES ('gen', 'Gen', "
        "'{shop.test}') RETURNING id")
    rng = random.Random(1000 + draw)
    traffic = Traffic(program_id, rng=rng, start=datetime.now(UTC) - timedelta(days=32))
    hard = Hard(traffic)
    t = traffic
    names = [f"org{i}" for i in range(30)]
    names += [f"home{i}" for i in range(6)] + ["office", "leaser", "typo", "farmer", "cash",
                                               "devfarm", "natref"]
    names += [f"student{i}" for i in range(8)]
    for name in names:
        _pid, link, ref_id = await insert_link(conn, program="gen", referrer=name, code=f"l-{name}",
                                            domain="shop.test")
        t.links[name] = (link, ref_id)
    minimum = 1000

    def buy(pattern: str, kind: str, customer: str, at: datetime, cid: str | None,
            ip: str | None, amount: int | None = None, email: str | None = None) -> str:
        t.convert(pattern, customer, at, cid, ip)
        body = t.conversions[-1]
        body["amount"] = amount if amount is not None else rng.randint(minimum + 1, 9000)
        event = str(body["event_id"])
        hard.kinds[event] = kind
        if email:
            hard.emails[event] = email
        return event

    def hours(lo: float, hi: float) -> timedelta:
        return timedelta(hours=rng.uniform(lo, hi))

    # Organic referrals, with the program's minimum amount now and then and a few refunds.
    for i in range(300):
        ip, (ua, lang) = t.home_ip(), _device(rng)
        at = t.when()
        ref = rng.choice(names[:30])
        cid = t.click(ref, at, ip, ua, f"vo{i}", lang)
        if rng.random() < 0.5:
            amount = minimum if rng.random() < 0.05 else None
            event = buy("organic", "organic", f"cust{i}", at + hours(0.1, 72), cid, ip, amount)
            if rng.random() < 0.04:
                hard.reversals.append({"event": event, "customer": f"cust{i}"})
    # Households: the referrer's partner on the same home IP, the same phone model and browser.
    for i in range(6):
        ip, (ua, lang) = t.home_ip(), _device(rng)
        at = t.when()
        own = t.click("org0", at, ip, ua, f"vhome{i}", lang)  # the referrer a customer too
        buy("organic", "household", f"home{i}", at + hours(1, 5), own, ip)
        for k in range(1 + draw % 2):
            later = at + timedelta(days=rng.uniform(1, 4))
            cid = t.click(f"home{i}", later, ip, ua, f"vhome{i}p{k}", lang)
            buy("organic", "household", f"home{i}-partner{k}", later + hours(0.5, 30), cid, ip)
    # A small office: colleagues behind one address, the referrer a customer on it too.
    office_ip = t.home_ip()
    own = t.click("org1", t.when(), office_ip, BROWSERS[0].format(v=121), "voff", LANGS["chrome"])
    buy("organic", "office", "office", t.start + timedelta(days=16), own, office_ip)
    for k in range(3 + draw):
        ua, lang = BROWSERS[0].format(v=100 + k), LANGS["chrome"]  # a browser each
        at = t.when()
        cid = t.click("office", at, office_ip, ua, f"voff{k}", lang)
        buy("organic", "office", f"colleague{k}", at + hours(0.2, 48), cid, office_ip)
    # A university club behind three campus NAT addresses, referring each other.
    campus = [t.home_ip() for _ in range(3)]
    for i in range(8):
        at = t.start + timedelta(hours=rng.uniform(0, 24))
        ip = campus[i % 3]
        ua, lang = _device(rng)
        own = t.click(f"org{2 + i}", at, ip, ua, f"vst{i}", lang)
        buy("organic", "campus", f"student{i}", at + hours(1, 8), own, ip)
        home = t.click(f"org{2 + i}", at + timedelta(days=9), t.home_ip(), ua, f"vst{i}", lang)
        buy("organic", "campus", f"student{i}", at + timedelta(days=9, hours=1), home, None)
    for k in range(12 + 4 * draw):
        ua, lang = _device(rng)
        ref = f"student{rng.randrange(8)}"
        at = t.when()
        cid = t.click(ref, at, rng.choice(campus), ua, f"vcl{k}", lang)
        buy("organic", "campus", f"clubber{k}", at + hours(0.5, 72), cid, t.home_ip())
    # A carrier NAT: one address many unrelated phones use, the same model among them.
    nat = t.home_ip()
    for k in range(25):
        ref = rng.choice([*names[:30], "natref"])
        at = t.when()
        cid = t.click(ref, at, nat, IPHONE.format(v=5), f"vnat{k}", "en-US")
        if rng.random() < 0.6:
            buy("organic", "carrier_nat", f"natcust{k}", at + hours(0.2, 48), cid, nat)
    # Self-referral through a typo'd provider domain (and another provider, same local part).
    referrer_mail = f"jonas.berger{draw}@gmail.com"
    await conn.execute("UPDATE referrers SET email_hash = $1 WHERE external_id = 'typo'",
                       email_hash(SECRET, referrer_mail))
    for k, alias in enumerate((f"jonasberger{draw}@gmial.com", f"jonas.berger{draw}@yahoo.com",
                               f"jonas.berger{draw}@gmaill.com")):
        ip, (ua, lang) = t.home_ip(), _device(rng)
        at = t.when()
        cid = t.click("typo", at, ip, ua, f"vty{k}", lang)
        buy("typo_email", "typo_email", f"typo-alt{k}", at + hours(0.1, 2), cid, ip,
            email=alias)
    # A household lease: the referrer opens his own link at home, and minutes later a new
    # device on the same network clicks it and buys.
    lease_ip, (ua, lang) = t.home_ip(), _device(rng)
    first = t.start + timedelta(hours=2)
    own = t.click("org3", first, lease_ip, ua, "vleaser", lang)
    buy("organic", "household", "leaser", first + hours(1, 2), own, lease_ip)
    for k in range(2 + draw):
        at = t.when() + timedelta(days=1)
        t.click("leaser", at, lease_ip, ua, "vleaser", lang)
        other_ua, other_lang = _device(rng)
        cid = t.click("leaser", at + timedelta(minutes=rng.uniform(3, 20)), lease_ip, other_ua,
                      f"vlease{k}", other_lang)
        buy("household_lease", "household_lease", f"lease{k}",
            at + timedelta(minutes=rng.uniform(30, 120)), cid, lease_ip)
    # A click farm on residential IPs: real browsers, human delays, clicks at a steady rhythm
    # in shifts, one Accept-Language whatever the browser, the minimum amount, chargebacks.
    farm_lang = rng.choice(("en-US,en;q=0.9", "en-GB,en;q=0.8"))
    n_farm = 14 + 4 * draw
    for k in range(n_farm):
        ua, _ = _device(rng)
        at = t.start + timedelta(days=k // 4, hours=9 + (k % 4) * 2)
        ip = t.home_ip()
        cid = t.click("farmer", at, ip, ua, f"vfarm{k}", farm_lang)
        amount = minimum if rng.random() < 0.8 else None
        event = buy("residential_farm", "residential_farm", f"farm{k}", at + hours(0.3, 30),
                    cid, ip, amount)
        if rng.random() < 0.3:
            hard.reversals.append({"event": event, "customer": f"farm{k}"})
    # Incentivised sign-ups: bursts after posts, the minimum amount, many refunded; the same
    # referrer's genuine referrals beside them.
    for burst in range(2):
        post = t.start + timedelta(days=3 + 6 * burst + draw)
        for k in range(9 + 2 * draw):
            ip, (ua, lang) = t.home_ip(), _device(rng)
            at = post + timedelta(minutes=rng.uniform(1, 300))
            cid = t.click("cash", at, ip, ua, f"vcash{burst}-{k}", lang)
            event = buy("incentivised", "incentivised", f"cash{burst}-{k}",
                        at + timedelta(minutes=rng.uniform(2, 40)), cid, ip, minimum)
            if rng.random() < 0.5:
                hard.reversals.append({"event": event, "customer": f"cash{burst}-{k}"})
    for k in range(4):
        ip, (ua, lang) = t.home_ip(), _device(rng)
        at = t.when()
        cid = t.click("cash", at, ip, ua, f"vcashok{k}", lang)
        buy("organic", "incentivised_genuine", f"cashok{k}", at + hours(2, 60), cid, ip)
    # A device farm: one referrer, many referees on three devices (each its own address).
    devices = [(t.home_ip(), *_device(rng)) for _ in range(3)]
    for k in range(15 + 5 * draw):
        ip, ua, lang = devices[k % 3]
        at = t.when()
        cid = t.click("devfarm", at, ip, ua, f"vdev{k}", lang)
        buy("device_farm", "device_farm", f"dev{k}", at + hours(0.2, 6), cid, ip)
    await _store_clicks(conn, t.clicks)
    for body in t.conversions:
        mail = hard.emails.get(str(body["event_id"]))
        await store_conversion(conn, program_id, parse_conversion(body),
                               email_hash(SECRET, mail) if mail else None, source="import")
    bodies = {str(b["event_id"]): b for b in t.conversions}
    for i, back in enumerate(hard.reversals):
        original = bodies[str(back["event"])]
        at = datetime.fromisoformat(str(original["occurred_at"])) + timedelta(days=10)
        body = {"program": "gen", "event_id": f"x{i}", "type": "chargeback",
                "customer_id": back["customer"], "amount": original["amount"],
                "currency": "USD", "occurred_at": at.isoformat(),
                "original_event_id": back["event"]}
        await store_conversion(conn, program_id, parse_conversion(body), None, source="import")
    return hard
