"""A referrer's conversion rate and its bursts count people, not conversion events (issue 13:
a club whose friends both sign up and buy read as "25 of 21 clicks converted" and as a day of
twice its arrivals). Hand-built programs at several draws: honest referrers whose customers
mostly convert once (a purchase, no credited sign-up), against a club whose friends each sign
up and buy through the link, and against a farm whose accounts convert far above the program
however they are counted."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest

from fraud.signals import (
    DAY,
    ClickFacts,
    ConversionFacts,
    ProgramContext,
    _tally,
    conversion_crowds,
    converted_customers,
    gathered_customers,
    own_gatherings,
    referrer_findings,
)


class Program:
    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.conversions: list[ConversionFacts] = []
        self.clicks: dict[str, int] = {}

    def customer(self, ref: str, clicked: float, *, signs_up: bool) -> str:
        """One visitor's click on `ref`'s link and purchase (hours later); `signs_up`: a
        sign-up through the link minutes after the click, too."""
        name = f"c{len(self.conversions)}"
        self.clicks[ref] = self.clicks.get(ref, 0) + 1
        ip = f"81.{self.rng.randrange(256)}.{self.rng.randrange(256)}.{self.rng.randrange(256)}"
        touch = ClickFacts(f"k-{name}", clicked, ref, f"v-{name}", ip, f"d-{name}")
        if signs_up:
            self.add(name, clicked + self.rng.uniform(60, 600), ref, touch, 0)
        self.add(name, clicked + self.rng.uniform(1800, 6 * 3600), ref, touch,
                 self.rng.choice((1900, 2900, 4900)))
        return name

    def add(self, name: str, at: float, ref: str, touch: ClickFacts, amount: int) -> None:
        self.conversions.append(ConversionFacts(len(self.conversions), name, at, (ref,),
                                                touches=(touch,), amount=amount))

    def honest(self, referrers: int) -> None:
        """Referrers whose links many visit and a fifth of them buy, over two months."""
        for r in range(referrers):
            ref = f"r{r}"
            for _ in range(self.rng.randint(4, 6)):
                self.customer(ref, self.rng.uniform(2 * DAY, 58 * DAY),
                              signs_up=self.rng.random() < 0.1)
            self.clicks[ref] += self.rng.randint(16, 24)

    def context(self) -> ProgramContext:
        return ProgramContext(referrer_clicks=self.clicks)


def _codes(program: Program) -> dict[str, set[str]]:
    found = referrer_findings(program.conversions, program.context())
    return {ref: {f.reason.code for f in fs} for ref, fs in found.items()}


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_club_whose_friends_sign_up_and_buy_converts_like_the_program(seed: int) -> None:
    """A fifth of the club's clicks bring a customer, as the program's do; each friend signs
    up and buys through the link (two conversion events a customer, where the program's
    customers mostly have one): counted in events it converted at twice the program's rate
    and more; counted in customers, at the program's."""
    program = Program(seed)
    rng = program.rng
    program.honest(40)
    friends = [program.customer("club", rng.uniform(5 * DAY, 55 * DAY), signs_up=True)
               for _ in range(rng.randint(10, 14))]
    program.clicks["club"] += 3 * len(friends) + rng.randint(0, 4)
    converted, rate = converted_customers(_tally(program.conversions, frozenset()),
                                          program.context())
    assert converted["club"] == len(friends)
    assert rate is not None and 0.15 < rate < 0.25
    assert "conversion_rate" not in _codes(program).get("club", set())


@pytest.mark.parametrize("seed", [4, 5, 6])
def test_a_farm_still_converts_too_well_counted_in_customers(seed: int) -> None:
    """Accounts made to buy: nearly every click of the farm brings a customer, far above the
    program's fifth, however they are counted."""
    program = Program(seed)
    rng = program.rng
    program.honest(40)
    for _ in range(rng.randint(14, 20)):
        program.customer("farm", rng.uniform(5 * DAY, 55 * DAY), signs_up=rng.random() < 0.5)
    program.clicks["farm"] += rng.randint(0, 3)
    assert "conversion_rate" in _codes(program)["farm"]


@pytest.mark.parametrize("seed", [7, 8, 9])
def test_a_club_event_day_is_counted_in_arrivals(seed: int) -> None:
    """Four friends come on the club's event day and each signs up and buys: eight conversion
    events in a day, four arrivals, fewer than a burst needs (VELOCITY_MIN). Eight workers
    paid to sign up that day are a burst, and their purchases after it carry it."""
    program = Program(seed)
    rng = program.rng
    program.honest(40)
    for ref, people in (("club", 4), ("board", 8)):
        for _ in range(rng.randint(2, 3)):
            program.customer(ref, rng.uniform(5 * DAY, 25 * DAY), signs_up=False)
        day = rng.uniform(30 * DAY, 50 * DAY)
        for _ in range(people):
            program.customer(ref, day + rng.uniform(0, 4 * 3600), signs_up=True)
        program.clicks[ref] += 4 * people
    found = referrer_findings(program.conversions, program.context())
    assert "velocity" not in {f.reason.code for f in found.get("club", [])}
    (velocity,) = [f for f in found["board"] if f.reason.code == "velocity"]
    burst = [c for c in program.conversions if c.referrers == ("board",)
             and c.at - c.touches[0].at < DAY and c.touches[0].at > 30 * DAY]
    assert len(burst) == 16 and all(velocity.carries(c) for c in burst)


def test_an_incremental_scan_counts_customers_from_its_context() -> None:
    """An incremental scan sees a window: each referrer's converting customers and the
    program's rate come from the database and the latest full scan; an older full scan that
    stored no customer rate leaves both counted in events, as before."""
    program = Program(10)
    program.customer("a", 10 * DAY, signs_up=True)
    tally = _tally(program.conversions, frozenset())
    window = ProgramContext(referrer_clicks={"a": 40}, program_rate=0.3, customer_rate=0.2,
                            referrer_customers={"a": 9})
    assert converted_customers(tally, window) == ({"a": 9}, 0.2)
    older = ProgramContext(referrer_clicks={"a": 40}, program_rate=0.3,
                           history={"a": (17, 0.0)})
    assert converted_customers(tally, older) == ({"a": 17}, 0.3)


PHONES = [f"Mozilla/5.0 (Linux; Android {a}; M{m}) Chrome/13{v}.0 Mobile"
          for a in (13, 14, 15) for m in range(4) for v in range(3)]


class Crowd(Program):
    """A Program whose visitors carry a phone (an exact User-Agent, popular ones more often)
    and an address, as the conversion_crowds test needs them."""

    def visit(self, ref: str, clicked: float, ip: str, *, anonymous: bool = False) -> None:
        name = f"c{len(self.conversions)}"
        agent = self.rng.choices(PHONES, [1 / (i + 1) for i in range(len(PHONES))])[0]
        self.clicks[ref] = self.clicks.get(ref, 0) + 1
        touch = ClickFacts(f"k-{name}", clicked, ref, f"v-{name}", ip, f"d-{name}",
                           agent=agent, anonymous=anonymous)
        for at, amount in ((clicked + self.rng.uniform(60, 600), 0),
                           (clicked + self.rng.uniform(1800, 4 * 3600), 2900)):
            self.conversions.append(ConversionFacts(
                len(self.conversions), name, at, (ref,), touches=(touch,), amount=amount,
                ips=frozenset({ip}), agents=frozenset({(agent, ip)})))

    def homes(self, referrers: int) -> None:
        """Referrers whose few customers each click and buy from a home of their own, over
        two months, among more clicks that bring nobody."""
        for r in range(referrers):
            for _ in range(self.rng.randint(3, 5)):
                self.visit(f"r{r}", self.rng.uniform(2 * DAY, 58 * DAY), self.home())
            self.clicks[f"r{r}"] += self.rng.randint(10, 20)

    def home(self) -> str:
        return f"81.{self.rng.randrange(256)}.{self.rng.randrange(256)}.{self.rng.randrange(256)}"

    def addresses(self, network: str, most: int) -> list[str]:
        """One to `most` addresses in `network` (the first byte): a campus's NAT, VPN exits."""
        rng = self.rng
        return [f"{network}.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 250)}"
                for _ in range(rng.randint(1, most))]

    def regulars(self, ref: str) -> None:
        """Two or three customers of the referrer, each from a home, weeks before its day."""
        for _ in range(self.rng.randint(2, 3)):
            self.visit(ref, self.rng.uniform(3 * DAY, 25 * DAY), self.home())


def _event_day(seed: int) -> tuple[Crowd, float]:
    """A program of 60 referrers with customers at home, and the day of the test's event."""
    program = Crowd(seed)
    program.homes(60)
    return program, program.rng.uniform(30 * DAY, 50 * DAY)


@pytest.mark.parametrize("seed", [11, 12, 13])
def test_a_club_gathered_behind_campus_addresses_is_no_burst(seed: int) -> None:
    """A club's event: 20-40 students click and buy within hours behind one to three campus
    NAT addresses, each on a phone of their own: an audience gathered in one place, not paid
    traffic; velocity leaves them out. Workers paid to sign up the same way, each from a home
    address, are a burst; so are workers on a mobile carrier's pool of addresses, a few of
    them by chance on the same one."""
    program, day = _event_day(seed)
    rng = program.rng
    campus = program.addresses("128", 3)
    pool = f"166.{rng.randrange(256)}.{rng.randrange(256)}"
    for ref, n, where in (("club", rng.randint(20, 40), lambda: rng.choice(campus)),
                          ("board", rng.randint(12, 20), program.home),
                          ("carrier", rng.randint(12, 20),
                           lambda: f"{pool}.{rng.randrange(1, 61)}")):
        program.regulars(ref)
        for _ in range(n):
            program.visit(ref, day + rng.uniform(0, 5 * 3600), where())
        program.clicks[ref] += n
    assert gathered_customers(program.conversions, {"club"})["club"]
    assert not gathered_customers(program.conversions, {"carrier"}).get("carrier")
    codes = _codes(program)
    assert "velocity" not in codes.get("club", set())
    assert "velocity" in codes["board"] and "velocity" in codes["carrier"]


@pytest.mark.parametrize("seed", [31, 32, 33])
def test_a_clubs_members_at_home_on_its_event_night_are_no_burst(seed: int) -> None:
    """A club's event: 12-20 students click behind the campus's addresses, and that night
    8-12 more of its members (as many as a burst) sign up from homes and phones of their own:
    the gathering's day, not a paid campaign. A campaign of 12-20 paid sign-ups from homes
    with 4 of them by chance behind one carrier address stays a burst."""
    program, day = _event_day(seed)
    rng = program.rng
    campus = program.addresses("128", 2)
    carrier = f"166.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 250)}"
    for ref in ("club", "board"):
        program.regulars(ref)
    for _ in range(rng.randint(12, 20)):
        program.visit("club", day + rng.uniform(0, 3 * 3600), rng.choice(campus))
    for _ in range(rng.randint(8, 12)):
        program.visit("club", day + rng.uniform(3 * 3600, 10 * 3600), program.home())
    for _ in range(4):
        program.visit("board", day + rng.uniform(0, 10 * 3600), carrier)
    for _ in range(rng.randint(12, 20)):
        program.visit("board", day + rng.uniform(0, 10 * 3600), program.home())
    for ref in ("club", "board"):
        program.clicks[ref] += 20
    # Other people behind the carrier's address, on other links: it behaves like a NAT.
    for r in range(8):
        program.visit(f"r{r}", rng.uniform(2 * DAY, 58 * DAY), carrier)
    assert gathered_customers(program.conversions, {"club"})["club"]
    assert gathered_customers(program.conversions, {"board"})["board"]
    codes = _codes(program)
    assert "velocity" not in codes.get("club", set())
    assert "velocity" in codes["board"]


@pytest.mark.parametrize("seed", [21, 22, 23])
def test_a_burst_through_a_vpn_exit_is_no_gathering(seed: int) -> None:
    """A taken-over referrer's link pushed to 12-20 new accounts within hours through one or
    two VPN exits, each on a phone of its own: the address behaves like a NAT, as a campus's
    does, but nobody gathers behind a VPN: the burst stays a burst. The same accounts behind
    a campus's addresses would be a club's event."""
    program, day = _event_day(seed)
    rng = program.rng
    exits = program.addresses("185", 2)
    program.regulars("victim")
    for _ in range(rng.randint(12, 20)):
        program.visit("victim", day + rng.uniform(0, 5 * 3600), rng.choice(exits),
                      anonymous=True)
    program.clicks["victim"] += 20
    assert not gathered_customers(program.conversions, {"victim"}).get("victim")
    assert "velocity" in _codes(program)["victim"]


class Quick(Crowd):
    """A Crowd whose `fast` visitors sign up within two minutes of the click and buy within
    a quarter of an hour: a club's members told together, or an injector's victims."""

    def fast(self, ref: str, clicked: float, ip: str) -> None:
        self.visit(ref, clicked, ip)
        sign_up, purchase = self.conversions[-2], self.conversions[-1]
        self.conversions[-2] = replace(sign_up, at=clicked + self.rng.uniform(20, 120))
        self.conversions[-1] = replace(purchase, at=clicked + self.rng.uniform(120, 900))


@pytest.mark.parametrize("seed", [41, 42, 43])
def test_a_clubs_own_crowd_that_buys_fast_is_no_injection(seed: int) -> None:
    """A club's 25-45 members click its link behind one to three campus NAT addresses, each
    on a phone of its own, and buy within minutes (they were told together): the crowd is
    the club's own (nobody else's customers there), so its fast purchases are left out of
    delay_distribution. An injector's as many fast conversions from homes of their own stay
    delay_distribution; so do an injector's behind a carrier's address that the program's
    other customers share (a NAT, but not its own crowd)."""
    program = Quick(seed)
    program.homes(60)
    rng = program.rng
    campus = program.addresses("128", 3)
    carrier = f"166.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 250)}"
    for r in range(60):  # the carrier's other subscribers: the program's other customers
        program.visit(f"r{r}", rng.uniform(2 * DAY, 58 * DAY), carrier)
    n = rng.randint(25, 45)
    for ref, where in (("club", lambda: rng.choice(campus)), ("injector", program.home),
                       ("mobile", lambda: carrier)):
        program.regulars(ref)
        for _ in range(n):
            program.fast(ref, rng.uniform(2 * DAY, 58 * DAY), where())
        program.clicks[ref] += 2 * n
    assert own_gatherings(program.conversions)["club"]
    assert "mobile" not in own_gatherings(program.conversions)
    codes = _codes(program)
    assert "delay_distribution" not in codes.get("club", set())
    assert "delay_distribution" in codes["injector"]
    assert "delay_distribution" in codes["mobile"]


@pytest.mark.parametrize("seed", [44, 45, 46])
def test_a_farms_few_phones_in_a_crowded_network_are_no_gathering(seed: int) -> None:
    """A device farm: 25-45 accounts on three phones behind its own home address, in a
    residential network where 20 other customers click from homes of their own (the network
    is crowded as a whole), converting within minutes: the crowd is the farm's own, but it is
    not people on phones of their own, so it stays delay_distribution."""
    program = Quick(seed)
    program.homes(60)
    rng = program.rng
    net = f"90.{rng.randrange(256)}.{rng.randrange(256)}"
    for r in range(20):
        program.visit(f"r{r}", rng.uniform(2 * DAY, 58 * DAY), f"{net}.{r + 1}")
    phones = PHONES[:3]
    program.regulars("farm")
    for _ in range(rng.randint(25, 45)):
        program.fast("farm", rng.uniform(2 * DAY, 58 * DAY), f"{net}.200")
        phone = rng.choice(phones)
        for i in (-2, -1):
            conv = program.conversions[i]
            touch = replace(conv.touches[0], agent=phone)
            program.conversions[i] = replace(conv, touches=(touch,),
                                             agents=frozenset({(phone, touch.ip)}))
    program.clicks["farm"] += 40
    assert "farm" not in own_gatherings(program.conversions)
    assert "delay_distribution" in _codes(program)["farm"]


@pytest.mark.parametrize("seed", [41, 42])
def test_crowds_and_gatherings_passed_down_are_the_same_as_computed(seed: int) -> None:
    """A full scan computes the conversion crowds and every referrer's gathered customers
    once and passes them down: the findings are the same as each test computing its own."""
    program = Quick(seed)
    program.homes(60)
    rng = program.rng
    campus = program.addresses("128", 3)
    for ref, where in (("club", lambda: rng.choice(campus)), ("injector", program.home)):
        program.regulars(ref)
        for _ in range(30):
            program.fast(ref, rng.uniform(2 * DAY, 58 * DAY), where())
        program.clicks[ref] += 60
    conversions = program.conversions
    crowds = conversion_crowds(conversions)
    everyone = {ref for conv in conversions for ref in conv.referrers}
    gathered = gathered_customers(conversions, everyone, crowds)
    assert gathered == gathered_customers(conversions, everyone)
    assert {ref: gathered[ref] for ref in ("club",)} == gathered_customers(conversions, {"club"})
    assert own_gatherings(conversions, gathered) == own_gatherings(conversions)
    context = program.context()
    assert ({ref: [f.reason for f in fs]
             for ref, fs in referrer_findings(conversions, context, crowds=crowds).items()}
            == {ref: [f.reason for f in fs]
                for ref, fs in referrer_findings(conversions, context).items()})
