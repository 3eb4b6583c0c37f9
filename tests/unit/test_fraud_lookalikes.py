"""Honest look-alikes of referrer-level fraud (issue 13, clean held on unseen draws): a
professional network's audience that buys days later but as often as the program's, at
several parameter draws, through the library."""

from __future__ import annotations

from collections import Counter

import pytest

from fraud.signals import DAY, ProgramContext, referrer_findings
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
