"""Ablation of the fraud engine on the red team's seeds (issue 13, part 4): what each family of
evidence and the supervised model add to the decisions. (The pyod detectors have no line: they
name unusual referrers as `anomaly` flags for finance, fraud.anomaly, and no decision depends
on them.)

This module is evaluation, not the adversary: unlike the generator (world.py, scenario.py) it
imports the engine. After a seed's normal run and scoring, each referrer reward's stored
reasons (GET /api/v1/rewards answers them with their family, weight and `strong`) are
re-combined by the engine's own `fraud.assess.combine` without one group of reasons, and the
risk is turned into a status by clearance's own `tracker.finance.clearance.verdict` under the
program's review_at / reject_at. Those counterfactual statuses are scored by the normal scoring
code (bench.redteam2.score). Nothing is re-run, so it is exact where it can be: the "full
engine" line re-combines every reason and must give the normal run's figures (checked per
reward: the risk re-combined equals the stored risk, the status equals the stored status).

What it measures is the decision without a group's reasons, everything else as it was: the
other families' reasons are not recomputed (none of them reads another family's result today;
rings are network evidence and stay in the network family).

Only rewards that clearance decided (approved, flagged or rejected by risk) are recomputed;
reversed (refunded), pending and absent ones keep their status, as they would without the
group: a reversal does not depend on the risk, and those hold_days 0 never leaves pending.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from bench.redteam2.score import score, summarise
from fraud.assess import DECISIVE, FAMILIES, combine
from fraud.signals import Reason
from fraud.supervised import MIN_DECISIONS
from tracker.finance.clearance import ACTOR, ProgramRules, verdict
from tracker.finance.queries import ProgramSettings

FULL = "full engine"
DECIDED = frozenset({"approved", "flagged", "rejected"})  # the statuses clearance gives by risk
DECISION_CODE = "decided_by"  # fraud.assess.decision_reason: told after the risk, weight 0
SUPERVISED_CODES = frozenset({"finance_model"})  # fraud.assess.finance_model_reasons
SUPERVISED = "supervised model"
KEPT = ("fraud", "clean", "caught", "held_clean", "precision", "recall", "recall_strict",
        "clean_held", "recall_by_mechanism", "recall_by_variant", "held_by_lookalike", "rings")
# The figures the full-engine line must reproduce exactly.
CHECKED = ("fraud", "clean", "caught", "held_clean", "precision", "recall", "recall_strict",
           "clean_held", "recall_by_mechanism", "recall_by_variant", "held_by_lookalike")

Drop = Callable[[Reason], bool]


def _family(r: Reason) -> str:
    return r.family or r.code  # as fraud.assess.combine groups them


def groups() -> dict[str, Drop]:
    """What each line of the table leaves out: nothing, each family of fraud.assess.FAMILIES
    (as the engine has them when this runs), the finance model's reasons."""
    def nothing(r: Reason) -> bool:
        return False

    def of_family(family: str) -> Drop:
        return lambda r: _family(r) == family

    out: dict[str, Drop] = {FULL: nothing}
    for family in FAMILIES:
        out[f"without {family}"] = of_family(family)
    out[f"without {SUPERVISED}"] = lambda r: r.code in SUPERVISED_CODES
    return out


_FIELDS = tuple(f.name for f in dataclasses.fields(Reason))


def engine_reason(raw: Mapping[str, Any]) -> Reason | None:
    """A stored reason (JSON object) as the engine's Reason; None for the decision's own note
    (added after the risk) and for anything that is not a weighted reason."""
    if not isinstance(raw, Mapping) or raw.get("code") == DECISION_CODE:
        return None
    weight = raw.get("weight")
    if not isinstance(weight, int | float):
        return None
    known = {k: raw[k] for k in _FIELDS if k in raw}
    known.setdefault("message", "")
    known.setdefault("value", None)
    known.setdefault("threshold", None)
    known["code"] = str(raw.get("code") or "")
    known["family"] = str(raw.get("family") or "")
    known["strong"] = bool(raw.get("strong", False))
    known["weight"] = float(weight)
    return Reason(**known)


def reasons_of(reward: Mapping[str, Any]) -> list[Reason]:
    return [r for r in (engine_reason(x) for x in reward.get("reasons") or []) if r is not None]


def program_rules(settings: Mapping[str, Any]) -> ProgramRules:
    """Clearance's view of the program (review_at, reject_at, reject_action, defaults)."""
    return ProgramRules.load(ProgramSettings(0, "", dict(settings)))


def by_clearance(reward: Mapping[str, Any]) -> bool:
    """A status clearance gave by risk (not finance's own decision, not a reversal)."""
    return reward.get("status") in DECIDED and reward.get("decided_by") in (None, ACTOR)


def counterfactual(rewards: Sequence[Mapping[str, Any]], rules: ProgramRules,
                   drop: Drop) -> list[dict[str, Any]]:
    """The rewards with the status clearance would give them without the reasons `drop`
    picks: risk = fraud.assess.combine(the others), status = clearance's verdict."""
    out = []
    for reward in rewards:
        new = dict(reward)
        if by_clearance(reward):
            kept = [r for r in reasons_of(reward) if not drop(r)]
            new["risk_score"] = combine(kept)
            new["status"] = verdict(rules, new["risk_score"])
        out.append(new)
    return out


def check(rewards: Sequence[Mapping[str, Any]], rules: ProgramRules) -> dict[str, Any]:
    """The recombination against the run: every decided reward's stored risk and status
    from its stored reasons."""
    n = risk_off = status_off = 0
    examples: list[dict[str, Any]] = []
    for reward in rewards:
        if not by_clearance(reward):
            continue
        n += 1
        risk = combine(reasons_of(reward))
        stored = reward.get("risk_score")
        bad_risk = stored is None or abs(risk - float(stored)) > 1e-9
        bad_status = verdict(rules, risk) != reward["status"]
        risk_off += bad_risk
        status_off += bad_status
        if (bad_risk or bad_status) and len(examples) < 5:
            examples.append({"id": reward.get("id"), "status": reward["status"],
                             "stored_risk": stored, "recombined": risk})
    return {"decided": n, "risk_mismatch": risk_off, "status_mismatch": status_off,
            "examples": examples}


def fired(rewards: Sequence[Mapping[str, Any]], drop: Drop) -> dict[str, int]:
    """How many decided referrer rewards carry a reason of the group, and a decisive one."""
    some = decisive = 0
    for reward in rewards:
        if not by_clearance(reward) or reward.get("beneficiary", "referrer") != "referrer":
            continue
        mine = [r for r in reasons_of(reward) if drop(r)]
        some += bool(mine)
        decisive += any(r.weight >= DECISIVE for r in mine)
    return {"with_reason": some, "decisive": decisive}


def ablate(labels: dict[str, dict[str, Any]], rings: list[dict[str, Any]],
           rewards: list[dict[str, Any]], flags: list[dict[str, Any]],
           settings: Mapping[str, Any]) -> dict[str, Any]:
    """One seed's ablation: the check, and per group its reasons' reach, the statuses it
    changes and the counterfactual score (the normal scoring code, same flags)."""
    rules = program_rules(settings)
    out: dict[str, Any] = {"check": check(rewards, rules), "fired": {}, "changed": {},
                           "scores": {}}
    for name, drop in groups().items():
        new = counterfactual(rewards, rules, drop)
        out["fired"][name] = fired(rewards, drop)
        out["changed"][name] = sum(1 for a, b in zip(rewards, new, strict=True)
                                   if a["status"] != b["status"])
        full = score(labels, rings, new, flags)
        out["scores"][name] = {k: full[k] for k in KEPT}
    return out


def full_matches(run: dict[str, Any]) -> list[str]:
    """The figures where the full-engine line differs from the normal run (none: exact)."""
    mine = run["ablation"]["scores"][FULL]
    return [k for k in CHECKED if mine[k] != run["score"][k]]


# -- the table ------------------------------------------------------------------------------------


def _f(v: float | None, pct: bool = False) -> str:
    if v is None:
        return "-"
    return f"{v * 100:.1f}%" if pct else f"{v:.3f}"


def _d(v: float | None, base: float | None, pct: bool = False) -> str:
    """The delta, in points for a percentage; "=" when there is none."""
    if v is None or base is None:
        return ""
    d = v - base
    if abs(d) < 5e-5:
        return "="
    return f"{d * 100:+.1f}" if pct else f"{d:+.3f}"


def structural(runs: list[dict[str, Any]]) -> dict[str, str]:
    """Groups that cannot change a decision in these runs, and why (not a measurement)."""
    ok = [r for r in runs if "ablation" in r]
    notes: dict[str, str] = {}

    def total(name: str) -> int:
        return sum(r["ablation"]["fired"][name]["with_reason"] for r in ok)

    scans = [s for r in ok for s in (r.get("pipeline", {}).get("scan") or [])
             if isinstance(s, dict)]
    model_on = any(s.get("supervised", {}).get("enabled") for s in scans)
    if not model_on and total(f"without {SUPERVISED}") == 0:
        note = (f"structural zero: the finance model learns finance's own approve/reject "
                f"decisions and is off below {MIN_DECISIONS} of them (fraud.supervised."
                f"MIN_DECISIONS); a red-team program has none, so every scan ran it off "
                f"(scan summary supervised.enabled false) and it gave no reason")
        notes[f"without {SUPERVISED}"] = note
        if "model" in FAMILIES and total("without model") == 0:
            notes["without model"] = "the same: its only reason is the finance model's"
    return notes


def print_table(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The table: full engine vs without each group, mean and worst seed, with the delta;
    recall per mechanism (mean) per group. Returns the summaries it printed."""
    ok = [r for r in runs if "ablation" in r]
    if not ok:
        print("\nablation: no seed finished")
        return {}
    names = list(ok[0]["ablation"]["scores"])
    short = [{FULL: "full", f"without {SUPERVISED}": "supervised"}
             .get(n, n.removeprefix("without ")) for n in names]
    summ = {name: summarise([{"seed": r["seed"], "seconds": 0.0,
                              "score": r["ablation"]["scores"][name]} for r in ok])
            for name in names}
    notes = structural(ok)
    off = {r["seed"]: full_matches(r) for r in ok}
    checks = [r["ablation"]["check"] for r in ok]
    print()
    print(f"ablation over {len(ok)} seed(s): decisions re-combined from each reward's stored "
          "reasons without a group (fraud.assess.combine, clearance's verdict)")
    decided = sum(c["decided"] for c in checks)
    print(f"  check: {decided} decided rewards, stored risk re-combined: "
          f"{sum(c['risk_mismatch'] for c in checks)} differ; status: "
          f"{sum(c['status_mismatch'] for c in checks)} differ; full-engine line = normal run: "
          + ("exact on every seed" if not any(off.values())
             else "DIFFERS on " + ", ".join(f"seed {s} ({', '.join(k)})"
                                            for s, k in off.items() if k)))
    base = summ[FULL]
    print("  mean and worst seed (each line's own worst seed), delta against the full engine")
    print(f"  {'':<26}{'precision':^28}{'recall':^28}{'clean held':^28}"
          f"{'changed':>8}{'reasons':>8}{'decisive':>9}")
    print(f"  {'':<26}" + f"{'mean':>7}{'':7}{'worst':>7}{'':7}" * 3)
    for name in names:
        s = summ[name]
        cells = ""
        for key, pct in (("precision", False), ("recall", False), ("clean_held", True)):
            a, b = s[key], base[key]
            for part in ("mean", "worst"):
                cells += (f"{_f(a and a[part], pct):>7}"
                          f"{_d(a and a[part], b and b[part], pct):>7}")
        changed = sum(r["ablation"]["changed"][name] for r in ok)
        reach = sum(r["ablation"]["fired"][name]["with_reason"] for r in ok)
        decisive = sum(r["ablation"]["fired"][name]["decisive"] for r in ok)
        label = f"{name}{' *' if name in notes else ''}"
        print(f"  {label:<26}{cells}{changed:>8}"
              f"{reach if name != FULL else '':>8}{decisive if name != FULL else '':>9}")
    for table, title, pct in (("recall_by_mechanism", "recall per mechanism", False),
                              ("held_by_lookalike", "clean held per look-alike", True)):
        print(f"  {title}, mean over seeds (the full engine, then each group's delta):")
        print(f"  {'':<22}" + "".join(f"{n:>12}" for n in short))
        for key in sorted(base[table]):
            b = base[table][key]
            row = []
            for name in names:
                a = summ[name][table].get(key)
                row.append(_f(a and a["mean"], pct) if name == FULL
                           else _d(a and a["mean"], b and b["mean"], pct).strip())
            print(f"  {key:<22}" + "".join(f"{c:>12}" for c in row))
    if notes:
        print("  * cannot change a decision here:")
        for name, note in notes.items():
            print(f"    {name}: {note}")
    print("  (changed: rewards whose status differs; reasons / decisive: decided referrer "
          f"rewards carrying a reason of the group / one of weight >= {DECISIVE})")
    return {"summaries": summ, "structural": notes, "full_differs": off}


def main(argv: Sequence[str] | None = None) -> int:
    """Print the table again from a results file of `python -m bench.redteam2 --ablate`."""
    import argparse
    import json
    from pathlib import Path

    ap = argparse.ArgumentParser(prog="python -m bench.redteam2.ablate", description=main.__doc__)
    ap.add_argument("results", type=Path, help="bench/results/redteam2-<time>.json")
    args = ap.parse_args(argv)
    try:
        runs = json.loads(args.results.read_text())["runs"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        print(f"cannot read {args.results}: {exc}")
        return 2
    if not any("ablation" in r for r in runs):
        print(f"{args.results}: no ablation in it (run with --ablate)")
        return 2
    out = print_table(runs)
    return 1 if any(out["full_differs"].values()) else 0


if __name__ == "__main__":
    raise SystemExit(main())
