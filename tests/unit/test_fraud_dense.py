"""FRAUDAR dense-block detection on planted blocks, with and without camouflage."""

from __future__ import annotations

import random

from fraud.dense import Fraudar, peel


def background(rng: random.Random, n: int, edges: int) -> set[tuple[int, int]]:
    out: set[tuple[int, int]] = set()
    while len(out) < edges:
        out.add((rng.randrange(n), rng.randrange(n)))
    return out


def test_returns_exactly_the_planted_block() -> None:
    rng = random.Random(1)
    rows = set(rng.sample(range(500), 20))
    cols = set(rng.sample(range(500), 20))
    edges = background(rng, 500, 2500) | {(r, c) for r in rows for c in cols}
    block = peel(sorted(edges), 500, 500)
    assert block is not None
    assert block.rows == rows
    assert block.cols == cols


def test_camouflage_does_not_hide_the_block() -> None:
    """Fraudulent rows also connect to popular columns, like honest ones do."""
    rng = random.Random(2)
    rows = set(rng.sample(range(500), 20))
    cols = set(rng.sample(range(500), 20))
    popular = rng.sample(range(500), 10)
    edges = background(rng, 500, 2500)
    edges |= {(r, c) for r in rows for c in cols}
    edges |= {(r, p) for r in rows for p in rng.sample(popular, 5)}
    edges |= {(r, p) for r in range(500) for p in popular if rng.random() < 0.3}
    block = peel(sorted(edges), 500, 500)
    assert block is not None
    assert block.rows == rows
    assert block.cols == cols


def test_several_blocks_one_after_another() -> None:
    rng = random.Random(3)
    first = (set(range(0, 15)), set(range(0, 15)))
    second = (set(range(100, 110)), set(range(200, 212)))
    edges = background(rng, 500, 2000)
    for rows, cols in (first, second):
        edges |= {(r, c) for r in rows for c in cols}
    found = Fraudar(blocks=2).fit(sorted(edges), 500, 500).blocks_
    assert [(b.rows, b.cols) for b in found] == [
        (frozenset(first[0]), frozenset(first[1])), (frozenset(second[0]), frozenset(second[1]))]
    assert found[0].score > found[1].score


def test_no_edges_no_block() -> None:
    assert peel([], 10, 10) is None
    assert Fraudar(blocks=3).fit([], 10, 10).blocks_ == []
