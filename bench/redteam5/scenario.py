"""redteam5: 60 days of a mobile-first subscription program (an app sold by monthly, quarterly
and annual plans, often after a free trial, also through partner phone shops) in one of five
markets, written blind: from issue 13, DESIGN.md and the public import format only.

Most traffic is phones inside in-app browsers (Instagram, Facebook, TikTok, Telegram; each
keeps its own cookie jar), behind carrier-grade NAT; Chrome's reduced user agent makes most
Android browsers look alike. Sign-ups mostly happen in the app (the merchant sends the click id
from its deferred deep link, sometimes only the visitor id), and a trial's first charge is made
by the merchant's server hours or days later (no IP, no user agent).

Every size, rate and timing is drawn per seed (`Params`).

Clean look-alikes (each clean referred purchase carries its tags; "friend" etc. name the
population, the others the situation):
- friend: a customer's friend who clicked a shared link; power_referrer: the same, of a
  popular customer whose shares draw a dozen clickers or more each; carrier_nat: the
  referee's click came from a heavily shared carrier NAT address; household: a member of the
  referrer's home, own phone, same home Wi-Fi; family_device: the referrer's own phone or
  tablet, another in-app browser (new cookie, same build and address); public_wifi: referrer
  and friend met in a café, train or airport, the referrer opened his link there minutes
  before the friend signed up;
  privacy: iCloud Private Relay (anonymous relay addresses) or a privacy browser that forgets
  its cookie on every visit; roaming: a friend abroad on a foreign carrier; promo_day: shared
  on one of the seasonal promotion days when many referrers post at once, at the promotion's
  (lowest) price; re_referral: an existing customer (himself a referrer) re-subscribes through
  a friend's link; mutual_referral: B, referred by A, later refers A's household; store_wifi: a
  friend who signed up with a shop assistant's help on the shop's Wi-Fi; refunded: a genuine
  refund or chargeback.
- creator: an influencer's audience (hundreds of clicks per post, a low conversion rate, long
  and spread delays, many cities and some countries); school: a teacher's students and parents
  behind the school's 1-3 NAT addresses in school hours, in bursts after a class; community: a
  Telegram or WhatsApp group admin's members; coworking: members of one co-working space on its
  address; corporate_vpn: colleagues whose clicks leave through the company's VPN egress (a
  hosting network); fraudster_genuine: the genuine friends of a referrer who also defrauds.

Fraud mechanisms (none of issue 13's, redteam3's or redteam4's names), each in a blatant and
an evasive variant (the seed draws the evasive share), with their traces:
- sybil_referrers (ring): one operator holds many referrer accounts, each with only 1-3 fake
  referees, so no referrer looks busy. Blatant: numbered mailboxes at one provider, one or two
  operator phones (cookie often kept), the operator's home address, all within a few evenings,
  sign-up minutes after the click, monthly plan, no renewal. Evasive: a pool of 3-6 phones
  wiped between accounts, carrier NAT and residential-proxy addresses, spread over weeks,
  genuine-looking mailboxes, mixed plans and trials, a few renewals.
- reinstall_stacking (ring): a referrer (with genuine friends too) factory-resets or clones his
  phone to sign up again and again through his own link: new cookie and device id each time,
  the same model, OS build, browser build and language. Blatant: one phone, batches of 3-5 an
  evening, mobile data toggled between accounts or the home address. Evasive: two phones,
  never at home, other in-app browsers, one every few days, trials.
- mule_network (ring): an operator pays real people recruited on Telegram to sign up and buy
  once through a rotating list of his referrer accounts: distinct real phones and addresses
  from every city, all arriving in waves after each task post, short click-to-purchase, the
  plan the task names, no renewal, many refunds. Evasive: smaller and slower waves, other
  in-app browsers, longer delays, two plans, few refunds.
- insider_attach: partner-shop staff (referrers with genuine friends) attach walk-in customers'
  subscriptions to their own link. Blatant: the staff opens his link on the shop tablet (one
  cookie) just before registering and charging the customer on it, on the shop's address, in
  opening hours. Evasive: the staff opens his link in the customer's own phone (shop Wi-Fi or
  the customer's mobile data) for part of the walk-ins, the customer signs up in the app.
  The customers are real: their plans, renewals and refunds are a genuine customer's.
- sdk_spoofing: an "app growth" affiliate whose SDK in other apps harvests device ids fires
  clicks carrying those ids so that the phones' organic in-app purchases (which report the
  device id as visitor id) are credited to it. Blatant: from a few data-centre addresses with a
  handful of stale phone user agents and no Accept-Language, around the clock, every few days
  per device. Evasive: residential proxies in the home cities, current user agents and the
  market's language, a few clicks in the days before the purchase at human hours.
- reciprocal_swap (ring): a swap group whose members (real customers) create second accounts
  through each other's links. Blatant: pairs (A's alt through B's link and B's through A's),
  made on the member's own phone and browser (his own cookie) at home, alias mailboxes, all on
  the swap day. Evasive: cycles of any length on a second phone or a private browser, mobile
  data, unrelated mailboxes, spread over weeks, some renewals.
- loyalty_cycling (ring): a referrer's alt accounts buy the annual plan to earn the flat reward,
  then downgrade and get most of the money back as a partial refund. Blatant: household phones
  wiped between accounts on the home address, a refund of annual minus monthly within days for
  nearly all. Evasive: spare phones on mobile data, spread over weeks, quarterly plans too,
  refunds of 40-90% for part of them weeks later.
"""

from __future__ import annotations

import math
import random
import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

from bench.redteam5.world import (
    CONTEXTS,
    MARKETS,
    PREVIEW_BOTS,
    Carrier,
    Phone,
    World,
    new_phone,
    rng_hex,
)

DAY = 86400.0
DAYS = 60
END = DAYS * DAY
# local hour weights of a phone's day
DIURNAL = (1.0, 0.6, 0.4, 0.3, 0.3, 0.5, 1.0, 2.0, 3.0, 3.5, 4.0, 4.0, 4.5, 4.5, 4.0, 4.0, 4.5,
           5.0, 6.0, 7.0, 8.0, 8.0, 6.0, 3.0)
CTX_REFERER = {"instagram": "https://l.instagram.com/", "facebook": "https://m.facebook.com/",
               "tiktok": None, "telegram": None, "browser": None, "focus": None}
MECHS = ("sybil_referrers", "reinstall_stacking", "mule_network", "insider_attach",
         "sdk_spoofing", "reciprocal_swap", "loyalty_cycling")
VARIANTS = {"sybil_referrers": ("one_operator", "phone_pool"),
            "reinstall_stacking": ("one_phone_batches", "two_phones_slow"),
            "mule_network": ("telegram_waves", "trickled_tasks"),
            "insider_attach": ("shop_tablet", "customer_phone"),
            "sdk_spoofing": ("datacentre", "residential"),
            "reciprocal_swap": ("pairs_own_device", "cycles_second_phone"),
            "loyalty_cycling": ("annual_downgrade", "slow_partial_refunds")}
STALE = (("9", "SM-G960F", "PPR1.180610.011"), ("10", "SM-A505F", "QP1A.190711.020"),
         ("8.1.0", "Redmi 6A", "O11019"), ("9", "moto g(7) power", "PPOS29.114-134"),
         ("10", "CPH1931", "QKQ1.190910.002"), ("7.0", "SM-J701F", "NRD90M"))
POWER_REACH = 12.0  # clickers per share from which a customer-referrer is a power referrer
KINDS = (("fitness classes", "Fitlo"), ("language lessons", "Lingora"),
         ("music streaming", "Tunely"), ("telemedicine", "Dokta"), ("meal plans", "Platoo"))


@dataclass
class Params:
    home: str
    kind: str
    app: str
    quick: bool
    n_referrers: int
    reach_mean: float  # clickers per share
    reach_sigma: float
    shares_mean: float
    conv_rate: float
    ios_share: float
    nat_share: float
    n_hot: int
    carrier_blocks: int
    wifi_share: float
    household_share: float
    family_device_share: float
    meetup_share: float
    privacy_share: float
    roaming_share: float
    rereferral_share: float
    mutual_share: float
    store_share: float
    click_id_share: float
    app_signup_share: float
    trial_share: float
    trial_days: int
    trial_keep: float
    plan_mix: tuple[float, float, float]
    refund_rate: float
    chargeback_rate: float
    renew_rate: float
    own_click_share: float
    delay_median_h: float
    n_organic: int
    n_creators: int
    creator_posts: int
    creator_clicks: int
    creator_conv: float
    n_teachers: int
    n_admins: int
    n_coworks: int
    n_companies: int
    promo_days: tuple[int, ...]
    promo_boost: float
    promo_discount: float
    preview_share: float
    evasive_share: float
    instances: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def draw_params(rng: random.Random, quick: bool) -> Params:
    m = rng.choice(MARKETS)
    kind, app = rng.choice(KINDS)
    scale = 1.0 if quick else 3.5
    monthly = rng.uniform(0.45, 0.75)
    quarterly = rng.uniform(0.1, 0.3) * (1 - monthly)
    return Params(
        home=m.iso, kind=kind, app=app, quick=quick,
        n_referrers=int(rng.randint(100, 200) * scale),
        reach_mean=rng.uniform(2.5, 7.0), reach_sigma=rng.uniform(0.5, 1.1),
        shares_mean=rng.uniform(1.5, 3.5), conv_rate=rng.uniform(0.15, 0.4),
        ios_share=rng.uniform(0.1, 0.55), nat_share=rng.uniform(0.2, 0.6),
        n_hot=rng.randint(6, 40), carrier_blocks=rng.randint(2, 6),
        wifi_share=rng.uniform(0.15, 0.5), household_share=rng.uniform(0.03, 0.12),
        family_device_share=rng.uniform(0.01, 0.05), meetup_share=rng.uniform(0.02, 0.08),
        privacy_share=rng.uniform(0.02, 0.1), roaming_share=rng.uniform(0.01, 0.05),
        rereferral_share=rng.uniform(0.02, 0.08), mutual_share=rng.uniform(0.1, 0.4),
        store_share=rng.uniform(0.02, 0.08), click_id_share=rng.uniform(0.75, 0.95),
        app_signup_share=rng.uniform(0.5, 0.9), trial_share=rng.uniform(0.2, 0.6),
        trial_days=rng.choice((3, 7, 7, 14)), trial_keep=rng.uniform(0.5, 0.85),
        plan_mix=(round(monthly, 3), round(quarterly, 3), round(1 - monthly - quarterly, 3)),
        refund_rate=rng.uniform(0.02, 0.08), chargeback_rate=rng.uniform(0.003, 0.02),
        renew_rate=rng.uniform(0.55, 0.85), own_click_share=rng.uniform(0.2, 0.6),
        delay_median_h=rng.uniform(0.3, 12.0),
        n_organic=int(rng.randint(150, 350) * scale),
        n_creators=rng.randint(1, 3), creator_posts=rng.randint(2, 5),
        creator_clicks=int(rng.randint(60, 260) * (1.0 if quick else 2.5)),
        creator_conv=rng.uniform(0.025, 0.07),
        n_teachers=rng.randint(1, 2 if quick else 4), n_admins=rng.randint(1, 2 if quick else 4),
        n_coworks=rng.randint(1, 2 if quick else 4), n_companies=rng.randint(1, 2 if quick else 4),
        promo_days=tuple(sorted(rng.sample(range(3, DAYS - 3), rng.randint(1, 3)))),
        promo_boost=rng.uniform(3.0, 10.0), promo_discount=rng.uniform(0.2, 0.5),
        preview_share=rng.uniform(0.1, 0.5), evasive_share=rng.uniform(0.3, 0.7),
        instances=2 if quick else rng.randint(2, 4))


@dataclass
class Cust:
    cid: str
    email: str
    phone: Phone
    city: tuple[str, str, float, float]
    carrier: Carrier
    home_ip: str | None
    phones: list[Phone] = field(default_factory=list)  # the household's other phones


Label = dict[str, Any]


class Scenario5:
    """One seed's program. `finish(slug, anchor)` gives the driver what it needs."""

    def __init__(self, seed: int, quick: bool) -> None:
        self.seed = seed
        self.rng = rng = random.Random(f"redteam5:{seed}")
        self.p = p = draw_params(rng, quick)
        self.m = next(x for x in MARKETS if x.iso == p.home)
        self.world = World(rng, self.m, p.nat_share, p.n_hot, p.carrier_blocks)
        self.referrers: list[dict[str, Any]] = []
        self.clicks: list[dict[str, Any]] = []
        self.convs: list[dict[str, Any]] = []
        self.labels: dict[str, Label] = {}
        self.rings: list[dict[str, Any]] = []
        self.counts: dict[str, int] = {}
        self._codes: set[str] = set()
        self.venues = [self.world.fixed_ip("venue", rng.choice(self.m.cities))
                       for _ in range(rng.randint(4, 12))]
        self.shops = [(self.world.fixed_ip("store", c), c)
                      for c in rng.sample(self.m.cities, min(3, len(self.m.cities)))]
        self.genuine: list[Cust] = []
        self.genuine_ids: set[str] = set()
        self._build()

    # -- small helpers ----------------------------------------------------------------------

    def count(self, key: str, n: int = 1) -> None:
        self.counts[key] = self.counts.get(key, 0) + n

    def at(self, day: float, hours: tuple[int, int] | None = None) -> float:
        """A moment of local `day` (hour by the phone day's curve, or uniform in `hours`)."""
        r = self.rng
        h = r.randrange(*hours) if hours else r.choices(range(24), DIURNAL)[0]
        t = int(day) * DAY + (h - self.m.tz) * 3600 + r.uniform(0, 3600)
        return min(max(t, 60.0), END - 60)

    def delay(self, median_h: float, sigma: float = 1.2, cap_days: float = 10) -> float:
        return min(median_h * 3600 * math.exp(self.rng.gauss(0, sigma)), cap_days * DAY) + 30

    def mailbox(self, provider: str | None = None) -> str:
        r, m = self.rng, self.m
        first, last = r.choice(m.names), r.choice(m.surnames).replace(" ", "")
        prov = provider or r.choice(m.mail)
        style = r.randrange(5)
        local = (f"{first}.{last}" if style == 0 else f"{first}{last}{r.randrange(1, 99)}"
                 if style == 1 else f"{first}_{last}{r.randrange(70, 106) % 100:02d}"
                 if style == 2 else f"{first[0]}{last}{r.randrange(100, 999)}"
                 if style == 3 else f"{first}{r.randrange(1000, 9999)}")
        return f"{local}@{prov}"

    def cust(self, *, city: tuple[str, str, float, float] | None = None, home: bool = True,
             phone: Phone | None = None, desktop: bool = False) -> Cust:
        r = self.rng
        c = city or r.choice(self.m.cities)
        ph = phone or new_phone(r, self.m, self.p.app, ios_share=self.p.ios_share,
                                desktop=desktop)
        return Cust(f"u{rng_hex(r, 12)}", self.mailbox(), ph, c, self.world.carrier(),
                    self.world.fixed_ip("isp", c) if home else None)

    def code(self) -> str:
        alphabet = "abcdefghjkmnpqrstuvwxyz23456789"
        while True:
            c = "".join(self.rng.choice(alphabet) for _ in range(self.rng.randint(7, 9)))
            if c not in self._codes:
                self._codes.add(c)
                return c

    def referrer(self, c: Cust) -> str:
        code = self.code()
        self.referrers.append({"external_id": c.cid, "email": c.email, "code": code})
        return code

    def ip_now(self, c: Cust, wifi: float | None = None) -> str:
        share = self.p.wifi_share if wifi is None else wifi
        if c.home_ip and self.rng.random() < share:
            return c.home_ip
        return self.world.mobile_ip(c.carrier)

    def click(self, t: float, code: str, ip: str, ua: str, *, al: str | None = None,
              vid: str | None = None, referer: str | None = None,
              query: str | None = None) -> str:
        cid = str(uuid.UUID(int=self.rng.getrandbits(128), version=4))
        t = min(max(t, 1.0), END - 1)
        row: dict[str, Any] = {"t": t, "code": code, "ip": ip, "user_agent": ua,
                               "click_id": cid}
        if al:
            row["accept_language"] = al
        if vid:
            row["visitor_id"] = vid
        if referer:
            row["referer"] = referer
        if query:
            row["query"] = query
        self.clicks.append(row)
        return cid

    def phone_click(self, t: float, code: str, ph: Phone, ctx: str, ip: str, *,
                    query: str | None = None) -> tuple[str, str]:
        vid = rng_hex(self.rng, 32) if ctx == "focus" else ph.vid(ctx, self.rng)
        cid = self.click(t, code, ip, ph.ua(ctx), al=ph.al, vid=vid,
                         referer=CTX_REFERER.get(ctx), query=query)
        return cid, vid

    def conv(self, t: float, kind: str, c: Cust, *, amount: int | None = None,
             click_id: str | None = None, vid: str | None = None, ip: str | None = None,
             ua: str | None = None) -> str:
        eid = f"e{rng_hex(self.rng, 20)}"
        row: dict[str, Any] = {"t": t, "event_id": eid, "type": kind, "customer_id": c.cid}
        if kind == "signup":
            row["email"] = c.email
        if amount is not None:
            row["amount"] = amount
            row["currency"] = self.m.currency
        for k, v in (("click_id", click_id), ("visitor_id", vid), ("ip", ip),
                     ("user_agent", ua)):
            if v:
                row[k] = v
        self.convs.append(row)
        return eid

    def ctx_for(self, channel: str, ph: Phone) -> str:
        if channel == "whatsapp" or ph.os == "desktop":
            return "browser"
        if channel == "telegram" and ph.os == "ios":
            return "browser"  # Telegram on iOS opens Safari's view controller
        return channel

    def plan_amount(self, t: float, mix: tuple[float, float, float] | None = None) -> int:
        i = self.rng.choices((0, 1, 2), mix or self.p.plan_mix)[0]
        price = self.m.plans[i]
        if i == 0 and int(t // DAY) in self.p.promo_days:
            price = int(price * (1 - self.p.promo_discount)) // 100 * 100
        return price

    def journey(self, code: str, c: Cust, t: float, ctx: str, ip: str,  # noqa: PLR0917
                label: Label, *,
                delay_h: float | None = None, sign_ip: str | None = None,
                sign_ua: str | None = None, pay_now: bool | None = None,
                amount: int | None = None, renew: float | None = None,
                refund: float | None = None, chargeback: float | None = None,
                refund_frac: tuple[float, float] = (1.0, 1.0),
                refund_after: tuple[float, float] = (0.5, 12.0), ph: Phone | None = None,
                key: str | None = None, trial_keep: float | None = None,
                query: str | None = None) -> str | None:
        """Click, sign-up, first charge, then maybe renewals, a refund or a chargeback.
        Returns the purchase's event id (labelled) or None when it did not happen in time."""
        r, p = self.rng, self.p
        if not 0 <= t < END - 3600:
            return None
        ph = ph or c.phone
        click_id, vid = self.phone_click(t, code, ph, ctx, ip, query=query)
        if r.random() < 0.15:  # came back once more before signing up
            self.phone_click(t + self.delay(2, 1.0, 2), code, ph, ctx, self.ip_now(c))
        ts = t + self.delay(p.delay_median_h if delay_h is None else delay_h)
        in_app = r.random() < p.app_signup_share and ph.os != "desktop"
        s_ip = sign_ip or (self.ip_now(c) if in_app else ip)
        s_ua = sign_ua or (ph.app_ua() if in_app else ph.ua(ctx))
        k = key or ("click" if r.random() < p.click_id_share else "visitor")
        key_click, key_vid = (click_id, None) if k == "click" else (None, vid)
        if ts >= END - 60:
            return None
        self.conv(ts, "signup", c, ip=s_ip, ua=s_ua, click_id=key_click, vid=key_vid)
        trial = (r.random() < p.trial_share) if pay_now is None else not pay_now
        if trial:
            self.conv(ts + 1, "trial", c, ip=s_ip, ua=s_ua, click_id=key_click, vid=key_vid)
            if r.random() > (p.trial_keep if trial_keep is None else trial_keep):
                return None
            tp = ts + p.trial_days * DAY + r.uniform(60, 900)
            pay_ip, pay_ua = None, None  # the merchant's server charges the card
        else:
            tp = ts + r.uniform(30, 1200)
            pay_ip, pay_ua = s_ip, s_ua
        if tp >= END - 60:
            return None
        amt = amount if amount is not None else self.plan_amount(tp)
        eid = self.conv(tp, "purchase", c, amount=amt, ip=pay_ip, ua=pay_ua, click_id=key_click,
                        vid=key_vid)
        refunded = False
        if r.random() < (p.refund_rate if refund is None else refund):
            tr = tp + r.uniform(*refund_after) * DAY
            if tr < END - 60:
                frac = r.uniform(*refund_frac)
                ra = amt if frac >= 1 else int(amt * frac) // 100 * 100
                self.conv(tr, "refund", c, amount=ra)
                refunded = True
        elif r.random() < (p.chargeback_rate if chargeback is None else chargeback):
            tr = tp + r.uniform(10, 40) * DAY
            if tr < END - 60:
                self.conv(tr, "chargeback", c, amount=amt)
                refunded = True
        if not refunded and amt <= self.m.plans[0] and r.random() < (
                p.renew_rate if renew is None else renew):
            tn = tp + 30 * DAY + r.uniform(0, 3600)
            if tn < END - 60:
                self.conv(tn, "renewal", c, amount=amt)
        label = dict(label, refunded=refunded, code=code)
        if not label["fraud"] and refunded:
            label["tags"] = [*label["tags"], "refunded"]
        self.labels[eid] = label
        return eid

    @staticmethod
    def clean(*tags: str) -> Label:
        return {"fraud": False, "mech": "", "variant": "", "evasive": False, "tags": list(tags)}

    @staticmethod
    def fraud(mech: str, evasive: bool) -> Label:
        return {"fraud": True, "mech": mech, "variant": VARIANTS[mech][evasive],
                "evasive": evasive, "tags": []}

    def ring(self, mech: str, evasive: bool, members: list[str]) -> None:
        self.rings.append({"name": f"{mech}-{len(self.rings) + 1}",
                           "variant": VARIANTS[mech][evasive], "evasive": evasive,
                           "members": sorted(set(members))})

    # -- the program --------------------------------------------------------------------------

    def _build(self) -> None:
        p, r = self.p, self.rng
        self.organic()
        for _ in range(p.n_referrers):
            self.genuine_referrer()
        for _ in range(p.n_creators):
            self.creator()
        for _ in range(p.n_teachers):
            self.teacher()
        for _ in range(p.n_admins):
            self.community_admin()
        for _ in range(p.n_coworks):
            self.cowork()
        for _ in range(p.n_companies):
            self.company()
        for mech in MECHS:
            for _ in range(p.instances):
                ev = r.random() < p.evasive_share
                getattr(self, mech)(ev)
                self.count(f"{mech}/{VARIANTS[mech][ev]}")
        self.count("referrers", len(self.referrers))

    def organic(self) -> None:
        """Customers who came without a link; their app reports its device id as visitor id.
        sdk_spoofing later claims some of them."""
        r, p = self.rng, self.p
        self.organics: list[tuple[Cust, str, float, str]] = []
        for _ in range(p.n_organic):
            c = self.cust(home=r.random() < 0.7)
            ts = self.at(r.uniform(0, DAYS - 1))
            ip = self.ip_now(c)
            self.conv(ts, "signup", c, vid=c.phone.adid, ip=ip, ua=c.phone.app_ua())
            tp = ts + r.uniform(60, 1800)
            amt = self.plan_amount(tp)
            eid = self.conv(tp, "purchase", c, amount=amt, vid=c.phone.adid, ip=ip,
                            ua=c.phone.app_ua())
            self.organics.append((c, eid, tp, "refund" if r.random() < p.refund_rate else ""))
            if self.organics[-1][3]:
                tr = tp + r.uniform(1, 14) * DAY
                if tr < END - 60:
                    self.conv(tr, "refund", c, amount=amt)
        self.count("organic", p.n_organic)

    def own_activity(self, c: Cust, code: str) -> None:
        """An existing customer's own renewal and own look at his link."""
        r = self.rng
        if r.random() < 0.6:
            self.conv(self.at(r.uniform(0, DAYS - 1)), "renewal", c, amount=self.m.plans[0])
        if r.random() < self.p.own_click_share:
            self.phone_click(self.at(r.uniform(0, DAYS - 1)), code, c.phone, "browser",
                             self.ip_now(c, 0.6))

    def share_day(self) -> float:
        p, r = self.p, self.rng
        if r.random() < min(0.35, 0.015 * p.promo_boost * len(p.promo_days)):
            return float(r.choice(p.promo_days))
        return r.uniform(0, DAYS - 8)

    def genuine_referrer(self, tag: str = "friend", c: Cust | None = None) -> tuple[Cust, str]:
        """A customer who shares his link with friends in chats and stories."""
        r, p = self.rng, self.p
        c = c or self.cust()
        c.phones = [new_phone(r, self.m, p.app, ios_share=p.ios_share)
                    for _ in range(r.choice((0, 1, 1, 2, 3, 4)))]
        code = self.referrer(c)
        self.genuine.append(c)
        self.genuine_ids.add(c.cid)
        self.own_activity(c, code)
        reach = p.reach_mean * math.exp(r.gauss(0, p.reach_sigma) - p.reach_sigma ** 2 / 2)
        conv = min(0.8, p.conv_rate * math.exp(r.gauss(0, 0.4)))
        if tag == "friend" and reach >= POWER_REACH:
            tag = "power_referrer"  # a popular customer: a dozen friends or more click each share
        for _ in range(1 + int(r.expovariate(1 / p.shares_mean))):
            day = self.share_day()
            promo = int(day) in p.promo_days
            channel = r.choices(("whatsapp", "instagram", "telegram", "tiktok", "facebook"),
                                (5, 3, 1.5, 1.5, 1))[0]
            t0 = self.at(day)
            if r.random() < p.preview_share:
                self.click(t0 + r.uniform(1, 30), code, self.world.mobile_ip(c.carrier),
                           r.choice(PREVIEW_BOTS))
            for _ in range(poisson(r, reach * (1.5 if promo else 1.0))):
                self.friend(c, code, t0 + self.delay(1.5, 1.3, 3), channel, conv=conv, tag=tag,
                            promo=promo)
        return c, code

    def friend(self, ref: Cust, code: str, t: float, channel: str, *, conv: float, tag: str,
               promo: bool) -> None:
        r, p = self.rng, self.p
        tags = [tag] + (["promo_day"] if promo else [])
        x = r.random()
        sign_ip = None
        ph: Phone | None = None
        if x < p.household_share and ref.phones:
            f = self.cust(city=ref.city, home=False, phone=r.choice(ref.phones))
            f.home_ip = ref.home_ip
            tags.append("household")
        elif x < p.household_share + p.family_device_share:
            f = self.cust(city=ref.city, home=False, phone=ref.phone)
            f.home_ip = ref.home_ip
            ph = ref.phone
            tags.append("family_device")
        elif x < p.household_share + p.family_device_share + p.rereferral_share and \
                len(self.genuine) > 3:
            f = r.choice(self.genuine[:-1])
            tags.append("re_referral")
        else:
            f = self.cust(city=ref.city if r.random() < 0.6 else None)
        ctx = self.ctx_for(channel, (ph or f.phone))
        if "family_device" in tags:
            ctx = r.choice([c for c in CONTEXTS if c not in ref.phone.jars] or ["tiktok"])
        ip = self.ip_now(f)
        y = r.random()
        if y < p.meetup_share:
            venue = r.choice(self.venues)
            self.phone_click(t - r.uniform(60, 900), code, ref.phone, "browser", venue)
            ip = sign_ip = venue
            tags.append("public_wifi")
        elif y < p.meetup_share + p.privacy_share:
            if f.phone.os == "ios":
                ip = sign_ip = r.choice(self.world.relays).ip(r.randrange(2, 254))
                ctx = "browser"
            else:
                ctx = "focus"
            tags.append("privacy")
        elif y < p.meetup_share + p.privacy_share + p.roaming_share:
            ip = sign_ip = r.choice(list(self.world.foreign.values())).ip(r.randrange(2, 254))
            tags.append("roaming")
        elif y < p.meetup_share + p.privacy_share + p.roaming_share + p.store_share:
            sign_ip = r.choice(self.shops)[0]
            tags.append("store_wifi")
        if ip in f.carrier.hot:
            tags.append("carrier_nat")
        if r.random() >= conv:
            self.phone_click(t, code, ph or f.phone, ctx, ip)
            return
        self.journey(code, f, t, ctx, ip, self.clean(*tags), sign_ip=sign_ip, ph=ph,
                     key="click" if ctx == "focus" else None)
        if "re_referral" not in tags and f.cid not in self.genuine_ids and r.random() < 0.04:
            # B, referred by A, becomes a referrer and refers A's household
            self.count("mutual")
            self.mutual(f, ref)

    def mutual(self, b: Cust, a: Cust) -> None:
        r = self.rng
        code = self.referrer(b)
        self.genuine.append(b)
        self.genuine_ids.add(b.cid)
        target = self.cust(city=a.city, home=False,
                           phone=r.choice(a.phones) if a.phones else None)
        target.home_ip = a.home_ip
        t = self.at(r.uniform(30, DAYS - 12))
        self.journey(code, target, t, "browser", self.ip_now(target, 0.7),
                     self.clean("friend", "mutual_referral", "household"))

    def creator(self) -> None:
        """An influencer: hundreds of clicks per post from everywhere, few buy, late."""
        r, p, w = self.rng, self.p, self.world
        c = self.cust()
        c.cid = f"cr{rng_hex(r, 10)}"
        code = self.referrer(c)
        for _ in range(p.creator_posts):
            t0 = self.at(r.uniform(0, DAYS - 10))
            ctx = r.choice(("instagram", "tiktok"))
            for _ in range(int(p.creator_clicks * r.uniform(0.5, 1.5))):
                t = t0 + r.expovariate(1 / (r.uniform(2, 12) * 3600))
                f = self.cust(home=r.random() < 0.4)
                ip = (w.foreign[r.choice(list(w.foreign))].ip(r.randrange(2, 254))
                      if r.random() < 0.05 else self.ip_now(f))
                if r.random() < p.creator_conv:
                    tags = ["creator"] + (["carrier_nat"] if ip in f.carrier.hot else [])
                    self.journey(code, f, t, self.ctx_for(ctx, f.phone), ip,
                                 self.clean(*tags), delay_h=24)
                else:
                    self.phone_click(t, code, f.phone, self.ctx_for(ctx, f.phone), ip)
        self.count("creators")

    def teacher(self) -> None:
        """A teacher's class and the parents: the school's NAT addresses in school hours."""
        r = self.rng
        c = self.cust()
        code = self.referrer(c)
        self.genuine.append(c)
        self.genuine_ids.add(c.cid)
        self.own_activity(c, code)
        school = [self.world.fixed_ip("school", c.city) for _ in range(r.randint(1, 3))]
        for _ in range(r.randint(1, 2)):
            day = r.randrange(0, DAYS - 10)
            while (day + 4) % 7 in (5, 6):  # a school day
                day += 1
            t0 = self.at(day, (9, 14))
            for _ in range(r.randint(12, 45)):
                f = self.cust(city=c.city)
                if r.random() < 0.7:
                    t, ip = t0 + r.uniform(0, 3 * 3600), r.choice(school)
                else:  # a parent, at home in the evening
                    t, ip = self.at(day, (18, 23)), self.ip_now(f, 0.8)
                tags = ["school"] + (["carrier_nat"] if ip in f.carrier.hot else [])
                if r.random() < r.uniform(0.15, 0.4):
                    self.journey(code, f, t, self.ctx_for("whatsapp", f.phone), ip,
                                 self.clean(*tags))
                else:
                    self.phone_click(t, code, f.phone, "browser", ip)
        self.count("teachers")

    def community_admin(self) -> None:
        r = self.rng
        c = self.cust()
        code = self.referrer(c)
        self.genuine.append(c)
        self.genuine_ids.add(c.cid)
        self.own_activity(c, code)
        for _ in range(r.randint(2, 5)):
            t0 = self.at(r.uniform(0, DAYS - 8))
            for _ in range(r.randint(15, 50)):
                f = self.cust()
                t = t0 + r.expovariate(1 / 5400)
                ip = self.ip_now(f)
                if r.random() < r.uniform(0.06, 0.18):
                    self.journey(code, f, t, self.ctx_for("telegram", f.phone), ip,
                                 self.clean("community",
                                            *(["carrier_nat"] if ip in f.carrier.hot else [])))
                else:
                    self.phone_click(t, code, f.phone, self.ctx_for("telegram", f.phone), ip)
        self.count("community_admins")

    def workplace(self, ip: str, tag: str, members: int) -> None:
        r = self.rng
        c = self.cust(desktop=r.random() < 0.5)
        code = self.referrer(c)
        self.genuine.append(c)
        self.genuine_ids.add(c.cid)
        self.own_activity(c, code)
        for _ in range(members):
            f = self.cust(city=c.city, desktop=r.random() < 0.4)
            day = r.randrange(0, DAYS - 10)
            t = self.at(day, (9, 18))
            if r.random() < 0.45:
                self.journey(code, f, t, "browser", ip, self.clean(tag),
                             sign_ip=ip if r.random() < 0.5 else None)
            else:
                self.phone_click(t, code, f.phone, "browser", ip)

    def cowork(self) -> None:
        r = self.rng
        ip = self.world.fixed_ip("cowork", r.choice(self.m.cities))
        for _ in range(r.randint(1, 2)):
            self.workplace(ip, "coworking", r.randint(8, 25))
        self.count("coworks")

    def company(self) -> None:
        r = self.rng
        ip = self.world.zscaler.ip(r.randrange(2, 254))
        self.workplace(ip, "corporate_vpn", r.randint(8, 30))
        self.count("companies")

    # -- fraud ----------------------------------------------------------------------------------

    def sybil_referrers(self, ev: bool) -> None:
        r, p, w = self.rng, self.p, self.world
        op = self.cust()
        phones = [new_phone(r, self.m, p.app, ios_share=p.ios_share)
                  for _ in range(r.randint(3, 6) if ev else r.randint(1, 2))]
        base = f"{r.choice(self.m.names)}{r.choice(self.m.surnames).replace(' ', '')}"
        prov = r.choice(self.m.mail)
        members: list[str] = []
        n = r.randint(10, 22) if ev else r.randint(8, 14)
        d0 = r.uniform(2, DAYS - 20)
        for i in range(n):
            acc = self.cust(city=op.city, home=False)
            if not ev:
                acc.email = f"{base}{i + 1:02d}@{prov}"
            code = self.referrer(acc)
            members.append(acc.cid)
            if ev and r.random() < 0.3:  # posted in a group or two: strangers look, none buy
                for _ in range(r.randint(1, 4)):
                    s = self.cust(home=False)
                    self.phone_click(self.at(r.uniform(0, DAYS - 1)), code, s.phone,
                                     r.choice(("instagram", "telegram")), self.ip_now(s))
            for j in range(r.randint(1, 3)):
                ph = r.choice(phones)
                if ev or r.random() < 0.4:
                    ph.wipe(r)
                fake = self.cust(city=op.city, home=False, phone=ph)
                fake.carrier = op.carrier
                if not ev:
                    fake.email = f"{base}.{i + 1}{j}@{prov}"
                    t = self.at(d0 + r.uniform(0, 5), (19, 24))
                    ip = op.home_ip or w.mobile_ip(op.carrier)
                    ctx = "browser"
                else:
                    t = self.at(r.uniform(1, DAYS - 16))
                    ip = (w.fixed_ip("proxy", op.city, anon={"is_residential_proxy": True}
                                     if r.random() < 0.4 else None)
                          if r.random() < 0.3 else w.mobile_ip(op.carrier))
                    ctx = r.choice(("browser", "focus", "instagram"))
                members.append(fake.cid)
                self.journey(code, fake, t, ctx, ip, self.fraud("sybil_referrers", ev),
                             delay_h=None if ev else 0.05, sign_ip=None if ev else ip,
                             pay_now=None if ev else True,
                             amount=None if ev and r.random() < 0.3 else self.m.plans[0],
                             renew=0.2 if ev else 0.0, refund=0.03, chargeback=0.0,
                             key="click" if ctx == "focus" else None, trial_keep=1.0)
        self.ring("sybil_referrers", ev, members)

    def reinstall_stacking(self, ev: bool) -> None:
        r, p, w = self.rng, self.p, self.world
        c, code = self.genuine_referrer("fraudster_genuine")
        phones = [c.phone] + ([new_phone(r, self.m, p.app, ios_share=p.ios_share)] if ev else [])
        members = [c.cid]
        n = r.randint(6, 14) if ev else r.randint(8, 18)
        t = self.at(r.uniform(1, 20), (19, 23))
        for i in range(n):
            if ev:
                t += r.uniform(2, 5) * DAY
            elif i % r.randint(3, 5) == 0:
                t = self.at(r.uniform(1, DAYS - 20), (19, 23))
            else:
                t += r.uniform(600, 2400)
            if t >= END - 20 * DAY:
                break
            ph = r.choice(phones) if ev else c.phone
            ph.wipe(r)
            fake = self.cust(city=c.city, home=False, phone=ph)
            fake.carrier = c.carrier
            if not ev:
                fake.email = f"{r.choice(self.m.names)}{r.randrange(1000, 99999)}@gmail.com"
            ip = (w.mobile_ip(c.carrier) if ev or r.random() < 0.7 or not c.home_ip
                  else c.home_ip)
            ctx = r.choice(("browser", "instagram", "tiktok")) if ev else "browser"
            members.append(fake.cid)
            self.journey(code, fake, t, self.ctx_for(ctx, ph), ip,
                         self.fraud("reinstall_stacking", ev),
                         delay_h=None if ev else 0.07, sign_ip=None if ev else ip,
                         pay_now=None if ev else True,
                         amount=(None if ev and r.random() < 0.2 else self.m.plans[0]),
                         renew=0.1 if ev else 0.0, refund=0.03, chargeback=0.0,
                         trial_keep=1.0)
        self.ring("reinstall_stacking", ev, members)

    def mule_network(self, ev: bool) -> None:
        r = self.rng
        accounts = [self.cust() for _ in range(r.randint(4, 7) if ev else r.randint(2, 3))]
        codes = [self.referrer(a) for a in accounts]
        members = [a.cid for a in accounts]
        waves = r.randint(5, 8) if ev else r.randint(2, 3)
        k = 0
        for _ in range(waves):
            t0 = self.at(r.uniform(1, DAYS - 12), (10, 21))
            for _ in range(r.randint(3, 7) if ev else r.randint(8, 16)):
                m = self.cust(home=r.random() < 0.6)
                t = t0 + r.expovariate(1 / ((8 if ev else 0.7) * 3600))
                code = r.choice(codes) if ev else codes[k % len(codes)]
                k += 1
                ctx = (self.ctx_for(r.choice(("telegram", "instagram", "whatsapp")), m.phone)
                       if ev else self.ctx_for("telegram", m.phone))
                members.append(m.cid)
                mix = (0.8, 0.2, 0.0) if ev else (1.0, 0.0, 0.0)
                self.journey(code, m, t, ctx, self.ip_now(m), self.fraud("mule_network", ev),
                             delay_h=2.0 if ev else 0.1, pay_now=None if ev else True,
                             amount=self.plan_amount(t, mix), renew=0.0,
                             refund=r.uniform(0.05, 0.15) if ev else r.uniform(0.25, 0.4),
                             refund_after=(1, 6), chargeback=0.01, trial_keep=0.9)
        self.ring("mule_network", ev, members)

    def insider_attach(self, ev: bool) -> None:
        r, p = self.rng, self.p
        shop_ip, city = r.choice(self.shops)
        _, code = self.genuine_referrer("fraudster_genuine", self.cust(city=city))
        tablet = new_phone(r, self.m, p.app, ios_share=0.0)
        share = r.uniform(0.5, 0.8) if ev else 1.0
        for _ in range(r.randint(10, 20) if ev else r.randint(15, 30)):
            walk = self.cust(city=city)
            day = r.uniform(0, DAYS - 1)
            t = self.at(day, (10, 20))
            if r.random() > share:  # not attached: an organic walk-in
                self.conv(t, "signup", walk, vid=walk.phone.adid, ip=shop_ip,
                          ua=walk.phone.app_ua())
                self.conv(t + 300, "purchase", walk, amount=self.plan_amount(t),
                          vid=walk.phone.adid, ip=shop_ip, ua=walk.phone.app_ua())
                continue
            if ev:
                ip = shop_ip if r.random() < 0.6 else self.world.mobile_ip(walk.carrier)
                self.journey(code, walk, t, "browser", ip, self.fraud("insider_attach", ev),
                             delay_h=0.1, sign_ip=ip, sign_ua=walk.phone.app_ua(),
                             pay_now=r.random() < 0.7, trial_keep=p.trial_keep)
            else:
                self.journey(code, walk, t, "browser", shop_ip,
                             self.fraud("insider_attach", ev), ph=tablet, delay_h=0.08,
                             sign_ip=shop_ip, sign_ua=tablet.ua("browser"), pay_now=True)

    def sdk_spoofing(self, ev: bool) -> None:
        r, p, w = self.rng, self.p, self.world
        agency = self.cust()
        agency.email = f"growth@{r.choice(('adscale', 'appboost', 'mobiq', 'installz'))}" \
                       f"{r.randrange(10, 99)}.com"
        code = self.referrer(agency)
        # a handful of stale phone builds, the same few for every device id
        spoof_uas = [f"Mozilla/5.0 (Linux; Android {v}; {model} Build/{build}; wv) "
                     "AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 "
                     f"Chrome/{r.randint(74, 96)}.0.{r.randint(3000, 4600)}.{r.randint(50, 180)} "
                     "Mobile Safari/537.36"
                     for v, model, build in r.sample(STALE, r.randint(2, 5))]
        dc_ips = [r.choice(w.dcs).ip(r.randrange(2, 254)) for _ in range(r.randint(2, 5))]
        proxies = [w.fixed_ip("proxy", r.choice(self.m.cities),
                              anon={"is_residential_proxy": True} if r.random() < 0.3
                              else None) for _ in range(r.randint(20, 60))]
        share = r.uniform(0.05, 0.1) if ev else r.uniform(0.05, 0.12)
        victims = [o for o in self.organics if r.random() < share and o[2] > 6 * 3600]

        def spoof(t: float, adid: str) -> None:
            if ev:
                ph = new_phone(r, self.m, p.app, ios_share=p.ios_share)
                self.click(t, code, r.choice(proxies), ph.ua("browser"), al=self.m.lang,
                           vid=adid)
            else:
                self.click(t, code, r.choice(dc_ips), r.choice(spoof_uas), vid=adid)

        for c, eid, tp, refunded in victims:
            before = 0
            if ev:
                for _ in range(r.randint(1, 3)):
                    t = tp - r.uniform(300, 3 * DAY)
                    h = (t / 3600 + self.m.tz) % 24
                    if t > 0 and 8 <= h <= 23:
                        spoof(t, c.phone.adid)
                        before += 1
            else:
                t = max(60.0, tp - r.uniform(15, 25) * DAY)
                while t < min(tp + 5 * DAY, END - 60):
                    spoof(t, c.phone.adid)
                    before += t < tp
                    t += r.uniform(1.5, 4) * DAY
            if before:
                self.labels[eid] = dict(self.fraud("sdk_spoofing", ev), code=code,
                                        refunded=bool(refunded))
        junk = len(victims) * (1 if ev else 3)
        for _ in range(junk):
            spoof(r.uniform(60, END - 60) if not ev else self.at(r.uniform(0, DAYS - 1)),
                  str(uuid.UUID(int=r.getrandbits(128), version=4)))

    def reciprocal_swap(self, ev: bool) -> None:
        r, p, w = self.rng, self.p, self.world
        members = [self.genuine_referrer("fraudster_genuine") for _ in range(
            r.randint(6, 10) if ev else r.randint(4, 6))]
        ids = [c.cid for c, _ in members]
        swap_day = r.uniform(3, DAYS - 20)
        n = len(members)
        for i, (c, _) in enumerate(members):
            for a in range(r.randint(1, 3) if ev else r.randint(1, 2)):
                if ev:
                    j = (i + r.randint(1, n - 1)) % n
                    spare = new_phone(r, self.m, p.app, ios_share=p.ios_share)
                    ph = spare if r.random() < 0.6 else c.phone
                    ctx = "browser" if ph is spare else "focus"
                    alt = self.cust(city=c.city, home=False, phone=ph)
                    alt.carrier = c.carrier
                    t = self.at(r.uniform(3, DAYS - 16))
                    ip = w.mobile_ip(c.carrier)
                else:
                    j = i ^ 1 if (i ^ 1) < n else (i + 1) % n
                    alt = self.cust(city=c.city, home=False, phone=c.phone)
                    local, _, _ = c.email.partition("@")
                    alt.email = (f"{local}@{r.choice([x for x in self.m.mail if x not in c.email])}"
                                 if a == 0 else f"{local}{a + 1}@{c.email.partition('@')[2]}")
                    t = self.at(swap_day + r.uniform(0, 1.5))
                    ip = c.home_ip or w.mobile_ip(c.carrier)
                    ctx = "browser"
                ids.append(alt.cid)
                self.journey(members[j][1], alt, t, ctx, ip, self.fraud("reciprocal_swap", ev),
                             delay_h=None if ev else 0.1, sign_ip=None if ev else ip,
                             pay_now=None if ev else True,
                             amount=self.plan_amount(t, (0.7, 0.3, 0.0) if ev else
                                                     (1.0, 0.0, 0.0)),
                             renew=0.25 if ev else 0.0, refund=0.03, chargeback=0.0,
                             key="click" if ctx == "focus" else None, trial_keep=1.0)
        self.ring("reciprocal_swap", ev, ids)

    def loyalty_cycling(self, ev: bool) -> None:
        r, p, w = self.rng, self.p, self.world
        c, code = self.genuine_referrer("fraudster_genuine")
        phones = ([new_phone(r, self.m, p.app, ios_share=p.ios_share)
                   for _ in range(r.randint(3, 5))] if ev
                  else (c.phones[:2] or [new_phone(r, self.m, p.app, ios_share=p.ios_share)]))
        members = [c.cid]
        d0 = r.uniform(2, DAYS - 25)
        for _ in range(r.randint(6, 14) if ev else r.randint(6, 12)):
            ph = r.choice(phones)
            ph.wipe(r)
            alt = self.cust(city=c.city, home=False, phone=ph)
            alt.carrier = c.carrier
            if ev:
                t, ip = self.at(r.uniform(1, DAYS - 20)), w.mobile_ip(c.carrier)
                amt = self.m.plans[2] if r.random() < 0.7 else self.m.plans[1]
            else:
                t, ip = self.at(d0 + r.uniform(0, 10)), c.home_ip or w.mobile_ip(c.carrier)
                amt = self.m.plans[2]
            members.append(alt.cid)
            frac = (0.4, 0.9) if ev else ((amt - self.m.plans[0]) / amt,) * 2
            self.journey(code, alt, t, "browser", ip, self.fraud("loyalty_cycling", ev),
                         delay_h=None if ev else 0.2, pay_now=True, amount=amt, renew=0.0,
                         refund=r.uniform(0.5, 0.7) if ev else 0.9, chargeback=0.0,
                         refund_frac=frac, refund_after=(8, 30) if ev else (1, 6))
        self.ring("loyalty_cycling", ev, members)

    # -- output -------------------------------------------------------------------------------

    def finish(self, slug: str, anchor: datetime) -> dict[str, Any]:
        def ts(t: float) -> str:
            return (anchor + timedelta(seconds=t)).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"

        clicks = []
        for row in sorted(self.clicks, key=lambda x: x["t"]):
            out = {k: v for k, v in row.items() if k != "t"}
            clicks.append({"ts": ts(row["t"]), **out})
        convs = []
        for row in sorted(self.convs, key=lambda x: x["t"]):
            out = {k: v for k, v in row.items() if k != "t"}
            convs.append({"program": slug, "occurred_at": ts(row["t"]), **out})
        fraud = sum(1 for v in self.labels.values() if v["fraud"])
        self.counts.update(clicks=len(clicks), conversions=len(convs),
                           fraud_purchases=fraud, clean_purchases=len(self.labels) - fraud)
        return {"referrers": list(self.referrers), "clicks": clicks, "conversions": convs,
                "labels": dict(self.labels), "rings": list(self.rings)}


def poisson(rng: random.Random, lam: float) -> int:
    if lam <= 0:
        return 0
    if lam > 30:
        return max(0, int(rng.gauss(lam, math.sqrt(lam)) + 0.5))
    limit, k, prod = math.exp(-lam), 0, rng.random()
    while prod > limit:
        k += 1
        prod *= rng.random()
    return k
