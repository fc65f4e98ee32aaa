"""otcore: fast optimal transport for scientific Python.

Public API
----------
sinkhorn
    Log-domain Sinkhorn (entropic OT) on a dense cost or online from point clouds.
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

__all__ = [
    "ConvergenceWarning",
    "DenseCost",
    "OTResult",
    "PointCloud",
    "get_backend",
    "sinkhorn",
]

__version__ = "0.1.0.dev0"

from .solvers.cardinality import cardinality_ot

__all__ += ["cardinality_ot"]
