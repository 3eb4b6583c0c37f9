"""The evidence model (issue 13): identity links ranked by strength, families that count once,
the decision rule, referrer tests with false-discovery control, and rings that stay whole."""

from __future__ import annotations

import random

import pytest

from fraud.assess import FLAG_CAP, assess, combine_evidence, decision_reason
from fraud.rings import columns_by_account, shared_infrastructure
from fraud.signals import (
    ClickFacts,
    ConversionFacts,
    ProgramContext,
    ReferrerFacts,
    benjamini_hochberg,
    first_visits,
    referrer_findings,
)
from tracker.identity import canonical_email, email_hash, person_email, provider_of


def click(at: float, **kw: object) -> ClickFacts:
    base: dict[str, object] = {"click_id": "c", "at": at, "referrer": "alice", "visitor": "v1",
                               "ip": "81.2.69.1", "device": "d1"}
    base.update(kw)
    return ClickFacts(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(("typo", "provider"), [
    ("gmial.com", "gmail.com"), ("gmai.com", "gmail.com"), ("hotmial.com", "hotmail.com"),
    ("yaho.com", "yahoo.com"), ("outlok.com", "outlook.com"), ("gmaill.com", "gmail.com"),
    # ".com" one letter off is the commonest typo of all; another real TLD is not a typo.
    ("icloud.co", "icloud.com"), ("gmail.co", "gmail.com"), ("hotmail.cm", "hotmail.com"),
    ("yahoo.con", "yahoo.com"), ("gmail.de", None), ("example.co", None),
    ("example.org", None), ("gmail.org", None),
    # A typo in the provider's name and in its ".com" at once: two letters off.
    ("gamil.cm", "gmail.com"), ("gmial.co", "gmail.com"), ("yhaoo.cm", "yahoo.com"),
    ("yaho.co", "yahoo.com"), ("outlok.co", "outlook.com"), ("gmx.co", None),
])
def test_a_look_alike_provider_domain_is_the_provider(typo: str, provider: str | None) -> None:
    assert provider_of(typo) == provider


def test_one_person_across_aliases_typos_and_providers() -> None:
    key = b"k" * 32
    same = ["Jonas.Berger7@gmail.com", "jonasberger7+promo@gmial.com",
            "jonas.berger7@yahoo.com", "JonasBerger7@hotmial.com"]
    assert len({email_hash(key, e) for e in same}) == 1
    assert canonical_email("jonasberger7@gmial.com") == "jonasberger7@gmail.com"
    # A short local part is not distinctive across providers; other domains keep theirs.
    assert person_email("jo@yahoo.com") != person_email("jo@gmail.com")
    assert person_email("jonas.berger7@example.org") == "jonas.berger7@example.org"
    # National providers are consumer mail too; a typo'd ".com" is the provider.
    assert email_hash(key, "thabo.dubois@laposte.net") == email_hash(key, "thabodubois@gmail.co")
    assert email_hash(key, "jackkow@posteo.de") == email_hash(key, "jackkow@web.de")
    assert email_hash(key, "someone.else@gmail.com") != email_hash(key, same[0])
    # A bare given name at two providers is two people; numbered or longer, one.
    assert person_email("james@gmail.com") != person_email("james@yahoo.com")
    assert person_email("sam48@gmail.com") == person_email("sam48@hotmail.com")
    assert person_email("iweber@hotmail.com") == person_email("iweber@proton.me")
    assert email_hash(key, "bschmidt@telefonica.net") == email_hash(key, "bschmidt@gmail.com")
    # A dot moved in the local part plus a typo'd provider and ".com": the same person.
    assert email_hash(key, "hb.rown@gmial.co") == email_hash(key, "hbrown@gmail.com")
    assert email_hash(key, "em.magarcia@gmali.co") == email_hash(key, "emmagarcia@gmail.com")


def test_identity_links_ranked_by_strength() -> None:
    ref = ReferrerFacts("alice", email_hash=b"h", visitors=frozenset({"va"}),
                        devices=frozenset({"dev"}), ips=frozenset({"81.2.69.1"}))
    refs = {"alice": ref}
    # The same mailbox: strong, rejected on its own.
    mail = assess(ConversionFacts(1, "bob", 0.0, ("alice",), email_hash=b"h"), refs)
    assert mail.reasons[0].strong and mail.score >= 0.9
    # The same home IP and the same phone model: a household, weak, not held.
    home = assess(ConversionFacts(2, "bob", 0.0, ("alice",), devices=frozenset({"dev"}),
                                  ips=frozenset({"81.2.69.1"})), refs,
                  holders={("ip", "81.2.69.1"): 2, ("device", "dev"): 2})
    assert [r.code for r in home.reasons] == ["shared_address"] and home.score < 0.5
    # The same address as many accounts (a NAT): no evidence at all.
    nat = assess(ConversionFacts(3, "bob", 0.0, ("alice",), ips=frozenset({"81.2.69.1"})), refs,
                 holders={("ip", "81.2.69.1"): 40})
    assert nat.reasons == ()


def test_a_household_lease_is_identity_evidence() -> None:
    """The referrer opens his own link at home; minutes later a new device there clicks it."""
    ref = ReferrerFacts("alice", visitors=frozenset({"va"}), devices=frozenset({"dev-a"}),
                        ips=frozenset({"81.2.69.1"}), own_clicks=((1000.0, "81.2.69.1"),))
    lease = ConversionFacts(1, "bob", 3000.0, ("alice",), touches=(
        click(1600.0, visitor="vb", device="dev-b"),), ips=frozenset({"81.2.69.1"}))
    found = assess(lease, {"alice": ref}, holders={("ip", "81.2.69.1"): 2})
    assert [r.code for r in found.reasons] == ["household_lease"]
    assert found.reasons[0].family == "identity" and 0.5 <= found.score <= FLAG_CAP
    # The partner clicking the link a day later is a household, not a lease.
    later = ConversionFacts(2, "carol", 90_000.0, ("alice",), touches=(
        click(87_000.0, visitor="vc", device="dev-c"),), ips=frozenset({"81.2.69.1"}))
    assert assess(later, {"alice": ref}).score < 0.5


def test_a_housemate_coming_back_is_no_lease() -> None:
    """A housemate who first clicked the referrer's link days ago (and bought then) clicks it
    again at home an hour after the referrer opened it there: a person with a life of their
    own coming back, not a new device handed over; a lease is a first visit. The same click as
    the customer's very first visit stays one."""
    ref = ReferrerFacts("alice", visitors=frozenset({"va"}), devices=frozenset({"dev-a"}),
                        ips=frozenset({"81.2.69.1"}), own_clicks=((400_000.0, "81.2.69.1"),))
    again = ConversionFacts(2, "bob", 402_000.0, ("alice",), touches=(
        click(401_000.0, visitor="vb", device="dev-b"),), ips=frozenset({"81.2.69.1"}))
    holders = {("ip", "81.2.69.1"): 2}
    assert [r.code for r in assess(again, {"alice": ref}, holders=holders).reasons] == [
        "household_lease"]
    earlier = ConversionFacts(1, "bob", 50_000.0, ("alice",), touches=(
        click(49_000.0, visitor="vb", device="dev-b"),), ips=frozenset({"81.2.69.1"}))
    visited = first_visits([earlier, again])
    assert visited[("bob", "alice")] == 49_000.0
    assert "household_lease" not in {
        r.code for r in assess(again, {"alice": ref}, holders=holders, visited=visited).reasons}


@pytest.mark.parametrize(("gap", "agent"), [(70.0, "phone-b"), (400.0, "laptop"),
                                            (850.0, "phone-a")])
def test_a_lease_by_a_referrer_never_seen_otherwise(gap: float, agent: str) -> None:
    """A referrer who never bought (no cookie, address or browser of theirs is known) opens
    his link at home on a browser that never becomes a customer; minutes later a new device
    there signs up through it. A housemate's visit an hour before, a gateway address, or a
    referrer whose own browsers are known (whose visit this is not) hold nothing."""
    unseen = ReferrerFacts("alice", email_hash=b"a")
    first = click(5000.0, visitor="vb", device="dev-b", agent=agent,
                  before=((5000.0 - gap, None, "phone-a"),))
    lease = ConversionFacts(1, "bob", 5600.0, ("alice",), touches=(first,),
                            ips=frozenset({"81.2.69.1"}))
    found = assess(lease, {"alice": unseen}, holders={("visitors", "81.2.69.1"): 2})
    assert [r.code for r in found.reasons] == ["household_lease"]
    assert found.reasons[0].family == "identity" and 0.5 <= found.score <= FLAG_CAP
    assert "tied to no customer" in found.reasons[0].message
    # The same visit 40 minutes before: a housemate browsing, not a hand-over.
    slow = click(5000.0, visitor="vb", device="dev-b", before=((2600.0, None, "phone-a"),))
    assert assess(ConversionFacts(2, "bob", 5600.0, ("alice",), touches=(slow,)),
                  {"alice": unseen}, holders={("visitors", "81.2.69.1"): 2}).score < 0.5
    # A gateway (many visitors behind the address) ties nobody.
    assert assess(lease, {"alice": unseen},
                  holders={("visitors", "81.2.69.1"): 30}).score < 0.5
    # A visit by another customer's cookie is theirs, not the referrer's.
    theirs = click(5000.0, visitor="vb", device="dev-b", before=((5000.0 - gap, "vc", "x"),))
    assert assess(ConversionFacts(3, "bob", 5600.0, ("alice",), touches=(theirs,)),
                  {"alice": unseen}, holders={("visitors", "81.2.69.1"): 2}).score < 0.5
    # A referrer seen elsewhere on known browsers: the untied visit is someone else's.
    seen = ReferrerFacts("alice", email_hash=b"a", visitors=frozenset({"va"}),
                         ips=frozenset({"62.1.1.1"}), agents=frozenset({("phone-z", "62.1.1.1")}))
    assert assess(lease, {"alice": seen}, holders={("visitors", "81.2.69.1"): 2}).score < 0.5


def test_a_family_counts_once_and_one_family_only_flags() -> None:
    # IP, /24 and fingerprint are one network family: the strongest counts.
    assert combine_evidence([("network", 0.3, False), ("network", 0.35, False)]) == 0.35
    # One family however strong: at most a flag.
    assert combine_evidence([("network", 0.99, False)]) == FLAG_CAP
    assert combine_evidence([("population", 0.7, False), ("population", 0.7, False)]) == 0.7
    # Two decisive families, or strong identity: rejection is open.
    assert combine_evidence([("network", 0.85, False), ("population", 0.6, False)]) > 0.9
    assert combine_evidence([("identity", 0.97, True)]) == 0.97
    reason = decision_reason(assess(ConversionFacts(1, "alice", 0.0, ("alice",)), {}).reasons,
                             0.97)
    assert "strong identity" in reason.message


def test_benjamini_hochberg() -> None:
    p = {"a": 0.001, "b": 0.008, "c": 0.039, "d": 0.041, "e": 0.6}
    assert benjamini_hochberg(p, 0.05) == {"a", "b"}
    assert benjamini_hochberg({}, 0.05) == set()


def test_one_language_across_browsers_is_one_operator() -> None:
    """The program's browsers send their own defaults; one referrer's visitors all send the
    same from three different browsers, each from an address of its own (a farm's workers on
    residential addresses). Its conversions carry it; others do not."""
    rng = random.Random(3)
    defaults = {"chrome": "en-US,en;q=0.9", "safari": "en-US", "firefox": "en-US,en;q=0.5"}
    conversions = []
    for i in range(400):
        browser = rng.choice(list(defaults))
        ref = f"r{i % 40}"
        conversions.append(ConversionFacts(i, f"c{i}", 50_000.0, (ref,), touches=(
            click(40_000.0, referrer=ref, browser=browser, language=defaults[browser]),)))
    for i in range(400, 415):
        browser = rng.choice(list(defaults))
        conversions.append(ConversionFacts(i, f"c{i}", 50_000.0, ("farm",), touches=(
            click(40_000.0, referrer="farm", browser=browser, language="en-GB,en;q=0.8",
                  ip=f"92.40.7.{i - 400}"),)))
    found = referrer_findings(conversions, ProgramContext())
    assert set(found) == {"farm"}
    (finding,) = found["farm"]
    assert finding.reason.code == "language_uniformity" and finding.carries(conversions[-1])
    assert not finding.carries(conversions[0])


def test_a_device_farm_is_one_ring_and_a_carrier_nat_is_none() -> None:
    rows = []
    referrals = []
    for k in range(30):  # one referrer, thirty referees on three devices (each its own IP)
        rows.append((("customer", f"dev{k}"), f"10.0.0.{k % 3}", f"farm-device-{k % 3}"))
        referrals.append(("farmer", f"dev{k}"))
    rows.append((("referrer", "farmer"), "10.9.9.9", "farmer-phone"))
    for k in range(30):  # thirty people of twelve referrers behind one carrier NAT, one model
        rows.append((("customer", f"nat{k}"), "100.64.0.1", "iphone-on-nat"))
        rows.append((("customer", f"nat{k}"), f"81.2.{k}.1", f"home-{k}"))
        referrals.append((f"org{k % 12}", f"nat{k}"))
    rings = shared_infrastructure(columns_by_account(rows), referrals)
    assert len(rings) == 1
    farm = {("customer", f"dev{k}") for k in range(30)} | {("referrer", "farmer")}
    assert rings[0].accounts == farm and rings[0].score >= 0.5


@pytest.mark.parametrize(("mine", "theirs"), [
    ("oliver.moore78@sky.com", "oliver.moore78@outlook.com"),
    ("ryan.martinez@icloud.com", "ryanmartinez+shop@sky.com"),
    ("lena.krause91@outlook.de", "lenakrause91@gmx.de"),
    ("marco.rossi84@hotmail.it", "marco.rossi84@yahoo.it"),
    ("jbrown1972@talktalk.net", "jbrown1972@gmial.com"),
])
def test_one_person_at_the_big_broadband_and_national_providers(mine: str, theirs: str
                                                                 ) -> None:
    """The big broadband providers' mail (Sky, TalkTalk) and the large providers' national
    domains are consumer mail like Gmail's: a distinctive name there and at Gmail is one
    person. A company's domain is not: the same name there is someone else's mailbox."""
    assert person_email(mine) == person_email(theirs)
    name = mine.partition("@")[0]
    assert person_email(f"{name}@acme-logistics.com") != person_email(theirs)


def test_the_large_providers_national_domains_name_one_person() -> None:
    # A distinctive local part at Yahoo's Brazilian domain, Yandex's international one and
    # Outlook: one person, as at yahoo.com and yandex.ru.
    assert person_email("thiago.silva@yahoo.com.br") == person_email("thiagosilva@outlook.com")
    assert person_email("esrakaya82@yandex.com") == person_email("esrakaya82@gmail.com")
