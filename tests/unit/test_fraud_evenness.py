"""A full scan reads the per-day evenness of only the referrers whose clicks may be even
enough for an even_clicks finding (fraud.signals.even_z_max): every referrer whose
even_p_value is FDR_Q or less must be one of them."""

from __future__ import annotations

import math
import random

from fraud.signals import (
    EVEN_MIN_PAIRS,
    FDR_Q,
    GAP_VARIANCE_FACTOR,
    ClickRhythm,
    benjamini_hochberg,
    even_z_max,
)


def _asked(pairs: int, spread: float) -> bool:
    """The test tracker.scoring.queries.click_evenness makes in SQL."""
    return pairs >= EVEN_MIN_PAIRS and spread / pairs <= 0.25 + even_z_max() * math.sqrt(
        GAP_VARIANCE_FACTOR / (48.0 * pairs))


def test_every_referrer_even_clicks_can_find_has_its_days_read() -> None:
    rng = random.Random(5)
    rhythms = {}
    for i in range(20_000):
        pairs = rng.choice([rng.randint(1, 40), rng.randint(40, 5_000)])
        sd = math.sqrt(GAP_VARIANCE_FACTOR / (48.0 * pairs))
        mean = rng.uniform(0.0, 0.3) if i % 3 else rng.gauss(0.25, sd)
        rhythms[f"r{i}"] = ClickRhythm(pairs + 2, 10, 0, pairs, max(mean, 0.0) * pairs)
    p_values = {ref: r.even_p_value() for ref, r in rhythms.items()
                if r.gap_pairs >= EVEN_MIN_PAIRS}
    found = benjamini_hochberg(p_values) | benjamini_hochberg(dict(list(p_values.items())[:50]))
    assert found  # (each has p <= FDR_Q: covered by the bound below)
    for r in rhythms.values():  # the bound itself: p <= FDR_Q is always asked
        if r.even_p_value() <= FDR_Q:
            assert _asked(r.gap_pairs, r.gap_spread)
    # and it reads few: people clicking on their own give a mean of 1/4 (about one in a
    # hundred of them as far below it as the bound)
    assert sum(_asked(r.gap_pairs, r.gap_spread) for i, r in enumerate(rhythms.values())
               if i % 3 == 0) < 0.03 * 20_000 / 3
