"""Fused log-sum-exp (softmin) kernels and one-pass plan statistics.

Conventions are those of :mod:`otcore.backends._contract`: for shifted potentials ``h``,
``softmin_rows`` computes ``out_i = -eps log sum_j exp((h_j - C_ij) / eps)`` and
``softmin_cols`` the same reduction over ``i``. Internally everything is in units of
``z = (h - C) / eps`` and the kernels return ``-eps * LSE(z)``.

Two ways to shift the exponentials:

* **hinted** (the fast path): a previous output ``hint`` gives the shift
  ``sigma = -hint / eps``, so each entry costs one fused multiply-add and one
  :func:`~otcore.kernels.numba.vexp.vexp`, with no max pass. The sum is accepted when
  ``exp(-W) < sum < exp(W)`` (``W`` = 600 in float64, 60 in float32): then no term
  overflowed, and terms flushed to zero are below ``exp(-W - 87)`` relative to the sum,
  which rounding ignores anyway.
  Otherwise the row (column block) is recomputed exactly. Inside Sinkhorn the previous
  potentials are excellent hints, so the exact path runs only in the first iterations.
* **exact**: rows take a max pass and an exp-sum pass per tile (both from L1) merged
  with a running maximum; columns of a row-major matrix stream rows into per-column
  accumulators ``(max, sum)`` with the one-exp update ``e = exp(-|z - max|)``.

The result does not depend on the hint beyond rounding. All inner loops are free of
calls and branches, so they compile to packed AVX2 code.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from .cost import DENSE, TILE, cost_row
from .vexp import vexp

# Reassociation lets LLVM vectorize the sums. No "nnan"/"ninf": -inf is a valid input and
# inf is how an overflowing hinted sum is detected.
_FASTMATH = {"reassoc", "contract", "nsz", "arcp"}
#: Width of a column block in softmin_cols (its accumulators stay in L1).
_COL_BLOCK = 256


@njit(cache=True, fastmath=_FASTMATH)
def _tile_lse_exact(h, c, inv_eps, mx, s):
    """Merge the tile ``z_j = (h_j - c_j) / eps`` into the running ``(mx, s)``."""
    tmax = -np.inf
    for j in range(c.shape[0]):
        tmax = max(tmax, h[j] - c[j])
    tmax *= inv_eps
    if tmax == -np.inf:
        return mx, s
    if tmax > mx:
        s *= vexp(mx - tmax)
        mx = tmax
    acc = 0.0
    for j in range(c.shape[0]):
        acc += vexp((h[j] - c[j]) * inv_eps - mx)
    return mx, s + acc


@njit(cache=True, fastmath=_FASTMATH)
def _tile_sum_shifted(h, c, inv_eps, sigma):
    """``sum_j exp((h_j - c_j) / eps - sigma)`` (the hinted path)."""
    acc = 0.0
    for j in range(c.shape[0]):
        acc += vexp((h[j] - c[j]) * inv_eps - sigma)
    return acc


@njit(cache=True, fastmath=_FASTMATH)
def _tile_add_shifted(acc, z, c, inv_eps, sigma):
    """``acc_j += exp(z - c_j / eps - sigma_j)`` (a kernel of its own so that it vectorizes)."""
    for j in range(c.shape[0]):
        acc[j] += vexp(z - c[j] * inv_eps - sigma[j])


@njit(cache=True, fastmath=_FASTMATH)
def _tile_add_store(acc, z, w, c, inv_eps, sigma, cap, out):
    """``out_j = exp(min(z - c_j / eps - sigma_j, cap))`` and ``acc_j += w out_j``."""
    for j in range(c.shape[0]):
        e = vexp(min(z - c[j] * inv_eps - sigma[j], cap))
        out[j] = e
        acc[j] += w * e


@njit(cache=True, fastmath=_FASTMATH)
def _tile_plan_stats(col, hf_i, hg, c, inv_eps):
    """Add the plan entries of one row tile to ``col``; return their sum and ``<c, P>``."""
    row = 0.0
    cost = 0.0
    big = np.finfo(c.dtype).max  # +inf costs (forbidden pairs) have pij = 0: no 0 * inf
    for j in range(c.shape[0]):
        pij = vexp((hf_i + hg[j] - c[j]) * inv_eps)
        row += pij
        col[j] += pij
        cost += min(c[j], big) * pij
    return row, cost


@njit(cache=True)
def _trusted(s, like):
    """Is a hinted sum safe? |log s| < 600 for float64 data ``like``, < 60 for float32."""
    window = 600.0 if like.itemsize == 8 else 60.0
    return np.exp(-window) < s < np.exp(window)


@njit(cache=True, fastmath=_FASTMATH)
def _row_softmin(X, YT, kind, p, i, h, inv_eps, sigma, hinted, tile, buf):
    """``LSE_j (h_j - C_ij) / eps`` for one row: hinted with shift ``sigma``, else exact."""
    m = h.shape[0]
    if hinted:
        s = 0.0
        for j0 in range(0, m, tile):
            j1 = min(j0 + tile, m)
            c = cost_row(X, YT, kind, p, i, j0, j1, buf)
            s += _tile_sum_shifted(h[j0:j1], c, inv_eps, sigma)
        if _trusted(s, buf):
            return sigma + np.log(s)
    mx, s = -np.inf, 0.0
    for j0 in range(0, m, tile):
        j1 = min(j0 + tile, m)
        c = cost_row(X, YT, kind, p, i, j0, j1, buf)
        mx, s = _tile_lse_exact(h[j0:j1], c, inv_eps, mx, s)
    return mx + np.log(s)


@njit(parallel=True, cache=True, fastmath=_FASTMATH)
def softmin_rows(X, YT, kind, p, h, eps, hint, out, nthreads):
    """``out_i = -eps log sum_j exp((h_j - C_ij) / eps)`` for a dense or on-the-fly cost.

    ``hint`` is an estimate of ``out`` (length n) or empty (exact path everywhere).
    ``out`` may be the same array as ``hint``.
    """
    n = out.shape[0]
    inv_eps = 1.0 / eps
    tile = h.shape[0] if kind == DENSE else TILE
    hinted = hint.shape[0] == n
    nblocks = min(n, 8 * nthreads)
    for b in prange(nblocks):
        buf = np.empty(tile, dtype=out.dtype)
        for i in range(b * n // nblocks, (b + 1) * n // nblocks):
            sigma = -hint[i] * inv_eps if hinted else 0.0
            out[i] = -eps * _row_softmin(X, YT, kind, p, i, h, inv_eps, sigma, hinted, tile, buf)


@njit(cache=True)
def finish_columns(colsum, sigma_g, tau_g, eps, g_out):
    """``g_out_j = -tau_g eps (sigma_j + log s_j)`` with ``s_j`` the sum over the per-thread
    rows of ``colsum`` (column sums shifted by ``sigma``); False when some ``s_j`` is
    outside the trusted window (``g_out`` is then incomplete for the caller to redo)."""
    ok = True
    for j in range(g_out.shape[0]):
        s = colsum[0, j]
        for b in range(1, colsum.shape[0]):
            s += colsum[b, j]
        ok = ok and _trusted(s, g_out)
        g_out[j] = -tau_g * eps * (sigma_g[j] + np.log(s))
    return ok


@njit(parallel=True, cache=True, fastmath=_FASTMATH)
def sinkhorn_sweep(X, YT, kind, p, hg, la_eps, eps, tau_f, tau_g, f, g, f_out, g_out, K,
                   nthreads):
    """One alternating Sinkhorn iteration in a single pass over the cost.

    ``f_out = tau_f * softmin_rows(hg)`` (hint ``f`` for the softmin itself), then, while
    row ``i`` is still in cache, its contribution to ``softmin_cols(f_out + la_eps)`` is
    added to per-thread column sums shifted by the hint ``g``, and
    ``g_out = tau_g * softmin_cols(...)``. The factors ``tau = rho / (rho + eps)`` are
    those of unbalanced OT (1 for an exact marginal). Returns False when some column sum
    is outside the trusted window; ``g_out`` is then incomplete and the caller recomputes
    it exactly.

    ``K`` is either empty or, for a dense cost, an ``(n, m)`` array that receives the
    Gibbs kernel at ``(f_out, g)``: ``K_ij = exp((f_out_i + g_j - C_ij) / eps)``
    (arguments capped at the largest finite exponential, below it exact), for
    :mod:`~otcore.kernels.numba.gibbs`. Storing it costs no extra exponential.
    """
    n, m = f.shape[0], g.shape[0]
    inv_eps = 1.0 / eps
    tile = m if kind == DENSE else TILE
    nblocks = min(n, nthreads)
    colsum = np.zeros((nblocks, m), dtype=f.dtype)
    sigma_g = -g * inv_eps
    store = K.shape[0] == n
    cap = 709.0 if f.itemsize == 8 else 88.0
    for b in prange(nblocks):
        buf = np.empty(tile, dtype=f.dtype)
        cs = colsum[b]
        for i in range(b * n // nblocks, (b + 1) * n // nblocks):
            fi = -tau_f * eps * _row_softmin(X, YT, kind, p, i, hg, inv_eps, -f[i] * inv_eps,
                                             True, tile, buf)
            f_out[i] = fi
            if store:  # dense: one tile, the whole row
                _tile_add_store(cs, fi * inv_eps, np.exp(la_eps[i] * inv_eps), X[i], inv_eps,
                                sigma_g, cap, K[i])
                continue
            zi = (fi + la_eps[i]) * inv_eps
            if zi == -np.inf:
                continue
            for j0 in range(0, m, tile):
                j1 = min(j0 + tile, m)
                c = cost_row(X, YT, kind, p, i, j0, j1, buf)
                _tile_add_shifted(cs[j0:j1], zi, c, inv_eps, sigma_g[j0:j1])
    return finish_columns(colsum, sigma_g, tau_g, eps, g_out)


@njit(parallel=True, cache=True, fastmath=_FASTMATH)
def softmin_cols(C, h, eps, hint, out):
    """``out_j = -eps log sum_i exp((h_i - C_ij) / eps)`` for a row-major dense ``C``.

    ``hint`` is an estimate of ``out`` (length m) or empty; ``out`` may alias ``hint``.
    """
    n, m = C.shape
    inv_eps = 1.0 / eps
    hinted = hint.shape[0] == m
    for b in prange((m + _COL_BLOCK - 1) // _COL_BLOCK):
        j0 = b * _COL_BLOCK
        w = min(_COL_BLOCK, m - j0)
        s = np.zeros(w, dtype=out.dtype)
        if hinted:
            sigma = np.empty(w, dtype=out.dtype)
            for jj in range(w):
                sigma[jj] = -hint[j0 + jj] * inv_eps
            n4 = n - n % 4
            for i in range(0, n4, 4):  # four rows per sweep: fewer loads/stores of s
                h0, h1 = h[i] * inv_eps, h[i + 1] * inv_eps
                h2, h3 = h[i + 2] * inv_eps, h[i + 3] * inv_eps
                r0, r1 = C[i, j0 : j0 + w], C[i + 1, j0 : j0 + w]
                r2, r3 = C[i + 2, j0 : j0 + w], C[i + 3, j0 : j0 + w]
                for jj in range(w):
                    sg = sigma[jj]
                    s[jj] += (vexp(h0 - r0[jj] * inv_eps - sg) + vexp(h1 - r1[jj] * inv_eps - sg)
                              + vexp(h2 - r2[jj] * inv_eps - sg)
                              + vexp(h3 - r3[jj] * inv_eps - sg))
            for i in range(n4, n):
                hi = h[i] * inv_eps
                row = C[i, j0 : j0 + w]
                for jj in range(w):
                    s[jj] += vexp(hi - row[jj] * inv_eps - sigma[jj])
            ok = True
            for jj in range(w):
                ok = ok and _trusted(s[jj], out)
            if ok:
                for jj in range(w):
                    out[j0 + jj] = -eps * (sigma[jj] + np.log(s[jj]))
                continue
            s[:] = 0.0
        # the most negative finite start: -inf entries (+inf costs) then add exactly 0
        mx = np.full(w, np.finfo(out.dtype).min, dtype=out.dtype)
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
                r, k = _tile_plan_stats(col[j0:j1], fi, hg[j0:j1], c, inv_eps)
                acc_row += r
                acc_cost += k
            rows[i] = acc_row
        costs[b] = acc_cost
    return rows, cols.sum(axis=0), costs.sum()
