"""bench.redteam2: a red team for refguard's fraud engine, written blind from DESIGN.md.

`python -m bench.redteam2 --help` tells how to run it; scenario.py says what it plants.
"""
