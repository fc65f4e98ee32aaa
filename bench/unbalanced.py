"""Unbalanced entropic OT on CPU: otcore against POT and OTT-JAX, at equal accuracy.

Run from the repository root::

    python -m bench.unbalanced            # n = 1000 and 4000 (about 20 minutes)
    python -m bench.unbalanced --quick    # n = 1000 only (a few minutes)

**Problem.** ``x_i ~ N(0, I_2)``, ``y_j ~ N((1, 1), 0.5^2 I_2)``, ``n = m`` in
{1000, 4000}, float64, squared-Euclidean cost divided by its maximum (max 1), random
positive weights (uniform on [0.5, 1.5], then scaled) with different masses
``sum a = 1`` and ``sum b = 1.5``. For ``eps`` in {1e-2, 1e-3} and ``rho`` in {0.1, 1}
(the same on both sides) every solver minimizes

    <C, P> + eps KL(P | a b^T) + rho KL(P 1 | a) + rho KL(P^T 1 | b)

(generalized KL), whose solution is ``P_ij = a_i b_j exp((f_i + g_j - C_ij) / eps)``.

**Accuracy target.** The L1 violation of the optimality conditions,
``|P 1 - a exp(-f / rho)|_1 + |P^T 1 - b exp(-g / rho)|_1``, must be at most
``1e-6 max(sum a, sum b)``. It is computed by this benchmark's own NumPy/SciPy code
(stable log-sum-exps, ``check``) from the potentials each solver returns, never taken
from a solver's own report. The same code computes the primal objective above from the
potentials, to check that the three solvers found the same optimum.

**Solvers.** Each solver gets a time budget (60 s per problem, 30 s with ``--quick``):

* otcore: ``otcore.sinkhorn(a, b, C, eps, reg_m=rho, tol=...)`` (Numba kernels,
  translation-invariant updates), with ``tol`` equal to the target, divided by 4 and run
  again as long as the independent check fails.
* POT: ``ot.sinkhorn_unbalanced(a, b, C, eps, rho, method=..., reg_type="kl")`` for every
  unbalanced Sinkhorn method this POT version has (``POT_METHODS``); the fastest one
  that reaches the target is reported, and which. POT stops on its own criterion
  (relative change of the scalings), not on this one, so each method's iteration count is
  found first, untimed: it runs in warm-started chunks (``warmstart=(log u, log v)``) with
  the violation checked between chunks, and an overshooting chunk is bisected, so the
  count is exact to 10 iterations. Then one cold call with exactly that many iterations
  and ``stopThr=0`` is timed (``log=False``; POT forms the plan, as it always does). Its
  potentials are ``f = eps log u``, ``g = eps log v`` (``P = diag(u) K diag(v)`` with
  ``K = exp(-C / eps) a b^T``). This is the most favourable stopping rule POT could have:
  a user would not know the count in advance. A method stops early on numerical errors
  (POT's warning), and is abandoned once its search has cost twice the time of the
  fastest method so far (it cannot be the fastest).
* OTT-JAX: ``Sinkhorn(lse_mode=True, norm_error=1, threshold=...)`` on
  ``LinearProblem(geom, a, b, tau_a=rho / (rho + eps), tau_b=...)``, ``jax.jit``-compiled
  (compile time excluded), on the JAX CPU backend in float64, with and without
  ``recenter_potentials`` (OTT's translation-invariant updates); the fastest that passes
  is reported. OTT's entropy is ``-H(P)``, not ``KL(P | a b^T)``; the two problems agree
  once ``eps log a_i + eps log b_j`` is subtracted from the cost, so OTT gets the cost
  ``C_ij - eps log a_i - eps log b_j``, and its potentials are then otcore's. ``threshold``
  starts at the target and is divided by 4 until the independent check passes.
  ``max_iterations`` is the budget over OTT's measured time per iteration; the setting
  tried second gets at most twice the time of the first, if that one passed.

**Timing.** Wall clock of a whole solve, from the arrays to the potentials (POT: to the
plan). Reported is the median of up to 5 repeats (3 with ``--quick``) with the fastest
and slowest in brackets; a slow solve is repeated only while the repeats fit in half the
budget. The first run of each solver (the one checked) is the first repeat; otcore and
OTT-JAX are compiled before it. ``POT/otcore`` and ``OTT/otcore`` are ratios of medians.

Results are printed and written to ``bench/results/unbalanced.md`` and ``unbalanced.png``.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.spatial.distance import cdist
from scipy.special import logsumexp

from ._common import (
    RESULTS_DIR,
    Problem,
    Timing,
    command_line,
    format_seconds,
    gaussian_clouds,
    machine_info,
    markdown_table,
    time_repeats,
    write_text,
)
from ._sinkhorn_solvers import CHECK_EVERY, Otcore, Ott

NAME = "unbalanced"
EPSILONS = (1e-2, 1e-3)
RHOS = (0.1, 1.0)
MASSES = (1.0, 1.5)  # sum a, sum b
TARGET_REL = 1e-6  # target violation, relative to max(sum a, sum b)
TOL_STEP = 4.0  # tol / threshold divided by this after a failed independent check
MAX_TRIES = 6  # tol / threshold values tried
ABANDON = 2.0  # a POT method whose search costs this times the best method's time stops
POT_METHODS = ("sinkhorn_translation_invariant", "sinkhorn", "sinkhorn_stabilized")
PACKAGES = ("otcore", "numpy", "scipy", "numba", "pot", "jax", "jaxlib", "ott-jax")
COLORS = {"POT": "tab:orange", "OTT-JAX": "tab:green"}
GOALS = {"POT": 30.0, "OTT-JAX": 2.0}  # the speed-ups the issue asks for


@dataclass(frozen=True)
class Settings:
    """What a run measures: problem sizes, seconds per solver and problem, repeats."""

    sizes: tuple[int, ...]
    budget: float
    repeats: int


QUICK = Settings((1000,), 30.0, 3)
FULL = Settings((1000, 4000), 60.0, 5)


def _progress(message: str) -> None:
    print(f"[bench.{NAME}] {message}", file=sys.stderr, flush=True)


def _sci(x: float) -> str:
    """``0.001`` -> ``1e-3``."""
    mantissa, exponent = f"{x:.0e}".split("e")
    return f"{mantissa}e{int(exponent)}"


# --------------------------------------------------------------------------- problem


def unbalanced_problem(n: int, seed: int = 0) -> Problem:
    """Two 2-D Gaussian clouds with random weights of masses :data:`MASSES`.

    ``x ~ N(0, I)``, ``y ~ N((1, 1), 0.5^2 I)``; squared-Euclidean cost divided by its
    maximum; weights uniform on [0.5, 1.5], scaled to the masses.
    """
    x, y = gaussian_clouds(n, seed=seed)  # y ~ N((1, 1), I): shrink it around its mean
    y = 1.0 + 0.5 * (y - 1.0)
    C = cdist(x, y, "sqeuclidean")
    scale = float(C.max())
    C /= scale
    rng = np.random.default_rng(seed + 1)
    a, b = rng.uniform(0.5, 1.5, n), rng.uniform(0.5, 1.5, n)
    return Problem(x, y, MASSES[0] * a / a.sum(), MASSES[1] * b / b.sum(), scale, C)


def check(prob: Problem, eps: float, rho: float, f: np.ndarray,
          g: np.ndarray) -> tuple[float, float, float]:
    """Independent check of potentials ``f, g`` (otcore's convention).

    Returns the L1 violation of the optimality conditions
    ``|P 1 - a exp(-f / rho)|_1 + |P^T 1 - b exp(-g / rho)|_1``, the primal objective
    ``<C, P> + eps KL(P | a b^T) + rho KL(P 1 | a) + rho KL(P^T 1 | b)`` of the plan
    ``P_ij = a_i b_j exp((f_i + g_j - C_ij) / eps)``, and its mass ``sum P``.
    ``<C, P> + eps KL(P | a b^T) = f . P 1 + g . P^T 1 - eps sum P + eps sum a sum b``,
    since ``log(P_ij / (a_i b_j)) = (f_i + g_j - C_ij) / eps``.
    """
    f, g = np.asarray(f, dtype=np.float64), np.asarray(g, dtype=np.float64)
    if not (np.isfinite(f).all() and np.isfinite(g).all()):
        return math.inf, math.nan, math.nan
    a, b = prob.a, prob.b
    log_p = (f[:, None] + g[None, :] - prob.C) / eps
    log_p += np.log(a)[:, None]
    log_p += np.log(b)[None, :]
    log_rows, log_cols = logsumexp(log_p, axis=1), logsumexp(log_p, axis=0)
    del log_p
    rows, cols = np.exp(log_rows), np.exp(log_cols)
    violation = (np.abs(rows - a * np.exp(-f / rho)).sum()
                 + np.abs(cols - b * np.exp(-g / rho)).sum())
    mass = float(rows.sum())
    value = float(f @ rows + g @ cols - eps * mass + eps * a.sum() * b.sum())
    for marg, log_marg, w in ((rows, log_rows, a), (cols, log_cols, b)):
        value += rho * float(np.sum(marg * (log_marg - np.log(w)) - marg + w))
    return float(violation), value, mass


# --------------------------------------------------------------------------- outcomes


@dataclass
class Outcome:
    """One solver (and variant) on one problem.

    ``time`` is the median and spread of the timed solves when ``reached``; ``spent`` is
    the time spent (solves, or POT's search) before giving up otherwise. ``violation``,
    ``value`` and ``mass`` come from :func:`check` on the final potentials.
    """

    solver: str
    variant: str
    reached: bool
    iterations: int
    violation: float
    value: float = math.nan
    mass: float = math.nan
    time: Timing | None = None
    spent: float = 0.0
    note: str = ""


def _repeat(first: float, run: Callable[[], Any], budget: float, repeats: int) -> Timing:
    """The first timed solve plus further repeats of ``run`` while they fit in half the
    budget (at most ``repeats`` in all)."""
    extra = max(0, min(repeats - 1, int(0.5 * budget / max(first, 1e-9)) - 1))
    more = time_repeats(run, extra, warmup=0).samples if extra else ()
    return Timing.of([first, *more])


def _fastest(outcomes: list[Outcome]) -> Outcome | None:
    done = [o for o in outcomes if o.reached]
    return min(done, key=lambda o: o.time.median) if done else None


# --------------------------------------------------------------------------- otcore


def run_otcore(prob: Problem, eps: float, rho: float, target: float, settings: Settings,
               solver: Otcore) -> Outcome:
    """otcore to the target: ``tol`` starts at the target, divided by :data:`TOL_STEP`
    while the independent check fails; ``max_iter`` is the budget over its measured time
    per iteration."""
    solver._solve(prob, eps, reg_m=rho, max_iter=3, tol=target)  # JIT compilation
    t0 = time.perf_counter()
    solver._solve(prob, eps, reg_m=rho, max_iter=20, tol=1e-300)
    per_iteration = (time.perf_counter() - t0) / 20
    cap = CHECK_EVERY * max(10, math.ceil(settings.budget / per_iteration / CHECK_EVERY))
    tol, spent = target, 0.0
    for _ in range(MAX_TRIES):
        def solve(tol: float = tol) -> Any:
            return solver._solve(prob, eps, reg_m=rho, tol=tol, max_iter=cap)

        t0 = time.perf_counter()
        res = solve()
        seconds = time.perf_counter() - t0
        spent += seconds
        violation, value, mass = check(prob, eps, rho, res.f, res.g)
        variant = f"tol {tol:.2g}"
        if violation <= target:
            timing = _repeat(seconds, solve, settings.budget, settings.repeats)
            return Outcome("otcore", variant, True, res.n_iter, violation, value, mass,
                           timing, note=f"res.value {res.value:.12g}")
        if not res.converged or spent > settings.budget:
            break
        tol /= TOL_STEP
    return Outcome("otcore", variant, False, res.n_iter, violation, value, mass,
                   spent=spent, note="max_iter (budget) reached")


# --------------------------------------------------------------------------- POT


class PotUnbalanced:
    """POT's ``sinkhorn_unbalanced`` with a given method, stopped after a set number of
    iterations (``stopThr=0``)."""

    def __init__(self, prob: Problem, eps: float, rho: float, method: str) -> None:
        import ot

        self.ot, self.prob, self.eps, self.rho, self.method = ot, prob, eps, rho, method

    def __call__(self, iterations: int, warm: tuple[np.ndarray, np.ndarray] | None = None,
                 log: bool = True) -> tuple[np.ndarray | None, np.ndarray | None, bool]:
        """Run ``iterations`` iterations (from ``warm`` log-scalings if given).

        Returns ``f, g`` (``None`` when ``log`` is false) and whether POT warned of
        numerical errors (it then returns the iterate before them and stops).
        """
        p = self.prob
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            out = self.ot.sinkhorn_unbalanced(
                p.a, p.b, p.C, self.eps, self.rho, method=self.method, reg_type="kl",
                warmstart=warm, numItermax=iterations, stopThr=0.0, log=log)
        numerical = any("Numerical errors" in str(w.message) for w in caught)
        if not log:
            return None, None, numerical
        logs = out[1]
        return self.eps * logs["logu"], self.eps * logs["logv"], numerical


def _next_chunk(history: list[tuple[int, float]], target: float, affordable: float) -> int:
    """Iterations of POT's next search chunk: half those still needed if the violation
    keeps falling at the rate of the last two checks, at most ``affordable``, a multiple
    of :data:`CHECK_EVERY`."""
    if len(history) < 2 or not 0 < history[-1][1] < history[-2][1]:
        return CHECK_EVERY
    (i0, e0), (i1, e1) = history[-2:]
    needed = math.log(target / e1) / (math.log(e1 / e0) / (i1 - i0))
    return CHECK_EVERY * max(1, int(min(needed / 2, affordable) // CHECK_EVERY))


def _half(iterations: int) -> int:
    """Half of ``iterations``, a multiple of :data:`CHECK_EVERY` (at least one)."""
    return CHECK_EVERY * max(1, iterations // CHECK_EVERY // 2)


def _usable(warm: tuple[np.ndarray, np.ndarray]) -> bool:
    """Whether POT can restart from these log-scalings (it exponentiates them)."""
    return all(np.isfinite(w).all() and np.abs(w).max() < 700 for w in warm)


def run_pot(prob: Problem, eps: float, rho: float, target: float, settings: Settings,
            method: str, best: float | None) -> Outcome:
    """One POT method to the target: untimed search of the iteration count, then timed
    cold solves (see the module docstring). ``best`` is the fastest time of another
    method so far."""
    pot = PotUnbalanced(prob, eps, rho, method)
    budget = settings.budget
    give_up = budget if best is None else min(budget, ABANDON * best)

    def step(its: int, warm: Any, chunk: int) -> tuple[float, Any, float, bool]:
        """``chunk`` more iterations after ``its``: seconds, log-scalings, violation."""
        t0 = time.perf_counter()
        if warm is not None and _usable(warm):
            f, g, bad = pot(chunk, warm)
        else:  # cold start (first chunk, or scalings POT cannot exponentiate)
            f, g, bad = pot(its + chunk)
        seconds = time.perf_counter() - t0
        return seconds, (f / eps, g / eps), check(prob, eps, rho, f, g)[0], bad

    history: list[tuple[int, float]] = []
    spent, its, warm, chunk = 0.0, 0, None, CHECK_EVERY
    reach = None  # an iteration count known to reach the target (from an overshoot)
    violation = math.inf
    while True:
        seconds, new_warm, err, bad = step(its, warm, chunk)
        spent += seconds
        if bad or not math.isfinite(err):
            return Outcome("POT", method, False, its + chunk, err, spent=spent,
                           note="numerical errors (POT's warning)")
        if err <= target and chunk > CHECK_EVERY:  # overshoot: bisect it
            reach, chunk = its + chunk, _half(chunk)
            continue
        its, warm, violation = its + chunk, new_warm, err
        history.append((its, err))
        if err <= target:
            break
        if spent > give_up:
            note = "budget spent" if give_up == budget else (
                f"abandoned: slower than the fastest method ({format_seconds(best)})")
            return Outcome("POT", method, False, its, violation, spent=spent, note=note)
        if reach is not None:
            chunk = _half(reach - its)
        else:
            chunk = _next_chunk(history, target, (give_up - spent) / (spent / its))

    # Timed cold solves with exactly that many iterations; a warm-started search can end
    # a little short of a cold run's count, so the count grows until the check passes.
    while True:
        t0 = time.perf_counter()
        pot(its, log=False)
        seconds = time.perf_counter() - t0
        f, g, bad = pot(its)  # the same iterations, with the log-scalings (untimed)
        violation, value, mass = check(prob, eps, rho, f, g)
        if violation <= target or bad:
            break
        spent += seconds
        if spent > give_up:
            return Outcome("POT", method, False, its, violation, spent=spent,
                           note="cold run did not reach the target within the budget")
        its = CHECK_EVERY * math.ceil(1.1 * its / CHECK_EVERY)
    if violation > target:
        return Outcome("POT", method, False, its, violation, spent=spent,
                       note="numerical errors (POT's warning)")
    timing = _repeat(seconds, lambda: pot(its, log=False), budget, settings.repeats)
    return Outcome("POT", method, True, its, violation, value, mass, timing)


def pot_methods() -> list[str]:
    """The unbalanced Sinkhorn methods of the installed POT (:data:`POT_METHODS`)."""
    import ot.unbalanced as unb

    functions = {"sinkhorn": "sinkhorn_knopp_unbalanced",
                 "sinkhorn_stabilized": "sinkhorn_stabilized_unbalanced",
                 "sinkhorn_translation_invariant": "sinkhorn_unbalanced_translation_invariant"}
    return [m for m in POT_METHODS if hasattr(unb, functions[m])]


# --------------------------------------------------------------------------- OTT-JAX


def _ott_solver(ott: Ott, prob: Problem, eps: float, rho: float, *, threshold: float,
                max_iter: int, recenter: bool, min_iter: int = 0) -> Callable[[], tuple]:
    """Compile OTT-JAX's unbalanced Sinkhorn; the blocking call returns ``f, g`` (otcore's
    convention), the iterations and whether OTT met its threshold."""
    from ott.geometry.geometry import Geometry
    from ott.problems.linear.linear_problem import LinearProblem
    from ott.solvers.linear.sinkhorn import Sinkhorn

    jax = ott.jax
    tau = rho / (rho + eps)
    solver = Sinkhorn(lse_mode=True, threshold=threshold, norm_error=1,
                      inner_iterations=CHECK_EVERY, min_iterations=min_iter,
                      max_iterations=max_iter, recenter_potentials=recenter)

    def solve(C, a, b):
        geom = Geometry(cost_matrix=C, epsilon=eps, relative_epsilon=None, scale_cost=1.0)
        out = solver(LinearProblem(geom, a, b, tau_a=tau, tau_b=tau))
        return out.f, out.g, out.n_iters, out.converged

    # OTT's entropy -H(P) equals eps KL(P | a b^T) up to these linear terms and a constant
    cost = prob.C - eps * np.log(prob.a)[:, None] - eps * np.log(prob.b)[None, :]
    args = [jax.device_put(v) for v in (cost, prob.a, prob.b)]
    compiled = jax.jit(solve).lower(*args).compile()

    def call() -> tuple[np.ndarray, np.ndarray, int, bool]:
        f, g, its, ok = compiled(*args)
        return np.asarray(f), np.asarray(g), int(its), bool(ok)

    return call


def run_ott(prob: Problem, eps: float, rho: float, target: float, settings: Settings,
            ott: Ott) -> list[Outcome]:
    """OTT-JAX with and without ``recenter_potentials``; ``threshold`` tuned (see the
    module docstring)."""
    fixed = _ott_solver(ott, prob, eps, rho, threshold=0.0, max_iter=20, min_iter=20,
                        recenter=False)
    fixed()
    t0 = time.perf_counter()
    fixed()
    per_iteration = (time.perf_counter() - t0) / 20
    outcomes: list[Outcome] = []
    for recenter in (True, False):
        name = "recenter" if recenter else "no recenter"
        threshold, spent, give_up = target, 0.0, settings.budget
        best = _fastest(outcomes)
        if best is not None:  # this variant is of interest only if it can be faster
            give_up = min(give_up, ABANDON * best.time.median)
        cap = CHECK_EVERY * max(10, math.ceil(give_up / per_iteration / CHECK_EVERY))
        for _ in range(MAX_TRIES):
            call = _ott_solver(ott, prob, eps, rho, threshold=threshold, max_iter=cap,
                               recenter=recenter)
            t0 = time.perf_counter()
            f, g, its, ok = call()
            seconds = time.perf_counter() - t0
            spent += seconds
            violation, value, mass = check(prob, eps, rho, f, g)
            variant = f"{name}, threshold {threshold:.2g}"
            if violation <= target:
                timing = _repeat(seconds, call, settings.budget, settings.repeats)
                outcomes.append(Outcome("OTT-JAX", variant, True, its, violation, value,
                                        mass, timing))
                break
            if not ok or spent > give_up:
                note = "budget spent" if give_up == settings.budget else (
                    f"abandoned at {ABANDON:g}x the time of the other setting")
                outcomes.append(Outcome("OTT-JAX", variant, False, its, violation,
                                        spent=spent, note=note))
                break
            threshold /= TOL_STEP
        else:
            outcomes.append(Outcome("OTT-JAX", variant, False, its, violation, spent=spent,
                                    note=f"{MAX_TRIES} thresholds tried"))
        _progress(f"  {_cell(outcomes[-1])}")
    return outcomes


# --------------------------------------------------------------------------- driver


@dataclass
class Case:
    """Every solver's outcome on one problem."""

    n: int
    eps: float
    rho: float
    target: float
    otcore: Outcome
    pot: list[Outcome] = field(default_factory=list)
    ott: list[Outcome] = field(default_factory=list)

    def ratio(self, solver: str) -> float | None:
        """Median time of the fastest run of ``solver`` over otcore's (None: no run of
        either reached the target)."""
        best = _fastest(self.pot if solver == "POT" else self.ott)
        if best is None or not self.otcore.reached:
            return None
        return best.time.median / self.otcore.time.median


def _cell(o: Outcome) -> str:
    if o.reached:
        return f"{o.solver} {o.variant}: {o.iterations} its, {o.time.format()}"
    return (f"{o.solver} {o.variant}: not reached, violation {o.violation:.2g} after "
            f"{o.iterations} its, {format_seconds(o.spent)} ({o.note})")


def run(settings: Settings) -> list[Case]:
    """Every solver on every problem."""
    otcore, ott, methods = Otcore(), Ott(), pot_methods()
    _progress(f"POT methods: {', '.join(methods)}")
    cases = []
    for n in settings.sizes:
        prob = unbalanced_problem(n)
        target = TARGET_REL * max(prob.a.sum(), prob.b.sum())
        for eps in EPSILONS:
            for rho in RHOS:
                _progress(f"n={n} eps={_sci(eps)} rho={rho:g} (target {target:.2g})")
                case = Case(n, eps, rho, target,
                            run_otcore(prob, eps, rho, target, settings, otcore))
                _progress(f"  {_cell(case.otcore)}")
                for method in methods:
                    best = _fastest(case.pot)
                    case.pot.append(run_pot(prob, eps, rho, target, settings, method,
                                            None if best is None else best.time.median))
                    _progress(f"  {_cell(case.pot[-1])}")
                case.ott = run_ott(prob, eps, rho, target, settings, ott)
                cases.append(case)
    return cases


# --------------------------------------------------------------------------- report


def _time(o: Outcome | None) -> str:
    if o is None:
        return "not reached"
    return o.time.format() if o.reached else f"not reached ({o.violation:.1e})"


def _ratio_cell(r: float | None) -> str:
    return "n/a" if r is None else f"{r:.1f}"


def _best_cell(outcomes: list[Outcome]) -> tuple[str, str]:
    best = _fastest(outcomes)
    if best is None:
        closest = min(outcomes, key=lambda o: o.violation)
        return f"not reached (best violation {closest.violation:.1e})", "-"
    return best.time.format(), f"{best.variant}, {best.iterations} its"


def tables(cases: list[Case]) -> tuple[str, str, str]:
    """Main table, every attempt, objective values."""
    main = []
    for c in cases:
        pot_time, pot_how = _best_cell(c.pot)
        ott_time, ott_how = _best_cell(c.ott)
        main.append([c.n, _sci(c.eps), f"{c.rho:g}", _time(c.otcore), c.otcore.iterations,
                     pot_time, pot_how, ott_time, ott_how,
                     _ratio_cell(c.ratio("POT")), _ratio_cell(c.ratio("OTT-JAX"))])
    main_table = markdown_table(
        ["n", "eps", "rho", "otcore time", "otcore its", "POT fastest time",
         "POT method, its", "OTT-JAX time", "OTT-JAX setting, its", "POT/otcore",
         "OTT/otcore"], main, "rrrrrrlrlrr")

    attempts = []
    for c in cases:
        for o in [c.otcore, *c.pot, *c.ott]:
            result = "reached" if o.reached else "not reached"
            seconds = o.time.format() if o.reached else format_seconds(o.spent) + " spent"
            attempts.append([c.n, _sci(c.eps), f"{c.rho:g}", o.solver, o.variant, result,
                             seconds, o.iterations, f"{o.violation:.2e}", o.note])
    attempt_table = markdown_table(
        ["n", "eps", "rho", "solver", "variant", "result", "time", "its", "violation",
         "note"], attempts, "rrrllllrrl")

    values = []
    for c in cases:
        ref = c.otcore.value
        row = [c.n, _sci(c.eps), f"{c.rho:g}", f"{ref:.12g}", f"{c.otcore.mass:.9g}"]
        for outcomes in (c.pot, c.ott):
            best = _fastest(outcomes)
            row.append("-" if best is None else f"{abs(best.value - ref) / abs(ref):.1e}")
        values.append(row)
    value_table = markdown_table(
        ["n", "eps", "rho", "objective (otcore)", "mass sum P (otcore)",
         "POT rel. diff", "OTT-JAX rel. diff"], values)
    return main_table, attempt_table, value_table


def goals(cases: list[Case]) -> str:
    """Whether the issue's speed-up targets hold, case by case."""
    lines = []
    for solver, goal in GOALS.items():
        ratios = [c.ratio(solver) for c in cases]
        held = [r for r in ratios if r is not None and r >= goal]
        known = [r for r in ratios if r is not None]
        low = f"; smallest ratio {min(known):.1f}" if known else ""
        missing = len(ratios) - len(known)
        extra = f"; {missing} case(s) where {solver} did not reach the target" if missing \
            else ""
        lines.append(f"- {solver}/otcore >= {goal:g}: holds in {len(held)} of "
                     f"{len(ratios)} cases{low}{extra}.")
    return "\n".join(lines)


def plot(cases: list[Case], path: Any) -> None:
    """Bar chart of POT/otcore and OTT/otcore (log scale), with the issue's targets."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(cases) + 2), 4.4),
                           layout="constrained")
    xs = np.arange(len(cases))
    width = 0.38
    for k, solver in enumerate(GOALS):
        ratios = [c.ratio(solver) for c in cases]
        pos = xs + (k - 0.5) * width
        ax.bar(pos, [r if r is not None else np.nan for r in ratios], width,
               color=COLORS[solver], label=f"{solver} / otcore")
        for x, r in zip(pos, ratios, strict=True):
            label = "not\nreached" if r is None else f"{r:.1f}"
            ax.annotate(label, (x, r if r is not None else 1.0), ha="center",
                        va="bottom", fontsize=7)
        ax.axhline(GOALS[solver], color=COLORS[solver], linestyle=":", linewidth=1,
                   label=f"target {GOALS[solver]:g}x")
    ax.axhline(1.0, color="gray", linewidth=0.8)
    ax.set_yscale("log")
    ax.set_xticks(xs, [f"n={c.n}\neps={_sci(c.eps)}\nrho={c.rho:g}" for c in cases],
                  fontsize=8)
    ax.set_ylabel("time ratio (higher: otcore faster)")
    ax.set_title("Unbalanced Sinkhorn to violation 1e-6 x mass: time relative to otcore",
                 fontsize=10)
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def report(cases: list[Case], settings: Settings, note: str | None) -> str:
    main_table, attempt_table, value_table = tables(cases)
    info = machine_info(PACKAGES)
    machine = "\n".join(f"- {k}: {v}" for k, v in info.items())
    header = [f"# Unbalanced Sinkhorn benchmark: otcore, POT, OTT-JAX\n\n"
              f"Command: `{command_line(f'bench.{NAME}')}`"]
    if note:
        header.append(f"**Note:** {note}")
    method = __doc__[__doc__.index("**Problem.**"):__doc__.index("Results are")]
    return "\n\n".join([
        *header, "## Machine", machine, "## Method", method.strip(),
        f"Budget: {settings.budget:g} s per solver and problem; up to {settings.repeats} "
        "timed repeats.",
        "## Time to the target", main_table, "## Speed-up targets", goals(cases),
        "## Every run", attempt_table,
        "## Objective values (independent NumPy computation)",
        "Relative difference of each library's objective (fastest run that reached the "
        "target) from otcore's.", value_table, f"![ratios]({NAME}.png)",
    ]) + "\n"


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point: ``python -m bench.unbalanced [--quick] [...]``."""
    parser = argparse.ArgumentParser(prog=f"python -m bench.{NAME}",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="n = 1000 only, 30 s budget, 3 repeats (a few minutes)")
    parser.add_argument("--sizes", type=int, nargs="+", help="override n = m")
    parser.add_argument("--budget", type=float, help="seconds per solver and problem")
    parser.add_argument("--note", help="a remark printed with the results")
    args = parser.parse_args(argv)
    settings = QUICK if args.quick else FULL
    if args.sizes:
        settings = Settings(tuple(args.sizes), settings.budget, settings.repeats)
    if args.budget is not None:
        settings = Settings(settings.sizes, args.budget, settings.repeats)

    cases = run(settings)
    doc = report(cases, settings, args.note)
    print(tables(cases)[0])
    print(goals(cases))
    write_text(RESULTS_DIR / f"{NAME}.md", doc)
    plot(cases, RESULTS_DIR / f"{NAME}.png")
    _progress(f"wrote bench/results/{NAME}.md and bench/results/{NAME}.png")


if __name__ == "__main__":
    main()
