"""Reference backend: plain Array-API code for any conforming namespace.

It is the fallback for array libraries without dedicated kernels and the oracle that the
fast kernels are tested against, so it favours clarity over speed. Point clouds are
processed in blocks, so memory stays ``O(block * max(n, m))`` rather than ``O(n m)``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .._array import astype, concat
from ..geometry import DenseCost, PointCloud
from ._contract import (
    Backend,
    BlockLayout,
    GeometryOps,
    NewtonStep,
    PlanMarginals,
    PlanStats,
    SparsePlan,
    TopK,
    TopKEvaluator,
)

__all__ = ["ArrayAPIBackend", "block_runs", "group_costs", "kept_mask"]

_BLOCK_ENTRIES = 1 << 22
#: Smallest threshold of ``sparsify_plan``: normalized values below it count as zero.
_SMALLEST_KEY = math.ldexp(1.0, -1024)


def _softmin_block(xp: Any, z: Any, eps: float, axis: int) -> Any:
    """``-eps * logsumexp(z / eps, axis)`` with a max shift (z already holds h - C)."""
    mx = xp.max(z, axis=axis, keepdims=True)
    s = xp.sum(xp.exp((z - mx) / eps), axis=axis)
    return -(xp.squeeze(mx, axis=axis) + eps * xp.log(s))


def group_costs(xp: Any, geom: DenseCost | PointCloud, axis: int) -> Any:
    """The cost laid out group-major (plain ``xp`` code): row ``j`` holds the costs that
    compete in group ``j`` of the top-k kernel, ``C.T`` for ``axis=0`` and ``C`` for
    ``axis=1``; a point cloud is evaluated block by block into one array."""
    if isinstance(geom, DenseCost):
        return geom.C.T if axis == 0 else geom.C
    left, right = (geom.y, geom.x) if axis == 0 else (geom.x, geom.y)
    block = max(1, (1 << 22) // (right.shape[0] * right.shape[1]))
    rows = left.shape[0]
    out = xp.empty((rows, right.shape[0]), dtype=geom.dtype)
    for s in range(0, rows, block):
        e = min(s + block, rows)  # in-bounds slices (the Array API requires them)
        out[s:e, :] = geom.pairwise(left[s:e, :], right)  # every ground cost is symmetric
    return out


def _labels(order: Any, start: Any) -> np.ndarray:
    """The cluster of each point (original order) from a permutation and its boundaries."""
    out = np.empty(order.shape[0], dtype=np.int64)
    out[np.asarray(order)] = np.repeat(np.arange(start.shape[0] - 1), np.diff(start))
    return out


def _pair_matrix(layout: BlockLayout) -> np.ndarray:
    """The kept pairs of clusters as a dense ``(K, L)`` boolean matrix (host)."""
    K, L = layout.x_start.shape[0] - 1, layout.y_start.shape[0] - 1
    keep = np.zeros((K, L), dtype=bool)
    rows = np.repeat(np.arange(K), np.diff(np.asarray(layout.pair_ptr)))
    keep[rows, np.asarray(layout.pair_idx)] = True
    return keep


def kept_mask(xp: Any, shape: tuple[int, int], layout: BlockLayout) -> Any:
    """The ``(n, m)`` boolean mask of the point pairs a block layout keeps, in the original
    order of the points (``O(n m)``: for dense plans of small problems)."""
    keep = _pair_matrix(layout)
    lx, ly = _labels(layout.x_order, layout.x_start), _labels(layout.y_order, layout.y_start)
    if lx.shape[0] != shape[0] or ly.shape[0] != shape[1]:
        raise ValueError(f"layout: clusters of {lx.shape[0]} and {ly.shape[0]} points do not "
                         f"match a geometry of shape {shape}")
    return xp.asarray(keep[lx[:, None], ly[None, :]])



def _runs(ptr: np.ndarray, idx: np.ndarray, start: np.ndarray
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The kept pairs ``(ptr, idx)`` (CSR over row clusters) as runs of contiguous
    columns: ``(run_ptr, lo, hi)``, adjacent kept clusters merged into one run."""
    rows = np.repeat(np.arange(ptr.shape[0] - 1), np.diff(ptr))
    new = np.ones(idx.shape[0], dtype=bool)
    new[1:] = (idx[1:] != idx[:-1] + 1) | (rows[1:] != rows[:-1])
    first = np.flatnonzero(new)
    last = np.append(first[1:], idx.shape[0]) - 1
    run_ptr = np.zeros(ptr.shape[0], dtype=np.int64)
    np.cumsum(np.bincount(rows[first], minlength=ptr.shape[0] - 1), out=run_ptr[1:])
    return run_ptr, start[idx[first]], start[idx[last] + 1]


def _transpose(ptr: np.ndarray, idx: np.ndarray, ncols: int) -> tuple[np.ndarray, np.ndarray]:
    """The CSR pattern ``(ptr, idx)`` of a ``(len(ptr) - 1, ncols)`` matrix, transposed."""
    rows = np.repeat(np.arange(ptr.shape[0] - 1), np.diff(ptr))
    order = np.argsort(idx, kind="stable")  # rows stay increasing within a column
    tptr = np.zeros(ncols + 1, dtype=np.int64)
    np.cumsum(np.bincount(idx, minlength=ncols), out=tptr[1:])
    return tptr, rows[order]


def block_runs(layout: BlockLayout, shape: tuple[int, int]
               ) -> dict[int, tuple[np.ndarray, ...]]:
    """The kept pairs of a block layout as runs of contiguous columns, the input of the
    block-sparse kernels (host NumPy ``int64``), after checking that the layout indexes
    within the geometry (so that no kernel reads out of bounds).

    With both clouds sorted by cluster, sorted row ``i`` interacts with the sorted columns
    ``lo[r] <= j < hi[r]`` for ``run_ptr[rc[i]] <= r < run_ptr[rc[i] + 1]``; adjacent kept
    clusters merge into one run.

    Parameters
    ----------
    layout : BlockLayout
        With ``int64`` arrays.
    shape : (int, int)
        ``(n, m)`` of the geometry.

    Returns
    -------
    dict
        ``{1: (rc, run_ptr, lo, hi), 0: ...}``: for ``axis=1`` the rows are the sources
        and the columns the targets; for ``axis=0`` the roles swap (the transposed pairs).

    Raises
    ------
    ValueError
        If the clusters do not partition ``n`` and ``m`` points or the kept pairs are not
        a CSR pattern over the clusters.
    """
    for side, order, start, size in (("sources", layout.x_order, layout.x_start, shape[0]),
                                     ("targets", layout.y_order, layout.y_start, shape[1])):
        if not (order.shape[0] == size and start.shape[0] >= 2 and start[0] == 0
                and start[-1] == size and np.all(np.diff(start) >= 0)
                and (size == 0 or 0 <= order.min() <= order.max() < size)):
            raise ValueError(f"layout: the clusters of the {side} do not partition its "
                             f"{size} points")
    K, L = layout.x_start.shape[0] - 1, layout.y_start.shape[0] - 1
    ptr, idx = layout.pair_ptr, layout.pair_idx
    if not (ptr.shape[0] == K + 1 and ptr[0] == 0 and ptr[-1] == idx.shape[0]
            and np.all(np.diff(ptr) >= 0)
            and (idx.shape[0] == 0 or 0 <= idx.min() <= idx.max() < L)):
        raise ValueError(f"layout: the kept pairs are not a CSR pattern over {K} x {L} "
                         "clusters")
    rx = np.repeat(np.arange(K), np.diff(layout.x_start))
    ry = np.repeat(np.arange(L), np.diff(layout.y_start))
    tptr, tidx = _transpose(layout.pair_ptr, layout.pair_idx, L)
    return {1: (rx, *_runs(layout.pair_ptr, layout.pair_idx, layout.y_start)),
            0: (ry, *_runs(tptr, tidx, layout.x_start))}

class _ArrayAPIOps(GeometryOps):
    def __init__(self, xp: Any, geom: DenseCost | PointCloud):
        self.xp = xp
        self.geom = geom
        n, m = geom.shape
        self.block = max(1, _BLOCK_ENTRIES // max(n, m))
        self._groups: dict[int, Any] = {}

    def _cost_block(self, axis: int, start: int, stop: int) -> Any:
        """Rows ``start:stop`` of C (axis=1) or columns ``start:stop`` (axis=0)."""
        g = self.geom
        if isinstance(g, DenseCost):
            return g.C[start:stop, :] if axis == 1 else g.C[:, start:stop]
        if axis == 1:
            return g.pairwise(g.x[start:stop, :], g.y)
        return g.pairwise(g.x, g.y[start:stop, :])

    def _blocks(self, axis: int):
        size = self.geom.shape[0 if axis == 1 else 1]
        for start in range(0, size, self.block):
            yield start, min(start + self.block, size)

    def softmin(self, h: Any, eps: float, axis: int) -> Any:
        xp = self.xp
        out = []
        for start, stop in self._blocks(axis):
            C = self._cost_block(axis, start, stop)
            z = (h[None, :] - C) if axis == 1 else (h[:, None] - C)
            out.append(_softmin_block(xp, z, eps, axis))
        return concat(xp, out)

    def _plan_block(self, hf: Any, hg: Any, eps: float, start: int, stop: int) -> Any:
        C = self._cost_block(1, start, stop)
        return self.xp.exp((hf[start:stop, None] + hg[None, :] - C) / eps)

    def plan_stats(self, hf: Any, hg: Any, eps: float) -> PlanStats:
        xp = self.xp
        rows, cols, cost = [], xp.zeros_like(hg), 0.0
        for start, stop in self._blocks(1):
            C = self._cost_block(1, start, stop)
            P = xp.exp((hf[start:stop, None] + hg[None, :] - C) / eps)
            rows.append(xp.sum(P, axis=1))
            cols = cols + xp.sum(P, axis=0)
            cost += float(xp.sum(xp.where(P > 0, C, 0) * P))  # +inf costs: P = 0
        return PlanStats(concat(xp, rows), cols, cost)

    def apply(self, hf: Any, hg: Any, eps: float, V: Any, axis: int) -> Any:
        xp = self.xp
        if axis == 1:
            return concat(xp, [self._plan_block(hf, hg, eps, s, e) @ V
                               for s, e in self._blocks(1)])
        out = xp.zeros((hg.shape[0], V.shape[1]), dtype=V.dtype)
        for s, e in self._blocks(1):
            out = out + self._plan_block(hf, hg, eps, s, e).T @ V[s:e, :]
        return out

    def plan(self, hf: Any, hg: Any, eps: float) -> Any:
        return concat(self.xp, [self._plan_block(hf, hg, eps, s, e)
                                for s, e in self._blocks(1)], axis=0)

    def cost_scale(self) -> float:
        xp, g = self.xp, self.geom
        if isinstance(g, DenseCost):  # over the finite entries (+inf forbids a pair)
            return float(xp.max(xp.where(xp.isfinite(g.C), xp.abs(g.C), 0)))
        both = concat(xp, [g.x, g.y], axis=0)
        lo, hi = xp.min(both, axis=0), xp.max(both, axis=0)
        return float(g.pairwise(lo[None, :], hi[None, :])[0, 0])

    def cost_matrix(self) -> Any:
        g = self.geom
        if isinstance(g, DenseCost):
            return g.C
        n = g.shape[0]
        block = max(1, self.block // g.x.shape[1])
        rows = [g.pairwise(g.x[i:min(i + block, n), :], g.y) for i in range(0, n, block)]
        return concat(self.xp, rows, axis=0)

    def cost_entries(self, i: Any, j: Any) -> Any:
        xp, g = self.xp, self.geom
        if isinstance(g, DenseCost):
            return xp.take(xp.reshape(g.C, (-1,)), i * g.shape[1] + j)
        c = g.ground.paired(xp, xp.take(g.x, i, axis=0), xp.take(g.y, j, axis=0))
        return c / g.scale if g.scale != 1.0 else c

    def plan_marginals(self, hf: Any, hg: Any, eps: float, out: Any) -> PlanMarginals:
        P = self.plan(hf, hg, eps)
        out[:, :] = P
        return PlanMarginals(out, self.xp.sum(P, axis=1), self.xp.sum(P, axis=0))

    def sparsify_plan(self, P: Any, rows: Any, cols: Any, nnz: int) -> SparsePlan:
        xp = self.xp

        def inv_sqrt(v):
            ok = (v > 0) & xp.isfinite(v)
            return xp.where(ok, 1 / xp.sqrt(xp.where(ok, v, 1)), 0)

        q = P * inv_sqrt(rows)[:, None] * inv_sqrt(cols)[None, :]
        theta = _SMALLEST_KEY
        positive = xp.reshape(q[q >= theta], (-1,))
        if positive.shape[0] >= nnz:
            qk = float(xp.sort(positive)[positive.shape[0] - nnz])
            mant, expo = math.frexp(qk)  # qk = mant * 2**expo, mant in [0.5, 1)
            theta = max(theta, math.ldexp(math.floor(mant * 8) / 8, expo))  # 2 mantissa bits
        S = xp.where(q >= theta, P, xp.zeros_like(P))
        if isinstance(S, np.ndarray):
            from scipy.sparse import csr_array

            return SparsePlan(csr_array(S), theta)
        return SparsePlan(S, theta)

    def topk(self, axis: int, w: Any, gamma: float, k: int, simplex: bool) -> TopKEvaluator:
        if axis not in self._groups:
            self._groups[axis] = group_costs(self.xp, self.geom, axis)
        return _TopKReference(self.xp, self._groups[axis], w, gamma, k, simplex)

    def cost_grad(self, hf: Any, hg: Any, eps: float) -> Any:
        xp, g = self.xp, self.geom
        if isinstance(g, DenseCost):
            raise TypeError("cost_grad needs a PointCloud: a dense cost has no points")
        m = g.shape[1]
        block = max(1, self.block // g.x.shape[1])
        out = []
        for start in range(0, m, block):
            stop = min(start + block, m)
            y = g.y[start:stop, :]
            P = xp.exp((hf[:, None] + hg[None, start:stop] - g.pairwise(g.x, y)) / eps)
            dc = g.ground.grad(xp, y[None, :, :] - g.x[:, None, :])
            out.append(xp.sum(P[:, :, None] * dc, axis=0) / g.scale)
        return concat(xp, out, axis=0)


    def block_sparse(self, layout: BlockLayout) -> GeometryOps:
        if isinstance(self.geom, DenseCost):
            raise TypeError("block_sparse needs a PointCloud: a dense cost has no clusters")
        return _ArrayAPIBlockOps(self.xp, self.geom, layout)


class _ArrayAPIBlockOps(_ArrayAPIOps):
    """The reference of the block-sparse kernels: the full computation with the cost of
    every dropped pair replaced by ``+inf`` (its plan entry is exactly 0)."""

    def __init__(self, xp: Any, geom: PointCloud, layout: BlockLayout):
        super().__init__(xp, geom)
        self.keep = xp.asarray(_pair_matrix(layout))
        self.lx = xp.asarray(_labels(layout.x_order, layout.x_start))
        self.ly = xp.asarray(_labels(layout.y_order, layout.y_start))
        if self.lx.shape[0] != geom.shape[0] or self.ly.shape[0] != geom.shape[1]:
            raise ValueError(f"layout: clusters of {self.lx.shape[0]} and "
                             f"{self.ly.shape[0]} points do not match {geom!r}")

    def _cost_block(self, axis: int, start: int, stop: int) -> Any:
        xp = self.xp
        C = super()._cost_block(axis, start, stop)
        lx, ly = (self.lx[start:stop], self.ly) if axis == 1 else (self.lx, self.ly[start:stop])
        mask = xp.take(xp.take(self.keep, lx, axis=0), ly, axis=1)
        return xp.where(mask, C, xp.inf)

    def topk(self, axis: int, w: Any, gamma: float, k: int, simplex: bool) -> TopKEvaluator:
        raise NotImplementedError("a block-sparse geometry has no top-k kernel")

    def cost_grad(self, hf: Any, hg: Any, eps: float) -> Any:
        raise NotImplementedError("a block-sparse geometry has no cost_grad kernel")


class _TopKReference(TopKEvaluator):
    """The top-k kernel in plain ``xp``: a full stable sort of every group (a block of
    groups at a time), the simplex threshold by the sort-and-scan rule."""

    def __init__(self, xp: Any, K: Any, w: Any, gamma: float, k: int, simplex: bool):
        self.xp, self.K, self.gamma, self.k, self.simplex = xp, K, gamma, k, simplex
        self.w = astype(xp, w, xp.float64)

    def __call__(self, alpha: Any, beta: Any, width: int = 0) -> TopK:
        xp, K, gamma, simplex = self.xp, self.K, self.gamma, self.simplex
        m, n = K.shape
        kk = min(self.k, n)
        f64 = xp.float64
        alpha, beta, w = (astype(xp, v, f64) for v in (alpha, beta, self.w))
        block = max(1, _BLOCK_ENTRIES // n)
        ranks = xp.arange(1, kk + 1, dtype=f64)
        out = {key: [] for key in ("value", "mass", "theta", "nnz", "idx", "val")}
        rows = xp.zeros((n,), dtype=f64)
        for start in range(0, m, block):
            stop = min(start + block, m)
            S = alpha[None, :] - astype(xp, K[start:stop, :], f64)
            order = xp.argsort(-S, axis=1, stable=True)  # ties: smaller index first
            X = S + beta[start:stop, None]
            U = xp.take_along_axis(X, order[:, :kk], axis=1)
            if simplex:
                csum = xp.cumulative_sum(U, axis=1)
                s = gamma * w[start:stop, None]
                rho = xp.sum(astype(xp, U - (csum - s) / ranks > 0, xp.int64), axis=1)
                rho = xp.maximum(rho, xp.ones_like(rho))
                top = xp.take_along_axis(csum, rho[:, None] - 1, axis=1)[:, 0]
                theta = (top - s[:, 0]) / astype(xp, rho, f64)
            else:
                theta = xp.zeros((stop - start,), dtype=f64)
            T = xp.maximum(U - theta[:, None], xp.zeros_like(U)) / gamma  # by score
            rank = xp.argsort(order, axis=1)  # inverse permutation of the sort
            full = xp.where(rank < kk, xp.maximum(X - theta[:, None], xp.zeros_like(X)), 0.0)
            rows = rows + xp.sum(full, axis=0) / gamma
            out["value"].append(xp.sum(T * (U - 0.5 * gamma * T), axis=1))
            out["mass"].append(xp.sum(T, axis=1))
            out["theta"].append(theta)
            out["nnz"].append(xp.sum(astype(xp, T > 0, xp.int64), axis=1))
            out["idx"].append(order[:, :width])
            out["val"].append(T[:, :width])
        joined = {key: concat(xp, parts, axis=0) for key, parts in out.items()}
        return TopK(joined["value"], joined["mass"], joined["theta"], joined["nnz"], rows,
                    joined["idx"], joined["val"])


    def hessian_product(self, out: TopK, shift: float, v: Any) -> Any:
        return support_hessian(self.xp, support_indicator(self.xp, out, self.K.shape[1]),
                               self.gamma, shift)(astype(self.xp, v, self.xp.float64))

    def hessian_solve(self, out: TopK, shift: float, rhs: Any, rtol: float,
                      max_iter: int) -> NewtonStep:
        xp = self.xp
        M = support_indicator(xp, out, self.K.shape[1])
        return pcg(xp, support_hessian(xp, M, self.gamma, shift),
                   hessian_diagonal(xp, M, self.gamma, shift),
                   astype(xp, rhs, xp.float64), rtol, max_iter)


def support_indicator(xp: Any, out: TopK, n: int) -> Any:
    """The dense ``(m, n)`` float64 indicator of the supports listed in a top-k evaluation
    (``M[j, i] = 1`` for ``i`` in ``S_j``); its listing must cover every support."""
    m, width = out.idx.shape
    if m and width < int(xp.max(out.nnz)):
        raise ValueError("the evaluation lists fewer entries than the supports hold: "
                         "evaluate with width >= max(nnz)")
    cols = xp.arange(n, dtype=out.idx.dtype)
    M = xp.zeros((m, n), dtype=xp.float64)
    for r in range(width):
        hit = (out.idx[:, r:r + 1] == cols[None, :]) & (out.nnz[:, None] > r)
        M = M + astype(xp, hit, xp.float64)
    return M


def support_hessian(xp: Any, M: Any, gamma: float, shift: float):
    """``v -> (H + shift I) v`` with ``H = (1 / gamma) (diag(M^T 1) - M^T diag(1 / M 1) M)``,
    the generalised Hessian of the semi-dual on the supports ``M`` (an ``(m, n)`` indicator,
    dense or a sparse matrix with ``@``): see ``TopKEvaluator.hessian_product``."""
    size = M @ xp.ones((M.shape[1],), dtype=xp.float64)
    inv = xp.where(size > 0, 1.0 / xp.where(size > 0, size, 1.0), 0.0)
    degree = M.T @ xp.ones((M.shape[0],), dtype=xp.float64)

    def product(v: Any) -> Any:
        return shift * v + (degree * v - M.T @ (inv * (M @ v))) / gamma

    return product


def hessian_diagonal(xp: Any, M: Any, gamma: float, shift: float) -> Any:
    """The diagonal of ``H + shift I`` (:func:`support_hessian`): ``shift`` plus
    ``(1 / gamma) sum_{j: i in S_j} (1 - 1 / |S_j|)``."""
    size = M @ xp.ones((M.shape[1],), dtype=xp.float64)
    keep = xp.where(size > 0, 1.0 - 1.0 / xp.where(size > 0, size, 1.0), 0.0)
    return shift + (M.T @ keep) / gamma


def pcg(xp: Any, product: Any, diag: Any, rhs: Any, rtol: float, max_iter: int
        ) -> NewtonStep:
    """Conjugate gradients for ``product(x) = rhs`` (symmetric positive semi-definite),
    preconditioned with ``diag`` (entries <= 0 read as 1); the reference of
    ``TopKEvaluator.hessian_solve``."""
    diag = xp.where(diag > 0, diag, 1.0)
    x = xp.zeros_like(rhs)
    r = rhs
    z = r / diag
    p = z
    rz = float(xp.sum(r * z))
    target = rtol * float(xp.sqrt(xp.sum(rhs * rhs)))
    it = 0
    while it < max_iter and float(xp.sqrt(xp.sum(r * r))) > target:
        q = product(p)
        pq = float(xp.sum(p * q))
        if not pq > 0.0:  # p in the null space: no further progress
            break
        step = rz / pq
        x = x + step * p
        r = r - step * q
        z = r / diag
        rz_new = float(xp.sum(r * z))
        p = z + (rz_new / rz) * p
        rz = rz_new
        it += 1
    return NewtonStep(x, it, float(xp.sqrt(xp.sum(r * r))))


class ArrayAPIBackend(Backend):
    """Pure Array-API backend for namespace ``xp`` (the reference implementation).

    Parameters
    ----------
    xp : module
        An Array-API namespace (``array_api_strict``, ``numpy``, ...).
    """

    name = "array_api"

    def __init__(self, xp: Any):
        self.xp = xp

    def bind(self, geom: DenseCost | PointCloud) -> GeometryOps:
        return _ArrayAPIOps(self.xp, geom)

    def bind_batch(self, batch: Any) -> Any:
        from .array_api_batch import ArrayAPIBatchOps

        return ArrayAPIBatchOps(self.xp, batch)

    def sparse_linalg(self) -> Any:
        """:mod:`scipy.sparse.linalg` over NumPy arrays; ``None`` for other namespaces."""
        if self.xp is not np:
            return None
        import scipy.sparse.linalg

        return scipy.sparse.linalg

    def __repr__(self) -> str:
        return f"<otcore backend 'array_api' over {getattr(self.xp, '__name__', self.xp)}>"
