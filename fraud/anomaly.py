"""Referrers whose traffic is unlike the program's typical referrer (pyod), explained.

Each referrer with MIN_CONVERSIONS credited conversions or more is one row of FEATURES: how
its visitors convert (conversion rate, click-to-conversion times and their spread, the share
among the program's fastest), what they buy (the share at the program's minimum amount, the
share refunded or charged back), how they arrive (the share through hosting or anonymous
addresses, one Accept-Language string for most of them, from abroad, without the header),
and when (the rhythm of the clicks, the busiest day's surprise). Shares are shrunk toward
the program's own share by PRIOR conversions (a referrer with five conversions is not an
outlier by chance), so a small referrer sits near the typical one unless its traffic says
otherwise.

Detectors speak PyOD (`fit`, `decision_scores_`, higher = more anomalous). The ensemble
averages ECOD (parameter-free, tail probabilities per feature) and an isolation forest, each
turned into the rank of its score among the program's referrers. A referrer is unusual when
it ranks among the top (RANK_AT) and a feature of it is far from the typical referrer (a robust
z-score of Z_AT or more: the median referrer and its spread): ranks alone would always name
somebody. The explanation names the features furthest from the typical referrer, in words.

Fitted once per scan over the program's referrers (hundreds to thousands of rows), never per
conversion. It is corroborating evidence only (fraud.assess.CORROBORATING).
"""

from __future__ import annotations

import math
import warnings
from collections import Counter, defaultdict
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from fraud.signals import ConversionFacts, ProgramContext, Reason, is_headerless

MIN_CONVERSIONS = 5  # a referrer's credited conversions to have a row
MIN_REFERRERS = 15  # rows to tell a typical referrer from an unusual one
PRIOR = 5.0  # pseudo-conversions at the program's share a referrer's share is shrunk by
RANK_AT = 0.9  # the ensemble's rank among the program's referrers to be unusual
Z_AT = 4.0  # and a feature this many robust standard deviations from the typical referrer
QUICK = 0.1  # the program's fastest click-to-conversion times (quantile)
DAY = 86400.0


@dataclass(frozen=True, slots=True)
class Feature:
    name: str
    words: str  # what it measures, in plain words
    kind: str  # "share" (shown as a percentage), "log_seconds", "log_rate" or "number"
    floor: float  # the least spread a typical referrer is allowed (a robust z's denominator)
    # +1 where only a high value is suspicious (a refund share), -1 only a low one (a steady
    # rhythm), 0 both (a conversion rate: click spam's is low, a farm's high)
    side: int = 1


FEATURES = (
    Feature("conversion_rate", "conversions per click", "log_rate", 0.2, 0),
    Feature("median_delay", "median click-to-conversion time", "log_seconds", 0.2, 0),
    Feature("delay_spread", "spread of click-to-conversion times (decades)", "number", 0.15),
    Feature("quick_share", "share among the program's fastest conversions", "share", 0.06),
    Feature("min_amount_share", "share of purchases at the program's minimum amount", "share",
            0.06),
    Feature("reversed_share", "share refunded or charged back", "share", 0.05),
    Feature("hosting_share", "share through hosting or anonymous addresses", "share", 0.05),
    Feature("language_share", "share sending its most common Accept-Language", "share", 0.06),
    Feature("foreign_share", "share converting from outside the program's main country",
            "share", 0.06),
    Feature("headerless_share", "share of visits without Accept-Language", "share", 0.05),
    Feature("click_rhythm", "irregularity of the time between clicks (1 is random)", "number",
            0.15, -1),
    Feature("burst", "surprise of its busiest day (log10 odds)", "number", 1.0),
)


@dataclass(frozen=True, slots=True)
class Unusual:
    """A referrer the detectors single out: its rank, and the features furthest from the
    typical referrer as (feature, its value, the typical referrer's, robust z)."""

    referrer: str
    rank: float
    position: int  # 1 for the most unusual of the program's referrers
    of: int  # the referrers ranked
    furthest: tuple[tuple[Feature, float, float, float], ...]

    def message(self) -> str:
        parts = [f"{f.words} {_show(f, v)} (typical referrer {_show(f, t)})"
                 for f, v, t, _z in self.furthest]
        return (f"referrer population: {self.referrer}'s traffic is unlike the program's "
                f"typical referrer's (anomaly detectors: {self.position} of {self.of}): "
                + "; ".join(parts))


def _show(feature: Feature, value: float) -> str:
    if feature.kind == "share":
        return f"{value:.0%}"
    if feature.kind == "log_rate":
        return f"{10 ** value:.1%}"
    if feature.kind == "log_seconds":
        seconds = 10 ** value
        return (f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"
                if seconds < 7200 else f"{seconds / 3600:.0f} h" if seconds < 2 * DAY
                else f"{seconds / DAY:.0f} days")
    return f"{value:.2f}"


def _shrunk(k: float, n: int, base: float) -> float:
    return (k + PRIOR * base) / (n + PRIOR)


def referrer_rows(conversions: Sequence[ConversionFacts], reversed_ids: Collection[int],
                  referrer_clicks: Mapping[str, int]) -> dict[str, list[float]]:
    """Each referrer's row of FEATURES (those with MIN_CONVERSIONS conversions or more)."""
    mine: dict[str, list[ConversionFacts]] = defaultdict(list)
    for conv in conversions:
        for ref in conv.referrers:
            mine[ref].append(conv)
    if not mine:
        return {}
    amounts = [c.amount for c in conversions if c.amount > 0]
    cheapest = min(amounts) if amounts else 0
    delays = np.array([max(c.delay or 0.0, 0.0) for c in conversions if c.touches])
    quick = float(np.quantile(delays, QUICK)) if len(delays) else 0.0
    countries = Counter(c.country for c in conversions if c.country)
    home = countries.most_common(1)[0][0] if countries else None
    languages = Counter(c.touches[-1].language for c in conversions
                        if c.touches and c.touches[-1].language)
    times = [c.at for c in conversions]
    span_days = max((max(times) - min(times)) / DAY, 1.0)
    clicks = sum(referrer_clicks.get(ref, 0) for ref in mine)

    n_all = len(conversions)
    base = {
        "quick": QUICK,
        "min": (sum(c.amount == cheapest for c in conversions if c.amount > 0) / len(amounts)
                if amounts else 0.0),
        "reversed": sum(c.conversion_id in reversed_ids for c in conversions) / n_all,
        "hosting": sum(_through_hosting(c) for c in conversions) / n_all,
        "language": (languages.most_common(1)[0][1] / sum(languages.values())
                     if languages else 0.0),
        "foreign": (sum(1 for c in conversions if c.country and c.country != home)
                    / max(sum(countries.values()), 1)),
        "headerless": sum(is_headerless(c) for c in conversions) / n_all,
    }
    rows: dict[str, list[float]] = {}
    for ref, own in mine.items():
        n = len(own)
        if n < MIN_CONVERSIONS:
            continue
        own_delays = sorted(max(c.delay or 0.0, 0.0) for c in own if c.touches)
        logs = np.log10(np.array(own_delays) + 1.0) if own_delays else np.zeros(1)
        purchases = [c for c in own if c.amount > 0]
        langs = Counter(c.touches[-1].language for c in own
                        if c.touches and c.touches[-1].language)
        own_clicks = referrer_clicks.get(ref, 0)
        rows[ref] = [
            math.log10((n + 0.5) / (own_clicks + 1.0)) if clicks else 0.0,
            float(np.median(logs)),
            float(np.quantile(logs, 0.75) - np.quantile(logs, 0.25)),
            _shrunk(sum(d < quick for d in own_delays), len(own_delays), base["quick"]),
            _shrunk(sum(c.amount == cheapest for c in purchases), len(purchases), base["min"]),
            _shrunk(sum(c.conversion_id in reversed_ids for c in own), n, base["reversed"]),
            _shrunk(sum(map(_through_hosting, own)), n, base["hosting"]),
            _shrunk(langs.most_common(1)[0][1] if langs else 0.0, sum(langs.values()),
                    base["language"]),
            _shrunk(sum(1 for c in own if c.country and c.country != home),
                    sum(1 for c in own if c.country), base["foreign"]),
            _shrunk(sum(map(is_headerless, own)), n, base["headerless"]),
            _rhythm([c.touches[-1].at for c in own if c.touches]),
            _burst(sorted(c.at for c in own), span_days),
        ]
    return rows


def _through_hosting(conv: ConversionFacts) -> bool:
    return any(t.hosting or t.anonymous for t in conv.touches)


def _rhythm(clicks: Sequence[float]) -> float:
    """The interquartile range of the log gaps between a referrer's converting clicks over
    what random (Poisson) clicks give (1.57 in natural log): 1 is random, near 0 a steady
    rhythm, more than 1 clicks in clumps. 1 where there are too few clicks to tell."""
    gaps = np.diff(np.sort(np.asarray(clicks, dtype=float)))
    gaps = gaps[gaps > 0]
    if len(gaps) < 4:
        return 1.0
    logs = np.log(gaps)
    iqr = float(np.quantile(logs, 0.75) - np.quantile(logs, 0.25))
    # Shrunk toward 1 by PRIOR gaps, as the shares are.
    return (iqr / 1.57 * len(gaps) + PRIOR) / (len(gaps) + PRIOR)


def _burst(times: Sequence[float], span_days: float) -> float:
    """-log10 of the chance (Poisson, times the program's days) that a referrer converting
    at its average daily rate has a day as busy as its busiest: 0 for no surprise."""
    from scipy import stats

    n = len(times)
    best, j = 0, 0
    for i in range(n):
        while times[i] - times[j] > DAY:
            j += 1
        best = max(best, i - j + 1)
    tail = float(stats.poisson.sf(best - 1, n / span_days)) * span_days
    return max(0.0, -math.log10(max(min(tail, 1.0), 1e-300)))


def unusual_referrers(rows: Mapping[str, Sequence[float]], seed: int = 0,
                      top: int = 2) -> dict[str, Unusual]:
    """The referrers the ensemble ranks at RANK_AT or more with a feature Z_AT or more robust
    standard deviations from the typical referrer; each with its `top` furthest features."""
    if len(rows) < MIN_REFERRERS:
        return {}
    refs = list(rows)
    x = np.asarray([rows[r] for r in refs], dtype=float)
    typical = np.median(x, axis=0)
    mad = np.median(np.abs(x - typical), axis=0) * 1.4826
    floor = np.array([f.floor for f in FEATURES])
    side = np.array([f.side for f in FEATURES])
    # Only the suspicious side of a one-sided feature counts: the rest is the typical value.
    z = (x - typical) / np.maximum(mad, floor)
    z = np.where(side > 0, np.maximum(z, 0.0), np.where(side < 0, np.minimum(z, 0.0), z))
    rank = ensemble_rank(typical + z * np.maximum(mad, floor), seed)
    position = len(rank) - np.argsort(np.argsort(rank, kind="stable"))
    out: dict[str, Unusual] = {}
    for i in np.flatnonzero(rank >= RANK_AT):
        order = np.argsort(-np.abs(z[i]))[:top]
        if abs(z[i, order[0]]) < Z_AT:
            continue
        out[refs[i]] = Unusual(refs[i], float(rank[i]), int(position[i]), len(refs), tuple(
            (FEATURES[j], float(x[i, j]), float(typical[j]), float(z[i, j]))
            for j in order if abs(z[i, j]) >= Z_AT / 2))
    return out


def ensemble_rank(x: np.ndarray, seed: int = 0) -> np.ndarray:
    """Each row's rank in [0, 1] among the rows, averaged over ECOD and an isolation forest."""
    from pyod.models.ecod import ECOD
    from pyod.models.iforest import IForest

    ranks = []
    for detector in (ECOD(), IForest(random_state=seed, n_estimators=100)):
        # ECOD's skewness warns on a constant feature (precision loss); harmless here.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            detector.fit(x)
        scores = np.asarray(detector.decision_scores_, dtype=float)
        ranks.append((np.argsort(np.argsort(scores, kind="stable")) + 1) / len(scores))
    rank: np.ndarray = np.mean(ranks, axis=0)
    return rank


FAMILY = "anomaly"  # corroborating only: see fraud.assess.CORROBORATING
WEIGHT = 0.35  # an unusual referrer's weight on each of its conversions


def anomaly_reasons(conversions: Sequence[ConversionFacts], context: ProgramContext,
                    seed: int = 0) -> dict[str, Reason]:
    """Each unusual referrer's reason (code "anomaly", family FAMILY), for its conversions."""
    rows = referrer_rows(conversions, context.reversed_ids, context.referrer_clicks)
    return {ref: Reason("anomaly", found.message(), round(found.rank, 4),
                        f"rank {RANK_AT:g} and a feature {Z_AT:g} robust sd away", WEIGHT,
                        FAMILY)
            for ref, found in unusual_referrers(rows, seed).items()}
