"""A third red team for refguard's fraud engine, written blind (issue 13 and DESIGN.md only):
its own clean world and traffic, built by other hands than the engine's and the other red
teams', as a held-out evaluation is.

    .venv/bin/python -m bench.redteam4 --quick --seeds 1-3     # smaller programs, a smoke test
    .venv/bin/python -m bench.redteam4 --seeds 1-20            # full-size programs

Each seed draws one program's 60 days (bench/redteam4/scenario.py: genuine referrers and their
friends, organic and repeat buyers, refunds, households, offices, campuses, carrier NAT,
privacy browsers, VPN users, travellers, expats, influencers, merchant campaigns; every fraud
mechanism of issue 13 and four it does not name, each in a blatant and an evasive variant),
writes MaxMind-format geo databases for its address plan and drives a fresh refguard through
its public interfaces only, with bench/redteam2's driver and scorer: `refguard import`,
`attribution run`, `fraud scan`, `rewards release`, then GET /api/v1/rewards and
/api/v1/fraud/flags. Prints one line a seed and the mean and worst seed of precision, recall,
clean held, recall per mechanism and variant, held per look-alike and ring Jaccard; writes JSON
to bench/results/redteam4-<time>.json.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import cast

from bench.redteam2.__main__ import main as redteam2_main
from bench.redteam2.scenario import Scenario
from bench.redteam4.scenario import Scenario4

# redteam2's main types its factory by its own Scenario class; Scenario4 gives the same
# interface (p.as_dict(), counts, world.write_geo(folder), finish(slug, anchor)) without
# sharing its code, so that this red team stays independent of redteam2's generator.
MAKE = cast(Callable[[int, bool], Scenario], Scenario4)


def main(argv: list[str] | None = None) -> int:
    return redteam2_main(argv, generator="redteam4", doc=__doc__, make=MAKE, prefix="rt4")


if __name__ == "__main__":
    sys.exit(main())
