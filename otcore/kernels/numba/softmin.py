"""Fused log-sum-exp (softmin) kernels and one-pass plan statistics.

Conventions are those of :mod:`otcore.backends._base`: for shifted potentials ``h``,
``softmin_rows`` computes ``out_i = -eps log sum_j exp((h_j - C_ij) / eps)`` and
``softmin_cols`` the same reduction over ``i``. ``C`` is read once per call.

Rows reduce contiguous memory: each tile of a row is reduced with a max pass and an
exp-sum pass that both hit L1, and tiles are merged with a running maximum (one scalar
exp per tile). Columns of a row-major matrix are reduced by streaming rows into per-column
accumulators ``(max, sum)`` with the one-exp update ``e = exp(-|v - max|)``: if ``v`` is
the new maximum the old sum is rescaled by ``e`` and 1 is added, otherwise ``e`` is
added. Both loops are free of calls, so :func:`~otcore.kernels.numba.vexp.vexp`
vectorizes.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from .cost import DENSE, TILE, cost_row
from .vexp import vexp

# Reassociation lets LLVM vectorize the sums; no "nnan"/"ninf": -inf is a valid input.
_FASTMATH = {"reassoc", "contract", "nsz", "arcp"}
#: Width of a column block in softmin_cols (its accumulators stay in L1).
_COL_BLOCK = 256


@njit(cache=True, fastmath=_FASTMATH)
def _tile_lse(h, c, inv_eps, mx, s):
    """Merge ``sum_j exp((h_j - c_j) / eps)`` into the running ``(mx, s)`` (mx in h units)."""
    tmax = -np.inf
    for j in range(c.shape[0]):
        tmax = max(tmax, h[j] - c[j])
    if tmax == -np.inf:
        return mx, s
    if tmax > mx:
        s *= vexp((mx - tmax) * inv_eps)
        mx = tmax
    acc = 0.0
    for j in range(c.shape[0]):
        acc += vexp((h[j] - c[j] - mx) * inv_eps)
    return mx, s + acc


@njit(parallel=True, cache=True, fastmath=_FASTMATH)
def softmin_rows(X, YT, kind, p, h, eps, out, nthreads):
    """``out_i = -eps log sum_j exp((h_j - C_ij) / eps)`` for a dense or on-the-fly cost."""
    n, m = out.shape[0], h.shape[0]
    inv_eps = 1.0 / eps
    tile = m if kind == DENSE else TILE
    nblocks = min(n, 8 * nthreads)
    for b in prange(nblocks):
        buf = np.empty(tile, dtype=out.dtype)
        for i in range(b * n // nblocks, (b + 1) * n // nblocks):
            mx, s = -np.inf, 0.0
            for j0 in range(0, m, tile):
                j1 = min(j0 + tile, m)
                c = cost_row(X, YT, kind, p, i, j0, j1, buf)
                mx, s = _tile_lse(h[j0:j1], c, inv_eps, mx, s)
            out[i] = -mx - eps * np.log(s)


@njit(parallel=True, cache=True, fastmath=_FASTMATH)
def softmin_cols(C, h, eps, out):
    """``out_j = -eps log sum_i exp((h_i - C_ij) / eps)`` for a row-major dense ``C``."""
    n, m = C.shape
    inv_eps = 1.0 / eps
    for b in prange((m + _COL_BLOCK - 1) // _COL_BLOCK):
        j0 = b * _COL_BLOCK
        w = min(_COL_BLOCK, m - j0)
        mx = np.full(w, -np.inf, dtype=out.dtype)  # running max of (h_i - C_ij) / eps
        s = np.zeros(w, dtype=out.dtype)
        for i in range(n):
            hi = h[i] * inv_eps
            if hi == -np.inf:
                continue
            row = C[i, j0 : j0 + w]
            for jj in range(w):
                v = hi - row[jj] * inv_eps
                d = v - mx[jj]
                e = vexp(-np.abs(d))
                bigger = d > 0
                s[jj] = s[jj] * e + 1.0 if bigger else s[jj] + e
                mx[jj] = v if bigger else mx[jj]
        for jj in range(w):
            out[j0 + jj] = -eps * (mx[jj] + np.log(s[jj]))


@njit(parallel=True, cache=True, fastmath=_FASTMATH)
def plan_stats(X, YT, kind, p, hf, hg, eps, nthreads):
    """Row sums, column sums and ``<C, P>`` of ``P_ij = exp((hf_i + hg_j - C_ij) / eps)``.

    One pass over the cost; each thread block keeps its own column sums, added at the end.
    """
    n, m = hf.shape[0], hg.shape[0]
    inv_eps = 1.0 / eps
    tile = m if kind == DENSE else TILE
    nblocks = min(n, nthreads)
    rows = np.zeros(n, dtype=hf.dtype)
    cols = np.zeros((nblocks, m), dtype=hf.dtype)
    costs = np.zeros(nblocks, dtype=np.float64)
    for b in prange(nblocks):
        buf = np.empty(tile, dtype=hf.dtype)
        col = cols[b]
        acc_cost = 0.0
        for i in range(b * n // nblocks, (b + 1) * n // nblocks):
            fi = hf[i]
            acc_row = 0.0
            for j0 in range(0, m, tile):
                j1 = min(j0 + tile, m)
                c = cost_row(X, YT, kind, p, i, j0, j1, buf)
                for jj in range(j1 - j0):
                    pij = vexp((fi + hg[j0 + jj] - c[jj]) * inv_eps)
                    acc_row += pij
                    col[j0 + jj] += pij
                    acc_cost += c[jj] * pij
            rows[i] = acc_row
        costs[b] = acc_cost
    return rows, cols.sum(axis=0), costs.sum()
