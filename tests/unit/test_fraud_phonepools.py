"""Phone pools: shell referrers (no purchases of their own) whose few referees land on the
same few phone builds, far beyond the program's mix, are one pool; referrers whose referees
come on the program's mix of phones are not, nor customers who also refer."""

from __future__ import annotations

import random

from fraud.phonepools import phone_pools
from fraud.signals import ClickFacts, ConversionFacts

DAY = 86400.0
T0 = 1_790_000_000.0
BUILDS = 60  # the program's phone builds


def conv(i: int, at: float, referrer: str | None, build: str,
         customer: str | None = None) -> ConversionFacts:
    touches = () if referrer is None else (
        ClickFacts(f"k{i}", at - 3600, referrer, f"v{i}", f"10.1.{i % 250}.{i // 250}",
                   None, agent="InAppBrowser/1"),)
    return ConversionFacts(
        i, customer or f"c{i}", at, () if referrer is None else (referrer,), touches=touches,
        agents=frozenset({(build, f"10.0.{i % 250}.{i // 250}"),
                          ("InAppBrowser/1", f"10.1.{i % 250}.{i // 250}")}),
        amount=1000)


def program(n: int = 1200) -> list[ConversionFacts]:
    """Genuine referees of 200 referrers (a third of them customers) on the program's
    builds, each build carried by some twenty customers."""
    rng = random.Random(13)
    out = [conv(10_000 + i, T0 + i * 5000, f"r{rng.randrange(200)}",
                f"App/1 (Model{rng.randrange(BUILDS)})") for i in range(n)]
    out += [conv(20_000 + j, T0 + j * 9000, None, f"App/1 (Model{j % BUILDS})",
                 customer=f"r{j}") for j in range(0, 200, 3)]
    return out


def shells(phones: list[str], referrers: int = 10) -> list[ConversionFacts]:
    """One operator: `referrers` shell referrers, two or three referees each, on his few
    phones (builds the program's customers have too), spread over weeks."""
    out = []
    i = 0
    for r in range(referrers):
        for k in range(r % 2, 3):
            out.append(conv(i, T0 + i * 2 * DAY / 3, f"shell{r}", phones[(r + k) % len(phones)]))
            i += 1
    return out


def test_shell_referrers_on_a_few_shared_phones_are_one_pool() -> None:
    phones = ["App/1 (Model3)", "App/1 (Model11)", "App/1 (Model27)"]
    rings = phone_pools(shells(phones) + program())
    assert len(rings) == 1
    ring = rings[0]
    assert ring.kind == "collusion_pool"
    customers = {c for _kind, c in ring.accounts}
    assert len(customers) >= 20 and all(int(c[1:]) < 10_000 for c in customers)
    assert set(ring.evidence["referrers"]) <= {f"shell{r}" for r in range(10)}  # type: ignore[arg-type]
    assert len(ring.evidence["referrers"]) >= 8  # type: ignore[arg-type]


def test_referrers_on_the_programs_mix_of_phones_are_no_pool() -> None:
    assert phone_pools(program()) == []
    # The same referees, but each on a build drawn from the program's mix: no pool.
    rng = random.Random(7)
    spread = [conv(c.conversion_id, c.at, c.referrers[0], f"App/1 (Model{rng.randrange(BUILDS)})")
              for c in shells(["x"])]
    assert phone_pools(spread + program()) == []
