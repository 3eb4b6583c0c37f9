"""fraud/: look-alikes of a mobile-first program that referrer-level tests must not hold
(bench/redteam5's corporate_vpn and creator): colleagues behind their company's VPN egress
on a hosting network, and an influencer's large, slow-converting audience."""

from __future__ import annotations

import math
import random

from fraud.signals import DAY, ClickFacts, ConversionFacts, ProgramContext, referrer_reasons

BROWSER = ("Mozilla/5.0 (Linux; Android 14; K) AppleWebKit/537.36 (KHTML, like Gecko) "
           "Chrome/131.0.0.0 Mobile Safari/537.36")


def click(at: float, referrer: str, i: int, **kw: object) -> ClickFacts:
    base: dict[str, object] = {"click_id": f"k{i}", "at": at, "referrer": referrer,
                               "visitor": f"v{i}", "ip": f"81.2.{i // 250}.{i % 250}",
                               "device": f"d{i}", "language": "en-GB,en;q=0.9",
                               "browser": "Chrome Mobile", "agent": BROWSER}
    base.update(kw)
    return ClickFacts(**base)  # type: ignore[arg-type]


def test_colleagues_behind_a_company_vpn_egress_are_no_hosting_farm() -> None:
    conversions = []
    for i in range(40):  # an ordinary referrer on residential addresses
        conversions.append(ConversionFacts(i, f"c{i}", 50_000.0, ("big",), touches=(
            click(40_000.0, "big", i),)))
    for i in range(40, 52):  # a colleague's link: twelve colleagues through the VPN egress
        conversions.append(ConversionFacts(i, f"c{i}", 50_000.0, ("office",), touches=(
            click(40_000.0, "office", i, ip="165.225.1.9", hosting=True),)))
    for i in range(60, 72):  # a script in a data centre: no Accept-Language
        conversions.append(ConversionFacts(i, f"c{i}", 50_000.0, ("farm",), touches=(
            click(40_000.0, "farm", i, ip="104.16.0.9", hosting=True, language=None,
                  headerless=True),)))
    for i in range(80, 92):  # an anonymiser (a VPN service, Tor): still concealment
        conversions.append(ConversionFacts(i, f"c{i}", 50_000.0, ("vpn",), touches=(
            click(40_000.0, "vpn", i, ip="185.220.1.9", hosting=True, anonymous=True),)))
    reasons = referrer_reasons(conversions)
    hosted = {ref for ref, rs in reasons.items() if any(r.code == "hosting_share" for r in rs)}
    assert hosted == {"farm", "vpn"} and "office" not in reasons


def test_an_influencers_slow_audience_is_no_click_spam_but_a_spammers_is() -> None:
    rng = random.Random(5)
    conversions: list[ConversionFacts] = []

    def convert(ref: str, at: float, delay: float, trial: float = 0.0) -> None:
        """A customer's sign-up `delay` after the click, and their first charge: at once, or
        when a `trial` ends (the merchant's server charges it: the customer decided before)."""
        i = len(conversions)
        touch = click(at - delay, ref, i)
        conversions.append(ConversionFacts(i, f"c{i}", at, (ref,), touches=(touch,)))
        conversions.append(ConversionFacts(i + 10_000, f"c{i}", at + 600 + trial, (ref,),
                                           touches=(touch,), amount=999))

    # Thirty friends' referrers: conversions hours after the click.
    for r in range(30):
        for _ in range(20):
            convert(f"r{r}", rng.uniform(0, 60 * DAY), rng.uniform(600, 6 * 3600))
    # An influencer: 500 clicks, 15 sign up, about a day after the post (spread: hours to
    # days), most of them for a week's free trial.
    for i in range(15):
        convert("creator", rng.uniform(10 * DAY, 50 * DAY),
                min(DAY * math.exp(rng.gauss(0, 1.0)), 9 * DAY), 7 * DAY if i % 5 else 0.0)
    # Click spam: 500 clicks, 15 credited purchases that happened whenever they would have.
    for _ in range(15):
        convert("spam", rng.uniform(20 * DAY, 60 * DAY), rng.uniform(0.5 * DAY, 20 * DAY))
    clicks = {f"r{r}": 40 for r in range(30)} | {"creator": 500, "spam": 500}
    reasons = referrer_reasons(conversions, ProgramContext(referrer_clicks=clicks))
    assert "creator" not in reasons
    assert [r.code for r in reasons["spam"]] == ["click_spam"]
