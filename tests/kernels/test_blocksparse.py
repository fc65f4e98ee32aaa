"""The block-sparse capability of the contract (truncated kernels over kept pairs of
clusters): numba_cpu and array_api against the dense formulas with the dropped pairs'
plan entries set to 0, on random clusters and random kept pairs."""

from __future__ import annotations

import array_api_strict as xs
import numpy as np
import pytest
from numpy.testing import assert_allclose

import otcore as oc
from otcore.backends import ArrayAPIBackend, BlockLayout, NumbaBackend

BACKENDS = {"numba_cpu": (NumbaBackend(), np.asarray, np.asarray),
            "array_api": (ArrayAPIBackend(xs), xs.asarray, np.from_dlpack)}


def random_layout(rng, n, m, K, L, density):
    """Random clusters (of any sizes, one point included) and random kept pairs (each
    cluster keeps at least one pair)."""

    def clusters(size, k):
        cuts = np.sort(rng.choice(np.arange(1, size), k - 1, replace=False))
        return rng.permutation(size), np.concatenate([[0], cuts, [size]])

    (xo, xs_), (yo, ys_) = clusters(n, K), clusters(m, L)
    keep = rng.random((K, L)) < density
    keep[np.arange(K), rng.integers(0, L, K)] = True
    keep[rng.integers(0, K, L), np.arange(L)] = True
    ptr = np.concatenate([[0], np.cumsum(keep.sum(axis=1))])
    layout = BlockLayout(xo, xs_, yo, ys_, ptr, np.nonzero(keep)[1])
    lx, ly = np.empty(n, int), np.empty(m, int)
    lx[xo] = np.repeat(np.arange(K), np.diff(xs_))
    ly[yo] = np.repeat(np.arange(L), np.diff(ys_))
    return layout, keep[lx[:, None], ly[None, :]]


@pytest.mark.parametrize("name", sorted(BACKENDS))
@pytest.mark.parametrize("cost", ["sqeuclidean", "euclidean", ("pnorm", 1.5)])
def test_block_sparse_ops_match_masked_formulas(name, cost):
    rng = np.random.default_rng(3)
    n, m, eps = 700, 650, 0.05
    x, y = rng.random((n, 2)), rng.random((m, 2))
    layout, mask = random_layout(rng, n, m, 40, 35, 0.3)
    bk, to_xp, to_np = BACKENDS[name]
    geom = oc.PointCloud(to_xp(x), to_xp(y), cost, scale=1.7)
    ops = bk.bind(geom).block_sparse(layout)
    C = oc.PointCloud(x, y, cost, scale=1.7).cost_matrix()
    Cm = np.where(mask, C, np.inf)
    hf, hg = 0.1 * rng.normal(size=n), 0.1 * rng.normal(size=m)
    hf[5] = -np.inf

    def lse(z, axis):
        mx = z.max(axis=axis, keepdims=True)
        return (mx + np.log(np.exp(z - mx).sum(axis=axis, keepdims=True))).squeeze(axis)

    assert_allclose(to_np(ops.softmin(to_xp(hg), eps, 1)), -eps * lse((hg - Cm) / eps, 1),
                    rtol=1e-12)
    assert_allclose(to_np(ops.softmin(to_xp(hf), eps, 0)),
                    -eps * lse((hf[:, None] - Cm) / eps, 0), rtol=1e-12)
    P = np.where(mask, np.exp((hf[:, None] + hg[None, :] - C) / eps), 0.0)
    stats = ops.plan_stats(to_xp(hf), to_xp(hg), eps)
    assert_allclose(to_np(stats.rows), P.sum(1), rtol=1e-12, atol=1e-300)
    assert_allclose(to_np(stats.cols), P.sum(0), rtol=1e-12)
    assert stats.cost == pytest.approx(np.sum(P * C), rel=1e-12)
    assert_allclose(to_np(ops.plan(to_xp(hf), to_xp(hg), eps)), P, rtol=1e-12, atol=1e-300)
    V, U = rng.normal(size=(m, 3)), rng.normal(size=(n, 2))
    assert_allclose(to_np(ops.apply(to_xp(hf), to_xp(hg), eps, to_xp(V), 1)), P @ V,
                    rtol=1e-11, atol=1e-13 * P.sum())
    assert_allclose(to_np(ops.apply(to_xp(hf), to_xp(hg), eps, to_xp(U), 0)), P.T @ U,
                    rtol=1e-11, atol=1e-13 * P.sum())
    # one alternating step of the iterator: f = T(g + eps log b), g = T(f + eps log a)
    la, lb = np.log(np.full(n, 1 / n)), np.log(np.full(m, 1 / m))
    f0, g0 = -eps * lse((hg - Cm) / eps, 1), -eps * lse((hf[:, None] - Cm) / eps, 0)
    f1, g1 = ops.sinkhorn_iterator(to_xp(la), to_xp(lb), eps).step(to_xp(f0), to_xp(g0))
    f_want = -eps * lse((g0 + eps * lb - Cm) / eps, 1)
    g_want = -eps * lse((f_want[:, None] + eps * la[:, None] - Cm) / eps, 0)
    assert_allclose(to_np(f1), f_want, rtol=1e-12, atol=1e-14)
    assert_allclose(to_np(g1), g_want, rtol=1e-12, atol=1e-14)


def test_block_sparse_needs_a_point_cloud():
    layout, _ = random_layout(np.random.default_rng(0), 10, 10, 2, 2, 1.0)
    for bk in (NumbaBackend(), ArrayAPIBackend(np)):
        with pytest.raises(TypeError, match="PointCloud"):
            bk.bind(oc.DenseCost(np.ones((10, 10)))).block_sparse(layout)
