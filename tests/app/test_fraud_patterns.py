"""Precision and recall per planted fraud pattern, on generated labelled traffic."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest

from tests.traffic import HARD_PATTERNS, LOOKALIKES, PATTERNS, generate, generate_hard
from tracker.finance.clearance import release
from tracker.scoring.backtest import backtest
from tracker.scoring.credits import attribute_pending
from tracker.scoring.risk import FLAG_AT, scan


@pytest.mark.parametrize("seed", [11, 29])
async def test_precision_and_recall_per_pattern(conn: asyncpg.Connection, seed: int) -> None:
    traffic = await generate(conn, seed=seed)
    await attribute_pending(conn)
    await scan(conn, "gen")
    risk = {r["event_id"]: r["score"] for r in await conn.fetch(
        """SELECT c.event_id, r.score FROM conversion_risk r
           JOIN conversions c ON c.program_id = r.program_id AND c.id = r.conversion_id""")}
    # A conversion without credit earns nobody a reward: the bot filter already neutralised it
    # (a click farm's scripted clicks are not touchpoints). Those count as caught.
    credited = {r["event_id"] for r in await conn.fetch(
        """SELECT DISTINCT c.event_id FROM credits cr
           JOIN conversions c ON c.program_id = cr.program_id AND c.id = cr.conversion_id""")}
    held = {e for e, s in risk.items() if s >= FLAG_AT} | (set(traffic.labels) - credited)
    fraud = {e for e, p in traffic.labels.items() if p != "organic"}
    organic = {e for e, p in traffic.labels.items() if p == "organic"} & credited
    true_positives = held & fraud
    precision = len(true_positives) / max(len(held), 1)
    recall = len(true_positives) / len(fraud)
    false_hold_rate = len(held & organic) / len(organic)
    print(f"\noverall: precision {precision:.3f}, recall {recall:.3f}, "
          f"clean conversions held {false_hold_rate:.2%} ({len(held & organic)}/{len(organic)})")
    per_pattern = {}
    for pattern in PATTERNS:
        events = {e for e, p in traffic.labels.items() if p == pattern}
        caught = len(events & held) / len(events)
        per_pattern[pattern] = caught
        print(f"  {pattern:<18} recall {caught:.2f} ({len(events & held)}/{len(events)})")
    # The targets, on two traffics (the second unseen while the engine was tuned).
    assert precision >= 0.95
    assert recall >= 0.90
    assert false_hold_rate <= 0.02
    for pattern, caught in per_pattern.items():
        assert caught >= 0.75, pattern
    # Explainability: every flag has a reason with a measured value and a threshold.
    flags = await conn.fetch("SELECT kind, reasons::text AS reasons FROM fraud_flags")
    assert flags
    for flag in flags:
        reasons = json.loads(flag["reasons"])
        assert reasons, flag["kind"]
        assert all(r["value"] is not None and r["threshold"] is not None for r in reasons)


async def test_incremental_scan_agrees_with_full_scan(conn: asyncpg.Connection) -> None:
    """Conversions no scan has seen get the verdict a full scan would give them, from their
    neighbourhood alone; rings are found again even when no stored ring knows them."""
    traffic = await generate(conn)
    await attribute_pending(conn)
    await scan(conn, "gen")
    full = {r["event_id"]: (r["score"], r["scan_id"]) for r in await conn.fetch(
        """SELECT c.event_id, r.score, r.scan_id FROM conversion_risk r
           JOIN conversions c ON c.program_id = r.program_id AND c.id = r.conversion_id""")}
    # Forget a third of the organic conversions, every fraudulent one, and every ring.
    events = sorted(full)
    unseen = {e for i, e in enumerate(events) if i % 3 == 0 or traffic.labels[e] != "organic"}
    await conn.execute(
        """DELETE FROM conversion_risk r USING conversions c
           WHERE c.program_id = r.program_id AND c.id = r.conversion_id
             AND c.event_id = ANY($1::text[])""", sorted(unseen))
    await conn.execute("DELETE FROM fraud_flags WHERE conversion_id IS NULL "
                       "OR conversion_id NOT IN (SELECT conversion_id FROM conversion_risk)")
    summaries = await scan(conn, "gen", incremental=True)
    assert summaries[0].mode == "incremental" and summaries[0].conversions == len(unseen)
    assert summaries[0].rings  # found again from the neighbourhood
    after = {r["event_id"]: (r["score"], r["scan_id"]) for r in await conn.fetch(
        """SELECT c.event_id, r.score, r.scan_id FROM conversion_risk r
           JOIN conversions c ON c.program_id = r.program_id AND c.id = r.conversion_id""")}
    assert after.keys() == full.keys()
    assert all(after[e] == full[e] for e in set(full) - unseen)  # the rest untouched
    agree = sum((after[e][0] >= FLAG_AT) == (full[e][0] >= FLAG_AT) for e in unseen)
    # Fraud that earns credit (the click farm's bot clicks are no touchpoints: nothing to hold).
    credited = {r["event_id"] for r in await conn.fetch(
        """SELECT DISTINCT c.event_id FROM credits cr
           JOIN conversions c ON c.program_id = cr.program_id AND c.id = cr.conversion_id""")}
    fraud = {e for e in unseen & credited if traffic.labels[e] != "organic"}
    caught = {e for e in fraud if after[e][0] >= FLAG_AT}
    print(f"\nincremental vs full: {agree}/{len(unseen)} verdicts agree; "
          f"fraud caught {len(caught)}/{len(fraud)}")
    assert agree / len(unseen) >= 0.95
    assert len(caught) / len(fraud) >= 0.9
    # Nothing new: the next incremental scan does nothing and records no scan.
    again = await scan(conn, "gen", incremental=True)
    assert again[0].scan_id is None and again[0].conversions == 0


async def test_backtest_shows_what_other_settings_would_change(
    conn: asyncpg.Connection, dsn: str, tmp_path: Path
) -> None:
    traffic = await generate(conn)
    await attribute_pending(conn)
    await scan(conn, "gen")
    changes, replayed = await backtest(conn, {}, "gen")
    assert replayed > 200 and changes == []  # the program's own settings change nothing
    changes, _ = await backtest(conn, {"disabled_reasons": ["self_referral"]}, "gen")
    moved = {c.event_id for c in changes}
    self_referrals = {e for e, p in traffic.labels.items() if p == "self_referral"}
    assert moved and moved <= {e for e, p in traffic.labels.items() if p != "organic"}
    # Without that reason every change is a milder outcome; a self-referral with nothing else
    # against it is approved, one that is also in a ring stays flagged.
    severity = {"approved": 0, "flagged": 1, "rejected": 2}
    assert all("self_referral" in c.reasons and severity[c.after] < severity[c.before]
               for c in changes)
    assert {c.event_id for c in changes if c.after == "approved"} & self_referrals
    stricter, _ = await backtest(conn, {"review_at": 0.2, "reject_at": 0.5}, "gen")
    assert stricter and all(c.after in ("flagged", "rejected") for c in stricter)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"review_at": 2}))
    out = subprocess.run([sys.executable, "-m", "tracker", "fraud", "backtest", "--settings",
                          str(bad)], env={"REFGUARD_DATABASE_URL": dsn,
                                          "REFGUARD_DATA_DIR": str(tmp_path / "d")},
                         capture_output=True, text=True, check=False, timeout=120)
    assert out.returncode == 2 and "review_at" in out.stderr
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"weights": {"fast_conversion": 0.0, "delay_distribution": 0,
                                             "injection_timing": 0, "conversion_rate": 0,
                                             "steady_converting": 0}}))
    out = subprocess.run([sys.executable, "-m", "tracker", "fraud", "backtest", "--settings",
                          str(good), "--program", "gen"],
                         env={"REFGUARD_DATABASE_URL": dsn,
                              "REFGUARD_DATA_DIR": str(tmp_path / "d")},
                         capture_output=True, text=True, check=False, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "would change" in out.stdout and "-> approved" in out.stdout
    out = subprocess.run([sys.executable, "-m", "tracker", "fraud", "backtest", "--settings",
                          str(good), "--program", "nosuch"],
                         env={"REFGUARD_DATABASE_URL": dsn,
                              "REFGUARD_DATA_DIR": str(tmp_path / "d")},
                         capture_output=True, text=True, check=False, timeout=120)
    assert out.returncode == 2 and "no program 'nosuch'" in out.stderr


async def test_a_model_of_finance_decisions_joins_once_there_are_enough(
    conn: asyncpg.Connection,
) -> None:
    traffic = await generate(conn)
    await conn.execute("""UPDATE programs SET settings = '{"hold_days": 0, "reward": {"rules":
        [{"beneficiary": "referrer", "on": "purchase", "flat": 1000}]}}'""")
    await release(conn)  # attributes, scans, creates the rewards and decides them
    assert (await scan(conn, "gen"))[0].supervised == {"enabled": False}
    # Finance has decided every reward: the planted fraud rejected, the rest approved.
    fraud = sorted(e for e, p in traffic.labels.items() if p != "organic")
    decided = await conn.fetchval(
        """WITH d AS (
               UPDATE rewards r SET decided_by = 'token:9:finance', decided_at = now(),
                      status = CASE WHEN c.event_id = ANY($1::text[]) THEN 'rejected'
                                    ELSE 'approved' END
               FROM conversions c WHERE c.program_id = r.program_id AND c.id = r.conversion_id
               RETURNING 1)
           SELECT count(*) FROM d""", fraud)
    assert decided >= 200
    summary = (await scan(conn, "gen"))[0]
    model = summary.supervised
    print(f"\nfinance model: {model}")
    assert model["enabled"] and model["decisions"] == decided
    assert model["validation_auc"] >= 0.8
    noted = {r["event_id"] for r in await conn.fetch(
        """SELECT c.event_id FROM conversion_risk k
           JOIN conversions c ON c.program_id = k.program_id AND c.id = k.conversion_id
           WHERE k.reasons @> '[{"code": "finance_model"}]'""")}
    rewarded = {r["event_id"] for r in await conn.fetch(
        "SELECT c.event_id FROM rewards r JOIN conversions c ON c.id = r.conversion_id")}
    organic = {e for e, p in traffic.labels.items() if p == "organic"} & rewarded
    rejected = set(fraud) & rewarded
    assert rejected and organic
    assert len(noted & rejected) >= 0.5 * len(rejected)
    assert len(noted & organic) <= 0.02 * len(organic)


@pytest.mark.parametrize("draw", [0, 1, 2])
async def test_lookalikes_are_not_held_and_hidden_fraud_is(conn: asyncpg.Connection,
                                                           draw: int) -> None:
    """Honest households, offices, a campus club and a carrier NAT share addresses and
    fingerprints with their referrers; a typo'd e-mail, a household lease, a residential click
    farm, incentivised sign-ups and a device farm hide in ordinary-looking traffic. Each at
    three parameter draws."""
    hard = await generate_hard(conn, draw=draw)
    await attribute_pending(conn)
    await scan(conn, "gen")
    rows = await conn.fetch(
        """SELECT c.event_id, r.score, r.reasons::text AS reasons FROM conversion_risk r
           JOIN conversions c ON c.program_id = r.program_id AND c.id = r.conversion_id""")
    risk = {r["event_id"]: r["score"] for r in rows}
    reasons = {r["event_id"]: json.loads(r["reasons"]) for r in rows}
    kinds: dict[str, set[str]] = {}
    for event, kind in hard.kinds.items():
        kinds.setdefault(kind, set()).add(event)
    held = {e for e, s in risk.items() if s >= FLAG_AT}
    rejected = {e for e, s in risk.items() if s >= 0.9}
    for kind, events in sorted(kinds.items()):
        print(f"\n  {kind:<22} held {len(events & held)}/{len(events)}, "
              f"rejected {len(events & rejected)}", end="")
    for kind in LOOKALIKES:
        assert not kinds[kind] & rejected, kind
        assert len(kinds[kind] & held) <= 0.05 * len(kinds[kind]), kind
    assert not kinds["incentivised_genuine"] & held
    organic = {e for e, p in hard.traffic.labels.items() if p == "organic"} & set(risk)
    assert len(organic & held) <= 0.02 * len(organic)
    for pattern in HARD_PATTERNS:
        assert len(kinds[pattern] & held) >= 0.75 * len(kinds[pattern]), pattern
    assert kinds["typo_email"] <= rejected  # strong identity: rejected outright
    # Every held conversion says which families decided it, in plain words.
    for event in held:
        decided = [r for r in reasons[event] if r["code"] == "decided_by"]
        assert decided and decided[0]["message"].startswith("held on "), event
    # The device farm is one ring, not split: its referrer and (nearly) all its customers.
    farm = {("customer", f"dev{k}") for k in range(15 + 5 * draw)} | {("referrer", "devfarm")}
    rings = [{(m["type"], m["id"]) for m in json.loads(r["members"])
              if m["type"] in ("customer", "referrer")}
             for r in await conn.fetch("SELECT members::text AS members FROM fraud_flags "
                                       "WHERE kind = ANY('{ring,dense_block}')")]
    best = max((len(farm & ring) / len(farm | ring) for ring in rings), default=0.0)
    assert best >= 0.8
