"""`refguard demo`: a realistic referral program with planted fraud, through a running server.

Run `make run` (or `refguard serve`) in one terminal and `make demo` (`refguard demo`) in
another; the demo ends by printing the review page's URL and a finance token to log in with.

What it builds (deterministic for a given `--seed`):

- a program `demo` (or `demo-2`, ... when that slug is taken: every run is a fresh program)
  selling plans on `shop.example`: 20.00 USD to the referrer on a referee's first purchase,
  5.00 USD to the referee on signup, 10 % of renewals to the referrer; `hold_days` 0 so the
  rewards are decided now rather than after a 30-day refund window;
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

How it gets there, through the same code paths as production:

- Referrers, links and conversions go through the server's HTTP API (`POST /api/v1/...`);
  conversions are signed like a merchant's backend signs them (`X-Refguard-Signature`) and
  carry their real `occurred_at` in the past.
- Clicks: history cannot come through `GET /r/{code}`, which stamps every click with the time
  it is answered, so the 45 days of history are loaded the way a merchant migrating to refguard
  loads theirs: the NDJSON import (`tracker.intake.importer.import_clicks`, DESIGN section 6), which
  takes explicit times and client IPs and enriches them exactly as live clicks (the same
  `Enricher` with the server's secret, so fingerprints match). The last hour is live: visitors
  browsing right now, and (see below) the click injection, go through the real redirect,
  each with its own IP in `X-Forwarded-For`, and reach PostgreSQL through the server's journal
  and flusher. The server believes that header only from a trusted proxy
  (`REFGUARD_TRUSTED_PROXIES`), which `make run` does not configure; the demo cannot change the
  server's configuration, so its first live click is a probe. If the server recorded it under
  the forwarded IP, the click injection happens live as well (clicks through `/r/{code}`, then
  purchases seconds later); otherwise every live click is recorded from this machine's own
  address, so only visitors who never convert browse live (one IP shared by a few dozen
  converting customers would look like a ring, which is not what the demo means to plant) and
  the click injection is imported with the rest of the history.
- The demo writes to the server's database directly only where a user would run a `refguard`
  command: an admin token to drive the API (`refguard token create`), the click import
  (`refguard import`), clearance (`refguard rewards release`, which attributes, scans and
  decides) preceded by a full fraud scan (`refguard fraud scan`, as the server's fraud job does
  for a program it has not scanned in full within the hour), and the finance token it prints.
  While it loads, it holds the job locks (the advisory locks of the attribution, fraud-scan and
  clearance jobs), so the server's own jobs skip their rounds instead of clearing half a
  program: with `hold_days` 0 a reward is decided the moment a scan has seen it, and a ring
  seen before its last member arrives would go out approved. The server's jobs resume as soon
  as the demo is done. Before attributing and scanning it refreshes the planner's statistics of
  the tables it filled (ANALYZE, as after any bulk load): planned for a program with no rows,
  the scan's and clearance's joins turn quadratic (seconds instead of tenths here).

Exit status (as every `refguard` command): 0 success, 2 bad usage, 1 anything else (no server at
`--url`, a server on another database), with a one-line error.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO, TypeVar
from urllib.parse import parse_qs, urlsplit

import aiohttp
import asyncpg

from geo.reader import GeoReader
from tracker import db
from tracker.auth import create_token
from tracker.clicks.enrich import Enricher
from tracker.formats import rfc3339
from tracker.intake.importer import import_clicks
from tracker.settings import Settings
from tracker.signing import program_signing_secret, signature_header

DEFAULT_PROGRAM = "demo"
DOMAIN = "shop.example"
PATTERNS = ("self_referral", "ring", "camouflaged_ring", "click_farm", "click_injection",
            "click_spam")
ORGANIC = "organic"
T = TypeVar("T")
JOB_LOCKS = ("clearance", "attribution", "fraud_scan")  # the order the clearance job takes them
LOCK_WAIT = "120s"
CONCURRENCY = 16
FLUSH_WAIT_S = 30.0

PROGRAM_SETTINGS: dict[str, Any] = {
    "attribution_model": "last_touch",
    "attribution_window_days": 60,
    "hold_days": 0,
    "review_at": 0.5,
    "reject_at": 0.9,
    "reward": {"currency": "USD", "rules": [
        {"beneficiary": "referrer", "on": "purchase", "flat": 2000, "first_only": True},
        {"beneficiary": "referee", "on": "signup", "flat": 500},
        {"beneficiary": "referrer", "on": "renewal", "percent": 10, "months": 12}]},
}
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


class DemoError(Exception):
    """The demo cannot go on; the message is one line for the user (exit status 1)."""


def one_line(text: str, limit: int = 300) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


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


SMALL = DemoSize(referrers=20, visitors=600, spam_clicks=500, live_visitors=20,
                 self_referrers=4, injections=12, farm_bots=8, farm_accounts=9)


# -- the scenario: who clicks what, when, and who converts (pure data, no I/O) ---------------


@dataclass(slots=True)
class Account:
    """A referrer (an external id in the merchant's customer id space) and their link."""

    external_id: str
    pattern: str
    email: str
    code: str = ""  # the link code, once the API has made the link


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
        self.now = now
        self.size = size
        self.start = now - timedelta(days=size.days)
        self.history_end = now - timedelta(hours=1)
        self.accounts: list[Account] = []
        self.clicks: list[Click] = []
        self.conversions: list[Conversion] = []
        self.customers: dict[str, str] = {}  # customer id -> pattern
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

    # building blocks

    def new_id(self, prefix: str = "cus_") -> str:
        while True:
            value = f"{prefix}{self.rng.getrandbits(40):010x}"
            if value not in self._ids:
                self._ids.add(value)
                return value

    def account(self, pattern: str) -> Account:
        external_id = self.new_id()
        account = Account(external_id, pattern, self.email())
        self.accounts.append(account)
        return account

    def email(self) -> str:
        return f"{self.rng.choice(NAMES)}.{self.rng.randint(1, 99_999)}@mail.example"

    def home_ip(self) -> str:
        r = self.rng
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


# -- the result -----------------------------------------------------------------------------


@dataclass
class DemoResult:
    program: str
    url: str
    seconds: float
    live_ips: bool  # the server believed X-Forwarded-For: live clicks carry visitors' IPs
    referrers: int
    clicks: int
    live_clicks: int
    conversions: int
    statuses: dict[str, int]  # rewards of the program by status
    flagged: int  # all programs' flagged rewards: what the review page shows
    finance_token: str
    per_pattern: dict[str, Counter[str]]  # pattern -> reward statuses, "conversions", ...
    flags: dict[str, int]  # fraud flags of the program by kind
    labels: dict[str, str]  # event id -> pattern
    accounts: dict[str, str]  # referrer external id -> pattern
    customers: dict[str, str]  # customer id -> pattern
    examples: dict[str, list[str]] = field(default_factory=dict)  # pattern -> referrer ids


def print_report(result: DemoResult, out: TextIO) -> None:
    base = result.url
    statuses = ", ".join(f"{n:,} {s}" for s, n in sorted(
        result.statuses.items(), key=lambda kv: -kv[1])) or "none"
    how = ("live clicks carry each visitor's own IP: the server trusts this machine as a proxy"
           if result.live_ips else
           "live clicks are recorded from this machine's address; to forward each visitor's "
           "IP, serve with REFGUARD_TRUSTED_PROXIES=127.0.0.0/8")
    lines = [
        "",
        f"refguard demo: program {result.program!r} on {DOMAIN} with {result.referrers} "
        f"referrers, {result.clicks:,} clicks ({result.live_clicks} live through /r/{{code}}) "
        f"and {result.conversions:,} conversions, in {result.seconds:.1f} s",
        f"  ({how})",
        "",
        f"  rewards: {statuses}",
        "",
        "  planted fraud         conversions  no credit  approved  flagged  rejected  flags",
    ]
    for pattern in (*PATTERNS, ORGANIC):
        c = result.per_pattern.get(pattern, Counter())
        name = "organic (no fraud)" if pattern == ORGANIC else pattern
        lines.append(f"  {name:<20} {c['conversions']:>12,} {c['uncredited']:>10,} "
                     f"{c['approved']:>9,} {c['flagged']:>8,} {c['rejected']:>9,} "
                     f"{c['flags']:>6,}")
    lines.append("")
    for pattern in PATTERNS:
        ids = result.examples.get(pattern, [])
        if ids:
            lines.append(f"  {pattern} referrers: {', '.join(ids)}")
    lines += [
        "",
        f"  review page:   {base}/review   ({result.flagged:,} flagged reward(s) wait there, "
        f"{result.statuses.get('flagged', 0):,} of them from this program)",
        f"  finance token: {result.finance_token}   (shown once; log in with it)",
        f"  API reference: {base}/api/v1/openapi.json",
        f"  metrics:       {base}/metrics",
        f"  try:           curl -H 'Authorization: Bearer <finance token>' "
        f"'{base}/api/v1/rewards?program={result.program}&status=flagged'",
        "",
    ]
    out.write("\n".join(lines))
    out.flush()


# -- talking to the server ------------------------------------------------------------------


class Api:
    def __init__(self, session: aiohttp.ClientSession, url: str, token: str = "") -> None:
        self.session = session
        self.url = url
        self.token = token

    async def call(self, method: str, path: str, body: Any = None, *,
                   expect: tuple[int, ...] = (200, 201), token: str | None = None,
                   headers: dict[str, str] | None = None, raw: bytes | None = None
                   ) -> tuple[int, Any]:
        sent = dict(headers or {})
        bearer = self.token if token is None else token
        if bearer:
            sent["Authorization"] = f"Bearer {bearer}"
        data = raw
        if body is not None:
            data = json.dumps(body).encode()
        if data is not None:
            sent["Content-Type"] = "application/json"
        try:
            async with self.session.request(method, self.url + path, data=data,
                                            headers=sent) as resp:
                text = await resp.text()
                status = resp.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise DemoError(f"{method} {self.url}{path} failed: {one_line(str(exc))}") from None
        try:
            answer = json.loads(text) if text else None
        except ValueError:
            answer = text
        if status not in expect:
            error = answer.get("error") if isinstance(answer, dict) else None
            message = error.get("message") if isinstance(error, dict) else answer
            raise DemoError(f"{method} {path} answered {status}: {one_line(str(message))}")
        return status, answer


async def answers(url: str) -> bool:
    """Whether anything answers HTTP at `url` (a refguard server or not)."""
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as s, \
                s.get(url + "/healthz"):
            return True
    except (aiohttp.ClientError, TimeoutError):
        return False


async def check_server(url: str) -> None:
    """A refguard server answers at `url`, or DemoError with one line for the user."""
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as s, \
                s.get(url + "/healthz") as resp:
            body = await resp.json(content_type=None) if resp.status == 200 else None
    except (aiohttp.ClientError, TimeoutError, ValueError):
        raise DemoError(f"no refguard server answers at {url} (start one with `make run` or "
                        "`refguard serve`, or run `refguard demo` without --url)") from None
    if not isinstance(body, dict) or body.get("status") != "ok":
        raise DemoError(f"{url} does not answer like a refguard server (GET /healthz)")


async def _live_click(session: aiohttp.ClientSession, url: str, click: Click) -> None:
    """One click through GET /r/{code}, as the visitor's browser would send it."""
    headers = {"User-Agent": click.person.user_agent, "X-Forwarded-For": click.person.ip,
               "Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}
    if click.person.language:
        headers["Accept-Language"] = click.person.language
    if click.referer:
        headers["Referer"] = click.referer
    if click.person.visitor:
        headers["Cookie"] = f"rg_vid={click.person.visitor}"
    try:
        async with session.get(f"{url}/r/{click.account.code}", headers=headers,
                               allow_redirects=False) as resp:
            location = resp.headers.get("Location", "")
            cookie = resp.cookies.get("rg_vid")
            status = resp.status
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise DemoError(f"GET {url}/r/{click.account.code} failed: {one_line(str(exc))}"
                        ) from None
    if status != 302 or "rg_cid=" not in location:
        raise DemoError(f"GET /r/{click.account.code} answered {status}, not a redirect")
    click.click_id = parse_qs(urlsplit(location).query)["rg_cid"][0]
    click.at = click_time(click.click_id)
    if cookie is not None and not click.person.visitor:
        click.person.visitor = cookie.value


async def _wait_for_clicks(conn: asyncpg.Connection, program_id: int, click_ids: list[str]
                           ) -> None:
    deadline = time.monotonic() + FLUSH_WAIT_S
    while True:
        stored = await conn.fetchval(
            "SELECT count(*) FROM clicks WHERE program_id = $1 AND click_id = ANY($2::uuid[])",
            program_id, click_ids)
        if stored >= len(click_ids):
            return
        if time.monotonic() > deadline:
            raise DemoError(f"the server stored {stored} of {len(click_ids)} live clicks in "
                            f"{FLUSH_WAIT_S:.0f} s (is its flusher running?)")
        await asyncio.sleep(0.1)


async def _gather(items: Sequence[T], work: Callable[[T], Awaitable[None]]) -> None:
    """`work(item)` for every item, CONCURRENCY at a time; the first failure stops them all."""
    queue = list(reversed(items))

    async def worker() -> None:
        while queue:
            await work(queue.pop())

    tasks = [asyncio.create_task(worker()) for _ in range(min(CONCURRENCY, len(items)))]
    try:
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()


# -- the run --------------------------------------------------------------------------------


class _Steps:
    """One line per step on stderr, with how long it took."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.mark = time.monotonic()

    def done(self, text: str) -> None:
        now = time.monotonic()
        self.out.write(f"  {text} ({now - self.mark:.1f} s)\n")
        self.out.flush()
        self.mark = now


async def _free_slug(api: Api, wanted: str) -> str:
    for n in range(1, 1000):
        slug = wanted if n == 1 else f"{wanted[:58]}-{n}"
        status, _ = await api.call("GET", f"/api/v1/programs/{slug}", expect=(200, 404))
        if status == 404:
            return slug
    raise DemoError(f"programs {wanted!r} to {wanted!r}-999 all exist")


async def _lock_jobs(conn: asyncpg.Connection) -> None:
    """Hold the attribution, fraud-scan and clearance jobs' locks for this session."""
    await conn.execute(f"SET lock_timeout = '{LOCK_WAIT}'")
    try:
        for name in JOB_LOCKS:
            await conn.execute("SELECT pg_advisory_lock($1)", db.lock_key(name))
    except asyncpg.LockNotAvailableError:
        raise DemoError(f"the server's jobs held their locks for {LOCK_WAIT}; "
                        "try again in a minute") from None
    finally:
        await conn.execute("RESET lock_timeout")


async def _unlock_jobs(conn: asyncpg.Connection) -> None:
    for name in reversed(JOB_LOCKS):
        await conn.execute("SELECT pg_advisory_unlock($1)", db.lock_key(name))


async def run_demo(conn: asyncpg.Connection, settings: Settings, url: str, *,
                   program: str = DEFAULT_PROGRAM, seed: int = 7, size: DemoSize | None = None,
                   log: TextIO = sys.stderr) -> DemoResult:
    """Build the demo program on the server at `url`, whose database `conn` is. The admin
    token it drives the API with is revoked when it is done."""
    admin, admin_id = await create_token(conn, "admin", "refguard demo")
    try:
        return await _build(conn, settings, url, admin, program=program, seed=seed,
                            size=size or DemoSize(), log=log)
    finally:
        await conn.execute("UPDATE api_tokens SET revoked_at = now() WHERE id = $1", admin_id)


async def _build(conn: asyncpg.Connection, settings: Settings, url: str, admin: str, *,
                 program: str, seed: int, size: DemoSize, log: TextIO) -> DemoResult:
    # Here, not at the top: a missing server is reported before numpy and friends load.
    from tracker.finance.clearance import release
    from tracker.scoring.credits import attribute_pending
    from tracker.scoring.risk import scan

    url = url.rstrip("/")
    started = time.monotonic()
    steps = _Steps(log)
    timeout = aiohttp.ClientTimeout(total=60)
    connector = aiohttp.TCPConnector(limit=CONCURRENCY)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector,
                                     cookie_jar=aiohttp.DummyCookieJar()) as session:
        api = Api(session, url, admin)
        status, _ = await api.call("GET", "/api/v1/programs?limit=1", expect=(200, 401))
        if status == 401:
            raise DemoError(f"the server at {url} uses another database than this command "
                            "(give both the same REFGUARD_DATABASE_URL or REFGUARD_DATA_DIR)")
        slug = await _free_slug(api, program)
        log.write(f"refguard demo: building program {slug!r} on {url}\n")
        _, created = await api.call("POST", "/api/v1/programs", {
            "slug": slug, "name": "Demo shop", "destination_domains": [DOMAIN],
            "settings": PROGRAM_SETTINGS})
        program_id = await conn.fetchval("SELECT id FROM programs WHERE slug = $1", slug)
        if program_id is None:
            raise DemoError(f"the server at {url} uses another database than this command")
        secret = str(created["signing_secret"])
        if secret != program_signing_secret(settings.secret_key, slug):
            log.write("  note: this command's secret key differs from the server's "
                      "(REFGUARD_SECRET_KEY): imported clicks get other device fingerprints\n")

        scenario = Scenario(seed, datetime.now(UTC), size)

        async def make_referrer(account: Account) -> None:
            await api.call("POST", "/api/v1/referrers", {
                "program": slug, "external_id": account.external_id, "email": account.email})
            _, link = await api.call("POST", "/api/v1/links", {
                "program": slug, "referrer": account.external_id,
                "destination": f"https://{DOMAIN}/welcome?plan=starter"})
            account.code = str(link["code"])

        await _gather(scenario.accounts, make_referrer)
        steps.done(f"program {slug} with {len(scenario.accounts)} referrers and their links")

        # The probe: does the server believe X-Forwarded-For from this machine?
        probe_rng = random.Random(seed + 1)  # noqa: S311 (an IP for a visitor)
        probe = Click(scenario.organic[0], scenario.now,
                      Person(f"{probe_rng.choice(HOME_NETWORKS)}.{probe_rng.randint(0, 255)}."
                             f"{probe_rng.randint(0, 255)}.{probe_rng.randint(2, 250)}",
                             BROWSERS[1].format(v=4), LANGUAGES[0]), live=True)
        await _live_click(session, url, probe)
        await _wait_for_clicks(conn, program_id, [probe.click_id])
        recorded = await conn.fetchval(
            "SELECT host(ip) FROM clicks WHERE program_id = $1 AND click_id = $2::uuid",
            program_id, probe.click_id)
        live_ips = recorded == probe.person.ip
        scenario.plan(live_injection=live_ips)

        # From here until clearance, the server's attribution, scan and clearance jobs wait.
        await _lock_jobs(conn)
        try:
            imported = [c for c in scenario.clicks if not c.live]
            await _import(conn, settings, imported)
            steps.done(f"{len(imported):,} clicks of the last {size.days} days imported "
                       "(refguard import)")
            live = [c for c in scenario.clicks if c.live]
            # A person's clicks one after the other (the cookie of the first names the rest).
            by_person: dict[int, list[Click]] = defaultdict(list)
            for c in live:
                by_person[id(c.person)].append(c)

            async def browse(clicks: list[Click]) -> None:
                for c in clicks:
                    await _live_click(session, url, c)

            await _gather(list(by_person.values()), browse)
            await _wait_for_clicks(conn, program_id, [c.click_id for c in live])
            steps.done(f"{len(live) + 1:,} live clicks through GET /r/{{code}}, stored by the "
                       "server's flusher")

            async def post(conv: Conversion) -> None:
                raw = json.dumps(conv.body(slug), separators=(",", ":")).encode()
                await api.call("POST", "/api/v1/conversions", raw=raw, token="",
                               headers={"X-Refguard-Signature": signature_header(
                                   secret, raw, int(time.time()))}, expect=(201,))

            # The history first; then the live purchases, once the seconds between their
            # click and their purchase have passed (a conversion may not come from the future).
            history = [c for c in scenario.conversions if c.at is not None]
            now_ones = [c for c in scenario.conversions if c.at is None]
            await _gather(history, post)
            if now_ones:
                latest = max(c.occurred_at() for c in now_ones)
                await asyncio.sleep(max(0.0, (latest - datetime.now(UTC)).total_seconds()) + 0.05)
                await _gather(now_ones, post)
            steps.done(f"{len(scenario.conversions):,} conversions posted, signed like a "
                       "merchant's backend")

            # Fresh statistics after a bulk load (as after any restore or import): planned with
            # the empty program's, the scan's and clearance's joins take seconds, not tenths.
            await conn.execute("ANALYZE clicks, conversions")
            attributed = await attribute_pending(conn, program_id)
            steps.done(f"{attributed:,} conversions attributed (refguard attribution run)")
            await conn.execute("ANALYZE customer_visitors, touchpoints, credits")
            scanned = (await scan(conn, slug))[0]
            await conn.execute("ANALYZE conversion_risk, fraud_flags")
            rings = ", ".join(f"{n} {kind.replace('_', ' ')}" for kind, n in
                              sorted(scanned.rings.items())) or "no rings"
            steps.done(f"full fraud scan: {scanned.flagged_conversions:,} conversions at risk, "
                       f"{rings} (refguard fraud scan)")
            cleared = await release(conn, slug)
            decided = ", ".join(f"{n:,} {status}" for status, n in
                                sorted(cleared.decided.items()))
            steps.done(f"clearance: {decided} (refguard rewards release)")
        finally:
            await _unlock_jobs(conn)

        finance, _ = await create_token(conn, "finance", f"demo {slug}")
        # The token works where finance will use it.
        await api.call("GET", f"/api/v1/rewards?program={slug}&status=flagged&limit=1",
                       token=finance, expect=(200,))
        result = await _summarise(conn, scenario, slug, program_id)
    return DemoResult(
        program=slug, url=url, seconds=time.monotonic() - started, live_ips=live_ips,
        referrers=len(scenario.accounts), clicks=len(scenario.clicks) + 1,
        live_clicks=sum(c.live for c in scenario.clicks) + 1,
        conversions=len(scenario.conversions), finance_token=finance, **result)


async def _import(conn: asyncpg.Connection, settings: Settings, clicks: list[Click]) -> None:
    """The history's clicks through the importer, as `refguard import --clicks` loads them."""
    geo = GeoReader(settings.geoip_dir)
    enricher = Enricher(settings.secret_key, settings.trusted_proxies, geo=geo)
    try:
        with tempfile.TemporaryDirectory(prefix="refguard-demo-") as folder:
            path = Path(folder) / "clicks.ndjson"
            with path.open("w", encoding="utf-8") as fh:
                for c in sorted(clicks, key=lambda c: c.at):
                    line: dict[str, str] = {
                        "ts": rfc3339(c.at), "code": c.account.code, "ip": c.person.ip,
                        "user_agent": c.person.user_agent, "visitor_id": c.person.visitor,
                        "click_id": c.click_id}
                    if c.person.language:
                        line["accept_language"] = c.person.language
                    if c.referer:
                        line["referer"] = c.referer
                    fh.write(json.dumps(line) + "\n")
            result = await import_clicks(conn, path, enricher)
    finally:
        geo.close()
    if result.bad:
        raise DemoError(f"the click import refused a line: {result.bad[0]}")


async def _summarise(conn: asyncpg.Connection, scenario: Scenario, slug: str,
                     program_id: int) -> dict[str, Any]:
    labels = {c.event_id: c.pattern for c in scenario.conversions}
    accounts = {a.external_id: a.pattern for a in scenario.accounts}
    statuses: Counter[str] = Counter()
    per_pattern: dict[str, Counter[str]] = defaultdict(Counter)
    for conv in scenario.conversions:
        per_pattern[conv.pattern]["conversions"] += 1
    for r in await conn.fetch(
            """SELECT c.event_id, r.status FROM rewards r
               JOIN conversions c ON c.program_id = r.program_id AND c.id = r.conversion_id
               WHERE r.program_id = $1""", program_id):
        statuses[r["status"]] += 1
        per_pattern[labels.get(r["event_id"], ORGANIC)][r["status"]] += 1
    for r in await conn.fetch(
            """SELECT c.event_id FROM conversions c
               WHERE c.program_id = $1 AND c.type IN ('signup', 'trial', 'purchase', 'renewal')
                 AND NOT EXISTS (SELECT 1 FROM credits cr WHERE cr.program_id = c.program_id
                                 AND cr.conversion_id = c.id)""", program_id):
        per_pattern[labels.get(r["event_id"], ORGANIC)]["uncredited"] += 1
    flags: Counter[str] = Counter()
    for r in await conn.fetch("SELECT kind, members::text AS members FROM fraud_flags "
                              "WHERE program_id = $1", program_id):
        flags[r["kind"]] += 1
        people = [m["id"] for m in json.loads(r["members"])
                  if m["type"] in ("referrer", "customer")]
        for pattern in {p for i in people
                        if (p := accounts.get(i) or scenario.customers.get(i)) is not None}:
            per_pattern[pattern]["flags"] += 1
    flagged = await conn.fetchval("SELECT count(*) FROM rewards WHERE status = 'flagged'")
    examples = {p: [a.external_id for a in scenario.accounts if a.pattern == p][:6]
                for p in PATTERNS}
    return {"statuses": dict(statuses), "flagged": flagged, "per_pattern": dict(per_pattern),
            "flags": dict(flags), "labels": labels, "accounts": accounts,
            "customers": dict(scenario.customers), "examples": examples}


async def demo(settings: Settings, url: str, *, program: str = DEFAULT_PROGRAM, seed: int = 7,
               size: DemoSize | None = None, log: TextIO = sys.stderr) -> DemoResult:
    """`refguard demo`: check the server, open its database, build the program."""
    url = url.rstrip("/")
    await check_server(url)
    dsn = settings.database_url or db.database_url(settings)
    try:
        conn = await db.connect(dsn)
    except (OSError, asyncpg.PostgresError) as exc:
        raise DemoError(f"cannot open the database: {exc}") from None
    try:
        await db.migrate(conn)
        return await run_demo(conn, settings, url, program=program, seed=seed, size=size,
                              log=log)
    finally:
        await conn.close()
