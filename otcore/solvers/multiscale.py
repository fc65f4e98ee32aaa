r"""Multiscale Sinkhorn for large point clouds in low dimension: coarse-to-fine
eps-scaling on clustered clouds, with truncated (block-sparse) kernels at the fine level.

The scheme (after Schmitzer's sparse scaling and GeomLoss's multiscale backend):

1. Both clouds are cut by one grid into about ``n_clusters`` clusters each
   (:mod:`otcore.solvers._clusters`).
2. The coarse problem between the cluster centres (weighted by the clusters' masses) is
   solved with eps-scaling down to ``max(eps, c(cell))``, where the clusters stop
   resolving the plan.
3. Its potentials are extended to every point by one softmin against the other cloud's
   centres, and eps-scaling goes on at the fine level with one iteration per value of
   eps, then over-relaxed Sinkhorn iterations at ``eps``
   (:mod:`otcore.solvers._overrelax`) and plain ones until ``tol``. At every value of
   eps only the pairs of clusters that may carry mass are evaluated.

Duplicated points are merged first (exactly: equal points have equal potentials), so
quantized clouds such as the pixels of an image solve on their distinct points.

**The truncation bound.** For clusters ``I`` (sources) and ``J`` (targets) with centres
``c_I, c_J`` and radii ``r_I, r_J`` in the norm of the ground cost, the triangle
inequality bounds every cost of the block from below,
``C_ij >= L_IJ = h(max(0, |c_I - c_J| - r_I - r_J))``, so the block's plan mass is at most

.. math::

    \sum_{i \in I, j \in J} a_i b_j e^{(f_i + g_j - C_{ij}) / \varepsilon}
    \le \exp\big((\alpha_I + \beta_J - L_{IJ}) / \varepsilon\big),
    \quad \alpha_I = \varepsilon \log \sum_{i \in I} a_i e^{f_i / \varepsilon}

(``beta_J`` likewise). For the squared Euclidean cost ``C = |x - y|^2 / s`` a second
bound holds, far tighter when the potentials vary across a cluster (they do, by about
``|grad f| r_I``): with ``u = x_i - c_I``, ``v = y_j - c_J`` and ``D = c_I - c_J``,
``s C_ij = |u|^2 + |v|^2 + |D|^2 + 2 <u, D> - 2 <v, D> - 2 <u, v>`` and
``<u, v> <= r_I r_J``, so that

.. math::

    \log \text{mass}_{IJ} \le \mathrm{LSE}_{i \in I}\big(\log a_i + A_i(J) / \varepsilon\big)
    + \mathrm{LSE}_{j \in J}\big(\log b_j + B_j(I) / \varepsilon\big)
    + \frac{2 r_I r_J - |D|^2}{s \varepsilon}

with ``A_i(J) = f_i - (|u|^2 + 2 <u, D>) / s`` and ``B_j(I) = g_j - (|v|^2 - 2 <v, D>) / s``
(``O((n L + m K) d)`` work, a small fraction of one fine iteration); the smaller of the two
bounds is used. Pairs are dropped, smallest bounds first, while the sum of their
bounds stays within ``truncation``; the bound is recomputed with the final potentials and
the kept set enlarged if it no longer holds. So the plan of the returned potentials on
*all* pairs differs from the returned (truncated) plan by at most ``truncation`` in mass,
and ``marginal_error`` (the exact error of the kept plan plus twice the bound) bounds the
L1 marginal error of the full plan.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import numpy as np

from .._validation import check_eps, check_fraction, check_positive_int, check_tol
from ..backends import BlockLayout, GeometryOps
from ..costs import SQEUCLIDEAN
from ..geometry import PointCloud
from ..result import OTResult
from ._clusters import Clusters, grid_cell, grid_clusters
from ._duplicates import distinct_points, expand_result
from ._finish import finish_entropic
from ._monitor import IterationInfo, make_monitor
from ._overrelax import overrelaxed_loop
from ._problem import Problem, default_tol, make_problem
from .sinkhorn import sinkhorn, sinkhorn_loop

__all__ = ["MAX_DIM", "multiscale_sinkhorn"]

#: Above this dimension a grid no longer separates the clouds into compact clusters:
#: the solver falls back to the online Sinkhorn solver (and says so).
MAX_DIM = 6
#: Sinkhorn iterations allowed on the coarse problem.
_COARSE_ITER = 2000
#: Convergence checks between two recomputations of the truncation bound at the final eps,
#: and the fewest iterations between them (the bound costs a few fine iterations).
_STRETCH, _MIN_STRETCH = 5, 50
_ADVICE = ("Increase max_iter or eps; in float32, a larger tol.")


def _default_clusters(n: int) -> int:
    """About ``10 sqrt(n)`` clusters per cloud, between 16 and 2000: finer clusters tighten
    the truncation bound (small eps), while the bound's own cost grows as ``n`` times the
    clusters."""
    return int(min(2000, max(16, 10 * math.sqrt(n))))


class _PairBounds:
    """The truncation bound between the clusters of both clouds (host NumPy)."""

    def __init__(self, cx: Clusters, cy: Clusters, geom: PointCloud, x: np.ndarray,
                 y: np.ndarray, log_a: np.ndarray, log_b: np.ndarray):
        self.cx, self.cy, self.log_a, self.log_b = cx, cy, log_a, log_b
        ground, L = geom.ground, cy.centre.shape[0]
        block = max(1, (1 << 21) // (L * cx.centre.shape[1]))
        lb = np.empty((cx.centre.shape[0], L))
        for s in range(0, lb.shape[0], block):
            e = min(s + block, lb.shape[0])
            dist = ground.norm(np, cx.centre[s:e, None, :] - cy.centre[None, :, :])
            gap = np.maximum(dist - cx.radius[s:e, None] - cy.radius[None, :], 0.0)
            lb[s:e] = ground.from_norm(gap) / geom.scale
        self.lower = lb
        self.pairs = cx.counts[:, None].astype(np.float64) * cy.counts[None, :]
        self.bilinear = None
        if ground.code == SQEUCLIDEAN:  # (points - own centre, sorted by cluster), s, slack
            self.bilinear = ([p[c.order] - np.repeat(c.centre, c.counts, axis=0)
                              for p, c in ((x, cx), (y, cy))], geom.scale,
                             2.0 * cx.radius[:, None] * cy.radius[None, :]
                             - _sq_distances(cx.centre, cy.centre))

    @staticmethod
    def _cluster_lse(c: Clusters, log_w: np.ndarray, pot: np.ndarray, eps: float) -> np.ndarray:
        """``eps log sum_{i in I} w_i exp(pot_i / eps)`` per cluster (``-inf``: no mass)."""
        z = (log_w + pot / eps)[c.order]
        mx = np.maximum.reduceat(z, c.start[:-1])
        shift = np.where(np.isfinite(mx), mx, 0.0)
        s = np.add.reduceat(np.exp(z - np.repeat(shift, c.counts)), c.start[:-1])
        with np.errstate(divide="ignore"):
            return eps * (shift + np.log(s))

    def log_bounds(self, f: np.ndarray, g: np.ndarray, eps: float) -> np.ndarray:
        """``log`` of the bound on each block's plan mass, ``(K, L)``: the triangle bound,
        or for the squared Euclidean cost the smaller of it and the bilinear bound."""
        alpha = self._cluster_lse(self.cx, self.log_a, f, eps)
        beta = self._cluster_lse(self.cy, self.log_b, g, eps)
        logb = (alpha[:, None] + beta[None, :] - self.lower) / eps
        if self.bilinear is None:
            return logb
        (u, v), s, slack = self.bilinear
        A = _shifted_lse(self.cx, u, self.log_a, f, self.cy.centre, s, eps)
        B = _shifted_lse(self.cy, v, self.log_b, g, self.cx.centre, s, eps)
        with np.errstate(invalid="ignore"):  # -inf + inf cannot occur: slack is finite
            return np.minimum(logb, A + B.T + slack / (s * eps))

    def select(self, f: np.ndarray, g: np.ndarray, eps: float, budget: float
               ) -> tuple[np.ndarray, float]:
        """The kept pairs ``(K, L)`` whose dropped complement has a bound within
        ``budget`` (smallest bounds dropped first; each cluster keeps its largest pair),
        and that bound."""
        return self.keep(self.log_bounds(f, g, eps), budget)

    @staticmethod
    def keep(logb: np.ndarray, budget: float) -> tuple[np.ndarray, float]:
        """:meth:`select` from the log-bounds ``logb`` of :meth:`log_bounds`. The bounds
        below ``budget / logb.size`` sum to less than ``budget`` and are the smallest, so
        they are dropped first without sorting; only the others are sorted."""
        flat = logb.reshape(-1)
        tiny = flat < math.log(budget / max(flat.size, 1))
        spent = float(np.sum(np.exp(flat[tiny])))
        vals = np.sort(flat[~tiny & (flat < math.log(budget))])
        k = int(np.searchsorted(spent + np.cumsum(np.exp(vals)), budget, side="right"))
        if k > 0:
            keep = logb > vals[k - 1]
        elif np.any(tiny):
            keep = ~tiny.reshape(logb.shape)
        else:
            keep = np.ones(logb.shape, dtype=bool)
        keep[np.arange(logb.shape[0]), np.argmax(logb, axis=1)] = True
        keep[np.argmax(logb, axis=0), np.arange(logb.shape[1])] = True
        return keep, _PairBounds.dropped(keep, logb)

    @staticmethod
    def dropped(keep: np.ndarray, logb: np.ndarray) -> float:
        """The bound on the plan mass of the dropped pairs."""
        return float(np.sum(np.exp(logb[~keep])))

    def layout(self, keep: np.ndarray) -> BlockLayout:
        ptr = np.zeros(keep.shape[0] + 1, dtype=np.int64)
        np.cumsum(keep.sum(axis=1), out=ptr[1:])
        return BlockLayout(self.cx.order, self.cx.start, self.cy.order, self.cy.start, ptr,
                           np.nonzero(keep)[1].astype(np.int64))

    def kept_fraction(self, keep: np.ndarray) -> float:
        """The fraction of point pairs that the kept clusters hold."""
        return float(np.sum(self.pairs[keep]) / np.sum(self.pairs))


def _sq_distances(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """``|p_I - q_J|^2`` for all rows of ``p`` and ``q``."""
    return np.maximum(np.sum(p * p, axis=1)[:, None] + np.sum(q * q, axis=1)[None, :]
                      - 2.0 * (p @ q.T), 0.0)


def _shifted_lse(c: Clusters, u: np.ndarray, log_w: np.ndarray, pot: np.ndarray,
                 other: np.ndarray, s: float, eps: float) -> np.ndarray:
    """Per own cluster ``I`` and other cluster ``J``, ``LSE_{i in I} (log w_i +
    (pot_i - (|u_i|^2 + 2 <u_i, c_I - c_J>) / s) / eps)`` of the bilinear bound (see the
    module docstring), ``(K, L)``; ``u`` are the points minus their centre, sorted by
    cluster. Blocks of clusters keep the ``(points, L)`` exponent table near 2**21
    entries."""
    own = np.repeat(c.centre, c.counts, axis=0)
    base = log_w[c.order] + (pot[c.order] - np.sum(u * (u + 2.0 * own), axis=1) / s) / eps
    K, L = c.counts.shape[0], other.shape[0]
    out = np.empty((K, L))
    per = max(1, (1 << 21) // max(L, 1))
    first = 0
    while first < K:
        last = int(np.searchsorted(c.start, c.start[first] + per, side="right")) - 1
        last = min(max(last, first + 1), K)  # at least one cluster per block
        lo, hi = c.start[first], c.start[last]
        z = base[lo:hi, None] + (2.0 / (s * eps)) * (u[lo:hi] @ other.T)
        starts = c.start[first:last] - lo
        top = np.maximum.reduceat(z, starts, axis=0)
        shift = np.where(np.isfinite(top), top, 0.0)
        total = np.add.reduceat(np.exp(z - np.repeat(shift, c.counts[first:last], axis=0)),
                                starts, axis=0)
        with np.errstate(divide="ignore"):
            out[first:last] = shift + np.log(total)
        first = last
    return out


def _fallback(prob: Problem) -> str | None:
    """Why the multiscale scheme cannot run on this problem, or None."""
    d = prob.geom.x.shape[1]
    if d > MAX_DIM:
        return (f"dimension {d} > {MAX_DIM}: a grid does not make compact clusters there, "
                "so truncation would keep almost every pair")
    if type(prob.ops).block_sparse is GeometryOps.block_sparse:
        return f"the {prob.backend.name} backend has no block-sparse kernels"
    return None


def multiscale_sinkhorn(
    a: Any,
    b: Any,
    C: PointCloud,
    eps: float,
    *,
    tol: float | None = None,
    truncation: float | None = None,
    n_clusters: int | None = None,
    eps_scaling: float = 0.5,
    max_iter: int = 10_000,
    check_every: int = 10,
    callback: Callable[[IterationInfo], Any] | None = None,
    verbose: bool = False,
    time_limit: float | None = None,
    merge_duplicates: bool = True,
    backend: Any = None,
) -> OTResult:
    r"""Entropic optimal transport between large point clouds in low dimension, by
    multiscale Sinkhorn with truncated kernels.

    Solves the problem of :func:`otcore.sinkhorn` (balanced),

    .. math::

        \min_{P \ge 0,\ P 1 = a,\ P^T 1 = b} \langle C, P \rangle
        + \varepsilon\, \mathrm{KL}(P \,|\, a b^T),
        \qquad P_{ij} = a_i b_j \exp((f_i + g_j - C_{ij}) / \varepsilon),

    by coarse-to-fine eps-scaling on clusters of the points, evaluating at the fine level
    only the pairs of clusters whose plan mass may exceed a bound: the ignored mass is at
    most ``truncation``, checked with the returned potentials (see
    :mod:`otcore.solvers.multiscale` for the bound). The potentials are those of the full
    problem up to that tolerance. It pays for large clouds (``n m`` above about
    ``1e8``) in dimension 2 to 4 and at small ``eps``, where the kept pairs are few; at
    ``eps`` of about ``1e-2`` of the cost scale or more the plan is too blurred for
    truncation to skip much, and in dimension above :data:`MAX_DIM` grids make no compact
    clusters (the solver then runs :func:`otcore.sinkhorn` with eps-scaling and says why
    in ``extra["multiscale"]``).

    Parameters
    ----------
    a, b : array_like or None
        Weights (``None``: uniform), same total mass, as in :func:`otcore.sinkhorn`.
    C : PointCloud
        The clouds and their ground cost (any cost of :class:`~otcore.PointCloud`).
    eps : float
        Entropic regularization, absolute (in the units of the cost).
    tol : float, optional
        Stop when ``marginal_error``, an upper bound of the full plan's L1 marginal error
        (the exact error on the kept pairs plus twice the ignored-mass bound), is below
        ``tol``. Default 1e-9 in float64, 1e-4 in float32.
    truncation : float, optional
        Bound on the plan mass of the ignored pairs, in ``(0, tol / 2)``; default
        ``tol / 10``. Smaller values keep more pairs.
    n_clusters : int, optional
        About how many clusters the larger cloud is cut into; default ``10 sqrt(n)``,
        between 16 and 2000.
    eps_scaling : float in (0, 1), default 0.5
        Factor between consecutive values of eps, on the coarse and on the fine level.
    max_iter : int, default 10000
        Maximum number of fine iterations (the eps-scaling ones included).
    check_every : int, default 10
        Convergence check period at the final eps.
    callback, verbose, time_limit
        Progress and control at the final eps, as in :func:`otcore.sinkhorn`.
    merge_duplicates : bool, default True
        Solve on the distinct points of each cloud, duplicates merged into one point of
        their summed weight, and split the result back: exact (equal points have equal
        potentials, and the plan splits in proportion to the weights), and the work
        shrinks by the ratio of pairs, which is large for quantized data (the 1e6 pixels
        of a photograph hold about 1e5 distinct 8-bit colours). ``extra["distinct_points"]``
        then gives the counts.
    backend : {"numba_cpu", "cupy_gpu", "array_api"} or Backend, optional
        Force a backend. Backends without block-sparse kernels fall back to
        :func:`otcore.sinkhorn`.

    Returns
    -------
    OTResult
        ``method="multiscale_sinkhorn"``. ``plan``, ``apply``, ``barycentric_projection``,
        ``cost``, ``value`` and ``marginals`` are those of the truncated plan (the plan
        above on the kept pairs, 0 elsewhere). ``extra`` holds ``"n_clusters"`` (both
        clouds), ``"kept_fraction"`` (of the ``n m`` pairs, at the final eps),
        ``"ignored_mass_bound"``, ``"kept_marginal_error"`` (exact, of the truncated
        plan), ``"coarse_iter"`` and ``"levels"`` (the fine values of eps); with merged
        duplicates, ``"distinct_points"`` and a ``"kept_fraction"`` of the pairs of
        distinct points.

    Raises
    ------
    ValueError
        For invalid weights or options (naming the argument).
    TypeError
        If ``C`` is not a :class:`~otcore.PointCloud`.

    Warns
    -----
    ConvergenceWarning
        If ``tol`` is not reached within ``max_iter``.

    Examples
    --------
    >>> import numpy as np, otcore as oc
    >>> rng = np.random.default_rng(0)
    >>> x, y = rng.random((2000, 2)), rng.random((1500, 2)) ** 2
    >>> res = oc.multiscale_sinkhorn(None, None, oc.PointCloud(x, y), eps=0.02)
    >>> bool(res.converged), res.extra["ignored_mass_bound"] <= 1e-10
    (True, True)
    """
    eps = check_eps(eps)
    tol = None if tol is None else check_tol(tol)
    max_iter = check_positive_int(max_iter, "max_iter")
    check_every = check_positive_int(check_every, "check_every")
    if not isinstance(merge_duplicates, bool):
        raise TypeError(f"merge_duplicates must be a bool, got {type(merge_duplicates).__name__}")
    eps_scaling = check_fraction(eps_scaling, "eps_scaling")
    if n_clusters is not None:
        n_clusters = check_positive_int(n_clusters, "n_clusters")
    if not isinstance(C, PointCloud):
        raise TypeError(f"C must be a PointCloud for multiscale_sinkhorn, got "
                        f"{type(C).__name__} (a dense cost has no points to cluster)")
    prob = make_problem(a, b, C, backend)
    tol = default_tol(prob.xp, prob.dtype) if tol is None else tol
    if truncation is None:
        truncation = tol / 10
    else:
        truncation = check_eps(truncation, "truncation")
        if not truncation < tol / 2:
            raise ValueError(f"truncation must be below tol / 2 = {tol / 2:.3g} (twice the "
                             f"ignored mass counts in the marginal error), got {truncation}")
    reason = _fallback(prob)
    if reason is not None:
        res = sinkhorn(a, b, C, eps, tol=tol, max_iter=max_iter, check_every=check_every,
                       eps_scaling=eps_scaling, callback=callback, verbose=verbose,
                       time_limit=time_limit, backend=backend)
        res.extra["multiscale"] = f"online Sinkhorn instead: {reason}"
        return res
    monitor = make_monitor("multiscale_sinkhorn", callback, verbose, time_limit, tol)
    try:
        return _solve(prob, eps, tol, truncation, n_clusters, eps_scaling, max_iter,
                      check_every, monitor, merge_duplicates)
    finally:
        monitor.close()


def _solve(prob: Problem, eps: float, tol: float, truncation: float,
           n_clusters: int | None, q: float, max_iter: int, check_every: int,
           monitor: Any, merge: bool) -> OTResult:
    xp, bk, geom = prob.xp, prob.backend, prob.geom
    host = [bk.to_numpy(v) for v in (geom.x, geom.y, prob.a, prob.b)]
    x, y, a, b = (np.asarray(v, dtype=np.float64) for v in host)
    if merge:
        dx, dy = distinct_points(x, a), distinct_points(y, b)
        if dx.count < x.shape[0] or dy.count < y.shape[0]:
            sub = make_problem(*(xp.asarray(d.weight.astype(w.dtype))
                                 for d, w in ((dx, host[2]), (dy, host[3]))),
                               PointCloud(*(xp.asarray(d.points.astype(p.dtype))
                                            for d, p in ((dx, host[0]), (dy, host[1]))),
                                          geom.cost, scale=geom.scale), bk)
            res = _solve(sub, eps, tol, truncation, n_clusters, q, max_iter, check_every,
                         monitor, False)
            return expand_result(res, dx, dy, prob)
    log_a, log_b = (bk.to_numpy(v) for v in prob.log_weights())
    target = n_clusters or _default_clusters(max(x.shape[0], y.shape[0]))
    cell, lo, hi = grid_cell([x, y], target)
    cx = grid_clusters(x, a, geom.ground, cell, lo, hi)
    cy = grid_clusters(y, b, geom.ground, cell, lo, hi)
    bounds = _PairBounds(cx, cy, geom, x, y, log_a, log_b)

    # Coarse level: the clusters' centres, eps-scaling down to where they stop resolving.
    dtype = prob.dtype
    centres = [xp.asarray(c.centre.astype(host[0].dtype)) for c in (cx, cy)]
    coarse = make_problem(xp.asarray(cx.weight.astype(host[2].dtype)),
                          xp.asarray(cy.weight.astype(host[3].dtype)),
                          PointCloud(*centres, geom.cost, scale=geom.scale), bk)
    eps_c = max(eps, float(geom.ground.from_norm(cell)) / geom.scale)
    fc, gc, coarse_iter, _, _ = sinkhorn_loop(coarse, eps_c, tol=max(tol, 1e-6),
                                              max_iter=_COARSE_ITER, eps_scaling=q)

    # Extend the coarse potentials to every point (one softmin against the centres).
    la_c, lb_c = coarse.log_weights()
    f = bk.bind(PointCloud(geom.x, centres[1], geom.cost, scale=geom.scale)).softmin(
        gc + eps_c * lb_c, eps_c, axis=1)
    g = bk.bind(PointCloud(centres[0], geom.y, geom.cost, scale=geom.scale)).softmin(
        fc + eps_c * la_c, eps_c, axis=0)
    f, g = xp.astype(f, dtype), xp.astype(g, dtype)

    # Fine level: eps-scaling, one iteration per value, on the pairs that matter there.
    la, lb = prob.log_weights()
    levels = []
    level = eps_c
    while level > eps and len(levels) < max_iter - 1:
        levels.append(level)
        level *= q
    n_iter = 0
    for level in levels:
        keep, _ = bounds.select(bk.to_numpy(f), bk.to_numpy(g), level, truncation / 2)
        ops = prob.ops.block_sparse(bounds.layout(keep))
        f, g = ops.sinkhorn_iterator(la, lb, level).step(f, g)
        n_iter += 1

    # Final eps: Sinkhorn on the kept pairs, in stretches; after each, the bound is
    # recomputed with the current potentials and the kept pairs chosen again if it fails.
    keep, bound = bounds.select(bk.to_numpy(f), bk.to_numpy(g), eps, truncation / 2)
    fine = dataclasses.replace(prob, ops=prob.ops.block_sparse(bounds.layout(keep)))
    f, g, n_iter, errors = overrelaxed_loop(fine, eps, f, g, tol=tol - 2 * truncation,
                                            max_iter=max_iter, first_iter=n_iter,
                                            monitor=monitor)
    met = bool(errors) and errors[-1][1] < tol - 2 * truncation
    while True:
        if not met:
            f, g, n_iter, met, errs = sinkhorn_loop(
                fine, eps, tol=tol - 2 * truncation,
                max_iter=min(n_iter + max(_STRETCH * check_every, _MIN_STRETCH),
                             max(max_iter, n_iter + 1)),
                check_every=check_every, f=f, g=g, monitor=monitor, first_iter=n_iter)
            errors += errs
        logb = bounds.log_bounds(bk.to_numpy(f), bk.to_numpy(g), eps)
        bound = bounds.dropped(keep, logb)
        if (met and bound <= truncation) or n_iter >= max_iter or monitor.stopped:
            break
        if bound > truncation:  # more pairs kept: iterate on them
            keep, bound = bounds.keep(logb, truncation / 2)
            fine = dataclasses.replace(prob, ops=prob.ops.block_sparse(bounds.layout(keep)))
            met = False
    res = finish_entropic(
        fine, f, g, eps, n_iter=n_iter, errors=errors, tol=tol, method="multiscale_sinkhorn",
        estimate_met=met, advice=monitor.reason() or _ADVICE, ignored_mass=bound,
        extra={"n_clusters": (cx.counts.shape[0], cy.counts.shape[0]),
               "kept_fraction": bounds.kept_fraction(keep), "ignored_mass_bound": bound,
               "coarse_iter": coarse_iter, "levels": levels},
    )
    res.extra["kept_marginal_error"] = res.marginal_error - 2 * bound
    if monitor.stopped:
        res.extra["stopped"] = monitor.stopped
    return res
