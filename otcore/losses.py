r"""Monge-gap estimators and the Sinkhorn divergence, with closed-form gradients.

Both quantities are built on the public solver :func:`otcore.sinkhorn` and differentiated
with the envelope theorem: at the optimal potentials, the derivative of the
entropic OT value in a point ``y_j`` is ``sum_i P_ij grad_y c(x_i, y_j)`` (the plan held
fixed), so no autodiff framework is needed. The plan-weighted gradient is a backend kernel
(``GeometryOps.cost_grad`` of the kernel contract) that never forms the plan. Both return
a :class:`~otcore.LossResult`; inputs of any supported array library come back in it.

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

import re
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

from ._array import namespaces, safe_log
from ._validation import (
    check_bool,
    check_eps,
    check_positive_int,
    check_probability,
    check_reg_m,
    check_tol,
    check_weights,
)
from .backends import get_backend
from .geometry import DenseCost, PointCloud
from .result import BatchResult, ConvergenceWarning, LossResult, OTResult, warn_outside
from .solvers._monitor import IterationInfo
from .solvers.sinkhorn import sinkhorn

__all__ = ["monge_gap", "sinkhorn_divergence"]

#: ``online=None`` materializes the cost matrix up to this many entries (256 MiB in
#: float64); beyond it the cost is evaluated on the fly in every Sinkhorn iteration.
DENSE_MAX_ENTRIES = 1 << 25


class _Options:
    """The validated options shared by every solve of a loss."""

    def __init__(self, method: str, eps: Any, tol: Any, max_iter: Any, online: Any,
                 return_grad: Any, backend: Any, init: Any = None,
                 control: dict | None = None):
        self.control = control or {}
        if init is not None and not (isinstance(init, LossResult) and init.method == method):
            raise TypeError(f"init must be a LossResult of {method}, got "
                            f"{type(init).__name__}")
        self.init = init
        self.method = method
        self.eps = check_eps(eps)
        self.tol = None if tol is None else check_tol(tol)
        self.max_iter = check_positive_int(max_iter, "max_iter")
        self.online = None if online is None else check_bool(online, "online")
        self.return_grad = check_bool(return_grad, "return_grad")
        self.backend = backend


def _entropy(xp: Any, w: Any) -> Any:
    """Shannon entropy ``-sum w log w`` with ``0 log 0 = 0``."""
    return -xp.sum(xp.where(w > 0, w * xp.log(xp.where(w > 0, w, 1)), 0))


def _solve(a: Any, b: Any, cloud: PointCloud, opts: _Options, self_transport: bool = False,
           reg_m: Any = None, role: str = "xy") -> tuple[OTResult, Any, Any, Any]:
    """Entropic OT between the two clouds of ``cloud`` with :func:`otcore.sinkhorn`.

    The losses use the result's ``dual_value``, accurate to second order in the marginal
    error. Returns the result, the shifted potentials ``hf, hg`` in the compute namespace (the
    plan is ``exp((hf_i + hg_j - C_ij) / eps)``) and the kernels bound to the cloud, for
    the gradient. The cost is materialized first unless ``online`` (default: for more
    than :data:`DENSE_MAX_ENTRIES` pairs). A ``self_transport`` problem (a cloud with
    itself, ``a == b``) runs the symmetric iteration ``f <- (f + T(f)) / 2`` from
    ``f = g = 0``, which keeps ``f == g`` and converges in a few dozen iterations where
    alternating updates crawl (Feydy et al., 2019).
    """
    ns = cloud.namespaces
    n, m = cloud.shape
    online = n * m > DENSE_MAX_ENTRIES if opts.online is None else opts.online
    bk = get_backend(*cloud.arrays, backend=opts.backend)
    ops = bk.bind(cloud)
    cost = cloud if online else DenseCost(ns.to_user(ops.cost_matrix()))
    init = None
    if opts.init is not None:  # a warm start from the same role of an earlier call
        prev = opts.init.solves[role]
        if tuple(prev.f.shape) != (n,) or tuple(prev.g.shape) != (m,):
            raise ValueError(f"init comes from clouds of other sizes: its {role} solve has "
                             f"shape ({prev.f.shape[0]}, {prev.g.shape[0]}), this one {(n, m)}")
        init = (prev.f, prev.g)
    elif self_transport:
        zero = ns.to_user(bk.xp.zeros((n,), dtype=cloud.dtype))
        init = (zero, zero)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        res = sinkhorn(ns.to_user(a), ns.to_user(b), cost, opts.eps, tol=opts.tol,
                       max_iter=opts.max_iter, symmetric=self_transport, reg_m=reg_m,
                       init=init, backend=bk, **opts.control)
    for w in caught:  # said again, in the loss's name, at the caller's line
        warn_outside(f"{opts.method}: {w.message}", w.category)
    xp = bk.xp
    log = [safe_log(xp, w) for w in (a, b)]
    hf = ns.to_compute(res.f) + opts.eps * log[0]
    hg = ns.to_compute(res.g) + opts.eps * log[1]
    return res, hf, hg, ops


def monge_gap(
    x: Any,
    Tx: Any | Callable[[Any], Any],
    eps: float,
    *,
    a: Any = None,
    cost: Any = "sqeuclidean",
    tol: float | None = None,
    max_iter: int = 10_000,
    return_grad: bool = False,
    online: bool | None = None,
    init: LossResult | None = None,
    callback: Callable[[IterationInfo], Any] | None = None,
    verbose: bool = False,
    time_limit: float | None = None,
    backend: Any = None,
) -> LossResult:
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
        Reference points (a 1-D array is ``n`` points in dimension 1). Stacked points
        ``(B, n, d)`` (with ``Tx`` of the same shape and ``a`` of shape ``(n,)`` or
        ``(B, n)``) give a batch of ``B`` gaps, computed one after the other.
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
    init : LossResult, optional
        A previous result of this function on clouds of the same sizes (an earlier step of
        a fit, say): its potentials start the solves (warm start), which then take far
        fewer iterations when the points moved little.
    callback, verbose, time_limit
        Passed to each underlying :func:`otcore.sinkhorn` solve (the time limit applies
        to each solve).
    online : bool, optional
        Evaluate the cost on the fly in every iteration (``O(n d)`` memory) instead of
        materializing the ``n x n`` matrix once (then each iteration reads it, which is
        faster in any dimension). Default: online when ``n^2`` exceeds
        :data:`DENSE_MAX_ENTRIES` (2**25, 256 MiB in float64).
    backend : {"numba_cpu", "array_api", "cupy_gpu"} or Backend, optional
        Force a backend; by default it follows the array type.

    Returns
    -------
    LossResult
        ``value``: the entropic Monge gap (``float(result)`` gives it too); ``grad``, with
        ``return_grad=True``: the gradient in the images ``y_j = T(x_j)``,
        ``a_j grad_y c(x_j, y_j) - sum_i P_ij grad_y c(x_i, y_j)`` with ``P`` the optimal
        entropic plan, in the array library, dtype and shape of ``Tx`` (for a parametric
        map, chain it with the Jacobian of ``T``); ``solves["xy"]``: the
        :class:`~otcore.OTResult` of the solve between ``x`` and ``T(x)``.

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
    >>> gap_opt = oc.monge_gap(x, x @ A, eps=eps).value  # gradient of a convex function
    >>> gap_rot = oc.monge_gap(x, x @ R, eps=eps).value
    >>> # exact gap 0: only the entropic bias, between eps log n and 2 eps log n
    >>> bool(eps * np.log(200) <= gap_opt <= 2 * eps * np.log(200) < gap_rot)
    True
    >>> res = oc.monge_gap(x, lambda z: z @ R, eps=eps, return_grad=True)
    >>> res.grad.shape
    (200, 2)
    """
    if _stacked(x):
        if callable(Tx) or not _stacked(Tx) or Tx.shape[0] != x.shape[0]:
            raise ValueError("a batch of Monge gaps needs Tx as an array of the shape of x "
                             f"{tuple(x.shape)}")
        B = x.shape[0]
        return _each_loss(
            monge_gap, "monge_gap", [(x[k, ...], Tx[k, ...], eps) for k in range(B)],
            [{"a": w} for w in _batch_weights(a, B, "a")],
            {"cost": cost, "tol": tol, "max_iter": max_iter, "return_grad": return_grad,
             "online": online, "init": init, "callback": callback, "verbose": verbose,
             "time_limit": time_limit, "backend": backend})
    opts = _Options("monge_gap", eps, tol, max_iter, online, return_grad, backend, init,
                    {"callback": callback, "verbose": verbose, "time_limit": time_limit})
    if callable(Tx):
        namespaces(x, a, names=("x", "a"))
        Tx, name = Tx(x), "T(x)"
    else:
        name = "Tx"
    namespaces(x, Tx, a, names=("x", name, "a"))
    cloud = _cloud(x, Tx, cost, ("x", name))
    xp, ns = cloud.xp, cloud.namespaces
    if cloud.shape[0] != cloud.shape[1]:
        raise ValueError(
            f"{name} must have one row per point of x, got {cloud.shape[1]} rows for "
            f"{cloud.shape[0]} points"
        )
    a = check_probability(xp, ns.to_compute(a), cloud.shape[0], "a", dtype=cloud.dtype)

    res, hf, hg, ops = _solve(a, a, cloud, opts)
    disp = cloud.ground.paired(xp, cloud.x, cloud.y)
    gap = float(xp.sum(a * disp)) - res.dual_value + 2 * opts.eps * float(_entropy(xp, a))
    grad = None
    if opts.return_grad:
        grad = a[:, None] * cloud.ground.grad(xp, cloud.y - cloud.x) - ops.cost_grad(hf, hg,
                                                                                  opts.eps)
        grad = ns.to_user(xp.reshape(grad, tuple(np.shape(Tx))))
    return LossResult(gap, grad, {"xy": res}, "monge_gap")


def _stacked(x: Any) -> bool:
    """Points stacked ``(B, n, d)``: a batch of losses."""
    return not isinstance(x, (list, tuple)) and len(getattr(x, "shape", ())) == 3


def _each_loss(loss: Callable[..., LossResult], method: str, args: list[tuple],
               weights: list[tuple], kwargs: dict) -> LossResult:
    """``loss(*args[k], **weights[k], **kwargs)`` for each problem of a batch, one after
    the other: values ``(B,)``, gradients stacked, solves as :class:`BatchResult`."""
    if kwargs.get("init") is not None:
        raise ValueError(f"{method}: init is not supported for a batch")
    B = len(args)
    results = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for k in range(B):
            results.append(loss(*args[k], **weights[k], **kwargs))
    grad = None
    if results[0].grad is not None:
        grad = namespaces(results[0].grad).user.stack([r.grad for r in results])
    solves = {role: BatchResult.from_results([r.solves[role] for r in results])
              for role in results[0].solves}
    out = LossResult(np.array([r.value for r in results]), grad, solves, method)
    if not out.converged:
        warn_outside(f"{method}: some solves of the batch did not converge", ConvergenceWarning)
    return out


def _batch_weights(w: Any, B: int, name: str) -> list:
    """Per-problem weights from ``None``, one vector for all, or ``(B, n)``."""
    if w is None or len(getattr(w, "shape", (0,))) == 1:
        return [w] * B
    if w.shape[0] != B:
        raise ValueError(f"mismatched batch sizes: {name} has {w.shape[0]} rows for a batch "
                         f"of {B}")
    return [w[k, ...] for k in range(B)]


def _cloud(x: Any, y: Any, cost: Any, names: tuple[str, str]) -> PointCloud:
    """The point cloud of a loss, with the arguments' names in error messages."""
    try:
        return PointCloud(x, y, cost)
    except (ValueError, TypeError) as err:
        msg = str(err)
        if names[1] != "y":  # PointCloud names its arguments x and y
            msg = re.sub(r"\by\b", names[1], msg)
        raise type(err)(msg) from None


def sinkhorn_divergence(
    x: Any,
    y: Any,
    eps: float,
    *,
    a: Any = None,
    b: Any = None,
    cost: Any = "sqeuclidean",
    tol: float | None = None,
    max_iter: int = 10_000,
    return_grad: bool = False,
    online: bool | None = None,
    reg_m: float | tuple[float, float] | None = None,
    init: LossResult | None = None,
    callback: Callable[[IterationInfo], Any] | None = None,
    verbose: bool = False,
    time_limit: float | None = None,
    backend: Any = None,
) -> LossResult:
    r"""Debiased Sinkhorn divergence between two weighted point clouds, balanced or
    unbalanced.

    .. math::

        S_\varepsilon(\alpha, \beta) = \mathrm{OT}_\varepsilon(\alpha, \beta)
        - \tfrac12 \mathrm{OT}_\varepsilon(\alpha, \alpha)
        - \tfrac12 \mathrm{OT}_\varepsilon(\beta, \beta)
        + \tfrac{\varepsilon}{2} (m(\alpha) - m(\beta))^2,

    with :math:`\alpha = \sum_i a_i \delta_{x_i}`, :math:`\beta = \sum_j b_j \delta_{y_j}`
    and :math:`\mathrm{OT}_\varepsilon` the optimal value of
    :math:`\langle C, P \rangle + \varepsilon \mathrm{KL}(P | a b^T)` (the ``value`` of
    :func:`otcore.sinkhorn`). Using :math:`\langle C, P\rangle - \varepsilon H(P)` instead
    (OTT-JAX's ``ent_reg_cost``) gives the same divergence: the entropy terms cancel.
    With ``reg_m``, :math:`\mathrm{OT}_\varepsilon` is the unbalanced value of
    :func:`otcore.sinkhorn` (KL penalties on the marginals) and the masses
    :math:`m(\alpha) = \sum_i a_i`, :math:`m(\beta)` may differ; the last term, zero for
    balanced problems, is the mass correction of the unbalanced divergence (Sejourne,
    Feydy, Vialard, Trouve and Peyre, 2019).

    Parameters
    ----------
    x : array of shape (n, d) or (n,)
        Source points. Stacked points ``(B, n, d)`` and ``(B, m, d)`` (weights ``(n,)``
        or ``(B, n)``) give a batch of ``B`` divergences, computed one after the other;
        :func:`otcore.cdist` computes many divergences with batch solves.
    y : array of shape (m, d) or (m,)
        Target points (same dimension).
    a, b : arrays of shape (n,) and (m,), optional
        Weights (nonnegative). Balanced (``reg_m=None``): each normalized to sum 1.
        Unbalanced: used as given, so their masses may differ. Default uniform (``1/n``,
        ``1/m``).
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
    init : LossResult, optional
        As in :func:`monge_gap`: a previous divergence between clouds of the same sizes.
    callback, verbose, time_limit
        As in :func:`monge_gap`.
    reg_m : float, optional
        The KL penalty ``rho`` on the marginals, as in :func:`otcore.sinkhorn`, the same
        on both sides (a pair of equal values is accepted): with two different values the
        self terms would not cancel and ``S(alpha, alpha)`` would not vanish. Default:
        balanced.
    backend : {"numba_cpu", "array_api", "cupy_gpu"} or Backend, optional
        Force a backend; by default it follows the array type.

    Returns
    -------
    LossResult
        ``value``: the divergence; ``grad``, with ``return_grad=True``:
        ``sum_i P_ij grad_y c(x_i, y_j) - sum_k Q_kj grad_y c(y_k, y_j)``, with ``P`` the
        optimal plan between ``x`` and ``y`` and ``Q`` that between ``y`` and itself
        (envelope theorem; the self-term counts twice because ``y`` appears on both sides,
        which cancels its factor 1/2), in the library, dtype and shape of ``y``;
        ``solves``: the three :class:`~otcore.OTResult` (``"xy"``, ``"xx"``, ``"yy"``).

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
    >>> res = oc.sinkhorn_divergence(x, y, eps=0.5, return_grad=True)
    >>> bool(res.value > 0), res.grad.shape
    (True, (80, 2))
    >>> abs(oc.sinkhorn_divergence(x, x, eps=0.5).value) < 1e-12
    True
    """
    if _stacked(x) or _stacked(y):
        if not (_stacked(x) and _stacked(y) and x.shape[0] == y.shape[0]):
            raise ValueError(f"a batch of divergences needs x (B, n, d) and y (B, m, d), got "
                             f"shapes {tuple(np.shape(x))} and {tuple(np.shape(y))}")
        B = x.shape[0]
        return _each_loss(
            sinkhorn_divergence, "sinkhorn_divergence",
            [(x[k, ...], y[k, ...], eps) for k in range(B)],
            [{"a": wa, "b": wb} for wa, wb in zip(_batch_weights(a, B, "a"),
                                                  _batch_weights(b, B, "b"), strict=True)],
            {"cost": cost, "tol": tol, "max_iter": max_iter, "return_grad": return_grad,
             "online": online, "reg_m": reg_m, "init": init, "callback": callback,
             "verbose": verbose, "time_limit": time_limit, "backend": backend})
    opts = _Options("sinkhorn_divergence", eps, tol, max_iter, online, return_grad, backend,
                    init, {"callback": callback, "verbose": verbose, "time_limit": time_limit})
    rho_a, rho_b = check_reg_m(reg_m)
    if rho_a != rho_b:
        raise ValueError(f"sinkhorn_divergence needs one rho for both marginals to be "
                         f"debiased (S(a, a) = 0); got reg_m={reg_m!r}")
    namespaces(x, y, a, b, names=("x", "y", "a", "b"))
    cloud = _cloud(x, y, cost, ("x", "y"))
    xp, ns = cloud.xp, cloud.namespaces
    weights = check_probability if reg_m is None else check_weights
    a = weights(xp, ns.to_compute(a), cloud.shape[0], "a", dtype=cloud.dtype)
    b = weights(xp, ns.to_compute(b), cloud.shape[1], "b", dtype=cloud.dtype)
    x2, y2 = (ns.to_user(v) for v in (cloud.x, cloud.y))

    res_xy, hf, hg, ops_xy = _solve(a, b, cloud, opts, reg_m=reg_m)
    res_xx = _solve(a, a, PointCloud(x2, x2, cost), opts, self_transport=True,
                    reg_m=reg_m, role="xx")[0]
    res_yy, hf_y, hg_y, ops_yy = _solve(b, b, PointCloud(y2, y2, cost), opts,
                                        self_transport=True, reg_m=reg_m, role="yy")
    div = res_xy.dual_value - 0.5 * (res_xx.dual_value + res_yy.dual_value)
    if reg_m is not None:
        div += 0.5 * opts.eps * (float(xp.sum(a)) - float(xp.sum(b))) ** 2
    grad = None
    if opts.return_grad:
        grad = ops_xy.cost_grad(hf, hg, opts.eps) - ops_yy.cost_grad(hf_y, hg_y, opts.eps)
        grad = ns.to_user(xp.reshape(grad, tuple(np.shape(y))))
    return LossResult(div, grad, {"xy": res_xy, "xx": res_xx, "yy": res_yy},
                      "sinkhorn_divergence")
