"""Log-domain Sinkhorn for entropic optimal transport."""

from __future__ import annotations

import math
from typing import Any

from .._validation import (
    check_bool,
    check_eps,
    check_fraction,
    check_positive_int,
    check_tol,
)
from ..result import OTResult, warn_not_converged
from ._problem import Problem, make_problem

__all__ = ["default_tol", "entropic_result", "sinkhorn", "sinkhorn_loop"]


def default_tol(dtype: Any) -> float:
    """Default L1 marginal tolerance: 1e-9 in float64, 1e-4 in float32.

    In float32 the rounding of the potentials alone leaves a marginal error of order
    ``1e-7 max|g| / eps``, so tighter tolerances are often out of reach.
    """
    return 1e-4 if "32" in str(dtype) else 1e-9


def _check_init(prob: Problem, init: Any) -> tuple[Any, Any]:
    """Validate a warm start ``(f, g)``; either entry may be ``None``."""
    if init is None:
        return None, None
    if not (isinstance(init, (tuple, list)) and len(init) == 2):
        raise TypeError("init must be a pair (f, g) of potentials (entries may be None)")
    xp = prob.xp
    out = []
    for name, pot, size in zip(("init[0] (f)", "init[1] (g)"), init, prob.geom.shape, strict=True):
        if pot is None:
            out.append(None)
            continue
        from .._validation import as_array
        from ..backends import namespace_of

        if namespace_of(pot) is not xp:
            raise TypeError(f"{name} must come from the same array library as the cost")
        pot = as_array(xp, pot, name, dtype=prob.dtype, ndim=1)
        if pot.shape[0] != size:
            raise ValueError(f"{name} has length {pot.shape[0]}, expected {size}")
        out.append(pot)
    return out[0], out[1]


def _row_error(xp: Any, w: Any, pot: Any, pot_new: Any, eps: float) -> Any:
    """L1 marginal error ``sum_i w_i |exp((pot_i - pot_new_i) / eps) - 1|``.

    With ``pot_new`` the softmin update of ``pot``, ``w_i exp((pot_i - pot_new_i) / eps)``
    is exactly the marginal of the current plan, so the check costs no extra pass.
    """
    d = (pot - pot_new) / eps
    d = xp.minimum(d, xp.full_like(d, 50.0))  # the error is huge anyway; avoid overflow
    return xp.sum(w * xp.abs(xp.expm1(d)))


def non_finite_error(prob: Problem, eps: float, what: str) -> Exception:
    """The exception for non-finite iterates: a ``ValueError`` when ``eps`` is far below the
    resolution of the potentials (the cost's scale times the dtype's machine epsilon),
    where no log-domain iteration is meaningful; otherwise a ``FloatingPointError`` that
    asks for a bug report."""
    xp = prob.xp
    scale = prob.ops.cost_scale()
    floor = 1e4 * float(xp.finfo(prob.dtype).eps) * scale
    if eps < floor:
        return ValueError(
            f"{what}: eps={eps:.3g} is too small for this cost, whose scale is {scale:.3g}; "
            f"in {prob.dtype} use eps >= {floor:.1e} at the very least, or rescale the cost"
        )
    return FloatingPointError(
        f"{what}; this is a bug, please report it with the input that triggers it"
    )


def sinkhorn_loop(
    prob: Problem,
    eps: float,
    *,
    tol: float,
    max_iter: int,
    check_every: int = 10,
    symmetric: bool = False,
    eps_scaling: float | None = None,
    eps_init: float | None = None,
    f: Any = None,
    g: Any = None,
) -> tuple[Any, Any, int, bool, list]:
    """Run Sinkhorn iterations on a validated problem; return ``f, g, n_iter, converged,
    errors``. Shared by :func:`sinkhorn` and the warm-up of other solvers."""
    xp, ops, bk = prob.xp, prob.ops, prob.backend
    log_a, log_b = prob.log_weights()
    if f is None:
        f = xp.zeros((prob.geom.shape[0],), dtype=prob.dtype)

    def row_update(g, e, hint=None):
        return ops.softmin(g + e * log_b, e, axis=1, hint=hint)

    def col_update(f, e, hint=None):
        return ops.softmin(f + e * log_a, e, axis=0, hint=hint)

    n_iter = 0
    if eps_scaling is not None:
        # One alternating update per level, eps_k = eps_init * eps_scaling**k > eps.
        level = ops.cost_scale() if eps_init is None else eps_init
        while level > eps and n_iter < max_iter:
            g = col_update(f, level)
            f = row_update(g, level)
            level *= eps_scaling
            n_iter += 1
    if g is None or eps_scaling is not None:
        g = col_update(f, eps)

    errors: list = []
    converged = False
    sweep = None if symmetric else ops.sweeper(prob.a, prob.b, eps)
    la_eps = eps * log_a
    while n_iter < max_iter:
        # The current potentials are the log-sum-exp shifts (hints) of their own updates.
        if symmetric:
            f_new = row_update(g, eps, hint=f)
            g_new = col_update(f, eps, hint=g)
        else:
            f_new, g_new = sweep(g + eps * log_b, la_eps, f, g)
        if (n_iter + 1) % check_every == 0 or n_iter + 1 == max_iter:
            # (f, g) has exact column marginals (alternating); f_new measures its rows.
            err = _row_error(xp, prob.a, f, f_new, eps)
            if symmetric:
                err = err + _row_error(xp, prob.b, g, g_new, eps)
            err = bk.to_float(err)
            errors.append((n_iter, err))
            if err < tol:
                converged = True
                break
            if not math.isfinite(err):
                raise non_finite_error(prob, eps, "Sinkhorn produced a non-finite error")
        if symmetric:
            f, g = 0.5 * (f + f_new), 0.5 * (g + g_new)
        else:
            f, g = f_new, g_new
        n_iter += 1
    return f, g, n_iter, converged, errors


def sinkhorn(
    a: Any,
    b: Any,
    C: Any,
    eps: float,
    *,
    tol: float | None = None,
    max_iter: int = 10_000,
    check_every: int = 10,
    symmetric: bool = False,
    eps_scaling: float | None = None,
    eps_init: float | None = None,
    init: tuple[Any, Any] | None = None,
    backend: Any = None,
) -> OTResult:
    r"""Entropic optimal transport by log-domain Sinkhorn iterations.

    Solves

    .. math::

        \min_{P \ge 0,\ P 1 = a,\ P^T 1 = b} \langle C, P \rangle
        + \varepsilon\, \mathrm{KL}(P \,|\, a b^T)

    whose solution is :math:`P_{ij} = a_i b_j \exp((f_i + g_j - C_{ij}) / \varepsilon)`.
    Every update is a soft-minimum computed with a stable log-sum-exp, so small ``eps``
    does not overflow; the potentials, of the cost's scale, are resolved to its machine
    epsilon, though, so ``eps`` needs to stay well above ``1e-12`` times the cost's scale
    in float64 (``1e-3`` in float32) for the plan to be meaningful.

    Parameters
    ----------
    a : array of shape (n,) or None
        Source weights (nonnegative); ``None`` means uniform ``1/n``.
    b : array of shape (m,) or None
        Target weights, same total mass as ``a`` (to a relative 1e-6 in float64, 1e-4 in
        float32; within it ``b`` is rescaled to the mass of ``a``); ``None`` means uniform
        ``1/m``.
    C : array of shape (n, m), DenseCost or PointCloud
        The cost. A :class:`~otcore.PointCloud` is never materialized: the kernels
        evaluate the cost on the fly, with ``O((n + m) d)`` memory.
    eps : float
        Entropic regularization, absolute (in the units of ``C``). For a cost normalized
        to max 1, ``1e-2`` is blurry, ``1e-3`` sharp; small values need more iterations
        (``eps_scaling`` helps).
    tol : float, optional
        Stop when the L1 marginal error ``|P 1 - a|_1 + |P^T 1 - b|_1`` is below ``tol``.
        Default 1e-9 in float64, 1e-4 in float32. The loop measures the row marginal
        (the column marginal is exact after an alternating update); the reported
        ``marginal_error`` is recomputed exactly for the returned potentials, and it
        decides ``converged``: a run whose estimate met ``tol`` but whose exact error
        exceeds it (a rounding floor) is not converged, and one that reached
        ``max_iter`` between two checks with an exact error within ``tol`` is.
        In float32 the floor grows as eps shrinks: at ``eps = 1e-3`` with a cost of
        scale 1 it is about ``1e-5`` on the CPU and ``1e-4`` on the GPU, whose kernels
        form the exponents in float32.
    max_iter : int, default 10000
        Maximum number of iterations (one row and one column update each).
    check_every : int, default 10
        Check convergence every ``check_every`` iterations and at the last one (a check
        costs no extra pass over ``C``, but synchronizes with the device).
    symmetric : bool, default False
        Averaged updates ``f <- (f + T(g)) / 2, g <- (g + T(f)) / 2`` computed from the same
        state, instead of alternating ``f <- T(g); g <- T(f)``.
    eps_scaling : float in (0, 1), optional
        Anneal: start from ``eps_init`` and multiply eps by ``eps_scaling`` after each
        iteration until it reaches ``eps`` (these iterations count in ``n_iter``).
    eps_init : float, optional
        Starting eps of the annealing; default: an upper bound of ``max |C|``.
    init : pair (f, g) of arrays, optional
        Warm-start potentials (either may be ``None``).
    backend : {"numba_cpu", "array_api", "cupy_gpu"} or Backend, optional
        Force a backend; by default it follows the array type.

    Returns
    -------
    OTResult
        ``f``, ``g``, the lazy ``plan``, ``cost`` = ``<C, P>``, ``value`` = the regularized
        objective, ``marginal_error`` (exact, for the returned potentials), ``n_iter``,
        ``converged`` and the error history ``errors``.

    Raises
    ------
    ValueError
        For invalid weights, costs or options, and when the iterates become non-finite
        because ``eps`` is below ``1e4`` times the machine epsilon times the cost's scale.
    TypeError
        For arrays that are not NumPy, CuPy or Array-API arrays, or of mixed namespaces.

    Warns
    -----
    ConvergenceWarning
        If ``tol`` is not reached within ``max_iter`` (then ``converged`` is False).

    See Also
    --------
    otcore.PointCloud : online costs for large point clouds.

    Notes
    -----
    The error check uses the identity ``(P 1)_i = a_i exp((f_i - T(g)_i) / eps)``, where
    ``T(g)`` is the next row update, so it is free. With alternating updates the column
    marginal is exact after every iteration. On the CPU, float64 dense costs of at most
    1 GiB go through a cached Gibbs kernel near convergence (matrix-vector products instead
    of exponentials; same iterates up to rounding; one more array of the cost's size; see
    the user guide). The computation runs in the dtype of the cost
    (float32 stays float32; integers are promoted to float64), and outputs live on the same
    device as the inputs.

    Examples
    --------
    >>> import numpy as np, otcore as oc
    >>> rng = np.random.default_rng(0)
    >>> x, y = rng.normal(size=(50, 2)), rng.normal(size=(60, 2))
    >>> C = ((x[:, None] - y[None]) ** 2).sum(-1)
    >>> res = oc.sinkhorn(None, None, C, eps=0.1)
    >>> bool(res.converged), res.plan.shape
    (True, (50, 60))
    >>> res_online = oc.sinkhorn(None, None, oc.PointCloud(x, y), eps=0.1)
    >>> bool(np.allclose(res_online.f, res.f))
    True
    """
    eps = check_eps(eps)
    tol = None if tol is None else check_tol(tol)
    max_iter = check_positive_int(max_iter, "max_iter")
    check_every = check_positive_int(check_every, "check_every")
    symmetric = check_bool(symmetric, "symmetric")
    if eps_scaling is not None:
        eps_scaling = check_fraction(eps_scaling, "eps_scaling")
    if eps_init is not None:
        eps_init = check_eps(eps_init, "eps_init")
    prob = make_problem(a, b, C, backend)
    tol = default_tol(prob.dtype) if tol is None else tol
    f0, g0 = _check_init(prob, init)

    f, g, n_iter, converged, errors = sinkhorn_loop(
        prob, eps, tol=tol, max_iter=max_iter, check_every=check_every,
        symmetric=symmetric, eps_scaling=eps_scaling, eps_init=eps_init, f=f0, g=g0,
    )
    return entropic_result(prob, f, g, eps, n_iter=n_iter, converged=converged,
                           errors=errors, tol=tol, method="sinkhorn")


def entropic_result(
    prob: Problem, f: Any, g: Any, eps: float, *, n_iter: int, converged: bool,
    errors: list, tol: float, method: str, extra: dict | None = None,
) -> OTResult:
    """Package potentials of an entropic problem as an :class:`OTResult` (one pass over C).

    Computes the exact marginals, ``<C, P>`` and the primal objective
    ``<C, P> + eps KL(P | a b^T) = <f, P 1> + <g, P^T 1> - eps (sum P - sum a sum b)``.
    """
    xp, bk = prob.xp, prob.backend
    log_a, log_b = prob.log_weights()
    hf, hg = f + eps * log_a, g + eps * log_b
    rows, cols, cost = prob.ops.plan_stats(hf, hg, eps)
    marginal_error = bk.to_float(xp.sum(xp.abs(rows - prob.a)) + xp.sum(xp.abs(cols - prob.b)))
    mass = bk.to_float(xp.sum(prob.a)) * bk.to_float(xp.sum(prob.b))
    value = bk.to_float(
        xp.sum(xp.where(rows > 0, f * rows, 0)) + xp.sum(xp.where(cols > 0, g * cols, 0))
    ) - eps * (bk.to_float(xp.sum(rows)) - mass)
    # The exact error of the returned plan decides; the in-loop estimate may have met tol
    # while rounding keeps the exact error above it (a floor that more iterations
    # cannot lower).
    stalled = converged and not marginal_error <= tol
    converged = marginal_error <= tol
    if not converged:
        warn_not_converged(
            method, n_iter, marginal_error, tol,
            "The error is at its rounding floor: use a larger tol." if stalled else
            "Increase max_iter, use eps_scaling or a larger eps; in float32, a larger tol.",
        )

    n, m = prob.geom.shape
    ops = prob.ops
    is_cloud = not hasattr(prob.geom, "C")

    def plan():
        if is_cloud and n * m > OTResult.max_plan_entries:
            raise ValueError(
                f"the plan of this point cloud has {n * m:.3g} entries, above "
                f"OTResult.max_plan_entries={OTResult.max_plan_entries}; raise that limit "
                "if you really want to materialize it"
            )
        return ops.plan(hf, hg, eps)

    return OTResult(
        f=f, g=g, cost=float(cost), value=float(value), marginal_error=marginal_error,
        n_iter=n_iter, converged=converged, backend=bk.name, method=method, eps=eps,
        errors=errors, extra=extra or {}, _plan_fn=plan,
    )
