"""Sinkhorn-Newton-Sparse: a Sinkhorn warm-up, then Newton steps on a sparsified Hessian.

The entropic dual (to be maximized over the potentials)

.. math::

    \\Phi(f, g) = \\langle f, a \\rangle + \\langle g, b \\rangle
    - \\varepsilon \\sum_{ij} P_{ij}, \\qquad
    P_{ij} = a_i b_j \\exp((f_i + g_j - C_{ij}) / \\varepsilon),

is concave, with gradient ``(a - P 1, b - P^T 1)`` and Hessian
``-[[diag(P 1), P], [P^T, diag(P^T 1)]] / eps``. Near the optimum the plan block is close
to sparse (Tang et al., ICLR 2024, arXiv:2401.12253), so a Newton step with the plan block
replaced by its largest entries costs about one pass over the cost plus a sparse solve.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import numpy as np

from .._validation import (
    check_density,
    check_eps,
    check_fraction,
    check_positive_int,
    check_tol,
)
from ..backends import Backend
from ..collection import is_batch
from ..result import BatchResult, OTResult
from ._each import solve_each
from ._finish import finish_entropic
from ._monitor import IterationInfo, Monitor, make_monitor
from ._problem import Problem, default_tol, make_problem
from .sinkhorn import check_init, non_finite_error, sinkhorn_loop

__all__ = ["sinkhorn_newton_sparse"]

#: Armijo constant of the line search.
_ARMIJO = 1e-4
#: The first trial step moves no potential by more than this many eps (the Newton model
#: of exp-type terms is meaningless beyond); steps below ``_MIN_STEP`` count as failure.
_MAX_MOVE = 20.0
_MIN_STEP = 1e-3
#: Two full Newton steps in a row that do not reduce the marginal error by this factor
#: mean that the sparsified Hessian is too coarse: the density grows by _DENSITY_GROWTH.
_SLOW_RATIO = 0.25
_DENSITY_GROWTH = 4
#: Sinkhorn iterations run after a failed Newton step (doubled on repeated failures, up
#: to _FALLBACK_MAX).
_FALLBACK_ITER, _FALLBACK_MAX = 20, 640
#: Marquardt shift: both diagonals of the Newton system are multiplied by ``1 + tau``.
#: tau grows (from _TAU_MIN, by _TAU_GROWTH) after failed or damped steps and shrinks
#: after full steps; a failure at _TAU_MAX falls back to Sinkhorn iterations.
_TAU_MIN, _TAU_MAX, _TAU_GROWTH = 1e-3, 1.0, 10.0
#: Newton steps without halving the marginal error after which Newton is deemed not to
#: pay: Sinkhorn iterations instead.
_MAX_STALLED = 15
#: Initial number of kept plan entries per row and column, when ``density`` is not given.
_ENTRIES_PER_LINE = 4
#: Below this eps (relative to the cost scale) the automatic warm-up anneals more slowly.
_SLOW_ANNEAL_BELOW = 3e-4
#: The advice of the non-convergence warning.
_ADVICE = ("Increase max_iter (Newton steps), or warmup_iter with a smaller warmup_tol so "
           "that Newton starts closer to the solution; in float32, a larger tol.")


@cache
def _rtol_name(cg: Any) -> str:
    """The keyword of the relative tolerance of ``cg``: ``rtol`` (SciPy >= 1.12, CuPy 14)
    or ``tol`` (older SciPy and CuPy)."""
    return "rtol" if "rtol" in inspect.signature(cg).parameters else "tol"


def _schur_direction(bk: Backend, S: Any, r: Any, c: Any, gf: Any, gg: Any, eps: float,
                     rtol: float, maxiter: int, tau: float) -> tuple[Any, Any, int]:
    """Solve ``[[D_r, S], [S^T, D_c]] (df, dg) = eps (gf, gg)`` by CG on the Schur
    complement ``K = D_c - S^T D_r^{-1} S`` in ``dg``; then ``df`` follows exactly.

    ``K`` (for the exact plan) has the null vector ``1`` (the shift ``f + t, g - t``):
    CG runs in the complement of the constant vector over the columns of positive mass,
    with a projected Jacobi preconditioner. Columns without mass get ``dg_j = 0``; rows
    without mass ``df_i = 0``. Everything stays in the backend's namespace; the sparse
    solver is the backend's (:meth:`~otcore.backends.Backend.sparse_linalg`).
    """
    xp, linalg = bk.xp, bk.sparse_linalg()
    m = c.shape[0]
    r, c = (1 + tau) * r, (1 + tau) * c
    inv_r = xp.where(r > 0, 1 / xp.where(r > 0, r, 1), 0)
    ST = S.T
    w = (c > 0).astype(c.dtype)
    nw = bk.to_float(xp.sum(w))

    def project(v):
        v = w * v
        return v - w * (xp.sum(v) / nw)

    diag = c - S.power(2).T @ inv_r
    diag = xp.where(w > 0, xp.maximum(diag, 1e-12 * c), 1)
    rhs = project(eps * (gg - ST @ (inv_r * gf)))
    count = [0]

    def tick(_):
        count[0] += 1

    A = linalg.LinearOperator((m, m), dtype=c.dtype,
                              matvec=lambda x: project(c * x - ST @ (inv_r * (S @ x))))
    M = linalg.LinearOperator((m, m), matvec=lambda x: project(x / diag), dtype=c.dtype)
    dg, _ = linalg.cg(A, rhs, maxiter=maxiter, M=M, callback=tick, atol=0.0,
                      **{_rtol_name(linalg.cg): rtol})
    df = inv_r * (eps * gf - S @ dg)
    return df, dg, count[0]


def _newton_direction(bk: Backend, S: Any, r: Any, c: Any, gf: Any, gg: Any, eps: float,
                      rtol: float, maxiter: int, tau: float) -> tuple[Any, Any, int]:
    """Sparsified Newton direction; the Schur complement is taken on the smaller side."""
    n, m = S.shape
    if m <= n:
        return _schur_direction(bk, S, r, c, gf, gg, eps, rtol, maxiter, tau)
    dg, df, it = _schur_direction(bk, S.T, c, r, gg, gf, eps, rtol, maxiter, tau)
    return df, dg, it


class _State:
    """Potentials with their plan, marginals, dual value and marginal error."""

    def __init__(self, prob: Problem, eps: float, f: Any, g: Any, out: Any):
        xp, num = prob.xp, prob.backend.to_float
        log_a, log_b = prob.log_weights()
        self.f, self.g = f, g
        self.P, self.rows, self.cols = prob.ops.plan_marginals(
            f + eps * log_a, g + eps * log_b, eps, out)
        total = num(xp.sum(self.rows))
        self.finite = math.isfinite(total)
        if self.finite:
            self.value = num(xp.sum(prob.a * f) + xp.sum(prob.b * g)) - eps * total
            self.error = num(xp.sum(xp.abs(self.rows - prob.a))
                             + xp.sum(xp.abs(self.cols - prob.b)))
            # rounding level of `value`: gains below it cannot be told apart
            scale = num(xp.sum(xp.abs(prob.a * f)) + xp.sum(xp.abs(prob.b * g))) + eps * total
            self.noise = 64 * float(np.finfo(f.dtype).eps) * scale
        else:
            self.value, self.error, self.noise = -math.inf, math.inf, 0.0


def _line_search(prob: Problem, eps: float, x: _State, df: Any, dg: Any, slope: float,
                 out: Any) -> tuple[_State | None, float]:
    """Backtracking from the full step (capped to moves of ``_MAX_MOVE * eps``).

    If the full step's predicted gain ``slope`` is above the rounding level of the dual,
    a step must satisfy Armijo's condition on the dual; otherwise the dual cannot tell
    steps apart and a step must decrease the marginal error. Non-finite trial values are
    rejected. Returns ``(state, step)``, or ``(None, 0.0)`` if no step of length at least
    ``_MIN_STEP`` is acceptable.
    """
    xp, num = prob.xp, prob.backend.to_float
    move = max(num(xp.max(xp.abs(df))), num(xp.max(xp.abs(dg)))) / eps
    alpha = min(1.0, _MAX_MOVE / move) if move > 0 else 1.0
    resolved = slope > x.noise
    while alpha >= _MIN_STEP:
        trial = _State(prob, eps, x.f + alpha * df, x.g + alpha * dg, out)
        if trial.finite and (
            trial.value - x.value >= _ARMIJO * alpha * slope if resolved
            else trial.error < x.error
        ):
            return trial, alpha
        alpha *= 0.5
    return None, 0.0


@dataclass
class _Policy:
    """When to shift the Newton system, raise the density or fall back to Sinkhorn.

    :meth:`accepted` and :meth:`failed` return the number of Sinkhorn iterations to run
    before the next Newton step (0: none).
    """

    density: float
    error: float  # the marginal error to halve, and the Newton steps spent on it so far
    tau: float = 0.0
    fallback_iter: int = _FALLBACK_ITER
    slow_before: bool = False
    stalled: int = 0

    def accepted(self, step: float, ratio: float, error: float) -> int:
        """A step of length ``step`` changed the marginal error by the factor ``ratio``,
        to ``error``."""
        slow = step == 1.0 and self.tau == 0.0 and ratio > _SLOW_RATIO
        if slow and self.slow_before:
            self.density = min(1.0, self.density * _DENSITY_GROWTH)
        self.slow_before = slow and not self.slow_before
        if step == 1.0:
            self.tau = self.tau / _TAU_GROWTH if self.tau > _TAU_MIN else 0.0
        else:
            self.tau = max(_TAU_MIN, 2 * self.tau)
        if error < 0.5 * self.error:
            self.error, self.stalled, self.fallback_iter = error, 0, _FALLBACK_ITER
            return 0
        self.stalled += 1
        return self._fall_back() if self.stalled >= _MAX_STALLED else 0

    def failed(self) -> int:
        """No acceptable step: retry with a larger shift, or fall back at the largest."""
        self.stalled += 1
        if self.tau < _TAU_MAX:
            self.tau = max(_TAU_MIN, _TAU_GROWTH * self.tau)
            return 0
        return self._fall_back()

    def _fall_back(self) -> int:
        self.tau, self.stalled, self.error = 0.0, 0, math.inf
        self.density = min(1.0, self.density * _DENSITY_GROWTH)
        k, self.fallback_iter = self.fallback_iter, min(2 * self.fallback_iter, _FALLBACK_MAX)
        return k


def sinkhorn_newton_sparse(
    a: Any,
    b: Any,
    C: Any,
    eps: float,
    *,
    tol: float | None = None,
    max_iter: int = 100,
    density: float | None = None,
    warmup_tol: float = 0.1,
    warmup_iter: int = 500,
    warmup_scaling: float | str | None = "auto",
    cg_rtol: float = 1e-2,
    cg_maxiter: int | None = None,
    init: tuple[Any, Any] | None = None,
    callback: Callable[[IterationInfo], Any] | None = None,
    verbose: bool = False,
    time_limit: float | None = None,
    backend: Any = None,
) -> OTResult | BatchResult:
    r"""Entropic optimal transport by Sinkhorn-Newton-Sparse (SNS).

    Solves the same problem as :func:`otcore.sinkhorn`,

    .. math::

        \min_{P \ge 0,\ P 1 = a,\ P^T 1 = b} \langle C, P \rangle
        + \varepsilon\, \mathrm{KL}(P \,|\, a b^T),
        \qquad P_{ij} = a_i b_j \exp((f_i + g_j - C_{ij}) / \varepsilon),

    in two stages: log-domain Sinkhorn iterations until the L1 marginal error is below
    ``warmup_tol * sum(a)``, then Newton ascent on the concave dual in ``(f, g)``. The
    Newton system keeps both diagonal blocks of the Hessian,
    ``-[[diag(P 1), P], [P^T, diag(P^T 1)]] / eps``, exact and replaces the plan block by
    its entries of largest normalized value ``P_ij / sqrt((P 1)_i (P^T 1)_j)``; it is
    solved by preconditioned conjugate gradients. The paper's ``eta`` is ``1 / eps``.

    Parameters
    ----------
    a : array of shape (n,) or None
        Source weights (nonnegative); ``None`` means uniform ``1/n``.
    b : array of shape (m,) or None
        Target weights, same total mass as ``a``; ``None`` means uniform ``1/m``.
    C : array of shape (n, m), DenseCost or PointCloud
        The cost. For a :class:`~otcore.PointCloud` the warm-up runs online, but the
        Newton stage forms the plan densely (see Notes on memory). Batches in the forms
        of :func:`otcore.sinkhorn` are accepted and solved one problem after the other
        (a :class:`~otcore.BatchResult`; no batch kernel yet).
    eps : float
        Entropic regularization, absolute (in the units of ``C``). SNS pays off for small
        ``eps`` (sharp, nearly sparse plans), where Sinkhorn needs many iterations.
    tol : float, optional
        Stop when the L1 marginal error ``|P 1 - a|_1 + |P^T 1 - b|_1`` is below ``tol``.
        Default 1e-9 in float64, 1e-4 in float32.
    max_iter : int, default 100
        Maximum number of Newton steps.
    density : float in (0, 1], optional
        Initial fraction of the ``n m`` plan entries kept in the Hessian. Default: about
        ``4 (n + m)`` entries. The density is multiplied by 4 when two full Newton steps
        in a row fail to divide the marginal error by 4 (the sparse Hessian is then too
        coarse) and before Sinkhorn fallback iterations. The densities used are in
        ``extra["history"]``.
    warmup_tol : float, default 0.1
        Relative L1 marginal error (divided by ``sum(a)``) that ends the warm-up.
    warmup_iter : int, default 500
        Maximum number of warm-up Sinkhorn iterations (0 skips the warm-up).
    warmup_scaling : float in (0, 1), "auto" or None, default "auto"
        The warm-up anneals eps: one Sinkhorn iteration at each of ``s, r s, r^2 s, ...``
        down to ``eps`` (``s`` the cost scale, ``r`` this factor), then iterations at
        ``eps`` until ``warmup_tol``. ``"auto"`` takes ``r = 0.8``, and ``r = 0.9`` (a
        slower anneal) below ``eps = 3e-4 s``: the best settings measured on colour
        clouds (``bench/results/sns_defaults.md``). At small eps this starts Newton near
        the solution: on 2000 colour pixels at ``eps = 1e-4`` of the cost scale it turns a
        failure (L1 error 0.5-0.97 after 100 Newton steps without annealing) into
        convergence to 1e-9 in about 2 s. ``None`` warms up at ``eps`` from zero
        potentials; so does a warm start (``init``).
    cg_rtol : float in (0, 1), default 1e-2
        Relative residual at which the conjugate gradient solve stops.
    cg_maxiter : int, optional
        Maximum CG iterations per Newton step; default ``min(n, m)``.
    init : pair (f, g) of arrays, optional
        Warm-start potentials (either may be ``None``), as in :func:`otcore.sinkhorn`: the
        warm-up starts from them, and stops at once if they are already within
        ``warmup_tol``.
    callback, verbose, time_limit
        As in :func:`otcore.sinkhorn`, checked at every warm-up iteration at ``eps`` (not
        during the annealing, one pass per level) and before every Newton step
        (``n_iter`` counts all of them).
    backend : {"numba_cpu", "cupy_gpu", "array_api"} or Backend, optional
        Force a backend; by default it follows the array type. The Newton stage uses the
        sparse CG of SciPy (NumPy arrays) or of CuPy (``cupyx.scipy.sparse.linalg``, CuPy
        arrays), so the arrays must be NumPy or CuPy arrays.

    Returns
    -------
    OTResult
        As for :func:`otcore.sinkhorn` (``method="sinkhorn_newton_sparse"``, dense lazy
        ``plan``); ``n_iter`` counts Sinkhorn iterations plus Newton steps and ``errors``
        holds ``(iteration, marginal error)`` for both stages. ``extra`` holds
        ``"sinkhorn_iter"``, ``"newton_iter"``, ``"fallbacks"`` (Newton steps that failed
        and were replaced by Sinkhorn iterations) and ``"history"``, a dict of per-Newton-
        step lists: ``"error"`` (marginal error before the step), ``"density"`` (fraction of
        plan entries kept), ``"cg_iter"``, ``"step"`` (the accepted step length, 0 for a
        failed step) and ``"shift"`` (the Marquardt shift ``tau``, see Notes).

    Raises
    ------
    TypeError
        For arrays that reach neither NumPy nor CuPy (CPU data of any library, and CUDA
        data with CuPy installed, do).

    Warns
    -----
    ConvergenceWarning
        If ``tol`` is not reached within ``max_iter`` Newton steps.

    See Also
    --------
    otcore.sinkhorn : the first stage on its own.

    Notes
    -----
    *Newton system.* The Schur complement of the sparsified Hessian on the smaller side,
    ``K = diag(P^T 1) - S^T diag(P 1)^{-1} S``, is solved by CG with a Jacobi
    preconditioner, in the complement of the constant vector: the exact Hessian is
    singular along ``(1, -1)`` (adding ``t`` to ``f`` and subtracting it from ``g`` changes
    nothing), so the shift is pinned by projection rather than left to the solver.

    *Line search.* The full step is tried first (shortened, if needed, so that no
    potential moves by more than ``20 eps``: beyond that the quadratic model of the
    exponentials means nothing) and halved until the dual increases by the Armijo
    fraction of the predicted gain. Near convergence that gain falls below the rounding
    error of the dual, and a step is then accepted when it decreases the marginal error.
    Steps that overflow are rejected.

    *Robustness.* Full steps that stop dividing the marginal error by 4 (dense plans at
    large ``eps``, non-unique transport plans such as with the Euclidean cost) raise the
    density. Where the dual is nearly flat in some directions (non-unique plans again),
    the Newton step is huge along them and the line search has to cut it down: after
    such damped or failed steps both diagonals of the Newton system are multiplied by
    ``1 + tau`` (a Marquardt shift, which shortens the step mostly along the flat
    directions), with ``tau`` growing from 1e-3 after failures and damped steps and
    shrinking back to 0 after full steps. A step that fails even with ``tau = 1`` (no
    acceptable step length of at least 1e-3, typically far from the solution) is replaced
    by Sinkhorn iterations, and so are Newton steps that have not halved the marginal
    error in 15 steps: 20 Sinkhorn iterations at first, twice as many after each further
    such event without progress in between (at most 640), and the density is raised. So
    the method degrades to Sinkhorn rather than failing; ``extra["fallbacks"]`` counts
    these events.

    *Memory.* The Newton stage holds two dense ``n x m`` plans (current and trial) plus
    the sparse Hessian, also for a :class:`~otcore.PointCloud`, whose cost is recomputed
    on the fly but whose plan is stored: plan on ``2 n m`` floats before using SNS on
    large clouds.

    *GPU.* With CuPy arrays everything stays on their device, in their dtype: the plan
    and its marginals, the sparsified plan (a ``cupyx.scipy.sparse.csr_matrix``, built by
    CUDA kernels) and the CG solve. The host synchronizes for scalars only (line search,
    errors, the sparsification threshold and size), a few times per Newton step and once
    per CG iteration (inside CuPy's CG). CuPy's CSR matrices have 32-bit indices, so the
    sparsified plan holds at most ``2**31 - 1`` entries (``ValueError`` beyond).

    Examples
    --------
    >>> import numpy as np, otcore as oc
    >>> rng = np.random.default_rng(0)
    >>> C = rng.random((200, 150))
    >>> res = oc.sinkhorn_newton_sparse(None, None, C, eps=1e-2, tol=1e-12)
    >>> bool(res.converged), res.marginal_error < 1e-12
    (True, True)
    >>> ref = oc.sinkhorn(None, None, C, eps=1e-2, tol=1e-12)
    >>> bool(np.allclose(res.plan, ref.plan, rtol=1e-10, atol=1e-15))
    True
    >>> res.extra["newton_iter"] < ref.n_iter
    True
    """
    if is_batch(a, b, C):
        return solve_each(
            sinkhorn_newton_sparse, a, b, C, eps, tol=tol, max_iter=max_iter,
            density=density, warmup_tol=warmup_tol, warmup_iter=warmup_iter,
            warmup_scaling=warmup_scaling, cg_rtol=cg_rtol, cg_maxiter=cg_maxiter,
            init=init, callback=callback, verbose=verbose, time_limit=time_limit,
            backend=backend)
    prob = make_problem(a, b, C, backend)
    bk = prob.backend
    if bk.sparse_linalg() is None:
        raise TypeError(
            "sinkhorn_newton_sparse needs NumPy or CuPy arrays (its Newton stage uses the "
            f"sparse conjugate gradients of SciPy or CuPy); got {bk!r}"
        )
    eps = check_eps(eps)
    tol = default_tol(prob.xp, prob.dtype) if tol is None else check_tol(tol)
    max_iter = check_positive_int(max_iter, "max_iter")
    n, m = prob.geom.shape
    density = (min(1.0, _ENTRIES_PER_LINE * (n + m) / (n * m)) if density is None
               else check_density(density))
    warmup_tol = check_eps(warmup_tol, "warmup_tol")
    warmup_iter = check_positive_int(warmup_iter, "warmup_iter", minimum=0)
    if warmup_scaling == "auto":
        scale = prob.ops.cost_scale()
        warmup_scaling = 0.9 if eps < _SLOW_ANNEAL_BELOW * scale else 0.8
    elif warmup_scaling is not None:
        warmup_scaling = check_fraction(warmup_scaling, "warmup_scaling")
    cg_rtol = check_fraction(cg_rtol, "cg_rtol")
    cg_maxiter = min(n, m) if cg_maxiter is None else check_positive_int(cg_maxiter,
                                                                         "cg_maxiter")

    monitor = make_monitor("sinkhorn_newton_sparse", callback, verbose, time_limit, tol)
    f0, g0 = check_init(prob, init)
    mass = bk.to_float(prob.xp.sum(prob.a))
    try:
        anneal = warmup_scaling if f0 is None and g0 is None else None
        f, g, n_sk, _, errors = sinkhorn_loop(
            prob, eps, tol=max(tol, warmup_tol * mass), max_iter=warmup_iter, check_every=1,
            eps_scaling=anneal, f=f0, g=g0, monitor=monitor)
        x, stage = _newton_stage(prob, eps, f, g, tol=tol, max_iter=max_iter,
                                 density=density, cg_rtol=cg_rtol, cg_maxiter=cg_maxiter,
                                 n_sk=n_sk, errors=errors, monitor=monitor)
    finally:
        monitor.close()
    extra = {"sinkhorn_iter": stage.n_sk, "newton_iter": stage.n_newton,
             "fallbacks": stage.fallbacks, "history": stage.history}
    if monitor.stopped:
        extra["stopped"] = monitor.stopped
    return finish_entropic(
        prob, x.f, x.g, eps, n_iter=stage.n_sk + stage.n_newton, errors=errors, tol=tol,
        method="sinkhorn_newton_sparse", estimate_met=x.error < tol,
        advice=monitor.reason() or _ADVICE,
        steps=(stage.n_newton, f"Newton steps (after {stage.n_sk} Sinkhorn iterations)"),
        extra=extra)


@dataclass
class _Stage:
    """Counters and per-step history of the Newton stage."""

    n_sk: int
    n_newton: int = 0
    fallbacks: int = 0
    history: dict = field(default_factory=lambda: {
        "error": [], "density": [], "cg_iter": [], "step": [], "shift": []})


def _newton_stage(prob: Problem, eps: float, f: Any, g: Any, *, tol: float, max_iter: int,
                  density: float, cg_rtol: float, cg_maxiter: int, n_sk: int,
                  errors: list, monitor: Monitor) -> tuple[_State, _Stage]:
    """Newton steps from the warm-up potentials ``(f, g)`` until the marginal error is
    below ``tol`` or ``max_iter`` steps were made; Sinkhorn fallbacks where Newton does
    not pay (:class:`_Policy`). Appends to ``errors``; returns the last state (never worse
    than the accepted steps before it) and the stage's counters."""
    bk, xp = prob.backend, prob.xp
    n, m = prob.geom.shape
    buffers = [xp.empty((n, m), dtype=prob.dtype) for _ in range(2)]
    x = _State(prob, eps, f, g, buffers[0])
    policy = _Policy(density, x.error)
    stage = _Stage(n_sk)
    best = (x.error, x.f, x.g)  # the stage never returns worse than it started
    while True:
        if not x.finite:
            raise non_finite_error(prob, eps,
                                   "sinkhorn_newton_sparse reached non-finite potentials")
        errors.append((stage.n_sk + stage.n_newton, x.error))
        if x.error < best[0]:
            best = (x.error, x.f, x.g)
        if x.error < tol or stage.n_newton >= max_iter or monitor.stopped or (
                monitor.active and monitor.check(stage.n_sk + stage.n_newton, x.error)):
            if x.error > best[0]:
                x = _State(prob, eps, best[1], best[2], x.P)
            return x, stage
        S = prob.ops.sparsify_plan(x.P, x.rows, x.cols,
                                   max(1, round(policy.density * n * m))).matrix
        gf, gg = prob.a - x.rows, prob.b - x.cols
        df, dg, n_cg = _newton_direction(bk, S, x.rows, x.cols, gf, gg, eps, cg_rtol,
                                         cg_maxiter, policy.tau)
        slope = bk.to_float(xp.sum(gf * df) + xp.sum(gg * dg))
        new, step = None, 0.0
        if math.isfinite(slope) and slope > 0:
            spare = buffers[1] if x.P is buffers[0] else buffers[0]
            new, step = _line_search(prob, eps, x, df, dg, slope, spare)
        for key, value in (("error", x.error), ("density", S.nnz / (n * m)),
                           ("cg_iter", n_cg), ("step", step), ("shift", policy.tau)):
            stage.history[key].append(value)
        stage.n_newton += 1
        if new is not None:
            k = policy.accepted(step, new.error / x.error, new.error)
            x = new
        else:
            k = policy.failed()
        if k:  # Newton steps do not pay (here): Sinkhorn iterations instead
            stage.fallbacks += 1
            f, g, k, _, errs = sinkhorn_loop(prob, eps, tol=tol, max_iter=k, check_every=1,
                                             f=x.f, g=x.g)
            errors.extend((stage.n_sk + stage.n_newton + i, e) for i, e in errs)
            stage.n_sk += k
            x = _State(prob, eps, f, g, x.P)
