"""otcore: fast optimal transport for scientific Python.

Public API
----------
sinkhorn
    Log-domain Sinkhorn (entropic OT) on a dense cost or online from point clouds.
sinkhorn_newton_sparse
    Sinkhorn warm-up, then Newton steps on a sparsified Hessian (entropic OT to machine
    precision).
cardinality_ot
    Quadratically regularized OT with at most k nonzeros per column of the plan (dual
    and semi-dual).
monge_gap, sinkhorn_divergence
    Monge-gap estimators and the Sinkhorn divergence they are built on.
PointCloud, DenseCost
    Geometries: what the cost is.
OTResult, ConvergenceWarning
    The result type of every solver, and the warning for non-convergence.
get_backend
    The dispatch layer (NumPy -> Numba, CuPy -> CUDA, other Array-API -> reference).
"""

from .backends import get_backend
from .geometry import DenseCost, PointCloud
from .monge_gap import monge_gap, sinkhorn_divergence
from .result import ConvergenceWarning, OTResult
from .solvers.cardinality import cardinality_ot
from .solvers.sinkhorn import sinkhorn
from .solvers.sns import sinkhorn_newton_sparse

__all__ = [
    "ConvergenceWarning",
    "DenseCost",
    "OTResult",
    "PointCloud",
    "cardinality_ot",
    "get_backend",
    "monge_gap",
    "sinkhorn",
    "sinkhorn_divergence",
    "sinkhorn_newton_sparse",
]

__version__ = "0.1.0.dev0"
