"""A referrer's link taken over and pushed through anonymising addresses abroad (issue 13,
account takeover): a burst of its new customers through VPN exits or data centres, where its
own customers came through ordinary networks at home, is evidence against those conversions
however small the burst (`anonymised_burst`); a referrer whose audience is always on VPNs, a
VPN user or a traveller now and then, and colleagues behind their office's VPN at home are
not. Hand-built programs at several draws; the decision stays a flag (one family)."""

from __future__ import annotations

import random

import pytest

from fraud.assess import DECISIVE, FLAG_CAP, assess_all, decision_reason
from fraud.signals import (
    DAY,
    Arrival,
    ClickFacts,
    ConversionFacts,
    ProgramContext,
    departing_burst,
    referrer_findings,
)

HOME = "CA"


class Program:
    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.conversions: list[ConversionFacts] = []

    def customer(self, ref: str, clicked: float, *, country: str = HOME,
                 anonymous: bool = False, ip: str | None = None) -> str:
        """One visitor's click on `ref`'s link, a sign-up minutes later and a purchase hours
        later, from `country`, through an anonymising address where `anonymous`."""
        name = f"c{len(self.conversions)}"
        rng = self.rng
        ip = ip or f"81.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(256)}"
        touch = ClickFacts(f"k-{name}", clicked, ref, f"v-{name}", ip, f"d-{name}",
                           anonymous=anonymous, country=country)
        for at, amount in ((clicked + rng.uniform(60, 600), 0),
                           (clicked + rng.uniform(1800, 6 * 3600), rng.choice((1900, 4900)))):
            self.conversions.append(ConversionFacts(len(self.conversions), name, at, (ref,),
                                                    touches=(touch,), amount=amount))
        return name

    def honest(self, referrers: int) -> None:
        """Referrers whose friends buy over two months from home networks, one in twenty
        of them on a VPN abroad."""
        for r in range(referrers):
            for _ in range(self.rng.randint(3, 6)):
                vpn = self.rng.random() < 0.05
                self.customer(f"r{r}", self.rng.uniform(2 * DAY, 58 * DAY),
                              country="NL" if vpn else HOME, anonymous=vpn)

    def history(self, ref: str, n: int, *, anonymous: float = 0.0) -> None:
        """A referrer's own audience over two months: home networks, or VPNs abroad for a
        share `anonymous` of them."""
        for _ in range(n):
            vpn = self.rng.random() < anonymous
            self.customer(ref, self.rng.uniform(2 * DAY, 58 * DAY),
                          country=self.rng.choice(("NL", "SE", "CH")) if vpn else HOME,
                          anonymous=vpn)

    def burst(self, ref: str, n: int, *, country: str = "GB") -> list[str]:
        """`n` new customers within a day through one VPN provider's exits in `country`."""
        start = self.rng.uniform(30 * DAY, 40 * DAY)
        return [self.customer(ref, start + self.rng.uniform(0, 0.8 * DAY), country=country,
                              anonymous=True, ip=f"91.91.3.{self.rng.randrange(1, 255)}")
                for _ in range(n)]


def arrivals(program: Program, ref: str) -> list[Arrival]:
    first: dict[str, ConversionFacts] = {}
    for c in program.conversions:
        if ref in c.referrers and c.customer not in first:
            first[c.customer] = c
    return [Arrival(c.customer, c.at, c.touches[-1].anonymous,
                    frozenset({c.touches[-1].country or ""})) for c in first.values()]


@pytest.mark.parametrize("seed", range(4))
def test_a_burst_through_anonymising_addresses_abroad_departs_from_the_referrers_history(
        seed: int) -> None:
    program = Program(seed)
    program.honest(60)
    program.history("victim", program.rng.randint(2, 6))
    stolen = set(program.burst("victim", program.rng.randint(4, 8)))
    program.history("privacy", 12, anonymous=0.8)  # its audience is on VPNs anyway
    program.burst("privacy", 5, country="SE")
    program.history("office", 5)
    program.burst("office", 5, country=HOME)  # colleagues behind their office's VPN at home
    program.history("traveller", 6)
    program.customer("traveller", 20 * DAY, country="US", anonymous=True)
    program.customer("traveller", 45 * DAY, country="DE", anonymous=True)

    found = {ref: [f for f in fs if f.reason.code == "anonymised_burst"]
             for ref, fs in referrer_findings(program.conversions, ProgramContext()).items()}
    assert [ref for ref, fs in found.items() if fs] == ["victim"]
    finding = found["victim"][0]
    assert "GB" in finding.reason.message and HOME in finding.reason.message
    assert finding.reason.family == "population"
    carried = {c.customer for c in program.conversions
               if "victim" in c.referrers and finding.carries(c)}
    assert carried == stolen  # its own audience, before and after, is not held for it


@pytest.mark.parametrize("seed", range(3))
def test_the_stolen_links_conversions_are_flagged_not_rejected(seed: int) -> None:
    """The burst's conversions are held on the population family (with the click family's
    `anonymous_ip`, not decisive alone): a flag for finance, never a rejection; the
    referrer's own audience stays paid."""
    program = Program(seed)
    program.honest(60)
    program.history("victim", 5)
    stolen = set(program.burst("victim", 5))
    scored = {s.assessment.conversion_id: s.assessment for s in
              assess_all(program.conversions, {}, ProgramContext())}
    for conv in program.conversions:
        if "victim" not in conv.referrers:
            continue
        assessment = scored[conv.conversion_id]
        if conv.customer in stolen:
            assert DECISIVE <= assessment.score <= FLAG_CAP
            assert "one family only" in decision_reason(assessment.reasons,
                                                        assessment.score).message
        else:
            assert assessment.score < DECISIVE


def test_no_departure_without_an_earlier_audience_at_home_nor_for_a_few() -> None:
    base = 10 * DAY
    home = [Arrival(f"h{i}", base + i * 5 * DAY, False, frozenset({HOME})) for i in range(4)]
    burst = [Arrival(f"b{i}", base + 30 * DAY + i * 3600, True, frozenset({"GB"}))
             for i in range(5)]
    found = departing_burst(home + burst)
    assert found is not None and found.departing == {a.customer for a in burst}
    assert found.p_value < 1e-3 and found.home == {HOME} and found.abroad == {"GB"}
    # the same burst before any customer came from home departs from those who came after
    early = [Arrival(a.customer, a.at - 31 * DAY, True, a.countries) for a in burst]
    before = departing_burst(early + home)
    assert before is not None and before.home == {HOME} and len(before.departing) == 5
    # a referrer none of whose customers came through an ordinary network: nothing to depart
    # from (all its audience on VPNs)
    assert departing_burst(early) is None
    # two through a VPN abroad are a VPN user and a friend, not a burst
    assert departing_burst(home + burst[:2]) is None
    # a burst spread over two days, each within a day of the one before, is one burst
    spread = [Arrival(a.customer, a.at + i * 0.6 * DAY, True, a.countries)
              for i, a in enumerate(burst)]
    stretched = departing_burst(home + spread)
    assert stretched is not None and len(stretched.departing) == 5


def test_an_influencers_post_brings_the_programs_vpn_users_with_its_crowd() -> None:
    """A popular referrer's post: a day of its people, among them a few of the program's VPN
    users abroad close together; counted with the day's crowd around them they are chance,
    while a taken-over link's burst through VPNs abroad still departs."""
    base = 10 * DAY
    home = [Arrival(f"h{i}", base + i * DAY, False, frozenset({HOME})) for i in range(40)]
    crowd = [Arrival(f"c{i}", base + 45 * DAY + i * 900, False, frozenset({HOME}))
             for i in range(60)]  # the post's day
    vpn = [Arrival(f"v{i}", base + 45 * DAY + 8 * 3600 + i * 1800, True, frozenset({"DE"}))
           for i in range(4)]  # four of them through a VPN abroad, within two hours
    found = departing_burst(home + crowd + vpn)
    assert found is not None and found.p_value > 0.05
    stolen = [Arrival(f"s{i}", base + 50 * DAY + i * 600, True, frozenset({"DE"}))
              for i in range(6)]
    taken = departing_burst(home + stolen)
    assert taken is not None and taken.p_value < 1e-3


@pytest.mark.parametrize("seed", range(4))
def test_a_run_of_vpn_users_is_judged_among_every_referrer_that_could_show_one(
        seed: int) -> None:
    """A post that brings a referrer's first crowd of its people, three of the program's VPN
    users abroad among them: p about 0.005 against the referrer's own history. Among a
    program's dozens of referrers with audiences large enough to show a departure, such a run
    comes by chance; corrected only among the referrers that had a run (the one), it would
    hold the post's people on population evidence. A taken-over link's burst still departs."""
    program = Program(seed)
    for r in range(40):
        program.history(f"p{r}", 12)
    start = 5 * DAY
    for i in range(8):  # the post: eight of its people within two hours, three through VPNs
        vpn = i in (0, 2, 5)
        program.customer("influencer", start + i * 900, country="DE" if vpn else HOME,
                         anonymous=vpn)
    for i in range(18):  # its later posts' people, at home
        program.customer("influencer", start + (10 + i * 2) * DAY)
    program.history("victim", 10)
    program.burst("victim", 8)
    found = {ref for ref, fs in referrer_findings(program.conversions, ProgramContext()).items()
             if any(f.reason.code == "anonymised_burst" for f in fs)}
    assert found == {"victim"}
