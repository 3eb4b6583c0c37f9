"""bench/redteam3's generator keeps its own promises: a seed gives the same program, every
mechanism plants labelled purchases with their traces, none of redteam2's fraud leaks in, and
the planted rings name customers and referrers that exist. (The red team itself is a
benchmark, not a test.)"""

from __future__ import annotations

from datetime import UTC, datetime
from functools import cache
from typing import Any

from bench.redteam3.scenario import DISPOSABLE, MECHANISMS, Scenario3

ANCHOR = datetime(2026, 1, 1, tzinfo=UTC)
SEEDS = (1, 2, 3, 4, 6, 7)  # together they draw both variants of every mechanism


@cache
def draw(seed: int) -> dict[str, Any]:
    return Scenario3(seed, quick=True).finish(f"rt3-{seed}", ANCHOR)


def test_a_seed_gives_the_same_program() -> None:
    again = Scenario3(2, quick=True).finish("rt3-2", ANCHOR)
    assert again["labels"] == draw(2)["labels"]
    assert again["clicks"] == draw(2)["clicks"]
    assert draw(3)["clicks"] != again["clicks"]


def test_every_mechanism_plants_purchases_and_nothing_else_is_fraud() -> None:
    variants: dict[str, set[bool]] = {}
    for seed in SEEDS:
        labels = draw(seed)["labels"].values()
        mechs = {lab["mech"] for lab in labels if lab["fraud"]}
        assert mechs == set(MECHANISMS), seed
        assert all(lab["mech"] == "clean" for lab in labels if not lab["fraud"])
        for lab in labels:
            if lab["fraud"]:
                variants.setdefault(lab["mech"], set()).add(lab["evasive"])
    assert all(v == {True, False} for v in variants.values()), variants


def test_labels_are_purchases_on_the_labelled_link() -> None:
    data = draw(1)
    convs = {c["event_id"]: c for c in data["conversions"]}
    codes = {r["code"] for r in data["referrers"]}
    for event_id, lab in data["labels"].items():
        assert convs[event_id]["type"] == "purchase"
        assert lab["code"] in codes
    fraud_codes = {lab["code"] for lab in data["labels"].values() if lab["fraud"]}
    roles = {r["code"]: r["role"] for r in data["referrers"]}
    assert {roles[c] for c in fraud_codes} <= set(MECHANISMS)


def test_rings_name_existing_customers_and_blatant_traces_are_there() -> None:
    for seed in SEEDS:
        data = draw(seed)
        customers = {c["customer_id"] for c in data["conversions"]} | {
            r["external_id"] for r in data["referrers"]}
        assert {r["name"] for r in data["rings"]} == {"collusion_pool", "sleeper_cell"}
        for ring in data["rings"]:
            assert set(ring["members"]) <= customers
    # A blatant account factory signs up disposable mailboxes; a blatant emulator says so.
    mails = {c["email"].split("@")[1] for s in SEEDS
             for c in draw(s)["conversions"] if c.get("email")}
    assert mails & set(DISPOSABLE)
    assert any("sdk_gphone" in c["user_agent"] or "SDK built" in c["user_agent"]
               for s in SEEDS for c in draw(s)["clicks"])
