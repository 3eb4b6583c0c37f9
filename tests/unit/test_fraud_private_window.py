"""One new account in a private window of the link owner's own browser: a cookie tied to no
customer opened the referrer's link again and again, and on another day a new cookie with
that very browser, on that address, without a Referer, makes an account through the link
(fraud.signals.private_window_reasons); and the look-alikes it must leave alone."""

from __future__ import annotations

from fraud.assess import FLAG_CAP, assess_all
from fraud.signals import (
    PRIVATE_WINDOW_APART,
    ClickFacts,
    ConversionFacts,
    ProgramContext,
    ReferrerFacts,
    private_window_reasons,
)

HOME = "81.2.69.1"
DAY = 86_400.0
AT = 20 * DAY


def first_visit(*, gap: float = 3 * DAY, returning: bool = True, source: str | None = None,
                ip: str = HOME, visitor: str = "v-new") -> ClickFacts:
    owner = ((AT - gap, "v-owner"),)
    return ClickFacts("k1", AT, "alice", visitor, ip, "dev", source=source, agent="ua-phone",
                      owner=owner,
                      returning=frozenset({"v-owner"}) if returning else frozenset())


def account(visit: ClickFacts, *, cid: int = 1, customer: str = "bob") -> ConversionFacts:
    return ConversionFacts(cid, customer, visit.at + 1800.0, ("alice",), touches=(visit,),
                           visitors=frozenset({visit.visitor or ""}), amount=2500)


def homes(n: int = 2) -> dict[tuple[str, str], int]:
    return {("visitors", HOME): n}


def test_a_new_account_in_a_private_window_of_the_owners_browser_is_held() -> None:
    conv = account(first_visit())
    found = private_window_reasons([conv], homes())
    reason = found[1]
    assert reason.code == "private_window" and reason.family == "identity"
    assert not reason.strong and reason.value == 3 * DAY
    (scored,) = assess_all([conv], {"alice": ReferrerFacts("alice")}, ProgramContext(),
                           holders=homes())
    # Identity evidence for review: held, never rejected on it alone.
    assert 0.5 <= scored.assessment.score <= FLAG_CAP
    assert "private_window" in {r.code for r in scored.assessment.reasons}


def test_look_alikes_are_not_held() -> None:
    # A privacy browser's own earlier look (its cookie cleared): a browser seen once on the
    # link is not one that keeps coming back to it.
    assert private_window_reasons([account(first_visit(returning=False))], homes()) == {}
    # A housemate on the same phone model who follows the link the day its owner opened it.
    same_day = first_visit(gap=PRIVATE_WINDOW_APART - 600.0)
    assert private_window_reasons([account(same_day)], homes()) == {}
    # A friend who followed the link from where it was shared (a Referer).
    shared = first_visit(source="mail.google.com")
    assert private_window_reasons([account(shared)], homes()) == {}
    # A gateway (an office, a campus, a carrier NAT: many cookies behind it) ties nobody.
    assert private_window_reasons([account(first_visit())], homes(40)) == {}
    # A customer who buys again (a colleague on the office's standard browser) is one.
    visit = first_visit()
    again = [account(visit), account(visit, cid=2)]
    assert private_window_reasons(again, homes()) == {}
    # The owner's own cookie is the referee's: not a new cookie (shared_cookie's business).
    assert private_window_reasons([account(first_visit(visitor="v-owner"))], homes()) == {}
    # The referrer's own account is not his referee.
    assert private_window_reasons([account(first_visit(), customer="alice")], homes()) == {}

