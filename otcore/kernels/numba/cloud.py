"""Point-cloud kernels beyond the softmin: the dense cost matrix, and the plan-weighted
cost gradient computed without forming the plan.

:func:`fill_cost_matrix` writes ``c(x_i, y_j)`` row by row with the same arithmetic as the
on-the-fly tiles, so a solver gives the same potentials on either.

For points ``X`` (rows ``r``), points ``Z`` (rows ``s``, stored transposed as ``ZT``)
and shifted potentials ``h1``, ``h2``, :func:`plan_cost_grad` computes

    ``out_r = sum_s exp((h1_r + h2_s - c(X_r, Z_s)) / eps) * grad_1 c(X_r, Z_s)``

where ``grad_1`` is the gradient in the first argument. Every supported ground cost is
``c(u, v) = h(u - v)`` with ``h`` even, so ``grad_1 c(X_r, Z_s) = grad h(X_r - Z_s)``:

* sqeuclidean ``|z|^2``: ``2 z``;
* euclidean ``|z|``: ``z / |z|``, and ``0`` at ``z = 0`` (the minimal-norm subgradient);
* pnorm ``|z|_p^p / p``: ``sign(z) |z|^(p-1)`` componentwise (``sign(0) = 0``).

The cost is evaluated in tiles by :func:`~otcore.kernels.numba.cost.cost_row`, so memory
stays ``O((n + m) d)``. For the squared and plain Euclidean costs the gradient factors as
``X_r * sum_s w_s - sum_s w_s Z_s`` with weights ``w``, a dot product per coordinate
that vectorizes over the contiguous rows of ``ZT``.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from .cost import EUCLIDEAN, PNORM, SQEUCLIDEAN, TILE, cost_row
from .vexp import vexp

_FASTMATH = {"reassoc", "contract", "nsz", "arcp"}


@njit(cache=True, fastmath=_FASTMATH)
def _accumulate_tile(X, ZT, kind, p, r, s0, s1, w, acc):
    """Add ``sum_s w_s grad_1 c(X_r, Z_s)`` over the tile ``s0 <= s < s1`` to ``acc``.

    For the (squared) Euclidean cost ``acc`` collects ``sum w`` in its last entry and
    ``-sum_s w_s Z_s`` in the others; the caller adds ``X_r * sum w`` once per row.
    """
    d = X.shape[1]
    if kind == PNORM:
        q = p - 1.0
        for k in range(d):
            xrk = X[r, k]
            zk = ZT[k, s0:s1]
            t = 0.0
            for ss in range(w.shape[0]):
                diff = xrk - zk[ss]
                t += w[ss] * np.sign(diff) * np.abs(diff) ** q
            acc[k] += t
        return
    sw = 0.0
    for ss in range(w.shape[0]):
        sw += w[ss]
    acc[d] += sw
    for k in range(d):
        zk = ZT[k, s0:s1]
        t = 0.0
        for ss in range(w.shape[0]):
            t += w[ss] * zk[ss]
        acc[k] -= t


@njit(parallel=True, cache=True, fastmath=_FASTMATH)
def plan_cost_grad(X, ZT, kind, p, h1, h2, eps, out, nthreads):
    """``out_r = sum_s P_rs grad_1 c(X_r, Z_s)`` with ``P_rs = exp((h1_r + h2_s - c) / eps)``.

    ``X`` is ``(n, d)``, ``ZT`` is ``(d, m)`` (the second cloud transposed), ``out`` is
    ``(n, d)``. ``kind`` is a point-cloud cost code of :mod:`~otcore.kernels.numba.cost`.
    """
    n, d = X.shape
    m = h2.shape[0]
    inv_eps = 1.0 / eps
    nblocks = min(n, 8 * nthreads)
    for b in prange(nblocks):
        buf = np.empty(TILE, dtype=out.dtype)
        w = np.empty(TILE, dtype=out.dtype)
        acc = np.empty(d + 1, dtype=out.dtype)
        for r in range(b * n // nblocks, (b + 1) * n // nblocks):
            acc[:] = 0.0
            hr = h1[r]
            for s0 in range(0, m, TILE):
                s1 = min(s0 + TILE, m)
                c = cost_row(X, ZT, kind, p, r, s0, s1, buf)
                ws = w[: s1 - s0]
                for ss in range(s1 - s0):
                    ws[ss] = vexp((hr + h2[s0 + ss] - c[ss]) * inv_eps)
                if kind == EUCLIDEAN:
                    for ss in range(s1 - s0):
                        ws[ss] = ws[ss] / c[ss] if c[ss] > 0 else 0.0
                _accumulate_tile(X, ZT, kind, p, r, s0, s1, ws, acc)
            if kind == PNORM:
                for k in range(d):
                    out[r, k] = acc[k]
            else:
                scale = 2.0 if kind == SQEUCLIDEAN else 1.0
                for k in range(d):
                    out[r, k] = scale * (X[r, k] * acc[d] + acc[k])


@njit(parallel=True, cache=True, fastmath=_FASTMATH)
def fill_cost_matrix(X, YT, kind, p, out, nthreads):
    """``out[i, j] = c(x_i, y_j)`` for ``X`` ``(n, d)`` and ``YT`` ``(d, m)``."""
    n, m = out.shape
    nblocks = min(n, 8 * nthreads)
    for b in prange(nblocks):
        buf = np.empty(TILE, dtype=out.dtype)
        for i in range(b * n // nblocks, (b + 1) * n // nblocks):
            for j0 in range(0, m, TILE):
                j1 = min(j0 + TILE, m)
                out[i, j0:j1] = cost_row(X, YT, kind, p, i, j0, j1, buf)
