"""Incentive experiments: which reward variant a referrer gets (pure: no database).

A program's `settings.reward.variants` (validated in tracker.programs.validation) is a list of
`{"name", "weight", "rules"}`. A referrer is assigned one variant when first seen (created
through the API, or taken up by clearance) and keeps it: the name is recorded on the referrer
(`referrers.variant`) and on every reward made for it (`rewards.variant`).

The assignment is weighted rendezvous hashing: each variant draws a uniform number
u = H(program id, external id, variant name) in (0, 1), and the referrer takes the variant
with the smallest -ln(u) / weight (the first of exponential clocks with rates = weights, so a
variant is chosen with probability weight / sum of weights). It is deterministic for a new
referrer, does not depend on the order of the list, and adding a variant only ever moves
referrers *to* the new one; recording the assignment then keeps even those where they were.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Variant:
    name: str
    weight: float


def variants_of(settings: Mapping[str, Any]) -> list[Variant]:
    """The variants of a program's settings ([] for a program without an experiment)."""
    reward = settings.get("reward") or {}
    return [Variant(str(v["name"]), float(v.get("weight", 1)))
            for v in reward.get("variants") or []]


def _uniform(program_id: int, external_id: str, name: str) -> float:
    digest = hashlib.sha256(f"{program_id}\x00{external_id}\x00{name}".encode()).digest()
    # 53 bits, shifted off zero: a float strictly inside (0, 1).
    return ((int.from_bytes(digest[:8], "big") >> 11) + 0.5) / 2.0**53


def assign(program_id: int, external_id: str, variants: Sequence[Variant]) -> str | None:
    """The variant a new referrer of this program takes (None when there are no variants)."""
    best: tuple[float, str] | None = None
    for v in variants:
        clock = (-math.log(_uniform(program_id, external_id, v.name)) / v.weight, v.name)
        if best is None or clock < best:
            best = clock
    return None if best is None else best[1]
