"""The kernel contract: the one page a new device implements.

A solver never touches a device directly. It asks :func:`otcore.backends.get_backend`
for a :class:`Backend`, uses ``backend.xp`` for ``O(n + m)`` vector algebra, and binds the
geometry once per solve with :meth:`Backend.bind`. Everything that costs ``O(n m)`` lives
behind the returned :class:`GeometryOps`.

Conventions
-----------
For shifted potentials ``h`` and a cost ``C`` (dense, or evaluated on the fly for a point
cloud), the *softmin* along an axis is

* ``axis=1`` (reduce over columns, one value per row ``i``):
  ``out_i = -eps * log(sum_j exp((h_j - C_ij) / eps))``, with ``h`` of length ``m``;
* ``axis=0`` (reduce over rows, one value per column ``j``):
  ``out_j = -eps * log(sum_i exp((h_i - C_ij) / eps))``, with ``h`` of length ``n``.

With ``hf = f + eps log a`` and ``hg = g + eps log b`` the plan is
``P_ij = exp((hf_i + hg_j - C_ij) / eps)``; every plan kernel takes ``hf, hg, eps``.
Entries of ``h``, ``hf``, ``hg`` may be ``-inf`` (zero weights: the plan is exactly 0
there); at least one is finite. Implementations are stable for any ``eps > 0``
(log-sum-exp with a running maximum) and never read out of bounds, whatever the sizes.
Every parameter is honoured: none may be silently ignored.

The contract
------------
=====================  ===============================================================
core (every backend)   :meth:`GeometryOps.softmin`, :meth:`GeometryOps.sinkhorn_iterator`
                       (one object per loop, owning its hints, caches and buffers),
                       :meth:`~GeometryOps.plan_stats` (both marginals and ``<C, P>`` in
                       one pass), :meth:`~GeometryOps.apply` (``P V`` or ``P^T U``
                       without forming ``P``), :meth:`~GeometryOps.cost_scale`,
                       :meth:`~GeometryOps.cost_matrix`, :meth:`~GeometryOps.plan`,
                       :meth:`~GeometryOps.cost_entries`
Newton (SNS)           :meth:`~GeometryOps.plan_marginals`,
                       :meth:`~GeometryOps.sparsify_plan`, :meth:`Backend.sparse_linalg`
top-k (cardinality)    :meth:`~GeometryOps.topk`, returning a :class:`TopKEvaluator`
                       (whose :meth:`~TopKEvaluator.hessian_product` and
                       :meth:`~TopKEvaluator.hessian_solve` are optional: the
                       semismooth Newton stage)
cost gradient          :meth:`~GeometryOps.cost_grad` (Monge gap, divergence gradients)
batches                :meth:`Backend.bind_batch`, returning a :class:`BatchOps` bound to
                       ``B`` problems (:mod:`otcore.collection`): batched softmin, a
                       batched iterator, batched plan statistics
block-sparse           :meth:`~GeometryOps.block_sparse` (multiscale Sinkhorn): the core
                       contract restricted to the kept pairs of clusters of a
                       :class:`BlockLayout`
=====================  ===============================================================

Optional groups raise :class:`NotImplementedError` where a backend lacks them; the
solvers that need them say so. Multi-output kernels return the named tuples below.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Any, NamedTuple

import numpy as np

__all__ = [
    "Backend",
    "BatchIterator",
    "BatchOps",
    "BlockLayout",
    "GeometryOps",
    "NewtonStep",
    "PlanMarginals",
    "PlanStats",
    "SinkhornIterator",
    "SparsePlan",
    "TopK",
    "TopKEvaluator",
]


class PlanStats(NamedTuple):
    """Both marginals of a plan and its transport cost, from one pass over the cost."""

    rows: Any
    """``P 1``, shape ``(n,)``."""
    cols: Any
    """``P^T 1``, shape ``(m,)``."""
    cost: float
    """``<C, P>``."""


class BlockLayout(NamedTuple):
    """Clusters of both clouds of a point cloud and the pairs of clusters a truncated
    kernel keeps (host NumPy ``int64`` arrays; :meth:`GeometryOps.block_sparse`).

    Cluster ``I`` of the sources holds the points ``x_order[x_start[I]:x_start[I + 1]]``
    (``K`` clusters), cluster ``J`` of the targets ``y_order[y_start[J]:y_start[J + 1]]``
    (``L`` clusters). Source cluster ``I`` interacts with the target clusters
    ``pair_idx[pair_ptr[I]:pair_ptr[I + 1]]`` (increasing); every other pair is dropped.
    Every cluster has at least one kept pair.
    """

    x_order: Any
    """Permutation of the sources, ``(n,)``, grouping them by cluster."""
    x_start: Any
    """Cluster boundaries in ``x_order``, ``(K + 1,)``."""
    y_order: Any
    """Permutation of the targets, ``(m,)``."""
    y_start: Any
    """Cluster boundaries in ``y_order``, ``(L + 1,)``."""
    pair_ptr: Any
    """Row pointers of the kept pairs (CSR over source clusters), ``(K + 1,)``."""
    pair_idx: Any
    """Target clusters of the kept pairs, ``(nnz,)``."""


class PlanMarginals(NamedTuple):
    """A dense plan written into a caller's buffer, with both marginals."""

    plan: Any
    """The ``(n, m)`` plan (the ``out`` buffer itself)."""
    rows: Any
    cols: Any


class SparsePlan(NamedTuple):
    """The entries of a dense plan kept by :meth:`GeometryOps.sparsify_plan`."""

    matrix: Any
    """SciPy CSR (NumPy), ``cupyx.scipy.sparse.csr_matrix`` (CuPy), or a dense array with
    zeros elsewhere for libraries without a sparse format."""
    theta: float
    """The threshold on the normalized values."""


class TopK(NamedTuple):
    """Outputs of one evaluation of the cardinality kernel (:class:`TopKEvaluator`), all
    float64 except the integer ``nnz`` and ``idx``; ``m`` groups of ``n`` entries."""

    value: Any
    """``<u, t> - (gamma / 2) |t|^2`` per group, ``(m,)``."""
    mass: Any
    """``sum_r t_r`` per group (the plan's group marginal), ``(m,)``."""
    theta: Any
    """The thresholds ``theta_j``, ``(m,)``."""
    nnz: Any
    """Positive entries per group, ``(m,)``."""
    other: Any
    """``sum_j t_ji``, the plan's marginal on the other side, ``(n,)``."""
    idx: Any
    """Indices of the first ``width`` positive entries of each group by decreasing score
    (ties: increasing index), ``(m, width)``; past ``nnz[j]`` any valid index."""
    val: Any
    """Their plan entries, ``(m, width)``; 0 past ``nnz[j]``."""


class NewtonStep(NamedTuple):
    """A solution of a generalised Newton system (:meth:`TopKEvaluator.hessian_solve`)."""

    x: Any
    """The solution, ``(n,)`` float64."""
    iterations: int
    """Conjugate-gradient iterations done."""
    residual: float
    """``|rhs - (H + shift I) x|_2`` at the end."""


class SinkhornIterator:
    """Alternating (or symmetric) Sinkhorn updates at fixed ``eps`` and weights, for one
    loop; the reference implementation, two :meth:`GeometryOps.softmin` calls a step.

    A backend returns its own subclass from :meth:`GeometryOps.sinkhorn_iterator` to keep
    state between steps (log-sum-exp shifts, a cached Gibbs kernel, buffers). The state
    dies with the object at the end of the loop. Results must equal the reference's up to
    rounding.

    Parameters
    ----------
    ops : GeometryOps
    log_a, log_b : arrays of shape (n,) and (m,)
        ``log a`` and ``log b`` (``-inf`` for zero weights).
    eps : float
    symmetric : bool
        Compute both updates from the same state (see :meth:`step`).
    tau : pair of float
        ``(tau_a, tau_b)``, ``tau = rho / (rho + eps)`` for a marginal relaxed by
        ``rho KL``: the updates of unbalanced OT are the softmins scaled by ``tau``
        (1 for an exact marginal).
    """

    def __init__(self, ops: GeometryOps, log_a: Any, log_b: Any, eps: float,
                 symmetric: bool, tau: tuple[float, float] = (1.0, 1.0)):
        self.ops, self.eps, self.symmetric = ops, eps, symmetric
        self.la_eps, self.lb_eps = eps * log_a, eps * log_b
        self.tau = (float(tau[0]), float(tau[1]))

    def step(self, f: Any, g: Any) -> tuple[Any, Any]:
        """One iteration from potentials ``(f, g)``.

        Returns ``f' = tau_a softmin(g + eps log b, axis=1)`` and, alternating,
        ``g' = tau_b softmin(f' + eps log a, axis=0)``; symmetric,
        ``g' = tau_b softmin(f + eps log a, axis=0)``.
        """
        ta, tb = self.tau
        f_new = self.ops.softmin(g + self.lb_eps, self.eps, axis=1)
        f_new = ta * f_new if ta != 1.0 else f_new
        src = f if self.symmetric else f_new
        g_new = self.ops.softmin(src + self.la_eps, self.eps, axis=0)
        return f_new, (tb * g_new if tb != 1.0 else g_new)

    def relaxed_step(self, f: Any, g: Any, omega: float) -> tuple[Any, Any, Any, Any]:
        """One over-relaxed alternating iteration of balanced Sinkhorn (Thibault, Chizat,
        Dossal and Papadakis, 2017), in the log domain: with the softmins ``T(g)``
        (rows) and ``T'(f)`` (columns) of :meth:`step`,
        ``f' = f + omega (T(g) - f)`` and ``g' = g + omega (T'(f') - g)``.
        ``omega = 1`` is :meth:`step`. Returns ``f', g', T(g), T'(f')``: the softmins
        give the row error of ``(f, g)`` and the column error of ``(f', g)``."""
        f_T = self._softmin(g + self.lb_eps, 1, f)
        f_new = f + omega * (f_T - f)
        g_T = self._softmin(f_new + self.la_eps, 0, g)
        return f_new, g + omega * (g_T - g), f_T, g_T

    def _softmin(self, h: Any, axis: int, hint: Any) -> Any:
        """``softmin(h)`` along ``axis``; ``hint`` estimates it (a backend may use it as
        the log-sum-exp shift)."""
        return self.ops.softmin(h, self.eps, axis=axis)


class TopKEvaluator(ABC):
    """The fused value-and-gradient kernel of cardinality-constrained OT, bound to a
    layout of the cost and to fixed ``w, gamma, k, simplex`` for one optimizer run.

    Groups are the columns of the plan (``axis=0``: each target receives mass from at most
    ``k`` sources) or its rows (``axis=1``). For each group ``j`` (``m`` groups of ``n``
    entries, ``C_ij`` read as ``K_ji``) the scores ``s_i = alpha_i - K_ji`` are ranked and
    the ``kk = min(k, n)`` largest selected (of two equal scores the smaller index ranks
    first). Shifted by ``beta_j`` they are ``u_1 >= ... >= u_kk`` and the group's plan
    entries are ``t_r = [u_r - theta_j]_+ / gamma`` with

    * ``simplex=False`` (dual): ``theta_j = 0``;
    * ``simplex=True`` (semi-dual): ``theta_j`` such that ``sum_r t_r = w_j``, the
      k-sparse simplex projection (a group with ``w_j = 0`` gets ``t = 0``,
      ``theta_j = u_1``).

    Scores are formed in float64 whatever the cost's dtype; no ``(m, n)`` temporary is
    allocated. An implementation may keep state between calls (per-group search hints at
    nearby potentials) as long as results do not depend on it.
    """

    @abstractmethod
    def __call__(self, alpha: Any, beta: Any, width: int = 0) -> TopK:
        """Evaluate at ``alpha`` (``(n,)``, the other side's potentials) and ``beta``
        (``(m,)``, per-group shifts; zeros for the semi-dual), listing ``width`` entries
        per group (0 while optimizing)."""

    # -- optional: the generalised Hessian (semismooth Newton) ---------------------------

    def hessian_product(self, out: TopK, shift: float, v: Any) -> Any:
        """``(H + shift I) v`` with the generalised Hessian of the semi-dual on the supports
        ``S_j`` listed in ``out`` (an evaluation of this evaluator whose ``width`` covers
        every positive entry, ``width >= max(out.nnz)``):

        .. math::

            H = \\frac{1}{\\gamma} \\sum_j \\Big(\\mathrm{diag}(1_{S_j})
                - \\frac{1_{S_j} 1_{S_j}^T}{|S_j|}\\Big),

        the Jacobian of ``out.other`` (``sum_j t_j``) in ``alpha`` while the supports do not
        change. It does not depend on the group masses ``w``: on a fixed support the
        threshold moves with the mean of ``alpha`` over it. ``v`` and the result are
        float64 vectors of length ``n``.
        """
        raise NotImplementedError(f"{type(self).__name__} has no Hessian kernels")

    def hessian_solve(self, out: TopK, shift: float, rhs: Any, rtol: float,
                      max_iter: int) -> NewtonStep:
        """Solve ``(H + shift I) x = rhs`` (``H`` as in :meth:`hessian_product`) by
        conjugate gradients preconditioned with the diagonal of ``H + shift I``, until
        ``|rhs - (H + shift I) x|_2 <= rtol |rhs|_2`` or ``max_iter`` iterations."""
        raise NotImplementedError(f"{type(self).__name__} has no Hessian kernels")


class GeometryOps(ABC):
    """Kernels bound to one geometry (what :meth:`Backend.bind` returns)."""

    geom: Any

    # -- core -----------------------------------------------------------------------------

    @abstractmethod
    def softmin(self, h: Any, eps: float, axis: int) -> Any:
        """Soft-minimum of ``h - C`` along ``axis`` (module conventions)."""

    def sinkhorn_iterator(self, log_a: Any, log_b: Any, eps: float, symmetric: bool = False,
                          tau: tuple[float, float] = (1.0, 1.0)) -> SinkhornIterator:
        """A :class:`SinkhornIterator` for one loop at fixed ``eps``, weights and ``tau``."""
        return SinkhornIterator(self, log_a, log_b, eps, symmetric, tau)

    @abstractmethod
    def plan_stats(self, hf: Any, hg: Any, eps: float) -> PlanStats:
        """Row sums, column sums and ``<C, P>`` of the plan, in one pass over the cost."""

    @abstractmethod
    def apply(self, hf: Any, hg: Any, eps: float, V: Any, axis: int) -> Any:
        """``P V`` (``axis=1``, ``V`` of shape ``(m, k)``, result ``(n, k)``) or ``P^T V``
        (``axis=0``, ``V`` of shape ``(n, k)``, result ``(m, k)``), in one pass over the
        cost and without forming ``P``; ``V`` is 2-D, of the geometry's dtype."""

    @abstractmethod
    def cost_scale(self) -> float:
        """An upper bound of ``max |C_ij|`` (the starting eps of eps-scaling)."""

    @abstractmethod
    def cost_matrix(self) -> Any:
        """The dense ``n x m`` cost (``O(n m)`` memory), computed with the arithmetic of
        the on-the-fly kernels, so that solving on it gives the same potentials."""

    @abstractmethod
    def plan(self, hf: Any, hg: Any, eps: float) -> Any:
        """The dense ``n x m`` plan (``O(n m)`` memory, no larger temporary)."""

    @abstractmethod
    def cost_entries(self, i: Any, j: Any) -> Any:
        """``C[i_r, j_r]`` for integer index arrays ``i``, ``j`` of equal length (the cost
        of a sparse plan's entries)."""

    # -- Newton (Sinkhorn-Newton-Sparse) ----------------------------------------------------

    def plan_marginals(self, hf: Any, hg: Any, eps: float, out: Any) -> PlanMarginals:
        """Write the dense plan into ``out`` (``(n, m)``, contiguous, of the geometry's
        dtype and device) and return it with both marginals, in one pass over the cost.
        Overflow gives ``inf`` entries (callers check the sums), never an exception."""
        raise NotImplementedError(f"{type(self).__name__} has no plan_marginals kernel")

    def sparsify_plan(self, P: Any, rows: Any, cols: Any, nnz: int) -> SparsePlan:
        """Keep about ``nnz`` entries of a dense plan with the largest normalized values.

        An entry is kept when ``P_ij / sqrt(rows_i cols_j) >= theta``, where ``theta`` is
        the ``nnz``-th largest normalized value truncated to two mantissa bits (a grid of
        quarter steps within each power of two), and at least ``2**-1024`` (smaller values
        count as zero). So the result holds at least ``nnz`` entries when there are that
        many nonzero ones, a few more on ties at that resolution.
        """
        raise NotImplementedError(f"{type(self).__name__} has no sparsify_plan kernel")

    # -- top-k (cardinality) ----------------------------------------------------------------

    def topk(self, axis: int, w: Any, gamma: float, k: int, simplex: bool) -> TopKEvaluator:
        """The cardinality kernel over groups along ``axis`` (``0``: the plan's columns,
        ``1``: its rows) with group masses ``w`` (float64), for one optimizer run (see
        :class:`TopKEvaluator`). The group-major layout of the cost is made once per
        ``axis`` and kept by the ops (the only ``n x m`` copy)."""
        raise NotImplementedError(f"{type(self).__name__} has no top-k kernel")

    # -- cost gradient ----------------------------------------------------------------------

    def cost_grad(self, hf: Any, hg: Any, eps: float) -> Any:
        """``G_j = sum_i P_ij grad_y c(x_i, y_j)``, shape ``(m, d)``, for a point cloud:
        the gradient of ``<C(y), P>`` in ``y`` at fixed ``P`` (closed forms in
        :mod:`otcore.costs`), without forming ``P``. :class:`TypeError` for a dense cost."""
        raise NotImplementedError(f"{type(self).__name__} has no cost_grad kernel")


    # -- block-sparse (multiscale) ---------------------------------------------------------

    def block_sparse(self, layout: BlockLayout) -> GeometryOps:
        """The truncated geometry of a point cloud: ops whose core methods (softmin, the
        Sinkhorn iterator, plan statistics, ``apply``, ``plan``) run over the kept pairs
        of clusters of ``layout`` only, as if every other pair had cost ``+inf``; inputs
        and outputs stay in the original order of the points. ``cost_scale``,
        ``cost_matrix`` and ``cost_entries`` are those of the full geometry; the other
        optional groups need not be implemented. Built once per set of kept
        pairs (it may sort copies of the points). :class:`TypeError` for a dense cost."""
        raise NotImplementedError(f"{type(self).__name__} has no block-sparse kernels")


class Backend(ABC):
    """A device: an array namespace plus the kernels that run on it.

    Attributes
    ----------
    name : str
        Short identifier reported in :class:`otcore.OTResult` (``"numba_cpu"``, ...).
    xp : module
        The (compute) namespace of the arrays this backend accepts.
    """

    name: str
    xp: Any

    @abstractmethod
    def bind(self, geom: Any) -> GeometryOps:
        """Prepare ``geom`` (a :class:`~otcore.DenseCost` or :class:`~otcore.PointCloud`)
        for repeated kernel calls; done once per solve."""

    def bind_batch(self, batch: Any) -> BatchOps:
        """Prepare a :class:`~otcore.collection.Batch` of problems for repeated kernel
        calls (the optional group "batches")."""
        raise NotImplementedError(f"{type(self).__name__} has no batch kernels")

    def to_float(self, value: Any) -> float:
        """A 0-d array (or scalar) as a Python float; on a GPU this synchronizes."""
        return float(value)

    def to_numpy(self, x: Any) -> np.ndarray:
        """``x`` as a NumPy array on the host (zero-copy where it already lives there)."""
        return x if isinstance(x, np.ndarray) else np.from_dlpack(x)

    def sparse_linalg(self) -> Any:
        """The sparse linear algebra module for :meth:`GeometryOps.sparsify_plan`'s
        matrices and this backend's vectors (``cg`` and ``LinearOperator`` with SciPy's
        signatures), or ``None`` when the namespace has none."""
        return None

    def sparse_from_host(self, S: Any) -> Any:
        """A SciPy sparse matrix as this backend's sparse matrix; the default, for
        libraries without a sparse format, is the dense ``xp`` array."""
        return self.xp.asarray(S.toarray())

    def __repr__(self) -> str:
        return f"<otcore backend {self.name!r}>"


class BatchOps(ABC):
    """Kernels bound to a batch of ``B`` problems of padded size ``(n, m)``.

    Arrays carry the batch first: potentials ``(B, n)`` and ``(B, m)``. ``active`` is an
    integer array of the problems to compute; rows of the others are left untouched, so
    that converged problems leave the loop. The conventions of :class:`GeometryOps`
    apply to each problem.
    """

    @abstractmethod
    def softmin(self, H: Any, eps: float, axis: int, active: Any, out: Any) -> Any:
        """``out[k] = softmin(H[k], eps, axis)`` of problem ``k``'s cost, for ``k`` in
        ``active``; returns ``out``. The current rows of ``out`` are estimates of the
        result that a backend may use as log-sum-exp shifts (the result does not depend
        on them beyond rounding)."""

    def iterator(self, log_a: Any, log_b: Any, eps: float, symmetric: bool = False,
                 tau: tuple[float, float] = (1.0, 1.0)) -> BatchIterator:
        """A :class:`BatchIterator` for one loop (``log_a``, ``log_b`` of shape
        ``(B, n)``, ``(B, m)``; ``tau`` as in :class:`SinkhornIterator`)."""
        return BatchIterator(self, log_a, log_b, eps, symmetric, tau)

    @abstractmethod
    def plan_stats(self, hf: Any, hg: Any, eps: float) -> PlanStats:
        """Both marginals ``(B, n)``, ``(B, m)`` and ``<C, P>`` ``(B,)`` of every plan."""

    @abstractmethod
    def cost_scale(self) -> float:
        """An upper bound of ``max |C|`` over the finite entries of all problems."""


#: Cap of the exponents in :func:`row_errors` (a violation counts at most ``exp(50)``).
ERROR_CAP = 50.0


def take_rows(xp: Any, rows: Any, *arrays: Any) -> list:
    """The ``rows`` of each array (all of them when ``rows`` is None)."""
    return [x if rows is None else xp.take(x, rows, axis=0) for x in arrays]


def row_errors(xp: Any, w: Any, f: Any, T: Any, eps: float, rho: float = math.inf) -> Any:
    """Per problem, the L1 violation of the row condition of ``(f, g)`` from the softmin
    ``T = T(g)`` (see :func:`otcore.solvers.sinkhorn.sinkhorn_loop`): the row marginal is
    ``w exp((f - T) / eps)``, and its target ``w`` (exact) or ``w exp(-f / rho)``; the
    batch loop's convergence measure.

    Parameters
    ----------
    xp : module
        The arrays' namespace.
    w, f, T : arrays of shape (B, n)
        Weights, potentials and softmins of ``B`` problems.
    eps : float
    rho : float, optional
        The relaxation of the marginal (``inf``: exact).

    Returns
    -------
    array of shape (B,)
    """
    cap = xp.full_like(f[:1, :1], ERROR_CAP)  # broadcast
    d = xp.minimum((f - T) / eps, cap)
    if math.isinf(rho):
        return xp.sum(xp.where(w > 0, w * xp.abs(xp.expm1(d)), 0), axis=1)
    c = xp.minimum(-f / rho, cap)
    gap = xp.minimum(d - c, cap)
    return xp.sum(xp.where(w > 0, w * xp.exp(c) * xp.abs(xp.expm1(gap)), 0), axis=1)


class BatchIterator:
    """Alternating Sinkhorn updates of a batch at fixed ``eps``; the reference, two
    :meth:`BatchOps.softmin` calls a step. Backends may keep state (a shared Gibbs
    kernel) in a subclass; results must equal the reference's up to rounding."""

    #: The kernels the loop ran, reported in ``BatchResult.extra["path"]``.
    path = "log"

    def __init__(self, ops: BatchOps, log_a: Any, log_b: Any, eps: float,
                 symmetric: bool = False, tau: tuple[float, float] = (1.0, 1.0)):
        self.ops, self.eps, self.symmetric = ops, eps, symmetric
        self.la_eps, self.lb_eps = eps * log_a, eps * log_b
        self.tau = (float(tau[0]), float(tau[1]))

    def step(self, f: Any, g: Any, active: Any) -> tuple[Any, Any]:
        """``f' = tau_a softmin(g + eps log b, axis=1)``, then
        ``g' = tau_b softmin(f' + eps log a, axis=0)``, for the problems in ``active``;
        returns new arrays (other rows are copies of ``f``, ``g``). Symmetric:
        ``g' = tau_b softmin(f + eps log a, axis=0)`` from the same state, and the step
        returns the averages ``(f + f') / 2``, ``(g + g') / 2``."""
        ta, tb = self.tau
        f_new = self.ops.softmin(g + self.lb_eps, self.eps, 1, active,
                                 f + 0.0 if ta == 1.0 else f / ta)
        f_new = f_new if ta == 1.0 else ta * f_new
        src = f if self.symmetric else f_new
        g_new = self.ops.softmin(src + self.la_eps, self.eps, 0, active,
                                 g + 0.0 if tb == 1.0 else g / tb)
        g_new = g_new if tb == 1.0 else tb * g_new
        if self.symmetric:
            return 0.5 * (f + f_new), 0.5 * (g + g_new)
        return f_new, g_new

    def first_g(self, f: Any, active: Any, out: Any) -> Any:
        """The loop's first column update from ``f``, ``tau_b softmin(f + eps log a,
        axis=0)``, into the rows ``active`` of ``out`` (whose rows are estimates of the
        result, as in :meth:`BatchOps.softmin`); returns the result."""
        g = self.ops.softmin(f + self.la_eps, self.eps, 0, active, out)
        return g if self.tau[1] == 1.0 else self.tau[1] * g

    def plan_stats(self, hf: Any, hg: Any) -> PlanStats:
        """:meth:`BatchOps.plan_stats` at this iterator's ``eps``; a backend may compute
        them from the state it keeps, to the same accuracy."""
        return self.ops.plan_stats(hf, hg, self.eps)

    def advance_to_check(self, f: Any, g: Any, active: Any,
                         count: int) -> tuple[Any, Any, Any, Any]:
        """``count >= 1`` steps from ``(f, g)`` for the problems in ``active``; returns
        the input of the last step and its output, ``(f, g, f_new, g_new)`` (the earlier
        potentials nobody reads: a backend may skip forming them). Rows outside
        ``active`` are copies of the input.

        A backend may keep the state it reached for the next call, which the batch loop
        makes with the arrays ``f_new, g_new`` it returned (less the problems that left
        ``active``); any other input is read as it is. A backend whose
        :meth:`check_errors` does not read ``f, g`` may return ``None`` for them and form
        them in :meth:`check_input`, until the next call."""
        for _ in range(count - 1):
            f, g = self.step(f, g, active)
        return (f, g, *self.step(f, g, active))

    def check_errors(self, xp: Any, w: tuple[Any, Any], f: Any, g: Any, f_new: Any,
                     g_new: Any, active: Any, rho: tuple[float, float]) -> Any:
        """The convergence measure of the batch loop at a check: for the problems in
        ``active`` (in its order), the L1 violation of the marginal conditions of the
        potentials ``(f, g)`` that :meth:`advance_to_check` just returned with
        ``(f_new, g_new)``, from the softmins its last step gave.

        Alternating, the row condition: :func:`row_errors` of ``f`` with
        ``T = f_new / tau_a``. Symmetric (the step averaged), the sum of both sides' with
        ``T = (2 f_new - f) / tau_a`` and ``(2 g_new - g) / tau_b``. A backend may compute
        them from the state that :meth:`advance_to_check` reached, equal up to rounding.

        Parameters
        ----------
        xp : module
            The arrays' namespace.
        w : pair of arrays of shape (B, n) and (B, m)
            The weights ``(a, b)``.
        f, g, f_new, g_new : arrays of shape (B, n) and (B, m)
            The four arrays :meth:`advance_to_check` returned.
        active : host integer array
            The problems of the check (those :meth:`advance_to_check` advanced).
        rho : pair of float
            The relaxations of the marginals (``inf``: exact).

        Returns
        -------
        array of shape (len(active),)
        """
        (ta, tb), eps = self.tau, self.eps
        rows = None if len(active) == f.shape[0] else xp.asarray(active)
        if self.symmetric:
            return (row_errors(xp, *take_rows(xp, rows, w[0], f, (2 * f_new - f) / ta), eps,
                               rho[0])
                    + row_errors(xp, *take_rows(xp, rows, w[1], g, (2 * g_new - g) / tb),
                                 eps, rho[1]))
        T = f_new if ta == 1.0 else f_new / ta
        return row_errors(xp, *take_rows(xp, rows, w[0], f, T), eps, rho[0])

    def check_input(self, f: Any, g: Any, leaving: Any) -> tuple[Any, Any]:
        """The input ``(f, g)`` of the last step of the last :meth:`advance_to_check`,
        as returned by it (the default), or formed by the backend where it returned
        ``None`` for them: arrays of shape ``(B, n)`` and ``(B, m)`` exact on the rows
        ``leaving`` (host integer array, increasing, of problems of that call's
        ``active``), whatever elsewhere."""
        return f, g
