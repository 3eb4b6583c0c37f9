"""A supervised risk model trained on finance's decisions (approve = 0, reject = 1).

Off until enough decisions exist (`MIN_DECISIONS`); then a gradient-boosted classifier over the
conversions' feature rows (fraud.signals.features), probability-calibrated (isotonic,
cross-validated) so its output can be read as a risk, with the ROC AUC on a held-out quarter
reported next to it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

MIN_DECISIONS = 200


@dataclass
class SupervisedRisk:
    model_: object | None = None
    validation_auc_: float | None = None
    trained_on_: int = 0

    @property
    def enabled(self) -> bool:
        return self.model_ is not None

    def fit(self, rows: Sequence[Sequence[float]], rejected: Sequence[bool],
            seed: int = 0) -> SupervisedRisk:
        """Train when there are enough decisions of both kinds; otherwise stay off."""
        from sklearn.calibration import CalibratedClassifierCV
        from sklearn.ensemble import HistGradientBoostingClassifier
        from sklearn.metrics import roc_auc_score
        from sklearn.model_selection import train_test_split

        y = np.asarray(rejected, dtype=int)
        if len(y) < MIN_DECISIONS or y.min() == y.max() or min(y.sum(), len(y) - y.sum()) < 10:
            self.model_, self.validation_auc_, self.trained_on_ = None, None, len(y)
            return self
        x = np.asarray(rows, dtype=float)
        x_train, x_test, y_train, y_test = train_test_split(
            x, y, test_size=0.25, random_state=seed, stratify=y)
        model = CalibratedClassifierCV(HistGradientBoostingClassifier(random_state=seed),
                                       method="isotonic", cv=3)
        model.fit(x_train, y_train)
        self.validation_auc_ = float(roc_auc_score(y_test, model.predict_proba(x_test)[:, 1]))
        model.fit(x, y)  # the final model sees every decision
        self.model_ = model
        self.trained_on_ = len(y)
        return self

    def risk(self, rows: Sequence[Sequence[float]]) -> np.ndarray:
        if self.model_ is None:
            raise ValueError("the supervised model is off (too few decisions)")
        out: np.ndarray = self.model_.predict_proba(np.asarray(rows, dtype=float))[:, 1]  # type: ignore[attr-defined]
        return out
