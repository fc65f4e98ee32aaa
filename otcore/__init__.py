"""otcore: fast optimal transport for scientific Python.

Public API
----------
sinkhorn
    Log-domain Sinkhorn (entropic OT) on a dense cost or online from point clouds.
sinkhorn_newton_sparse
    Sinkhorn warm-up, then Newton steps on a sparsified Hessian (entropic OT to machine
    precision).
PointCloud, DenseCost
    Geometries: what the cost is.
OTResult, ConvergenceWarning
    The result type of every solver, and the warning for non-convergence.
get_backend
    The dispatch layer (NumPy -> Numba, CuPy -> CUDA, other Array-API -> reference).
"""

from .backends import get_backend
from .geometry import DenseCost, PointCloud
from .result import ConvergenceWarning, OTResult
from .solvers.sinkhorn import sinkhorn
from .solvers.sns import sinkhorn_newton_sparse

__all__ = [
    "ConvergenceWarning",
    "DenseCost",
    "OTResult",
    "PointCloud",
    "get_backend",
    "sinkhorn",
    "sinkhorn_newton_sparse",
]

__version__ = "0.1.0.dev0"

from .monge_gap import monge_gap, sinkhorn_divergence

__all__ += ["monge_gap", "sinkhorn_divergence"]
