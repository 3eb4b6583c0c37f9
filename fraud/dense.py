"""Dense blocks in a bipartite graph, camouflage-resistant: FRAUDAR (Hooi et al., KDD 2016).

Rows are accounts (referrers, customers), columns are what they share (IPs, /24s, devices).
The suspiciousness of a subgraph S is g(S) = f(S) / |S|, where f sums the weights of its edges
and an edge into column j weighs 1 / log(deg(j) + c): a column everybody uses (a popular
IP, a mobile carrier's NAT) counts for little, so fraudsters cannot hide by also touching
popular columns (camouflage), and a small group sharing rare columns stands out. Greedy peeling
removes, one at a time, the node whose edges weigh least in what remains, and keeps the
remaining set with the highest g; it is within a factor 2 of the densest subgraph. Peeling is
O(|E| log |V|) with a heap of lazily updated priorities.

A caller that keeps only blocks scoring `min_score` or more (fraud.rings.dense_blocks) is spared
the peels that cannot find one (`may_reach`, linear): a program whose accounts share nothing
twice over (no cycle in the graph) has no block above a single edge's weight, and each peel
costs a few seconds on a million clicks' graph.
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
    # Blocks scoring less are of no use to the caller: the fit stops as soon as no block of
    # the remaining edges can score this much (may_reach), rather than peel for nothing.
    min_score: float = 0.0
    blocks_: list[DenseBlock] = field(default_factory=list)

    def fit(self, edges: Sequence[tuple[int, int]], n_rows: int, n_cols: int) -> Fraudar:
        remaining = sorted(set(edges))
        self.blocks_ = []
        for _ in range(self.blocks):
            if not remaining:
                break
            if self.min_score > 0 and not may_reach(remaining, n_rows, n_cols, self.min_score,
                                                    self.c):
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


def may_reach(edges: Sequence[tuple[int, int]], n_rows: int, n_cols: int, score: float,
              c: float = 5.0) -> bool:
    """False when no peel of these edges, or of any subset of them, can find a block scoring
    `score` or more (True: it may).

    A block's column j weighs 1 / log(d + c) per edge, d its degree among the edges peeled,
    which is at least its degree inside the block: so a block S scores at most
    F(S) / |S| with F(S) = sum over its columns of g(deg_S(j)), g(d) = d / log(d + c). Take S
    with the highest F(S) / |S| = r: taking any one node out of S cannot raise that ratio,
    so each node of S takes at least r with it; a column takes g(deg_S(j)), a row at most
    `step` (g's largest increment) per edge. So if some block scores `score`, every node of S
    has enough edges inside S for that, and S lies within what remains after removing, over
    and over, every row and column with too few edges left: when nothing remains, no block
    can score `score`. Linear in the edges."""
    if not edges:
        return False
    want = score * (1 - 1e-9)  # no rounding of the peel's sums can sneak past
    pairs = np.asarray(edges, dtype=np.int64).reshape(-1, 2)
    row_deg = np.bincount(pairs[:, 0], minlength=n_rows)
    col_deg = np.bincount(pairs[:, 1], minlength=n_cols)
    top = int(col_deg.max())
    d = np.arange(top + 1, dtype=float)
    g = np.zeros(top + 1)
    g[1:] = d[1:] / np.log(d[1:] + c)
    step = float(np.diff(g).max())
    reach = np.maximum.accumulate(g)  # the most a column of that many edges or fewer takes
    if not (reach >= want).any():
        return False
    col_need = int(np.argmax(reach >= want))
    row_need = max(1, int(np.ceil(want / step - 1e-9)))
    # Adjacency both ways, as index ranges into sorted edge arrays.
    by_row = pairs[np.lexsort((pairs[:, 1], pairs[:, 0]))]
    by_col = pairs[np.lexsort((pairs[:, 0], pairs[:, 1]))]
    row_start = np.concatenate(([0], np.cumsum(row_deg))).tolist()
    col_start = np.concatenate(([0], np.cumsum(col_deg))).tolist()
    row_cols = by_row[:, 1].tolist()
    col_rows = by_col[:, 0].tolist()
    rdeg = row_deg.tolist()
    cdeg = col_deg.tolist()
    # Rows are 0..n_rows-1, columns n_rows + j; a node is stacked once, when it falls short.
    stack: list[int] = np.flatnonzero((row_deg > 0) & (row_deg < row_need)).tolist()
    stack += [n_rows + j for j in np.flatnonzero((col_deg > 0) & (col_deg < col_need)).tolist()]
    gone = bytearray(n_rows + n_cols)
    for node in stack:
        gone[node] = 1
    while stack:
        node = stack.pop()
        if node < n_rows:
            for j in row_cols[row_start[node]:row_start[node + 1]]:
                if not gone[n_rows + j]:
                    cdeg[j] -= 1
                    if cdeg[j] < col_need:
                        gone[n_rows + j] = 1
                        stack.append(n_rows + j)
        else:
            j = node - n_rows
            for r in col_rows[col_start[j]:col_start[j + 1]]:
                if not gone[r]:
                    rdeg[r] -= 1
                    if rdeg[r] < row_need:
                        gone[r] = 1
                        stack.append(r)
    return any(rdeg[r] > 0 and not gone[r] for r in range(n_rows))
