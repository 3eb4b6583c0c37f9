"""The supervised model: off below 200 decisions, calibrated with a validation AUC above it."""

from __future__ import annotations

import numpy as np

from fraud.supervised import MIN_DECISIONS, SupervisedRisk


def decisions(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 8))
    # Finance rejects fast conversions from busy referrers (features 0 low, 6 high), mostly.
    logit = -1.5 * x[:, 0] + 1.2 * x[:, 6] - 1.0
    y = rng.random(n) < 1 / (1 + np.exp(-logit))
    return x, y


def test_stays_off_until_enough_decisions() -> None:
    x, y = decisions(MIN_DECISIONS - 1)
    model = SupervisedRisk().fit(x, y)
    assert not model.enabled and model.validation_auc_ is None


def test_learns_finance_decisions_with_a_validation_auc() -> None:
    x, y = decisions(1200)
    model = SupervisedRisk().fit(x, y)
    assert model.enabled and model.trained_on_ == 1200
    assert model.validation_auc_ is not None and model.validation_auc_ >= 0.8
    print(f"\nvalidation ROC AUC {model.validation_auc_:.3f}")
    risk = model.risk(x[:50])
    assert ((risk >= 0) & (risk <= 1)).all()
    risky = model.risk([[-2.0, 0, 0, 0, 0, 0, 2.0, 0]])[0]
    safe = model.risk([[2.0, 0, 0, 0, 0, 0, -2.0, 0]])[0]
    assert risky > 0.7 > 0.2 > safe
