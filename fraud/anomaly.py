"""Referrers whose traffic is unlike the program's typical referrer (pyod), explained: a watch
list for finance, never a conversion's risk.

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
z-score of Z_AT or more on the feature's suspicious side: the median referrer and its spread):
ranks alone would always name somebody. Its reasons name the features furthest from the
typical referrer, in words, with both values.

Fitted once per full scan over the program's referrers (hundreds to thousands of rows), never
per conversion. The scan stores each unusual referrer as one fraud flag of kind FLAG_KIND; it
changes no conversion's risk and no reward's decision (on the red team's tuning seeds the
other families already held the fraud of the referrers it names, and as evidence in the risk
it held more genuine purchases than fraudulent ones it added: README, Fraud).
"""

from __future__ import annotations

import math
import warnings
from collections import Counter, defaultdict
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from fraud.signals import ConversionFacts, ProgramContext, is_headerless

FLAG_KIND = "anomaly"
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
    phrase: str  # what it measures in plain words, "{}" where the value goes
    # "share" (a percentage), "log_rate" (log10 of a rate), "log_seconds" (log10 of 1 + s),
    # "log_odds" (-log10 of a chance) or "number"
    kind: str
    floor: float  # the least spread a typical referrer is allowed (a robust z's denominator)
    # +1 where only a high value is suspicious (a refund share), -1 only a low one (a steady
    # rhythm), 0 both (a conversion rate: click spam's is low, a farm's high)
    side: int = 1


FEATURES = (
    Feature("conversion_rate", "{} conversions per click", "log_rate", 0.2, 0),
    Feature("median_delay", "median click-to-conversion time {}", "log_seconds", 0.2, 0),
    Feature("delay_spread", "click-to-conversion times spread over {} decades between "
            "quartiles", "number", 0.15),
    Feature("quick_share", "{} of conversions among the program's fastest tenth", "share",
            0.06),
    Feature("min_amount_share", "{} of purchases at the program's minimum amount", "share",
            0.06),
    Feature("reversed_share", "{} of conversions refunded or charged back", "share", 0.05),
    Feature("hosting_share", "{} of conversions through hosting or anonymous addresses",
            "share", 0.05),
    Feature("language_share", "{} of visitors sending the same Accept-Language", "share",
            0.06),
    Feature("foreign_share", "{} of conversions from outside the program's main country",
            "share", 0.06),
    Feature("headerless_share", "{} of conversions without an Accept-Language header",
            "share", 0.05),
    Feature("click_rhythm", "irregularity of the time between clicks {}, where 1 is random",
            "number", 0.15, -1),
    Feature("burst", "busiest day a chance of {} at its usual daily rate", "log_odds", 1.0),
)


@dataclass(frozen=True, slots=True)
class Row:
    """A referrer's FEATURES values (shares shrunk toward the program's), and each share's
    own count before shrinking: (of them, out of), None for the other features."""

    values: tuple[float, ...]
    counts: tuple[tuple[int, int] | None, ...]
    conversions: int
    clicks: int


@dataclass(frozen=True, slots=True)
class Measure:
    """One feature of an unusual referrer against the typical referrer."""

    feature: Feature
    value: float  # the referrer's (shrunk, for a share)
    typical: float  # the median referrer's
    scale: float  # the robust standard deviation (at least the feature's floor)
    z: float  # on the suspicious side only (0 on the other side of a one-sided feature)
    count: tuple[int, int] | None  # a share's own (of them, out of)

    def as_reason(self) -> dict[str, object]:
        f = self.feature
        sign = f.side or (1 if self.z >= 0 else -1)
        shown = (self.count[0] / self.count[1] if self.count and self.count[1]
                 else self.value) if f.kind == "share" else self.value
        counted = f"{self.count[0]} of {self.count[1]}; " if self.count else ""
        return {"code": f"{FLAG_KIND}_{f.name}",
                "message": f"{f.phrase.format(_show(f, shown))} ({counted}typical referrer: "
                           f"{_show(f, self.typical)})",
                "value": round(_natural(f, shown), 4),
                "threshold": round(_natural(f, self.typical + sign * Z_AT * self.scale), 4)}

    def as_evidence(self) -> dict[str, object]:
        f = self.feature
        return {"feature": f.name, "value": round(_natural(f, self.value), 4),
                "typical": round(_natural(f, self.typical), 4), "z": round(self.z, 2),
                "count": list(self.count) if self.count else None}


@dataclass(frozen=True, slots=True)
class Unusual:
    """A referrer the detectors single out: its rank (the anomaly percentile), its place
    among the program's referrers, every feature against the typical referrer, and the
    furthest of them (the reasons)."""

    referrer: str
    rank: float
    position: int  # 1 for the most unusual of the program's referrers
    of: int  # the referrers ranked
    conversions: int
    clicks: int
    measures: tuple[Measure, ...]  # in FEATURES' order
    furthest: tuple[Measure, ...]

    def reasons(self) -> list[dict[str, object]]:
        """The flag's reasons: the detectors' verdict, then the furthest features."""
        lead = {"code": FLAG_KIND,
                "message": f"traffic unlike the program's typical referrer: {self.position} "
                           f"of {self.of} referrers by the anomaly detectors (ECOD and an "
                           f"isolation forest), a feature {Z_AT:g} robust standard deviations "
                           "away or more; it changes no reward's risk: a referrer to look at",
                "value": round(self.rank, 4), "threshold": RANK_AT}
        return [lead] + [m.as_reason() for m in self.furthest]

    def evidence(self) -> dict[str, object]:
        """The feature table: the referrer against the typical referrer, feature by feature."""
        return {"percentile": round(self.rank, 4), "position": self.position,
                "referrers_ranked": self.of, "conversions": self.conversions,
                "clicks": self.clicks, "rank_at": RANK_AT, "z_at": Z_AT,
                "features": [m.as_evidence() for m in self.measures]}


def _natural(feature: Feature, value: float) -> float:
    """A feature's value in its own units: a share or a rate as a fraction, seconds, odds as
    -log10 of the chance, a number as it is."""
    if feature.kind == "log_rate":
        return float(10 ** value)
    if feature.kind == "log_seconds":
        return float(max(10 ** value - 1.0, 0.0))
    return value


def _show(feature: Feature, value: float) -> str:
    if feature.kind == "share":
        return f"{value:.0%}"
    if feature.kind == "log_rate":  # a rate over 1 is possible: conversions without clicks
        return f"{10 ** value:.3g}"
    if feature.kind == "log_seconds":
        seconds = max(10 ** value - 1.0, 0.0)
        return (f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"
                if seconds < 7200 else f"{seconds / 3600:.0f} h" if seconds < 2 * DAY
                else f"{seconds / DAY:.0f} days")
    if feature.kind == "log_odds":
        return f"1 in {10 ** value:,.0f}" if value < 6 else f"1 in 10^{value:.0f}"
    return f"{value:.2f}"


def _shrunk(k: float, n: int, base: float) -> float:
    return (k + PRIOR * base) / (n + PRIOR)


def referrer_rows(conversions: Sequence[ConversionFacts], reversed_ids: Collection[int],
                  referrer_clicks: Mapping[str, int]) -> dict[str, Row]:
    """Each referrer's Row (those with MIN_CONVERSIONS credited conversions or more)."""
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
    rows: dict[str, Row] = {}
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
        shares = {  # (of them, out of, the program's share)
            "quick_share": (sum(d < quick for d in own_delays), len(own_delays), base["quick"]),
            "min_amount_share": (sum(c.amount == cheapest for c in purchases), len(purchases),
                                 base["min"]),
            "reversed_share": (sum(c.conversion_id in reversed_ids for c in own), n,
                               base["reversed"]),
            "hosting_share": (sum(map(_through_hosting, own)), n, base["hosting"]),
            "language_share": (langs.most_common(1)[0][1] if langs else 0,
                               sum(langs.values()), base["language"]),
            "foreign_share": (sum(1 for c in own if c.country and c.country != home),
                              sum(1 for c in own if c.country), base["foreign"]),
            "headerless_share": (sum(map(is_headerless, own)), n, base["headerless"]),
        }
        others = {
            "conversion_rate": (math.log10((n + 0.5) / (own_clicks + 1.0)) if clicks
                                else 0.0),
            "median_delay": float(np.median(logs)),
            "delay_spread": float(np.quantile(logs, 0.75) - np.quantile(logs, 0.25)),
            "click_rhythm": _rhythm([c.touches[-1].at for c in own if c.touches]),
            "burst": _burst(sorted(c.at for c in own), span_days),
        }
        rows[ref] = Row(
            tuple(_shrunk(*shares[f.name]) if f.name in shares else others[f.name]
                  for f in FEATURES),
            tuple((int(shares[f.name][0]), shares[f.name][1]) if f.name in shares else None
                  for f in FEATURES),
            n, own_clicks)
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


def unusual_referrers(rows: Mapping[str, Row], seed: int = 0, top: int = 3
                      ) -> dict[str, Unusual]:
    """The referrers the ensemble ranks at RANK_AT or more with a feature Z_AT or more robust
    standard deviations from the typical referrer on its suspicious side; each with its `top`
    furthest features (those Z_AT / 2 away or more). Nobody with fewer than MIN_REFERRERS
    rows."""
    if len(rows) < MIN_REFERRERS:
        return {}
    refs = list(rows)
    x = np.asarray([rows[r].values for r in refs], dtype=float)
    typical = np.median(x, axis=0)
    scale = np.maximum(np.median(np.abs(x - typical), axis=0) * 1.4826,
                       np.array([f.floor for f in FEATURES]))
    side = np.array([f.side for f in FEATURES])
    # Only the suspicious side of a one-sided feature counts: the rest is the typical value.
    z = (x - typical) / scale
    z = np.where(side > 0, np.maximum(z, 0.0), np.where(side < 0, np.minimum(z, 0.0), z))
    rank = ensemble_rank(typical + z * scale, seed)
    position = len(rank) - np.argsort(np.argsort(rank, kind="stable"))
    out: dict[str, Unusual] = {}
    for i in np.flatnonzero(rank >= RANK_AT):
        order = np.argsort(-np.abs(z[i]), kind="stable")[:top]
        if abs(z[i, order[0]]) < Z_AT:
            continue
        row = rows[refs[i]]
        measures = tuple(Measure(f, float(x[i, j]), float(typical[j]), float(scale[j]),
                                 float(z[i, j]), row.counts[j]) for j, f in enumerate(FEATURES))
        out[refs[i]] = Unusual(refs[i], float(rank[i]), int(position[i]), len(refs),
                               row.conversions, row.clicks, measures,
                               tuple(measures[j] for j in order if abs(z[i, j]) >= Z_AT / 2))
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


def anomalous_referrers(conversions: Sequence[ConversionFacts], context: ProgramContext,
                        seed: int = 0) -> list[Unusual]:
    """The program's unusual referrers, most unusual first: a full scan's conversions (every
    credited conversion of the program) make the rows."""
    rows = referrer_rows(conversions, context.reversed_ids, context.referrer_clicks)
    return sorted(unusual_referrers(rows, seed).values(), key=lambda u: u.position)
