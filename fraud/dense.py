"""Dense blocks in a bipartite graph, camouflage-resistant: FRAUDAR (Hooi et al., KDD 2016).

Rows are accounts (referrers, customers), columns are what they share (IPs, /24s, devices).
The suspiciousness of a subgraph S is g(S) = f(S) / |S|, where f sums the weights of its edges
and an edge into column j weighs 1 / log(deg(j) + c): a column everybody uses (a popular
IP, a mobile carrier's NAT) counts for little, so fraudsters cannot hide by also touching
popular columns (camouflage), and a small group sharing rare columns stands out. Greedy peeling
removes, one at a time, the node whose edges weigh least in what remains, and keeps the
remaining set with the highest g; it is within a factor 2 of the densest subgraph. Peeling is
O(|E| log |V|) with a heap of lazily updated priorities.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True, slots=True)
class DenseBlock:
    rows: frozenset[int]
    cols: frozenset[int]
    score: float  # g(S): weighted edges per node
    edges: int


@dataclass
class Fraudar:
    """Finds up to `blocks` dense blocks, one after another (each block's edges removed)."""

    c: float = 5.0
    blocks: int = 1
    min_rows: int = 2
    blocks_: list[DenseBlock] = field(default_factory=list)

    def fit(self, edges: Sequence[tuple[int, int]], n_rows: int, n_cols: int) -> Fraudar:
        remaining = sorted(set(edges))
        self.blocks_ = []
        for _ in range(self.blocks):
            if not remaining:
                break
            block = peel(remaining, n_rows, n_cols, self.c)
            if block is None or len(block.rows) < self.min_rows:
                break
            self.blocks_.append(block)
            remaining = [(r, k) for r, k in remaining
                         if not (r in block.rows and k in block.cols)]
        return self


def peel(edges: Sequence[tuple[int, int]], n_rows: int, n_cols: int,
         c: float = 5.0) -> DenseBlock | None:
    """The densest block greedy peeling finds (rows and columns that have edges only)."""
    if not edges:
        return None
    col_degree = np.zeros(n_cols)
    for _r, k in edges:
        col_degree[k] += 1
    col_weight = 1.0 / np.log(col_degree + c)
    # Nodes 0..n_rows-1 are rows, n_rows.. are columns.
    adjacency: dict[int, list[tuple[int, float]]] = {}
    priority: dict[int, float] = {}
    total = 0.0
    for r, k in edges:
        w = float(col_weight[k])
        node_k = n_rows + k
        adjacency.setdefault(r, []).append((node_k, w))
        adjacency.setdefault(node_k, []).append((r, w))
        priority[r] = priority.get(r, 0.0) + w
        priority[node_k] = priority.get(node_k, 0.0) + w
        total += w
    alive = set(priority)
    heap = [(p, node) for node, p in priority.items()]
    heapq.heapify(heap)
    best_score = total / len(alive)
    best_at = 0
    order: list[int] = []
    f = total
    while alive:
        p, node = heapq.heappop(heap)
        if node not in alive or p != priority[node]:
            continue  # a stale entry
        alive.remove(node)
        order.append(node)
        f -= priority[node]
        for other, w in adjacency[node]:
            if other in alive:
                priority[other] -= w
                heapq.heappush(heap, (priority[other], other))
        if alive:
            score = f / len(alive)
            if score > best_score + 1e-12:
                best_score, best_at = score, len(order)
    removed = set(order[:best_at])
    kept = [node for node in priority if node not in removed]
    rows = frozenset(n for n in kept if n < n_rows)
    cols = frozenset(n - n_rows for n in kept if n >= n_rows)
    inside = sum(1 for r, k in edges if r in rows and k in cols)
    return DenseBlock(rows, cols, best_score, inside)
