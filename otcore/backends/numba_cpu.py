"""CPU backend: NumPy arrays, Numba kernels (:mod:`otcore.kernels.numba`).

Threads: with Numba's OpenMP threading layer, idle workers spin after each parallel
region by default. A Sinkhorn iteration runs two short parallel regions, and on a machine
shared with other work the spinning threads steal the cores the next region needs (3x
slower per iteration was measured on a loaded 2-core machine). Unless the user has set
it, ``OMP_WAIT_POLICY`` is therefore set to ``PASSIVE`` when this module is imported,
before Numba starts its OpenMP runtime; set the variable yourself to override.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from contextlib import contextmanager
from typing import Any

import numpy as np
from numba import get_num_threads, set_num_threads

from ..geometry import DenseCost, PointCloud
from ..kernels.numba import SERIAL_BELOW
from ..kernels.numba import apply as _apply
from ..kernels.numba import blocksparse as _bs
from ..kernels.numba import cloud as _cloud
from ..kernels.numba import gibbs as _gibbs
from ..kernels.numba import softmin as _k
from ..kernels.numba import sparse as _ks
from ..kernels.numba.cost import DENSE
from ._contract import (
    Backend,
    BlockLayout,
    GeometryOps,
    NewtonStep,
    PlanMarginals,
    PlanStats,
    SinkhornIterator,
    SparsePlan,
    TopK,
    TopKEvaluator,
)
from .array_api import block_runs, group_costs, kept_mask

__all__ = ["NumbaBackend"]

_EMPTY = np.empty((0, 0))
_NO_HINT = np.empty(0)
#: A float64 dense Sinkhorn loop caches its Gibbs kernel (one more array of the cost's
#: size) when the cost takes at most this many bytes (:class:`_NumbaIterator`).
GIBBS_CACHE_BYTES = 1 << 30
#: How far (in units of eps) the potentials may move before the cached kernel is rebuilt.
GIBBS_WINDOW = 30.0


@contextmanager
def _threads(k: int):
    """Run the enclosed kernels on ``k`` Numba threads (the setting is thread-local)."""
    prev = get_num_threads()
    if k == prev:
        yield
        return
    set_num_threads(k)
    try:
        yield
    finally:
        set_num_threads(prev)


class _NumbaOps(GeometryOps):
    """Kernels bound to a dense cost or to a point cloud (x, y and their transposes)."""

    def __init__(self, geom: DenseCost | PointCloud):
        self.geom = geom
        n, m = geom.shape
        self.nthreads = 1 if n * m < SERIAL_BELOW else get_num_threads()
        self._groups: dict[int, np.ndarray] = {}
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

    def _in(self, v: Any) -> np.ndarray:
        """A potential-like vector in kernel units (times scale), contiguous."""
        return np.ascontiguousarray(v * self.scale if self.scale != 1.0 else v)

    def _out(self, v: np.ndarray) -> np.ndarray:
        if self.scale != 1.0:
            v /= self.scale
        return v

    def _swapped(self) -> tuple[np.ndarray, np.ndarray]:
        """``(Y, X^T)``: the kernels' inputs for reductions over the sources (every ground
        cost is symmetric, so the roles of the clouds swap)."""
        return self.Y, self.XT

    def hinted_softmin(self, h: Any, eps: float, axis: int, hint: Any) -> np.ndarray:
        """:meth:`softmin` with an estimate ``hint`` of the output (``None``: none) as the
        log-sum-exp shift, which saves the max pass (:mod:`otcore.kernels.numba.softmin`);
        the result does not depend on it beyond rounding."""
        h, e = self._in(h), eps * self.scale
        out = np.empty(self.geom.shape[0 if axis == 1 else 1], dtype=self.X.dtype)
        hint = _NO_HINT.astype(out.dtype) if hint is None else self._in(hint)
        with _threads(self.nthreads):
            if axis == 1:
                _k.softmin_rows(self.X, self.YT, self.kind, self.p, h, e, hint, out,
                                self.nthreads)
            elif self.kind == DENSE:
                _k.softmin_cols(self.X, h, e, hint, out)
            else:
                _k.softmin_rows(*self._swapped(), self.kind, self.p, h, e, hint, out,
                                self.nthreads)
        return self._out(out)

    def softmin(self, h: Any, eps: float, axis: int) -> np.ndarray:
        return self.hinted_softmin(h, eps, axis, None)

    def fused_sweep(self, hg: Any, la_eps: Any, f: Any, g: Any, eps: float,
                    store: np.ndarray = _EMPTY, tau: tuple[float, float] = (1.0, 1.0),
                    ) -> tuple[np.ndarray, np.ndarray]:
        """One alternating iteration in one pass over the cost: ``f' = tau_a T(hg)`` and
        ``g' = tau_b T(f' + la_eps)``, ``f`` and ``g`` the log-sum-exp shifts (estimates of
        the two softmins, before the factors ``tau``); a dense cost may also ``store`` the
        Gibbs kernel at ``(f', g)`` into an ``(n, m)`` array
        (:mod:`otcore.kernels.numba.gibbs`)."""
        f_out, g_out = np.empty_like(f), np.empty_like(g)
        with _threads(self.nthreads):
            ok = _k.sinkhorn_sweep(
                self.X, self.YT, self.kind, self.p, self._in(hg), self._in(la_eps),
                eps * self.scale, float(tau[0]), float(tau[1]), self._in(f), self._in(g),
                f_out, g_out, store.astype(self.X.dtype, copy=False), self.nthreads,
            )
        f_out = self._out(f_out)
        if not ok:  # some column shift was off (early iterations): redo the columns exactly
            return f_out, tau[1] * self.softmin(f_out + la_eps, eps, axis=0)
        return f_out, self._out(g_out)

    def sinkhorn_iterator(self, log_a: Any, log_b: Any, eps: float, symmetric: bool = False,
                          tau: tuple[float, float] = (1.0, 1.0)) -> SinkhornIterator:
        return _NumbaIterator(self, log_a, log_b, eps, symmetric, tau)

    def plan_stats(self, hf: Any, hg: Any, eps: float) -> PlanStats:
        with _threads(self.nthreads):
            rows, cols, cost = _k.plan_stats(
                self.X, self.YT, self.kind, self.p, self._in(hf), self._in(hg),
                eps * self.scale, self.nthreads,
            )
        return PlanStats(rows, cols, float(cost) / self.scale)

    def apply(self, hf: Any, hg: Any, eps: float, V: Any, axis: int) -> np.ndarray:
        hf, hg, e = self._in(hf), self._in(hg), eps * self.scale
        with _threads(self.nthreads):
            if axis == 1 or self.kind != DENSE:
                src, srcT = (self.X, self.YT) if axis == 1 else self._swapped()
                h1, h2 = (hf, hg) if axis == 1 else (hg, hf)
                out = np.empty((src.shape[0], V.shape[1]), dtype=self.X.dtype)
                _apply.apply_rows(src, srcT, self.kind, self.p, h1, h2, e,
                                  np.ascontiguousarray(V.T), out, self.nthreads)
                return out
            out = np.empty((V.shape[1], self.X.shape[1]), dtype=self.X.dtype)
            _apply.apply_cols_dense(self.X, hf, hg, e, np.ascontiguousarray(V), out,
                                    self.nthreads)
        return np.ascontiguousarray(out.T)

    def plan(self, hf: Any, hg: Any, eps: float) -> np.ndarray:
        return self.plan_marginals(hf, hg, eps,
                                   np.empty(self.geom.shape, dtype=self.X.dtype)).plan

    def cost_scale(self) -> float:
        if self.kind == DENSE:  # over the finite entries (+inf forbids a pair)
            if self.geom.forbidden:
                return float(np.abs(self.X[np.isfinite(self.X)]).max())
            return float(np.abs(self.X).max())
        both = np.concatenate([self.X, self.Y])
        lo, hi = both.min(axis=0), both.max(axis=0)
        return float(self.geom.pairwise(lo[None], hi[None])[0, 0])

    def cost_matrix(self) -> np.ndarray:
        if self.kind == DENSE:
            return self.X
        out = np.empty(self.geom.shape, dtype=self.X.dtype)
        with _threads(self.nthreads):
            _cloud.fill_cost_matrix(self.X, self.YT, self.kind, self.p, out, self.nthreads)
        return self._out(out)

    def cost_entries(self, i: Any, j: Any) -> np.ndarray:
        if self.kind == DENSE:
            return self.X[i, j]
        g = self.geom
        c = g.ground.paired(np, self.X[i], self.Y[j])
        return c / self.scale if self.scale != 1.0 else c

    def plan_marginals(self, hf: Any, hg: Any, eps: float, out: Any) -> PlanMarginals:
        if not (isinstance(out, np.ndarray) and out.shape == self.geom.shape
                and out.dtype == self.X.dtype and out.flags.c_contiguous):
            raise ValueError("out must be a C-contiguous array of the cost's shape and dtype")
        with _threads(self.nthreads):
            rows, cols = _ks.plan_marginals(
                self.X, self.YT, self.kind, self.p, self._in(hf), self._in(hg),
                eps * self.scale, out, self.nthreads,
            )
        return PlanMarginals(out, rows, cols)

    def sparsify_plan(self, P: Any, rows: Any, cols: Any, nnz: int) -> SparsePlan:
        from scipy.sparse import csr_array

        with _threads(self.nthreads):
            indptr, indices, data, theta = _ks.sparsify_plan(P, rows, cols, int(nnz),
                                                             self.nthreads)
        return SparsePlan(csr_array((data, indices, indptr), shape=P.shape), float(theta))

    def topk(self, axis: int, w: Any, gamma: float, k: int, simplex: bool) -> TopKEvaluator:
        if axis not in self._groups:  # the same arithmetic as cost_entries
            self._groups[axis] = np.ascontiguousarray(group_costs(np, self.geom, axis))
        return _NumbaTopK(self._groups[axis], w, gamma, k, simplex)

    def cost_grad(self, hf: Any, hg: Any, eps: float) -> np.ndarray:
        if self.kind == DENSE:
            raise TypeError("cost_grad needs a PointCloud: a dense cost has no points")
        # grad_y c(x_i, y_j) = grad_1 c(y_j, x_i) for the symmetric ground costs.
        out = np.empty_like(self.Y)
        with _threads(self.nthreads):
            _cloud.plan_cost_grad(self.Y, self.XT, self.kind, self.p, self._in(hg),
                                  self._in(hf), eps * self.scale, out, self.nthreads)
        return self._out(out)

    def block_sparse(self, layout: BlockLayout) -> GeometryOps:
        if self.kind == DENSE:
            raise TypeError("block_sparse needs a PointCloud: a dense cost has no clusters")
        return _NumbaBlockOps(self, layout)


class _NumbaBlockOps(GeometryOps):
    """The kernels of :mod:`otcore.kernels.numba.blocksparse` over the kept pairs of a
    :class:`~otcore.backends._contract.BlockLayout`.

    The points are copied once, sorted by cluster (rows and transposed columns of both
    clouds, ``O((n + m) d)``); potentials are permuted into that order at each call and
    the results permuted back, ``O(n + m)`` against the ``O(kept pairs)`` of a kernel.
    """

    def __init__(self, base: _NumbaOps, layout: BlockLayout):
        self.geom, self.base = base.geom, base
        self.kind, self.p, self.nthreads = base.kind, base.p, base.nthreads
        lay = BlockLayout(*(np.asarray(v, dtype=np.int64) for v in layout))
        self.layout = lay
        runs = block_runs(lay, base.geom.shape)  # checks the layout first
        self.px, self.py = lay.x_order, lay.y_order
        X, Y = base.X[self.px], base.Y[self.py]
        self.sides = {
            1: (X, np.ascontiguousarray(Y.T), self.kind, self.p, *runs[1]),
            0: (Y, np.ascontiguousarray(X.T), self.kind, self.p, *runs[0]),
        }

    def _orders(self, axis: int) -> tuple[np.ndarray, np.ndarray]:
        """``(out, in)``: the permutations of the output and of the reduced side."""
        return (self.px, self.py) if axis == 1 else (self.py, self.px)

    def _sorted(self, v: Any, order: np.ndarray) -> np.ndarray:
        return self.base._in(v)[order]

    def _unsorted(self, v: np.ndarray, order: np.ndarray) -> np.ndarray:
        out = np.empty_like(v)
        out[order] = v
        return out

    def hinted_softmin(self, h: Any, eps: float, axis: int, hint: Any) -> np.ndarray:
        """:meth:`softmin` with an estimate ``hint`` of the output as the log-sum-exp
        shift (``None``: none), as :meth:`_NumbaOps.hinted_softmin`."""
        po, pi = self._orders(axis)
        out = np.empty(po.shape[0], dtype=self.base.X.dtype)
        hint = _NO_HINT.astype(out.dtype) if hint is None else self._sorted(hint, po)
        with _threads(self.nthreads):
            _bs.softmin_runs(*self.sides[axis], self._sorted(h, pi), eps * self.base.scale,
                             hint, out, self.nthreads)
        return self.base._out(self._unsorted(out, po))

    def softmin(self, h: Any, eps: float, axis: int) -> np.ndarray:
        return self.hinted_softmin(h, eps, axis, None)

    def fused_sweep(self, hg: Any, la_eps: Any, f: Any, g: Any, eps: float,
                    store: np.ndarray = _EMPTY, tau: tuple[float, float] = (1.0, 1.0),
                    ) -> tuple[np.ndarray, np.ndarray]:
        """One alternating iteration in one pass over the kept pairs, as
        :meth:`_NumbaOps.fused_sweep` (``store`` must be empty: no Gibbs kernel)."""
        if store.size:
            raise ValueError("a block-sparse sweep cannot store a Gibbs kernel")
        px, py = self.px, self.py
        f_out, g_out = np.empty(px.shape[0], dtype=f.dtype), np.empty(py.shape[0], f.dtype)
        with _threads(self.nthreads):
            ok = _bs.sweep_runs(
                *self.sides[1], self._sorted(hg, py), self._sorted(la_eps, px),
                eps * self.base.scale, float(tau[0]), float(tau[1]), self._sorted(f, px),
                self._sorted(g, py), f_out, g_out, self.nthreads,
            )
        f_out = self.base._out(self._unsorted(f_out, px))
        if not ok:
            return f_out, tau[1] * self.softmin(f_out + la_eps, eps, axis=0)
        return f_out, self.base._out(self._unsorted(g_out, py))

    def sinkhorn_iterator(self, log_a: Any, log_b: Any, eps: float, symmetric: bool = False,
                          tau: tuple[float, float] = (1.0, 1.0)) -> SinkhornIterator:
        return _NumbaIterator(self, log_a, log_b, eps, symmetric, tau)

    def plan_stats(self, hf: Any, hg: Any, eps: float) -> PlanStats:
        with _threads(self.nthreads):
            rows, cols, cost = _bs.plan_stats_runs(
                *self.sides[1], self._sorted(hf, self.px), self._sorted(hg, self.py),
                eps * self.base.scale, self.nthreads,
            )
        return PlanStats(self._unsorted(rows, self.px), self._unsorted(cols, self.py),
                         float(cost) / self.base.scale)

    def apply(self, hf: Any, hg: Any, eps: float, V: Any, axis: int) -> np.ndarray:
        po, pi = self._orders(axis)
        h1, h2 = (hf, hg) if axis == 1 else (hg, hf)
        out = np.empty((po.shape[0], V.shape[1]), dtype=self.base.X.dtype)
        with _threads(self.nthreads):
            _bs.apply_runs(*self.sides[axis], self._sorted(h1, po), self._sorted(h2, pi),
                           eps * self.base.scale, np.ascontiguousarray(V[pi].T), out,
                           self.nthreads)
        return self._unsorted(out, po)

    def plan(self, hf: Any, hg: Any, eps: float) -> np.ndarray:
        P = self.base.plan(hf, hg, eps)
        P[~kept_mask(np, self.geom.shape, self.layout)] = 0.0
        return P

    def cost_scale(self) -> float:
        return self.base.cost_scale()

    def cost_matrix(self) -> np.ndarray:
        return self.base.cost_matrix()

    def cost_entries(self, i: Any, j: Any) -> np.ndarray:
        return self.base.cost_entries(i, j)


class _NumbaIterator(SinkhornIterator):
    """Sinkhorn steps with the fused kernels: each step is one pass over the cost, the
    previous potentials serving as log-sum-exp shifts (hints).

    For a float64 dense cost of at most :data:`GIBBS_CACHE_BYTES`, the iterator also
    caches the Gibbs kernel ``K = exp((f + g - C) / eps)`` that a fused sweep stores at
    its output (no extra exponential); the following steps are two matrix-vector products
    with ``K`` (:func:`otcore.kernels.numba.gibbs.scaled_sweep`, balanced or with the
    factors ``tau`` of unbalanced OT) as long as no potential has moved more than
    ``GIBBS_WINDOW * eps`` from the potentials ``K`` was stored at. Then the next
    log-domain sweep stores a fresh kernel. The iterates are those of the log-domain
    iteration up to rounding; the cache costs one ``(n, m)`` array, freed with the
    iterator. float32 stays on the log-domain path: its kernel entries would carry the
    rounding of float32 exponents (~1e-4 at eps = 1e-3) into every later step.
    """

    def __init__(self, ops: _NumbaOps, log_a: Any, log_b: Any, eps: float,
                 symmetric: bool, tau: tuple[float, float]):
        super().__init__(ops, log_a, log_b, eps, symmetric, tau)
        self.cached = (not symmetric and ops.kind == DENSE and ops.X.dtype == np.float64
                       and ops.X.nbytes <= GIBBS_CACHE_BYTES)
        if self.cached:
            self.a = np.exp(log_a)
            self.b = np.exp(log_b)
            self.K = np.empty(ops.geom.shape)
        self.f0 = self.g0 = None  # the potentials K was stored at; None: no valid K

    def _softmin(self, h: Any, axis: int, hint: Any) -> np.ndarray:
        return self.ops.hinted_softmin(h, self.eps, axis, hint)

    def step(self, f: Any, g: Any) -> tuple[np.ndarray, np.ndarray]:
        ops, eps = self.ops, self.eps
        ta, tb = self.tau
        balanced = ta == tb == 1.0
        # the hints estimate the softmins, before the factors tau
        fh, gh = (f, g) if balanced else (f / ta, g / tb)
        if self.symmetric:
            f_new = ops.hinted_softmin(g + self.lb_eps, eps, 1, fh)
            g_new = ops.hinted_softmin(f + self.la_eps, eps, 0, gh)
            return (f_new, g_new) if balanced else (ta * f_new, tb * g_new)
        if not self.cached:
            return ops.fused_sweep(g + self.lb_eps, self.la_eps, fh, gh, eps, tau=self.tau)
        if self.f0 is not None:
            shift = (g - self.g0) / eps
            if np.all(np.abs(shift) <= GIBBS_WINDOW):
                f_out, g_out = np.empty_like(f), np.empty_like(g)
                with _threads(ops.nthreads):
                    ok = _gibbs.scaled_sweep(self.K, self.b * np.exp(shift), self.a_eff,
                                             self.f0, self.g0, eps, ta, tb, GIBBS_WINDOW,
                                             f_out, g_out, ops.nthreads)
                if ok:
                    return f_out, g_out
        f_out, g_out = ops.fused_sweep(g + self.lb_eps, self.la_eps, fh, gh, eps,
                                       store=self.K, tau=self.tau)
        # K is exp((f_out + gh - C) / eps); usable while the columns stay in the window
        fresh = (np.all(np.abs(g_out / tb - gh) <= GIBBS_WINDOW * eps)
                 and np.all(np.isfinite(gh)))
        self.f0, self.g0 = (f_out, gh.copy()) if fresh else (None, None)
        if fresh:  # the column weights' fixed factor a_i exp(-(1 - ta) f0_i / eps)
            self.a_eff = self.a if ta == 1.0 else self.a * np.exp((ta - 1.0) * f_out / eps)
        return f_out, g_out


#: Entries kept per group beyond the ``k + 1`` best in the top-k kernel's candidate lists.
_SPARE = 16


class _NumbaTopK(TopKEvaluator):
    """The top-k kernel of :mod:`otcore.kernels.numba.topk`, keeping per group the last
    call's ``(k + 1)``-th largest score (or semi-dual threshold) as the next call's
    starting guess, and for ``k < n`` a candidate list of the ``k + 1 + _SPARE`` best
    entries: between nearby potentials, as along an L-BFGS-B run, only the few scores
    above the guess, or only the listed ones, are ranked; results are the same as
    without."""

    def __init__(self, K: np.ndarray, w: Any, gamma: float, k: int, simplex: bool):
        self.K, self.gamma, self.k, self.simplex = K, float(gamma), int(k), bool(simplex)
        self.w = np.ascontiguousarray(w, dtype=np.float64)
        m, n = K.shape
        self.hint = np.full(m, np.nan)
        self.lists = None
        if self.k < n:
            size = min(n, self.k + 1 + _SPARE)
            self.lists = (np.zeros((m, size), dtype=np.int64), np.zeros((m, size)),
                          np.full(m, -np.inf), np.full(m, np.inf))
        self.last: np.ndarray | None = None  # the previous call's alpha
        self.cost_max: float | None = None  # max |K|, from the second call on

    def _step(self, alpha: np.ndarray) -> float:
        """``topk_groups``'s ``step`` from the previous call's ``alpha`` (inf for none),
        with the scores' rounding."""
        last, self.last = self.last, alpha.copy()
        if last is None:
            return np.inf
        if self.cost_max is None:
            self.cost_max = float(np.max(np.abs(self.K), initial=0.0))
        moved = float(np.max(np.abs(alpha - last), initial=0.0))
        size = max(float(np.max(np.abs(alpha), initial=0.0)),
                   float(np.max(np.abs(last), initial=0.0)))
        return moved + 2.0**-50 * (size + self.cost_max)

    def __call__(self, alpha: Any, beta: Any, width: int = 0) -> TopK:
        from ..kernels.numba import topk as _topk  # compiled on first use

        m = self.K.shape[0]
        idx = np.empty((m, width), dtype=np.int64)
        val = np.empty((m, width), dtype=np.float64)
        f64 = np.float64
        alpha = np.ascontiguousarray(alpha, dtype=f64)
        out, rows = _topk.topk_groups(
            self.K, alpha, np.ascontiguousarray(beta, dtype=f64), self.w, self.gamma,
            self.k, self.simplex, get_num_threads(), idx, val, self.hint, self.lists,
            self._step(alpha) if self.lists is not None else np.inf,
        )
        return TopK(out[0], out[1], out[2], out[3].astype(np.int64), rows, idx, val)

    def hessian_product(self, out: TopK, shift: float, v: Any) -> np.ndarray:
        from ..kernels.numba import topk_newton

        idx, nnz = _supports(out)
        return topk_newton.support_hvp(idx, nnz, self.gamma, float(shift),
                                       np.ascontiguousarray(v, dtype=np.float64))

    def hessian_solve(self, out: TopK, shift: float, rhs: Any, rtol: float,
                      max_iter: int) -> NewtonStep:
        from ..kernels.numba import topk_newton

        idx, nnz = _supports(out)
        x, it, res = topk_newton.support_pcg(idx, nnz, self.gamma, shift,
                                             np.ascontiguousarray(rhs, dtype=np.float64),
                                             rtol, max_iter)
        return NewtonStep(x, int(it), float(res))


def _supports(out: TopK) -> tuple[np.ndarray, np.ndarray]:
    """The listed supports of a top-k evaluation, checked to be complete."""
    if out.nnz.shape[0] and out.idx.shape[1] < out.nnz.max():
        raise ValueError("the evaluation lists fewer entries than the supports hold: "
                         "evaluate with width >= max(nnz)")
    return np.ascontiguousarray(out.idx), np.ascontiguousarray(out.nnz)


class NumbaBackend(Backend):
    """NumPy arrays on the CPU, with Numba kernels parallel over rows (``prange``).

    The number of threads follows :func:`numba.set_num_threads` / ``NUMBA_NUM_THREADS``.
    """

    name = "numba_cpu"
    xp = np

    def bind(self, geom: DenseCost | PointCloud) -> GeometryOps:
        return _NumbaOps(geom)

    def bind_batch(self, batch: Any) -> Any:
        from .numba_batch import NumbaBatchOps  # that module builds on this one

        return NumbaBatchOps(batch)

    def sparse_linalg(self) -> Any:
        """:mod:`scipy.sparse.linalg`."""
        import scipy.sparse.linalg

        return scipy.sparse.linalg

    def sparse_from_host(self, S: Any) -> Any:
        """``S`` itself: SciPy's sparse matrices are this backend's."""
        return S
