"""A validated transport problem ``(a, b, geometry)`` bound to its backend, made once per
call."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._array import Namespaces, float_bits, namespaces, safe_log
from .._validation import check_reg_m, check_same_mass, check_weights
from ..backends import Backend, GeometryOps, get_backend
from ..geometry import DenseCost, PointCloud

__all__ = ["Problem", "as_geometry", "default_tol", "make_problem"]


@dataclass
class Problem:
    """A validated balanced problem ``(a, b, geometry)`` bound to a backend.

    ``a``, ``b`` and the geometry's arrays are in the compute namespace (``backend.xp``);
    ``namespaces`` converts results back to the caller's library.
    """

    a: Any
    b: Any
    geom: DenseCost | PointCloud
    backend: Backend
    ops: GeometryOps
    namespaces: Namespaces
    rho: tuple[float, float] = (math.inf, math.inf)
    """``(rho_a, rho_b)``: the weights of ``rho KL`` on each marginal (``inf``: exact)."""

    @property
    def balanced(self) -> bool:
        return self.rho == (math.inf, math.inf)

    def tau(self, eps: float) -> tuple[float, float]:
        """``rho / (rho + eps)`` per side: the factor of the unbalanced updates."""
        return tuple(1.0 if math.isinf(r) else r / (r + eps) for r in self.rho)

    @property
    def xp(self) -> Any:
        return self.backend.xp

    @property
    def dtype(self) -> Any:
        return self.geom.dtype

    def log_weights(self) -> tuple[Any, Any]:
        """``log a`` and ``log b`` with ``-inf`` for zero weights (no warning)."""
        return safe_log(self.xp, self.a), safe_log(self.xp, self.b)


def default_tol(xp: Any, dtype: Any) -> float:
    """Default L1 marginal tolerance: 1e-9 in float64, 1e-4 in float32.

    In float32 the rounding of the potentials alone leaves a marginal error of order
    ``1e-7 max|g| / eps``, so tighter tolerances are often out of reach.
    """
    return 1e-4 if float_bits(xp, dtype) == 32 else 1e-9


def as_geometry(cost: Any) -> DenseCost | PointCloud:
    """Wrap a plain cost (any array library, or array_like) in :class:`DenseCost`; pass
    geometries through."""
    if isinstance(cost, (DenseCost, PointCloud)):
        return cost
    if cost is None:
        raise TypeError("C must be a cost matrix or a PointCloud, got None")
    return DenseCost(cost)


def make_problem(a: Any, b: Any, cost: Any, backend: Any = None, reg_m: Any = None
                 ) -> Problem:
    """Validate ``a, b, cost`` (and ``reg_m``, see :func:`otcore.sinkhorn`) and bind the
    geometry to its backend.

    ``cost`` is an ``(n, m)`` array or a geometry; ``a``/``b`` may be ``None`` (uniform)
    or array_like. Weights are cast to the cost's dtype. Masses that agree within the
    tolerance of :func:`~otcore._validation.check_same_mass` are made equal by rescaling
    ``b``: otherwise a marginal error ``|sum(a) - sum(b)|`` would remain that no solver can
    remove (float32 weights cast to float64 differ by about 1e-8, above the default
    tolerance). A relaxed marginal (finite ``rho``) accepts any masses.
    """
    rho = check_reg_m(reg_m)
    if isinstance(cost, (list, tuple)):  # array_like adopts the library of the weights
        cost = namespaces(a, b, cost, names=("a", "b", "C")).to_user(np.asarray(cost))
    geom = as_geometry(cost)
    if isinstance(geom, PointCloud) and geom.batch_size is not None:
        raise ValueError(
            f"C stacks {geom.batch_size} point clouds (many problems), which this solver "
            "takes one at a time: pass C[k] for each problem, or use oc.sinkhorn, which "
            "solves batches"
        )
    ns = geom.namespaces
    given = [name for name, w in (("a", a), ("b", b))
             if w is not None and not isinstance(w, (list, tuple))]
    if given:
        weights = namespaces(*(w for w in (a, b) if w is not None
                               and not isinstance(w, (list, tuple))), names=tuple(given))
        if weights.library != ns.library:
            raise TypeError(
                f"all arrays must come from one array library, got {', '.join(given)} from "
                f"{weights.library}; {', '.join(geom.array_names)} from {ns.library}; move "
                "them to one library and device first (otcore never copies implicitly)"
            )
    a, b = ns.to_compute(a), ns.to_compute(b)
    bk = get_backend(a, b, *geom.arrays, backend=backend, names=("a", "b", *geom.array_names))
    n, m = geom.shape
    a = check_weights(bk.xp, a, n, "a", dtype=geom.dtype)
    b = check_weights(bk.xp, b, m, "b", dtype=geom.dtype)
    if rho == (math.inf, math.inf):
        check_same_mass(bk.xp, a, b)
        b = b * (bk.xp.sum(a) / bk.xp.sum(b))
    return Problem(a=a, b=b, geom=geom, backend=bk, ops=bk.bind(geom), namespaces=ns,
                   rho=rho)
