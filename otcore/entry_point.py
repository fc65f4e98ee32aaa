"""One entry point that picks the solver from the problem and says why."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ._validation import check_choice, check_eps
from .backends import get_backend
from .collection import as_batch, is_batch
from .geometry import PointCloud
from .result import BatchResult, OTResult
from .solvers._monitor import IterationInfo
from .solvers._problem import as_geometry
from .solvers.cardinality import cardinality_ot
from .solvers.multiscale import MAX_DIM, multiscale_sinkhorn
from .solvers.sinkhorn import sinkhorn
from .solvers.sns import sinkhorn_newton_sparse

__all__ = ["solve"]

#: Below this eps (relative to the cost scale), Sinkhorn needs many iterations and the
#: Newton steps of SNS pay.
SNS_BELOW = 1e-2
#: SNS holds two dense plans: it is chosen only up to this many plan entries.
SNS_MAX_ENTRIES = 1 << 25
#: Point clouds with at least this many pairs go to the multiscale solver (balanced OT,
#: dimension at most MAX_DIM, a backend with block-sparse kernels).
MULTISCALE_FROM = 10**8
_METHODS = ("auto", "sinkhorn", "sinkhorn_newton_sparse", "multiscale_sinkhorn",
            "cardinality_ot")


def solve(
    a: Any,
    b: Any,
    C: Any,
    eps: float | None = None,
    *,
    reg_m: float | tuple[float, float] | None = None,
    k: int | None = None,
    gamma: float | None = None,
    method: str = "auto",
    tol: float | None = None,
    callback: Callable[[IterationInfo], Any] | None = None,
    verbose: bool = False,
    time_limit: float | None = None,
    backend: Any = None,
) -> OTResult | BatchResult:
    r"""Solve an optimal-transport problem with the method that suits it.

    The counterpart of POT's ``ot.solve``: the problem decides the solver, and the result
    says which one ran (``res.method``) and why (``res.extra["choice"]``).

    =====================================  ==================================================
    problem                                method
    =====================================  ==================================================
    ``k`` or ``gamma`` given               :func:`otcore.cardinality_ot` (quadratically
                                           regularized OT with at most ``k`` nonzeros per
                                           column)
    ``reg_m`` given (unbalanced)           :func:`otcore.sinkhorn`
    a :class:`~otcore.PointCloud` with     :func:`otcore.multiscale_sinkhorn` (clusters,
    ``n m >= 1e8`` pairs in dimension      eps-scaling and truncated kernels; NumPy and
    ``d <= 6``                             other CPU arrays)
    ``eps >= 1e-2`` times the cost scale   :func:`otcore.sinkhorn` (it converges in tens to
                                           hundreds of iterations)
    smaller ``eps``, plan of at most       :func:`otcore.sinkhorn_newton_sparse` (Newton
    ``2**25`` entries, NumPy or CuPy       steps where Sinkhorn would need thousands of
                                           iterations)
    smaller ``eps``, larger plans          :func:`otcore.sinkhorn` with eps-scaling
    =====================================  ==================================================

    The cost scale is ``max |C|`` for a dense cost and the squared (or plain, per cost)
    diagonal of the points' bounding box for a :class:`~otcore.PointCloud`. A batch of
    problems (the forms of :func:`otcore.sinkhorn`) goes to the batched Sinkhorn, or, for
    a small ``eps`` (the largest cost of the batch as the scale), to SNS one problem after
    another; the result is then a :class:`~otcore.BatchResult`.

    Parameters
    ----------
    a, b : array_like or None
        Weights, as in :func:`otcore.sinkhorn` (``None``: uniform).
    C : array_like of shape (n, m), DenseCost or PointCloud
        The cost.
    eps : float, optional
        Entropic regularization, absolute (required unless ``k``/``gamma`` is given).
    reg_m : float or pair of float, optional
        KL penalties on the marginals (unbalanced OT), as in :func:`otcore.sinkhorn`.
    k : int, optional
        Cardinality of :func:`otcore.cardinality_ot`.
    gamma : float, optional
        Quadratic regularization of :func:`otcore.cardinality_ot` (default 0.1 when ``k``
        is given).
    method : str, default "auto"
        ``"auto"`` chooses; ``"sinkhorn"``, ``"sinkhorn_newton_sparse"``,
        ``"multiscale_sinkhorn"`` or ``"cardinality_ot"`` force that method.
    tol : float, optional
        The chosen solver's tolerance (its default when ``None``).
    callback, verbose, time_limit
        Progress and control, as in :func:`otcore.sinkhorn`.
    backend : str or Backend, optional
        Force a backend.

    Returns
    -------
    OTResult
        The chosen solver's result, with ``extra["choice"]`` explaining the choice.

    Examples
    --------
    >>> import numpy as np, otcore as oc
    >>> rng = np.random.default_rng(0)
    >>> C = rng.random((100, 80))
    >>> oc.solve(None, None, C, eps=0.1).method
    'sinkhorn'
    >>> res = oc.solve(None, None, C, eps=1e-3)
    >>> res.method, res.converged
    ('sinkhorn_newton_sparse', True)
    """
    method = check_choice(method, "method", _METHODS)
    control = {"callback": callback, "verbose": verbose, "time_limit": time_limit,
               "backend": backend}
    if tol is not None:
        control["tol"] = tol
    if method == "cardinality_ot" or (method == "auto" and (k is not None
                                                             or gamma is not None)):
        if k is None:
            raise ValueError("cardinality_ot needs k (the largest number of nonzeros per "
                             "column)")
        res = cardinality_ot(a, b, C, k, 0.1 if gamma is None else gamma, **control)
        res.extra["choice"] = "k given: cardinality-constrained OT"
        return res
    if eps is None:
        raise ValueError("eps is required for entropic OT (or pass k for cardinality OT)")
    eps = check_eps(eps)
    if is_batch(a, b, C):
        return _solve_batch(a, b, C, eps, reg_m, method, control)
    geom = as_geometry(C)  # validated once; the solver takes the geometry as it is
    if method == "sinkhorn_newton_sparse":
        return _tagged(sinkhorn_newton_sparse(a, b, geom, eps, **control), "forced")
    if method == "multiscale_sinkhorn":
        return _tagged(multiscale_sinkhorn(a, b, geom, eps, **control), "forced")
    if method == "sinkhorn" or reg_m is not None:
        why = "forced" if method == "sinkhorn" else "reg_m given: unbalanced Sinkhorn"
        return _tagged(sinkhorn(a, b, geom, eps, reg_m=reg_m, **control), why)
    bk = get_backend(*geom.arrays, backend=backend)
    scale = bk.bind(geom).cost_scale()
    n, m = geom.shape
    ratio = eps / scale if scale > 0 else float("inf")
    if (isinstance(geom, PointCloud) and n * m >= MULTISCALE_FROM
            and geom.x.shape[1] <= MAX_DIM and bk.name == "numba_cpu"):
        why = (f"point clouds of {n * m:.2g} pairs in dimension {geom.x.shape[1]}: "
               "multiscale Sinkhorn (coarse-to-fine, truncated kernels)")
        return _tagged(multiscale_sinkhorn(a, b, geom, eps, **control), why)
    if ratio >= SNS_BELOW:
        why = (f"eps is {ratio:.2g} of the cost scale (>= {SNS_BELOW:g}): Sinkhorn "
               "converges in tens to hundreds of iterations")
        return _tagged(sinkhorn(a, b, geom, eps, **control), why)
    if n * m <= SNS_MAX_ENTRIES and bk.sparse_linalg() is not None:
        why = (f"eps is {ratio:.2g} of the cost scale (< {SNS_BELOW:g}): Newton steps "
               "(SNS) where Sinkhorn would need thousands of iterations")
        return _tagged(sinkhorn_newton_sparse(a, b, geom, eps, **control), why)
    why = (f"eps is {ratio:.2g} of the cost scale, but the plan ({n * m:.2g} entries) is "
           "too large for SNS or the arrays have no sparse solver: eps-scaled Sinkhorn")
    return _tagged(sinkhorn(a, b, geom, eps, eps_scaling=0.5, **control), why)


def _solve_batch(a: Any, b: Any, C: Any, eps: float, reg_m: Any, method: str,
                 control: dict) -> BatchResult:
    """Batches (see :func:`otcore.sinkhorn`): the batch solver, unless ``eps`` is small
    next to the costs (SNS per problem) or a method is forced."""
    if method == "multiscale_sinkhorn":
        raise ValueError("multiscale_sinkhorn takes one problem; a batch runs with "
                         "method='auto', 'sinkhorn' or 'sinkhorn_newton_sparse'")
    if method == "sinkhorn_newton_sparse":
        return _tagged(sinkhorn_newton_sparse(a, b, C, eps, **control), "forced")
    if method == "sinkhorn" or reg_m is not None:
        why = "forced" if method == "sinkhorn" else "reg_m given: unbalanced Sinkhorn"
        return _tagged(sinkhorn(a, b, C, eps, reg_m=reg_m, **control), why + " (batch)")
    bt = as_batch(a, b, C)
    bk = get_backend(*(v for v in (bt.a, bt.C, bt.x) if v is not None),
                     backend=control["backend"])
    scale = bk.bind_batch(bt).cost_scale()
    ratio = eps / scale if scale > 0 else float("inf")
    n, m = bt.shape
    if ratio < SNS_BELOW and n * m <= SNS_MAX_ENTRIES and bk.sparse_linalg() is not None:
        why = (f"a batch of {bt.size} problems with eps {ratio:.2g} of the cost scale "
               f"(< {SNS_BELOW:g}): Newton steps (SNS), one problem after another")
        return _tagged(sinkhorn_newton_sparse(a, b, C, eps, **control), why)
    why = (f"a batch of {bt.size} problems with eps {ratio:.2g} of the cost scale: batched "
           "Sinkhorn (one kernel for all, each problem stopping on its own)")
    return _tagged(sinkhorn(a, b, C, eps, **control), why)


def _tagged(res: OTResult | BatchResult, why: str) -> OTResult | BatchResult:
    res.extra["choice"] = why
    return res
