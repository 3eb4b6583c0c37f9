"""Cash-out cohorts: one referrer whose referees rush money through their new accounts.

An operator who turns stolen cards into gift cards (or any goods he can resell) makes a few
accounts through his own link and, in each, spends as much as he can as soon as it is open:
several purchases within days of the sign-up, each for far more than the program's customers
spend. His accounts need share nothing (a new address and browser each, weeks apart): what
binds them is their referrer and the shape of their money. Each such account alone is a
customer who bought twice, or bought big; a referrer most of whose referees do both is one
operator's cohort.

Two independent families decide it, each tested against the program's own referees (the
referrer's own left out):

1. timing: more of the referrer's referees made several purchases within EARLY of their first
   conversion than the program's share gives (binomial);
2. money: their first purchases were larger than the program's referees' (Fisher's method
   over each referee's upper-tail share among the program's first purchases).

A referrer is a cohort's when the two together are a discovery (Fisher's method over the two
p-values, Benjamini-Hochberg across the referrers tested at FDR_Q) and each alone is below
FAMILY_P: neither family carries it alone (a friend group of big spenders, or of customers who
come back the next day, is the program's own). The flag names the referrer and its referees
that show either anomaly (a genuine friend of the operator who bought once, as people do, is
not named). It is a review flag: the conversions' own evidence decides them.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import defaultdict
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from fraud.rings import Ring
from fraud.signals import (
    DAY,
    FDR_Q,
    SPREE_PURCHASES,
    SPREE_SECONDS,
    ConversionFacts,
    benjamini_hochberg,
    binom_above,
    fisher,
)

EARLY = SPREE_SECONDS  # a referee's purchases this soon after its first conversion are early
# (the same first days as the spending_spree test's)
MIN_REFEREES = 3  # referees with a purchase, at least, for a referrer to be tested
FAMILY_P = 0.05  # each family alone, at least this significant
LARGE_SHARE = 0.1  # an early purchase among the program's largest this share is large
CASH_OUT_SCORE = 0.8
KIND = "cash_out"


@dataclass(frozen=True, slots=True)
class _Referee:
    customer: str
    early: tuple[int, ...]  # amounts of its purchases within EARLY of its first conversion
    reversed: int  # of those, refunded or charged back

    @property
    def rushed(self) -> bool:
        return len(self.early) >= SPREE_PURCHASES


def _referees(conversions: Sequence[ConversionFacts], reversed_ids: Collection[int]
              ) -> dict[str, list[_Referee]]:
    """Per referrer, its referees (customers whose first referred conversion credits it) that
    made a purchase within EARLY of their first conversion, with those purchases."""
    joined: dict[str, float] = {}
    referrer: dict[str, str] = {}
    early: dict[str, list[tuple[int, bool]]] = defaultdict(list)
    for conv in sorted(conversions, key=lambda c: (c.at, c.conversion_id)):
        customer = conv.customer
        if customer not in joined:
            joined[customer] = conv.at
        if customer not in referrer and conv.referrers:
            credited = [r for r in conv.referrers if r != customer]
            if credited:
                referrer[customer] = min(credited)
        if conv.amount > 0 and conv.at - joined[customer] <= EARLY:
            early[customer].append((conv.amount, conv.conversion_id in reversed_ids))
    out: dict[str, list[_Referee]] = defaultdict(list)
    for customer, ref in referrer.items():
        bought = early.get(customer)
        if bought:
            out[ref].append(_Referee(customer, tuple(a for a, _r in bought),
                                     sum(1 for _a, r in bought if r)))
    return dict(out)


def cash_out_cohorts(conversions: Sequence[ConversionFacts],
                     reversed_ids: Collection[int] = frozenset()) -> list[Ring]:
    """The referrers whose referees rush large purchases through new accounts (see the
    module's docstring): a Ring of kind KIND each, the referrer and its referees that show
    the anomaly. `reversed_ids`: the conversions refunded or charged back."""
    by_referrer = _referees(conversions, reversed_ids)
    everyone = [r for own in by_referrer.values() for r in own]
    if not everyone:
        return []
    rushed_total = sum(1 for r in everyone if r.rushed)
    amounts = sorted(a for r in everyone for a in r.early)
    reversed_total = sum(r.reversed for r in everyone)
    tests: dict[str, float] = {}
    kept: dict[str, tuple[int, float, float]] = {}
    for ref, own in by_referrer.items():
        n = len(own)
        rushed = sum(1 for r in own if r.rushed)
        others = len(everyone) - n
        if n < MIN_REFEREES or not rushed or others < n:
            continue
        # Against the program without the referrer's own referees (a cohort is not its own
        # baseline); one at least among the others: none seen is not "never".
        p_time = binom_above(rushed, n, max(rushed_total - rushed, 1) / others)
        mine = sorted(a for r in own for a in r.early)
        rest = len(amounts) - len(mine)
        # Each early purchase's upper-tail share among the others' (+1: never zero); and
        # more of them refunded or charged back than the others' (binomial).
        tails = [(len(amounts) - bisect_left(amounts, a) - (len(mine) - bisect_left(mine, a))
                  + 1) / (rest + 1) for a in mine]
        back = sum(r.reversed for r in own)
        p_back = (binom_above(back, len(mine), max(reversed_total - back, 1) / max(rest, 1))
                  if back else 1.0)
        p_money = fisher([fisher(tails), p_back])
        kept[ref] = (rushed, p_time, p_money)
        tests[ref] = fisher([p_time, p_money]) if max(p_time, p_money) < FAMILY_P else 1.0
    rings = []
    large = amounts[min(len(amounts) - 1, int((1 - LARGE_SHARE) * len(amounts)))]
    for ref in sorted(benjamini_hochberg(tests, FDR_Q)):
        own = by_referrer[ref]
        shown = sorted(r.customer for r in own
                       if r.rushed or r.reversed or max(r.early) > large)
        rushed, p_time, p_money = kept[ref]
        accounts = frozenset({("referrer", ref)} | {("customer", c) for c in shown})
        rings.append(Ring(KIND, accounts, frozenset(), CASH_OUT_SCORE, {
            "referrer": ref, "customers": shown, "referees": len(own),
            "rushed": rushed,
            "large": sum(1 for r in own if max(r.early) > large),
            "reversed": sum(1 for r in own if r.reversed),
            "large_above": large, "early_days": EARLY / DAY,
            "timing_p_value": float(f"{p_time:.3g}"), "money_p_value": float(f"{p_money:.3g}"),
            "p_value": float(f"{tests[ref]:.3g}")}))
    return rings


def flag_reasons(ring: Ring) -> list[dict[str, object]]:
    """The reasons of a cash-out cohort's flag: the two families that decided it."""
    e = ring.evidence
    return [
        {"code": "cash_out_timing",
         "message": f"timing: {e.get('rushed')} of {e.get('referrer')}'s {e.get('referees')} "
                    f"buying referees made several purchases within {e.get('early_days'):g} "
                    "days of signing up, more than the program's referees do",
         "value": e.get("timing_p_value"), "threshold": f"p < {FAMILY_P:g}",
         "family": "timing"},
        {"code": "cash_out_money",
         "message": f"money: their first purchases were larger than the program's referees' "
                    f"({e.get('large')} of them above {e.get('large_above')}), or more of them "
                    f"came back as refunds or chargebacks ({e.get('reversed')} of them): new "
                    "accounts spending as much as they can at once, one operator's cash-out",
         "value": e.get("money_p_value"), "threshold": f"p < {FAMILY_P:g}",
         "family": "money"},
    ]
