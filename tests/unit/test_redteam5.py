"""bench/redteam5's generator (no database, no engine): deterministic per seed, every referred
purchase labelled, each fraud mechanism in both variants over a few seeds, the clean
look-alikes present, rings made of ids the data knows, geo databases readable."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

import maxminddb

from bench.redteam5.scenario import MECHS, VARIANTS, Scenario5

ANCHOR = datetime(2026, 9, 1, tzinfo=UTC)
SEEDS = range(1, 9)
LOOKALIKES = {"friend", "power_referrer", "carrier_nat", "household", "family_device",
              "public_wifi", "privacy", "roaming", "promo_day", "re_referral",
              "mutual_referral", "store_wifi", "refunded", "creator", "school", "community",
              "coworking", "corporate_vpn", "fraudster_genuine"}


@cache
def data(seed: int) -> dict[str, Any]:
    return Scenario5(seed, True).finish(f"rt5-{seed}", ANCHOR)


def test_deterministic_per_seed() -> None:
    a = Scenario5(3, True).finish("rt5-3", ANCHOR)
    b = Scenario5(3, True).finish("rt5-3", ANCHOR)
    assert json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)
    c = data(4)
    assert json.dumps(a["labels"], sort_keys=True) != json.dumps(c["labels"], sort_keys=True)


def test_every_referred_purchase_is_labelled() -> None:
    for seed in (1, 2):
        d = data(seed)
        click_ids = {c["click_id"] for c in d["clicks"]}
        first_seen: dict[str, str] = {}
        for c in d["clicks"]:
            if "visitor_id" in c:
                first_seen.setdefault(c["visitor_id"], c["ts"])
        purchases = {c["event_id"]: c for c in d["conversions"] if c["type"] == "purchase"}
        assert set(d["labels"]) <= set(purchases)
        for eid, conv in purchases.items():
            referred = ("click_id" in conv or first_seen.get(conv.get("visitor_id", ""), "~")
                        < conv["occurred_at"])
            assert referred == (eid in d["labels"]), conv
            if "click_id" in conv:
                assert conv["click_id"] in click_ids
        codes = {r["code"] for r in d["referrers"]}
        for lab in d["labels"].values():
            assert lab["code"] in codes
            assert {"fraud", "mech", "variant", "evasive", "refunded", "tags"} <= set(lab)
            assert lab["fraud"] or lab["tags"]


def test_each_mechanism_in_both_variants() -> None:
    seen = {(lab["mech"], lab["evasive"]) for seed in SEEDS
            for lab in data(seed)["labels"].values() if lab["fraud"]}
    for mech in MECHS:
        for evasive in (False, True):
            assert (mech, evasive) in seen, (mech, VARIANTS[mech][evasive])
    for seed in SEEDS:
        fraud = sum(lab["fraud"] for lab in data(seed)["labels"].values())
        assert 0.1 < fraud / len(data(seed)["labels"]) < 0.5


def test_clean_lookalikes_labelled() -> None:
    tags = {t for seed in SEEDS for lab in data(seed)["labels"].values() if not lab["fraud"]
            for t in lab["tags"]}
    assert tags >= LOOKALIKES, LOOKALIKES - tags


def test_rings_name_known_ids() -> None:
    for seed in (1, 5):
        d = data(seed)
        ids = ({r["external_id"] for r in d["referrers"]}
               | {c["customer_id"] for c in d["conversions"]})
        assert d["rings"]
        for ring in d["rings"]:
            assert ring["members"] and set(ring["members"]) <= ids
            assert ring["variant"] in VARIANTS[ring["name"].rsplit("-", 1)[0]]


def test_geo_databases_cover_the_clicks(tmp_path: Path) -> None:
    scen = Scenario5(2, True)
    d = scen.finish("rt5-2", ANCHOR)
    scen.world.write_geo(tmp_path)
    with maxminddb.open_database(str(tmp_path / "GeoLite2-City.mmdb")) as city, \
            maxminddb.open_database(str(tmp_path / "GeoLite2-ASN.mmdb")) as asn:
        for c in d["clicks"][:300]:
            rec = city.get(c["ip"])
            assert isinstance(rec, dict) and rec["country"]["iso_code"]
            a = asn.get(c["ip"])
            assert isinstance(a, dict) and a["autonomous_system_number"] > 0
    with maxminddb.open_database(str(tmp_path / "GeoIP2-Anonymous-IP.mmdb")) as anon:
        relay = scen.world.relays[0].ip(7)
        got = anon.get(relay)
        assert isinstance(got, dict) and got["is_anonymous"]
