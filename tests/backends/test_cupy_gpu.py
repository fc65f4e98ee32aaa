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

from .kernel_checks import Device, KernelContract, check_topk, tolerance

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
    ref = NumbaBackend().topk_groups(K, alpha, beta, w, 0.05, k, simplex, width=width)
    out = cupy_gpu.CupyBackend().topk_groups(
        *(cupy.asarray(v) for v in (K, alpha, beta, w)), 0.05, k, simplex, width=width)
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
