"""FRAUDAR dense-block detection on planted blocks, with and without camouflage."""

from __future__ import annotations

import random

import pytest

from fraud import dense
from fraud.dense import Fraudar, may_reach, peel


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


def test_no_peel_where_no_block_can_reach_the_score(monkeypatch: pytest.MonkeyPatch) -> None:
    """Accounts that share nothing twice over (a forest: customers each on their own IP and
    device, a few IPs shared once) hold no block above a single edge's weight: a caller that
    wants blocks scoring 1 or more is spared the peels, which find nothing it keeps."""
    edges = sorted({(r, 2 * r) for r in range(300)} | {(r, 2 * r + 1) for r in range(300)}
                   | {(r + 1, 2 * r) for r in range(0, 300, 7)})
    assert not may_reach(edges, 300, 600, 1.0)
    assert all(b.score < 1.0 for b in Fraudar(blocks=5).fit(edges, 300, 600).blocks_)
    peeled: list[int] = []
    real = dense.peel
    monkeypatch.setattr(dense, "peel", lambda *a, **k: peeled.append(1) or real(*a, **k))
    assert Fraudar(blocks=5, min_score=1.0).fit(edges, 300, 600).blocks_ == []
    assert peeled == []


def test_blocks_that_may_reach_the_score_are_found_as_before() -> None:
    """Where a block may score min_score, the blocks are the same as without it (those
    scoring at least min_score)."""
    for seed in range(40):
        rng = random.Random(seed)
        edges = background(rng, 60, 90)
        rows, cols = rng.sample(range(60), 4), rng.sample(range(60), 4)
        edges |= {(r, c) for r in rows for c in cols if rng.random() < 0.8}
        for score in (0.5, 1.0, 1.5):
            plain = [b for b in Fraudar(blocks=5).fit(sorted(edges), 60, 60).blocks_
                     if b.score >= score]
            spared = [b for b in Fraudar(blocks=5, min_score=score).fit(sorted(edges), 60,
                                                                         60).blocks_
                      if b.score >= score]
            assert spared == plain
    planted = {(r, c) for r in range(5) for c in range(5)}
    assert may_reach(sorted(planted), 5, 5, 1.0)
