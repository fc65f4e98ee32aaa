"""The generalised Hessian of the cardinality semi-dual (``TopKEvaluator.hessian_product``
and ``hessian_solve``) against finite differences of the kernel's marginal, a dense
NumPy Hessian, and between the Numba kernel and the array_api reference."""

import array_api_strict as xps
import numpy as np
import pytest

from otcore.backends import ArrayAPIBackend, NumbaBackend
from otcore.geometry import DenseCost

NUMBA = NumbaBackend()
REFERENCE = ArrayAPIBackend(xps)


def evaluator(backend, K, w, gamma, k):
    """The semi-dual top-k evaluator of ``backend`` over the rows (groups) of ``K``."""
    xp = backend.xp
    return backend.bind(DenseCost(xp.asarray(K.T))).topk(0, xp.asarray(w), gamma, k, True)


def problem(m, n, seed):
    rng = np.random.default_rng(seed)
    K = rng.uniform(size=(m, n))
    w = rng.uniform(0.5, 1.5, size=m)
    alpha = rng.normal(scale=0.05, size=n)
    return K, w, alpha


def evaluate(backend, ev, alpha, width):
    """The evaluation at NumPy ``alpha`` on ``backend`` (device outputs) and its marginal
    ``sum_j t_j`` on the host."""
    out = ev(backend.xp.asarray(alpha), backend.xp.zeros(ev.K.shape[0], dtype=backend.xp.float64),
             width)
    return out, np.from_dlpack(out.other) if backend is REFERENCE else out.other


def dense_hessian(idx, nnz, n, gamma):
    """``(1 / gamma) sum_j (diag(1_S) - 1_S 1_S^T / |S|)`` formed densely."""
    H = np.zeros((n, n))
    for j, c in enumerate(nnz):
        if c:
            s = np.zeros(n)
            s[idx[j, :c]] = 1.0
            H += np.diag(s) - np.outer(s, s) / c
    return H / gamma


@pytest.mark.parametrize("backend", [NUMBA, REFERENCE], ids=["numba_cpu", "array_api"])
@pytest.mark.parametrize(("k", "gamma"), [(3, 0.05), (40, 0.2), (40, 0.02)])
def test_hessian_product_equals_finite_differences(backend, k, gamma):
    m, n = 30, 40
    K, w, alpha = problem(m, n, seed=k)
    ev = evaluator(backend, K, w, gamma, k)
    width = min(k, n)
    out, _ = evaluate(backend, ev, alpha, width)
    idx, nnz = (np.from_dlpack(v) if backend is REFERENCE else v for v in (out.idx, out.nnz))
    assert nnz.max() > 1
    rng = np.random.default_rng(1)
    h = 1e-7  # small enough that no support changes (checked)
    for _ in range(3):
        v = rng.normal(size=n)
        plus, other_p = evaluate(backend, ev, alpha + h * v, width)
        minus, other_m = evaluate(backend, ev, alpha - h * v, width)
        for o in (plus, minus):
            np.testing.assert_array_equal(np.asarray(o.nnz), nnz)
        fd = (other_p - other_m) / (2 * h)
        Hv = ev.hessian_product(out, 0.0, backend.xp.asarray(v))
        Hv = np.from_dlpack(Hv) if backend is REFERENCE else Hv
        np.testing.assert_allclose(Hv, fd, rtol=1e-6, atol=1e-6 * np.abs(fd).max())
        np.testing.assert_allclose(Hv, dense_hessian(idx, nnz, n, gamma) @ v, rtol=1e-12,
                                   atol=1e-12 * np.abs(Hv).max())
        # the constant vector is in the null space; a shift adds shift * v
        ones = backend.xp.ones(n, dtype=backend.xp.float64)
        assert np.abs(np.asarray(ev.hessian_product(out, 0.0, ones))).max() < 1e-12 / gamma
        shifted = ev.hessian_product(out, 0.25, backend.xp.asarray(v))
        shifted = np.from_dlpack(shifted) if backend is REFERENCE else shifted
        np.testing.assert_allclose(shifted, Hv + 0.25 * v, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("shift", [1e-3, 1.0])
def test_hessian_solve_numba_matches_reference_and_dense_solve(shift):
    m, n, gamma, k = 25, 35, 0.05, 6
    K, w, alpha = problem(m, n, seed=3)
    rhs = np.random.default_rng(4).normal(size=n)
    steps = []
    for backend in (NUMBA, REFERENCE):
        ev = evaluator(backend, K, w, gamma, k)
        out, _ = evaluate(backend, ev, alpha, k)
        step = ev.hessian_solve(out, shift, backend.xp.asarray(rhs), 1e-12, 500)
        steps.append(np.from_dlpack(step.x) if backend is REFERENCE else step.x)
        assert 0 < step.iterations <= 500 and step.residual <= 1e-12 * np.linalg.norm(rhs)
        idx = np.asarray(out.idx) if backend is NUMBA else np.from_dlpack(out.idx)
        nnz = np.asarray(out.nnz) if backend is NUMBA else np.from_dlpack(out.nnz)
    H = dense_hessian(idx, nnz, n, gamma) + shift * np.eye(n)
    exact = np.linalg.solve(H, rhs)
    for x in steps:
        np.testing.assert_allclose(x, exact, rtol=1e-9, atol=1e-9 * np.abs(exact).max())


@pytest.mark.parametrize("backend", [NUMBA, REFERENCE], ids=["numba_cpu", "array_api"])
def test_hessian_needs_the_whole_support_listed(backend):
    K, w, alpha = problem(10, 12, seed=5)
    ev = evaluator(backend, K, w, 1.0, 12)
    out, _ = evaluate(backend, ev, alpha, 1)
    assert int(np.max(np.asarray(out.nnz) if backend is NUMBA else np.from_dlpack(out.nnz))) > 1
    with pytest.raises(ValueError, match="width >= max\\(nnz\\)"):
        ev.hessian_product(out, 0.0, backend.xp.ones(12, dtype=backend.xp.float64))
