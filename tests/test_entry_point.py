"""``oc.solve`` picks the method from the problem, says why, and agrees with the method
called directly."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_allclose

import otcore as oc

from .problems import random_problem


@pytest.fixture(scope="module")
def problem():
    a, b, C, x, y = random_problem(np.random.default_rng(21), 120, 100)
    return a, b, C, x, y


def test_large_eps_picks_sinkhorn(problem):
    a, b, C, _, _ = problem
    res = oc.solve(a, b, C, eps=0.05)
    ref = oc.sinkhorn(a, b, C, 0.05)
    assert res.method == "sinkhorn" and "Sinkhorn converges" in res.extra["choice"]
    assert_allclose(res.plan, ref.plan, rtol=1e-10, atol=1e-15)


def test_small_eps_picks_sns(problem):
    a, b, C, _, _ = problem
    res = oc.solve(a, b, C, eps=2e-3)
    ref = oc.sinkhorn_newton_sparse(a, b, C, 2e-3)
    assert res.method == "sinkhorn_newton_sparse" and "SNS" in res.extra["choice"]
    assert res.converged
    assert_allclose(res.plan, ref.plan, rtol=1e-10, atol=1e-15)
    with pytest.warns(oc.ConvergenceWarning):  # Sinkhorn alone, in the same budget
        slow = oc.sinkhorn(a, b, C, 2e-3, max_iter=res.n_iter)
    assert slow.marginal_error > 100 * res.marginal_error


def test_point_clouds_use_the_bounding_box_scale(problem):
    *_, x, y = problem
    res = oc.solve(None, None, oc.PointCloud(x, y), eps=0.5)
    assert res.method == "sinkhorn"
    res_small = oc.solve(None, None, oc.PointCloud(x, y), eps=0.02)
    assert res_small.method == "sinkhorn_newton_sparse"


def test_unbalanced_and_cardinality_and_forced(problem):
    a, b, C, _, _ = problem
    res = oc.solve(a, 1.5 * b, C, eps=1e-3, reg_m=0.1)
    assert res.method == "sinkhorn" and "unbalanced" in res.extra["choice"]
    assert res.reg_m == (0.1, 0.1)
    with pytest.warns(oc.ConvergenceWarning, match="kink"):
        card = oc.solve(a, b, C, k=2, gamma=0.1)
    with pytest.warns(oc.ConvergenceWarning, match="kink"):
        ref = oc.cardinality_ot(a, b, C, 2, 0.1)
    assert card.method.startswith("cardinality_ot") and card.value == ref.value
    forced = oc.solve(a, b, C, eps=2e-3, method="sinkhorn", tol=1e-6)
    assert forced.method == "sinkhorn" and forced.extra["choice"] == "forced"


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({}, ValueError, "eps is required"),
        ({"eps": 0.1, "method": "newton"}, ValueError, "method must be one of"),
        ({"gamma": 0.1}, ValueError, "cardinality_ot needs k"),
        ({"eps": -1.0}, ValueError, "eps must be a finite number > 0"),
    ],
)
def test_bad_input(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        oc.solve(None, None, np.ones((3, 2)), **kwargs)
