"""Generalised Hessian of the cardinality semi-dual on the supports of the top-k kernel.

On a fixed support ``S_j`` of every group ``j`` (the positive entries listed by
:func:`otcore.kernels.numba.topk.topk_groups`), the plan's marginal on the other side,
``sum_j t_j``, has the Jacobian

    H = (1 / gamma) * sum_j (diag(1_{S_j}) - 1_{S_j} 1_{S_j}^T / |S_j|)

in the other side's potentials (a graph Laplacian over the entries that share a group;
symmetric, positive semi-definite, the constant vector in its null space). This module
applies ``H + shift * I`` without forming it (``O(sum_j |S_j|)`` per product) and solves
``(H + shift * I) x = rhs`` by conjugate gradients preconditioned with its diagonal.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True)
def _product(idx, nnz, inv_gamma, shift, v, out):
    """``out = (H + shift I) v``."""
    for i in range(v.shape[0]):
        out[i] = shift * v[i]
    for j in range(idx.shape[0]):
        c = nnz[j]
        if c < 2:  # a group of one entry contributes nothing
            continue
        s = 0.0
        for r in range(c):
            s += v[idx[j, r]]
        mean = s / c
        for r in range(c):
            i = idx[j, r]
            out[i] += inv_gamma * (v[i] - mean)


def support_hvp(idx, nnz, gamma, shift, v):
    """``(H + shift I) v`` for the supports ``idx[j, :nnz[j]]`` (see the module docstring).

    Parameters
    ----------
    idx : (m, width) int64
        Per group, the indices of its support first (``width >= max(nnz)``).
    nnz : (m,) int64
        Support sizes.
    gamma, shift : float
    v : (n,) float64

    Returns
    -------
    (n,) float64
    """
    out = np.empty_like(v)
    _product(idx, nnz, 1.0 / gamma, shift, v, out)
    return out


@njit(cache=True)
def _pcg(idx, nnz, gamma, shift, rhs, rtol, max_iter):
    n = rhs.shape[0]
    inv_gamma = 1.0 / gamma
    diag = np.full(n, shift)
    for j in range(idx.shape[0]):
        c = nnz[j]
        if c < 2:
            continue
        w = inv_gamma * (1.0 - 1.0 / c)
        for r in range(c):
            diag[idx[j, r]] += w
    for i in range(n):  # an entry outside every support (and no shift): no scaling
        if diag[i] <= 0.0:
            diag[i] = 1.0
    x = np.zeros(n)
    r = rhs.copy()
    z = r / diag
    p = z.copy()
    q = np.empty(n)
    rz = r @ z
    target = rtol * np.sqrt(rhs @ rhs)
    it = 0
    while it < max_iter and np.sqrt(r @ r) > target:
        _product(idx, nnz, inv_gamma, shift, p, q)
        pq = p @ q
        if not pq > 0.0:  # p in the null space (no shift): no further progress
            break
        step = rz / pq
        x += step * p
        r -= step * q
        z = r / diag
        rz_new = r @ z
        p = z + (rz_new / rz) * p
        rz = rz_new
        it += 1
    return x, it, np.sqrt(r @ r)


def support_pcg(idx, nnz, gamma, shift, rhs, rtol, max_iter):
    """Solve ``(H + shift I) x = rhs`` by Jacobi-preconditioned conjugate gradients.

    Parameters
    ----------
    idx, nnz, gamma, shift
        As in :func:`support_hvp`.
    rhs : (n,) float64
    rtol : float
        Stop when ``|rhs - (H + shift I) x|_2 <= rtol * |rhs|_2``.
    max_iter : int

    Returns
    -------
    x : (n,) float64
    iterations : int
    residual : float
        The final ``|rhs - (H + shift I) x|_2`` (as updated by the recurrence).
    """
    return _pcg(idx, nnz, float(gamma), float(shift), rhs, float(rtol), int(max_iter))
