"""Anomaly scores for conversions (pyod), normalised to [0, 1] within a program, explained.

Detectors speak PyOD (`fit`, `decision_function`, higher = more anomalous). The ensemble
averages ECOD (parameter-free, tail probabilities per feature) and an isolation forest, each
turned into the rank of its score among the program's own conversions, so the result is a
percentile in [0, 1] and the detectors' different scales do not matter. The explanation names
the features furthest from the program's median (robust z-scores).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

FEATURES = (
    "log_seconds_to_convert",  # from the last attributed click
    "touches",
    "distinct_ips",
    "bot_touches",
    "anonymous_touches",
    "log_amount",
    "referrer_log_conversions",
    "referrer_conversion_rate",
)
MIN_ROWS = 50


@dataclass
class AnomalyScorer:
    """ECOD + IsolationForest ensemble; `fit` then `score` (percentiles in [0, 1])."""

    seed: int = 0
    detectors_: list[object] = field(default_factory=list)
    train_scores_: list[np.ndarray] = field(default_factory=list)
    median_: np.ndarray | None = None
    scale_: np.ndarray | None = None

    def fit(self, x: np.ndarray) -> AnomalyScorer:
        from pyod.models.ecod import ECOD
        from pyod.models.iforest import IForest

        self.detectors_ = [ECOD(), IForest(random_state=self.seed, n_estimators=100)]
        self.train_scores_ = []
        for detector in self.detectors_:
            # ECOD's skewness warns on a constant feature (precision loss); harmless here.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                detector.fit(x)  # type: ignore[attr-defined]
            self.train_scores_.append(np.sort(detector.decision_scores_))  # type: ignore[attr-defined]
        self.median_ = np.median(x, axis=0)
        mad = np.median(np.abs(x - self.median_), axis=0) * 1.4826
        self.scale_ = np.where(mad > 0, mad, np.std(x, axis=0) + 1e-9)
        return self

    def score(self, x: np.ndarray) -> np.ndarray:
        """Each row's anomaly percentile among the training rows, averaged over detectors."""
        parts = []
        for detector, train in zip(self.detectors_, self.train_scores_, strict=True):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                raw = detector.decision_function(x)  # type: ignore[attr-defined]
            parts.append(np.searchsorted(train, raw, side="right") / len(train))
        result: np.ndarray = np.clip(np.mean(parts, axis=0), 0.0, 1.0)
        return result

    def explain(self, row: np.ndarray, top: int = 2) -> list[tuple[str, float]]:
        """The features furthest from the median, with their robust z-scores."""
        if self.median_ is None or self.scale_ is None:
            raise ValueError("fit the scorer first")
        z = (row - self.median_) / self.scale_
        order = np.argsort(-np.abs(z))[:top]
        return [(FEATURES[i], round(float(z[i]), 2)) for i in order]


def score_rows(rows: Sequence[Sequence[float]], baseline: np.ndarray | None = None,
               seed: int = 0) -> tuple[np.ndarray, AnomalyScorer | None]:
    """Each row's anomaly percentile among the program's conversions, and the fitted scorer.

    The detectors are fitted on the rows themselves, or on them together with `baseline`
    (feature rows of the program's earlier conversions, when only new ones are at hand).
    Below MIN_ROWS training rows there is no telling: zeros and no scorer.
    """
    if not rows:
        return np.zeros(0), None
    x = np.asarray(rows, dtype=float)
    train = x if baseline is None else np.vstack([baseline, x])
    if len(train) < MIN_ROWS:
        return np.zeros(len(rows)), None
    scorer = AnomalyScorer(seed=seed).fit(train)
    return scorer.score(x), scorer
