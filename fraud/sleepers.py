"""Sleeper cells: dormant referrers who all wake within days of each other, their referees
buying minutes after the click.

An operator who holds many aged accounts (each made with a purchase of its own, then left
quiet so that it looks like a customer of long standing) wakes them together when he turns
them into referrers: each gets a few new referees, and those referees are his too, so they buy
as soon as they land. Each referrer alone has too few referees for any test; together they
are a cohort.

A merchant's mailing wakes many genuine dormant referrers within hours too, so the synchrony
alone proves nothing. What differs is the referees: a mailing's readers pass the link to
people who buy when they want, as the program's referees do; the operator's buy within
minutes. An operator who fears a synchrony test wakes his accounts over several days, among
the program's genuine wakings. So a cohort is tested twice, on two independent things:

1. synchrony, a scan statistic: every window from one dormant referrer's waking to a later
   one within a week (MAX_SPAN), tested against the program's rate of waking over its width
   (Poisson tail, Bonferroni over every window scanned). Overlapping windows that pass are
   one waking; each such group is represented by its most synchronised window, chosen
   without a look at the referees;
2. the referees: the first purchases of that window's referees (within the waking) came
   faster after the click than the program's referees (one-sided Kolmogorov-Smirnov),
   Bonferroni over the groups only: what selected them, the waking, says nothing of the
   referees' delays where the referrers are genuine. The program's referees are weighted by
   referrer, each alike, and the window's own referrers are left out: a leak's or a farm's
   hundreds of quick buyers, or the cell itself, would make quick buying the norm.

   Where each referrer's clicks are counted (a full scan), a second, independent test joins
   it: how often the cohort's clicks brought a buyer. The operator's links bring one nearly
   every click (his buyers are his); a genuine referrer's friends mostly look and leave. Each
   referrer's own binomial tail (mid-p) against the program's referrers' share, its first
   buyer and a click left out (what woke it), Fisher's combination over the cohort's
   referrers; the two tests combined by Fisher's method again, Bonferroni over the groups.

A cohort that passes is a sleeper cell: the referrers of its waking whose own evidence, their
referees' delays (quick or not, at the cut the test found) and their clicks (bringing a buyer
or not), is likelier under the cell's shares than under the program's, and all their
referees, one flag; each such purchase is held on the population family (the referrer's
traffic unlike the program's). A genuine referrer woken in the same days, whose friends take
their time or whose clicks mostly bring nobody, is not named, nor are its friends held.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import networkx as nx
import numpy as np
from scipy import special, stats

from fraud.rings import Ring
from fraud.signals import ConversionFacts, Reason, benjamini_hochberg, binom_above, fisher

DAY = 86400.0
DORMANT = 7 * DAY  # a referrer's first referral this long after its own first conversion
GAP_FRACTION = 0.25  # a window is at least this share of the usual gap between wakings wide
MAX_SPAN = 7 * DAY  # the widest window of wakings scanned: woken within a week
SYNC_P = 0.05  # family-wise level of the synchrony scan (Bonferroni over windows)
FAST_P = 0.01  # family-wise level of the referees' test (Bonferroni over the groups)
MIN_COHORT = 4  # dormant referrers in a window, at least
# ... and at most: an operator's cell is tens of accounts; hundreds of wakings in a window are
# the program's own traffic, whose rate drifts over weeks (a launch, a season) and would pass
# for synchrony against its average.
MAX_COHORT = 100
MIXTURE_STEPS = 4  # re-estimates of the cell's converting share from the referrers it names
MIN_PURCHASES = 6  # the cohort's referees' first purchases, at least
SLEEPER_WEIGHT = 0.7  # decisive alone: held for review (the population family only)
CELL_SCORE = 0.85


def _first_purchases(conversions: Sequence[ConversionFacts]
                     ) -> dict[str, list[ConversionFacts]]:
    """Per referrer, each referee's first purchase credited to it (with a click)."""
    seen: set[tuple[str, str]] = set()
    out: dict[str, list[ConversionFacts]] = defaultdict(list)
    for conv in sorted(conversions, key=lambda c: (c.at, c.conversion_id)):
        if conv.amount <= 0 or conv.delay is None:
            continue
        for ref in conv.referrers:
            if ref != conv.customer and (ref, conv.customer) not in seen:
                seen.add((ref, conv.customer))
                out[ref].append(conv)
    return out


def _wakings(conversions: Sequence[ConversionFacts]) -> dict[str, float]:
    """Dormant referrers and when they woke: their first credited conversion, DORMANT or
    more after their own first conversion as a customer."""
    own: dict[str, float] = {}
    woke: dict[str, float] = {}
    for conv in conversions:
        own[conv.customer] = min(own.get(conv.customer, conv.at), conv.at)
        for ref in conv.referrers:
            woke[ref] = min(woke.get(ref, conv.at), conv.at)
    return {ref: at for ref, at in woke.items() if ref in own and at - own[ref] >= DORMANT}


def sleeper_cells(conversions: Sequence[ConversionFacts],
                  clicks: Mapping[str, int] | None = None) -> list[Ring]:
    """The sleeper cells among the program's conversions (see the module's docstring): a Ring
    of kind "sleeper_cell" each, its accounts the cohort's referrers and their referees, its
    evidence the tests. `clicks`: each referrer's counted clicks (a full scan's), the
    converting test's; without them the referees' delays decide alone."""
    if not conversions:
        return []
    woke = _wakings(conversions)
    purchases = _first_purchases(conversions)
    rates = _Converting(purchases, clicks) if clicks else None
    delays = [max(c.delay or 0.0, 0.0) for own in purchases.values() for c in own]
    if len(woke) < MIN_COHORT or len(delays) < 2 * MIN_PURCHASES:
        return []
    median = float(np.median(delays))
    span = max(c.at for c in conversions) - min(c.at for c in conversions)
    rate = len(woke) / max(span, DAY)  # dormant referrers waking per second
    order = sorted(woke, key=lambda r: (woke[r], r))
    times = np.array([woke[r] for r in order])
    windows = _synchronised(times, rate)
    baseline = _Baseline(purchases)
    # Overlapping synchronised windows are one waking seen with a waking more or fewer: the
    # most synchronised window is one waking, the most synchronised of those that do not
    # overlap it another, and so on (chosen without a look at the referees' delays); each is
    # tested once, Bonferroni over them.
    taken = np.zeros(len(order), dtype=bool)
    groups: list[tuple[float, int, int]] = []
    for p_sync, first, last in sorted(windows):
        if not taken[first:last + 1].any():
            taken[first:last + 1] = True
            groups.append((p_sync, first, last))

    def examine(p_sync: float, first: int, last: int) -> _Window | None:
        cohort = order[first:last + 1]
        width = max(times[last] - times[first], GAP_FRACTION / rate)
        # The referees of the waking: a genuine referrer's friends weeks later are not.
        bought = [c for ref in cohort for c in purchases.get(ref, ())
                  if c.at - woke[ref] <= width]
        if len(bought) < MIN_PURCHASES:
            return None
        p_fast, cut = _faster(bought, baseline, cohort)
        fast = sum(1 for c in bought if max(c.delay or 0.0, 0.0) <= cut)
        # The share of the program's referees (the cohort left out) as quick as the cut.
        usual = float(baseline.cdf(np.array([cut]), cohort)[0])
        p_rate, share, converting, tested = (rates.test(cohort) if rates is not None
                                             else (None, 0.0, 0, 0))
        both = p_fast if p_rate is None else fisher([p_fast, p_rate])
        return _Window(first, last, p_sync, both, cut, width, len(bought),
                       fast, usual, p_fast, p_rate, share, converting, tested)

    tested: list[_Window] = []
    for group in groups:
        found = examine(*group)
        # Bonferroni over the groups only: what selected them, the waking, says nothing of
        # the referees' delays where the referrers are genuine.
        if found is None or found.p_fast * len(groups) >= FAST_P:
            continue
        # A cell found, its extent: of the synchronised windows overlapping the one tested,
        # the one whose synchrony and quick referees together are the least likely (the most
        # synchronised window may leave out a waking or two at its edges).
        near = [w for w in (examine(*window) for window in windows
                            if window[1] <= found.last and window[2] >= found.first)
                if w is not None]
        best = min(near, key=lambda w: (w.p_sync * w.p_fast, w.first, w.last))
        tested.append(replace(best, p_sync=found.p_sync, p_fast=found.p_fast * len(groups)))
    cells = (_cell(w, order[w.first:w.last + 1], purchases, woke, rates, median=median)
             for w in sorted(tested, key=lambda w: w.first))
    return [cell for cell in cells if cell is not None]


def _cell(w: _Window, cohort: Sequence[str], purchases: dict[str, list[ConversionFacts]],
          woke: dict[str, float], rates: _Converting | None, *, median: float
          ) -> Ring | None:
    """The cell a window's tests found: the referrers of its waking that its evidence names,
    and their referees."""
    # Each referrer of the waking is named on its own evidence, the two things the cohort
    # was found on weighed against the program's (a log-likelihood ratio each, the cell's
    # shares against the program's): its referees' delays (the operator's are mostly under
    # the cut, a genuine referrer's friends take their time as often as the program's)
    # and its clicks (the operator's links bring a buyer nearly every click, a genuine
    # referrer's friends mostly look and leave). A genuine referrer woken in the same days
    # is not named, nor are its friends held; an operator's referrer with one slow buyer
    # among quick ones, on links that convert every click, is.
    quick = _log_ratio(w.fast / w.purchases, w.purchases, w.usual)
    eligible = [ref for ref in cohort
                if any(c.at - woke[ref] <= w.width for c in purchases.get(ref, ()))]
    delays = {}
    for ref in eligible:
        fast = sum(1 for c in purchases[ref] if max(c.delay or 0.0, 0.0) <= w.cut)
        delays[ref] = fast * quick[0] + (len(purchases[ref]) - fast) * quick[1]
    referrers = {ref for ref, e in delays.items() if e > 0}
    if rates is not None and w.rate:
        # The cell's share of converting clicks, estimated from the referrers it names (a
        # mixture's few steps, from the whole cohort's): the waking's genuine referrers, who
        # mostly bring nobody, would make a moderately converting one (a family's) look like
        # the operator's.
        usual, share = rates.usual(cohort), w.share
        for _step in range(MIXTURE_STEPS):
            converting = _log_ratio(share, w.rate, usual)
            named = set()
            for ref in eligible:
                bought, idle = rates.counts(ref)
                if delays[ref] + bought * converting[0] + idle * converting[1] > 0:
                    named.add(ref)
            referrers = named
            shares = [b / (b + i) for b, i in map(rates.counts, named) if b + i]
            if not shares or sum(shares) / len(shares) == share:
                break
            share = sum(shares) / len(shares)
    if len(referrers) < 2:
        return None
    customers = {c.customer for ref in referrers for c in purchases[ref]}
    days = (max(woke[r] for r in referrers) - min(woke[r] for r in referrers)) / DAY
    evidence_of: dict[str, object] = {
        "referrers": sorted(referrers), "customers": sorted(customers),
        "woke_within_days": round(days, 2), "sync_p_value": float(f"{w.p_sync:.3g}"),
        "fast_purchases": w.fast, "purchases": w.purchases, "within_s": round(w.cut, 1),
        "median_delay_s": round(median, 1), "fast_p_value": float(f"{w.p_fast:.3g}")}
    if w.p_rate is not None and rates is not None:
        evidence_of |= {"converting_clicks": w.converting, "clicks": w.rate,
                        "usual_share": round(rates.usual(cohort), 3),
                        "delay_p_value": float(f"{w.p_delay:.3g}"),
                        "converting_p_value": float(f"{w.p_rate:.3g}")}
    return Ring(
        "sleeper_cell",
        frozenset({("referrer", r) for r in referrers} | {("customer", c) for c in customers}),
        frozenset(), CELL_SCORE, evidence_of)


def _log_ratio(share: float, n: int, usual: float) -> tuple[float, float]:
    """The log-likelihood ratios of one hit and of one miss under the cohort's share of hits
    (over `n`, smoothed) against the program's `usual` share."""
    share = (share * n + 0.5) / (n + 1.0)
    usual = min(max(usual, 1e-3), 1 - 1e-3)
    return math.log(share / usual), math.log((1.0 - share) / (1.0 - usual))


class _Converting:
    """How often the program's referrers' clicks bring a buyer: per referrer, its referees who
    bought (each once) of its counted clicks. The first buyer is what woke a dormant referrer
    (its waking was chosen on it), so each referrer's first buyer and one click are left out,
    and every referrer with more than one click weighs alike (an influencer's thousands of
    passers-by do not make looking and leaving the norm of a referrer who shares with a few
    friends)."""

    def __init__(self, purchases: dict[str, list[ConversionFacts]],
                 clicks: Mapping[str, int]) -> None:
        self.bought = {ref: len(own) for ref, own in purchases.items() if own}
        self.clicks = {ref: max(clicks.get(ref, 0), n) for ref, n in self.bought.items()}
        shares = [(n - 1) / (self.clicks[ref] - 1) for ref, n in self.bought.items()
                  if self.clicks[ref] > 1]
        self.total, self.n = float(sum(shares)), len(shares)

    def counts(self, ref: str) -> tuple[int, int]:
        """A referrer's buyers after its first, and its clicks that brought none."""
        n = self.bought.get(ref, 0)
        return max(n - 1, 0), self.clicks.get(ref, 0) - n

    def usual(self, without: Sequence[str]) -> float:
        """The program's referrers' share of clicks that bring a buyer, `without` these."""
        total, n = self.total, self.n
        for ref in without:
            if self.clicks.get(ref, 0) > 1:
                total -= (self.bought[ref] - 1) / (self.clicks[ref] - 1)
                n -= 1
        return total / n if n > 0 else 0.0

    def test(self, cohort: Sequence[str]) -> tuple[float | None, float, int, int]:
        """The p-value of "the cohort's clicks brought buyers as often as the program's
        referrers' do" against "more often": each referrer's own binomial tail (mid-p: its
        buyers after the first of its clicks after one, at the program's share), Fisher's
        combination over the referrers with a click to tell (referrers are not alike: an
        influencer's hundred clicks are one referrer's, not a hundred of the cohort's). And
        the cohort's share, its referrers alike, its clicks that brought a buyer and the
        clicks tested; None: no click to tell."""
        usual = self.usual(cohort)
        tails: list[float] = []
        shares, n, converting = 0.0, 0, 0
        for ref in cohort:
            bought, idle = self.counts(ref)
            if bought + idle == 0:
                continue
            n += bought + idle
            converting += bought
            shares += bought / (bought + idle)
            # The mid-p tail: a referrer with a few clicks has a few possible tails, and a
            # whole one for "no more buyers" would count a genuine referrer's evidence as
            # none and its place in the combination as a weight against the cohort.
            tails.append(float(stats.binom.sf(bought, bought + idle, usual)
                               + 0.5 * stats.binom.pmf(bought, bought + idle, usual))
                         if usual > 0 else 1.0)
        if not tails:
            return None, 0.0, 0, 0
        return fisher(tails), shares / len(tails), converting, n


@dataclass(frozen=True, slots=True)
class _Window:
    first: int
    last: int
    p_sync: float
    p_fast: float
    cut: float
    width: float
    purchases: int
    fast: int  # of them within the cut
    usual: float  # the program's referees' share within the cut (the cohort left out)
    p_delay: float  # the delays' test alone (p_fast: it and the converting test combined)
    p_rate: float | None  # the converting test (None: no click counts)
    share: float  # the cohort's share of clicks that brought a buyer, its referrers alike
    converting: int  # the cohort's clicks tested that brought a buyer
    rate: int  # the cohort's clicks tested


def _synchronised(times: np.ndarray, rate: float) -> list[tuple[float, int, int]]:
    """The windows of wakings (first and last index into `times`, sorted) more crowded than
    the program's rate of waking gives: (Bonferroni-corrected p-value, first, last).

    A scan statistic: every window from one waking to a later one at most MAX_SPAN on, of
    MIN_COHORT to MAX_COHORT wakings, Poisson against the rate over its width (at least a
    small share of the usual gap between wakings: two at the same second are not infinitely
    unlikely), the program's or that of the weeks around it, whichever is higher,
    Bonferroni over every window scanned."""
    floor = GAP_FRACTION / rate
    n = len(times)
    ends = np.searchsorted(times, times + MAX_SPAN, side="right")
    ends = np.minimum(ends, np.arange(n) + MAX_COHORT)
    scanned = int(np.maximum(ends - np.arange(n) - MIN_COHORT + 1, 0).sum())
    if not scanned:
        return []
    # Window by window count: `count` wakings from each waking on are significant when the
    # expected count over their width is below the Poisson tail's inverse (P(X >= count) =
    # the regularised lower incomplete gamma function of (count, expected)).
    counts = np.arange(MIN_COHORT, min(int((ends - np.arange(n)).max()), MAX_COHORT) + 1)
    limits = special.gammaincinv(counts, SYNC_P / scanned)
    out: list[tuple[float, int, int]] = []
    for count, limit in zip(counts, limits, strict=True):
        first = np.arange(n - count + 1)
        last = first + count - 1
        expected = rate * np.maximum(times[last] - times[first], floor)
        hit = np.flatnonzero((last < ends[first]) & (expected < limit))
        # ... and against the rate of the weeks around it (the window left out): a program's
        # rate of waking drifts (a launch, a season), and its busy weeks are not a cell.
        begin = np.maximum(times[first[hit]] - MAX_SPAN, times[0])
        end = np.minimum(times[last[hit]] + MAX_SPAN, times[-1])
        around = (np.searchsorted(times, end, side="right")
                  - np.searchsorted(times, begin, side="left") - count)
        width = times[last[hit]] - times[first[hit]]
        local = around / np.maximum(end - begin - width, DAY)
        p = stats.poisson.sf(count - 1, np.maximum(expected[hit], local * np.maximum(
            width, floor))) * scanned
        out += [(float(q), int(f), int(f) + int(count) - 1) for q, f in zip(p, hit, strict=True)
                if q < SYNC_P]
    return out


class _Baseline:
    """How fast the program's referees buy after the click: each referrer's first purchases'
    delays, every referrer weighted alike (a leak's or a farm's hundreds of quick buyers do
    not make quick buying the program's norm)."""

    def __init__(self, purchases: dict[str, list[ConversionFacts]]) -> None:
        self.delays = {ref: np.sort([max(c.delay or 0.0, 0.0) for c in own])
                       for ref, own in purchases.items() if own}
        pairs = sorted((float(d), 1.0 / len(own)) for own in self.delays.values() for d in own)
        self.at = np.array([d for d, _w in pairs])
        self.weight = np.cumsum([w for _d, w in pairs])

    def cdf(self, x: np.ndarray, without: Sequence[str]) -> np.ndarray:
        """The share of referrers' referees who bought within each of `x`, the referrers
        `without` left out (a cohort is not its own baseline)."""
        at = np.searchsorted(self.at, x, side="right")
        total = np.where(at > 0, self.weight[np.maximum(at - 1, 0)], 0.0)
        out = [self.delays[r] for r in without if r in self.delays]
        for own in out:
            total -= np.searchsorted(own, x, side="right") / len(own)
        return np.clip(total / max(len(self.delays) - len(out), 1), 0.0, 1.0)


def _faster(bought: Sequence[ConversionFacts], baseline: _Baseline, cohort: Sequence[str]
            ) -> tuple[float, float]:
    """The one-sided Kolmogorov-Smirnov p-value of "these purchases came as fast as the
    program's referees' (the cohort's referrers left out)" against "faster": the largest
    lead of their distribution over the program's. An operator's buyers have none of the
    program's slow tail (people who come back days later). And the delay where their lead
    is largest: what is faster is the cohort's anomaly."""
    at = np.sort(np.array([max(c.delay or 0.0, 0.0) for c in bought]))
    n = len(at)
    leads = np.arange(1, n + 1) / n - baseline.cdf(at, cohort)
    statistic = float(np.max(leads))
    return float(stats.ksone.sf(max(statistic, 0.0), n)), float(at[int(np.argmax(leads))])


def sleeper_reasons(conversions: Sequence[ConversionFacts], rings: Sequence[Ring]
                    ) -> dict[int, Reason]:
    """Per purchase of a sleeper cell's fast referee credited to one of its referrers:
    population evidence, decisive alone (held for review)."""
    cell_of: dict[tuple[str, str], Ring] = {}
    for cell in rings:
        if cell.kind != "sleeper_cell":
            continue
        for kind, customer in cell.accounts:
            if kind == "customer":
                for ref in _referrers(cell):
                    cell_of[(ref, customer)] = cell
    out: dict[int, Reason] = {}
    for conv in conversions:
        found = next((cell_of[(r, conv.customer)] for r in conv.referrers
                      if (r, conv.customer) in cell_of), None)
        if found is None or conv.amount <= 0:
            continue
        e = found.evidence
        if e.get("waves"):
            out[conv.conversion_id] = Reason(
                "wave_cell", f"referrer population: {_wave_words(found)}",
                e.get("wave_p_value"), f"p < {WAVE_P:g}", SLEEPER_WEIGHT, "population")
            continue
        out[conv.conversion_id] = Reason(
            "sleeper_cell",
            f"referrer population: {len(_referrers(found))} "
            f"referrers quiet since their own first purchase woke within "
            f"{e.get('woke_within_days')} days of each other (more than the program's "
            f"rate of waking gives), and {e.get('fast_purchases')} of their referees' "
            f"{e.get('purchases')} first purchases came within {e.get('within_s')} s of the "
            f"click, faster than the program's{_converting(e)}: one operator's aged accounts "
            "and his buyers (a "
            "merchant's mailing wakes referrers together too, but their referees buy when "
            "they like)", e.get("fast_p_value"), f"p < {FAST_P:g}", SLEEPER_WEIGHT,
            "population")
    return out


def _converting(e: Mapping[str, object]) -> str:
    """The converting test's words, where clicks were counted."""
    if e.get("converting_p_value") is None:
        return ""
    return (f"; {e.get('converting_clicks')} of their {e.get('clicks')} clicks after each's "
            f"first buyer brought a buyer, where the program's referrers' bring one "
            f"{e.get('usual_share')} of the time")


def _referrers(cell: Ring) -> list[str]:
    return sorted(i for kind, i in cell.accounts if kind == "referrer")


def flag_reasons(ring: Ring) -> list[dict[str, object]]:
    """The reasons of a sleeper cell's own flag."""
    e = ring.evidence
    referrers = _referrers(ring)
    if e.get("waves"):
        return [{"code": "wave_cell", "message": f"referrer population: {_wave_words(ring)}",
                 "value": len(ring.accounts), "threshold": 3}]
    return [{"code": "sleeper_cell",
             "message": f"referrer population: {len(referrers)} referrers quiet since their own "
                        f"first purchase ({', '.join(referrers[:10])}"
                        f"{', ...' if len(referrers) > 10 else ''}) woke within "
                        f"{e.get('woke_within_days')} days of each other, and "
                        f"{e.get('fast_purchases')} of their referees' {e.get('purchases')} "
                        f"first purchases came within {e.get('within_s')} s of the click, "
                        f"faster than the program's{_converting(e)}: one operator's aged "
                        "accounts",
             "value": len(ring.accounts), "threshold": MIN_COHORT}]


# -- waves: referrer accounts whose buyers come in the same waves ---------------------------

WAVE = 6 * 3600.0  # one task post's buyers arrive within this of each other (seconds)
WAVE_MIN_CUSTOMERS = 5  # a referrer's converting customers before its clicks can tell
WAVE_RATE_FACTOR = 2.5  # of the program's customers per click, at least (fraud.signals')
WAVE_RATE_Q = 0.01  # Benjamini-Hochberg across the referrers tested for converting clicks
WAVE_P = 0.05  # family-wise level of the synchrony tests among the converting referrers
MAX_WAVE_SUSPECTS = 100


def wave_cells(conversions: Sequence[ConversionFacts], clicks: Mapping[str, int]
               ) -> list[Ring]:
    """Referrer accounts one operator feeds in waves: he posts a task (sign up and buy through
    one of these links) to paid workers, real people on their own phones and addresses who
    share nothing, and each post's workers arrive within hours of it through several of his
    links at once; between posts his links are quiet.

    Two independent things give the accounts away, tested in turn:

    1. their clicks: nearly every one brings a buyer (the workers come to buy), where a
       genuine referrer's friends mostly look and leave: each referrer's converting customers
       against its counted clicks at the program's share (binomial, WAVE_RATE_FACTOR times
       it at least, Benjamini-Hochberg across the referrers tested). Close friends and a
       family convert well too: alone this holds nothing;
    2. their timing, among those converting referrers only: two referrers whose customers'
       arrivals (the click that brought each) fall within WAVE of each other on more
       separate occasions than two independent referrers' would (Poisson tail, the chance of
       a coincidence taken from the program's own arrivals, so that promotion days, when
       many referrers share at once, count as the program's). A group: referrers joined by
       such pairs, each pair at a level that makes a chain of three (two pairs sharing a
       referrer) a chance of WAVE_P among all the converting referrers' pairs, or one pair
       alone passing WAVE_P Bonferroni-corrected over all of them.

    Each group is a cell (kind "sleeper_cell", evidence "waves"): its referrers and all their
    referees (their links were the operator's). Genuine referrers who share on the same
    promotion days are not tested unless their clicks convert like a task's, and even then
    must coincide again and again beyond what the program's own calendar gives."""
    if not clicks:
        return []
    arrivals: dict[str, dict[str, float]] = defaultdict(dict)
    for conv in sorted(conversions, key=lambda c: (c.at, c.conversion_id)):
        at = conv.touches[-1].at if conv.touches else conv.at
        for ref in conv.referrers:
            if ref != conv.customer:
                arrivals[ref].setdefault(conv.customer, at)
    converted = sum(len(v) for v in arrivals.values())
    total = sum(clicks.values())
    if not converted or not total:
        return []
    rate = converted / total
    p_rate: dict[str, float] = {}
    for ref, customers in arrivals.items():
        k, n = len(customers), clicks.get(ref, 0)
        if k >= WAVE_MIN_CUSTOMERS and n and k / n >= WAVE_RATE_FACTOR * rate:
            p_rate[ref] = binom_above(min(k, n), n, rate)
    suspects = sorted(benjamini_hochberg(p_rate, WAVE_RATE_Q), key=lambda r: (p_rate[r], r))
    suspects = sorted(suspects[:MAX_WAVE_SUSPECTS])
    if len(suspects) < 2:
        return []
    chance = _coincidence(arrivals)
    pairs = len(suspects) * (len(suspects) - 1) // 2
    edge_p = math.sqrt(2 * WAVE_P / len(suspects) ** 3)
    tested = _pair_tests(suspects, arrivals, chance)
    groups = _components([(a, b) for a, b, p, _k in tested if p < edge_p])
    cells = []
    for members in groups:
        inner = [(p, k) for a, b, p, k in tested if a in members and b in members]
        if len(members) < 3 and min(p for p, _k in inner) * pairs >= WAVE_P:
            continue
        cells.append(_wave_cell(members, inner, arrivals, clicks, rate))
    # Workers trickling in over a day make weaker pairs: the best group of the remaining
    # referrers (pairs under LOOSE_P, scored by their evidence) against the same referrers'
    # own arrivals each moved by a random offset along the program's calendar (a genuine
    # referrer keeps its own rhythm and the program its busy days; only their alignment is
    # lost), one group at a time while it passes WAVE_P.
    named = {r for c in cells for r in _referrers(c)}
    rest = sorted(sorted((r for r in suspects if r not in named),
                         key=lambda r: (p_rate[r], r))[:MAX_PERMUTED])
    rng = np.random.default_rng(0)
    calendar = np.sort(np.fromiter((t for own in arrivals.values() for t in own.values()),
                                   dtype=float))
    for _round in range(MAX_ROUNDS):
        score, members, inner = _best_group(_pair_tests(rest, arrivals, chance))
        if len(members) < 2:
            break
        # Stopped as soon as the group can no longer pass: a genuine group is beaten often.
        beaten, most = 0, WAVE_P * (PERMUTATIONS + 1) - 1
        for _ in range(PERMUTATIONS):
            shifted = _shifted(rest, arrivals, calendar, rng)
            beaten += _best_group(_pair_tests(rest, shifted, chance))[0] >= score
            if beaten >= most:
                break
        p_perm = (1 + beaten) / (PERMUTATIONS + 1)
        if p_perm >= WAVE_P:
            break
        cells.append(_wave_cell(members, inner, arrivals, clicks, rate, p_perm=p_perm))
        rest = sorted(set(rest) - members)
    return sorted(cells, key=lambda c: min(_referrers(c)))


LOOSE_P = 0.05  # a pair's level to join a group in the calendar-shift test
PERMUTATIONS = 49
MAX_PERMUTED = 20  # the most converting referrers in the calendar-shift test, at most
MAX_ROUNDS = 3


def _pair_tests(suspects: Sequence[str], arrivals: Mapping[str, Mapping[str, float]],
                chance: float) -> list[tuple[str, str, float, int]]:
    """Each pair of referrers whose arrivals coincide on two occasions or more: the Poisson
    tail of their coincidences against the program's `chance` of one."""
    times = {ref: np.sort(np.fromiter(arrivals[ref].values(), dtype=float))
             for ref in suspects}
    bounds = {ref: _occasion_bounds(t) for ref, t in times.items()}
    out = []
    for i, a in enumerate(suspects):
        for b in suspects[i + 1:]:
            k = min(_together(bounds[a], times[b]), _together(bounds[b], times[a]))
            if k >= 2:
                lam = len(bounds[a][0]) * len(bounds[b][0]) * chance
                out.append((a, b, float(special.pdtrc(k - 1, lam)), k))
    return out


def _components(edges: Sequence[tuple[str, str]]) -> list[set[str]]:
    parts = nx.utils.UnionFind()
    for a, b in edges:
        parts.union(a, b)
    groups: dict[str, set[str]] = defaultdict(set)
    for a, b in edges:
        groups[parts[a]] |= {a, b}
    return list(groups.values())


def _best_group(tested: Sequence[tuple[str, str, float, int]]
                ) -> tuple[float, set[str], list[tuple[float, int]]]:
    """The group of referrers joined by pairs under LOOSE_P whose pairs' evidence (the sum of
    -log p) is the greatest, with that sum and its pairs."""
    loose = [(a, b, p, k) for a, b, p, k in tested if p < LOOSE_P]
    best: tuple[float, set[str], list[tuple[float, int]]] = (0.0, set(), [])
    for members in _components([(a, b) for a, b, _p, _k in loose]):
        inner = [(p, k) for a, b, p, k in loose if a in members]
        score = -sum(math.log(max(p, 1e-300)) for p, _k in inner)
        if score > best[0]:
            best = (score, members, inner)
    return best


def _shifted(refs: Sequence[str], arrivals: Mapping[str, Mapping[str, float]],
             calendar: np.ndarray, rng: np.random.Generator) -> dict[str, dict[str, float]]:
    """Each referrer's arrivals moved by one random offset along the program's calendar (its
    arrivals' ranks among the program's, rotated): its own rhythm kept, busy days kept."""
    n = len(calendar)
    out: dict[str, dict[str, float]] = {}
    for ref in refs:
        customers = list(arrivals[ref])
        at = np.fromiter((arrivals[ref][c] for c in customers), dtype=float)
        rank = (np.searchsorted(calendar, at) / n + rng.random()) % 1.0
        out[ref] = dict(zip(customers, calendar[np.minimum((rank * n).astype(int), n - 1)]
                            .tolist(), strict=True))
    return out


def _wave_cell(members: set[str], inner: Sequence[tuple[float, int]],
               arrivals: Mapping[str, Mapping[str, float]], clicks: Mapping[str, int],
               rate: float, *, p_perm: float | None = None) -> Ring:
    referees = {c for ref in members for c in arrivals[ref]}
    return Ring(
        "sleeper_cell",
        frozenset({("referrer", r) for r in members} | {("customer", c) for c in referees}),
        frozenset(), CELL_SCORE,
        {"waves": True, "referrers": sorted(members), "customers": sorted(referees),
         "occasions": max(k for _p, k in inner), "within_h": round(WAVE / 3600, 1),
         "wave_p_value": float(f"{min(p for p, _k in inner) if p_perm is None else p_perm:.3g}"),
         "converting_clicks": sum(len(arrivals[r]) for r in members),
         "clicks": sum(clicks.get(r, 0) for r in members), "usual_share": round(rate, 3)})


def _occasion_bounds(times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A referrer's arrivals (sorted) in occasions, each those within WAVE of the previous
    one: their first and last arrivals."""
    if times.size == 0:
        return times, times
    new = np.concatenate(([True], np.diff(times) > WAVE))
    last = np.concatenate((new[1:], [True]))
    return times[new], times[last]


def _together(bounds: tuple[np.ndarray, np.ndarray], others: np.ndarray) -> int:
    """How many of one referrer's occasions another's arrivals (sorted) fall within WAVE of."""
    first, last = bounds
    return int(np.count_nonzero(np.searchsorted(others, last + WAVE, side="right")
                                > np.searchsorted(others, first - WAVE, side="left")))


def _coincidence(arrivals: Mapping[str, Mapping[str, float]]) -> float:
    """The chance that two arrivals drawn from the program's own (every referrer's customers,
    by WAVE-wide bins of time) fall within WAVE of each other: a program's busy days (a
    launch, a promotion) make coincidences likelier, and so they count as the program's."""
    times = np.fromiter((t for own in arrivals.values() for t in own.values()), dtype=float)
    if times.size == 0:
        return 1.0
    bins = np.bincount(((times - times.min()) // WAVE).astype(int)).astype(float)
    share = bins / bins.sum()
    near = np.concatenate(([0.0], share[:-1])) + np.concatenate((share[1:], [0.0]))
    return float(min(np.sum(share * (share + near / 2)), 1.0))


def _wave_words(cell: Ring) -> str:
    """A wave cell's evidence in plain words."""
    e, referrers = cell.evidence, _referrers(cell)
    return (f"{len(referrers)} referrers ({', '.join(referrers[:10])}"
            f"{', ...' if len(referrers) > 10 else ''}) whose clicks nearly all bring a buyer "
            f"({e.get('converting_clicks')} customers of {e.get('clicks')} clicks, where the "
            f"program's bring one {e.get('usual_share')} of the time) got their customers in "
            f"the same waves, within {e.get('within_h')} h of each other on up to "
            f"{e.get('occasions')} separate occasions, more often than the program's own "
            f"calendar gives (p {e.get('wave_p_value')}): one operator's links fed by paid "
            "workers after each task post")
