"""Cardinality-constrained OT on CPU: otcore against POT's sparsity-constrained solvers.

Run from the repository root::

    python -m bench.cardinality            # n = m in {200, 1000} (about an hour on 2 cores)
    python -m bench.cardinality --quick    # n = 200 only (a few minutes)

Problems: two 2-D Gaussian clouds with different means (``bench._common.dense_problem``),
squared-Euclidean cost divided by its maximum, uniform weights, float64, ``n = m`` in
{200, 1000}, ``k`` in {1, 2, 5}, ``gamma`` in {0.1, 1}. Solvers, on the same problem and
with the same tolerance ``tol = stopThr = 1e-9``, each with its default iteration limit:

* otcore: ``otcore.cardinality_ot(a, b, C, k, gamma, formulation=...)`` (warm start on, at
  most 1000 L-BFGS-B iterations on the target objective plus those of the warm start);
* POT: ``ot.smooth.smooth_ot_semi_dual`` / ``smooth_ot_dual`` with
  ``reg_type="sparsity_constrained", max_nz=k`` (at most 500 L-BFGS-B iterations).

Both maximize the same objectives (the semi-dual with the k-sparse simplex projection of
``(f - C_j) / (gamma b_j)``, the dual with ``(1 / 2 gamma) * top_k([f + g_j - C_j]_+^2)``;
the tests check POT's values against otcore's formula). Each solver and problem runs in a
fresh process with one BLAS thread and, for otcore, one Numba thread by default (POT's
solvers are single-threaded). otcore's process first solves once untimed (JIT compilation
from the cache); every solve is then timed ``--repeats`` times, one process per POT
solve, which is killed past ``--cap`` seconds. Reported: the median time (and spread),
the objective of the returned potentials (evaluated with the same code for both), both
L1 marginal errors of the returned plan, its largest and mean number of nonzeros per
column, iterations, objective evaluations (otcore's include the warm start) and the
optimizer's status; and, since the two solvers stop at different points, the time until
otcore's objective first reaches the final objective of POT's run (checked at every
objective evaluation on the target problem; the warm start counts in the time).

Both solvers run SciPy's L-BFGS-B, whose own work per evaluation (its two-loop update
with memory 30, and its Python wrapper) does not depend on the objective. It is measured
in a separate process on the chained Rosenbrock function with as many variables
(``measure_lbfgsb``). Times otcore's evaluations, it gives the share of otcore's time
spent in SciPy and the largest speed-up over POT that any faster objective kernel
could give with the same number of evaluations.

Results are printed and written to ``bench/results/cardinality.md`` and
``cardinality.png``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
import time
from typing import Any

import numpy as np

from ._common import (
    RESULTS_DIR,
    Timing,
    command_line,
    dense_problem,
    format_seconds,
    machine_info,
    markdown_table,
    run_isolated,
    write_text,
)

NAME = "cardinality"
KS = (1, 2, 5)
GAMMAS = (0.1, 1.0)
FORMULATIONS = ("semi-dual", "dual")
TOL = 1e-9
PACKAGES = ("otcore", "numpy", "scipy", "numba", "pot")


# ----------------------------------------------------------------- measured in children


def _metrics(prob: Any, k: int, gamma: float, formulation: str, f: np.ndarray,
             g: np.ndarray | None, plan: Any) -> dict:
    """Objective of the potentials and plan statistics, the same code for both solvers."""
    from otcore.solvers._problem import make_problem
    from otcore.solvers.cardinality import _Objective

    simplex = formulation == "semi-dual"
    obj = _Objective(make_problem(prob.a, prob.b, prob.C), 0, prob.a, prob.b, gamma, k,
                     simplex)
    x = f if simplex else np.concatenate([f, g])
    plan = plan.toarray() if hasattr(plan, "toarray") else np.asarray(plan)
    nnz = np.count_nonzero(plan, axis=0)
    return {
        "objective": obj.evaluate(np.asarray(x, dtype=np.float64))[0],
        "row_error": float(np.abs(plan.sum(axis=1) - prob.a).sum()),
        "col_error": float(np.abs(plan.sum(axis=0) - prob.b).sum()),
        "max_nnz": int(nnz.max()),
        "mean_nnz": float(nnz.mean()),
    }


def _watch_objective(k: int, gamma: float, simplex: bool, seen: list) -> None:
    """Record ``(time, objective)`` at every evaluation of the objective by L-BFGS-B.

    Instruments otcore's private objective class in this (child) process only, to measure
    the time until the objective first reaches POT's final value and to count the
    evaluations. Warm-start evaluations are recorded with the objective ``None``.
    """
    from otcore.solvers import cardinality as card

    original = card._Objective.__call__

    def call(self, x):
        out = original(self, x)
        target = (self.k, self.gamma, self.simplex) == (k, gamma, simplex)
        seen.append((time.perf_counter(), -out[0] / self.scale if target else None))
        return out

    card._Objective.__call__ = call


def measure_otcore(n: int, k: int, gamma: float, formulation: str, repeats: int,
                   goal: float | None = None) -> dict:
    """Child process: one untimed solve, then ``repeats`` timed ones; with ``goal``, also
    the time until the objective first reaches it."""
    import warnings

    import otcore as oc

    prob = dense_problem(n, seed=0)
    seen: list = []
    _watch_objective(k, gamma, formulation == "semi-dual", seen)
    times, reach = [], []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", oc.ConvergenceWarning)
        for rep in range(repeats + 1):
            seen.clear()
            t0 = time.perf_counter()
            res = oc.cardinality_ot(prob.a, prob.b, prob.C, k, gamma, formulation=formulation,
                                    tol=TOL)
            if rep:
                times.append(time.perf_counter() - t0)
                hits = [t for t, v in seen if None not in (goal, v) and v >= goal]
                reach.append(hits[0] - t0 if hits else None)
    out = _metrics(prob, k, gamma, formulation, res.f, res.g, res.plan)
    out.update(times=times, reach_times=reach, evaluations=len(seen),
               iterations=res.n_iter + res.extra["warm_start_iter"],
               converged=bool(res.converged), status=res.extra["message"])
    return out


def measure_pot(n: int, k: int, gamma: float, formulation: str) -> dict:
    """Child process: one timed POT solve (its per-evaluation prints are discarded)."""
    import ot

    prob = dense_problem(n, seed=0)
    solve = ot.smooth.smooth_ot_semi_dual if formulation == "semi-dual" else \
        ot.smooth.smooth_ot_dual
    with contextlib.redirect_stdout(io.StringIO()):
        t0 = time.perf_counter()
        plan, log = solve(prob.a, prob.b, prob.C, gamma, reg_type="sparsity_constrained",
                          max_nz=k, stopThr=TOL, log=True)
        elapsed = time.perf_counter() - t0
    res = log["res"]
    out = _metrics(prob, k, gamma, formulation, log["alpha"], log.get("beta"), plan)
    out.update(times=[elapsed], iterations=int(res.nit), evaluations=int(res.nfev),
               converged=bool(res.success), status=str(res.message))
    return out


def measure_lbfgsb(size: int, repeats: int) -> dict:
    """Child process: seconds per evaluation spent by SciPy's L-BFGS-B itself.

    L-BFGS-B runs with otcore's settings (memory ``_MEMORY``, a callback) on the chained
    Rosenbrock function of ``size`` variables, which takes hundreds of iterations; the
    time of the objective (timed separately on the same points) is subtracted. This is
    the cost per evaluation that no objective kernel can remove. Median of ``repeats``.
    """
    from scipy import optimize

    from otcore.solvers.cardinality import _MEMORY

    x0 = np.full(size, -1.0)
    points: list = []

    def fun(x):
        points.append(x.copy())
        return optimize.rosen(x), optimize.rosen_der(x)

    per_eval = []
    for _ in range(repeats + 1):
        points.clear()
        t0 = time.perf_counter()
        optimize.minimize(fun, x0, jac=True, method="L-BFGS-B",
                          callback=lambda intermediate_result: None,
                          options={"maxiter": 300, "maxcor": _MEMORY, "ftol": 0.0,
                                   "gtol": 0.0})
        total = time.perf_counter() - t0
        t0 = time.perf_counter()
        for x in points:
            optimize.rosen(x), optimize.rosen_der(x)
        per_eval.append((total - (time.perf_counter() - t0)) / len(points))
    return {"seconds": float(np.median(per_eval[1:])), "evaluations": len(points)}


# ----------------------------------------------------------------- orchestration


def _progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def run_case(n: int, k: int, gamma: float, formulation: str, repeats: int,
             cap: float) -> dict:
    """Measure both solvers on one problem: POT first (each solve killed past ``cap``
    seconds), then otcore, with POT's objective as its target."""
    kwargs = {"n": n, "k": k, "gamma": gamma, "formulation": formulation}
    pot: dict | None = None
    times = []
    for _ in range(repeats):
        try:
            run = run_isolated(f"bench.{NAME}:measure_pot", timeout=cap + 60, **kwargs)
        except Exception as exc:  # killed at the cap (TimeoutExpired) or failed
            _progress(f"  POT did not finish: {type(exc).__name__}")
            pot = None
            break
        if run["times"][0] > cap:
            pot = None
            break
        times += run["times"]
        pot = run
    if pot is not None:
        pot["times"] = times
    goal = None if pot is None else pot["objective"]
    ours = run_isolated(f"bench.{NAME}:measure_otcore", repeats=repeats, goal=goal, **kwargs)
    size = n if formulation == "semi-dual" else 2 * n
    lbfgsb = run_isolated(f"bench.{NAME}:measure_lbfgsb", size=size, repeats=repeats)
    case = {**kwargs, "otcore": ours, "POT": pot, "lbfgsb": lbfgsb["seconds"]}
    _progress(_summary(case, cap))
    return case


def _reach(ours: dict) -> Timing | None:
    """Time until otcore's objective first reached POT's, if it did in every repeat."""
    reach = ours["reach_times"]
    return Timing.of(reach) if reach and all(t is not None for t in reach) else None


def _scipy_seconds(case: dict, solver: str) -> float:
    """Time that SciPy's L-BFGS-B itself spends on ``solver``'s evaluations in ``case``."""
    return case[solver]["evaluations"] * case["lbfgsb"]


def _ceiling(case: dict) -> float:
    """POT's time over SciPy's own L-BFGS-B time for otcore's number of evaluations: the
    speed-up that otcore would reach with an objective that took no time."""
    return Timing.of(case["POT"]["times"]).median / _scipy_seconds(case, "otcore")


def _summary(case: dict, cap: float) -> str:
    ours, pot = case["otcore"], case["POT"]
    t_ours = Timing.of(ours["times"])
    head = (f"n={case['n']} k={case['k']} gamma={case['gamma']} {case['formulation']}: "
            f"otcore {t_ours.format()}")
    if pot is None:
        return head + f", POT did not finish within {cap:g} s"
    t_pot = Timing.of(pot["times"])
    reach = _reach(ours)
    reached = (f"POT's objective reached after {reach.format()}" if reach
               else "POT's objective not reached")
    return (head + f", POT {t_pot.format()}, speed-up {t_pot.median / t_ours.median:.1f}x, "
            f"objective difference {ours['objective'] - pot['objective']:+.2e}, {reached}")


# ----------------------------------------------------------------- reporting


def _err(x: float) -> str:
    return f"{x:.1e}"


def _share(case: dict) -> str:
    """Fraction of otcore's median time spent inside SciPy's L-BFGS-B (estimated)."""
    share = _scipy_seconds(case, "otcore") / Timing.of(case["otcore"]["times"]).median
    return f"{share:.0%}"


def table(cases: list[dict], cap: float) -> str:
    headers = ["n", "k", "gamma", "formulation", "otcore time", "POT time", "speed-up",
               "otcore time to POT's objective", "speed-up at POT's objective",
               "objective otcore", "otcore - POT", "iterations otcore / POT",
               "evaluations otcore / POT", "SciPy's share of otcore's time (speed-up bound)",
               "row error otcore / POT", "col error otcore / POT",
               "nnz per column max (mean) otcore / POT", "converged otcore / POT"]
    rows = []
    for c in cases:
        ours, pot = c["otcore"], c["POT"]
        t_ours = Timing.of(ours["times"])
        nnz_ours = f"{ours['max_nnz']} ({ours['mean_nnz']:.2f})"
        if pot is None:
            rows.append([c["n"], c["k"], c["gamma"], c["formulation"], t_ours.format(),
                         f"> {cap:g} s", f"> {cap / t_ours.median:.0f}x", "n/a", "n/a",
                         f"{ours['objective']:.9f}", "n/a", f"{ours['iterations']} / n/a",
                         f"{ours['evaluations']} / n/a", f"{_share(c)} (n/a)",
                         f"{_err(ours['row_error'])} / n/a", f"{_err(ours['col_error'])} / n/a",
                         f"{nnz_ours} / n/a", f"{ours['converged']} / n/a"])
            continue
        t_pot = Timing.of(pot["times"])
        reach = _reach(ours)
        rows.append([
            c["n"], c["k"], c["gamma"], c["formulation"], t_ours.format(), t_pot.format(),
            f"{t_pot.median / t_ours.median:.1f}x",
            reach.format() if reach else "not reached",
            f"{t_pot.median / reach.median:.0f}x" if reach else "n/a",
            f"{ours['objective']:.9f}",
            f"{ours['objective'] - pot['objective']:+.1e}",
            f"{ours['iterations']} / {pot['iterations']}",
            f"{ours['evaluations']} / {pot['evaluations']}",
            f"{_share(c)} ({_ceiling(c):.0f}x)",
            f"{_err(ours['row_error'])} / {_err(pot['row_error'])}",
            f"{_err(ours['col_error'])} / {_err(pot['col_error'])}",
            f"{nnz_ours} / {pot['max_nnz']} ({pot['mean_nnz']:.2f})",
            f"{ours['converged']} / {pot['converged']}",
        ])
    return markdown_table(headers, rows, align="rrrl" + "r" * 14)


def target_summary(cases: list[dict]) -> str:
    """How many cases meet the target: >= 10x faster at an equal or better objective,
    counted both on the time to finish and on the time to reach POT's objective."""
    done = [c for c in cases if c["POT"] is not None]

    def speed(c: dict) -> float:
        return Timing.of(c["POT"]["times"]).median / Timing.of(c["otcore"]["times"]).median

    def speed_at_objective(c: dict) -> float:
        reach = _reach(c["otcore"])
        return Timing.of(c["POT"]["times"]).median / reach.median if reach else 0.0

    better = [c for c in done if c["otcore"]["objective"] >= c["POT"]["objective"]]
    finish = [c for c in better if speed(c) >= 10]
    at_obj = [c for c in done if speed_at_objective(c) >= 10]
    lines = [f"- Cases where POT finished within the cap: {len(done)} of {len(cases)}."]
    for n in sorted({c["n"] for c in cases}):
        sub = [c for c in done if c["n"] == n]
        if sub:
            ratios = [speed(c) for c in sub]
            at = [speed_at_objective(c) for c in sub]
            bound = [_ceiling(c) for c in sub]
            pot_ratio = [Timing.of(c["POT"]["times"]).median / _scipy_seconds(c, "POT")
                         for c in sub]
            per_eval = " and ".join(
                f"{min(us):.0f}-{max(us):.0f} us ({form}, "
                f"{n if form == 'semi-dual' else 2 * n} variables)" for form in FORMULATIONS
                if (us := [c["lbfgsb"] * 1e6 for c in sub if c["formulation"] == form]))
            lines.append(f"- n = {n}: time to finish, speed-up {min(ratios):.1f}x to "
                         f"{max(ratios):.1f}x (median {np.median(ratios):.1f}x); time to "
                         f"POT's final objective, {min(at):.1f}x to {max(at):.1f}x (median "
                         f"{np.median(at):.1f}x; 0 means not reached). SciPy's L-BFGS-B "
                         f"alone takes {per_eval} per evaluation; with the same evaluations and "
                         "an objective that took no time, the speed-up would be at most "
                         f"{min(bound):.0f}x to {max(bound):.0f}x. POT's time per evaluation "
                         f"is {min(pot_ratio):.0f}x to {max(pot_ratio):.0f}x SciPy's own, "
                         "the bound for any solver that uses as many evaluations as POT.")
    lines += [
        f"- otcore's final objective equal or better than POT's: {len(better)} of "
        f"{len(done)}.",
        f"- Target (>= 10x faster at an equal or better objective), on the time to finish: "
        f"{len(finish)} of {len(done)}; on the time to reach POT's final objective: "
        f"{len(at_obj)} of {len(done)}.",
    ]
    return "\n".join(lines)


def plot(cases: list[dict], path: Any) -> None:
    """PNG: speed-up over POT and objective difference, per case."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [c for c in cases if c["POT"] is not None]
    if not done:
        return
    labels = [f"n={c['n']} k={c['k']}\ng={c['gamma']:g} {c['formulation'][:4]}" for c in done]
    pot_time = [Timing.of(c["POT"]["times"]).median for c in done]
    speed = [t / Timing.of(c["otcore"]["times"]).median for t, c in zip(pot_time, done,
                                                                         strict=True)]
    reach = [_reach(c["otcore"]) for c in done]
    speed_at = [t / r.median if r else 0.0 for t, r in zip(pot_time, reach, strict=True)]
    diff = [c["otcore"]["objective"] - c["POT"]["objective"] for c in done]
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(max(8, 0.55 * len(done)), 7),
                                   layout="constrained", sharex=True)
    pos = np.arange(len(done))
    ax1.bar(pos - 0.2, speed, width=0.4, color="tab:blue", label="time to finish")
    ax1.bar(pos + 0.2, speed_at, width=0.4, color="tab:cyan",
            label="time to POT's final objective")
    ax1.axhline(10, color="gray", linestyle=":", label="target 10x")
    ax1.set_yscale("log")
    ax1.set_ylabel("speed-up over POT")
    ax1.legend()
    ax2.bar(pos, diff, color=["tab:green" if d >= 0 else "tab:red" for d in diff])
    ax2.axhline(0, color="black", linewidth=0.8)
    ax2.set_yscale("symlog", linthresh=1e-9)
    ax2.set_ylabel("objective otcore - POT")
    ax2.set_xticks(pos, labels, rotation=90, fontsize=7)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def report(cases: list[dict], settings: dict, note: str | None) -> str:
    info = machine_info(PACKAGES)
    info["Numba threads"] = settings["threads"]
    info["threading environment"] = " ".join(
        f"{k}={os.environ[k]}" for k in ("NUMBA_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                         "OMP_NUM_THREADS") if k in os.environ)
    machine = "\n".join(f"- {k}: {v}" for k, v in info.items())
    header = [f"# Cardinality-constrained OT benchmark: otcore and POT\n\n"
              f"Command: `{command_line(f'bench.{NAME}')}`"]
    if note:
        header.append(f"**Note:** {note}")
    method = __doc__[__doc__.index("Problems:"):].rsplit("\n\nResults are", 1)[0]
    method = method.replace("``", "`")  # reST literals to markdown
    settings_text = (f"Repeats: {settings['repeats']} (median reported, fastest-slowest in "
                     f"parentheses); POT time cap: {settings['cap']:g} s per solve.")
    return "\n\n".join([
        *header, "## Machine", machine, "## Method", method.strip(), settings_text,
        "## Summary", target_summary(cases),
        "## Results", table(cases, settings["cap"]),
        f"![speed-up and objective difference]({NAME}.png)",
    ]) + "\n"


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point: ``python -m bench.cardinality [--quick] [...]``."""
    parser = argparse.ArgumentParser(prog=f"python -m bench.{NAME}",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="n = 200 only")
    parser.add_argument("--repeats", type=int, default=3, help="timed solves per case")
    parser.add_argument("--cap", type=float, default=120.0,
                        help="seconds after which a POT solve is stopped (default 120)")
    parser.add_argument("--threads", type=int, default=1, help="Numba threads for otcore")
    parser.add_argument("--note", help="a remark printed with the results")
    args = parser.parse_args(argv)
    # children inherit these: one BLAS thread (L-BFGS-B's small products), otcore's threads
    os.environ.update(OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1",
                      NUMBA_NUM_THREADS=str(args.threads))
    sizes = (200,) if args.quick else (200, 1000)
    cases = [run_case(n, k, gamma, form, args.repeats, args.cap)
             for n in sizes for k in KS for gamma in GAMMAS for form in FORMULATIONS]
    settings = {"repeats": args.repeats, "cap": args.cap, "threads": args.threads}
    doc = report(cases, settings, args.note)
    print(target_summary(cases))
    write_text(RESULTS_DIR / f"{NAME}.md", doc)
    plot(cases, RESULTS_DIR / f"{NAME}.png")
    _progress(f"wrote bench/results/{NAME}.md and bench/results/{NAME}.png "
              f"({format_seconds(sum(sum(c['otcore']['times']) for c in cases))} of otcore "
              "solves)")


if __name__ == "__main__":
    main()
