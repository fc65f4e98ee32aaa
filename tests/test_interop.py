"""PyTorch tensors, JAX arrays and lists go in; the same library comes out.

CPU data reach the Numba kernels through DLPack (``res.backend == "numba_cpu"``) and the
results are compared with the NumPy solve of the same problem. Skipped without PyTorch or
JAX (the ``interop`` extra, installed by the ``test`` extra).
"""

from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

import otcore as oc

from .problems import random_problem


@pytest.fixture(scope="module")
def problem():
    return random_problem(np.random.default_rng(5), 30, 20)


def test_torch_tensors_run_on_numba_and_come_back_as_tensors(problem):
    torch = pytest.importorskip("torch")
    a, b, C, _, _ = problem
    ref = oc.sinkhorn(a, b, C, eps=0.05)
    res = oc.sinkhorn(*(torch.from_numpy(v) for v in (a, b, C)), eps=0.05)
    assert res.backend == "numba_cpu"
    assert isinstance(res.f, torch.Tensor) and res.f.dtype == torch.float64
    assert_array_equal(res.f.numpy(), ref.f)
    assert_array_equal(res.g.numpy(), ref.g)
    assert isinstance(res.plan, torch.Tensor)
    assert_allclose(res.plan.numpy(), ref.plan, rtol=1e-15)
    v = torch.linspace(0, 1, 20, dtype=torch.float64)
    assert isinstance(res.apply(v), torch.Tensor)
    assert_allclose(res.apply(v).numpy(), ref.apply(v.numpy()), rtol=1e-15)
    # a tensor that requires grad is read (detached) without a copy
    Cg = torch.from_numpy(C).requires_grad_(True)
    assert_array_equal(oc.sinkhorn(None, None, Cg, eps=0.05).f.numpy(),
                       oc.sinkhorn(None, None, C, eps=0.05).f)


def test_torch_point_clouds_and_losses(problem):
    torch = pytest.importorskip("torch")
    *_, x, y = problem
    xt, yt = torch.from_numpy(x).float(), torch.from_numpy(y).float()
    res = oc.sinkhorn(None, None, oc.PointCloud(xt, yt), eps=0.5)
    ref = oc.sinkhorn(None, None, oc.PointCloud(x.astype(np.float32), y.astype(np.float32)),
                      eps=0.5)
    assert res.backend == "numba_cpu" and res.f.dtype == torch.float32
    assert_array_equal(res.f.numpy(), ref.f)
    proj = res.barycentric_projection()
    assert isinstance(proj, torch.Tensor) and tuple(proj.shape) == (30, 2)
    assert_allclose(proj.numpy(), ref.barycentric_projection(), rtol=1e-6)
    div = oc.sinkhorn_divergence(xt, yt, eps=0.5, return_grad=True)
    div_ref = oc.sinkhorn_divergence(x.astype(np.float32), y.astype(np.float32), eps=0.5,
                                     return_grad=True)
    assert isinstance(div.grad, torch.Tensor)
    assert div.value == div_ref.value
    assert_array_equal(div.grad.numpy(), div_ref.grad)
    assert isinstance(div.solves["xy"].f, torch.Tensor)


def test_jax_arrays_run_on_numba_and_come_back_as_jax(problem):
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    jnp = jax.numpy
    a, b, C, x, y = problem
    ref = oc.sinkhorn(a, b, C, eps=0.05)
    res = oc.sinkhorn(jnp.asarray(a), jnp.asarray(b), jnp.asarray(C), eps=0.05)
    assert res.backend == "numba_cpu"
    assert isinstance(res.f, jax.Array) and res.f.dtype == jnp.float64
    # JAX's buffers are aligned differently from NumPy's: the vectorized sums may group
    # their terms differently, so the potentials agree to rounding, not bit for bit
    assert_allclose(np.asarray(res.f), ref.f, rtol=1e-13, atol=1e-15)
    assert isinstance(res.plan, jax.Array)
    gap = oc.monge_gap(jnp.asarray(x[:20]), jnp.asarray(y), eps=0.5, return_grad=True)
    gap_ref = oc.monge_gap(x[:20], y, eps=0.5, return_grad=True)
    assert isinstance(gap.grad, jax.Array)
    # the same kernels; only the alignment of the buffers (and so the order of the
    # vectorized sums, and rounding) may differ, and the gap is a difference of larger terms
    assert gap.value == pytest.approx(gap_ref.value, rel=1e-10)
    assert_allclose(np.asarray(gap.grad), gap_ref.grad, rtol=1e-10, atol=1e-14)


def test_lists_and_mixed_libraries(problem):
    torch = pytest.importorskip("torch")
    a, b, C, _, _ = problem
    res = oc.sinkhorn(a.tolist(), b.tolist(), C.tolist(), eps=0.05)
    assert type(res.f) is np.ndarray
    assert_array_equal(res.f, oc.sinkhorn(a, b, C, eps=0.05).f)
    # lists adopt the library of the other arrays
    res_t = oc.sinkhorn(a.tolist(), None, torch.from_numpy(C), eps=0.05)
    assert isinstance(res_t.f, torch.Tensor)
    with pytest.raises(TypeError, match="one array library, got a from numpy; C from torch"):
        oc.sinkhorn(a, None, torch.from_numpy(C), eps=0.05)


def test_a_list_cost_adopts_the_library_of_the_weights():
    torch = pytest.importorskip("torch")
    a = torch.tensor([0.5, 0.5], dtype=torch.float64)
    res = oc.sinkhorn(a, a, [[0, 1], [1, 0]], eps=0.1)
    ref = oc.sinkhorn(None, None, np.array([[0.0, 1.0], [1.0, 0.0]]), eps=0.1)
    assert isinstance(res.f, torch.Tensor)
    assert_array_equal(res.f.numpy(), ref.f)


def test_losses_take_lists_and_check_the_weights_library():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(14)
    x, y = rng.normal(size=(6, 2)), rng.normal(size=(7, 2))
    res = oc.sinkhorn_divergence(x.tolist(), y.tolist(), eps=0.5, return_grad=True)
    ref = oc.sinkhorn_divergence(x, y, eps=0.5, return_grad=True)
    assert res.converged
    assert_array_equal(res.grad, ref.grad)
    with pytest.raises(TypeError, match="a from torch"):
        oc.sinkhorn_divergence(x, x, a=torch.ones(6, dtype=torch.float64), eps=0.5)
    with pytest.raises(TypeError, match="a from torch"):
        oc.monge_gap(x, x, a=torch.ones(6, dtype=torch.float64), eps=0.5)


def test_tensors_on_unsupported_devices_are_refused():
    torch = pytest.importorskip("torch")
    with pytest.raises(TypeError, match=r"^C: torch arrays on a device that otcore cannot"):
        oc.sinkhorn(None, None, torch.empty(3, 2, device="meta", dtype=torch.float64), 0.1)
