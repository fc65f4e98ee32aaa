"""Fused top-k kernel of cardinality-constrained optimal transport.

One call evaluates, for every *group* ``j`` (a column of the plan, or a row when rows are
constrained), the ranking scores ``s_i = alpha_i - K_ji`` and keeps the ``k`` largest.
Ties are broken deterministically: of two equal scores, the smaller index ``i`` ranks
first. The selected scores, shifted by the group's ``beta_j``, are
``u_1 >= ... >= u_k`` (``u_r = s_r + beta_j``; the shift does not change the ranking).
On them the kernel computes the group's plan entries

* ``simplex=False`` (dual): ``t_r = [u_r]_+ / gamma``, so that
  ``<u, t> - gamma/2 |t|^2 = (1 / 2 gamma) * sum_r [u_r]_+^2``;
* ``simplex=True`` (semi-dual): ``t_r = [u_r - theta_j]_+ / gamma`` with the threshold
  ``theta_j`` that makes ``sum_r t_r = w_j``: ``w_j`` times the Euclidean projection of
  ``u / (gamma w_j)`` onto the probability simplex, i.e. the k-sparse simplex projection.

and, in the same pass, the group value ``<u, t> - gamma/2 |t|^2``, the group mass
``sum_r t_r``, the number of positive entries and the group's contribution to
``sum_j t_ji``. Optionally it writes the positive entries themselves (the plan), by
decreasing score, into ``(m, width)`` arrays. Scores are formed in float64 whatever the
dtype of ``K``.

Selection, for ``k < n``: a sorted buffer of length ``k`` (insertion with a strict
comparison, so earlier indices win ties) while ``k <= _INSERTION_MAX``, skipping whole
chunks whose best score cannot enter the buffer (a vectorized max); beyond, a stable
merge sort of ``-s`` (ties in the same order). For ``k >= n`` nothing needs ranking: the
semi-dual threshold comes from the top ``_PROBE`` scores when the support is that small
(exact, see :func:`_group`), and otherwise from Michelot's active-set iteration over the
whole group started there; no sort either way.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

#: Largest k handled by the insertion buffer; larger k < n sort the whole group.
_INSERTION_MAX = 48
#: For k >= n, the semi-dual threshold is first computed from this many top scores.
_PROBE = 8
#: Chunk of a group screened at once: skipped if its best score cannot enter the top k.
_CHUNK = 32
#: Below this many cost entries the serial kernel runs (a parallel launch costs more).
SERIAL_ENTRIES = 1 << 17


@njit(cache=True, fastmath=True)
def _chunk_max(alpha, Kj, i0, i1):
    """``max_i alpha_i - K_ji`` over ``i0 <= i < i1`` (inputs are finite).

    Four independent maxima: LLVM does not vectorize a single max reduction here, and
    four chains overlap (a plain row maximum runs twice as fast this way).
    """
    m0 = m1 = m2 = m3 = -np.inf
    i = i0
    while i + 4 <= i1:
        m0 = max(m0, alpha[i] - Kj[i])
        m1 = max(m1, alpha[i + 1] - Kj[i + 1])
        m2 = max(m2, alpha[i + 2] - Kj[i + 2])
        m3 = max(m3, alpha[i + 3] - Kj[i + 3])
        i += 4
    for r in range(i, i1):
        m0 = max(m0, alpha[r] - Kj[r])
    return max(max(m0, m1), max(m2, m3))


@njit(cache=True)
def _insert(v, i, pos, sel, u):
    """Insert score ``v`` of index ``i`` at ``pos`` or before, keeping ``u`` decreasing;
    the strict comparison keeps earlier indices ahead on ties."""
    while pos > 0 and u[pos - 1] < v:
        u[pos] = u[pos - 1]
        sel[pos] = sel[pos - 1]
        pos -= 1
    u[pos] = v
    sel[pos] = i


@njit(cache=True)
def _select(alpha, Kj, kk, sel, u, s):
    """Indices ``sel[:kk]`` and scores ``u[:kk]`` of the ``kk < n`` largest
    ``s_i = alpha_i - K_ji``, decreasing; equal scores keep increasing index order.
    ``s`` is scratch of length ``n``."""
    n = alpha.shape[0]
    if kk > _INSERTION_MAX:
        for i in range(n):
            s[i] = -(alpha[i] - Kj[i])
        order = np.argsort(s, kind="mergesort")  # stable: ties keep index order
        for r in range(kk):
            sel[r] = order[r]
            u[r] = -s[order[r]]
        return
    for i in range(kk):
        _insert(alpha[i] - Kj[i], i, i, sel, u)
    for i0 in range(kk, n, _CHUNK):
        i1 = min(i0 + _CHUNK, n)
        if _chunk_max(alpha, Kj, i0, i1) <= u[kk - 1]:
            continue
        for i in range(i0, i1):
            v = alpha[i] - Kj[i]
            if v > u[kk - 1]:
                _insert(v, i, kk - 1, sel, u)


@njit(cache=True)
def _threshold_sorted(u, kk, mass):
    """``theta`` with ``sum_r [u_r - theta]_+ = mass`` for decreasing ``u[:kk]``."""
    csum = 0.0
    rho_sum = u[0]
    rho = 1
    for r in range(kk):
        csum += u[r]
        if u[r] - (csum - mass) / (r + 1) > 0.0:
            rho, rho_sum = r + 1, csum
    return (rho_sum - mass) / rho


@njit(cache=True, fastmath=True)
def _threshold_unsorted(u, mass, theta):
    """The same threshold for unsorted ``u``, without sorting, from a lower bound ``theta``.

    Newton's method on the convex, decreasing, piecewise-linear
    ``theta -> sum_i [u_i - theta]_+ - mass`` (Michelot's active-set update
    ``theta = (sum_{u_i > theta} u_i - mass) / #{u_i > theta}``): from a lower bound it
    increases monotonically and stops when the active set no longer shrinks, after at
    most ``len(u)`` passes and in practice a few.
    """
    active = u.shape[0] + 1
    while True:
        tot, cnt = 0.0, 0
        for i in range(u.shape[0]):
            if u[i] > theta:
                tot += u[i]
                cnt += 1
        if cnt == 0 or cnt == active:
            return theta
        theta, active = (tot - mass) / cnt, cnt


@njit(cache=True)
def _gather_positive(alpha, Kj, bj, th, sel, u, s, ordered):
    """All indices with ``s_i + bj > th`` into ``sel``/``u`` (scores ``s`` as scratch);
    sorted by decreasing ``s`` (ties: index order) when ``ordered``. Returns the count."""
    n = alpha.shape[0]
    cnt = 0
    for i in range(n):
        v = (alpha[i] - Kj[i]) + bj
        if v > th:
            sel[cnt] = i
            u[cnt] = v
            s[cnt] = -(alpha[i] - Kj[i])
            cnt += 1
    if ordered and cnt > 1:
        order = np.argsort(s[:cnt], kind="mergesort")
        sel[:cnt] = sel[:cnt][order]
        u[:cnt] = u[:cnt][order]
    return cnt


@njit(cache=True)
def _group(K, j, alpha, beta, w, gamma, k, simplex, sel, u, s, idx, val, rows, out):
    """Evaluate group ``j``: ``(value, mass, threshold, nnz)`` into ``out[:, j]``, its
    entries added to ``rows`` and, up to ``idx.shape[1]``, written to ``idx``/``val``.
    ``sel``, ``u``, ``s`` are scratch of length ``n``."""
    n = alpha.shape[0]
    bj = beta[j]
    Kj = K[j]
    mass = gamma * w[j]
    width = idx.shape[1]
    if k < n:
        _select(alpha, Kj, k, sel, u, s)
        for r in range(k):
            u[r] += bj
        th = _threshold_sorted(u, k, mass) if simplex else 0.0
        cnt = 0
        while cnt < k and u[cnt] > th:  # the positive entries are a prefix
            cnt += 1
    elif not simplex:
        th = 0.0
        cnt = _gather_positive(alpha, Kj, bj, th, sel, u, s, width > 0)
    else:
        # The threshold of the top L scores is a lower bound of the full one, and exact
        # when it leaves the L-th score at zero (no score outside them is larger).
        top = min(_PROBE, n)
        if top < n:
            _select(alpha, Kj, top, sel, u, s)
        else:
            _gather_positive(alpha, Kj, 0.0, -np.inf, sel, u, s, True)
        for r in range(top):
            u[r] += bj
        th = _threshold_sorted(u, top, mass)
        if top == n or u[top - 1] <= th:
            cnt = 0
            while cnt < top and u[cnt] > th:
                cnt += 1
        else:
            for i in range(n):
                u[i] = (alpha[i] - Kj[i]) + bj
            th = _threshold_unsorted(u, mass, th)
            cnt = _gather_positive(alpha, Kj, bj, th, sel, u, s, width > 0)
    inv_gamma = 1.0 / gamma
    v = 0.0
    tot = 0.0
    for r in range(cnt):
        t = (u[r] - th) * inv_gamma
        v += t * (u[r] - 0.5 * gamma * t)
        tot += t
        rows[sel[r]] += t
        if r < width:
            idx[j, r] = sel[r]
            val[j, r] = t
    for r in range(cnt, width):
        idx[j, r] = 0
        val[j, r] = 0.0
    out[0, j] = v
    out[1, j] = tot
    out[2, j] = th
    out[3, j] = cnt


@njit(parallel=True, cache=True)
def _parallel(K, alpha, beta, w, gamma, k, simplex, nthreads, idx, val):
    m, n = K.shape
    nblocks = max(1, min(m, nthreads))
    out = np.empty((4, m), dtype=np.float64)
    acc = np.zeros((nblocks, n), dtype=np.float64)
    for b in prange(nblocks):
        sel = np.empty(n, dtype=np.int64)
        u = np.empty(n, dtype=np.float64)
        s = np.empty(n, dtype=np.float64)
        for j in range(b * m // nblocks, (b + 1) * m // nblocks):
            _group(K, j, alpha, beta, w, gamma, k, simplex, sel, u, s, idx, val, acc[b], out)
    return out, acc.sum(axis=0)


@njit(cache=True)
def _serial(K, alpha, beta, w, gamma, k, simplex, idx, val):
    m, n = K.shape
    out = np.empty((4, m), dtype=np.float64)
    rows = np.zeros(n, dtype=np.float64)
    sel = np.empty(n, dtype=np.int64)
    u = np.empty(n, dtype=np.float64)
    s = np.empty(n, dtype=np.float64)
    for j in range(m):
        _group(K, j, alpha, beta, w, gamma, k, simplex, sel, u, s, idx, val, rows, out)
    return out, rows


def topk_groups(K, alpha, beta, w, gamma, k, simplex, nthreads, idx, val):
    """Fused top-k evaluation over the groups (rows) of ``K``; see the module docstring.

    Parameters
    ----------
    K : (m, n) array, float32 or float64, C-contiguous
        Row ``j`` holds the costs competing in group ``j``.
    alpha : (n,) float64
    beta : (m,) float64
        Added to every score of group ``j`` (zeros for the semi-dual).
    w : (m,) float64
        Group masses (used when ``simplex``).
    gamma : float
    k : int
        Cardinality, ``1 <= k``; ``k >= n`` selects everything.
    simplex : bool
    nthreads : int
        Threads of the parallel kernel (the serial one runs below ``SERIAL_ENTRIES``).
    idx : (m, width) int64, output
    val : (m, width) float64, output
        The first ``width`` positive entries of each group, by decreasing score (ties:
        increasing index), padded with index 0 and value 0; ``width = 0`` skips them.

    Returns
    -------
    out : (4, m) float64
        Per group: ``<u, t> - gamma/2 |t|^2``, ``sum_r t_r``, the threshold (0 for the
        dual) and the number of positive entries.
    rows : (n,) float64
        ``sum_j t_ji``.
    """
    k = min(k, K.shape[1])
    if K.shape[0] * K.shape[1] < SERIAL_ENTRIES or nthreads == 1:
        return _serial(K, alpha, beta, w, gamma, k, simplex, idx, val)
    return _parallel(K, alpha, beta, w, gamma, k, simplex, nthreads, idx, val)
