"""One program's 60 days of traffic, drawn from a seed: genuine referrals with their look-alikes
(families, offices, campuses, carrier NAT, privacy browsers, travellers, VPN users, influencers,
repeat buyers, genuine refunds) and fraud (click spam, click injection, click farms, incentivised
sign-ups, self-referral, rings and device farms, bots), each fraud with an evasive variant.

Written from the public contract only (DESIGN.md): nothing here knows how refguard scores.

Every purchase the program would credit to a referral link is labelled from the generator's own
knowledge: the last referral click of that browser (visitor cookie) within the 30-day window
decides whose it is, exactly as last-touch attribution should; that click was made by a clean
visitor or by a fraud mechanism, and the purchase takes its label.
"""

from __future__ import annotations

import math
import random
import string
import uuid
from bisect import bisect_right
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from bench.redteam2.world import (
    COUNTRIES,
    HOME_COUNTRIES,
    TYPO_DOMAINS,
    Device,
    Network,
    World,
    accept_language,
    clone_device,
    email,
    local_part,
    make_device,
    new_vid,
    provider,
)

DAY = 86_400.0
HOUR = 3_600.0
MINUTE = 60.0
HORIZON_DAYS = 60
HORIZON = HORIZON_DAYS * DAY
WINDOW = 30 * DAY

FRAUD_MECHANISMS = ("click_spam", "click_injection", "click_farm", "incentivised",
                    "self_referral", "ring", "bot")
LOOKALIKES = ("family", "office", "campus", "cgnat", "privacy", "traveller", "vpn",
              "influencer", "repeat", "refunded", "refund_peer", "genuine_of_fraudster")

# Local-hour activity of people (index: hour of day).
DIURNAL = (0.25, 0.12, 0.06, 0.04, 0.04, 0.08, 0.25, 0.55, 0.8, 0.9, 1.0, 1.0, 1.05, 1.0, 0.95,
           0.95, 1.0, 1.1, 1.3, 1.5, 1.55, 1.35, 0.95, 0.55)
CHANNELS = (("whatsapp", 28), ("sms", 9), ("facebook", 12), ("instagram", 10), ("email", 15),
            ("x", 5), ("linkedin", 4), ("reddit", 3), ("copy", 14))
CASH_SITES = ("https://www.reddit.com/r/signupsforpay/comments/{id}/",
              "https://www.reddit.com/r/beermoney/comments/{id}/",
              "https://www.reddit.com/r/referralcodes/comments/{id}/",
              "https://forum.getpaidto.example/threads/{id}/",
              "https://cashsignups.example/offer/{id}")
SPAM_PUBLISHERS = ("https://free-coupons-daily.example/deals", "https://m.fastflashlight.example/",
                   "https://wallpapers-hd.example/gallery", "https://news-buzz-today.example/",
                   None, None)


def b62(rng: random.Random, n: int) -> str:
    return "".join(rng.choices(string.ascii_letters + string.digits, k=n))


@dataclass
class Person:
    cid: str
    email: str
    country: str
    locale: str
    devices: list[Device]
    home_ip: str
    carrier: Network
    nat: bool
    wifi: float
    net: str = "plain"  # plain | office | campus | vpn | tor | traveller
    office_ip: str | None = None
    campus_ips: list[str] = field(default_factory=list)
    vpn: Network | None = None
    trips: list[tuple[float, float, str, str]] = field(default_factory=list)
    signed_up: bool = False
    buy_mult: float = 1.0  # click spam aimed at likely buyers
    buy_at: float | None = None
    inject: Any = None  # malware on the phone: fires a click before a purchase


@dataclass
class Tag:
    fraud: bool
    mech: str  # fraud mechanism, or "clean"
    variant: str = ""
    evasive: bool = False
    tags: tuple[str, ...] = ()


@dataclass
class Referrer:
    person: Person
    code: str
    role: str
    weight: float = 0.0
    shares: list[tuple[float, str]] = field(default_factory=list)


@dataclass
class Purchase:
    event_id: str
    ts: float
    vid: str | None
    want_click_id: bool
    extra_tags: list[str]
    conv: dict[str, Any]
    refunded: bool = False
    own: bool = False  # a referrer's own purchase


@dataclass
class Params:
    seed: int
    quick: bool
    home: str
    n_referrers: int
    n_visitors: int
    referral_share: float
    conv_rate: float
    organic_conv: float
    prices: list[int]
    price_w: list[float]
    refund_rate: float
    repeat_rate: float
    mobile_share: float
    wifi: float
    nat_share: float
    nat_pool: int
    delay_mix: tuple[float, float, float]
    fraud: dict[str, dict[str, Any]]
    looks: dict[str, dict[str, Any]]

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def draw_params(seed: int, quick: bool) -> Params:
    rng = random.Random(f"rt2-params:{seed}")
    u = rng.uniform
    n_ref = rng.randint(100, 280) if quick else int(math.exp(u(math.log(200), math.log(2000))))
    n_vis = (rng.randint(3000, 8000) if quick
             else int(math.exp(u(math.log(5000), math.log(60000)))))
    n_vis = max(n_vis, 4 * n_ref)
    pmin = rng.choice((499, 799, 999, 1299, 1499, 1999, 2499, 2999))
    n_prod = rng.randint(3, 8)
    prices = sorted({pmin} | {int(pmin * u(1.2, 10) / 100) * 100 + 99 for _ in range(n_prod - 1)})
    price_w = [u(0.3, 1.0) for _ in prices]
    price_w[0] = u(0.05, 0.35) * sum(price_w[1:]) / (1 - 0.2)  # the cheapest: 5-35 % of sales
    fraud: dict[str, dict[str, Any]] = {}
    for mech in FRAUD_MECHANISMS:
        if rng.random() < 0.7:
            fraud[mech] = {"evasive_share": round(u(0, 1), 2)}
    if not fraud:
        fraud[rng.choice(FRAUD_MECHANISMS)] = {"evasive_share": round(u(0, 1), 2)}
    looks: dict[str, dict[str, Any]] = {}
    for look in ("family", "office", "campus", "privacy", "traveller", "vpn", "influencer"):
        if rng.random() < 0.75:
            looks[look] = {}
    return Params(
        seed=seed, quick=quick, home=rng.choice(HOME_COUNTRIES), n_referrers=n_ref,
        n_visitors=n_vis, referral_share=round(u(0.25, 0.6), 3),
        conv_rate=round(u(0.04, 0.15), 3), organic_conv=round(u(0.01, 0.05), 3),
        prices=prices, price_w=[round(w, 3) for w in price_w],
        refund_rate=round(u(0.01, 0.08), 3), repeat_rate=round(u(0.04, 0.25), 3),
        mobile_share=round(u(0.5, 0.8), 2), wifi=round(u(0.3, 0.7), 2),
        nat_share=round(u(0.05, 0.5), 2), nat_pool=rng.randint(8, 96),
        delay_mix=(round(u(0.25, 0.6), 2), round(u(0.2, 0.4), 2), 0.0),
        fraud=fraud, looks=looks,
    )


class Scenario:
    """Draws the program and keeps what it drew: referrers, clicks, conversions, labels."""

    def __init__(self, seed: int, quick: bool = False) -> None:
        self.p = draw_params(seed, quick)
        self.rng = random.Random(f"rt2:{seed}")
        p = self.p
        self.world = World(random.Random(f"rt2-world:{seed}"), p.home, nat_pool=p.nat_pool,
                           vpn_exits=self.rng.randint(10, 60), tor_exits=self.rng.randint(15, 40))
        self.tz = COUNTRIES[p.home][0]
        self.referrers: list[Referrer] = []
        self.clicks: list[dict[str, Any]] = []
        self.click_ts: list[float] = []
        self.by_vid: dict[str, list[tuple[float, str, Tag, str]]] = {}
        self.purchases: list[Purchase] = []
        self.convs: list[tuple[float, dict[str, Any]]] = []
        self.rings: list[dict[str, Any]] = []
        self.self_acts: dict[str, float] = {}
        self.nat_ips = {ip for n in self.world.by_kind["mobile"] for ip in n.pool}
        self.counts: dict[str, Any] = {}
        self._event = 0
        self._people = 0
        self.generate()

    # -- small draws ----------------------------------------------------------------------------

    def when(self, day: float | None = None, tz: float | None = None) -> float:
        """A moment of a day (random day when None) weighted by people's local hours."""
        rng = self.rng
        d = rng.randrange(HORIZON_DAYS) if day is None else int(day)
        h = rng.choices(range(24), DIURNAL)[0]
        local = d * DAY + h * HOUR + rng.random() * HOUR
        return local - (self.tz if tz is None else tz) * HOUR

    def human_delay(self) -> float:
        """Click to purchase for a person deciding on their own."""
        rng = self.rng
        a, b, _ = self.p.delay_mix
        r = rng.random()
        if r < a:
            return max(45.0, rng.lognormvariate(math.log(12 * MINUTE), 0.8))
        if r < a + b:
            return rng.lognormvariate(math.log(6 * HOUR), 1.0)
        return rng.uniform(1, 25) * DAY

    def amount(self, minimum_p: float | None = None) -> int:
        p = self.p
        if minimum_p is not None and self.rng.random() < minimum_p:
            return p.prices[0]
        return self.rng.choices(p.prices, p.price_w)[0]

    def cid(self) -> str:
        self._people += 1
        return f"cus_{b62(self.rng, 14)}"

    def person(self, country: str | None = None, *, kind: str | None = None,
               net: str = "plain", mail: str | None = None, home_ip: str | None = None,
               device: Device | None = None) -> Person:
        rng, p, w = self.rng, self.p, self.world
        country = country or (p.home if rng.random() < 0.96 else rng.choice(list(COUNTRIES)))
        base_locale = COUNTRIES[country][1]
        locale = base_locale if rng.random() < 0.85 else rng.choice(
            ("en-US", "en-GB", "es-US", "de-DE", "fr-FR", "pt-BR", "pl-PL", "hi-IN"))
        if device is None:
            kind = kind or ("phone" if rng.random() < p.mobile_share else "desktop")
            device = make_device(rng, kind)
        devices = [device]
        if rng.random() < 0.4:
            devices.append(make_device(rng, "desktop" if device.kind == "phone" else "phone"))
        return Person(
            cid=self.cid(), email=mail or email(rng, country), country=country, locale=locale,
            devices=devices, home_ip=home_ip or w.residential_ip(country),
            carrier=w.carrier(country), nat=rng.random() < p.nat_share,
            wifi=min(0.95, max(0.05, rng.gauss(p.wifi, 0.15))), net=net)

    def al(self, person: Person, device: Device) -> str:
        return accept_language(device.family, person.locale)

    def session_ip(self, person: Person, device: Device, t: float) -> str:
        rng, w = self.rng, self.world
        if person.net == "vpn" and person.vpn is not None and rng.random() < 0.92:
            return rng.choice(person.vpn.pool)
        if person.net == "tor":
            return w.tor_exit()
        for start, end, country, hotel in person.trips:
            if start <= t < end:
                return hotel if rng.random() < 0.65 else w.mobile_ip(w.carrier(country), True)
        if person.net == "campus" and person.campus_ips and rng.random() < 0.8:
            return rng.choice(person.campus_ips)
        if person.net == "office" and person.office_ip and self.work_hours(t, person.country) \
                and rng.random() < 0.9:
            return person.office_ip
        if device.kind != "phone" or rng.random() < person.wifi:
            return person.home_ip
        return w.mobile_ip(person.carrier, person.nat)

    def work_hours(self, t: float, country: str) -> bool:
        local = t + COUNTRIES[country][0] * HOUR
        return (local // DAY) % 7 < 5 and 9 <= (local % DAY) / HOUR < 18

    def session_vid(self, device: Device) -> str:
        if device.clears:
            return new_vid(self.rng)
        return device.vid

    # -- events -------------------------------------------------------------------------------

    def click(self, t: float, ref: Referrer, ip: str, ua: str, al: str | None,  # noqa: PLR0917
              vid: str, tag: Tag, referer: str | None = None,
              query: str | None = None) -> str | None:
        if not 0 <= t < HORIZON:
            return None
        click_id = str(uuid.UUID(int=self.rng.getrandbits(128), version=4))
        row: dict[str, Any] = {"ts": t, "code": ref.code, "ip": ip, "user_agent": ua,
                               "visitor_id": vid, "click_id": click_id}
        if al is not None:
            row["accept_language"] = al
        if referer:
            row["referer"] = referer
        if query:
            row["query"] = query
        self.clicks.append(row)
        self.by_vid.setdefault(vid, []).append((t, click_id, tag, ip))
        return click_id

    def conversion(self, t: float, kind: str, person: Person, device: Device | None, ip: str,
                   *, vid: str | None = None, amount: int | None = None,
                   mail: str | None = None, want_click_id: bool = True,
                   extra_tags: list[str] | None = None, own: bool = False) -> Purchase | None:
        if not 0 <= t < HORIZON:
            return None
        self._event += 1
        event_id = f"{'ord' if kind == 'purchase' else 'evt'}_{self._event:06d}{b62(self.rng, 6)}"
        conv: dict[str, Any] = {"program": "", "event_id": event_id, "type": kind,
                                "customer_id": person.cid, "email": mail or person.email,
                                "occurred_at": t, "ip": ip}
        if device is not None:
            conv["user_agent"] = device.ua
        if amount is not None:
            conv["amount"] = amount
            conv["currency"] = "USD"
        self.convs.append((t, conv))
        purchase = Purchase(event_id, t, vid, want_click_id, list(extra_tags or []), conv,
                            own=own)
        if kind in ("purchase", "signup"):
            self.purchases.append(purchase)
        return purchase

    def reversal(self, purchase: Purchase, after: float, kind: str = "refund") -> None:
        t = purchase.ts + after
        if t >= HORIZON:
            return
        self._event += 1
        conv = {"program": "", "event_id": f"{kind[:3]}_{self._event:06d}{b62(self.rng, 6)}",
                "type": kind, "customer_id": purchase.conv["customer_id"],
                "amount": purchase.conv.get("amount", 0), "currency": "USD",
                "occurred_at": t, "original_event_id": purchase.event_id}
        self.convs.append((t, conv))
        purchase.refunded = True

    def buy(self, person: Person, device: Device, t: float, ip: str, vid: str | None, *,
            minimum_p: float | None = None, mail: str | None = None, want_click_id: bool = True,
            extra_tags: list[str] | None = None, signup_gap: float | None = None,
            ) -> Purchase | None:
        """Sign-up (first time) and purchase, in one session."""
        if not person.signed_up:
            gap = signup_gap if signup_gap is not None else self.rng.uniform(40, 15 * MINUTE)
            self.conversion(max(0.0, t - gap), "signup", person, device, ip, vid=vid, mail=mail,
                            want_click_id=want_click_id)
            person.signed_up = True
        return self.conversion(t, "purchase", person, device, ip, vid=vid,
                               amount=self.amount(minimum_p), mail=mail,
                               want_click_id=want_click_id, extra_tags=extra_tags)

    def new_referrer(self, person: Person, role: str, weight: float = 0.0) -> Referrer:
        ref = Referrer(person, b62(self.rng, 8), role, weight)
        self.referrers.append(ref)
        return ref

    # -- genuine behaviour -------------------------------------------------------------------

    def channel_of(self) -> str:
        return self.rng.choices([c for c, _ in CHANNELS], [w for _, w in CHANNELS])[0]

    def referer_query(self, channel: str) -> tuple[str | None, str | None]:
        rng = self.rng
        q = (f"utm_source={channel}&utm_medium=referral" if rng.random() < 0.5 else None)
        fb = f"fbclid=IwZXh0bgNhZW0CMTEAAR{b62(rng, 40)}_aem_{b62(rng, 22)}"
        referer = {
            "facebook": rng.choice(("https://m.facebook.com/", "https://www.facebook.com/",
                                    "https://l.facebook.com/")),
            "instagram": "https://l.instagram.com/",
            "email": rng.choice((None, None, "https://mail.google.com/",
                                 "android-app://com.google.android.gm/")),
            "x": "https://t.co/", "linkedin": "https://www.linkedin.com/",
            "reddit": "https://www.reddit.com/", "youtube": "https://www.youtube.com/",
            "tiktok": "https://www.tiktok.com/",
        }.get(channel)
        if channel in ("facebook", "instagram"):
            q = f"{q}&{fb}" if q else fb
        return referer, q

    def visit(self, ref: Referrer, person: Person, t: float, tag: Tag,  # noqa: PLR0917
              channel: str, conv_p: float, *, device: Device | None = None, revisit_p: float = 0.2,
              minimum_p: float | None = None, delay: float | None = None,
              refund_p: float | None = None) -> Purchase | None:
        """A genuine visitor: clicks the link, maybe comes back, maybe buys (and again)."""
        rng = self.rng
        device = device or person.devices[0]
        if person.net == "traveller" and not person.trips:
            self.trips_around(person, t)
        referer, query = self.referer_query(channel)
        ua = device.ua
        if channel == "instagram" and device.family == "ios_safari" and rng.random() < 0.5:
            from bench.redteam2.world import user_agent

            ua = user_agent(rng, "instagram_ios")  # the in-app browser
        vid = self.session_vid(device)
        ip = self.session_ip(person, device, t)
        self.click(t, ref, ip, ua, self.al(person, device), vid, tag, referer, query)
        last = t
        if rng.random() < revisit_p:
            t2 = t + rng.lognormvariate(math.log(2 * DAY), 1.0)
            vid2 = self.session_vid(device)
            if not device.clears:
                self.click(t2, ref, self.session_ip(person, device, t2), device.ua,
                           self.al(person, device), vid2, tag, None, None)
                last = max(last, t2)
        if rng.random() >= conv_p:
            return None
        d = delay if delay is not None else self.human_delay()
        if device.clears:  # cookies go with the session: buys then or never via the link
            d = min(d, rng.uniform(2, 40) * MINUTE)
        tp = (last if d > HOUR else t) + d
        same = tp - t < HOUR
        pip = ip if same else self.session_ip(person, device, tp)
        first = self.buy(person, device, tp, pip, vid, minimum_p=minimum_p,
                         want_click_id=same or rng.random() < 0.85)
        if first is None:
            return None
        refund_p = self.p.refund_rate if refund_p is None else refund_p
        if rng.random() < refund_p:
            self.reversal(first, rng.uniform(1, 20) * DAY)
            first.extra_tags.append("refunded")
        if not device.clears and rng.random() < self.p.repeat_rate:
            tr = tp
            for _ in range(rng.randint(1, 3)):
                tr += rng.uniform(2, 12) * DAY
                again = self.buy(person, device, tr, self.session_ip(person, device, tr), vid,
                                 want_click_id=False, extra_tags=["repeat"])
                if again is not None and rng.random() < self.p.refund_rate:
                    self.reversal(again, rng.uniform(1, 20) * DAY)
                    again.extra_tags.append("refunded")
        return first

    def plain_visitor(self) -> tuple[Person, list[str]]:
        """A referral visitor of the general population, with the look-alike it belongs to."""
        rng, looks, w = self.rng, self.p.looks, self.world
        r = rng.random()
        if "privacy" in looks and r < looks["privacy"]["share"]:
            fam = rng.choices(("tor", "mullvad", "firefox_rfp", "brave"), (3, 2, 2, 3))[0]
            dev = make_device(rng, "desktop", fam, clears=fam in ("tor", "mullvad"))
            person = self.person(device=dev, net="tor" if fam == "tor" else "plain")
            person.devices = [dev]
            return person, ["privacy"]
        r -= looks.get("privacy", {}).get("share", 0)
        if "vpn" in looks and r < looks["vpn"]["share"]:
            person = self.person(net="vpn")
            person.vpn = w.vpn_provider()
            return person, ["vpn"]
        r -= looks.get("vpn", {}).get("share", 0)
        if "traveller" in looks and r < looks["traveller"]["share"]:
            return self.person(net="traveller"), ["traveller"]
        r -= looks.get("traveller", {}).get("share", 0)
        return self.person(), ["plain"]

    def trips_around(self, person: Person, t: float) -> None:
        """A traveller: abroad when the link reaches them, and on another trip or two."""
        rng, w = self.rng, self.world
        starts = [t - rng.uniform(0.2, 6) * DAY]
        starts += [rng.uniform(-10, HORIZON_DAYS) * DAY for _ in range(rng.randint(0, 2))]
        for start in starts:
            country = rng.choice([c for c in COUNTRIES if c != person.country])
            hotel = w.business_ip(country) if rng.random() < 0.5 else w.residential_ip(country)
            person.trips.append((start, start + rng.uniform(3, 14) * DAY, country, hotel))

    # -- the program --------------------------------------------------------------------------

    def generate(self) -> None:
        rng, p = self.rng, self.p
        # Look-alike shares of the referral population.
        for name, lo, hi in (("privacy", 0.02, 0.08), ("vpn", 0.03, 0.12),
                             ("traveller", 0.02, 0.07)):
            if name in p.looks:
                p.looks[name]["share"] = round(rng.uniform(lo, hi), 3)
        # Clean referrers with a power law of reach.
        alpha = rng.uniform(1.1, 2.2)
        clean = [self.new_referrer(self.person(), "clean", rng.paretovariate(alpha))
                 for _ in range(p.n_referrers)]
        referral_visitors = int(p.n_visitors * p.referral_share)
        influencers: list[Referrer] = []
        if "influencer" in p.looks:
            for ref in rng.sample(clean, rng.randint(1, 4)):
                ref.role = "influencer"
                influencers.append(ref)
            p.looks["influencer"]["n"] = len(influencers)
            p.looks["influencer"]["visitor_share"] = round(rng.uniform(0.08, 0.3), 3)
        inf_visitors = int(referral_visitors * p.looks.get("influencer", {}).get(
            "visitor_share", 0))
        self.counts["referral_visitors"] = referral_visitors
        # Share moments per referrer and the visitors they bring.
        others = [r for r in clean if r.role == "clean"]
        weights = [r.weight for r in others]
        picks = rng.choices(range(len(others)), weights, k=referral_visitors - inf_visitors)
        per_ref: dict[int, int] = {}
        for i in picks:
            per_ref[i] = per_ref.get(i, 0) + 1
        ref_quality = {id(r): rng.lognormvariate(0, 0.4) for r in clean}
        for i, n in sorted(per_ref.items()):
            ref = others[i]
            k = max(1, round(n / rng.uniform(1.5, 6)))
            ref.shares = [(self.when(), self.channel_of()) for _ in range(k)]
            for _ in range(n):
                st, channel = rng.choice(ref.shares)
                person, tags = self.plain_visitor()
                t = st + rng.lognormvariate(math.log(rng.uniform(0.5, 3) * HOUR), 1.2)
                self.visit(ref, person, t, Tag(False, "clean", tags=tuple(tags)), channel,
                           p.conv_rate * ref_quality[id(ref)])
        for ref in influencers:
            posts = rng.randint(2, 8)
            n_ref = max(10, inf_visitors // max(1, len(influencers)))
            channel = rng.choice(("instagram", "youtube", "tiktok", "x"))
            post_ts = sorted(self.when() for _ in range(posts))
            sizes = [rng.paretovariate(1.5) for _ in post_ts]
            for pt, size in zip(post_ts, sizes, strict=True):
                n = max(3, int(n_ref * size / sum(sizes)))
                decay = rng.uniform(0.5, 5) * HOUR
                for _ in range(n):
                    person, tags = self.plain_visitor()
                    t = pt + rng.expovariate(1 / decay)
                    self.visit(ref, person, t,
                               Tag(False, "clean", tags=("influencer", *tags)), channel,
                               p.conv_rate * rng.uniform(0.5, 1.3))
        self.families(clean)
        self.offices(clean)
        self.campuses(clean)
        # Fraud.
        organic = self.organic()
        for mech, gen in (("click_spam", self.click_spam), ("click_injection",
                                                             self.click_injection),
                          ("click_farm", self.click_farm), ("incentivised", self.incentivised),
                          ("self_referral", self.self_referral), ("ring", self.ring),
                          ("bot", self.bots)):
            if mech in p.fraud:
                gen(p.fraud[mech], clean, organic)
        for person in organic:  # organic purchases: nobody's referral
            self.organic_purchases(person)
        self.own_activity()

    # -- look-alikes in groups ---------------------------------------------------------------

    def families(self, clean: list[Referrer]) -> None:
        rng, p = self.rng, self.p
        if "family" not in p.looks:
            return
        n = rng.randint(3, 12 if p.quick else 40)
        conv = rng.uniform(0.3, 0.7)
        p.looks["family"].update(households=n, conv=round(conv, 2))
        for _ in range(n):
            size = rng.randint(2, 6)
            country = p.home
            home = self.world.residential_ip(country)
            model = make_device(rng, "phone")
            members = [self.person(country, home_ip=home, device=clone_device(rng, model))
                       for _ in range(size)]
            carrier, nat = members[0].carrier, members[0].nat
            for m in members:
                m.carrier, m.nat = carrier, nat
                m.locale = members[0].locale
            if rng.random() < 0.3:  # one of them refers outsiders; the family came otherwise
                insider = rng.choice([r for r in clean if r.role == "clean"])
                insider.person.home_ip = home
                insider.person.devices[0] = clone_device(rng, model)
                insider.person.carrier, insider.person.nat = carrier, nat
            tag = Tag(False, "clean", tags=("family",))
            if rng.random() < 0.6:
                ref = rng.choices(clean, [r.weight for r in clean])[0]
                st = self.when()
                channel = rng.choice(("whatsapp", "sms", "facebook"))
                for m in members:
                    self.visit(ref, m, st + rng.lognormvariate(math.log(25 * MINUTE), 1.3), tag,
                               channel, conv)
            else:
                for m in members:
                    ref = rng.choices(clean, [r.weight for r in clean])[0]
                    self.visit(ref, m, self.when(), tag, self.channel_of(), conv)

    def offices(self, clean: list[Referrer]) -> None:
        rng, p = self.rng, self.p
        if "office" not in p.looks:
            return
        n = rng.randint(1, 3 if p.quick else 5)
        p.looks["office"]["offices"] = n
        for _ in range(n):
            size = rng.randint(5, 30 if p.quick else 60)
            ip = self.world.business_ip(p.home)
            corp = make_device(rng, "desktop", rng.choice(("win_chrome", "win_edge")))
            staff = []
            for _ in range(size):
                dev = clone_device(rng, corp) if rng.random() < 0.8 else None
                person = self.person(p.home, kind="desktop", device=dev, net="office")
                person.office_ip = ip
                staff.append(person)
            conv = rng.uniform(0.15, 0.5)
            inside: Referrer | None = None
            if rng.random() < 0.7:
                inside = self.new_referrer(staff.pop(), "office_referrer", 1.0)
            tag = Tag(False, "clean", tags=("office",))
            for person in staff:
                ref = inside if inside is not None and rng.random() < 0.75 else \
                    rng.choices(clean, [r.weight for r in clean])[0]
                day = rng.randrange(HORIZON_DAYS)
                while (day % 7) >= 5:
                    day = rng.randrange(HORIZON_DAYS)
                t = day * DAY + (rng.uniform(9.2, 17.5) - COUNTRIES[p.home][0]) * HOUR
                self.visit(ref, person, t, tag, rng.choice(("email", "copy", "linkedin")), conv)

    def campuses(self, clean: list[Referrer]) -> None:
        rng, p = self.rng, self.p
        if "campus" not in p.looks:
            return
        n = 1 if p.quick else rng.randint(1, 2)
        p.looks["campus"]["campuses"] = n
        for _ in range(n):
            size = rng.randint(30, 80 if p.quick else 150)
            ips = self.world.university(p.home, rng.randint(1, 4))
            students = []
            for _ in range(size):
                fam = rng.choices(("ios_safari", "android_chrome", "samsung"), (60, 30, 10))[0]
                person = self.person(p.home, device=make_device(rng, "phone", fam),
                                     net="campus")
                person.campus_ips = ips
                students.append(person)
            ambassadors = [self.new_referrer(students.pop(), "ambassador", 2.0)
                           for _ in range(rng.randint(1, 3))]
            for amb in ambassadors:
                amb.shares = [(self.when(), rng.choice(("whatsapp", "instagram", "copy")))
                              for _ in range(rng.randint(2, 6))]
            conv = rng.uniform(0.1, 0.4)
            tag = Tag(False, "clean", tags=("campus",))
            for person in students:
                if rng.random() < 0.8:
                    amb = rng.choice(ambassadors)
                    st, channel = rng.choice(amb.shares)
                    t = st + rng.lognormvariate(math.log(HOUR), 1.2)
                    self.visit(amb, person, t, tag, channel, conv)
                else:
                    ref = rng.choices(clean, [r.weight for r in clean])[0]
                    self.visit(ref, person, self.when(), tag, self.channel_of(), conv)

    # -- organic visitors (nobody's referral) ------------------------------------------------

    def organic(self) -> list[Person]:
        """The program's organic visitors that matter here: those who buy, and a pool that
        click spam and injection can reach."""
        p = self.p
        n_org = int(p.n_visitors * (1 - p.referral_share))
        self.counts["organic_visitors"] = n_org
        return [self.person() for _ in range(n_org)] if n_org else []

    def organic_purchases(self, person: Person) -> None:
        rng = self.rng
        if rng.random() >= self.p.organic_conv * person.buy_mult:
            return
        t = person.buy_at if person.buy_at is not None else self.when()
        device = person.devices[0]
        vid = device.vid if device.vid in self.by_vid else None
        ip = self.session_ip(person, device, t)
        if person.inject is not None:
            person.inject(person, device, t, ip)
            vid = device.vid
        purchase = self.buy(person, device, t, ip, vid)
        if purchase is not None and rng.random() < self.p.refund_rate:
            self.reversal(purchase, rng.uniform(1, 20) * DAY)
            purchase.extra_tags.append("refunded")

    # -- fraud ------------------------------------------------------------------------------

    def budget(self) -> int:
        """Purchases a volume mechanism aims at: a share of the program's genuine referred
        purchases (at least a handful, so a present mechanism is measurable)."""
        clean = self.counts["referral_visitors"] * self.p.conv_rate
        return max(12, int(clean * math.exp(self.rng.uniform(math.log(0.02), math.log(0.15)))))

    def fraud_referrer(self, role: str) -> Referrer:
        return self.new_referrer(self.person(), role)

    def click_spam(self, cfg: dict[str, Any], clean: list[Referrer],
                   organic: list[Person]) -> None:
        """Links fired at many visitors (pop-unders, hidden frames, app SDKs) so their later
        organic purchases are credited; the evasive kind spreads over several accounts, fires
        less, and aims at people about to buy (retargeting)."""
        rng = self.rng
        evasive = rng.random() < cfg["evasive_share"]
        n_acc = rng.randint(2, 6) if evasive else 1
        frac = rng.uniform(0.01, 0.05) if evasive else rng.uniform(0.05, 0.3)
        cfg.update(evasive=evasive, accounts=n_acc, target_share=round(frac, 3))
        accounts = [self.fraud_referrer("click_spam") for _ in range(n_acc)]
        tag = Tag(True, "click_spam", "retargeting" if evasive else "blanket", evasive)
        publisher = rng.choice(SPAM_PUBLISHERS)
        hit = 0
        for person in organic:
            if rng.random() >= frac * n_acc:
                continue
            hit += 1
            acc = rng.choice(accounts)
            device = person.devices[0]
            if evasive:  # aimed at likely buyers, days before they buy
                mult = rng.uniform(1.5, 4)
                buy_at = self.when()
                person.buy_mult = mult
                person.buy_at = buy_at
                times = [buy_at - rng.uniform(0.1, 14) * DAY]
            else:
                times = [self.when() for _ in range(rng.randint(1, 3))]
            for t in times:
                self.click(t, acc, self.session_ip(person, device, t), device.ua,
                           self.al(person, device), device.vid, tag, publisher,
                           f"sub_id={rng.randint(1000, 99999)}" if rng.random() < 0.5 else None)
        cfg["spammed_visitors"] = hit

    def click_injection(self, cfg: dict[str, Any], clean: list[Referrer],
                        organic: list[Person]) -> None:
        """Malware on Android phones fires a click on its link seconds before a purchase it sees
        coming (the evasive kind waits longer and also fires decoys)."""
        rng = self.rng
        n_inj = rng.randint(1, 3)
        injectors = [self.fraud_referrer("click_injection") for _ in range(n_inj)]
        infected = rng.uniform(0.05, 0.3)
        ev_share = cfg["evasive_share"]
        cfg.update(injectors=n_inj, infected_share=round(infected, 3))
        evasive_of = {id(r): rng.random() < ev_share for r in injectors}

        def inject(person: Person, device: Device, t: float, ip: str) -> None:
            acc = rng.choice(injectors)
            ev = evasive_of[id(acc)]
            lag = (math.exp(rng.uniform(math.log(15), math.log(600))) if ev
                   else rng.uniform(1, 20))
            tag = Tag(True, "click_injection", "slow" if ev else "fast", ev)
            self.click(t - lag, acc, ip, device.ua, self.al(person, device), device.vid, tag,
                       None, None)
            if ev:
                for _ in range(rng.randint(0, 3)):
                    td = self.when()
                    self.click(td, acc, self.session_ip(person, device, td), device.ua,
                               self.al(person, device), device.vid, tag, None, None)

        for person in organic:
            if person.devices[0].family in ("android_chrome", "samsung") and \
                    rng.random() < infected:
                person.inject = inject
        # Referred Android buyers too: the injected click steals the credit from their friend.
        steal = rng.uniform(0, 0.5) * infected
        cfg["steal_share"] = round(steal, 3)
        for purchase in list(self.purchases):
            conv = purchase.conv
            if conv["type"] != "purchase" or purchase.vid is None or \
                    "Android" not in conv.get("user_agent", "") or rng.random() >= steal:
                continue
            acc = rng.choice(injectors)
            ev = evasive_of[id(acc)]
            lag = (math.exp(rng.uniform(math.log(15), math.log(600))) if ev
                   else rng.uniform(1, 20))
            self.click(purchase.ts - lag, acc, conv["ip"], conv["user_agent"],
                       self._al_of_vid(purchase.vid), purchase.vid,
                       Tag(True, "click_injection", "slow" if ev else "fast", ev), None, None)
            purchase.want_click_id = True

    def _al_of_vid(self, vid: str) -> str | None:
        for row in reversed(self.clicks):
            if row["visitor_id"] == vid:
                return row.get("accept_language")
        return None

    def click_farm(self, cfg: dict[str, Any], clean: list[Referrer],
                   organic: list[Person]) -> None:
        """Paid workers on residential proxies with real phones and browsers, in shifts at a
        steady rhythm, buying the cheapest product; a share charged back weeks later."""
        rng, p = self.rng, self.p
        n_farms = rng.randint(1, 3)
        budget = self.budget()
        cfg["budget"] = budget
        farms = []
        for _ in range(n_farms):
            ev = rng.random() < cfg["evasive_share"]
            ref = self.fraud_referrer("click_farm")
            target = max(12, int(budget * rng.uniform(0.5, 1.5) / n_farms))
            conv_p = rng.uniform(0.2, 0.7)
            n_clicks = int(target / conv_p)
            workers = rng.randint(2, max(2, min(25, n_clicks // 15)))
            interval = rng.uniform(4, 25) * MINUTE
            jitter = rng.uniform(0.3, 0.6) if ev else rng.uniform(0.03, 0.12)
            shift_start = rng.uniform(7, 12)
            shift_len = rng.uniform(5, 10)
            lang = rng.choice(("en-US,en;q=0.9", "en-GB,en;q=0.9", "en-US,en;q=0.8"))
            min_p = rng.uniform(0.2, 0.5) if ev else rng.uniform(0.8, 1.0)
            cb_share = rng.uniform(0.0, 0.1) if ev else rng.uniform(0.1, 0.5)
            farms.append({"evasive": ev, "workers": workers, "clicks": n_clicks,
                          "conv": round(conv_p, 2), "interval_min": round(interval / 60, 1),
                          "chargeback_share": round(cb_share, 2)})
            tag = Tag(True, "click_farm", "jittered" if ev else "rhythm", ev)
            tz = COUNTRIES[p.home][0]
            per_shift = max(1, int(shift_len * HOUR / interval))
            days = sorted(rng.sample(range(HORIZON_DAYS),
                                     min(HORIZON_DAYS, max(2, math.ceil(
                                         n_clicks / (per_shift * workers))))))
            made = 0
            worker_devices = [[make_device(rng, rng.choice(("phone", "phone", "desktop")))
                               for _ in range(rng.randint(2, 4))] for _ in range(workers)]
            for day in days:
                for w in range(workers):
                    t = day * DAY + (shift_start - tz) * HOUR + rng.uniform(0, interval)
                    end = t + shift_len * HOUR
                    while t < end and made < n_clicks:
                        made += 1
                        device = rng.choice(worker_devices[w])
                        person = self.person(p.home, device=Device(device.ua, device.family,
                                                                   device.kind,
                                                                   new_vid(rng)))
                        person.devices = [person.devices[0]]
                        ip = self.world.residential_ip(p.home)
                        d0 = person.devices[0]
                        al = self.al(person, d0) if ev else lang
                        vid = d0.vid
                        self.click(t, ref, ip, d0.ua, al, vid, tag)
                        if rng.random() < conv_p:
                            tp = t + rng.lognormvariate(math.log(rng.uniform(4, 40) * MINUTE),
                                                        0.7)
                            bought = self.buy(person, d0, tp, ip, vid, minimum_p=min_p)
                            if bought is not None and rng.random() < cb_share:
                                self.reversal(bought, rng.uniform(14, 50) * DAY, "chargeback")
                        t += interval * max(0.2, rng.gauss(1, jitter))
        cfg["farms"] = farms

    def incentivised(self, cfg: dict[str, Any], clean: list[Referrer],
                     organic: list[Person]) -> None:
        """Referrers posting on sign-up-for-cash sites: bursts of workers from several
        countries who buy the cheapest thing and get much of it refunded. The same referrers
        also have genuine friends."""
        rng, p = self.rng, self.p
        actives = [r for r in clean if r.role == "clean" and r.shares]
        chosen = rng.sample(actives, min(len(actives), rng.randint(1, 4)))
        budget = self.budget()
        cfg["budget"] = budget
        info = []
        for ref in chosen:
            ref.role = "incentivised"
            ev = rng.random() < cfg["evasive_share"]
            signup_p = rng.uniform(0.5, 0.9)
            buy_p = rng.uniform(0.4, 0.9)
            total = max(30, int(budget * rng.uniform(0.5, 1.5) / len(chosen)
                                / (signup_p * buy_p)))
            posts = rng.randint(1, max(1, min(5, total // 12)))
            min_p = rng.uniform(0.3, 0.6) if ev else rng.uniform(0.8, 1.0)
            refund_p = rng.uniform(0.05, 0.2) if ev else rng.uniform(0.3, 0.7)
            countries = ([p.home] if ev else
                         [p.home, *rng.sample(["IN", "BR", "ZA", "PL", "ES", "SG"], 3)])
            cw = [1.0] + [rng.uniform(0.5, 2) for _ in countries[1:]]
            info.append({"evasive": ev, "posts": posts, "visitors": total,
                         "refund_share": round(refund_p, 2), "countries": countries})
            tag = Tag(True, "incentivised", "quiet" if ev else "cash_site", ev)
            for _ in range(posts):
                pt = self.when()
                site = rng.choice(CASH_SITES).format(id=b62(rng, 7).lower())
                decay = rng.uniform(0.5, 6) * HOUR
                for _ in range(max(5, total // posts)):
                    country = rng.choices(countries, cw)[0]
                    person = self.person(country)
                    device = person.devices[0]
                    t = pt + rng.expovariate(1 / decay)
                    ip = self.session_ip(person, device, t)
                    vid = device.vid
                    referer = (None if ev else site) if rng.random() < 0.85 else None
                    self.click(t, ref, ip, device.ua, self.al(person, device), vid, tag, referer)
                    if rng.random() >= signup_p:
                        continue
                    ts = t + rng.uniform(1, 10) * MINUTE
                    self.conversion(ts, "signup", person, device, ip, vid=vid)
                    person.signed_up = True
                    if rng.random() >= buy_p:
                        continue
                    bought = self.buy(person, device, ts + rng.uniform(1, 30) * MINUTE, ip, vid,
                                      minimum_p=min_p)
                    if bought is not None and rng.random() < refund_p:
                        self.reversal(bought, rng.uniform(1, 10) * DAY)
        cfg["referrers"] = info

    def self_referral(self, cfg: dict[str, Any], clean: list[Referrer],
                      organic: list[Person]) -> None:
        """Referrers buying through their own link as someone else."""
        rng, p, w = self.rng, self.p, self.world
        pool = [r for r in clean if r.role == "clean"]
        n = min(len(pool), rng.randint(3, 12) if p.quick else rng.randint(5, 40))
        acts: dict[str, int] = {}
        for ref in rng.sample(pool, n):
            ref.role = "self_referral"
            me = ref.person
            # Alias tricks need a mailbox that ignores dots and tags.
            if rng.random() < 0.7:
                me.email = f"{local_part(rng)}@gmail.com"
            local, domain = me.email.split("@")
            for _ in range(rng.choices((1, 2, 3), (6, 3, 1))[0]):
                variant = rng.choice(("email_alias", "typo_domain", "other_provider",
                                      "household", "same_device"))
                ev = rng.random() < cfg["evasive_share"]
                alias = self.person(me.country)
                t = self.when()
                if variant == "email_alias":
                    bare = local.replace(".", "")
                    cut = rng.randint(1, max(1, len(bare) - 1))
                    dotted = bare if "." in local else f"{bare[:cut]}.{bare[cut:]}"
                    tag_word = rng.choice(("ref", "deal", "x", "promo", str(rng.randint(1, 99))))
                    if domain in ("gmail.com", "googlemail.com"):
                        alias.email = rng.choice((f"{local}+{tag_word}@{domain}",
                                                  f"{dotted}@{domain}",
                                                  f"{dotted}+{tag_word}@googlemail.com"))
                    else:
                        alias.email = f"{local}+{tag_word}@{domain}"
                    device = make_device(rng, "desktop") if ev else me.devices[0]
                    ip = w.mobile_ip(me.carrier, True) if ev else me.home_ip
                elif variant == "typo_domain":
                    typo = rng.choice(TYPO_DOMAINS.get(domain, ("gmial.com",)))
                    alias.email = f"{local}@{typo}"
                    device = make_device(rng, "desktop")
                    ip = me.home_ip if rng.random() < (0.1 if ev else 0.5) else \
                        w.mobile_ip(me.carrier, me.nat)
                    ev = True
                elif variant == "other_provider":
                    other = provider(rng, me.country)
                    while other == domain:
                        other = rng.choice(("outlook.com", "yahoo.com", "proton.me",
                                            "icloud.com", "hotmail.com"))
                    alias.email = f"{local}@{other}"
                    device = make_device(rng, "phone")
                    ip = w.mobile_ip(alias.carrier, alias.nat)
                    ev = True
                elif variant == "household":
                    # He opens his own link at home, then a new device on his network signs up.
                    my = me.devices[0]
                    self.click(t, ref, me.home_ip, my.ua, self.al(me, my), my.vid,
                               Tag(True, "self_referral", variant, True))
                    t += rng.uniform(2, 20) * MINUTE
                    kinds = ("desktop", "tablet") if my.kind == "phone" else ("phone", "tablet")
                    device = make_device(rng, rng.choice(kinds))
                    ip = me.home_ip
                    ev = True
                else:  # same_device
                    my = me.devices[0]
                    device = Device(my.ua, my.family, my.kind, new_vid(rng) if ev else my.vid)
                    ip = me.home_ip if not ev or rng.random() < 0.5 else \
                        w.mobile_ip(me.carrier, me.nat)
                alias.devices = [device]
                alias.locale = me.locale
                tag = Tag(True, "self_referral", variant, ev)
                self.click(t, ref, ip, device.ua, self.al(alias, device), device.vid, tag,
                           None, None)
                tp = t + rng.uniform(1, 25) * MINUTE
                self.buy(alias, device, tp, ip, device.vid, minimum_p=0.3)
                acts[variant] = acts.get(variant, 0) + 1
                self.self_acts[ref.code] = min(self.self_acts.get(ref.code, HORIZON), t)
        cfg.update(referrers=n, acts=acts)

    def ring(self, cfg: dict[str, Any], clean: list[Referrer], organic: list[Person]) -> None:
        """Accounts bound by shared rare devices and addresses over time plus referral edges;
        a device farm (one referrer, many referees on three devices) is a ring too."""
        rng, p, w = self.rng, self.p, self.world
        n_rings = rng.randint(1, 2) if p.quick else rng.randint(1, 4)
        n_farms = rng.randint(0, 1) if p.quick else rng.randint(0, 2)
        if n_rings + n_farms == 0:
            n_rings = 1
        info = []
        for r_i in range(n_rings):
            ev = rng.random() < cfg["evasive_share"]
            k = rng.randint(4, 12 if p.quick else 25)
            devices = [make_device(rng, "phone", rng.choice(("android_webview",
                                                             "android_webview", "samsung")))
                       for _ in range(rng.randint(2, 4))]
            rare_locale = rng.choice(("ru-RU", "uk-UA", "ro-RO", "vi-VN", "tr-TR", "pl-PL"))
            ips = [w.residential_ip(p.home) for _ in range(rng.randint(1, 3))]
            members = [self.person(p.home) for _ in range(k)]
            for m in members:
                m.locale = rare_locale if rng.random() < 0.8 else m.locale
                m.devices = [rng.choice(devices)]
            refs = [self.new_referrer(m, "ring") for m in members]
            start = rng.uniform(0, 35) * DAY
            span = rng.uniform(10, 40) * DAY if ev else rng.uniform(1, 5) * DAY
            bursts = sorted(start + rng.uniform(0, span) for _ in range(rng.randint(1, 3)))
            tag = Tag(True, "ring", "camouflaged" if ev else "tight", ev)

            def session(m: Person, when: float, ring_ips: list[str] = ips,
                        ring_devices: list[Device] = devices,
                        evasive: bool = ev) -> tuple[Device, str, str]:
                dev = rng.choice(ring_devices)
                ip = (rng.choice(ring_ips) if not evasive or rng.random() < 0.35
                      else w.residential_ip(p.home))
                vid = new_vid(rng) if evasive and rng.random() < 0.7 else dev.vid
                return dev, ip, vid

            joined = [0]
            for j in range(1, k):
                parent = refs[rng.choice(joined)]
                t = rng.choice(bursts) + rng.uniform(0, 6) * HOUR
                dev, ip, vid = session(members[j], t)
                m = members[j]
                self.click(t, parent, ip, dev.ua, accept_language(dev.family, m.locale), vid, tag)
                self.buy(m, dev, t + rng.uniform(3, 40) * MINUTE, ip, vid,
                         minimum_p=0.4 if ev else 0.8)
                joined.append(j)
            # Purchases through each other's links, weeks on.
            for j in range(k):
                for _ in range(rng.randint(0, 3)):
                    other = rng.choice([i for i in range(k) if i != j])
                    t = start + rng.uniform(0, 50) * DAY
                    dev, ip, vid = session(members[j], t)
                    m = members[j]
                    self.click(t, refs[other], ip, dev.ua, accept_language(dev.family, m.locale),
                               vid, tag)
                    self.buy(m, dev, t + rng.uniform(2, 30) * MINUTE, ip, vid,
                             minimum_p=0.4 if ev else 0.8)
            if ev:  # camouflage: real friends referred by ring members
                friend_tag = Tag(False, "clean", tags=("genuine_of_fraudster",))
                for ref in refs:
                    for _ in range(rng.randint(0, 3)):
                        self.visit(ref, self.person(), self.when(), friend_tag,
                                   self.channel_of(), max(0.3, p.conv_rate))
            self.rings.append({"name": f"ring{r_i + 1}", "variant": tag.variant,
                               "evasive": ev, "members": sorted(m.cid for m in members)})
            info.append({"size": k, "evasive": ev, "devices": len(devices), "ips": len(ips)})
        for f_i in range(n_farms):
            ev = rng.random() < cfg["evasive_share"]
            boss = self.fraud_referrer("device_farm")
            devices = [make_device(rng, "phone", rng.choice(("android_chrome", "samsung",
                                                             "ios_safari")))
                       for _ in range(3)]
            home = w.residential_ip(p.home)
            carrier = w.carrier(p.home)
            m_n = rng.randint(8, 30 if p.quick else 60)
            start = rng.uniform(0, 30) * DAY
            span = rng.uniform(5, 30) * DAY
            tag = Tag(True, "ring", "device_farm_mobile" if ev else "device_farm", ev)
            members = []
            for _ in range(m_n):
                person = self.person(p.home)
                dev = rng.choice(devices)
                person.devices = [dev]
                members.append(person)
                t = start + rng.uniform(0, span)
                ip = w.mobile_ip(carrier, rng.random() < 0.7) if ev else home
                vid = new_vid(rng) if ev or rng.random() < 0.5 else dev.vid
                self.click(t, boss, ip, dev.ua, self.al(person, dev), vid, tag)
                self.buy(person, dev, t + rng.uniform(3, 60) * MINUTE, ip, vid,
                         minimum_p=0.5 if ev else 0.85)
            self.rings.append({"name": f"device_farm{f_i + 1}", "variant": tag.variant,
                               "evasive": ev,
                               "members": sorted([boss.person.cid, *(m.cid for m in members)])})
            info.append({"device_farm": True, "referees": m_n, "evasive": ev})
        cfg["rings"] = info

    def bots(self, cfg: dict[str, Any], clean: list[Referrer], organic: list[Person]) -> None:
        """Headless browsers posing as Chrome: fake accounts that buy with stolen cards. The
        plain kind runs from hosting networks without Accept-Language; the evasive kind sends
        it, from residential proxies, in human hours."""
        rng, p = self.rng, self.p
        ops = [self.fraud_referrer("bot") for _ in range(rng.randint(1, 3))]
        budget = self.budget()
        cfg["budget"] = budget
        info = []
        for op in ops:
            ev = rng.random() < cfg["evasive_share"]
            conv_p = rng.uniform(0.05, 0.35)
            n = max(20, int(budget * rng.uniform(0.5, 1.5) / len(ops) / conv_p))
            cb = rng.uniform(0.2, 0.6)
            family = rng.choice(("win_chrome", "mac_chrome", "win_edge"))
            ua_pool = [make_device(rng, "desktop", family).ua for _ in range(rng.randint(1, 4))]
            info.append({"evasive": ev, "sessions": n, "conv": round(conv_p, 2)})
            tag = Tag(True, "bot", "residential" if ev else "datacenter", ev)
            step = HORIZON / n
            t = rng.uniform(0, step)
            for _ in range(n):
                ts = self.when() if ev else t
                t += step * rng.uniform(0.8, 1.2)
                ua = rng.choice(ua_pool)
                ip = self.world.residential_ip(p.home) if ev else self.world.hosting_ip()
                vid = new_vid(rng)
                al = "en-US,en;q=0.9" if ev else None
                person = self.person(p.home, mail=f"{b62(rng, 10).lower()}@"
                                     f"{rng.choice(('gmail.com', 'outlook.com', 'proton.me'))}")
                dev = Device(ua, family, "desktop", vid)
                person.devices = [dev]
                self.click(ts, op, ip, ua, al, vid, tag)
                if rng.random() < conv_p:
                    bought = self.buy(person, dev, ts + rng.uniform(20, 240), ip, vid,
                                      minimum_p=0.9, signup_gap=rng.uniform(5, 30))
                    if bought is not None and rng.random() < cb:
                        self.reversal(bought, rng.uniform(10, 45) * DAY, "chargeback")
        cfg["operators"] = info

    # -- referrers' own lives ----------------------------------------------------------------

    def own_activity(self) -> None:
        """Referrers are customers too: their own purchases (never through a link) and, for
        some, a click on their own link to see that it works."""
        rng = self.rng
        for ref in self.referrers:
            me = ref.person
            if ref.role == "ring":  # made-up accounts: their ring purchases are their life
                continue
            n = 0 if rng.random() < 0.35 else min(4, 1 + int(rng.expovariate(1 / 0.7)))
            times = sorted(self.when() for _ in range(n))
            if ref.role == "self_referral":  # a customer first, who then games his own link
                first_act = self.self_acts.get(ref.code, HORIZON)
                times = [rng.uniform(0, max(DAY, first_act - HOUR)), *times]
            for when in times:
                t = when
                if ref.role == "office_referrer" and rng.random() < 0.5:
                    t = int(t // DAY) * DAY + (rng.uniform(9.5, 17)
                                               - COUNTRIES[me.country][0]) * HOUR
                device = rng.choice(me.devices)
                p = self.buy(me, device, t, self.session_ip(me, device, t), None,
                             want_click_id=False)
                if p is not None:
                    p.own = True
            if rng.random() < 0.15:
                device = me.devices[0]
                t = self.when()
                self.click(t, ref, self.session_ip(me, device, t), device.ua,
                           self.al(me, device), device.vid, Tag(False, "clean", tags=("own",)))

    # -- labels and files ---------------------------------------------------------------------

    def finish(self, slug: str, anchor: datetime) -> dict[str, Any]:
        """Click ids for conversions (the merchant keeps the last landing's), labels, files."""
        for rows in self.by_vid.values():
            rows.sort(key=lambda r: r[0])
        ts_of = {vid: [r[0] for r in rows] for vid, rows in self.by_vid.items()}
        labels: dict[str, dict[str, Any]] = {}
        refunds_by_code: dict[str, int] = {}
        code_of_click = {row["click_id"]: row["code"] for row in self.clicks}
        pending_peer: list[tuple[str, str]] = []
        for pur in self.purchases:
            conv = pur.conv
            conv["program"] = slug
            if pur.vid is None or pur.vid not in ts_of:
                continue
            i = bisect_right(ts_of[pur.vid], pur.ts) - 1
            if i < 0:
                continue
            t_click, click_id, tag, click_ip = self.by_vid[pur.vid][i]
            conv["visitor_id"] = pur.vid
            if pur.ts - t_click <= WINDOW and pur.want_click_id:
                conv["click_id"] = click_id
            if conv["type"] != "purchase" or pur.own or pur.ts - t_click > WINDOW:
                continue
            code = code_of_click[click_id]
            label: dict[str, Any] = {"fraud": tag.fraud, "mech": tag.mech,
                                     "variant": tag.variant, "evasive": tag.evasive,
                                     "code": code, "refunded": pur.refunded}
            if not tag.fraud:
                tags = list(tag.tags) + [t for t in pur.extra_tags if t not in tag.tags]
                if click_ip in self.nat_ips or conv["ip"] in self.nat_ips:
                    tags.append("cgnat")
                if pur.refunded:
                    refunds_by_code[code] = refunds_by_code.get(code, 0) + 1
                else:
                    pending_peer.append((pur.event_id, code))
                label["tags"] = tags
            labels[pur.event_id] = label
        for event_id, code in pending_peer:
            if refunds_by_code.get(code):
                labels[event_id]["tags"].append("refund_peer")
        fraud_codes = {r.code for r in self.referrers
                       if r.role in ("incentivised", "self_referral", "ring")}
        for lab in labels.values():
            if not lab["fraud"] and lab["code"] in fraud_codes and \
                    "genuine_of_fraudster" not in lab["tags"]:
                lab["tags"].append("genuine_of_fraudster")

        def stamp(t: float) -> str:
            return (anchor + timedelta(seconds=t)).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"

        clicks = []
        for row in sorted(self.clicks, key=lambda r: r["ts"]):
            out = dict(row)
            out["ts"] = stamp(row["ts"])
            clicks.append(out)
        conversions = []
        for _, conv in sorted(self.convs, key=lambda c: (c[0], c[1]["type"] in
                                                          ("refund", "chargeback"))):
            out = dict(conv)
            out["program"] = slug
            out["occurred_at"] = stamp(conv["occurred_at"])
            conversions.append(out)
        referrers = [{"external_id": r.person.cid, "email": r.person.email, "code": r.code,
                      "role": r.role} for r in self.referrers]
        return {"clicks": clicks, "conversions": conversions, "referrers": referrers,
                "labels": labels, "rings": self.rings}


def default_anchor() -> datetime:
    """The first day of the 60: they end at today's midnight (UTC)."""
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return today - timedelta(days=HORIZON_DAYS)
