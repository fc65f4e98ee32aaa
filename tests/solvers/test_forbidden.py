"""``+inf`` cost entries forbid pairs: the plan is exactly zero there, and the rest is the
plan of the same problem with a large finite cost there (POT, run to tight tolerance)."""

from __future__ import annotations

import numpy as np
import ot
import pytest
from numpy.testing import assert_allclose

import otcore as oc


@pytest.fixture
def forbidden_problem():
    rng = np.random.default_rng(30)
    C = rng.random((30, 25))
    C[rng.random(C.shape) < 0.3] = np.inf
    a = rng.uniform(0.5, 1.5, 30)
    b = rng.uniform(0.5, 1.5, 25)
    return a / a.sum(), b / b.sum(), C


def test_forbidden_pairs_are_exactly_zero(backend, forbidden_problem):
    a, b, C = forbidden_problem
    res = oc.sinkhorn(backend.asarray(a), backend.asarray(b), backend.asarray(C), 0.05,
                      tol=1e-13)
    P = backend.to_numpy(res.plan)
    assert res.converged and (P[np.isinf(C)] == 0).all()
    big = np.where(np.isinf(C), 1e3, C)  # exp(-1e3 / 0.05) is 0 in float64
    ref = ot.sinkhorn(a, b, big, 0.05, method="sinkhorn_log", stopThr=1e-15,
                      numItermax=100_000)
    assert_allclose(P, ref, rtol=1e-8, atol=1e-14)
    assert np.isfinite([res.cost, res.value, res.marginal_error]).all()
    assert res.cost == pytest.approx(float(np.sum(np.where(P > 0, C, 0) * P)), rel=1e-12)


def test_sns_and_the_entry_point_keep_them_zero(forbidden_problem):
    a, b, C = forbidden_problem
    res = oc.sinkhorn_newton_sparse(a, b, C, 5e-3, tol=1e-11)
    assert res.converged and (res.plan[np.isinf(C)] == 0).all()
    ref = oc.sinkhorn(a, b, C, 5e-3, tol=1e-11)
    assert_allclose(res.plan, ref.plan, rtol=1e-7, atol=1e-13)
    assert oc.solve(a, b, C, eps=5e-3).method == "sinkhorn_newton_sparse"


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda C: C.__setitem__((3, slice(None)), np.inf), "C: row 3 has no finite entry"),
        (lambda C: C.__setitem__((slice(None), 2), np.inf), "C: column 2 has no finite entry"),
        (lambda C: C.__setitem__((0, 0), -np.inf), "C contains NaN or -inf values"),
        (lambda C: C.__setitem__((0, 0), np.nan), "C contains NaN or -inf values"),
    ],
)
def test_bad_infinite_costs(edit, match):
    C = np.random.default_rng(31).random((6, 5))
    edit(C)
    with pytest.raises(ValueError, match=match):
        oc.sinkhorn(None, None, C, 0.1)


def test_cardinality_refuses_infinite_costs(forbidden_problem):
    a, b, C = forbidden_problem
    with pytest.raises(ValueError, match=r"cardinality_ot does not take \+inf costs"):
        oc.cardinality_ot(a, b, C, 2, 0.1)
