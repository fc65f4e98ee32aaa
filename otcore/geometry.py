"""What "the cost" is: a dense matrix, or point clouds with a ground cost.

Geometries validate and hold data; they do not compute. The arrays they keep are in the
*compute* namespace (NumPy for CPU data of any library, see :mod:`otcore._array`), and
``namespaces`` remembers the caller's library so that results go back to it. The backends
turn a geometry into kernels (``Backend.bind``).
"""

from __future__ import annotations

from typing import Any

from ._array import Namespaces, namespaces
from ._validation import as_array, as_points, check_eps, float_dtype
from .costs import GroundCost, parse_cost

__all__ = ["DenseCost", "PointCloud"]


class DenseCost:
    """A cost given as an ``n x m`` matrix ``C``.

    Solvers accept a plain array as well; it is wrapped in a :class:`DenseCost`.

    Parameters
    ----------
    C : array_like of shape (n, m)
        Cost matrix, of any supported array library. Integer dtypes are promoted to
        float64. ``+inf`` forbids a pair: the plan is exactly zero there (every row and
        column needs a finite entry); NaN and ``-inf`` are refused.

    Examples
    --------
    >>> import otcore as oc
    >>> oc.DenseCost([[0.0, 1.0], [1.0, 0.0]]).shape
    (2, 2)
    """

    def __init__(self, C: Any):
        ns = namespaces(C, names=("C",))
        xp = ns.compute
        C = ns.to_compute(C)
        self.C = as_array(xp, C, "C", dtype=float_dtype(xp, C, "C"), ndim=2,
                          allow_posinf=True)
        self.forbidden = not bool(xp.all(xp.isfinite(self.C)))
        if self.forbidden:
            finite = xp.isfinite(self.C)
            for axis, what in ((1, "row"), (0, "column")):
                empty = ~xp.any(finite, axis=axis)
                if bool(xp.any(empty)):
                    first = int(xp.argmax(xp.astype(empty, xp.int8)))
                    raise ValueError(f"C: {what} {first} has no finite entry (+inf forbids "
                                     "every pair there: no plan can meet the marginals)")
        self.xp = xp
        self.namespaces: Namespaces = ns

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
    x : array_like of shape (n, d), (n,) or (B, n, d)
        Source points, of any supported array library (a 1-D array is read as ``n``
        points in dimension 1). A 3-D array stacks the sources of ``B`` problems, which
        the solvers that accept batches solve in one call.
    y : array_like of shape (m, d), (m,) or (B, m, d)
        Target points, same library and dimension as ``x`` (3-D when ``x`` is).
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
        ns = namespaces(x, y, names=("x", "y"))
        xp = ns.compute
        x, y = ns.to_compute(x), ns.to_compute(y)
        dtype = xp.result_type(float_dtype(xp, x, "x"), float_dtype(xp, y, "y"))
        stacked = len(x.shape) == 3 or len(y.shape) == 3
        if stacked and len(x.shape) != len(y.shape) and min(len(x.shape), len(y.shape)) < 3:
            raise ValueError(f"x is {len(x.shape)}-D but y is {len(y.shape)}-D: stacked "
                             "clouds (many problems) are (B, n, d) and (B, m, d)")
        if stacked:
            self.x = as_array(xp, x, "x", dtype=dtype, ndim=3)
            self.y = as_array(xp, y, "y", dtype=dtype, ndim=3)
            if self.x.shape[0] != self.y.shape[0]:
                raise ValueError(
                    f"mismatched batch sizes: x holds {self.x.shape[0]} clouds and y "
                    f"{self.y.shape[0]}"
                )
        else:
            self.x = as_points(xp, x, "x", dtype=dtype)
            self.y = as_points(xp, y, "y", dtype=dtype)
        if self.x.shape[-1] != self.y.shape[-1]:
            raise ValueError(
                f"x and y must have the same dimension, got x: {tuple(self.x.shape)} and "
                f"y: {tuple(self.y.shape)}"
            )
        self.batch_size: int | None = int(self.x.shape[0]) if stacked else None
        """``B`` for stacked clouds ``(B, n, d)``, ``(B, m, d)`` (many problems); else
        ``None``."""
        self.ground: GroundCost = parse_cost(cost)
        self.scale = check_eps(scale, "scale")
        self.xp = xp
        self.namespaces: Namespaces = ns

    @property
    def cost(self) -> Any:
        """The cost specification (``"sqeuclidean"``, ``("pnorm", p)``, ...)."""
        return self.ground.spec

    @property
    def cost_code(self) -> int:
        """The code of the ground cost in :mod:`otcore.costs`."""
        return self.ground.code

    @property
    def p(self) -> float:
        """The exponent of the ground cost."""
        return self.ground.p

    @property
    def shape(self) -> tuple[int, int]:
        """``(n, m)``: number of source and target points."""
        return (self.x.shape[-2], self.y.shape[-2])

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
        """Cost matrix between rows of ``x`` and rows of ``y``, divided by ``scale`` (plain
        ``xp`` code with an ``O(n m d)`` temporary: for blocks and small problems)."""
        c = self.ground.pairwise(self.xp, x, y)
        return c / self.scale if self.scale != 1.0 else c

    def cost_matrix(self) -> Any:
        """The dense ``n x m`` cost matrix, by :meth:`pairwise` (an ``O(n m d)`` temporary:
        for small problems and tests; the backends' ``cost_matrix`` streams it)."""
        return self.pairwise(self.x, self.y)

    def __repr__(self) -> str:
        return f"PointCloud(shape={self.shape}, d={self.x.shape[1]}, cost={self.cost!r})"
