"""Sinkhorn implementations under one interface, and the time-to-target protocol.

Every solver runs the same alternating iteration from zero potentials: each potential is
updated once, by an exact log-sum-exp (soft-minimum) given the newest other potential.
How many passes over the cost that takes is the implementation's business.
Potentials are returned in otcore's convention ``P_ij = a_i b_j exp((f_i + g_j - C_ij) /
eps)``, and convergence is judged on the L1 marginal error ``|P 1 - a|_1 + |P^T 1 - b|_1``
checked every :data:`CHECK_EVERY` iterations by every solver.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ._common import Problem, Timing, l1_marginal_error

__all__ = ["CHECK_EVERY", "TARGET", "Convergence", "Otcore", "Ott", "Pot", "Run", "Solver",
           "iterate_spread", "measure_target"]

TARGET = 1e-9  # L1 marginal error to reach
CHECK_EVERY = 10  # every solver checks its error every 10 iterations


@dataclass
class Run:
    """Outcome of one solve to the target error.

    ``f, g`` are in otcore's convention; ``history`` holds ``(iterations, L1 error)`` at
    each check, as the solver measured it.
    """

    converged: bool
    iterations: int
    f: np.ndarray
    g: np.ndarray
    history: list[tuple[int, float]]


@dataclass
class Convergence:
    """Iterations and time to the target L1 marginal error for one solver and problem.

    ``time`` is the median over repeats of the whole solve when ``reached``; otherwise the
    time spent before the budget stopped it. ``error`` is the L1 marginal error of the
    final potentials computed independently (:func:`bench._common.l1_marginal_error`).
    """

    reached: bool
    iterations: int
    time: Timing
    error: float
    history: list[tuple[int, float]] = field(default_factory=list)


class Solver:
    """A Sinkhorn implementation under test.

    Subclasses give ``fixed``, a callable running a fixed number of iterations, and
    ``target_solver``, a callable solving to :data:`TARGET`.
    """

    name = ""
    warmup = 1  # untimed calls before timing a fixed-iteration run

    def fixed(self, prob: Problem, eps: float, iterations: int) -> Callable[[], np.ndarray]:
        """A callable that runs exactly ``iterations`` iterations and returns ``f``.

        It starts from the library's own zero initialization; ``f`` is the row potential
        in otcore's convention (libraries differ by a constant shift of the potentials,
        which leaves every plan unchanged).
        """
        raise NotImplementedError

    def target_solver(self, prob: Problem, eps: float, max_iter: int,
                      budget: float) -> tuple[Callable[[], Run] | None, Convergence | None]:
        """A callable solving to :data:`TARGET` (checking every :data:`CHECK_EVERY`).

        Returns ``(solve, None)``, or ``(None, convergence)`` when the solver already
        found, while preparing, that it cannot reach the target within ``budget``.
        """
        raise NotImplementedError


class Otcore(Solver):
    """``otcore.sinkhorn`` (Numba kernels, alternating updates, checks every 10)."""

    name = "otcore"

    def __init__(self) -> None:
        import otcore

        self.oc = otcore

    def _solve(self, prob: Problem, eps: float, **kwargs: Any) -> Any:
        with warnings.catch_warnings():  # fixed-iteration runs stop at max_iter on purpose
            warnings.simplefilter("ignore", self.oc.ConvergenceWarning)
            return self.oc.sinkhorn(prob.a, prob.b, prob.C, eps, **kwargs)

    def fixed(self, prob: Problem, eps: float, iterations: int) -> Callable[[], np.ndarray]:
        # check_every > max_iter: no convergence check at all
        return lambda: self._solve(prob, eps, max_iter=iterations,
                                   check_every=iterations + 1).f

    def target_solver(self, prob, eps, max_iter, budget):
        def solve() -> Run:
            res = self._solve(prob, eps, tol=TARGET, max_iter=max_iter,
                              check_every=CHECK_EVERY)
            # errors[k] = (i, err): err is measured with the (i + 1)-th row update, which
            # the solver computes before it stops; count it, like the other solvers do.
            history = [(i + 1, float(err)) for i, err in res.errors]
            its = history[-1][0] if res.converged else res.n_iter
            return Run(bool(res.converged), its, res.f, res.g, history)

        return solve, None


class Pot(Solver):
    """POT ``ot.sinkhorn(..., method="sinkhorn_log")`` on NumPy arrays.

    POT stops on the L2 norm of the column-marginal error, checked every 10 iterations
    (it cannot be switched off). To stop it on the L1 error, the iteration count is found
    first by running it in warm-started chunks and computing the L1 error between chunks
    (untimed); chunks shrink to 10 iterations near the target (:func:`_next_chunk`), and a
    chunk that overshoots the target is redone 10 iterations at a time, so the count is
    exact to 10 iterations. Then one cold call with exactly that many iterations and
    ``stopThr=0`` is timed. The budget is spent on the chunks' time, not on the checks.
    """

    name = "POT"
    warmup = 0  # nothing to compile; a warm-up would double the slowest measurement

    def __init__(self) -> None:
        import ot

        self.ot = ot

    def _call(self, prob: Problem, eps: float, iterations: int,
              warmstart: tuple[np.ndarray, np.ndarray] | None = None) -> dict:
        _, log = self.ot.sinkhorn(prob.a, prob.b, prob.C, eps, method="sinkhorn_log",
                                  numItermax=iterations, stopThr=0.0, warn=False, log=True,
                                  warmstart=warmstart)
        return log

    @staticmethod
    def _potentials(prob: Problem, eps: float, log: dict) -> tuple[np.ndarray, np.ndarray]:
        """POT's log-scalings (``P = exp(u + v - C / eps)``) as otcore potentials."""
        return (eps * (log["log_u"] - np.log(prob.a)), eps * (log["log_v"] - np.log(prob.b)))

    def fixed(self, prob: Problem, eps: float, iterations: int) -> Callable[[], np.ndarray]:
        return lambda: self._potentials(prob, eps, self._call(prob, eps, iterations))[0]

    def target_solver(self, prob, eps, max_iter, budget):
        history: list[tuple[int, float]] = []  # (iterations, L1 error) along the way
        spent, its, warm, chunk = 0.0, 0, None, CHECK_EVERY
        while True:
            t0 = time.perf_counter()
            log = self._call(prob, eps, chunk, warmstart=warm)
            seconds = time.perf_counter() - t0
            err = l1_marginal_error(prob.C, prob.a, prob.b, eps, *self._potentials(prob, eps, log))
            if err < TARGET and chunk > CHECK_EVERY:
                chunk = CHECK_EVERY  # overshot: redo that chunk, checking every 10
                continue
            spent, its = spent + seconds, its + chunk
            history.append((its, err))
            if err < TARGET:
                break
            if spent > budget:  # POT can stop between chunks: its budget is time, not max_iter
                return None, Convergence(False, its, Timing.of([spent]), err, history)
            warm = (log["log_u"], log["log_v"])
            chunk = _next_chunk(history, (budget - spent) * its / spent)

        def solve() -> Run:
            return Run(True, its, *self._potentials(prob, eps, self._call(prob, eps, its)),
                       history)

        return solve, None


def _next_chunk(history: list[tuple[int, float]], affordable: float) -> int:
    """Iterations POT runs before the next (untimed) L1 check of its search.

    Half the iterations still needed if the error keeps falling at the geometric rate of
    the last two checks, and no more than ``affordable`` (what the rest of the budget
    buys); a multiple of :data:`CHECK_EVERY`, at least one check interval. Few calls keep
    POT's per-call set-up (dividing the cost by eps, forming the plan) out of the way.
    """
    if len(history) < 2 or not 0 < history[-1][1] < history[-2][1]:
        return CHECK_EVERY
    (i0, e0), (i1, e1) = history[-2:]
    needed = math.log(TARGET / e1) / (math.log(e1 / e0) / (i1 - i0))
    chunk = min(needed / 2, affordable)
    return CHECK_EVERY * max(1, int(chunk // CHECK_EVERY))


class Ott(Solver):
    """OTT-JAX ``Sinkhorn`` in log-sum-exp mode, ``jax.jit``-compiled ahead of time.

    ``Geometry(cost_matrix=C, epsilon=eps, relative_epsilon=None, scale_cost=1.0)``
    makes ``eps`` absolute (not relative to a statistic of the cost) and leaves the cost
    unscaled. No momentum, no Anderson acceleration, sequential (not parallel) dual
    updates, zero initial potentials. Its error is the ``norm_error=1`` (L1) norm of the
    column-marginal error (the row marginal is exact after its row update), checked every
    ``inner_iterations``; ``threshold`` is compared with it.
    """

    name = "OTT-JAX"

    def __init__(self) -> None:
        import jax

        jax.config.update("jax_platforms", "cpu")
        jax.config.update("jax_enable_x64", True)
        self.jax = jax

    def _compiled(self, prob: Problem, eps: float, *, inner: int, min_iter: int,
                  max_iter: int) -> Callable[[], tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Compile the solve for these shapes and settings.

        Returns a blocking call giving ``f, g`` in otcore's convention (OTT's potentials
        include ``eps log a`` and ``eps log b``: ``P = exp((f + g - C) / eps)``) and OTT's
        error history.
        """
        from ott.geometry.geometry import Geometry
        from ott.problems.linear.linear_problem import LinearProblem
        from ott.solvers.linear.sinkhorn import Sinkhorn

        solver = Sinkhorn(lse_mode=True, threshold=TARGET, norm_error=1,
                          inner_iterations=inner, min_iterations=min_iter,
                          max_iterations=max_iter)

        def solve(C, a, b):
            geom = Geometry(cost_matrix=C, epsilon=eps, relative_epsilon=None,
                            scale_cost=1.0)
            out = solver(LinearProblem(geom, a, b))
            return out.f, out.g, out.errors

        args = [self.jax.device_put(v) for v in (prob.C, prob.a, prob.b)]
        compiled = self.jax.jit(solve).lower(*args).compile()  # compile time excluded
        shift_f, shift_g = eps * np.log(prob.a), eps * np.log(prob.b)

        def call() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            f, g, errors = (np.asarray(v) for v in compiled(*args))
            return f - shift_f, g - shift_g, errors

        return call

    def fixed(self, prob: Problem, eps: float, iterations: int) -> Callable[[], np.ndarray]:
        # min_iter = max_iter: a plain scan; the error is evaluated once, at the end
        call = self._compiled(prob, eps, inner=iterations, min_iter=iterations,
                              max_iter=iterations)
        return lambda: call()[0]

    def target_solver(self, prob, eps, max_iter, budget):
        call = self._compiled(prob, eps, inner=CHECK_EVERY, min_iter=0, max_iter=max_iter)

        def solve() -> Run:
            f, g, errors = call()
            history = [(CHECK_EVERY * (k + 1), float(e)) for k, e in enumerate(errors)
                       if e != -1]
            converged = bool(history) and history[-1][1] < TARGET
            return Run(converged, history[-1][0] if history else 0, f, g, history)

        return solve, None


def measure_target(solver: Solver, prob: Problem, eps: float, per_iteration: Timing, *,
                   budget: float, repeats: int) -> Convergence:
    """Iterations and time of ``solver`` to :data:`TARGET` on a dense problem.

    Parameters
    ----------
    solver : Solver
        The implementation under test.
    prob : Problem
        A dense problem (``prob.C`` set).
    eps : float
        Entropic regularization.
    per_iteration : Timing
        The solver's time per iteration on this problem.
    budget : float
        Seconds the solver gets. otcore and OTT cannot be interrupted, so for them the
        budget is an iteration cap: ``budget`` over their fastest time per iteration
        (refitted once if the solve stops short of the target in under half the budget).
    repeats : int
        A solve that reaches the target is repeated up to ``repeats`` times in all, while
        that fits in the budget; the time is the median.

    Returns
    -------
    Convergence
        With the final L1 error recomputed by :func:`bench._common.l1_marginal_error`.
    """
    seconds_per_iteration = per_iteration.low
    for _attempt in range(2):
        cap = CHECK_EVERY * max(1, math.ceil(budget / seconds_per_iteration / CHECK_EVERY))
        solve, gave_up = solver.target_solver(prob, eps, cap, budget)
        if solve is None:
            return gave_up
        samples: list[float] = []
        while len(samples) < repeats:
            t0 = time.perf_counter()
            run = solve()
            samples.append(time.perf_counter() - t0)
            if not run.converged or samples[0] * repeats > budget:
                break
        if run.converged or samples[0] > budget / 2:
            break
        # The cap used less than half the budget (the solve ran faster than the timing
        # above predicted): retry once with a cap fitted to the speed just observed.
        seconds_per_iteration = samples[0] / max(run.iterations, 1)
    error = l1_marginal_error(prob.C, prob.a, prob.b, eps, run.f, run.g)
    return Convergence(run.converged, run.iterations, Timing.of(samples), error, run.history)


def iterate_spread(solvers: list[Solver], prob: Problem, eps: float,
                   iterations: int = 30) -> float:
    """Check that the solvers run the same iteration.

    Runs every solver for ``iterations`` iterations and compares its row potential with
    the first solver's: the largest ``max_i d_i - min_i d_i`` of the differences ``d``.
    It is zero (up to rounding) exactly when the potentials differ by a constant, i.e.
    when all solvers produced the same plan after the same number of iterations.
    """
    ref = solvers[0].fixed(prob, eps, iterations)()
    return max(float(np.ptp(s.fixed(prob, eps, iterations)() - ref)) for s in solvers[1:])
