"""One program's 60 days with fraud that issue 13 does not describe, drawn from a seed.

The clean population is bench/redteam2's (genuine referrers with a power law of reach, their
visitors and look-alikes: families, offices, campuses, carrier NAT, privacy browsers, travellers,
VPN users, influencers, repeat buyers, genuine refunds), drawn from a seed space of its own so it
is not a population redteam2 tuned on, plus two look-alikes of this red team's own:

- campaign_burst: the merchant mails its customers; a few dozen of the less active genuine
  referrers share within hours of each other and their friends buy. Looks like a sleeper cell
  waking up.
- expat: genuine referrers of a diaspora (Vietnamese, Indonesian, Russian, Bangladeshi,
  Filipino) share in their community's group chat in the evening; their friends live in the
  program's country (home networks, local carriers) but their browsers ask for their own
  language, and they shop late. Looks like an emulator farm's language and hours.

None of redteam2's fraud runs here. The fraud, each mechanism with a blatant and an evasive
variant (every actor of a mechanism draws which, from the seed's evasive share):

coupon_leak (deal_site | quiet_leak)
    A referrer's code is posted on coupon and deal sites. Shoppers who were buying anyway search
    "<shop> coupon" at checkout, click the leaked link and buy minutes later; the referrer is
    paid for organic customers. The leaker may also have a few genuine friends (clean).
    Traces: the link's click-to-purchase rate far above the program's (blatant 75-95 %, quiet
    35-70 %); click-to-purchase in minutes (quiet: a tail of hours); clicks spread over every
    day from the leak on, shaped like shopping rather than bursts after shares; referer a
    coupon site's page (quiet: mostly no referer); buyers are ordinary people with no tie to the
    referrer or to each other (different devices, networks, mailboxes), normal amounts.

brand_bidding (search_ads | cloaked)
    A referrer buys search ads on the merchant's own brand name and points them at his link:
    people searching for the shop (about to buy anyway) land through it and he is paid. The
    bidder may have a few genuine friends too (clean). Traces: blatant, every click's referer is
    a search engine and its query carries the ad click id (gclid, msclkid) and utm_medium=cpc;
    clicks every day from the campaign's start, shaped like shopping hours, not like shares;
    conversion rate 25-50 % (brand searchers), purchases minutes to hours after the click;
    buyers with no tie to the referrer. Cloaked: the ad goes to the bidder's own landing page,
    which forwards through the link: the referer is that one unrelated site (or none), no ad
    parameters; conversion 15-35 %, a tail of purchases days later.

emulator_farm (emulator | rotated)
    An operator abroad runs Android emulators through residential proxies in the program's
    country: each session a fresh cookie, a fresh residential address, a fresh customer.
    Traces: blatant user agents name emulator builds (sdk_gphone, "Android SDK built for x86",
    the default models of Nox/LDPlayer/MEmu) in a WebView; Accept-Language is the operator's
    (vi-VN, id-ID, ru-RU, bn-BD, fil-PH) while the address is in the program's country; clicks
    in the operator's working hours, which are the program's night; minimum-price purchases;
    one referrer with a high conversion rate and click-to-purchase of a few minutes. Rotated:
    a real phone model and browser version drawn anew per session (many distinct rare
    fingerprints), the Accept-Language spoofed to the program's locale in 70 % of sessions;
    the hours still give it away.

account_factory (disposable_sequence | templated)
    A script creates accounts through one referrer's link: click, sign-up, purchase.
    Blatant: mailboxes `<prefix><n>@<disposable domain>` with n counting up; runs in batches at
    a steady pace at any hour (night included); one or two identical desktop user agents; sign-up
    within a minute of the click, purchase within two of the sign-up; minimum price.
    Templated: ordinary providers, every local part from one template
    (e.g. first.last + four digits, the same digits' length every time), a few disposable;
    3-6 user agents shared by all accounts; human hours; still sign-up within two minutes and
    purchase within five of it. Every session from a fresh residential proxy address.

refund_abuse (after_hold | mixed)
    A referrer's accomplices (real people with their own phones and home networks) buy through
    his link and refund after the reward's hold would have ended: the referrer is paid and the
    merchant gets the goods back. Purchases run through the 60 days, so the later ones'
    refunds fall after the horizon: those are fraud without an observable refund, and only the
    referrer's history says so. Traces: the referrer's refund share far above the program's;
    blatant refunds 85-100 %, at 30.5-37 days (just past a 30-day hold), on the dearest
    products; mixed 40-70 %, at 12-45 days, some as chargebacks, normal amounts.

collusion_pool (shared_devices | rotated)
    Several referrers (each an ordinary-looking customer) share one pool of fake referees: 2-5
    operators, each with 1-2 phones and a home line and a few mailbox personas, create a new
    customer for each referral and buy through one of the referrers' links. There are no
    referral edges among the referrers. Traces: the same device (blatant: the same visitor
    cookie) and home address behind new customers of many different referrers; mailboxes that
    are variants of a few personas (digits, dots, another provider); one Accept-Language per
    operator. Rotated: cookies cleared and 70 % of sessions through residential proxies, most
    mailboxes fresh: what binds them is the header fingerprint of a few phones and the
    operators' home addresses now and then. Planted as a ring (referrers and referees).

sleeper_cell (synchronised | staggered)
    Accounts that look aged (each bought early in the 60 days, some more since) and never
    referred anyone are activated together: within hours (staggered: 2-6 days) every sleeper's
    link brings 1-3 new customers who buy quickly. Blatant: the referees come through 2-4 proxy
    addresses on 2-5 devices and buy the cheapest product; staggered: own devices, fresh
    residential addresses, normal amounts. Traces: many dormant links used for the first time
    in one short window; each sleeper's referees buy minutes after the click; (blatant) shared
    addresses and devices across sleepers. Planted as a ring (sleepers and referees).

Every purchase is labelled by the last referral click of its visitor cookie within 30 days
(redteam2's rule): that click was made by a clean visitor or by a mechanism.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from datetime import datetime
from typing import Any

from bench.redteam2.scenario import (
    DAY,
    HORIZON_DAYS,
    HOUR,
    MINUTE,
    Person,
    Purchase,
    Referrer,
    Scenario,
    Tag,
    b62,
)
from bench.redteam2.world import (
    COUNTRIES,
    FIRST,
    LAST,
    Device,
    accept_language,
    local_part,
    make_device,
    new_vid,
    provider,
    user_agent,
)

MECHANISMS = ("coupon_leak", "brand_bidding", "emulator_farm", "account_factory", "refund_abuse",
              "collusion_pool", "sleeper_cell")
FRAUD_ROLES = frozenset(MECHANISMS)
# The clean population's seed space: far from redteam2's tuning (1-20) and report (101-130) seeds.
CLEAN_SEED_OFFSET = 300_000
ACTOR_FLOOR = 8  # purchases a fraudulent referrer aims at, at least (a referrer-level test)

COUPON_SITES = ("https://www.retailmenot.example/view/shop.example.com",
                "https://www.couponfollow.example/site/shop.example.com",
                "https://slickdeals.example/f/18273645-shop-20-off",
                "https://www.dealspotr.example/promo-codes/shop.example.com",
                "https://www.hotukdeals.example/vouchers/shop.example.com",
                "https://knoji.example/promo-codes/shop-coupons/",
                "https://www.reddit.com/r/coupons/comments/{id}/")
# (referer the engine sends, click id parameter, utm_source)
SEARCH_ENGINES = (("https://www.google.com/", "gclid", "google"),
                  ("https://www.bing.com/", "msclkid", "bing"),
                  ("https://duckduckgo.com/", "msclkid", "duckduckgo"))
LANDING_WORDS = ("best-deals", "top-picks", "smart-shopper", "savings-hub", "review-zone")
# Operator's Accept-Language and UTC offset (hours).
OPERATORS = (("vi-VN,vi;q=0.9,en-US;q=0.8,en;q=0.7", 7.0),
             ("id-ID,id;q=0.9,en-US;q=0.8,en;q=0.7", 7.0),
             ("ru-RU,ru;q=0.9,en-US;q=0.8,en;q=0.7", 3.0),
             ("bn-BD,bn;q=0.9,en-US;q=0.8,en;q=0.7", 6.0),
             ("fil-PH,fil;q=0.9,en-US;q=0.8,en;q=0.7", 8.0))
EMULATOR_MODELS = ("sdk_gphone64_x86_64", "sdk_gphone_x86", "Android SDK built for x86",
                   "SM-G955N", "ASUS_Z01QD", "SM-N976N", "V1938T", "TAS-AN00")
DISPOSABLE = ("mailinator.com", "guerrillamail.com", "yopmail.com", "sharklasers.com",
              "10minutemail.com", "tempmail.dev", "dropmail.me", "maildrop.cc", "trashmail.de")
TEMPLATES = ("{f}.{l}{n4}", "{f}{l}{n2}", "{i}{l}{n4}", "{f}_{l}{n3}", "{f}{l}.{n4}")


def emulator_ua(rng: random.Random) -> str:
    model = rng.choice(EMULATOR_MODELS)
    cv = rng.randint(120, 150)
    return (f"Mozilla/5.0 (Linux; Android {rng.choice((9, 11, 12, 13))}; {model} "
            f"Build/{rng.choice(('PI', 'RSR1', 'SE1A', 'TE1A'))}.{rng.randint(180000, 240101)}"
            f".{rng.randint(1, 30):03d}; wv) AppleWebKit/537.36 (KHTML, like Gecko) "
            f"Version/4.0 Chrome/{cv}.0.{6000 + cv * 3}.{rng.randint(40, 180)} Mobile "
            f"Safari/537.36")


def templated_mailbox(rng: random.Random, template: str, domain: str) -> str:
    f, last = rng.choice(FIRST), rng.choice(LAST)
    local = template.format(f=f, l=last, i=f[0], n2=rng.randint(10, 99),
                            n3=rng.randint(100, 999), n4=rng.randint(1000, 9999))
    return f"{local}@{domain}"


class Scenario3(Scenario):
    """redteam2's clean program (its own fraud switched off) with this module's mechanisms."""

    def __init__(self, seed: int, quick: bool = False) -> None:
        self.seed3 = seed
        self.fraud_refs: list[Referrer] = []
        super().__init__(CLEAN_SEED_OFFSET + seed, quick)

    def generate(self) -> None:
        self.p.fraud = {}  # redteam2's own mechanisms: none
        super().generate()

    def organic(self) -> list[Person]:
        """Called by redteam2's generate() once the clean referrers and their groups exist and
        before organic purchases and referrers' own activity: where this red team plants."""
        people = super().organic()
        rng = self.rng
        self.campaign_burst()
        self.expats()
        for mech in MECHANISMS:
            cfg: dict[str, Any] = {"evasive_share": round(rng.uniform(0, 1), 2)}
            getattr(self, mech)(cfg)
            self.p.fraud[mech] = cfg
        return people

    # -- helpers --------------------------------------------------------------------------------

    def budget3(self) -> int:
        """Purchases one mechanism aims at: 2-12 % of the genuine referred purchases (at least
        a dozen, so that a mechanism is measurable on a quick seed)."""
        clean = self.counts["referral_visitors"] * self.p.conv_rate
        return max(12, int(clean * math.exp(self.rng.uniform(math.log(0.02), math.log(0.12)))))

    def evasive(self, cfg: dict[str, Any]) -> bool:
        return self.rng.random() < cfg["evasive_share"]

    def operator(self, role: str) -> Referrer:
        ref = self.fraud_referrer(role)
        self.fraud_refs.append(ref)
        return ref

    def friends(self, ref: Referrer, n: int) -> None:
        """Genuine friends of a fraudulent referrer: clean purchases on a dirty link."""
        tag = Tag(False, "clean", tags=("genuine_of_fraudster",))
        for _ in range(n):
            self.visit(ref, self.person(), self.when(), tag, self.channel_of(),
                       max(0.3, self.p.conv_rate))

    def customer(self, device: Device, *, mail: str | None = None,
                 locale: str | None = None) -> Person:
        """A made-up customer on a given device."""
        person = self.person(self.p.home, device=device, mail=mail)
        person.devices = [device]
        if locale is not None:
            person.locale = locale
        return person

    def op_time(self, day: float, tz: float, lo: float = 8.0, hi: float = 20.0) -> float:
        """A moment of `day` in an operator's working hours (UTC offset `tz`)."""
        return int(day) * DAY + (self.rng.uniform(lo, hi) - tz) * HOUR

    # -- look-alike ---------------------------------------------------------------------------

    def campaign_burst(self) -> None:
        rng, p = self.rng, self.p
        quiet = sorted((r for r in self.referrers if r.role == "clean"),
                       key=lambda r: len(r.shares))
        dormant = quiet[:max(10, len(quiet) // 2)]  # the less active half
        if not dormant:
            return
        info = []
        tag = Tag(False, "clean", tags=("campaign_burst",))
        for _ in range(rng.randint(1, 2)):
            day = rng.uniform(5, 55)
            chosen = rng.sample(dormant, min(len(dormant), rng.randint(10, 40)))
            for ref in chosen:
                st = self.op_time(day, COUNTRIES[p.home][0], 8, 21)
                channel = rng.choice(("email", "whatsapp", "facebook", "sms"))
                for _ in range(rng.randint(1, 4)):
                    t = st + rng.lognormvariate(math.log(rng.uniform(0.3, 3) * HOUR), 1.0)
                    person, tags = self.plain_visitor()
                    self.visit(ref, person, t, Tag(False, "clean", tags=(*tag.tags, *tags)),
                               channel, min(0.6, p.conv_rate * 2))
            info.append({"day": round(day, 1), "referrers": len(chosen)})
        p.looks["campaign_burst"] = {"campaigns": info}

    def expats(self) -> None:
        rng, p = self.rng, self.p
        clean = [r for r in self.referrers if r.role == "clean"]
        if rng.random() < 0.2 or not clean:
            return
        info = []
        for ref in rng.sample(clean, min(len(clean), rng.randint(1, 3))):
            locale = rng.choice(OPERATORS)[0].split(",")[0]
            ref.person.locale = locale
            conv = min(0.6, p.conv_rate * rng.uniform(1, 2.5))
            n = rng.randint(5, 25)
            for _ in range(n):
                person = self.person(p.home)
                person.locale = locale
                day = rng.uniform(0, HORIZON_DAYS)
                t = self.op_time(day, COUNTRIES[p.home][0], 19, 26)  # 19:00 to 02:00 local
                self.visit(ref, person, t, Tag(False, "clean", tags=("expat",)),
                           rng.choice(("whatsapp", "facebook", "copy")), conv)
            info.append({"locale": locale, "visitors": n, "conv": round(conv, 2)})
        p.looks["expat"] = {"referrers": info}

    # -- mechanisms ---------------------------------------------------------------------------

    def shopper(self, ref: Referrer, tag: Tag, t: float, conv: float,  # noqa: PLR0917
                delay: Callable[[], float], referer: str | None, query: str | None) -> None:
        """Someone of the general population about to buy anyway, routed through `ref`'s link
        at `t`: buys with probability `conv`, `delay()` after the click."""
        rng = self.rng
        person, _tags = self.plain_visitor()
        device = person.devices[0]
        ip = self.session_ip(person, device, t)
        vid = self.session_vid(device)
        self.click(t, ref, ip, device.ua, self.al(person, device), vid, tag, referer, query)
        if rng.random() >= conv:
            return
        tp = t + delay()
        pip = ip if tp - t < HOUR else self.session_ip(person, device, tp)
        self.buy(person, device, tp, pip, vid)

    def coupon_leak(self, cfg: dict[str, Any]) -> None:
        rng = self.rng
        budget = self.budget3()
        n_leaks = rng.randint(1, 3)
        info = []
        for _ in range(n_leaks):
            ev = self.evasive(cfg)
            ref = self.operator("coupon_leak")
            self.friends(ref, rng.randint(0, 4))
            n_buy = max(ACTOR_FLOOR, int(budget * rng.uniform(0.5, 1.5) / n_leaks))
            conv = rng.uniform(0.35, 0.7) if ev else rng.uniform(0.75, 0.95)
            sites = [s.format(id=b62(rng, 7).lower())
                     for s in rng.sample(COUPON_SITES, rng.randint(1, 3))]
            posted = rng.uniform(0, 30)
            tag = Tag(True, "coupon_leak", "quiet_leak" if ev else "deal_site", ev)

            def delay(ev: bool = ev) -> float:
                if ev and rng.random() < 0.3:
                    return rng.uniform(1, 48) * HOUR
                return max(20.0, rng.lognormvariate(math.log((6 if ev else 3) * MINUTE), 0.8))

            n_clicks = int(n_buy / conv)
            for _ in range(n_clicks):
                referer = rng.choice(sites) if rng.random() < (0.25 if ev else 0.9) else None
                query = (f"clickid={b62(rng, 16)}" if not ev and rng.random() < 0.5 else None)
                self.shopper(ref, tag, self.when(rng.uniform(posted, HORIZON_DAYS)), conv, delay,
                             referer, query)
            info.append({"evasive": ev, "clicks": n_clicks, "conv": round(conv, 2),
                         "sites": len(sites), "posted_day": round(posted, 1)})
        cfg["leaks"] = info

    def brand_bidding(self, cfg: dict[str, Any]) -> None:
        rng = self.rng
        budget = self.budget3()
        n_bid = rng.randint(1, 2)
        info = []
        for _ in range(n_bid):
            ev = self.evasive(cfg)
            ref = self.operator("brand_bidding")
            self.friends(ref, rng.randint(0, 3))
            n_buy = max(ACTOR_FLOOR, int(budget * rng.uniform(0.5, 1.5) / n_bid))
            conv = rng.uniform(0.15, 0.35) if ev else rng.uniform(0.25, 0.5)
            engine = rng.choice(SEARCH_ENGINES)
            landing = f"https://{rng.choice(LANDING_WORDS)}-{b62(rng, 5).lower()}.example/"
            tag = Tag(True, "brand_bidding", "cloaked" if ev else "search_ads", ev)

            def delay(ev: bool = ev) -> float:
                if ev and rng.random() < 0.3:
                    return rng.uniform(1, 72) * HOUR
                return max(30.0, rng.lognormvariate(math.log(15 * MINUTE), 1.2))

            start = rng.uniform(0, 20)
            n_clicks = int(n_buy / conv)
            for _ in range(n_clicks):
                if ev:
                    referer = landing + rng.choice(("", "deals", "best-price", "go"))
                    referer = referer if rng.random() < 0.6 else None
                    query = None
                else:
                    referer = engine[0]
                    query = (f"{engine[1]}={b62(rng, 40)}&utm_source={engine[2]}&utm_medium=cpc"
                             if rng.random() < 0.9 else None)
                self.shopper(ref, tag, self.when(rng.uniform(start, HORIZON_DAYS)), conv, delay,
                             referer, query)
            info.append({"evasive": ev, "clicks": n_clicks, "conv": round(conv, 2),
                         "engine": engine[2], "start_day": round(start, 1)})
        cfg["bidders"] = info

    def emulator_farm(self, cfg: dict[str, Any]) -> None:
        rng, p, w = self.rng, self.p, self.world
        budget = self.budget3()
        n_ops = rng.randint(1, 2)
        home_locale = COUNTRIES[p.home][1]
        info = []
        for _ in range(n_ops):
            ev = self.evasive(cfg)
            ref = self.operator("emulator_farm")
            op_al, op_tz = rng.choice(OPERATORS)
            conv = rng.uniform(0.5, 0.9)
            n_clicks = int(max(ACTOR_FLOOR, budget * rng.uniform(0.5, 1.5) / n_ops) / conv)
            days = rng.sample(range(HORIZON_DAYS), rng.randint(5, 30))
            tag = Tag(True, "emulator_farm", "rotated" if ev else "emulator", ev)
            for _ in range(n_clicks):
                t = self.op_time(rng.choice(days), op_tz)
                if ev:
                    family = rng.choice(("android_webview", "samsung", "android_chrome"))
                    ua = user_agent(rng, family)
                    al = (accept_language(family, home_locale) if rng.random() < 0.7
                          else op_al)
                else:
                    family, ua, al = "android_webview", emulator_ua(rng), op_al
                device = Device(ua, family, "phone", new_vid(rng))
                person = self.customer(device)
                ip = w.residential_ip(p.home)
                self.click(t, ref, ip, ua, al, device.vid, tag)
                if rng.random() < conv:
                    delay = (rng.uniform(60, 600) if not ev
                             else rng.lognormvariate(math.log(8 * MINUTE), 0.7))
                    self.buy(person, device, t + delay, ip, device.vid,
                             minimum_p=0.3 if ev else 0.8)
            info.append({"evasive": ev, "clicks": n_clicks, "conv": round(conv, 2),
                         "operator": op_al.split(",")[0], "days": len(days)})
        cfg["operators"] = info

    def account_factory(self, cfg: dict[str, Any]) -> None:
        rng, p, w = self.rng, self.p, self.world
        budget = self.budget3()
        n_ops = rng.randint(1, 2)
        home_locale = COUNTRIES[p.home][1]
        info = []
        for _ in range(n_ops):
            ev = self.evasive(cfg)
            ref = self.operator("account_factory")
            buy_p = rng.uniform(0.7, 1.0)
            n_acc = int(max(ACTOR_FLOOR, budget * rng.uniform(0.5, 1.5) / n_ops) / buy_p)
            tag = Tag(True, "account_factory", "templated" if ev else "disposable_sequence", ev)
            if ev:
                template = rng.choice(TEMPLATES)
                domains = rng.sample(("gmail.com", "outlook.com", "yahoo.com", "hotmail.com",
                                      provider(rng, p.home)), rng.randint(1, 2))
                devs = [make_device(rng, rng.choice(("phone", "desktop")))
                        for _ in range(rng.randint(3, 6))]
                times = sorted(self.when() for _ in range(n_acc))
            else:
                prefix = rng.choice(FIRST) + rng.choice(("", "shop", "buy", "deal", "x"))
                first_n = rng.randint(100, 5000)
                domains = rng.sample(DISPOSABLE, rng.randint(1, 2))
                devs = [make_device(rng, "desktop", "win_chrome")
                        for _ in range(rng.randint(1, 2))]
                batch = rng.randint(8, 30)
                pace = rng.uniform(40, 240)
                times = []
                while len(times) < n_acc:
                    t0 = rng.uniform(0, HORIZON_DAYS - 1) * DAY
                    for i in range(min(batch, n_acc - len(times))):
                        times.append(t0 + i * pace * rng.uniform(0.9, 1.1))
                times.sort()
            for i, t in enumerate(times):
                dev = rng.choice(devs)
                device = Device(dev.ua, dev.family, dev.kind, new_vid(rng))
                if ev:
                    domain = (rng.choice(DISPOSABLE) if rng.random() < 0.15
                              else rng.choice(domains))
                    mail = templated_mailbox(rng, template, domain)
                    al = accept_language(dev.family, home_locale)
                else:
                    mail = f"{prefix}{first_n + i}@{rng.choice(domains)}"
                    al = "en-US,en;q=0.9"
                person = self.customer(device, mail=mail)
                ip = w.residential_ip(p.home)
                self.click(t, ref, ip, device.ua, al, device.vid, tag)
                signup = t + (rng.uniform(25, 120) if ev else rng.uniform(15, 45))
                gap = rng.uniform(40, 300) if ev else rng.uniform(20, 90)
                if rng.random() < buy_p:
                    self.buy(person, device, signup + gap, ip, device.vid, mail=mail,
                             minimum_p=0.5 if ev else 0.95, signup_gap=gap)
                else:
                    self.conversion(signup, "signup", person, device, ip, vid=device.vid,
                                    mail=mail)
            info.append({"evasive": ev, "accounts": n_acc, "buy_p": round(buy_p, 2),
                         "domains": domains, "devices": len(devs)})
        cfg["operators"] = info

    def refund_abuse(self, cfg: dict[str, Any]) -> None:
        rng, p = self.rng, self.p
        budget = self.budget3()
        n_ops = rng.randint(1, 3)
        info = []
        for _ in range(n_ops):
            ev = self.evasive(cfg)
            ref = self.operator("refund_abuse")
            self.friends(ref, rng.randint(0, 3))
            n_buy = max(ACTOR_FLOOR, int(budget * rng.uniform(0.5, 1.5) / n_ops))
            refund_p = rng.uniform(0.4, 0.7) if ev else rng.uniform(0.85, 1.0)
            tag = Tag(True, "refund_abuse", "mixed" if ev else "after_hold", ev)
            refunded = 0
            for _ in range(n_buy):
                person = self.person(p.home)
                device = person.devices[0]
                t = self.when()
                channel = rng.choice(("whatsapp", "sms", "copy", "email"))
                referer, query = self.referer_query(channel)
                ip = self.session_ip(person, device, t)
                self.click(t, ref, ip, device.ua, self.al(person, device), device.vid, tag,
                           referer, query)
                delay = max(60.0, rng.lognormvariate(math.log(20 * MINUTE), 1.0))
                tp = t + delay
                pip = ip if delay < HOUR else self.session_ip(person, device, tp)
                bought: Purchase | None = self.buy(person, device, tp, pip, device.vid)
                if bought is None:
                    continue
                if not ev:
                    bought.conv["amount"] = rng.choice(p.prices[-2:])
                if rng.random() < refund_p:
                    lag = rng.uniform(12, 45) if ev else rng.uniform(30.5, 37)
                    kind = "chargeback" if ev and rng.random() < 0.3 else "refund"
                    self.reversal(bought, lag * DAY, kind)
                    refunded += bought.refunded
            info.append({"evasive": ev, "purchases": n_buy, "refund_p": round(refund_p, 2),
                         "refunded_in_horizon": refunded})
        cfg["operators"] = info

    def collusion_pool(self, cfg: dict[str, Any]) -> None:
        rng, p, w = self.rng, self.p, self.world
        ev = self.evasive(cfg)
        k = rng.randint(4, 10 if p.quick else 20)
        refs = [self.operator("collusion_pool") for _ in range(k)]
        ops = []
        for _ in range(rng.randint(2, 5)):
            me = self.person(p.home)
            ops.append({"devices": [make_device(rng, "phone")
                                    for _ in range(rng.randint(1, 2))],
                        "home": me.home_ip, "locale": me.locale,
                        "personas": [local_part(rng) for _ in range(rng.randint(1, 3))]})
        tag = Tag(True, "collusion_pool", "rotated" if ev else "shared_devices", ev)
        members = [r.person.cid for r in refs]
        for ref in refs:
            for _ in range(rng.randint(2, 6)):
                op = rng.choice(ops)
                dev = rng.choice(op["devices"])
                t = self.when()
                ip = op["home"] if not ev or rng.random() < 0.3 else w.residential_ip(p.home)
                vid = new_vid(rng) if ev else dev.vid
                persona = rng.choice(op["personas"])
                if ev and rng.random() < 0.7:
                    mail = f"{local_part(rng)}@{provider(rng, p.home)}"
                else:
                    cut = rng.randint(1, max(1, len(persona) - 1))
                    local = rng.choice((f"{persona}{rng.randint(1, 999)}",
                                        f"{persona[:cut]}.{persona[cut:]}".replace("..", "."),
                                        persona))
                    mail = f"{local}@{provider(rng, p.home)}"
                device = Device(dev.ua, dev.family, dev.kind, vid)
                person = self.customer(device, mail=mail, locale=op["locale"])
                referer, query = self.referer_query(rng.choice(("whatsapp", "sms", "copy")))
                self.click(t, ref, ip, device.ua, self.al(person, device), vid, tag, referer,
                           query)
                if self.buy(person, device, t + rng.uniform(3, 45) * MINUTE, ip, vid,
                            minimum_p=0.25 if ev else 0.6) is not None:  # within the 60 days
                    members.append(person.cid)
        self.rings.append({"name": "collusion_pool", "variant": tag.variant, "evasive": ev,
                           "members": sorted(members)})
        cfg.update(evasive=ev, referrers=k, operators=len(ops), referees=len(members) - k)

    def sleeper_cell(self, cfg: dict[str, Any]) -> None:
        rng, p, w = self.rng, self.p, self.world
        ev = self.evasive(cfg)
        k = rng.randint(6, 15 if p.quick else 30)
        sleepers = [self.operator("sleeper_cell") for _ in range(k)]
        for ref in sleepers:  # aged: a purchase of their own early on (own_activity adds more)
            me = ref.person
            t = self.when(rng.uniform(0, 15))
            dev = me.devices[0]
            own = self.buy(me, dev, t, self.session_ip(me, dev, t), None, want_click_id=False)
            if own is not None:
                own.own = True
        day = rng.uniform(30, 52)
        window = rng.uniform(48, 144) * HOUR if ev else rng.uniform(2, 10) * HOUR
        start = self.op_time(day, COUNTRIES[p.home][0], 9, 20)
        pool_devs = [make_device(rng, "phone") for _ in range(rng.randint(2, 5))]
        pool_ips = [w.residential_ip(p.home) for _ in range(rng.randint(2, 4))]
        tag = Tag(True, "sleeper_cell", "staggered" if ev else "synchronised", ev)
        members = [r.person.cid for r in sleepers]
        for ref in sleepers:
            for _ in range(rng.randint(1, 3)):
                t = start + rng.uniform(0, window)
                if ev:
                    person = self.person(p.home)
                    device = person.devices[0]
                    ip = w.residential_ip(p.home)
                    vid = device.vid
                else:
                    dev = rng.choice(pool_devs)
                    vid = dev.vid if rng.random() < 0.5 else new_vid(rng)
                    device = Device(dev.ua, dev.family, dev.kind, vid)
                    person = self.customer(device)
                    ip = rng.choice(pool_ips)
                referer, query = self.referer_query(rng.choice(("whatsapp", "facebook", "copy")))
                self.click(t, ref, ip, device.ua, self.al(person, device), vid, tag, referer,
                           query)
                delay = (rng.uniform(2, 20) * MINUTE if not ev
                         else max(60.0, rng.lognormvariate(math.log(15 * MINUTE), 0.8)))
                if self.buy(person, device, t + delay, ip, vid,
                            minimum_p=0.3 if ev else 0.8) is not None:
                    members.append(person.cid)
        self.rings.append({"name": "sleeper_cell", "variant": tag.variant, "evasive": ev,
                           "members": sorted(members)})
        cfg.update(evasive=ev, sleepers=k, day=round(day, 1), window_h=round(window / HOUR, 1),
                   referees=len(members) - k)

    # -- labels ---------------------------------------------------------------------------------

    def finish(self, slug: str, anchor: datetime) -> dict[str, Any]:
        """redteam2's files and labels; a clean purchase on a link this red team's fraud also
        used is tagged genuine_of_fraudster (redteam2 tags only its own roles), and refund
        abuse's variants are split by whether the refund came within the 60 days (a reversed
        reward counts as caught; the unrefunded ones need the referrer's history)."""
        data = super().finish(slug, anchor)
        dirty = {r.code for r in self.fraud_refs}
        for lab in data["labels"].values():
            if lab["mech"] == "refund_abuse":  # the question is the ones not yet refunded
                lab["variant"] += "-refunded" if lab["refunded"] else "-unrefunded"
            if not lab["fraud"] and lab["code"] in dirty and \
                    "genuine_of_fraudster" not in lab["tags"]:
                lab["tags"].append("genuine_of_fraudster")
        return data
