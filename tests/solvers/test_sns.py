"""Sinkhorn-Newton-Sparse: agreement with Sinkhorn and POT, machine-precision convergence,
robustness (large eps, non-unique plans, failed Newton steps) and input validation.

The solver runs on NumPy arrays, through the Numba kernels (``numba_cpu``) and through the
pure Array-API reference kernels (``array_api`` forced on NumPy arrays), and on CuPy
arrays (``cupy_gpu``, marked ``gpu`` and skipped without CuPy and a CUDA device). Every
test that runs on ``numba_cpu`` also runs on ``cupy_gpu``, where the result must moreover
stay on the GPU in the input dtype and equal the ``numba_cpu`` result (``_solve``).
"""

from __future__ import annotations

import warnings

import array_api_strict
import numpy as np
import ot
import pytest

import otcore as oc

from ..conftest import _cupy_case

GPU = pytest.param("cupy_gpu", marks=pytest.mark.gpu)


@pytest.fixture(params=["numba_cpu", "array_api", GPU])
def sns_backend(request) -> str:
    """Every backend that runs SNS."""
    return request.param


@pytest.fixture(params=["numba_cpu", GPU])
def device(request) -> str:
    """The fast backend of each device."""
    return request.param


class _OnHost:
    """A GPU result seen from the host: its arrays copied to NumPy, the rest unchanged."""

    def __init__(self, cp, res):
        self._cp, self._res = cp, res

    def __getattr__(self, name):
        value = getattr(self._res, name)
        return self._cp.asnumpy(value) if isinstance(value, self._cp.ndarray) else value


def _to_device(cp, x):
    """NumPy data (an array, a point cloud or None) on the GPU."""
    if isinstance(x, oc.PointCloud):
        return oc.PointCloud(cp.asarray(x.x), cp.asarray(x.y), x.cost, scale=x.scale)
    return None if x is None else cp.asarray(x)


def _assert_same_result(cp, res, ref):
    """A GPU result equals the CPU one to 1e-10 (float64) or 1e-5 (float32) of the scale
    of the compared values, and it is made of CuPy arrays in the input dtype.

    Compared: the plan, its cost and value, and the potentials through ``f_i + g_j`` on
    the support of the plan (entries above 1e-6 of the largest). The sum is invariant
    under the shift ``(f + t, g - t)``; beyond the support the potentials are not
    determined by the problem to this precision (for a plan that is close to a
    permutation, a matched pair ``(f_i, g_j)`` can move by ``+-t`` at a cost far below
    any tolerance), so they are not compared there.
    """
    dtype = ref.f.dtype
    tol = 1e-10 if dtype == np.float64 else 1e-5
    assert res.backend == "cupy_gpu" and res.converged == ref.converged
    for v in (res.f, res.g, res.plan):
        assert isinstance(v, cp.ndarray) and v.dtype == dtype
    f, g, P = (cp.asnumpy(v).astype(np.float64) for v in (res.f, res.g, res.plan))
    np.testing.assert_allclose(P, ref.plan, rtol=tol, atol=tol * max(1, ref.plan.max()))
    support = ref.plan >= 1e-6 * ref.plan.max()
    fg_ref = (ref.f[:, None] + ref.g[None, :]).astype(np.float64)[support]
    np.testing.assert_allclose((f[:, None] + g[None, :])[support], fg_ref, rtol=0,
                               atol=tol * max(1, np.abs(fg_ref).max()))
    assert res.cost == pytest.approx(ref.cost, rel=tol, abs=tol)
    assert res.value == pytest.approx(ref.value, rel=tol, abs=tol)


def _solve(backend, a, b, C, eps, **kwargs):
    """SNS on ``backend`` from NumPy data; the result's arrays come back as NumPy arrays.

    On ``cupy_gpu`` the data is moved to the GPU (the backend follows the arrays) and the
    result is checked against the ``numba_cpu`` one (``_assert_same_result``).
    """
    if backend != "cupy_gpu":
        return oc.sinkhorn_newton_sparse(a, b, C, eps, backend=backend, **kwargs)
    cp = _cupy_case().xp
    res = oc.sinkhorn_newton_sparse(*(_to_device(cp, v) for v in (a, b, C)), eps, **kwargs)
    _assert_same_result(cp, res, oc.sinkhorn_newton_sparse(a, b, C, eps, **kwargs))
    return _OnHost(cp, res)


def _l1(a, b, P) -> float:
    """``|P 1 - a|_1 + |P^T 1 - b|_1`` computed from a dense plan."""
    return float(np.abs(P.sum(axis=1) - a).sum() + np.abs(P.sum(axis=0) - b).sum())


def _check_certificate(a, b, C, eps, res, tol):
    """The returned plan is ``a b^T exp((f + g - C) / eps)`` (computed here in NumPy) and
    has the marginals ``a, b`` to ``tol``: the optimality conditions of entropic OT."""
    P = a[:, None] * b[None, :] * np.exp((res.f[:, None] + res.g[None, :] - C) / eps)
    np.testing.assert_allclose(res.plan, P, rtol=1e-12, atol=1e-300)
    assert _l1(a, b, P) < tol


def _weights(rng, n, zeros=0):
    w = rng.uniform(0.1, 1.0, size=n)
    w[:zeros] = 0.0
    return w / w.sum()


def _sns(a, b, C, eps, backend="numba_cpu", **kwargs):
    """``_solve``, failing on any warning (a converging run must not warn)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return _solve(backend, a, b, C, eps, **kwargs)


def test_plan_equals_sinkhorn_plan(sns_backend):
    rng = np.random.default_rng(0)
    n, m, eps = 70, 50, 0.02
    x, y = rng.normal(size=(n, 2)), 1 + 0.5 * rng.normal(size=(m, 2))
    C = ((x[:, None] - y[None]) ** 2).sum(-1)
    C /= C.max()
    a, b = _weights(rng, n), _weights(rng, m)
    res = _sns(a, b, C, eps, tol=1e-13, backend=sns_backend)
    ref = oc.sinkhorn(a, b, C, eps, tol=1e-13, max_iter=100_000)
    assert res.converged and res.method == "sinkhorn_newton_sparse"
    assert res.backend == sns_backend
    P = res.plan
    assert isinstance(P, np.ndarray) and P.shape == (n, m) and P.dtype == np.float64
    np.testing.assert_allclose(P, ref.plan, rtol=1e-9, atol=1e-14)
    assert _l1(a, b, P) < 1e-12
    # potentials agree up to the shift (f + t, g - t)
    t = np.mean(res.f - ref.f)
    np.testing.assert_allclose(res.f - t, ref.f, atol=1e-10 * eps)
    np.testing.assert_allclose(res.g + t, ref.g, atol=1e-10 * eps)
    assert res.value == pytest.approx(ref.value, rel=1e-12)
    assert res.cost == pytest.approx(float(np.sum(C * P)), rel=1e-12)


def test_plan_matches_pot_sinkhorn_log(device):
    rng = np.random.default_rng(1)
    n, m, eps = 40, 30, 0.05
    C = rng.random((n, m))
    a, b = _weights(rng, n), _weights(rng, m)
    res = _sns(a, b, C, eps, tol=1e-12, backend=device)
    G = ot.sinkhorn(a, b, C, eps, method="sinkhorn_log", stopThr=1e-14, numItermax=100_000)
    np.testing.assert_allclose(res.plan, G, rtol=1e-8, atol=1e-13)


def test_random_cost_n300_eta1200_reaches_1e10_within_60_newton_steps(sns_backend):
    rng = np.random.default_rng(2024)
    n, eps = 300, 1 / 1200
    C = rng.random((n, n))
    res = _sns(None, None, C, eps, tol=1e-10, backend=sns_backend)
    a = np.full(n, 1 / n)
    assert res.converged
    _check_certificate(a, a, C, eps, res, 1e-10)
    assert res.marginal_error < 1e-10
    assert 1 <= res.extra["newton_iter"] <= 60
    assert res.n_iter == res.extra["newton_iter"] + res.extra["sinkhorn_iter"]


def test_history_is_recorded(device):
    rng = np.random.default_rng(3)
    C = rng.random((120, 90))
    res = _sns(None, None, C, 1e-3, tol=1e-11, backend=device)
    hist, k = res.extra["history"], res.extra["newton_iter"]
    assert all(len(v) == k for v in hist.values()) and k >= 2
    assert all(0 < d <= 1 for d in hist["density"])
    assert all(isinstance(c, int) and c >= 1 for c in hist["cg_iter"])
    assert all(0 <= s <= 1 for s in hist["step"])
    assert all(0 <= t <= 1 for t in hist["shift"])
    # the recorded errors are those of the iterates: the last Newton steps converge fast,
    # and the error of the returned potentials, recomputed independently, is the last one
    assert hist["error"][-1] < 1e-3 * hist["error"][0]
    assert res.errors[-1][1] == pytest.approx(res.marginal_error, rel=1e-6, abs=1e-15)
    assert res.errors[-1][0] == res.n_iter


def test_large_eps_dense_regime(sns_backend):
    rng = np.random.default_rng(4)
    C = rng.random((150, 120))
    res = _sns(None, None, C, 0.5, tol=1e-12, backend=sns_backend)
    ref = oc.sinkhorn(None, None, C, 0.5, tol=1e-13)
    assert res.converged
    np.testing.assert_allclose(res.plan, ref.plan, rtol=1e-9)


def test_euclidean_cost_non_unique_plan(sns_backend):
    # |x - y| on points of the plane: the unregularized plan is far from unique, the
    # entropic plan spreads over many entries and the sparse Hessian must get denser.
    rng = np.random.default_rng(5)
    x, y = rng.random((150, 2)), rng.random((150, 2))
    geom = oc.PointCloud(x, y, cost="euclidean")
    res = _sns(None, None, geom, 1e-2, tol=1e-10, backend=sns_backend)
    ref = oc.sinkhorn(None, None, geom, 1e-2, tol=1e-12, max_iter=100_000)
    assert res.converged
    P = res.plan
    assert _l1(np.full(150, 1 / 150), np.full(150, 1 / 150), P) < 1e-10
    np.testing.assert_allclose(P, ref.plan, rtol=1e-6, atol=1e-12)


def _line_l1(seed, n):
    """Random weights on ``n`` points of [0, 1] with the cost ``|x - y|`` (the optimal
    unregularized plans are far from unique)."""
    rng = np.random.default_rng(seed)
    z = np.linspace(0, 1, n)[:, None]
    return _weights(rng, n), _weights(rng, n), np.abs(z - z.T)


def test_density_grows_when_newton_steps_are_slow(device):
    # |x - y| on a line with eps = 0.01: the initial 4 (n + m) entries miss too much of
    # the plan, full Newton steps converge slowly and the density is raised.
    a, b, C = _line_l1(14, 100)
    res = _sns(a, b, C, 1e-2, tol=1e-10, backend=device)
    density = res.extra["history"]["density"]
    assert max(density) > 2 * density[0]
    assert res.converged and _l1(a, b, res.plan) < 1e-10
    dense = _sns(a, b, C, 1e-2, tol=1e-10, density=1.0, backend=device)
    np.testing.assert_allclose(res.plan, dense.plan, rtol=1e-7, atol=1e-14)


def test_one_dimensional_l1_cost_small_eps(device):
    # |x - y| on a line at eps = 1e-3: Sinkhorn needs ~1e5 iterations here, so the check
    # is the optimality certificate instead: a plan of the form a_i b_j exp((f_i + g_j -
    # C_ij) / eps) with the right marginals is the (unique) entropic optimum.
    a, b, C = _line_l1(6, 300)
    res = _sns(a, b, C, 1e-3, tol=1e-10, backend=device)
    assert res.converged
    _check_certificate(a, b, C, 1e-3, res, 1e-10)
    # the dual is nearly flat along some directions: damped steps switch the Marquardt
    # shift on, and full steps switch it off again before the end
    shifts = res.extra["history"]["shift"]
    assert max(shifts) > 0 and shifts[-1] == 0


def test_point_cloud_equals_dense_cost(sns_backend):
    rng = np.random.default_rng(7)
    x, y = rng.normal(size=(60, 3)), rng.normal(size=(45, 3))
    C = ((x[:, None] - y[None]) ** 2).sum(-1)
    scale = float(C.max())
    a, b = _weights(rng, 60), _weights(rng, 45)
    res_c = _sns(a, b, oc.PointCloud(x, y, scale=scale), 2e-3, tol=1e-11,
                 backend=sns_backend)
    res_d = _sns(a, b, C / scale, 2e-3, tol=1e-11, backend=sns_backend)
    np.testing.assert_allclose(res_c.plan, res_d.plan, rtol=1e-7, atol=1e-14)
    assert res_c.cost == pytest.approx(res_d.cost, rel=1e-9)


def test_zero_weights_and_rectangular(sns_backend):
    rng = np.random.default_rng(8)
    n, m = 90, 140
    a, b = _weights(rng, n, zeros=7), _weights(rng, m, zeros=11)
    C = rng.random((n, m))
    res = _sns(a, b, C, 2e-3, tol=1e-11, backend=sns_backend)
    P = res.plan
    assert res.converged and np.all(np.isfinite(res.f)) and np.all(np.isfinite(res.g))
    assert np.all(P[:7] == 0) and np.all(P[:, :11] == 0)
    assert _l1(a, b, P) < 1e-11
    ref = oc.sinkhorn(a, b, C, 2e-3, tol=1e-12, max_iter=100_000)
    np.testing.assert_allclose(P, ref.plan, rtol=1e-7, atol=1e-14)


def test_failed_newton_steps_fall_back_to_sinkhorn(device):
    # No warm-up, small eps: the first Newton directions would move potentials by many
    # orders of magnitude of eps and are rejected, also with the largest Marquardt shift;
    # Sinkhorn iterations take over, then Newton converges.
    rng = np.random.default_rng(9)
    C = rng.random((100, 100))
    res = _sns(None, None, C, 1e-3, tol=1e-10, warmup_iter=0, backend=device)
    hist = res.extra["history"]
    assert res.converged and res.extra["fallbacks"] >= 1
    assert res.extra["sinkhorn_iter"] >= 20
    failed = [k for k, s in enumerate(hist["step"]) if s == 0.0]
    assert 1.0 in [hist["shift"][k] for k in failed]
    assert hist["step"][-1] == 1.0
    assert _l1(np.full(100, 0.01), np.full(100, 0.01), res.plan) < 1e-10


def test_float32_stays_float32(device):
    rng = np.random.default_rng(10)
    C = rng.random((80, 60)).astype(np.float32)
    res = _sns(None, None, C, np.float32(0.01), tol=1e-5, backend=device)
    assert res.f.dtype == np.float32 and res.g.dtype == np.float32
    assert res.plan.dtype == np.float32
    assert res.converged and res.marginal_error < 1e-5
    ref = oc.sinkhorn(None, None, C.astype(np.float64), 0.01, tol=1e-12)
    np.testing.assert_allclose(res.plan, ref.plan, atol=1e-6)


def test_not_converged_warns_and_stays_finite(device):
    rng = np.random.default_rng(11)
    C = rng.random((60, 60))
    with pytest.warns(oc.ConvergenceWarning, match="sinkhorn_newton_sparse"):
        res = _solve(device, None, None, C, 1e-3, tol=1e-14, max_iter=1, warmup_iter=0)
    assert not res.converged and res.extra["newton_iter"] == 1
    assert np.isfinite(res.marginal_error) and res.marginal_error > 1e-14
    assert np.all(np.isfinite(res.f)) and np.all(np.isfinite(res.g))


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"eps": 0.0}, ValueError, "eps"),
        ({"eps": float("nan")}, ValueError, "eps"),
        ({"density": 0.0}, ValueError, "density"),
        ({"density": 1.5}, ValueError, "density"),
        ({"density": "dense"}, TypeError, "density"),
        ({"warmup_tol": -1.0}, ValueError, "warmup_tol"),
        ({"warmup_iter": -1}, ValueError, "warmup_iter"),
        ({"warmup_iter": 2.5}, TypeError, "warmup_iter"),
        ({"max_iter": 0}, ValueError, "max_iter"),
        ({"cg_rtol": 1.0}, ValueError, "cg_rtol"),
        ({"cg_maxiter": 0}, ValueError, "cg_maxiter"),
        ({"tol": 0.0}, ValueError, "tol"),
    ],
)
def test_bad_parameters(kwargs, exc, match):
    C = np.random.default_rng(12).random((5, 4))
    args = {"eps": 0.1, **kwargs}
    eps = args.pop("eps")
    with pytest.raises(exc, match=match):
        oc.sinkhorn_newton_sparse(None, None, C, eps, **args)


def test_bad_inputs():
    rng = np.random.default_rng(13)
    C = rng.random((5, 4))
    a, b = np.full(5, 0.2), np.full(4, 0.25)
    with pytest.raises(ValueError, match="negative"):
        oc.sinkhorn_newton_sparse(-a, b, C, 0.1)
    with pytest.raises(ValueError, match="same total mass"):
        oc.sinkhorn_newton_sparse(a, 2 * b, C, 0.1)
    with pytest.raises(ValueError, match="length"):
        oc.sinkhorn_newton_sparse(a[:4], b, C, 0.1)
    bad = C.copy()
    bad[1, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        oc.sinkhorn_newton_sparse(a, b, bad, 0.1)
    with pytest.raises(TypeError, match="one array library"):
        oc.sinkhorn_newton_sparse(array_api_strict.asarray(a), b, C, 0.1)
    xp_C = array_api_strict.asarray(C)
    with pytest.raises(TypeError, match="NumPy"):
        oc.sinkhorn_newton_sparse(None, None, xp_C, 0.1)


@pytest.mark.parametrize("d", [2, 3])
@pytest.mark.parametrize("eps", [1e-3, 1e-4])
def test_defaults_reach_1e9_at_small_eps(d, eps):
    # the annealed warm-up: no tuning of warmup_tol or warmup_iter needed
    rng = np.random.default_rng(40 + d)
    x, y = rng.normal(size=(1000, d)), 0.5 * rng.normal(size=(1000, d)) + 1.0
    C = ((x[:, None] - y[None]) ** 2).sum(-1)
    C /= C.max()
    res = oc.sinkhorn_newton_sparse(None, None, C, eps)
    assert res.converged and res.marginal_error <= 1e-9
    P = res.plan
    assert abs(P.sum(axis=1) - 1 / 1000).sum() + abs(P.sum(axis=0) - 1 / 1000).sum() < 1e-9


def test_the_newton_stage_never_ends_worse_than_its_warm_up():
    # too few Newton steps with a hopeless density: whatever the steps do, the result is
    # at least as good as the warm-up's potentials
    rng = np.random.default_rng(44)
    C = rng.random((300, 200))
    with pytest.warns(oc.ConvergenceWarning):
        res = oc.sinkhorn_newton_sparse(None, None, C, 1e-4, max_iter=3, density=1e-4,
                                        warmup_scaling=None, warmup_iter=5)
    warm_up_error = res.errors[res.extra["sinkhorn_iter"]][1]
    assert res.marginal_error <= warm_up_error * (1 + 1e-9)
    assert min(e for _, e in res.errors) == pytest.approx(res.marginal_error, rel=1e-6)
