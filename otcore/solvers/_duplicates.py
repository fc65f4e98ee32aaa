r"""Exact merging of duplicated points in an entropic point-cloud problem.

Points of one cloud with equal coordinates have equal costs to every other point, so at
the fixed point they have equal potentials (``f_i`` depends on ``x_i`` only). Merging
them into one point of the summed weight ``a_u = sum_{i -> u} a_i`` gives a smaller
problem with the same potentials, and the plan of the original points is

.. math::

    P_{ij} = \frac{a_i}{a_{u(i)}} \frac{b_j}{b_{v(j)}} P^{\text{merged}}_{u(i) v(j)},

since ``P_ij = a_i b_j exp((f_i + g_j - C_ij) / eps)``. Row and column sums, the cost,
the objective and the L1 marginal error follow exactly (a merged row's error is the sum of
its points' errors, which all have the same sign). Quantized data (8-bit colours, pixel
grids, rounded measurements) repeat points a lot: 1e6 pixels of a photograph hold about
1e5 distinct colours.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from ..result import OTResult, check_plan_entries
from ._problem import Problem

__all__ = ["Distinct", "distinct_points", "expand_result"]


@dataclasses.dataclass(frozen=True)
class Distinct:
    """The distinct points of one cloud (host NumPy)."""

    points: np.ndarray
    """The distinct points, ``(n_u, d)``, in lexicographic order."""
    inverse: np.ndarray
    """Index of each original point's distinct point, ``(n,)``."""
    weight: np.ndarray
    """Summed weights of the distinct points, ``(n_u,)``."""
    share: np.ndarray
    """Each original point's share ``a_i / a_u(i)`` of its distinct point's weight (0 for
    a distinct point of zero weight), ``(n,)``."""

    @property
    def count(self) -> int:
        return self.points.shape[0]

    def gather(self, v: np.ndarray) -> np.ndarray:
        """Rows ``v_u(i) * share_i`` per original point: a merged marginal (or plan
        product) split back over the original points."""
        return v[self.inverse] * (self.share if v.ndim == 1 else self.share[:, None])

    def scatter(self, v: np.ndarray) -> np.ndarray:
        """``sum_{i -> u} share_i v_i`` per distinct point (``v`` is ``(n, k)``): the
        operand of a merged plan product."""
        out = np.empty((self.count, v.shape[1]), dtype=np.float64)
        for k in range(v.shape[1]):
            out[:, k] = np.bincount(self.inverse, weights=self.share * v[:, k],
                                    minlength=self.count)
        return out


def distinct_points(p: np.ndarray, w: np.ndarray) -> Distinct:
    """The distinct rows of the points ``p`` ``(n, d)`` with weights ``w`` ``(n,)``."""
    points, inverse = np.unique(p, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    weight = np.bincount(inverse, weights=w, minlength=points.shape[0])
    total = weight[inverse]
    share = np.divide(w, total, out=np.zeros_like(w), where=total > 0)
    return Distinct(points, inverse, weight, share)


def expand_result(res: OTResult, dx: Distinct, dy: Distinct, prob: Problem) -> OTResult:
    """The result of the original problem ``prob`` from the result ``res`` of its merged
    problem (the potentials gathered, the marginals split by the shares, plan products
    through the merged plan; the scalars are equal)."""
    ns, bk, xp, dtype = prob.namespaces, prob.backend, prob.xp, prob.dtype

    def host(v: Any) -> np.ndarray:  # the merged problem was made of compute arrays
        return np.asarray(bk.to_numpy(v), dtype=np.float64)

    def user(v: np.ndarray) -> Any:
        return ns.to_user(xp.astype(xp.asarray(v), dtype))

    n, m = dx.inverse.shape[0], dy.inverse.shape[0]

    def plan() -> Any:
        check_plan_entries(n, m)
        merged = host(res.plan)
        return user(dy.gather(dx.gather(merged).T).T)

    def apply(V: Any, axis: int) -> Any:
        src, dst = (dy, dx) if axis == 1 else (dx, dy)
        out = res._apply_fn(xp.astype(xp.asarray(src.scatter(bk.to_numpy(V))), dtype), axis)
        return xp.astype(xp.asarray(dst.gather(host(out))), dtype)

    rows, cols = (host(v) for v in res.marginals)
    extra = dict(res.extra, distinct_points=(dx.count, dy.count))
    return dataclasses.replace(
        res, f=user(host(res.f)[dx.inverse]), g=user(host(res.g)[dy.inverse]), extra=extra,
        marginals=(user(dx.gather(rows)), user(dy.gather(cols))), _plan_fn=plan, _plan=None,
        _apply_fn=apply, _namespaces=ns, _points=(prob.geom.x, prob.geom.y), _shape=(n, m),
    )
