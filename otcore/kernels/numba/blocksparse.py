"""Block-sparse (truncated) kernels on clustered point clouds: the softmin, one fused
Sinkhorn sweep, plan statistics and plan products over the kept pairs of clusters only.

Both clouds are sorted by cluster, so a cluster is a contiguous range of points. The kept
pairs are given per *row cluster* as runs of contiguous columns: row ``i`` (of cluster
``rc[i]``) interacts with the columns ``lo[r] <= j < hi[r]`` for
``ptr[rc[i]] <= r < ptr[rc[i] + 1]``; every other pair is absent (its plan entry is 0,
as if its cost were ``+inf``). Adjacent kept clusters merge into one run, so the inner
loops stay long. Reductions over the columns of the plan use the same kernels on the
swapped clouds and the transposed runs (every ground cost is symmetric).

Conventions are those of :mod:`otcore.kernels.numba.softmin` (hinted and exact
log-sum-exp) and :mod:`otcore.kernels.numba.apply`; the tiles are the same helpers, so a
row whose runs cover every column gives the online kernels' results up to rounding.
Rows are split into ``8 * nthreads`` (softmin) or ``nthreads`` (sweeps with per-thread
column sums) blocks of consecutive rows, which balances work better than one block per
cluster.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from .apply import _dot64, _plan_tile
from .cost import TILE, cost_row
from .softmin import (
    _tile_add_shifted,
    _tile_lse_exact,
    _tile_plan_stats,
    _tile_sum_shifted,
    _trusted,
    finish_columns,
)

_FASTMATH = {"reassoc", "contract", "nsz", "arcp"}


@njit(cache=True, fastmath=_FASTMATH)
def _runs_lse(X, YT, kind, p, i, lo, hi, h, inv_eps, sigma, hinted, buf):
    """``LSE_j (h_j - C_ij) / eps`` over the runs ``lo[r] <= j < hi[r]`` (hinted with the
    shift ``sigma``, else exact); ``-inf`` when there are no kept columns."""
    if hinted:
        s = 0.0
        for r in range(lo.shape[0]):
            for j0 in range(lo[r], hi[r], TILE):
                j1 = min(j0 + TILE, hi[r])
                c = cost_row(X, YT, kind, p, i, j0, j1, buf)
                s += _tile_sum_shifted(h[j0:j1], c, inv_eps, sigma)
        if _trusted(s, buf):
            return sigma + np.log(s)
    mx, s = -np.inf, 0.0
    for r in range(lo.shape[0]):
        for j0 in range(lo[r], hi[r], TILE):
            j1 = min(j0 + TILE, hi[r])
            c = cost_row(X, YT, kind, p, i, j0, j1, buf)
            mx, s = _tile_lse_exact(h[j0:j1], c, inv_eps, mx, s)
    if s == 0.0:
        return -np.inf
    return mx + np.log(s)


@njit(parallel=True, cache=True, fastmath=_FASTMATH)
def softmin_runs(X, YT, kind, p, rc, ptr, lo, hi, h, eps, hint, out, nthreads):
    """``out_i = -eps log sum_{j kept} exp((h_j - C_ij) / eps)`` (``+inf`` for a row
    without kept pairs). ``hint`` estimates ``out`` (length n) or is empty."""
    n = out.shape[0]
    inv_eps = 1.0 / eps
    hinted = hint.shape[0] == n
    nblocks = min(n, 8 * nthreads)
    for b in prange(nblocks):
        buf = np.empty(TILE, dtype=out.dtype)
        for i in range(b * n // nblocks, (b + 1) * n // nblocks):
            r0, r1 = ptr[rc[i]], ptr[rc[i] + 1]
            sigma = -hint[i] * inv_eps if hinted else 0.0
            out[i] = -eps * _runs_lse(X, YT, kind, p, i, lo[r0:r1], hi[r0:r1], h, inv_eps,
                                      sigma, hinted, buf)


@njit(parallel=True, cache=True, fastmath=_FASTMATH)
def sweep_runs(X, YT, kind, p, rc, ptr, lo, hi, hg, la_eps, eps, tau_f, tau_g, f, g,
               f_out, g_out, nthreads):
    """One alternating Sinkhorn iteration over the kept pairs, in one pass over the rows
    (the block-sparse :func:`~otcore.kernels.numba.softmin.sinkhorn_sweep`):
    ``f_out = tau_f * softmin_runs(hg)`` with hint ``f``, and each row's contribution to
    the column sums, shifted by the hint ``g``, gives ``g_out = tau_g * softmin over the
    rows of (f_out + la_eps)``. Returns False when a column sum is outside the trusted
    window (``g_out`` is then incomplete: the caller recomputes it exactly)."""
    n, m = f.shape[0], g.shape[0]
    inv_eps = 1.0 / eps
    nblocks = min(n, nthreads)
    colsum = np.zeros((nblocks, m), dtype=f.dtype)
    sigma_g = -g * inv_eps
    for b in prange(nblocks):
        buf = np.empty(TILE, dtype=f.dtype)
        cs = colsum[b]
        for i in range(b * n // nblocks, (b + 1) * n // nblocks):
            r0, r1 = ptr[rc[i]], ptr[rc[i] + 1]
            fi = -tau_f * eps * _runs_lse(X, YT, kind, p, i, lo[r0:r1], hi[r0:r1], hg,
                                          inv_eps, -f[i] * inv_eps, True, buf)
            f_out[i] = fi
            zi = (fi + la_eps[i]) * inv_eps
            if zi == -np.inf:
                continue
            for r in range(r0, r1):
                for j0 in range(lo[r], hi[r], TILE):
                    j1 = min(j0 + TILE, hi[r])
                    c = cost_row(X, YT, kind, p, i, j0, j1, buf)
                    _tile_add_shifted(cs[j0:j1], zi, c, inv_eps, sigma_g[j0:j1])
    return finish_columns(colsum, sigma_g, tau_g, eps, g_out)


@njit(parallel=True, cache=True, fastmath=_FASTMATH)
def plan_stats_runs(X, YT, kind, p, rc, ptr, lo, hi, hf, hg, eps, nthreads):
    """Row sums, column sums and ``<C, P>`` of the plan restricted to the kept pairs."""
    n, m = hf.shape[0], hg.shape[0]
    inv_eps = 1.0 / eps
    nblocks = min(n, nthreads)
    rows = np.zeros(n, dtype=hf.dtype)
    cols = np.zeros((nblocks, m), dtype=hf.dtype)
    costs = np.zeros(nblocks, dtype=np.float64)
    for b in prange(nblocks):
        buf = np.empty(TILE, dtype=hf.dtype)
        col = cols[b]
        acc_cost = 0.0
        for i in range(b * n // nblocks, (b + 1) * n // nblocks):
            acc_row = 0.0
            for r in range(ptr[rc[i]], ptr[rc[i] + 1]):
                for j0 in range(lo[r], hi[r], TILE):
                    j1 = min(j0 + TILE, hi[r])
                    c = cost_row(X, YT, kind, p, i, j0, j1, buf)
                    s, k = _tile_plan_stats(col[j0:j1], hf[i], hg[j0:j1], c, inv_eps)
                    acc_row += s
                    acc_cost += k
            rows[i] = acc_row
        costs[b] = acc_cost
    return rows, cols.sum(axis=0), costs.sum()


@njit(parallel=True, cache=True, fastmath=_FASTMATH)
def apply_runs(X, YT, kind, p, rc, ptr, lo, hi, h1, h2, eps, VT, out, nthreads):
    """``out[i, k] = sum_{j kept} P_ij VT[k, j]``, ``P_ij = exp((h1_i + h2_j - C_ij) / eps)``,
    accumulated in float64 (``VT`` is ``(K, m)``, ``out`` is ``(n, K)``)."""
    n = h1.shape[0]
    nk = VT.shape[0]
    inv_eps = 1.0 / eps
    nblocks = min(n, 8 * nthreads)
    for b in prange(nblocks):
        buf = np.empty(TILE, dtype=out.dtype)
        w = np.empty(TILE, dtype=out.dtype)
        acc = np.empty(nk, dtype=np.float64)
        for i in range(b * n // nblocks, (b + 1) * n // nblocks):
            acc[:] = 0.0
            if h1[i] != -np.inf:
                for r in range(ptr[rc[i]], ptr[rc[i] + 1]):
                    for j0 in range(lo[r], hi[r], TILE):
                        j1 = min(j0 + TILE, hi[r])
                        c = cost_row(X, YT, kind, p, i, j0, j1, buf)
                        wt = w[: j1 - j0]
                        _plan_tile(wt, h1[i], h2[j0:j1], c, inv_eps)
                        for k in range(nk):
                            acc[k] += _dot64(wt, VT[k, j0:j1])
            for k in range(nk):
                out[i, k] = acc[k]
