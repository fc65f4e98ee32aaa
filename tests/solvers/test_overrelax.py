"""Over-relaxed Sinkhorn: the relaxation factor's closed forms, its re-estimation from
the observed rate, and the loop's fixed point and iteration count against plain
Sinkhorn."""

from __future__ import annotations

import math

import numpy as np
import pytest
from numpy.testing import assert_allclose

import otcore as oc
from otcore.solvers._overrelax import _retuned, overrelaxed_loop, relaxation_factor
from otcore.solvers._problem import make_problem
from otcore.solvers.sinkhorn import sinkhorn_loop


def test_relaxation_factor():
    assert relaxation_factor(0.9) == pytest.approx(2 / (1 + math.sqrt(0.1)))
    assert relaxation_factor(0.0) == 1.0  # nothing to accelerate
    assert relaxation_factor(0.9999) == 1.9  # capped
    assert relaxation_factor(1.0) == relaxation_factor(float("nan")) == 1.0


@pytest.mark.parametrize("rho", [0.8, 0.95, 0.99])
def test_retuned_recovers_the_plain_rate(rho):
    # SOR below the optimum: the rate is the larger root r of (r + w - 1)^2 = r w^2 rho
    omega = 1.2
    p = 2 * (omega - 1) - omega**2 * rho
    r = (-p + math.sqrt(p * p - 4 * (omega - 1) ** 2)) / 2
    errors = [(k, 0.5 * r**k) for k in range(4)]
    assert _retuned(omega, errors) == pytest.approx(relaxation_factor(rho), rel=1e-9)
    # a rate at or faster than omega - 1 (at or above the optimum) leaves omega alone
    fast = [(k, 0.5 * (omega - 1) ** k) for k in range(4)]
    assert _retuned(omega, fast) == omega


def test_same_fixed_point_in_fewer_iterations(rng):
    x, y = rng.random((300, 2)), rng.random((250, 2)) ** 2
    geom = oc.PointCloud(x, y)
    eps, tol = 2e-3, 1e-9
    prob = make_problem(None, None, geom)
    f0 = np.zeros(300)
    f, g, n_fast, errors = overrelaxed_loop(prob, eps, f0, np.zeros(250), tol=tol,
                                            max_iter=5000, first_iter=0)
    assert errors[-1][1] < tol
    # the recorded error is the exact L1 marginal error of the returned potentials
    stats = prob.ops.plan_stats(f - eps * np.log(300), g - eps * np.log(250), eps)
    exact = np.abs(stats.rows - 1 / 300).sum() + np.abs(stats.cols - 1 / 250).sum()
    assert errors[-1][1] == pytest.approx(exact, rel=1e-6, abs=1e-13)  # rounding
    f, g, n_total, met, _ = sinkhorn_loop(prob, eps, tol=tol, max_iter=5000, check_every=1,
                                          f=f, g=g, first_iter=n_fast)
    _, _, n_plain, plain_met, _ = sinkhorn_loop(prob, eps, tol=tol, max_iter=5000,
                                                check_every=1, f=f0)
    assert met and plain_met
    assert n_total < 0.5 * n_plain
    ref = oc.sinkhorn(None, None, geom, eps, tol=1e-12)
    c = np.mean(f - ref.f)
    assert_allclose(f, ref.f + c, atol=1e-8)
    assert_allclose(g, ref.g - c, atol=1e-8)
