"""Attribution models: who gets credit for a conversion.

Every model gives, for one conversion, a credit per referrer that touched it; the credits are
non-negative and sum to exactly 1 (`normalise`). Heuristic models are pure functions of the
touchpoints; the data-driven ones (Markov, Shapley) are first fitted on the program's journeys,
converting and not, like a detector, and then share each conversion among its own referrers in
proportion to their fitted weights.

Conventions (so results can be compared with ChannelAttribution):
- A journey is the ordered list of referrers whose (non-bot, non-duplicate) clicks preceded the
  conversion within the window; a non-converting journey is the same for a visitor who never
  converted. Touches at the same instant keep their click order.
- first/last/linear/position-based/time-decay work per touch and add the touches of one referrer.
- position-based: 40% first, 40% last, 20% shared by the middle touches; two touches 50/50.
- time-decay: weight 2^(-age / half_life) of each touch, age measured at the conversion.
- Markov (order 1): states start, each referrer, conversion, null; every journey contributes
  start -> r1 -> ... -> rk -> conversion|null. Removal effect of r =
  1 - P(conv without r) / P(conv), where removing r sends its incoming transitions to null.
  Absorption probabilities are solved exactly (a linear system), not simulated. Repeated
  consecutive referrers are kept; they do not change absorption probabilities. Program-level
  allocation: conversions x RE_r / sum(RE).
- Shapley: the conversion-probability game of Dalessandro et al. (2012): v(S) = conversions /
  journeys among journeys whose set of referrers is exactly S, v({}) = 0. Each conversion's
  referrers share it by their exact Shapley values in the game restricted to them (exact for any
  number of referrers: the game is a sum of indicator games over the observed sets, see
  `ShapleyModel.shapley_values`). Negative values are clipped to 0 before normalising. Beside
  it the set-based game of Zhao et al. (2018), v(S) = conversions of journeys whose referrer set
  is a subset of S, whose Shapley value has the closed form
  phi_i = sum over sets T containing i of c(T) / |T|, exact for any number of referrers.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter, defaultdict
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np
from scipy import sparse

from attribution.absorbing import removal_quantities

R = TypeVar("R", bound=Hashable)

HEURISTIC_MODELS = ("first_touch", "last_touch", "linear", "time_decay", "position_based")
DATA_DRIVEN_MODELS = ("markov", "shapley")
MODELS = HEURISTIC_MODELS + DATA_DRIVEN_MODELS
DEFAULT_HALF_LIFE_DAYS = 7.0
SHAPLEY_EXACT_MAX = 12  # above this, observed sets come from an index instead of subsets


@dataclass(frozen=True, slots=True)
class Touch:
    referrer: Hashable
    at: float  # seconds (any epoch; only differences matter)


@dataclass(frozen=True, slots=True)
class Journey:
    """The referrers a visitor or customer met, in order, and whether it converted."""

    referrers: tuple[Hashable, ...]
    conversions: int = 0  # how many times this path ended in a conversion
    lost: int = 0  # how many times it ended without one
    value: float = 0.0


def normalise(weights: dict[R, float]) -> dict[R, float]:
    """Non-negative weights scaled to sum to exactly 1 (equal split if all are zero)."""
    if not weights:
        return {}
    clipped = {k: (w if w > 0 and math.isfinite(w) else 0.0) for k, w in weights.items()}
    total = math.fsum(clipped.values())
    if total <= 0:
        share = 1.0 / len(clipped)
        clipped = dict.fromkeys(clipped, share)
    else:
        clipped = {k: w / total for k, w in clipped.items()}
    # Put the rounding remainder on the largest share so the sum is exactly 1.0.
    keys = list(clipped)
    biggest = max(keys, key=lambda k: clipped[k])
    rest = math.fsum(v for k, v in clipped.items() if k != biggest)
    clipped[biggest] = 1.0 - rest
    return clipped


def _per_touch(touches: Sequence[Touch], weights: Sequence[float]) -> dict[Hashable, float]:
    out: dict[Hashable, float] = defaultdict(float)
    for touch, weight in zip(touches, weights, strict=True):
        out[touch.referrer] += weight
    return normalise(dict(out))


def first_touch(touches: Sequence[Touch]) -> dict[Hashable, float]:
    return {touches[0].referrer: 1.0} if touches else {}


def last_touch(touches: Sequence[Touch]) -> dict[Hashable, float]:
    return {touches[-1].referrer: 1.0} if touches else {}


def linear(touches: Sequence[Touch]) -> dict[Hashable, float]:
    return _per_touch(touches, [1.0] * len(touches)) if touches else {}


def position_based(touches: Sequence[Touch], first: float = 0.4, last: float = 0.4
                   ) -> dict[Hashable, float]:
    n = len(touches)
    if n == 0:
        return {}
    if n == 1:
        return {touches[0].referrer: 1.0}
    if n == 2:
        return _per_touch(touches, [0.5, 0.5])
    middle = (1.0 - first - last) / (n - 2)
    return _per_touch(touches, [first, *([middle] * (n - 2)), last])


def time_decay(touches: Sequence[Touch], converted_at: float,
               half_life_days: float = DEFAULT_HALF_LIFE_DAYS) -> dict[Hashable, float]:
    if not touches:
        return {}
    half_life = half_life_days * 86400.0
    weights = [2.0 ** (-max(0.0, converted_at - t.at) / half_life) for t in touches]
    return _per_touch(touches, weights)


# -- Markov ------------------------------------------------------------------------------------


@dataclass
class MarkovModel:
    """Order-1 absorbing Markov chain over referrers, fitted on converting and lost journeys."""

    states_: list[Hashable] = field(default_factory=list)
    conversion_probability_: float = 0.0
    removal_effects_: dict[Hashable, float] = field(default_factory=dict)
    total_conversions_: int = 0

    def fit(self, journeys: Iterable[Journey]) -> MarkovModel:
        """Transition counts of every journey, weighted by its occurrences, then `_solve`.

        Counted with numpy over the journeys' touches laid end to end: state 0 is start, the
        referrers are numbered from 1 in order of first appearance."""
        kept = [j for j in journeys if j.referrers and j.conversions + j.lost > 0]
        self.states_ = list(dict.fromkeys(
            itertools.chain.from_iterable(j.referrers for j in kept)))
        index = {s: i + 1 for i, s in enumerate(self.states_)}
        size = len(self.states_) + 1
        lengths = np.fromiter((len(j.referrers) for j in kept), dtype=np.int64, count=len(kept))
        converted = np.fromiter((j.conversions for j in kept), dtype=np.float64,
                                count=len(kept))
        lost = np.fromiter((j.lost for j in kept), dtype=np.float64, count=len(kept))
        to = np.fromiter((index[r] for j in kept for r in j.referrers), dtype=np.int64,
                         count=int(lengths.sum()))
        starts = np.cumsum(lengths) - lengths  # each journey's first touch
        came_from = np.empty_like(to)
        came_from[1:] = to[:-1]
        came_from[starts] = 0  # from start
        last = to[starts + lengths - 1]
        moves = sparse.csr_matrix((np.repeat(converted + lost, lengths), (came_from, to)),
                                  shape=(size, size))  # duplicates are summed
        conv = np.bincount(last, weights=converted, minlength=size)
        out_totals = np.asarray(moves.sum(axis=1)).ravel() + conv + np.bincount(
            last, weights=lost, minlength=size)
        self.total_conversions_ = int(converted.sum())
        # Each count over its state's total: the transition probabilities.
        row_of = np.repeat(np.arange(size), np.diff(moves.indptr))
        q = sparse.csr_matrix((moves.data / out_totals[row_of], moves.indices, moves.indptr),
                              shape=(size, size))
        self._solve(q, np.divide(conv, out_totals, out=np.zeros(size), where=out_totals > 0))
        return self

    def _solve(self, q: sparse.csr_matrix, conv: np.ndarray) -> None:
        """Removal effects of every state from one elimination.

        With h the absorption probabilities into conversion and N = (I - Q)^-1 the fundamental
        matrix, a walk from start that never visits r converts with probability
        h[start] - P(start hits r) h[r], and P(start hits r) = N[start, r] / N[r, r] (strong
        Markov property at the first visit of r). Removing r (its incoming transitions go to
        null) leaves exactly those walks, so P(conv without r) = h[start] - N[s,r] / N[r,r] h[r].
        h and N[start, :] are two solves and diag(N) a selected inversion (`_Elimination`),
        exact up to rounding, at the cost of the dense core the elimination leaves.
        """
        h, n_start, diag = removal_quantities(q, conv)
        base = float(h[0])
        self.conversion_probability_ = base
        without = base - n_start[1:] / diag[1:] * h[1:]
        effects = (np.maximum(0.0, 1.0 - without / base) if base > 0
                   else np.zeros(len(self.states_)))
        self.removal_effects_ = dict(zip(self.states_, effects.tolist(), strict=True))

    def allocation(self) -> dict[Hashable, float]:
        """Program-level: total conversions shared out by removal effect."""
        total_re = math.fsum(self.removal_effects_.values())
        if total_re <= 0:
            return dict.fromkeys(self.removal_effects_, 0.0)
        return {s: self.total_conversions_ * re / total_re
                for s, re in self.removal_effects_.items()}

    def credits(self, referrers: Iterable[Hashable]) -> dict[Hashable, float]:
        return normalise({r: self.removal_effects_.get(r, 0.0) for r in set(referrers)})


# -- Shapley -----------------------------------------------------------------------------------


@dataclass
class ShapleyModel:
    """Shapley attribution over referrers (conversion-probability game, Dalessandro et al.)."""

    rates_: dict[frozenset[Hashable], float] = field(default_factory=dict)
    set_conversions_: dict[frozenset[Hashable], int] = field(default_factory=dict)
    _by_member: dict[Hashable, list[frozenset[Hashable]]] | None = None

    def fit(self, journeys: Iterable[Journey]) -> ShapleyModel:
        seen: Counter[frozenset[Hashable]] = Counter()
        converted: Counter[frozenset[Hashable]] = Counter()
        for journey in journeys:
            occurrences = journey.conversions + journey.lost
            if not journey.referrers or occurrences <= 0:
                continue
            key = frozenset(journey.referrers)
            seen[key] += occurrences
            converted[key] += journey.conversions
        self.rates_ = {k: converted[k] / n for k, n in seen.items()}
        self.set_conversions_ = {k: c for k, c in converted.items() if c}
        self._by_member = None
        return self

    def value(self, coalition: frozenset[Hashable]) -> float:
        return self.rates_.get(coalition, 0.0)

    def fit_index(self) -> None:
        """Observed sets by member, for games over many players."""
        index: dict[Hashable, list[frozenset[Hashable]]] = defaultdict(list)
        for coalition in self.rates_:
            for member in coalition:
                index[member].append(coalition)
        self._by_member = index

    def shapley_values(self, players: Iterable[Hashable]) -> dict[Hashable, float]:
        """Exact Shapley values of the game restricted to `players`.

        v is a sum of indicator games v = sum_T rate(T) [S == T] over the observed sets T, and
        the Shapley value is linear, so phi_i = sum_{T containing i} rate(T) w(|T| - 1)
        - sum_{T not containing i} rate(T) w(|T|), with w(s) = s! (n - s - 1)! / n!, over the
        observed sets inside `players`. Exact for any number of players: the observed sets are
        enumerated either as the subsets of `players` (few players) or from an index by member.
        """
        group = frozenset(players)
        n = len(group)
        if n == 0:
            return {}
        if n <= SHAPLEY_EXACT_MAX:
            inside = []
            members = sorted(group, key=repr)
            for size in range(1, n + 1):
                for subset in itertools.combinations(members, size):
                    coalition = frozenset(subset)
                    rate = self.rates_.get(coalition)
                    if rate:
                        inside.append((coalition, rate))
        else:
            if self._by_member is None:
                self.fit_index()
            by_member = self._by_member or {}
            candidates = {c for p in group for c in by_member.get(p, ())}
            inside = [(c, self.rates_[c]) for c in candidates if c <= group and self.rates_[c]]

        def weight(size: int) -> float:
            return 1.0 / (n * math.comb(n - 1, size))

        phi = dict.fromkeys(group, 0.0)
        for coalition, rate in inside:
            gain = rate * weight(len(coalition) - 1)
            loss = rate * weight(len(coalition)) if len(coalition) < n else 0.0
            for player in group:
                phi[player] += gain if player in coalition else -loss
        return phi

    def credits(self, referrers: Iterable[Hashable]) -> dict[Hashable, float]:
        return normalise(self.shapley_values(referrers))

    def set_game_values(self) -> dict[Hashable, float]:
        """Zhao et al.'s set-based game: phi_i = sum over sets T containing i of c(T)/|T|."""
        phi: dict[Hashable, float] = defaultdict(float)
        for members, conversions in self.set_conversions_.items():
            for member in members:
                phi[member] += conversions / len(members)
        return dict(phi)


def heuristic_credits(model: str, touches: Sequence[Touch], converted_at: float,
                      half_life_days: float = DEFAULT_HALF_LIFE_DAYS) -> dict[Hashable, float]:
    """Credits of one conversion under a heuristic model."""
    if model == "first_touch":
        return first_touch(touches)
    if model == "last_touch":
        return last_touch(touches)
    if model == "linear":
        return linear(touches)
    if model == "position_based":
        return position_based(touches)
    if model == "time_decay":
        return time_decay(touches, converted_at, half_life_days)
    raise ValueError(f"unknown heuristic model {model!r}")
