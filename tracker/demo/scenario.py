"""The demo's traffic: who clicks what, when, and who converts (pure data, no I/O).

Deterministic for a given seed (and `now`):

- a program selling plans on `shop.example`;
- organic traffic: referrers whose reach follows a power law (a few bring most of the
  visitors), visitors who click one to three links over 45 days from their own IP and browser,
  a minority who sign up minutes to days later, buy, renew, now and then ask for a refund, a
  few who type a referral code instead of clicking, link-preview bots (Slack, WhatsApp...);
- planted fraud of every kind the engine knows (the names are those of tests/traffic.py):
  `self_referral` (referrers buying through their own link, under their own id or a second
  account on their own device), `ring` (accounts on two IPs and one browser referring each
  other), `camouflaged_ring` (three phones reused by six accounts that also click honest links),
  `click_farm` (headless browsers on datacenter IPs, and a room of phones opening accounts in
  a burst), `click_injection` (a click fired seconds before a purchase that was happening
  anyway) and `click_spam` (hundreds of clicks fired at phones, claiming the few people who buy
  days later).

Every account, click and conversion is labelled with the pattern that made it.
"""

from __future__ import annotations

import random
import uuid
import zlib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from tracker.formats import rfc3339

if TYPE_CHECKING:
    from tracker.demo.moments import Moment, Share

DOMAIN = "shop.example"
PATTERNS = ("self_referral", "ring", "camouflaged_ring", "click_farm", "click_injection",
            "click_spam")
ORGANIC = "organic"

PLANS = ((1900, 0.5), (4900, 0.35), (9900, 0.15))  # price (cents) and share of buyers

BROWSERS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/{v}.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.{v} Safari/605.1.15",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_{v} like Mac OS X) AppleWebKit/605.1.15 (KHTML, "
    "like Gecko) Version/17.0 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 14; Pixel {v}) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Mobile Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:{v}.0) Gecko/20100101 Firefox/{v}.0",
    "Mozilla/5.0 (Linux; Android 13; SM-S91{v}B) AppleWebKit/537.36 (KHTML, like Gecko) "
    "SamsungBrowser/23.0 Chrome/115.0.0.0 Mobile Safari/537.36",
)
IPHONE = BROWSERS[2]
HEADLESS = ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
            "HeadlessChrome/{v}.0.0.0 Safari/537.36")
PREVIEW_BOTS = (
    "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)",
    "WhatsApp/2.23.20.0 A",
    "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)",
    "TelegramBot (like TwitterBot)",
    "Twitterbot/1.0",
)
LANGUAGES = ("en-US,en;q=0.9", "en-US,en;q=0.9", "en-GB,en;q=0.8", "de-DE,de;q=0.9,en;q=0.6",
             "fr-FR,fr;q=0.9,en;q=0.5", "es-ES,es;q=0.9", "nl-NL,nl;q=0.9,en;q=0.7",
             "pt-BR,pt;q=0.9,en;q=0.6")
REFERERS = ("", "", "", "https://www.instagram.com/", "https://t.co/", "https://www.youtube.com/",
            "https://www.reddit.com/", "https://mail.google.com/", "https://www.facebook.com/")
# First octets of the visitors' home IPs: consumer ISPs, nothing from the fraud's ranges below.
HOME_NETWORKS = (24, 50, 62, 67, 71, 73, 76, 77, 78, 79, 80, 81, 82, 83, 84, 86, 87, 88, 89,
                 90, 91, 92, 93, 94, 95, 98, 99, 109, 151, 174, 176, 178, 188, 217)
NAMES = ("ana", "ben", "chen", "dara", "eli", "fatima", "gus", "hana", "ivan", "jo", "kofi",
         "lena", "mateo", "nina", "omar", "priya", "quinn", "rosa", "sven", "tara", "umar",
         "vera", "wen", "yusuf", "zoe")


def display_name(person_id: str) -> str:
    """A person's display name ("Nina K."), derived from their id: the traffic's random
    stream is left as it was."""
    h = zlib.crc32(person_id.encode())
    return f"{NAMES[h % len(NAMES)].title()} {chr(65 + (h // len(NAMES)) % 26)}."


@dataclass(frozen=True, slots=True)
class DemoSize:
    """How much traffic to make. The default is a realistic small program; tests use less."""

    referrers: int = 60  # organic referrers
    visitors: int = 2000  # organic visitors over the history (a quarter of them sign up)
    spam_clicks: int = 900  # clicks fired by the click spammer (one in 60 converts)
    live_visitors: int = 120  # visitors browsing right now, through GET /r/{code}
    self_referrers: int = 8
    injections: int = 12
    farm_bots: int = 30
    farm_accounts: int = 12
    days: int = 45
    # The customer base before the clicks' history (tracker.demo.moments): customers who bought
    # 95 to 220 days ago, and the advocates among them who refer with their code.
    customer_base: int = 400
    base_advocates: int = 30


SMALL = DemoSize(referrers=20, visitors=600, spam_clicks=500, live_visitors=20,
                 self_referrers=4, injections=12, farm_bots=8, farm_accounts=9,
                 customer_base=260, base_advocates=20)


@dataclass(slots=True)
class Account:
    """A referrer (an external id in the merchant's customer id space) and their link."""

    external_id: str
    pattern: str
    email: str
    code: str = ""  # the link code, once the API has made the link
    channels: dict[str, str] = field(default_factory=dict)  # channel -> its link's code


@dataclass(slots=True)
class Person:
    """A browser on a device: the visitor cookie, the IP it comes from, its headers."""

    ip: str
    user_agent: str
    language: str
    visitor: str = ""  # rg_vid: the id of the person's first click, as the redirect sets it


@dataclass(slots=True)
class Click:
    account: Account
    at: datetime
    person: Person
    click_id: str = ""  # chosen for imported clicks; the server's rg_cid for live ones
    referer: str = ""
    live: bool = False
    channel: str = ""  # the share channel of the link it went through ("": the plain link)


@dataclass(slots=True)
class Conversion:
    pattern: str
    type: str
    customer: str
    at: datetime | None  # None for live ones: `after` past their click's time
    person: Person | None = None
    click: Click | None = None
    after: timedelta = timedelta(0)
    amount: int | None = None
    email: str | None = None
    referral_code: Account | None = None
    original: Conversion | None = None
    event_id: str = ""

    def occurred_at(self) -> datetime:
        if self.at is not None:
            return self.at
        assert self.click is not None  # noqa: S101 (live conversions follow a click)
        return self.click.at + self.after

    def body(self, program: str) -> dict[str, Any]:
        body: dict[str, Any] = {"program": program, "event_id": self.event_id,
                                "type": self.type, "customer_id": self.customer,
                                "occurred_at": rfc3339(self.occurred_at())}
        if self.amount is not None:
            body |= {"amount": self.amount, "currency": "USD"}
        if self.email:
            body["email"] = self.email
        if self.click is not None:
            body["click_id"] = self.click.click_id
        if self.referral_code is not None:
            body["referral_code"] = self.referral_code.code
        if self.person is not None:
            body |= {"ip": self.person.ip, "user_agent": self.person.user_agent}
        if self.original is not None:
            body["original_event_id"] = self.original.event_id
        else:
            body["customer_name"] = display_name(self.customer)
        return body


def uuid7(at: datetime, rng: random.Random) -> str:
    """A UUIDv7 for a click at `at`, like the redirect's own click ids."""
    ms = int(at.timestamp() * 1000) & (2**48 - 1)
    rand = rng.getrandbits(74)
    value = (ms << 80) | (0x7 << 76) | ((rand >> 62) << 64) | (0b10 << 62) | (rand & (2**62 - 1))
    return str(uuid.UUID(int=value))


def click_time(click_id: str) -> datetime:
    """When a live click was answered: the millisecond time in its UUIDv7."""
    ms = int(click_id.replace("-", "")[:12], 16)
    return datetime.fromtimestamp(ms / 1000, UTC)


class Scenario:
    """The program's people and what they do, labelled with the pattern that made them."""

    def __init__(self, seed: int, now: datetime, size: DemoSize) -> None:
        self.rng = random.Random(seed)  # noqa: S311 (the shape of traffic, not a secret)
        self.seed = seed
        self.now = now
        self.size = size
        self.start = now - timedelta(days=size.days)
        self.history_end = now - timedelta(hours=1)
        self.accounts: list[Account] = []
        self.clicks: list[Click] = []
        self.conversions: list[Conversion] = []
        self.customers: dict[str, str] = {}  # customer id -> pattern
        self.moments: list[Moment] = []  # customers' events (tracker.demo.moments)
        self.shares: list[Share] = []  # referrers' shares of the history, on their channels
        self._ids: set[str] = set()
        self.organic = [self.account(ORGANIC) for _ in range(size.referrers)]
        self.self_referrers = [self.account("self_referral") for _ in range(size.self_referrers)]
        self.ring = [self.account("ring") for _ in range(6)]
        self.camouflaged = [self.account("camouflaged_ring") for _ in range(6)]
        self.farmer = self.account("click_farm")
        self.injector = self.account("click_injection")
        self.spammer = self.account("click_spam")
        # Reach follows a power law: the first referrers bring most of the visitors.
        self.weights = [1 / (i + 1) ** 1.1 for i in range(size.referrers)]
        # The growth history's own random stream (tracker.demo.moments): the traffic is the
        # same with or without it. Advocates of the customer base who refer by code.
        self.growth_rng = random.Random(seed * 1_000_003 + 15)  # noqa: S311 (not a secret)
        self.advocates = [self.account(ORGANIC, self.growth_rng)
                          for _ in range(size.base_advocates)]

    # building blocks

    def new_id(self, prefix: str = "cus_", rng: random.Random | None = None) -> str:
        while True:
            value = f"{prefix}{(rng or self.rng).getrandbits(40):010x}"
            if value not in self._ids:
                self._ids.add(value)
                return value

    def account(self, pattern: str, rng: random.Random | None = None) -> Account:
        external_id = self.new_id(rng=rng)
        account = Account(external_id, pattern, self.email(rng))
        self.accounts.append(account)
        return account

    def email(self, rng: random.Random | None = None) -> str:
        r = rng or self.rng
        return f"{r.choice(NAMES)}.{r.randint(1, 99_999)}@mail.example"

    def home_ip(self, rng: random.Random | None = None) -> str:
        r = rng or self.rng
        return f"{r.choice(HOME_NETWORKS)}.{r.randint(0, 255)}.{r.randint(0, 255)}." \
               f"{r.randint(2, 250)}"

    def browser(self, template: str | None = None) -> str:
        return (template or self.rng.choice(BROWSERS)).format(v=self.rng.randint(1, 130))

    def person(self, ip: str | None = None, user_agent: str | None = None) -> Person:
        return Person(ip or self.home_ip(), user_agent or self.browser(),
                      self.rng.choice(LANGUAGES))

    def when(self, first: datetime | None = None, last: datetime | None = None) -> datetime:
        lo, hi = first or self.start, last or self.history_end - timedelta(days=1)
        return lo + (hi - lo) * self.rng.random()

    def organic_referrer(self) -> Account:
        return self.rng.choices(self.organic, weights=self.weights)[0]

    def click(self, account: Account, at: datetime, person: Person, *, live: bool = False
              ) -> Click:
        click = Click(account, at, person, referer=self.rng.choice(REFERERS), live=live)
        if not live:
            click.click_id = uuid7(at, self.rng)
            if not person.visitor:
                person.visitor = click.click_id
        self.clicks.append(click)
        return click

    def convert(self, pattern: str, type_: str, customer: str, at: datetime | None, *,
                person: Person | None = None, click: Click | None = None,
                after: timedelta = timedelta(0), email: str | None = None,
                amount: int | None = None, referral_code: Account | None = None,
                original: Conversion | None = None) -> Conversion | None:
        """A conversion, or None when it would happen after now (it has not happened yet)."""
        if at is not None and at > self.now - timedelta(minutes=2):
            return None
        conv = Conversion(pattern, type_, customer, at, person, click, after, amount, email,
                          referral_code, original)
        conv.event_id = f"{'sig' if type_ == 'signup' else type_[:3]}_{len(self.conversions):06d}"
        self.conversions.append(conv)
        self.customers.setdefault(customer, pattern)
        return conv

    def plan_price(self) -> int:
        return self.rng.choices([p for p, _ in PLANS], weights=[w for _, w in PLANS])[0]

    def journey(self, pattern: str, customer: str, person: Person, at: datetime,
                click: Click | None, *, buy: float = 0.6, renew: bool = True,
                referral_code: Account | None = None, purchase_after: timedelta | None = None
                ) -> None:
        """Signup at `at`; then maybe a purchase, renewals and a refund, as they come. A
        referral code typed at signup is reported with each conversion (the merchant keeps
        it on the account: refguard stitches identities through visitors, and a code brings
        none)."""
        email = self.email()
        signup = self.convert(pattern, "signup", customer, at, person=person, click=click,
                              email=email, referral_code=referral_code)
        if signup is None or self.rng.random() >= buy:
            return
        r = self.rng
        bought_at = at + (purchase_after if purchase_after is not None else
                          timedelta(hours=min(r.lognormvariate(2.5, 1.3), 24 * 20)))
        price = self.plan_price()
        purchase = self.convert(pattern, "purchase", customer, bought_at, person=person,
                                amount=price, referral_code=referral_code)
        if purchase is None or pattern != ORGANIC or not renew:
            return
        if r.random() < 0.04:
            self.convert(pattern, "refund", customer, bought_at + timedelta(days=r.uniform(1, 6)),
                         amount=price, original=purchase)
            return
        if r.random() < 0.75:
            self.convert(pattern, "renewal", customer, bought_at + timedelta(days=30),
                         person=person, amount=price, referral_code=referral_code)

    # the traffic

    def plan(self, *, live_injection: bool) -> None:
        self.plan_organic()
        self.plan_self_referral()
        self.plan_ring()
        self.plan_camouflaged_ring()
        self.plan_click_farm()
        self.plan_click_injection(live=live_injection)
        self.plan_click_spam()
        self.plan_live_browsing()
        # Last, on its own random stream: the traffic above is the same with or without it.
        from tracker.demo.moments import plan_growth

        plan_growth(self)

    def plan_organic(self) -> None:
        r = self.rng
        for _ in range(self.size.visitors):
            person = self.person()
            at = self.when()
            clicks = []
            for _ in range(r.choice((1, 1, 1, 1, 2, 2, 3))):
                clicks.append(self.click(self.organic_referrer(), at, person))
                at += timedelta(hours=r.expovariate(1 / 20))
                if at > self.history_end:
                    break
            if r.random() < 0.25:
                last = clicks[-1]
                signup_at = last.at + timedelta(minutes=max(1.5, r.lognormvariate(3.5, 1.6)))
                self.journey(ORGANIC, self.new_id(), person, signup_at, last)
            elif r.random() < 0.01:
                # Someone who heard of it and typed a referrer's code: no click at all.
                self.journey(ORGANIC, self.new_id(), person, self.when(),
                             None, referral_code=self.organic_referrer())
        for _ in range(max(4, self.size.visitors // 150)):
            # Link previews: a link pasted into a chat is fetched by the chat's bot.
            bot = Person(f"{r.choice((31, 66, 69, 157))}.{r.randint(0, 255)}.{r.randint(0, 255)}"
                         f".{r.randint(2, 250)}", r.choice(PREVIEW_BOTS), "")
            self.click(self.organic_referrer(), self.when(), bot)

    def plan_self_referral(self) -> None:
        r = self.rng
        for i, account in enumerate(self.self_referrers):
            person = self.person()
            if i % 2 == 0:
                # Registers as a referrer, then buys through their own link as themselves.
                at = self.when(self.start + timedelta(days=5))
                click = self.click(account, at, person)
                self.journey("self_referral", account.external_id, person,
                             at + timedelta(minutes=r.uniform(20, 90)), click, buy=1.0,
                             purchase_after=timedelta(hours=r.uniform(1, 6)))
                continue
            # An honest customer first (referred by someone), later a second account on the
            # same device through their own link.
            at = self.when(last=self.start + timedelta(days=self.size.days // 2))
            honest = self.click(self.organic_referrer(), at, person)
            # (Bought within two days and never renewed: after the click on their own link,
            # that link would take the credit, a self-referral too.)
            self.journey(ORGANIC, account.external_id, person,
                         at + timedelta(minutes=r.uniform(30, 300)), honest, buy=1.0,
                         renew=False, purchase_after=timedelta(hours=r.uniform(1, 48)))
            later = at + timedelta(days=r.uniform(3, 12))
            click = self.click(account, later, person)
            self.journey("self_referral", self.new_id(), person,
                         later + timedelta(minutes=r.uniform(30, 120)), click, buy=1.0,
                         purchase_after=timedelta(hours=r.uniform(1, 5)))

    def plan_ring(self) -> None:
        """Six accounts on two IPs and one browser, each referred by the next."""
        ips = ["185.220.101.5", "185.220.101.6"]
        ua = self.browser(BROWSERS[0])
        for i, account in enumerate(self.ring):
            person = self.person(ips[i % 2], ua)
            person.language = "en-US,en;q=0.9"
            at = self.when(self.now - timedelta(days=12))
            click = self.click(self.ring[(i + 1) % 6], at, person)
            self.journey("ring", account.external_id, person, at + timedelta(hours=3), click,
                         buy=1.0, purchase_after=timedelta(hours=1))

    def plan_camouflaged_ring(self) -> None:
        """Three phones reused by six accounts, each also clicking honest referrers' links."""
        phones = [self.person(user_agent=self.browser(BROWSERS[3])) for _ in range(3)]
        for i, account in enumerate(self.camouflaged):
            phone = phones[i % 3]
            decoy = Person(phone.ip, phone.user_agent, phone.language)
            self.click(self.rng.choice(self.organic[:5]), self.when(), decoy)
            person = Person(phone.ip, phone.user_agent, phone.language)
            at = self.when()
            click = self.click(self.camouflaged[(i + 1) % 6], at, person)
            self.journey("camouflaged_ring", account.external_id, person,
                         at + timedelta(hours=5), click, buy=1.0,
                         purchase_after=timedelta(hours=1))

    def plan_click_farm(self) -> None:
        """Scripted browsers on datacenter IPs open accounts (their clicks are bots: no
        credit), and a room of phones opens a dozen more in one afternoon."""
        r = self.rng
        day = self.when(self.now - timedelta(days=14), self.now - timedelta(days=2))
        for i in range(self.size.farm_bots):
            ip = f"34.{r.randint(64, 127)}.{r.randint(0, 255)}.{r.randint(2, 250)}"
            bot = Person(ip, self.browser(HEADLESS), "")
            at = day + timedelta(minutes=7 * i)
            click = self.click(self.farmer, at, bot)
            self.journey("click_farm", self.new_id(), bot, at + timedelta(minutes=r.uniform(2, 9)),
                         click, buy=0.0)
        phones = [self.browser(BROWSERS[5]) for _ in range(3)]
        for i in range(self.size.farm_accounts):
            phone = Person(f"45.83.12.{10 + i % 3}", phones[i % 3], "en-US,en;q=0.9")
            at = day + timedelta(hours=2, minutes=25 * i)
            click = self.click(self.farmer, at, phone)
            self.journey("click_farm", self.new_id(), phone, at + timedelta(minutes=8), click,
                         buy=1.0, purchase_after=timedelta(minutes=20))

    def plan_click_injection(self, *, live: bool) -> None:
        """Shoppers about to buy anyway; a click on the injector's link fires seconds before
        each purchase (a browser extension watching for the checkout page)."""
        r = self.rng
        for _ in range(self.size.injections):
            person = self.person()
            after = timedelta(seconds=r.uniform(1.0, 6.0))
            customer = self.new_id()
            if live:
                click = self.click(self.injector, self.now, person, live=True)
                self.convert("click_injection", "purchase", customer, None, person=person,
                             click=click, after=after, amount=self.plan_price())
            else:
                at = self.when()
                click = self.click(self.injector, at, person)
                self.convert("click_injection", "purchase", customer, at + after,
                             person=person, click=click, amount=self.plan_price())

    def plan_click_spam(self) -> None:
        """Clicks fired on hundreds of phones; the few who buy, days later, are claimed."""
        r = self.rng
        # Far under the program's conversion rate (the engine looks for under a fifth of it),
        # and enough conversions for their delays to be compared with the program's.
        converting = max(8, self.size.spam_clicks // 60)
        every = self.size.spam_clicks // converting
        for i in range(self.size.spam_clicks):
            person = self.person(user_agent=self.browser(IPHONE))
            at = self.start + timedelta(days=r.uniform(0, 12))
            click = self.click(self.spammer, at, person)
            if i % every == 0:
                self.journey("click_spam", self.new_id(), person,
                             at + timedelta(days=r.uniform(2, 14)), click, buy=0.7)

    def plan_live_browsing(self) -> None:
        """People clicking links right now (none of them buys within the demo's minute)."""
        r = self.rng
        for _ in range(self.size.live_visitors):
            person = self.person()
            for _ in range(r.choice((1, 1, 2))):
                self.click(self.organic_referrer(), self.now, person, live=True)
        for _ in range(self.size.live_visitors // 4):
            self.click(self.spammer, self.now, self.person(user_agent=self.browser(IPHONE)),
                       live=True)


def probe_click(scenario: Scenario, seed: int) -> Click:
    """The demo's first live click, which asks whether the server believes X-Forwarded-For:
    a visitor of its own (its own random numbers, so the scenario's stay as they are)."""
    probe_rng = random.Random(seed + 1)  # noqa: S311 (an IP for a visitor)
    return Click(scenario.organic[0], scenario.now,
                 Person(f"{probe_rng.choice(HOME_NETWORKS)}.{probe_rng.randint(0, 255)}."
                        f"{probe_rng.randint(0, 255)}.{probe_rng.randint(2, 250)}",
                        BROWSERS[1].format(v=4), LANGUAGES[0]), live=True)
