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
            The kept entries: a SciPy CSR array for NumPy input, a dense array with zeros
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

    def __repr__(self) -> str:
        return f"<otcore backend {self.name!r}>"
