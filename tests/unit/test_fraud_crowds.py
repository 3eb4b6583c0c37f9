"""Addresses that behave like a NAT (issue 13): many accounts on about as many different
browsers as a random crowd of the program's customers would bring. A campus club behind one to
four NAT addresses, whose popular phone models collide in the header fingerprint (it hashes the
browser with the network), is no ring, pool or shared device, at several parameter draws; a
farm of accounts on a few phones at one address, and a ring on two addresses, still are. An
office's standard browser on its gateway is no identity tie between two colleagues."""

from __future__ import annotations

import random
from collections import defaultdict

import pytest

from fraud.assess import DECISIVE, assess
from fraud.pools import collusion_pools
from fraud.rings import find_rings
from fraud.signals import (
    ConversionFacts,
    ReferrerFacts,
    conversion_crowds,
    shared_device_reasons,
)

# Exact User-Agents of phones, the popular ones far more often (Zipf).
PHONES = [f"Mozilla/5.0 (iPhone; CPU iPhone OS 18_{o} like Mac OS X) Version/26.{v} Safari"
          for o in range(3, 8) for v in range(3)] + [
    f"Mozilla/5.0 (Linux; Android {a}; {m}) Chrome/13{v}.0 Mobile"
    for a, m in ((14, "SM-S921B"), (15, "Pixel 8"), (13, "moto g54"), (10, "K"))
    for v in range(3)]
WEIGHTS = [1 / (rank + 1) for rank in range(len(PHONES))]
DESKTOP = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/{v}.0"


def _fingerprint(agent: str, ip: str) -> str:
    """The header fingerprint: the browser and the network (/24)."""
    return f"{PHONES.index(agent) if agent in PHONES else agent}@{ip.rsplit('.', 1)[0]}"


def _buy(i: int, customer: str, ref: str, ip: str, agent: str, at: float,
         amount: int = 1500) -> ConversionFacts:
    return ConversionFacts(i, customer, at, (ref,), ips=frozenset({ip}),
                           devices=frozenset({_fingerprint(agent, ip)}),
                           visitors=frozenset({f"v-{customer}"}), amount=amount,
                           agents=frozenset({(agent, ip)}))


def _world(draw: int) -> tuple[list[ConversionFacts], set[str], set[str], set[str]]:
    """The program's own referrals, a campus club (the organiser and a few members refer the
    rest, within two days, all buying the club's one product), a farm of twelve accounts on two
    phones at one address for one referrer (each buying the cheapest item), and a ring of ten
    accounts on two addresses referring each other: (conversions, students, farm, ring)."""
    rng = random.Random(draw)
    out: list[ConversionFacts] = []
    for i in range(300):
        agent = rng.choices(PHONES, WEIGHTS)[0] if i % 2 else DESKTOP.format(v=120 + i % 9)
        out.append(_buy(i, f"shopper{i}", f"r{i % 60}", f"100.{i % 90}.{i}.1", agent,
                        rng.uniform(0, 5e6), rng.choice((900, 1500, 2500, 4000))))
    nats = [f"130.{draw}.4.{k}" for k in rng.sample(range(2, 250), rng.randint(1, 4))]
    recruiters = ["club"] + [f"student{i}" for i in range(rng.randint(2, 5))]
    students = set()
    for i in range(rng.randint(30, 150)):
        who = f"student{i}"
        ref = "club" if i < len(recruiters) or rng.random() < 0.6 else rng.choice(recruiters)
        out.append(_buy(1000 + i, who, ref, rng.choice(nats), rng.choices(PHONES, WEIGHTS)[0],
                        1e6 + rng.uniform(0, 2 * 86400)))
        students.add(who)
    farm = set()
    for i in range(12):
        out.append(_buy(2000 + i, f"acct{i}", "farmer", f"185.{draw}.3.3", PHONES[i % 2],
                        2e6 + 600 * i, amount=500))
        farm.add(f"acct{i}")
    ring = set()
    for i in range(10):
        out.append(_buy(3000 + i, f"ringer{i}", f"ringer{i - 1}" if i else "boss",
                        f"77.{draw}.9.{1 + i % 2}", PHONES[-1 - i % 2], 3e6 + 3600 * i))
        ring.add(f"ringer{i}")
    return out, students, farm, ring


def _facts(conversions: list[ConversionFacts]) -> tuple[
        dict[tuple[str, str], set[tuple[str, str]]], list[tuple[str, str]],
        dict[str, set[str]], dict[str, set[str]]]:
    referrers = {r for c in conversions for r in c.referrers}
    uses: dict[tuple[str, str], set[tuple[str, str]]] = defaultdict(set)
    agents: dict[str, set[str]] = defaultdict(set)
    on: dict[str, set[str]] = defaultdict(set)
    for c in conversions:
        account = ("referrer" if c.customer in referrers else "customer", c.customer)
        uses[account] |= {("ip", ip) for ip in c.ips} | {("device", d) for d in c.devices}
        for agent, ip in c.agents:
            agents[c.customer].add(agent)
            if ip is not None:
                on[ip].add(agent)
    return dict(uses), [(r, c.customer) for c in conversions for r in c.referrers], agents, on


@pytest.mark.parametrize("draw", range(5))
def test_campus_addresses_and_their_phone_models_are_crowds_a_farms_address_is_not(
        draw: int) -> None:
    conversions, students, farm, ring = _world(draw)
    crowds = conversion_crowds(conversions)
    campus = {("ip", ip) for c in conversions if c.customer in students for ip in c.ips}
    assert campus <= crowds
    # Every fingerprint seen only on campus is a phone model there.
    assert {("device", d) for c in conversions if c.customer in students
            for d in c.devices} <= crowds
    assert not {("ip", ip) for c in conversions if c.customer in farm | ring
                for ip in c.ips} & crowds
    assert not {("device", d) for c in conversions if c.customer in farm | ring
                for d in c.devices} & crowds


@pytest.mark.parametrize("draw", range(5))
def test_a_campus_club_is_no_held_ring_pool_or_shared_device_a_farm_and_a_ring_are(
        draw: int) -> None:
    conversions, students, farm, ring = _world(draw)
    uses, referrals, agents, on = _facts(conversions)
    rings = find_rings(uses, referrals, agents=agents, browsers_on=on)
    rings += collusion_pools(conversions)
    held = {p for r in rings if r.score >= DECISIVE for _kind, p in r.accounts}
    assert not held & students
    assert farm <= held and len(ring & held) >= 8
    devices = shared_device_reasons(conversions)
    assert not {c.conversion_id for c in conversions if c.customer in students} & set(devices)
    assert {c.conversion_id for c in conversions if c.customer in farm} <= set(devices)


@pytest.mark.parametrize("draw", range(3))
def test_a_campus_club_without_the_browsers_on_its_addresses_looks_like_a_farm(
        draw: int) -> None:
    """What the crowd test answers: on the network alone (no browsers known) the club's
    collided fingerprints make it a held ring at most of these draws."""
    held = 0
    for k in range(4):
        conversions, students, _farm, _ring = _world(10 * draw + k)
        uses, referrals, agents, _on = _facts(conversions)
        rings = find_rings(uses, referrals, agents=agents)
        held += any(r.score >= DECISIVE and {p for _kind, p in r.accounts} & students
                    for r in rings)
    assert held >= 2


@pytest.mark.parametrize("draw", range(4))
def test_an_offices_standard_browser_on_its_gateway_is_no_identity(draw: int) -> None:
    """Two colleagues on the office's standard browser, rare in the program, behind the
    office's address where many visitor cookies came with it (one of them also at home, on the
    office's laptop): no identity tie. The referrer's
    own browser at an address where few cookies came with it still is one."""
    rng = random.Random(draw)
    office, build = f"32.15.{draw}.124", DESKTOP.format(v=150 + draw)
    ref = ReferrerFacts("boss", agents=frozenset({(build, office)}))
    colleague = ConversionFacts(1, "col", 1e6, ("boss",), ips=frozenset({office}),
                                agents=frozenset({(build, office)}))
    customers = rng.randint(600, 2000)
    holders = {("agents", ""): customers, ("agent", build): 2,
               ("visitors", office): rng.randint(8, 40)}
    site = holders | {("site", f"{build} @ {office}"): rng.randint(6, 30)}
    assert all(r.code != "same_device" for r in assess(colleague, {"boss": ref},
                                                       holders=site).reasons)
    # The colleague takes the office laptop home: the browser is still the office's.
    laptop = ConversionFacts(2, "col2", 1e6, ("boss",), ips=frozenset({office}), agents=frozenset(
        {(build, office), (build, f"143.{draw}.7.35")}))
    assert all(r.code != "same_device" for r in assess(laptop, {"boss": ref},
                                                       holders=site).reasons)
    own = holders | {("site", f"{build} @ {office}"): 2}
    found = assess(colleague, {"boss": ref}, holders=own)
    assert [r.code for r in found.reasons] == ["same_device"] and found.score >= DECISIVE
