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
minutes. So a cohort is tested twice, on two independent things:

1. synchrony: dormant referrers' wakings a small fraction of the program's usual gap apart
   (GAP_FRACTION) form a run; a run with more of them over its span than the program's rate
   of waking gives is synchronised (Poisson tail, Bonferroni over the wakings);
2. the referees: the first purchases of the cohort's referees (within the waking) came
   faster after the click than the program's (one-sided Kolmogorov-Smirnov), Bonferroni over
   the synchronised runs only, a handful: what selected them, the waking, says nothing of
   the referees' delays where the referrers are genuine.

A cohort that passes both is a sleeper cell: its referrers and their referees who bought
as fast as the test found them faster, one flag, and each such purchase is held on the population
family (the referrer's traffic unlike the program's). A referee of the cohort who took his
time is not held.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Sequence

import numpy as np
from scipy import stats

from fraud.rings import Ring
from fraud.signals import ConversionFacts, Reason

DAY = 86400.0
DORMANT = 7 * DAY  # a referrer's first referral this long after its own first conversion
GAP_FRACTION = 0.25  # wakings closer than this share of the usual gap are one run
SYNC_P = 0.01  # family-wise level of the synchrony test (Bonferroni over wakings)
FAST_P = 0.01  # family-wise level of the referees' test (Bonferroni over synchronised runs)
MIN_COHORT = 4  # dormant referrers in a run, at least
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


def sleeper_cells(conversions: Sequence[ConversionFacts]) -> list[Ring]:
    """The sleeper cells among the program's conversions (see the module's docstring): a Ring
    of kind "sleeper_cell" each, its accounts the cohort's referrers and their fast referees,
    its evidence the two tests."""
    if not conversions:
        return []
    woke = _wakings(conversions)
    purchases = _first_purchases(conversions)
    delays = [max(c.delay or 0.0, 0.0) for own in purchases.values() for c in own]
    if len(woke) < MIN_COHORT or len(delays) < 2 * MIN_PURCHASES:
        return []
    median = float(np.median(delays))
    span = max(c.at for c in conversions) - min(c.at for c in conversions)
    rate = len(woke) / max(span, DAY)  # dormant referrers waking per second
    order = sorted(woke, key=lambda r: (woke[r], r))
    # Wakings a small fraction of the usual gap apart are one run (single linkage): a mailing
    # and a cell woken two days later are two runs, each tested on its own.
    gap = GAP_FRACTION / rate
    runs: list[list[str]] = [[order[0]]]
    for before, ref in itertools.pairwise(order):
        if woke[ref] - woke[before] <= gap:
            runs[-1].append(ref)
        else:
            runs.append([ref])
    synced: list[tuple[float, float, list[str]]] = []
    for cohort in runs:
        if len(cohort) < MIN_COHORT:
            continue
        width = max(woke[cohort[-1]] - woke[cohort[0]], gap)
        # Bonferroni over every waking a run could have started at.
        p = float(stats.poisson.sf(len(cohort) - 1, rate * width)) * len(order)
        if p < SYNC_P:
            synced.append((p, width, cohort))
    ordered = np.sort(np.asarray(delays, dtype=float))
    cells: list[tuple[set[str], float, float, int, int, float, float]] = []
    for p_sync, width, cohort in synced:
        # The referees of the waking: a genuine referrer's friends weeks later are not.
        bought = [c for ref in cohort for c in purchases.get(ref, ())
                  if c.at - woke[ref] <= width]
        if len(bought) < MIN_PURCHASES:
            continue
        p_fast, cut = _faster(bought, ordered)
        if p_fast * len(synced) < FAST_P:
            fast = sum(1 for c in bought if (c.delay or 0.0) <= cut)
            cells.append((set(cohort), p_sync, p_fast, fast, len(bought), width, cut))
    rings = []
    for referrers, p_sync, p_fast, fast, n, width, cut in cells:
        # The operator's referrers have only his quick buyers; a genuine referrer woken by a
        # mailing in the same hours has friends who take their time too: none of its is held.
        quick = {c.customer for ref in referrers
                 if all((c.delay or 0.0) <= cut for c in purchases.get(ref, ()))
                 for c in purchases.get(ref, ()) if c.at - woke[ref] <= width}
        begin = min(woke[r] for r in referrers)
        days = (max(woke[r] for r in referrers) - begin) / DAY
        rings.append(Ring(
            "sleeper_cell",
            frozenset({("referrer", r) for r in referrers} | {("customer", c) for c in quick}),
            frozenset(), CELL_SCORE,
            {"referrers": sorted(referrers), "customers": sorted(quick),
             "woke_within_days": round(days, 2), "sync_p_value": float(f"{p_sync:.3g}"),
             "fast_purchases": fast, "purchases": n, "within_s": round(cut, 1),
             "median_delay_s": round(median, 1),
             "fast_p_value": float(f"{p_fast:.3g}")}))
    return rings


def _faster(bought: Sequence[ConversionFacts], ordered: np.ndarray) -> tuple[float, float]:
    """The one-sided Kolmogorov-Smirnov p-value of "these purchases came as fast as the
    program's" (`ordered`: the program's delays, sorted, many more than these) against
    "faster": the largest lead of their distribution over the program's. An operator's
    buyers have none of the program's slow tail (people who come back days later). And the
    delay where their lead is largest: what is faster is the cohort's anomaly."""
    at = np.sort(np.array([max(c.delay or 0.0, 0.0) for c in bought]))
    n = len(at)
    behind = np.searchsorted(ordered, at, side="right") / len(ordered)
    leads = np.arange(1, n + 1) / n - behind
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
        out[conv.conversion_id] = Reason(
            "sleeper_cell",
            f"referrer population: {len(_referrers(found))} "
            f"referrers quiet since their own first purchase woke within "
            f"{e.get('woke_within_days')} days of each other (more than the program's "
            f"rate of waking gives), and {e.get('fast_purchases')} of their referees' "
            f"{e.get('purchases')} first purchases came within {e.get('within_s')} s of the "
            "click, faster than the program's: one operator's aged accounts and his buyers (a "
            "merchant's mailing wakes referrers together too, but their referees buy when "
            "they like)", e.get("fast_p_value"), f"p < {FAST_P:g}", SLEEPER_WEIGHT,
            "population")
    return out


def _referrers(cell: Ring) -> list[str]:
    return sorted(i for kind, i in cell.accounts if kind == "referrer")


def flag_reasons(ring: Ring) -> list[dict[str, object]]:
    """The reasons of a sleeper cell's own flag."""
    e = ring.evidence
    referrers = _referrers(ring)
    return [{"code": "sleeper_cell",
             "message": f"referrer population: {len(referrers)} referrers quiet since their own "
                        f"first purchase ({', '.join(referrers[:10])}"
                        f"{', ...' if len(referrers) > 10 else ''}) woke within "
                        f"{e.get('woke_within_days')} days of each other, and "
                        f"{e.get('fast_purchases')} of their referees' {e.get('purchases')} "
                        f"first purchases came within {e.get('within_s')} s of the click, "
                        "faster than the program's: one operator's aged accounts",
             "value": len(ring.accounts), "threshold": MIN_COHORT}]
