"""Dense plan with its marginals, and its sparsification to CSR (the SNS kernels).

:func:`plan_marginals` writes the plan ``P_ij = exp((hf_i + hg_j - C_ij) / eps)`` into a
caller-owned ``n x m`` buffer and returns both marginals, in one pass over the cost
(dense, or evaluated on the fly for a point cloud).

:func:`sparsify_plan` keeps the entries of a dense plan whose *normalized* value
``q_ij = P_ij / sqrt(r_i c_j)`` (``r``, ``c`` the marginals) is at least a threshold, and
returns them in CSR form. Normalizing by the marginals measures an entry against the
diagonal of the Hessian it sits next to, so rows and columns of small mass keep their
structure. The threshold is chosen for a target number of entries from a histogram of the
float bits of ``q``: the key ``bits >> 50`` (exponent and two mantissa bits) is monotone in
``q > 0``, so walking the histogram down from the largest key finds the lowest key whose
entries, together with all larger ones, reach the target. The threshold is therefore the
target-th largest ``q`` truncated to two mantissa bits (``2**e * k / 4``, ``k = 4..7``),
and the result may hold a few more entries than asked (those tied with it at that
resolution). All three passes (histogram, row counts, fill) recompute ``q`` with the same
arithmetic, so they agree exactly; assembly is ``O(nnz)`` after ``O(n m)`` comparisons.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from .cost import DENSE, TILE, cost_row
from .vexp import vexp

_FASTMATH = {"reassoc", "contract", "nsz", "arcp"}
#: Bits dropped from a positive float64 to form its histogram key (52 mantissa bits - 2).
KEY_SHIFT = 50
#: Number of distinct keys (11 exponent bits + 2 mantissa bits).
NKEYS = 1 << 13


@njit(parallel=True, cache=True, fastmath=_FASTMATH)
def plan_marginals(X, YT, kind, p, hf, hg, eps, out, nthreads):
    """Write ``P_ij = exp((hf_i + hg_j - C_ij) / eps)`` into ``out``; return row and column
    sums. ``-inf`` entries of ``hf``/``hg`` give zero rows/columns; overflow gives ``inf``.
    """
    n, m = hf.shape[0], hg.shape[0]
    inv_eps = 1.0 / eps
    tile = m if kind == DENSE else TILE
    nblocks = min(n, nthreads)
    rows = np.zeros(n, dtype=hf.dtype)
    cols = np.zeros((nblocks, m), dtype=hf.dtype)
    for b in prange(nblocks):
        buf = np.empty(tile, dtype=hf.dtype)
        for i in range(b * n // nblocks, (b + 1) * n // nblocks):
            fi = hf[i]
            acc = 0.0
            for j0 in range(0, m, tile):
                j1 = min(j0 + tile, m)
                c = cost_row(X, YT, kind, p, i, j0, j1, buf)
                # slices (rather than offset indexing) let the loop vectorize
                h, row, col = hg[j0:j1], out[i, j0:j1], cols[b, j0:j1]
                for jj in range(j1 - j0):
                    pij = vexp((fi + h[jj] - c[jj]) * inv_eps)
                    row[jj] = pij
                    acc += pij
                    col[jj] += pij
            rows[i] = acc
    return rows, cols.sum(axis=0)


@njit(cache=True)
def _inv_sqrt(v):
    """``1 / sqrt(v)`` where ``v > 0`` (finite), 0 elsewhere, in float64."""
    out = np.zeros(v.shape[0], dtype=np.float64)
    for i in range(v.shape[0]):
        if v[i] > 0 and v[i] < np.inf:
            out[i] = 1.0 / np.sqrt(np.float64(v[i]))
    return out


@njit(cache=True)
def _normalized_row(P, i, si, isc, q):
    """``q_j = P_ij / sqrt(r_i c_j)`` for row ``i``, in float64 (the same arithmetic in
    every pass, so that all passes agree on which entries pass the threshold)."""
    for j in range(q.shape[0]):
        q[j] = np.float64(P[i, j]) * si * isc[j]


@njit(parallel=True, cache=True)
def sparsify_plan(P, rows, cols, nnz, nthreads):
    """Entries of the dense plan ``P`` with the largest normalized values, in CSR form.

    Keeps the entries with ``P_ij / sqrt(rows_i cols_j) >= theta > 0``, ``theta`` the
    ``nnz``-th largest normalized value truncated to two mantissa bits (see the module
    notes; all positive entries if there are fewer than ``nnz``). Returns
    ``indptr, indices, data, theta``.
    """
    n, m = P.shape
    isr, isc = _inv_sqrt(rows), _inv_sqrt(cols)
    nblocks = min(n, nthreads)
    hist = np.zeros((nblocks, NKEYS), dtype=np.int64)
    for b in prange(nblocks):
        q = np.empty(m, dtype=np.float64)
        bits = q.view(np.int64)
        h = hist[b]
        for i in range(b * n // nblocks, (b + 1) * n // nblocks):
            _normalized_row(P, i, isr[i], isc, q)
            for j in range(m):  # no branch: zeros land in key 0, which is never kept
                h[bits[j] >> KEY_SHIFT] += 1
    total = hist.sum(axis=0)
    kth, acc = 1, 0
    for k in range(NKEYS - 1, 0, -1):
        acc += total[k]
        kth = k
        if acc >= nnz:
            break
    # keys are monotone in q >= 0 and theta has no bits below the key: q >= theta is
    # exactly key(q) >= kth
    theta = np.full(1, kth << KEY_SHIFT, dtype=np.int64).view(np.float64)[0]

    counts = np.zeros(n + 1, dtype=np.int64)
    for b in prange(nblocks):
        q = np.empty(m, dtype=np.float64)
        for i in range(b * n // nblocks, (b + 1) * n // nblocks):
            _normalized_row(P, i, isr[i], isc, q)
            cnt = 0
            for j in range(m):
                cnt += q[j] >= theta
            counts[i + 1] = cnt
    indptr = np.cumsum(counts)
    indices = np.empty(indptr[n], dtype=np.int64)
    data = np.empty(indptr[n], dtype=P.dtype)
    for b in prange(nblocks):
        q = np.empty(m, dtype=np.float64)
        for i in range(b * n // nblocks, (b + 1) * n // nblocks):
            _normalized_row(P, i, isr[i], isc, q)
            k = indptr[i]
            for j in range(m):
                if q[j] >= theta:
                    indices[k] = j
                    data[k] = P[i, j]
                    k += 1
    return indptr, indices, data, theta
