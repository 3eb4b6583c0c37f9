"""Attribution models: closed forms on small journeys and properties on random ones."""

from __future__ import annotations

import itertools
import math
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from attribution.models import (
    HEURISTIC_MODELS,
    Journey,
    MarkovModel,
    ShapleyModel,
    Touch,
    heuristic_credits,
    normalise,
)

DAY = 86400.0


def touches(*names: str, gap: float = DAY) -> list[Touch]:
    return [Touch(name, i * gap) for i, name in enumerate(names)]


def test_heuristics_closed_form() -> None:
    path = touches("a", "b", "c", "b")
    end = 3 * DAY
    assert heuristic_credits("first_touch", path, end) == {"a": 1.0}
    assert heuristic_credits("last_touch", path, end) == {"b": 1.0}
    assert heuristic_credits("linear", path, end) == pytest.approx({"a": 0.25, "b": 0.5,
                                                                     "c": 0.25})
    assert heuristic_credits("position_based", path, end) == pytest.approx(
        {"a": 0.4, "b": 0.1 + 0.4, "c": 0.1})
    assert heuristic_credits("position_based", touches("a", "b"), DAY) == {"a": 0.5, "b": 0.5}
    assert heuristic_credits("position_based", touches("a"), 0) == {"a": 1.0}
    # Time decay, half-life 7 days: ages 3, 2, 1, 0 days.
    w = {age: 2 ** (-age / 7) for age in range(4)}
    total = sum(w.values())
    assert heuristic_credits("time_decay", path, end) == pytest.approx(
        {"a": w[3] / total, "b": (w[2] + w[0]) / total, "c": w[1] / total})
    assert heuristic_credits("time_decay", path, end, half_life_days=1)["b"] == pytest.approx(
        (0.5 ** 2 + 1) / (0.5 ** 3 + 0.5 ** 2 + 0.5 + 1))
    with pytest.raises(ValueError, match="unknown"):
        heuristic_credits("nope", path, end)
    for model in HEURISTIC_MODELS:
        assert heuristic_credits(model, [], end) == {}


def test_markov_removal_effects_by_hand() -> None:
    # start->A (2/3), start->B (1/3); A->conv 1/2, A->B 1/2; B->conv 1/2, B->null 1/2.
    model = MarkovModel().fit([
        Journey(("A",), conversions=1),
        Journey(("A", "B"), conversions=1),
        Journey(("B",), lost=1),
    ])
    assert model.conversion_probability_ == pytest.approx(2 / 3, abs=1e-12)
    assert model.removal_effects_["A"] == pytest.approx(3 / 4, abs=1e-12)
    assert model.removal_effects_["B"] == pytest.approx(1 / 2, abs=1e-12)
    assert model.allocation() == pytest.approx({"A": 1.2, "B": 0.8}, abs=1e-12)
    assert model.credits(["A", "B"]) == pytest.approx({"A": 0.6, "B": 0.4}, abs=1e-12)
    assert model.credits(["B"]) == {"B": 1.0}


def test_markov_counts_aggregated_paths_and_ignores_self_loops() -> None:
    aggregated = MarkovModel().fit([Journey(("A", "B"), conversions=3, lost=1),
                                    Journey(("B",), lost=2)])
    expanded = MarkovModel().fit([Journey(("A", "A", "B"), conversions=1)] * 3
                                 + [Journey(("A", "B"), lost=1)] + [Journey(("B",), lost=1)] * 2)
    assert aggregated.removal_effects_ == pytest.approx(expanded.removal_effects_, abs=1e-12)


def test_shapley_conversion_probability_game_by_hand() -> None:
    journeys = ([Journey(("A",), conversions=1)] * 2 + [Journey(("A",), lost=1)] * 8
                + [Journey(("B",), conversions=1)] + [Journey(("B",), lost=1)] * 9
                + [Journey(("A", "B"), conversions=1)] * 5 + [Journey(("B", "A"), lost=1)] * 5)
    model = ShapleyModel().fit(journeys)
    phi = model.shapley_values(["A", "B"])
    assert phi == pytest.approx({"A": 0.3, "B": 0.2}, abs=1e-12)
    assert model.credits(["A", "B"]) == pytest.approx({"A": 0.6, "B": 0.4}, abs=1e-12)
    # Zhao et al.'s set game: c({A})=2, c({B})=1, c({A,B})=5.
    assert model.set_game_values() == pytest.approx({"A": 4.5, "B": 3.5})


def brute_force_shapley(model: ShapleyModel, players: list[str]) -> dict[str, float]:
    """The definition: average marginal contribution over every ordering of the players."""
    phi = dict.fromkeys(players, 0.0)
    orders = list(itertools.permutations(players))
    for order in orders:
        before: frozenset[str] = frozenset()
        for player in order:
            after = before | {player}
            phi[player] += model.value(after) - model.value(before)
            before = after
    return {p: v / len(orders) for p, v in phi.items()}


def test_shapley_matches_the_definition() -> None:
    model = ShapleyModel().fit([
        Journey(("a", "b", "c"), conversions=3, lost=1), Journey(("a",), conversions=1, lost=3),
        Journey(("b", "c"), conversions=1, lost=1), Journey(("c", "d"), lost=2),
        Journey(("a", "b", "c", "d"), conversions=2),
    ])
    players = ["a", "b", "c", "d"]
    assert model.shapley_values(players) == pytest.approx(
        brute_force_shapley(model, players), abs=1e-12)


def test_shapley_is_exact_for_many_referrers(monkeypatch: pytest.MonkeyPatch) -> None:
    import attribution.models as models

    players = [f"r{i:02d}" for i in range(13)]
    journeys = [Journey(tuple(players), conversions=2, lost=1),
                Journey(tuple(players[:5]), conversions=1, lost=1),
                Journey(("r00",), conversions=1, lost=3), Journey(("r03", "r07"), lost=1)]
    by_index = ShapleyModel().fit(journeys).shapley_values(players)  # 13 > the subset limit
    monkeypatch.setattr(models, "SHAPLEY_EXACT_MAX", 13)
    by_subsets = ShapleyModel().fit(journeys).shapley_values(players)
    assert by_index == pytest.approx(by_subsets, abs=1e-12)
    assert math.fsum(by_index.values()) == pytest.approx(2 / 3, abs=1e-12)


def test_normalise_sums_to_exactly_one() -> None:
    shares = normalise({"a": 1.0, "b": 1.0, "c": 1.0})
    assert math.fsum(shares.values()) == 1.0
    assert sum(Fraction(v) for v in shares.values()) == 1
    assert normalise({"a": -1.0, "b": 0.0}) == {"a": 0.5, "b": 0.5}


names = st.sampled_from(["r1", "r2", "r3", "r4", "r5"])
paths = st.lists(names, min_size=1, max_size=8)


@given(path=paths, model=st.sampled_from(HEURISTIC_MODELS),
       gaps=st.lists(st.floats(0, 30 * DAY), min_size=8, max_size=8))
@settings(max_examples=300, deadline=None)
def test_heuristic_credits_properties(path: list[str], model: str, gaps: list[float]) -> None:
    ts = [sum(gaps[: i + 1]) for i in range(len(path))]
    tp = [Touch(r, t) for r, t in zip(path, ts, strict=False)]
    credits = heuristic_credits(model, tp, ts[-1] + 1)
    assert all(v >= 0 for v in credits.values())
    assert math.fsum(credits.values()) == pytest.approx(1.0, abs=1e-12)
    assert set(credits) <= set(path)
    renamed = heuristic_credits(model, [Touch("x" + t.referrer, t.at) for t in tp], ts[-1] + 1)
    assert renamed == pytest.approx({"x" + k: v for k, v in credits.items()}, abs=1e-12)


journeys_strategy = st.lists(
    st.tuples(paths, st.integers(0, 3), st.integers(0, 3)), min_size=1, max_size=30)


@given(data=journeys_strategy)
@settings(max_examples=150, deadline=None)
def test_data_driven_credits_properties(data: list[tuple[list[str], int, int]]) -> None:
    journeys = [Journey(tuple(p), conversions=c, lost=n) for p, c, n in data]
    renamed = [Journey(tuple("x" + r for r in j.referrers), j.conversions, j.lost)
               for j in journeys]
    for cls in (MarkovModel, ShapleyModel):
        model = cls().fit(journeys)
        other = cls().fit(renamed)
        for journey in journeys:
            credits = model.credits(journey.referrers)
            assert all(v >= 0 for v in credits.values())
            assert math.fsum(credits.values()) == pytest.approx(1.0, abs=1e-12)
            again = other.credits(["x" + r for r in journey.referrers])
            assert again == pytest.approx({"x" + k: v for k, v in credits.items()}, abs=1e-9)
    markov = MarkovModel().fit(journeys)
    total = sum(j.conversions for j in journeys if j.referrers)
    if any(v > 0 for v in markov.removal_effects_.values()):
        assert math.fsum(markov.allocation().values()) == pytest.approx(total)


@given(data=journeys_strategy, players=st.sets(names, min_size=1, max_size=5))
@settings(max_examples=150, deadline=None)
def test_shapley_efficiency_and_symmetry(data: list[tuple[list[str], int, int]],
                                         players: set[str]) -> None:
    model = ShapleyModel().fit([Journey(tuple(p), c, n) for p, c, n in data])
    phi = model.shapley_values(players)
    assert math.fsum(phi.values()) == pytest.approx(model.value(frozenset(players)), abs=1e-12)
    # A symmetric game: every coalition's value depends only on its size.
    sym = ShapleyModel()
    sym.rates_ = {frozenset(s): len(s) ** 2 / 10
                  for k in range(1, len(players) + 1)
                  for s in itertools.combinations(sorted(players), k)}
    values = list(sym.shapley_values(players).values())
    assert max(values) - min(values) < 1e-12


def removal_effects_by_resolving(journeys: list[Journey]) -> dict[str, float]:
    """Independent oracle: rebuild the chain densely and re-solve it once per removed state."""
    import numpy as np

    states = sorted({r for j in journeys for r in j.referrers})
    idx = {s: i + 1 for i, s in enumerate(states)}
    size = len(states) + 3  # start, states..., conversion, null
    conv_i, null_i = size - 2, size - 1
    counts = np.zeros((size, size))
    for j in journeys:
        occ = j.conversions + j.lost
        path = [0] + [idx[r] for r in j.referrers]
        for a, b in itertools.pairwise(path):
            counts[a, b] += occ
        counts[path[-1], conv_i] += j.conversions
        counts[path[-1], null_i] += j.lost
    totals = counts.sum(axis=1, keepdims=True)
    p = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)

    def absorb(removed: int | None) -> float:
        m = p.copy()
        if removed is not None:
            m[:, null_i] += m[:, removed]
            m[:, removed] = 0.0
        transient = list(range(size - 2))
        q = m[np.ix_(transient, transient)]
        return float(np.linalg.solve(np.eye(len(transient)) - q, m[transient, conv_i])[0])

    base = absorb(None)
    return {s: 1 - absorb(idx[s]) / base for s in states}


@given(data=st.lists(st.tuples(paths, st.integers(0, 3), st.integers(0, 3)), min_size=1,
                     max_size=40))
@settings(max_examples=100, deadline=None)
def test_markov_matches_resolving_the_chain_per_removed_state(
    data: list[tuple[list[str], int, int]],
) -> None:
    journeys = [Journey(tuple(p), c, n) for p, c, n in data if c + n > 0]
    if not any(j.conversions for j in journeys):
        return
    model = MarkovModel().fit(journeys)
    assert model.removal_effects_ == pytest.approx(removal_effects_by_resolving(journeys),
                                                   abs=1e-9)
