"""The GPU backend on the CPU: otcore's CUDA kernels compiled for the host with the
emulator of ``cuda_emulator.h``, driven by :mod:`otcore.backends.cupy_gpu` through a
stand-in for CuPy (``cuda_emulator.py``), and compared with the Numba backend.

This checks the kernels' logic and indexing, the launch configuration and the argument
lists on machines without a GPU; ``test_cupy_gpu.py`` runs the same checks on a device.
"""

from __future__ import annotations

import numpy as np
import pytest

import otcore as oc
from otcore.backends import cupy_gpu
from otcore.kernels.cuda import launch

from . import cuda_emulator
from .kernel_checks import CARDINALITY_CASES, Device, KernelContract, smooth

pytestmark = pytest.mark.skipif(not cuda_emulator.available(), reason="needs g++")


@pytest.fixture(scope="module")
def emulated_cupy(tmp_path_factory):
    """The CuPy stand-in, on a device of 1000 multiprocessors (so reductions split)."""
    return cuda_emulator.fake_cupy(tmp_path_factory.mktemp("cuda_emu"), multiprocessors=1000)


# the backend's caches of compiled kernels and device sizes (emptied around each test)
_CACHES = (cupy_gpu._module, cupy_gpu._kernel, cupy_gpu._capacity)


@pytest.fixture
def device(emulated_cupy, monkeypatch) -> Device:
    monkeypatch.setattr(cupy_gpu, "_cupy", lambda: emulated_cupy)
    monkeypatch.setattr(cupy_gpu, "_cupyx_sparse", cuda_emulator.fake_cupyx_sparse)
    for cached in _CACHES:
        cached.cache_clear()
    yield Device(emulated_cupy, cuda_emulator.DeviceArray,
                 cuda_emulator.fake_cupyx_sparse().csr_matrix)
    for cached in _CACHES:
        cached.cache_clear()


# An emulated solve launches the top-k kernels hundreds of times, at about 20 ms each: of
# the nonsmooth problems, which take L-BFGS-B the most evaluations, the one with zero
# weights runs by default here, the others with the slow tests (a GPU runs them all).
_EMULATED_CARDINALITY = [
    case if smooth(case) or case[7] else pytest.param(case, marks=pytest.mark.slow)
    for case in CARDINALITY_CASES
]


class TestEmulatedKernels(KernelContract):
    """The kernel contract, with the CUDA kernels running in the emulator."""

    @pytest.mark.parametrize("case", _EMULATED_CARDINALITY)
    def test_cardinality_matches_numba(self, device, case):
        self.check_cardinality(device, case)


def test_split_reductions_are_merged(device):
    # a lopsided problem: 3 rows of 5000 columns cannot fill the device, so the row
    # softmin runs in parts (blockIdx.y) and otc_lse_merge finishes
    rng = np.random.default_rng(0)
    C = rng.random((3, 5000))
    ops = cupy_gpu.CupyBackend().bind(oc.DenseCost(device.asarray(C, np.float64)))
    h = rng.normal(size=5000)
    out = ops.softmin(device.asarray(h, np.float64), 0.1, 1)
    cfg = launch.softmin_dense_rows(3, 5000, ops.capacity)
    assert cfg.parts == 20
    rows = cupy_gpu._kernel("otc_softmin_dense_rows", "float64")
    merge = cupy_gpu._kernel("otc_lse_merge", "float64")
    assert rows.launches == [(cfg.grid, cfg.block)]
    assert merge.launches == [(launch.merge(3).grid, launch.merge(3).block)]
    z = (h[None, :] - C) / 0.1
    top = z.max(axis=1)
    expected = -0.1 * (top + np.log(np.exp(z - top[:, None]).sum(axis=1)))
    device.check(out, expected, np.float64)


def test_emulator_rejects_mistyped_arguments(device):
    # a Python float where the kernel takes a float32 would be passed with the wrong
    # width by a real launch: the stand-in refuses it
    ops = cupy_gpu.CupyBackend().bind(oc.DenseCost(device.asarray(np.ones((2, 3)), np.float32)))
    kernel = cupy_gpu._kernel("otc_softmin_dense_rows", "float32")
    out = device.xp.empty(2, dtype=np.float32)
    h = device.xp.zeros(3, dtype=np.float32)
    with pytest.raises(TypeError, match="eps"):
        kernel((1, 1, 1), (32, 8, 1), (ops.X, h, 0.5, np.int64(2), np.int64(3), np.int64(3),
                                       out, out, out))


def test_emulator_detects_out_of_bounds_writes(device):
    # claiming 4 rows for an output of 2: the kernel writes past the end, into the guard
    ops = cupy_gpu.CupyBackend().bind(oc.DenseCost(device.asarray(np.ones((4, 3)), np.float64)))
    kernel = cupy_gpu._kernel("otc_softmin_dense_rows", "float64")
    out = device.xp.empty(2, dtype=np.float64)
    h = device.xp.zeros(3, dtype=np.float64)
    with pytest.raises(AssertionError, match="out of bounds"):
        kernel((1, 1, 1), (32, 8, 1), (ops.X, h, np.float64(0.5), np.int64(4), np.int64(3),
                                       np.int64(3), out, out, out))


@pytest.mark.parametrize("online", [False, True])
def test_monge_gap_runs_on_the_cuda_kernels(device, online):
    # the gradient (and, in dense mode, the cost matrix) come from the CUDA kernels, not
    # from the Array-API fallback of the contract
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(30, 2)), rng.normal(size=(30, 2))
    res = oc.monge_gap(device.asarray(x, np.float64), device.asarray(y, np.float64),
                       eps=0.5, online=online, return_grad=True, backend=cupy_gpu.CupyBackend())
    assert isinstance(res, oc.LossResult) and res.converged
    assert res.solves["xy"].backend == "cupy_gpu"
    grad = res.grad
    assert isinstance(grad, cuda_emulator.DeviceArray) and grad.shape == (30, 2)
    grad_kernel = cupy_gpu._kernel("otc_cost_grad_d2", "float64")
    matrix_kernel = cupy_gpu._kernel("otc_cost_matrix", "float64")
    cfg = launch.cost_grad(30, 30, 2, 1000 * 2048)
    assert grad_kernel.launches == [(cfg.grid, cfg.block)]
    assert len(matrix_kernel.launches) == (0 if online else 1)


def test_sparsified_plan_beyond_int32_indices_is_refused(device, monkeypatch):
    # cupyx CSR matrices index with int32: a larger kept set is an error, not an overflow
    monkeypatch.setattr(cupy_gpu, "_MAX_NNZ", 10)
    P = np.exp(-np.arange(20.0)).reshape(4, 5)
    ops = cupy_gpu.CupyBackend().bind(oc.DenseCost(device.asarray(np.ones((4, 5)), np.float64)))
    args = (device.asarray(P, np.float64), device.asarray(P.sum(1), np.float64),
            device.asarray(P.sum(0), np.float64))
    S, _ = ops.sparsify_plan(*args, 5)
    assert 5 <= S.nnz <= 10
    with pytest.raises(ValueError, match="int32"):
        ops.sparsify_plan(*args, 20)


@pytest.mark.parametrize("reg_m", [0.2, (np.inf, 0.5)])
@pytest.mark.parametrize("online", [False, True])
def test_unbalanced_sinkhorn_runs_on_the_cuda_kernels(device, reg_m, online):
    # the scaled updates of unbalanced OT reuse the CUDA softmin kernels
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(40, 2)), rng.normal(size=(30, 2)) + 0.5
    a, b = np.full(40, 1 / 40), np.full(30, 1.5 / 30)
    C = ((x[:, None] - y[None]) ** 2).sum(-1)
    cost = (oc.PointCloud(device.asarray(x, np.float64), device.asarray(y, np.float64))
            if online else device.asarray(C, np.float64))
    res = oc.sinkhorn(device.asarray(a, np.float64), device.asarray(b, np.float64), cost, 0.3,
                      reg_m=reg_m, tol=1e-12, backend=cupy_gpu.CupyBackend())
    ref = oc.sinkhorn(a, b, C, 0.3, reg_m=reg_m, tol=1e-12)
    assert res.backend == "cupy_gpu" and res.converged
    device.check(res.f, ref.f, np.float64)
    device.check(res.g, ref.g, np.float64)
    assert res.value == pytest.approx(ref.value, rel=1e-10)
    assert res.mass == pytest.approx(ref.mass, rel=1e-10)


def test_block_sparse_iteration_is_one_launch_per_direction(device):
    # softmin: one launch of otc_block_softmin (no split, no merge); a Sinkhorn iteration:
    # two; plan statistics: two launches of otc_block_sums (rows, then columns)
    from .kernel_checks import BLOCK_LAYOUTS, block_problem

    geom, layout = block_problem(np.random.default_rng(5), 2, "sqeuclidean", 1.0,
                                 BLOCK_LAYOUTS["runs"], np.float64)
    n, m = geom.shape
    dev_geom = oc.PointCloud(device.asarray(geom.x, np.float64),
                             device.asarray(geom.y, np.float64))
    ops = cupy_gpu.CupyBackend().bind(dev_geom).block_sparse(layout)
    f, g = device.xp.zeros(n, dtype=np.float64), device.xp.zeros(m, dtype=np.float64)
    softmin = cupy_gpu._kernel("otc_block_softmin", "float64")
    sums = cupy_gpu._kernel("otc_block_sums", "float64")
    ops.softmin(g, 0.1, 1)
    assert softmin.launches == [(launch.block_sparse_rows(n).grid, (32, 8, 1))]
    ops.sinkhorn_iterator(f - np.log(n), g - np.log(m), 0.1).step(f, g)
    assert softmin.launches[1:] == [(launch.block_sparse_rows(n).grid, (32, 8, 1)),
                                    (launch.block_sparse_rows(m).grid, (32, 8, 1))]
    ops.plan_stats(f, g, 0.1)
    assert len(sums.launches) == 2
    assert cupy_gpu._kernel("otc_softmin_cloud_d2", "float64").launches == []
    assert cupy_gpu._kernel("otc_lse_merge", "float64").launches == []
