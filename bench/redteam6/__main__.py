"""A fifth red team for refguard's fraud engine, written blind (issue 13, DESIGN.md and the
public import format only; none of the engine's code and none of the other generators' beyond
their module docstrings): a food-delivery marketplace in one of six city markets, and fraud
mechanisms that neither issue 13 nor bench/redteam2..5 name, so that its figures measure the
engine on traffic it was not tuned on.

    .venv/bin/python -m bench.redteam6 --quick --seeds 1-3     # smaller programs, a smoke test
    .venv/bin/python -m bench.redteam6 --seeds 1-20            # full-size programs

Each seed draws one program's 60 days (bench/redteam6/scenario.py: its docstring lists the
clean look-alikes and, for each fraud mechanism, its blatant and evasive traces), writes
MaxMind-format geo databases for its address plan (bench/redteam6/world.py, with
bench/redteam5/mmdb.py's writer) and drives a fresh refguard through its public interfaces
only, with bench/redteam2's driver and scorer: `refguard import`, `attribution run`,
`fraud scan`, `rewards release`, then GET /api/v1/rewards and /api/v1/fraud/flags. Prints one
line a seed and the mean and worst seed of precision, recall, clean held, recall per mechanism
and variant, held per look-alike and ring Jaccard; writes JSON to
bench/results/redteam6-<time>.json.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import cast

from bench.redteam2.__main__ import main as redteam2_main
from bench.redteam2.scenario import Scenario
from bench.redteam6.scenario import Scenario6

# redteam2's main types its factory by its own Scenario class; Scenario6 gives the same
# interface (p.as_dict(), counts, world.write_geo(folder), finish(slug, anchor)).
MAKE = cast(Callable[[int, bool], Scenario], Scenario6)


def main(argv: list[str] | None = None) -> int:
    return redteam2_main(argv, generator="redteam6", doc=__doc__, make=MAKE, prefix="rt6")


if __name__ == "__main__":
    sys.exit(main())
