"""Incentive experiments: which reward variant works better (GET /api/v1/reports/experiments).

A program with `settings.reward.variants` assigns each referrer one variant, for good
(tracker.programs.variants); clearance makes its rewards under that variant's rules. The
referrer is the unit the experiment randomises, so every figure is per variant over its
referrers, and the test and the intervals treat referrers as the independent observations
(clicks and customers of one referrer are not independent of each other).

Per variant: referrers, shares, clicks (not bots, not duplicates), referred customers
(distinct customers of credited conversions), converting referrers (those with at least one
referred customer) and the conversion rate = converting referrers / referrers, referred
customers per click, rewards and the fraud rate = rewards fraud-flagged (`flagged` or
`rejected`) / rewards; and per currency: revenue (credited purchases and renewals at their
credit, net of refunds and chargebacks), incentive cost (rewards `approved` or `paid`; a
reversed reward costs nothing, its clawback settles what was paid) split by beneficiary,
and ROI = (revenue - incentive cost) / incentive cost. A conversion with a fraud-flagged reward
counts for nothing: neither its customer, nor its revenue, nor its rewards' money.

The test: the conversion rates of each pair of variants by Fisher's exact test (two-sided),
with Holm's step-down correction over the pairs when there are more than two variants, at
LEVEL. The `winner` is the variant whose rate is above every other's with every one of its
comparisons significant; otherwise null. The family-wise error rate is at most LEVEL (Fisher's
test is conservative, so a little under it: bench/experiments.py measures it).

Intervals (CONFIDENCE): Clopper-Pearson exact intervals for the rates; percentile bootstrap
intervals (BOOTSTRAP resamples of the variant's referrers, seeded by the program, so an answer
is reproducible; for a large variant, resamples from the bootstrap's normal limit) for revenue
and cost per referrer and for ROI.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import numpy as np
from scipy import stats

from tracker.finance import queries
from tracker.programs.variants import variants_of

LEVEL = 0.05
CONFIDENCE = 0.95
BOOTSTRAP = 1000
LARGE = 2_000  # rows with money beyond which the bootstrap's normal limit is drawn instead
_CHUNK = 100  # bootstrap resamples drawn at once (memory: _CHUNK x referrers with money)
FRAUD_STATUSES = frozenset({"flagged", "rejected"})

TEST = {
    "metric": "conversion_rate",
    "unit": "referrer",
    "method": "fisher_exact",
    "alternative": "two-sided",
    "level": LEVEL,
    "description": (
        "Conversion rate = referrers with at least one referred customer / referrers of the "
        "variant. Each pair of variants is compared by Fisher's exact test (two-sided); with "
        "more than two variants the p-values are adjusted by Holm's step-down method. The "
        f"winner is the variant whose rate is above every other's with all of its comparisons "
        f"significant (adjusted p < {LEVEL}); otherwise null."),
}
INTERVALS = {
    "confidence": CONFIDENCE,
    "rates": "Clopper-Pearson exact interval",
    "money": f"percentile bootstrap over the variant's referrers, {BOOTSTRAP} resamples, "
             "seeded by the program (reproducible); beyond 2,000 referrers with money, "
             "resamples drawn from the normal limit of the bootstrap (same intervals within "
             "resampling noise)",
}


# -- statistics (pure) --------------------------------------------------------------------------


def exact_interval(k: int, n: int, confidence: float = CONFIDENCE
                   ) -> tuple[float, float] | None:
    """Clopper-Pearson interval of a proportion k / n (None when n is 0)."""
    if n <= 0:
        return None
    ci = stats.binomtest(k, n).proportion_ci(confidence_level=confidence, method="exact")
    return float(ci.low), float(ci.high)


def fisher_p(k1: int, n1: int, k2: int, n2: int) -> float:
    """Two-sided p-value of Fisher's exact test of k1 / n1 against k2 / n2."""
    if (k1 + k2) in (0, n1 + n2):
        return 1.0  # nobody (or everybody) converted: the table says nothing
    return float(stats.fisher_exact([[k1, n1 - k1], [k2, n2 - k2]])[1])


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (family-wise error control), in the given order."""
    m = len(pvalues)
    order = sorted(range(m), key=lambda i: pvalues[i])
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted


@dataclass(frozen=True, slots=True)
class Comparison:
    a: str
    b: str
    p_value: float
    p_adjusted: float
    significant: bool


@dataclass(frozen=True, slots=True)
class Verdict:
    comparisons: list[Comparison]
    winner: str | None


def significance(arms: Sequence[tuple[str, int, int]], level: float = LEVEL) -> Verdict:
    """Pairwise Fisher tests of (name, converted, referrers) arms with Holm's correction, and
    the winner: above every other arm, each of its comparisons significant. Arms without
    referrers take no part."""
    live = [a for a in arms if a[2] > 0]
    pairs = [(x, y) for i, x in enumerate(live) for y in live[i + 1:]]
    raw = [fisher_p(x[1], x[2], y[1], y[2]) for x, y in pairs]
    adjusted = holm(raw)
    comparisons = [Comparison(x[0], y[0], p, q, q < level)
                   for (x, y), p, q in zip(pairs, raw, adjusted, strict=True)]
    winner = None
    for name, k, n in live:
        rate = k / n
        mine = [c for c in comparisons if name in (c.a, c.b)]
        others = [o for o in live if o[0] != name]
        if mine and all(c.significant for c in mine) and all(rate > o[1] / o[2]
                                                             for o in others):
            winner = name
    return Verdict(comparisons, winner)


def bootstrap_sums(values: np.ndarray, n: int, rng: np.random.Generator,
                   resamples: int = BOOTSTRAP, *, large: int = LARGE) -> np.ndarray:
    """Sums of each column of `values` (one row per referrer with any money; the other
    n - len(values) referrers have none) over `resamples` bootstrap resamples of n referrers:
    an array (resamples, columns).

    Only the rows with money are drawn: how many of the n draws land on them is binomial, and
    those draws are uniform among them, which is the same resample at a cost of (rows with
    money), not n, per resample. Beyond `large` rows with money the resampled sums are drawn
    from the normal distribution the bootstrap's converges to (mean n x the mean, covariance
    n x the covariance, over all n referrers): the same intervals to within the resampling
    noise, in constant time."""
    m = values.shape[0]
    out = np.zeros((resamples, values.shape[1]))
    if m == 0 or n == 0:
        return out
    if m > large:
        mean = values.sum(axis=0) / n
        cov = values.T @ values / n - np.outer(mean, mean)
        return rng.multivariate_normal(n * mean, n * cov, size=resamples,
                                       method="eigh")
    for start in range(0, resamples, _CHUNK):
        size = min(_CHUNK, resamples - start)
        hits = rng.binomial(n, m / n, size=size)
        which = np.repeat(np.arange(size), hits)
        rows = rng.integers(0, m, size=int(hits.sum()))
        for col in range(values.shape[1]):
            out[start:start + size, col] = np.bincount(which, weights=values[rows, col],
                                                       minlength=size)
    return out


def _percentiles(x: np.ndarray, confidence: float = CONFIDENCE) -> list[float] | None:
    if x.size == 0 or not np.all(np.isfinite(x)):
        return None
    tail = (1 - confidence) / 2
    lo, hi = np.quantile(x, [tail, 1 - tail])
    return [round(float(lo), 4), round(float(hi), 4)]


def _money_intervals(revenue: np.ndarray, cost: np.ndarray, n: int
                     ) -> dict[str, list[float] | None]:
    """Intervals of revenue and cost per referrer and of ROI from bootstrap sums (one value
    per resample) over a variant's n referrers. ROI's is null when some resample has no
    cost (ROI undefined there)."""
    if n == 0:
        return dict.fromkeys(("revenue_per_referrer_ci", "cost_per_referrer_ci", "roi_ci"))
    with np.errstate(divide="ignore", invalid="ignore"):
        roi = np.where(cost > 0, (revenue - cost) / np.where(cost > 0, cost, 1), np.nan)
    return {"revenue_per_referrer_ci": _percentiles(revenue / n),
            "cost_per_referrer_ci": _percentiles(cost / n),
            "roi_ci": _percentiles(roi)}


# -- the report ---------------------------------------------------------------------------------


@dataclass
class _Arm:
    name: str
    weight: float | None  # None: no longer in the settings
    referrers: int = 0
    shares: int = 0
    clicks: int = 0
    customers: int = 0
    converted: int = 0
    rewards: int = 0
    flagged: int = 0
    # referrer -> [revenue, cost to referrers, cost to referees] per currency, flat
    money: dict[int, list[float]] = field(default_factory=dict)


_KINDS = ("revenue", "referrer", "referee")


def _round(x: float | None, digits: int = 4) -> float | None:
    return None if x is None else round(x, digits)


def _interval(ci: tuple[float, float] | None) -> list[float] | None:
    return None if ci is None else [round(ci[0], 4), round(ci[1], 4)]


def _arm_json(arm: _Arm, currencies: list[str], seed: Sequence[int]) -> dict[str, Any]:
    n = arm.referrers
    width = len(_KINDS)
    table = np.array(list(arm.money.values())) if arm.money else \
        np.zeros((0, width * len(currencies)))
    # revenue and total cost per currency, per referrer with any money: one bootstrap for all
    columns = []
    for c in range(len(currencies)):
        columns += [table[:, c * width], table[:, c * width + 1] + table[:, c * width + 2]]
    sums = bootstrap_sums(np.column_stack(columns) if table.shape[0] else
                          np.zeros((0, len(columns))), n, np.random.default_rng(list(seed)))
    per_currency = {}
    for c, cur in enumerate(currencies):
        rev, to_referrers, to_referees = (float(table[:, c * width + k].sum())
                                          for k in range(width))
        cost = to_referrers + to_referees
        per_currency[cur] = {
            "revenue": round(rev),
            "incentive_cost": round(cost),
            "incentive_cost_referrer": round(to_referrers),
            "incentive_cost_referee": round(to_referees),
            "roi": _round((rev - cost) / cost) if cost else None,
            "revenue_per_referrer": _round(rev / n, 2) if n else None,
            "cost_per_referrer": _round(cost / n, 2) if n else None,
            **_money_intervals(sums[:, 2 * c], sums[:, 2 * c + 1], n),
        }
    return {
        "name": arm.name,
        "weight": arm.weight,
        "active": arm.weight is not None,
        "referrers": n,
        "shares": arm.shares,
        "clicks": arm.clicks,
        "referred_customers": arm.customers,
        "converting_referrers": arm.converted,
        "conversion_rate": _round(arm.converted / n) if n else None,
        "conversion_rate_ci": _interval(exact_interval(arm.converted, n)),
        "customers_per_click": _round(arm.customers / arm.clicks) if arm.clicks else None,
        "rewards": arm.rewards,
        "fraud_flagged_rewards": arm.flagged,
        "fraud_rate": _round(arm.flagged / arm.rewards) if arm.rewards else None,
        "fraud_rate_ci": _interval(exact_interval(arm.flagged, arm.rewards)),
        "money": per_currency,
    }


async def experiments_report(conn: asyncpg.Connection, program_id: int,
                             settings: dict[str, Any]) -> dict[str, Any]:
    """The experiment's figures per variant, the pairwise tests and the winner (see module)."""
    currency = (settings.get("reward") or {}).get("currency", "USD")
    arms: dict[str, _Arm] = {v.name: _Arm(v.name, v.weight) for v in variants_of(settings)}
    for a in await queries.experiment_arms(conn, program_id):
        arm = arms.setdefault(a.variant, _Arm(a.variant, None))
        arm.referrers, arm.shares, arm.clicks = a.referrers, a.shares, a.clicks
        arm.converted, arm.customers = a.converted, a.customers
    for r in await queries.experiment_reward_counts(conn, program_id):
        arm = arms.setdefault(r.variant, _Arm(r.variant, None))
        arm.rewards += r.n
        if r.status in FRAUD_STATUSES:
            arm.flagged += r.n
    money = await queries.experiment_money(conn, program_id, currency)
    currencies = sorted({m.currency for m in money} | {currency})
    where = {cur: i * len(_KINDS) for i, cur in enumerate(currencies)}
    for m in money:
        row = arms[m.variant].money.setdefault(m.referrer_id, [0.0] * len(where) * len(_KINDS))
        row[where[m.currency] + _KINDS.index(m.kind)] += m.amount

    ordered = list(arms.values())
    # The bootstrap is CPU work: off the event loop.
    variants = await asyncio.to_thread(
        lambda: [_arm_json(a, currencies, (program_id, i)) for i, a in enumerate(ordered)])
    verdict = significance([(a.name, a.converted, a.referrers) for a in ordered])
    live = sum(1 for a in ordered if a.referrers)
    return {
        "level": LEVEL,
        "test": {**TEST, "correction": "holm" if live > 2 else "none",
                 "comparisons": len(verdict.comparisons)},
        "intervals": INTERVALS,
        "currencies": currencies,
        "variants": variants,
        "comparisons": [{"a": c.a, "b": c.b, "p_value": _round(c.p_value, 6),
                         "p_adjusted": _round(c.p_adjusted, 6), "significant": c.significant}
                        for c in verdict.comparisons],
        "winner": verdict.winner,
    }
