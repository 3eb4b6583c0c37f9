"""Identity and network evidence, and rings (issue 13), each mechanism against its look-alike at
several parameter draws: a household lease seen from the referrer's own browser, the referrer's
own rare browser, new accounts on the referrer's own browser at home, one browser cookie behind
several accounts of one referrer, a device farm on carrier addresses, a ring that changes
address for every account; families (and their shared tablet), offices, campuses, VPN users,
a public terminal."""

from __future__ import annotations

import random
from dataclasses import replace
from itertools import pairwise

import pytest

from fraud.assess import DECISIVE, FLAG_CAP, assess, decision_reason
from fraud.operators import chain_ends, group_flag_reasons, operator_groups, parts
from fraud.rings import (
    Ring,
    columns_by_account,
    device_farms,
    find_rings,
    shared_infrastructure,
)
from fraud.signals import (
    ClickFacts,
    ConversionFacts,
    ProgramContext,
    ReferrerFacts,
    own_browser_reasons,
    referrer_findings,
    shared_cookie_reasons,
    shared_device_reasons,
)

PHONES = [f"Mozilla/5.0 (Linux; Android {v}; {m}) Chrome/1{v}0" for v in range(8, 16)
          for m in ("SM-A155F", "Pixel 7", "CPH2127", "moto g", "Redmi 9", "LM-X420")]
COMMON = "Mozilla/5.0 (iPhone; CPU iPhone OS 18_6 like Mac OS X) Safari/604.1"
DESKTOP_UA = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/{v}.0"


def touch(at: float, **kw: object) -> ClickFacts:
    base: dict[str, object] = {"click_id": "c", "at": at, "referrer": "alice", "visitor": "vb",
                               "ip": "81.2.69.7", "device": "dev-b", "agent": COMMON}
    base.update(kw)
    return ClickFacts(**base)  # type: ignore[arg-type]


def program(total: int, **agents: int) -> dict[tuple[str, str], int]:
    """Rarity counts: customers per browser, and the program's customers with one."""
    out: dict[tuple[str, str], int] = {("agents", ""): total}
    out |= {("agent", a): n for a, n in agents.items()}
    return out


@pytest.mark.parametrize("draw", range(4))
def test_a_household_lease_seen_from_the_referrers_own_browser(draw: int) -> None:
    """The referrer's own visit carries no cookie tied to them, but comes from the browser
    their own purchases were reported from; minutes later a new device on that address clicks
    the link and buys. A gateway address (a campus) with the same timing is no lease."""
    rng = random.Random(draw)
    own = rng.choice(PHONES)
    home = f"81.2.{draw}.{rng.randint(2, 200)}"
    gap = rng.uniform(60, 3000)
    ref = ReferrerFacts("alice", agents=frozenset({(own, f"90.1.1.{draw}")}))
    lease = ConversionFacts(1, "bob", 10_000.0 + gap + 300, ("alice",), touches=(
        touch(10_000.0 + gap, ip=home, agent=COMMON,
              before=((10_000.0, "v-unlinked", own),)),), ips=frozenset({home}))
    holders = {("visitors", home): rng.randint(2, 4)}
    found = assess(lease, {"alice": ref}, holders=holders)
    assert [r.code for r in found.reasons] == ["household_lease"]
    assert found.reasons[0].family == "identity" and DECISIVE <= found.score <= FLAG_CAP
    campus = assess(lease, {"alice": ref}, holders={("visitors", home): rng.randint(12, 80)})
    assert campus.score < DECISIVE
    # The same browser as the referrer's is not a new device: a family's second phone of the
    # same model, or the referrer himself.
    same = ConversionFacts(2, "carol", lease.at, ("alice",), touches=(
        touch(10_000.0 + gap, ip=home, agent=own, before=((10_000.0, "v-unlinked", own),)),))
    assert all(r.code != "household_lease" for r in assess(same, {"alice": ref},
                                                           holders=holders).reasons)


@pytest.mark.parametrize("draw", range(4))
def test_a_household_lease_from_a_browser_tied_to_nobody_at_the_referrers_home(draw: int
                                                                              ) -> None:
    """The referrer opens their link at home on a browser they never bought with (its cookie
    tied to no customer); minutes later a new device there buys through it: a lease. The same
    visit from an address the referrer was never seen on, from a gateway, or by a browser that
    is another customer's, is no lease."""
    rng = random.Random(20 + draw)
    home = f"81.5.{draw}.{rng.randint(2, 200)}"
    gap = rng.uniform(60, 3000)
    ref = ReferrerFacts("alice", ips=frozenset({home}),
                        agents=frozenset({(rng.choice(PHONES), home)}))
    laptop = DESKTOP_UA.format(v=rng.randint(120, 150))

    def referee(visitor: str | None, ip: str = home) -> ConversionFacts:
        return ConversionFacts(1, "bob", 10_000.0 + gap + 300, ("alice",), touches=(
            touch(10_000.0 + gap, ip=ip, agent=COMMON,
                  before=((10_000.0, visitor, laptop),)),), ips=frozenset({ip}))

    holders = {("visitors", home): rng.randint(2, 4)}
    found = assess(referee(None), {"alice": ref}, holders=holders)
    assert [r.code for r in found.reasons] == ["household_lease"]
    assert DECISIVE <= found.score <= FLAG_CAP  # for review, never rejected on it
    elsewhere = f"90.9.{draw}.1"
    assert assess(referee(None, elsewhere), {"alice": ref},
                  holders={("visitors", elsewhere): 2}).score < DECISIVE
    gateway = {("visitors", home): rng.randint(12, 80)}
    assert assess(referee(None), {"alice": ref}, holders=gateway).score < DECISIVE
    # A visit by another customer's browser (a housemate who bought too) is theirs.
    assert all(r.code != "household_lease" for r in assess(
        referee("v-dora"), {"alice": ref}, holders=holders).reasons)


@pytest.mark.parametrize("draw", range(4))
def test_the_referrers_own_rare_browser_and_a_family_on_a_popular_phone(draw: int) -> None:
    rng = random.Random(10 + draw)
    customers = rng.randint(600, 2000)
    rare, odd = rng.sample(PHONES, 2)
    home = f"81.3.{draw}.9"
    ref = ReferrerFacts("alice", agents=frozenset({(rare, home), (COMMON, home)}))
    refs = {"alice": ref}
    holders = program(customers, **{rare: rng.randint(2, 3), COMMON: customers // 8,
                                    odd: int(customers * 0.008)})
    holders[("visitors", home)] = 2
    at_home = ConversionFacts(1, "bob", 0.0, ("alice",), agents=frozenset({(rare, home)}),
                              ips=frozenset({home}))
    found = assess(at_home, refs, holders=holders)
    assert found.reasons[0].code == "same_device" and found.score >= DECISIVE
    away = ConversionFacts(2, "bob", 0.0, ("alice",), agents=frozenset({(rare, "10.9.9.9")}))
    assert assess(away, refs, holders=holders).reasons[0].code == "same_device"
    # A browser nearly one in a hundred customers use, away from the referrer's address: a
    # coincidence among hundreds of referrals, not an identity.
    ref2 = ReferrerFacts("alice", agents=frozenset({(odd, home)}))
    far = ConversionFacts(4, "eve", 0.0, ("alice",), agents=frozenset({(odd, "10.9.9.9")}))
    assert assess(far, {"alice": ref2}, holders=holders).reasons == ()
    # A family: the partner's phone is the same popular model, on the same home address.
    family = ConversionFacts(3, "dora", 0.0, ("alice",), agents=frozenset({(COMMON, home)}),
                             ips=frozenset({home}))
    held = assess(family, refs, holders=holders | {("ip", home): 2})
    assert held.score < DECISIVE and all(r.family != "identity" for r in held.reasons)
    # An office's address: few accounts known on it, but many visitors' cookies over time (a
    # gateway): no evidence at all, not even weak.
    gateway = "156.140.162.36"
    colleague = ConversionFacts(5, "fred", 0.0, ("alice",), ips=frozenset({gateway}))
    boss = ReferrerFacts("alice", ips=frozenset({gateway}))
    assert assess(colleague, {"alice": boss}, holders={
        ("ip", gateway): 3, ("visitors", gateway): rng.randint(12, 60)}).reasons == ()


def _program_mix(rng: random.Random, n: int, start: int = 0) -> list[tuple[str, str, str]]:
    """(referrer, customer, browser) of an ordinary program: 40 referrers, the browser mix."""
    weights = [30.0] + [rng.uniform(0.5, 3.0) for _ in PHONES]
    browsers = [COMMON, *PHONES]
    return [(f"r{i % 40}", f"c{start + i}", rng.choices(browsers, weights)[0])
            for i in range(n)]


@pytest.mark.parametrize("draw", range(4))
def test_a_device_farm_on_carrier_addresses_is_one_ring_and_an_influencer_none(draw: int
                                                                               ) -> None:
    """Twelve to thirty referees of one referrer on three phones, each account from another
    carrier address (nothing binds them by address); an influencer's forty referees drawn from
    the program's own browser mix."""
    rng = random.Random(20 + draw)
    rows = _program_mix(rng, 600)
    rows += [("influencer", f"fan{i}", b) for i, (_r, _c, b) in
             enumerate(_program_mix(rng, 40, 1000))]
    phones = rng.sample([COMMON, *PHONES[:4]], 3)
    farm = [("farmer", f"farm{i}", phones[i % 3]) for i in range(rng.randint(12, 30))]
    rows += farm
    agents: dict[str, set[str]] = {}
    for _ref, customer, browser in rows:
        agents.setdefault(customer, set()).add(browser)
    rings = device_farms([(r, c) for r, c, _b in rows], agents)
    assert len(rings) == 1
    assert rings[0].accounts == {("referrer", "farmer")} | {("customer", c) for _r, c, _b in farm}


@pytest.mark.parametrize("draw", range(3))
def test_a_ring_changing_address_for_every_account_is_bound_by_its_odd_phones(draw: int
                                                                             ) -> None:
    """Members refer each other in a chain, each signs up from an address of its own, on a
    few rare phones; a later purchase or two from one shared address. One ring, whole."""
    rng = random.Random(30 + draw)
    size = rng.randint(6, 11)
    members = [f"m{i}" for i in range(size)]
    phones = rng.sample(PHONES, 3)
    rows: list[tuple[tuple[str, str], str | None, str | None]] = [
        (("customer", m), f"7{draw}.{i}.{rng.randint(0, 255)}.1", f"fp-{m}")
        for i, m in enumerate(members)]
    rows += [(("customer", m), "65.11.42.211", None) for m in members[:3]]
    referrals = [(members[i - 1], members[i]) for i in range(1, size)]
    referrals += [(members[i + 1], members[i]) for i in range(0, size - 1, 2)]
    agents = {m: {phones[i % 3]} for i, m in enumerate(members)}
    # The program's other customers, on ordinary browsers and addresses of their own.
    for k, (_r, c, b) in enumerate(_program_mix(rng, 500)):
        rows.append((("customer", c), f"100.{k // 250}.{k % 250}.1", f"fp-{c}"))
        agents[c] = {b if b not in phones else COMMON}
    uses = columns_by_account(rows)
    # The referrers who are members are referrers in the graph.
    for m in members[1:]:
        uses[("referrer", m)] = uses.pop(("customer", m))
    rings = find_rings(uses, referrals, agents=agents)
    group = set(members)
    found = [{p for _k, p in r.accounts} for r in rings if r.kind == "ring"]
    best = max((len(group & f) / len(group | f) for f in found), default=0.0)
    assert best >= 0.8
    held = [r for r in rings if r.kind == "ring" and r.score >= DECISIVE]
    assert held and all(c[0] in ("ip", "device") for r in rings for c in r.shared)


@pytest.mark.parametrize("draw", range(3))
def test_a_campus_club_and_a_carrier_bridge_are_not_a_ring(draw: int) -> None:
    """A club organiser refers thirty to a hundred students behind one to four campus NAT
    addresses, on their own phones; a carrier address bridges them to another referrer's
    people. Named at most as a weak group, never a held ring."""
    rng = random.Random(40 + draw)
    rows: list[tuple[tuple[str, str], str | None, str | None]] = []
    referrals = []
    nats = [f"130.{draw}.0.{k}" for k in range(rng.randint(1, 4))]
    for i in range(rng.randint(30, 100)):
        rows.append((("customer", f"s{i}"), rng.choice(nats), f"phone-{i}"))
        referrals.append(("club", f"s{i}"))
    rows.append((("referrer", "club"), nats[0], "club-phone"))
    for i in range(8):
        rows.append((("customer", f"o{i}"), "100.64.0.1", f"other-{i}"))
        referrals.append(("other", f"o{i}"))
    rows.append((("customer", "s0"), "100.64.0.1", None))
    rings = shared_infrastructure(columns_by_account(rows), referrals)
    assert all(r.score < DECISIVE for r in rings)


@pytest.mark.parametrize("draw", range(3))
def test_colleagues_on_an_office_computer_are_not_a_device_farm(draw: int) -> None:
    """Six to twenty colleagues, one fingerprint (the office's standard computer on its
    network), referred by one of them, most also seen at home; a farm's accounts on one device
    live on its address only."""
    rng = random.Random(50 + draw)
    office = []
    for i in range(rng.randint(6, 20)):
        ips = {"156.140.162.36"} | ({f"211.27.{i}.{draw}"} if i % 3 else set())
        office.append(ConversionFacts(i, f"col{i}", 0.0, ("boss",),
                                      devices=frozenset({"office-pc"}), ips=frozenset(ips)))
    farm = [ConversionFacts(100 + i, f"acct{i}", 0.0, ("farmer",),
                            devices=frozenset({"farm-phone"}), ips=frozenset({"163.1.1.1"}))
            for i in range(rng.randint(6, 20))]
    found = shared_device_reasons(office + farm)
    assert set(found) == {c.conversion_id for c in farm}


@pytest.mark.parametrize("buys", [1, 2, 3])
def test_one_vpn_user_is_one_person_not_a_farm(buys: int) -> None:
    """A referrer's friend on a VPN signs up and buys (several times): one person behind an
    anonymous address. Three or more people through hosting addresses are a farm."""
    def conv(i: int, customer: str, ref: str, hosted: bool) -> ConversionFacts:
        return ConversionFacts(i, customer, 50_000.0 + i, (ref,), touches=(
            touch(40_000.0, referrer=ref, hosting=hosted),))
    rows = [conv(i, f"c{i}", f"r{i % 30}", False) for i in range(300)]
    rows += [conv(1000 + k, "vpn-friend", "alice", True) for k in range(buys + 1)]
    rows += [conv(1100, "pal", "alice", False)]
    rows += [conv(1200 + k, f"bot{k}", "farm", True) for k in range(4)]
    found = referrer_findings(rows, ProgramContext())
    assert "alice" not in found or all(f.reason.code != "hosting_share" for f in found["alice"])
    assert any(f.reason.code == "hosting_share" for f in found.get("farm", []))


@pytest.mark.parametrize("draw", range(4))
def test_one_browser_cookie_behind_two_referees_of_one_referrer(draw: int) -> None:
    """A referrer makes a second (third...) account in the browser that made the first, through
    their own link: one visitor cookie behind several accounts that each earned them a reward.
    Within a day of each other it is one person (rejected, the cookie and the accounts named);
    days apart it may be a family's shared tablet (held for review, not rejected). A public
    terminal (most of the cookie's accounts converting for others) and two friends on their
    own browsers are nothing."""
    rng = random.Random(40 + draw)
    cookie = f"vid-{draw}"
    made = [f"acct{k}" for k in range(rng.randint(2, 4))]
    start = rng.uniform(0, 10_000)
    gaps = [rng.uniform(120, 20_000) for _ in made]
    farm = [ConversionFacts(k, who, start + sum(gaps[:k + 1]), ("alice",),
                            visitors=frozenset({cookie, f"own-{k}"}), amount=1000)
            for k, who in enumerate(made)]
    friends = [ConversionFacts(100 + k, f"friend{k}", start + 50.0 * k, ("alice",),
                               visitors=frozenset({f"fv{k}"}), amount=1000) for k in range(3)]
    found = shared_cookie_reasons(farm + friends)
    assert sorted(found) == list(range(len(made)))
    for conv in farm:
        reason = found[conv.conversion_id]
        assert reason.code == "shared_cookie" and reason.family == "identity" and reason.strong
        # The cookie, and the account made nearest in time, by name.
        nearest = min((c for c in farm if c is not conv), key=lambda c: abs(c.at - conv.at))
        assert cookie in reason.message and nearest.customer in reason.message
        assert reason.value == len(made)
        scored = assess(conv, {}, extra=[reason])
        assert scored.score >= 0.9
        assert "strong identity" in decision_reason(scored.reasons, scored.score).message
    # The same two accounts days apart: a family's tablet as well as one person: held for
    # review (decisive, identity), never rejected on it alone.
    days = rng.uniform(2, 20) * 86400
    tablet = [ConversionFacts(1, "mum", start, ("alice",), visitors=frozenset({cookie})),
              ConversionFacts(2, "son", start + days, ("alice",), visitors=frozenset({cookie}))]
    apart = shared_cookie_reasons(tablet)
    assert sorted(apart) == [1, 2] and not apart[1].strong
    assert "family" in apart[1].message
    assert DECISIVE <= assess(tablet[1], {}, extra=[apart[2]]).score <= FLAG_CAP
    # The cookie's accounts converted through other referrers too (a library computer).
    public = tablet[:1] + [ConversionFacts(2, "son", start + 60, ("alice",),
                                           visitors=frozenset({cookie}))] + [
        ConversionFacts(10 + k, f"visitor{k}", start + 100.0 * k, (f"ref{k}",),
                        visitors=frozenset({cookie})) for k in range(rng.randint(3, 6))]
    assert shared_cookie_reasons(public) == {}
    # A merchant that reports one placeholder visitor id for every customer: not a browser.
    placeholder = [ConversionFacts(k, f"buyer{k}", start + 60.0 * k, ("alice",),
                                   visitors=frozenset({"undefined"})) for k in range(40)]
    assert shared_cookie_reasons(placeholder) == {}
    # Both accounts reach the cookie only through one and the same click: a landing address
    # with its click id, forwarded to a friend, as well as one person: for review, not rejected.
    click = ClickFacts("click-1", start - 300, "alice", cookie, "203.0.113.9", None)
    shared = [ConversionFacts(1, "ann", start, ("alice",), touches=(click,),
                              visitors=frozenset({cookie})),
              ConversionFacts(2, "ben", start + 3600, ("alice",), touches=(click,),
                              visitors=frozenset({cookie}))]
    forwarded = shared_cookie_reasons(shared)
    assert sorted(forwarded) == [1, 2] and not forwarded[2].strong
    assert "forwarded" in forwarded[2].message
    # The same two accounts, each through its own click of that browser: one person.
    again = ClickFacts("click-2", start + 3000, "alice", cookie, "203.0.113.9", None)
    own = [shared[0], ConversionFacts(2, "ben", start + 3600, ("alice",), touches=(again,),
                                      visitors=frozenset({cookie}))]
    assert all(r.strong for r in shared_cookie_reasons(own).values())
    # Two accounts on one cookie, credited to two different referrers: not this signal.
    split = [ConversionFacts(1, "mum", start, ("alice",), visitors=frozenset({cookie})),
             ConversionFacts(2, "son", start + 60, ("bob",), visitors=frozenset({cookie}))]
    assert shared_cookie_reasons(split) == {}


@pytest.mark.parametrize("draw", range(3))
def test_a_ring_member_on_addresses_of_its_own_is_kept_by_its_referral_chain(draw: int
                                                                             ) -> None:
    """A camouflaged ring: eight to twelve accounts, each on an address of its own, pass
    phones from one to the next, sign each other up and buy through each other's links; one
    or two use only an address and a phone of their own, bound to the ring by their
    referrals alone (referred by one member, referring another), which cuts the ring's
    shared phones in parts. It comes back as one flag; a member's genuine friend, referred by
    that member and referring nobody of the ring, is not in it."""
    rng = random.Random(60 + draw)
    size = rng.randint(8, 12)
    members = [f"m{i}" for i in range(size)]
    first = rng.randint(2, size - 3)
    loners = {members[first]} | ({members[first + 3]} if first + 3 < size - 2 else set())
    rows: list[tuple[tuple[str, str], str | None, str | None]] = []
    for i, m in enumerate(members):  # an address and a phone each, the phone shared in turn
        rows.append((("referrer", m), f"8{draw}.{i}.3.9", f"own-{m}"))
    for a, b in pairwise(members):
        if a in loners or b in loners:
            continue
        rows += [(("referrer", a), None, f"phone-{a}-{b}"), (("referrer", b), None,
                                                            f"phone-{a}-{b}")]
    referrals = [(members[i - 1], members[i]) for i in range(1, size)]
    referrals += [(members[i - 2], members[i]) for i in range(2, size, 3)]
    referrals += [(members[0], "friend")]
    rows.append((("customer", "friend"), f"7{draw}.1.1.1", "friend-phone"))
    rings = shared_infrastructure(columns_by_account(rows), referrals)
    group = set(members)
    best = max(rings, key=lambda r: len(group & {p for _k, p in r.accounts}))
    assert {p for _k, p in best.accounts} == group
    assert best.score >= DECISIVE


@pytest.mark.parametrize("draw", range(3))
def test_households_a_referral_apart_stay_two_weak_groups(draw: int) -> None:
    """Two to four families, each on its home address and two or three phones, one parent
    referring the others; one family's parent referred one person of the next family (one
    referral between them). Each family stays a group of its own, and none is held."""
    rng = random.Random(90 + draw)
    rows: list[tuple[tuple[str, str], str | None, str | None]] = []
    referrals: list[tuple[str, str]] = []
    families = []
    for f in range(rng.randint(2, 4)):
        people = [f"f{f}p{i}" for i in range(rng.randint(3, 5))]
        families.append(set(people))
        for i, person in enumerate(people):
            rows.append((("referrer" if i == 0 else "customer", person), f"86.{draw}.{f}.1",
                         f"f{f}-phone{i % rng.randint(2, 3)}"))
            if i:
                referrals.append((people[0], person))
        if f:
            referrals.append((f"f{f - 1}p0", people[1]))
    rings = shared_infrastructure(columns_by_account(rows), referrals)
    for ring in rings:
        people = {p for _k, p in ring.accounts}
        assert sum(1 for family in families if family & people) == 1
        assert ring.score < DECISIVE


@pytest.mark.parametrize("draw", range(3))
def test_a_popular_referrers_friends_in_households_of_their_own_stay_apart(draw: int) -> None:
    """A referrer with many friends: each friend lives in a household of their own (a home
    address, a phone the partner shares) and refers their partner. The referrer is one
    referral tie to each household, which binds none of them to another: each household
    stays a group of its own, and none is held."""
    rng = random.Random(120 + draw)
    rows: list[tuple[tuple[str, str], str | None, str | None]] = []
    referrals: list[tuple[str, str]] = []
    households = []
    for h in range(rng.randint(4, 7)):
        friend, partner = f"h{h}friend", f"h{h}partner"
        households.append({friend, partner})
        phone = f"h{h}-phone"
        rows += [(("referrer", friend), f"84.{draw}.{h}.1", phone),
                 (("customer", partner), f"84.{draw}.{h}.1", phone)]
        referrals += [("hub", friend), (friend, partner)]
    rows.append((("referrer", "hub"), f"85.{draw}.0.1", "hub-phone"))
    rings = shared_infrastructure(columns_by_account(rows), referrals)
    for ring in rings:
        people = {p for _k, p in ring.accounts}
        assert sum(1 for home in households if home & people) <= 1, people
        assert ring.score < DECISIVE


@pytest.mark.parametrize("draw", range(5))
def test_new_accounts_on_the_referrers_own_browser_at_home_and_a_family(draw: int) -> None:
    """The referrer makes two or three accounts on their own phone at home (a private window:
    a new cookie each time), on a browser too popular for one account to tell (a housemate may
    own the same phone). Each further account on it divides the chance of a housemate by the
    browser's share again: held for review, never rejected on it. A family of two identical
    phones (the referrer's partner, one account), a housemate who came back to buy again, and
    colleagues behind an office gateway are not held."""
    rng = random.Random(70 + draw)
    customers = rng.randint(500, 3000)
    share = rng.uniform(0.02, 0.09)  # above RARE_AGENT: one account alone says nothing
    phone = rng.choice(PHONES)
    home = f"81.4.{draw}.{rng.randint(2, 200)}"
    ref = ReferrerFacts("alice", agents=frozenset({(phone, home)}))
    holders = program(customers, **{phone: int(customers * share)})
    holders[("visitors", home)] = rng.randint(1, 4)
    start = rng.uniform(0, 1e6)

    def account(k: int, who: str, at: float, amount: int = 1000,
                ip: str = home) -> ConversionFacts:
        return ConversionFacts(k, who, at, ("alice",), agents=frozenset({(phone, ip)}),
                               ips=frozenset({ip}), visitors=frozenset({f"v-{who}"}),
                               amount=amount)

    made = [account(k, f"acct{k}", start + rng.uniform(1, 40) * 86400)
            for k in range(rng.randint(2, 3))]
    found = own_browser_reasons(made, {"alice": ref}, holders)
    assert sorted(found) == [c.conversion_id for c in made]
    for conv in made:
        reason = found[conv.conversion_id]
        assert reason.code == "own_browser_accounts" and reason.family == "identity"
        assert not reason.strong and reason.value == len(made)
        scored = assess(conv, {"alice": ref}, extra=[reason], holders=holders)
        assert DECISIVE <= scored.score <= FLAG_CAP  # held for review, not rejected
    # A family: the partner's phone is the referrer's model, on the same home address.
    partner = account(10, "dora", start)
    assert own_browser_reasons([partner], {"alice": ref}, holders) == {}
    family = assess(partner, {"alice": ref}, holders=holders)
    assert family.score < DECISIVE
    # ... and a housemate with the same phone who came back to buy again has a life of their
    # own: with the partner, still one new account.
    again = [account(11, "eric", start + 5e5), account(12, "eric", start + 9e5, 2500)]
    assert own_browser_reasons([partner, *again], {"alice": ref}, holders) == {}
    # The referrer's own odd phone, used by one "new" account, beside the partner's popular
    # one: accounts on different browsers do not add up, the partner stays a family.
    odd = rng.choice([p for p in PHONES if p != phone])
    both = ReferrerFacts("alice", agents=frozenset({(phone, home), (odd, home)}))
    oddly = ConversionFacts(13, "fay", start, ("alice",), agents=frozenset({(odd, home)}),
                            ips=frozenset({home}), amount=1000)
    mixed = own_browser_reasons([partner, oddly], {"alice": both},
                                holders | {("agent", odd): 2})
    assert mixed == {}
    # A browser too common for the accounts together (two on one a quarter of the program
    # uses is a one in sixteen chance of a family with that phone).
    popular = program(customers, **{phone: customers // 4}) | {("visitors", home): 2}
    assert own_browser_reasons(made[:2], {"alice": ref}, popular) == {}
    # An office's address (many visitors' cookies over time): colleagues on its standard
    # computer are not the referrer.
    office = holders | {("visitors", home): rng.randint(8, 60)}
    assert own_browser_reasons(made, {"alice": ref}, office) == {}


@pytest.mark.parametrize("draw", range(5))
def test_one_account_on_the_own_browser_of_a_referrer_who_referred_himself(draw: int) -> None:
    """Alice has referred herself once already (an account under her own mailbox, a typo of
    its domain, or her own cookie), and one more new account buys through her link on her own
    popular phone at her home: a housemate owning that model is no longer the likely story,
    the account is held for review (identity, not strong). Bert never referred himself: his
    partner on the very same phone at their home stays paid, and so do Alice's referees on
    her phone's model away from her home, behind an office gateway, or who came back to buy
    again."""
    rng = random.Random(90 + draw)
    customers = rng.randint(500, 3000)
    phone = rng.choice(PHONES)
    holders = program(customers, **{phone: int(customers * rng.uniform(0.03, 0.2))})
    home, bert_home = f"81.5.{draw}.{rng.randint(2, 200)}", f"81.6.{draw}.9"
    holders |= {("visitors", home): rng.randint(1, 4), ("visitors", bert_home): 2}
    mailbox = bytes([draw]) * 32
    alice = ReferrerFacts("alice", mailbox, frozenset({"v-alice"}),
                          agents=frozenset({(phone, home)}))
    bert = ReferrerFacts("bert", bytes([99]) * 32, agents=frozenset({(phone, bert_home)}))
    refs = {"alice": alice, "bert": bert}
    start = rng.uniform(0, 1e6)

    def account(k: int, who: str, ref: str, ip: str, **kw: object) -> ConversionFacts:
        fields: dict[str, object] = {
            "agents": frozenset({(phone, ip)}), "ips": frozenset({ip}),
            "visitors": frozenset({f"v-{who}"}), "amount": 1000}
        fields.update(kw)
        return ConversionFacts(k, who, start + k * 3600, (ref,), **fields)  # type: ignore[arg-type]

    # Her account under her mailbox or her cookie, from a computer at work.
    proof = rng.choice([{"email_hash": mailbox}, {"visitors": frozenset({"v-alice"})}])
    herself = account(1, "alias", "alice", "90.9.9.9", **proof,
                      agents=frozenset({(DESKTOP_UA.format(v=130), "90.9.9.9")}))
    made = account(2, "made", "alice", home)
    partner = account(3, "dora", "bert", bert_home)
    away = account(4, "away", "alice", f"77.{draw}.3.4")
    again = [account(5, "eric", "alice", home), account(6, "eric", "alice", home, amount=2500)]
    found = own_browser_reasons([herself, made, partner, away, *again], refs, holders)
    assert set(found) == {2}, found
    reason = found[2]
    assert reason.code == "self_referrer_browser" and reason.family == "identity"
    assert not reason.strong and reason.value == "alias"
    scored = assess(made, refs, extra=[reason], holders=holders)
    assert DECISIVE <= scored.score <= FLAG_CAP  # held for review, not rejected
    # Without the account that is Alice herself, the same new account is a housemate's.
    assert own_browser_reasons([made, partner], refs, holders) == {}
    assert assess(made, refs, holders=holders).score < DECISIVE
    # Her home behind a gateway (an office's address): her model there is the office's.
    office = holders | {("visitors", home): rng.randint(8, 60)}
    assert own_browser_reasons([herself, made], refs, office) == {}


@pytest.mark.parametrize("draw", range(3))
def test_a_device_farm_on_five_phones_is_found_and_a_club_on_popular_browsers_not(draw: int
                                                                                 ) -> None:
    """A farm on five phones, three to five accounts each (no three of them hold most of its
    accounts), is one ring; a club whose twelve members are on six popular browsers, one or two
    each, is none: a farm's phone carries several accounts."""
    rng = random.Random(40 + draw)
    rows = _program_mix(rng, 600)
    phones = list(PHONES[:5])
    farm = [("farmer", f"farm{i}", phones[i % 5]) for i in range(rng.randint(16, 24))]
    browsers = [COMMON, *PHONES[:5]]
    club = [("club", f"member{i}", browsers[i % 6]) for i in range(12)]
    rows += farm + club
    agents: dict[str, set[str]] = {}
    for _ref, customer, browser in rows:
        agents.setdefault(customer, set()).add(browser)
    rings = device_farms([(r, c) for r, c, _b in rows], agents)
    found = {next(p for k, p in r.accounts if k == "referrer"): r.accounts for r in rings}
    assert found["farmer"] == {("referrer", "farmer")} | {("customer", c) for _r, c, _b in farm}
    assert "club" not in found


@pytest.mark.parametrize("draw", range(3))
def test_a_chains_last_sign_up_on_a_crowded_address_joins_and_its_friends_do_not(draw: int
                                                                                  ) -> None:
    """A recruiting chain of six to nine accounts on two addresses and two phones, each signed
    up through the last one's link. Its last sign-up uses an address that looks like a NAT
    (a crowd: it binds no group by itself), which one of the chain's earlier accounts and a
    stranger use too: tied to the chain by the referral and by that address, it is of the
    ring's review flag (decided on the ring alone: a crowded address holds nobody). The
    stranger is not; nor is a member's genuine friend, on an address and a phone of its own,
    nor another's friend who shares a crowded address with the member who referred it only
    (tied by that referral alone)."""
    rng = random.Random(150 + draw)
    members = [f"m{i}" for i in range(rng.randint(6, 9))]
    homes, phones = [f"9{draw}.4.0.1", f"9{draw}.4.0.2"], [f"ring-a{draw}", f"ring-b{draw}"]
    rows: list[tuple[tuple[str, str], str | None, str | None]] = [
        (("referrer", m), homes[i % 2], phones[(i // 2) % 2]) for i, m in enumerate(members)]
    referrals = list(pairwise(members))
    crowd, other = f"10.{draw}.7.7", f"10.{draw}.8.8"
    earlier = members[rng.randint(1, len(members) - 3)]
    rows += [(("customer", "last"), crowd, "last-phone"), (("referrer", earlier), crowd, None),
             (("customer", "stranger"), crowd, "stranger-phone"),
             (("customer", "friend"), f"7{draw}.1.1.1", "friend-phone"),
             (("customer", "mate"), other, "mate-phone"), (("referrer", members[2]), other, None)]
    referrals += [(members[-1], "last"), ("someone", "stranger"), (members[1], "friend"),
                  (members[2], "mate")]
    rings = shared_infrastructure(columns_by_account(rows), referrals,
                                  crowds={("ip", crowd), ("ip", other)})
    best = max(rings, key=lambda r: len(set(members) & {p for _k, p in r.accounts}))
    assert {p for _k, p in best.accounts} == set(members)
    assert best.score >= DECISIVE
    assert {p for _k, p in chain_ends(best)} == {"last"}
    for flags in (operator_groups(rings, []), operator_groups([replace(best, score=0.4)], [])):
        flag = max(flags, key=lambda r: len(set(members) & {p for _k, p in r.accounts}))
        assert {p for _k, p in flag.accounts} == {*members, "last"}
        assert parts(flag) == [best] or parts(flag)[0].accounts == best.accounts
        assert "chain_ends" in {r["code"] for r in group_flag_reasons(flag)}


@pytest.mark.parametrize("draw", range(3))
def test_a_referrer_joins_an_operators_group_on_two_tied_referees_not_one(draw: int) -> None:
    """An operator's pool of accounts made for two referrers, among a few hundred genuine
    referrals. A link lent to him is credited with two accounts, each on one of the pool's
    browser cookies: it joins the group's review flag. A referrer with one referee who shares
    a cookie with one of the pool's (a flatmate, a borrowed phone: one coincidence) does not,
    however rare such ties are in the program."""
    rng = random.Random(170 + draw)
    pool = [f"p{i}" for i in range(rng.randint(6, 9))]
    convs = [ConversionFacts(i, p, 1000.0 + i, ("opA" if i % 2 else "opB",),
                             visitors=frozenset({f"ck{i}"})) for i, p in enumerate(pool)]
    n = len(convs)
    for i in range(rng.randint(250, 350)):  # genuine referrals, each on a cookie of its own
        convs.append(ConversionFacts(n + i, f"g{i}", 2000.0 + i, (f"r{i % 60}",),
                                     visitors=frozenset({f"own{i}"})))
    n = len(convs)
    convs += [ConversionFacts(n, "x1", 5000.0, ("lone",), visitors=frozenset({"ck0"})),
              ConversionFacts(n + 1, "x2", 5001.0, ("lent",), visitors=frozenset({"ck1"})),
              ConversionFacts(n + 2, "x3", 5002.0, ("lent",), visitors=frozenset({"ck2"}))]
    ring = Ring("collusion_pool", frozenset(("customer", p) for p in pool), frozenset(), 0.85,
                {})
    [flag] = operator_groups([ring], convs)
    people = {p for _k, p in flag.accounts}
    assert {"lent", "x2", "x3", "opA", "opB"} <= people
    assert not {"lone", "x1"} & people
