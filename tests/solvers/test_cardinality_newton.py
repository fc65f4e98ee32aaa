"""Quadratic OT (``k=None`` or ``k >= n``) and the semismooth Newton stage of
``cardinality_ot``: ``tol`` bounds the L1 marginal error of the returned plan, checked
against POT's l2 solvers run tight, RegOT's semismooth Newton (when installed), the KKT
conditions in plain NumPy, and an honest status where the maximum lies on a kink.

Every test takes the ``backend`` fixture (``numba_cpu``, ``array_api``; ``cupy_gpu``
where a GPU exists).
"""

import io
import warnings
from contextlib import redirect_stdout

import numpy as np
import ot
import pytest

import otcore as oc

from ..problems import random_problem


def issue_problem():
    """x ~ N(0, I) 60 points, y ~ N(1, I) 40 points in 2-D, uniform weights, squared
    distances divided by their maximum."""
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(60, 2)), rng.normal(size=(40, 2)) + 1.0
    C = ((x[:, None] - y[None]) ** 2).sum(-1)
    return np.full(60, 1 / 60), np.full(40, 1 / 40), C / C.max()


def solve(backend, a, b, C, k, gamma, **kwargs):
    """``cardinality_ot`` on ``backend``'s arrays; returns the result, its potentials and
    its dense plan on the host."""
    res = oc.cardinality_ot(backend.asarray(a), backend.asarray(b), backend.asarray(C), k,
                            gamma, **kwargs)
    assert res.backend == backend.name
    plan = res.plan
    plan = plan.toarray() if hasattr(plan, "toarray") else plan
    return res, backend.to_numpy(res.f), backend.to_numpy(res.g), backend.to_numpy(plan)


def assert_kkt(f, g, T, a, b, C, gamma, tol):
    """``T`` solves quadratic OT: ``T = [f + g - C]_+ / gamma`` (so ``T >= 0`` and
    complementary slackness hold) and both marginals within ``tol`` (L1)."""
    np.testing.assert_allclose(T, np.maximum(f[:, None] + g[None, :] - C, 0) / gamma,
                               rtol=1e-9, atol=1e-12)
    assert np.abs(T.sum(axis=1) - a).sum() + np.abs(T.sum(axis=0) - b).sum() <= tol


def pot_l2_plan(a, b, C, gamma):
    """POT's quadratically regularized plan (``ot.smooth``, l2, semi-dual) run tight."""
    with redirect_stdout(io.StringIO()):
        T, log = ot.smooth.smooth_ot_semi_dual(a, b, C, gamma, reg_type="l2", log=True,
                                               stopThr=1e-15, numItermax=20000)
    assert log["res"].success
    return T, -log["res"].fun


@pytest.mark.parametrize("formulation", ["semi-dual", "dual"])
@pytest.mark.parametrize("gamma", [0.1, 1.0])
@pytest.mark.parametrize("k", [None, 30, 100])
def test_quadratic_ot_reaches_tol_and_matches_pot(backend, k, gamma, formulation):
    a, b, C, _, _ = random_problem(np.random.default_rng(4), 30, 25)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # converged: no warning
        res, f, g, T = solve(backend, a, b, C, k, gamma, tol=1e-9, formulation=formulation)
    assert res.converged and res.extra["status"] == "converged"
    assert res.marginal_error <= 1e-9
    assert_kkt(f, g, T, a, b, C, gamma, 1e-9)
    T_pot, value_pot = pot_l2_plan(a, b, C, gamma)
    np.testing.assert_allclose(T, T_pot, atol=1e-6)
    # the value is otcore's own objective: at the optimum the dual value equals the primal
    # <C, T> + gamma/2 |T|^2 of the returned plan (POT's semi-dual value: the same)
    primal = float(np.sum(C * T) + 0.5 * gamma * np.sum(T**2))
    assert res.value == pytest.approx(primal, abs=1e-10)
    assert res.extra["primal"] == pytest.approx(primal, rel=1e-12)
    assert res.value == pytest.approx(value_pot, abs=1e-9)


@pytest.mark.parametrize("gamma", [0.1, 1.0])
def test_quadratic_ot_matches_regot(backend, gamma):
    regot = pytest.importorskip("regot")
    rng = np.random.default_rng(7)
    x, y = rng.normal(size=(80, 2)), rng.normal(size=(70, 2)) + 1.0
    C = ((x[:, None] - y[None]) ** 2).sum(-1)
    C /= C.max()
    a, b = np.full(80, 1 / 80), np.full(70, 1 / 70)
    res, _, _, T = solve(backend, a, b, C, None, gamma, tol=1e-9)
    assert res.converged and res.marginal_error <= 1e-9
    ref = regot.qrot_grssn(np.asfortranarray(C), a, b, gamma, tol=1e-12, max_iter=1000)
    np.testing.assert_allclose(T, ref.plan, atol=1e-6)


@pytest.mark.parametrize("formulation", ["semi-dual", "dual"])
@pytest.mark.parametrize("k", [5, 60])
def test_issue_problem_reaches_row_error(backend, k, formulation):
    a, b, C = issue_problem()
    res, f, g, T = solve(backend, a, b, C, k, 0.1, tol=1e-10, formulation=formulation)
    assert res.converged and res.extra["status"] == "converged"
    assert res.extra["row_error"] <= 1e-9 and res.extra["col_error"] <= 1e-9
    assert np.count_nonzero(T, axis=0).max() <= k
    assert_kkt(f, g, T, a, b, C, 0.1, 1e-9)


def test_dual_and_semi_dual_agree_on_the_value(backend):
    a, b, C = issue_problem()
    for k in (5, None):
        semi = solve(backend, a, b, C, k, 0.1, tol=1e-10)[0]
        dual = solve(backend, a, b, C, k, 0.1, tol=1e-10, formulation="dual")[0]
        assert dual.value == pytest.approx(semi.value, abs=1e-12)
        assert dual.cost == pytest.approx(semi.cost, abs=1e-10)


@pytest.mark.parametrize("formulation", ["semi-dual", "dual"])
def test_kink_is_reported_honestly(backend, formulation):
    # k = 2 on the issue's problem: the maximum lies on a kink (tied scores)
    a, b, C = issue_problem()
    with pytest.warns(oc.ConvergenceWarning, match="kink"):
        res, *_ = solve(backend, a, b, C, 2, 0.1, tol=1e-10, formulation=formulation)
    assert not res.converged and res.extra["status"] == "nonsmooth"
    assert "tied" in res.extra["message"]
    assert res.marginal_error > 1e-10
    assert res.marginal_error == pytest.approx(
        res.extra["row_error"] + res.extra["col_error"], rel=1e-12)
    # still the maximum up to the accuracy of L-BFGS-B at a kink: not below POT's value
    with redirect_stdout(io.StringIO()):
        _, log = ot.smooth.smooth_ot_semi_dual(a, b, C, 0.1, reg_type="sparsity_constrained",
                                               max_nz=2, log=True)
    assert res.value >= -log["res"].fun - 1e-9


def test_k1_is_reported_and_rebuild_converges(backend):
    a, b, C = issue_problem()
    with pytest.warns(oc.ConvergenceWarning, match="rebuild_plan=True"):
        res, *_ = solve(backend, a, b, C, 1, 0.1)
    assert not res.converged and res.extra["status"] == "nonsmooth"
    exact, *_ = solve(backend, a, b, C, 1, 0.1, rebuild_plan=True)
    assert exact.converged and exact.extra["status"] == "converged"
    assert exact.marginal_error <= 1e-9
    assert exact.cost == pytest.approx(ot.emd2(a, b, C), rel=1e-9)


def test_tol_below_rounding_is_reported(backend):
    a, b, C = issue_problem()
    with pytest.warns(oc.ConvergenceWarning, match="rounding"):
        res, *_ = solve(backend, a, b, C, None, 0.1, tol=1e-17)
    assert not res.converged and res.extra["status"] == "rounding"
    assert res.marginal_error < 1e-12


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [({"k": 0}, ValueError, "k must be >= 1"), ({"k": "all"}, TypeError, "k must be an integer"),
     ({"gamma": 0.0}, ValueError, "gamma must be"), ({"tol": -1e-9}, ValueError, "tol must be"),
     ({"k": None, "rebuild_plan": True}, ValueError, "rebuild_plan=True needs k=1")],
)
def test_bad_input(kwargs, error, match):
    a, b, C = issue_problem()
    args = {"k": None, "gamma": 0.1} | kwargs
    with pytest.raises(error, match=match):
        oc.cardinality_ot(a, b, C, args.pop("k"), args.pop("gamma"), **args)


def test_value_convention_against_pot_solve(backend):
    # POT's ot.solve(reg_type="L2") minimizes <C, T> + reg/2 |T|^2 but reports
    # <C, T> + reg |T|^2 as its value; otcore's value is its own objective
    a, b, C, _, _ = random_problem(np.random.default_rng(9), 20, 15)
    gamma = 0.5
    pot = ot.solve(C, a, b, reg=gamma, reg_type="L2")
    T_pot = np.asarray(pot.plan)
    assert pot.value == pytest.approx(np.sum(C * T_pot) + gamma * np.sum(T_pot**2), rel=1e-12)
    res, _, _, T = solve(backend, a, b, C, None, gamma)
    # POT's plan is accurate to ~1e-5 here; the difference of conventions is far larger
    half = 0.5 * gamma * np.sum(T_pot**2)
    assert half > 1e-3
    assert res.value == pytest.approx(pot.value - half, abs=5e-5)
    assert res.value == pytest.approx(np.sum(C * T) + 0.5 * gamma * np.sum(T**2), abs=1e-10)
