"""bench.redteam3: a red team of fraud mechanisms issue 13 does not describe, written blind
from DESIGN.md and issue 13 only, on bench/redteam2's clean population, driver and scorer.

`python -m bench.redteam3 --help` tells how to run it; scenario.py says what it plants.
"""
