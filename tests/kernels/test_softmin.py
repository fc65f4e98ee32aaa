"""The Numba kernels (through the numba_cpu backend's bound ops) against the array_api
reference backend on the same NumPy data; the reference itself against SciPy.

Sizes cover the edge cases of the kernels: n = 1, m = 1, and sizes that are not
multiples of the point-cloud tile (512) or of the dense column block (256).
"""

from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_allclose
from scipy.special import logsumexp

from otcore import DenseCost, PointCloud
from otcore.backends import ArrayAPIBackend, NumbaBackend

from ..problems import ground_cost

# the last shape is above the size where the numba_cpu backend goes multi-threaded
SHAPES = [(1, 1), (1, 9), (9, 1), (3, 257), (257, 3), (37, 513), (515, 20), (70, 1030),
          (300, 521)]
COSTS = ["sqeuclidean", "euclidean", ("pnorm", 1.5), ("pnorm", 3)]
EPS = [1.0, 0.05, 1e-4]


def geometry(kind, shape, dtype=np.float64, seed=0):
    rng = np.random.default_rng(seed)
    n, m = shape
    if kind == "dense":
        return DenseCost(rng.uniform(size=(n, m)).astype(dtype))
    x, y = rng.normal(size=(n, 3)), 0.5 + rng.normal(size=(m, 3))
    return PointCloud(x.astype(dtype), y.astype(dtype), kind, scale=2.0)


def potential(rng, size, dtype=np.float64, n_inf=0):
    """Random shifted potential with ``n_inf`` entries equal to -inf (zero weights)."""
    h = rng.uniform(-0.5, 0.5, size=size)
    h[rng.choice(size, size=min(n_inf, size - 1), replace=False)] = -np.inf
    return h.astype(dtype)


def both(geom):
    return NumbaBackend().bind(geom), ArrayAPIBackend(np).bind(geom)


def tol(ref):
    return 1e-12 * max(1.0, float(np.abs(ref).max()))


@pytest.mark.parametrize("kind", ["dense", *COSTS])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("axis", [0, 1])
@pytest.mark.parametrize("eps", EPS)
def test_softmin(kind, shape, axis, eps):
    geom = geometry(kind, shape)
    fast, ref = both(geom)
    size = shape[1] if axis == 1 else shape[0]
    h = potential(np.random.default_rng(1), size, n_inf=size // 3)
    expected = ref.softmin(h, eps, axis)
    out = fast.softmin(h, eps, axis)
    assert out.shape == (shape[0] if axis == 1 else shape[1],) and out.dtype == np.float64
    assert np.all(np.isfinite(out))
    assert_allclose(out, expected, rtol=0, atol=tol(expected))


@pytest.mark.parametrize("kind", ["dense", "sqeuclidean"])
@pytest.mark.parametrize("axis", [0, 1])
@pytest.mark.parametrize("eps", [0.05, 1e-4])
@pytest.mark.parametrize("offset", [0.0, -0.5, 0.5, -30.0, 30.0, -100.0, 100.0, -700.0,
                                    700.0, -1e6, 1e6])
def test_softmin_hint_does_not_change_the_result(kind, axis, eps, offset):
    """A hint (estimate of the output) may speed the kernel up but, good or bad, must not
    change the result beyond rounding. ``offset`` is the hint's error in units of eps."""
    shape = (37, 513)
    geom = geometry(kind, shape)
    fast, ref = both(geom)
    size = shape[1] if axis == 1 else shape[0]
    rng = np.random.default_rng(2)
    h = potential(rng, size, n_inf=3)
    expected = ref.softmin(h, eps, axis)
    hint = expected + offset * eps * rng.uniform(0.5, 1.0, size=expected.shape)
    out = fast.hinted_softmin(h, eps, axis, hint)
    assert_allclose(out, expected, rtol=0, atol=tol(expected))


@pytest.mark.parametrize("kind", ["dense", "sqeuclidean"])
@pytest.mark.parametrize("axis", [0, 1])
@pytest.mark.parametrize("offset", [None, 0.0, -30.0, -80.0, -100.0, 30.0, 100.0])
def test_softmin_float32(kind, axis, offset):
    """float32 data: float32 output within float32 rounding of the float64 reference on
    the same (upcast) data, with and without hints."""
    shape, eps = (37, 513), 1e-3
    geom32 = geometry(kind, shape, np.float32)
    geom64 = (DenseCost(geom32.C.astype(np.float64)) if kind == "dense" else
              PointCloud(geom32.x.astype(np.float64), geom32.y.astype(np.float64), kind,
                         scale=2.0))
    size = shape[1] if axis == 1 else shape[0]
    rng = np.random.default_rng(3)
    h = potential(rng, size, np.float32, n_inf=3)
    expected = ArrayAPIBackend(np).bind(geom64).softmin(h.astype(np.float64), eps, axis)
    hint = None if offset is None else (expected + offset * eps).astype(np.float32)
    out = NumbaBackend().bind(geom32).hinted_softmin(h, eps, axis, hint)
    assert out.dtype == np.float32
    assert_allclose(out, expected, rtol=0, atol=4e-7 * max(1.0, float(np.abs(expected).max())))


def weights_log(rng, size, eps):
    """``eps log w`` for random weights with a zero entry (-inf) when size > 1."""
    w = rng.uniform(0.1, 1.0, size=size)
    if size > 1:
        w[rng.integers(size)] = 0.0
    with np.errstate(divide="ignore"):
        return eps * np.log(w / w.sum())


@pytest.mark.parametrize("kind", ["dense", *COSTS])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("eps", [0.05, 1e-4])
@pytest.mark.parametrize("hints", ["exact", "near", "far"])
def test_sinkhorn_sweep(kind, shape, eps, hints):
    """The fused iteration f' = softmin_rows(hg), g' = softmin_cols(f' + eps log a) equals
    two reference softmin calls, whatever the quality of the hints (f, g)."""
    geom = geometry(kind, shape)
    fast, ref = both(geom)
    rng = np.random.default_rng(7)
    n, m = shape
    la_eps, lb_eps = weights_log(rng, n, eps), weights_log(rng, m, eps)
    hg = rng.uniform(-0.5, 0.5, size=m) + lb_eps
    f_exp = ref.softmin(hg, eps, 1)
    g_exp = ref.softmin(f_exp + la_eps, eps, 0)
    if hints == "exact":
        f0, g0 = f_exp, g_exp
    elif hints == "near":
        f0 = f_exp + eps * rng.uniform(-2, 2, size=n)
        g0 = g_exp + eps * rng.uniform(-2, 2, size=m)
    else:
        f0, g0 = np.zeros(n), np.full(m, 5.0)
    f_new, g_new = fast.fused_sweep(hg, la_eps, f0, g0, eps)
    assert np.all(np.isfinite(f_new)) and np.all(np.isfinite(g_new))
    assert_allclose(f_new, f_exp, rtol=0, atol=tol(f_exp))
    assert_allclose(g_new, g_exp, rtol=0, atol=tol(g_exp))


@pytest.mark.parametrize("kind", ["dense", "sqeuclidean"])
@pytest.mark.parametrize("hints", ["exact", "far"])
def test_sinkhorn_sweep_float32(kind, hints):
    shape, eps = (300, 521), 1e-3
    geom32 = geometry(kind, shape, np.float32)
    geom64 = (DenseCost(geom32.C.astype(np.float64)) if kind == "dense" else
              PointCloud(geom32.x.astype(np.float64), geom32.y.astype(np.float64), kind,
                         scale=2.0))
    ref = ArrayAPIBackend(np).bind(geom64)
    rng = np.random.default_rng(8)
    la_eps = weights_log(rng, shape[0], eps).astype(np.float32)
    hg = rng.uniform(-0.5, 0.5, size=shape[1]).astype(np.float32)
    f_exp = ref.softmin(hg.astype(np.float64), eps, 1)
    g_exp = ref.softmin(f_exp.astype(np.float32).astype(np.float64) + la_eps, eps, 0)
    f0, g0 = (f_exp, g_exp) if hints == "exact" else (np.zeros(shape[0]), np.zeros(shape[1]))
    f_new, g_new = NumbaBackend().bind(geom32).fused_sweep(
        hg, la_eps, f0.astype(np.float32), g0.astype(np.float32), eps)
    assert f_new.dtype == g_new.dtype == np.float32
    assert_allclose(f_new, f_exp, rtol=0, atol=4e-7 * max(1.0, float(np.abs(f_exp).max())))
    assert_allclose(g_new, g_exp, rtol=0, atol=4e-7 * max(1.0, float(np.abs(g_exp).max())))


def test_softmin_single_finite_entry():
    """Only one finite entry h_k in h: out_i = -eps log exp((h_k - C_ik) / eps) = C_ik - h_k."""
    geom = geometry("dense", (5, 300))
    fast, _ = both(geom)
    h = np.full(300, -np.inf)
    h[123] = 0.25
    out = fast.softmin(h, 1e-4, 1)
    assert_allclose(out, geom.C[:, 123] - 0.25, rtol=0, atol=1e-15)


@pytest.mark.parametrize("kind", ["dense", *COSTS])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("eps", [0.05, 1e-4])
def test_plan_stats_and_plan(kind, shape, eps):
    geom = geometry(kind, shape)
    fast, ref = both(geom)
    rng = np.random.default_rng(4)
    n, m = shape
    # one half Sinkhorn step from random potentials: plan entries of a realistic size
    hg = potential(rng, m, n_inf=m // 4) + eps * np.log(1.0 / m)
    hf = ref.softmin(hg, eps, 1) + eps * np.log(1.0 / n)
    if n > 1:
        hf[0] = -np.inf  # a zero source weight
    # exp(t / eps) amplifies the rounding of t = hf_i + hg_j - C_ij (a few ulps of its
    # terms) by 1 / eps: the attainable relative agreement of two correct implementations
    mag = np.abs(hf[np.isfinite(hf)]).max() + np.abs(hg[np.isfinite(hg)]).max() + \
        ref.cost_scale()
    rtol = 1e-12 + 4 * np.finfo(np.float64).eps * mag / eps
    rows, cols, cost = fast.plan_stats(hf, hg, eps)
    rows_r, cols_r, cost_r = ref.plan_stats(hf, hg, eps)
    assert_allclose(rows, rows_r, rtol=rtol, atol=1e-300)
    assert_allclose(cols, cols_r, rtol=rtol, atol=1e-300)
    assert cost == pytest.approx(cost_r, rel=rtol)
    P = fast.plan(hf, hg, eps)
    assert P.shape == shape and np.all(np.isfinite(P)) and np.all(P >= 0)
    assert_allclose(P, ref.plan(hf, hg, eps), rtol=rtol, atol=1e-300)
    # the statistics are those of the plan
    assert_allclose(rows, P.sum(axis=1), rtol=rtol, atol=1e-300)
    assert_allclose(cols, P.sum(axis=0), rtol=rtol, atol=1e-300)


@pytest.mark.parametrize("kind", ["dense", *COSTS])
def test_cost_scale(kind):
    """Both backends give the same upper bound of max |C|."""
    geom = geometry(kind, (40, 33))
    fast, ref = both(geom)
    C = geom.C if kind == "dense" else ground_cost(geom.x, geom.y, kind) / geom.scale
    assert fast.cost_scale() == pytest.approx(ref.cost_scale(), rel=1e-12)
    assert ref.cost_scale() >= np.abs(C).max() * (1 - 1e-12)


@pytest.mark.parametrize("axis", [0, 1])
@pytest.mark.parametrize("eps", [1.0, 1e-3])
def test_reference_matches_scipy(axis, eps):
    """The oracle itself: -eps logsumexp((h - C) / eps) with SciPy, -inf entries included."""
    rng = np.random.default_rng(5)
    C = rng.uniform(size=(11, 14))
    h = potential(rng, 14 if axis == 1 else 11, n_inf=2)
    z = (h[None, :] - C) if axis == 1 else (h[:, None] - C)
    expected = -eps * logsumexp(z / eps, axis=axis)
    out = ArrayAPIBackend(np).bind(DenseCost(C)).softmin(h, eps, axis)
    assert_allclose(out, expected, rtol=0, atol=1e-14)


def test_pointcloud_cost_matrix_matches_scipy():
    rng = np.random.default_rng(6)
    x, y = rng.normal(size=(7, 3)), rng.normal(size=(5, 3))
    for cost in COSTS:
        geom = PointCloud(x, y, cost, scale=1.5)
        assert_allclose(geom.cost_matrix(), ground_cost(x, y, cost) / 1.5, rtol=1e-13)
