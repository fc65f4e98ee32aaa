"""Cardinality-constrained optimal transport (and quadratic OT): dual and semi-dual
solvers.

The problem (Liu, Puigcerver and Blondel, ICLR 2023) is quadratically regularized OT in
which every column of the plan has at most ``k`` nonzeros:

    min_T  <C, T> + (gamma / 2) |T|_F^2   s.t.  T >= 0, T 1 = a, T^T 1 = b,
                                               |T[:, j]|_0 <= k for every j.

It is nonconvex; the two concave maximizations solved here are its relaxations (Blondel,
Seguy and Rolet, AISTATS 2018, with the regularizer of each column restricted to k-sparse
vectors):

* dual:       D(f, g) = <f, a> + <g, b> - sum_j delta_k(f + g_j - C[:, j]),
              delta_k(s) = (1 / 2 gamma) * (sum of the k largest [s_i]_+^2);
* semi-dual:  S(f)    = <f, a> - sum_j b_j max_k,j(f - C[:, j]),
              max_k,j(x) = max over k-sparse y in the simplex of <x, y> - gamma b_j |y|^2 / 2,
              whose maximizer is the k-sparse simplex projection of x / (gamma b_j).

For every f, g: D(f, g) <= S(f), with equality at g = -theta(f) (minus the semi-dual's
simplex thresholds), so the two have the same optimal value; and S(f) <= the primal
objective of every feasible k-sparse plan. Both are concave, and smooth except where the
top-k selection changes. The semi-dual is maximized by a semismooth Newton method
(:mod:`otcore.solvers._cardinality_newton`) where the maximum is smooth, in particular
for k >= n (quadratically regularized OT), and by SciPy's L-BFGS-B at kinks and for the
dual; value, gradient and the generalised Hessian's systems come from the backend's
kernels (``GeometryOps.topk`` of the kernel contract, :mod:`otcore.backends._contract`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
from scipy import optimize, sparse

from .._array import host_dtype
from .._validation import (
    check_bool,
    check_choice,
    check_eps,
    check_positive_int,
    check_tol,
)
from ..backends._contract import TopK
from ..collection import is_batch
from ..geometry import PointCloud
from ..result import BatchResult, OTResult, warn_not_converged
from ._cardinality_newton import newton_semi_dual
from ._cardinality_rebuild import rebuild_k1
from ._each import solve_each
from ._monitor import IterationInfo, Monitor, make_monitor
from ._problem import Problem, make_problem

__all__ = ["cardinality_ot"]

#: L1 marginal error (relative to the mass) of the Newton warm-start stages.
_STAGE_TOL = 1e-6
#: Evaluations without progress before a Newton run for k < n gives way to L-BFGS-B.
_PATIENCE = 10
#: Scores closer than this (relative to the cost scale) count as tied (a kink).
_TIE = 1e-7
#: L-BFGS-B restarts (fresh curvature memory) after it stalls at a kink.
_MAX_RESTARTS = 5
#: L-BFGS-B memory (SciPy's default is 10; more pairs help on these nonsmooth objectives).
_MEMORY = 30
#: Warm start: quadratically regularized OT solved at gamma * 10**s for these s in turn.
_STAGES = (2, 1, 0)
#: The same for k = 1, whose target potentials are those of unregularized OT.
_STAGES_K1 = (2, 1, 0, -1, -2, -3, -4, -5)


def _topk(obj: _Objective, alpha: np.ndarray, beta: Any, gamma: float, k: int,
          simplex: bool, width: int = 0) -> TopK:
    """One evaluation of the top-k kernel over ``obj``'s groups at other settings, with
    host outputs."""
    return _on_host(obj.bk, obj.ops.topk(obj.axis, obj.q_dev, gamma, k, simplex), alpha,
                    beta, width)


def _on_host(bk: Any, evaluate: Any, alpha: np.ndarray, beta: Any,
             width: int | None = 0) -> TopK:
    """Outputs of a top-k evaluator (``GeometryOps.topk``) at host vectors, on the host.

    Only vectors of length ``n + m`` (and the ``(m, width)`` listed entries) move between
    host and device; the cost stays where it is (as does ``beta`` when it is already a
    device array). With ``width=None`` it returns every positive entry: a first call
    counts them, a second one writes them.
    """
    xp = bk.xp
    alpha, beta = xp.asarray(alpha), xp.asarray(beta)
    out = TopK(*(bk.to_numpy(v) for v in evaluate(alpha, beta, width or 0)))
    if width is None:
        width = int(out.nnz.max(initial=0))
        out = TopK(*(bk.to_numpy(v) for v in evaluate(alpha, beta, width)))
    return out


class _Objective:
    """Negated (semi-)dual objective and its gradient, for :func:`scipy.optimize.minimize`.

    ``p`` is the marginal of the side that the kernel sums over (length ``n_other``), ``q``
    the marginal of the constrained groups (length ``n_groups``). The variable is ``f``
    (semi-dual) or ``(f, g)`` stacked (dual).
    """

    def __init__(self, prob: Problem, axis: int, p: np.ndarray, q: np.ndarray, gamma: float,
                 k: int, simplex: bool):
        self.prob, self.bk, self.ops = prob, prob.backend, prob.ops
        self.axis, self.p, self.q = axis, p, q
        self.gamma, self.k, self.simplex = gamma, k, simplex
        self.n = p.shape[0]
        self.zeros = np.zeros_like(q)
        # loop-invariant kernel inputs, moved to the backend's device once
        xp = prob.backend.xp
        self.q_dev, self.zeros_dev = xp.asarray(q), xp.asarray(self.zeros)
        self.evaluator = prob.ops.topk(axis, self.q_dev, gamma, k, simplex)
        self.width = k if k < self.n else min(self.n, 16)  # support listing (supports)
        self.scale = 1.0  # SciPy minimizes -scale * objective
        self.last: tuple[np.ndarray, float] | None = None  # (x, L1 marginal error)
        self.listed: tuple[np.ndarray, TopK] | None = None  # the last supports() call

    def kernel(self, x: np.ndarray, width: int | None = 0) -> TopK:
        """The backend's top-k kernel at ``x``, on the host."""
        f = x[: self.n]
        g = self.zeros_dev if self.simplex else x[self.n:]
        return _on_host(self.bk, self.evaluator, f, g, width)

    def evaluate(self, x: np.ndarray, width: int | None = 0
                 ) -> tuple[float, np.ndarray, float, tuple]:
        """Objective (to maximize), its gradient, the L1 marginal error of the kernel plan,
        and the kernel outputs (with ``width`` plan entries per group), at ``x``."""
        if width is None and self.listed is not None and np.array_equal(self.listed[0], x):
            out = TopK(*(self.bk.to_numpy(v) for v in self.listed[1]))  # every entry listed
        else:
            out = self.kernel(x, width)
        return (*self._assemble(x, out.value, out.other, out.mass), out)

    def supports(self, x: np.ndarray) -> tuple[float, np.ndarray, float, TopK]:
        """As :meth:`evaluate` (semi-dual), with every positive entry listed and the kernel
        outputs left on the backend's device (for ``TopKEvaluator.hessian_solve``).

        For ``k < n`` the listing is ``k`` wide; for ``k >= n`` as wide as the largest
        support seen so far (plus a margin), and evaluated again when a support outgrows it.
        """
        bk, xp = self.bk, self.bk.xp
        alpha = xp.asarray(x)
        out = self.evaluator(alpha, self.zeros_dev, self.width)
        largest = int(bk.to_numpy(out.nnz).max(initial=0))
        if largest > self.width:
            self.width = min(self.n, largest + largest // 4 + 1)
            out = self.evaluator(alpha, self.zeros_dev, self.width)
        value, other = (bk.to_numpy(v) for v in (out.value, out.other))
        self.listed = (x.copy(), out)
        return (*self._assemble(x, value, other, None), out)

    def _assemble(self, x: np.ndarray, value: np.ndarray, other: np.ndarray,
                  mass: np.ndarray | None) -> tuple[float, np.ndarray, float]:
        """Objective, gradient and L1 marginal error from the kernel's host outputs."""
        f = x[: self.n]
        grad = self.p - other
        total = f @ self.p - value.sum()
        if not self.simplex:
            total += x[self.n:] @ self.q
            grad = np.concatenate([grad, self.q - mass])
        err = float(np.abs(grad).sum())  # finite if and only if every entry is
        if not (math.isfinite(total) and math.isfinite(err)):
            raise FloatingPointError(
                "the cardinality objective became non-finite; this is a bug, please report "
                "it with the input that triggers it"
            )
        return float(total), grad, err

    def variant(self, gamma: float, k: int, simplex: bool) -> _Objective:
        """The objective of the same problem at other settings (warm-start stages)."""
        return _Objective(self.prob, self.axis, self.p, self.q, gamma, k, simplex)

    def __call__(self, x: np.ndarray) -> tuple[float, np.ndarray]:
        value, grad, err, _ = self.evaluate(x)
        self.last = (x.copy(), err)
        return -self.scale * value, -self.scale * grad


def _maximize(obj: _Objective, x0: np.ndarray, tol: float, max_iter: int, errors: list,
              monitor: Monitor | None = None):
    """Maximize ``obj`` from ``x0`` with L-BFGS-B.

    The objective is scaled by ``1 / |objective(x0)|`` so that SciPy's ``ftol`` test (a
    decrease relative to ``max(|f|, 1)``) is relative to the objective's own magnitude,
    and ``gtol`` is rescaled so that it still bounds the largest gradient entry (the
    largest marginal violation) by ``tol``. At a kink of these nonsmooth objectives
    L-BFGS-B tends to stop early (its ``ftol`` test, or a failed line search); it is then
    restarted from where it stopped with a fresh curvature memory, up to
    ``_MAX_RESTARTS`` times, while a restart still improves the objective by more than
    ``tol`` relative; a restart that does not improve leaves the reported status to the
    run before it. Appends ``(iteration, L1 marginal error)`` to ``errors``, numbering
    iterations after the ones already there. Returns the best ``x``, the iterations done,
    SciPy's success flag of the last run that improved (or of the first) and its message.
    """
    start = errors[-1][0] if errors else 0
    n_iter = 0

    def record(intermediate_result):
        nonlocal n_iter
        n_iter += 1
        if obj.last is not None and np.array_equal(obj.last[0], intermediate_result.x):
            errors.append((start + n_iter, obj.last[1]))
            if monitor is not None and monitor.active and monitor.check(*errors[-1]):
                raise StopIteration  # SciPy ends the run with the last iterate

    value0 = obj.evaluate(x0)[0]
    obj.scale = 1.0 / abs(value0) if value0 != 0 else 1.0
    gtol = tol * obj.scale
    x, best = x0, -obj.scale * value0  # SciPy's (scaled, negated) objective at x0
    for run in range(_MAX_RESTARTS + 1):
        res = optimize.minimize(
            obj, x, jac=True, method="L-BFGS-B", callback=record,
            options={"maxiter": max(1, max_iter - n_iter), "ftol": tol, "gtol": gtol,
                     "maxcor": _MEMORY, "maxfun": 20 * max_iter},
        )
        improved = res.fun < best - tol * max(1.0, abs(best))
        if res.fun <= best:
            x, best = res.x, res.fun
        if run == 0 or improved:  # a restart that did not improve keeps the last status
            status, message = res.status, str(res.message)
        if (not improved or n_iter >= max_iter or res.status == 1
                or (monitor is not None and monitor.stopped)
                or np.max(np.abs(res.jac)) <= gtol):
            break
    return x, n_iter, status == 0, message


def _solve(obj: _Objective, x0: np.ndarray, tol: float, max_iter: int, errors: list,
           monitor: Monitor | None = None, newton_tol: float | None = None
           ) -> tuple[np.ndarray, int, str, str]:
    """Maximize ``obj`` from ``x0``; returns ``x``, the iterations done (of every method),
    a message saying which method ended the run and how, and the status of the Newton
    run that ended it (``NewtonRun.status``; ``""`` when L-BFGS-B did).

    The semi-dual with ``k >= 2`` runs the semismooth Newton method
    (:func:`newton_semi_dual`, to ``newton_tol``, default ``tol``) where the backend has
    the Hessian kernels. For ``k >= n`` (a smooth problem) it has the whole iteration
    budget, and L-BFGS-B (:func:`_maximize`) continues only if it stalls. For ``k < n``
    the maximum often lies on a kink, where Newton's method makes no headway: it gets
    ``_PATIENCE`` evaluations without progress, then L-BFGS-B runs from ``x0`` and Newton's
    method once more from where L-BFGS-B stopped (the maximum may be smooth after all);
    the best point is kept. Everything else runs L-BFGS-B alone.
    """
    newton_tol = tol if newton_tol is None else newton_tol
    smooth = obj.k >= obj.n
    used, best = 0, None
    if obj.simplex and obj.k >= 2:
        try:
            run = newton_semi_dual(obj, x0, newton_tol, max_iter, errors, monitor,
                                   None if smooth else _PATIENCE)
        except NotImplementedError:  # a backend without TopKEvaluator.hessian_solve
            run = None
        if run is not None:
            used, best = run.n_iter, run
            if run.status in ("converged", "rounding", "max_iter", "stopped"):
                return run.x, used, f"semismooth Newton: {run.message}", run.status
            if smooth:
                x0 = run.x
    x, it, _, message = _maximize(obj, x0, tol, max_iter - used, errors, monitor)
    used += it
    message = f"L-BFGS-B: {message.lower().rstrip(': .')}"
    if best is not None and not smooth and not (monitor is not None and monitor.stopped):
        run = newton_semi_dual(obj, x, newton_tol, max(1, max_iter - used), errors, monitor,
                               _PATIENCE)
        used += run.n_iter
        if run.status in ("converged", "rounding"):
            return run.x, used, f"semismooth Newton after L-BFGS-B: {run.message}", run.status
        value, best = max(((obj.evaluate(r.x)[0], r) for r in (run, best)),
                          key=lambda pair: pair[0])
        if value > obj.evaluate(x)[0]:
            return best.x, used, f"semismooth Newton: {best.message}", best.status
    return x, used, message, ""


def _warm_start(obj: _Objective, tol: float, max_iter: int, errors: list,
                monitor: Monitor | None = None) -> tuple[np.ndarray, int]:
    """Semi-dual potentials of quadratically regularized OT (no sparsity constraint; a
    smooth problem), solved by continuation in its regularization: for ``gamma * 10**s``,
    ``s`` in ``_STAGES``, each stage started from the previous one and given at most
    ``max_iter`` iterations (:func:`_solve`; Newton stages to an L1 marginal error of
    ``_STAGE_TOL`` of the mass). For ``k = 1`` the stages go on down to
    ``s = -5`` with L-BFGS-B: the target potentials are then those of unregularized OT, which
    quadratically regularized OT approaches as its ``gamma`` goes to 0. The stage equal
    to the target problem (``k >= n``, ``s = 0``) is skipped. Returns ``f`` and the
    iterations used.
    """
    n_other = obj.p.shape[0]
    f, used = np.zeros(n_other), 0
    stages = _STAGES_K1 if obj.k == 1 else _STAGES[:-1] if obj.k >= n_other else _STAGES
    loose = max(tol, _STAGE_TOL * float(obj.p.sum()))
    for s in stages:
        stage = obj.variant(obj.gamma * 10.0**s, n_other, True)
        if obj.k == 1:
            f, it, _, _ = _maximize(stage, f, tol, max_iter, errors, monitor)
        else:
            f, it, _, _ = _solve(stage, f, tol, max_iter, errors, monitor, newton_tol=loose)
        used += it
        if monitor is not None and monitor.stopped:
            break
    return f, used


def _kinks(obj: _Objective, f: np.ndarray, nnz: np.ndarray, reach: float) -> int:
    """Number of groups whose ``k``-th entry carries mass and whose ``k``-th and
    ``(k + 1)``-th scores ``f_i - K_ji`` are tied, to within ``reach`` (and at least
    ``_TIE`` of the cost scale): there the semi-dual is not differentiable, and a move of
    the potentials by ``reach`` changes the selection, and with it the plan."""
    n_other, k = obj.p.shape[0], obj.k
    if k >= n_other:
        return 0
    scale = obj.ops.cost_scale()
    shift = np.full(obj.q.shape[0], float(np.ptp(f)) + scale + 1.0)  # every entry positive
    out = _topk(obj, f, shift, 1.0, k + 1, False, k + 1)
    gap = out.val[:, k - 1] - out.val[:, k]
    tie = max(_TIE * max(scale, 1e-300), reach)
    return int(np.count_nonzero((gap <= tie) & (nnz >= k)))


def _plan_matrix(idx: np.ndarray, val: np.ndarray, shape: tuple[int, int], axis: int,
                 dtype: Any) -> sparse.csr_matrix:
    """CSR plan from per-group indices/values (groups are columns if ``axis == 0``)."""
    group, pos = np.nonzero(val > 0)
    other = idx[group, pos]
    rows, cols = (other, group) if axis == 0 else (group, other)
    plan = sparse.csr_matrix((val[group, pos].astype(dtype), (rows, cols)), shape=shape)
    plan.eliminate_zeros()  # entries below float32's range
    plan.sort_indices()
    return plan


def _top_entries(obj: _Objective, alpha: np.ndarray, beta: np.ndarray, width: int):
    """Per group, the ``width`` largest positive ``alpha_i + beta_j - K_ji``, as arrays
    ``(group, other, value)`` (the kernel in dual mode with ``gamma = 1``, ``k = n``)."""
    out = _topk(obj, alpha, beta, 1.0, obj.p.shape[0], False, min(width, obj.p.shape[0]))
    idx, val = out.idx, out.val
    group, pos = np.nonzero(val > 0)
    return group, idx[group, pos], val[group, pos]


def cardinality_ot(
    a: Any,
    b: Any,
    C: Any,
    k: int | None,
    gamma: float,
    *,
    formulation: str = "semi-dual",
    constrain: str = "columns",
    tol: float = 1e-9,
    max_iter: int = 1000,
    warm_start: bool = True,
    rebuild_plan: bool = False,
    callback: Callable[[IterationInfo], Any] | None = None,
    verbose: bool = False,
    time_limit: float | None = None,
    backend: Any = None,
) -> OTResult | BatchResult:
    r"""Optimal transport with at most ``k`` nonzeros per column of the plan; with
    ``k=None``, quadratically regularized OT.

    Solves a relaxation of

    .. math::

        \min_{T \ge 0,\ T 1 = a,\ T^T 1 = b,\ \|T_{:, j}\|_0 \le k}
        \langle C, T \rangle + \frac{\gamma}{2} \|T\|_F^2

    (each target ``j`` receives mass from at most ``k`` sources), following Liu,
    Puigcerver and Blondel (ICLR 2023), by maximizing its dual or its semi-dual (a
    semismooth Newton method where the maximum is smooth, SciPy's L-BFGS-B at kinks).
    For ``k >= n`` the constraint is void and this is quadratically regularized OT, a
    smooth problem solved to ``tol``. The returned plan is

    .. math::

        T_{ij} = \frac{1}{\gamma} [f_i + g_j - C_{ij}]_+
        \quad \text{for the } k \text{ largest } f_i - C_{ij} \text{ of column } j,

    and 0 elsewhere, so every column has at most ``k`` nonzeros.

    Parameters
    ----------
    a : array of shape (n,) or None
        Source weights (nonnegative); ``None`` means uniform ``1/n``.
    b : array of shape (m,) or None
        Target weights, same total mass as ``a``; ``None`` means uniform ``1/m``.
    C : array of shape (n, m), DenseCost or PointCloud
        The cost. A point cloud is evaluated once into an ``(m, n)`` matrix (these solvers
        need ``O(n m)`` memory). Batches in the forms of :func:`otcore.sinkhorn` are
        accepted and solved one problem after the other (a :class:`~otcore.BatchResult`).
    k : int or None
        Maximum number of nonzeros per column, ``>= 1``. ``None`` (or any ``k >= n``)
        gives exactly quadratically regularized OT, the counterpart of POT's
        ``ot.smooth`` l2 solvers and ``ot.solve(C, a, b, reg=gamma, reg_type="L2")``;
        ``k = 1`` is the unregularized limit (see Notes).
    gamma : float
        Weight of the squared-L2 regularization ``(gamma / 2) |T|_F^2``, > 0, in the units
        of ``C`` divided by the units of mass. The same parameter as ``reg`` in POT's
        ``ot.smooth``.
    formulation : {"semi-dual", "dual"}, default "semi-dual"
        ``"semi-dual"`` maximizes
        :math:`S(f) = \langle f, a \rangle - \sum_j b_j \max_{k,j}(f - C_{:, j})`, where
        :math:`\max_{k,j}(x) = \max_{y \in \Delta,\ \|y\|_0 \le k} \langle x, y \rangle
        - \frac{\gamma b_j}{2} \|y\|^2` is attained at the k-sparse simplex projection of
        :math:`x / (\gamma b_j)`: the plan's **column marginal is exact** (``T^T 1 = b``)
        and ``tol`` bounds the L1 error of the row marginal. ``"dual"`` maximizes
        :math:`D(f, g) = \langle f, a \rangle + \langle g, b \rangle - \sum_j
        \frac{1}{2\gamma} \mathrm{top}_k([f + g_j - C_{:, j}]_+^2)`: **neither marginal is
        exact**, and ``tol`` bounds the sum of their L1 errors; it starts from the
        semi-dual's solution (see Notes). For any potentials
        ``D(f, g) <= S(f)``, with equality when ``g`` is the semi-dual's ``g`` at ``f``:
        both have the same optimal value, at most the primal objective of any feasible
        k-sparse plan. The semi-dual has fewer variables and an exact column marginal.
    constrain : {"columns", "rows"}, default "columns"
        ``"rows"`` bounds the nonzeros of every row instead (each source sends mass to at
        most ``k`` targets); then the semi-dual keeps the **row** marginal exact. This is
        the same problem on ``C.T``, and the result is transposed back.
    tol : float, default 1e-9
        Bound on the L1 marginal error of the returned plan,
        ``|T 1 - a|_1 + |T^T 1 - b|_1`` (only the row term for the semi-dual, whose column
        marginal is exact; the reverse with ``constrain="rows"``). ``converged`` is True
        exactly when the returned plan meets it. Where the maximum lies on a kink (tied
        scores in the top-``k`` selection, typical for small ``k`` and always for
        ``k = 1``) no plan of one selection meets the marginal: the run then ends with
        ``converged=False``, the status ``"nonsmooth"`` and a warning (see Returns). In
        float64 the L1 error cannot go much below ``n * 1e-16`` of the mass (status
        ``"rounding"``).
    max_iter : int, default 1000
        Maximum number of iterations (Newton steps and L-BFGS-B iterations together) on
        the target objective; each warm-start stage has the same limit.
    warm_start : bool, default True
        Start from the potentials of quadratically regularized OT solved by continuation
        in ``gamma`` (see Notes); False starts from zero potentials, as POT does.
    rebuild_plan : bool, default False
        Only for ``k = 1`` with the semi-dual: return, instead of the 1-sparse plan, the
        plan rebuilt from the potentials on their tight support and fitted to both
        marginals (an exact unregularized OT plan; not 1-sparse in general). The 1-sparse
        plan is then kept in ``extra["sparse_plan"]``.
    callback, verbose, time_limit
        As in :func:`otcore.sinkhorn`, checked at every Newton step and L-BFGS-B
        iteration (warm-start stages included; ``IterationInfo.error`` is the L1 marginal
        error of the kernel plan, ``n_iter`` counts every iteration so far).
    backend : {"numba_cpu", "cupy_gpu", "array_api"} or Backend, optional
        Force a backend; by default it follows the array type.

    Returns
    -------
    OTResult
        ``f``, ``g``: the potentials of the plan formula above (for the semi-dual ``g`` is
        minus the simplex threshold of each column), arrays of the input's namespace.
        ``plan``: a :class:`scipy.sparse.csr_matrix` for CPU data of any library (NumPy,
        PyTorch, JAX, lists), a :class:`cupyx.scipy.sparse.csr_matrix` on the current
        device for CUDA data (a dense array of the input namespace for other Array-API
        libraries), in the dtype of ``C``; so is
        ``extra["sparse_plan"]``. ``value``: the maximized objective
        (``S(f)`` or ``D(f, g)``). ``cost``: ``<C, T>``. ``marginal_error``:
        ``|T 1 - a|_1 + |T^T 1 - b|_1``. ``converged``: ``marginal_error <= tol``.
        ``n_iter``, and ``errors``: the L1 marginal error of the kernel plan at every
        iteration. ``extra`` holds ``status`` (``"converged"``; ``"nonsmooth"``: the
        optimizers stopped before the iteration limit at a kink, ``k = 1`` or scores
        tied closer than ``gamma`` times the largest marginal violation (the move of the
        potentials that would correct it), and the error cannot reach ``tol``;
        ``"rounding"``: ``tol`` is below the rounding error of the marginals;
        ``"not_converged"``: the iteration limit, or a stop without such ties;
        ``"stopped"``: by ``callback`` or
        ``time_limit``), ``message`` (why, and which method ended the run), ``row_error``
        and ``col_error`` (the two marginal errors), ``primal`` (the primal objective
        ``<C, T> + gamma/2 |T|^2`` of the returned plan), ``max_nnz`` (largest
        number of nonzeros in a constrained column or row),
        ``warm_start_iter`` and, with ``rebuild_plan``, ``sparse_plan`` with its
        ``sparse_row_error`` and ``sparse_col_error``, and ``rebuild_lps`` (linear
        programs solved).

    Raises
    ------
    ValueError
        For ``k < 1``, ``gamma <= 0``, an unknown ``formulation``/``constrain``,
        ``rebuild_plan`` without ``k = 1`` and the semi-dual, bad weights or costs.
    TypeError
        For a non-integer ``k`` or a non-bool ``rebuild_plan``.

    Warns
    -----
    ConvergenceWarning
        Whenever the returned plan does not meet ``tol`` (then ``converged`` is False),
        with the status's explanation.

    See Also
    --------
    otcore.sinkhorn : Entropic OT (dense plans).

    Notes
    -----
    *Ties.* In every column the ``k`` largest scores ``f_i - C_ij`` (plus ``g_j``) are
    selected; of two equal scores the smaller row index wins, so results are
    deterministic.

    *Limits.* For ``k >= n`` (``k=None``) the sparsity constraint is void and the
    semi-dual is that of quadratically regularized OT
    (``ot.smooth.smooth_ot_semi_dual(reg_type="l2")``, RegOT's ``qrot_*``). ``value`` is
    the maximized dual objective, equal at the optimum to ``<C, T> + gamma/2 |T|^2``;
    POT's ``ot.solve(..., reg_type="L2").value`` reports ``<C, T> + gamma |T|^2`` for
    the same plan.
    For ``k = 1`` the semi-dual equals the semi-dual of unregularized OT plus
    ``(gamma / 2) |b|^2``: its optimum is ``OT(a, b) + (gamma / 2) |b|^2`` and ``f`` is
    an optimal unregularized potential. A plan with one source per column generally
    cannot meet the row marginal, though; the returned 1-sparse plan keeps its row error
    (reported in ``extra["row_error"]``), and ``rebuild_plan=True`` gives an exact OT plan
    instead.

    *Optimizer.* Both objectives are concave but nonsmooth where the top-k selection
    changes, more so for small ``k`` and small ``gamma``. With ``warm_start`` (the default)
    the semi-dual potentials of quadratically regularized OT (``k = n``, a smooth problem)
    are computed first for ``gamma * 10**s``, ``s = 2, 1`` (and ``0`` for ``k < n``) by
    Newton's method to an L1 error of ``1e-6`` of the mass (L-BFGS-B down to ``s = -5``
    for ``k = 1``, whose optimal potentials are those of unregularized OT), each stage
    started from the previous one. The semi-dual is then maximized by a semismooth Newton
    method: on the supports :math:`S_j` of the plan's columns the row marginal has the
    Jacobian :math:`H = \frac{1}{\gamma} \sum_j (\mathrm{diag}(1_{S_j}) - 1_{S_j}
    1_{S_j}^T / |S_j|)` (independent of ``b``), a graph Laplacian over the rows sharing a
    column's support; each step solves :math:`(H + \mu I) d = a - T 1` by
    preconditioned conjugate gradients in the backend's kernel, with a
    Levenberg-Marquardt shift :math:`\mu` proportional to the error and adapted to a line
    search. Where the maximum is smooth (always for ``k >= n``) this converges
    superlinearly to ``tol``. For ``1 < k < n`` Newton's method gets a few evaluations
    without progress; then L-BFGS-B (memory 30, restarted at kinks while that improves the
    objective) maximizes from the warm start, and Newton's method tries once more from
    where it stopped. For ``k >= 2`` the dual starts from ``(f, -theta)`` of the
    semi-dual's solution (a maximizer of the dual wherever the semi-dual is smooth
    there), for ``k = 1`` from that of the warm start, and continues with L-BFGS-B.
    ``n_iter`` counts the iterations on the target objective, ``extra["warm_start_iter"]``
    the others; ``errors`` records both.

    *Precision.* The objective and gradient are evaluated in float64 (SciPy's L-BFGS-B
    works in float64); a float32 cost is read as float32, and ``f``, ``g`` and the plan
    are returned in float32.

    *Devices.* The cost is laid out once on the backend's device and every evaluation of
    the objective runs there (``GeometryOps.topk`` of the kernel contract); L-BFGS-B
    and the Newton iteration run on the host (the Newton systems on the device),
    so with CuPy input each evaluation moves ``O(n + m)`` numbers between host and device,
    never the cost. As for every CuPy input, work
    inside ``cupy.cuda.Device(i)`` for arrays on a device other than the current one.

    References
    ----------
    T. Liu, J. Puigcerver, M. Blondel. Sparsity-constrained optimal transport. ICLR 2023.
    M. Blondel, V. Seguy, A. Rolet. Smooth and sparse optimal transport. AISTATS 2018.

    Examples
    --------
    >>> import numpy as np, otcore as oc
    >>> rng = np.random.default_rng(0)
    >>> x, y = rng.normal(size=(30, 2)), rng.normal(size=(20, 2))
    >>> C = ((x[:, None] - y[None]) ** 2).sum(-1)
    >>> res = oc.cardinality_ot(None, None, C / C.max(), k=2, gamma=0.1)
    >>> int(np.diff(res.plan.tocsc().indptr).max()) <= 2
    True
    >>> bool(abs(res.extra["col_error"]) < 1e-12)  # the semi-dual keeps T^T 1 = b
    True

    The maximum for ``k = 2`` usually lies on a kink, and the result says so; quadratic
    OT (``k=None``) is smooth and meets ``tol``:

    >>> res.extra["status"], bool(res.converged)
    ('nonsmooth', False)
    >>> quad = oc.cardinality_ot(None, None, C / C.max(), k=None, gamma=0.1)
    >>> quad.extra["status"], bool(quad.marginal_error <= 1e-9)
    ('converged', True)

    With ``k = 1`` the value is the unregularized OT cost plus ``(gamma / 2) |b|^2``, and
    ``rebuild_plan=True`` returns an optimal transport plan that meets both marginals:

    >>> res1 = oc.cardinality_ot(None, None, C / C.max(), k=1, gamma=0.1, rebuild_plan=True)
    >>> bool(res1.marginal_error < 1e-9), bool(res1.extra["sparse_row_error"] > 0)
    (True, True)
    """
    k = None if k is None else check_positive_int(k, "k")
    gamma = check_eps(gamma, "gamma")
    formulation = check_choice(formulation, "formulation", ("semi-dual", "dual"))
    constrain = check_choice(constrain, "constrain", ("columns", "rows"))
    tol = check_tol(tol)
    max_iter = check_positive_int(max_iter, "max_iter")
    warm_start = check_bool(warm_start, "warm_start")
    rebuild_plan = check_bool(rebuild_plan, "rebuild_plan")
    if rebuild_plan and (k != 1 or formulation != "semi-dual"):
        raise ValueError(
            "rebuild_plan=True needs k=1 and formulation='semi-dual' (the plan is rebuilt "
            f"from exact OT potentials); got k={k}, formulation={formulation!r}"
        )
    if is_batch(a, b, C):
        return solve_each(
            cardinality_ot, a, b, C, k, gamma, formulation=formulation, constrain=constrain,
            tol=tol, max_iter=max_iter, warm_start=warm_start, rebuild_plan=rebuild_plan,
            callback=callback, verbose=verbose, time_limit=time_limit, backend=backend)
    monitor = make_monitor(f"cardinality_ot ({formulation})", callback, verbose, time_limit,
                           tol)
    prob = make_problem(a, b, C, backend)
    if getattr(prob.geom, "forbidden", False):
        raise ValueError("C: cardinality_ot does not take +inf costs (forbidden pairs); "
                         "use a large finite cost instead")
    axis = 0 if constrain == "columns" else 1
    simplex = formulation == "semi-dual"
    a64, b64 = (prob.backend.to_numpy(w).astype(np.float64) for w in (prob.a, prob.b))
    p, q = (a64, b64) if axis == 0 else (b64, a64)
    k = p.shape[0] if k is None else k  # k >= n: quadratically regularized OT
    obj = _Objective(prob, axis, p, q, gamma, k, simplex)

    errors: list = []
    extra: dict = {"warm_start_iter": 0}
    semi = obj if simplex else obj.variant(gamma, k, True)
    try:
        x0 = np.zeros(p.shape[0])
        if warm_start:
            x0, extra["warm_start_iter"] = _warm_start(obj, tol, max_iter, errors, monitor)
            if not simplex and k >= 2 and not monitor.stopped:
                # the dual starts at (f, -theta(f)) of the semi-dual's solution (Newton's
                # method where it applies), where D(f, g) = S(f): a maximizer of the dual
                # wherever S is smooth at f
                x0, it, _, _ = _solve(semi, x0, tol, max_iter, errors, monitor)
                extra["warm_start_iter"] += it
        if not simplex:
            g0 = -_topk(obj, x0, obj.zeros_dev, gamma, k, True).theta if warm_start else \
                np.zeros(q.shape[0])
            x0 = np.concatenate([x0, g0])
        if monitor.stopped:  # during the warm start: no run on the target objective
            x, n_iter, message, ended = x0, 0, monitor.reason(), "stopped"
        else:
            x, n_iter, message, ended = _solve(obj, x0, tol, max_iter, errors, monitor)
    finally:
        monitor.close()
    value, grad, _, out = obj.evaluate(x, width=None)
    pot_other = x[: p.shape[0]]
    pot_group = -out.theta if simplex else x[p.shape[0]:]
    extra.update(max_nnz=int(np.count_nonzero(out.val, axis=1).max()))
    plan = _plan_matrix(out.idx, out.val, prob.geom.shape, axis,
                        host_dtype(prob.xp, prob.dtype))
    if rebuild_plan:
        plan = _rebuild(obj, plan, pot_other, extra)
    error = sum(_marginal_errors(plan, a64, b64))
    method = f"cardinality_ot ({formulation})"
    converged = error <= tol and not monitor.stopped
    if monitor.stopped:
        extra.update(status="stopped", stopped=monitor.stopped)
        message = monitor.reason()
        warn_not_converged(method, n_iter, error, tol, message)
    elif converged:
        extra["status"] = "converged"
    elif ended in ("converged", "rounding"):  # the kernel plan's error, in float64
        extra["status"] = "rounding"
        message = (f"{message}; tol is below the rounding error of the plan's marginals in "
                   "float64")
        warn_not_converged(method, n_iter, error, tol, message)
    elif n_iter >= max_iter:
        extra["status"] = "not_converged"
        message = _explain(k, 0, message)
        warn_not_converged(method, n_iter, error, tol, message)
    else:
        # the potentials would have to move by about gamma times the largest violation of
        # the marginal on their side to correct it: ties within that reach are kinks
        reach = gamma * float(np.max(np.abs(grad[: p.shape[0]]), initial=0.0))
        kinks = _kinks(semi, pot_other, out.nnz if simplex else
                       _topk(obj, pot_other, obj.zeros_dev, gamma, k, True).nnz, reach)
        extra["status"] = "nonsmooth" if k == 1 or kinks else "not_converged"
        message = _explain(k, kinks, message)
        warn_not_converged(method, n_iter, error, tol, message)
    extra["message"] = message
    f, g = (pot_other, pot_group) if axis == 0 else (pot_group, pot_other)
    return _sparse_result(prob, plan, f, g, gamma, value=value, n_iter=n_iter,
                          converged=converged, method=method, errors=errors, extra=extra)


def _explain(k: int, kinks: int, message: str) -> str:
    """Why the marginal error stayed above ``tol``, for the status message and warning."""
    if k == 1:
        return ("k = 1: the semi-dual is piecewise linear and its maximum lies on a kink; a "
                "plan with one entry per group generally cannot meet the other marginal "
                "(rebuild_plan=True returns an exact OT plan instead). " + message)
    if kinks:
        return (f"the maximum lies on a kink of the objective: in {kinks} group(s) the k-th "
                "and (k+1)-th scores are tied (closer than gamma times the largest marginal "
                "violation, the move of the potentials that would correct it), and the plan "
                f"of one top-k selection cannot meet the marginal to tol. {message}")
    return f"{message}. Increase max_iter, or tol."


def _rebuild(obj: _Objective, plan: sparse.csr_matrix, f: np.ndarray, extra: dict
             ) -> sparse.csr_matrix:
    """The exact OT plan of a ``k = 1`` semi-dual solution (:func:`rebuild_k1`); the
    1-sparse plan and its marginal errors go to ``extra``."""
    bk, prob = obj.bk, obj.prob
    a64, b64 = (obj.p, obj.q) if obj.axis == 0 else (obj.q, obj.p)
    extra["sparse_plan"] = bk.sparse_from_host(plan)
    extra["sparse_row_error"], extra["sparse_col_error"] = _marginal_errors(plan, a64, b64)
    group, other, t, extra["rebuild_lps"] = rebuild_k1(
        lambda alpha, beta, width: _top_entries(obj, alpha, beta, width),
        f, obj.p, obj.q, prob.ops.cost_scale())
    rows, cols = (other, group) if obj.axis == 0 else (group, other)
    rebuilt = sparse.csr_matrix((t.astype(plan.dtype), (rows, cols)), shape=plan.shape)
    rebuilt.eliminate_zeros()
    return rebuilt


def _sparse_result(prob: Problem, plan: sparse.csr_matrix, f: np.ndarray, g: np.ndarray,
                   gamma: float, **fields: Any) -> OTResult:
    """The :class:`~otcore.OTResult` of a sparse host plan: its cost (from the kernel
    contract's ``cost_entries``), primal objective and marginal errors; the plan on the
    backend's device, applied as a sparse matrix."""
    bk, xp, ns = prob.backend, prob.xp, prob.namespaces
    a64, b64 = (bk.to_numpy(w).astype(np.float64) for w in (prob.a, prob.b))
    coo = plan.tocoo()
    data = coo.data.astype(np.float64)
    entry_cost = prob.ops.cost_entries(xp.asarray(coo.row.astype(np.int64)),
                                       xp.asarray(coo.col.astype(np.int64)))
    cost = float(bk.to_numpy(entry_cost).astype(np.float64) @ data)
    row_error, col_error = _marginal_errors(plan, a64, b64)
    fields["extra"].update(row_error=row_error, col_error=col_error,
                           primal=cost + 0.5 * gamma * float(data @ data))
    device_plan = bk.sparse_from_host(plan)
    dtype = host_dtype(xp, prob.dtype)
    return OTResult(
        f=ns.to_user(xp.asarray(f.astype(dtype))), g=ns.to_user(xp.asarray(g.astype(dtype))),
        cost=cost, marginal_error=row_error + col_error, backend=bk.name, eps=None,
        _plan=device_plan, _apply_fn=lambda V, axis: (device_plan @ V if axis == 1
                                                      else device_plan.T @ V),
        _namespaces=ns, _shape=prob.geom.shape, _dtype=prob.dtype,
        _points=(prob.geom.x, prob.geom.y) if isinstance(prob.geom, PointCloud) else None,
        **fields,
    )


def _marginal_errors(plan: sparse.csr_matrix, a: np.ndarray, b: np.ndarray):
    """``|T 1 - a|_1`` and ``|T^T 1 - b|_1`` of a sparse plan (in float64)."""
    rows = np.asarray(plan.sum(axis=1, dtype=np.float64)).ravel()
    cols = np.asarray(plan.sum(axis=0, dtype=np.float64)).ravel()
    return float(np.abs(rows - a).sum()), float(np.abs(cols - b).sum())
