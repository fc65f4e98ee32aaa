"""The kernel contract, run through every backend on the same small problems and compared
with the reference implementation (:class:`~otcore.backends.ArrayAPIBackend` over NumPy).

Each backend is handed data in its own namespace; results come back to NumPy for the
comparison. The CuPy backend runs here when a GPU is present (marked ``gpu``).
"""

from __future__ import annotations

import array_api_strict as xs
import numpy as np
import pytest
from numpy.testing import assert_allclose

import otcore as oc
from otcore.backends import ArrayAPIBackend, NumbaBackend
from otcore.backends._contract import PlanMarginals, PlanStats, SparsePlan, TopK

REFERENCE = ArrayAPIBackend(np)


class Case:
    def __init__(self, name, backend, to_xp):
        self.name, self.backend, self.to_xp = name, backend, to_xp

    def to_np(self, x):
        if hasattr(x, "get"):
            return x.get()
        return np.asarray(x) if isinstance(x, np.ndarray) else np.from_dlpack(x)


@pytest.fixture(params=["numba_cpu", "array_api_strict",
                        pytest.param("cupy_gpu", marks=pytest.mark.gpu)])
def case(request):
    if request.param == "numba_cpu":
        return Case("numba_cpu", NumbaBackend(), np.asarray)
    if request.param == "array_api_strict":
        return Case("array_api_strict", ArrayAPIBackend(xs), xs.asarray)
    from otcore.backends.cupy_gpu import CupyBackend

    cupy = request.getfixturevalue("gpu_backend").xp  # skips without CuPy and a device
    return Case("cupy_gpu", CupyBackend(), cupy.asarray)


GEOMETRIES = ["dense", "sqeuclidean", "euclidean", "pnorm"]


def make(kind, to_xp, n=23, m=31, seed=0):
    """The same geometry, potentials and weights as NumPy and in the backend's namespace."""
    rng = np.random.default_rng(seed)
    x, y = rng.normal(size=(n, 3)), rng.normal(size=(m, 3))
    if kind == "dense":
        C = rng.random((n, m))
        geom_np, geom = oc.DenseCost(C), oc.DenseCost(to_xp(C))
    else:
        cost = ("pnorm", 1.5) if kind == "pnorm" else kind
        geom_np = oc.PointCloud(x, y, cost, scale=2.5)
        geom = oc.PointCloud(to_xp(x), to_xp(y), cost, scale=2.5)
    hf, hg = 0.3 * rng.normal(size=n), 0.3 * rng.normal(size=m)
    hf[3] = -np.inf  # a zero weight
    return geom_np, geom, hf, hg


@pytest.mark.parametrize("kind", GEOMETRIES)
def test_core_contract(case, kind):
    geom_np, geom, hf, hg = make(kind, case.to_xp)
    ref, ops = REFERENCE.bind(geom_np), case.backend.bind(geom)
    X = case.to_xp
    eps = 0.2
    C = ref.cost_matrix()
    assert_allclose(case.to_np(ops.cost_matrix()), C, rtol=1e-13, atol=1e-14)
    assert ops.cost_scale() >= np.abs(C).max() * (1 - 1e-12)
    for axis, h in ((1, hg), (0, hf)):
        assert_allclose(case.to_np(ops.softmin(X(h), eps, axis)),
                        ref.softmin(h, eps, axis), rtol=1e-12, atol=1e-13)
    stats = ops.plan_stats(X(hf), X(hg), eps)
    want = ref.plan_stats(hf, hg, eps)
    assert isinstance(stats, PlanStats)
    assert_allclose(case.to_np(stats.rows), want.rows, rtol=1e-12, atol=1e-300)
    assert_allclose(case.to_np(stats.cols), want.cols, rtol=1e-12, atol=1e-300)
    assert stats.cost == pytest.approx(want.cost, rel=1e-12)
    P = ref.plan(hf, hg, eps)
    assert_allclose(P, np.exp((hf[:, None] + hg[None, :] - C) / eps), rtol=1e-13, atol=1e-300)
    assert_allclose(case.to_np(ops.plan(X(hf), X(hg), eps)), P, rtol=1e-12, atol=1e-300)
    rng = np.random.default_rng(1)
    for k in (1, 3):
        V, U = rng.normal(size=(C.shape[1], k)), rng.normal(size=(C.shape[0], k))
        assert_allclose(case.to_np(ops.apply(X(hf), X(hg), eps, X(V), 1)), P @ V,
                        rtol=1e-12, atol=1e-14 * np.abs(P).sum())
        assert_allclose(case.to_np(ops.apply(X(hf), X(hg), eps, X(U), 0)), P.T @ U,
                        rtol=1e-12, atol=1e-14 * np.abs(P).sum())
    i, j = np.array([0, 5, 22, 7]), np.array([30, 0, 4, 7])
    assert_allclose(case.to_np(ops.cost_entries(X(i), X(j))), C[i, j], rtol=1e-13)


@pytest.mark.parametrize("kind", GEOMETRIES)
@pytest.mark.parametrize("symmetric", [False, True])
def test_sinkhorn_iterator_step(case, kind, symmetric):
    geom_np, geom, hf, hg = make(kind, case.to_xp, n=23, m=23 if symmetric else 31)
    ref, ops = REFERENCE.bind(geom_np), case.backend.bind(geom)
    X, eps = case.to_xp, 0.2
    rng = np.random.default_rng(2)
    a = rng.uniform(0.5, 1.0, size=hf.shape[0])
    a[2] = 0.0
    a /= a.sum()
    b = rng.uniform(0.5, 1.0, size=hg.shape[0])
    b /= b.sum()
    with np.errstate(divide="ignore"):
        la, lb = np.log(a), np.log(b)
    f, g = hf.copy(), hg.copy()
    f[3] = 0.0
    want = ref.sinkhorn_iterator(la, lb, eps, symmetric)
    got = ops.sinkhorn_iterator(X(la), X(lb), eps, symmetric)
    for _ in range(3):  # state carried between steps must not change the iterates
        f_ref, g_ref = want.step(f, g)
        f_new, g_new = got.step(X(f), X(g))
        assert_allclose(case.to_np(f_new), f_ref, rtol=1e-12, atol=1e-13)
        assert_allclose(case.to_np(g_new), g_ref, rtol=1e-12, atol=1e-13)
        f, g = f_ref, g_ref


def test_newton_group(case):
    if case.backend.sparse_linalg() is None:
        pytest.skip("this backend has no sparse linear algebra (no Newton group)")
    geom_np, geom, hf, hg = make("sqeuclidean", case.to_xp)
    ref, ops = REFERENCE.bind(geom_np), case.backend.bind(geom)
    X, xp, eps = case.to_xp, case.backend.xp, 0.05
    out = xp.empty(geom.shape, dtype=xp.float64)
    pm = ops.plan_marginals(X(hf), X(hg), eps, out)
    want = ref.plan_marginals(hf, hg, eps, np.empty(geom.shape))
    assert isinstance(pm, PlanMarginals) and pm.plan is out
    for got_v, want_v in zip(pm, want, strict=True):
        assert_allclose(case.to_np(got_v), want_v, rtol=1e-12, atol=1e-300)
    sp = ops.sparsify_plan(pm.plan, pm.rows, pm.cols, 100)
    sp_ref = ref.sparsify_plan(want.plan, want.rows, want.cols, 100)
    assert isinstance(sp, SparsePlan) and sp.theta == sp_ref.theta
    dense = sp.matrix.toarray()
    assert_allclose(case.to_np(dense), sp_ref.matrix.toarray(), rtol=1e-12, atol=0)


@pytest.mark.parametrize("simplex", [True, False])
def test_topk_group(case, simplex):
    geom_np, geom, _, _ = make("euclidean", case.to_xp)
    ref, ops = REFERENCE.bind(geom_np), case.backend.bind(geom)
    X = case.to_xp
    rng = np.random.default_rng(3)
    n, m = geom.shape
    w = rng.uniform(0.5, 1.0, size=m)
    alpha, beta = rng.normal(size=n), (np.zeros(m) if simplex else 0.1 * rng.normal(size=m))
    got = ops.topk(0, X(w), 0.3, 3, simplex)(X(alpha), X(beta), 2)
    want = ref.topk(0, w, 0.3, 3, simplex)(alpha, beta, 2)
    assert isinstance(got, TopK)
    for name in TopK._fields:
        g, r = case.to_np(getattr(got, name)), getattr(want, name)
        if name == "idx":  # any valid index past nnz
            keep = np.arange(2)[None, :] < want.nnz[:, None]
            g, r = g[keep], r[keep]
        assert_allclose(g, r, rtol=1e-12, atol=1e-14, err_msg=name)


@pytest.mark.parametrize("kind", ["sqeuclidean", "euclidean", "pnorm"])
def test_cost_gradient_group(case, kind):
    geom_np, geom, hf, hg = make(kind, case.to_xp)
    ref, ops = REFERENCE.bind(geom_np), case.backend.bind(geom)
    X = case.to_xp
    assert_allclose(case.to_np(ops.cost_grad(X(hf), X(hg), 0.2)), ref.cost_grad(hf, hg, 0.2),
                    rtol=1e-11, atol=1e-13)


def test_reference_plan_of_the_formula():
    # the oracle itself against the formula, for a point cloud with a scale
    geom_np, _, hf, hg = make("sqeuclidean", np.asarray)
    x, y = geom_np.x, geom_np.y
    C = ((x[:, None] - y[None]) ** 2).sum(-1) / 2.5
    assert_allclose(REFERENCE.bind(geom_np).plan(hf, hg, 0.2),
                    np.exp((hf[:, None] + hg[None] - C) / 0.2), rtol=1e-13, atol=1e-300)


@pytest.mark.parametrize("kind", ["dense", "sqeuclidean"])
@pytest.mark.parametrize("omega", [1.0, 1.6])
def test_sinkhorn_iterator_relaxed_step(case, kind, omega):
    """``f' = f + omega (T(g) - f)``, ``g' = g + omega (T'(f') - g)`` from the reference
    softmins; ``omega = 1`` is the plain step."""
    geom_np, geom, hf, hg = make(kind, case.to_xp)
    ref, ops = REFERENCE.bind(geom_np), case.backend.bind(geom)
    X, eps = case.to_xp, 0.2
    la, lb = np.full(hf.shape, -np.log(hf.size)), np.full(hg.shape, -np.log(hg.size))
    f, g = 0.1 * hf, hg.copy()
    f[3] = 0.0
    got = ops.sinkhorn_iterator(X(la), X(lb), eps).relaxed_step(X(f), X(g), omega)
    f_T = ref.softmin(g + eps * lb, eps, axis=1)
    f_new = f + omega * (f_T - f)
    g_T = ref.softmin(f_new + eps * la, eps, axis=0)
    for value, want in zip(got, (f_new, g + omega * (g_T - g), f_T, g_T), strict=True):
        assert_allclose(case.to_np(value), want, rtol=1e-12, atol=1e-13)
    if omega == 1.0:
        plain = ref.sinkhorn_iterator(la, lb, eps).step(f, g)
        assert_allclose(case.to_np(got[0]), plain[0], rtol=1e-12, atol=1e-13)
        assert_allclose(case.to_np(got[1]), plain[1], rtol=1e-12, atol=1e-13)
