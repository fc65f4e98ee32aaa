"""Log-domain Sinkhorn for entropic optimal transport."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from .._array import namespaces
from .._validation import (
    as_array,
    check_bool,
    check_eps,
    check_fraction,
    check_positive_int,
    check_reg_m,
    check_tol,
)
from ..collection import as_batch, is_batch
from ..result import BatchResult, OTResult
from ._finish import finish_entropic
from ._monitor import IterationInfo, Monitor, make_monitor
from ._problem import Problem, default_tol, make_problem
from .batch import sinkhorn_batch

__all__ = ["check_init", "non_finite_error", "sinkhorn", "sinkhorn_loop"]

#: The advice of the non-convergence warning.
_ADVICE = ("Increase max_iter, use eps_scaling or a larger eps; in float32, a larger tol; "
           "for unbalanced problems, a smaller reg_m converges faster.")
#: Largest reg_m / eps accepted (beyond, use inf: an exact marginal).
_RHO_OVER_EPS = 1e12


def check_init(prob: Problem, init: Any) -> tuple[Any, Any]:
    """Validate a warm start ``(f, g)``; either entry may be ``None``."""
    if init is None:
        return None, None
    if not (isinstance(init, (tuple, list)) and len(init) == 2):
        raise TypeError("init must be a pair (f, g) of potentials (entries may be None)")
    ns = prob.namespaces
    out = []
    for name, pot, size in zip(("init[0] (f)", "init[1] (g)"), init, prob.geom.shape,
                               strict=True):
        if pot is None:
            out.append(None)
            continue
        if (not isinstance(pot, (list, tuple))
                and namespaces(pot, names=(name,)).library != ns.library):
            raise TypeError(f"{name} must come from the same array library as the cost")
        pot = as_array(prob.xp, ns.to_compute(pot), name, dtype=prob.dtype, ndim=1)
        if pot.shape[0] != size:
            raise ValueError(f"{name} has length {pot.shape[0]}, expected {size}")
        out.append(pot)
    return out[0], out[1]


def row_error(xp: Any, w: Any, pot: Any, T: Any, eps: float, rho: float) -> Any:
    """L1 violation of the marginal's optimality condition, from the softmin ``T`` of the
    other side (no extra pass over the cost).

    The current plan's marginal is ``w_i exp((pot_i - T_i) / eps)``; at the optimum it
    equals ``w_i`` for an exact marginal (``rho = inf``: the L1 marginal error) and
    ``w_i exp(-pot_i / rho)`` for a marginal relaxed by ``rho KL``. Returns
    ``sum_i |marginal_i - target_i|``.
    """
    d = (pot - T) / eps
    if math.isinf(rho):
        d = xp.minimum(d, xp.full_like(d, 50.0))  # the error is huge anyway; no overflow
        return xp.sum(w * xp.abs(xp.expm1(d)))
    c = xp.minimum(-pot / rho, xp.full_like(d, 50.0))
    gap = xp.minimum(d - c, xp.full_like(d, 50.0))
    return xp.sum(w * xp.exp(c) * xp.abs(xp.expm1(gap)))


def _translation(xp: Any, prob: Problem, f: Any, g: Any, log_a: Any, log_b: Any) -> Any:
    """The shift ``t`` maximizing the unbalanced dual along ``(f + t, g - t)`` (Sejourne,
    Vialard and Peyre, AISTATS 2022): ``t = log(A / B) / (1 / rho_a + 1 / rho_b)`` with
    ``A = sum_i a_i exp(-f_i / rho_a)``, ``B = sum_j b_j exp(-g_j / rho_b)``, in the log
    domain. The entropic term is invariant under the shift, so only the two KL terms
    decide it; an exact marginal contributes its mass."""
    rho_a, rho_b = prob.rho

    def log_mass(log_w, pot, rho):
        z = log_w if math.isinf(rho) else log_w - pot / rho
        top = xp.max(z)
        return top + xp.log(xp.sum(xp.exp(z - top)))

    inv = (0.0 if math.isinf(rho_a) else 1 / rho_a) + (0.0 if math.isinf(rho_b) else 1 / rho_b)
    return (log_mass(log_a, f, rho_a) - log_mass(log_b, g, rho_b)) / inv


def _check_rho(rho: tuple[float, float], eps: float, reg_m: Any) -> None:
    if any(_RHO_OVER_EPS < r / eps < math.inf for r in rho):
        raise ValueError(
            f"reg_m={reg_m!r} is more than {_RHO_OVER_EPS:.0e} times eps={eps:.3g}: the "
            "potentials of unequal masses would grow like rho log(mass ratio) beyond what "
            "the dtype resolves; use inf for an exact marginal"
        )


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
    monitor: Monitor | None = None,
    first_iter: int = 0,
) -> tuple[Any, Any, int, bool, list]:
    """Run Sinkhorn iterations on a validated problem; return ``f, g, n_iter, converged,
    errors``. Shared by :func:`sinkhorn` and the warm-up of other solvers. A run that
    continues earlier iterations passes their count as ``first_iter``: the iteration
    counts (``n_iter``, ``max_iter``, the checks and the error history) start there."""
    xp, ops, bk = prob.xp, prob.ops, prob.backend
    log_a, log_b = prob.log_weights()
    if f is None:
        f = xp.zeros((prob.geom.shape[0],), dtype=prob.dtype)

    n_iter = first_iter
    if eps_scaling is not None:
        # One alternating update per level, eps_k = eps_init * eps_scaling**k > eps.
        level = ops.cost_scale() if eps_init is None else eps_init
        while level > eps and n_iter < max_iter:
            ta, tb = prob.tau(level)
            g = tb * ops.softmin(f + level * log_a, level, axis=0)
            f = ta * ops.softmin(g + level * log_b, level, axis=1)
            level *= eps_scaling
            n_iter += 1
    ta, tb = prob.tau(eps)
    if g is None or eps_scaling is not None:
        g = tb * ops.softmin(f + eps * log_a, eps, axis=0)

    errors: list = []
    converged = False
    rho_a, rho_b = prob.rho
    shift = not (prob.balanced or symmetric)  # translation-invariant updates
    iterator = ops.sinkhorn_iterator(log_a, log_b, eps, symmetric, (ta, tb))
    while n_iter < max_iter:
        t = _translation(xp, prob, f, g, log_a, log_b) if shift else 0.0
        f_new, g_new = iterator.step(f + t, g - t) if shift else iterator.step(f, g)
        if (n_iter + 1) % check_every == 0 or n_iter + 1 == max_iter:
            # (f, g) meets the column condition exactly (alternating); the row softmin of
            # g, T(g) = T(g - t) - t, measures its rows.
            row_softmin = f_new if ta == 1.0 else f_new / ta
            err = row_error(xp, prob.a, f, row_softmin - t if shift else row_softmin, eps,
                             rho_a)
            if symmetric:
                err = err + row_error(xp, prob.b, g, g_new if tb == 1.0 else g_new / tb,
                                       eps, rho_b)
            err = bk.to_float(err)
            errors.append((n_iter, err))
            if err < tol:
                converged = True
                break
            if not math.isfinite(err):
                raise non_finite_error(prob, eps, "Sinkhorn produced a non-finite error")
            if monitor is not None and monitor.active and monitor.check(n_iter, err):
                break
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
    reg_m: float | tuple[float, float] | None = None,
    init: tuple[Any, Any] | None = None,
    callback: Callable[[IterationInfo], Any] | None = None,
    verbose: bool = False,
    time_limit: float | None = None,
    backend: Any = None,
    client: Any = None,
) -> OTResult | BatchResult:
    r"""Entropic optimal transport, balanced or unbalanced, by log-domain Sinkhorn
    iterations, for one problem or a batch of problems.

    Solves

    .. math::

        \min_{P \ge 0,\ P 1 = a,\ P^T 1 = b} \langle C, P \rangle
        + \varepsilon\, \mathrm{KL}(P \,|\, a b^T)

    or, with ``reg_m``, the unbalanced problem in which the marginal constraints are
    replaced by penalties,

    .. math::

        \min_{P \ge 0} \langle C, P \rangle + \varepsilon\, \mathrm{KL}(P \,|\, a b^T)
        + \rho_a \mathrm{KL}(P 1 \,|\, a) + \rho_b \mathrm{KL}(P^T 1 \,|\, b)

    (generalized KL, :math:`\mathrm{KL}(p | q) = \sum p \log(p / q) - p + q`;
    :math:`\rho = \infty` is an exact marginal). Either way the solution is
    :math:`P_{ij} = a_i b_j \exp((f_i + g_j - C_{ij}) / \varepsilon)`.
    Every update is a soft-minimum computed with a stable log-sum-exp, so small ``eps``
    does not overflow; the potentials, of the cost's scale, are resolved to its machine
    epsilon, though, so ``eps`` needs to stay well above ``1e-12`` times the cost's scale
    in float64 (``1e-3`` in float32) for the plan to be meaningful.

    Parameters
    ----------
    a : array_like of shape (n,), (B, n) or None
        Source weights (nonnegative); ``None`` means uniform ``1/n``. Arrays may come from
        NumPy, CuPy, PyTorch, JAX or another Array-API library (all from one), or be
        lists; results come back in that library. A 2-D array stacks the weights of
        ``B`` problems (see Batches in the Notes).
    b : array_like of shape (m,), (B, m) or None
        Target weights, same total mass as ``a`` (to a relative 1e-6 in float64, 1e-4 in
        float32; within it ``b`` is rescaled to the mass of ``a``); ``None`` means uniform
        ``1/m``. POT's many-targets form ``ot.sinkhorn(a, b, M, reg)`` with ``b`` of shape
        ``(m, B)`` is ``oc.sinkhorn(a, b.T, M, eps)`` here.
    C : array of shape (n, m) or (B, n, m), DenseCost, PointCloud, or list
        The cost. A :class:`~otcore.PointCloud` is never materialized: the kernels
        evaluate the cost on the fly, with ``O((n + m) d)`` memory. A 3-D array, a
        point cloud of stacked clouds ``(B, n, d)``, ``(B, m, d)``, or a list of costs
        or point clouds of different sizes (with ``a`` and ``b`` lists of weights, or
        ``None``) are batches.
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
    reg_m : float or pair of float, optional
        ``rho`` (both sides) or ``(rho_a, rho_b)``: the weights of the KL penalties on
        the marginals, > 0, in the units of ``C``; ``inf`` keeps that marginal exact.
        Default: both exact (balanced OT, which needs equal masses). ``(inf, rho)`` is
        semi-relaxed OT. The same parameter as POT's ``reg_m`` in
        ``ot.sinkhorn_unbalanced(a, b, M, reg, reg_m, reg_type="kl")``; OTT-JAX's
        ``tau_a = rho_a / (rho_a + eps)``; GeomLoss's ``reach`` means ``rho = reach ** p`` for
        its cost ``|x - y|^p / p``, so ``rho = 2 reach ** 2`` with otcore's
        ``"sqeuclidean"`` ``|x - y|^2``. Unbalanced updates are the balanced softmins scaled by
        ``rho / (rho + eps)``, with a translation-invariant shift of the potentials at
        every iteration (Sejourne, Vialard and Peyre, 2022), so that small ``rho`` does not
        slow convergence down; ``tol`` then bounds the L1 violation of the optimality
        conditions ``P 1 = a exp(-f / rho_a)``, ``P^T 1 = b exp(-g / rho_b)`` (the L1
        marginal error when both are exact).
    init : pair (f, g) of arrays, optional
        Warm-start potentials (either may be ``None``).
    callback : callable, optional
        Called at each convergence check (every ``check_every`` iterations) with an
        ``IterationInfo`` (``n_iter``, ``error``, ``elapsed``, ``method``); returning
        ``True`` stops the solve, which returns the potentials after ``n_iter``
        iterations, with ``converged`` decided from their exact error and
        ``extra["stopped"] = "callback"``.
    verbose : bool, default False
        Show progress at the convergence checks: a tqdm bar when tqdm is installed,
        otherwise a line on stderr every 2 seconds at most.
    time_limit : float, optional
        Seconds after which the solve stops at its next convergence check
        (``extra["stopped"] = "time_limit"``).
    backend : {"numba_cpu", "array_api", "cupy_gpu"} or Backend, optional
        Force a backend; by default it follows the array type.
    client : distributed.Client, optional
        For a batch: solve it in chunks on the workers of this Dask cluster (the batch
        is scattered once; see :func:`otcore.cdist` for the details, and
        ``pip install otcore[dask]``). ``verbose`` then shows progress over the chunks;
        ``callback`` and ``time_limit`` are not supported.

    Returns
    -------
    OTResult or BatchResult
        ``f``, ``g``, the lazy ``plan``, ``cost`` = ``<C, P>``, ``value`` = the regularized
        objective, ``marginal_error`` (exact, for the returned potentials), ``n_iter``,
        ``converged`` and the error history ``errors``; ``apply`` and
        ``barycentric_projection`` use the plan without forming it. For a batch, a
        :class:`~otcore.BatchResult`: the same fields with the batch first, and
        ``res[k]``, the result of problem ``k``.

    Raises
    ------
    ValueError
        For invalid weights, costs or options, and when the iterates become non-finite
        because ``eps`` is below ``1e4`` times the machine epsilon times the cost's scale.
    TypeError
        For objects that are not arrays or array_like, or arrays of mixed libraries.

    Warns
    -----
    ConvergenceWarning
        If ``tol`` is not reached within ``max_iter`` (then ``converged`` is False).

    See Also
    --------
    otcore.PointCloud : online costs for large point clouds.

    Notes
    -----
    **Batches.** ``B`` problems that share ``eps`` are solved in one call, in NumPy's
    stacked-array convention: many histograms on one cost (``C`` 2-D, ``a`` or ``b``
    2-D), stacked costs (``C`` of shape ``(B, n, m)``), stacked clouds, or a list of problems of
    different sizes (padded with zero weights, which take no part in the solve). Every
    problem stops on its own tolerance and leaves the loop (``n_iter`` per problem);
    the results equal those of a loop over single calls up to rounding. On the CPU, one
    cost shared by many histograms runs as matrix products (BLAS) in the scaling domain,
    with the potentials absorbed in the kernel so that no scaling overflows; where the
    potentials of the batch spread too far for that (small ``eps``), the iteration goes on
    with the log-domain batch kernel (``res.extra["path"]`` says which ran). Stacked dense
    costs step through per-problem cached Gibbs kernels, and point clouds run one
    parallel Numba kernel over all problems and rows. ``eps_scaling`` and
    ``init`` are not supported for batches yet (``reg_m`` is: unbalanced batches run
    the log-domain batch kernel); ``symmetric`` batches start from
    ``f = g = 0``. ``callback`` sees the largest error among the problems still running.

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

    Many histograms on one cost, in one call:

    >>> A = rng.dirichlet(np.ones(50), size=200)    # 200 source histograms
    >>> batch = oc.sinkhorn(A, None, C, eps=0.1)
    >>> batch.f.shape, batch.cost.shape, bool(batch.converged.all())
    ((200, 50), (200,), True)
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
    if is_batch(a, b, C):
        extras = {"eps_scaling": eps_scaling, "eps_init": eps_init, "init": init}
        unsupported = [k for k, v in extras.items() if v not in (None, False)]
        if unsupported:
            raise ValueError(f"{', '.join(unsupported)} is not supported for a batch of "
                             "problems yet; solve the problems one at a time")
        if client is not None and (callback is not None or time_limit is not None):
            raise ValueError("callback and time_limit are not supported with client=; "
                             "verbose=True shows progress over the chunks")
        rho = check_reg_m(reg_m)
        _check_rho(rho, eps, reg_m)
        bt = as_batch(a, b, C, balanced=rho == (math.inf, math.inf))
        tol = default_tol(bt.xp, bt.dtype) if tol is None else tol
        monitor = make_monitor("sinkhorn", callback, verbose, time_limit, tol)
        try:
            return sinkhorn_batch(bt, eps, tol=tol, max_iter=max_iter,
                                  check_every=check_every, symmetric=symmetric, rho=rho,
                                  backend=backend, monitor=monitor, advice=_ADVICE,
                                  client=client)
        finally:
            monitor.close()
    if client is not None:
        raise ValueError("client= distributes batches of problems; this is one problem")
    prob = make_problem(a, b, C, backend, reg_m)
    _check_rho(prob.rho, eps, reg_m)
    tol = default_tol(prob.xp, prob.dtype) if tol is None else tol
    f0, g0 = check_init(prob, init)
    monitor = make_monitor("sinkhorn", callback, verbose, time_limit, tol)

    try:
        f, g, n_iter, estimate_met, errors = sinkhorn_loop(
            prob, eps, tol=tol, max_iter=max_iter, check_every=check_every,
            symmetric=symmetric, eps_scaling=eps_scaling, eps_init=eps_init, f=f0, g=g0,
            monitor=monitor,
        )
    finally:
        monitor.close()
    extra = {"stopped": monitor.stopped} if monitor.stopped else {}
    return finish_entropic(prob, f, g, eps, n_iter=n_iter, errors=errors, tol=tol,
                           method="sinkhorn", estimate_met=estimate_met,
                           advice=monitor.reason() or _ADVICE, extra=extra)
