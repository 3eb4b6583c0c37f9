"""Red team of fraud mechanisms that issue 13 does not describe (its "mode 3" question: does
the engine generalise?).

    .venv/bin/python -m bench.redteam3 --quick --seeds 1-5     # smaller programs
    .venv/bin/python -m bench.redteam3 --seeds 1-20            # full-size programs

Each seed draws one program's 60 days (bench/redteam3/scenario.py: redteam2's clean population
and look-alikes plus coupon_leak, emulator_farm, account_factory, refund_abuse, collusion_pool,
sleeper_cell, each with a blatant and an evasive variant) and drives a fresh refguard through
its public interfaces only, exactly as bench/redteam2 does (its driver and scorer are reused):
`refguard import`, `attribution run`, `fraud scan`, `rewards release`, then GET /api/v1/rewards
and /api/v1/fraud/flags. Prints one line a seed and the mean and worst seed of every figure
(precision, recall, clean held, recall per mechanism and variant, held per look-alike, Jaccard
of the planted collusion pool and sleeper cell); writes JSON to
bench/results/redteam3-<time>.json.
"""

from __future__ import annotations

import sys

from bench.redteam2.__main__ import main as redteam2_main
from bench.redteam3.scenario import Scenario3


def main(argv: list[str] | None = None) -> int:
    return redteam2_main(argv, generator="redteam3", doc=__doc__, make=Scenario3, prefix="rt3")


if __name__ == "__main__":
    sys.exit(main())
