"""bench/redteam6's generator (no database, no engine): deterministic per seed, every referred
purchase labelled by the last click of its browser within 30 days, each fraud mechanism in both
variants over a few seeds, the clean look-alikes present, rings made of ids the data knows, geo
databases readable."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any

import maxminddb

from bench.redteam6.scenario import LOOKALIKES, MECHS, RINGS, VARIANTS, Scenario6

ANCHOR = datetime(2026, 9, 1, tzinfo=UTC)
SEEDS = (1, 2, 4, 6)  # between them every variant and look-alike (quick programs)


@cache
def data(seed: int) -> dict[str, Any]:
    return Scenario6(seed, True).finish(f"rt6-{seed}", ANCHOR)


def when(ts: str) -> datetime:
    return datetime.fromisoformat(ts.replace("Z", "+00:00"))


def test_deterministic_per_seed() -> None:
    a = Scenario6(4, True).finish("rt6-4", ANCHOR)
    assert json.dumps(a, sort_keys=True) == json.dumps(data(4), sort_keys=True)
    assert json.dumps(a["labels"], sort_keys=True) != json.dumps(data(6)["labels"],
                                                                 sort_keys=True)


def test_every_referred_purchase_is_labelled_by_its_last_click() -> None:
    """A purchase's touchpoints: its browser's clicks and those of the visitors tied to its
    customer by earlier conversions; the last one within 30 days names its referrer."""
    for seed in (1, 2):
        d = data(seed)
        clicks = {c["click_id"]: c for c in d["clicks"]}
        by_vid: dict[str, list[dict[str, Any]]] = {}
        for c in d["clicks"]:
            by_vid.setdefault(c["visitor_id"], []).append(c)
        tied: dict[str, list[str]] = {}
        codes = {r["code"] for r in d["referrers"]}
        owner = {r["code"]: r["external_id"] for r in d["referrers"]}
        labelled = 0
        for conv in d["conversions"]:  # in time order
            t = when(conv["occurred_at"])
            if "click_id" in conv:
                click = clicks[conv["click_id"]]
                assert click["visitor_id"] == conv["visitor_id"]
                assert timedelta(0) <= t - when(click["ts"]) <= timedelta(days=30)
                tied.setdefault(conv["customer_id"], []).append(conv["visitor_id"])
            if conv["type"] != "purchase":
                continue
            touch = [c for v in set(tied.get(conv["customer_id"], []))
                     for c in by_vid[v] if timedelta(0) <= t - when(c["ts"])
                     <= timedelta(days=30)]
            lab = d["labels"].get(conv["event_id"])
            last = max(touch, key=lambda c: c["ts"]) if touch else None
            own = last is not None and owner[last["code"]] == conv["customer_id"]
            assert (last is not None and not own) == (lab is not None), conv
            if lab is None or last is None:
                continue
            labelled += 1
            assert lab["code"] == last["code"] and lab["code"] in codes
            if "click_id" in conv:
                assert last["click_id"] == conv["click_id"] or last["ts"] == clicks[
                    conv["click_id"]]["ts"] or last["visitor_id"] != conv["visitor_id"]
            assert {"fraud", "mech", "variant", "evasive", "refunded", "tags"} <= set(lab)
            assert lab["fraud"] or lab["tags"]
        assert labelled == len(d["labels"])


def test_each_mechanism_in_both_variants() -> None:
    seen = {(lab["mech"], lab["evasive"]) for seed in SEEDS
            for lab in data(seed)["labels"].values() if lab["fraud"]}
    for mech in MECHS:
        for evasive in (False, True):
            assert (mech, evasive) in seen, (mech, VARIANTS[mech][evasive])
    for seed in SEEDS:
        fraud = sum(lab["fraud"] for lab in data(seed)["labels"].values())
        assert 0.05 < fraud / len(data(seed)["labels"]) < 0.6


def test_clean_lookalikes_labelled() -> None:
    tags = {t for seed in SEEDS for lab in data(seed)["labels"].values() if not lab["fraud"]
            for t in lab["tags"]}
    assert tags >= set(LOOKALIKES), set(LOOKALIKES) - tags


def test_rings_name_known_ids() -> None:
    for seed in (1, 6):
        d = data(seed)
        ids = ({r["external_id"] for r in d["referrers"]}
               | {c["customer_id"] for c in d["conversions"]})
        assert d["rings"]
        for ring in d["rings"]:
            mech = ring["name"].rsplit("-", 1)[0]
            assert mech in RINGS and ring["variant"] in VARIANTS[mech]
            assert len(ring["members"]) > 3 and set(ring["members"]) <= ids


def test_geo_databases_cover_the_clicks(tmp_path: Path) -> None:
    scen = Scenario6(2, True)
    d = scen.finish("rt6-2", ANCHOR)
    scen.world.write_geo(tmp_path)
    with maxminddb.open_database(str(tmp_path / "GeoLite2-City.mmdb")) as city, \
            maxminddb.open_database(str(tmp_path / "GeoLite2-ASN.mmdb")) as asn:
        for c in d["clicks"][:300]:
            rec = city.get(c["ip"])
            assert isinstance(rec, dict)
            country = rec["country"]
            assert isinstance(country, dict) and country["iso_code"]
            a = asn.get(c["ip"])
            assert isinstance(a, dict)
            number = a["autonomous_system_number"]
            assert isinstance(number, int) and number > 0
    with maxminddb.open_database(str(tmp_path / "GeoIP2-Anonymous-IP.mmdb")) as anon:
        got = anon.get(scen.world.relays[0].ip(7))
        assert isinstance(got, dict) and got["is_anonymous"]
        got = anon.get(scen.world.hosting[0].ip(3))
        assert isinstance(got, dict) and got["is_hosting_provider"]
