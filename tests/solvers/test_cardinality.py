"""Cardinality-constrained OT (dual and semi-dual) against POT, closed forms, the
array_api reference and the weak-duality chain.

Every test that solves on NumPy input takes the ``solve`` fixture: it runs once with
``oc.cardinality_ot`` itself (``numba_cpu``) and once, marked ``gpu``, on CuPy copies of
the inputs (``cupy_gpu``), checked against the NumPy result and handed to the test's own
checks with its arrays back on the host.
"""

import dataclasses
import functools
import io
import warnings
from contextlib import redirect_stdout

import array_api_strict as xps
import numpy as np
import ot
import pytest
from scipy import sparse

import otcore as oc

from ..backends.kernel_checks import assert_cardinality_agrees
from ..problems import random_problem

# Small k (1, often 2) leaves the maximum on a kink, where no plan of one top-k selection
# meets the row marginal: those solves must say so (at_a_kink); any other warning fails.
pytestmark = pytest.mark.filterwarnings("error::otcore.ConvergenceWarning")


def at_a_kink(solve, *args, **kwargs):
    """``solve(*args, **kwargs)`` where the maximum lies on a kink of the objective: the
    result says so (status "nonsmooth", not converged) and warns with the reason."""
    with pytest.warns(oc.ConvergenceWarning, match="kink"):
        res = solve(*args, **kwargs)
    assert res.extra["status"] == "nonsmooth" and not res.converged
    return res


def make_problem(n, m, seed=0, uniform=False):
    """``(a, b, C)``: Gaussian clouds, squared-Euclidean cost normalized to max 1, random
    or uniform weights."""
    a, b, C, _, _ = random_problem(np.random.default_rng(seed), n, m)
    if uniform:
        a, b = np.full(n, 1 / n), np.full(m, 1 / m)
    return a, b, C


def proj_simplex(v, mass):
    """Projection of the vector v onto {t >= 0, sum t = mass} (sort-based, plain NumPy)."""
    u = np.sort(v)[::-1]
    css = np.cumsum(u) - mass
    rho = np.count_nonzero(u - css / np.arange(1, v.size + 1) > 0)
    return np.maximum(v - css[rho - 1] / rho, 0)


def topk_mask(X, k):
    """Boolean mask of the k largest entries of each column (ties: smaller row first)."""
    order = np.argsort(-X, axis=0, kind="stable")[:k]
    mask = np.zeros(X.shape, bool)
    np.put_along_axis(mask, order, True, axis=0)
    return mask


def semi_dual(f, a, b, C, gamma, k):
    """S(f) = <f, a> - sum_j b_j max_{k,j}(f - C_j) and its plan, independently of
    otcore's kernels: top-k of each column, then the scaled simplex projection."""
    X = f[:, None] - C
    mask = topk_mask(X, k)
    T = np.zeros_like(X)
    for j in range(X.shape[1]):
        T[mask[:, j], j] = proj_simplex(X[mask[:, j], j] / gamma, b[j])
    return f @ a - np.sum(X * T - 0.5 * gamma * T**2), T


def dual(f, g, a, b, C, gamma, k):
    """D(f, g) = <f, a> + <g, b> - sum_j (1/2 gamma) top_k([f + g_j - C_j]_+^2)."""
    X = f[:, None] + g[None, :] - C
    P = np.where(topk_mask(X, k), np.maximum(X, 0), 0)
    return f @ a + g @ b - np.sum(P**2) / (2 * gamma), P / gamma


def primal(T, C, gamma):
    T = T.toarray() if sparse.issparse(T) else T
    return float(np.sum(C * T) + 0.5 * gamma * np.sum(T**2))


def quiet(fn, *args, **kwargs):
    """Call a POT function, discarding what it prints."""
    with redirect_stdout(io.StringIO()):
        return fn(*args, **kwargs)


class OnDevice:
    """``cardinality_ot`` on CuPy copies of NumPy inputs, checked against the same call on
    the NumPy inputs (``numba_cpu``): CuPy potentials of the input dtype, a
    ``cupyx.scipy.sparse.csr_matrix`` plan, and the agreement of
    ``tests.backends.kernel_checks.assert_cardinality_agrees``. Returns the GPU result with
    its arrays on the host (NumPy potentials, SciPy plans), for the test's own checks.
    """

    def __init__(self, case):
        self.case = case

    def __call__(self, a, b, C, k, gamma, **kwargs):
        import cupyx.scipy.sparse

        ref = oc.cardinality_ot(a, b, C, k, gamma, **kwargs)
        dev = self.case
        if isinstance(C, oc.PointCloud):
            C_dev = oc.PointCloud(dev.asarray(C.x), dev.asarray(C.y), C.cost, scale=C.scale)
        else:
            C_dev = dev.asarray(C)
        res = oc.cardinality_ot(dev.asarray(a), dev.asarray(b), C_dev, k, gamma, **kwargs)
        assert res.backend == "cupy_gpu"
        assert isinstance(res.plan, cupyx.scipy.sparse.csr_matrix), type(res.plan)
        dev.check_array(res.f, ref.f.dtype, ref.f.shape)
        dev.check_array(res.g, ref.g.dtype, ref.g.shape)
        extra = dict(res.extra)
        if "sparse_plan" in extra:
            extra["sparse_plan"] = extra["sparse_plan"].get()
        host = dataclasses.replace(res, f=dev.to_numpy(res.f), g=dev.to_numpy(res.g),
                                   _plan=res.plan.get(), extra=extra)
        group_size = (ref.f if kwargs.get("constrain", "columns") == "columns" else ref.g).size
        assert_cardinality_agrees(host, ref, smooth=k is None or k >= group_size)
        return host


@pytest.fixture(params=["numba_cpu", pytest.param("cupy_gpu", marks=pytest.mark.gpu)])
def solve(request):
    """``oc.cardinality_ot``, or its GPU twin :class:`OnDevice` (see the module docstring)."""
    if request.param == "numba_cpu":
        return oc.cardinality_ot
    return OnDevice(request.getfixturevalue("gpu_backend"))


# -- plan structure -------------------------------------------------------------------


@pytest.mark.parametrize("formulation", ["semi-dual", "dual"])
@pytest.mark.parametrize("k", [1, 2, 3])
def test_at_most_k_nonzeros_per_column(formulation, k, solve):
    a, b, C = make_problem(40, 30, seed=k)
    res = at_a_kink(solve, a, b, C, k, 0.5, formulation=formulation)
    assert sparse.issparse(res.plan) and res.plan.format == "csr"
    per_column = np.diff(res.plan.tocsc().indptr)
    assert per_column.max() <= k
    assert res.extra["max_nnz"] == per_column.max()
    assert res.plan.data.min() > 0
    # the plan is the one of the formula T = [f_i + g_j - C_ij]_+ / gamma on its support
    T = res.plan.toarray()
    on = T > 0
    np.testing.assert_allclose(T[on], ((res.f[:, None] + res.g[None, :] - C) / 0.5)[on],
                               rtol=1e-9, atol=1e-13)


def test_rows_constraint_is_the_transposed_problem(solve):
    a, b, C = make_problem(25, 35, seed=3)
    # dyadic weights summing to exactly 1: no rounding in their normalization, so the two
    # calls solve bitwise the same problem (the path of L-BFGS-B on this nonsmooth
    # objective amplifies a 1-ulp difference in the weights to ~1e-9 in the value)
    rng = np.random.default_rng(3)
    a, b = ((1 + rng.multinomial(1024 - size, np.full(size, 1 / size))) / 1024
            for size in (25, 35))
    rows = at_a_kink(solve, a, b, C, 2, 0.3, constrain="rows")
    cols = at_a_kink(solve, b, a, C.T, 2, 0.3)
    assert np.diff(rows.plan.indptr).max() <= 2
    assert rows.value == pytest.approx(cols.value, rel=1e-12)
    np.testing.assert_allclose(rows.plan.toarray(), cols.plan.toarray().T, atol=1e-15)
    np.testing.assert_allclose(rows.f, cols.g, atol=1e-15)
    np.testing.assert_allclose(rows.g, cols.f, atol=1e-15)
    # the semi-dual keeps the marginal of the constrained side exact: here the rows
    assert rows.extra["row_error"] < 1e-13


@pytest.mark.parametrize(("k", "kink"), [(1, True), (2, True), (5, False)])
def test_semi_dual_keeps_the_column_marginal_exact(k, kink, solve):
    a, b, C = make_problem(30, 20, seed=k)
    res = at_a_kink(solve, a, b, C, k, 0.2) if kink else solve(a, b, C, k, 0.2)
    assert res.converged is not kink
    np.testing.assert_allclose(np.asarray(res.plan.sum(axis=0)).ravel(), b, rtol=1e-12)
    assert res.extra["col_error"] < 1e-13
    rows = np.asarray(res.plan.sum(axis=1)).ravel()
    assert res.extra["row_error"] == pytest.approx(np.abs(rows - a).sum(), rel=1e-10)
    assert res.marginal_error == pytest.approx(
        res.extra["row_error"] + res.extra["col_error"], rel=1e-12)


# -- limits: k >= n (quadratic OT) and k = 1 (unregularized OT) ---------------------------


@pytest.mark.parametrize("gamma", [0.1, 1.0])
@pytest.mark.parametrize("k", [30, 100])
def test_k_at_least_n_matches_pot_quadratic_semi_dual(gamma, k, solve):
    # POT solved to a tight tolerance: its default 1e-9 stops on the relative decrease of
    # the objective while the row marginal is still off by ~1e-4; otcore's tol bounds the
    # L1 marginal error of the returned plan
    a, b, C = make_problem(30, 25, seed=4)
    res = solve(a, b, C, k, gamma, tol=1e-12)
    T_pot, log = ot.smooth.smooth_ot_semi_dual(a, b, C, gamma, reg_type="l2", log=True,
                                               stopThr=1e-14, numItermax=5000)
    assert log["res"].success
    assert res.converged and res.marginal_error <= 1e-12
    assert res.value == pytest.approx(-log["res"].fun, abs=1e-6)
    np.testing.assert_allclose(res.plan.toarray(), T_pot, atol=1e-5)
    # POT's objective of our potentials (its own formula) agrees with our value too
    assert res.value == pytest.approx(semi_dual(res.f, a, b, C, gamma, 30)[0], abs=1e-12)


@pytest.mark.parametrize("gamma", [0.1, 1.0])
def test_k_at_least_n_dual_matches_pot_quadratic_dual(gamma, solve):
    a, b, C = make_problem(20, 15, seed=5)
    res = solve(a, b, C, 20, gamma, formulation="dual", tol=1e-12)
    T_pot, log = ot.smooth.smooth_ot_dual(a, b, C, gamma, reg_type="l2", log=True,
                                          stopThr=1e-14, numItermax=5000)
    assert res.value == pytest.approx(-log["res"].fun, abs=1e-6)
    np.testing.assert_allclose(res.plan.toarray(), T_pot, atol=1e-5)


@pytest.mark.parametrize("uniform", [True, False])
@pytest.mark.parametrize("gamma", [0.1, 1.0])
def test_k1_semi_dual_is_exact_ot_plus_constant(uniform, gamma, solve):
    a, b, C = make_problem(40, 40 if uniform else 33, seed=6, uniform=uniform)
    emd2 = ot.emd2(a, b, C)
    res = solve(a, b, C, 1, gamma, rebuild_plan=True)
    assert res.value == pytest.approx(emd2 + 0.5 * gamma * b @ b, abs=1e-6)
    # f is an optimal unregularized potential: with its c-transform it attains OT(a, b)
    g_c = (C - res.f[:, None]).min(axis=0)
    assert res.f @ a + g_c @ b == pytest.approx(emd2, abs=1e-6)
    # the rebuilt plan meets both marginals and costs exactly ot.emd2
    assert res.cost == pytest.approx(emd2, rel=1e-9)
    assert float(np.sum(res.plan.toarray() * C)) == pytest.approx(emd2, rel=1e-9)
    assert res.marginal_error < 1e-9
    # the 1-sparse plan is kept, with its honest row error
    sp = res.extra["sparse_plan"]
    assert np.diff(sp.tocsc().indptr).max() <= 1
    rows = np.asarray(sp.sum(axis=1)).ravel()
    assert res.extra["sparse_row_error"] == pytest.approx(np.abs(rows - a).sum(), rel=1e-10)
    assert res.extra["sparse_col_error"] < 1e-12


def test_k1_rebuild_on_rows(solve):
    a, b, C = make_problem(25, 31, seed=7)
    res = solve(a, b, C, 1, 0.5, constrain="rows", rebuild_plan=True)
    assert res.cost == pytest.approx(ot.emd2(a, b, C), rel=1e-9)
    assert res.marginal_error < 1e-9
    assert res.value == pytest.approx(ot.emd2(a, b, C) + 0.25 * a @ a, abs=1e-6)


# -- weak duality: D <= S <= P ---------------------------------------------------------


@pytest.mark.parametrize(("k", "kink"), [(1, False), (2, True), (4, True)])
def test_dual_below_semi_dual_below_primal(k, kink, solve):
    n, gamma = 30, 0.5
    a, b, C = make_problem(n, n, seed=8 + k, uniform=True)
    # k = 1 with uniform weights and n = m: an optimal permutation meets both marginals
    run = functools.partial(at_a_kink, solve) if kink else solve
    semi = run(a, b, C, k, gamma)
    dua = run(a, b, C, k, gamma, formulation="dual")
    # the values are the objectives of the returned potentials (independent formulas)
    S, T = semi_dual(semi.f, a, b, C, gamma, k)
    D, _ = dual(dua.f, dua.g, a, b, C, gamma, k)
    assert semi.value == pytest.approx(S, abs=1e-12)
    assert dua.value == pytest.approx(D, abs=1e-12)
    np.testing.assert_allclose(semi.plan.toarray(), T, atol=1e-14)
    # pointwise D(f, g) <= S(f) for any potentials (up to rounding)
    rng = np.random.default_rng(k)
    for f, g in [(dua.f, dua.g)] + [tuple(rng.normal(size=(2, n)) * 0.1)] * 5:
        assert dual(f, g, a, b, C, gamma, k)[0] <= semi_dual(f, a, b, C, gamma, k)[0] + 1e-15
    # with g = -theta(f), the semi-dual's g, the dual attains S(f): D* = S* at the optima
    assert dual(semi.f, semi.g, a, b, C, gamma, k)[0] == pytest.approx(semi.value, abs=1e-12)
    # L-BFGS stops within about 1e-6 of these nonsmooth optima
    assert dua.value <= semi.value + 2e-6
    assert dua.value == pytest.approx(semi.value, abs=2e-6)
    # S* <= primal objective of any feasible k-sparse plan: the optimal assignment
    # (uniform weights, n = m) is a permutation, 1-sparse, feasible for every k
    perm = ot.emd(a, b, C)
    assert np.count_nonzero(perm, axis=0).max() == 1
    assert semi.value <= primal(perm, C, gamma) + 1e-12
    # S(f) = P(T) + <f, a - T 1> for the returned plan T: the primal objective of the
    # returned plan bounds S exactly when T meets the row marginal
    row_gap = a - np.asarray(semi.plan.sum(axis=1)).ravel()
    assert semi.value == pytest.approx(semi.extra["primal"] + semi.f @ row_gap, abs=1e-12)
    assert semi.extra["primal"] == pytest.approx(primal(semi.plan, C, gamma), rel=1e-12)


def test_chain_with_the_returned_plan_when_it_is_feasible(solve):
    # k >= n: no sparsity gap, the returned semi-dual plan is feasible at convergence
    a, b, C = make_problem(25, 25, seed=12)
    semi = solve(a, b, C, 25, 0.5, tol=1e-12)
    dua = solve(a, b, C, 25, 0.5, formulation="dual", tol=1e-12)
    assert semi.converged and dua.converged
    assert semi.marginal_error < 1e-6
    assert dua.value <= semi.value + 1e-9
    assert semi.value <= primal(semi.plan, C, 0.5) + 1e-8
    assert primal(semi.plan, C, 0.5) - semi.value < 1e-6


@pytest.mark.parametrize("seed", [0, 2])
@pytest.mark.parametrize("k", [2, 5])
def test_objective_not_worse_than_pot_sparsity_constrained(seed, k, solve):
    a, b, C = make_problem(120, 120, seed=seed)
    res = at_a_kink(solve, a, b, C, k, 0.1)
    _, log = quiet(ot.smooth.smooth_ot_semi_dual, a, b, C, 0.1,
                   reg_type="sparsity_constrained", max_nz=k, log=True)
    # same objective (POT's value of its potentials, and the independent formula)
    assert -log["res"].fun == pytest.approx(semi_dual(log["alpha"], a, b, C, 0.1, k)[0],
                                            abs=1e-12)
    assert res.value >= -log["res"].fun


# -- backends, dtypes, inputs ----------------------------------------------------------


@pytest.mark.parametrize("formulation", ["semi-dual", "dual"])
@pytest.mark.parametrize("k", [2, 20])
def test_backends_agree(backend, formulation, k):
    a, b, C = make_problem(20, 15, seed=14)
    run = functools.partial(at_a_kink, oc.cardinality_ot) if k < 20 else oc.cardinality_ot
    ref = run(a, b, C, k, 0.5, formulation=formulation, tol=1e-12)
    res = run(backend.asarray(a), backend.asarray(b), backend.asarray(C), k, 0.5,
              formulation=formulation, tol=1e-12)
    assert res.backend == backend.name
    backend.check_array(res.f, np.float64, (20,))
    backend.check_array(res.g, np.float64, (15,))
    # SciPy CSR for NumPy, cupyx CSR for CuPy, a dense array for other namespaces
    plan = backend.to_numpy(res.plan.toarray() if hasattr(res.plan, "toarray") else res.plan)
    assert plan.shape == (20, 15)
    assert np.count_nonzero(plan, axis=0).max() <= k
    if k >= 20:  # smooth problem: the same solution
        assert res.value == pytest.approx(ref.value, abs=1e-12)
        np.testing.assert_allclose(plan, ref.plan.toarray(), atol=1e-9)
    else:
        # the kernels agree to 1e-12 (tests/kernels/test_topk.py), but L-BFGS paths on a
        # nonsmooth objective fork on such differences: equal up to the optimizer accuracy
        assert res.value == pytest.approx(ref.value, abs=2e-5)


def test_float32(solve):
    # uniform weights on 32 and 16 points sum to exactly 1 in float32 and float64
    a, b, C = make_problem(32, 16, seed=16, uniform=True)
    a32, b32, C32 = (v.astype(np.float32) for v in (a, b, C))
    res = solve(a32, b32, C32, 2, 0.5)
    assert res.f.dtype == res.g.dtype == res.plan.dtype == np.float32
    assert np.diff(res.plan.tocsc().indptr).max() <= 2
    # objectives are evaluated in float64: the float32 solve is the float64 solve of the
    # float32-rounded data, cast back at the end
    ref = solve(*(v.astype(np.float64) for v in (a32, b32, C32)), 2, 0.5)
    assert res.value == ref.value
    np.testing.assert_array_equal(res.f, ref.f.astype(np.float32))
    np.testing.assert_array_equal(res.plan.toarray(), ref.plan.toarray().astype(np.float32))
    # and it solves nearly the same problem as the float64 data
    assert res.value == pytest.approx(solve(a, b, C, 2, 0.5).value, abs=2e-6)


def test_point_cloud_equals_dense_cost(solve):
    rng = np.random.default_rng(17)
    x, y = rng.normal(size=(20, 2)), rng.normal(size=(25, 2))
    geom = oc.PointCloud(x, y)
    res = at_a_kink(solve, None, None, geom, 2, 1.0)
    ref = at_a_kink(solve, None, None, geom.cost_matrix(), 2, 1.0)
    assert res.value == ref.value
    np.testing.assert_array_equal(res.plan.toarray(), ref.plan.toarray())


@pytest.mark.parametrize("formulation", ["semi-dual", "dual"])
def test_zero_weights(formulation, solve):
    a, b, C, _, _ = random_problem(np.random.default_rng(22), 30, 25, zeros=3)
    res = at_a_kink(solve, a, b, C, 2, 0.5, formulation=formulation)
    P = res.plan.toarray()
    assert np.all(np.isfinite(res.f)) and np.all(np.isfinite(res.g))
    assert P[a == 0].sum() < 1e-6 and P[:, b == 0].sum() < 1e-6
    if formulation == "semi-dual":
        np.testing.assert_allclose(P.sum(axis=0), b, atol=1e-15)
        exact = solve(a, b, C, 1, 0.5, rebuild_plan=True)
        assert exact.cost == pytest.approx(ot.emd2(a, b, C), rel=1e-9)
        assert exact.marginal_error < 1e-9


def test_deterministic(solve):
    a, b, C = make_problem(30, 30, seed=18, uniform=True)
    C = np.round(C, 1)  # many ties
    r1 = at_a_kink(solve, a, b, C, 2, 0.1)
    r2 = at_a_kink(solve, a, b, C, 2, 0.1)
    assert r1.value == r2.value
    np.testing.assert_array_equal(r1.plan.toarray(), r2.plan.toarray())


def test_not_converged_warns(solve):
    a, b, C = make_problem(30, 30, seed=19)
    with pytest.warns(oc.ConvergenceWarning, match="did not converge"):
        res = solve(a, b, C, 2, 0.1, max_iter=3, warm_start=False)
    assert not res.converged and res.n_iter == 3
    assert res.extra["status"] == "not_converged"  # the iteration limit, not a kink
    assert np.isfinite(res.value) and np.all(np.isfinite(res.f))


@pytest.mark.parametrize("k", [8, None])
def test_converged_does_not_warn(k, solve):
    # smooth maxima: quadratic OT (k = None) has at most 7 entries per column here, so its
    # plan is also the solution for k = 8
    a, b, C = make_problem(20, 20, seed=20)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = solve(a, b, C, k, 0.5)
    assert res.converged and res.extra["status"] == "converged"
    assert res.marginal_error <= 1e-9
    # the error history numbers warm-start and final iterations consecutively
    steps = [it for it, _ in res.errors]
    assert steps == sorted(steps) and steps[-1] <= res.n_iter + res.extra["warm_start_iter"]
    assert res.errors[-1][1] == pytest.approx(res.extra["row_error"], rel=1e-6)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"k": 0}, ValueError, "k must be >= 1"),
        ({"k": -2}, ValueError, "k must be >= 1"),
        ({"k": 1.5}, TypeError, "k must be an integer"),
        ({"k": 2.0}, TypeError, "k must be an integer"),
        ({"k": True}, TypeError, "k must be an integer"),
        ({"gamma": 0.0}, ValueError, "gamma must be"),
        ({"gamma": -1.0}, ValueError, "gamma must be"),
        ({"gamma": float("nan")}, ValueError, "gamma must be"),
        ({"gamma": "big"}, TypeError, "gamma must be a real number"),
        ({"formulation": "primal"}, ValueError, "formulation must be one of"),
        ({"constrain": "both"}, ValueError, "constrain must be one of"),
        ({"tol": 0.0}, ValueError, "tol must be"),
        ({"max_iter": 0}, ValueError, "max_iter must be >= 1"),
        ({"rebuild_plan": "yes"}, TypeError, "rebuild_plan must be True or False"),
        ({"warm_start": 1}, TypeError, "warm_start must be True or False"),
        ({"rebuild_plan": True, "k": 2}, ValueError, "rebuild_plan=True needs k=1"),
        ({"rebuild_plan": True, "k": 1, "formulation": "dual"}, ValueError,
         "rebuild_plan=True needs k=1"),
    ],
)
def test_bad_parameters(kwargs, error, match):
    a, b, C = make_problem(5, 4)
    args = {"k": 2, "gamma": 0.5} | kwargs
    k, gamma = args.pop("k"), args.pop("gamma")
    with pytest.raises(error, match=match):
        oc.cardinality_ot(a, b, C, k, gamma, **args)


def test_bad_arrays():
    a, b, C = make_problem(5, 4)
    with pytest.raises(ValueError, match="a has negative entries"):
        oc.cardinality_ot(-a, b, C, 2, 0.5)
    with pytest.raises(ValueError, match="same total mass"):
        oc.cardinality_ot(a, 2 * b, C, 2, 0.5)
    with pytest.raises(ValueError, match="b has length"):
        oc.cardinality_ot(a, b[:-1], C, 2, 0.5)
    bad = C.copy()
    bad[1, 2] = np.nan
    with pytest.raises(ValueError, match="C contains NaN"):
        oc.cardinality_ot(a, b, bad, 2, 0.5)
    with pytest.raises(TypeError, match="one array library"):
        oc.cardinality_ot(xps.asarray(a), b, C, 2, 0.5)


@pytest.mark.slow
@pytest.mark.parametrize("k", [1, 2, 5])
def test_larger_problem_against_pot(k, solve):
    a, b, C = make_problem(300, 300, seed=21, uniform=True)
    if k == 1:  # the rebuilt plan meets both marginals
        res = solve(a, b, C, k, 0.1, rebuild_plan=True)
        assert res.converged
    else:
        res = at_a_kink(solve, a, b, C, k, 0.1)
    _, log = quiet(ot.smooth.smooth_ot_semi_dual, a, b, C, 0.1,
                   reg_type="sparsity_constrained", max_nz=k, log=True)
    assert res.value >= -log["res"].fun - 1e-7
    if k == 1:
        emd2 = ot.emd2(a, b, C)
        assert res.cost == pytest.approx(emd2, rel=1e-9)
        assert res.value == pytest.approx(emd2 + 0.05 * b @ b, abs=1e-5)
