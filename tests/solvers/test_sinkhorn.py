"""Log-domain Sinkhorn against POT, closed forms, limit cases and invariants.

Every test that takes ``backend`` runs on NumPy arrays (numba_cpu), on array-api-strict
arrays (array_api) and, where a GPU exists, on CuPy arrays (cupy_gpu).
"""

from __future__ import annotations

import warnings

import array_api_strict
import numpy as np
import ot
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.testing import assert_allclose

import otcore as oc
from otcore import ConvergenceWarning

from ..problems import (
    gaussian_clouds,
    ground_cost,
    histogram,
    marginal_l1,
    plan_from_potentials,
    primal_objective,
    random_problem,
)

COSTS = ["sqeuclidean", "euclidean", ("pnorm", 1.5), ("pnorm", 3)]


def run(backend, a, b, C, eps, **kwargs):
    """Solve on ``backend`` from NumPy inputs; return the result and NumPy f, g, plan."""
    if isinstance(C, np.ndarray):
        C = backend.asarray(C)
    res = oc.sinkhorn(backend.asarray(a), backend.asarray(b), C, eps, **kwargs)
    f, g, P = (backend.to_numpy(v) for v in (res.f, res.g, res.plan))
    for name, v in (("f", f), ("g", g), ("plan", P)):
        assert np.all(np.isfinite(v)), f"{name} has non-finite entries"
    for name in ("cost", "value", "marginal_error"):
        assert np.isfinite(getattr(res, name)), name
    return res, f, g, P


def assert_same_potentials(f, g, f_ref, g_ref, atol):
    """``(f, g) == (f_ref + c, g_ref - c)`` for some constant ``c`` (the plan invariance)."""
    c = np.mean(f - f_ref)
    assert_allclose(f, f_ref + c, rtol=0, atol=atol)
    assert_allclose(g, g_ref - c, rtol=0, atol=atol)


def entropy(w):
    w = w[w > 0]
    return float(-np.sum(w * np.log(w)))


# --- reference solutions -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seed", "n", "m", "eps"), [(0, 23, 31, 0.05), (1, 40, 17, 0.1), (2, 15, 15, 0.02)]
)
def test_matches_pot_sinkhorn_log(backend, seed, n, m, eps):
    a, b, C, _, _ = random_problem(np.random.default_rng(seed), n, m)
    res, f, g, P = run(backend, a, b, C, eps, tol=1e-13, max_iter=100_000)
    assert res.converged
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # POT's own non-convergence note
        P_pot, log = ot.sinkhorn(
            a, b, C, eps, method="sinkhorn_log", stopThr=1e-15, numItermax=100_000, log=True
        )
    assert_allclose(P, P_pot, rtol=1e-8, atol=0)
    # POT: P = exp(log_u_i + log_v_j - C_ij / eps); ours: P = a_i b_j exp((f_i + g_j - C_ij)/eps)
    f_pot = eps * (log["log_u"] - np.log(a))
    g_pot = eps * (log["log_v"] - np.log(b))
    assert_same_potentials(f, g, f_pot, g_pot, atol=1e-8)
    assert res.cost == pytest.approx(np.sum(C * P_pot), rel=1e-8)


@pytest.mark.slow
@pytest.mark.parametrize("eps", [1e-2, 1e-3])
def test_larger_problem_matches_pot(backend, eps):
    """Sizes beyond the kernels' tile and column block, small eps."""
    a, b, C, _, _ = random_problem(np.random.default_rng(7), 600, 530)
    res, _, _, P = run(backend, a, b, C, eps, tol=1e-12, max_iter=100_000, eps_scaling=0.7)
    assert res.converged
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        P_pot = ot.sinkhorn(a, b, C, eps, method="sinkhorn_log", stopThr=1e-14,
                            numItermax=100_000)
    assert_allclose(P, P_pot, rtol=1e-6, atol=1e-15)


def test_eps_to_zero_approaches_emd(backend):
    """``emd2 <= <C, P_eps> <= value_eps <= emd2 + eps min(H(a), H(b))``, and both the cost
    and the value decrease monotonically as eps decreases."""
    a, b, C, _, _ = random_problem(np.random.default_rng(5), 20, 25)
    emd = ot.emd2(a, b, C)
    slack = 1e-8  # marginal tolerance times max C
    costs, values = [], []
    for eps in [0.1, 0.03, 0.01, 0.003]:
        res, *_ = run(backend, a, b, C, eps, max_iter=50_000)
        assert res.converged
        assert emd - slack <= res.cost <= res.value + slack
        assert res.value <= emd + eps * min(entropy(a), entropy(b)) + slack
        costs.append(res.cost)
        values.append(res.value)
    gaps = np.array(costs) - emd
    assert np.all(np.diff(gaps) < 0), gaps
    assert np.all(np.diff(values) < 0), values
    assert gaps[-1] < 0.1 * gaps[0]


def test_separable_cost_closed_form(backend, rng):
    """For ``C_ij = u_i + v_j`` every coupling has the same cost, so the optimum is ``a b^T``."""
    n, m, eps = 9, 13, 0.07
    a, b = histogram(rng, n), histogram(rng, m)
    u, v = rng.uniform(size=n), rng.uniform(size=m)
    res, _, _, P = run(backend, a, b, u[:, None] + v[None, :], eps)
    assert_allclose(P, np.outer(a, b), rtol=1e-10, atol=0)
    assert res.cost == pytest.approx(a @ u + b @ v, rel=1e-12)
    assert res.value == pytest.approx(res.cost, rel=1e-10)


@pytest.mark.parametrize(("n", "m"), [(1, 7), (6, 1), (1, 1)])
def test_single_point_closed_form(backend, rng, n, m):
    """With one source (or target) point the only feasible plan is ``a b^T``."""
    a, b = histogram(rng, n), histogram(rng, m)
    C = rng.uniform(size=(n, m))
    res, _, _, P = run(backend, a, b, C, 0.1)
    assert res.converged
    assert_allclose(P, np.outer(a, b), rtol=1e-12, atol=0)
    assert res.cost == pytest.approx(float(np.sum(C * np.outer(a, b))), rel=1e-12)
    assert res.value == pytest.approx(res.cost, rel=1e-12)


# --- point clouds --------------------------------------------------------------------------


@pytest.mark.parametrize("cost", COSTS)
@pytest.mark.parametrize("normalize", [False, True])
def test_pointcloud_equals_dense(backend, rng, cost, normalize):
    x, y = gaussian_clouds(rng, 29, 35, d=3)
    C = ground_cost(x, y, cost)
    scale = float(C.max()) if normalize else 1.0
    eps = 0.05 * float(C.max()) / scale
    kwargs = {"tol": 1e-12, "max_iter": 20_000}
    geom = oc.PointCloud(backend.asarray(x), backend.asarray(y), cost, scale=scale)
    r_pc, f_pc, g_pc, P_pc = run(backend, None, None, geom, eps, **kwargs)
    r_d, f_d, g_d, P_d = run(backend, None, None, C / scale, eps, **kwargs)
    assert r_pc.converged and r_d.converged
    assert_allclose(f_pc, f_d, rtol=0, atol=1e-10)
    assert_allclose(g_pc, g_d, rtol=0, atol=1e-10)
    assert_allclose(P_pc, P_d, rtol=1e-10, atol=0)
    for name in ("cost", "value"):
        assert getattr(r_pc, name) == pytest.approx(getattr(r_d, name), rel=1e-10)


def test_pointcloud_plan_size_limit(monkeypatch, rng):
    x, y = gaussian_clouds(rng, 6, 7)
    res = oc.sinkhorn(None, None, oc.PointCloud(x, y), 0.5)
    monkeypatch.setattr(oc.OTResult, "max_plan_entries", 41)
    with pytest.raises(ValueError, match="the plan of this point cloud has 42 entries"):
        _ = res.plan
    dense = oc.sinkhorn(None, None, ground_cost(x, y), 0.5)
    assert dense.plan.shape == (6, 7)  # the limit only concerns point clouds


def test_pointcloud_float32(backend, rng):
    x, y = gaussian_clouds(rng, 33, 41)
    C = ground_cost(x, y)
    x32, y32 = backend.asarray(x, np.float32), backend.asarray(y, np.float32)
    res = oc.sinkhorn(None, None, oc.PointCloud(x32, y32, scale=float(C.max())), 1e-2)
    dense = oc.sinkhorn(None, None, backend.asarray(C / C.max(), np.float32), 1e-2)
    backend.check_array(res.f, np.float32, (33,))
    backend.check_array(res.plan, np.float32, (33, 41))
    assert res.converged and dense.converged
    assert_allclose(backend.to_numpy(res.plan), backend.to_numpy(dense.plan), rtol=0, atol=1e-6)


def test_pointcloud_is_never_materialized():
    """Solving on a 6000 x 6000 point cloud allocates O(n + m) NumPy memory, far from the
    288 MB of its cost matrix (tracemalloc sees every NumPy allocation)."""
    import tracemalloc

    rng = np.random.default_rng(0)
    x, y = gaussian_clouds(rng, 6000, 6000)
    with pytest.warns(ConvergenceWarning):
        oc.sinkhorn(None, None, oc.PointCloud(x[:50], y[:60]), 0.1, max_iter=2)  # compile
        tracemalloc.start()
        try:
            oc.sinkhorn(None, None, oc.PointCloud(x, y), 0.1, max_iter=2)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert peak < 8e6, f"peak NumPy memory {peak / 1e6:.1f} MB"


def test_pointcloud_one_dimensional_points(rng):
    """1-D point arrays are read as points in dimension 1."""
    x, y = rng.normal(size=12), rng.normal(size=9)
    r1 = oc.sinkhorn(None, None, oc.PointCloud(x, y), 0.1)
    r2 = oc.sinkhorn(None, None, (x[:, None] - y[None, :]) ** 2, 0.1)
    assert_allclose(r1.f, r2.f, rtol=0, atol=1e-12)
    assert_allclose(r1.g, r2.g, rtol=0, atol=1e-12)


# --- the two backends agree ----------------------------------------------------------------


def _fixed_iterations(a, b, C, eps, xp_backend):
    """25 iterations without convergence: compares the iterates themselves."""
    with pytest.warns(ConvergenceWarning):
        return oc.sinkhorn(a, b, C, eps, tol=1e-300, max_iter=25, backend=xp_backend)


@pytest.mark.parametrize("cost", ["dense", *COSTS])
@pytest.mark.parametrize("shape", [(37, 45), (400, 350)])  # serial / multi-threaded kernels
def test_numba_equals_array_api(rng, cost, shape):
    n, m = shape
    x, y = gaussian_clouds(rng, n, m)
    a, b = histogram(rng, n, zeros=2), histogram(rng, m, zeros=1)
    xs = array_api_strict

    def geometry(xp):
        if cost == "dense":
            C = ground_cost(x, y)
            return xp.asarray(C / C.max())
        return oc.PointCloud(xp.asarray(x), xp.asarray(y), cost, scale=3.0)

    eps = 0.005
    r_nb = _fixed_iterations(a, b, geometry(np), eps, None)
    r_xp = _fixed_iterations(xs.asarray(a), xs.asarray(b), geometry(xs), eps, None)
    assert (r_nb.backend, r_xp.backend) == ("numba_cpu", "array_api")
    assert r_nb.n_iter == r_xp.n_iter == 25
    assert_allclose(np.from_dlpack(r_xp.f), r_nb.f, rtol=0, atol=1e-12)
    assert_allclose(np.from_dlpack(r_xp.g), r_nb.g, rtol=0, atol=1e-12)
    # the Numba plan kernel flushes entries below exp(-708) to zero (denormals in NumPy)
    assert_allclose(np.from_dlpack(r_xp.plan), r_nb.plan, rtol=1e-12, atol=1e-300)
    for name in ("cost", "value", "marginal_error"):
        assert getattr(r_xp, name) == pytest.approx(getattr(r_nb, name), rel=1e-12, abs=1e-15)
    assert r_nb.marginal_error > 1e-6  # not converged: the comparison is of real iterates


def test_forced_array_api_backend_on_numpy(problem):
    a, b, C, _, _ = problem
    r_nb = oc.sinkhorn(a, b, C, 0.05)
    r_ref = oc.sinkhorn(a, b, C, 0.05, backend="array_api")
    assert r_ref.backend == "array_api" and type(r_ref.f) is np.ndarray
    assert_allclose(r_ref.f, r_nb.f, rtol=0, atol=1e-12)
    assert_allclose(r_ref.plan, r_nb.plan, rtol=1e-12, atol=0)


# --- precision and small eps ---------------------------------------------------------------


def test_float32_small_eps(backend):
    a, b, C, _, _ = random_problem(np.random.default_rng(3), 40, 50)
    eps = 1e-3
    r64, _, _, P64 = run(backend, a, b, C, eps)
    a32, b32, C32 = (backend.asarray(v, np.float32) for v in (a, b, C))
    # tol above the float32 rounding floor of the marginal error at this eps: ~1.4e-5 on
    # the CPU, ~1e-4 on the GPU (exponents formed and accumulated in float32 there)
    tol = 2e-4 if backend.name == "cupy_gpu" else 5e-5
    res = oc.sinkhorn(a32, b32, C32, eps, tol=tol)
    for v, shape in ((res.f, (40,)), (res.g, (50,)), (res.plan, (40, 50))):
        backend.check_array(v, np.float32, shape)
    P = backend.to_numpy(res.plan)
    assert np.all(np.isfinite(P)) and np.all(P >= 0)
    assert res.converged
    assert res.marginal_error < tol
    # a run stopped at marginal error tol is that close to the float64 solution
    assert_allclose(P, P64, rtol=0, atol=0.4 * tol)
    assert res.cost == pytest.approx(r64.cost, abs=0.2 * tol)


@pytest.mark.parametrize("eps_scaling", [None, 0.7])
def test_float64_eps_1e4(backend, eps_scaling):
    a, b, C, _, _ = random_problem(np.random.default_rng(0), 12, 15)
    eps = 1e-4
    res, _, _, P = run(backend, a, b, C, eps, max_iter=20_000, eps_scaling=eps_scaling)
    assert res.converged and res.marginal_error < 1e-9
    emd = ot.emd2(a, b, C)
    assert emd - 1e-8 <= res.cost <= res.value + 1e-8
    assert res.value <= emd + eps * min(entropy(a), entropy(b)) + 1e-8
    assert marginal_l1(a, b, P) < 1e-9


# --- options reach the same solution --------------------------------------------------------


def test_options_reach_the_same_solution(backend, problem):
    a, b, C, _, _ = problem
    eps, tol = 0.05, 1e-12
    _, f0, g0, P0 = run(backend, a, b, C, eps, tol=tol)
    variants = {
        "symmetric": {"symmetric": True},
        "eps_scaling": {"eps_scaling": 0.5},
        "eps_scaling_init": {"eps_scaling": 0.8, "eps_init": 2.0},
        "init_f": {"init": (backend.asarray(np.linspace(-1, 1, len(a))), None)},
        "init_g": {"init": (None, backend.asarray(np.linspace(1, -2, len(b))))},
    }
    for name, kwargs in variants.items():
        res, f, g, P = run(backend, a, b, C, eps, tol=tol, max_iter=50_000, **kwargs)
        assert res.converged, name
        assert_allclose(P, P0, rtol=1e-9, atol=0, err_msg=name)
        assert_same_potentials(f, g, f0, g0, atol=1e-9)


@pytest.mark.parametrize("check_every", [1, 5, 10])
def test_warm_start_from_solution(backend, problem, check_every):
    a, b, C, _, _ = problem
    ref, *_ = run(backend, a, b, C, 0.05, tol=1e-10)
    res, _, _, P = run(backend, a, b, C, 0.05, tol=1e-10, init=(ref.f, ref.g),
                       check_every=check_every)
    assert res.converged and res.n_iter <= check_every
    assert_allclose(P, backend.to_numpy(ref.plan), rtol=1e-8, atol=0)


@pytest.mark.parametrize("scale", [1.0, 100.0])
def test_far_warm_start_small_eps(backend, problem, scale):
    """A warm start far from the solution (potentials off by up to 100 x the cost scale)
    still converges to the same plan, without overflow."""
    a, b, C, _, _ = problem
    eps = 1e-3
    ref, *_ = run(backend, a, b, C, eps, max_iter=20_000)
    init = scale * np.random.default_rng(9).uniform(-1, 1, size=len(a))
    res, _, _, P = run(backend, a, b, C, eps, max_iter=20_000, init=(backend.asarray(init), None))
    assert ref.converged and res.converged
    assert_allclose(P, backend.to_numpy(ref.plan), rtol=0, atol=1e-8)


def test_eps_scaling_counts_its_iterations(backend, problem):
    """The annealing stage is included in n_iter and in max_iter."""
    a, b, C, _, _ = problem
    with pytest.warns(ConvergenceWarning):
        res, *_ = run(backend, a, b, C, 1e-3, eps_scaling=0.5, eps_init=1.0, max_iter=5)
    assert res.n_iter == 5 and not res.converged
    assert res.errors == []  # the annealing stage alone used the whole budget


# --- result fields -------------------------------------------------------------------------


def test_max_iter_reached(backend, problem):
    a, b, C, _, _ = problem
    with pytest.warns(ConvergenceWarning, match="sinkhorn did not converge in 7 iterations") as w:
        res, *_ = run(backend, a, b, C, 1e-3, max_iter=7, check_every=1)
    assert len(w) == 1
    assert not res.converged and res.n_iter == 7
    assert res.marginal_error > 1e-9
    assert f"{res.marginal_error:.3e}" in str(w[0].message)
    assert [it for it, _ in res.errors] == list(range(7))


@pytest.mark.parametrize("mass", [1.0, 3.0])
@pytest.mark.parametrize("max_iter", [3, 10_000])
def test_value_and_marginal_error_from_plan(backend, max_iter, mass):
    """``value`` is the primal objective and ``marginal_error`` the L1 error of the plan,
    whether converged or not (checked independently with NumPy from the plan)."""
    a, b, C, _, _ = random_problem(np.random.default_rng(11), 18, 27, zeros=2)
    a, b = mass * a, mass * b
    eps = 0.03
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        res, f, g, P = run(backend, a, b, C, eps, max_iter=max_iter)
    assert res.converged == (max_iter > 3)
    assert_allclose(P, plan_from_potentials(a, b, C, f, g, eps), rtol=1e-12, atol=0)
    assert res.value == pytest.approx(primal_objective(a, b, C, P, eps), rel=1e-10)
    assert res.cost == pytest.approx(float(np.sum(C * P)), rel=1e-12)
    assert res.marginal_error == pytest.approx(marginal_l1(a, b, P), rel=1e-8, abs=1e-15)
    if res.converged:
        assert res.marginal_error < 1e-9
        # dual objective <f, a> + <g, b> - eps (sum P - sum(a) sum(b)), at the optimum
        dual = float(a @ f + b @ g) - eps * (mass - mass**2)
        assert res.value == pytest.approx(dual, abs=1e-8)


def test_zero_weights(backend):
    """Zero-weight points get empty rows/columns and finite potentials; the rest equals
    POT on the problem restricted to the support."""
    a, b, C, _, _ = random_problem(np.random.default_rng(4), 20, 24, zeros=3)
    eps = 0.05
    res, _, _, P = run(backend, a, b, C, eps, tol=1e-13)
    assert res.converged
    assert np.all(P[a == 0] == 0) and np.all(P[:, b == 0] == 0)
    ia, jb = a > 0, b > 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        P_pot = ot.sinkhorn(a[ia], b[jb], C[np.ix_(ia, jb)], eps, method="sinkhorn_log",
                            stopThr=1e-15, numItermax=100_000)
    assert_allclose(P[np.ix_(ia, jb)], P_pot, rtol=1e-8, atol=0)


def test_masses_within_tolerance_are_reconciled(backend, problem):
    """Masses equal up to round-off (here 1e-8, as from float32 weights) are made equal, so
    the default tolerance 1e-9 stays reachable; the plan's column sums follow b rescaled."""
    a, b, C, _, _ = problem
    b_off = b * (1 + 1e-8)
    res, _, _, P = run(backend, a, b_off, C, 0.05)
    assert res.converged and res.marginal_error < 1e-9
    assert_allclose(P.sum(axis=1), a, rtol=0, atol=1e-9)
    assert_allclose(P.sum(axis=0), b, rtol=0, atol=1e-9)


@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.uint8])
def test_integer_cost_promotes_to_float64(backend, rng, dtype):
    Ci = rng.integers(0, 9, size=(6, 8)).astype(dtype)
    res = oc.sinkhorn(None, None, backend.asarray(Ci), 2.0)
    backend.check_array(res.f, np.float64, (6,))
    backend.check_array(res.g, np.float64, (8,))
    backend.check_array(res.plan, np.float64, (6, 8))
    ref = oc.sinkhorn(None, None, backend.asarray(Ci.astype(np.float64)), 2.0)
    assert_allclose(backend.to_numpy(res.plan), backend.to_numpy(ref.plan), rtol=1e-14, atol=0)


@pytest.mark.parametrize(
    ("wdtype", "cdtype"),
    [(np.float64, np.float64), (np.float32, np.float32), (np.float32, np.float64),
     (np.float64, np.float32)],
)
def test_output_types(backend, rng, wdtype, cdtype):
    """Outputs live in the input namespace; their dtype is the cost's (weights follow it)."""
    a, b, C = histogram(rng, 5), histogram(rng, 4), rng.uniform(size=(5, 4))
    res = oc.sinkhorn(backend.asarray(a, wdtype), backend.asarray(b, wdtype),
                      backend.asarray(C, cdtype), 0.2)
    backend.check_array(res.f, cdtype, (5,))
    backend.check_array(res.g, cdtype, (4,))
    backend.check_array(res.plan, cdtype, (5, 4))
    for name in ("cost", "value", "marginal_error", "eps"):
        assert type(getattr(res, name)) is float, name
    assert type(res.converged) is bool and type(res.n_iter) is int
    assert res.backend == backend.name and res.method == "sinkhorn" and res.eps == 0.2
    text = repr(res)
    assert text.startswith("OTResult(method='sinkhorn'") and "shape=(5, 4)" in text


def test_non_contiguous_cost(rng):
    """Transposed and strided views give the same result as a contiguous copy."""
    big = rng.uniform(size=(30, 26))
    for C in (big.T[:, ::2], big[::3, 1::2], np.asfortranarray(big)):
        r1 = oc.sinkhorn(None, None, C, 0.05)
        r2 = oc.sinkhorn(None, None, np.ascontiguousarray(C), 0.05)
        assert_allclose(r1.f, r2.f, rtol=0, atol=1e-14)
        assert_allclose(r1.g, r2.g, rtol=0, atol=1e-14)


# --- properties ----------------------------------------------------------------------------

problems = st.fixed_dictionaries({
    "n": st.integers(1, 9),
    "m": st.integers(1, 9),
    "seed": st.integers(0, 2**32 - 1),
    "eps": st.sampled_from([0.05, 0.2, 1.0]),
    "zeros": st.integers(0, 2),
})


def _draw(spec):
    rng = np.random.default_rng(spec["seed"])
    n, m = spec["n"], spec["m"]
    a = histogram(rng, n, zeros=min(spec["zeros"], n - 1))
    b = histogram(rng, m, zeros=min(spec["zeros"], m - 1))
    return rng, a, b, rng.uniform(size=(n, m)), spec["eps"]


@settings(max_examples=25, deadline=None)
@given(spec=problems)
def test_property_plan_marginals_duality(backend, spec):
    _, a, b, C, eps = _draw(spec)
    tol = 1e-9
    res, f, g, P = run(backend, a, b, C, eps, tol=tol)
    assert res.converged
    assert np.all(P >= 0)
    assert marginal_l1(a, b, P) <= tol * 1.01 + 1e-14
    # duality gap: primal objective (from the plan) == dual objective <f, a> + <g, b>
    assert primal_objective(a, b, C, P, eps) == pytest.approx(a @ f + b @ g, abs=1e-8)


@settings(max_examples=25, deadline=None)
@given(spec=problems)
def test_property_permutation_equivariance(backend, spec):
    rng, a, b, C, eps = _draw(spec)
    pi, sigma = rng.permutation(len(a)), rng.permutation(len(b))
    # 1e-12: some drawn problems stall at a marginal error of ~1e-13 (rounding floor)
    kwargs = {"tol": 1e-12, "max_iter": 100_000}
    _, f, g, P = run(backend, a, b, C, eps, **kwargs)
    _, fp, gp, Pp = run(backend, a[pi], b[sigma], C[np.ix_(pi, sigma)], eps, **kwargs)
    assert_allclose(Pp, P[np.ix_(pi, sigma)], rtol=1e-9, atol=1e-15)
    assert_same_potentials(fp, gp, f[pi], g[sigma], atol=1e-9)


# --- convergence status -----------------------------------------------------------------


def test_converged_between_two_checks(rng):
    """``max_iter`` below ``check_every``: the last iteration is checked, and the status
    follows the exact marginal error of the returned plan (recomputed here from it)."""
    C = rng.uniform(size=(40, 30))
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        res = oc.sinkhorn(None, None, C, eps=1.0, max_iter=5, check_every=10)
    P = np.asarray(res.plan)
    error = np.abs(P.sum(1) - 1 / 40).sum() + np.abs(P.sum(0) - 1 / 30).sum()
    assert error < 1e-9 and res.converged
    assert [i for i, _ in res.errors] == [res.n_iter]  # the one check, at the end


def test_not_converged_between_two_checks_reports_exact_error(rng):
    a, b, C, _, _ = random_problem(rng, 40, 30)
    with pytest.warns(ConvergenceWarning, match=r"in 7 iterations: error (\S+) > tol") as w:
        res = oc.sinkhorn(a, b, C, eps=0.01, max_iter=7, check_every=10)
    assert not res.converged
    reported = float(str(w[0].message).split("error ")[1].split(" ")[0])
    assert reported == pytest.approx(res.marginal_error, rel=1e-3)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_non_finite_iterates_blame_eps_only_below_the_cost_resolution(rng, dtype):
    """Non-finite iterates are an input error when eps is far below the cost's scale times
    the machine epsilon, and otherwise a bug to report."""
    from otcore.solvers._problem import make_problem
    from otcore.solvers.sinkhorn import non_finite_error

    prob = make_problem(None, None, (4.0 * rng.uniform(size=(6, 5))).astype(dtype), None)
    floor = 1e4 * np.finfo(dtype).eps * float(np.abs(prob.geom.C).max())
    tiny = non_finite_error(prob, 0.5 * floor, "what")
    assert isinstance(tiny, ValueError) and "eps" in str(tiny) and "too small" in str(tiny)
    assert isinstance(non_finite_error(prob, 2.0 * floor, "what"), FloatingPointError)
