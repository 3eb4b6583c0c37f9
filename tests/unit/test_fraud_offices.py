"""Offices: colleagues behind one office address on its standard-issue computer, referred by a
colleague, buying in working hours. They share everything a device farm shares, and are
clean: the address and the device alone do not hold them (issue 13's evidence model)."""

from __future__ import annotations

import random

import pytest

from fraud.assess import DECISIVE, assess_all, people_rings
from fraud.rings import columns_by_account, shared_infrastructure
from fraud.signals import (
    ConversionFacts,
    ProgramContext,
    shared_device_reasons,
    varied_purchases,
)

CATALOGUE = [1499, 2099, 3099, 4299, 5899, 7499, 9399]
DAY = 86_400.0


def _program(rng: random.Random, n: int = 400) -> list[ConversionFacts]:
    """The program's other customers: their own device and address, what they want to buy
    (the cheapest item most often, as in any shop)."""
    return [ConversionFacts(10_000 + i, f"cust{i}", i * 3600.0, (f"ref{i % 40}",),
                            devices=frozenset({f"phone-{i}"}), ips=frozenset({f"100.{i}.0.1"}),
                            amount=rng.choices(CATALOGUE, weights=[4, 2, 2, 2, 1, 1, 1])[0])
            for i in range(n)]


def _office(rng: random.Random, draw: int) -> list[ConversionFacts]:
    """Six to forty colleagues on one fingerprint and one office address only (they buy at
    work), referred by one colleague; a few come back for a second purchase."""
    out: list[ConversionFacts] = []
    for i in range(rng.randint(6, 40)):
        for _ in range(1 + (rng.random() < 0.2)):
            out.append(ConversionFacts(len(out), f"col{i}", rng.uniform(0, 50) * DAY, ("boss",),
                                       devices=frozenset({"office-pc"}),
                                       ips=frozenset({f"156.140.{draw}.36"}),
                                       amount=rng.choice(CATALOGUE)))
    return out


def _farm(rng: random.Random) -> list[ConversionFacts]:
    """Six to twenty accounts of one phone on one address, each buying the cheapest item
    that earns the reward."""
    return [ConversionFacts(5_000 + i, f"acct{i}", rng.uniform(0, 50) * DAY, ("farmer",),
                            devices=frozenset({"farm-phone"}), ips=frozenset({"163.1.1.1"}),
                            amount=CATALOGUE[0])
            for i in range(rng.randint(6, 20))]


@pytest.mark.parametrize("draw", range(4))
def test_colleagues_who_buy_only_at_work_are_not_a_device_farm(draw: int) -> None:
    rng = random.Random(70 + draw)
    office, farm = _office(rng, draw), _farm(rng)
    found = shared_device_reasons(_program(rng) + office + farm)
    assert set(found) == {c.conversion_id for c in farm}


def test_too_few_purchases_or_one_price_cannot_tell_people_from_a_script() -> None:
    shares = {1499: 0.4, 4299: 0.3, 9399: 0.3}
    assert varied_purchases([1499, 4299, 9399, 4299, 1499, 9399], shares)
    assert not varied_purchases([1499, 4299, 9399], shares)  # too few
    assert not varied_purchases([1499] * 12, shares)  # one basket, again and again
    assert not varied_purchases([1499] * 3 + [4299] * 3, {1499: 0.9, 4299: 0.1})  # one price


@pytest.mark.parametrize("draw", range(4))
def test_an_office_ring_is_named_but_weak_and_its_colleagues_are_not_held(draw: int) -> None:
    """The office and the farm are both groups bound by one device and address; only the
    farm, whose accounts buy alike, stays a held ring. The colleagues' conversions stay
    under review level: one family (network) that cannot tell them from people."""
    rng = random.Random(80 + draw)
    program, office, farm = _program(rng), _office(rng, draw), _farm(rng)
    conversions = program + office + farm
    rows: list[tuple[tuple[str, str], str | None, str | None]] = []
    for c in conversions:
        rows += [(("customer", c.customer), ip, d) for ip in c.ips for d in c.devices]
    rows += [(("referrer", "boss"), f"156.140.{draw}.36", "office-pc"),
             (("referrer", "farmer"), "163.1.1.1", "farm-phone")]
    referrals = [(r, c.customer) for c in conversions for r in c.referrers]
    rings = shared_infrastructure(columns_by_account(rows), referrals)
    strong = [r for r in rings if r.score >= DECISIVE]
    assert {p for r in strong for _k, p in r.accounts} >= {"boss", "farmer"}  # before
    kept = people_rings(rings, conversions)
    held = {p for r in kept if r.score >= DECISIVE for _k, p in r.accounts}
    assert "farmer" in held and "boss" not in held
    assert any(r.evidence.get("varied_purchases") for r in kept)
    assessed = {s.assessment.conversion_id: s.assessment
                for s in assess_all(conversions, {}, ProgramContext(), rings)}
    assert all(assessed[c.conversion_id].score < 0.5 for c in office)
    assert all(assessed[c.conversion_id].score >= 0.5 for c in farm)
    said = [r for r in assessed[office[0].conversion_id].reasons if r.code == "ring_member"]
    assert said and said[0].weight < DECISIVE and "vary as people's do" in said[0].message
