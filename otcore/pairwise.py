"""Pairwise entropic OT between collections: :func:`cdist` and :func:`pdist`, in the
spirit of :func:`scipy.spatial.distance.cdist` and :func:`~scipy.spatial.distance.pdist`.

The pairs are cut into tiles, and each tile is one batch solve of :func:`otcore.sinkhorn`
(the matrix-product iteration for histograms on one support, the batch kernels for
point clouds). Tiles run in this process or, with ``client=``, as tasks of a Dask
cluster (:mod:`otcore._dask`).
"""

from __future__ import annotations

import hashlib
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._array import Namespaces, is_cupy, namespaces
from ._validation import (
    as_array,
    check_choice,
    check_eps,
    check_positive_int,
    check_tol,
    float_dtype,
)
from .geometry import PointCloud
from .result import ConvergenceWarning, warn_outside
from .solvers._monitor import ProgressBar
from .solvers.sinkhorn import sinkhorn

__all__ = ["cdist", "pdist"]

METRICS = ("sinkhorn_divergence", "sinkhorn", "sinkhorn_cost")


@dataclass
class _Collection:
    """Histograms ``(N, n)`` on one support (``points is None``), or ``N`` point clouds
    with their weights (lists of NumPy-compatible compute arrays)."""

    weights: Any
    points: list | None

    def __len__(self) -> int:
        return int(self.weights.shape[0]) if self.points is None else len(self.weights)


@dataclass
class _Job:
    """Everything a tile needs, shipped once to each worker."""

    A: _Collection
    B: _Collection
    C: Any
    cost: Any
    scale: float
    eps: float
    tol: float | None
    max_iter: int
    backend: Any


def _collection(X: Any, weights: Any, C: Any, ns: Namespaces, name: str) -> _Collection:
    xp = ns.compute
    if C is not None:  # histograms on one support, normalized to mass 1
        H = ns.to_compute(X)
        H = as_array(xp, H, name, dtype=float_dtype(xp, H, name), ndim=2)
        if bool(xp.any(H < 0)):
            raise ValueError(f"{name} has negative entries; histograms must be nonnegative")
        mass = xp.sum(H, axis=1)
        if not bool(xp.all(mass > 0)):
            raise ValueError(f"{name} has a histogram of zero mass")
        return _Collection(H / mass[:, None], None)
    if not isinstance(X, (list, tuple)) and len(X.shape) != 3:
        raise ValueError(
            f"{name} has shape {tuple(X.shape)}: histograms (N, n) need the cost C between "
            "their bins; point clouds are a list of (n_i, d) arrays or an (N, n, d) array")
    clouds = list(X) if isinstance(X, (list, tuple)) else [X[k, ...] for k in range(X.shape[0])]
    if not clouds:
        raise ValueError(f"{name} holds no point cloud")
    if weights is None:
        weights = [None] * len(clouds)
    if len(weights) != len(clouds):
        raise ValueError(f"weights for {name} must hold one vector per cloud ({len(clouds)}),"
                         f" got {len(weights)}")
    pts, ws = [], []
    for k, (x, w) in enumerate(zip(clouds, weights, strict=True)):
        x = ns.to_compute(x)
        x = x[:, None] if len(x.shape) == 1 else x
        n = x.shape[0]
        w = xp.full((n,), 1.0 / n) if w is None else ns.to_compute(w)
        if w.shape != (n,):
            raise ValueError(f"the weights of {name}[{k}] have shape {tuple(w.shape)}, "
                             f"expected ({n},)")
        pts.append(x)
        ws.append(w / xp.sum(w))
    return _Collection(ws, pts)


def _fingerprints(coll: _Collection) -> list[bytes]:
    """A digest of each measure (weights, and points for clouds), to find measures that
    appear in both collections."""
    def digest(*arrays: Any) -> bytes:
        h = hashlib.blake2b(digest_size=16)
        for x in arrays:
            x = x if isinstance(x, np.ndarray) else (
                x.get() if is_cupy(x) else np.from_dlpack(x))
            h.update(str(x.shape).encode())
            h.update(np.ascontiguousarray(x).tobytes())
        return h.digest()

    if coll.points is None:
        return [digest(coll.weights[k, :]) for k in range(len(coll))]
    return [digest(p, w) for p, w in zip(coll.points, coll.weights, strict=True)]


def _default_tile(job: _Job) -> int:
    if job.A.points is None:
        n, m = job.A.weights.shape[1], job.B.weights.shape[1]
        return int(min(4096, max(16, (1 << 24) // (n * m))))
    n = max(p.shape[0] for p in job.A.points + job.B.points)
    return int(min(256, max(1, (1 << 24) // (n * n))))


def solve_tile(job: _Job, pairs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Solve the problems ``(A[i], B[j])`` for the rows ``(i, j, side)`` of ``pairs``
    (``side`` 0: A against B; 1: A against A; 2: B against B; 3: A against an equal
    measure of B) as one batch; return each
    one's value for the metric (dual value, or ``<C, P>`` for ``"sinkhorn_cost"``:
    both columns) and whether it converged."""
    # self terms (a measure with itself) take the symmetric iteration from f = g = 0,
    # which converges where alternating updates crawl (Feydy et al., 2019)
    symmetric = bool(np.all(pairs[:, 2] > 0))
    left = [job.B if s == 2 else job.A for s in pairs[:, 2]]
    right = [job.A if s == 1 else job.B for s in pairs[:, 2]]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        if job.A.points is None:
            xp = namespaces(job.A.weights).compute
            a = xp.stack([L.weights[int(i), :] for L, i in zip(left, pairs[:, 0], strict=True)])
            b = xp.stack([R.weights[int(j), :] for R, j in zip(right, pairs[:, 1],
                                                               strict=True)])
            res = sinkhorn(a, b, job.C, job.eps, tol=job.tol, max_iter=job.max_iter,
                           symmetric=symmetric, backend=job.backend)
        else:
            geoms = [PointCloud(L.points[int(i)], R.points[int(j)], job.cost, scale=job.scale)
                     for L, R, i, j in zip(left, right, pairs[:, 0], pairs[:, 1], strict=True)]
            res = sinkhorn([L.weights[int(i)] for L, i in zip(left, pairs[:, 0], strict=True)],
                           [R.weights[int(j)] for R, j in zip(right, pairs[:, 1], strict=True)],
                           geoms, job.eps, tol=job.tol, max_iter=job.max_iter,
                           symmetric=symmetric, backend=job.backend)
    return np.stack([res.dual_value, res.cost], axis=1), np.asarray(res.converged)


def _run(job: _Job, pairs: np.ndarray, tile: int, client: Any, verbose: bool,
         callback: Callable[[int, int], Any] | None) -> tuple[np.ndarray, np.ndarray]:
    """Values (two columns, see :func:`solve_tile`) and convergence of every pair."""
    tiles = []
    for part in (np.flatnonzero(pairs[:, 2] == 0), np.flatnonzero(pairs[:, 2] > 0)):
        tiles += [part[s:s + tile] for s in range(0, len(part), tile)]  # self terms apart
    values = np.empty((len(pairs), 2))
    converged = np.empty(len(pairs), dtype=bool)
    bar = ProgressBar("pairwise OT", len(tiles), "tile") if verbose else None
    if client is None:
        results = ((k, solve_tile(job, pairs[t])) for k, t in enumerate(tiles))
    else:
        from ._dask import map_tiles

        results = map_tiles(client, solve_tile, job, [pairs[t] for t in tiles])
    try:
        for done, (k, (val, conv)) in enumerate(results, start=1):
            values[tiles[k]], converged[tiles[k]] = val, conv
            if bar is not None:
                bar.update(1)
            if callback is not None:
                callback(done, len(tiles))
    finally:
        if bar is not None:
            bar.close()
    return values, converged


def _prepare(XA, XB, weights_a, weights_b, C, cost, scale, eps, metric, tol, max_iter,
             backend):
    eps = check_eps(eps)
    metric = check_choice(metric, "metric", METRICS)
    tol = None if tol is None else check_tol(tol)
    max_iter = check_positive_int(max_iter, "max_iter")
    first = XA if not isinstance(XA, (list, tuple)) else (XA[0] if XA else None)
    if first is None:
        raise ValueError("XA holds no histogram or point cloud")
    ns = namespaces(first, names=("XA",))
    Cc = None
    if C is not None:
        Cc = as_array(ns.compute, ns.to_compute(C), "C", dtype=ns.compute.float64, ndim=2,
                      allow_posinf=True)
    A = _collection(XA, weights_a, Cc, ns, "XA")
    B = A if XB is None else _collection(XB, weights_b, Cc, ns, "XB")
    if Cc is not None:
        n, m = A.weights.shape[1], B.weights.shape[1]
        if Cc.shape != (n, m):
            raise ValueError(f"C has shape {tuple(Cc.shape)}, but the histograms have "
                             f"{n} and {m} bins")
        if metric == "sinkhorn_divergence" and n != m:
            raise ValueError("the Sinkhorn divergence of histograms needs one support: C "
                             f"must be square, got shape {tuple(Cc.shape)}")
    elif any(p.shape[1] != A.points[0].shape[1] for p in A.points + B.points):
        raise ValueError("all point clouds of XA and XB must have the same dimension d")
    job = _Job(A, B, Cc, cost, float(scale), eps, tol, max_iter, backend)
    return job, ns, metric


def _assemble(job: _Job, pairs: np.ndarray, values: np.ndarray, metric: str,
              same: bool) -> tuple[dict, dict, dict]:
    """Values of the cross pairs and of the self terms, keyed by index pairs / indices."""
    col = 1 if metric == "sinkhorn_cost" else 0
    cross, self_a, self_b = {}, {}, {}
    for (i, j, side), v in zip(pairs, values[:, col], strict=True):
        if side in (0, 3):
            cross[(int(i), int(j))] = v
        elif side == 1:
            self_a[int(i)] = v
        else:
            self_b[int(i)] = v
    if same:
        self_b = self_a
    return cross, self_a, self_b


def _warn(converged: np.ndarray, what: str) -> None:
    if not converged.all():
        warn_outside(f"{what}: {int((~converged).sum())} of {converged.size} Sinkhorn solves "
                     "did not converge (raise max_iter or eps)", ConvergenceWarning)


def cdist(
    XA: Any,
    XB: Any = None,
    *,
    eps: float,
    metric: str = "sinkhorn_divergence",
    C: Any = None,
    cost: Any = "sqeuclidean",
    scale: float = 1.0,
    weights_a: Any = None,
    weights_b: Any = None,
    tol: float | None = None,
    max_iter: int = 10_000,
    tile_size: int | None = None,
    client: Any = None,
    verbose: bool = False,
    callback: Callable[[int, int], Any] | None = None,
    backend: Any = None,
) -> Any:
    r"""Entropic OT between each pair of two collections of histograms or point clouds.

    ``D[i, j]`` compares ``XA[i]`` with ``XB[j]`` (``XB=None``: ``XA`` with itself, each
    unordered pair and each self term solved once, as :func:`pdist` does). The metrics,
    for measures :math:`\alpha, \beta` and
    :math:`\mathrm{OT}_\varepsilon(\alpha, \beta) = \min_P \langle C, P \rangle +
    \varepsilon \mathrm{KL}(P | a b^T)` (the problem of :func:`otcore.sinkhorn`):

    * ``"sinkhorn_divergence"``: :math:`\mathrm{OT}_\varepsilon(\alpha, \beta) -
      \tfrac12 \mathrm{OT}_\varepsilon(\alpha, \alpha) - \tfrac12
      \mathrm{OT}_\varepsilon(\beta, \beta)`, as :func:`otcore.sinkhorn_divergence`
      (zero on the diagonal of ``cdist(X)``, nonnegative for the usual costs);
    * ``"sinkhorn"``: :math:`\mathrm{OT}_\varepsilon(\alpha, \beta)` (its dual value,
      accurate to second order in the marginal error);
    * ``"sinkhorn_cost"``: :math:`\langle C, P \rangle` of the optimal plan, what POT's
      ``ot.sinkhorn2`` returns.

    Parameters
    ----------
    XA : array of shape (NA, n), or list of arrays (n_i, d), or array (NA, n, d)
        Histograms on one support (when ``C`` is given; each is normalized to mass 1),
        or point clouds (sizes may differ).
    XB : same kind as ``XA``, optional
        The second collection; ``None`` compares ``XA`` with itself.
    eps : float
        Entropic regularization, absolute (in the units of the cost).
    metric : {"sinkhorn_divergence", "sinkhorn", "sinkhorn_cost"}
        What ``D`` holds (see above).
    C : array of shape (n, m), optional
        The cost between the bins of ``XA`` and of ``XB``, which makes the collections
        histograms (square, one support, for the divergence).
    cost : {"sqeuclidean", "euclidean"} or ("pnorm", p), default "sqeuclidean"
        The ground cost of point clouds, divided by ``scale``.
    weights_a, weights_b : lists of arrays, optional
        Weights of the points of each cloud (default uniform; normalized to mass 1).
    tol, max_iter
        Of every Sinkhorn solve, as in :func:`otcore.sinkhorn`.
    tile_size : int, optional
        Problems per batch solve (one task on a cluster). Default: up to 4096 histogram
        pairs, or as many cloud pairs as fit in about 16 million cost entries (at most
        256); with a client, small enough to give every worker thread several tiles.
    client : distributed.Client, optional
        Run the tiles as tasks of this Dask cluster (``pip install otcore[dask]``); the
        inputs are scattered to the workers once, each worker's Numba threads are set so
        that its tasks do not oversubscribe the cores, and a worker that dies loses
        nothing: its tiles run again elsewhere. Default: in this process.
    verbose : bool, default False
        A progress bar over the tiles (tqdm when installed, otherwise lines on stderr).
        On a cluster, the Dask dashboard shows the tasks as well.
    callback : callable, optional
        Called as ``callback(done, total)`` after each finished tile.
    backend : optional
        Force a backend, as in :func:`otcore.sinkhorn`.

    Returns
    -------
    D : array of shape (NA, NB)
        In the library of ``XA`` (NumPy for lists).

    Warns
    -----
    ConvergenceWarning
        If some solves did not reach ``tol`` (counted in the message).

    See Also
    --------
    pdist : the condensed form for one collection.

    Examples
    --------
    >>> import numpy as np, otcore as oc
    >>> grid = np.linspace(0, 1, 20)
    >>> C = (grid[:, None] - grid[None, :]) ** 2
    >>> H = np.exp(-((grid[None, :] - np.array([[0.2], [0.5], [0.8]])) / 0.1) ** 2)
    >>> D = oc.cdist(H, C=C, eps=0.01)
    >>> D.shape, bool(np.allclose(np.diag(D), 0)), bool(D[0, 2] > D[0, 1] > 0)
    ((3, 3), True, True)
    """
    D, ns = _matrix(XA, XB, weights_a, weights_b, C, cost, scale, eps, metric, tol,
                    max_iter, tile_size, client, verbose, callback, backend)
    return _to_user(ns, D)


def _matrix(XA, XB, weights_a, weights_b, C, cost, scale, eps, metric, tol, max_iter,
            tile_size, client, verbose, callback, backend, diagonal=True
            ) -> tuple[np.ndarray, Namespaces]:
    """The ``(NA, NB)`` matrix of :func:`cdist` on the host, and the caller's
    namespaces (``diagonal=False``: the diagonal of one collection is not needed)."""
    job, ns, metric = _prepare(XA, XB, weights_a, weights_b, C, cost, scale, eps, metric,
                               tol, max_iter, backend)
    same = XB is None
    NA, NB = len(job.A), len(job.B)
    if same:
        pairs = [(i, j, 0) for i in range(NA) for j in range(i + 1, NA)]
    else:  # a measure met in both collections is a self term: side 3
        ka, kb = _fingerprints(job.A), _fingerprints(job.B)
        pairs = [(i, j, 3 if ka[i] == kb[j] else 0) for i in range(NA) for j in range(NB)]
    if metric == "sinkhorn_divergence" or (same and diagonal):
        pairs += [(i, i, 1) for i in range(NA)]
    if metric == "sinkhorn_divergence" and not same:
        pairs += [(j, j, 2) for j in range(NB)]
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 3)
    values, converged = _solve_pairs(job, pairs, tile_size, client, verbose, callback)
    cross, self_a, self_b = _assemble(job, pairs, values, metric, same)
    D = np.empty((NA, NB))
    for (i, j), v in cross.items():
        if metric == "sinkhorn_divergence":
            v = v - 0.5 * (self_a[i] + self_b[j])
        D[i, j] = v
        if same:
            D[j, i] = v
    if same and metric == "sinkhorn_divergence":
        np.fill_diagonal(D, 0.0)
    elif same and diagonal:
        np.fill_diagonal(D, [self_a[i] for i in range(NA)])
    _warn(converged, "pairwise OT")
    return D, ns


def _solve_pairs(job, pairs, tile_size, client, verbose, callback):
    tile = _default_tile(job) if tile_size is None else check_positive_int(tile_size,
                                                                            "tile_size")
    if client is not None and tile_size is None:
        from ._dask import total_threads

        tile = max(1, min(tile, math.ceil(len(pairs) / (4 * total_threads(client)))))
    return _run(job, pairs, tile, client, verbose, callback)


def _to_user(ns: Namespaces, D: np.ndarray) -> Any:
    if ns.compute is np:
        return ns.to_user(D)
    return ns.user.asarray(D)


def pdist(X: Any, *, eps: float, metric: str = "sinkhorn_divergence", C: Any = None,
          cost: Any = "sqeuclidean", scale: float = 1.0, weights: Any = None,
          tol: float | None = None, max_iter: int = 10_000, tile_size: int | None = None,
          client: Any = None, verbose: bool = False,
          callback: Callable[[int, int], Any] | None = None, backend: Any = None) -> Any:
    r"""Entropic OT between the pairs of one collection, in SciPy's condensed form.

    Returns the ``N (N - 1) / 2`` values ``D[i, j]``, ``i < j``, in the order of
    :func:`scipy.spatial.distance.pdist` (:func:`scipy.spatial.distance.squareform`
    makes the square matrix). Each unordered pair is solved once, and each self term of
    the divergence once. Parameters are those of :func:`cdist` (``weights`` for
    ``weights_a``).

    Examples
    --------
    >>> import numpy as np, otcore as oc
    >>> from scipy.spatial.distance import squareform
    >>> rng = np.random.default_rng(0)
    >>> clouds = [rng.normal(size=(n, 2)) + s for n, s in ((30, 0), (40, 1), (25, 3))]
    >>> d = oc.pdist(clouds, eps=0.1)
    >>> d.shape, bool(np.allclose(squareform(d), oc.cdist(clouds, eps=0.1)))
    ((3,), True)
    """
    D, ns = _matrix(X, None, weights, None, C, cost, scale, eps, metric, tol, max_iter,
                    tile_size, client, verbose, callback, backend, diagonal=False)
    return _to_user(ns, D[np.triu_indices(D.shape[0], k=1)])
