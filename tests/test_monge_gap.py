"""Monge gap and Sinkhorn divergence: values against POT, bounds against the exact gap
(``ot.emd2``), closed-form gradients against central finite differences, backends against
each other, and bad input."""

from __future__ import annotations

import warnings

import array_api_strict
import numpy as np
import ot
import pytest

import otcore as oc

from .problems import ground_cost, histogram

COSTS = ["sqeuclidean", "euclidean", ("pnorm", 1.0), ("pnorm", 1.5), ("pnorm", 3.0)]
#: Costs whose Gibbs kernel is positive definite (the divergence is >= 0).
PD_COSTS = ["sqeuclidean", "euclidean", ("pnorm", 1.0), ("pnorm", 1.5)]
ROT90 = np.array([[0.0, -1.0], [1.0, 0.0]])


def _unpack(res, kw):
    """A :class:`otcore.LossResult` as ``value`` or ``(value, grad)`` (with return_grad)."""
    assert isinstance(res, oc.LossResult) and res.solves
    assert (res.grad is not None) == bool(kw.get("return_grad"))
    return (res.value, res.grad) if kw.get("return_grad") else res.value


def _gap(*args, **kw):
    return _unpack(oc.monge_gap(*args, **kw), kw)


def _div(*args, **kw):
    return _unpack(oc.sinkhorn_divergence(*args, **kw), kw)


def paired(x, y, cost):
    """``c(x_i, y_i)``, independently of otcore (SciPy, one pair at a time)."""
    pairs = zip(x, y, strict=True)
    return np.array([ground_cost(xi[None], yi[None], cost)[0, 0] for xi, yi in pairs])


def entropy(w):
    w = w[w > 0]
    return float(-(w * np.log(w)).sum())


def pot_entropic_ot(a, b, C, eps):
    """``min <C, P> + eps KL(P | a b^T)`` from POT's log-domain Sinkhorn plan."""
    P = ot.sinkhorn(a, b, C, eps, method="sinkhorn_log", stopThr=1e-13, numItermax=200_000)
    Q = a[:, None] * b[None, :]
    pos = P > 0
    return float((C * P).sum() + eps * (P[pos] * np.log(P[pos] / Q[pos])).sum())


def pot_monge_gap(x, y, a, cost, eps):
    """The OTT-JAX convention: ``sum a c(x, T x) - (<C, P> - eps H(P))`` with POT's plan."""
    C = ground_cost(x, y, cost)
    return float(a @ paired(x, y, cost)) - (pot_entropic_ot(a, a, C, eps) - 2 * eps * entropy(a))


def clouds(rng, n, d=2):
    x = rng.normal(size=(n, d))
    return x, x @ np.linalg.qr(rng.normal(size=(d, d)))[0] + 0.3 * rng.normal(size=(n, d))


# -- values ---------------------------------------------------------------------------


@pytest.mark.parametrize("cost", COSTS)
def test_monge_gap_matches_pot(backend, rng, cost):
    x, y = clouds(rng, 30)
    a = histogram(rng, 30)
    eps = 0.1 * ground_cost(x, y, cost).mean()
    gap = _gap(backend.asarray(x), backend.asarray(y), a=backend.asarray(a),
                       cost=cost, eps=eps, tol=1e-12)
    assert isinstance(gap, float)
    assert gap == pytest.approx(pot_monge_gap(x, y, a, cost, eps), rel=1e-9)


@pytest.mark.parametrize("cost", COSTS)
@pytest.mark.parametrize("rel_eps", [0.05, 0.2, 1.0])
def test_bounds_against_exact_gap(rng, cost, rel_eps):
    """exact + eps log n <= gap <= exact + 2 eps log n for uniform weights."""
    n = 40
    x, y = clouds(rng, n)
    C = ground_cost(x, y, cost)
    eps = rel_eps * C.mean()
    u = np.full(n, 1.0 / n)
    exact = float(paired(x, y, cost).mean() - ot.emd2(u, u, C))
    assert exact > 0.05 * C.mean()  # a map far from optimal: the bound is not vacuous
    gap = _gap(x, y, cost=cost, eps=eps, tol=1e-11)
    slack = 1e-9 * C.max()
    assert exact + eps * np.log(n) - slack <= gap <= exact + 2 * eps * np.log(n) + slack


@pytest.mark.parametrize("cost", ["sqeuclidean", "euclidean"])
def test_bounds_with_weights(rng, cost):
    """The same bounds with eps H(a) in place of eps log n, zero weights included."""
    n = 40
    x, y = clouds(rng, n)
    a = histogram(rng, n, zeros=5)
    C = ground_cost(x, y, cost)
    eps = 0.1 * C.mean()
    exact = float(a @ paired(x, y, cost) - ot.emd2(a, a, C))
    gap = _gap(x, y, a=a, cost=cost, eps=eps, tol=1e-11)
    h = entropy(a)
    assert exact + eps * h - 1e-9 <= gap <= exact + 2 * eps * h + 1e-9


def optimal_map_cases():
    """``(cost, map)`` with exact gap 0: for the squared cost the gradient x -> A x of a
    convex quadratic (Brenier); for every translation-invariant convex cost a translation
    (Jensen)."""
    spd = np.array([[2.0, 0.5], [0.5, 1.0]])
    shift = np.array([0.7, -0.2])
    return [("sqeuclidean", lambda z: z @ spd)] + [(c, lambda z: z + shift) for c in COSTS]


@pytest.mark.parametrize(("cost", "T"), optimal_map_cases())
def test_rotation_far_above_optimal_maps(rng, cost, T):
    """An optimal map's gap is the pure entropic bias, in [L, 2 L] with L = eps log n; a
    rotation by 90 degrees lies above twice the largest possible bias, and its debiased
    gap (minus L) is many times that of the optimal map."""
    n = 60
    x = rng.normal(size=(n, 2))
    eps = 0.05 * ground_cost(x, x, cost).mean()
    L = eps * np.log(n)
    gap = _gap(x, T, cost=cost, eps=eps)
    gap_rot = _gap(x, x @ ROT90, cost=cost, eps=eps)
    assert L - 1e-9 <= gap <= 2 * L + 1e-9
    assert gap_rot > 4 * L
    assert gap_rot - L > 5 * (gap - L)


def test_callable_map_equals_images(rng):
    x, _ = clouds(rng, 25)
    gap, grad = _gap(x, lambda z: z @ ROT90 + 1.0, eps=0.1, return_grad=True)
    gap2, grad2 = _gap(x, x @ ROT90 + 1.0, eps=0.1, return_grad=True)
    assert gap == gap2
    np.testing.assert_array_equal(grad, grad2)


def test_zero_weights_drop_points(rng):
    """A zero-weight point changes nothing and gets a zero gradient."""
    x, y = clouds(rng, 30)
    a = histogram(rng, 30, zeros=4)
    keep = a > 0
    gap, grad = _gap(x, y, a=a, eps=0.2, tol=1e-12, return_grad=True)
    gap_sub, grad_sub = _gap(x[keep], y[keep], a=a[keep], eps=0.2, tol=1e-12,
                                     return_grad=True)
    assert gap == pytest.approx(gap_sub, rel=1e-10)
    np.testing.assert_allclose(grad[keep], grad_sub, rtol=1e-8, atol=1e-12)
    np.testing.assert_array_equal(grad[~keep], 0.0)


def test_one_dimensional_points(rng):
    x = rng.normal(size=20)
    gap, grad = _gap(x, -x, eps=0.1, return_grad=True)
    gap2 = _gap(x[:, None], -x[:, None], eps=0.1)
    assert grad.shape == (20,)
    assert gap == pytest.approx(gap2, rel=1e-14)


def test_float32_stays_float32(rng):
    x, y = clouds(rng, 30)
    gap64, grad64 = _gap(x, y, eps=0.2, return_grad=True)
    gap32, grad32 = _gap(x.astype(np.float32), y.astype(np.float32), eps=0.2,
                                 return_grad=True)
    assert grad32.dtype == np.float32
    assert gap32 == pytest.approx(gap64, rel=1e-4)
    np.testing.assert_allclose(grad32, grad64, rtol=0, atol=1e-4 * np.abs(grad64).max())


def test_not_converged_warns(rng):
    """Fewer iterations than the check interval: the last one is checked, and the warning
    reports a finite error."""
    x, y = clouds(rng, 30)
    with pytest.warns(oc.ConvergenceWarning,
                      match=r"monge_gap: sinkhorn did not converge in 3 iterations: error \d"):
        gap = _gap(x, y, eps=0.01, max_iter=3)
    assert np.isfinite(gap)


# -- divergence -----------------------------------------------------------------------


@pytest.mark.parametrize("cost", PD_COSTS)
def test_divergence_matches_pot_and_is_nonnegative(backend, rng, cost):
    x = rng.normal(size=(30, 2))
    a = histogram(rng, 30)
    eps = 0.2 * ground_cost(x, x, cost).mean()
    for shift in (0.0, 0.05, 1.0):
        y = rng.normal(size=(25, 2)) + shift
        b = histogram(rng, 25)
        div = _div(backend.asarray(x), backend.asarray(y),
                                     a=backend.asarray(a), b=backend.asarray(b), cost=cost,
                                     eps=eps, tol=1e-12)
        ref = (pot_entropic_ot(a, b, ground_cost(x, y, cost), eps)
               - 0.5 * pot_entropic_ot(a, a, ground_cost(x, x, cost), eps)
               - 0.5 * pot_entropic_ot(b, b, ground_cost(y, y, cost), eps))
        assert div == pytest.approx(ref, rel=1e-8, abs=1e-12)
        assert div > 0


@pytest.mark.parametrize("cost", COSTS)
def test_divergence_vanishes_on_equal_measures(backend, rng, cost):
    x = rng.normal(size=(30, 2))
    a = histogram(rng, 30)
    eps = 0.5 * ground_cost(x, x, cost).mean()
    div, grad = _div(backend.asarray(x), backend.asarray(x),
                                       a=backend.asarray(a), b=backend.asarray(a),
                                       cost=cost, eps=eps, tol=1e-12, return_grad=True)
    assert abs(div) < 1e-11
    np.testing.assert_allclose(backend.to_numpy(grad), 0.0, atol=1e-9)


# -- gradients ------------------------------------------------------------------------


def central_differences(fun, y, h=1e-5):
    """Central differences of ``fun`` at ``y``, one coordinate at a time."""
    out = np.zeros_like(y)
    for idx in np.ndindex(y.shape):
        yp, ym = y.copy(), y.copy()
        yp[idx] += h
        ym[idx] -= h
        out[idx] = (fun(yp) - fun(ym)) / (2 * h)
    return out


def assert_grad_matches(grad, fd):
    err = np.abs(grad - fd).max() / np.abs(fd).max()
    assert err < 1e-6, err


TIGHT = dict(tol=1e-14, max_iter=100_000)


@pytest.mark.parametrize("cost", COSTS)
def test_monge_gap_gradient_finite_differences(rng, cost):
    x, y = clouds(rng, 8, d=3)
    a = histogram(rng, 8)
    kw = dict(a=a, cost=cost, eps=0.5, **TIGHT)
    _, grad = _gap(x, y, return_grad=True, **kw)
    assert_grad_matches(grad, central_differences(lambda t: _gap(x, t, **kw), y))


@pytest.mark.parametrize("cost", COSTS)
def test_divergence_gradient_finite_differences(rng, cost):
    x, y = rng.normal(size=(8, 3)), rng.normal(size=(6, 3)) + 0.5
    kw = dict(b=histogram(rng, 6), cost=cost, eps=0.5, **TIGHT)
    _, grad = _div(x, y, return_grad=True, **kw)
    fd = central_differences(lambda t: _div(x, t, **kw), y)
    assert_grad_matches(grad, fd)


@pytest.mark.parametrize("cost", ["euclidean", ("pnorm", 1.0)])
def test_gradient_where_points_coincide(rng, cost):
    """At x = y the Euclidean (and l1) cost is not differentiable: the gradient uses the
    subgradient 0, which is the symmetric derivative that central differences measure."""
    x, y = clouds(rng, 8, d=3)
    y[0] = x[0]  # its own image: the displacement term
    y[1] = x[2]  # another point's position: the transport term
    kw = dict(cost=cost, eps=0.5, **TIGHT)
    gap, grad = _gap(x, y, return_grad=True, **kw)
    assert np.isfinite(gap) and np.all(np.isfinite(grad))
    # Across a kink k(y) |y - x| central differences are off by O(h k'): a smaller step.
    fd = central_differences(lambda t: _gap(x, t, **kw), y, h=1e-6)
    assert_grad_matches(grad, fd)
    _, gdiv = _div(x, y, return_grad=True, **kw)
    fd = central_differences(lambda t: _div(x, t, **kw), y, h=1e-6)
    assert_grad_matches(gdiv, fd)


# -- backends and modes ---------------------------------------------------------------


@pytest.mark.parametrize("online", [False, True])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("cost", COSTS)
def test_backends_match_numba(backend, rng, cost, dtype, online):
    """Values and gradients of both functions on every backend equal numba_cpu's, dense and
    online: to 1e-12 (array_api) and 1e-10 (cupy_gpu) in float64, 1e-5 in float32
    (gradients relative to their largest entry). In float32 both run the same 200
    iterations (a tolerance below the rounding floor): near the default tolerance, one
    convergence check more or less moves the gradient by up to ~1e-4."""
    if backend.name == "numba_cpu":
        pytest.skip("numba_cpu is the reference")
    x, y = clouds(rng, 40, d=3)
    y[5] = x[5]  # a fixed point: the Euclidean cost is not differentiable there
    a = histogram(rng, 40)
    x, y, a = (v.astype(dtype) for v in (x, y, a))
    kw = dict(cost=cost, eps=0.3, online=online, return_grad=True)
    if dtype == np.float64:
        kw["tol"] = 1e-13
        tol = 1e-12 if backend.name == "array_api" else 1e-10
    else:
        kw.update(tol=1e-30, max_iter=200)
        tol = 1e-5
    for fn in (_gap, _div):
        with warnings.catch_warnings():  # float32: not converged, by construction
            warnings.simplefilter("ignore", oc.ConvergenceWarning)
            v_np, g_np = fn(x, y, a=a, **kw)
            v_bk, g_bk = fn(backend.asarray(x), backend.asarray(y), a=backend.asarray(a),
                            **kw)
        assert isinstance(v_bk, float)
        backend.check_array(g_bk, dtype, (40, 3))
        assert v_bk == pytest.approx(v_np, rel=tol)
        np.testing.assert_allclose(backend.to_numpy(g_bk), g_np, rtol=0,
                                   atol=tol * np.abs(g_np).max())


@pytest.mark.parametrize("cost", ["sqeuclidean", "euclidean", ("pnorm", 1.5)])
def test_online_equals_dense(backend, rng, cost):
    x, y = clouds(rng, 50)
    kw = dict(cost=cost, eps=0.3, tol=1e-13, return_grad=True)
    v_on, g_on = _gap(backend.asarray(x), backend.asarray(y), online=True, **kw)
    v_de, g_de = _gap(backend.asarray(x), backend.asarray(y), online=False, **kw)
    assert v_on == pytest.approx(v_de, rel=1e-12)
    g_on, g_de = backend.to_numpy(g_on), backend.to_numpy(g_de)
    np.testing.assert_allclose(g_on, g_de, rtol=0, atol=1e-12 * np.abs(g_de).max())


@pytest.mark.slow
@pytest.mark.parametrize("cost", ["sqeuclidean", "euclidean"])
def test_large_online_equals_dense(rng, cost):
    x, y = clouds(rng, 3000, d=3)
    kw = dict(cost=cost, eps=0.5, tol=1e-10, return_grad=True)
    v_on, g_on = _gap(x, y, online=True, **kw)
    v_de, g_de = _gap(x, y, online=False, **kw)
    assert v_on == pytest.approx(v_de, rel=1e-10)
    np.testing.assert_allclose(g_on, g_de, rtol=0, atol=1e-10 * np.abs(g_de).max())


def test_kernel_cost_grad_equals_reference(rng):
    """The fused Numba kernel against the blocked Array-API reference, with a scale."""
    from otcore.backends import get_backend

    x, y = rng.normal(size=(300, 3)), rng.normal(size=(200, 3))
    y[3] = x[5]
    hf, hg = 0.1 * rng.normal(size=300) - 4, 0.1 * rng.normal(size=200) - 4
    for cost in COSTS:
        geom = oc.PointCloud(x, y, cost, scale=2.5)
        fast = get_backend(x).bind(geom).cost_grad(hf, hg, 0.3)
        ref = get_backend(x, backend="array_api").bind(geom).cost_grad(hf, hg, 0.3)
        np.testing.assert_allclose(fast, ref, rtol=0, atol=1e-13 * np.abs(ref).max())
        C = get_backend(x).bind(geom).cost_matrix()
        np.testing.assert_allclose(C, ground_cost(x, y, cost) / 2.5, rtol=1e-13, atol=1e-15)


# -- bad input ------------------------------------------------------------------------

X = np.zeros((5, 2))


@pytest.mark.parametrize(
    ("args", "kwargs", "exc", "match"),
    [
        (("abc", X), {}, TypeError, "x"),
        ((X, "abc"), {}, TypeError, "Tx"),
        ((X, X[:4]), {}, ValueError, "Tx must have one row per point of x"),
        ((X, np.zeros((5, 3))), {}, ValueError, "x and Tx must have the same dimension"),
        ((X, np.full((5, 2), np.nan)), {}, ValueError, "Tx contains NaN"),
        ((X, lambda z: z[:3]), {}, ValueError, r"T\(x\) must have one row"),
        ((X, X), {"eps": 0.0}, ValueError, "eps must be"),
        ((X, X), {"eps": "1"}, TypeError, "eps must be a real number"),
        ((X, X), {"tol": -1.0}, ValueError, "tol"),
        ((X, X), {"max_iter": 0}, ValueError, "max_iter"),
        ((X, X), {"a": -np.ones(5)}, ValueError, "a has negative"),
        ((X, X), {"a": np.ones(4)}, ValueError, "a has length 4"),
        ((X, X), {"cost": "cosine"}, ValueError, "cost must be"),
        ((X, X), {"cost": ("pnorm", 0.5)}, ValueError, "p >= 1"),
        ((X, X), {"return_grad": 1}, TypeError, "return_grad must be True or False"),
        ((X, X), {"online": "no"}, TypeError, "online must be True or False"),
        ((X, X.astype(bool)), {}, TypeError, "Tx has unsupported dtype"),
        ((X, array_api_strict.asarray(X)), {}, TypeError, "one array library"),
    ],
)
def test_monge_gap_bad_input(args, kwargs, exc, match):
    kwargs = {"eps": 1.0, **kwargs}
    with pytest.raises(exc, match=match):
        oc.monge_gap(*args, **kwargs)


@pytest.mark.parametrize(
    ("args", "kwargs", "exc", "match"),
    [
        ((X, np.zeros((4, 3))), {}, ValueError, "x and y must have the same dimension"),
        ((X, np.zeros((0, 2))), {}, ValueError, "y must not be empty"),
        ((X, X), {"b": np.ones(3)}, ValueError, "b has length 3"),
        ((X, X), {"eps": -1.0}, ValueError, "eps must be"),
        ((X, X), {"online": 0}, TypeError, "online must be True or False"),
    ],
)
def test_divergence_bad_input(args, kwargs, exc, match):
    kwargs = {"eps": 1.0, **kwargs}
    with pytest.raises(exc, match=match):
        oc.sinkhorn_divergence(*args, **kwargs)


def test_missing_eps_is_an_error():
    with pytest.raises(TypeError, match="eps"):
        oc.monge_gap(X, X)
