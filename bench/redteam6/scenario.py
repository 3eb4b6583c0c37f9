"""redteam6: 60 days of a food-delivery marketplace's referral program (restaurants and grocery
dark stores deliver to homes and offices in one of six city markets), written blind: from issue
13, DESIGN.md and the public import format only. Every size, rate and timing is drawn per seed
(`Params.draw`).

The merchant keeps the landing's `rg_cid` in a first-party cookie for 30 days: a web order from
the browser that clicked carries that click's id and visitor id; orders placed in the native app
carry neither (organic). Existing customers order mostly in the app, their sign-ups happened
before the 60 days.

Clean look-alikes (each clean referred purchase carries its tags; the first names the
population, the others the situation):
- friend: a customer's friend who clicked a share (WhatsApp, Instagram, Facebook, e-mail);
  creator: a food influencer's audience (hundreds of clicks a post, low conversion);
  household: the referrer's family on his home Wi-Fi (often the same phone model);
  flatmates: a shared flat of 3-6 on one address; office: colleagues on the office address, one
  desktop build, ordering lunch minutes after the link is posted in the team chat; dorm:
  students behind a residence's 1-3 NAT addresses; rider_genuine: real couriers who refer
  colleagues at their hub (budget phones, the hub's Wi-Fi, often another language);
  lapsed_friend: an existing customer who orders again through a friend's link; traveller: a
  friend visiting from abroad (foreign carrier or hotel Wi-Fi); shared_device: a household
  member who orders on the family tablet after the referrer opened his own link there;
  fraudster_genuine: the genuine friends of a referrer who also defrauds.
- situations: promo_day (the merchant's double-bonus days: many referrers share at once and
  friends buy the minimum basket), min_basket (a first order just above the voucher's
  minimum), privacy_relay (iCloud Private Relay and a Hide-My-Email address), carrier_nat (the
  click came from a carrier-grade NAT address), refunded (a genuine refund or chargeback).
  A referrer's own order after he opened his own link is left unlabelled (not scored).

Fraud mechanisms (none named by issue 13 or bench/redteam2..5), each in a blatant and an evasive
variant (the seed draws the evasive share), with their traces:
- order_reselling (ring): a "50% off your delivery" service sold on Telegram: the operator
  places each buyer's order himself through a new account made through his own link (the
  first-order voucher plus his referral reward). Blatant: one laptop at home, private windows
  (fresh cookie, same build), counter-numbered or temp-mail mailboxes, orders back to back at
  meal times. Evasive: an anti-detect browser (a new user agent and cookie per profile), a
  residential proxy exit per profile, realistic mailboxes; still one operator's rhythm (one
  session after another, click to order in minutes) and real meal amounts.
- alias_farming (ring): one iPhone owner makes referee accounts with Sign-in-with-Apple /
  Hide-My-Email aliases in Safari private browsing behind iCloud Private Relay (addresses
  shared by every relay user of the region), buying the minimum basket for himself. Blatant:
  one iPhone, a few evenings, relay aliases only. Evasive: iPhone, iPad and Mac, four alias
  services, one or two accounts every few days, some sessions on mobile data.
- takeover_orders: a referrer buys existing customers' credentials and places orders on their
  accounts (stored cards) through his own link, delivered to drops; many are charged back
  weeks later. Blatant: data-centre addresses, one desktop build in fresh contexts, English,
  1-4 days, big baskets, chargebacks at 5-25 days. Evasive: a residential proxy in the
  victim's city and a phone user agent per victim, the market's language, meal hours over
  weeks, baskets 1.5-3x the victim's usual, fewer and later chargebacks.
- customer_poaching: a courier hands existing customers his referral QR at the door, so their
  next orders (which would have come anyway) pay him. Blatant (door_qr): the click comes from
  the customer's own phone at home 20-50 minutes after an organic order, then web re-orders.
  Evasive (winback_sms): SMS blasts to a leaked list of lapsed customers (and some strangers),
  clicks from phones over the next hours, a minority re-orders.
- rider_chain (ring): couriers farm first-order bonuses through each other: each new account
  (a rider's spare SIM and cheap phone) signs up through the previous one's link and refers the
  next. Blatant: the hub's address, two budget models, the minimum basket, a chain within days.
  Evasive: mostly mobile data, five models, amounts up to 1.6x the minimum, over weeks.

Every purchase is labelled by the last referral click of its browser (visitor cookie) within
30 days; that click was made by a clean visitor or by a mechanism.
"""

from __future__ import annotations

import bisect
import itertools
import math
import random
import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

from bench.redteam6.world import (
    BUDGET_MODELS,
    MARKETS,
    Device,
    Market,
    World,
    new_device,
)

DAY = 86400.0
HOUR = 3600.0
MINUTE = 60.0
HORIZON = 60 * DAY
WINDOW = 30 * DAY

MECHS = ("order_reselling", "alias_farming", "takeover_orders", "customer_poaching",
         "rider_chain")
VARIANTS: dict[str, tuple[str, str]] = {
    "order_reselling": ("one_laptop", "antidetect"),
    "alias_farming": ("one_iphone", "apple_devices"),
    "takeover_orders": ("datacenter", "residential"),
    "customer_poaching": ("door_qr", "winback_sms"),
    "rider_chain": ("hub_chain", "spread_chain"),
}
RINGS = {"order_reselling", "alias_farming", "rider_chain"}
LOOKALIKES = ("friend", "creator", "household", "flatmates", "office", "dorm", "rider_genuine",
              "lapsed_friend", "traveller", "shared_device", "fraudster_genuine", "promo_day",
              "min_basket", "privacy_relay", "carrier_nat", "refunded")

FIRST = ("ana", "luis", "maria", "jose", "carlos", "sofia", "diego", "lucia", "mateo", "elena",
         "pablo", "julia", "david", "sara", "leo", "nina", "omar", "ines", "ivan", "mila",
         "adam", "eva", "kemal", "ayse", "thabo", "lerato", "joy", "mark", "paula", "rafael")
LAST = ("garcia", "silva", "santos", "lopez", "perez", "rodrigues", "kowalski", "nowak",
        "yilmaz", "kaya", "dlamini", "naidoo", "reyes", "cruz", "mendoza", "souza", "costa",
        "martinez", "demir", "wisniewski", "nkosi", "bautista", "ramos", "torres")
WORDS = ("amber", "brisk", "cedar", "dune", "ember", "fable", "grove", "hazel", "iris", "jolly",
         "koala", "lumen", "maple", "nova", "olive", "pixel", "quartz", "river", "sable",
         "tulip", "umber", "vivid", "willow", "yonder", "zephyr")
TEMP_MAIL = ("10minutemail.com", "tempmail.plus", "mailinator.com", "guerrillamail.com",
             "yopmail.com")


def _u(rng: random.Random, a: float, b: float) -> float:
    return rng.uniform(a, b)


@dataclass
class Params:
    """Everything drawn per seed."""

    home: str
    quick: bool
    genuine_referrers: int
    reach_alpha: float  # power law of shares per referrer
    existing_customers: int
    organic_rate: float  # organic orders per existing customer in 60 days
    basket_usd: float  # median basket
    basket_sigma: float
    min_basket_usd: float  # the first-order voucher's minimum
    conv_friend: float
    conv_creator: float
    p_home_wifi: float  # share of phone sessions at home in the evening
    share_instagram: float
    share_facebook: float
    p_privacy_relay: float  # iPhone users with Private Relay and Hide-My-Email
    p_refund: float
    p_web_repeat: float  # repeat orders in the clicking browser (else in the app)
    repeat_rate: float
    p_household: float
    p_flatmates: float
    p_office: float
    p_dorm: float
    p_lapsed: float
    p_traveller: float
    p_min_basket: float
    creators: int
    riders_genuine: int
    promo_days: list[int]
    promo_share: float
    evasive_share: float
    actors: dict[str, int]
    scale: float

    @classmethod
    def draw(cls, rng: random.Random, quick: bool) -> Params:
        scale = 1.0 if quick else rng.uniform(2.0, 3.5)
        refs = int(rng.randint(100, 280) * scale)
        return cls(
            home=rng.choice(MARKETS).iso, quick=quick,
            genuine_referrers=refs, reach_alpha=_u(rng, 1.2, 2.2),
            existing_customers=int(refs * _u(rng, 2.5, 5.0)),
            organic_rate=_u(rng, 1.5, 7.0),
            basket_usd=_u(rng, 14, 32), basket_sigma=_u(rng, 0.3, 0.6),
            min_basket_usd=_u(rng, 8, 16),
            conv_friend=_u(rng, 0.12, 0.4), conv_creator=_u(rng, 0.01, 0.06),
            p_home_wifi=_u(rng, 0.3, 0.8),
            share_instagram=_u(rng, 0.1, 0.35), share_facebook=_u(rng, 0.05, 0.25),
            p_privacy_relay=_u(rng, 0.05, 0.35), p_refund=_u(rng, 0.02, 0.08),
            p_web_repeat=_u(rng, 0.2, 0.6), repeat_rate=_u(rng, 0.3, 2.0),
            p_household=_u(rng, 0.05, 0.2), p_flatmates=_u(rng, 0.03, 0.12),
            p_office=_u(rng, 0.03, 0.12), p_dorm=_u(rng, 0.02, 0.08),
            p_lapsed=_u(rng, 0.05, 0.2), p_traveller=_u(rng, 0.01, 0.05),
            p_min_basket=_u(rng, 0.1, 0.35),
            creators=rng.randint(1, 4), riders_genuine=rng.randint(1, 4),
            promo_days=sorted(rng.sample(range(3, 57), rng.randint(1, 3))),
            promo_share=_u(rng, 0.1, 0.4),
            evasive_share=_u(rng, 0.3, 0.7),
            actors={m: rng.randint(1, 2 if quick else 3) for m in MECHS},
            scale=scale,
        )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Person:
    cid: str
    email: str
    city: str
    home: str  # home broadband address
    devices: list[Device]
    region: int
    relay: bool = False  # browses through iCloud Private Relay
    orders: list[float] = field(default_factory=list)  # organic orders' times
    joined: bool = False  # has an account (sign-up seen or before the 60 days)


class Scenario6:
    """One seed's program: clicks, conversions, referrers, labels and planted rings."""

    def __init__(self, seed: int, quick: bool) -> None:
        self.seed = seed
        self.rng = random.Random(6_000_000 + seed)
        self.p = Params.draw(self.rng, quick)
        self.m: Market = next(m for m in MARKETS if m.iso == self.p.home)
        self.world = World(self.rng, self.m)
        self.clicks: list[dict[str, Any]] = []
        self.convs: list[dict[str, Any]] = []
        self.referrers: list[dict[str, Any]] = []
        self.rings: list[dict[str, Any]] = []
        self.customers: list[Person] = []
        self.counts: dict[str, int] = {}
        self._ids: set[str] = set()
        self._provider_cum = list(itertools.accumulate(
            1 / (i + 1) for i in range(len(self.m.providers))))
        self._build()

    # -- small draws --------------------------------------------------------------------------

    def _id(self, prefix: str) -> str:
        while True:
            x = f"{prefix}{self.rng.getrandbits(40):010x}"
            if x not in self._ids:
                self._ids.add(x)
                return x

    def at(self, day: float, hour: float) -> float:
        """Seconds from the start for a local day and hour."""
        return math.floor(day) * DAY + (hour - self.m.tz) * HOUR

    def local_hour(self, t: float) -> float:
        return ((t / HOUR) + self.m.tz) % 24

    def meal_hour(self) -> float:
        r = self.rng.random()
        if r < 0.42:
            return min(15.5, max(11.0, self.rng.gauss(13.0, 0.8)))
        if r < 0.9:
            return min(23.5, max(17.5, self.rng.gauss(20.3, 1.2)))
        return self.rng.uniform(9, 23.5)

    def share_hour(self) -> float:
        return min(23.8, max(7.0, self.rng.gauss(19.5, 2.6)))

    def basket(self, factor: float = 1.0) -> int:
        usd = self.p.basket_usd * factor * math.exp(self.rng.gauss(0, self.p.basket_sigma))
        return max(int(self.p.min_basket_usd * 100) + 1, int(usd * 100))

    def min_basket(self, spread: float) -> int:
        return int((self.p.min_basket_usd + self.rng.uniform(0.01, spread)) * 100)

    def name_email(self, provider: str | None = None) -> str:
        r = self.rng
        f, s = r.choice(FIRST), r.choice(LAST)
        local = r.choice((f"{f}.{s}", f"{f}{s}", f"{f}_{s}{r.randint(1, 99)}",
                          f"{f}{r.randint(70, 2009)}", f"{f[0]}{s}", f"{s}.{f}{r.randint(1, 9)}"))
        prov = provider or r.choices(self.m.providers, cum_weights=self._provider_cum)[0]
        return f"{local}@{prov}"

    def alias_email(self, service: str) -> str:
        r = self.rng
        if service == "privaterelay":
            return "".join(r.choice("abcdefghijklmnopqrstuvwxyz0123456789")
                           for _ in range(10)) + "@privaterelay.appleid.com"
        if service == "icloud":
            return f"{r.choice(WORDS)}.{r.choice(WORDS)}_{r.randint(10, 99)}@icloud.com"
        if service == "duck":
            return f"{r.choice(WORDS)}-{r.choice(WORDS)}-{r.choice(WORDS)}@duck.com"
        return "".join(r.choice("abcdefghijklmnopqrstuvwxyz0123456789")
                       for _ in range(9)) + "@mozmail.com"

    def person(self, *, city: str | None = None, home: str | None = None,
               device: Device | None = None, email: str | None = None,
               relay: bool | None = None) -> Person:
        city = city or self.rng.choice(self.m.cities)[0]
        dev = device or new_device(self.rng, self.m)
        if relay is None:
            relay = dev.kind == "iphone" and self.rng.random() < self.p.p_privacy_relay
        if email is None:
            email = self.alias_email("icloud") if relay and self.rng.random() < 0.7 \
                else self.name_email()
        return Person(self._id("cu"), email, city, home or self.world.home_ip(city), [dev],
                      self.rng.randrange(8), relay)

    def where(self, per: Person, dev: Device, t: float) -> str:
        """The address a person's device has at time t."""
        if per.relay and dev.kind in ("iphone", "ipad", "mac"):
            return self.world.relay_ip(per.region)
        h = self.local_hour(t)
        if dev.kind in ("android", "iphone") and dev.carrier:
            at_home = (h >= 19 or h < 8) and self.rng.random() < self.p.p_home_wifi + 0.15
            if not at_home and self.rng.random() > 0.12:
                return self.world.carrier_ip(dev.carrier)
        return per.home

    # -- events -------------------------------------------------------------------------------

    def click(self, t: float, code: str, dev: Device, ip: str, meta: dict[str, Any], *,
              browser: str = "default", fresh: bool = False, referer: str | None = None,
              query: str | None = None, lang: str | None = None) -> str:
        vid = dev.vid(self.rng, browser, fresh)
        row: dict[str, Any] = {"t": t, "code": code, "ip": ip, "ua": dev.ua(browser),
                               "lang": lang or dev.lang, "vid": vid, "meta": meta,
                               "click_id": str(uuid.UUID(int=self.rng.getrandbits(128),
                                                         version=4))}
        if referer:
            row["referer"] = referer
        if query:
            row["query"] = query
        self.clicks.append(row)
        return vid

    def order(self, t: float, per: Person, dev: Device | None, ip: str, amount: int, *,
              browser: str = "default", web: bool = True, tags: tuple[str, ...] = (),
              refund: tuple[float, str] | None = None, signup_gap: float | None = None,
              ua: str | None = None) -> None:
        """A purchase (after a sign-up when the person has no account yet); `web` orders carry
        the browser's cookie, app orders do not."""
        if t >= HORIZON:
            return
        vid = dev.jars.get(browser) if (web and dev is not None) else None
        agent = ua or (dev.ua(browser) if dev is not None and web else self.app_ua(dev))
        if not per.joined:
            gap = signup_gap if signup_gap is not None else self.rng.uniform(1, 6) * MINUTE
            self.convs.append({"t": t - gap, "type": "signup", "customer_id": per.cid,
                               "email": per.email, "ip": ip, "ua": agent, "vid": vid})
            per.joined = True
        eid = self._id("ev")
        row = {"t": t, "type": "purchase", "customer_id": per.cid, "email": per.email,
               "amount": amount, "ip": ip, "ua": agent, "vid": vid, "event_id": eid,
               "tags": list(tags), "refunded": False}
        self.convs.append(row)
        if refund is not None and t + refund[0] < HORIZON:
            row["refunded"] = True
            self.convs.append({"t": t + refund[0], "type": refund[1], "customer_id": per.cid,
                               "email": per.email, "amount": amount, "vid": None,
                               "event_id": self._id("ev")})

    def app_ua(self, dev: Device | None) -> str:
        if dev is None or dev.kind not in ("android", "iphone", "ipad"):
            return "FoodApp/7.14.0 (Android 14; SM-A145M) okhttp/4.12.0"
        if dev.kind == "android":
            return f"FoodApp/7.14.0 (Android {dev.os}; {dev.model}) okhttp/4.12.0"
        return f"FoodApp/7.14.0 (iOS {dev.os}; {dev.model}) CFNetwork/1568.100.1"

    def maybe_refund(self) -> tuple[float, str] | None:
        if self.rng.random() < self.p.p_refund:
            kind = "refund" if self.rng.random() < 0.8 else "chargeback"
            delay = (self.rng.uniform(0.05, 3) if kind == "refund"
                     else self.rng.uniform(10, 50)) * DAY
            return delay, kind
        return None

    def new_referrer(self, per: Person) -> str:
        code = f"r{self.rng.getrandbits(32):08x}"
        self.referrers.append({"external_id": per.cid, "email": per.email, "code": code})
        return code

    def meta_clean(self, *tags: str) -> dict[str, Any]:
        return {"fraud": False, "mech": "", "variant": "", "evasive": False, "tags": list(tags)}

    def meta_fraud(self, mech: str, evasive: bool) -> dict[str, Any]:
        return {"fraud": True, "mech": mech, "variant": VARIANTS[mech][evasive],
                "evasive": evasive, "tags": []}

    # -- the clean world ----------------------------------------------------------------------

    def organic(self, per: Person, start: float = 0.0) -> None:
        """An existing customer's own orders (app, sometimes the web without a referral)."""
        n = max(0, int(self.rng.expovariate(1 / self.p.organic_rate)))
        for _ in range(n):
            t = self.at(self.rng.uniform(start / DAY, 60), self.meal_hour())
            if t < 0 or t >= HORIZON:
                continue
            dev = per.devices[0]
            per.orders.append(t)
            self.order(t, per, dev, self.where(per, dev, t), self.basket(), web=False,
                       refund=self.maybe_refund())
        per.orders.sort()

    def journey(self, ref_code: str, t_click: float, per: Person, dev: Device, *,
                conv: float, tags: tuple[str, ...], browser: str = "default", ip: str | None = None,
                order_ip: str | None = None, referer: str | None = None,
                amount: int | None = None, delay: float | None = None,
                query: str | None = None) -> None:
        """A clean visitor clicks, maybe orders later from the same browser, maybe again."""
        if t_click >= HORIZON or t_click < 0:
            return
        self.click(t_click, ref_code, dev, ip or self.where(per, dev, t_click),
                   self.meta_clean(*tags), browser=browser, referer=referer, query=query,
                   fresh=per.relay and browser == "default" and self.rng.random() < 0.3)
        if self.rng.random() >= conv:
            return
        d = delay if delay is not None else min(25 * DAY, MINUTE * math.exp(
            self.rng.gauss(math.log(90), 1.9)))
        t = t_click + max(2 * MINUTE, d)
        # a meal: move to the next meal time when the delay lands at night
        if (not per.joined or self.rng.random() < 0.7) and 1 <= self.local_hour(t) < 9:
            t += (10 - self.local_hour(t)) * HOUR
        extra = ("min_basket",) if amount is None and self.rng.random() < self.p.p_min_basket \
            else ()
        amt = amount if amount is not None else (self.min_basket(1.5) if extra
                                                 else self.basket())
        self.order(t, per, dev, order_ip or self.where(per, dev, t), amt, browser=browser,
                   tags=extra, refund=self.maybe_refund())
        reps = int(self.rng.expovariate(1 / self.p.repeat_rate))
        tr = t
        for _ in range(reps):
            tr = self.at(tr / DAY + self.rng.uniform(2, 14), self.meal_hour())
            web = self.rng.random() < self.p.p_web_repeat
            self.order(tr, per, dev, self.where(per, dev, tr), self.basket(), browser=browser,
                       web=web, refund=self.maybe_refund())

    def browser_for(self, dev: Device, channel: str) -> str:
        if channel == "instagram":
            return "instagram"
        if channel == "facebook" and dev.kind == "android":
            return "facebook"
        if dev.kind == "android" and dev.model.startswith("SM-") and self.rng.random() < 0.3:
            return "samsung"
        return "default"

    def channel(self) -> str:
        r = self.rng.random()
        if r < self.p.share_instagram:
            return "instagram"
        if r < self.p.share_instagram + self.p.share_facebook:
            return "facebook"
        return "whatsapp" if self.rng.random() < 0.85 else "email"

    def genuine(self, ref: Person, code: str, population: str) -> None:
        """A genuine referrer's shares over the 60 days and the friends they bring."""
        p = self.p
        shares = max(1, min(40, int(self.rng.paretovariate(p.reach_alpha))))
        hh_members: list[Person] = []
        ref_dev = ref.devices[0]
        # referrers open their own link now and then (to copy it, to check it)
        if self.rng.random() < 0.35:
            t = self.at(self.rng.uniform(0, 60), self.share_hour())
            self.click(t, code, ref_dev, self.where(ref, ref_dev, t),
                       self.meta_clean(population, "own_click"))
        for _ in range(shares):
            day = self.rng.uniform(0, 60)
            promo = False
            for d in p.promo_days:
                if 0 <= day - d < 1 or self.rng.random() < p.promo_share / 12:
                    day, promo = d + self.rng.uniform(0, 0.9), True
                    break
            t_share = self.at(day, self.share_hour())
            ch = self.channel()
            r = self.rng.random()
            n_friends = 1 + int(self.rng.expovariate(1 / 2.0))
            for _ in range(n_friends):
                tags: tuple[str, ...] = (population,) + (("promo_day",) if promo else ())
                amount = self.min_basket(2.0) if promo and self.rng.random() < 0.6 else None
                t_click = t_share + MINUTE * math.exp(self.rng.gauss(math.log(25), 1.6))
                if r < p.p_household:
                    # the referrer's family at home, often the same phone model
                    if not hh_members or (len(hh_members) < 5 and self.rng.random() < 0.4):
                        same = self.rng.random() < 0.5 and ref_dev.kind in ("android",
                                                                            "iphone")
                        dev = new_device(self.rng, self.m, ref_dev.kind if same else None,
                                         model=ref_dev.model if same else None,
                                         lang=ref_dev.lang)
                        hh_members.append(self.person(city=ref.city, home=ref.home,
                                                      device=dev))
                    fr = self.rng.choice(hh_members)
                    t_click = self.at(day, self.rng.uniform(18.5, 23))
                    self.journey(code, t_click, fr, fr.devices[0], conv=p.conv_friend * 1.5,
                                 tags=(*tags, "household"), ip=ref.home, order_ip=ref.home,
                                 browser=self.browser_for(fr.devices[0], ch), amount=amount)
                    if self.rng.random() < 0.08 and ref_dev.kind != "windows":
                        # the family tablet: the referrer opened his link on it, his spouse
                        # orders on it later with her own account
                        tab = new_device(self.rng, self.m, "ipad" if self.rng.random() < 0.5
                                         else "android", lang=ref_dev.lang)
                        self.click(t_click - 20 * MINUTE, code, tab, ref.home,
                                   self.meta_clean(population, "shared_device"))
                        sp = self.person(city=ref.city, home=ref.home, device=tab)
                        self.order(t_click + self.rng.uniform(0.5, 30) * HOUR, sp, tab,
                                   ref.home, self.basket())
                    continue
                if r < p.p_household + p.p_lapsed and self.customers:
                    fr = self.rng.choice(self.customers)
                    self.journey(code, t_click, fr, fr.devices[0], conv=p.conv_friend * 1.3,
                                 tags=(*tags, "lapsed_friend"),
                                 browser=self.browser_for(fr.devices[0], ch), amount=amount)
                    continue
                if r < p.p_household + p.p_lapsed + p.p_traveller:
                    fr = self.person()
                    fr.home = self.world.foreign_ip()
                    dev = fr.devices[0]
                    dev.lang = self.rng.choice(("en-US,en;q=0.9", "de-DE,de;q=0.9",
                                                "es-ES,es;q=0.9", self.m.lang))
                    hotel = self.world.site("hotel").ip(self.rng.randrange(30))
                    self.journey(code, t_click, fr, dev, conv=p.conv_friend,
                                 tags=(*tags, "traveller"), ip=fr.home, order_ip=hotel,
                                 browser=self.browser_for(dev, ch), amount=amount)
                    continue
                fr = self.person(city=ref.city if self.rng.random() < 0.7 else None)
                dev = fr.devices[0]
                if fr.relay:
                    tags = (*tags, "privacy_relay")
                self.journey(code, t_click, fr, dev, conv=p.conv_friend, tags=tags,
                             browser=self.browser_for(dev, ch), amount=amount,
                             referer="https://l.instagram.com/" if ch == "instagram" and
                             self.rng.random() < 0.5 else None)

    def group_site(self, kind: str, tag: str) -> None:
        """An office, a student residence or a shared flat: a referrer shares with the people
        who use the same address (and, in offices, the same desktop build)."""
        p = self.p
        if kind == "office":
            size = self.rng.randint(5, 60)
            addrs = [self.world.site("office").ip(self.rng.randrange(250))
                     for _ in range(self.rng.randint(1, 2))]
        elif kind == "dorm":
            size = self.rng.randint(30, 150)
            net = self.world.site("dorm")
            addrs = [net.ip(self.rng.randrange(250)) for _ in range(self.rng.randint(1, 3))]
        else:
            size = self.rng.randint(3, 6)
            addrs = [self.world.home_ip()]
        build = new_device(self.rng, self.m, "windows")
        members: list[Person] = []
        for _ in range(size):
            dev = (Device(build.kind, build.model, build.os, build.chrome, None, build.lang)
                   if kind == "office" and self.rng.random() < 0.7
                   else new_device(self.rng, self.m))
            members.append(self.person(home=addrs[0] if kind == "flat" else None, device=dev))
        ref = members[0]
        code = self.new_referrer(ref)
        ref.joined = True
        posts = self.rng.randint(1, 4)
        for _ in range(posts):
            day = self.rng.uniform(0, 58)
            if kind == "office":
                while math.floor(day) % 7 in (5, 6):
                    day += 1
                t0 = self.at(day, self.rng.uniform(11.0, 12.5))
            else:
                t0 = self.at(day, self.share_hour())
            for fr in self.rng.sample(members[1:], max(1, int(len(members[1:]) *
                                                             self.rng.uniform(0.1, 0.5)))):
                dev = fr.devices[0]
                ip = self.rng.choice(addrs)
                t_click = t0 + MINUTE * math.exp(self.rng.gauss(math.log(8), 1.0))
                delay = (self.rng.uniform(5, 60) * MINUTE if kind == "office"
                         else None)
                self.journey(code, t_click, fr, dev, conv=p.conv_friend * 1.2,
                             tags=("friend", tag),
                             ip=ip, order_ip=ip if kind != "flat" or self.rng.random() < 0.8
                             else None, delay=delay)

    def creator(self) -> None:
        ref = self.person()
        ref.joined = True
        code = self.new_referrer(ref)
        for _ in range(self.rng.randint(2, 6)):
            t_post = self.at(self.rng.uniform(0, 59), self.rng.uniform(11, 21))
            for _ in range(int(self.rng.uniform(80, 400) * (1 if self.p.quick else 1.5))):
                fr = self.person(city=None)
                dev = fr.devices[0]
                t = t_post + MINUTE * math.exp(self.rng.gauss(math.log(90), 1.4))
                tags: tuple[str, ...] = ("creator",) + (("privacy_relay",) if fr.relay else ())
                self.journey(code, t, fr, dev, conv=self.p.conv_creator, tags=tags,
                             browser="instagram",
                             referer="https://l.instagram.com/", delay=MINUTE * math.exp(
                                 self.rng.gauss(math.log(600), 2.0)))

    def rider_genuine(self) -> None:
        """Real couriers at a hub: budget phones, the hub's Wi-Fi, often another language;
        they order for themselves with normal baskets and come back."""
        hub = self.world.site("hub").ip(self.rng.randrange(250))
        lang = self.m.migrant_lang if self.rng.random() < 0.6 else self.m.lang
        ref = self.person(device=new_device(self.rng, self.m, "android",
                                            model=self.rng.choice(BUDGET_MODELS), lang=lang))
        ref.joined = True
        code = self.new_referrer(ref)
        for _ in range(self.rng.randint(3, 12)):
            fr = self.person(device=new_device(self.rng, self.m, "android",
                                               model=self.rng.choice(BUDGET_MODELS),
                                               lang=lang if self.rng.random() < 0.7 else None))
            t = self.at(self.rng.uniform(0, 58), self.rng.uniform(14.5, 17.5))
            self.journey(code, t, fr, fr.devices[0], conv=min(0.9, self.p.conv_friend * 2),
                         tags=("rider_genuine",), ip=hub,
                         order_ip=hub if self.rng.random() < 0.4 else None)

    def clean_world(self) -> None:
        p = self.p
        for _ in range(p.existing_customers):
            per = self.person()
            per.joined = True
            self.organic(per)
            self.customers.append(per)
        for _ in range(p.genuine_referrers):
            ref = self.rng.choice(self.customers) if self.rng.random() < 0.7 else self.person()
            if any(r["external_id"] == ref.cid for r in self.referrers):
                ref = self.person()
            ref.joined = True
            code = self.new_referrer(ref)
            self.genuine(ref, code, "friend")
        for kind, share, tag in (("office", p.p_office, "office"), ("dorm", p.p_dorm, "dorm"),
                                 ("flat", p.p_flatmates, "flatmates")):
            for _ in range(max(1, int(p.genuine_referrers * share / 4))):
                self.group_site(kind, tag)
        for _ in range(p.creators):
            self.creator()
        for _ in range(p.riders_genuine):
            self.rider_genuine()
        self.counts["existing_customers"] = p.existing_customers
        self.counts["genuine_referrers"] = len(self.referrers)

    # -- fraud --------------------------------------------------------------------------------

    def fraud_referrer(self, mech: str, dev: Device | None = None) -> tuple[Person, str]:
        """A fraudster's own account (an ordinary customer) with a few genuine friends."""
        ref = self.person(device=dev)
        ref.joined = True
        self.organic(ref)
        code = self.new_referrer(ref)
        for _ in range(self.rng.randint(0, 4)):
            fr = self.person(city=ref.city)
            t = self.at(self.rng.uniform(0, 59), self.share_hour())
            self.journey(code, t, fr, fr.devices[0], conv=self.p.conv_friend * 1.5,
                         tags=("fraudster_genuine",))
        self.counts[f"actors_{mech}"] = self.counts.get(f"actors_{mech}", 0) + 1
        return ref, code

    def ring(self, mech: str, evasive: bool, members: list[str]) -> None:
        n = sum(1 for r in self.rings if r["name"].startswith(mech + "-"))
        self.rings.append({"name": f"{mech}-{n + 1}", "variant": VARIANTS[mech][evasive],
                           "evasive": evasive, "members": list(dict.fromkeys(members))})

    def order_reselling(self, evasive: bool) -> None:
        r = self.rng
        laptop = new_device(r, self.m, "windows")
        op, code = self.fraud_referrer("order_reselling", laptop)
        meta = self.meta_fraud("order_reselling", evasive)
        days = r.randint(15, 40) if evasive else r.randint(4, 12)
        per_day = r.uniform(1, 3) if evasive else r.uniform(2, 6)
        start = r.uniform(0, 60 - days)
        base = r.choice(("pedidos", "promo", "food", "rango", "deli", "combo")) + \
            r.choice(("mx", "", "x", "bot", "99"))
        members = [op.cid]
        n = 0
        for d in range(days):
            k = int(per_day * r.uniform(0.5, 1.5) * (0.5 + 0.5 * self.p.scale))
            t = self.at(start + d, r.choice((12.0, 19.0)) + r.uniform(0, 1.5))
            for _ in range(k):
                n += 1
                if evasive:
                    dev = new_device(r, self.m)  # an anti-detect profile
                    ip = self.world.proxy_ip()
                    email = self.name_email()
                    fresh = True
                else:
                    dev = laptop
                    ip = op.home
                    email = (f"{base}{n:02d}@{r.choice(self.m.providers[:2])}"
                             if r.random() < 0.75 else self.name_email(r.choice(TEMP_MAIL)))
                    fresh = r.random() < 0.7
                buyer = Person(self._id("cu"), email, op.city, ip, [dev], 0)
                members.append(buyer.cid)
                self.click(t, code, dev, ip, meta, fresh=fresh)
                t_order = t + r.uniform(3, 9) * MINUTE
                refund = ((r.uniform(0.05, 2) * DAY, "refund")
                          if r.random() < r.uniform(0.05, 0.15) else None)
                self.order(t_order, buyer, dev, ip, self.basket(1.2), refund=refund,
                           signup_gap=r.uniform(1.5, 4) * MINUTE)
                if evasive and r.random() < 0.2:  # the buyer comes back through the profile
                    t2 = t_order + r.uniform(3, 20) * DAY
                    self.click(t2 - 4 * MINUTE, code, dev, self.world.proxy_ip(), meta)
                    self.order(t2, buyer, dev, self.world.proxy_ip(), self.basket(1.2))
                t = t_order + r.uniform(2, 15) * MINUTE
        self.ring("order_reselling", evasive, members)

    def alias_farming(self, evasive: bool) -> None:
        r = self.rng
        iphone = new_device(r, self.m, "iphone")
        op, code = self.fraud_referrer("alias_farming", iphone)
        op.relay = True
        devices = [iphone]
        if evasive:
            devices += [new_device(r, self.m, "ipad", lang=iphone.lang),
                        new_device(r, self.m, "mac", lang=iphone.lang)]
        meta = self.meta_fraud("alias_farming", evasive)
        n = int((r.randint(8, 18) if evasive else r.randint(8, 30))
                * (0.5 + 0.5 * self.p.scale))
        start = r.uniform(0, 20 if evasive else 52)
        members = [op.cid]
        t = self.at(start, r.uniform(19, 22))
        for _ in range(n):
            dev = r.choice(devices)
            service = r.choice(("privaterelay", "icloud", "duck", "mozmail")) if evasive \
                else "privaterelay"
            acct = Person(self._id("cu"), self.alias_email(service), op.city, op.home, [dev],
                          op.region, relay=True)
            members.append(acct.cid)
            relay = not evasive or r.random() < 0.85
            ip = (self.world.relay_ip(op.region) if relay
                  else self.world.carrier_ip(iphone.carrier or self.m.carriers[0]))
            self.click(t, code, dev, ip, meta, fresh=True)
            gap = (r.uniform(10, 120) if evasive else r.uniform(3, 14)) * MINUTE
            self.order(t + gap, acct, dev, self.world.relay_ip(op.region) if relay else ip,
                       self.min_basket(8.0 if evasive else 2.0),
                       signup_gap=min(gap - 30, r.uniform(1, 4) * MINUTE))
            if evasive:
                t = self.at(t / DAY + r.uniform(1, 3.5) / (0.5 + 0.5 * self.p.scale),
                            r.uniform(18, 23))
            elif r.random() < 0.3:
                t = self.at(t / DAY + 1, r.uniform(19, 22))
            else:
                t += gap + r.uniform(10, 40) * MINUTE
        self.ring("alias_farming", evasive, members)

    def takeover_orders(self, evasive: bool) -> None:
        r = self.rng
        _, code = self.fraud_referrer("takeover_orders")
        meta = self.meta_fraud("takeover_orders", evasive)
        victims = [c for c in self.customers if c.orders]
        n = min(len(victims), int(r.randint(10, 35) * (0.5 + 0.5 * self.p.scale)))
        start = r.uniform(5, 45 if not evasive else 25)
        bot = new_device(r, self.m, "windows", lang="en-US,en;q=0.9")
        dc = [self.world.hosting_ip() for _ in range(r.randint(2, 5))]
        for v in r.sample(victims, n):
            if evasive:
                t = self.at(start + r.uniform(0, 30), self.meal_hour())
                dev = new_device(r, self.m, r.choice(("android", "iphone")))
                ip = self.world.proxy_ip()
                gap = r.uniform(3, 20) * MINUTE
                amount = int(self.basket() * r.uniform(1.5, 3))
                cb = (r.uniform(10, 45) * DAY, "chargeback") if r.random() < r.uniform(
                    0.3, 0.6) else None
            else:
                t = self.at(start + r.uniform(0, 4), r.uniform(0, 24))
                dev = bot
                ip = r.choice(dc)
                gap = r.uniform(1, 4) * MINUTE
                amount = int(r.uniform(60, 200) * 100)
                cb = (r.uniform(5, 25) * DAY, "chargeback") if r.random() < r.uniform(
                    0.6, 0.9) else None
            if t >= HORIZON:
                continue
            self.click(t, code, dev, ip, meta, fresh=True)
            self.order(t + gap, v, dev, ip, amount, refund=cb)

    def customer_poaching(self, evasive: bool) -> None:
        r = self.rng
        op, code = self.fraud_referrer("customer_poaching",
                                       new_device(r, self.m, "android",
                                                  model=r.choice(BUDGET_MODELS)))
        meta = self.meta_fraud("customer_poaching", evasive)
        start = r.uniform(0, 30)
        if not evasive:
            zone = [c for c in self.customers if c.city == op.city and
                    any(t > start * DAY for t in c.orders)]
            n = min(len(zone), int(r.randint(15, 60) * (0.5 + 0.5 * self.p.scale)))
            for v in r.sample(zone, n):
                t_o = next(t for t in v.orders if t > start * DAY)
                dev = v.devices[0]
                t = t_o + r.uniform(20, 50) * MINUTE
                self.click(t, code, dev, v.home, meta)
                if r.random() < r.uniform(0.5, 0.85):
                    tr = self.at(t / DAY + r.uniform(0.5, 10), self.meal_hour())
                    for _ in range(1 + int(r.expovariate(1 / 0.8))):
                        self.order(tr, v, dev, self.where(v, dev, tr), self.basket(),
                                   refund=self.maybe_refund())
                        tr = self.at(tr / DAY + r.uniform(2, 12), self.meal_hour())
            return
        for _ in range(r.randint(3, 6)):
            t_blast = self.at(r.uniform(start, 58), r.uniform(10, 19))
            lapsed = [c for c in self.customers
                      if not any(t_blast - 14 * DAY < t < t_blast for t in c.orders)]
            n = min(len(lapsed), int(r.randint(20, 80) * (0.5 + 0.5 * self.p.scale)))
            targets = r.sample(lapsed, n) + [self.person() for _ in range(
                int(n * r.uniform(0.1, 0.3)))]
            for v in targets:
                if r.random() > r.uniform(0.3, 0.6):
                    continue  # the SMS was ignored
                dev = v.devices[0]
                t = t_blast + MINUTE * math.exp(r.gauss(math.log(40), 1.3))
                if t >= HORIZON:
                    continue
                self.click(t, code, dev, self.where(v, dev, t), meta)
                if r.random() < r.uniform(0.2, 0.45):
                    tr = t + MINUTE * math.exp(r.gauss(math.log(180), 1.5))
                    self.order(tr, v, dev, self.where(v, dev, tr), self.basket(),
                               refund=self.maybe_refund())

    def rider_chain(self, evasive: bool) -> None:
        r = self.rng
        hubs = [self.world.site("hub").ip(r.randrange(250))
                for _ in range(2 if evasive else 1)]
        models = r.sample(BUDGET_MODELS, 5 if evasive else 2)
        lang_share = r.uniform(0.3, 0.8)
        meta = self.meta_fraud("rider_chain", evasive)

        def rider() -> Person:
            dev = new_device(r, self.m, "android", model=r.choice(models),
                             lang=self.m.migrant_lang if r.random() < lang_share else None)
            email = (f"{r.choice(FIRST)}{r.randint(100, 9999)}@gmail.com" if not evasive
                     else self.name_email())
            return self.person(device=dev, email=email, relay=False)

        first = rider()
        first.joined = True
        self.counts["actors_rider_chain"] = self.counts.get("actors_rider_chain", 0) + 1
        size = int((r.randint(10, 28) if evasive else r.randint(15, 40))
                   * (0.5 + 0.5 * self.p.scale))
        start = r.uniform(0, 35 if evasive else 50)
        queue: list[tuple[Person, str, float]] = [(first, self.new_referrer(first),
                                                   self.at(start, 15))]
        members = [first.cid]
        while queue and len(members) < size:
            _, code, t0 = queue.pop(0)
            for _ in range(r.randint(1, 3)):
                if len(members) >= size:
                    break
                t = self.at(t0 / DAY + (r.uniform(1, 6) if evasive else r.uniform(0.1, 2)),
                            r.choice((r.uniform(14.5, 17), r.uniform(22, 23.5))))
                if t >= HORIZON - DAY:
                    break
                new = rider()
                dev = new.devices[0]
                at_hub = r.random() < (0.3 if evasive else 0.9)
                ip = r.choice(hubs) if at_hub else self.world.carrier_ip(
                    dev.carrier or self.m.carriers[0])
                self.click(t, code, dev, ip, meta)
                gap = r.uniform(5, 30) * MINUTE
                amount = (int(self.p.min_basket_usd * r.uniform(1.0, 1.6) * 100) + 1
                          if evasive else self.min_basket(1.5))
                self.order(t + gap, new, dev, ip, amount)
                if evasive and r.random() < 0.25:
                    tr = self.at(t / DAY + r.uniform(2, 10), self.meal_hour())
                    self.order(tr, new, dev, self.where(new, dev, tr), self.basket(), web=False)
                members.append(new.cid)
                queue.append((new, self.new_referrer(new), t + gap))
        self.ring("rider_chain", evasive, members)

    def _build(self) -> None:
        self.clean_world()
        for mech in MECHS:
            evasive = self.rng.random() < self.p.evasive_share
            for i in range(self.p.actors[mech]):
                # a mechanism with two actors or more has both variants
                getattr(self, mech)(evasive if i == 0 else
                                    (not evasive if i == 1 else
                                     self.rng.random() < self.p.evasive_share))
        self.counts["clicks"] = len(self.clicks)

    @staticmethod
    def _last_click(by_vid: dict[str, list[dict[str, Any]]], times: dict[str, list[float]],
                    vids: list[str | None], t: float) -> dict[str, Any] | None:
        """The latest click of these visitors at or before t within the window."""
        best: dict[str, Any] | None = None
        for vid in dict.fromkeys(vids):
            if vid is None or vid not in times:
                continue
            i = bisect.bisect_right(times[vid], t) - 1
            if i >= 0 and t - times[vid][i] <= WINDOW and (
                    best is None or times[vid][i] > best["t"]):
                best = by_vid[vid][i]
        return best

    # -- output -------------------------------------------------------------------------------

    def finish(self, slug: str, anchor: datetime) -> dict[str, Any]:
        """Timestamps from `anchor`, click ids on the web conversions (the last click of the
        browser within 30 days), labels per referred purchase (the last click of the browser or
        of a visitor tied to the customer by an earlier conversion) and the planted rings."""
        def ts(t: float) -> str:
            return (anchor + timedelta(seconds=round(t, 3))).strftime(
                "%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"

        clicks = sorted((c for c in self.clicks if 0 <= c["t"] < HORIZON),
                        key=lambda c: (c["t"], c["click_id"]))
        by_vid: dict[str, list[dict[str, Any]]] = {}
        for c in clicks:
            by_vid.setdefault(c["vid"], []).append(c)
        times = {v: [c["t"] for c in cs] for v, cs in by_vid.items()}
        kinds = {n.prefix: n.kind for n in self.world.nets}
        out_clicks = []
        for c in clicks:
            crow = {"ts": ts(c["t"]), "code": c["code"], "ip": c["ip"], "user_agent": c["ua"],
                   "accept_language": c["lang"], "visitor_id": c["vid"],
                   "click_id": c["click_id"]}
            if "referer" in c:
                crow["referer"] = c["referer"]
            if "query" in c:
                crow["query"] = c["query"]
            out_clicks.append(crow)
        convs = []
        labels: dict[str, dict[str, Any]] = {}
        known: dict[str, dict[str, float]] = {}  # customer -> visitor ids sent, first time
        pending: list[tuple[dict[str, Any], str]] = []
        owner = {r["code"]: r["external_id"] for r in self.referrers}
        for cv in sorted(self.convs, key=lambda x: x["t"]):
            if not 0 <= cv["t"] < HORIZON:
                continue
            eid = cv.get("event_id") or self._id("ev")
            row: dict[str, Any] = {"program": slug, "event_id": eid, "type": cv["type"],
                                   "customer_id": cv["customer_id"],
                                   "occurred_at": ts(cv["t"])}
            if cv.get("email"):
                row["email"] = cv["email"]
            if cv["type"] != "signup":
                row["amount"] = cv["amount"]
                row["currency"] = "USD"
            if cv.get("ip"):
                row["ip"] = cv["ip"]
                row["user_agent"] = cv["ua"]
            last = self._last_click(by_vid, times, [cv.get("vid")], cv["t"])
            if last is not None:
                row["click_id"] = last["click_id"]
                row["visitor_id"] = last["vid"]
                known.setdefault(cv["customer_id"], {}).setdefault(last["vid"], cv["t"])
            convs.append(row)
            if cv["type"] == "purchase":
                pending.append((cv, eid))
        # A purchase's touchpoints are its browser's clicks and those of every visitor the
        # merchant has tied to its customer (the visitor ids on the customer's conversions):
        # an order in the app after a web sign-up through a link is that link's too.
        for cv, eid in pending:
            tied = known.get(cv["customer_id"], {})
            vids = [v for v, first in tied.items() if first <= cv["t"]]
            last = self._last_click(by_vid, times, [cv.get("vid"), *vids], cv["t"])
            if last is None or owner[last["code"]] == cv["customer_id"]:
                # a referrer's own order after he opened his own link (to copy or check it):
                # neither a look-alike nor a mechanism, left out of the scoring
                continue
            meta = last["meta"]
            tags = list(meta["tags"])
            if not meta["fraud"]:
                kind = kinds.get(last["ip"].rsplit(".", 1)[0])
                if kind == "cgnat":
                    tags.append("carrier_nat")
                if kind == "relay" and "privacy_relay" not in tags:
                    tags.append("privacy_relay")
                tags += cv["tags"]
                if cv["refunded"]:
                    tags.append("refunded")
            labels[eid] = {"code": last["code"], "fraud": meta["fraud"],
                           "mech": meta["mech"], "variant": meta["variant"],
                           "evasive": meta["evasive"], "refunded": cv["refunded"],
                           "tags": list(dict.fromkeys(tags))}
        return {"clicks": out_clicks, "conversions": convs, "labels": labels,
                "rings": self.rings, "referrers": self.referrers}
