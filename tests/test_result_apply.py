"""Using a plan without forming it: ``OTResult.apply`` and ``barycentric_projection``
against the dense formulas, on every backend, for dense costs, point clouds and sparse
(cardinality) plans."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_allclose

import otcore as oc

from .problems import histogram


def solved(backend, kind, rng, n=37, m=29):
    x, y = rng.normal(size=(n, 2)), rng.normal(size=(m, 2)) + 1.0
    a, b = histogram(rng, n, zeros=2), histogram(rng, m)
    if kind == "dense":
        C = ((x[:, None] - y[None]) ** 2).sum(-1)
        cost = backend.asarray(C / C.max())
    else:
        cost = oc.PointCloud(backend.asarray(x), backend.asarray(y), "euclidean", scale=3.0)
    res = oc.sinkhorn(backend.asarray(a), backend.asarray(b), cost, eps=0.05)
    return res, backend.to_numpy(res.plan), x, y


@pytest.mark.parametrize("kind", ["dense", "cloud"])
def test_apply_equals_the_dense_product(backend, kind, rng):
    res, P, _, _ = solved(backend, kind, rng)
    n, m = P.shape
    for axis, size, mat in ((1, m, P), (0, n, P.T)):
        v = rng.normal(size=size)
        V = rng.normal(size=(size, 4))
        got_v = res.apply(backend.asarray(v), axis=axis)
        got_V = res.apply(backend.asarray(V), axis=axis)
        backend.check_array(got_v, np.float64, (mat.shape[0],))
        backend.check_array(got_V, np.float64, (mat.shape[0], 4))
        assert_allclose(backend.to_numpy(got_v), mat @ v, rtol=1e-12, atol=1e-15)
        assert_allclose(backend.to_numpy(got_V), mat @ V, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("kind", ["dense", "cloud"])
def test_barycentric_projection_equals_the_formula(backend, kind, rng):
    res, P, x, y = solved(backend, kind, rng)
    feats = rng.normal(size=(P.shape[1], 3))
    got = backend.to_numpy(res.barycentric_projection(backend.asarray(feats)))
    rows = P.sum(axis=1)
    keep = rows > 0
    assert_allclose(got[keep], (P @ feats)[keep] / rows[keep, None], rtol=1e-12, atol=1e-14)
    assert np.isnan(got[~keep]).all() and (~keep).sum() == 2  # zero weights: no barycentre
    back = backend.to_numpy(res.barycentric_projection(backend.asarray(rng.normal(
        size=P.shape[0])), axis=0))
    assert back.shape == (P.shape[1],)
    if kind == "cloud":  # default features: the other cloud's points
        default = backend.to_numpy(res.barycentric_projection())
        assert_allclose(default[keep], (P @ y)[keep] / rows[keep, None], rtol=1e-12)
        onto_y = backend.to_numpy(res.barycentric_projection(axis=0))
        assert_allclose(onto_y, (P.T @ x) / P.sum(axis=0)[:, None], rtol=1e-12)
    else:
        with pytest.raises(ValueError, match="features are required"):
            res.barycentric_projection()


def test_sparse_plans_apply_as_sparse_matrices(rng):
    x, y = rng.normal(size=(30, 2)), rng.normal(size=(20, 2))
    C = ((x[:, None] - y[None]) ** 2).sum(-1)
    with pytest.warns(oc.ConvergenceWarning, match="kink"):
        res = oc.cardinality_ot(None, None, C / C.max(), k=2, gamma=0.1)
    P = res.plan.toarray()
    v = rng.normal(size=(20, 2))
    assert_allclose(res.apply(v), P @ v, rtol=1e-13)
    assert_allclose(res.apply(np.ones(30), axis=0), P.sum(axis=0), rtol=1e-13)
    proj = res.barycentric_projection(y)
    rows = P.sum(axis=1)
    assert_allclose(proj[rows > 0], (P @ y)[rows > 0] / rows[rows > 0, None], rtol=1e-12)


@pytest.mark.parametrize(
    ("v", "axis", "exc", "match"),
    [
        (np.ones(5), 1, ValueError, r"v must have shape \(29,\) or \(29, k\)"),
        (np.ones((37, 2)), 1, ValueError, r"v must have shape \(29,\)"),
        (np.ones((29, 2, 2)), 1, ValueError, "v must have shape"),
        (np.full(29, np.nan), 1, ValueError, "v contains NaN"),
        (np.ones(29), 2, ValueError, "axis must be 0"),
        (np.ones(29), True, ValueError, "axis must be 0"),
        ("abc", 1, TypeError, "v: expected an array"),
    ],
)
def test_apply_bad_input(v, axis, exc, match, rng):
    res = oc.sinkhorn(None, None, rng.random((37, 29)), eps=0.1)
    with pytest.raises(exc, match=match):
        res.apply(v, axis=axis)


def test_apply_refuses_another_library(rng):
    import array_api_strict as xs

    res = oc.sinkhorn(None, None, rng.random((7, 5)), eps=0.1)
    with pytest.raises(TypeError, match="comes from array_api_strict but the problem from "
                                        "numpy"):
        res.apply(xs.ones(5, dtype=xs.float64))


def test_apply_accepts_lists_and_casts_to_the_problem_dtype(rng):
    C = rng.random((4, 3)).astype(np.float32)
    res = oc.sinkhorn(None, None, C, eps=0.1)
    out = res.apply([1, 2, 3])
    assert out.dtype == np.float32
    assert_allclose(out, res.plan @ np.array([1.0, 2.0, 3.0], dtype=np.float32), rtol=1e-6)


def test_sparse_plan_of_a_point_cloud_projects_onto_its_points(rng):
    x, y = rng.normal(size=(12, 2)), rng.normal(size=(10, 2))
    with pytest.warns(oc.ConvergenceWarning, match="kink"):
        res = oc.cardinality_ot(None, None, oc.PointCloud(x, y), k=2, gamma=0.1)
    P = res.plan.toarray()
    rows = P.sum(axis=1)
    proj = res.barycentric_projection()
    assert_allclose(proj[rows > 0], (P @ y)[rows > 0] / rows[rows > 0, None], rtol=1e-12)
