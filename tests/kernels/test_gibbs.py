"""The cached Gibbs kernel of dense float64 Sinkhorn loops (``kernels/numba/gibbs.py`` and
``numba_cpu._NumbaIterator``): its sweeps equal log-domain sweeps computed with SciPy's
``logsumexp``, it refuses to leave its window, and whole solves equal the solves without
the cache (and the array_api reference) while actually using it."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_allclose
from scipy.special import logsumexp

import otcore as oc
from otcore.backends import NumbaBackend, numba_cpu
from otcore.kernels.numba import gibbs

from ..problems import histogram, random_problem


def log_sweep(C, a, b, g, eps):
    """Reference alternating iteration: f' = softmin_rows(g), g' = softmin_cols(f')."""
    with np.errstate(divide="ignore"):
        la, lb = np.log(a), np.log(b)
    f_new = -eps * logsumexp((g + eps * lb)[None, :] / eps - C / eps, axis=1)
    g_new = -eps * logsumexp((f_new + eps * la)[:, None] / eps - C / eps, axis=0)
    return f_new, g_new


@pytest.fixture
def setup():
    rng = np.random.default_rng(5)
    a, b, C, _, _ = random_problem(rng, 70, 45, zeros=3)
    eps = 1e-2
    with np.errstate(divide="ignore"):
        g = -eps * logsumexp(np.log(a)[:, None] - C / eps, axis=0)  # g of a first iteration
    return rng, a, b, C, eps, g


def stored_kernel(C, a, b, f, g, eps):
    """One fused sweep storing its kernel, as the iterator does."""
    ops = NumbaBackend().bind(oc.DenseCost(C))
    K = np.empty(C.shape)
    with np.errstate(divide="ignore"):
        la, lb = eps * np.log(a), eps * np.log(b)
    f_out, g_out = ops.fused_sweep(g + lb, la, f, g, eps, store=K)
    return K, f_out, g_out


def test_stored_kernel_is_the_gibbs_kernel(setup):
    _, a, b, C, eps, g = setup
    K, f_out, g_out = stored_kernel(C, a, b, np.zeros(C.shape[0]), g, eps)
    assert_allclose(K, np.exp((f_out[:, None] + g[None, :] - C) / eps), rtol=1e-13)
    f_ref, g_ref = log_sweep(C, a, b, g, eps)
    assert_allclose(f_out, f_ref, rtol=0, atol=1e-14)
    assert_allclose(g_out, g_ref, rtol=0, atol=1e-14)


@pytest.mark.parametrize("move", [0.0, 3.0, 25.0])
def test_scaled_sweep_equals_log_domain_sweep(setup, move):
    """From potentials moved by up to ``move`` eps since the kernel was stored."""
    rng, a, b, C, eps, g = setup
    K, f0, _ = stored_kernel(C, a, b, np.zeros(C.shape[0]), g, eps)
    g_now = g + eps * rng.uniform(-move, move, size=g.shape)
    f_out, g_out = np.empty_like(f0), np.empty_like(g)
    ok = gibbs.scaled_sweep(K, b * np.exp((g_now - g) / eps), a, f0, g, eps, 1.0, 1.0, 30.0, f_out,
                            g_out, 1)
    assert ok
    f_ref, g_ref = log_sweep(C, a, b, g_now, eps)
    assert_allclose(f_out, f_ref, rtol=0, atol=1e-14)
    assert_allclose(g_out, g_ref, rtol=0, atol=1e-14)


def test_scaled_sweep_refuses_to_leave_the_window(setup):
    _, a, b, C, eps, g = setup
    K, f0, _ = stored_kernel(C, a, b, np.zeros(C.shape[0]), g, eps)
    f_out, g_out = np.empty_like(f0), np.empty_like(g)
    # all columns 40 eps lower: every row sum is ~exp(-40), outside a window of 30
    assert not gibbs.scaled_sweep(K, b * np.exp(-40.0), a, f0, g, eps, 1.0, 1.0, 30.0, f_out,
                                  g_out, 1)


def counting(monkeypatch):
    """Count the calls of the scaled sweep."""
    calls = []
    real = gibbs.scaled_sweep

    def wrapped(*args):
        calls.append(1)
        return real(*args)

    monkeypatch.setattr(gibbs, "scaled_sweep", wrapped)
    return calls


@pytest.mark.parametrize("init", ["none", "far"])
@pytest.mark.parametrize("eps", [5e-2, 1e-3])
def test_solves_with_and_without_the_cache_agree(monkeypatch, init, eps):
    rng = np.random.default_rng(11)
    a, b, C, _, _ = random_problem(rng, 120, 90, zeros=4)
    # "far": a warm start 200 eps off on half of the columns forces kernel rebuilds
    start = None if init == "none" else (None, np.where(np.arange(90) % 2, 200 * eps, 0.0))
    kw = dict(eps=eps, tol=1e-11, max_iter=20_000, init=start)
    calls = counting(monkeypatch)
    cached = oc.sinkhorn(a, b, C, **kw)
    assert len(calls) > cached.n_iter // 2  # most iterations went through the cache
    monkeypatch.setattr(numba_cpu, "GIBBS_CACHE_BYTES", 0)
    calls.clear()
    plain = oc.sinkhorn(a, b, C, **kw)
    assert not calls
    reference = oc.sinkhorn(a, b, C, backend="array_api", **kw)
    assert cached.converged and plain.converged and reference.converged
    assert abs(cached.n_iter - plain.n_iter) <= 10  # one convergence check apart at most
    for res in (plain, reference):
        assert_allclose(cached.f, res.f, rtol=0, atol=1e-11)
        assert_allclose(cached.g, res.g, rtol=0, atol=1e-11)
    assert cached.marginal_error < 1e-11


def test_float32_and_point_clouds_do_not_use_the_cache(monkeypatch):
    rng = np.random.default_rng(2)
    a, b, C, x, y = random_problem(rng, 40, 30)
    calls = counting(monkeypatch)
    oc.sinkhorn(a.astype(np.float32), b.astype(np.float32), C.astype(np.float32), 0.05)
    oc.sinkhorn(a, b, oc.PointCloud(x, y), 0.05)
    assert not calls
    oc.sinkhorn(a, histogram(rng, 30), C, 0.05)
    assert calls
