"""Scoring one run against the generator's labels, and summing up many runs.

A fraud purchase is caught when its reward ends flagged, rejected or absent (or reversed, when
the purchase was refunded or charged back); a clean one is held when its reward is flagged,
rejected, pending or absent.
"""

from __future__ import annotations

from typing import Any

CAUGHT = {"flagged", "rejected"}
HELD = {"flagged", "rejected", "pending"}


def ratio(a: int, b: int) -> float | None:
    return round(a / b, 4) if b else None


def score(labels: dict[str, dict[str, Any]], rings: list[dict[str, Any]],
          rewards: list[dict[str, Any]], flags: list[dict[str, Any]]) -> dict[str, Any]:
    by_event: dict[str, list[str]] = {}
    reasons: dict[str, list[str]] = {}
    for r in rewards:
        if r.get("beneficiary", "referrer") == "referrer":
            by_event.setdefault(r["event_id"], []).append(r["status"])
            reasons.setdefault(r["event_id"], []).extend(
                str(x.get("code")) for x in r.get("reasons") or [] if isinstance(x, dict))
    examples: dict[str, list[dict[str, Any]]] = {"missed_fraud": [], "held_clean": []}

    def example(kind: str, event_id: str, lab: dict[str, Any], got: list[str]) -> None:
        if len(examples[kind]) < 60:
            examples[kind].append({
                "event_id": event_id, "code": lab["code"],
                "label": (f"{lab['mech']}/{lab['variant']}" if lab["fraud"]
                          else ",".join(lab["tags"])),
                "status": got or ["absent"], "reasons": sorted(set(reasons.get(event_id, [])))})
    tp = fn = fp = tn = 0
    tp_strict = 0
    mech: dict[str, list[int]] = {}
    variant: dict[str, list[int]] = {}
    looks: dict[str, list[int]] = {}
    statuses: dict[str, dict[str, int]] = {"fraud": {}, "clean": {}}
    for event_id, lab in labels.items():
        got = by_event.get(event_id, [])
        key = "fraud" if lab["fraud"] else "clean"
        for st in got or ["absent"]:
            statuses[key][st] = statuses[key].get(st, 0) + 1
        if lab["fraud"]:
            ok = CAUGHT | ({"reversed"} if lab["refunded"] else set())
            caught = all(s in ok for s in got)
            tp += caught
            fn += not caught
            if not caught:
                example("missed_fraud", event_id, lab, got)
            tp_strict += all(s in CAUGHT for s in got)
            k = f"{lab['mech']}/{lab['variant']}{' (evasive)' if lab['evasive'] else ''}"
            for table, key in ((mech, lab["mech"]), (variant, k)):
                row = table.setdefault(key, [0, 0, 0])
                row[0] += caught
                row[1] += 1
                row[2] += not got
        else:
            held = not got or any(s in HELD for s in got)
            fp += held
            tn += not held
            if held:
                example("held_clean", event_id, lab, got)
            for t in dict.fromkeys(lab["tags"]):
                row = looks.setdefault(t, [0, 0, 0])
                row[0] += held
                row[1] += 1
                row[2] += not got
    unexpected: dict[str, int] = {}
    for event_id, sts in by_event.items():
        if event_id not in labels:
            for st in sts:
                unexpected[st] = unexpected.get(st, 0) + 1
    ring_scores = []
    flag_sets = []
    for f in flags:
        members = {m["id"] for m in f.get("members", []) if m.get("type") in ("referrer",
                                                                              "customer")}
        if members:
            flag_sets.append((members, f.get("kind"), f.get("id")))
    for ring in rings:
        planted = set(ring["members"])
        best, best_kind, best_size = 0.0, None, 0
        for members, kind, _ in flag_sets:
            j = len(planted & members) / len(planted | members)
            if j > best:
                best, best_kind, best_size = j, kind, len(members)
        ring_scores.append({"name": ring["name"], "variant": ring["variant"],
                            "evasive": ring["evasive"], "size": len(planted),
                            "jaccard": round(best, 4), "flag_kind": best_kind,
                            "flag_size": best_size})
    return {
        "fraud": tp + fn, "clean": fp + tn, "caught": tp, "held_clean": fp,
        "precision": ratio(tp, tp + fp), "recall": ratio(tp, tp + fn),
        "recall_strict": ratio(tp_strict, tp + fn), "clean_held": ratio(fp, fp + tn),
        # "absent": purchases that got no reward at all (not attributed to the link)
        "recall_by_mechanism": {k: {"recall": ratio(a, n), "caught": a, "n": n, "absent": z}
                                for k, (a, n, z) in sorted(mech.items())},
        "recall_by_variant": {k: {"recall": ratio(a, n), "caught": a, "n": n, "absent": z}
                              for k, (a, n, z) in sorted(variant.items())},
        "held_by_lookalike": {k: {"held": ratio(a, n), "held_n": a, "n": n, "absent": z}
                              for k, (a, n, z) in sorted(looks.items())},
        "rings": ring_scores, "statuses": statuses, "unlabelled_rewards": unexpected,
        "flags": len(flags), "examples": examples,
        "flag_kinds": _count(f.get("kind") for f in flags),
    }


ANOMALY = "anomaly"  # fraud.anomaly.FLAG_KIND (the generator's side does not import the engine)


def anomaly_figures(labels: dict[str, dict[str, Any]], referrers: list[dict[str, Any]],
                    flags: list[dict[str, Any]]) -> dict[str, int]:
    """The referrers the anomaly flags name (a watch list: no decision depends on it), and how
    many are mostly fraud (more than half of their labelled purchases), partly fraud, clean
    (labelled purchases, none fraud) or without labelled purchases."""
    code_of = {r["external_id"]: r["code"] for r in referrers}
    per_code: dict[str, list[int]] = {}
    for lab in labels.values():
        row = per_code.setdefault(lab["code"], [0, 0])
        row[0] += bool(lab["fraud"])
        row[1] += 1
    named = {m["id"] for f in flags if f.get("kind") == ANOMALY
             for m in f.get("members", []) if m.get("type") == "referrer"}
    out = {"named": len(named), "mostly_fraud": 0, "partly_fraud": 0, "clean": 0,
           "unlabelled": 0}
    for ref in named:
        fraud, n = per_code.get(code_of.get(ref, ""), [0, 0])
        key = ("unlabelled" if n == 0 else "mostly_fraud" if 2 * fraud > n
               else "partly_fraud" if fraud else "clean")
        out[key] += 1
    return out


def _count(items: Any) -> dict[str, int]:
    out: dict[str, int] = {}
    for x in items:
        out[str(x)] = out.get(str(x), 0) + 1
    return dict(sorted(out.items()))


MIN_N = 3  # a seed counts for a "worst" only with at least this many purchases in the group


def _agg(values: list[tuple[int, float, int]], worst_is_max: bool,
         pooled: tuple[int, int] | None = None) -> dict[str, Any] | None:
    """Mean over seeds, worst seed (among seeds with MIN_N purchases in the group, when any
    has), and the pooled ratio over all seeds' purchases when given."""
    if not values:
        return None
    big = [v for v in values if v[2] >= MIN_N] or values
    worst = sorted(big, key=lambda sv: sv[1], reverse=worst_is_max)[0]
    out = {"mean": round(sum(v for _, v, _ in values) / len(values), 4),
           "worst": worst[1], "worst_seed": worst[0], "seeds": len(values)}
    if pooled is not None:
        out["pooled"] = ratio(*pooled)
        out["n"] = pooled[1]
    return out


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and worst seed of each figure over the runs that have it."""
    ok = [r for r in runs if "score" in r]

    def series(get: Any, n: Any = None) -> list[tuple[int, float, int]]:
        out = []
        for r in ok:
            v = get(r["score"])
            if v is not None:
                out.append((r["seed"], v, n(r["score"]) if n else MIN_N))
        return out

    def group(table: str, key: str, value: str, count: str, worst_is_max: bool) -> Any:
        rows = [r["score"][table][key] for r in ok if key in r["score"][table]]
        return _agg(series(lambda s: s[table].get(key, {}).get(value),
                           lambda s: s[table].get(key, {}).get("n", 0)), worst_is_max,
                    (sum(x[count] for x in rows), sum(x["n"] for x in rows)))

    mechs = sorted({m for r in ok for m in r["score"]["recall_by_mechanism"]})
    variants = sorted({m for r in ok for m in r["score"]["recall_by_variant"]})
    looks = sorted({m for r in ok for m in r["score"]["held_by_lookalike"]})
    ring_j = [(r["seed"], ring["jaccard"], MIN_N) for r in ok for ring in r["score"]["rings"]]
    ring_by_variant: dict[str, list[tuple[int, float, int]]] = {}
    for r in ok:
        for ring in r["score"]["rings"]:
            ring_by_variant.setdefault(ring["variant"], []).append(
                (r["seed"], ring["jaccard"], MIN_N))
    tot = {k: sum(r["score"][k] for r in ok) for k in ("fraud", "clean", "caught",
                                                        "held_clean")}
    return {
        "seeds": [r["seed"] for r in runs], "failed": [r["seed"] for r in runs
                                                       if "score" not in r],
        "precision": _agg(series(lambda s: s["precision"]), False,
                          (tot["caught"], tot["caught"] + tot["held_clean"])),
        "recall": _agg(series(lambda s: s["recall"]), False, (tot["caught"], tot["fraud"])),
        "recall_strict": _agg(series(lambda s: s["recall_strict"]), False),
        "clean_held": _agg(series(lambda s: s["clean_held"]), True,
                           (tot["held_clean"], tot["clean"])),
        "recall_by_mechanism": {m: group("recall_by_mechanism", m, "recall", "caught", False)
                                for m in mechs},
        "recall_by_variant": {m: group("recall_by_variant", m, "recall", "caught", False)
                              for m in variants},
        "held_by_lookalike": {m: group("held_by_lookalike", m, "held", "held_n", True)
                              for m in looks},
        "ring_jaccard": _agg(ring_j, False),
        "ring_jaccard_by_variant": {k: _agg(v, False) for k, v in sorted(ring_by_variant.items())},
        "seconds_per_seed": _agg([(r["seed"], r["seconds"], MIN_N) for r in runs], True),
        "anomaly": {k: sum(r["anomaly"][k] for r in ok if "anomaly" in r)
                    for k in ("named", "mostly_fraud", "partly_fraud", "clean", "unlabelled")},
    }
