"""Sinkhorn sweeps through a cached Gibbs kernel (dense costs).

Near convergence the Sinkhorn potentials move by small multiples of ``eps`` per
iteration. Given the kernel at reference potentials ``(f0, g0)``,

.. math::

    K_{ij} = \\exp((f^0_i + g^0_j - C_{ij}) / \\varepsilon),

both updates of an alternating iteration are matrix-vector products with ``K``, with no
exponential per entry:

* rows: ``r_i = sum_j K_ij v_j`` with ``v_j = b_j exp((g_j - g0_j) / eps)``, then
  ``f'_i = f0_i - eps log r_i`` (the log-domain row update, exactly rewritten);
* columns: ``c_j = sum_i K_ij a_i / r_i``, then ``g'_j = g0_j - eps log c_j``.

The kernel is stored by :func:`otcore.kernels.numba.softmin.sinkhorn_sweep` (at no extra
exponential) and reused while ``|log r_i|`` and ``|log c_j|`` stay within ``window``; the
caller also keeps ``|g - g0| <= window eps``. Within that window every product is far
from overflow, and the kernel entries that underflowed when it was stored are below
``exp(-700 + 2 window)`` relative to the sums they would join, far below rounding.
Everything is float64.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

# Reassociation lets LLVM vectorize the sums (no inf or nan reaches them: see above).
_FASTMATH = {"reassoc", "contract", "nsz", "arcp"}


@njit(cache=True, fastmath=_FASTMATH)
def _row_dot(row, v):
    acc = 0.0
    for j in range(row.shape[0]):
        acc += row[j] * v[j]
    return acc


@njit(cache=True, fastmath=_FASTMATH)
def _add_scaled(acc, row, w):
    for j in range(row.shape[0]):
        acc[j] += row[j] * w


@njit(cache=True, fastmath=_FASTMATH)
def _add_scaled4(acc, r0, r1, r2, r3, w0, w1, w2, w3):
    for j in range(acc.shape[0]):
        acc[j] += (r0[j] * w0 + r1[j] * w1) + (r2[j] * w2 + r3[j] * w3)


@njit(parallel=True, cache=True, fastmath=_FASTMATH)
def scaled_sweep(K, v, a, f0, g0, eps, ta, tb, window, f_out, g_out, nthreads):
    """One alternating Sinkhorn iteration through the cached kernel ``K`` (module docs).

    ``v`` holds ``b_j exp((g_j - g0_j) / eps)`` (float64). ``ta``, ``tb`` are the factors
    ``rho / (rho + eps)`` of unbalanced OT (1 for exact marginals): then
    ``f'_i = ta (f0_i - eps log r_i)``, the column weights become
    ``a_i exp((f'_i - f0_i) / eps) = a_i exp(-(1 - ta) f0_i / eps) r_i^(-ta)``, of which the
    caller passes the first two factors as ``a`` (the source weights when ``ta = 1``), and
    ``g'_j = tb (g0_j - eps log c_j)``. Returns False, with ``f_out``/``g_out``
    incomplete, when some ``|log r_i|`` or ``|log c_j|`` leaves ``window``: the caller
    then rebuilds the kernel.
    """
    n, m = K.shape
    lo, hi = np.exp(-window), np.exp(window)
    nblocks = min(n, nthreads)
    colsum = np.zeros((nblocks, m), dtype=np.float64)
    bad = np.zeros(nblocks, dtype=np.bool_)
    for b in prange(nblocks):
        cs = colsum[b]
        i0, i1 = b * n // nblocks, (b + 1) * n // nblocks
        w = np.empty(4)
        for i in range(i0, i1, 4):  # four rows at a time: fewer loads/stores of cs
            rows = min(4, i1 - i)
            for k in range(rows):
                r = _row_dot(K[i + k], v)
                if not lo < r < hi:
                    bad[b] = True
                    r = 1.0
                f_out[i + k] = ta * (f0[i + k] - eps * np.log(r))
                w[k] = a[i + k] / r if ta == 1.0 else a[i + k] * np.exp(-ta * np.log(r))
            if rows == 4:
                _add_scaled4(cs, K[i], K[i + 1], K[i + 2], K[i + 3], w[0], w[1], w[2], w[3])
            else:
                for k in range(rows):
                    _add_scaled(cs, K[i + k], w[k])
    if bad.any():
        return False
    for j in range(m):
        c = colsum[0, j]
        for b in range(1, nblocks):
            c += colsum[b, j]
        if not lo < c < hi:
            return False
        g_out[j] = tb * (g0[j] - eps * np.log(c))
    return True
