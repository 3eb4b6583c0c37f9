"""Clean look-alikes of the worst seeds (issue 13: clean held <= 2% on every seed): strangers
who share a name, two people who own the same phone model, an audience that buys a little
sooner than the program's."""

from __future__ import annotations

import random

from fraud.assess import assess
from fraud.pools import collusion_pools
from fraud.signals import (
    ClickFacts,
    ConversionFacts,
    ProgramContext,
    ReferrerFacts,
    referrer_reasons,
)

T0 = 1_700_000_000.0
DAY = 86400.0


def mailed(i: int, at: float, referrer: str, *, email: bytes, agent: str,
           language: str = "en-US") -> ConversionFacts:
    address = f"198.18.{i // 250}.{i % 250}"
    touch = ClickFacts(f"k{i}", at - 600, referrer, f"cookie{i}", address, None,
                       language=language, agent=agent)
    return ConversionFacts(i, f"c{i}", at, (referrer,), email_hash=email, touches=(touch,),
                           visitors=frozenset({f"cookie{i}"}),
                           agents=frozenset({(agent, address)}), amount=1000)


def crowd(n: int = 120) -> list[ConversionFacts]:
    return [mailed(5000 + i, T0 + i * DAY / 3, f"friend{i % 20}", email=b"own%d" % i,
                   agent=f"Phone/{i % 15}") for i in range(n)]


def test_three_strangers_who_share_a_name_are_no_pool() -> None:
    """identity's person hash takes `fatima.brown` at three providers as one person: three
    referred customers of three referrers on three different browsers are three people who
    share a name. An operator's personas come on his own phone, and stay a pool."""
    strangers = [mailed(i, T0 + i * 9 * DAY, f"ref{i}", email=b"fatimabrown",
                        agent=f"Browser/{i}", language=("en-US", "en-GB", "fr-FR")[i])
                 for i in range(3)]
    assert collusion_pools(strangers + crowd()) == []
    operator = [mailed(i, T0 + i * 9 * DAY, f"ref{i}", email=b"persona",
                       agent="Phone/operator") for i in range(3)]
    rings = collusion_pools(operator + crowd())
    assert [r.accounts for r in rings] == [{("customer", f"c{i}") for i in range(3)}]


HOME = "81.2.69.1"
MAC = "Mozilla/5.0 (Macintosh) Safari/17.4"


def _referrer() -> ReferrerFacts:
    return ReferrerFacts("alice", ips=frozenset({HOME}), agents=frozenset({(MAC, HOME)}))


def _holders() -> dict[tuple[str, str], int]:
    return {("agents", ""): 2000, ("agent", MAC): 8, ("visitors", HOME): 3, ("ip", HOME): 2}


def test_a_housemate_with_a_phone_of_their_own_on_the_family_computer_is_not_held() -> None:
    """The referee bought on the family's computer (the referrer's browser at home), and has
    a phone of their own that goes where the referrer never is: a housemate, not the referrer's
    second account. A referee seen only on the referrer's browser at home stays held."""
    phone = "Mozilla/5.0 (Linux; Android 14) Chrome/131"
    own = frozenset({(MAC, HOME)} | {(phone, f"100.64.{i}.9") for i in range(5)})
    housemate = ConversionFacts(1, "bob", T0, ("alice",), agents=own,
                                ips=frozenset(ip for _a, ip in own))
    found = assess(housemate, {"alice": _referrer()}, holders=_holders())
    assert [r.code for r in found.reasons] == ["same_device"]
    assert found.score < 0.5
    alone = ConversionFacts(2, "carl", T0, ("alice",), agents=frozenset({(MAC, HOME)}),
                            ips=frozenset({HOME}))
    assert assess(alone, {"alice": _referrer()}, holders=_holders()).score >= 0.5


def test_a_housemate_with_the_same_phone_model_who_goes_elsewhere_is_not_held() -> None:
    """Two people with the same phone model on one home address: the referee's phone was also
    seen on three carrier addresses the referrer never used. A second account on the
    referrer's own phone goes where the referrer goes."""
    own = frozenset({(MAC, HOME)} | {(MAC, f"100.64.{i}.9") for i in range(3)})
    housemate = ConversionFacts(1, "bob", T0, ("alice",), agents=own,
                                ips=frozenset(ip for _a, ip in own))
    found = assess(housemate, {"alice": _referrer()}, holders=_holders())
    assert [r.code for r in found.reasons] == ["same_device"] and found.score < 0.5
    twice = frozenset({(MAC, HOME), (MAC, "100.64.0.9")})
    second = ConversionFacts(2, "carl", T0, ("alice",), agents=twice,
                             ips=frozenset(ip for _a, ip in twice))
    assert assess(second, {"alice": _referrer()}, holders=_holders()).score >= 0.5


def test_the_referrers_browser_away_from_home_is_the_same_model_not_held() -> None:
    """The referrer's rare browser, but on other addresses than the referrer's: two people who
    own the same phone model. A hint for review, not a hold."""
    away = ConversionFacts(1, "bob", T0, ("alice",), agents=frozenset({(MAC, "100.64.0.1")}),
                           ips=frozenset({"100.64.0.1"}))
    found = assess(away, {"alice": _referrer()}, holders=_holders())
    assert [r.code for r in found.reasons] == ["same_device"]
    assert found.score < 0.5


def test_an_audience_that_buys_a_little_sooner_is_no_injection() -> None:
    """A referrer with many conversions whose delays are a little shorter than the program's
    (a KS distance under FAST_EFFECT, significant only for the sample's size) is an audience
    that came to buy; an injector's are seconds, unlike the program's."""
    rng = random.Random(3)
    conversions = []
    for i in range(1500):
        ref = "keen" if i % 5 == 0 else "quick" if i % 75 == 1 else f"r{i % 25}"
        delay = (rng.uniform(5, 40) if ref == "quick" else
                 rng.lognormvariate(7.0, 1.0) if ref == "keen" else rng.lognormvariate(7.6, 1.0))
        conversions.append(ConversionFacts(
            i, f"c{i}", T0 + i * 600, (ref,),
            touches=(ClickFacts(f"k{i}", T0 + i * 600 - delay, ref, f"v{i}",
                                f"198.18.0.{i % 250}", f"d{i}"),)))
    reasons = referrer_reasons(conversions, ProgramContext())
    assert "delay_distribution" not in {r.code for r in reasons.get("keen", [])}
    assert "delay_distribution" in {r.code for r in reasons["quick"]}
