"""The kernel contract: what a backend (a device) must implement.

A solver never touches a device directly. It asks :func:`otcore.backends.get_backend`
for a :class:`Backend`, uses ``backend.xp`` for cheap vector algebra (O(n + m) work), and
binds the geometry once per solve with :meth:`Backend.bind`. Everything that costs
O(n m) lives behind the returned :class:`GeometryOps`.

Conventions
-----------
For potentials/shifted potentials ``h`` and a cost ``C`` (dense, or evaluated on the fly
for a point cloud), the *softmin* along an axis is

* ``axis=1`` (reduce over columns, one value per row ``i``):
  ``out_i = -eps * log(sum_j exp((h_j - C_ij) / eps))``, with ``h`` of length ``m``;
* ``axis=0`` (reduce over rows, one value per column ``j``):
  ``out_j = -eps * log(sum_i exp((h_i - C_ij) / eps))``, with ``h`` of length ``n``.

Entries of ``h`` may be ``-inf`` (zero weights); at least one is finite. Implementations
must be stable for any ``eps > 0`` (log-sum-exp with a running maximum) and must not read
out of bounds whatever the sizes.

With ``hf = f + eps log a`` and ``hg = g + eps log b`` the plan is
``P_ij = exp((hf_i + hg_j - C_ij) / eps)``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import numpy as np

__all__ = ["Backend", "GeometryOps"]


class GeometryOps(ABC):
    """Kernels bound to one geometry (what :meth:`Backend.bind` returns)."""

    @abstractmethod
    def softmin(self, h: Any, eps: float, axis: int, hint: Any = None) -> Any:
        """Soft-minimum of ``h - C`` along ``axis`` (see the module conventions).

        ``hint``, when given, is an estimate of the output (for Sinkhorn: the previous
        potential). Implementations may use it as the log-sum-exp shift to skip the max
        pass; the result must not depend on it beyond rounding.
        """

    def sinkhorn_sweep(
        self, hg: Any, la_eps: Any, f: Any, g: Any, eps: float
    ) -> tuple[Any, Any]:
        """One alternating Sinkhorn iteration from potentials ``f, g``.

        Returns ``f' = softmin(hg, axis=1)`` and ``g' = softmin(f' + la_eps, axis=0)``,
        with ``hg = g + eps log b`` and ``la_eps = eps log a``; ``f`` and ``g`` are hints.
        The default makes two softmin calls; a backend may fuse them into one pass.
        """
        f_new = self.softmin(hg, eps, axis=1, hint=f)
        return f_new, self.softmin(f_new + la_eps, eps, axis=0, hint=g)

    def sweeper(self, a: Any, b: Any, eps: float) -> Any:
        """A callable ``(hg, la_eps, f, g) -> (f', g')`` doing :meth:`sinkhorn_sweep` at a
        fixed ``eps`` and weights ``a, b``, for one Sinkhorn loop.

        The default is :meth:`sinkhorn_sweep` itself. A backend may return an object that
        keeps state between iterations (a cached kernel, say); the loop drops it when it
        ends. Results must equal those of :meth:`sinkhorn_sweep` up to rounding.
        """
        del a, b
        return lambda hg, la_eps, f, g: self.sinkhorn_sweep(hg, la_eps, f, g, eps)

    @abstractmethod
    def plan_stats(self, hf: Any, hg: Any, eps: float) -> tuple[Any, Any, float]:
        """Row sums, column sums and ``<C, P>`` of the plan, in one pass over the cost."""

    @abstractmethod
    def plan(self, hf: Any, hg: Any, eps: float) -> Any:
        """The dense ``n x m`` plan ``exp((hf_i + hg_j - C_ij) / eps)``."""

    @abstractmethod
    def cost_scale(self) -> float:
        """An upper bound of ``max |C_ij|`` (the starting eps of eps-scaling)."""

    # Kernels of the Newton stage of Sinkhorn-Newton-Sparse. They are optional: a backend
    # without them cannot run :func:`otcore.sinkhorn_newton_sparse`, everything else works.

    def plan_marginals(
        self, hf: Any, hg: Any, eps: float, out: Any = None
    ) -> tuple[Any, Any, Any]:
        """The dense plan and both of its marginals, in one pass over the cost.

        Parameters
        ----------
        hf, hg : arrays of shape (n,) and (m,)
            Shifted potentials (module conventions).
        eps : float
        out : array of shape (n, m), optional
            Buffer to write the plan into (backends may ignore it and allocate).

        Returns
        -------
        P, rows, cols
            ``P_ij = exp((hf_i + hg_j - C_ij) / eps)``, ``P 1`` and ``P^T 1``. Overflow
            gives ``inf`` entries (callers check the sums), never an exception.
        """
        raise NotImplementedError(f"{type(self).__name__} has no plan_marginals kernel")

    def sparsify_plan(self, P: Any, rows: Any, cols: Any, nnz: int) -> tuple[Any, float]:
        """Keep about ``nnz`` entries of a dense plan with the largest normalized values.

        An entry is kept when ``P_ij / sqrt(rows_i cols_j) >= theta``, where ``theta`` is
        the ``nnz``-th largest normalized value truncated to two mantissa bits (a grid of
        quarter steps within each power of two), and at least ``2**-1024`` (smaller values
        count as zero). So the result holds at least ``nnz`` entries when there are that
        many nonzero ones, a few more on ties at that resolution.

        Returns
        -------
        S : sparse matrix or array of shape (n, m)
            The kept entries: a SciPy CSR array for NumPy input, a
            ``cupyx.scipy.sparse.csr_matrix`` for CuPy input, a dense array with zeros
            elsewhere for array libraries without a sparse format.
        theta : float
            The threshold on the normalized values.
        """
        raise NotImplementedError(f"{type(self).__name__} has no sparsify_plan kernel")

    def cost_grad(self, hf: Any, hg: Any, eps: float) -> Any:
        """Plan-weighted gradient of the cost in the target points, for a point cloud.

        Returns the ``(m, d)`` array ``G_j = sum_i P_ij grad_y c(x_i, y_j)`` with
        ``P_ij = exp((hf_i + hg_j - C_ij) / eps)``: the gradient of ``<C(y), P>`` in ``y``
        at fixed ``P`` (closed forms in :mod:`otcore._ground`; ``0`` is used where the
        cost is not differentiable). Raises :class:`TypeError` for a dense cost.

        This kernel is optional: the default runs the blocked Array-API reference on the
        geometry's own namespace (``self.geom``); devices override it with a fused kernel
        that never forms ``P``.
        """
        from .array_api import ArrayAPIBackend

        return ArrayAPIBackend(self.geom.xp).bind(self.geom).cost_grad(hf, hg, eps)

    def cost_matrix(self) -> Any:
        """The dense ``n x m`` cost (``O(n m)`` memory), computed with the same arithmetic
        as the on-the-fly kernels, so that solving on it gives the same potentials.

        Optional, like :meth:`cost_grad`: the default runs the blocked Array-API reference.
        """
        from .array_api import ArrayAPIBackend

        return ArrayAPIBackend(self.geom.xp).bind(self.geom).cost_matrix()


class Backend(ABC):
    """A device: an array namespace plus the kernels that run on it.

    Attributes
    ----------
    name : str
        Short identifier reported in :class:`otcore.OTResult` (``"numba_cpu"``, ...).
    xp : module
        The array namespace of the arrays this backend accepts.
    """

    name: str
    xp: Any

    @abstractmethod
    def bind(self, geom: Any) -> GeometryOps:
        """Prepare ``geom`` (a :class:`~otcore.DenseCost` or :class:`~otcore.PointCloud`)
        for repeated kernel calls; done once per solve."""

    def to_float(self, value: Any) -> float:
        """A 0-d array (or scalar) as a Python float; on a GPU this synchronizes."""
        return float(value)

    def sparse_linalg(self) -> Any:
        """The sparse linear algebra module for the CSR matrices of
        :meth:`GeometryOps.sparsify_plan` and this backend's vectors, or ``None``.

        It must provide ``cg`` and ``LinearOperator`` with SciPy's signatures (the Newton
        stage of :func:`otcore.sinkhorn_newton_sparse`). The default is
        :mod:`scipy.sparse.linalg` for NumPy arrays and ``None`` (no sparse solver)
        otherwise.
        """
        if self.xp is not np:
            return None
        import scipy.sparse.linalg

        return scipy.sparse.linalg

    def to_numpy(self, x: Any) -> np.ndarray:
        """``x`` as a NumPy array on the host (zero-copy where the array already is one or
        lives in host memory; a device-to-host copy on a GPU)."""
        return x if isinstance(x, np.ndarray) else np.from_dlpack(x)

    def sparse_from_host(self, S: Any) -> Any:
        """A SciPy sparse matrix as this backend's sparse matrix (a plan, for example).

        The default, for array libraries without a sparse format, is the dense ``xp`` array;
        ``numba_cpu`` returns ``S`` itself, ``cupy_gpu`` a
        :class:`cupyx.scipy.sparse.csr_matrix` on the current device.
        """
        return self.xp.asarray(S.toarray())

    def __repr__(self) -> str:
        return f"<otcore backend {self.name!r}>"

    # -- cardinality-constrained OT -------------------------------------------------------
    #
    # The plan is constrained per *group*: a column of the plan (each target receives mass
    # from at most k sources) or, for the transposed problem, a row. The solver lays the
    # cost out group-major once per solve (``group_costs``), then evaluates its objectives
    # with ``topk_groups``, the only O(n m) operation of an iteration.

    def group_costs(self, geom: Any, axis: int) -> Any:
        """The cost laid out group-major, once per solve (the only ``n x m`` copy).

        Row ``j`` of the result holds the costs that compete in group ``j`` of
        :meth:`topk_groups`.

        Parameters
        ----------
        geom : DenseCost or PointCloud
            The ``(n, m)`` cost.
        axis : {0, 1}
            ``0``: groups are the columns of the plan. ``1``: groups are the rows.

        Returns
        -------
        array
            For ``axis=0``, ``K`` of shape ``(m, n)`` with ``K[j, i] = C[i, j]``; for
            ``axis=1``, ``C`` itself, shape ``(n, m)``.

        See Also
        --------
        topk_groups : The kernel that reads it.

        Notes
        -----
        This default is plain ``xp`` code: a transposed view of a dense cost, or the point
        cloud's cost evaluated block by block into one ``(m, n)`` (or ``(n, m)``) array.
        Backends whose kernels need a particular memory layout override it.

        Examples
        --------
        >>> import numpy as np
        >>> from otcore import DenseCost, get_backend
        >>> C = np.arange(6.0).reshape(2, 3)
        >>> get_backend(C).group_costs(DenseCost(C), 0)
        array([[0., 3.],
               [1., 4.],
               [2., 5.]])
        """
        if hasattr(geom, "C"):
            return geom.C.T if axis == 0 else geom.C
        left, right = (geom.y, geom.x) if axis == 0 else (geom.x, geom.y)
        block = max(1, (1 << 22) // (right.shape[0] * right.shape[1]))
        rows = left.shape[0]
        out = self.xp.empty((rows, right.shape[0]), dtype=geom.dtype)
        for s in range(0, rows, block):
            e = min(s + block, rows)  # in-bounds slices (the Array API requires them)
            # every supported ground cost is symmetric, so c(y_j, x_i) = C_ij
            out[s:e, :] = geom.pairwise(left[s:e, :], right)
        return out

    def topk_groups(
        self, K: Any, alpha: Any, beta: Any, w: Any, gamma: float, k: int, simplex: bool,
        width: int = 0,
    ) -> tuple[Any, Any, Any, Any, Any, Any, Any]:
        """Fused value-and-gradient kernel of the cardinality-constrained (semi-)dual.

        For each group ``j`` (row of ``K``, of length ``n``) rank the scores
        ``s_i = alpha_i - K[j, i]`` and select the ``kk = min(k, n)`` largest; of two
        equal scores the smaller index ``i`` ranks first. The selected scores shifted by
        ``beta_j`` (which does not change the ranking) are ``u_1 >= ... >= u_kk``,
        ``u_r = s_r + beta_j``. The group's plan entries are
        ``t_r = [u_r - theta_j]_+ / gamma`` with

        * ``simplex=False`` (dual): ``theta_j = 0``, so the group value below is
          ``(1 / 2 gamma) * sum_r [u_r]_+^2``, the sum over the ``k`` largest scores;
        * ``simplex=True`` (semi-dual): ``theta_j`` such that ``sum_r t_r = w_j``, i.e.
          ``t = w_j * proj_simplex(u / (gamma w_j))``, the k-sparse simplex projection.
          A group with ``w_j = 0`` gets ``t = 0`` and ``theta_j = u_1``.

        Parameters
        ----------
        K : array of shape (m, n)
            Group-major cost, as returned by :meth:`group_costs` (float32 or float64).
        alpha : array of shape (n,), float64
            Potentials of the other side (``f`` when the groups are columns).
        beta : array of shape (m,), float64
            Per-group shift (the group potentials of the dual; zeros for the semi-dual).
        w : array of shape (m,), float64
            Group masses (read only when ``simplex``).
        gamma : float
            Quadratic regularization, > 0.
        k : int
            Cardinality, >= 1 (``k >= n`` selects everything).
        simplex : bool
            Semi-dual (True) or dual (False) plan entries.
        width : int, default 0
            How many positive entries of each group to return in ``idx``/``val``, at most
            ``min(k, n)``; 0 while optimizing (only the sums are needed).

        Returns
        -------
        gval : array of shape (m,), float64
            ``<u, t> - (gamma / 2) |t|^2`` per group.
        gsum : array of shape (m,), float64
            ``sum_r t_r`` per group (the plan's group marginal).
        theta : array of shape (m,), float64
            The thresholds ``theta_j``.
        nnz : integer array of shape (m,)
            Number of positive entries ``t_r > 0`` per group.
        rows : array of shape (n,), float64
            ``sum_j t_ji``: the plan's marginal on the other side.
        idx : integer array of shape (m, width)
            Indices of the first ``width`` positive entries of each group, by decreasing
            score (ties: increasing index); past ``nnz[j]`` any valid index.
        val : array of shape (m, width), float64
            Their plan entries ``t``; 0 past ``nnz[j]``.

        See Also
        --------
        otcore.cardinality_ot : The solver built on this kernel.

        Notes
        -----
        Scores are formed in float64 whatever the dtype of ``K``. Everything is computed
        in one pass over ``K``; implementations must not allocate an ``(m, n)``
        temporary (the reference backend works on blocks of groups).

        Examples
        --------
        One group of three entries, ``k = 2``, semi-dual with mass 1: the two best scores
        ``0`` and ``-0.2`` share the mass, the third is not selected.

        >>> import numpy as np
        >>> from otcore.backends import get_backend
        >>> bk = get_backend(np.zeros(1))
        >>> K = np.array([[0.0, 0.2, 2.0]])
        >>> out = bk.topk_groups(K, np.zeros(3), np.zeros(1), np.ones(1), 1.0, 2, True,
        ...                      width=2)
        >>> gval, gsum, theta, nnz, rows, idx, val = out
        >>> idx, val.round(12), nnz
        (array([[0, 1]]), array([[0.6, 0.4]]), array([2]))
        """
        raise NotImplementedError(f"backend {self.name!r} has no cardinality kernels")

    def topk_evaluator(self, K: Any, w: Any, gamma: float, k: int, simplex: bool) -> Any:
        """A callable ``(alpha, beta, width=0) -> outputs`` doing :meth:`topk_groups` on
        ``K`` with fixed ``w``, ``gamma``, ``k`` and ``simplex``, for one optimizer run.

        The default calls :meth:`topk_groups`. A backend may return an object that keeps
        state between calls (a per-group guess that speeds up the selection at nearby
        potentials, say); results must equal those of :meth:`topk_groups` up to rounding.
        """
        return lambda alpha, beta, width=0: self.topk_groups(K, alpha, beta, w, gamma, k,
                                                             simplex, width)
