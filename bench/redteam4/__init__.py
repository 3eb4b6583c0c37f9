"""bench.redteam4: a third red team for refguard's fraud engine, written blind from issue 13 and
DESIGN.md only (no engine code, no other red team's generator), on bench/redteam2's driver and
scorer: its own clean world, every mechanism of issue 13 and four it does not name.

`python -m bench.redteam4 --help` tells how to run it; scenario.py says what it plants.
"""
