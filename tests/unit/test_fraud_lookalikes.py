"""Honest look-alikes of referrer-level fraud (issue 13, clean held on unseen draws): a
professional network's audience that buys days later but as often as the program's, at
several parameter draws, through the library."""

from __future__ import annotations

from collections import Counter

import pytest

from fraud.assess import DECISIVE
from fraud.signals import DAY, ClickFacts, ConversionFacts, ProgramContext, referrer_findings
from tests.unit.test_fraud_population import Program


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_a_site_whose_visitors_buy_late_but_as_often_is_no_click_spam(seed: int) -> None:
    """Visitors from a professional network buy days after their click (they decide at
    work, buy at home), but as many of them buy as the program's visitors do: no click
    spam. An app firing clicks at visitors who buy days later anyway brings many clicks and
    few conversions: click spam, though spread over several referrers' links."""
    program = Program(seed)
    rng = program.rng
    program.visited(40, ("www.facebook.com", "mail.google.com", "t.co"))
    for host, referrers in (("www.linkedin.com", 4), ("coupons.example", 5)):
        for i in rng.sample(range(40), referrers):
            for _ in range(rng.randint(2, 4)):
                program.referral(f"r{i}", program.when(), delay=rng.uniform(3 * DAY, 10 * DAY),
                                 source=host)
    visits = Counter({t.click_id: t.source for c in program.conversions
                      for t in c.touches if t.source}.values())
    converted = Counter(c.touches[-1].source for c in program.conversions)

    def visited(host: str, rate: float) -> None:
        """Visits from `host` that did not convert, up to a conversion rate of `rate`."""
        extra = max(round(converted[host] / rate) - visits[host], 0)
        visits[host] += extra
        program.clicks["r0"] += extra

    def program_rate() -> float:
        return len(program.conversions) / sum(program.clicks.values())

    # Of the app's visits, a tenth as many convert as the program's; of the network's,
    # nearly as many.
    visited("coupons.example", program_rate() / 10)
    visited("www.linkedin.com", 0.85 * program_rate())
    context = ProgramContext(referrer_clicks=program.clicks, source_clicks=visits)
    found = referrer_findings(program.conversions, context)
    spam = {f.reason.message for fs in found.values() for f in fs
            if f.reason.code == "click_spam_source"}
    assert spam and all("from coupons.example" in m for m in spam), spam


BROWSERS = {"Chrome": "en-GB,en;q=0.9", "Firefox": "en-GB,en;q=0.5", "Safari": "en-GB"}
MANAGED = "en-GB,en-US;q=0.9,en;q=0.8"  # one language policy set on every managed browser


def _visit(program: Program, ref: str, ip: str, browser: str, language: str) -> None:
    """A customer's click on `ref`'s link from `ip`, a sign-up and a purchase later."""
    rng = program.rng
    customer = f"c{len(program.conversions)}"
    at = program.when()
    clicked = at - rng.uniform(120, 2 * DAY)
    touch = ClickFacts(f"k-{customer}", clicked, ref, f"v-{customer}", ip, f"d-{customer}",
                       language=language, browser=browser)
    program.clicks[ref] = program.clicks.get(ref, 0) + 1
    for when, amount in ((clicked + rng.uniform(5, 60), 0),
                         (at, rng.choice((1500, 2900, 4900, 9900)))):
        program.conversions.append(ConversionFacts(
            len(program.conversions), customer, when, (ref,), touches=(touch,),
            amount=amount))


@pytest.mark.parametrize("seed", [21, 22, 23])
def test_colleagues_behind_one_address_are_one_site_not_one_operator(seed: int) -> None:
    """An office's colleagues click a colleague's link from the office address, on managed
    browsers that all send the language the company set: one site's setup, counted once,
    as few_browsers counts an address's browsers once. Workers of a click farm who each sit
    behind an address of their own and send one language from different browsers are one
    operator's setup."""
    program = Program(seed)
    rng = program.rng
    for r in range(40):
        for _ in range(rng.randint(3, 6)):
            browser = rng.choice(list(BROWSERS))
            _visit(program, f"r{r}", f"81.2.{r}.{rng.randrange(256)}", browser,
                   BROWSERS[browser])
        program.clicks[f"r{r}"] += rng.randint(15, 30)
    for i in range(rng.randint(10, 16)):
        _visit(program, "office", "198.51.100.7", rng.choice(("Chrome", "Edge")), MANAGED)
        _visit(program, "farm", f"92.40.{i}.{rng.randrange(256)}", rng.choice(list(BROWSERS)),
               MANAGED)
    found = referrer_findings(program.conversions, program.context())
    uniform = {ref for ref, fs in found.items() for f in fs
               if f.reason.code == "language_uniformity"}
    assert uniform == {"farm"}


MARKET = ("fr-FR,fr;q=0.9", "fr-FR,fr;q=0.9,en-US;q=0.8,en;q=0.7")  # the market's two settings


@pytest.mark.parametrize("seed", [31, 32, 33])
def test_the_market_own_language_across_browsers_is_weak_alone(seed: int) -> None:
    """The program's visitors send one of the market's two settings, whatever their browser.
    An office (or a community) whose colleagues all send one of them, from different browsers
    and addresses of their own (at home, on phones), is tested as uniform, but on a setting a
    third of the program sends: weak alone, under what holds a conversion. A farm's workers
    sending a setting the program's visitors do not send are one operator's setup."""
    program = Program(seed)
    rng = program.rng
    for r in range(40):
        for _ in range(rng.randint(3, 6)):
            _visit(program, f"r{r}", f"81.2.{r}.{rng.randrange(256)}",
                   rng.choice(list(BROWSERS)), rng.choice(MARKET))
        program.clicks[f"r{r}"] += rng.randint(15, 30)
    for i in range(rng.randint(14, 18)):
        _visit(program, "office", f"90.{i}.7.{rng.randrange(256)}", rng.choice(list(BROWSERS)),
               MARKET[0])
        _visit(program, "farm", f"92.40.{i}.{rng.randrange(256)}", rng.choice(list(BROWSERS)),
               "fr,fr-FR;q=0.8")
    found = referrer_findings(program.conversions, program.context())
    weights = {ref: f.reason.weight for ref, fs in found.items() for f in fs
               if f.reason.code == "language_uniformity"}
    assert {"office", "farm"} <= weights.keys()
    assert weights["farm"] >= DECISIVE
    # A friend group of the program's own that happened to send one setting is weak too.
    assert all(w < DECISIVE for ref, w in weights.items() if ref != "farm")
    office = next(f for f in found["office"] if f.reason.code == "language_uniformity")
    assert "market's own setting" in office.reason.message
    assert not any(f.reason.code == "referrer_site" for f in found["office"])
