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

Selection, for ``k < n``: a sorted buffer (insertion with a strict comparison, so
earlier indices win ties) while ``k < _INSERTION_MAX``, skipping whole chunks whose best
score cannot enter the buffer; beyond, a stable merge sort of ``-s`` (ties in the same
order). The ``k + 1`` largest are selected: the ``(k + 1)``-th is returned as the group's
*hint*. Given a hint ``tau`` from a call at nearby ``alpha`` (consecutive evaluations of
an optimizer), one pass lists the few scores ``s_i >= tau`` and only those are ranked;
if fewer than ``k`` qualify the hint was too high and the group is searched in full, so
the result never depends on the hint.

*Candidate lists* (``k < n``, optional): a group keeps a list of its ``L >= k + 1`` best
entries (indices in increasing order, with their costs), the *span*
``s_(k+1) - s_(L)`` and the *radius*, half the span. While ``alpha`` has moved less than
the radius in the max-norm since the list was made (the caller passes each call's
``step`` from the previous call's ``alpha``; the radius shrinks by it), no score outside
the list can reach the ``k + 1`` best (each score moves by at most the step: the listed
``k + 1`` stay above ``s_(k+1)`` minus it, the others below ``s_(L)`` plus it), so only
the ``L`` listed entries are ranked, in index order (the same tie order) and with the
same arithmetic: the result is that of a full search. An optimizer's late, short steps
then cost ``O(L)`` per group instead of a pass over the group's ``n`` costs. A group
whose list has run out is searched in full: for the ``L`` best (a new list) when the
step is shorter than a quarter of the last span (``_RENEW``), else (an optimizer's long
trial step) for the ``k + 1`` best only, as without lists.

For ``k >= n`` nothing needs ranking: the semi-dual threshold comes from Michelot's
active-set iteration started at the hint (the last threshold), or without one from the
top ``_PROBE`` scores when the support is that small (exact, see :func:`_groups`) and
otherwise from Michelot's iteration started there; no sort either way.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from . import SERIAL_BELOW

#: Largest number of scores (k + 1) selected by insertion; beyond, the group is sorted.
_INSERTION_MAX = 48
#: For k >= n, the semi-dual threshold is first computed from this many top scores.
_PROBE = 8
#: Chunk of a group screened at once: skipped if its best score cannot enter the top k.
_CHUNK = 32
#: A group's list is rebuilt after a step shorter than its last span over this: the new
#: list (radius half the span) then serves at least a few more steps of that length.
_RENEW = 4.0
#: No candidate lists (``topk_groups(lists=None)``).
_NO_LISTS = (np.zeros((0, 0), dtype=np.int64), np.zeros((0, 0)), np.zeros(0), np.zeros(0))


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
    """The same threshold for unsorted ``u``, without sorting, from a guess ``theta``.

    Newton's method on the convex, decreasing, piecewise-linear
    ``phi(theta) = sum_i [u_i - theta]_+ - mass``, which is Michelot's active-set update
    ``theta <- (sum_{u_i > theta} u_i - mass) / #{u_i > theta}``. From above the root
    the first step lands at or below it (the tangent of a convex function lies below
    it); from below, the iterates increase monotonically and the active set shrinks,
    until it no longer changes. So it ends after at most ``len(u)`` passes, in practice
    a few, each a branch-free (vectorized) sum. Returns ``(theta, ok)``; ``ok`` is False
    when no ``u_i`` exceeds the guess (the root is then not bracketed).
    """
    active = -1
    for _ in range(u.shape[0] + 2):
        tot = 0.0
        cnt = 0
        for i in range(u.shape[0]):
            above = u[i] > theta
            tot += u[i] if above else 0.0
            cnt += above
        if cnt == 0:
            return theta, active > 0
        if cnt == active:
            break
        theta, active = (tot - mass) / cnt, cnt
    return theta, True


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
def _select_above(alpha, Kj, kk, tau, sel, u, cand, cs):
    """The ``kk`` largest scores as :func:`_select`, searched only among ``s_i >= tau``.

    One pass lists the candidates ``s_i >= tau`` (in index order, into ``cand``/``cs``;
    the test is rarely true for a good ``tau``, so the branch predicts well), then they
    are inserted as in :func:`_select`. Returns the number of candidates ``c``: when
    ``c >= kk - 1`` the first ``kk - 1`` selected are exactly those of the whole group
    (every score outside the candidates is below ``tau``), and so is the ``kk``-th when
    ``c >= kk``.
    """
    n = alpha.shape[0]
    c = 0
    for i in range(n):
        v = alpha[i] - Kj[i]
        if v >= tau:
            cand[c] = i
            cs[c] = v
            c += 1
    for r in range(c):
        if r < kk:
            _insert(cs[r], cand[r], r, sel, u)
        elif cs[r] > u[kk - 1]:
            _insert(cs[r], cand[r], kk - 1, sel, u)
    return c


@njit(cache=True)
def _select_listed(alpha, lidx, lcost, kk, sel, u):
    """The ``kk`` largest scores among a candidate list (indices ``lidx`` in increasing
    order, costs ``lcost``), as :func:`_select` over the whole group when the list holds
    them (see the module docstring)."""
    for r in range(lidx.shape[0]):
        v = alpha[lidx[r]] - lcost[r]
        if r < kk:
            _insert(v, lidx[r], r, sel, u)
        elif v > u[kk - 1]:
            _insert(v, lidx[r], kk - 1, sel, u)


@njit(cache=True)
def _keep_list(Kj, sel, lidx, lcost):
    """Store the ``len(lidx)`` selected indices ``sel`` in increasing order, with their
    costs, as the group's candidate list."""
    size = lidx.shape[0]
    for r in range(size):
        i = sel[r]
        pos = r
        while pos > 0 and lidx[pos - 1] > i:
            lidx[pos] = lidx[pos - 1]
            pos -= 1
        lidx[pos] = i
    for r in range(size):
        lcost[r] = Kj[lidx[r]]


@njit(cache=True)
def _shifted_scores(alpha, Kj, bj, u):
    """``u_i = (alpha_i - K_ji) + b_j`` for the whole group."""
    for i in range(alpha.shape[0]):
        u[i] = (alpha[i] - Kj[i]) + bj


@njit(cache=True, fastmath=True)
def _finish_dense(u, th, inv_gamma, gamma, rows):
    """Plan entries ``t_i = [u_i - th]_+ / gamma`` of a whole group (``u`` holds all its
    shifted scores), added to ``rows``; returns (value, mass, count), vectorized."""
    v = 0.0
    tot = 0.0
    cnt = 0
    for i in range(u.shape[0]):
        d = u[i] - th
        t = d * inv_gamma if d > 0.0 else 0.0
        rows[i] += t
        v += t * (u[i] - 0.5 * gamma * t)
        tot += t
        cnt += d > 0.0
    return v, tot, cnt


@njit(cache=True)
def _groups(K, j0, j1, alpha, beta, w, gamma, k, simplex, sel, u, s, cand, idx, val, rows,
            out, hint, lidx, lcost, radius, span, step):
    """Evaluate groups ``j0 <= j < j1``: ``(value, mass, threshold, nnz)`` into
    ``out[:, j]``, their entries added to ``rows`` and, up to ``idx.shape[1]``, written to
    ``idx``/``val``. ``sel``, ``u``, ``s``, ``cand`` are scratch of length ``n``. ``hint``
    (length ``m``, or 0 for none) and the candidate lists ``lidx``, ``lcost``, ``radius``,
    ``span`` (``m`` rows, or 0 for none) are read and updated: see :func:`topk_groups`.
    (One call for a range of groups: a call per group, with its many array arguments,
    costs about as much as ranking a short group.)"""
    n = alpha.shape[0]
    width = idx.shape[1]
    inv_gamma = 1.0 / gamma
    listing = lidx.shape[0] > 0
    for j in range(j0, j1):
        bj = beta[j]
        Kj = K[j]
        mass = gamma * w[j]
        hinted = hint.shape[0] > 0 and np.isfinite(hint[j])
        if k < n:
            # select k + 1: the (k + 1)-th score is the next call's hint
            kk = k + 1
            if listing and step < radius[j]:
                _select_listed(alpha, lidx[j], lcost[j], kk, sel, u)
                radius[j] -= step
                c = kk
            else:
                renew = listing and _RENEW * step < span[j]
                top, tau = kk, hint[j]
                if renew:
                    # a short step: a new list, searched for below the last hint by
                    # twice the last span and the step (enough unless c < top)
                    top, tau = lidx.shape[1], hint[j] - 2.0 * span[j] - step
                c = (_select_above(alpha, Kj, top, tau, sel, u, cand, s)
                     if hinted and tau > -np.inf else -1)
                if c < (top if renew else k):
                    _select(alpha, Kj, top, sel, u, s)
                    c = n
                if renew:
                    _keep_list(Kj, sel, lidx[j], lcost[j])
                    span[j] = u[k] - u[top - 1] if top < n else np.inf
                    radius[j] = 0.5 * span[j]
                elif listing:
                    radius[j] = -np.inf
            if hint.shape[0] > 0 and c >= kk:
                hint[j] = u[k]
            for r in range(k):
                u[r] += bj
            th = _threshold_sorted(u, k, mass) if simplex else 0.0
            cnt = 0
            while cnt < k and u[cnt] > th:  # the positive entries are a prefix
                cnt += 1
        else:
            cnt = -1  # entries not listed yet
            if not simplex:
                th = 0.0
            else:
                th = np.nan
                if hinted:
                    _shifted_scores(alpha, Kj, bj, u)
                    th, ok = _threshold_unsorted(u, mass, hint[j])
                    if not ok:
                        th = np.nan
                if not np.isfinite(th):
                    # The threshold of the top L scores is a lower bound of the full one,
                    # and exact when it leaves the L-th score at zero (no score outside them
                    # is larger).
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
                        _shifted_scores(alpha, Kj, bj, u)
                        th = _threshold_unsorted(u, mass, th)[0]
                if hint.shape[0] > 0:
                    hint[j] = th
            if cnt < 0 and width > 0:
                cnt = _gather_positive(alpha, Kj, bj, th, sel, u, s, True)
            elif cnt < 0:
                if not simplex:
                    _shifted_scores(alpha, Kj, bj, u)
                v, tot, cnt = _finish_dense(u, th, inv_gamma, gamma, rows)
                out[0, j] = v
                out[1, j] = tot
                out[2, j] = th
                out[3, j] = cnt
                continue
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
def _parallel(K, alpha, beta, w, gamma, k, simplex, nthreads, idx, val, hint, lidx, lcost,
              radius, span, step):
    m, n = K.shape
    nblocks = max(1, min(m, nthreads))
    out = np.empty((4, m), dtype=np.float64)
    acc = np.zeros((nblocks, n), dtype=np.float64)
    for b in prange(nblocks):
        sel = np.empty(n, dtype=np.int64)
        u = np.empty(n, dtype=np.float64)
        s = np.empty(n, dtype=np.float64)
        cand = np.empty(n, dtype=np.int64)
        _groups(K, b * m // nblocks, (b + 1) * m // nblocks, alpha, beta, w, gamma, k,
                simplex, sel, u, s, cand, idx, val, acc[b], out, hint, lidx, lcost,
                radius, span, step)
    return out, acc.sum(axis=0)


@njit(cache=True)
def _serial(K, alpha, beta, w, gamma, k, simplex, idx, val, hint, lidx, lcost, radius, span,
            step):
    m, n = K.shape
    out = np.empty((4, m), dtype=np.float64)
    rows = np.zeros(n, dtype=np.float64)
    sel = np.empty(n, dtype=np.int64)
    u = np.empty(n, dtype=np.float64)
    s = np.empty(n, dtype=np.float64)
    cand = np.empty(n, dtype=np.int64)
    _groups(K, 0, m, alpha, beta, w, gamma, k, simplex, sel, u, s, cand, idx, val, rows,
            out, hint, lidx, lcost, radius, span, step)
    return out, rows


def topk_groups(K, alpha, beta, w, gamma, k, simplex, nthreads, idx, val, hint,
                lists=None, step=np.inf):
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
        Threads of the parallel kernel (the serial one runs below ``SERIAL_BELOW``).
    idx : (m, width) int64, output
    val : (m, width) float64, output
        The first ``width`` positive entries of each group, by decreasing score (ties:
        increasing index), padded with index 0 and value 0; ``width = 0`` skips them.
    hint : (m,) float64, updated in place, or (0,) for none
        Per group, a guess that speeds up the search; NaN for none. Results do not
        depend on it (a wrong guess is detected, and the group searched in full). On
        return it holds the guess for a call at nearby ``alpha``: for ``k < n`` the
        ``(k + 1)``-th largest score ``s`` (a lower bound of the ``k``-th at nearby
        ``alpha``, so that only the scores above it need ranking); for the semi-dual with
        ``k >= n`` the threshold (the start of Michelot's iteration); untouched for the
        dual with ``k >= n``.
    lists : tuple (lidx, lcost, radius, span), optional
        For ``k < n``, the candidate lists of the module docstring, updated in place:
        ``lidx`` ``(m, L)`` int64 and ``lcost`` ``(m, L)`` float64 with
        ``k + 1 <= L <= n``, ``radius`` and ``span`` ``(m,)`` float64 (``-inf`` and
        ``inf`` before the first call); they need ``hint`` (length ``m``). Results do not
        depend on them.
    step : float, default inf
        With ``lists``: an upper bound of ``max_i |alpha_i - alpha'_i|`` over the previous
        call's ``alpha'``, including the rounding of the scores (formed in float64:
        ``2**-50 * (max |alpha| + max |K|)`` over both calls more).

    Returns
    -------
    out : (4, m) float64
        Per group: ``<u, t> - gamma/2 |t|^2``, ``sum_r t_r``, the threshold (0 for the
        dual) and the number of positive entries.
    rows : (n,) float64
        ``sum_j t_ji``.
    """
    k = min(k, K.shape[1])
    lidx, lcost, radius, span = lists if lists is not None and k < K.shape[1] else _NO_LISTS
    step = float(step)
    if K.shape[0] * K.shape[1] < SERIAL_BELOW or nthreads == 1:
        return _serial(K, alpha, beta, w, gamma, k, simplex, idx, val, hint, lidx, lcost,
                       radius, span, step)
    return _parallel(K, alpha, beta, w, gamma, k, simplex, nthreads, idx, val, hint, lidx,
                     lcost, radius, span, step)
