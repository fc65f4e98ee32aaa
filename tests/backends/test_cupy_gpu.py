"""The CuPy backend on a CUDA device, against the Numba backend.

Skipped as a whole without CuPy or without a CUDA device. The kernel contract of
``kernel_checks.py`` runs here on the real kernels (NVRTC-compiled), plus what only a
device can show: dispatch from CuPy arrays, results on the inputs' device, problems
large enough to fill the device.
"""

from __future__ import annotations

import numpy as np
import pytest

import otcore as oc
from otcore.backends import cupy_gpu, get_backend
from otcore.backends.numba_cpu import NumbaBackend

from .kernel_checks import (
    CARDINALITY_CASES,
    Device,
    KernelContract,
    check_topk,
    tolerance,
    topk_groups,
)

cupy = pytest.importorskip("cupy", reason="CuPy is not installed")
try:
    _DEVICES = cupy.cuda.runtime.getDeviceCount()
except Exception as exc:  # no driver, or no device
    pytest.skip(f"no usable CUDA device: {exc}", allow_module_level=True)
if _DEVICES == 0:
    pytest.skip("no CUDA device", allow_module_level=True)

pytestmark = pytest.mark.gpu


@pytest.fixture
def device() -> Device:
    import cupyx.scipy.sparse

    return Device(cupy, cupy.ndarray, cupyx.scipy.sparse.csr_matrix)


class TestCudaKernels(KernelContract):
    """The kernel contract on the GPU."""

    @pytest.mark.parametrize("case", [
        pytest.param(case, marks=pytest.mark.xfail(reason=(
            "open defect, seen on an H100: float32 semi-dual with k >= n ends at a wrong "
            "point (L1 error 1.7, honestly reported as not converged) where numba_cpu and "
            "the CUDA emulator reach 2.6e-8; not reproduced off the device")))
        if case == CARDINALITY_CASES[3] else case for case in CARDINALITY_CASES])
    def test_cardinality_matches_numba(self, device, case):
        self.check_cardinality(device, case)


def test_cupy_arrays_dispatch_to_the_gpu_backend():
    C = cupy.asarray(np.random.default_rng(0).random((20, 30)))
    assert get_backend(C).name == "cupy_gpu"
    res = oc.sinkhorn(None, None, C, eps=0.1)
    assert res.backend == "cupy_gpu"
    assert isinstance(res.f, cupy.ndarray) and isinstance(res.plan, cupy.ndarray)
    ref = oc.sinkhorn(None, None, cupy.asnumpy(C), eps=0.1)
    np.testing.assert_allclose(cupy.asnumpy(res.f), ref.f, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_results_stay_on_the_inputs_device_and_dtype(dtype):
    dev = _DEVICES - 1  # the last device: not the default one when there are several
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(300, 3)).astype(dtype), rng.normal(size=(200, 3)).astype(dtype)
    with cupy.cuda.Device(dev):  # CuPy's way to work on a device
        res = oc.sinkhorn(None, None, oc.PointCloud(cupy.asarray(x), cupy.asarray(y)), eps=0.5)
    for arr in (res.f, res.g, res.plan):
        assert isinstance(arr, cupy.ndarray)
        assert arr.device.id == dev
        assert arr.dtype == dtype
    ref = oc.sinkhorn(None, None, oc.PointCloud(x, y), eps=0.5)
    tol = tolerance(dtype)
    np.testing.assert_allclose(cupy.asnumpy(res.f), ref.f, rtol=tol, atol=tol * 10)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_device_filling_sizes_match_numba(dtype):
    # big enough for one-part reductions on any current GPU (rows: 32 n threads)
    rng = np.random.default_rng(2)
    n, m = 12_000, 700
    C = rng.random((n, m)).astype(dtype)
    h_rows, h_cols = rng.normal(size=m).astype(dtype), rng.normal(size=n).astype(dtype)
    ops = cupy_gpu.CupyBackend().bind(oc.DenseCost(cupy.asarray(C)))
    ref = NumbaBackend().bind(oc.DenseCost(C))
    tol = tolerance(dtype)
    for axis, h in ((1, h_rows), (0, h_cols)):
        out = ops.softmin(cupy.asarray(h), 0.05, axis)
        np.testing.assert_allclose(cupy.asnumpy(out), ref.softmin(h, 0.05, axis),
                                   rtol=tol, atol=tol * 10)
    x, y = rng.normal(size=(40_000, 3)).astype(dtype), rng.normal(size=(30_000, 3)).astype(dtype)
    ops = cupy_gpu.CupyBackend().bind(oc.PointCloud(cupy.asarray(x), cupy.asarray(y)))
    ref = NumbaBackend().bind(oc.PointCloud(x, y))
    h = rng.normal(size=30_000).astype(dtype)
    np.testing.assert_allclose(cupy.asnumpy(ops.softmin(cupy.asarray(h), 0.1, 1)),
                               ref.softmin(h, 0.1, 1), rtol=tol, atol=tol * 10)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(("d", "cost"), [(3, "euclidean"), (16, ("pnorm", 1.5))], ids=str)
def test_cost_grad_at_device_filling_sizes(dtype, d, cost):
    # 1.2e6 target points fill an H100 (132 x 2048 threads) more than 4 times over: one
    # part, no atomics across blocks; 300 sources (several tiles)
    rng = np.random.default_rng(3)
    n, m = 300, 1_200_000
    x, y = rng.normal(size=(n, d)).astype(dtype), rng.normal(size=(m, d)).astype(dtype)
    geom = oc.PointCloud(x, y, cost)
    ref = NumbaBackend().bind(geom)
    ops = cupy_gpu.CupyBackend().bind(oc.PointCloud(cupy.asarray(x), cupy.asarray(y), cost))
    eps = 0.5 * float(np.median(geom.pairwise(x[:20], y[:20])))
    hf = rng.normal(size=n).astype(dtype)
    hg = (ref.softmin(hf, eps, 0)).astype(dtype)  # unit column sums
    out = cupy.asnumpy(ops.cost_grad(cupy.asarray(hf), cupy.asarray(hg), eps))
    expected = ref.cost_grad(hf, hg, eps)
    tol = tolerance(dtype)
    np.testing.assert_allclose(out, expected, rtol=0, atol=tol * np.abs(expected).max())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_device_filling_sns_kernels_match_numba(dtype):
    # enough entries for a histogram over a device-full of blocks and many CSR rows
    rng = np.random.default_rng(3)
    n, m, eps = 3000, 2500, 0.02
    C = rng.random((n, m)).astype(dtype)
    hf, hg = ((0.1 * rng.normal(size=k)).astype(dtype) for k in (n, m))
    ops = cupy_gpu.CupyBackend().bind(oc.DenseCost(cupy.asarray(C)))
    ref = NumbaBackend().bind(oc.DenseCost(C))
    tol = tolerance(dtype)
    buffer = cupy.empty((n, m), dtype=dtype)
    out = ops.plan_marginals(cupy.asarray(hf), cupy.asarray(hg), eps, buffer)
    assert out.plan is buffer
    P, rows, cols = expected = ref.plan_marginals(hf, hg, eps, np.empty((n, m), dtype=dtype))
    for got, want in zip(out, expected, strict=True):
        np.testing.assert_allclose(cupy.asnumpy(got), want, rtol=tol,
                                   atol=tol * float(np.abs(want).max()))
    x = rng.normal(size=m).astype(dtype)
    for nnz in (4 * (n + m), n * m // 3):
        S, theta = ops.sparsify_plan(cupy.asarray(P), cupy.asarray(rows), cupy.asarray(cols),
                                     nnz)
        R, r_theta = ref.sparsify_plan(P, rows, cols, nnz)
        assert theta == r_theta and S.nnz == R.nnz >= nnz
        for part in ("indptr", "indices", "data"):
            np.testing.assert_array_equal(cupy.asnumpy(getattr(S, part)), getattr(R, part))
        # a valid cupyx matrix: its products are SciPy's
        np.testing.assert_allclose(cupy.asnumpy(S @ cupy.asarray(x)), R @ x, rtol=tol,
                                   atol=tol * float(np.abs(R @ x).max()))


def test_sns_on_a_larger_problem_matches_numba():
    rng = np.random.default_rng(4)
    n, m, eps = 1500, 1200, 2e-3
    C = rng.random((n, m))
    res = oc.sinkhorn_newton_sparse(None, None, cupy.asarray(C), eps, tol=1e-10)
    ref = oc.sinkhorn_newton_sparse(None, None, C, eps, tol=1e-10)
    assert res.backend == "cupy_gpu" and res.converged and ref.converged
    assert isinstance(res.f, cupy.ndarray) and res.marginal_error < 1e-10
    np.testing.assert_allclose(cupy.asnumpy(res.plan), ref.plan, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("simplex", [True, False])
@pytest.mark.parametrize(("k", "width"), [(5, 5), (400, 20), (5000, 5000)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_topk_device_filling_sizes_match_numba(simplex, k, width, dtype):
    # thousands of groups (blocks) of thousands of entries: descents of several passes,
    # row sums split over many chunks, and sorted listings of up to n entries
    rng = np.random.default_rng(3)
    m, n = 3000, 5000
    K = rng.random((m, n)).astype(dtype)
    alpha, w = 0.3 * rng.normal(size=n), rng.random(m)
    beta = np.zeros(m) if simplex else 0.3 * rng.normal(size=m)
    ref = topk_groups(NumbaBackend(), K, alpha, beta, w, 0.05, k, simplex, width)
    out = topk_groups(cupy_gpu.CupyBackend(), *(cupy.asarray(v) for v in (K, alpha, beta, w)),
                      0.05, k, simplex, width)
    check_topk(Device(cupy, cupy.ndarray, None), out, ref, width)


def test_cardinality_on_cupy_dispatches_and_stays_on_the_device():
    import cupyx.scipy.sparse

    rng = np.random.default_rng(4)
    C = rng.random((60, 40))
    res = oc.cardinality_ot(None, None, cupy.asarray(C), 3, 0.5)
    assert res.backend == "cupy_gpu"
    assert isinstance(res.f, cupy.ndarray) and isinstance(res.g, cupy.ndarray)
    assert isinstance(res.plan, cupyx.scipy.sparse.csr_matrix)
    assert int(cupy.diff(res.plan.tocsc().indptr).max()) <= 3
    ref = oc.cardinality_ot(None, None, C, 3, 0.5)
    assert res.value == pytest.approx(ref.value, abs=2e-5)
