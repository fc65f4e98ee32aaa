"""The ground costs: each defined once, here.

Every supported ground cost is translation invariant and even, ``c(x, y) = h(x - y)``
with ``h(-z) = h(z)``, so ``c(x, y) = c(y, x)`` (kernels swap the two clouds to reduce
over either axis) and ``grad_y c(x, y) = grad h(y - x)``:

=================  ====  =======================  ======================================
cost               code  ``h(z)``                 ``grad h(z)``
=================  ====  =======================  ======================================
``"sqeuclidean"``  1     ``|z|_2^2`` (no 1/2)     ``2 z``
``"euclidean"``    2     ``|z|_2``                ``z / |z|_2``; ``0`` at ``z = 0``
``("pnorm", p)``   3     ``|z|_p^p / p``          ``sign(z) |z|^(p - 1)`` per coordinate
=================  ====  =======================  ======================================

Code ``0`` (:data:`DENSE`) tells a kernel that its input is a cost matrix, not points. The
Numba kernels import these codes, and the CUDA sources receive them as ``-D`` options
(:func:`compile_defines`), so the three implementations cannot disagree.

At ``z = 0`` the Euclidean cost (and ``("pnorm", 1)`` where a coordinate vanishes) is not
differentiable; the value used is ``0``, the minimal-norm subgradient, which is also the
symmetric derivative that central finite differences see.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any

__all__ = [
    "DENSE",
    "EUCLIDEAN",
    "PNORM",
    "SQEUCLIDEAN",
    "GroundCost",
    "compile_defines",
    "parse_cost",
]

#: Cost codes shared by every kernel.
DENSE, SQEUCLIDEAN, EUCLIDEAN, PNORM = 0, 1, 2, 3


@dataclass(frozen=True)
class GroundCost:
    """A ground cost between points: its code, exponent and plain ``xp`` formulas.

    Attributes
    ----------
    spec : str or tuple
        The specification it was parsed from (``"sqeuclidean"``, ``("pnorm", 1.5)``, ...).
    code : int
        :data:`SQEUCLIDEAN`, :data:`EUCLIDEAN` or :data:`PNORM`.
    p : float
        The exponent: 2 for ``"sqeuclidean"``, 1 for ``"euclidean"``, ``p`` for pnorm.
    """

    spec: Any
    code: int
    p: float

    def of_differences(self, xp: Any, z: Any) -> Any:
        """``h(z)`` along the last axis of ``z``."""
        if self.code == SQEUCLIDEAN:
            return xp.sum(z * z, axis=-1)
        if self.code == EUCLIDEAN:
            return xp.sqrt(xp.sum(z * z, axis=-1))
        return xp.sum(xp.abs(z) ** self.p, axis=-1) / self.p

    def norm(self, xp: Any, z: Any) -> Any:
        """The norm that the cost is a function of, along the last axis: ``|z|_2``, or
        ``|z|_p`` for pnorm (``h(z) = from_norm(norm(z))``; it obeys the triangle
        inequality, which bounds the cost between clusters of points)."""
        if self.code == PNORM:
            return xp.sum(xp.abs(z) ** self.p, axis=-1) ** (1.0 / self.p)
        return xp.sqrt(xp.sum(z * z, axis=-1))

    def from_norm(self, r: Any) -> Any:
        """``h`` as a function of :meth:`norm`: ``r^2``, ``r`` or ``r^p / p`` (increasing)."""
        if self.code == SQEUCLIDEAN:
            return r * r
        if self.code == EUCLIDEAN:
            return r
        return r**self.p / self.p

    def pairwise(self, xp: Any, x: Any, y: Any) -> Any:
        """The ``(n, m)`` matrix ``c(x_i, y_j)`` (``O(n m d)`` memory: small blocks only)."""
        return self.of_differences(xp, x[:, None, :] - y[None, :, :])

    def paired(self, xp: Any, x: Any, y: Any) -> Any:
        """``c(x_i, y_i)`` for matching rows, shape ``(n,)``."""
        return self.of_differences(xp, x - y)

    def grad(self, xp: Any, z: Any) -> Any:
        """``grad h(z)`` along the last axis of ``z`` (see the module table)."""
        if self.code == SQEUCLIDEAN:
            return 2 * z
        if self.code == EUCLIDEAN:
            norm = xp.sqrt(xp.sum(z * z, axis=-1, keepdims=True))
            safe = xp.where(norm > 0, norm, xp.ones_like(norm))
            return xp.where(norm > 0, z / safe, xp.zeros_like(z))
        return xp.sign(z) * xp.abs(z) ** (self.p - 1)


def parse_cost(cost: Any) -> GroundCost:
    """Parse a cost specification.

    Parameters
    ----------
    cost : {"sqeuclidean", "euclidean"} or ("pnorm", p)
        ``"sqeuclidean"`` is ``|x - y|_2^2`` (no factor 1/2), ``"euclidean"`` is
        ``|x - y|_2`` and ``("pnorm", p)`` is ``|x - y|_p^p / p`` for ``p >= 1``.

    Returns
    -------
    GroundCost

    Raises
    ------
    ValueError
        For any other specification, or ``p < 1``.

    Examples
    --------
    >>> from otcore.costs import parse_cost
    >>> parse_cost(("pnorm", 3)).p
    3.0
    """
    if isinstance(cost, str):
        if cost == "sqeuclidean":
            return GroundCost(cost, SQEUCLIDEAN, 2.0)
        if cost == "euclidean":
            return GroundCost(cost, EUCLIDEAN, 1.0)
    elif (
        isinstance(cost, tuple)
        and len(cost) == 2
        and cost[0] == "pnorm"
        and isinstance(cost[1], numbers.Real)
        and not isinstance(cost[1], bool)
    ):
        p = float(cost[1])
        if math.isfinite(p) and p >= 1:
            return GroundCost(cost, PNORM, p)
        raise ValueError(f"cost=('pnorm', p) needs a finite p >= 1, got p={cost[1]}")
    raise ValueError(
        f"cost must be 'sqeuclidean', 'euclidean' or ('pnorm', p), got {cost!r}"
    )


def compile_defines() -> dict[str, int]:
    """The cost codes as C preprocessor definitions for the CUDA sources."""
    return {"OTC_DENSE": DENSE, "OTC_SQEUCLIDEAN": SQEUCLIDEAN,
            "OTC_EUCLIDEAN": EUCLIDEAN, "OTC_PNORM": PNORM}
