"""A repeated household lease: one browser that never buys opens a referrer's link on an
address shortly before each of two or more new customers first come there through it
(fraud.signals.repeat_lease_reasons), and the look-alikes it must leave alone."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from fraud.assess import FLAG_CAP, assess_all
from fraud.signals import (
    REPEAT_LEASE_SECONDS,
    ClickFacts,
    ConversionFacts,
    ProgramContext,
    ReferrerFacts,
    repeat_lease_reasons,
)
from tracker.scoring.facts import _click_facts, _People
from tracker.scoring.queries import EarlierVisit, TouchRow

HOME = "81.2.69.1"
DAY = 86_400.0


def first_visit(at: float, visitor: str, *, ip: str = HOME,
                untied: tuple[tuple[float, str], ...] = (),
                owner: tuple[tuple[float, str], ...] = ()) -> ClickFacts:
    return ClickFacts(f"k-{visitor}", at, "alice", visitor, ip, f"dev-{visitor}",
                      untied=untied, owner=owner)


def account(cid: int, customer: str, visit: ClickFacts) -> ConversionFacts:
    return ConversionFacts(cid, customer, visit.at + 1800.0, ("alice",), touches=(visit,),
                           visitors=frozenset({visit.visitor or ""}), amount=2500)


def homes(n: int = 2) -> dict[tuple[str, str], int]:
    return {("visitors", HOME): n}


@pytest.mark.parametrize(("gaps", "apart"), [
    ((300.0, 600.0), 14 * DAY), ((5400.0, 9000.0), 3 * DAY), ((60.0, 10_000.0, 1200.0), DAY)])
def test_one_browser_before_several_new_customers_is_held(gaps: tuple[float, ...],
                                                          apart: float) -> None:
    """The link's owner opens it on his own browser (a cookie no customer has), then a new
    device there signs up; days later again: every such account is held for review."""
    conversions = []
    for i, gap in enumerate(gaps):
        at = 10 * DAY + i * apart
        conversions.append(account(i + 1, f"new{i}", first_visit(
            at, f"vn{i}", untied=((at - gap, "v-owner"),))))
    found = repeat_lease_reasons(conversions, homes())
    assert sorted(found) == [c.conversion_id for c in conversions]
    reason = found[1]
    assert reason.code == "repeat_lease" and reason.family == "identity"
    assert reason.value == len(gaps) and not reason.strong
    scored = assess_all(conversions, {"alice": ReferrerFacts("alice")}, ProgramContext(),
                        holders=homes())
    # Identity evidence for review: held, never rejected on it alone.
    assert all(0.5 <= s.assessment.score <= FLAG_CAP for s in scored)
    assert all("repeat_lease" in {r.code for r in s.assessment.reasons} for s in scored)


def test_look_alikes_are_not_held() -> None:
    at = 10 * DAY
    owner = (at - 600.0, "v-owner")
    # A household: a housemate opened the link once, another bought (one lease only).
    one = [account(1, "bob", first_visit(at, "vb", untied=(owner,)))]
    assert repeat_lease_reasons(one, homes()) == {}
    # A family who all follow the link one of them opened, in one sitting.
    evening = [account(1, "bob", first_visit(at, "vb", untied=(owner,))),
               account(2, "carol", first_visit(at + 3000.0, "vc", untied=(owner,)))]
    assert repeat_lease_reasons(evening, homes()) == {}
    # Two housemates who never buy, each before one new customer: no browser repeats.
    two = [account(1, "bob", first_visit(at, "vb", untied=(owner,))),
           account(2, "carol", first_visit(at + DAY, "vc", untied=((at + DAY - 600, "v-x"),)))]
    assert repeat_lease_reasons(two, homes()) == {}
    # The same browser, but long before the second customer's first visit: a housemate
    # who sometimes looks at the link, not a hand-over.
    late = REPEAT_LEASE_SECONDS + 60.0
    slow = [account(1, "bob", first_visit(at, "vb", untied=(owner,))),
            account(2, "carol", first_visit(at + late, "vc", untied=(owner,)))]
    assert repeat_lease_reasons(slow, homes()) == {}
    # A gateway (a campus, an office, a carrier NAT: many cookies behind it) ties nobody.
    crowd = [account(1, "bob", first_visit(at, "vb", untied=(owner,))),
             account(2, "carol", first_visit(at + 900.0, "vc", untied=(owner,)))]
    assert repeat_lease_reasons(crowd, homes(40)) == {}
    # One customer buying twice after his own earlier cookie (a privacy browser clearing
    # cookies) is one customer: no repeat.
    again = [account(1, "bob", first_visit(at, "vb", untied=(owner,))),
             account(2, "bob", first_visit(at + DAY, "vb2", untied=((at + DAY - 300, "v-owner"),)))]
    assert repeat_lease_reasons(again, homes()) == {}
    # Different addresses: two friends of one person, not one home.
    apart = [account(1, "bob", first_visit(at, "vb", untied=(owner,))),
             account(2, "carol", first_visit(at + 900.0, "vc", ip="90.1.1.1", untied=(owner,)))]
    assert repeat_lease_reasons(apart, {("visitors", HOME): 2, ("visitors", "90.1.1.1"): 2}) == {}
    # The referrer's own account is not his referee.
    own = [account(1, "alice", first_visit(at, "va", untied=(owner,))),
           account(2, "bob", first_visit(at + 900.0, "vb", untied=(owner,)))]
    assert repeat_lease_reasons(own, homes()) == {}


def test_the_scan_carries_the_untied_cookies_of_earlier_visits() -> None:
    """facts: an earlier visit's cookie tied to no customer is kept (untied); one tied to a
    customer is not (that visit is the customer's, shown in `before` with its cookie)."""
    people = _People()
    people.visitors["carol"].add("v-carol")
    ts = datetime(2026, 11, 1, 12, tzinfo=UTC)
    row = TouchRow(7, 1, "k1", ts, "vb", HOME, "d", False, None, False, False, None, None,
                   False, "en", "Chrome", None, "ua")
    before = {0: [EarlierVisit(0, 100.0, "v-owner", "ua-o"),
                  EarlierVisit(0, 200.0, "v-carol", "ua-c")]}
    (clicks,) = _click_facts([row], before, {1: "alice"}, people).values()
    assert clicks[0].untied == ((100.0, "v-owner"),)
    assert clicks[0].before == ((100.0, None, "ua-o"), (200.0, "v-carol", "ua-c"))


@pytest.mark.parametrize("days", [2.0, 9.0, 30.0])
def test_accounts_made_in_private_windows_of_the_owners_browser(days: float) -> None:
    """The link's owner browses his link on his own browser (a cookie no customer has); days
    or weeks later, new accounts come through it from the same address with that very
    User-Agent, each on a new cookie (private windows). Customers who come back to buy again
    (a colleague on an office's standard browser) are not counted."""
    seen = ((10 * DAY - days * DAY, "v-owner"),)
    made = [account(1, "new1", first_visit(10 * DAY, "vn1", owner=seen)),
            account(2, "new2", first_visit(10 * DAY + days * DAY, "vn2", owner=seen))]
    found = repeat_lease_reasons(made, homes())
    assert sorted(found) == [1, 2]
    assert "very browser" in found[1].message
    # The owner's visit after the accounts came is not before them.
    after = ((10 * DAY + 2 * days * DAY, "v-owner"),)
    assert repeat_lease_reasons([
        account(1, "new1", first_visit(10 * DAY, "vn1", owner=after)),
        account(2, "new2", first_visit(10 * DAY + days * DAY, "vn2", owner=after))],
        homes()) == {}
    # Colleagues who buy again and again on the office's browser are customers.
    again = [*made, account(3, "new1", first_visit(12 * DAY, "vn1", owner=seen)),
             account(4, "new2", first_visit(13 * DAY + days * DAY, "vn2", owner=seen))]
    assert repeat_lease_reasons(again, homes()) == {}
