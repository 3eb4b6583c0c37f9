"""The same facts get the same decisions whatever order they come in and whatever the
instance's secret key makes of device and cookie ids (a keyed hash: another instance sorts
them in another order). Finance and the audit trail rely on a decision being reproducible."""

from __future__ import annotations

from dataclasses import replace

from fraud.assess import assess_all
from fraud.pools import collusion_pools
from fraud.signals import ConversionFacts, ProgramContext
from fraud.sleepers import sleeper_cells
from tests.unit.test_fraud_pools import DAY, T0, conv, ordinary


def program() -> list[ConversionFacts]:
    """Two pools that share a referrer (one operator), a third of its own, and genuine
    referees: overlapping groups, where an order-dependent merge or tie-break would show."""
    pool = [conv(i, T0 + i * 3600, f"ref{i % 5}", cookie=f"op{i % 2}") for i in range(12)]
    other = [conv(100 + i, T0 + 3 * DAY + i * 3600, f"own{i % 4}", device="tablet")
             for i in range(6)]
    return pool + other + ordinary(60)


def rekeyed(c: ConversionFacts) -> ConversionFacts:
    """The conversion as another instance stores it: cookies and devices under other ids
    (reversed and prefixed, so they sort in another order)."""
    def key(v: str | None) -> str | None:
        return None if v is None else "z" + v[::-1]

    return replace(
        c, visitors=frozenset(k for v in c.visitors if (k := key(v))),
        devices=frozenset(k for v in c.devices if (k := key(v))),
        touches=tuple(replace(t, visitor=key(t.visitor), device=key(t.device))
                      for t in c.touches))


def decisions(conversions: list[ConversionFacts]) -> dict[int, tuple[float, tuple[str, ...]]]:
    rings = collusion_pools(conversions) + sleeper_cells(conversions)
    return {s.assessment.conversion_id: (s.assessment.score,
                                         tuple(sorted(r.code for r in s.assessment.reasons)))
            for s in assess_all(conversions, {}, ProgramContext(), rings)}


def test_decisions_do_not_depend_on_input_order_or_on_the_ids_of_devices_and_cookies() -> None:
    facts = program()
    first = decisions(facts)
    # The pools' 18 accounts are held, the 60 genuine referees are not.
    assert sum(1 for score, _ in first.values() if score >= 0.5) == 18
    assert decisions(facts[::-1]) == first
    assert decisions([rekeyed(c) for c in facts]) == first
    assert decisions([rekeyed(c) for c in facts[::-1]]) == first
