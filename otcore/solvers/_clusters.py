"""Grid clustering of point clouds (host NumPy), for the multiscale solver.

Both clouds are cut by one regular grid whose cell width is chosen so that the larger
cloud occupies about a requested number of cells; each occupied cell is a cluster. The
clusters are numbered in lexicographic order of their cells, so clusters adjacent along
the last coordinate get consecutive numbers (the block-sparse kernels merge consecutive
kept clusters into one run of points). A cluster records its centre (the mean of its
points), its weight and its radius in the norm of the ground cost, which is all the
truncation bound needs.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from ..costs import GroundCost

__all__ = ["Clusters", "grid_cell", "grid_clusters"]

#: Points per cloud used to choose the cell width.
_SAMPLE = 50_000
#: Bisection steps on the logarithm of the cell width.
_STEPS = 14


class Clusters(NamedTuple):
    """The clusters of one cloud; cluster ``I`` holds ``order[start[I]:start[I + 1]]``."""

    order: np.ndarray
    """Permutation of the points grouping them by cluster, ``(n,)``."""
    start: np.ndarray
    """Cluster boundaries in ``order``, ``(K + 1,)``."""
    centre: np.ndarray
    """Mean of each cluster's points, ``(K, d)``."""
    weight: np.ndarray
    """Total weight of each cluster, ``(K,)``."""
    radius: np.ndarray
    """Largest distance (in the cost's norm) from the centre to a point, ``(K,)``."""

    @property
    def counts(self) -> np.ndarray:
        """Points per cluster, ``(K,)``."""
        return np.diff(self.start)


def _codes(points: np.ndarray, lo: np.ndarray, cell: float, nb: np.ndarray) -> np.ndarray:
    """The cell of each point as one integer (lexicographic order of the cells)."""
    idx = np.minimum(((points - lo) / cell).astype(np.int64), nb - 1)
    code = idx[:, 0].copy()
    for k in range(1, points.shape[1]):
        code = code * nb[k] + idx[:, k]
    return code


def _grid(lo: np.ndarray, hi: np.ndarray, cell: float) -> np.ndarray:
    return np.floor((hi - lo) / cell).astype(np.int64) + 1


def grid_cell(clouds: list[np.ndarray], target: int) -> tuple[float, np.ndarray, np.ndarray]:
    """A cell width at which the larger cloud occupies about ``target`` cells (at least,
    when reachable), with the grid's corners ``(lo, hi)``. The count is taken on a
    subsample of at most ``_SAMPLE`` points per cloud; the width never makes the cell
    codes overflow ``int64``."""
    lo = np.min([c.min(axis=0) for c in clouds], axis=0)
    hi = np.max([c.max(axis=0) for c in clouds], axis=0)
    extent = float(np.max(hi - lo))
    if extent == 0.0:  # every point at the same place: one cell
        return 1.0, lo, hi
    d = lo.shape[0]
    rng = np.random.default_rng(0)
    sample = [c if c.shape[0] <= _SAMPLE else c[rng.choice(c.shape[0], _SAMPLE, replace=False)]
              for c in clouds]

    def occupied(cell: float) -> int:
        nb = _grid(lo, hi, cell)
        return max(np.unique(_codes(s, lo, cell, nb)).shape[0] for s in sample)

    small = extent / (2.0 ** (60.0 / d) - 2.0)  # codes stay below 2**60
    large = extent * 1.01
    for _ in range(_STEPS):
        mid = math.sqrt(small * large)
        if occupied(mid) >= target:
            small = mid
        else:
            large = mid
    return small, lo, hi


def grid_clusters(points: np.ndarray, weights: np.ndarray, ground: GroundCost, cell: float,
                  lo: np.ndarray, hi: np.ndarray) -> Clusters:
    """Cluster ``points`` by the cells of the grid of width ``cell`` from ``lo`` to ``hi``."""
    nb = _grid(lo, hi, cell)
    _, label = np.unique(_codes(points, lo, cell, nb), return_inverse=True)
    label = label.reshape(-1)
    order = np.argsort(label, kind="stable")
    counts = np.bincount(label)
    start = np.zeros(counts.shape[0] + 1, dtype=np.int64)
    np.cumsum(counts, out=start[1:])
    sorted_points = points[order]
    centre = np.add.reduceat(sorted_points, start[:-1], axis=0) / counts[:, None]
    dist = ground.norm(np, sorted_points - np.repeat(centre, counts, axis=0))
    radius = np.maximum.reduceat(dist, start[:-1])
    weight = np.add.reduceat(weights[order], start[:-1])
    return Clusters(order.astype(np.int64), start, centre, weight, radius)
