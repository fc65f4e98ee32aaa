"""CPU backend: NumPy arrays, Numba kernels (:mod:`otcore.kernels.numba`)."""

from __future__ import annotations

from typing import Any

import numpy as np
from numba import get_num_threads

from ..geometry import DenseCost, PointCloud
from ..kernels.numba import softmin as _k
from ..kernels.numba.cost import DENSE
from ._base import Backend, GeometryOps

__all__ = ["NumbaBackend"]

_EMPTY = np.empty((0, 0))


class _NumbaOps(GeometryOps):
    """Kernels bound to a dense cost or to a point cloud (x, y and their transposes)."""

    def __init__(self, geom: DenseCost | PointCloud):
        self.geom = geom
        if isinstance(geom, DenseCost):
            self.kind, self.p, self.scale = DENSE, 0.0, 1.0
            self.X = np.ascontiguousarray(geom.C)
            self.YT = _EMPTY.astype(self.X.dtype)
        else:
            self.kind, self.p, self.scale = geom.cost_code, geom.p, geom.scale
            self.X = np.ascontiguousarray(geom.x)
            self.YT = np.ascontiguousarray(geom.y.T)
            self.Y = np.ascontiguousarray(geom.y)
            self.XT = np.ascontiguousarray(geom.x.T)

    # A cost divided by `scale` is handled by rescaling h and eps:
    # softmin_eps(h; C / s) = softmin_{s eps}(s h; C) / s.

    def softmin(self, h: Any, eps: float, axis: int) -> np.ndarray:
        s = self.scale
        h = np.ascontiguousarray(h * s if s != 1.0 else h)
        n, m = self.geom.shape
        out = np.empty(n if axis == 1 else m, dtype=self.X.dtype)
        if axis == 1:
            _k.softmin_rows(self.X, self.YT, self.kind, self.p, h, eps * s, out, get_num_threads())
        elif self.kind == DENSE:
            _k.softmin_cols(self.X, h, eps * s, out)
        else:  # every supported ground cost is symmetric: swap the roles of x and y
            _k.softmin_rows(self.Y, self.XT, self.kind, self.p, h, eps * s, out,
                            get_num_threads())
        return out / s if s != 1.0 else out

    def plan_stats(self, hf: Any, hg: Any, eps: float) -> tuple[Any, Any, float]:
        s = self.scale
        rows, cols, cost = _k.plan_stats(
            self.X, self.YT, self.kind, self.p,
            np.ascontiguousarray(hf * s), np.ascontiguousarray(hg * s), eps * s, get_num_threads(),
        )
        return rows, cols, float(cost) / s

    def plan(self, hf: Any, hg: Any, eps: float) -> np.ndarray:
        C = self.X if self.kind == DENSE else self.geom.cost_matrix()
        return np.exp((hf[:, None] + hg[None, :] - C) / eps)

    def cost_scale(self) -> float:
        if self.kind == DENSE:
            return float(np.abs(self.X).max())
        both = np.concatenate([self.X, self.Y])
        lo, hi = both.min(axis=0), both.max(axis=0)
        return float(self.geom.pairwise(lo[None], hi[None])[0, 0])


class NumbaBackend(Backend):
    """NumPy arrays on the CPU, with Numba kernels parallel over rows (``prange``).

    The number of threads follows :func:`numba.set_num_threads` / ``NUMBA_NUM_THREADS``.
    """

    name = "numba_cpu"
    xp = np

    def bind(self, geom: DenseCost | PointCloud) -> GeometryOps:
        return _NumbaOps(geom)

    def group_costs(self, geom: DenseCost | PointCloud, axis: int) -> np.ndarray:
        return np.ascontiguousarray(super().group_costs(geom, axis))

    def topk_groups(self, K, alpha, beta, w, gamma, k, simplex, width=0):
        from ..kernels.numba import topk as _topk  # imported on first use

        m = K.shape[0]
        idx = np.empty((m, width), dtype=np.int64)
        val = np.empty((m, width), dtype=np.float64)
        f64 = np.float64
        out, rows = _topk.topk_groups(
            K, np.ascontiguousarray(alpha, dtype=f64), np.ascontiguousarray(beta, dtype=f64),
            np.ascontiguousarray(w, dtype=f64), float(gamma), int(k), bool(simplex),
            get_num_threads(), idx, val,
        )
        return out[0], out[1], out[2], out[3].astype(np.int64), rows, idx, val
