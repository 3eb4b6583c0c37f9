"""bench/redteam4's generator keeps its promises: a seed gives the same program, every mechanism
(both variants) and every look-alike is planted, and the ground truth agrees with the events
it describes. (The red team itself is a benchmark, not a test.)"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

from bench.redteam4.scenario import LOOKALIKES, MECHANISMS, SELF_VARIANTS, Scenario4

ANCHOR = datetime(2026, 1, 1, tzinfo=UTC)
SEEDS = (1, 2)


@cache
def draw(seed: int) -> dict[str, Any]:
    return Scenario4(seed, quick=True).finish(f"rt4-{seed}", ANCHOR)


def when(ts: str) -> datetime:
    return datetime.fromisoformat(ts.replace("Z", "+00:00"))


def test_a_seed_gives_the_same_program_and_another_seed_another() -> None:
    again = Scenario4(2, quick=True).finish("rt4-2", ANCHOR)
    assert again == draw(2)
    assert draw(1)["clicks"] != again["clicks"]


def test_every_mechanism_variant_and_look_alike_is_planted() -> None:
    looks: set[str] = set()
    self_variants: set[str] = set()
    for seed in SEEDS:
        labels = draw(seed)["labels"].values()
        planted = {(lab["mech"], lab["evasive"]) for lab in labels if lab["fraud"]}
        assert planted == {(m, ev) for m in MECHANISMS for ev in (False, True)}, seed
        self_variants |= {lab["variant"] for lab in labels if lab["mech"] == "self_referral"}
        looks |= {t for lab in labels if not lab["fraud"] for t in lab["tags"]}
        fraud = sum(lab["fraud"] for lab in labels)
        assert 0.1 < fraud / len(labels) < 0.7, seed  # a minority-ish, not all or nothing
    assert self_variants == set(SELF_VARIANTS)
    assert looks == set(LOOKALIKES)


def test_ground_truth_agrees_with_the_events() -> None:
    for seed in SEEDS:
        data = draw(seed)
        clicks, convs = data["clicks"], data["conversions"]
        assert len({c["click_id"] for c in clicks}) == len(clicks)
        assert len({c["event_id"] for c in convs}) == len(convs)
        end = ANCHOR + timedelta(days=60)
        assert all(ANCHOR <= when(x["ts"]) < end for x in clicks)
        assert all(ANCHOR <= when(x["occurred_at"]) < end for x in convs)
        codes = {r["code"] for r in data["referrers"]}
        assert {c["code"] for c in clicks} <= codes
        by_event = {c["event_id"]: c for c in convs}
        by_click = {c["click_id"]: c for c in clicks}
        by_vid: dict[str, list[dict[str, Any]]] = {}
        for c in clicks:
            by_vid.setdefault(c["visitor_id"], []).append(c)
        money_back = {c["original_event_id"] for c in convs if c["type"] in ("refund",
                                                                           "chargeback")}
        # The customer's cookies as their conversions carry them (identity stitching).
        cookies: dict[str, set[str]] = {}
        for c in convs:
            if c.get("visitor_id"):
                cookies.setdefault(c["customer_id"], set()).add(c["visitor_id"])
            if c.get("click_id"):
                cookies.setdefault(c["customer_id"], set()).add(
                    by_click[c["click_id"]]["visitor_id"])
        for event_id, lab in data["labels"].items():
            buy = by_event[event_id]
            assert buy["type"] == "purchase"
            assert lab["refunded"] == (event_id in money_back)
            t = when(buy["occurred_at"])
            touches = [c for v in cookies.get(buy["customer_id"], ()) for c in by_vid[v]
                       if t - timedelta(days=30) <= when(c["ts"]) <= t]
            assert touches, event_id
            assert lab["code"] in {c["code"] for c in touches}
            if lab["fraud"]:
                assert lab["mech"] in MECHANISMS and not lab["tags"]
            else:
                assert lab["tags"] and set(lab["tags"]) <= set(LOOKALIKES)
        people = {c["customer_id"] for c in convs} | {r["external_id"]
                                                      for r in data["referrers"]}
        assert {r["name"] for r in data["rings"]} == {"ring", "device_farm",
                                                      "gift_card_cashout"}
        for ring in data["rings"]:
            assert len(ring["members"]) >= 4 and set(ring["members"]) <= people
            planted = {lab["code"] for lab in data["labels"].values()
                       if lab["fraud"] and lab["mech"] == ring["name"]}
            assert planted  # the ring's purchases are labelled


def test_blatant_traces_are_in_the_events() -> None:
    data = draw(1)
    convs = data["conversions"]
    emails = {c["email"] for c in convs if c.get("email")}
    assert any(e.endswith(("@gmial.com", "@gmal.com", "@gmaill.com", "@gnail.com",
                           "@outlok.com", "@hotmial.com", "@yaho.com", "@iclod.com",
                           "@outllook.com", "@oulook.com", "@hotmal.com", "@hotmail.co",
                           "@yahooo.com", "@yhoo.com", "@icloud.co", "@icoud.com"))
               for e in emails)
    assert any("+" in e for e in emails)
    assert any("HeadlessChrome" in c["user_agent"] or "python" in c["user_agent"]
               or "curl" in c["user_agent"] or "Go-http" in c["user_agent"]
               or "bot" in c["user_agent"].lower() for c in data["clicks"])
