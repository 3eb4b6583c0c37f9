"""Exact absorption quantities of a large sparse absorbing Markov chain.

`removal_quantities(q, conv)` returns, for the transient block Q (state 0 is start) and the
one-step conversion probabilities, the three vectors the Markov removal effects need:
h = (I - Q)^-1 conv (conversion probability from each state), N[0, :] (expected visits from
start) and diag(N), with N = (I - Q)^-1 the fundamental matrix.

Dense inversion costs n^3 in the largest strongly connected group of referrers (minutes at
20,000). Here A = I - Q is eliminated in levels instead: each level takes an independent set
of the current Schur complement's graph (low degree first), whose block is diagonal, so
eliminating it is one sparse product; when what is left is small or dense, it is inverted
densely. diag(N) then comes from a selected inversion back through the levels (Takahashi's
recurrences): the inverse is only formed at the positions of the eliminated matrices'
transposed patterns, which is all each level asks of the next. A is a non-singular M-matrix
(every state reaches absorption), so elimination needs no pivoting, off-diagonal entries stay
non-positive and nothing cancels: the patterns are exact. The residual of both solves is
checked.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import sparse

DENSE_AT = 1500  # a Schur complement this small is inverted densely
DENSE_DENSITY = 0.1  # ... or this dense
MIN_LEAVES = 0.05  # ... or when a level would eliminate fewer than this fraction
CHUNK_CELLS = 4_000_000  # rows x columns of a dense intermediate product


@dataclass
class _Level:
    keep: np.ndarray  # indices (in this level's numbering) that go on to the next level
    leaves: np.ndarray  # indices eliminated at this level
    d: np.ndarray  # diagonal of the leaves' block
    b: sparse.csr_matrix  # A[leaves, keep]
    c: sparse.csr_matrix  # A[keep, leaves]


def _independent_leaves(a: sparse.csr_matrix) -> np.ndarray:
    """A maximal independent set of a's graph (both directions, self-loops ignored),
    chosen greedily from the lowest degree."""
    pattern = a.copy()
    pattern.data = np.ones_like(pattern.data)
    pattern = (pattern + pattern.T).tocsr()
    pattern.setdiag(0)
    pattern.eliminate_zeros()
    degree = np.diff(pattern.indptr)
    blocked = np.zeros(a.shape[0], dtype=bool)
    leaf = np.zeros(a.shape[0], dtype=bool)
    ptr, idx = pattern.indptr, pattern.indices
    for v in np.argsort(degree, kind="stable"):
        if not blocked[v]:
            leaf[v] = True
            blocked[v] = True
            blocked[idx[ptr[v]:ptr[v + 1]]] = True
    return leaf


def _sampled_product(x: sparse.csr_matrix, y: sparse.csr_matrix | np.ndarray,
                     rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """(x @ y)[rows, cols], computed by blocks of rows of x."""
    out = np.zeros(len(rows))
    if len(rows) == 0:
        return out
    order = np.argsort(rows, kind="stable")
    sorted_rows = rows[order]
    step = max(1, CHUNK_CELLS // max(1, y.shape[1]))
    for lo in range(0, x.shape[0], step):
        hi = min(x.shape[0], lo + step)
        first, last = np.searchsorted(sorted_rows, [lo, hi])
        if first == last:
            continue
        block = x[lo:hi] @ y
        dense = block.toarray() if sparse.issparse(block) else np.asarray(block)
        pick = order[first:last]
        out[pick] = dense[rows[pick] - lo, cols[pick]]
    return out


def _eliminate(a: sparse.csr_matrix) -> tuple[list[_Level], sparse.csr_matrix]:
    """Levels of elimination and the dense core left over."""
    levels: list[_Level] = []
    while True:
        size = a.shape[0]
        if size <= DENSE_AT or a.nnz > DENSE_DENSITY * size * size:
            break
        leaf = _independent_leaves(a)
        if leaf.sum() < MIN_LEAVES * size:
            break
        leaves, keep = np.flatnonzero(leaf), np.flatnonzero(~leaf)
        d = a.diagonal()[leaves]
        rows_l = a[leaves]
        rows_k = a[keep]
        b = rows_l[:, keep].tocsr()
        c = rows_k[:, leaves].tocsr()
        levels.append(_Level(keep, leaves, d, b, c))
        a = (rows_k[:, keep] - c @ sparse.diags(1.0 / d) @ b).tocsr()
    return levels, a


def _solve(levels: list[_Level], core_inverse: np.ndarray, rhs: np.ndarray,
           transpose: bool) -> np.ndarray:
    """x with A x = rhs (A^T x = rhs if transpose), through the levels."""
    stack = []
    b = rhs
    for lv in levels:
        b_l = b[lv.leaves] / lv.d
        upper = lv.b.T if transpose else lv.c
        stack.append(b_l)
        b = b[lv.keep] - upper @ b_l
    x = (core_inverse.T if transpose else core_inverse) @ b
    for lv, b_l in zip(reversed(levels), reversed(stack), strict=True):
        lower = lv.c.T if transpose else lv.b
        full = np.empty(len(lv.keep) + len(lv.leaves))
        full[lv.keep] = x
        full[lv.leaves] = b_l - (lower @ x) / lv.d
        x = full
    return np.asarray(x, dtype=float)


def _inverse_diagonal(levels: list[_Level], core: sparse.csr_matrix, core_inverse: np.ndarray
                      ) -> np.ndarray:
    """diag(A^-1) by selected inversion back through the levels.

    With S = [[D, B], [C, S']] (leaves first) and Z' = S'^-1 known on the transposed pattern
    of S' and its diagonal: Z[c, l] = -(Z' C)[c, l] / d_l where B[l, c] != 0,
    Z[l, c] = -(B Z')[l, c] / d_l where C[c, l] != 0, and
    Z[l, l] = (1 - sum_c B[l, c] Z[c, l]) / d_l; every Z' entry these read is at a position
    eliminating l filled in S'.
    """
    z: sparse.csr_matrix | np.ndarray = core_inverse
    for lv in reversed(levels):
        n_keep, n_leaf = len(lv.keep), len(lv.leaves)
        b_coo, c_coo = lv.b.tocoo(), lv.c.tocoo()
        bl, bc, b_vals = b_coo.row, b_coo.col, b_coo.data  # B[l, c] != 0: Z[c, l] is needed
        cc, cl = c_coo.row, c_coo.col  # C[c, l] != 0: Z[l, c] is needed
        # (Z' C)[c, l] = (C^T Z'^T)[l, c]: rows of C^T are leaves.
        z_cl = -_sampled_product(lv.c.T.tocsr(), z.T if isinstance(z, np.ndarray)
                                 else z.T.tocsr(), bl, bc) / lv.d[bl]
        z_lc = -_sampled_product(lv.b, z, cl, cc) / lv.d[cl]
        z_ll = (1.0 - np.bincount(bl, weights=b_vals * z_cl, minlength=n_leaf)) / lv.d
        # Assemble Z on this level's numbering.
        if isinstance(z, np.ndarray):
            # Only the positions the next level can read: S'^T's pattern and the diagonal.
            kr, kc = (abs(core.T) + sparse.identity(n_keep)).nonzero()
            kv = z[kr, kc]
        else:
            zc = z.tocoo()
            kr, kc, kv = zc.row, zc.col, zc.data
        size = n_keep + n_leaf
        rows = np.concatenate([lv.keep[kr], lv.keep[bc], lv.leaves[cl], lv.leaves])
        cols = np.concatenate([lv.keep[kc], lv.leaves[bl], lv.keep[cc], lv.leaves])
        data = np.concatenate([kv, z_cl, z_lc, z_ll])
        z = sparse.csr_matrix((data, (rows, cols)), shape=(size, size))
    if isinstance(z, np.ndarray):
        return np.diagonal(z).copy()
    return np.asarray(z.diagonal())


def removal_quantities(q: sparse.csr_matrix, conv: np.ndarray
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """h = (I - Q)^-1 conv, N[0, :] and diag(N), N = (I - Q)^-1."""
    size = q.shape[0]
    a = (sparse.identity(size, format="csr") - q).tocsr()
    levels, core = _eliminate(a)
    core_inverse = np.linalg.inv(core.toarray()) if core.shape[0] else np.zeros((0, 0))
    h = _solve(levels, core_inverse, conv, transpose=False)
    e_start = np.zeros(size)
    e_start[0] = 1.0
    n_start = _solve(levels, core_inverse, e_start, transpose=True)
    for x, rhs, m in ((h, conv, a), (n_start, e_start, a.T)):
        residual = float(np.max(np.abs(m @ x - rhs))) if size else 0.0
        if not residual <= 1e-10:
            raise ArithmeticError(f"absorbing chain solve did not converge (residual "
                                  f"{residual:.2e})")
    return h, n_start, _inverse_diagonal(levels, core, core_inverse)
