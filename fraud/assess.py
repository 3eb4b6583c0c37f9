"""A conversion's reasons and risk, put together in one place.

`assess_all` takes the plain facts of a scan (the conversions, their referrers, what is known of
the program, the rings found, the finance model if it is on) and answers each conversion's
`Assessment` with its anomaly feature row. Every conversion's reasons come in one order:

1. its own signals (fraud.signals.conversion_reasons: identity shared with a referrer, how its
   clicks came);
2. a ring it belongs to, or else a ring its credited referrer belongs to;
3. its credited referrers' signals as a whole (fraud.signals.referrer_reasons);
4. a device several of the same referrer's referees use (fraud.signals.shared_device_reasons);
5. an anomaly score among the program's conversions (fraud.anomaly);
6. the finance model's probability that finance would reject it (fraud.supervised).

Their risk combines them as independent pieces of evidence: risk = 1 - prod(1 - weight).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from fraud.anomaly import score_rows
from fraud.rings import Ring
from fraud.signals import (
    ConversionFacts,
    ProgramContext,
    Reason,
    ReferrerFacts,
    conversion_reasons,
    features,
    referrer_reasons,
    shared_device_reasons,
)
from fraud.supervised import SupervisedRisk

ANOMALY_AT = 0.99  # anomaly percentile that becomes a reason
RING_REFERRER = 0.3  # the weight of "a credited referrer is in a ring": alone, not held
FINANCE_MODEL_AT = 0.8  # the finance model's probability of a rejection, to become a reason


@dataclass(frozen=True, slots=True)
class Assessment:
    conversion_id: int
    score: float
    reasons: tuple[Reason, ...] = field(default_factory=tuple)


@dataclass(frozen=True, slots=True)
class Scored:
    """A conversion's assessment and its anomaly feature row (stored: later incremental scans
    compare with it, and the finance model learns from it)."""

    assessment: Assessment
    features: list[float]


def combine(reasons: Iterable[Reason]) -> float:
    keep = 1.0
    for reason in reasons:
        keep *= 1.0 - min(max(reason.weight, 0.0), 1.0)
    return round(1.0 - keep, 6)


def assess(conv: ConversionFacts, referrers: Mapping[str, ReferrerFacts],
           rings: Sequence[Ring] = (), extra: Iterable[Reason] = ()) -> Assessment:
    """One conversion's reasons and risk: its own signals, the rings around it, then `extra`
    (what the program's conversions together say of it)."""
    ring = ring_reason(conv, rings)
    reasons = (*conversion_reasons(conv, referrers), *(() if ring is None else (ring,)),
               *extra)
    return Assessment(conv.conversion_id, combine(reasons), reasons)


def assess_all(conversions: Sequence[ConversionFacts], referrers: Mapping[str, ReferrerFacts],
               context: ProgramContext, rings: Sequence[Ring] = (), *,
               baseline: np.ndarray | None = None, only: Collection[int] | None = None,
               model: SupervisedRisk | None = None) -> list[Scored]:
    """Every conversion's assessment (of those in `only`, if given: the others are context).

    `baseline` holds feature rows of the program's earlier conversions for the anomaly
    detectors (an incremental scan's); `model` is the finance model, used when it is on.
    """
    wanted = [c for c in conversions if only is None or c.conversion_id in only]
    per_referrer = referrer_reasons(conversions, context)
    per_device = shared_device_reasons(conversions)
    rows = feature_rows(conversions, wanted, context)
    anomalies = anomaly_reasons(rows, baseline)
    opinions = finance_model_reasons(rows, model)
    out = []
    for conv, row, anomaly, opinion in zip(wanted, rows, anomalies, opinions, strict=True):
        extra = [r for ref in conv.referrers for r in per_referrer.get(ref, ())]
        extra += [r for r in (per_device.get(conv.conversion_id), anomaly, opinion)
                  if r is not None]
        out.append(Scored(assess(conv, referrers, rings, extra), row))
    return out


def feature_rows(conversions: Sequence[ConversionFacts], wanted: Sequence[ConversionFacts],
                 context: ProgramContext) -> list[list[float]]:
    """The anomaly detectors' rows of the `wanted` conversions; a referrer's conversions are
    counted among `conversions`, or over their whole history where the context has it."""
    referrer_conversions: dict[str, int] = defaultdict(int)
    for conv in conversions:
        for ref in conv.referrers:
            referrer_conversions[ref] += 1
    referrer_conversions |= {ref: n for ref, (n, _first) in context.history.items()}
    return [features(c, referrer_conversions, context.referrer_clicks) for c in wanted]


def anomaly_reasons(rows: Sequence[Sequence[float]], baseline: np.ndarray | None = None
                    ) -> list[Reason | None]:
    """Per row, a reason when it is among the program's most unusual (ANOMALY_AT), naming the
    features furthest from the program's median."""
    percentiles, scorer = score_rows(rows, baseline)
    if scorer is None:
        return [None] * len(rows)
    out: list[Reason | None] = []
    for row, percentile in zip(rows, percentiles, strict=True):
        if percentile >= ANOMALY_AT:
            top = scorer.explain(np.asarray(row))
            out.append(Reason(
                "anomaly", "unusual among this program's conversions: " + ", ".join(
                    f"{name} {z:+.1f} sd" for name, z in top),
                round(float(percentile), 4), ANOMALY_AT, 0.3))
        else:
            out.append(None)
    return out


def finance_model_reasons(rows: Sequence[Sequence[float]], model: SupervisedRisk | None
                          ) -> list[Reason | None]:
    """Per row, a reason when the finance model (if on) gives a rejection FINANCE_MODEL_AT or
    more."""
    if model is None or not model.enabled or not rows:
        return [None] * len(rows)
    out: list[Reason | None] = []
    for p in model.risk(rows):
        if p < FINANCE_MODEL_AT:
            out.append(None)
            continue
        out.append(Reason(
            "finance_model", f"resembles conversions finance rejected (probability "
            f"{p:.2f}; model validated at ROC AUC {model.validation_auc_ or 0:.2f} on "
            f"{model.trained_on_} decisions)", round(float(p), 4), FINANCE_MODEL_AT, 0.5))
    return out


def ring_reason(conv: ConversionFacts, rings: Sequence[Ring]) -> Reason | None:
    """A customer inside a ring is strong evidence against their conversion. A ring referrer's
    customer outside it is weak evidence only: fraudsters have real friends too, and those
    rewards should not all wait for finance because of the ring."""
    customer = {("customer", conv.customer), ("referrer", conv.customer)}
    inside = [ring for ring in rings if ring.accounts & customer]
    if inside:
        ring = inside[0]
        return Reason(f"{ring.kind}_member",
                      f"the customer belongs to a {ring.kind.replace('_', ' ')} of "
                      f"{len(ring.accounts)} accounts", len(ring.accounts), 3, 0.85)
    credited = {("referrer", r) for r in conv.referrers}
    beside = [ring for ring in rings if ring.accounts & credited]
    if not beside:
        return None
    ring = beside[0]
    who = ", ".join(sorted(r for _kind, r in ring.accounts & credited))
    return Reason("ring_referrer",
                  f"the credited referrer {who} belongs to a "
                  f"{ring.kind.replace('_', ' ')} of {len(ring.accounts)} accounts "
                  "(this customer is not in it)", len(ring.accounts), 3, RING_REFERRER)


def ring_flag_reasons(ring: Ring) -> list[dict[str, object]]:
    """The reasons of a ring's own flag: what binds its accounts."""
    if ring.kind == "referral_cycle":
        return [{"code": "referral_cycle", "message": "these referrers referred each other in "
                 "a cycle", "value": ring.evidence.get("length"), "threshold": 2}]
    ips = sum(1 for kind, _ in ring.shared if kind == "ip")
    devices = len(ring.shared) - ips
    what = " and ".join(f"{n} {noun}{'' if n == 1 else plural}" for n, noun, plural in
                        ((ips, "IP address", "es"), (devices, "device", "s")) if n)
    return [{"code": "shared_infrastructure" if ring.kind == "ring" else "dense_block",
             "message": f"{len(ring.accounts)} accounts share {what or 'nothing'} that almost "
                        "nobody else uses",
             "value": len(ring.accounts), "threshold": 3}]
