"""The GPU backend's kernel contract, checked against the Numba CPU backend.

:class:`KernelContract` holds the tests; a test module subclasses it and provides the
``device`` fixture (a :class:`Device`): real CuPy on a GPU (``test_cupy_gpu.py``) or the
CPU emulator of the CUDA kernels (``test_cuda_emulated.py``). Every kernel is compared
with ``numba_cpu`` on the same data, to 1e-10 in float64 and 1e-5 in float32, for dense
costs and point clouds, both axes, ``-inf`` entries in ``h``, eps from 1e-4 to 1 of the
cost scale, sizes that are not multiples of any tile, and with the reductions both whole
(one part) and split across blocks. The plan products (``apply``: ``P V`` and ``P^T V``
for 1 and 3 columns) and the cost entries of index pairs (``cost_entries``) are checked
on the same data. The point-cloud gradient kernel (``cost_grad``) and
the dense cost (``cost_matrix``) are checked for every ground cost in dimensions 1, 2, 3
(the fixed-dimension kernels), 5 and 40 (the any-dimension kernel, 40 with two staged
coordinate chunks), with coincident points. The plan sparsification must keep exactly
the entries the CPU kernel keeps. The top-k kernel of cardinality OT (the evaluator of
``bind(DenseCost(K.T)).topk(0, ...)``, whose groups are the rows of ``K``), whose scores
are float64 whatever the cost's dtype, is compared to 1e-12 with exact indices and nonzero
counts, on ties, ``k = 1``, ``k >= n``, groups without mass and listed entries. The
solvers built on the kernels (Sinkhorn, SNS, cardinality OT, the Monge gap and the
Sinkhorn divergence) must give the CPU results end to end.

The block-sparse kernels of multiscale Sinkhorn (``block_sparse``: softmin, one Sinkhorn
iteration, plan statistics, ``apply`` and the plan over the kept pairs of clusters) are
compared with Numba's block-sparse kernels on small clustered clouds (BLOCK_CLOUDS) under
several layouts (BLOCK_LAYOUTS: a cluster of one point on each side, duplicated points, a
run longer than a warp's unrolled step, row clusters with several runs), and, when every
pair is kept, with the dense online kernels; ``multiscale_sinkhorn`` must give the CPU
result end to end.
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from scipy import sparse

import otcore as oc
from otcore.backends import cupy_gpu
from otcore.backends._contract import BlockLayout, PlanMarginals, PlanStats, SparsePlan, TopK
from otcore.backends.array_api import hessian_diagonal, pcg, support_hessian, support_indicator
from otcore.backends.numba_cpu import NumbaBackend
from otcore.collection import Batch
from otcore.costs import parse_cost

from ..problems import random_problem

DTYPES = [np.float64, np.float32]
# (n, m): tiny, rows and columns longer than a tile, odd sizes, lopsided (split reductions)
DENSE_SHAPES = [(1, 1), (1, 700), (33, 257), (5, 1200), (700, 5)]
CLOUD_CASES = [  # (n, m, d, cost, scale)
    (1, 1, 1, "sqeuclidean", 1.0),
    (37, 300, 1, "euclidean", 1.0),
    (300, 37, 2, ("pnorm", 1.5), 2.5),
    (61, 700, 3, "sqeuclidean", 1.0),
    (61, 700, 3, "euclidean", 4.0),
    (45, 70, 5, "sqeuclidean", 1.0),
    (40, 90, 40, ("pnorm", 3.0), 1.0),
    (70, 33, 70, "euclidean", 1.0),
]

GRAD_COSTS = ["sqeuclidean", "euclidean", ("pnorm", 1.0), ("pnorm", 1.5), ("pnorm", 3.0)]
# d -> (n, m, scale): more sources than one tile (fixed: 256, any: 32) and a partial last
# tile; more targets than one block of 256 threads (d = 2, 5); a scaled cost (d = 2, 5)
GRAD_SHAPES = {1: (300, 70, 1.0), 2: (45, 300, 2.5), 3: (530, 33, 1.0),
               5: (45, 300, 2.5), 40: (70, 45, 1.0)}


# Block-sparse cases: (d, cost, scale) of the clouds; the clusters' sizes are
# BLOCK_SOURCES and BLOCK_TARGETS (one-point clusters; a 260-point target cluster, longer
# than the 256 columns of a warp's unrolled step).
BLOCK_CLOUDS = [(2, "sqeuclidean", 1.0), (3, ("pnorm", 1.5), 2.5), (5, "euclidean", 1.0)]
BLOCK_SOURCES = [1, 7, 40, 2, 25]
BLOCK_TARGETS = [3, 1, 260, 20, 26]
# Kept pairs of clusters (K = L = 5), each cluster in at least one: every pair (the
# dense kernels' result), runs of several clusters and rows of several runs (source
# cluster 0 keeps the targets {0, 2, 4}: three runs), and a sparse diagonal band.
BLOCK_LAYOUTS = {
    "all": np.ones((5, 5), dtype=bool),
    "runs": np.array([[1, 0, 1, 0, 1], [0, 1, 0, 0, 0], [1, 1, 1, 0, 0],
                      [0, 0, 0, 1, 1], [0, 0, 1, 0, 0]], dtype=bool),
    "band": np.eye(5, dtype=bool) | np.eye(5, k=1, dtype=bool),
}


def block_problem(rng: np.random.Generator, d: int, cost: Any, scale: float, keep: Any,
                  dtype: Any) -> tuple[oc.PointCloud, BlockLayout]:
    """A clustered cloud (every source cluster holds one point repeated, so points are
    duplicated; shuffled, so the clusters are not contiguous) and the layout of the kept
    pairs ``keep`` (``(5, 5)`` booleans)."""
    centres = 3.0 * rng.normal(size=(5, d))
    x = np.repeat(centres + 0.3 * rng.normal(size=(5, d)), BLOCK_SOURCES, axis=0)
    y = np.repeat(centres, BLOCK_TARGETS, axis=0) + 0.5 * rng.normal(size=(sum(BLOCK_TARGETS), d))
    px, py = rng.permutation(x.shape[0]), rng.permutation(y.shape[0])
    x_order, y_order = np.argsort(px), np.argsort(py)  # x[px][x_order] = x
    starts = [np.concatenate([[0], np.cumsum(sizes)]) for sizes in (BLOCK_SOURCES,
                                                                      BLOCK_TARGETS)]
    ptr = np.concatenate([[0], np.cumsum(keep.sum(axis=1))])
    layout = BlockLayout(x_order, starts[0], y_order, starts[1], ptr, np.nonzero(keep)[1])
    geom = oc.PointCloud(x[px].astype(dtype), y[py].astype(dtype), cost, scale=scale)
    return geom, BlockLayout(*(np.asarray(v, dtype=np.int64) for v in layout))


def tolerance(dtype: Any) -> float:
    """Relative (and absolute, per unit of the compared values) tolerance for ``dtype``."""
    return 1e-10 if np.dtype(dtype) == np.float64 else 1e-5


# Top-k cases: (m, n, k, simplex, data, dtype, width); data "random", "ties" (integer
# costs, many exact ties), "spread" (scores over 16 orders of magnitude, both signs) or
# "zeros" (scores 0 and -0 and 1). Widths: the solver's min(k, n), or below the number of
# positive entries (a top-width selection of its own).
TOPK_CASES = [
    (7, 300, 1, True, "random", np.float64, 1),
    (7, 300, 2, True, "ties", np.float64, 2),
    (6, 300, 5, False, "random", np.float32, 5),
    (6, 300, 3, False, "ties", np.float64, 3),
    (5, 700, 40, True, "random", np.float64, 0),
    (5, 700, 699, True, "random", np.float64, 699),  # support of the full projection
    (5, 257, 257, True, "ties", np.float32, 257),    # k = n
    (5, 257, 400, False, "random", np.float64, 10),  # k > n, top 10 of the positive ones
    (4, 256, 256, False, "ties", np.float64, 7),
    (4, 513, 2, True, "spread", np.float64, 2),
    (4, 513, 513, True, "spread", np.float64, 513),
    (4, 513, 9, False, "spread", np.float64, 9),
    (4, 40, 3, True, "zeros", np.float64, 3),
    (4, 40, 40, False, "zeros", np.float64, 40),
    (3, 1, 1, True, "random", np.float64, 1),
    (3, 2, 5, False, "random", np.float32, 2),
    (200, 40, 3, True, "random", np.float64, 3),  # many groups: the row sums split
    (150, 60, 60, False, "ties", np.float32, 4),
]
# cardinality_ot cases: (n, m, k, formulation, constrain, dtype, cloud, zeros, rebuild).
# Smooth problems (k at least the group size, solved to tol 1e-12) must give the same
# solution; on the others L-BFGS-B may stop at different kinks (default tol), so only the
# values are compared.
CARDINALITY_CASES = [
    (20, 15, 20, "semi-dual", "columns", np.float64, False, 0, False),
    (20, 15, 30, "dual", "columns", np.float64, False, 0, False),
    (14, 18, 18, "semi-dual", "rows", np.float64, True, 0, False),
    (24, 16, 24, "semi-dual", "columns", np.float32, False, 0, False),
    (12, 10, 2, "semi-dual", "columns", np.float64, False, 0, False),
    (12, 10, 3, "dual", "columns", np.float64, False, 0, False),
    (14, 12, 2, "semi-dual", "columns", np.float64, False, 3, False),
    (12, 14, 2, "semi-dual", "rows", np.float64, True, 0, False),
    (16, 8, 2, "semi-dual", "columns", np.float32, False, 0, False),
    (14, 14, 1, "semi-dual", "columns", np.float64, False, 0, True),
]


def smooth(case: tuple) -> bool:
    """Whether a CARDINALITY_CASES problem is smooth (k at least the group size)."""
    n, m, k, _, constrain, *_ = case
    return k >= (n if constrain == "columns" else m)


def topk_data(rng: np.random.Generator, m: int, n: int, simplex: bool, data: str,
              dtype: Any) -> tuple:
    """``(K, alpha, beta, w)`` of a top-k case; the first group has no mass."""
    if data == "ties":
        K, alpha = rng.integers(0, 3, size=(m, n)).astype(dtype), np.zeros(n)
    elif data == "spread":
        K = (rng.normal(size=(m, n)) * 10.0 ** rng.integers(-8, 8, size=(m, n))).astype(dtype)
        alpha = rng.normal(size=n) * 10.0 ** rng.integers(-8, 8, size=n)
    elif data == "zeros":
        K = np.zeros((m, n), dtype=dtype)
        alpha = np.where(rng.random(n) < 0.5, -0.0, 0.0)
        alpha[rng.random(n) < 0.3] = 1.0
    else:
        K, alpha = rng.random((m, n)).astype(dtype), 0.3 * rng.normal(size=n)
    beta = np.zeros(m) if simplex else 0.3 * rng.normal(size=m) + (1.0 if data == "ties" else 0)
    w = rng.random(m)
    w[0] = 0.0
    return K, alpha, beta, w


@dataclass
class Device:
    """How a test moves NumPy data to the GPU backend's arrays and back."""

    xp: Any  # cupy, or the emulator's stand-in
    array_type: type
    sparse_type: type  # the CSR matrix type of sparsify_plan

    def asarray(self, a: Any, dtype: Any) -> Any:
        return self.xp.asarray(np.asarray(a, dtype=dtype))

    def to_numpy(self, a: Any) -> np.ndarray:
        return np.asarray(self.xp.asnumpy(a))

    def check(self, out: Any, ref: Any, dtype: Any, unit: float | None = None) -> None:
        """``out`` is a device array of ``dtype`` and ``ref``'s shape, equal to ``ref``
        (relative tolerance, and absolute per ``unit``: by default ``max(1, max |ref|)``)."""
        assert isinstance(out, self.array_type), type(out)
        assert out.dtype == np.dtype(dtype), out.dtype
        assert tuple(out.shape) == np.shape(ref)
        out = self.to_numpy(out)
        ref = np.asarray(ref, dtype=np.float64)
        tol = tolerance(dtype)
        finite = np.isfinite(ref)
        np.testing.assert_array_equal(np.isfinite(out), finite)
        scale = max(1.0, float(np.abs(ref[finite]).max(initial=0.0))) if unit is None else unit
        np.testing.assert_allclose(out[finite], ref[finite], rtol=tol, atol=tol * scale)


def assert_cardinality_agrees(res: Any, ref: Any, smooth: bool) -> None:
    """A ``cardinality_ot`` result with host arrays (NumPy potentials, SciPy plan) against
    the ``numba_cpu`` result ``ref`` of the same problem.

    Smooth problems (``k`` at least the group size): the value to 1e-10 (float64) or 1e-5
    (float32), the potentials and the plan to 1e-7 (float64) or 1e-5. L-BFGS-B stops at
    its ``ftol`` accuracy, and rounding differences of the kernels (the order of their
    sums) move the stopping point as much as they do between two CPU implementations
    (``numba_cpu`` and ``array_api`` differ by up to 3e-10 in ``f`` and 3e-9 in the plan
    at ``gamma = 0.1``, ``tol = 1e-14``; the CUDA kernels in the emulator by 3e-9 and
    2.3e-8), while the values agree to 1e-15. Other problems: the value to 2e-5, as
    L-BFGS-B may stop at another kink of these nonsmooth objectives.
    """
    f64 = ref.f.dtype == np.float64
    if not smooth:
        assert res.value == pytest.approx(ref.value, abs=2e-5)
        return
    tol = 1e-10 if f64 else 1e-5
    assert res.value == pytest.approx(ref.value, rel=tol, abs=tol)
    tol = 1e-7 if f64 else 1e-5
    np.testing.assert_allclose(res.f, ref.f, atol=tol)
    np.testing.assert_allclose(res.g, ref.g, atol=tol)
    np.testing.assert_allclose(res.plan.toarray(), ref.plan.toarray(), atol=tol)


def topk_groups(backend: Any, K: Any, alpha: Any, beta: Any, w: Any, gamma: float, k: int,
                simplex: bool, width: int = 0) -> TopK:
    """The cardinality kernel of ``backend`` on a raw group-major ``K`` of shape ``(m, n)``
    (row ``j`` holds the costs of group ``j``): the :class:`TopK` outputs of the evaluator
    of ``bind(DenseCost(K.T)).topk(0, ...)`` at ``(alpha, beta, width)``."""
    ops = backend.bind(oc.DenseCost(K.T))
    out = ops.topk(0, w, gamma, k, simplex)(alpha, beta, width)
    assert isinstance(out, TopK)
    return out


def check_topk(device: Device, out: tuple, ref: tuple, width: int) -> list:
    """Top-k outputs (:class:`TopK`) of the backend against Numba's: device arrays of the
    right shapes and dtypes, the same nonzero counts and listed indices, values to 1e-12.
    Returns the outputs on the host."""
    names = TopK._fields  # value, mass, theta, nnz, other, idx, val
    got = []
    for name, o, r in zip(names, out, ref, strict=True):
        assert isinstance(o, device.array_type), name
        assert tuple(o.shape) == r.shape, name
        assert o.dtype == (np.int64 if name in ("nnz", "idx") else np.float64), name
        got.append(device.to_numpy(o))
    np.testing.assert_array_equal(got[3], ref[3])
    listed = np.arange(width)[None, :] < ref[3][:, None]  # past nnz: unspecified index
    np.testing.assert_array_equal(got[5][listed], ref[5][listed])
    for name, g, r in zip(names, got, ref, strict=True):
        if name not in ("nnz", "idx"):
            scale = max(1.0, float(np.abs(r).max(initial=0.0)))
            np.testing.assert_allclose(g, r, rtol=1e-12, atol=1e-12 * scale, err_msg=name)
    return got


def _dense(rng: np.random.Generator, n: int, m: int, dtype: Any) -> tuple:
    C = (10.0 * rng.random((n, m))).astype(dtype)
    return C, oc.DenseCost(C), 10.0


def _cloud(rng, n, m, d, cost, scale, dtype) -> tuple:
    x = rng.normal(size=(n, d)).astype(dtype)
    y = (0.5 + rng.normal(size=(m, d))).astype(dtype)
    geom = oc.PointCloud(x, y, cost, scale=scale)
    return (x, y), geom, NumbaBackend().bind(geom).cost_scale()


def _potential(rng: np.random.Generator, size: int, spread: float, dtype: Any) -> np.ndarray:
    """Random potential with a few ``-inf`` entries (zero weights), never all of them."""
    h = (spread * rng.normal(size=size)).astype(dtype)
    if size > 3:
        h[rng.choice(size, size // 4, replace=False)] = -np.inf
    return h


class KernelContract:
    """The tests; subclasses provide the ``device`` fixture."""

    @pytest.fixture
    def rng(self) -> np.random.Generator:
        return np.random.default_rng(20240611)

    @pytest.fixture(params=["one_part", "split"])
    def split(self, request, monkeypatch) -> str:
        """``one_part``: a device so small that no reduction is split; ``split``: the
        device's own size (most reductions of these small problems are split)."""
        if request.param == "one_part":
            monkeypatch.setattr(cupy_gpu, "_capacity", lambda device_id: 1)
        return request.param

    def _ops(self, device: Device, geom: Any, dtype: Any) -> Any:
        if isinstance(geom, oc.DenseCost):
            dev_geom = oc.DenseCost(device.asarray(geom.C, dtype))
        else:
            dev_geom = oc.PointCloud(device.asarray(geom.x, dtype), device.asarray(geom.y, dtype),
                                     geom.cost, scale=geom.scale)
        return cupy_gpu.CupyBackend().bind(dev_geom)

    def _check_all(self, device, geom, scale, dtype, rng) -> None:
        """softmin (both axes, two eps), plan_stats, plan, plan_marginals, apply,
        cost_entries and cost_scale against Numba."""
        ops, ref = self._ops(device, geom, dtype), NumbaBackend().bind(geom)
        n, m = geom.shape
        for eps in (1e-4 * scale, 0.3 * scale):
            for axis, size in ((1, m), (0, n)):
                h = _potential(rng, size, scale, dtype)
                out = ops.softmin(device.asarray(h, dtype), eps, axis)
                device.check(out, ref.softmin(h, eps, axis), dtype)
        # potentials of a plan with entries of order 1/(n m)
        eps = 0.3 * scale
        hf = ref.softmin(np.zeros(m, dtype), eps, 1) - eps * np.log(n * m)
        hf = hf.astype(dtype)
        hg = (ref.softmin(hf, eps, 0) - eps * np.log(m)).astype(dtype)
        rows, cols, cost = stats = ops.plan_stats(device.asarray(hf, dtype),
                                                  device.asarray(hg, dtype), eps)
        assert isinstance(stats, PlanStats)
        r_rows, r_cols, r_cost = ref.plan_stats(hf, hg, eps)
        device.check(rows, r_rows, dtype)
        device.check(cols, r_cols, dtype)
        assert isinstance(cost, float)
        assert cost == pytest.approx(r_cost, rel=tolerance(dtype), abs=1e-300)
        plan = ops.plan(device.asarray(hf, dtype), device.asarray(hg, dtype), eps)
        device.check(plan, ref.plan(hf, hg, eps), dtype)
        out = device.xp.empty((n, m), dtype=dtype)
        P, rows, cols = marginals = ops.plan_marginals(
            device.asarray(hf, dtype), device.asarray(hg, dtype), eps, out=out)
        assert isinstance(marginals, PlanMarginals)
        assert P is out  # the caller's buffer is used
        r_P, r_rows, r_cols = ref.plan_marginals(hf, hg, eps, np.empty((n, m), dtype=dtype))
        device.check(P, r_P, dtype)
        device.check(rows, r_rows, dtype)
        device.check(cols, r_cols, dtype)
        assert ops.cost_scale() == pytest.approx(ref.cost_scale(), rel=tolerance(dtype))
        # P V and P^T V (k = 1 and 3), also with zero weights on both sides
        hf_zero, hg_zero = hf.copy(), hg.copy()
        hf_zero[::3], hg_zero[1::4] = -np.inf, -np.inf
        for f, g in ((hf, hg), (hf_zero, hg_zero)):
            for k in (1, 3):
                for axis, size in ((1, m), (0, n)):
                    V = rng.normal(size=(size, k)).astype(dtype)
                    out = ops.apply(device.asarray(f, dtype), device.asarray(g, dtype), eps,
                                    device.asarray(V, dtype), axis)
                    device.check(out, ref.apply(f, g, eps, V, axis), dtype)
        # entries of the cost at index pairs (repeated ones, the corners included)
        i = np.concatenate([[0, n - 1, 0], rng.integers(0, n, size=20)])
        j = np.concatenate([[0, m - 1, m - 1], rng.integers(0, m, size=20)])
        entries = ops.cost_entries(device.asarray(i, np.int64), device.asarray(j, np.int64))
        device.check(entries, ref.cost_entries(i, j), dtype)
        device.check(entries, ref.cost_matrix()[i, j], dtype)

    @pytest.mark.parametrize("dtype", DTYPES)
    @pytest.mark.parametrize("shape", DENSE_SHAPES)
    def test_dense_kernels_match_numba(self, device, split, shape, dtype, rng):
        _, geom, scale = _dense(rng, *shape, dtype)
        self._check_all(device, geom, scale, dtype, rng)

    @pytest.mark.parametrize("dtype", DTYPES)
    @pytest.mark.parametrize("case", CLOUD_CASES)
    def test_cloud_kernels_match_numba(self, device, split, case, dtype, rng):
        _, geom, scale = _cloud(rng, *case, dtype)
        self._check_all(device, geom, scale, dtype, rng)

    @pytest.mark.parametrize("dtype", DTYPES)
    @pytest.mark.parametrize("cost", GRAD_COSTS, ids=str)
    @pytest.mark.parametrize("d", sorted(GRAD_SHAPES))
    def test_cost_grad_and_cost_matrix_match_numba(self, device, split, d, cost, dtype, rng):
        n, m, scale = GRAD_SHAPES[d]
        (x, y), geom, cscale = _cloud(rng, n, m, d, cost, scale, dtype)
        y[0] = x[0]  # coincident points: the Euclidean (and l1) gradient is 0 there
        y[3] = x[n - 1]
        geom = oc.PointCloud(x, y, cost, scale=scale)
        ops, ref = self._ops(device, geom, dtype), NumbaBackend().bind(geom)
        device.check(ops.cost_matrix(), ref.cost_matrix(), dtype)
        for eps in (0.3 * cscale, 0.02 * cscale):
            # potentials of a plan with unit column sums (so G is of the order of the
            # ground cost's gradient), then a few zero weights on each side
            hf = ref.softmin(np.zeros(m, dtype), eps, 1).astype(dtype)
            hg = ref.softmin(hf, eps, 0).astype(dtype)
            hf[rng.choice(n, n // 5, replace=False)] = -np.inf
            hg[rng.choice(m, m // 5, replace=False)] = -np.inf
            out = ops.cost_grad(device.asarray(hf, dtype), device.asarray(hg, dtype), eps)
            expected = ref.cost_grad(hf, hg, eps)
            assert np.abs(expected).max() > 0.1  # the comparison below is relative to 1
            device.check(out, expected, dtype)

    @pytest.mark.parametrize("dtype", DTYPES)
    def test_cost_grad_rejects_a_dense_cost(self, device, dtype):
        ops = cupy_gpu.CupyBackend().bind(oc.DenseCost(device.asarray(np.ones((2, 3)), dtype)))
        h = device.asarray(np.zeros(2), dtype)
        with pytest.raises(TypeError, match="PointCloud"):
            ops.cost_grad(h, device.asarray(np.zeros(3), dtype), 1.0)

    @pytest.mark.parametrize("dtype", DTYPES)
    def test_plan_marginals_zero_weights_and_overflow(self, device, dtype):
        C = np.random.default_rng(2).random((6, 5)).astype(dtype)
        hf = np.array([-np.inf, 0.0, 0.0, 0.0, 0.0, 800.0], dtype=dtype)
        hg = np.zeros(5, dtype=dtype)
        ops = cupy_gpu.CupyBackend().bind(oc.DenseCost(device.asarray(C, dtype)))
        hf, hg = device.asarray(hf, dtype), device.asarray(hg, dtype)
        for bad in (None, device.xp.empty((5, 6), dtype=dtype),
                    device.xp.empty((6, 5), dtype=np.float64 if dtype == np.float32
                                    else np.float32),
                    device.xp.empty((5, 6), dtype=dtype).T, np.empty((6, 5), dtype=dtype)):
            with pytest.raises(ValueError, match="out"):  # the buffer is required
                ops.plan_marginals(hf, hg, 1.0, bad)
        P, rows, cols = (device.to_numpy(v) for v in ops.plan_marginals(
            hf, hg, 1.0, device.xp.empty((6, 5), dtype=dtype)))
        assert np.all(P[0] == 0) and rows[0] == 0
        assert np.all(np.isinf(P[5])) and np.isinf(rows[5]) and np.all(np.isinf(cols))
        np.testing.assert_allclose(P[1:5], np.exp(-C[1:5].astype(np.float64)),
                                   rtol=tolerance(dtype))

    @pytest.mark.parametrize("dtype", DTYPES)
    @pytest.mark.parametrize("shape", DENSE_SHAPES)
    def test_sparsify_plan_keeps_what_numba_keeps(self, device, split, shape, dtype, rng):
        n, m = shape
        # integer costs: many equal plan entries, so ties at the threshold; zero-mass rows
        # and columns; entries that underflow to 0
        C = rng.integers(0, 40, size=(n, m)).astype(dtype)
        hf = _potential(rng, n, 1.0, dtype)
        hg = _potential(rng, m, 1.0, dtype)
        ref = NumbaBackend().bind(oc.DenseCost(C))
        P, rows, cols = ref.plan_marginals(hf, hg, 0.5, np.empty((n, m), dtype=dtype))
        ops = self._ops(device, oc.DenseCost(C), dtype)
        positive = int(np.count_nonzero(P))
        for nnz in sorted({1, max(1, n * m // 7), positive, n * m + 5}):
            S, theta = kept = ops.sparsify_plan(device.asarray(P, dtype),
                                                device.asarray(rows, dtype),
                                                device.asarray(cols, dtype), nnz)
            assert isinstance(kept, SparsePlan)
            R, r_theta = ref.sparsify_plan(P, rows, cols, nnz)
            assert isinstance(S, device.sparse_type), type(S)
            assert S.shape == (n, m) and S.dtype == np.dtype(dtype)
            assert S.indices.dtype == np.int32 and S.indptr.dtype == np.int32
            assert theta == r_theta
            for part in ("indptr", "indices", "data"):
                np.testing.assert_array_equal(device.to_numpy(getattr(S, part)),
                                              getattr(R, part), err_msg=f"{part}, nnz={nnz}")

    @pytest.mark.parametrize("dtype", DTYPES)
    @pytest.mark.parametrize("cloud", [False, True])
    def test_sns_matches_numba(self, device, dtype, cloud, rng):
        # a rectangular problem with zero weights, Newton steps after a short warm-up
        n, m, eps = 37, 29, 0.01
        x, y = rng.normal(size=(n, 2)), 0.5 + rng.normal(size=(m, 2))
        a, b = rng.uniform(0.5, 1.0, n), rng.uniform(0.5, 1.0, m)
        a[3] = b[5] = 0.0
        a, b = (a / a.sum()).astype(dtype), (b / b.sum()).astype(dtype)
        x, y = x.astype(dtype), y.astype(dtype)
        scale = 20.0
        if cloud:
            cost = oc.PointCloud(x, y, scale=scale)
            dev_cost = oc.PointCloud(device.asarray(x, dtype), device.asarray(y, dtype),
                                     scale=scale)
        else:
            cost = ((x[:, None] - y[None]) ** 2).sum(-1) / scale
            dev_cost = device.asarray(cost, dtype)
        tol = 1e-12 if dtype == np.float64 else 1e-5
        ref = oc.sinkhorn_newton_sparse(a, b, cost, eps, tol=tol)
        res = oc.sinkhorn_newton_sparse(device.asarray(a, dtype), device.asarray(b, dtype),
                                        dev_cost, eps, tol=tol, backend=cupy_gpu.CupyBackend())
        assert res.backend == "cupy_gpu" and res.converged and ref.converged
        assert res.extra["newton_iter"] >= 2 and res.marginal_error < tol
        shift = float(np.mean(device.to_numpy(res.f)[a > 0] - ref.f[a > 0]))
        device.check(res.f - dtype(shift), ref.f, dtype)
        device.check(res.g + dtype(shift), ref.g, dtype)
        device.check(res.plan, ref.plan, dtype)
        assert res.value == pytest.approx(ref.value, rel=tolerance(dtype))

    @pytest.mark.parametrize("dtype", DTYPES)
    def test_softmin_of_one_finite_entry_is_exact(self, device, dtype):
        # with a single finite h_j, -eps log sum_j exp((h_j - C_ij) / eps) = C_ij - h_j
        C = np.arange(12, dtype=dtype).reshape(3, 4)
        ops = cupy_gpu.CupyBackend().bind(oc.DenseCost(device.asarray(C, dtype)))
        h = np.full(4, -np.inf, dtype=dtype)
        h[2] = 0.5
        device.check(ops.softmin(device.asarray(h, dtype), 1e-3, 1), C[:, 2] - 0.5, dtype)

    @pytest.mark.parametrize("dtype", DTYPES)
    @pytest.mark.parametrize("shared", [False, True])
    @pytest.mark.parametrize("kind", ["dense", "sqeuclidean", ("pnorm", 1.5)])
    def test_batch_softmin_matches_numba(self, device, dtype, shared, kind, rng):
        # stacked (or shared) dense costs or clouds; only the active problems are written
        B, n, m, d = 5, 7, 40, 3
        count = 1 if shared else B
        if kind == "dense":
            data = {"C": rng.random((count, n, m)).astype(dtype), "x": None, "y": None,
                    "ground": None, "scale": 1.0}
        else:
            data = {"C": None, "x": rng.normal(size=(count, n, d)).astype(dtype),
                    "y": rng.normal(size=(count, m, d)).astype(dtype),
                    "ground": parse_cost(kind), "scale": 2.5}
        a, b = np.full((B, n), 1 / n, dtype), np.full((B, m), 1 / m, dtype)
        on_device = {k: device.asarray(v, dtype) if isinstance(v, np.ndarray) else v
                     for k, v in data.items()}
        ops = cupy_gpu.CupyBackend().bind_batch(Batch(
            a=device.asarray(a, dtype), b=device.asarray(b, dtype), sizes=None,
            namespaces=None, **on_device))
        ref = NumbaBackend().bind_batch(Batch(a=a, b=b, sizes=None, namespaces=None, **data))
        active = np.array([0, 2, 3])
        for axis, size, other in ((1, m, n), (0, n, m)):
            H = _potential(rng, B * size, 1.0, dtype).reshape(B, size)
            H[1, 3] = -np.inf  # a zero weight
            out = ops.softmin(device.asarray(H, dtype), 0.05, axis, active,
                              device.asarray(np.full((B, other), 7.0), dtype))
            expected = ref.softmin(H, 0.05, axis, active, np.full((B, other), 7.0, dtype))
            device.check(out, expected, dtype)

    @pytest.mark.parametrize("dtype", DTYPES)
    @pytest.mark.parametrize("cloud", [False, True])
    def test_sinkhorn_matches_numba(self, device, dtype, cloud, rng):
        n, m = 40, 55
        x, y = rng.normal(size=(n, 2)), 1.0 + rng.normal(size=(m, 2))
        a, b = rng.uniform(0.5, 1.0, n), rng.uniform(0.5, 1.0, m)
        a[3] = 0.0
        a, b = (a / a.sum()).astype(dtype), (b / b.sum()).astype(dtype)
        x, y = x.astype(dtype), y.astype(dtype)
        if cloud:
            cost = oc.PointCloud(x, y, scale=4.0)
            dev_cost = oc.PointCloud(device.asarray(x, dtype), device.asarray(y, dtype),
                                     scale=4.0)
        else:
            cost = ((x[:, None] - y[None]) ** 2).sum(-1) / 4.0
            dev_cost = device.asarray(cost, dtype)
        ref = oc.sinkhorn(a, b, cost, eps=0.1)
        res = oc.sinkhorn(device.asarray(a, dtype), device.asarray(b, dtype), dev_cost, eps=0.1,
                          backend=cupy_gpu.CupyBackend())
        assert res.backend == "cupy_gpu" and res.converged and ref.converged
        device.check(res.f, ref.f, dtype)
        device.check(res.g, ref.g, dtype)
        tol = tolerance(dtype)
        assert abs(res.n_iter - ref.n_iter) <= 10  # one convergence check apart at most
        assert res.cost == pytest.approx(ref.cost, rel=tol)
        assert res.value == pytest.approx(ref.value, rel=tol)
        device.check(res.plan, ref.plan, dtype)

    @pytest.mark.parametrize("dtype", DTYPES)
    @pytest.mark.parametrize("online", [False, True])
    @pytest.mark.parametrize(("d", "cost"), [(3, "euclidean"), (5, ("pnorm", 1.5))], ids=str)
    def test_monge_gap_and_divergence_match_numba(self, device, dtype, online, d, cost, rng):
        # online: the point-cloud softmin kernels; dense: otc_cost_matrix once, then the
        # dense ones; the gradients come from cost_grad either way. In float32 both run
        # the same 200 iterations (a tolerance below the rounding floor): one convergence
        # check more or less would move the gradients by more than the tolerance.
        x = rng.normal(size=(40, d))
        y = x @ np.linalg.qr(rng.normal(size=(d, d)))[0] + 0.3 * rng.normal(size=(40, d))
        y[2] = x[2]  # a fixed point: the Euclidean gradient is not defined there
        a = rng.uniform(0.1, 1.0, 40)
        x, y, a = x.astype(dtype), y.astype(dtype), (a / a.sum()).astype(dtype)
        kw = dict(cost=cost, eps=0.3, online=online, return_grad=True)
        if np.dtype(dtype) == np.float64:
            kw["tol"] = 1e-13
        else:
            kw.update(tol=1e-30, max_iter=200)
        gpu = cupy_gpu.CupyBackend()
        for fn in (oc.monge_gap, oc.sinkhorn_divergence):
            with warnings.catch_warnings():  # float32: not converged, by construction
                warnings.simplefilter("ignore", oc.ConvergenceWarning)
                res = fn(device.asarray(x, dtype), device.asarray(y, dtype),
                         a=device.asarray(a, dtype), backend=gpu, **kw)
                ref = fn(x, y, a=a, **kw)
            assert isinstance(res, oc.LossResult) and isinstance(ref, oc.LossResult)
            assert all(r.backend == "cupy_gpu" for r in res.solves.values())
            assert res.solves.keys() == ref.solves.keys()
            if np.dtype(dtype) == np.float64:
                assert res.converged and ref.converged
            value, grad, ref_value, ref_grad = res.value, res.grad, ref.value, ref.grad
            assert isinstance(value, float)
            assert value == pytest.approx(ref_value, rel=tolerance(dtype))
            device.check(grad, ref_grad, dtype, unit=float(np.abs(ref_grad).max()))

    @pytest.mark.parametrize("dtype", DTYPES)
    @pytest.mark.parametrize("layout", sorted(BLOCK_LAYOUTS))
    @pytest.mark.parametrize("cloud", BLOCK_CLOUDS, ids=str)
    def test_block_sparse_kernels_match_numba(self, device, cloud, layout, dtype, rng):
        geom, lay = block_problem(rng, *cloud, BLOCK_LAYOUTS[layout], dtype)
        n, m = geom.shape
        numba = NumbaBackend().bind(geom)
        refs = [numba.block_sparse(lay)]
        if layout == "all":  # every pair kept: the dense online kernels' results too
            refs.append(numba)
        ops = self._ops(device, geom, dtype).block_sparse(lay)
        scale = numba.cost_scale()

        def arr(v: np.ndarray) -> Any:
            return device.asarray(v, dtype)

        for eps in (1e-4 * scale, 0.3 * scale):
            for axis, size in ((1, m), (0, n)):
                h = _potential(rng, size, scale, dtype)
                out = ops.softmin(arr(h), eps, axis)
                for ref in refs:
                    device.check(out, ref.softmin(h, eps, axis), dtype)
        # one Sinkhorn iteration (Numba: the fused sweep), zero weights on both sides
        eps = 0.3 * scale
        with np.errstate(divide="ignore"):
            log_a = np.log(np.where(np.arange(n) % 9 == 4, 0.0, rng.random(n)) / n)
            log_b = np.log(np.where(np.arange(m) % 7 == 2, 0.0, rng.random(m)) / m)
        f, g = (scale * rng.normal(size=k).astype(dtype) for k in (n, m))
        f_new, g_new = ops.sinkhorn_iterator(arr(log_a), arr(log_b), eps).step(arr(f), arr(g))
        for ref in refs:
            r_f, r_g = ref.sinkhorn_iterator(log_a.astype(dtype), log_b.astype(dtype),
                                             eps).step(f, g)
            device.check(f_new, r_f, dtype)
            device.check(g_new, r_g, dtype)
        # plan statistics, the plan and its products, at potentials of a plan with entries
        # of order 1 / (n m), then with zero weights on both sides
        hf = (refs[0].softmin(np.zeros(m, dtype), eps, 1) - eps * np.log(n * m)).astype(dtype)
        hg = (refs[0].softmin(hf, eps, 0) - eps * np.log(m)).astype(dtype)
        hf_zero, hg_zero = hf.copy(), hg.copy()
        hf_zero[::3], hg_zero[1::4] = -np.inf, -np.inf
        for u, v in ((hf, hg), (hf_zero, hg_zero)):
            stats = ops.plan_stats(arr(u), arr(v), eps)
            assert isinstance(stats, PlanStats) and isinstance(stats.cost, float)
            plan = ops.plan(arr(u), arr(v), eps)
            for ref in refs:
                r_rows, r_cols, r_cost = ref.plan_stats(u, v, eps)
                device.check(stats.rows, r_rows, dtype)
                device.check(stats.cols, r_cols, dtype)
                assert stats.cost == pytest.approx(r_cost, rel=tolerance(dtype), abs=1e-300)
                device.check(plan, ref.plan(u, v, eps), dtype)
                for k in (1, 3, 5):  # 5: more output columns than one pass of the kernel
                    for axis, size in ((1, m), (0, n)):
                        V = rng.normal(size=(size, k)).astype(dtype)
                        out = ops.apply(arr(u), arr(v), eps, arr(V), axis)
                        device.check(out, ref.apply(u, v, eps, V, axis), dtype)
        assert ops.cost_scale() == pytest.approx(scale, rel=tolerance(dtype))

    def test_block_sparse_rejects_a_dense_cost(self, device):
        ops = cupy_gpu.CupyBackend().bind(oc.DenseCost(device.asarray(np.ones((2, 3)),
                                                                      np.float64)))
        with pytest.raises(TypeError, match="PointCloud"):
            ops.block_sparse(BlockLayout(*(np.zeros(1, dtype=np.int64),) * 6))

    @pytest.mark.parametrize("bad", ["order", "start", "ptr", "idx"])
    def test_block_sparse_refuses_a_layout_out_of_bounds(self, device, bad, rng):
        # a layout that would index past the points is refused before any launch, as on
        # the CPU
        geom, lay = block_problem(rng, 2, "sqeuclidean", 1.0, BLOCK_LAYOUTS["runs"],
                                  np.float64)
        field = {"order": "y_order", "start": "x_start", "ptr": "pair_ptr",
                 "idx": "pair_idx"}[bad]
        wrong = getattr(lay, field).copy()
        wrong[-1] = wrong.max() + 1  # one past the points, the pairs or the clusters
        lay = lay._replace(**{field: wrong})
        for ops in (self._ops(device, geom, np.float64), NumbaBackend().bind(geom)):
            with pytest.raises(ValueError, match="layout"):
                ops.block_sparse(lay)

    @pytest.mark.parametrize("dtype", DTYPES)
    def test_multiscale_matches_numba(self, device, dtype, rng):
        # the fine level on the block-sparse CUDA kernels (no fallback), a zero weight
        x, y = rng.random((300, 2)), rng.random((340, 2)) ** 2
        a = rng.uniform(0.5, 1, 300)
        a[7] = 0.0
        a, x, y = (a / a.sum()).astype(dtype), x.astype(dtype), y.astype(dtype)
        tol = 1e-8 if dtype == np.float64 else 1e-4
        kw = dict(tol=tol, n_clusters=40)
        eps = 1e-2  # 350 iterations in float64, 63% of the pairs kept
        ref = oc.multiscale_sinkhorn(a, None, oc.PointCloud(x, y), eps, **kw)
        res = oc.multiscale_sinkhorn(
            device.asarray(a, dtype), None,
            oc.PointCloud(device.asarray(x, dtype), device.asarray(y, dtype)), eps,
            backend=cupy_gpu.CupyBackend(), **kw)
        assert res.backend == "cupy_gpu" and res.method == "multiscale_sinkhorn"
        assert "multiscale" not in res.extra  # no fallback
        assert res.converged and ref.converged
        assert res.extra["kept_fraction"] == pytest.approx(ref.extra["kept_fraction"])
        assert res.extra["kept_fraction"] < 0.9  # something was truncated
        # float64: to 1e-8 (the loops stop at the same check); float32 stops at tol 1e-4
        # after a different number of iterations as rounding differs: to 1e-3 of eps
        atol = 1e-8 if dtype == np.float64 else 1e-3 * eps
        device.check(res.f, ref.f, dtype, unit=atol / tolerance(dtype))
        device.check(res.g, ref.g, dtype, unit=atol / tolerance(dtype))
        assert res.value == pytest.approx(ref.value, rel=tolerance(dtype))

    @pytest.mark.parametrize("gamma", [0.05, 2.0])
    @pytest.mark.parametrize("case", TOPK_CASES)
    def test_topk_groups_match_numba(self, device, split, case, gamma, rng):
        m, n, k, simplex, data, dtype, width = case
        K, alpha, beta, w = topk_data(rng, m, n, simplex, data, dtype)
        ref = topk_groups(NumbaBackend(), K, alpha, beta, w, gamma, k, simplex, width)
        args = [device.asarray(v, v.dtype) for v in (K, alpha, beta, w)]
        out = topk_groups(cupy_gpu.CupyBackend(), *args, gamma, k, simplex, width)
        got = check_topk(device, out, ref, width)
        if simplex:  # no mass: nothing selected, theta = the best score
            assert got[3][0] == 0 and got[1][0] == 0.0
            assert got[2][0] == np.max(alpha - K[0].astype(np.float64))

    def test_topk_ties_prefer_the_smaller_index(self, device):
        # 300 entries: the tied best scores straddle two tiles of the index-order scan
        n, k = 300, 3
        K = np.zeros((2, n))
        K[1, [2, 255, 256, 299]] = -1.0
        bk = cupy_gpu.CupyBackend()
        for simplex in (True, False):
            out = topk_groups(bk, *(device.asarray(v, np.float64) for v in
                                    (K, np.zeros(n), np.ones(2), np.ones(2))), 1.0, k, simplex,
                              width=k)
            np.testing.assert_array_equal(device.to_numpy(out[3]), [3, 3])
            np.testing.assert_array_equal(device.to_numpy(out[5]), [[0, 1, 2], [2, 255, 256]])

    @pytest.mark.parametrize("axis", [0, 1])
    def test_topk_of_a_cloud_lays_the_groups_out_once(self, device, axis, rng):
        # the groups of a point cloud (its columns for axis 0, its rows for axis 1) are
        # evaluated into one group-major array when the first evaluator is made, and kept
        n, m, k = 30, 20, 3
        x, y = rng.normal(size=(n, 3)), rng.normal(size=(m, 3))
        geom = oc.PointCloud(x, y, "euclidean", scale=2.0)
        ops, ref = self._ops(device, geom, np.float64), NumbaBackend().bind(geom)
        groups, size = (m, n) if axis == 0 else (n, m)
        w, alpha, beta = rng.random(groups), 0.3 * rng.normal(size=size), np.zeros(groups)
        expected = ref.topk(axis, w, 0.5, k, True)(alpha, beta, k)
        evaluator = ops.topk(axis, device.asarray(w, np.float64), 0.5, k, True)
        layout = ops._groups[axis]
        C = ref.cost_matrix()
        device.check(layout, C.T if axis == 0 else C, np.float64)
        out = evaluator(device.asarray(alpha, np.float64), device.asarray(beta, np.float64), k)
        assert isinstance(out, TopK)
        check_topk(device, out, expected, k)
        ops.topk(axis, device.asarray(w, np.float64), 2.0, 1, False)  # another run
        assert ops._groups[axis] is layout and list(ops._groups) == [axis]

    @pytest.mark.parametrize("case", [TOPK_CASES[i] for i in (1, 2, 6, 13)])
    def test_newton_systems_match_the_reference(self, device, case, rng):
        # the generalised Hessian of cardinality OT on the device's supports: products and
        # conjugate gradients against the reference on the dense indicator of the same
        # supports, and the same bits when run again (no sums in a varying order)
        m, n, k, simplex, data, dtype, width = case
        K, alpha, beta, w = topk_data(rng, m, n, simplex, data, dtype)
        Kd, alpha_d, beta_d, w_d = (device.asarray(v, v.dtype) for v in (K, alpha, beta, w))
        ev = cupy_gpu.CupyBackend().bind(oc.DenseCost(Kd.T)).topk(0, w_d, 0.5, k, simplex)
        out = ev(alpha_d, beta_d, width)
        M = support_indicator(np, TopK(*(device.to_numpy(o) for o in out)), n)
        v, shift = rng.normal(size=n), 1e-3
        ref = support_hessian(np, M, 0.5, shift)(v)
        v_d, ref_d = device.asarray(v, np.float64), device.asarray(ref, np.float64)
        got = [device.to_numpy(ev.hessian_product(out, shift, v_d)) for _ in "ab"]
        np.testing.assert_allclose(got[0], ref, rtol=1e-12, atol=1e-12 * np.abs(ref).max())
        np.testing.assert_array_equal(got[0], got[1])
        expected = pcg(np, support_hessian(np, M, 0.5, shift),
                       hessian_diagonal(np, M, 0.5, shift), ref, 1e-10, 500)
        steps = [ev.hessian_solve(out, shift, ref_d, 1e-10, 500) for _ in "ab"]
        xs = [device.to_numpy(step.x) for step in steps]
        np.testing.assert_allclose(xs[0], expected.x, rtol=1e-8, atol=1e-8 * np.abs(v).max())
        np.testing.assert_allclose(xs[0], v, rtol=1e-6, atol=1e-6 * np.abs(v).max())
        np.testing.assert_array_equal(xs[0], xs[1])
        assert steps[0].iterations == steps[1].iterations

    @pytest.mark.parametrize("case", CARDINALITY_CASES)
    def test_cardinality_matches_numba(self, device, case):
        self.check_cardinality(device, case)

    def check_cardinality(self, device, case) -> None:
        """``cardinality_ot`` on the backend against ``numba_cpu`` (see CARDINALITY_CASES)."""
        n, m, k, formulation, constrain, dtype, cloud, zeros, rebuild = case
        a, b, C, x, y = random_problem(np.random.default_rng(n + k), n, m, zeros=zeros)
        a, b = a.astype(dtype), b.astype(dtype)
        if cloud:  # the squared-Euclidean cost scaled to max 1, like C
            x, y = x.astype(dtype), y.astype(dtype)
            scale = float(np.max(((x[:, None] - y[None]) ** 2).sum(-1)))
            cost = oc.PointCloud(x, y, scale=scale)
            dev_cost = oc.PointCloud(device.asarray(x, dtype), device.asarray(y, dtype),
                                     scale=scale)
            C = cost.cost_matrix()
        else:
            C = C.astype(dtype)
            cost, dev_cost = C, device.asarray(C, dtype)
        kwargs = {"formulation": formulation, "constrain": constrain, "rebuild_plan": rebuild,
                  "tol": 1e-12 if smooth(case) else 1e-9}
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", oc.ConvergenceWarning)
            ref = oc.cardinality_ot(a, b, cost, k, 0.5, **kwargs)
            res = oc.cardinality_ot(device.asarray(a, dtype), device.asarray(b, dtype),
                                    dev_cost, k, 0.5, backend=cupy_gpu.CupyBackend(),
                                    **kwargs)
        # one warning for each solve that did not converge, none otherwise
        assert [issubclass(w.category, oc.ConvergenceWarning) for w in caught] == [
            True] * ((not ref.converged) + (not res.converged))
        assert res.backend == "cupy_gpu"
        assert isinstance(res.plan, device.sparse_type), type(res.plan)
        for arr in (res.f, res.g):
            assert isinstance(arr, device.array_type) and arr.dtype == dtype
        plan = device.to_numpy(res.plan.toarray())
        assert plan.dtype == dtype and plan.shape == (n, m)
        exact = float(np.sum(plan.astype(np.float64) * C.astype(np.float64)))
        assert res.cost == pytest.approx(exact, rel=1e-10)
        host = dataclasses.replace(res, f=device.to_numpy(res.f), g=device.to_numpy(res.g),
                                   _plan=sparse.csr_matrix(plan))
        assert_cardinality_agrees(host, ref, smooth(case))
        if rebuild:  # both plans are exact OT plans, of the same cost
            sparse_plan = device.to_numpy(res.extra["sparse_plan"].toarray())
            assert np.count_nonzero(sparse_plan, axis=0).max() <= 1
            assert res.marginal_error < 1e-9
            assert res.cost == pytest.approx(ref.cost, rel=1e-9)
            return
        groups = plan if constrain == "columns" else plan.T
        assert np.count_nonzero(groups, axis=0).max() <= k
        if formulation == "semi-dual":  # the constrained side's marginal is exact
            side = res.extra["col_error"] if constrain == "columns" else res.extra["row_error"]
            assert side < (1e-12 if dtype == np.float64 else 1e-6)
