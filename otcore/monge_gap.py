r"""Monge-gap estimators and the Sinkhorn divergence, with closed-form gradients.

Both quantities are built on the log-domain Sinkhorn solver of :mod:`otcore.solvers` and
differentiated with the envelope theorem: at the optimal potentials, the derivative of the
entropic OT value in a point ``y_j`` is ``sum_i P_ij grad_y c(x_i, y_j)`` (the plan held
fixed), so no autodiff framework is needed. The plan-weighted gradient is a backend kernel
(:meth:`otcore.backends.GeometryOps.cost_grad`) that never forms the plan.

Entropic convention
-------------------
With ``OT_eps(a, b)`` the optimal value of ``<C, P> + eps KL(P | a b^T)`` (the ``value``
of :func:`otcore.sinkhorn`) and ``H(a) = -sum_i a_i log a_i`` the Shannon entropy,

* the Monge gap uses ``W_eps = <C, P> - eps H(P) = OT_eps(a, b) - eps (H(a) + H(b))``,
  the ``ent_reg_cost`` of OTT-JAX's ``monge_gap_from_samples``, so that both libraries
  give the same number for the same points, cost and (absolute) ``eps``;
* the Sinkhorn divergence uses ``OT_eps``; the entropy terms cancel in the debiasing, so
  it equals the one built from ``W_eps``.

Devices
-------
Everything runs on the backend of the inputs: on CuPy arrays, the solves, the dense cost
of the dense mode and the gradient kernel all run on the GPU, and only scalars reach the
host (the convergence checks of Sinkhorn and the returned value, a Python float as for
NumPy input); the gradient is a CuPy array on the inputs' device, in their dtype.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ._ground import ground_grad, paired_cost
from ._validation import (
    as_points,
    check_bool,
    check_eps,
    check_positive_int,
    check_probability,
    check_tol,
    float_dtype,
)
from .backends import namespace_of
from .geometry import DenseCost, PointCloud
from .result import warn_not_converged
from .solvers._problem import make_problem
from .solvers.sinkhorn import default_tol, sinkhorn_loop

__all__ = ["monge_gap", "sinkhorn_divergence"]

#: ``online=None`` materializes the cost matrix up to this many entries (256 MiB in
#: float64); beyond it the cost is evaluated on the fly in every Sinkhorn iteration.
DENSE_MAX_ENTRIES = 1 << 25


def _points(x: Any, y: Any, names: tuple[str, str]) -> tuple[Any, Any, Any]:
    """Validate two point arrays of one namespace; return ``xp`` and both as ``(n, d)``."""
    xp = namespace_of(x, y, names=names)
    dtype = xp.result_type(float_dtype(xp, x, names[0]), float_dtype(xp, y, names[1]))
    x, y = (as_points(xp, arr, name, dtype=dtype) for arr, name in zip((x, y), names, strict=True))
    if x.shape[1] != y.shape[1]:
        raise ValueError(
            f"{names[0]} and {names[1]} must have the same dimension, got shapes "
            f"{tuple(x.shape)} and {tuple(y.shape)}"
        )
    return xp, x, y


def _options(eps: Any, tol: Any, max_iter: Any, online: Any, dtype: Any
             ) -> tuple[float, float, int, bool | None]:
    tol = default_tol(dtype) if tol is None else check_tol(tol)
    online = None if online is None else check_bool(online, "online")
    return check_eps(eps), tol, check_positive_int(max_iter, "max_iter"), online


def _entropy(xp: Any, w: Any) -> Any:
    """Shannon entropy ``-sum w log w`` with ``0 log 0 = 0``."""
    return -xp.sum(xp.where(w > 0, w * xp.log(xp.where(w > 0, w, 1)), 0))


def _solve(a, b, cloud, eps, tol, max_iter, online, backend, method, *, self_transport=False):
    """Entropic OT between the two clouds of ``cloud``.

    Returns ``OT_eps(a, b)``, the shifted potentials ``hf, hg`` (the plan is
    ``exp((hf_i + hg_j - C_ij) / eps)``) and the ops bound to the point cloud. A
    ``self_transport`` problem (a cloud with itself, ``a == b``) runs the symmetric
    iteration ``f <- (f + T(f)) / 2`` from ``f = g = 0``, which keeps ``f == g`` and
    converges in a few dozen iterations where alternating updates crawl (Feydy et al.,
    2019).
    """
    n, m = cloud.shape
    if online is None:
        online = n * m > DENSE_MAX_ENTRIES
    prob = make_problem(a, b, cloud, backend)
    ops = prob.ops
    if not online:
        prob = make_problem(a, b, DenseCost(ops.cost_matrix()), prob.backend)
    xp = prob.xp
    log_a, log_b = prob.log_weights()
    f0 = xp.zeros((n,), dtype=prob.dtype) if self_transport else None
    f, g, n_iter, converged, errors = sinkhorn_loop(
        prob, eps, tol=tol, max_iter=max_iter, symmetric=self_transport, f=f0, g=f0
    )
    if self_transport:  # a last column update makes the column marginal exact
        g = prob.ops.softmin(f + eps * log_a, eps, axis=0, hint=g)
    if not converged:
        warn_not_converged(method, n_iter, errors[-1][1], tol,  # checked at the last one
                           "Increase max_iter or use a larger eps.")
    # The column marginal is exact (the last update is a column update), so
    # OT_eps = <a, f> + <b, g> + eps (sum(a) sum(b) - sum(P)) reduces to <a, f> + <b, g>.
    value = xp.sum(prob.a * f) + xp.sum(prob.b * g)
    return value, f + eps * log_a, g + eps * log_b, ops


def monge_gap(
    x: Any,
    Tx: Any | Callable[[Any], Any],
    *,
    a: Any = None,
    cost: Any = "sqeuclidean",
    eps: float,
    tol: float | None = None,
    max_iter: int = 10_000,
    return_grad: bool = False,
    online: bool | None = None,
    backend: Any = None,
) -> float | tuple[float, Any]:
    r"""Entropic Monge gap of a map, estimated from samples.

    For reference points :math:`x_i` with weights :math:`a_i` and their images
    :math:`y_i = T(x_i)`,

    .. math::

        \mathcal{M}_\varepsilon(T) = \sum_i a_i\, c(x_i, y_i)
        - W_\varepsilon\Big(\sum_i a_i \delta_{x_i}, \sum_i a_i \delta_{y_i}\Big),
        \qquad W_\varepsilon = \min_P \langle C, P \rangle - \varepsilon H(P),

    with :math:`H(P) = -\sum_{ij} P_{ij} \log P_{ij}` over couplings of ``a`` with itself
    (Uscidda & Cuturi, 2023). This is the convention of OTT-JAX's
    ``monge_gap_from_samples`` (its ``ent_reg_cost``), so the two agree for the same
    points, cost and absolute ``eps``. The exact (unregularized) gap
    :math:`\mathcal{M}_0(T) \ge 0` is zero iff the identity coupling
    :math:`x_i \mapsto T(x_i)` is optimal.

    Parameters
    ----------
    x : array of shape (n, d) or (n,)
        Reference points (a 1-D array is ``n`` points in dimension 1).
    Tx : array of shape (n, d) or (n,), or callable
        The images ``T(x_i)``, row by row; or the map ``T`` itself, called once as
        ``T(x)``.
    a : array of shape (n,), optional
        Weights of the reference points (nonnegative; normalized to sum 1). Default
        uniform.
    cost : {"sqeuclidean", "euclidean"} or ("pnorm", p), default "sqeuclidean"
        ``|x - y|_2^2`` (no 1/2), ``|x - y|_2``, or ``|x - y|_p^p / p`` (OTT-JAX's
        ``SqEuclidean``, ``Euclidean`` and ``PNormP(p)``).
    eps : float
        Entropic regularization, absolute, in the units of the cost (OTT-JAX: pass the
        same float with ``relative_epsilon=None``; OTT's default ``epsilon=None`` means
        ``0.05 * std(C)``).
    tol : float, optional
        Sinkhorn stops when the L1 marginal error is below ``tol`` (default 1e-9 in
        float64, 1e-4 in float32).
    max_iter : int, default 10000
        Maximum number of Sinkhorn iterations.
    return_grad : bool, default False
        Also return the gradient with respect to the images ``Tx``.
    online : bool, optional
        Evaluate the cost on the fly in every iteration (``O(n d)`` memory) instead of
        materializing the ``n x n`` matrix once (then each iteration reads it, which is
        faster in any dimension). Default: online when ``n^2`` exceeds
        :data:`DENSE_MAX_ENTRIES` (2**25, 256 MiB in float64).
    backend : {"numba_cpu", "array_api", "cupy_gpu"} or Backend, optional
        Force a backend; by default it follows the array type.

    Returns
    -------
    gap : float
        The entropic Monge gap.
    grad : array of the shape of ``Tx``
        Only with ``return_grad=True``: the gradient in the images ``y_j = T(x_j)``,
        ``a_j grad_y c(x_j, y_j) - sum_i P_ij grad_y c(x_i, y_j)`` with ``P`` the optimal
        entropic plan. For a parametric map, chain it with the Jacobian of ``T``.

    Warns
    -----
    ConvergenceWarning
        If Sinkhorn does not reach ``tol`` within ``max_iter``; the gap is then computed
        from the last potentials.

    See Also
    --------
    sinkhorn_divergence : the fitting loss used together with the Monge gap.
    otcore.sinkhorn : the solver underneath.

    Notes
    -----
    *Bounds.* With :math:`\mathcal{M}_0` the exact gap (from the unregularized OT cost
    between the same weighted clouds) and :math:`H(a)` the entropy of the weights
    (:math:`\log n` for uniform weights),

    .. math::

        \mathcal{M}_0(T) + \varepsilon H(a) \le \mathcal{M}_\varepsilon(T)
        \le \mathcal{M}_0(T) + 2 \varepsilon H(a).

    Proof: :math:`W_\varepsilon = \mathrm{OT}_\varepsilon - 2\varepsilon H(a)`, where
    :math:`\mathrm{OT}_\varepsilon = \min \langle C, P\rangle + \varepsilon
    \mathrm{KL}(P | a a^T)`. Since :math:`\mathrm{KL} \ge 0`,
    :math:`\mathrm{OT}_\varepsilon \ge \mathrm{OT}_0`; evaluating at an exact optimal
    plan :math:`P^0`, :math:`\mathrm{KL}(P^0 | a a^T) = 2 H(a) - H(P^0) \le H(a)`
    because a coupling has :math:`H(P^0) \ge H(a)`, so
    :math:`\mathrm{OT}_\varepsilon \le \mathrm{OT}_0 + \varepsilon H(a)`. In particular
    the estimator is at least :math:`\varepsilon H(a) > 0` even for an optimal map; the
    bias is the same for every map, so it does not move minimizers.

    *Cost of a solve.* When ``T`` is close to optimal the entropic plan is close to a
    permutation and Sinkhorn converges slowly (its rate approaches 1 as ``eps`` shrinks
    relative to the squared distance between neighbouring points). Inside a training
    loop a loose ``tol`` (``1e-4``, say) is usually enough for a gradient step.

    *Gradient.* By the envelope theorem the derivative of :math:`\mathrm{OT}_\varepsilon`
    in :math:`y_j` is :math:`\sum_i P_{ij} \nabla_y c(x_i, y_j)` at the optimal plan, and
    the entropy terms do not depend on the points. For the Euclidean cost at
    :math:`x = y` (and for ``("pnorm", 1)`` where a coordinate coincides) the
    subgradient ``0`` is used; it equals the symmetric derivative.

    Examples
    --------
    >>> import numpy as np, otcore as oc
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(200, 2))
    >>> A = np.array([[2.0, 0.5], [0.5, 1.0]])  # symmetric positive definite
    >>> R = np.array([[0.0, -1.0], [1.0, 0.0]])  # a rotation by 90 degrees
    >>> eps = 0.5
    >>> gap_opt = oc.monge_gap(x, x @ A, eps=eps)  # gradient of a convex function
    >>> gap_rot = oc.monge_gap(x, x @ R, eps=eps)
    >>> # exact gap 0: only the entropic bias, between eps log n and 2 eps log n
    >>> bool(eps * np.log(200) <= gap_opt <= 2 * eps * np.log(200) < gap_rot)
    True
    >>> gap, grad = oc.monge_gap(x, lambda z: z @ R, eps=eps, return_grad=True)
    >>> grad.shape
    (200, 2)
    """
    if callable(Tx):
        namespace_of(x, names=("x",))
        Tx = Tx(x)
        names = ("x", "T(x)")
    else:
        names = ("x", "Tx")
    xp, x2, y2 = _points(x, Tx, names)
    if x2.shape[0] != y2.shape[0]:
        raise ValueError(
            f"{names[1]} must have one row per point of x, got {y2.shape[0]} rows for "
            f"{x2.shape[0]} points"
        )
    cloud = PointCloud(x2, y2, cost)
    eps, tol, max_iter, online = _options(eps, tol, max_iter, online, x2.dtype)
    return_grad = check_bool(return_grad, "return_grad")
    a = check_probability(xp, a, x2.shape[0], "a", dtype=x2.dtype)

    value, hf, hg, ops = _solve(a, a, cloud, eps, tol, max_iter, online, backend, "monge_gap")
    disp = paired_cost(xp, cloud.cost_code, cloud.p, x2, y2)
    gap = float(xp.sum(a * disp) - value + 2 * eps * _entropy(xp, a))
    if not return_grad:
        return gap
    grad = a[:, None] * ground_grad(xp, cloud.cost_code, cloud.p, y2 - x2)
    grad = grad - ops.cost_grad(hf, hg, eps)
    return gap, xp.reshape(grad, Tx.shape)


def sinkhorn_divergence(
    x: Any,
    y: Any,
    *,
    a: Any = None,
    b: Any = None,
    cost: Any = "sqeuclidean",
    eps: float,
    tol: float | None = None,
    max_iter: int = 10_000,
    return_grad: bool = False,
    online: bool | None = None,
    backend: Any = None,
) -> float | tuple[float, Any]:
    r"""Debiased Sinkhorn divergence between two weighted point clouds.

    .. math::

        S_\varepsilon(\alpha, \beta) = \mathrm{OT}_\varepsilon(\alpha, \beta)
        - \tfrac12 \mathrm{OT}_\varepsilon(\alpha, \alpha)
        - \tfrac12 \mathrm{OT}_\varepsilon(\beta, \beta),

    with :math:`\alpha = \sum_i a_i \delta_{x_i}`, :math:`\beta = \sum_j b_j \delta_{y_j}`
    and :math:`\mathrm{OT}_\varepsilon` the optimal value of
    :math:`\langle C, P \rangle + \varepsilon \mathrm{KL}(P | a b^T)` (the ``value`` of
    :func:`otcore.sinkhorn`). Using :math:`\langle C, P\rangle - \varepsilon H(P)` instead
    (OTT-JAX's ``ent_reg_cost``) gives the same divergence: the entropy terms cancel.

    Parameters
    ----------
    x : array of shape (n, d) or (n,)
        Source points.
    y : array of shape (m, d) or (m,)
        Target points (same dimension).
    a, b : arrays of shape (n,) and (m,), optional
        Weights (nonnegative; each normalized to sum 1). Default uniform.
    cost : {"sqeuclidean", "euclidean"} or ("pnorm", p), default "sqeuclidean"
        As in :func:`monge_gap`.
    eps : float
        Entropic regularization, absolute.
    tol : float, optional
        L1 marginal tolerance of each of the three Sinkhorn solves (default 1e-9 in
        float64, 1e-4 in float32).
    max_iter : int, default 10000
        Maximum number of iterations of each solve.
    return_grad : bool, default False
        Also return the gradient with respect to ``y``.
    online : bool, optional
        As in :func:`monge_gap`.
    backend : {"numba_cpu", "array_api", "cupy_gpu"} or Backend, optional
        Force a backend; by default it follows the array type.

    Returns
    -------
    div : float
        The divergence.
    grad : array of the shape of ``y``
        Only with ``return_grad=True``: ``sum_i P_ij grad_y c(x_i, y_j) - sum_k
        Q_kj grad_y c(y_k, y_j)``, with ``P`` the optimal plan between ``x`` and ``y`` and
        ``Q`` that between ``y`` and itself (envelope theorem; the self-term counts twice
        because ``y`` appears on both sides, which cancels its factor 1/2).

    Warns
    -----
    ConvergenceWarning
        If one of the three solves does not reach ``tol``.

    See Also
    --------
    monge_gap

    Notes
    -----
    For costs whose Gibbs kernel :math:`e^{-c/\varepsilon}` is positive definite
    (``"sqeuclidean"``, ``"euclidean"``, and ``("pnorm", p)`` with ``p <= 2``),
    :math:`S_\varepsilon \ge 0` with equality iff the measures coincide (Feydy et al.,
    2019); for ``p > 2`` the kernel is not positive definite and the divergence may be
    negative. It interpolates between OT (``eps -> 0``) and an MMD (``eps -> inf``).

    Examples
    --------
    >>> import numpy as np, otcore as oc
    >>> rng = np.random.default_rng(0)
    >>> x, y = rng.normal(size=(100, 2)), rng.normal(size=(80, 2)) + 1.0
    >>> div, grad = oc.sinkhorn_divergence(x, y, eps=0.5, return_grad=True)
    >>> bool(div > 0), grad.shape
    (True, (80, 2))
    >>> abs(oc.sinkhorn_divergence(x, x, eps=0.5)) < 1e-12
    True
    """
    xp, x2, y2 = _points(x, y, ("x", "y"))
    eps, tol, max_iter, online = _options(eps, tol, max_iter, online, x2.dtype)
    return_grad = check_bool(return_grad, "return_grad")
    cloud = PointCloud(x2, y2, cost)
    a = check_probability(xp, a, x2.shape[0], "a", dtype=x2.dtype)
    b = check_probability(xp, b, y2.shape[0], "b", dtype=x2.dtype)

    args = (eps, tol, max_iter, online, backend, "sinkhorn_divergence")
    v_xy, hf, hg, ops_xy = _solve(a, b, cloud, *args)
    v_xx = _solve(a, a, PointCloud(x2, x2, cost), *args, self_transport=True)[0]
    v_yy, hf_y, hg_y, ops_yy = _solve(b, b, PointCloud(y2, y2, cost), *args,
                                      self_transport=True)
    div = float(v_xy - 0.5 * (v_xx + v_yy))
    if not return_grad:
        return div
    grad = ops_xy.cost_grad(hf, hg, eps) - ops_yy.cost_grad(hf_y, hg_y, eps)
    return div, xp.reshape(grad, y.shape)
