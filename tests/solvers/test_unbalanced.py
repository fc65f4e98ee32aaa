"""Unbalanced and semi-relaxed entropic OT (``reg_m``), against POT's
``sinkhorn_unbalanced(reg_type="kl")`` run to tight tolerance and against limit cases.

Conventions: otcore minimizes ``<C, P> + eps KL(P | a b^T) + rho_a KL(P 1 | a)
+ rho_b KL(P^T 1 | b)``; POT's ``reg`` is ``eps`` and its ``reg_m`` is ``(rho_a, rho_b)``,
with the same objective for ``reg_type="kl"`` (``c = a b^T``).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import ot
import pytest
from numpy.testing import assert_allclose

import otcore as oc

from ..problems import gaussian_clouds, ground_cost

INF = math.inf


def kl(p, q):
    """Generalized KL divergence with ``0 log 0 = 0``."""
    pos = p > 0
    return float(np.sum(p[pos] * np.log(p[pos] / q[pos])) - p.sum() + q.sum())


def objective(a, b, C, P, eps, rho_a, rho_b):
    """The unbalanced objective of a plan, computed independently of otcore."""
    val = float(np.sum(C * P)) + eps * kl(P, a[:, None] * b[None, :])
    if not math.isinf(rho_a):
        val += rho_a * kl(P.sum(axis=1), a)
    if not math.isinf(rho_b):
        val += rho_b * kl(P.sum(axis=0), b)
    return val


def problem(n, m, seed=0, masses=(1.0, 1.7)):
    rng = np.random.default_rng(seed)
    x, y = gaussian_clouds(rng, n, m)
    C = ground_cost(x, y)
    a = rng.uniform(0.2, 1.0, n)
    b = rng.uniform(0.2, 1.0, m)
    return masses[0] * a / a.sum(), masses[1] * b / b.sum(), C / C.max(), x, y


def pot_plan(a, b, C, eps, reg_m):
    return ot.sinkhorn_unbalanced(a, b, C, eps, reg_m, reg_type="kl", numItermax=200_000,
                                  stopThr=1e-15)


@pytest.mark.parametrize(("n", "m"), [(30, 30), (25, 40)])
@pytest.mark.parametrize("reg_m", [0.1, 1.0, (0.3, 2.0), (INF, 0.5), (0.5, INF)])
def test_plan_and_value_equal_pot(backend, n, m, reg_m):
    a, b, C, _, _ = problem(n, m, seed=n + m)
    eps = 0.05
    ref = pot_plan(a, b, C, eps, reg_m)
    res = oc.sinkhorn(backend.asarray(a), backend.asarray(b), backend.asarray(C), eps,
                      reg_m=reg_m, tol=1e-13)
    assert res.converged
    P = backend.to_numpy(res.plan)
    assert_allclose(P, ref, rtol=1e-8, atol=1e-12)
    rho_a, rho_b = reg_m if isinstance(reg_m, tuple) else (reg_m, reg_m)
    want = objective(a, b, C, ref, eps, rho_a, rho_b)
    assert res.value == pytest.approx(want, rel=1e-8)
    assert res.dual_value == pytest.approx(want, rel=1e-8)  # strong duality
    rows, cols = (backend.to_numpy(v) for v in res.marginals)
    assert_allclose(rows, P.sum(axis=1), rtol=1e-12)
    assert_allclose(cols, P.sum(axis=0), rtol=1e-12)
    assert res.mass == pytest.approx(P.sum(), rel=1e-12)
    assert res.reg_m == (rho_a, rho_b)


def test_exact_side_of_a_semi_relaxed_problem_is_met(rng):
    a, b, C, _, _ = problem(20, 30, seed=3)
    res = oc.sinkhorn(a, b, C, 0.05, reg_m=(INF, 0.2), tol=1e-12)
    rows, cols = res.marginals
    assert_allclose(rows, a, rtol=1e-10)  # exact
    assert abs(cols.sum() - b.sum()) > 0.1  # the relaxed side moved toward a's mass
    assert res.mass == pytest.approx(a.sum(), rel=1e-10)


def test_large_rho_recovers_the_balanced_plan():
    a, b, C, _, _ = problem(30, 20, seed=4, masses=(1.0, 1.0))
    bal = oc.sinkhorn(a, b, C, 0.05, tol=1e-13)
    unb = oc.sinkhorn(a, b, C, 0.05, reg_m=1e9, tol=1e-13)
    assert_allclose(unb.plan, bal.plan, rtol=1e-8, atol=1e-13)
    assert unb.value == pytest.approx(bal.value, rel=1e-8)


@pytest.mark.parametrize("reg_m", [0.2, (INF, 0.3)])
def test_online_equals_dense(backend, reg_m):
    a, b, C, x, y = problem(35, 28, seed=5)
    s = ground_cost(x, y).max()
    dense = oc.sinkhorn(backend.asarray(a), backend.asarray(b), backend.asarray(C), 0.05,
                        reg_m=reg_m, tol=1e-12)
    online = oc.sinkhorn(backend.asarray(a), backend.asarray(b),
                         oc.PointCloud(backend.asarray(x), backend.asarray(y), scale=s), 0.05,
                         reg_m=reg_m, tol=1e-12)
    assert_allclose(backend.to_numpy(online.f), backend.to_numpy(dense.f), atol=1e-11)
    assert_allclose(backend.to_numpy(online.g), backend.to_numpy(dense.g), atol=1e-11)


@pytest.mark.parametrize("reg_m", [0.1, (INF, 0.5)])
@pytest.mark.parametrize("kind", ["dense", "cloud"])
def test_numba_equals_array_api(reg_m, kind):
    import array_api_strict as xs

    a, b, C, x, y = problem(40, 33, seed=6)

    def run(xp):
        cost = xp.asarray(C) if kind == "dense" else oc.PointCloud(xp.asarray(x),
                                                                    xp.asarray(y))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", oc.ConvergenceWarning)
            return oc.sinkhorn(xp.asarray(a), xp.asarray(b), cost, 0.05, reg_m=reg_m,
                               max_iter=25, tol=1e-30)

    nb, ref = run(np), run(xs)
    assert (nb.backend, ref.backend) == ("numba_cpu", "array_api")
    assert_allclose(np.from_dlpack(ref.f), nb.f, rtol=0, atol=1e-12)
    assert_allclose(np.from_dlpack(ref.g), nb.g, rtol=0, atol=1e-12)
    assert ref.value == pytest.approx(nb.value, rel=1e-12)


@pytest.mark.parametrize("reg_m", [0.1, (INF, 0.1)])
def test_small_eps_gives_no_nan(reg_m):
    a, b, C, _, _ = problem(60, 50, seed=7)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", oc.ConvergenceWarning)
        res = oc.sinkhorn(a, b, C, 1e-4, reg_m=reg_m, max_iter=3000)
    assert np.isfinite(res.f).all() and np.isfinite(res.g).all()
    assert np.isfinite([res.value, res.cost, res.marginal_error, res.mass]).all()
    assert np.isfinite(res.plan).all()
    assert res.converged == (res.marginal_error <= 1e-9)
    assert res.converged or any(issubclass(w.category, oc.ConvergenceWarning) for w in caught)


def test_small_rho_converges_about_as_fast_as_balanced():
    # translation-invariant updates: a small rho does not slow the iteration down
    a, b, C, _, _ = problem(200, 150, seed=8, masses=(1.0, 1.0))
    bal = oc.sinkhorn(a, b, C, 0.02)
    unb = oc.sinkhorn(a, b, C, 0.02, reg_m=0.01)
    assert unb.converged and bal.converged
    assert unb.n_iter <= 2 * bal.n_iter, (unb.n_iter, bal.n_iter)


def test_the_optimality_conditions_hold():
    # relaxed marginal at the optimum: P 1 = a exp(-f / rho)
    a, b, C, _, _ = problem(30, 25, seed=9)
    res = oc.sinkhorn(a, b, C, 0.05, reg_m=(0.4, 0.7), tol=1e-13)
    rows, cols = res.marginals
    assert_allclose(rows, a * np.exp(-res.f / 0.4), rtol=1e-10)
    assert_allclose(cols, b * np.exp(-res.g / 0.7), rtol=1e-10)


@pytest.mark.parametrize(
    ("reg_m", "exc", "match"),
    [
        (-1.0, ValueError, r"reg_m \(rho_a\) must be > 0"),
        (0.0, ValueError, r"reg_m \(rho_a\) must be > 0"),
        ((1.0, -2.0), ValueError, r"reg_m \(rho_b\) must be > 0"),
        (float("nan"), ValueError, r"reg_m \(rho_a\) must be > 0"),
        ((1.0, 2.0, 3.0), ValueError, "reg_m must be a number or a pair"),
        (np.ones(3), ValueError, r"reg_m must be a number or a pair .* shape \(3,\)"),
        ("1", TypeError, r"reg_m \(rho_a\) must be a real number"),
    ],
)
def test_bad_reg_m(reg_m, exc, match):
    a, b, C, _, _ = problem(5, 4)
    with pytest.raises(exc, match=match):
        oc.sinkhorn(a, b, C, 0.1, reg_m=reg_m)


def test_unequal_masses_need_a_relaxed_side():
    a, b, C, _, _ = problem(5, 4)
    with pytest.raises(ValueError, match=r"same total mass .* pass reg_m to relax"):
        oc.sinkhorn(a, b, C, 0.1)
    with pytest.raises(ValueError, match="same total mass"):
        oc.sinkhorn(a, b, C, 0.1, reg_m=(INF, INF))
    assert oc.sinkhorn(a, b, C, 0.1, reg_m=(INF, 1.0)).converged


@pytest.mark.parametrize("reg_m", [0.5, 2.0])
def test_unbalanced_divergence_equals_pot_values(reg_m):
    rng = np.random.default_rng(10)
    x, y = rng.normal(size=(25, 2)), rng.normal(size=(30, 2)) + 0.5
    a, b = rng.uniform(0.5, 1.5, 25) / 25, 1.6 * rng.uniform(0.5, 1.5, 30) / 30
    eps = 0.3

    def ot_value(p, q, X, Y):
        C = ground_cost(X, Y)
        P = pot_plan(p, q, C, eps, reg_m)
        return objective(p, q, C, P, eps, reg_m, reg_m)

    want = (ot_value(a, b, x, y) - 0.5 * ot_value(a, a, x, x) - 0.5 * ot_value(b, b, y, y)
            + 0.5 * eps * (a.sum() - b.sum()) ** 2)
    res = oc.sinkhorn_divergence(x, y, a=a, b=b, eps=eps, reg_m=reg_m, tol=1e-13)
    assert res.value == pytest.approx(want, rel=1e-8)
    assert res.value > 0
    assert oc.sinkhorn_divergence(x, x, a=a, b=a, eps=eps, reg_m=reg_m).value == \
        pytest.approx(0.0, abs=1e-12)
    # different masses on the same support: positive
    assert oc.sinkhorn_divergence(x, x, a=a, b=2 * a, eps=eps, reg_m=reg_m).value > 1e-3


def test_unbalanced_divergence_gradient_finite_differences():
    rng = np.random.default_rng(11)
    x, y = rng.normal(size=(15, 2)), rng.normal(size=(12, 2))
    b = np.full(12, 1.5 / 12)
    kw = dict(b=b, eps=0.5, reg_m=0.7, tol=1e-13)
    grad = oc.sinkhorn_divergence(x, y, return_grad=True, **kw).grad
    h = 1e-5
    fd = np.zeros_like(y)
    for idx in np.ndindex(*y.shape):
        yp, ym = y.copy(), y.copy()
        yp[idx] += h
        ym[idx] -= h
        fd[idx] = (oc.sinkhorn_divergence(x, yp, **kw).value
                   - oc.sinkhorn_divergence(x, ym, **kw).value) / (2 * h)
    assert_allclose(grad, fd, rtol=1e-6, atol=1e-8)


def test_balanced_divergence_is_the_large_rho_limit():
    rng = np.random.default_rng(12)
    x, y = rng.normal(size=(20, 2)), rng.normal(size=(25, 2)) + 1.0
    bal = oc.sinkhorn_divergence(x, y, eps=0.5).value
    unb = oc.sinkhorn_divergence(x, y, eps=0.5, reg_m=1e9).value
    assert unb == pytest.approx(bal, rel=1e-7)


def test_divergence_needs_one_rho():
    x = np.random.default_rng(13).normal(size=(6, 2))
    with pytest.raises(ValueError, match="one rho for both marginals"):
        oc.sinkhorn_divergence(x, x, eps=0.5, reg_m=(1.0, 2.0))
    with pytest.raises(ValueError, match="one rho for both marginals"):
        oc.sinkhorn_divergence(x, x, eps=0.5, reg_m=(INF, 1.0))


def test_reg_m_beyond_what_the_dtype_resolves_is_refused():
    a, b, C, _, _ = problem(5, 4)
    with pytest.raises(ValueError, match=r"reg_m=1e\+300 is more than 1e\+12 times eps"):
        oc.sinkhorn(a, b, C, 0.1, reg_m=1e300)
