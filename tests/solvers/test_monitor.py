"""Control of long solves: callback, time limit and progress display of ``sinkhorn``."""

from __future__ import annotations

import time
import warnings

import numpy as np
import pytest
from numpy.testing import assert_array_equal

import otcore as oc

from ..problems import random_problem


@pytest.fixture
def slow_problem():
    a, b, C, _, _ = random_problem(np.random.default_rng(1), 60, 50)
    return a, b, C, 1e-3  # hundreds of iterations


def test_callback_stops_with_an_honest_partial_result(slow_problem):
    a, b, C, eps = slow_problem
    seen = []

    def stop_at_5(info):
        seen.append((info.n_iter, info.error))
        return info.n_iter == 5

    with pytest.warns(oc.ConvergenceWarning, match="Stopped by the callback"):
        res = oc.sinkhorn(a, b, C, eps, check_every=1, callback=stop_at_5)
    assert res.n_iter == 5 and not res.converged
    assert res.extra["stopped"] == "callback"
    assert seen == res.errors  # the callback saw every check, with the recorded errors
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", oc.ConvergenceWarning)
        ref = oc.sinkhorn(a, b, C, eps, max_iter=5)
    assert_array_equal(res.f, ref.f)  # the potentials after 5 iterations
    assert_array_equal(res.g, ref.g)
    assert res.marginal_error == ref.marginal_error


def test_callback_returning_none_changes_nothing(slow_problem):
    a, b, C, _ = slow_problem
    ref = oc.sinkhorn(a, b, C, 0.05)
    res = oc.sinkhorn(a, b, C, 0.05, callback=lambda info: None)
    assert res.n_iter == ref.n_iter and res.converged and "stopped" not in res.extra
    assert_array_equal(res.f, ref.f)


def test_time_limit_is_honoured_within_one_check(slow_problem):
    a, b, C, eps = slow_problem
    elapsed = []

    def slow(info):  # each check takes 20 ms: the limit is reached after a few
        elapsed.append(info.elapsed)
        time.sleep(0.02)

    with pytest.warns(oc.ConvergenceWarning, match="time limit of 0.1 s"):
        res = oc.sinkhorn(a, b, C, eps, check_every=1, callback=slow, time_limit=0.1)
    assert res.extra["stopped"] == "time_limit" and not res.converged
    assert elapsed[-1] >= 0.1 > elapsed[-2]  # stopped at the first check past the limit
    assert res.n_iter == len(elapsed) - 1


def test_verbose_prints_progress_without_tqdm(slow_problem, capsys, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_tqdm(name, *args, **kwargs):
        if name.startswith("tqdm"):
            raise ImportError("no tqdm here")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tqdm)
    a, b, C, _ = slow_problem
    oc.sinkhorn(a, b, C, 0.05, verbose=True)
    err = capsys.readouterr().err
    assert err.startswith("sinkhorn: iteration 9, error ") and "(tol 1.0e-09)" in err


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"callback": 3}, TypeError, "callback must be callable"),
        ({"verbose": 1}, TypeError, "verbose must be True or False"),
        ({"time_limit": 0}, ValueError, "time_limit must be > 0"),
        ({"time_limit": -1.0}, ValueError, "time_limit must be > 0"),
        ({"time_limit": "1"}, TypeError, "time_limit must be a number"),
    ],
)
def test_bad_monitoring_options(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        oc.sinkhorn(None, None, np.ones((2, 2)), 0.1, **kwargs)


def test_sns_callback_in_the_warm_up_and_in_the_newton_stage(slow_problem):
    a, b, C, eps = slow_problem
    with pytest.warns(oc.ConvergenceWarning, match="Stopped by the callback"):
        # without the annealing levels, which are not checked (one pass each)
        res = oc.sinkhorn_newton_sparse(a, b, C, eps, callback=lambda i: i.n_iter >= 3,
                                        warmup_scaling=None)
    assert res.n_iter == 3 and not res.converged and res.extra["stopped"] == "callback"
    assert res.extra["newton_iter"] == 0
    full = oc.sinkhorn_newton_sparse(a, b, C, 0.05)
    assert full.extra["newton_iter"] >= 2
    with pytest.warns(oc.ConvergenceWarning, match="Stopped by the callback"):
        part = oc.sinkhorn_newton_sparse(a, b, C, 0.05,
                                         callback=lambda i: i.n_iter >= full.n_iter - 1)
    assert part.extra["stopped"] == "callback" and part.n_iter == full.n_iter - 1
    assert part.extra["newton_iter"] == full.extra["newton_iter"] - 1
    assert part.marginal_error > full.marginal_error


def test_warm_starts_take_fewer_iterations():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(80, 2))
    y = x @ np.array([[0.0, -1.0], [1.0, 0.0]]) + 0.3 * rng.normal(size=(80, 2))
    cold = oc.monge_gap(x, y, 0.2)
    y2 = y + 1e-3 * rng.normal(size=y.shape)  # one small step of a fit
    fresh = oc.monge_gap(x, y2, 0.2)
    warm = oc.monge_gap(x, y2, 0.2, init=cold)
    assert cold.converged and fresh.converged and warm.converged
    assert warm.value == pytest.approx(fresh.value, rel=1e-8)
    assert warm.solves["xy"].n_iter < 0.7 * fresh.solves["xy"].n_iter
    div_cold = oc.sinkhorn_divergence(x, y, 0.2)
    div_fresh = oc.sinkhorn_divergence(x, y2, 0.2)
    div_warm = oc.sinkhorn_divergence(x, y2, 0.2, init=div_cold)
    assert div_warm.value == pytest.approx(div_fresh.value, rel=1e-7, abs=1e-10)
    assert (sum(r.n_iter for r in div_warm.solves.values())
            < sum(r.n_iter for r in div_fresh.solves.values()))
    C = ((x[:, None] - y2[None]) ** 2).sum(-1)
    C /= C.max()
    sns = oc.sinkhorn_newton_sparse(None, None, C, 1e-3)
    sns_warm = oc.sinkhorn_newton_sparse(None, None, C, 1e-3, init=(sns.f, sns.g))
    assert sns_warm.n_iter < sns.n_iter
    np.testing.assert_allclose(sns_warm.plan, sns.plan, rtol=1e-6, atol=1e-12)


def test_bad_warm_starts():
    x = np.random.default_rng(4).normal(size=(10, 2))
    prev = oc.monge_gap(x, x + 1, 0.5)
    with pytest.raises(ValueError, match="init comes from clouds of other sizes"):
        oc.monge_gap(x[:5], x[:5] + 1, 0.5, init=prev)
    with pytest.raises(TypeError, match="init must be a LossResult of sinkhorn_divergence"):
        oc.sinkhorn_divergence(x, x + 1, 0.5, init=prev)


@pytest.mark.parametrize("make", [np.array, lambda v: np.float32(v)])
def test_scalars_may_be_0d_arrays(make):
    C = np.random.default_rng(5).random((6, 5))
    ref = oc.sinkhorn(None, None, C, 0.1)
    res = oc.sinkhorn(None, None, C, make(0.1), tol=make(1e-9))
    assert res.eps == pytest.approx(0.1, rel=1e-7) and res.converged
    np.testing.assert_allclose(res.f, ref.f, rtol=1e-6)
    with pytest.raises(TypeError, match="eps must be a real number"):
        oc.sinkhorn(None, None, C, np.array([0.1]))
    with pytest.raises(TypeError, match="eps must be a real number"):
        oc.sinkhorn(None, None, C, np.array(True))


def test_eps_is_passed_the_same_way_everywhere():
    x = np.random.default_rng(6).normal(size=(8, 2))
    y = x + 0.5
    C = ((x[:, None] - y[None]) ** 2).sum(-1)
    assert oc.sinkhorn(None, None, C, 0.5).eps == oc.sinkhorn(None, None, C, eps=0.5).eps
    assert oc.monge_gap(x, y, 0.5).value == oc.monge_gap(x, y, eps=0.5).value
    assert (oc.sinkhorn_divergence(x, y, 0.5).value
            == oc.sinkhorn_divergence(x, y, eps=0.5).value)


def test_cardinality_callback_stops_lbfgsb():
    a, b, C, _, _ = random_problem(np.random.default_rng(7), 30, 20)
    with pytest.warns(oc.ConvergenceWarning, match="kink"):
        full = oc.cardinality_ot(a, b, C, 2, 0.1)
    seen = []

    def stop(info):
        seen.append(info.n_iter)
        return info.n_iter >= 5

    with pytest.warns(oc.ConvergenceWarning, match="Stopped by the callback"):
        res = oc.cardinality_ot(a, b, C, 2, 0.1, callback=stop)
    assert res.extra["stopped"] == "callback" and not res.converged
    assert seen[-1] >= 5 > max(seen[:-1]) and len(seen) < len(full.errors)
    assert int(np.diff(res.plan.tocsc().indptr).max()) <= 2  # still a valid 2-sparse plan


def test_losses_pass_the_callback_to_their_solves():
    x = np.random.default_rng(8).normal(size=(20, 2))
    seen = []
    res = oc.sinkhorn_divergence(x, x + 0.5, 0.5, callback=lambda i: seen.append(i.method))
    assert res.converged and seen and set(seen) == {"sinkhorn"}
    with pytest.warns(oc.ConvergenceWarning, match="monge_gap: sinkhorn did not converge"):
        gap = oc.monge_gap(x, x @ np.array([[0.0, -1.0], [1.0, 0.0]]), 0.1,
                           callback=lambda i: True)
    assert gap.solves["xy"].extra["stopped"] == "callback"
