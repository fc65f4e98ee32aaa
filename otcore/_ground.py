"""Ground costs of difference vectors and their gradients, in closed form (plain xp code).

Every supported ground cost is translation invariant, ``c(x, y) = h(x - y)`` with ``h``
even, so ``grad_y c(x, y) = grad h(y - x)`` and ``grad_x c(x, y) = grad h(x - y)``:

=================  =======================  ==============================================
cost               ``h(z)``                 ``grad h(z)``
=================  =======================  ==============================================
``"sqeuclidean"``  ``|z|_2^2``              ``2 z``
``"euclidean"``    ``|z|_2``                ``z / |z|_2``; ``0`` at ``z = 0``
``("pnorm", p)``   ``|z|_p^p / p``          ``sign(z) |z|^(p - 1)`` per coordinate
=================  =======================  ==============================================

At ``z = 0`` the Euclidean cost (and ``("pnorm", 1)`` where a coordinate vanishes) is not
differentiable; the value used is ``0``, the minimal-norm subgradient. It is also the
symmetric derivative ``lim (h(t u) - h(-t u)) / 2t``, which is what central finite
differences see.
"""

from __future__ import annotations

from typing import Any

from .geometry import EUCLIDEAN, SQEUCLIDEAN

__all__ = ["ground_grad", "paired_cost"]


def paired_cost(xp: Any, code: int, p: float, x: Any, y: Any) -> Any:
    """``c(x_i, y_i)`` for matching rows of ``x`` and ``y`` (shape ``(n,)``)."""
    z = x - y
    if code == SQEUCLIDEAN:
        return xp.sum(z * z, axis=-1)
    if code == EUCLIDEAN:
        return xp.sqrt(xp.sum(z * z, axis=-1))
    return xp.sum(xp.abs(z) ** p, axis=-1) / p


def ground_grad(xp: Any, code: int, p: float, z: Any) -> Any:
    """``grad h(z)`` along the last axis of ``z`` (see the module table)."""
    if code == SQEUCLIDEAN:
        return 2 * z
    if code == EUCLIDEAN:
        norm = xp.sqrt(xp.sum(z * z, axis=-1, keepdims=True))
        safe = xp.where(norm > 0, norm, xp.ones_like(norm))
        return xp.where(norm > 0, z / safe, xp.zeros_like(z))
    return xp.sign(z) * xp.abs(z) ** (p - 1)
