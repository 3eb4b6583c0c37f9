"""Reward rules and their arithmetic (pure: no database).

A program's `settings.reward` holds `currency` and `rules`. A rule:

    {"beneficiary": "referrer" | "referee", "on": "purchase",      # fixed by DESIGN
     "flat": 2000 | "percent": 10,                                  # exactly one
     "tiers": [{"after": 10, "flat": 3000}, {"after": 50, "percent": 15}],
     "cap_per_day": 10000, "cap_per_month": 100000,                 # per referrer, minor units
     "first_only": true,                  # only the customer's first conversion of this type
     "months": 12,                        # recurring: only within N months of the first one
     "kind": "cash" | "credit" | "coupon", # what is given (default cash); a coupon rule names
     "pool": "spring"}                    # the pool of uploaded codes it draws from

A `cash` reward is paid out in payout batches; a `credit` one is store credit the merchant
applies (never in a payout batch); a `coupon` one gets one code of its pool on approval.

Money is integer minor units. A referrer reward is shared among the credited referrers by
their attribution credit; `apportion` rounds with the largest-remainder method so the parts add
up to the rounded whole exactly. A percentage is of the conversion's amount, in its currency.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from fractions import Fraction
from typing import Any


@dataclass(frozen=True, slots=True)
class Rate:
    flat: int | None = None
    percent: float | None = None

    def amount(self, conversion_amount: int | None) -> int:
        if self.flat is not None:
            return self.flat
        if not conversion_amount or self.percent is None:
            return 0
        exact = Decimal(conversion_amount) * Decimal(str(self.percent)) / 100
        return int(exact.quantize(Decimal(1), rounding=ROUND_HALF_UP))

    def describe(self) -> str:
        return f"{self.flat} flat" if self.flat is not None else f"{self.percent:g}%"


@dataclass(frozen=True, slots=True)
class Rule:
    index: int
    beneficiary: str
    on: str
    rate: Rate
    tiers: tuple[tuple[int, Rate], ...] = ()  # (approved referrals after which, rate), ascending
    cap_per_day: int | None = None
    cap_per_month: int | None = None
    first_only: bool = False
    months: int | None = None
    kind: str = "cash"
    pool: str | None = None  # a coupon rule's pool of codes

    def rate_after(self, approved: int) -> tuple[Rate, int | None]:
        """The rate for a referrer with `approved` approved referrals, and the tier's `after`."""
        rate, tier = self.rate, None
        for after, tier_rate in self.tiers:
            if approved >= after:
                rate, tier = tier_rate, after
        return rate, tier


def _rate(raw: dict[str, Any]) -> Rate:
    if "flat" in raw:
        return Rate(flat=int(raw["flat"]))
    return Rate(percent=float(raw["percent"]))


def parse_rules(reward: dict[str, Any]) -> list[Rule]:
    """Rules from validated settings (tracker.programs.validation checks them)."""
    rules = []
    for i, raw in enumerate(reward.get("rules", [])):
        tiers = tuple(sorted(((int(t["after"]), _rate(t)) for t in raw.get("tiers", [])),
                             key=lambda t: t[0]))
        rules.append(Rule(i, raw["beneficiary"], raw["on"], _rate(raw), tiers,
                          raw.get("cap_per_day"), raw.get("cap_per_month"),
                          bool(raw.get("first_only", False)), raw.get("months"),
                          raw.get("kind", "cash"), raw.get("pool")))
    return rules


def apportion(total: int, weights: list[float] | list[Fraction]) -> list[int]:
    """Split `total` minor units in proportion to `weights` (largest-remainder method).

    The parts are non-negative integers that add up to `total` exactly; ties in the remainder
    go to the earlier weight, so the result is deterministic.
    """
    if total < 0:
        raise ValueError("total must not be negative")
    exact = [Fraction(w) for w in weights]
    if any(w < 0 for w in exact):
        raise ValueError("weights must not be negative")
    whole = sum(exact)
    if not exact:
        return []
    if whole == 0:
        exact, whole = [Fraction(1)] * len(exact), Fraction(len(exact))
    shares = [total * w / whole for w in exact]
    parts = [math.floor(s) for s in shares]
    left = total - sum(parts)
    order = sorted(range(len(shares)), key=lambda i: (-(shares[i] - parts[i]), i))
    for i in order[:left]:
        parts[i] += 1
    return parts


def split_by_credit(amounts: list[int], credits: list[float]) -> tuple[int, list[int]]:
    """Each referrer's part of a reward: `amounts[i]` is the whole reward at referrer i's own
    rate (tiers differ), `credits[i]` their attribution credit. The rounded sum of the exact
    parts is apportioned, so parts add up exactly and equal rates give a plain split."""
    exact = [a * Fraction(c) for a, c in zip(amounts, credits, strict=True)]
    total = int(sum(exact, Fraction(0)) + Fraction(1, 2))  # round half up
    return total, apportion(total, exact)


def cap(amount: int, used: int, limit: int | None) -> int:
    """What is left of `amount` under a cap of which `used` is spent."""
    if limit is None:
        return amount
    return max(0, min(amount, limit - used))
