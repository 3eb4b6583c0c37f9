"""One seed of bench/redteam4: a referral program's 60 days, its clean world and its fraud,
with the ground truth the scorer (bench/redteam2/score.py) reads.

Written blind, from issue 13 and DESIGN.md only: no engine code and no other red team's
generator was read. Every size, rate and timing is drawn per seed (Params.draw).

Clean world: genuine referrers (power-law activity) share through messengers, e-mail and
social networks to friends who click, sign up, buy, buy again and sometimes return it;
organic customers buy without a link; households of 2-6 on one home address (phones of one
model), offices of 5-60 on one or two addresses with one standard desktop build, campus clubs of
30-150 students behind 1-4 NAT addresses, carrier NAT for up to half of mobile traffic, privacy
browsers (one fingerprint for many people, cookies cleared), VPN users, travellers, expats
with friends abroad, influencers whose posts bring hundreds of clicks in hours, merchant
campaigns that wake many referrers at once, and fraudsters' genuine friends.

Fraud (each in a blatant and an evasive variant every seed): the issue's self-referral (typo'd
provider, other provider, plus tags and dots, household lease, same device), rings, device
farms, bots, click injection, click spam, click farms, incentivised sign-ups; and four the
issue does not name: account takeover of a real referrer's link, cookie stuffing through hidden
iframes, a browser extension that rewrites checkout links, gift cards bought with stolen cards
through a referrer's own referees.
"""

from __future__ import annotations

import math
import random
import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

from bench.redteam4.world import (
    BOT_UAS,
    DAY,
    FIRST,
    HOMES,
    LANGS,
    LAST,
    PRIVACY,
    PROVIDERS,
    TYPOS,
    AddressPlan,
    Device,
    Person,
    Visit,
    as_record,
    browser,
    diurnal,
    mailbox,
    new_vid,
)

DAYS = 60
END = DAYS * DAY
WINDOW = 30 * DAY  # the program's attribution window (bench/redteam2/drive.py sets 30 days)
ISSUE_MECHANISMS = ("self_referral", "ring", "device_farm", "bot", "click_injection",
                    "click_spam", "click_farm", "incentivised")
NEW_MECHANISMS = ("account_takeover", "cookie_stuffing", "extension_hijack",
                  "gift_card_cashout")
MECHANISMS = ISSUE_MECHANISMS + NEW_MECHANISMS
SELF_VARIANTS = ("typo_domain", "other_provider", "plus_dots", "household_lease", "same_device")
LOOKALIKES = ("household", "same_phone_model", "office", "campus", "carrier_nat",
              "privacy_browser", "vpn", "traveller", "expat", "influencer", "campaign",
              "repeat_buyer", "refunded", "fraudster_genuine", "ato_victim", "ordinary")
RING_MECHANISMS = ("ring", "device_farm", "gift_card_cashout")
PERSONAL = {"whatsapp": None, "messenger": None, "sms": None, "telegram": None,
            "email": "https://mail.google.com/", "outlook": "https://outlook.live.com/"}
SOCIAL = {"facebook": "https://l.facebook.com/", "x": "https://t.co/",
          "instagram": "https://l.instagram.com/", "linkedin": "https://www.linkedin.com/",
          "reddit": "https://www.reddit.com/", "blog": "https://{name}.substack.com/"}
CASH_SITES = ("https://freecash.com/offers", "https://www.swagbucks.com/discover",
              "https://www.reddit.com/r/beermoney/", "https://signupbonuses.net/deals",
              "https://www.cashbackforum.com/threads/")
AD_NETWORKS = ("https://www.popads.net/", "https://a.propellerclick.com/",
               "https://go.adsterra.com/", None)
NEWS_SITES = ("https://www.newsbreak.com/", "https://weather-today.net/", "https://lyrics.fm/",
              "https://www.recipes-daily.com/", None)
STUFFERS = ("https://best-coupon-codes.net/shop", "https://dealz-forum.com/t/",
            "https://topdiscounts.io/store/")

Mech = tuple[str, str, bool]  # mechanism, variant, evasive


def _u(lo: float, hi: float, rng: random.Random) -> float:
    return lo + (hi - lo) * rng.random()


@dataclass
class Params:
    """Everything drawn for one seed."""

    seed: int
    quick: bool
    home: str
    scale: float
    referrers: int
    organic: int
    mobile_share: float
    nat_share: float  # of mobile traffic, behind carrier NAT
    nat_pool: int  # addresses in one carrier's NAT pool
    vpn_share: float
    privacy_share: float
    traveller_share: float
    expat_share: float
    household_share: float
    office_share: float
    campus_clubs: int
    influencers: int
    campaigns: int
    share_activity: float
    click_signup: float  # a friend's click -> sign-up
    signup_purchase: float
    repeat_rate: float
    refund_rate: float
    organic_buy: float
    min_amount: int
    amount_median: float  # in multiples of the minimum
    fraud_scale: float

    @classmethod
    def draw(cls, seed: int, quick: bool, rng: random.Random) -> Params:
        scale = 1.0 if quick else _u(2.5, 4.0, rng)
        return cls(
            seed=seed, quick=quick, home=rng.choice(HOMES), scale=scale,
            referrers=int(rng.randint(160, 360) * scale),
            organic=int(rng.randint(1800, 4200) * scale),
            mobile_share=_u(0.4, 0.8, rng), nat_share=_u(0.05, 0.5, rng),
            nat_pool=rng.randint(3, 40), vpn_share=_u(0.01, 0.07, rng),
            privacy_share=_u(0.01, 0.05, rng), traveller_share=_u(0.01, 0.05, rng),
            expat_share=_u(0.02, 0.1, rng), household_share=_u(0.1, 0.35, rng),
            office_share=_u(0.05, 0.2, rng), campus_clubs=rng.randint(1, 2 if quick else 4),
            influencers=rng.randint(1, 2 if quick else 5), campaigns=rng.randint(1, 3),
            share_activity=_u(0.6, 1.6, rng), click_signup=_u(0.15, 0.45, rng),
            signup_purchase=_u(0.4, 0.85, rng), repeat_rate=_u(0.05, 0.3, rng),
            refund_rate=_u(0.02, 0.09, rng), organic_buy=_u(0.08, 0.3, rng),
            min_amount=rng.choice((499, 900, 1000, 1500, 2000, 2500)),
            amount_median=_u(2.0, 6.0, rng), fraud_scale=_u(0.35, 0.9, rng))

    def as_dict(self) -> dict[str, Any]:
        return {k: as_record(v) for k, v in asdict(self).items()}


@dataclass
class Click:
    t: float
    code: str
    ip: str
    ua: str
    lang: str
    referer: str | None
    vid: str
    click_id: str
    fraud: Mech | None = None  # a click that steals the credit of a purchase it did not cause
    tags: frozenset[str] = frozenset()
    person: str | None = None  # whose browser it was (None: nobody's, a script's)


@dataclass
class Conv:
    t: float
    type: str
    cid: str
    event_id: str
    ip: str
    ua: str
    email: str | None = None
    amount: int | None = None
    vid: str | None = None  # the browser's visitor cookie (sent if a click had set it)
    cookie: bool = True  # the merchant sends the cookie it finds with this conversion
    click_id: str | None = None
    original: str | None = None
    fraud: Mech | None = None
    tags: frozenset[str] = frozenset()
    refunded: bool = False


@dataclass
class Ref:
    person: Person
    code: str
    role: str
    tags: set[str] = field(default_factory=set)
    friends: list[Person] = field(default_factory=list)
    household: list[Person] = field(default_factory=list)
    coworkers: list[Person] = field(default_factory=list)
    expat: bool = False  # lives abroad: most friends are back home (tagged expat themselves)


class Scenario4:
    """One seed's program. `finish(slug, anchor)` gives what bench/redteam2's main imports and
    scores: referrers, clicks, conversions, labels (per purchase event id) and rings."""

    def __init__(self, seed: int, quick: bool = False) -> None:
        self.rng = rng = random.Random(f"redteam4-{seed}")
        self.p = Params.draw(seed, quick, rng)
        self.world = AddressPlan(rng)
        self.world.country(self.p.home)
        for iso in rng.sample(sorted(set(LANGS) - {self.p.home}), 4):
            self.world.country(iso)
        self.world.clouds()
        self.abroad = sorted(set(self.world.residential) - {self.p.home})
        self.nat_pools = {(iso, i): [b.host(rng) for _ in range(self.p.nat_pool)]
                          for iso, blocks in self.world.mobile.items()
                          for i, b in enumerate(blocks)}
        self.vpn_exits = {id(b): [b.host(rng) for _ in range(rng.randint(6, 25))]
                          for b in self.world.vpn}
        self.n_person = 0
        self.n_event = 0
        self.people: list[Person] = []
        self.refs: list[Ref] = []
        self.clicks: list[Click] = []
        self.convs: list[Conv] = []
        self.rings: list[dict[str, Any]] = []
        self.counts: dict[str, int] = {}
        self.organic: list[Person] = []
        self.referred = 0  # genuine referred first purchases, the fraud's yardstick
        self._clean()
        self.volume = min(3.0, max(0.3, self.referred / 900))
        self._fraud()
        self.counts.update(people=len(self.people), organic=len(self.organic),
                           fraud_volume_pct=round(100 * self.volume))

    # -- building blocks ---------------------------------------------------------------------

    def person(self, country: str | None = None, *, home_ip: str | None = None,
               devices: list[Device] | None = None, plain: bool = False,
               email: str | None = None) -> Person:
        r, p = self.rng, self.p
        country = country or self.p.home
        self.world.country(country)
        self.n_person += 1
        first, last = r.choice(FIRST), r.choice(LAST)
        lang = r.choice(LANGS[country])
        if devices is None:
            devices = [browser(r, lang, mobile=r.random() < p.mobile_share)]
            if r.random() < 0.35:
                devices.append(browser(r, lang, mobile=not devices[0].mobile))
        who = Person(
            cid=f"c{self.n_person:06d}", first=first, last=last,
            email=email or mailbox(r, first, last, country), country=country,
            home_ip=home_ip or r.choice(self.world.residential[country]).host(r),
            devices=devices, carrier=r.randrange(len(self.world.mobile[country])),
            nat=r.random() < p.nat_share)
        if not plain:
            if r.random() < p.privacy_share:
                who.privacy = True
                who.devices = [r.choice(PRIVACY)]
                who.tags.add("privacy_browser")
            if r.random() < p.vpn_share:
                who.vpn = r.choice(self.world.vpn)
                who.tags.add("vpn")
            if r.random() < p.traveller_share:
                who.tags.add("traveller")
        self.people.append(who)
        return who

    def code(self) -> str:
        return "r4" + uuid.UUID(int=self.rng.getrandbits(128), version=4).hex[:10]

    def referrer(self, who: Person, role: str, tags: set[str] | None = None) -> Ref:
        ref = Ref(who, self.code(), role, set(tags or ()))
        self.refs.append(ref)
        return ref

    def vid(self, who: Person, dev: int) -> str:
        if who.privacy and self.rng.random() < 0.7:
            return new_vid(self.rng)  # cookies cleared when the window closed
        if dev not in who.vids:
            who.vids[dev] = new_vid(self.rng)
        return who.vids[dev]

    def where(self, who: Person, t: float, mobile: bool | None = None,
              dev: int | None = None) -> Visit:
        """Where `who` is at time t, on which browser: phones on home Wi-Fi or on the carrier
        (behind its NAT for some), desktops at home, at the office on weekdays, on campus."""
        r = self.rng
        if dev is None:
            choices = [i for i, d in enumerate(who.devices) if mobile is None or d.mobile == mobile]
            dev = r.choice(choices or list(range(len(who.devices))))
        d = who.devices[dev]
        tags: set[str] = set()
        hour = (t % DAY) / 3600
        weekday = int(t // DAY) % 7 < 5
        if who.vpn is not None and r.random() < 0.75:
            ip = r.choice(self.vpn_exits[id(who.vpn)])
            tags.add("vpn")
        elif "traveller" in who.tags and (int(t // DAY) // 9) % 3 == 1:
            iso = self.abroad[(int(who.cid[1:]) + int(t // DAY) // 27) % len(self.abroad)]
            ip = r.choice(self.world.residential[iso]).host(r)  # hotel and café Wi-Fi
            tags.add("traveller")
        elif who.campus_ips and 8 <= hour < 20 and r.random() < 0.8:
            ip = r.choice(who.campus_ips)
        elif who.office_ip and weekday and 9 <= hour < 18 and not d.mobile:
            ip = who.office_ip
        elif d.mobile and (r.random() < 0.5 or 8 <= hour < 18):
            if who.nat:
                ip = r.choice(self.nat_pools[(who.country, who.carrier)])
                tags.add("carrier_nat")
            else:
                ip = self.world.mobile[who.country][who.carrier].host(r)
        else:
            ip = who.home_ip
        if who.privacy:
            tags.add("privacy_browser")
        return Visit(ip, d, self.vid(who, dev), frozenset(tags))

    def click(self, t: float, ref: Ref, v: Visit, who: Person | None, referer: str | None,
              *, fraud: Mech | None = None, tags: frozenset[str] = frozenset()
              ) -> Click | None:
        if not 0 <= t < END:
            return None
        c = Click(t, ref.code, v.ip, v.device.ua, v.device.lang, referer, v.vid,
                  str(uuid.UUID(int=self.rng.getrandbits(128), version=4)), fraud,
                  v.tags | tags, who.cid if who is not None else None)
        self.clicks.append(c)
        return c

    def event(self) -> str:
        self.n_event += 1
        return f"e4-{self.n_event:07d}"

    def conv(self, who: Person, t: float, kind: str, v: Visit, *, amount: int | None = None,
             click: Click | None = None, fraud: Mech | None = None,
             tags: frozenset[str] = frozenset(), cookie: bool = True) -> Conv | None:
        if not 0 <= t < END:
            return None
        c = Conv(t, kind, who.cid, self.event(), v.ip, v.device.ua,
                 email=who.email if kind == "signup" else None, amount=amount,
                 vid=v.vid, cookie=cookie,
                 click_id=click.click_id if click is not None and t - click.t < 7200 else None,
                 fraud=fraud, tags=v.tags | tags | frozenset(who.tags))
        self.convs.append(c)
        return c

    def amount(self, min_share: float = 0.06) -> int:
        p = self.p
        if self.rng.random() < min_share:
            return p.min_amount
        x = p.min_amount * max(1.0, p.amount_median * math.exp(self.rng.gauss(0, 0.6)))
        return int(x // 100) * 100 + 99 if x > 1000 else int(x)

    def money_back(self, buy: Conv | None, after: float, kind: str = "refund") -> None:
        """A refund or chargeback of `buy`, `after` seconds later (if within the 60 days)."""
        if buy is None or buy.amount is None or buy.t + after >= END:
            return
        buy.refunded = True
        self.convs.append(Conv(buy.t + after, kind, buy.cid, self.event(), buy.ip, buy.ua,
                               amount=buy.amount, original=buy.event_id))

    def journey(self, who: Person, click: Click, *, fraud: Mech | None = None,
                tags: frozenset[str] = frozenset(), min_share: float = 0.06,
                refund: float | None = None, chargeback: float = 0.0,
                lag: float | None = None, buy_lag: float | None = None,
                repeat: float | None = None) -> Conv | None:
        """Sign-up after `click` and a purchase (and maybe more, and maybe money back)."""
        r, p = self.rng, self.p
        t1 = click.t + (lag if lag is not None else 60 * math.exp(r.gauss(2.7, 1.4)))
        dev = next((i for i, d in enumerate(who.devices) if d.ua == click.ua), None)
        v = Visit(click.ip, who.devices[dev] if dev is not None else who.devices[0], click.vid,
                  click.tags)  # signs up in the browser that clicked
        if self.conv(who, t1, "signup", v, click=click, fraud=fraud, tags=tags) is None:
            return None
        if buy_lag is None:
            buy_lag = (r.expovariate(1 / 600) if r.random() < 0.55
                       else DAY * math.exp(r.gauss(0.5, 1.0)))
        t2 = t1 + buy_lag
        v2 = v if buy_lag < 3600 else self.where(who, t2, dev=dev)
        buy = self.conv(who, t2, "purchase", v2, amount=self.amount(min_share), click=click,
                        fraud=fraud, tags=tags)
        if buy is None:
            return None
        self.referred += fraud is None
        if r.random() < (p.refund_rate if refund is None else refund):
            self.money_back(buy, DAY * _u(2, 25, r))
        elif r.random() < chargeback:
            self.money_back(buy, DAY * _u(14, 45, r), "chargeback")
        if r.random() < (p.repeat_rate if repeat is None else repeat):
            for _ in range(r.randint(1, 3)):
                t3 = t2 + DAY * _u(3, 28, r)
                again = self.conv(who, t3, "purchase", self.where(who, t3), amount=self.amount(),
                                  fraud=fraud, tags=tags | {"repeat_buyer"})
                if again is not None and r.random() < p.refund_rate and fraud is None:
                    self.money_back(again, DAY * _u(2, 20, r))
        return buy

    # -- the clean world -----------------------------------------------------------------------

    def genuine(self, role: str = "genuine", tags: set[str] | None = None,
                who: Person | None = None) -> Ref:
        """A genuine referrer with a household, maybe an office, and friends to share with."""
        r, p = self.rng, self.p
        who = who or self.person(p.home)
        ref = self.referrer(who, role, tags)
        if r.random() < p.household_share:
            for _ in range(r.randint(1, 5)):
                devs = None
                if r.random() < 0.45:  # the family's phones of one model and browser
                    d0 = next((d for d in who.devices if d.mobile), None)
                    devs = [d0] if d0 is not None else None
                member = self.person(who.country, home_ip=who.home_ip, devices=devs, plain=True)
                member.nat, member.carrier = who.nat, who.carrier
                member.tags.add("household")
                if devs is not None:
                    member.tags.add("same_phone_model")
                ref.household.append(member)
        if r.random() < p.office_share:
            size = r.randint(5, 60)
            office_ip = self.world.business[who.country].host(r)
            build = browser(r, r.choice(LANGS[who.country]), mobile=False, model="Windows")
            who.office_ip = office_ip
            who.devices.append(build)
            for _ in range(max(1, size // 6)):
                mate = self.person(who.country, plain=True)
                mate.office_ip = office_ip
                mate.devices = [build, *[d for d in mate.devices if d.mobile]]
                mate.tags.add("office")
                ref.coworkers.append(mate)
        if r.random() < p.expat_share:
            ref.expat = True
        return ref

    def friend(self, ref: Ref) -> Person:
        r, p = self.rng, self.p
        if ref.household and r.random() < 0.25:
            return r.choice(ref.household)
        if ref.coworkers and r.random() < 0.35:
            return r.choice(ref.coworkers)
        if ref.friends and r.random() < 0.2:
            return r.choice(ref.friends)
        if ref.expat and r.random() < 0.6:
            f = self.person(r.choice(self.abroad))
            f.tags.add("expat")
        else:
            f = self.person(ref.person.country if r.random() < 0.9 else p.home)
        ref.friends.append(f)
        return f

    def share(self, ref: Ref, t: float, *, tags: frozenset[str] = frozenset(),
              friends: int | None = None, conv_boost: float = 1.0) -> None:
        r, p = self.rng, self.p
        personal = r.random() < 0.6
        channel = r.choice(list(PERSONAL if personal else SOCIAL))
        referer = (PERSONAL if personal else SOCIAL)[channel]
        if referer is not None:
            referer = referer.replace("{name}", ref.person.first + ref.person.last)
        n = friends or (r.randint(1, 3) if personal else 1 + int(r.expovariate(1 / 4)))
        if r.random() < 0.12:  # the referrer checks his own link works
            self.click(t - 60, ref, self.where(ref.person, t - 60), ref.person, None)
        tags = tags | frozenset(ref.tags)
        for _ in range(n):
            f = self.friend(ref)
            tc = t + 60 * math.exp(r.gauss(3.5 if personal else 4.5, 1.5))
            c = self.click(tc, ref, self.where(f, tc), f, referer, tags=tags)
            if c is None:
                continue
            if r.random() < 0.25:  # looks again later, maybe on another device
                t2 = tc + DAY * r.expovariate(1 / 2)
                c = self.click(t2, ref, self.where(f, t2), f, referer, tags=tags) or c
            rate = p.click_signup * conv_boost * (1.3 if personal else 0.6)
            if r.random() < rate and r.random() < p.signup_purchase:
                self.journey(f, c, tags=tags)

    def _clean(self) -> None:
        r, p = self.rng, self.p
        for _ in range(p.referrers):
            ref = self.genuine()
            shares = min(30, int(r.paretovariate(1.25) * p.share_activity))
            for _ in range(shares):
                self.share(ref, diurnal(r, r.uniform(0, DAYS)))
        genuine = list(self.refs)
        # Merchant campaigns wake many referrers within hours.
        for _ in range(p.campaigns):
            day = r.uniform(3, DAYS - 10)
            for ref in r.sample(genuine, int(len(genuine) * _u(0.15, 0.45, r))):
                self.share(ref, day * DAY + 9 * 3600 + r.expovariate(1 / 7200),
                           tags=frozenset({"campaign"}))
        # Influencers: a post brings hundreds of clicks within hours, mostly phones.
        for _ in range(p.influencers):
            ref = self.genuine("influencer", {"influencer"})
            for _ in range(r.randint(1, 3)):
                t0 = diurnal(r, r.uniform(0, DAYS - 5))
                site = r.choice(("https://l.instagram.com/", "https://www.youtube.com/",
                                 "https://www.tiktok.com/", "https://t.co/"))
                for _ in range(int(r.randint(120, 450) * p.scale ** 0.5)):
                    tc = t0 + r.expovariate(1 / (3600 * _u(1, 6, r)))
                    fan = self.person(p.home if r.random() < 0.85 else r.choice(self.abroad))
                    v = self.where(fan, tc, mobile=r.random() < 0.85)
                    c = self.click(tc, ref, v, fan, site, tags=frozenset({"influencer"}))
                    if c is not None and r.random() < _u(0.02, 0.08, r):
                        self.journey(fan, c, tags=frozenset({"influencer"}))
        # Campus clubs: 30-150 students behind 1-4 NAT addresses, a burst after a message.
        for _ in range(p.campus_clubs):
            campus = self.world.campus[p.home]
            ips = tuple(campus.host(r) for _ in range(r.randint(1, 4)))
            lead = self.person(p.home, plain=True)
            lead.campus_ips = ips
            lead.tags.add("campus")
            ref = self.genuine("campus_club", who=lead)
            for _ in range(r.randint(1, 3)):
                t0 = diurnal(r, r.uniform(0, DAYS - 3))
                for _ in range(r.randint(30, 150)):
                    s = self.person(p.home if r.random() < 0.8 else r.choice(self.abroad),
                                    plain=True)
                    s.campus_ips = ips
                    s.tags.add("campus")
                    tc = t0 + 3600 * r.expovariate(1 / 4)
                    c = self.click(tc, ref, self.where(s, (tc // DAY) * DAY + 12 * 3600),
                                   s, None, tags=frozenset({"campus"}))
                    if c is not None and r.random() < p.click_signup * 0.8:
                        self.journey(s, c)
        # Referrers' own purchases (their own link never carries them: no cookie is sent).
        for ref in genuine:
            if r.random() < 0.3:
                t = diurnal(r, r.uniform(0, DAYS))
                v = self.where(ref.person, t)
                self.conv(ref.person, t, "purchase", v, amount=self.amount(), cookie=False)
        # Organic customers: they buy without a referral link (unless someone steals it).
        for _ in range(p.organic):
            who = self.person(p.home if r.random() < 0.92 else r.choice(self.abroad))
            self.organic.append(who)
            if r.random() < p.organic_buy:
                t = diurnal(r, r.uniform(0, DAYS))
                v = self.where(who, t)
                self.conv(who, t - r.uniform(60, 3 * DAY), "signup", v)
                buy = self.conv(who, t, "purchase", v, amount=self.amount())
                if r.random() < p.refund_rate:
                    self.money_back(buy, DAY * _u(2, 20, r))
                if r.random() < p.repeat_rate:
                    t2 = t + DAY * _u(5, 40, r)
                    self.conv(who, t2, "purchase", self.where(who, t2), amount=self.amount())
        self.counts["genuine_referrers"] = len(self.refs)

    # -- fraud ---------------------------------------------------------------------------------

    def _fraud(self) -> None:
        for ev in (False, True):
            for variant in SELF_VARIANTS:
                for _ in range(self.rng.randint(1, 2 if self.volume > 0.6 else 1)):
                    self.self_referral(variant, ev)
            self.ring(ev)
            self.device_farm(ev)
            self.bots(ev)
            self.click_injection(ev)
            self.click_spam(ev)
            self.click_farm(ev)
            self.incentivised(ev)
            self.account_takeover(ev)
            self.cookie_stuffing(ev)
            self.extension_hijack(ev)
            self.gift_card_cashout(ev)

    def n(self, lo: int, hi: int) -> int:
        """A size for one fraud operation, in proportion to the program's genuine traffic (a
        small program attracts smaller fraud), never under half the range's low end."""
        x = self.rng.randint(lo, hi) * self.p.fraud_scale * self.volume
        return max((lo + 1) // 2, int(x))

    def operator(self, mech: str, *, friends: bool = True, who: Person | None = None) -> Ref:
        """A fraudster with a referral link; most have genuine friends too, whose referrals
        are clean (tagged fraudster_genuine)."""
        r = self.rng
        ref = self.genuine(mech, who=who)
        if friends and r.random() < 0.7:
            for _ in range(r.randint(1, 4)):
                self.share(ref, diurnal(r, r.uniform(0, DAYS)),
                           tags=frozenset({"fraudster_genuine"}))
        return ref

    def alias(self, email: str, variant: str, ev: bool) -> str:
        r = self.rng
        local, _, domain = email.partition("@")
        if variant == "typo_domain":
            base = domain if domain in TYPOS else r.choice(list(TYPOS))
            one, two = TYPOS[base]
            if ev and "." not in local and len(local) > 3:
                local = local[:2] + "." + local[2:]
            return f"{local}@{r.choice(two if ev else one)}"
        if variant == "other_provider":
            others = [d for d in PROVIDERS[""] if d != domain]
            return f"{local}@{r.choice(others[-3:] if ev else others[:3])}"
        # plus tags and dots
        plain = local.replace(".", "")
        if ev:
            dotted = ".".join(plain[i:i + 2] for i in range(0, len(plain), 2))
            return f"{dotted}@{'googlemail.com' if domain == 'gmail.com' else domain}"
        return f"{local}+{r.choice(('ref', 'promo', '2', 'shop', 'bonus'))}@{domain}"

    def self_referral(self, variant: str, ev: bool) -> None:
        r = self.rng
        mech: Mech = ("self_referral", variant, ev)
        ref = self.operator("self_referral")
        me = ref.person
        if variant in ("typo_domain", "plus_dots") and not me.email.endswith(tuple(TYPOS)):
            me.email = f"{me.email.partition('@')[0]}@gmail.com"
        for _ in range(r.randint(1, 2 if ev else 3)):
            t = diurnal(r, r.uniform(1, DAYS - 4))
            own = self.where(me, t, dev=0)
            self.click(t, ref, own, me, None)
            if variant in ("typo_domain", "other_provider", "plus_dots"):
                email = self.alias(me.email, variant, ev)
                fake = self.person(me.country, home_ip=me.home_ip, email=email, plain=True,
                                   devices=[me.devices[0]] if not ev else None)
                if ev:  # another device, another day, on the phone network
                    fake.nat, fake.carrier = me.nat, me.carrier
                    tc = t + DAY * _u(0.5, 4, r)
                    c = self.click(tc, ref, self.where(fake, tc, mobile=True), fake, None)
                else:
                    fake.vids[0] = own.vid
                    c = self.click(t + r.uniform(20, 300), ref, own, fake, None)
            elif variant == "household_lease":
                # A new device on the referrer's home network minutes after his own visit.
                fake = self.person(me.country, home_ip=me.home_ip, plain=True)
                fake.nat, fake.carrier = me.nat, me.carrier
                gap = r.uniform(20 * 60, 3 * 3600) if ev else r.uniform(60, 600)
                v = Visit(me.home_ip, fake.devices[0], self.vid(fake, 0), frozenset())
                c = self.click(t + gap, ref, v, fake, None)
            else:  # same_device: another account from the referrer's own browser
                fake = self.person(me.country, home_ip=me.home_ip, plain=True,
                                   devices=[me.devices[0]])
                if ev:  # a private window (new cookie), days later
                    v = Visit(me.home_ip, me.devices[0], new_vid(r), frozenset())
                    c = self.click(t + DAY * _u(1, 6, r), ref, v, fake, None)
                else:
                    fake.vids[0] = own.vid
                    c = self.click(t + r.uniform(30, 900), ref, own, fake, None)
            if c is None:
                continue
            self.journey(fake, c, fraud=mech, lag=r.uniform(60, 900) if not ev else None,
                         buy_lag=r.uniform(120, 1800) if not ev else None,
                         repeat=0.3 if ev else 0.1, refund=0.05)

    def ring(self, ev: bool) -> None:
        """Fake accounts on few addresses and devices, each signed up through an earlier one's
        link and becoming a referrer in turn; evasive: over weeks, more addresses, buying
        through each other's links."""
        r, p = self.rng, self.p
        mech: Mech = ("ring", "ring", ev)
        n = max(6, self.n(6, 14) if ev else self.n(8, 20))
        if ev:
            ips = [r.choice(self.world.residential[p.home]).host(r) for _ in range(r.randint(3, 6))]
            ips.append(r.choice(self.vpn_exits[id(r.choice(self.world.vpn))]))
        else:
            ips = [r.choice(self.world.residential[p.home]).host(r)
                   for _ in range(r.randint(1, 2))]
        lang = r.choice(LANGS[p.home])
        devices = [browser(r, lang) for _ in range(r.randint(3, 5) if ev else r.randint(2, 3))]
        founder = self.operator("ring", friends=True)
        members: list[Ref] = [founder]
        t = diurnal(r, r.uniform(2, 20))
        span = DAY * _u(20, 35, r) if ev else DAY * _u(1, 3, r)
        for i in range(n):
            t += span / n * _u(0.3, 1.7, r)
            who = self.person(p.home, home_ip=r.choice(ips), plain=True,
                              devices=[r.choice(devices)])
            via = members[-1] if not ev or r.random() < 0.6 else r.choice(members)
            v = Visit(r.choice(ips), who.devices[0], self.vid(who, 0), frozenset())
            c = self.click(t, via, v, who, None)
            if c is None:
                continue
            self.journey(who, c, fraud=mech, min_share=0.3 if ev else 0.8,
                         lag=r.uniform(60, 600) if not ev else None,
                         buy_lag=r.uniform(120, 1200) if not ev else None, repeat=0.0)
            acct = self.referrer(who, "ring")
            members.append(acct)
            if ev and i > 2 and r.random() < 0.5:  # buys again through another member's link
                t2 = t + DAY * _u(2, 10, r)
                other = r.choice(members[:-1])
                c2 = self.click(t2, other, self.where(who, t2, dev=0), who, None)
                if c2 is not None:
                    self.conv(who, t2 + r.uniform(120, 3600), "purchase",
                              Visit(c2.ip, who.devices[0], c2.vid, frozenset()),
                              amount=self.amount(0.3), click=c2, fraud=mech)
        self.rings.append({"name": "ring", "variant": "ring evasive" if ev else "ring",
                           "evasive": ev, "members": [m.person.cid for m in members]})

    def device_farm(self, ev: bool) -> None:
        """One referrer, many referees on a few phones (new cookie and mailbox each);
        evasive: SIM cards on a real carrier, weeks, varied amounts."""
        r, p = self.rng, self.p
        mech: Mech = ("device_farm", "device_farm", ev)
        op = self.operator("device_farm", friends=ev)
        lang = r.choice(LANGS[p.home])
        phones = [browser(r, lang, mobile=True) for _ in range(r.randint(4, 6) if ev else 3)]
        n = max(12, self.n(20, 45) if ev else self.n(30, 80))
        fixed = [r.choice(self.world.residential[p.home]).host(r) for _ in range(r.randint(1, 3))]
        carrier = r.randrange(len(self.world.mobile[p.home]))
        pool = self.nat_pools[(p.home, carrier)]
        start, span = r.uniform(3, 25), _u(15, 30, r) if ev else _u(2, 6, r)
        members = [op.person.cid]
        for _ in range(n):
            t = diurnal(r, start + r.uniform(0, span), night_owl=0 if ev else 3)
            who = self.person(p.home, devices=[r.choice(phones)], plain=True)
            ip = (r.choice(pool) if r.random() < 0.5 else
                  self.world.mobile[p.home][carrier].host(r)) if ev else r.choice(fixed)
            c = self.click(t, op, Visit(ip, who.devices[0], new_vid(r), frozenset()), who, None)
            if c is not None and self.journey(
                    who, c, fraud=mech, min_share=0.35 if ev else 0.9,
                    lag=r.uniform(40, 400) if not ev else None,
                    buy_lag=r.uniform(60, 900) if not ev else None, repeat=0.0):
                members.append(who.cid)
        self.rings.append({"name": "device_farm", "variant": "device_farm" +
                           (" evasive" if ev else ""), "evasive": ev, "members": members})

    def bots(self, ev: bool) -> None:
        """Scripts that click and sign up: blatant from data centres with automation UAs at a
        fixed rhythm; evasive with real browser UAs through residential proxies."""
        r, p = self.rng, self.p
        mech: Mech = ("bot", "bot", ev)
        op = self.operator("bot", friends=False)
        t = diurnal(r, r.uniform(2, 40))
        step = r.uniform(20, 240)
        ua = r.choice(BOT_UAS)
        hosts = [r.choice(self.world.hosting).host(r) for _ in range(r.randint(2, 6))]
        for i in range(self.n(150, 500)):
            t += step * (_u(0.5, 1.5, r) if ev else 1.0)
            if ev:
                dev = browser(r, r.choice(LANGS[p.home]))
                ip = r.choice(self.world.residential[p.home]).host(r)
            else:
                dev = Device(ua, "en-US,en;q=0.9" if i % 3 else "", False, "bot")
                ip = r.choice(hosts)
            who = self.person(p.home, devices=[dev], plain=True)
            c = self.click(t, op, Visit(ip, dev, new_vid(r), frozenset()), None, None)
            if c is not None and r.random() < (0.08 if ev else 0.12):
                self.journey(who, c, fraud=mech, min_share=0.6 if ev else 1.0,
                             lag=r.uniform(25, 90) if ev else r.uniform(3, 9),
                             buy_lag=r.uniform(40, 200) if ev else r.uniform(5, 20),
                             repeat=0.0, refund=0.0, chargeback=0.3 if ev else 0.5)

    def victims(self, k: int, when: tuple[float, float] = (0, DAYS)) -> list[tuple[Person, Conv]]:
        """k organic purchases (and, for the evasive variants, genuinely referred ones) whose
        credit a click-stealing mechanism can take."""
        buys = [c for c in self.convs if c.type == "purchase" and c.fraud is None
                and when[0] * DAY < c.t < when[1] * DAY]
        by_cid = {who.cid: who for who in self.people}
        picked = self.rng.sample(buys, min(k, len(buys)))
        return [(by_cid[c.cid], c) for c in picked]

    def steal(self, op: Ref, mech: Mech, who: Person, buy: Conv, *, before: float,
              referer: str | None, mobile: bool | None) -> bool:
        """A click fired from the buyer's own browser just before a purchase: the purchase now
        carries that click's id and cookie."""
        t = buy.t - before
        dev = next((i for i, d in enumerate(who.devices) if d.ua == buy.ua), 0)
        if mobile is not None and who.devices[dev].mobile != mobile:
            return False
        v = Visit(buy.ip, who.devices[dev], buy.vid or self.vid(who, dev), frozenset())
        c = self.click(t, op, v, who, referer, fraud=mech)
        if c is None:
            return False
        buy.vid, buy.click_id, buy.cookie = c.vid, c.click_id, True
        return True

    def click_injection(self, ev: bool) -> None:
        """Malware on Android phones fires a click on the operator's link seconds before a
        purchase the phone's owner was making anyway; evasive: minutes before, also over
        genuine referrals."""
        r = self.rng
        mech: Mech = ("click_injection", "click_injection", ev)
        op = self.operator("click_injection", friends=False)
        k = self.n(15, 40)
        for who, buy in self.victims(k * 3):
            if k <= 0:
                break
            if not ev and buy.click_id is not None:
                continue
            before = r.uniform(60, 900) if ev else r.uniform(2, 25)
            k -= self.steal(op, mech, who, buy, before=before, referer=None, mobile=True)

    def audience(self, k: int, shoppers: float) -> list[Person]:
        """k organic people a site or an ad network reaches; people who shop online browse
        more, so a buyer is `shoppers` times as likely to be reached."""
        buyers = {c.cid for c in self.convs if c.type == "purchase"}
        weights = [shoppers if who.cid in buyers else 1.0 for who in self.organic]
        picked: dict[str, Person] = {}
        for who in self.rng.choices(self.organic, weights=weights, k=2 * k):
            picked.setdefault(who.cid, who)
            if len(picked) == k:
                break
        return list(picked.values())

    def click_spam(self, ev: bool) -> None:
        """A link fired at many visitors (pop-unders, ad networks) so that their later organic
        purchases are credited to it; evasive: diurnal, mixed referers, phones mostly."""
        r, p = self.rng, self.p
        mech: Mech = ("click_spam", "click_spam", ev)
        op = self.operator("click_spam", friends=ev)
        net = r.choice(AD_NETWORKS[:3])
        k = self.n(300, 900) if ev else self.n(600, 1800)
        for who in self.audience(k, 3.0):
            t = diurnal(r, r.uniform(0, DAYS)) if ev else r.uniform(0, END)
            v = self.where(who, t, mobile=r.random() < 0.7 if ev else None)
            self.click(t, op, v, who, r.choice(NEWS_SITES) if ev else net, fraud=mech)
        _ = p

    def click_farm(self, ev: bool) -> None:
        """People paid to click and buy: residential addresses, real browsers, human
        click-to-purchase times, clicks at a steady rhythm in shifts, one Accept-Language for
        all, purchases at the minimum, a share charged back weeks later."""
        r, p = self.rng, self.p
        mech: Mech = ("click_farm", "click_farm", ev)
        op = self.operator("click_farm")
        farm_country = r.choice(self.abroad) if r.random() < 0.5 else p.home
        lang = r.choice(LANGS[farm_country])
        langs = [lang, r.choice(LANGS[p.home])] if ev else [lang]
        isps = self.world.residential[p.home]
        subnets = [r.choice(isps).host(r).rsplit(".", 1)[0] for _ in range(r.randint(2, 4))]
        shifts = [(day, start) for day in r.sample(range(5, DAYS - 5), r.randint(3, 8))
                  for start in ((8, 15) if r.random() < 0.5 else (9,))]
        hours = r.uniform(4, 7)
        rhythm = hours * 3600 * len(shifts) / (self.n(250, 600) if ev else self.n(300, 700))
        for day, start in shifts:
            t = day * DAY + start * 3600
            for _ in range(int(hours * 3600 / rhythm)):
                t += rhythm * (_u(0.6, 1.4, r) if ev else _u(0.95, 1.05, r))
                ip = (r.choice(isps).host(r) if ev
                      else f"{r.choice(subnets)}.{r.randint(2, 250)}")
                dev = browser(r, r.choice(langs))
                who = self.person(p.home, devices=[dev], plain=True)
                c = self.click(t, op, Visit(ip, dev, self.vid(who, 0), frozenset()), who,
                               None)
                if c is not None and r.random() < (0.12 if ev else 0.18):
                    self.journey(who, c, fraud=mech, min_share=0.5 if ev else 0.85,
                                 refund=0.0, chargeback=0.15 if ev else 0.35, repeat=0.0)

    def incentivised(self, ev: bool) -> None:
        """Posts on sign-up-for-cash sites: bursts of workers from several countries, buying at
        the minimum and refunding; the same referrer's genuine friends are clean."""
        r, p = self.rng, self.p
        mech: Mech = ("incentivised", "incentivised", ev)
        op = self.operator("incentivised", friends=True)
        countries = [*r.sample(self.abroad, 1 if ev else min(4, len(self.abroad))), p.home]
        for _ in range(r.randint(2, 4)):
            t0 = diurnal(r, r.uniform(2, DAYS - 5))
            site = r.choice(CASH_SITES)
            for _ in range(self.n(10, 30) if ev else self.n(15, 45)):
                tc = t0 + r.expovariate(1 / (3600 * (_u(6, 30, r) if ev else _u(1, 5, r))))
                who = self.person(r.choice(countries))
                c = self.click(tc, op, self.where(who, tc), who,
                               None if ev and r.random() < 0.6 else site)
                if c is not None and r.random() < (0.5 if ev else 0.7):
                    self.journey(who, c, fraud=mech, min_share=0.45 if ev else 0.85,
                                 refund=0.25 if ev else 0.5, repeat=0.0)

    def account_takeover(self, ev: bool) -> None:
        """Someone takes over a real referrer's account and pushes referees with stolen cards
        through its link; the victim's own friends keep coming (clean, tagged ato_victim)."""
        r, p = self.rng, self.p
        mech: Mech = ("account_takeover", "account_takeover", ev)
        victim = self.genuine("ato_victim", {"ato_victim"})
        for _ in range(r.randint(5, 10)):
            self.share(victim, diurnal(r, r.uniform(0, DAYS)))
        t0 = DAY * r.uniform(20, 45)
        span = DAY * (_u(8, 14, r) if ev else _u(1, 2, r))
        attacker_country = r.choice(self.abroad)
        vpn = r.choice(self.world.vpn)
        for _ in range(self.n(6, 14) if ev else self.n(10, 24)):
            t = t0 + r.uniform(0, span)
            if ev:
                who = self.person(p.home, plain=True)
                ip = r.choice(self.world.residential[p.home]).host(r)
            else:
                who = self.person(attacker_country, plain=True)
                ip = r.choice(self.vpn_exits[id(vpn)])
            c = self.click(t, victim, Visit(ip, who.devices[0], self.vid(who, 0), frozenset()),
                           who, None)
            if c is not None:
                self.journey(who, c, fraud=mech, min_share=0.0, refund=0.0,
                             chargeback=0.25 if ev else 0.6, repeat=0.0)

    def cookie_stuffing(self, ev: bool) -> None:
        """A deals site loads the link in a hidden iframe on its pages: every visitor gets the
        cookie (again on each page view), and their later purchases are credited to it."""
        r, p = self.rng, self.p
        mech: Mech = ("cookie_stuffing", "cookie_stuffing", ev)
        op = self.operator("cookie_stuffing", friends=ev)
        site = r.choice(STUFFERS)
        k = self.n(200, 600) if ev else self.n(300, 900)
        for who in self.audience(k, 5.0):
            t = diurnal(r, r.uniform(0, DAYS))
            v = self.where(who, t)
            views = 1 if ev else r.randint(2, 8)
            for i in range(views):
                self.click(t + i * r.uniform(20, 240), op, v, who, None if ev else site,
                           fraud=mech)
        _ = p

    def extension_hijack(self, ev: bool) -> None:
        """A browser extension (desktop Chrome) opens the operator's link when its user reaches
        the merchant's checkout, so the purchase carries the operator's click."""
        r = self.rng
        mech: Mech = ("extension_hijack", "extension_hijack", ev)
        op = self.operator("extension_hijack", friends=False)
        k = self.n(15, 40)
        for who, buy in self.victims(k * 4):
            if k <= 0:
                break
            before = r.uniform(60, 1200) if ev else r.uniform(3, 40)
            referer = None if ev else "https://shop.example.com/checkout"
            k -= self.steal(op, mech, who, buy, before=before, referer=referer, mobile=False)

    def gift_card_cashout(self, ev: bool) -> None:
        """A referrer buys gift cards with stolen cards through referee accounts he controls:
        round high amounts soon after sign-up, charged back weeks later."""
        r, p = self.rng, self.p
        mech: Mech = ("gift_card_cashout", "gift_card_cashout", ev)
        op = self.operator("gift_card_cashout")
        me = op.person
        members = [me.cid]
        for _ in range(self.n(5, 12) if ev else self.n(8, 18)):
            t = diurnal(r, r.uniform(5, DAYS - 3))
            if ev:
                who = self.person(p.home, plain=True)
                v = Visit(r.choice(self.world.residential[p.home]).host(r), who.devices[0],
                          self.vid(who, 0), frozenset())
            else:
                who = self.person(p.home, plain=True, devices=[me.devices[0]],
                                  home_ip=me.home_ip)
                v = Visit(me.home_ip, me.devices[0], self.vid(who, 0), frozenset())
            c = self.click(t, op, v, who, None)
            if c is None:
                continue
            self.conv(who, t + r.uniform(60, 600), "signup", v, click=c, fraud=mech)
            for _ in range(r.randint(1, 3)):
                t2 = t + r.uniform(300, 3 * DAY if ev else 3600)
                amount = r.choice((2500, 5000, 10000, 20000))
                if ev:
                    amount += r.choice((0, 0, 499, 1299))
                buy = self.conv(who, t2, "purchase", v, amount=amount, click=c, fraud=mech)
                if r.random() < (0.35 if ev else 0.7):
                    self.money_back(buy, DAY * _u(20, 40, r), "chargeback")
            members.append(who.cid)
        self.rings.append({"name": "gift_card_cashout", "variant": "gift_card_cashout" +
                           (" evasive" if ev else ""), "evasive": ev, "members": members})

    # -- output --------------------------------------------------------------------------------

    def finish(self, slug: str, anchor: datetime) -> dict[str, Any]:
        """The files to import, the referrers to create and the ground truth: each purchase
        that some link's click touches within 30 days (last touch, identity stitched from the
        purchase's click id, its cookie and the customer's earlier conversions) is labelled
        fraud (of its mechanism and variant) or clean (with the look-alikes it belongs to)."""
        def ts(t: float) -> str:
            return (anchor + timedelta(seconds=t)).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"

        clicks = sorted(self.clicks, key=lambda c: c.t)
        convs = sorted(self.convs, key=lambda c: (c.t, c.event_id))
        by_vid: dict[str, list[Click]] = {}
        by_id: dict[str, Click] = {}
        for c in clicks:
            by_vid.setdefault(c.vid, []).append(c)
            by_id[c.click_id] = c

        def cookie(cv: Conv) -> str | None:
            """The visitor cookie the merchant sends: the browser has one once a click set it."""
            if not cv.cookie or cv.vid is None or cv.vid not in by_vid:
                return None
            return cv.vid if by_vid[cv.vid][0].t <= cv.t else None
        code_tags = {ref.code: ref for ref in self.refs}
        known: dict[str, set[str]] = {}  # customer -> visitor ids seen on their conversions
        labels: dict[str, dict[str, Any]] = {}
        for cv in convs:
            ids = known.setdefault(cv.cid, set())
            vid = cookie(cv)
            if vid:
                ids.add(vid)
            if cv.click_id:
                ids.add(by_id[cv.click_id].vid)
            if cv.type != "purchase":
                continue
            touches = [c for v in ids for c in by_vid.get(v, ())
                       if cv.t - WINDOW <= c.t <= cv.t]
            if cv.click_id and by_id[cv.click_id].t <= cv.t:
                touches.append(by_id[cv.click_id])
            if not touches:
                continue
            last = max(touches, key=lambda c: c.t)
            fraud = cv.fraud or last.fraud
            lab: dict[str, Any] = {"code": last.code, "fraud": fraud is not None,
                                   "refunded": cv.refunded}
            if fraud is not None:
                lab.update(mech=fraud[0], variant=fraud[1], evasive=fraud[2], tags=[])
            else:
                tags = set(cv.tags | last.tags) | code_tags[last.code].tags
                if code_tags[last.code].role in MECHANISMS:
                    tags.add("fraudster_genuine")
                if cv.refunded:
                    tags.add("refunded")
                tags &= set(LOOKALIKES)
                lab.update(mech="clean", variant="clean", evasive=False,
                           tags=sorted(tags) or ["ordinary"])
            labels[cv.event_id] = lab
        out_clicks = []
        for c in clicks:
            row: dict[str, Any] = {"ts": ts(c.t), "code": c.code, "ip": c.ip,
                                   "user_agent": c.ua, "click_id": c.click_id,
                                   "visitor_id": c.vid}
            if c.lang:
                row["accept_language"] = c.lang
            if c.referer:
                row["referer"] = c.referer
            out_clicks.append(row)
        out_convs = []
        for cv in convs:
            body: dict[str, Any] = {"program": slug, "event_id": cv.event_id, "type": cv.type,
                                    "customer_id": cv.cid, "occurred_at": ts(cv.t),
                                    "ip": cv.ip, "user_agent": cv.ua}
            if cv.email:
                body["email"] = cv.email
            if cv.amount is not None:
                body["amount"], body["currency"] = cv.amount, "USD"
            vid = cookie(cv)
            if vid:
                body["visitor_id"] = vid
            if cv.click_id:
                body["click_id"] = cv.click_id
            if cv.original:
                body["original_event_id"] = cv.original
            out_convs.append(body)
        referrers = [{"external_id": ref.person.cid, "email": ref.person.email,
                      "code": ref.code, "role": ref.role} for ref in self.refs]
        return {"referrers": referrers, "clicks": out_clicks, "conversions": out_convs,
                "labels": labels, "rings": [dict(ring) for ring in self.rings]}


