"""Referral candidates: a score per customer for "will refer a customer who converts and is not
fraud", learnt from the program's own history, with the features that raised or lowered it.

Labels without leakage: the model is trained at a cutoff `as_of - horizon`. A customer known
before the cutoff (a purchase or a moment before it) is positive when, after the cutoff and up
to `as_of`, they earned credit for a clean referred purchase (one whose reward was not
rejected, reversed or flagged, and which no fraud flag names); their features are computed only
from what happened before the cutoff. Everyone known at `as_of` is then scored with features as
of `as_of`, so the score reads "will refer within the next horizon".

The model: logistic regression on standardised, log-scaled features, probability-calibrated
(sigmoid, cross-validated) so a score reads as a probability; each customer's reasons are the
features' contributions to the log-odds against an average customer (coefficient times the
standardised value). Its ROC AUC on a held-out quarter is reported beside it.

Below the data a model needs (fewer than MIN_KNOWN customers with a known outcome, or fewer
than MIN_POSITIVES positives or negatives) a stated heuristic stands in: the mean of recency,
frequency, value and the latest moment's score, each on [0, 1].
"""

from __future__ import annotations

import bisect
import math
from collections import defaultdict
from collections.abc import Sequence, Set
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import numpy as np

MIN_KNOWN = 200  # customers with a known outcome the model learns from
MIN_POSITIVES = 20  # and at least this many positives (and negatives) among them
HORIZON = timedelta(days=90)
RECENT = timedelta(days=90)
REASONS = 4  # reasons kept per customer, the largest effects first
HOLDOUT = 0.25

# What a moment's score is out of, per type (NPS 0-10, stars 1-5); an unknown type's score is
# read on the smallest of 1, 5 or 10 that holds it.
SCALES = {"nps": 10.0, "review": 5.0, "rating": 5.0, "stars": 5.0, "csat": 5.0}
POSITIVE_AT = 0.8  # a scored moment at or above this share of its scale is a positive one
# Moments that are good news by their type alone (they carry no score).
POSITIVE_TYPES = frozenset({"milestone", "support_resolved", "review", "nps_promoter"})

# The feature matrix: one row per customer, one column per name, raw values (days, counts,
# minor units, a score on [0, 1]); the model reads them log-scaled (LOGGED) and standardised.
FEATURES = (
    "tenure_days",       # since the customer's first purchase or moment
    "recency_days",      # since the last purchase (tenure when none)
    "purchases",         # purchases and renewals
    "purchases_90d",
    "value",             # their amounts, minor units
    "moments_90d",       # customer events in the last 90 days
    "positive_moments",  # high scores, milestones, resolved tickets, ever
    "latest_score",      # the latest scored moment on [0, 1] (NaN: none)
    "referrals",         # clean referred purchases credited to them, ever
    "shares",            # shares of their link
)
LOGGED = frozenset(FEATURES) - {"latest_score"}
NEUTRAL_SCORE = 0.5  # a customer with no scored moment reads as neither happy nor unhappy


@dataclass(frozen=True, slots=True)
class Purchase:
    customer: str
    at: datetime
    amount: int  # minor units (0 when not given)


@dataclass(frozen=True, slots=True)
class Moment:
    customer: str
    at: datetime
    type: str
    score: float | None


@dataclass(frozen=True, slots=True)
class Referral:
    """A referred purchase credited to `referrer` (a customer id)."""
    referrer: str
    at: datetime
    clean: bool  # not rejected, reversed or flagged, and named by no fraud flag


@dataclass(frozen=True, slots=True)
class Share:
    customer: str
    at: datetime


@dataclass(frozen=True, slots=True)
class History:
    purchases: Sequence[Purchase] = ()
    moments: Sequence[Moment] = ()
    referrals: Sequence[Referral] = ()
    shares: Sequence[Share] = ()


@dataclass(frozen=True, slots=True)
class Reason:
    feature: str
    value: float | None  # the raw value (None: unknown)
    effect: float  # > 0 raised the score, < 0 lowered it (log-odds for the model)

    def as_dict(self) -> dict[str, Any]:
        return {"feature": self.feature, "value": self.value, "effect": self.effect}


@dataclass(frozen=True, slots=True)
class Candidate:
    customer: str
    score: float  # [0, 1]
    percentile: float  # share of scored customers with a score at or below this one
    reasons: tuple[Reason, ...]


@dataclass(frozen=True, slots=True)
class Ranking:
    kind: str  # "model" or "heuristic"
    trained_on: int  # customers with a known outcome (at the cutoff)
    positives: int
    auc_holdout: float | None
    as_of: datetime
    cutoff: datetime
    items: tuple[Candidate, ...]  # best first
    details: dict[str, Any] = field(default_factory=dict)


def moment_score(type_: str, score: float | None) -> float | None:
    """A moment's score on [0, 1] (None when it has none)."""
    if score is None or not math.isfinite(score):
        return None
    scale = SCALES.get(type_)
    if scale is None:
        scale = 1.0 if score <= 1 else 5.0 if score <= 5 else 10.0
    return min(1.0, max(0.0, score / scale))


class _Timeline:
    """One customer's dated facts, sorted, for features at any time."""

    def __init__(self) -> None:
        self.purchases: list[tuple[float, int]] = []
        self.moments: list[tuple[float, float | None, bool]] = []  # (at, score01, positive)
        self.referrals: list[float] = []  # clean ones
        self.shares: list[float] = []

    def sort(self) -> None:
        self.purchases.sort()
        self.moments.sort(key=lambda m: m[0])
        self.referrals.sort()
        self.shares.sort()

    def first_seen(self) -> float:
        firsts = [xs[0][0] for xs in (self.purchases, self.moments) if xs]
        return min(firsts) if firsts else math.inf

    def row(self, t: float) -> list[float]:
        """The raw features from what happened strictly before `t` (unix seconds)."""
        day = 86400.0
        recent = t - RECENT.total_seconds()
        n_p = bisect.bisect_left(self.purchases, (t, -1))
        bought = self.purchases[:n_p]
        n_m = bisect.bisect_left([m[0] for m in self.moments], t)
        moments = self.moments[:n_m]
        tenure = (t - self.first_seen()) / day
        last_purchase = bought[-1][0] if bought else None
        scored = [m[1] for m in moments if m[1] is not None]
        return [
            tenure,
            (t - last_purchase) / day if last_purchase is not None else tenure,
            float(len(bought)),
            float(sum(1 for at, _ in bought if at >= recent)),
            float(sum(amount for _, amount in bought)),
            float(sum(1 for m in moments if m[0] >= recent)),
            float(sum(1 for m in moments if m[2])),
            scored[-1] if scored else math.nan,
            float(bisect.bisect_left(self.referrals, t)),
            float(bisect.bisect_left(self.shares, t)),
        ]


class _Index:
    def __init__(self, history: History) -> None:
        self.by_customer: dict[str, _Timeline] = defaultdict(_Timeline)
        for p in history.purchases:
            self.by_customer[p.customer].purchases.append((p.at.timestamp(), max(0, p.amount)))
        for m in history.moments:
            s = moment_score(m.type, m.score)
            positive = s >= POSITIVE_AT if s is not None else m.type in POSITIVE_TYPES
            self.by_customer[m.customer].moments.append((m.at.timestamp(), s, positive))
        for r in history.referrals:
            if r.clean:
                self.by_customer[r.referrer].referrals.append(r.at.timestamp())
        for s_ in history.shares:
            self.by_customer[s_.customer].shares.append(s_.at.timestamp())
        self.clean: dict[str, list[float]] = {}
        for c, line in self.by_customer.items():
            line.sort()
            self.clean[c] = line.referrals

    def known(self, t: float, exclude: Set[str]) -> list[str]:
        """Customers with a purchase or a moment before `t`, not excluded, sorted."""
        return sorted(c for c, line in self.by_customer.items()
                      if line.first_seen() < t and c not in exclude)

    def matrix(self, customers: Sequence[str], t: float) -> np.ndarray:
        if not customers:
            return np.zeros((0, len(FEATURES)))
        return np.asarray([self.by_customer[c].row(t) for c in customers], dtype=float)

    def referred(self, customers: Sequence[str], start: float, end: float) -> np.ndarray:
        """1 where the customer earned a clean referral in (start, end]."""
        out = np.zeros(len(customers), dtype=int)
        for i, c in enumerate(customers):
            times = self.clean.get(c, [])
            out[i] = int(bisect.bisect_right(times, end) > bisect.bisect_right(times, start))
        return out


def feature_matrix(history: History, at: datetime, *, exclude: Set[str] = frozenset()
                   ) -> tuple[list[str], np.ndarray]:
    """The customers known before `at` (sorted) and their raw features (columns: FEATURES),
    from what happened strictly before `at`."""
    index = _Index(history)
    customers = index.known(at.timestamp(), exclude)
    return customers, index.matrix(customers, at.timestamp())


def referred(history: History, customers: Sequence[str], start: datetime, end: datetime
             ) -> np.ndarray:
    """The labels: 1 where the customer earned a clean referral in (start, end]."""
    return _Index(history).referred(customers, start.timestamp(), end.timestamp())


def model_input(raw: np.ndarray) -> np.ndarray:
    """The raw feature matrix as the model reads it: counts, days and amounts log-scaled, a
    missing latest score neutral."""
    x = np.array(raw, dtype=float, copy=True)
    for j, name in enumerate(FEATURES):
        if name in LOGGED:
            x[:, j] = np.log1p(np.clip(x[:, j], 0.0, None))
        else:
            x[:, j] = np.where(np.isnan(x[:, j]), NEUTRAL_SCORE, x[:, j])
    return x


class ReferralModel:
    """Calibrated logistic regression on the feature matrix (PyOD-like: fit, then score).

    `fit(raw, y)` learns; `score(raw)` gives calibrated probabilities; `effects(raw)` gives each
    feature's contribution to the log-odds of the (uncalibrated) linear model, against an
    average customer of the training data."""

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        self.calibrated_: Any = None
        self.linear_: Any = None

    def fit(self, raw: np.ndarray, y: np.ndarray) -> ReferralModel:
        from sklearn.calibration import CalibratedClassifierCV
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        x = model_input(raw)

        def linear() -> Any:
            return make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000))

        self.calibrated_ = CalibratedClassifierCV(linear(), method="sigmoid", cv=3).fit(x, y)
        self.linear_ = linear().fit(x, y)
        return self

    def score(self, raw: np.ndarray) -> np.ndarray:
        if self.calibrated_ is None:
            raise ValueError("the model is not fitted")
        out: np.ndarray = self.calibrated_.predict_proba(model_input(raw))[:, 1]
        return out

    def effects(self, raw: np.ndarray) -> np.ndarray:
        if self.linear_ is None:
            raise ValueError("the model is not fitted")
        scaler, logistic = self.linear_[0], self.linear_[-1]
        z = scaler.transform(model_input(raw))
        out: np.ndarray = z * logistic.coef_[0]
        return out

    def weights(self) -> dict[str, float]:
        """The linear model's coefficient per feature (per standard deviation)."""
        coef = self.linear_[-1].coef_[0]
        return {name: round(float(c), 4) for name, c in zip(FEATURES, coef, strict=True)}


# The heuristic: (feature it reads, component on [0, 1]); the score is their mean.
HEURISTIC = ("recency_days", "purchases", "value", "latest_score")


def heuristic_components(raw: np.ndarray) -> np.ndarray:
    """Recency (halves every ~62 days), frequency (1 - e^(-purchases/3)), value (rank among the
    customers scored together) and the latest moment's score (neutral when none)."""
    col = {name: raw[:, j] for j, name in enumerate(FEATURES)}
    n = raw.shape[0]
    value = col["value"]
    if n:
        order = np.argsort(np.argsort(value, kind="stable"), kind="stable")
        value_rank = (order + 1) / n
    else:
        value_rank = value
    return np.column_stack([
        np.exp(-col["recency_days"] / 90.0),
        1.0 - np.exp(-col["purchases"] / 3.0),
        value_rank,
        np.where(np.isnan(col["latest_score"]), NEUTRAL_SCORE, col["latest_score"]),
    ]) if n else np.zeros((0, len(HEURISTIC)))


def percentiles(scores: np.ndarray) -> np.ndarray:
    """For each score, the share of all scores at or below it."""
    n = len(scores)
    if n == 0:
        return np.zeros(0)
    ordered = np.sort(scores)
    out: np.ndarray = np.searchsorted(ordered, scores, side="right") / n
    return out


def _reasons(raw_row: np.ndarray, effects_row: np.ndarray, names: Sequence[str],
             columns: Sequence[int]) -> tuple[Reason, ...]:
    order = sorted(range(len(names)), key=lambda k: -abs(effects_row[k]))
    out = []
    for k in order[:REASONS]:
        effect = round(float(effects_row[k]), 4)
        if effect == 0:
            continue
        value = float(raw_row[columns[k]])
        out.append(Reason(names[k], None if math.isnan(value) else round(value, 4), effect))
    return tuple(out)


def _ranked(customers: Sequence[str], scores: np.ndarray, raw: np.ndarray,
            effects: np.ndarray, *, names: Sequence[str], columns: Sequence[int]
            ) -> tuple[Candidate, ...]:
    pct = percentiles(scores)
    order = sorted(range(len(customers)), key=lambda i: (-scores[i], customers[i]))
    return tuple(Candidate(customers[i], round(float(scores[i]), 6), round(float(pct[i]), 6),
                           _reasons(raw[i], effects[i], names, columns)) for i in order)


def holdout_auc(raw: np.ndarray, y: np.ndarray, seed: int = 0) -> float:
    """ROC AUC of a model fitted on three quarters, on the held-out quarter (stratified)."""
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import train_test_split

    x_train, x_test, y_train, y_test = train_test_split(
        raw, y, test_size=HOLDOUT, random_state=seed, stratify=y)
    model = ReferralModel(seed).fit(x_train, y_train)
    return float(roc_auc_score(y_test, model.score(x_test)))


def rank(history: History, as_of: datetime, *, horizon: timedelta = HORIZON,
         exclude: Set[str] = frozenset(), seed: int = 0, min_known: int = MIN_KNOWN,
         min_positives: int = MIN_POSITIVES) -> Ranking:
    """Score every customer known at `as_of` (but the excluded ones), best first."""
    index = _Index(history)
    now, cutoff = as_of.timestamp(), (as_of - horizon).timestamp()
    trained = index.known(cutoff, exclude)
    y = index.referred(trained, cutoff, now)
    positives = int(y.sum())
    scored = index.known(now, exclude)
    raw_now = index.matrix(scored, now)
    enough = (len(trained) >= min_known and positives >= min_positives
              and len(trained) - positives >= min_positives)
    details: dict[str, Any] = {"horizon_days": horizon.total_seconds() / 86400,
                               "min_known": min_known, "min_positives": min_positives,
                               "scored": len(scored)}
    if enough:
        raw_then = index.matrix(trained, cutoff)
        auc = holdout_auc(raw_then, y, seed)
        model = ReferralModel(seed).fit(raw_then, y)
        scores = model.score(raw_now) if scored else np.zeros(0)
        effects = model.effects(raw_now) if scored else np.zeros((0, len(FEATURES)))
        details |= {"features": list(FEATURES), "coefficients": model.weights(),
                    "method": "logistic regression, standardised log features, sigmoid "
                              "calibration (3-fold)"}
        items = _ranked(scored, scores, raw_now, effects, names=FEATURES,
                        columns=range(len(FEATURES)))
        return Ranking("model", len(trained), positives, round(auc, 4), as_of,
                       as_of - horizon, items, details)
    components = heuristic_components(raw_now)
    weight = 1.0 / len(HEURISTIC)
    scores = components.mean(axis=1) if scored else np.zeros(0)
    effects = weight * (components - components.mean(axis=0)) if scored else components
    columns = [FEATURES.index(name) for name in HEURISTIC]
    details |= {"features": list(HEURISTIC),
                "why": (f"{len(trained)} customers with a known outcome and {positives} "
                        f"positives: a model needs at least {min_known} and {min_positives} "
                        "positives and negatives"),
                "method": "mean of recency exp(-days/90), frequency 1-exp(-purchases/3), "
                          "value rank and the latest moment's score (0.5 when none)"}
    items = _ranked(scored, scores, raw_now, effects, names=HEURISTIC, columns=columns)
    return Ranking("heuristic", len(trained), positives, None, as_of, as_of - horizon, items,
                   details)


def at_top(items: Sequence[Candidate], truth: Set[str], share: float = 0.2
           ) -> tuple[float, float]:
    """Precision and recall of the best `share` of `items` (ranked) against `truth`."""
    k = max(1, math.ceil(share * len(items)))
    top = {c.customer for c in items[:k]}
    hits = len(top & truth)
    return hits / k, (hits / len(truth) if truth else 0.0)
