"""Multiscale Sinkhorn against the full online solver: the same fixed point up to the
truncation tolerance, marginals within tol, the ignored mass within its bound, clusters
of one point and duplicated points, every backend (cupy_gpu where a GPU exists), the
fallback, and bad input."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from numpy.testing import assert_allclose

import otcore as oc


def clouds(rng, n, d):
    """A uniform source and a skewed target (``u**2``): a non-trivial map."""
    return rng.random((n, d)), rng.random((n + n // 7, d)) ** 2


def compare(x, y, eps_rel, tol, **kwargs):
    """Solve with multiscale and online Sinkhorn; check the potentials (to 1e-6 of the
    cost scale), the reported error bound and the full plan's exact marginal error."""
    geom = oc.PointCloud(x, y)
    scale = oc.get_backend(x).bind(geom).cost_scale()
    eps = eps_rel * scale
    res = oc.multiscale_sinkhorn(None, None, geom, eps, tol=tol, **kwargs)
    ref = oc.sinkhorn(None, None, geom, eps, tol=tol, eps_scaling=0.5)
    assert res.converged and ref.converged
    assert res.method == "multiscale_sinkhorn"
    c = np.mean(res.f - ref.f)
    assert_allclose(res.f, ref.f + c, rtol=0, atol=1e-6 * scale)
    assert_allclose(res.g, ref.g - c, rtol=0, atol=1e-6 * scale)
    bound = res.extra["ignored_mass_bound"]
    assert bound <= tol / 10
    assert res.marginal_error == pytest.approx(res.extra["kept_marginal_error"] + 2 * bound)
    assert res.marginal_error <= tol
    # the full (untruncated) plan of the returned potentials meets tol too
    full = oc.get_backend(x).bind(geom).plan_stats(res.f - eps * np.log(len(x)),
                                                   res.g - eps * np.log(len(y)), eps)
    err = np.abs(full.rows - 1 / len(x)).sum() + np.abs(full.cols - 1 / len(y)).sum()
    assert err <= tol
    return res


@pytest.mark.parametrize("d", [2, 3])
def test_matches_online_solver(rng, d):
    res = compare(*clouds(rng, 1500, d), 5e-3, 1e-8, n_clusters=120)
    assert res.extra["kept_fraction"] < 0.9  # something was truncated


@pytest.mark.slow
@pytest.mark.parametrize("d", [2, 3])
def test_matches_online_solver_20k(rng, d):
    compare(*clouds(rng, 20_000, d), 1e-2, 1e-8)


def test_ignored_mass_is_within_the_bound(rng):
    x, y = clouds(rng, 800, 2)
    res = oc.multiscale_sinkhorn(None, None, oc.PointCloud(x, y), 2e-3, tol=1e-6,
                                 truncation=1e-8, n_clusters=80)
    assert res.converged and res.extra["kept_fraction"] < 0.8
    C = oc.PointCloud(x, y).cost_matrix()
    full = np.exp((res.f[:, None] + res.g[None, :] - C) / 2e-3) / (len(x) * len(y))
    ignored = full.sum() - res.plan.sum()
    assert 0 < ignored <= res.extra["ignored_mass_bound"] <= 1e-8
    kept = res.plan > 0
    assert_allclose(res.plan[kept], full[kept], rtol=1e-12)


def test_clusters_of_one_point_and_duplicated_points(rng):
    base = rng.random((60, 2))
    x = np.repeat(base, 5, axis=0)  # every point five times
    y = np.concatenate([rng.random((250, 2)) * 0.3, [[3.0, 3.0], [-2.0, 1.0]]])  # far ones
    geom = oc.PointCloud(x, y)
    res = oc.multiscale_sinkhorn(None, None, geom, 0.01, tol=1e-9, n_clusters=400)
    ref = oc.sinkhorn(None, None, geom, 0.01, tol=1e-9, eps_scaling=0.5)
    assert res.converged
    assert min(res.extra["n_clusters"]) >= 60
    c = np.mean(res.f - ref.f)
    assert_allclose(res.f, ref.f + c, atol=1e-7)
    assert_allclose(res.g, ref.g - c, atol=1e-7)
    # identical points get identical potentials
    assert_allclose(res.f.reshape(60, 5), res.f.reshape(60, 5)[:, :1].repeat(5, 1), atol=1e-12)
    same = oc.multiscale_sinkhorn(None, None, oc.PointCloud(np.zeros((50, 2)),
                                                            np.zeros((40, 2))), 0.1)
    assert same.converged and same.extra["n_clusters"] == (1, 1)


def test_duplicates_are_merged_exactly(backend, rng):
    # quantized clouds: every point repeated 1 to 4 times, one zero weight, one distinct
    # point whose copies all have zero weight
    x = np.repeat(rng.integers(0, 12, (90, 2)) / 12, rng.integers(1, 5, 90), axis=0)
    y = np.repeat(rng.integers(0, 10, (70, 2)) / 10, rng.integers(1, 5, 70), axis=0) ** 2
    x = np.concatenate([x, [[2.0, 2.0], [2.0, 2.0]]])
    a = rng.uniform(0.5, 1, len(x))
    a[3], a[-2:] = 0.0, 0.0
    a /= a.sum()
    b = rng.uniform(0.5, 1, len(y))
    b /= b.sum()
    kw = dict(tol=1e-9, truncation=1e-13, n_clusters=30)  # both plans to 1e-13
    geom = oc.PointCloud(backend.asarray(x), backend.asarray(y))
    res = oc.multiscale_sinkhorn(backend.asarray(a), backend.asarray(b), geom, 5e-3, **kw)
    ref = oc.multiscale_sinkhorn(a, b, oc.PointCloud(x, y), 5e-3, merge_duplicates=False,
                                 **kw)
    assert res.converged and ref.converged and "distinct_points" not in ref.extra
    assert res.extra["distinct_points"] == (len(np.unique(x, axis=0)), len(np.unique(y, axis=0)))
    np_ = backend.to_numpy
    c = np.mean(np_(res.f)[a > 0] - ref.f[a > 0])
    assert_allclose(np_(res.f)[a > 0], ref.f[a > 0] + c, atol=1e-8)
    assert_allclose(np_(res.g), ref.g - c, atol=1e-8)
    # the plan of the original points, its products and statistics
    plan = ref.plan
    assert_allclose(np_(res.plan), plan, rtol=1e-6, atol=1e-12)
    for got, want in zip(res.marginals, (plan.sum(1), plan.sum(0)), strict=True):
        assert_allclose(np_(got), want, rtol=1e-6, atol=1e-13)
    assert res.cost == pytest.approx(ref.cost, rel=1e-8)
    assert res.value == pytest.approx(ref.value, rel=1e-8)
    assert res.marginal_error <= 1e-9
    u, v = rng.normal(size=(len(x), 3)), rng.normal(size=len(y))
    assert_allclose(np_(res.apply(backend.asarray(v))), plan @ v, rtol=1e-6, atol=1e-12)
    assert_allclose(np_(res.apply(backend.asarray(u), axis=0)), plan.T @ u, rtol=1e-6,
                    atol=1e-12)
    proj = np_(res.barycentric_projection())
    assert np.isnan(proj[a == 0]).all()
    assert_allclose(proj[a > 0], ref.barycentric_projection()[a > 0], rtol=1e-6)
    assert res.plan.shape == (len(x), len(y))


def test_merged_result_speaks_the_callers_library(rng):
    torch = pytest.importorskip("torch")
    x = np.repeat(rng.random((40, 2)), 3, axis=0)
    y = rng.random((50, 2))
    res = oc.multiscale_sinkhorn(None, None, oc.PointCloud(torch.tensor(x), torch.tensor(y)),
                                 0.01, tol=1e-9)
    ref = oc.multiscale_sinkhorn(None, None, oc.PointCloud(x, y), 0.01, tol=1e-9)
    assert res.extra["distinct_points"] == (40, 50)
    assert isinstance(res.f, torch.Tensor) and isinstance(res.marginals[0], torch.Tensor)
    v = rng.normal(size=50)
    out = res.apply(torch.tensor(v))
    assert isinstance(out, torch.Tensor)
    assert_allclose(out.numpy(), ref.apply(v), rtol=1e-12)
    proj = res.barycentric_projection()
    assert isinstance(proj, torch.Tensor)
    assert_allclose(proj.numpy(), ref.barycentric_projection(), rtol=1e-12)


def test_backends_agree(backend, rng):
    x, y = clouds(rng, 300, 2)
    a = rng.uniform(0.5, 1, 300)
    a[7] = 0.0
    a /= a.sum()
    res = oc.multiscale_sinkhorn(backend.asarray(a), None,
                                 oc.PointCloud(backend.asarray(x), backend.asarray(y)), 4e-3,
                                 tol=1e-8, n_clusters=40)
    ref = oc.multiscale_sinkhorn(a, None, oc.PointCloud(x, y), 4e-3, tol=1e-8, n_clusters=40)
    # every backend has block-sparse kernels: no fallback (cupy_gpu: the CUDA kernels,
    # which the emulated GPU tests run to 4e-15 of numba_cpu here)
    assert res.method == "multiscale_sinkhorn" and "multiscale" not in res.extra
    assert res.backend == backend.name and res.converged
    assert_allclose(backend.to_numpy(res.f), ref.f, rtol=1e-10, atol=1e-12)
    assert_allclose(backend.to_numpy(res.g), ref.g, rtol=1e-10, atol=1e-12)
    proj = backend.to_numpy(res.barycentric_projection())
    assert_allclose(proj, ref.barycentric_projection(), rtol=1e-10)
    v = rng.normal(size=y.shape[0])
    assert_allclose(backend.to_numpy(res.apply(backend.asarray(v))), ref.plan @ v, rtol=1e-9,
                    atol=1e-15)


def test_high_dimension_falls_back_to_online_sinkhorn(rng):
    x, y = rng.normal(size=(200, 8)), rng.normal(size=(150, 8))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = oc.multiscale_sinkhorn(None, None, oc.PointCloud(x, y), 1.0)
    assert res.method == "sinkhorn" and res.converged
    assert "dimension 8" in res.extra["multiscale"]


def test_solve_picks_multiscale_for_large_clouds(rng):
    x, y = rng.random((10_000, 2)), rng.random((10_000, 2))
    res = oc.solve(None, None, oc.PointCloud(x, y), eps=0.2, tol=1e-4)
    assert res.method == "multiscale_sinkhorn" and res.converged
    assert "multiscale" in res.extra["choice"]
    small = oc.solve(None, None, oc.PointCloud(x[:500], y[:500]), eps=0.2,
                     method="multiscale_sinkhorn")
    assert small.method == "multiscale_sinkhorn" and small.extra["choice"] == "forced"


@pytest.mark.parametrize("kwargs, match", [
    ({"eps": 0.0}, "eps"),
    ({"truncation": 1e-3, "tol": 1e-3}, "truncation"),
    ({"truncation": -1.0}, "truncation"),
    ({"n_clusters": 0}, "n_clusters"),
    ({"eps_scaling": 1.5}, "eps_scaling"),
    ({"max_iter": 0}, "max_iter"),
])
def test_bad_input(rng, kwargs, match):
    x, y = rng.random((30, 2)), rng.random((20, 2))
    args = {"eps": 0.1, **kwargs}
    eps = args.pop("eps")
    with pytest.raises(ValueError, match=match):
        oc.multiscale_sinkhorn(None, None, oc.PointCloud(x, y), eps, **args)


def test_merge_duplicates_must_be_a_bool(rng):
    x, y = rng.random((30, 2)), rng.random((20, 2))
    with pytest.raises(TypeError, match="merge_duplicates"):
        oc.multiscale_sinkhorn(None, None, oc.PointCloud(x, y), 0.1, merge_duplicates="no")


def test_dense_cost_is_refused(rng):
    with pytest.raises(TypeError, match="PointCloud"):
        oc.multiscale_sinkhorn(None, None, rng.random((5, 4)), 0.1)


@pytest.mark.parametrize("cost", ["sqeuclidean", "euclidean", ("pnorm", 1.5)])
def test_every_block_mass_is_within_its_bound(rng, cost):
    # any potentials, not only optimal ones: the plan mass of every pair of clusters is
    # at most the bound; for the squared Euclidean cost the bilinear bound is the tighter
    from otcore.solvers._clusters import grid_cell, grid_clusters
    from otcore.solvers.multiscale import _PairBounds

    x, y = clouds(rng, 400, 3)
    geom = oc.PointCloud(x, y, cost, scale=2.0)
    a, b = rng.random(len(x)), rng.random(len(y))
    a, b = a / a.sum(), b / b.sum()
    cell, lo, hi = grid_cell([x, y], 30)
    cx, cy = (grid_clusters(p, w, geom.ground, cell, lo, hi) for p, w in ((x, a), (y, b)))
    bounds = _PairBounds(cx, cy, geom, x, y, np.log(a), np.log(b))
    f, g, eps = 0.2 * rng.normal(size=len(x)), 0.2 * rng.normal(size=len(y)), 0.01
    logb = bounds.log_bounds(f, g, eps)
    log_plan = (np.log(a)[:, None] + np.log(b)[None, :]
                + (f[:, None] + g[None, :] - geom.cost_matrix()) / eps)
    lab_x, lab_y = (np.repeat(np.arange(len(c.counts)), c.counts)[np.argsort(c.order)]
                    for c in (cx, cy))
    top = log_plan.max()
    mass = np.zeros(logb.shape)
    np.add.at(mass, (lab_x[:, None], lab_y[None, :]), np.exp(log_plan - top))
    with np.errstate(divide="ignore"):
        assert np.all(np.log(mass) + top <= logb + 1e-9)
    bilinear, bounds.bilinear = bounds.bilinear, None
    loose = bounds.log_bounds(f, g, eps)
    if bilinear is None:
        assert_allclose(logb, loose)
    else:  # tighter on most blocks, by many orders of magnitude on the far ones
        assert np.mean(logb < loose - 1.0) > 0.5


def test_kept_pairs_are_the_greedy_choice(rng):
    # the pairs dropped are the smallest bounds, as many as fit in the budget (the
    # selection skips sorting the tiny ones: same result as sorting them all)
    from otcore.solvers.multiscale import _PairBounds

    logb = rng.normal(size=(40, 30)) * 6.0 - 14.0
    logb[3, :] = -np.inf  # a cluster without mass
    for budget in (1e-12, 1e-8, 1e-5, 1e-2):
        keep, dropped = _PairBounds.keep(logb, budget)
        order = np.sort(logb.reshape(-1))
        count = int(np.searchsorted(np.cumsum(np.exp(order)), budget, side="right"))
        expected = logb > order[count - 1] if count else np.ones(logb.shape, dtype=bool)
        expected[np.arange(40), np.argmax(logb, axis=1)] = True
        expected[np.argmax(logb, axis=0), np.arange(30)] = True
        np.testing.assert_array_equal(keep, expected)
        assert dropped == pytest.approx(np.exp(logb[~expected]).sum(), rel=1e-12)
        assert dropped <= budget


def test_float32_meets_its_default_tol(rng):
    x = np.round(rng.random((1500, 3)) * 30) / 30  # quantized: merged duplicates too
    y = rng.random((1300, 3)) ** 2
    geom32 = oc.PointCloud(x.astype(np.float32), y.astype(np.float32))
    res = oc.multiscale_sinkhorn(None, None, geom32, 3e-3, n_clusters=150)
    ref = oc.multiscale_sinkhorn(None, None, oc.PointCloud(x, y), 3e-3, tol=1e-9,
                                 n_clusters=150)
    assert res.converged and res.f.dtype == np.float32 and res.marginal_error <= 1e-4
    assert res.extra["distinct_points"][0] < 1500
    c = np.mean(res.f - ref.f)
    # an L1 error of 1e-4 allows a point's own marginal a relative error of a few
    # percent, so its potential may be off by a few percent of eps (0.022 eps here)
    assert_allclose(res.f, ref.f + c, atol=0.05 * 3e-3)
    assert_allclose(res.g, ref.g - c, atol=0.05 * 3e-3)
