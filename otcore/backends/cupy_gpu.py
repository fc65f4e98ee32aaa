"""GPU backend: CuPy arrays, CUDA kernels (:mod:`otcore.kernels.cuda`).

Importing this module imports neither CuPy nor anything that touches a GPU; CuPy is
imported, and the kernels compiled, on first use. Arrays stay on the device of the
geometry, in its dtype (float32 or float64); the only host synchronizations are
:meth:`CupyBackend.to_float` and the scalars the contract returns as Python floats
(``<C, P>`` of :meth:`~otcore.backends.GeometryOps.plan_stats` and
:meth:`~otcore.backends.GeometryOps.cost_scale`), which go through it; in
:meth:`~otcore.backends.GeometryOps.sparsify_plan` the threshold and the number of kept
entries (which sizes the CSR arrays); and :meth:`CupyBackend.to_numpy`, with which
:func:`otcore.cardinality_ot` brings the ``O(n + m)`` outputs of the top-k evaluations
(:meth:`_CupyOps.topk`) to SciPy's L-BFGS-B and the semismooth Newton iteration on the
host (the cost stays on the device; the Newton systems are solved there by the reference's
conjugate gradients in CuPy, one synchronization per iteration for its scalars).
Sparse matrices are ``cupyx.scipy.sparse`` CSR matrices (int32 indices) and
:meth:`CupyBackend.sparse_linalg` is :mod:`cupyx.scipy.sparse.linalg`, for the Newton
stage of Sinkhorn-Newton-Sparse.

The kernels, their launch configurations and the design of their reductions are described
once, beside their sources, in :mod:`otcore.kernels.cuda`.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import numpy as np

from ..costs import DENSE
from ..geometry import DenseCost, PointCloud
from ..kernels import cuda as _cuda
from ..kernels.cuda import launch as _launch
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
from .array_api import (
    block_runs,
    group_costs,
    hessian_diagonal,
    kept_mask,
    pcg,
    support_hessian,
)
from .array_api_batch import ArrayAPIBatchOps

__all__ = ["CupyBackend"]

_SUFFIX = {"float32": "f32", "float64": "f64"}
# The source file of each kernel family.
_SOURCE_OF = {
    "otc_batch": "batch.cu",
    "otc_block": "blocksparse.cu",
    "otc_softmin": "softmin.cu",
    "otc_lse": "softmin.cu",
    "otc_plan": "plan.cu",
    "otc_cost": "cloud.cu",
    "otc_sparse": "sparse.cu",
    "otc_topk": "topk.cu",
}
#: Largest number of entries of a sparsified plan: cupyx CSR matrices index with int32.
_MAX_NNZ = np.iinfo(np.int32).max
#: Plan entries formed at a time by :meth:`_CupyOps.apply`.
_APPLY_ENTRIES = 1 << 24


def _cupy() -> Any:
    """The CuPy module, imported on first use."""
    import cupy

    return cupy


def _cupyx_sparse() -> Any:
    """The :mod:`cupyx.scipy.sparse` module, with its ``linalg``, imported on first use."""
    import cupyx.scipy.sparse
    import cupyx.scipy.sparse.linalg  # makes the attribute ``linalg`` available

    return cupyx.scipy.sparse


def _inv_sqrt(cp: Any, v: Any) -> Any:
    """``1 / sqrt(v)`` in float64 where ``0 < v < inf``, 0 elsewhere (as the CPU kernel)."""
    v = v.astype(np.float64)
    ok = (v > 0) & (v < np.inf)
    return cp.ascontiguousarray(cp.where(ok, 1.0 / cp.sqrt(cp.where(ok, v, 1.0)), 0.0))


@cache
def _module(source: str) -> Any:
    return _cupy().RawModule(code=_cuda.source(source), options=_launch.compile_options())


@cache
def _kernel(name: str, dtype: str) -> Any:
    """The kernel ``name`` for ``dtype`` (CuPy compiles it per device on first launch)."""
    source = next(src for prefix, src in _SOURCE_OF.items() if name.startswith(prefix))
    return _module(source).get_function(f"{name}_{_SUFFIX[dtype]}")


@cache
def _capacity(device_id: int) -> int:
    """Threads the device keeps resident: multiprocessors x threads per multiprocessor."""
    rt = _cupy().cuda.runtime
    return (rt.deviceGetAttribute(rt.cudaDevAttrMultiProcessorCount, device_id)
            * rt.deviceGetAttribute(rt.cudaDevAttrMaxThreadsPerMultiProcessor, device_id))


class _CupyOps(GeometryOps):
    """Kernels bound to a dense cost or a point cloud on one device."""

    def __init__(self, backend: CupyBackend, geom: DenseCost | PointCloud):
        cp = _cupy()
        self.backend, self.geom = backend, geom
        self.device = geom.arrays[0].device
        if any(a.device != self.device for a in geom.arrays):
            raise ValueError("the arrays of the cost must live on one GPU; got "
                             f"{[a.device for a in geom.arrays]}")
        with self.device:
            if isinstance(geom, DenseCost):
                self.kind, self.p, self.scale = DENSE, 0.0, 1.0
                self.X = cp.ascontiguousarray(geom.C)
                self.Y = self.XT = self.YT = self.X  # never read for a dense cost
            else:
                self.kind, self.p, self.scale = geom.cost_code, geom.p, geom.scale
                self.X = cp.ascontiguousarray(geom.x)
                self.Y = cp.ascontiguousarray(geom.y)
                self.XT = cp.ascontiguousarray(geom.x.T)
                self.YT = cp.ascontiguousarray(geom.y.T)
        self.dtype = np.dtype(self.X.dtype)
        self.capacity = _capacity(self.device.id)
        self._groups: dict[int, Any] = {}

    def _real(self, value: float) -> Any:
        """A kernel argument of the geometry's floating type."""
        return self.dtype.type(value)

    def _launch(self, name: str, cfg: _launch.Launch, args: tuple) -> None:
        _kernel(name, self.dtype.name)(cfg.grid, cfg.block, args)

    def _reduce(self, name: str, cfg: _launch.Launch, args: tuple, length: int,
                eps: Any) -> Any:
        """Run a softmin kernel (and the merge of its chunks when it is split)."""
        cp = _cupy()
        out = cp.empty(length, dtype=self.dtype)
        if cfg.parts == 1:
            self._launch(name, cfg, (*args, out, out, out))
            return out
        part_m = cp.empty(cfg.parts * length, dtype=self.dtype)
        part_s = cp.empty(cfg.parts * length, dtype=self.dtype)
        self._launch(name, cfg, (*args, out, part_m, part_s))
        self._launch("otc_lse_merge", _launch.merge(length),
                     (part_m, part_s, np.int64(length), np.int32(cfg.parts), eps, out))
        return out

    def softmin(self, h: Any, eps: float, axis: int) -> Any:
        """Soft-minimum of ``h - C`` along ``axis`` (one fused pass with an online
        log-sum-exp)."""
        cp = _cupy()
        s = self.scale
        n, m = self.geom.shape
        with self.device:
            h = cp.ascontiguousarray(h * s if s != 1.0 else h, dtype=self.dtype)
            e = self._real(eps * s)
            if self.kind == DENSE:
                rows = axis == 1
                cfg = (_launch.softmin_dense_rows if rows else _launch.softmin_dense_cols)(
                    n, m, self.capacity)
                name = "otc_softmin_dense_rows" if rows else "otc_softmin_dense_cols"
                args = (self.X, h, e, np.int64(n), np.int64(m), np.int64(cfg.chunk))
                out = self._reduce(name, cfg, args, n if rows else m, e)
            else:  # every supported ground cost is symmetric: swap the roles of x and y
                src, srcT, tgt = (self.X, self.XT, self.Y) if axis == 1 else (
                    self.Y, self.YT, self.X)
                ns, nt, d = src.shape[0], tgt.shape[0], src.shape[1]
                cfg = _launch.softmin_cloud(ns, nt, d, self.capacity)
                sizes = (np.int64(ns), np.int64(nt), np.int64(cfg.chunk))
                kind, p = np.int32(self.kind), self._real(self.p)
                if d in _launch.FIXED_DIMS:
                    name, args = f"otc_softmin_cloud_d{d}", (src, tgt, h, kind, p, e, *sizes)
                else:
                    name = "otc_softmin_cloud_any"
                    args = (srcT, tgt, h, np.int32(d), kind, p, e, *sizes)
                out = self._reduce(name, cfg, args, ns, e)
            return out / s if s != 1.0 else out

    def _plan_args(self, hf: Any, hg: Any, eps: float) -> tuple:
        """The arguments shared by the plan kernels, up to the sizes."""
        cp = _cupy()
        s = self.scale
        d = 0 if self.kind == DENSE else self.X.shape[1]
        return (self.X, self.YT, np.int32(d), np.int32(self.kind), self._real(self.p),
                cp.ascontiguousarray(hf * s, dtype=self.dtype),
                cp.ascontiguousarray(hg * s, dtype=self.dtype), self._real(eps * s))

    def plan_stats(self, hf: Any, hg: Any, eps: float) -> PlanStats:
        cp = _cupy()
        n, m = self.geom.shape
        with self.device:
            cfg = _launch.plan_stats(n, m, self.capacity)
            rows = cp.zeros(n, dtype=np.float64)
            cols = cp.zeros(m, dtype=np.float64)
            cost = cp.zeros(1, dtype=np.float64)
            self._launch("otc_plan_stats", cfg, (*self._plan_args(hf, hg, eps), np.int64(n),
                                                 np.int64(m), np.int64(cfg.chunk), rows,
                                                 cols, cost))
            return PlanStats(rows.astype(self.dtype, copy=False),
                             cols.astype(self.dtype, copy=False),
                             self.backend.to_float(cost[0]) / self.scale)

    def plan(self, hf: Any, hg: Any, eps: float) -> Any:
        cp = _cupy()
        n, m = self.geom.shape
        with self.device:
            P = cp.empty((n, m), dtype=self.dtype)
            self._launch("otc_plan", _launch.plan(n, m),
                         (*self._plan_args(hf, hg, eps), np.int64(n), np.int64(m), P))
            return P

    def cost_grad(self, hf: Any, hg: Any, eps: float) -> Any:
        """``G_j = sum_i P_ij grad_y c(x_i, y_j)`` in one fused pass (no plan is formed);
        terms are summed in the geometry's dtype over a tile of sources, in double
        beyond."""
        if self.kind == DENSE:
            raise TypeError("cost_grad needs a PointCloud: a dense cost has no points")
        cp = _cupy()
        s = self.scale
        n, m = self.geom.shape
        d = self.X.shape[1]
        with self.device:
            cfg = _launch.cost_grad(n, m, d, self.capacity)
            GT = cp.zeros((d, m), dtype=np.float64)  # coordinate-major: coalesced adds
            hg = cp.ascontiguousarray(hg * s, dtype=self.dtype)
            hf = cp.ascontiguousarray(hf * s, dtype=self.dtype)
            sizes = (self._real(eps * s), np.int64(m), np.int64(n), np.int64(cfg.chunk), GT)
            kind, p = np.int32(self.kind), self._real(self.p)
            if d in _launch.FIXED_DIMS:
                name, args = f"otc_cost_grad_d{d}", (self.Y, self.X, hg, hf, kind, p, *sizes)
            else:
                name = "otc_cost_grad_any"
                args = (self.YT, self.X, hg, hf, np.int32(d), kind, p, *sizes)
            self._launch(name, cfg, args)
            return cp.ascontiguousarray(GT.T / s if s != 1.0 else GT.T, dtype=self.dtype)

    def cost_matrix(self) -> Any:
        """The dense cost, with the arithmetic of the on-the-fly kernels."""
        if self.kind == DENSE:
            return self.X
        cp = _cupy()
        n, m = self.geom.shape
        with self.device:
            C = cp.empty((n, m), dtype=self.dtype)
            self._launch("otc_cost_matrix", _launch.plan(n, m),
                         (self.X, self.YT, np.int32(self.X.shape[1]), np.int32(self.kind),
                          self._real(self.p), np.int64(n), np.int64(m), C))
            return C / self.scale if self.scale != 1.0 else C

    def plan_marginals(self, hf: Any, hg: Any, eps: float, out: Any) -> PlanMarginals:
        cp = _cupy()
        n, m = self.geom.shape
        with self.device:
            if not (isinstance(out, cp.ndarray) and out.shape == (n, m)
                    and out.dtype == self.dtype and out.flags.c_contiguous
                    and out.device == self.device):
                raise ValueError("out must be a C-contiguous device array of the cost's "
                                 "shape and dtype")
            P = out
            cfg = _launch.plan_stats(n, m, self.capacity)
            rows = cp.zeros(n, dtype=np.float64)
            cols = cp.zeros(m, dtype=np.float64)
            self._launch("otc_plan_marginals", cfg,
                         (*self._plan_args(hf, hg, eps), np.int64(n), np.int64(m),
                          np.int64(cfg.chunk), rows, cols, P))
            return PlanMarginals(P, rows.astype(self.dtype, copy=False),
                                 cols.astype(self.dtype, copy=False))

    def sparsify_plan(self, P: Any, rows: Any, cols: Any, nnz: int) -> SparsePlan:
        """As the contract says; returns a :class:`cupyx.scipy.sparse.csr_matrix` (int32
        indices, sorted within rows) on the device of the plan. Three passes over ``P``
        (histogram, counts, fill); the threshold and the number of kept entries are the
        host synchronizations."""
        cp = _cupy()
        n, m = P.shape
        with self.device:
            P = cp.ascontiguousarray(P, dtype=self.dtype)
            isr, isc = _inv_sqrt(cp, rows), _inv_sqrt(cp, cols)
            sizes = (np.int64(n), np.int64(m))
            hist = cp.zeros(_launch.NKEYS, dtype=np.uint64)
            self._launch("otc_sparse_hist", _launch.sparse_hist(n, m, self.capacity),
                         (P, isr, isc, *sizes, hist))
            # the lowest key whose entries, with those of all larger keys, reach nnz (as on
            # the CPU): above[t] counts the entries of keys NKEYS - 1 - t and up
            above = cp.cumsum(hist[:0:-1].astype(np.int64))
            short = int((above < int(nnz)).sum())  # synchronizes
            kth = max(1, _launch.NKEYS - 1 - short)
            theta = float(np.array(kth << _launch.KEY_SHIFT, dtype=np.int64).view(np.float64))
            # a warp per row and column chunk, as the dense row softmin
            cfg = _launch.softmin_dense_rows(n, m, self.capacity)
            args = (P, isr, isc, np.float64(theta), *sizes, np.int64(cfg.chunk))
            counts = cp.empty(n * cfg.parts, dtype=np.int64)
            self._launch("otc_sparse_count", cfg, (*args, counts))
            offsets = cp.zeros(n * cfg.parts + 1, dtype=np.int64)
            offsets[1:] = cp.cumsum(counts)
            total = int(offsets[-1])  # synchronizes
            if total > _MAX_NNZ:
                raise ValueError(
                    f"the sparsified plan has {total} entries, more than the {_MAX_NNZ} "
                    "that a cupyx CSR matrix (int32 indices) can hold; lower the density")
            indices = cp.empty(total, dtype=np.int32)
            data = cp.empty(total, dtype=self.dtype)
            self._launch("otc_sparse_fill", cfg, (*args, offsets, indices, data))
            indptr = offsets[::cfg.parts].astype(np.int32)
            S = _cupyx_sparse().csr_matrix((data, indices, indptr), shape=(n, m))
            return SparsePlan(S, theta)

    def apply(self, hf: Any, hg: Any, eps: float, V: Any, axis: int) -> Any:
        """``P V`` or ``P^T V`` by blocks of rows: each block of the plan is formed in CuPy
        from the plain ``xp`` cost formulas (at most ``_APPLY_ENTRIES`` entries, times
        ``d`` for a point cloud's differences, at a time; never the whole plan) and
        multiplied on the device. A fused kernel is future work; this path is correct and
        runs at the device's matrix-product rate."""
        cp = _cupy()
        n, m = self.geom.shape
        # a point cloud's block of rows has an (rows, m, d) temporary of differences
        d = 1 if self.kind == DENSE else self.X.shape[1]
        block = max(1, _APPLY_ENTRIES // max(1, m * d))
        with self.device:
            V = cp.ascontiguousarray(V, dtype=self.dtype)
            out = (cp.empty((n, V.shape[1]), dtype=self.dtype) if axis == 1
                   else cp.zeros((m, V.shape[1]), dtype=self.dtype))
            for s in range(0, n, block):
                e = min(s + block, n)
                P = cp.exp((hf[s:e, None] + hg[None, :] - self._cost_rows(s, e)) / eps)
                if axis == 1:
                    out[s:e] = P @ V
                else:
                    out += P.T @ V[s:e]
            return out

    def _cost_rows(self, s: int, e: int) -> Any:
        """Rows ``s:e`` of the cost (a view for a dense cost, computed for a cloud)."""
        if self.kind == DENSE:
            return self.X[s:e]
        g = self.geom
        return g.pairwise(self.X[s:e], self.Y)

    def cost_entries(self, i: Any, j: Any) -> Any:
        cp = _cupy()
        with self.device:
            i, j = cp.asarray(i), cp.asarray(j)
            if self.kind == DENSE:
                return self.X[i, j]
            g = self.geom
            c = g.ground.paired(cp, self.X[i], self.Y[j])
            return c / self.scale if self.scale != 1.0 else c

    def topk(self, axis: int, w: Any, gamma: float, k: int, simplex: bool) -> TopKEvaluator:
        """The fused top-k kernels (``otc_topk_groups``, then ``otc_topk_rows``; see the
        module documentation) on the group-major cost, laid out once per ``axis``."""
        cp = _cupy()
        if axis not in self._groups:
            with self.device:
                self._groups[axis] = cp.ascontiguousarray(group_costs(cp, self.geom, axis))
        return _CupyTopK(self._groups[axis], w, gamma, k, simplex)

    def block_sparse(self, layout: BlockLayout) -> GeometryOps:
        """The block-sparse kernels of ``blocksparse.cu`` over the kept pairs of
        ``layout`` (:class:`_CupyBlockOps`)."""
        if self.kind == DENSE:
            raise TypeError("block_sparse needs a PointCloud: a dense cost has no clusters")
        return _CupyBlockOps(self, layout)

    def cost_scale(self) -> float:
        cp = _cupy()
        with self.device:
            if self.kind == DENSE:  # over the finite entries (+inf forbids a pair)
                return self.backend.to_float(
                    cp.where(cp.isfinite(self.X), cp.abs(self.X), 0).max())
            both = cp.concatenate([self.X, self.Y])
            lo, hi = both.min(axis=0), both.max(axis=0)
            return self.backend.to_float(self.geom.pairwise(lo[None], hi[None])[0, 0])


class _CupyBlockOps(GeometryOps):
    """The kernels of ``blocksparse.cu`` over the kept pairs of a
    :class:`~otcore.backends._contract.BlockLayout`, on the device of the geometry.

    The points are copied once onto the device sorted by cluster (rows and transposed
    columns of both clouds, ``O((n + m) d)``), with the runs of kept columns of both
    directions (:func:`~otcore.backends.array_api.block_runs`, built on the host:
    ``O(kept pairs of clusters)``). Potentials are gathered into that order at each call
    and the results scattered back, ``O(n + m)`` against the ``O(kept pairs)`` of a
    kernel. Each softmin is one launch (a warp per row), so an iteration of the
    contract's :class:`~otcore.backends._contract.SinkhornIterator` is two launches and
    no host synchronization; :meth:`plan_stats` is two launches (rows with ``<C, P>``,
    then columns on the transposed runs), without atomics.
    """

    def __init__(self, base: _CupyOps, layout: BlockLayout):
        cp = _cupy()
        self.geom, self.base = base.geom, base
        lay = BlockLayout(*(np.asarray(v, dtype=np.int64) for v in layout))
        self.layout = lay
        runs = block_runs(lay, base.geom.shape)  # checks the layout first
        with base.device:
            self.order = {1: cp.asarray(lay.x_order), 0: cp.asarray(lay.y_order)}
            X, Y = base.X[self.order[1]], base.Y[self.order[0]]
            self.sides = {
                axis: (cp.ascontiguousarray(rows), cp.ascontiguousarray(cols.T),
                       np.int32(base.X.shape[1]), np.int32(base.kind), base._real(base.p),
                       *(cp.asarray(np.ascontiguousarray(v)) for v in runs[axis]))
                for axis, rows, cols in ((1, X, Y), (0, Y, X))
            }

    def _run(self, name: str, axis: int, inputs: tuple, outputs: tuple) -> None:
        """Launch ``name`` with the rows of ``axis`` (sources for 1, targets for 0): its
        arguments are the points and runs of that side, ``inputs``, the sizes, then
        ``outputs``."""
        rows, cols = self.order[axis].shape[0], self.order[1 - axis].shape[0]
        self.base._launch(name, _launch.block_sparse_rows(rows),
                          (*self.sides[axis], *inputs, np.int64(rows), np.int64(cols),
                           *outputs))

    def _sorted(self, v: Any, axis: int) -> Any:
        """A potential-like vector in kernel units (times the scale), in the sorted order
        of the points of ``axis``."""
        s = self.base.scale
        v = v * s if s != 1.0 else v
        return _cupy().ascontiguousarray(v[self.order[axis]], dtype=self.base.dtype)

    def _unsorted(self, v: Any, axis: int) -> Any:
        """Sorted values of the points of ``axis`` back in the original order."""
        out = _cupy().empty_like(v)
        out[self.order[axis]] = v
        return out

    def softmin(self, h: Any, eps: float, axis: int) -> Any:
        """Soft-minimum of ``h - C`` along ``axis`` over the kept pairs: one launch of
        ``otc_block_softmin`` (``+inf`` for a point without kept mass)."""
        cp = _cupy()
        base, s = self.base, self.base.scale
        with base.device:
            out = cp.empty(self.order[axis].shape[0], dtype=base.dtype)
            self._run("otc_block_softmin", axis,
                      (self._sorted(h, 1 - axis), base._real(eps * s)), (out,))
            out = self._unsorted(out, axis)
            return out / s if s != 1.0 else out

    def _sums(self, h1: Any, h2: Any, eps: float, axis: int) -> tuple[Any, Any]:
        """``otc_block_sums`` on the rows of ``axis``: the plan's sums over the other side
        and their ``<C, P>`` shares, double, sorted order (``h1`` on the rows)."""
        cp = _cupy()
        size = self.order[axis].shape[0]
        sums, costs = cp.empty(size, dtype=np.float64), cp.empty(size, dtype=np.float64)
        self._run("otc_block_sums", axis,
                  (self._sorted(h1, axis), self._sorted(h2, 1 - axis),
                   self.base._real(eps * self.base.scale)), (sums, costs))
        return sums, costs

    def plan_stats(self, hf: Any, hg: Any, eps: float) -> PlanStats:
        base = self.base
        with base.device:
            rows, costs = self._sums(hf, hg, eps, 1)
            cols, _ = self._sums(hg, hf, eps, 0)
            return PlanStats(self._unsorted(rows.astype(base.dtype), 1),
                             self._unsorted(cols.astype(base.dtype), 0),
                             base.backend.to_float(costs.sum()) / base.scale)

    def apply(self, hf: Any, hg: Any, eps: float, V: Any, axis: int) -> Any:
        """``P V`` or ``P^T V`` over the kept pairs: one launch of ``otc_block_apply``
        (products and sums in double)."""
        cp = _cupy()
        base = self.base
        h1, h2 = (hf, hg) if axis == 1 else (hg, hf)
        with base.device:
            V = cp.ascontiguousarray(V[self.order[1 - axis]], dtype=base.dtype)
            out = cp.empty((self.order[axis].shape[0], V.shape[1]), dtype=base.dtype)
            self._run("otc_block_apply", axis,
                      (self._sorted(h1, axis), self._sorted(h2, 1 - axis),
                       base._real(eps * base.scale), V, np.int64(V.shape[1])), (out,))
            return self._unsorted(out, axis)

    def plan(self, hf: Any, hg: Any, eps: float) -> Any:
        P = self.base.plan(hf, hg, eps)
        with self.base.device:
            P[~kept_mask(_cupy(), self.geom.shape, self.layout)] = 0.0
        return P

    def cost_scale(self) -> float:
        return self.base.cost_scale()

    def cost_matrix(self) -> Any:
        return self.base.cost_matrix()

    def cost_entries(self, i: Any, j: Any) -> Any:
        return self.base.cost_entries(i, j)


class CupyBackend(Backend):
    """CuPy arrays on a CUDA GPU, with fused CUDA kernels.

    Results live on the device of the inputs, in their dtype. CuPy is imported and the
    kernels are compiled on first use (NVRTC, cached per process, device and dtype, and on
    disk by CuPy). See the module documentation for the kernels.

    Examples
    --------
    >>> import cupy as cp, otcore as oc                      # doctest: +SKIP
    >>> x = cp.random.default_rng(0).normal(size=(1000, 3))  # doctest: +SKIP
    >>> res = oc.sinkhorn(None, None, oc.PointCloud(x, x), eps=0.1)  # doctest: +SKIP
    >>> res.backend, type(res.f).__module__                  # doctest: +SKIP
    ('cupy_gpu', 'cupy')
    """

    name = "cupy_gpu"

    @property
    def xp(self) -> Any:
        """The :mod:`cupy` namespace."""
        return _cupy()

    def bind(self, geom: DenseCost | PointCloud) -> GeometryOps:
        return _CupyOps(self, geom)

    def bind_batch(self, batch: Any) -> Any:
        """Dense batches: one launch of the CUDA batch softmin per half-step for the
        whole batch; point clouds: the reference batch code on the device."""
        return _CupyBatchOps(self.xp, batch)

    def to_float(self, value: Any) -> float:
        """A 0-d device array (or scalar) as a Python float; synchronizes with the device."""
        return float(value.get()) if hasattr(value, "get") else float(value)

    def sparse_linalg(self) -> Any:
        """:mod:`cupyx.scipy.sparse.linalg` (conjugate gradients on the device)."""
        return _cupyx_sparse().linalg

    def to_numpy(self, x: Any) -> np.ndarray:
        """A device array copied to the host (synchronizes)."""
        return _cupy().asnumpy(x)

    def sparse_from_host(self, S: Any) -> Any:
        """A SciPy sparse matrix as a :class:`cupyx.scipy.sparse.csr_matrix` on the current
        device."""
        return _cupyx_sparse().csr_matrix(S.tocsr())


class _CupyTopK(TopKEvaluator):
    """The fused top-k kernels on a group-major device array ``K``.

    Inputs and outputs are CuPy arrays on the device of ``K``; ``idx`` and ``val`` are
    ordered by a stable sort of each row's keys after the kernel. No atomics: results are
    reproducible run to run.
    """

    def __init__(self, K: Any, w: Any, gamma: float, k: int, simplex: bool):
        self.K, self.w, self.gamma, self.k, self.simplex = K, w, gamma, k, simplex

    def __call__(self, alpha: Any, beta: Any, width: int = 0) -> TopK:
        K, w, gamma, k, simplex = self.K, self.w, self.gamma, self.k, self.simplex
        cp = _cupy()
        m, n = K.shape
        width = int(width)
        if width < 0:
            raise ValueError(f"width must be >= 0, got {width}")
        f64, i64 = np.float64, np.int64
        suffix = np.dtype(K.dtype).name
        with K.device:
            K = cp.ascontiguousarray(K)
            alpha, beta, w = (cp.ascontiguousarray(cp.asarray(v, dtype=f64))
                              for v in (alpha, beta, w))
            gval, gsum, theta = (cp.empty(m, dtype=f64) for _ in range(3))
            nnz = cp.empty(m, dtype=i64)
            params = cp.empty((m, 4), dtype=i64)  # each group's support, for the rows
            rows = cp.zeros(n, dtype=f64)
            keys = cp.empty((m, width), dtype=f64)
            idx = cp.empty((m, width), dtype=i64)
            val = cp.empty((m, width), dtype=f64)
            if m > 0 and n > 0:
                cfg = _launch.topk(m)
                _kernel("otc_topk_groups", suffix)(
                    cfg.grid, cfg.block,
                    (K, alpha, beta, w, f64(gamma), i64(m), i64(n), i64(k),
                     np.int32(bool(simplex)), i64(width), gval, gsum, theta, nnz, params, keys,
                     idx, val))
                cfg = _launch.topk_rows(m, n, _capacity(K.device.id))
                part = rows if cfg.parts == 1 else cp.empty(cfg.parts * n, dtype=f64)
                _kernel("otc_topk_rows", suffix)(
                    cfg.grid, cfg.block,
                    (K, alpha, beta, f64(gamma), theta, params, i64(m), i64(n), i64(cfg.chunk),
                     part))
                if cfg.parts > 1:
                    _kernel("otc_topk_merge", suffix)(
                        _launch.merge(n).grid, _launch.merge(n).block,
                        (part, np.int32(cfg.parts), i64(n), rows))
            if width > 0:
                # the kernel lists each group's entries in index order with keys -score:
                # a stable sort gives decreasing scores, ties by increasing index
                order = cp.argsort(keys, axis=1)
                idx = cp.take_along_axis(idx, order, axis=1)
                val = cp.take_along_axis(val, order, axis=1)
        return TopK(gval, gsum, theta, nnz, rows, idx, val)

    def hessian_product(self, out: TopK, shift: float, v: Any) -> Any:
        """The reference's product (:func:`~otcore.backends.array_api.support_hessian`)
        with CuPy arrays and the support tables of :class:`_Supports`, on the device of
        ``K``."""
        cp = _cupy()
        with self.K.device:
            M = _Supports.of(out, self.K.shape[1])
            return support_hessian(cp, M, self.gamma, shift)(cp.asarray(v, dtype=cp.float64))

    def hessian_solve(self, out: TopK, shift: float, rhs: Any, rtol: float,
                      max_iter: int) -> NewtonStep:
        """The reference's conjugate gradients (:func:`~otcore.backends.array_api.pcg`)
        on the device of ``K``, with the support tables of :class:`_Supports`."""
        cp = _cupy()
        with self.K.device:
            M = _Supports.of(out, self.K.shape[1])
            return pcg(cp, support_hessian(cp, M, self.gamma, shift),
                       hessian_diagonal(cp, M, self.gamma, shift),
                       cp.asarray(rhs, dtype=cp.float64), rtol, max_iter)


class _Supports:
    """The ``(m, n)`` indicator of the supports listed in a top-k evaluation, as a padded
    index table of its rows and one of its columns: ``M @ v`` and ``M.T @ u`` are gathers
    and row sums in a fixed order, so Newton steps are bitwise deterministic (the default
    sparse products of cuSPARSE may sum in another order on each run). ``table[r, :]``
    lists the nonzero columns of row ``r`` where ``valid[r, :]``; ``T`` is the other
    table."""

    def __init__(self, table: Any, valid: Any, shape: tuple[int, int]):
        self.table, self.valid, self.shape = table, valid, shape
        self.T: _Supports = self

    def __matmul__(self, v: Any) -> Any:
        return _cupy().sum(_cupy().where(self.valid, v[self.table], 0.0), axis=1)

    @classmethod
    def of(cls, out: TopK, n: int) -> _Supports:
        """The tables of ``out``'s supports (its listing must cover every support)."""
        cp = _cupy()
        m, width = out.idx.shape
        if m and width < int(out.nnz.max()):
            raise ValueError("the evaluation lists fewer entries than the supports hold: "
                             "evaluate with width >= max(nnz)")
        valid = cp.arange(width)[None, :] < out.nnz[:, None]
        rows = cls(cp.where(valid, out.idx, 0), valid, (m, n))
        # entries sorted by (column, group), then each column's groups in one table row
        group = cp.broadcast_to(cp.arange(m, dtype=cp.int64)[:, None], (m, width))[valid]
        col = out.idx[valid].astype(cp.int64)
        order = cp.argsort(col * max(m, 1) + group)
        col, group = col[order], group[order]
        degree = cp.bincount(col, minlength=n)
        pos = cp.arange(col.shape[0]) - (cp.cumsum(degree) - degree)[col]
        table = cp.zeros((n, int(degree.max()) if col.shape[0] else 0), dtype=cp.int64)
        table[col, pos] = group
        cols = cls(table, cp.arange(table.shape[1])[None, :] < degree[:, None], (n, m))
        rows.T, cols.T = cols, rows
        return rows


class _CupyBatchOps(ArrayAPIBatchOps):
    """Batch kernels on the device: the softmin of a whole batch in one launch of
    ``otc_batch_softmin_rows`` (dense costs; a warp per problem and row, the transposed
    costs for the columns) or ``otc_batch_softmin_cloud`` (point clouds, rescaled once by
    ``scale ** (1 / p)``; a thread per problem and point, the clouds swapped for the
    columns); plan statistics and the rest from the reference batch code, on CuPy
    arrays."""

    def __init__(self, xp: Any, batch: Any):
        super().__init__(xp, batch)
        cp = _cupy()
        self.dtype = np.dtype(batch.a.dtype)
        if batch.C is not None:
            self.rows = (cp.ascontiguousarray(batch.C),)
            self.cols = (cp.ascontiguousarray(batch.C.transpose(0, 2, 1)),)
        else:
            s = batch.scale ** (1.0 / batch.ground.p)
            x, y = (batch.x / s, batch.y / s) if batch.scale != 1.0 else (batch.x, batch.y)
            x, y = cp.ascontiguousarray(x), cp.ascontiguousarray(y)
            self.rows, self.cols = (x, y), (y, x)

    def softmin(self, H: Any, eps: float, axis: int, active: Any, out: Any) -> Any:
        cp = _cupy()
        idx = cp.asarray(np.ascontiguousarray(active, dtype=np.int64))
        nact = int(idx.shape[0])
        H = cp.ascontiguousarray(H, dtype=self.dtype)
        real = self.dtype.type
        data = self.rows if axis == 1 else self.cols
        if self.batch.C is not None:
            (src,) = data
            n, m = src.shape[1], src.shape[2]
            stride = 0 if src.shape[0] == 1 else n * m
            args = (src, np.int64(stride), H, idx, np.int64(nact), real(eps), np.int64(n),
                    np.int64(m), out)
            cfg = _launch.batch_softmin_rows(nact * n)
            _kernel("otc_batch_softmin_rows", self.dtype.name)(cfg.grid, cfg.block, args)
            return out
        src, tgt = data
        n, m, d = src.shape[1], tgt.shape[1], src.shape[2]
        g = self.batch.ground
        args = (src, np.int64(0 if src.shape[0] == 1 else n * d), tgt,
                np.int64(0 if tgt.shape[0] == 1 else m * d), H, idx, np.int64(nact),
                np.int32(d), np.int32(g.code), real(g.p), real(eps), np.int64(n),
                np.int64(m), out)
        cfg = _launch.batch_softmin_cloud(nact * n)
        _kernel("otc_batch_softmin_cloud", self.dtype.name)(cfg.grid, cfg.block, args)
        return out
