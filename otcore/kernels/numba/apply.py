"""Products of the entropic plan with vectors, without forming the plan.

The plan of shifted potentials ``(h1, h2)`` is

.. math::

    P_{ij} = \\exp((h1_i + h2_j - C_{ij}) / \\varepsilon),

for a dense cost or a point-cloud cost evaluated on the fly
(:func:`~otcore.kernels.numba.cost.cost_row`). Entries of ``h1``/``h2`` may be ``-inf``;
the plan is then exactly 0 there.

* :func:`apply_rows` computes ``P V``: row ``i`` is rebuilt one column tile at a time
  (``TILE`` for point clouds, the whole row for a dense cost), its plan entries go to a
  scratch buffer (one exponential per entry), and each of the ``K`` right-hand vectors is
  dotted with the buffer while it is in L1. The vectors are passed transposed, ``VT`` of
  shape ``(K, m)``, so that every inner loop runs over contiguous ``j``.
* :func:`apply_cols_dense` computes ``P^T U`` for a row-major dense cost by streaming rows
  into per-block accumulators ``(K, m)``. Point clouds need no such kernel: every ground
  cost is symmetric, so the caller applies :func:`apply_rows` to the swapped clouds.

Sums are accumulated in float64 whatever the data type; outputs have the caller's dtype.
Scratch memory is O(tile) per thread in :func:`apply_rows` and O(K m) per thread block in
:func:`apply_cols_dense`; nothing of size ``n m`` is allocated. The exponential loops
compile to packed AVX2 code (:func:`~otcore.kernels.numba.vexp.vexp` on ymm registers).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from .cost import DENSE, TILE, cost_row
from .vexp import vexp

# Reassociation lets LLVM vectorize the sums. No "nnan"/"ninf": -inf potentials are valid.
_FASTMATH = {"reassoc", "contract", "nsz", "arcp"}


# Checked with inspect_asm: this loop (and the two below) compile to packed ymm code
# (vfmadd...pd); about 1.2 ns per plan entry and thread in float64. For float32 data the
# exponent is computed in float64 (``inv_eps`` is float64), as in the softmin kernels.
@njit(cache=True, fastmath=_FASTMATH)
def _plan_tile(w, hi, h, c, inv_eps):
    """``w_j = exp((hi + h_j - c_j) / eps)`` (a kernel of its own so that it vectorizes)."""
    for j in range(c.shape[0]):
        w[j] = vexp((hi + h[j] - c[j]) * inv_eps)


@njit(cache=True, fastmath=_FASTMATH)
def _dot64(w, v):
    """``sum_j w_j v_j`` accumulated in float64."""
    acc = 0.0
    for j in range(w.shape[0]):
        acc += np.float64(w[j]) * np.float64(v[j])
    return acc


@njit(cache=True, fastmath=_FASTMATH)
def _axpy64(acc, u, w):
    """``acc_j += u w_j`` with a float64 accumulator ``acc``."""
    for j in range(w.shape[0]):
        acc[j] += u * np.float64(w[j])


@njit(parallel=True, cache=True, fastmath=_FASTMATH)
def apply_rows(X, YT, kind, p, h1, h2, eps, VT, out, nthreads):
    """``out[i, k] = sum_j P_ij VT[k, j]`` with ``P_ij = exp((h1_i + h2_j - C_ij) / eps)``.

    Parameters
    ----------
    X, YT, kind, p
        The cost, as for :func:`~otcore.kernels.numba.cost.cost_row`: ``X`` is the dense
        ``(n, m)`` cost (``kind == DENSE``, ``YT`` unused) or the ``(n, d)`` source
        points with ``YT`` the ``(d, m)`` target points transposed.
    h1, h2 : ndarray
        Shifted potentials, lengths ``n`` and ``m``; ``-inf`` entries give zero plan
        entries.
    eps : float
        Regularization.
    VT : ndarray
        C-contiguous ``(K, m)``: the ``K`` vectors to multiply, transposed.
    out : ndarray
        C-contiguous ``(n, K)`` of the data dtype; overwritten.
    nthreads : int
        Number of row blocks run in parallel.
    """
    n, m = h1.shape[0], h2.shape[0]
    nk = VT.shape[0]
    inv_eps = 1.0 / eps
    tile = max(m, 1) if kind == DENSE else TILE
    nblocks = min(n, nthreads)
    for b in prange(nblocks):
        buf = np.empty(tile, dtype=out.dtype)
        w = np.empty(tile, dtype=out.dtype)
        acc = np.empty(nk, dtype=np.float64)
        for i in range(b * n // nblocks, (b + 1) * n // nblocks):
            acc[:] = 0.0
            hi = h1[i]
            if hi != -np.inf:
                for j0 in range(0, m, tile):
                    j1 = min(j0 + tile, m)
                    c = cost_row(X, YT, kind, p, i, j0, j1, buf)
                    wt = w[: j1 - j0]
                    _plan_tile(wt, hi, h2[j0:j1], c, inv_eps)
                    for k in range(nk):
                        acc[k] += _dot64(wt, VT[k, j0:j1])
            for k in range(nk):
                out[i, k] = acc[k]


@njit(parallel=True, cache=True, fastmath=_FASTMATH)
def apply_cols_dense(C, hf, hg, eps, U, out, nthreads):
    """``out[k, j] = sum_i P_ij U[i, k]`` with ``P_ij = exp((hf_i + hg_j - C_ij) / eps)``.

    Parameters
    ----------
    C : ndarray
        Row-major dense cost, ``(n, m)``.
    hf, hg : ndarray
        Shifted potentials, lengths ``n`` and ``m``; ``-inf`` entries give zero plan
        entries.
    eps : float
        Regularization.
    U : ndarray
        C-contiguous ``(n, K)``: the ``K`` vectors to multiply, one per column.
    out : ndarray
        C-contiguous ``(K, m)`` of the data dtype; overwritten.
    nthreads : int
        Number of row blocks run in parallel, each with float64 accumulators ``(K, m)``.
    """
    n, m = C.shape
    nk = U.shape[1]
    inv_eps = 1.0 / eps
    nblocks = min(n, nthreads)
    partial = np.zeros((nblocks, nk, m), dtype=np.float64)
    for b in prange(nblocks):
        w = np.empty(m, dtype=out.dtype)
        for i in range(b * n // nblocks, (b + 1) * n // nblocks):
            hi = hf[i]
            if hi == -np.inf:
                continue
            _plan_tile(w, hi, hg, C[i], inv_eps)
            for k in range(nk):
                u = np.float64(U[i, k])
                if u != 0.0:
                    _axpy64(partial[b, k], u, w)
    for k in range(nk):
        for j in range(m):
            s = 0.0
            for b in range(nblocks):
                s += partial[b, k, j]
            out[k, j] = s
