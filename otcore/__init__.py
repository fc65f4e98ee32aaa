"""otcore: fast optimal transport for scientific Python.

Public API
----------
solve
    Picks the method from the problem (and says why), in the spirit of POT's ``ot.solve``.
sinkhorn
    Log-domain Sinkhorn (entropic OT) on a dense cost or online from point clouds.
multiscale_sinkhorn
    Sinkhorn on large point clouds in low dimension: coarse-to-fine on clusters, with
    truncated (block-sparse) kernels under a bound on the ignored mass.
sinkhorn_newton_sparse
    Sinkhorn warm-up, then Newton steps on a sparsified Hessian (entropic OT to machine
    precision).
cardinality_ot
    Quadratically regularized OT with at most k nonzeros per column of the plan (dual
    and semi-dual).
monge_gap, sinkhorn_divergence
    Monge-gap estimators and the Sinkhorn divergence, with their gradients.
cdist, pdist
    Entropic OT (or Sinkhorn divergences) between every pair of two collections of
    histograms or point clouds, as SciPy's functions of the same names; Dask optional.
PointCloud, DenseCost
    Geometries: what the cost is.
OTResult, BatchResult, LossResult, ConvergenceWarning
    The result of every solver (with ``apply`` and ``barycentric_projection``), of a
    batch of problems solved in one call, of the losses, and the warning for
    non-convergence.
get_backend
    The dispatch layer (CPU data -> Numba, CUDA data -> CuPy kernels, other Array-API
    arrays -> the reference).

Inputs may be NumPy, CuPy, PyTorch or JAX arrays, other Array-API arrays, or lists;
results come back in the caller's library.

Layers, each importing only from those below it: this package and :mod:`otcore.losses`;
:mod:`otcore.entry_point`; :mod:`otcore.solvers`; :mod:`otcore.backends`; :mod:`otcore.kernels`;
:mod:`otcore.geometry`, :mod:`otcore.result`, :mod:`otcore._validation`,
:mod:`otcore.costs`; :mod:`otcore._array` at the bottom.
"""

from .backends import get_backend
from .entry_point import solve
from .geometry import DenseCost, PointCloud
from .losses import monge_gap, sinkhorn_divergence
from .pairwise import cdist, pdist
from .result import BatchResult, ConvergenceWarning, LossResult, OTResult
from .solvers._monitor import IterationInfo
from .solvers.cardinality import cardinality_ot
from .solvers.multiscale import multiscale_sinkhorn
from .solvers.sinkhorn import sinkhorn
from .solvers.sns import sinkhorn_newton_sparse

__all__ = [
    "BatchResult",
    "ConvergenceWarning",
    "DenseCost",
    "IterationInfo",
    "LossResult",
    "OTResult",
    "PointCloud",
    "cardinality_ot",
    "cdist",
    "get_backend",
    "monge_gap",
    "multiscale_sinkhorn",
    "pdist",
    "sinkhorn",
    "sinkhorn_divergence",
    "sinkhorn_newton_sparse",
    "solve",
]

__version__ = "0.1.0.dev0"
