"""What "the cost" is: a dense matrix, or point clouds with a ground cost.

Geometries hold data and describe it; they do not compute. The backends turn a geometry
into kernels (:meth:`otcore.backends.Backend.bind`).
"""

from __future__ import annotations

import math
import numbers
from typing import Any

from ._validation import as_array, float_dtype

__all__ = ["DenseCost", "PointCloud", "parse_cost"]

#: Integer codes of the ground costs, shared with the kernels.
SQEUCLIDEAN, EUCLIDEAN, PNORM = 1, 2, 3


def parse_cost(cost: Any) -> tuple[int, float]:
    """Parse a cost specification into ``(code, p)``.

    Parameters
    ----------
    cost : {"sqeuclidean", "euclidean"} or ("pnorm", p)
        ``"sqeuclidean"`` is ``|x - y|_2^2`` (no factor 1/2), ``"euclidean"`` is
        ``|x - y|_2`` and ``("pnorm", p)`` is ``|x - y|_p^p / p`` for ``p >= 1``.

    Returns
    -------
    code : int
    p : float
        The exponent (2 for ``"sqeuclidean"``, 1 for ``"euclidean"``).
    """
    if isinstance(cost, str):
        if cost == "sqeuclidean":
            return SQEUCLIDEAN, 2.0
        if cost == "euclidean":
            return EUCLIDEAN, 1.0
    elif (
        isinstance(cost, tuple)
        and len(cost) == 2
        and cost[0] == "pnorm"
        and isinstance(cost[1], numbers.Real)
        and not isinstance(cost[1], bool)
    ):
        p = float(cost[1])
        if math.isfinite(p) and p >= 1:
            return PNORM, p
        raise ValueError(f"cost=('pnorm', p) needs a finite p >= 1, got p={cost[1]}")
    raise ValueError(
        f"cost must be 'sqeuclidean', 'euclidean' or ('pnorm', p), got {cost!r}"
    )


class DenseCost:
    """A cost given as an ``n x m`` matrix ``C``.

    Solvers accept a plain array as well; it is wrapped in a :class:`DenseCost`.

    Parameters
    ----------
    C : array of shape (n, m)
        Finite cost matrix. Integer dtypes are promoted to float64.
    """

    def __init__(self, C: Any):
        from .backends import namespace_of

        xp = namespace_of(C, names=("C",))
        C = as_array(xp, C, "C", dtype=float_dtype(xp, C, "C"), ndim=2)
        self.C = C
        self.xp = xp

    @property
    def shape(self) -> tuple[int, int]:
        """``(n, m)``: number of source and target points."""
        return tuple(self.C.shape)

    @property
    def dtype(self) -> Any:
        """Floating dtype of the cost."""
        return self.C.dtype

    @property
    def arrays(self) -> tuple[Any, ...]:
        """The arrays that define the geometry (for backend dispatch)."""
        return (self.C,)

    array_names = ("C",)

    def __repr__(self) -> str:
        return f"DenseCost(shape={self.shape}, dtype={self.dtype})"


class PointCloud:
    """Two point clouds with a ground cost, evaluated on the fly.

    The solvers never build the ``n x m`` cost matrix of a point cloud: the kernels
    recompute ``c(x_i, y_j)`` in tiles, so memory stays ``O((n + m) d)``.

    Parameters
    ----------
    x : array of shape (n, d) or (n,)
        Source points (a 1-D array is read as ``n`` points in dimension 1).
    y : array of shape (m, d) or (m,)
        Target points, same namespace and dimension as ``x``.
    cost : {"sqeuclidean", "euclidean"} or ("pnorm", p), default "sqeuclidean"
        ``|x - y|^2``, ``|x - y|`` or ``|x - y|_p^p / p``.
    scale : float, optional
        Divide the cost by this positive number (for example its maximum, to work with
        a cost normalized to max 1 without forming it).

    Examples
    --------
    >>> import numpy as np, otcore as oc
    >>> rng = np.random.default_rng(0)
    >>> geom = oc.PointCloud(rng.normal(size=(5, 2)), rng.normal(size=(4, 2)))
    >>> geom.shape
    (5, 4)
    """

    def __init__(self, x: Any, y: Any, cost: Any = "sqeuclidean", *, scale: float = 1.0):
        from ._validation import check_eps
        from .backends import namespace_of

        xp = namespace_of(x, y, names=("x", "y"))
        x = x[:, None] if getattr(x, "ndim", 0) == 1 else x
        y = y[:, None] if getattr(y, "ndim", 0) == 1 else y
        dtype = xp.result_type(float_dtype(xp, x, "x"), float_dtype(xp, y, "y"))
        self.x = as_array(xp, x, "x", dtype=dtype, ndim=2)
        self.y = as_array(xp, y, "y", dtype=dtype, ndim=2)
        if self.x.shape[1] != self.y.shape[1]:
            raise ValueError(
                f"x and y must have the same dimension, got x: {tuple(self.x.shape)} and "
                f"y: {tuple(self.y.shape)}"
            )
        self.cost = cost
        self.cost_code, self.p = parse_cost(cost)
        self.scale = check_eps(scale, "scale")
        self.xp = xp

    @property
    def shape(self) -> tuple[int, int]:
        """``(n, m)``: number of source and target points."""
        return (self.x.shape[0], self.y.shape[0])

    @property
    def dtype(self) -> Any:
        """Floating dtype of the points."""
        return self.x.dtype

    @property
    def arrays(self) -> tuple[Any, ...]:
        """The arrays that define the geometry (for backend dispatch)."""
        return (self.x, self.y)

    array_names = ("x", "y")

    def pairwise(self, x: Any, y: Any) -> Any:
        """Cost matrix between rows of ``x`` and rows of ``y`` (plain xp code)."""
        xp = self.xp
        diff = x[:, None, :] - y[None, :, :]
        if self.cost_code == SQEUCLIDEAN:
            c = xp.sum(diff * diff, axis=-1)
        elif self.cost_code == EUCLIDEAN:
            c = xp.sqrt(xp.sum(diff * diff, axis=-1))
        else:
            c = xp.sum(xp.abs(diff) ** self.p, axis=-1) / self.p
        return c / self.scale if self.scale != 1.0 else c

    def cost_matrix(self) -> Any:
        """The dense ``n x m`` cost matrix (for small problems and tests only)."""
        return self.pairwise(self.x, self.y)

    def __repr__(self) -> str:
        return f"PointCloud(shape={self.shape}, d={self.x.shape[1]}, cost={self.cost!r})"
