"""Batches of problems in one call: every form equals the loop over single problems."""

from __future__ import annotations

import numpy as np
import ot
import pytest

import otcore as oc
from otcore import ConvergenceWarning

from ..problems import gaussian_clouds, ground_cost, histogram

EPS = 0.05


def _close(x, y, tol=1e-12):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=0, atol=tol)


def _check_against_loop(backend, res, singles, tol=1e-12):
    """Batch result ``res`` against the list of single results."""
    assert len(res) == len(singles)
    for k, single in enumerate(singles):
        f = res.f[k] if isinstance(res.f, list) else res.f[k, :]
        g = res.g[k] if isinstance(res.g, list) else res.g[k, :]
        _close(backend.to_numpy(f), backend.to_numpy(single.f), tol)
        _close(backend.to_numpy(g), backend.to_numpy(single.g), tol)
        assert res.n_iter[k] == single.n_iter
        assert res.converged[k] == single.converged
        assert res.value[k] == pytest.approx(single.value, abs=tol)
        assert res.cost[k] == pytest.approx(single.cost, abs=tol)
        assert res.marginal_error[k] == pytest.approx(single.marginal_error, abs=1e-14)


def test_shared_cost_many_histograms(backend, rng):
    n, m, B = 30, 25, 6
    x, y = gaussian_clouds(rng, n, m)
    C = ground_cost(x, y)
    C /= C.max()
    A = np.stack([histogram(rng, n, zeros=k % 3) for k in range(B)])
    Bw = np.stack([histogram(rng, m) for _ in range(B)])
    res = oc.sinkhorn(backend.asarray(A), backend.asarray(Bw), backend.asarray(C), EPS)
    backend.check_array(res.f, np.float64, (B, n))
    singles = [oc.sinkhorn(backend.asarray(A[k]), backend.asarray(Bw[k]),
                           backend.asarray(C), EPS) for k in range(B)]
    _check_against_loop(backend, res, singles)
    if backend.name == "numba_cpu":
        assert res.extra["path"] == "gibbs"


def test_shared_cost_matches_pot_sinkhorn2(rng):
    """POT's many-targets convention: b of shape (m, B) is otcore's (B, m)."""
    n, m, B = 20, 15, 5
    x, y = gaussian_clouds(rng, n, m)
    C = ground_cost(x, y)
    C /= C.max()
    a = histogram(rng, n)
    Bw = np.stack([histogram(rng, m) for _ in range(B)], axis=1)  # POT: (m, B)
    ref = ot.sinkhorn2(a, Bw, C, EPS, method="sinkhorn_log", stopThr=1e-13,
                       numItermax=100_000)
    res = oc.sinkhorn(a, Bw.T, C, EPS)
    _close(res.cost, ref, 1e-9)


def test_gibbs_path_equals_log_domain(rng):
    n, m, B = 40, 35, 8
    x, y = gaussian_clouds(rng, n, m)
    C = ground_cost(x, y)
    C /= C.max()
    A = np.stack([histogram(rng, n) for _ in range(B)])
    res = oc.sinkhorn(A, None, C, 0.02)
    ref = oc.sinkhorn(A, None, C, 0.02, backend="array_api")
    assert res.extra["path"] == "gibbs" and ref.extra["path"] == "log"
    _close(res.f, ref.f, 1e-11)
    _close(res.g, ref.g, 1e-11)
    assert np.all(res.converged) and np.all(res.marginal_error <= 1e-9)


def test_stacked_costs(backend, rng):
    B, n, m = 4, 12, 9
    Cs = np.stack([ground_cost(*gaussian_clouds(rng, n, m)) for _ in range(B)])
    Cs /= Cs.max()
    a = histogram(rng, n)
    res = oc.sinkhorn(backend.asarray(a), None, backend.asarray(Cs), EPS)
    singles = [oc.sinkhorn(backend.asarray(a), None, backend.asarray(Cs[k]), EPS)
               for k in range(B)]
    _check_against_loop(backend, res, singles)
    if backend.name == "numba_cpu":
        assert res.extra["path"] == "kernels"  # per-problem cached Gibbs kernels
    P = backend.to_numpy(res.plan)
    assert P.shape == (B, n, m)
    _close(P.sum(axis=2), np.broadcast_to(a, (B, n)), 1e-9)


def test_stacked_clouds(backend, rng):
    B, n, m, d = 3, 15, 11, 3
    xs = rng.normal(size=(B, n, d))
    ys = rng.normal(size=(B, m, d)) + 0.5
    geom = oc.PointCloud(backend.asarray(xs), backend.asarray(ys), scale=4.0)
    assert geom.batch_size == B and geom.shape == (n, m)
    res = oc.sinkhorn(None, None, geom, EPS)
    singles = [oc.sinkhorn(None, None, oc.PointCloud(backend.asarray(xs[k]),
                                                     backend.asarray(ys[k]), scale=4.0), EPS)
               for k in range(B)]
    _check_against_loop(backend, res, singles)
    # the online batch equals the dense batch of the same costs
    dense = oc.sinkhorn(None, None, backend.asarray(np.stack(
        [ground_cost(xs[k], ys[k]) / 4.0 for k in range(B)])), EPS)
    _close(backend.to_numpy(res.f), backend.to_numpy(dense.f), 1e-12)


def test_ragged_costs_and_clouds(backend, rng):
    sizes = [(8, 5), (13, 17), (4, 9)]
    clouds = [gaussian_clouds(rng, n, m) for n, m in sizes]
    a = [histogram(rng, n) for n, _ in sizes]
    b = [None, histogram(rng, 17), histogram(rng, 9, zeros=2)]
    costs = [ground_cost(x, y) / 10 for x, y in clouds]
    res = oc.sinkhorn([backend.asarray(w) for w in a],
                      [None if w is None else backend.asarray(w) for w in b],
                      [backend.asarray(c) for c in costs], EPS)
    assert [len(backend.to_numpy(f)) for f in res.f] == [n for n, _ in sizes]
    singles = [oc.sinkhorn(backend.asarray(a[k]), backend.asarray(b[k]),
                           backend.asarray(costs[k]), EPS) for k in range(3)]
    _check_against_loop(backend, res, singles)
    geoms = [oc.PointCloud(backend.asarray(x), backend.asarray(y), scale=10.0)
             for x, y in clouds]
    res_pc = oc.sinkhorn([backend.asarray(w) for w in a],
                         [None if w is None else backend.asarray(w) for w in b], geoms, EPS)
    _check_against_loop(backend, res_pc, singles)
    assert isinstance(res.plan, list) and res.plan[1].shape == (13, 17)


def test_each_problem_stops_on_its_own(backend, rng):
    """A problem that needs many more iterations does not hold the others back."""
    B, n = 4, 10
    Cs = np.stack([ground_cost(*gaussian_clouds(rng, n, n)) for _ in range(B)])
    Cs /= Cs.max()
    Cs[2] *= 10.0  # eps relatively 10 times smaller: many more iterations
    res = oc.sinkhorn(None, None, backend.asarray(Cs), EPS, max_iter=100_000)
    others = np.delete(res.n_iter, 2)
    assert res.n_iter[2] >= 10 * others.max()
    for k in (0, 1, 3):
        single = oc.sinkhorn(None, None, backend.asarray(Cs[k]), EPS)
        assert res.n_iter[k] == single.n_iter
        assert res.errors[k][-1][0] == single.n_iter
    assert np.all(res.converged)


def test_small_eps_in_a_batch_is_finite_and_honest(backend, rng):
    n, B = 12, 3
    x, y = gaussian_clouds(rng, n, n)
    C = ground_cost(x, y)
    C /= C.max()
    A = np.stack([histogram(rng, n) for _ in range(B)])
    with pytest.warns(ConvergenceWarning, match="did not converge on"):
        res = oc.sinkhorn(backend.asarray(A), None, backend.asarray(C), 1e-4, max_iter=300)
    f = backend.to_numpy(res.f)
    assert np.all(np.isfinite(f)) and np.all(np.isfinite(res.value))
    np.testing.assert_array_equal(res.converged, res.marginal_error <= 1e-9)
    assert not res.converged.all()
    if backend.name == "numba_cpu":
        assert res.extra["path"] == "log"  # no shared absorption fits at this eps
    # longer runs converge, still finite, and agree with the single solves
    res = oc.sinkhorn(backend.asarray(A), None, backend.asarray(C), 1e-4, max_iter=50_000)
    single = oc.sinkhorn(backend.asarray(A[1]), None, backend.asarray(C), 1e-4,
                         max_iter=50_000)
    assert res.converged[1] == single.converged
    _close(backend.to_numpy(res.f)[1], backend.to_numpy(single.f), 1e-10)


def test_items_are_results(rng):
    n, B = 10, 3
    C = ground_cost(*gaussian_clouds(rng, n, n))
    A = np.stack([histogram(rng, n) for _ in range(B)])
    res = oc.sinkhorn(A, None, C / C.max(), EPS)
    item = res[-1]
    assert isinstance(item, oc.OTResult)
    _close(item.f, res.f[2])
    _close(item.plan.sum(axis=1), A[2], 1e-9)
    _close(item.apply(np.ones(n)), A[2], 1e-9)
    assert [r.n_iter for r in res] == list(res.n_iter)
    with pytest.raises(IndexError, match="out of range"):
        res[3]
    assert "B=3" in repr(res)


def test_torch_batch_comes_back_as_torch(rng):
    torch = pytest.importorskip("torch")
    n, B = 8, 2
    C = ground_cost(*gaussian_clouds(rng, n, n))
    A = np.stack([histogram(rng, n) for _ in range(B)])
    res = oc.sinkhorn(torch.asarray(A), None, torch.asarray(C / C.max()), EPS)
    assert isinstance(res.f, torch.Tensor) and tuple(res.f.shape) == (B, n)
    ref = oc.sinkhorn(A, None, C / C.max(), EPS)
    _close(res.f.numpy(), ref.f, 1e-13)
    assert isinstance(res[0].f, torch.Tensor)


@pytest.mark.parametrize(("args", "match"), [
    (lambda r: (np.full((3, 4), 0.25), np.full((2, 5), 0.2), np.ones((4, 5))),
     "mismatched batch sizes: a has 3 problems, b has 2"),
    (lambda r: (None, None, np.ones((0, 4, 5))), "B = 0"),
    (lambda r: (None, None, []), "B = 0"),
    (lambda r: (np.full((2, 4), 0.25), None, np.ones((3, 4, 5))),
     "mismatched batch sizes: C has 3 problems, a has 2"),
    (lambda r: (np.full((2, 3), 1 / 3), None, np.ones((4, 5))),
     r"a has shape \(2, 3\), expected \(2, 4\)"),
    (lambda r: ([np.full(4, 0.25)], None, [np.ones((4, 5)), np.ones((3, 3))]),
     "a must be None or a list of 2"),
    (lambda r: ([np.full(4, 0.25), np.full(4, 0.25)], None,
                [np.ones((4, 5)), np.ones((3, 3))]), r"a\[1\] has length 4"),
    (lambda r: (np.array([[0.5, 0.5], [1.0, 1.0]]), None, np.ones((2, 2))),
     "problem 1 of the batch"),
    (lambda r: (np.array([[0.5, 0.5], [-1.0, 2.0]]), None, np.ones((2, 2))),
     "negative"),
])
def test_bad_batches(rng, args, match):
    a, b, C = args(rng)
    with pytest.raises(ValueError, match=match):
        oc.sinkhorn(a, b, C, EPS)


def test_bad_batch_options_and_clouds(rng):
    with pytest.raises(ValueError, match="mismatched batch sizes: x holds 3 clouds and y 2"):
        oc.PointCloud(np.ones((3, 4, 2)), np.ones((2, 4, 2)))
    with pytest.raises(ValueError, match="init is not supported for a batch"):
        oc.sinkhorn(np.full((2, 2), 0.5), None, np.eye(2), EPS, init=(None, None))
    with pytest.raises(ValueError, match=r"reg_m \(rho_a\) must be > 0"):
        oc.sinkhorn(np.full((2, 2), 0.5), None, np.eye(2), EPS, reg_m=-1.0)
    with pytest.raises(ValueError, match="stacks 2 point clouds"):
        oc.multiscale_sinkhorn(None, None, oc.PointCloud(np.ones((2, 3, 1)),
                                                         np.ones((2, 3, 1))), EPS)


def test_sns_batch_is_a_loop(rng):
    Cs = rng.random((3, 20, 15))
    res = oc.sinkhorn_newton_sparse(None, None, Cs, 1e-2)
    assert isinstance(res, oc.BatchResult) and res.extra["path"] == "loop"
    for k in range(3):
        single = oc.sinkhorn_newton_sparse(None, None, Cs[k], 1e-2)
        _close(res.f[k], single.f)
        assert res.n_iter[k] == single.n_iter


def test_loss_batches(rng):
    x = rng.normal(size=(3, 20, 2))
    y = rng.normal(size=(3, 15, 2)) + 1.0
    res = oc.sinkhorn_divergence(x, y, 0.5, return_grad=True)
    assert res.value.shape == (3,) and res.grad.shape == (3, 15, 2) and res.converged
    for k in range(3):
        single = oc.sinkhorn_divergence(x[k], y[k], 0.5, return_grad=True)
        assert res.value[k] == pytest.approx(single.value, abs=1e-13)
        _close(res.grad[k], single.grad, 1e-13)
    gaps = oc.monge_gap(x, x + 0.5, 0.5)
    assert gaps.value[1] == pytest.approx(oc.monge_gap(x[1], x[1] + 0.5, 0.5).value,
                                          abs=1e-13)
    assert "array of shape (3,)" in repr(gaps)
    with pytest.raises(ValueError, match="needs x"):
        oc.sinkhorn_divergence(x, y[0], 0.5)
    with pytest.raises(ValueError, match="mismatched batch sizes: a has 2 rows"):
        oc.monge_gap(x, x, 0.5, a=np.full((2, 20), 0.05))


def test_callback_stops_a_batch(rng):
    Cs = np.stack([ground_cost(*gaussian_clouds(rng, 10, 10)) for _ in range(3)])
    Cs /= Cs.max()
    seen = []

    def stop(info):
        seen.append(info)
        return True

    with pytest.warns(ConvergenceWarning, match="Stopped by the callback"):
        res = oc.sinkhorn(None, None, Cs, 0.01, callback=stop)
    assert len(seen) == 1 and seen[0].n_iter == 9
    assert res.extra["stopped"] == "callback"
    np.testing.assert_array_equal(res.n_iter, 10)
    np.testing.assert_array_equal(res.converged, res.marginal_error <= 1e-9)


@pytest.mark.parametrize("shared", [False, True])
def test_float32_batch_equals_loop(rng, shared):
    n, B = 16, 4
    Cs = np.stack([ground_cost(*gaussian_clouds(rng, n, n)) for _ in range(B)])
    Cs = (Cs / Cs.max()).astype(np.float32)
    A = np.stack([histogram(rng, n) for _ in range(B)]).astype(np.float32)
    C = Cs[0] if shared else Cs
    res = oc.sinkhorn(A, None, C, 0.05)
    assert res.f.dtype == np.float32 and res.converged.all()
    for k in range(B):
        single = oc.sinkhorn(A[k], None, Cs[0] if shared else Cs[k], 0.05)
        np.testing.assert_allclose(res.f[k], single.f, rtol=0, atol=1e-5)


@pytest.mark.parametrize("reg_m", [0.1, (np.inf, 0.3), (1.0, 0.5)])
def test_unbalanced_batches_equal_the_loop(backend, rng, reg_m):
    """Unequal masses, semi-relaxed and relaxed sides, stacked costs and one shared cost."""
    B, n, m = 4, 12, 9
    Cs = rng.random((B, n, m))
    A = rng.uniform(0.1, 1.0, size=(B, n)) / n
    Bw = 1.5 * rng.uniform(0.1, 1.0, size=(B, m)) / m
    for C, pick in ((Cs, lambda k: Cs[k]), (Cs[0], lambda k: Cs[0])):
        res = oc.sinkhorn(backend.asarray(A), backend.asarray(Bw), backend.asarray(C), EPS,
                          reg_m=reg_m)
        singles = [oc.sinkhorn(backend.asarray(A[k]), backend.asarray(Bw[k]),
                               backend.asarray(pick(k)), EPS, reg_m=reg_m) for k in range(B)]
        _check_against_loop(backend, res, singles)
        for k in (0, 3):
            assert res.dual_value[k] == pytest.approx(singles[k].dual_value, abs=1e-12)
        assert res[2].reg_m == singles[2].reg_m


def test_solve_picks_a_batch_method(rng):
    Cs = rng.random((3, 20, 15))
    res = oc.solve(None, None, Cs, eps=0.05)
    assert isinstance(res, oc.BatchResult) and "batched Sinkhorn" in res.extra["choice"]
    _close(res.f, oc.sinkhorn(None, None, Cs, 0.05).f, 0.0)
    res = oc.solve(None, None, Cs, eps=1e-3)
    assert res.method == "sinkhorn_newton_sparse" and "one problem after another" in \
        res.extra["choice"]
    assert res.converged.all()
    _close(res.f[1], oc.sinkhorn_newton_sparse(None, None, Cs[1], 1e-3).f, 0.0)


def test_cardinality_batch_is_a_loop(rng):
    Cs = rng.random((3, 12, 10))
    res = oc.cardinality_ot(None, None, Cs, k=None, gamma=0.1)
    assert isinstance(res, oc.BatchResult) and res.method.startswith("cardinality_ot")
    for k in range(3):
        single = oc.cardinality_ot(None, None, Cs[k], k=None, gamma=0.1)
        _close(res.f[k], single.f, 0.0)
        assert res.value[k] == single.value
    assert res.converged.all()


def _gibbs_case(rng):
    """A shared-cost batch whose cost has nonzero column minima and one zero weight, with
    its Gibbs (matrix-product) iterator: ``(a, b, log a, log b, eps, iterator)``."""
    from otcore.backends import get_backend
    from otcore.collection import as_batch

    n, m, B, eps = 12, 9, 5, 0.05
    C = rng.random((n, m)) + 3.0
    a, b = rng.random((B, n)) + 0.1, rng.random((B, m)) + 0.1
    a[0, 3] = 0.0
    a /= a.sum(axis=1, keepdims=True)
    b /= b.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore"):
        la, lb = np.log(a), np.log(b)
    return a, b, la, lb, eps, get_backend(C).bind_batch(as_batch(a, b, C)).iterator(la, lb,
                                                                                       eps)


def test_gibbs_start_and_plan_stats_match_kernels(rng):
    """The matrix-product first update and final statistics of the shared-cost CPU path
    equal the Numba kernels' (a cost with nonzero column minima, a zero weight)."""
    from otcore.backends._contract import BatchIterator

    a, b, la, lb, eps, it = _gibbs_case(rng)
    B, n, m = a.shape[0], a.shape[1], b.shape[1]
    assert it.path == "gibbs"
    active = np.arange(B)
    f = 0.3 * rng.random((B, n))
    g = it.first_g(f, active, np.zeros((B, m)))
    _close(g, BatchIterator.first_g(it, f, active, np.zeros((B, m))), 1e-13)
    _, _, f, g = it.advance_to_check(np.zeros((B, n)), g, active, 3)
    hf, hg = f + eps * la, g + eps * lb
    for x, y in zip(it.plan_stats(hf, hg), BatchIterator.plan_stats(it, hf, hg), strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-13, atol=1e-300)


def test_gibbs_check_errors_match_potentials(rng):
    """The row errors the shared-cost CPU iterator reports at a check, from its scalings,
    equal those of the potentials it returned (a cost with nonzero column minima, a zero
    weight), on the whole batch and after problems left."""
    from otcore.backends._contract import BatchIterator

    a, b, *_, it = _gibbs_case(rng)
    B, n, m = a.shape[0], a.shape[1], b.shape[1]
    rho = (np.inf, np.inf)
    f, g = np.zeros((B, n)), it.first_g(np.zeros((B, n)), np.arange(B), np.zeros((B, m)))
    for active in (np.arange(B), np.array([0, 2, 3])):
        state = it.advance_to_check(f, g, active, 4)
        assert state[0] is None and state[1] is None  # formed on demand
        err = it.check_errors(np, (a, b), *state, active, rho)
        f_in, g_in = it.check_input(*state[:2], active)
        ref = BatchIterator.check_errors(it, np, (a, b), f_in, g_in, *state[2:], active, rho)
        assert err.shape == (active.size,) and np.all(ref > 1e-6)
        np.testing.assert_allclose(err, ref, rtol=1e-12, atol=0)
        log = BatchIterator.advance_to_check(it, f, g, active, 4)
        for x, y in zip((f_in, g_in, *state[2:]), log, strict=True):
            _close(x[active], y[active], 1e-13)
        f, g = state[2:]
    assert it.path == "gibbs"
