"""The level elimination of attribution.absorbing against dense inversion."""

from __future__ import annotations

import random

import numpy as np
import pytest
from scipy import sparse

import attribution.absorbing as absorbing
from attribution.models import Journey, MarkovModel
from tests.unit.test_attribution_models import removal_effects_by_resolving


@pytest.fixture
def levels_always(monkeypatch: pytest.MonkeyPatch) -> None:
    """Eliminate down to nothing, whatever the size: every level's code path runs."""
    monkeypatch.setattr(absorbing, "DENSE_AT", 0)
    monkeypatch.setattr(absorbing, "DENSE_DENSITY", 2.0)
    monkeypatch.setattr(absorbing, "MIN_LEAVES", 0.0)
    monkeypatch.setattr(absorbing, "CHUNK_CELLS", 64)  # several row blocks per product


def random_chain(seed: int, n: int, density: float) -> tuple[sparse.csr_matrix, np.ndarray]:
    """A substochastic Q (state 0 = start, no way back to it) with self-loops, states that
    absorb at once, and conversion probabilities (the rest of each row goes to null)."""
    rng = np.random.default_rng(seed)
    m = sparse.random(n, n, density=density, random_state=seed, format="lil")
    m[:, 0] = 0.0
    for i in rng.choice(n, size=n // 5, replace=False):
        m[i, i] = rng.random()  # self-loops
    for i in rng.choice(np.arange(1, n), size=n // 10, replace=False):
        m[i, :] = 0.0  # absorbs at once
    m = m.tocsr()
    leak = rng.random(n) + 0.01
    total = np.asarray(m.sum(axis=1)).ravel() + leak
    q = (sparse.diags(1.0 / total) @ m).tocsr()
    conv = leak / total * rng.random(n)
    return q, conv


@pytest.mark.usefixtures("levels_always")
@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize(("n", "density"), [(40, 0.08), (200, 0.02), (300, 0.1)])
def test_elimination_equals_dense_inverse(seed: int, n: int, density: float) -> None:
    q, conv = random_chain(seed, n, density)
    levels, core = absorbing._eliminate((sparse.identity(n, format="csr") - q).tocsr())
    assert len(levels) >= 2 and core.shape[0] == 0
    h, n_start, diag = absorbing.removal_quantities(q, conv)
    fundamental = np.linalg.inv(np.eye(n) - q.toarray())
    assert np.max(np.abs(h - fundamental @ conv)) < 1e-9
    assert np.max(np.abs(n_start - fundamental[0])) < 1e-9
    assert np.max(np.abs(diag - np.diagonal(fundamental))) < 1e-9


@pytest.mark.parametrize("seed", range(3))
def test_levels_then_dense_core_equal_dense_inverse(seed: int,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Above DENSE_AT: a few levels, then a dense core (DENSE_AT scaled down, so the test is
    quick)."""
    monkeypatch.setattr(absorbing, "DENSE_AT", 150)
    n = 600
    q, conv = random_chain(seed, n, 3 / n)
    levels, core = absorbing._eliminate((sparse.identity(n, format="csr") - q).tocsr())
    assert levels and 0 < core.shape[0] < n
    h, n_start, diag = absorbing.removal_quantities(q, conv)
    fundamental = np.linalg.inv(np.eye(n) - q.toarray())
    assert np.max(np.abs(h - fundamental @ conv)) < 1e-9
    assert np.max(np.abs(n_start - fundamental[0])) < 1e-9
    assert np.max(np.abs(diag - np.diagonal(fundamental))) < 1e-9


def power_law_journeys(seed: int, n_journeys: int, n_referrers: int) -> list[Journey]:
    rng = random.Random(seed)
    weights = [1 / (i + 1) ** 1.1 for i in range(n_referrers)]
    out = []
    for _ in range(n_journeys):
        k = rng.choice((1, 1, 2, 3, 5))
        refs = tuple(f"r{i}" for i in rng.choices(range(n_referrers), weights=weights, k=k))
        out.append(Journey(refs, conversions=rng.randint(0, 2), lost=rng.randint(0, 2)))
    return [j for j in out if j.conversions + j.lost]


@pytest.mark.usefixtures("levels_always")
@pytest.mark.parametrize("seed", range(4))
def test_markov_by_levels_equals_resolving_per_state(seed: int) -> None:
    journeys = power_law_journeys(seed, 600, 80)
    model = MarkovModel().fit(journeys)
    assert model.removal_effects_ == pytest.approx(removal_effects_by_resolving(journeys),
                                                   abs=1e-9)


@pytest.mark.usefixtures("levels_always")
def test_markov_edge_cases_by_levels() -> None:
    # Every journey passes through "hub": removing it disconnects start from conversion.
    # "loop" repeats itself (self-loop); "dead" only ever ends journeys lost; "direct" converts
    # at once; "x" and "y" form a cycle behind the hub.
    journeys = [
        Journey(("hub", "x", "y", "x"), conversions=3, lost=1),
        Journey(("hub", "loop", "loop", "loop"), conversions=2, lost=2),
        Journey(("hub", "y", "x", "dead"), lost=4),
        Journey(("hub", "direct"), conversions=5),
        Journey(("hub",), conversions=1, lost=3),
        Journey(("hub", "hub", "x"), conversions=1),
    ]
    model = MarkovModel().fit(journeys)
    oracle = removal_effects_by_resolving(journeys)
    assert model.removal_effects_ == pytest.approx(oracle, abs=1e-9)
    assert model.removal_effects_["hub"] == pytest.approx(1.0, abs=1e-12)
    assert model.removal_effects_["dead"] == pytest.approx(0.0, abs=1e-12)
    # One-touch journeys only: every referrer is a leaf of the first level.
    single = [Journey((f"r{i}",), conversions=i % 3, lost=1) for i in range(30)]
    assert MarkovModel().fit(single).removal_effects_ == pytest.approx(
        removal_effects_by_resolving(single), abs=1e-9)
