"""Kernels over a batch of problems: one parallel loop over (problem, row) pairs.

Problem ``k`` has the cost ``X[src]`` (dense, ``kind == DENSE``) or the clouds
``X[src]``, ``YT[src]`` (on the fly), with ``src = 0`` when the batch shares one cost
(``X.shape[0] == 1``) and ``src = k`` otherwise. The conventions are those of
:mod:`otcore.kernels.numba.softmin`, applied to each problem; reductions over the other
axis take the transposed data (``C^T`` stacked, or the clouds swapped), so both axes
stream contiguous rows.

Only the problems listed in ``active`` are computed, so that converged problems leave
the loop; work is spread over threads by (problem, row) pairs, which keeps every core
busy for many small problems as for a few large ones.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from .cost import DENSE, TILE, cost_row
from .gibbs import _add_scaled, _row_dot
from .softmin import _FASTMATH, _row_softmin, _tile_plan_stats

__all__ = ["batch_plan_stats", "batch_scaled_sweep", "batch_softmin_rows", "in_window"]


@njit(parallel=True, cache=True, fastmath=_FASTMATH)
def batch_softmin_rows(X, YT, kind, p, H, eps, hint, active, out, nthreads):
    """``out[k, i] = -eps log sum_j exp((H[k, j] - C^k_ij) / eps)`` for ``k`` in ``active``.

    ``hint`` (same shape as ``out``) estimates the result and serves as the log-sum-exp
    shift (rows whose shifted sum leaves the trusted window are recomputed exactly);
    rows of problems not in ``active`` are left untouched.
    """
    n = out.shape[1]
    m = H.shape[1]
    inv_eps = 1.0 / eps
    tile = m if kind == DENSE else TILE
    stride = 0 if X.shape[0] == 1 else 1  # a shared cost: every problem reads X[0]
    total = active.shape[0] * n
    nblocks = min(total, 8 * nthreads)
    for blk in prange(nblocks):
        buf = np.empty(tile, dtype=out.dtype)
        for t in range(blk * total // nblocks, (blk + 1) * total // nblocks):
            q = t // n
            i = t - q * n
            k = active[q]
            src = k * stride
            out[k, i] = -eps * _row_softmin(X[src], YT[src], kind, p, i, H[k], inv_eps,
                                            -hint[k, i] * inv_eps, True, tile, buf)


@njit(parallel=True, cache=True, fastmath=_FASTMATH)
def batch_plan_stats(X, YT, kind, p, HF, HG, eps, rows, cols, cost):
    """Row sums, column sums and ``<C, P>`` of every problem's plan
    ``P^k_ij = exp((HF[k, i] + HG[k, j] - C^k_ij) / eps)``, into ``rows`` ``(B, n)``,
    ``cols`` ``(B, m)`` and ``cost`` ``(B,)``; one thread per problem."""
    B, n = HF.shape
    m = HG.shape[1]
    inv_eps = 1.0 / eps
    tile = m if kind == DENSE else TILE
    stride = 0 if X.shape[0] == 1 else 1  # a shared cost: every problem reads X[0]
    for k in prange(B):
        src = k * stride
        buf = np.empty(tile, dtype=HF.dtype)
        col = cols[k]
        col[:] = 0.0
        acc_cost = 0.0
        for i in range(n):
            acc_row = 0.0
            if HF[k, i] > -np.inf:
                for j0 in range(0, m, tile):
                    j1 = min(j0 + tile, m)
                    c = cost_row(X[src], YT[src], kind, p, i, j0, j1, buf)
                    r, s = _tile_plan_stats(col[j0:j1], HF[k, i], HG[k, j0:j1], c, inv_eps)
                    acc_row += r
                    acc_cost += s
            rows[k, i] = acc_row
        cost[k] = acc_cost


@njit(parallel=True, cache=True, fastmath=_FASTMATH)
def batch_scaled_sweep(K, V, A, F0, G0, eps, window, idx, F_out, G_out, ok):
    """One alternating iteration of problems ``idx`` through their cached Gibbs kernels
    ``K[k] = exp((F0[k, i] + G0[k, j] - C^k_ij) / eps)`` (see
    :mod:`otcore.kernels.numba.gibbs`): ``r = K[k] V[k]``, ``F_out[k] = F0[k] - eps log r``,
    ``c = K[k]^T (A[k] / r)``, ``G_out[k] = G0[k] - eps log c``, with ``V[k]`` holding
    ``b exp((g - G0[k]) / eps)``. ``ok[k]`` is False, with the rows of ``k`` incomplete,
    when some ``|log r_i|`` or ``|log c_j|`` leaves ``window``; one thread per problem."""
    n, m = K.shape[1], K.shape[2]
    lo, hi = np.exp(-window), np.exp(window)
    for q in prange(idx.shape[0]):
        k = idx[q]
        Kk = K[k]
        col = np.zeros(m, dtype=K.dtype)
        good = True
        for i in range(n):
            r = _row_dot(Kk[i], V[k])
            if not lo < r < hi:
                good = False
                break
            F_out[k, i] = F0[k, i] - eps * np.log(r)
            _add_scaled(col, Kk[i], A[k, i] / r)
        if good:
            for j in range(m):
                if not lo < col[j] < hi:
                    good = False
                    break
                G_out[k, j] = G0[k, j] - eps * np.log(col[j])
        ok[k] = good


@njit(cache=True, fastmath=_FASTMATH)
def in_window(S, W, lo, hi):
    """Whether ``lo <= S[k, i] <= hi`` wherever ``W[k, i] > 0`` (a NaN fails); a
    branch-free pass over each row, stopping after the first row with an entry outside."""
    for k in range(S.shape[0]):
        bad = 0
        for i in range(S.shape[1]):
            bad += (W[k, i] > 0) & ~(lo <= S[k, i] <= hi)
        if bad:
            return False
    return True
