"""Quadratic and cardinality-constrained OT on CPU: otcore against RegOT and POT.

Run from the repository root::

    python -m bench.cardinality                      # both parts (about half an hour on 2 cores)
    python -m bench.cardinality --quick              # n = 200 only (a few minutes)
    python -m bench.cardinality --baseline DIR       # also an earlier otcore, DIR/otcore
    python -m bench.cardinality --rounds 3           # otcore and the baseline alternate 3 times

Problems: two 2-D Gaussian clouds with different means (``bench._common.dense_problem``),
squared-Euclidean cost divided by its maximum, uniform weights, float64, ``n = m``.

*Quadratic OT* (``n`` in {200, 1000, 4000}, ``gamma`` in {0.1, 1}): the time to a plan
whose L1 marginal error ``|T 1 - a|_1 + |T^T 1 - b|_1`` is at most 1e-9, for

* otcore: ``otcore.cardinality_ot(a, b, C, None, gamma, tol=1e-9)`` (``k=None``: quadratic
  OT; semi-dual, semismooth Newton; ``tol`` bounds that error);
* RegOT: ``regot.qrot_grssn``, ``qrot_assn`` and ``qrot_lbfgs_dual`` on the same cost
  (Fortran order) with ``reg = gamma``, the same problem (the tests check that the
  plans agree to 1e-6). Their ``tol`` bounds the L2 norm of the marginal error: it is
  tightened from 1e-9 by factors of 10 until the returned plan meets 1e-9 in L1, and the
  time of the first run that does is reported (the runs before it are not counted).
  A run longer than ``--cap`` seconds ends the search (then "not reached").

*Cardinality-constrained OT* (``n = 1000``, ``k`` in {1, 2, 5}, ``gamma`` in {0.1, 1},
both formulations, ``tol = stopThr = 1e-9``): otcore's ``cardinality_ot(a, b, C, k,
gamma, formulation=...)`` against POT's ``ot.smooth.smooth_ot_semi_dual`` /
``smooth_ot_dual`` with ``reg_type="sparsity_constrained", max_nz=k`` (POT's only
solvers of this problem), and, with ``--baseline``, an earlier otcore on the same
problems. Reported: times, the objective of the returned potentials (evaluated by the
same code for all), both L1 marginal errors of the returned plan, otcore's status.

Each solver and problem runs in a fresh process with one BLAS thread and one Numba thread
(RegOT and POT run on one thread). otcore's process first solves once untimed (JIT
compilation from the cache); otcore is timed ``--repeats`` times (median), RegOT and POT
once per tolerance. With ``--rounds R`` the cardinality cases run otcore's and the
baseline's processes ``R`` times each, alternating (otcore first in odd rounds), and
pool the ``R * repeats`` times, so that a change in the machine's load affects both.

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
SIZES = (200, 1000, 4000)
GAMMAS = (0.1, 1.0)
KS = (1, 2, 5)
K_SIZE = 1000
FORMULATIONS = ("semi-dual", "dual")
REGOT = ("qrot_grssn", "qrot_assn", "qrot_lbfgs_dual")
TARGET = 1e-9
PACKAGES = ("otcore", "numpy", "scipy", "numba", "pot", "regot")


# ----------------------------------------------------------------- measured in children


def _errors(a: np.ndarray, b: np.ndarray, plan: Any) -> tuple[float, float]:
    """Row and column L1 marginal errors of a dense or SciPy sparse plan."""
    rows = np.asarray(plan.sum(axis=1)).ravel()
    cols = np.asarray(plan.sum(axis=0)).ravel()
    return float(np.abs(rows - a).sum()), float(np.abs(cols - b).sum())


def _objective(prob: Any, k: int, gamma: float, formulation: str, f: np.ndarray,
               g: np.ndarray | None) -> float:
    """The (semi-)dual objective of potentials, by otcore's kernel (the tests check it
    against POT's values and an independent NumPy formula)."""
    from otcore.solvers._problem import make_problem
    from otcore.solvers.cardinality import _Objective

    simplex = formulation == "semi-dual"
    obj = _Objective(make_problem(prob.a, prob.b, prob.C), 0, prob.a, prob.b, gamma, k,
                     simplex)
    x = f if simplex else np.concatenate([f, g])
    return obj.evaluate(np.asarray(x, dtype=np.float64))[0]


def measure_otcore(n: int, k: int | None, gamma: float, formulation: str, repeats: int,
                   source: str | None = None) -> dict:
    """Child process: one untimed solve, then ``repeats`` timed ones. ``source``: a
    directory whose ``otcore`` package is imported instead of this checkout's."""
    if source:
        sys.path.insert(0, source)
    import warnings

    import otcore as oc

    prob = dense_problem(n, seed=0)
    times = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", oc.ConvergenceWarning)
        for rep in range(repeats + 1):
            t0 = time.perf_counter()
            res = oc.cardinality_ot(prob.a, prob.b, prob.C, n if k is None else k, gamma,
                                    formulation=formulation, tol=TARGET)
            if rep:
                times.append(time.perf_counter() - t0)
    row, col = _errors(prob.a, prob.b, res.plan)
    return {"times": times, "row_error": row, "col_error": col,
            "objective": None if k is None else _objective(prob, k, gamma, formulation,
                                                           res.f, res.g),
            "iterations": res.n_iter + res.extra["warm_start_iter"],
            "converged": bool(res.converged), "status": res.extra.get("status", "n/a"),
            "max_nnz": int(np.diff(res.plan.tocsc().indptr).max()),
            "source": os.path.dirname(os.path.dirname(oc.__file__))}


def measure_regot(method: str, n: int, gamma: float, cap: float) -> dict:
    """Child process: RegOT's ``method`` with its tolerance tightened until the plan meets
    TARGET in L1 (or a run exceeds ``cap`` seconds)."""
    import regot

    prob = dense_problem(n, seed=0)
    M = np.asfortranarray(prob.C)
    fn = getattr(regot, method)
    tries = []
    for tol in (1e-9, 1e-10, 1e-11, 1e-12, 1e-13):
        t0 = time.perf_counter()
        try:
            res = fn(M, prob.a, prob.b, gamma, tol=tol, max_iter=100000)
        except RuntimeError as exc:  # e.g. its line search failing
            tries.append({"tol": tol, "time": time.perf_counter() - t0, "error": np.inf,
                          "niter": 0, "failure": str(exc)})
            break
        elapsed = time.perf_counter() - t0
        row, col = _errors(prob.a, prob.b, res.plan)
        tries.append({"tol": tol, "time": elapsed, "error": row + col, "niter": int(res.niter)})
        if row + col <= TARGET or elapsed > cap:
            break
    return {"tries": tries, "reached": tries[-1]["error"] <= TARGET}


def measure_pot(n: int, k: int, gamma: float, formulation: str) -> dict:
    """Child process: one timed POT solve (its per-evaluation prints are discarded)."""
    import ot

    prob = dense_problem(n, seed=0)
    solve = ot.smooth.smooth_ot_semi_dual if formulation == "semi-dual" else \
        ot.smooth.smooth_ot_dual
    with contextlib.redirect_stdout(io.StringIO()):
        t0 = time.perf_counter()
        plan, log = solve(prob.a, prob.b, prob.C, gamma, reg_type="sparsity_constrained",
                          max_nz=k, stopThr=TARGET, log=True)
        elapsed = time.perf_counter() - t0
    row, col = _errors(prob.a, prob.b, plan)
    return {"times": [elapsed], "row_error": row, "col_error": col,
            "objective": _objective(prob, k, gamma, formulation, log["alpha"],
                                    log.get("beta")),
            "converged": bool(log["res"].success)}


# ----------------------------------------------------------------- orchestration


def _progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _median(run: dict | None) -> float | None:
    return None if run is None else Timing.of(run["times"]).median


def quadratic_case(n: int, gamma: float, repeats: int, cap: float) -> dict:
    ours = run_isolated(f"bench.{NAME}:measure_otcore", n=n, k=None, gamma=gamma,
                        formulation="semi-dual", repeats=repeats)
    case = {"n": n, "gamma": gamma, "otcore": ours, "regot": {}}
    for method in REGOT:
        try:
            case["regot"][method] = run_isolated(f"bench.{NAME}:measure_regot",
                                                 timeout=6 * cap + 60, method=method, n=n,
                                                 gamma=gamma, cap=cap)
        except Exception as exc:  # killed (TimeoutExpired) or failed
            _progress(f"  {method} did not finish: {type(exc).__name__}")
            case["regot"][method] = None
    best = _best_regot(case)
    _progress(f"quadratic n={n} gamma={gamma}: otcore {Timing.of(ours['times']).format()} "
              f"(L1 {ours['row_error'] + ours['col_error']:.1e}), best RegOT "
              + (f"{best[0]} {format_seconds(best[1])}" if best else "not reached"))
    return case


def _best_regot(case: dict) -> tuple[str, float] | None:
    """The fastest RegOT method that met TARGET, and its time."""
    done = [(m, r["tries"][-1]["time"]) for m, r in case["regot"].items()
            if r is not None and r["reached"]]
    return min(done, key=lambda t: t[1]) if done else None


def k_case(n: int, k: int, gamma: float, formulation: str, repeats: int, pot_cap: float,
           baseline: str | None, rounds: int = 1) -> dict:
    kwargs = {"n": n, "k": k, "gamma": gamma, "formulation": formulation}
    try:
        pot = run_isolated(f"bench.{NAME}:measure_pot", timeout=pot_cap, **kwargs)
    except Exception as exc:  # killed at the cap (TimeoutExpired) or failed
        _progress(f"  POT did not finish: {type(exc).__name__}")
        pot = None
    sources = {"otcore": None} if baseline is None else {"otcore": None, "baseline": baseline}
    runs: dict[str, dict] = {}
    for r in range(rounds):  # alternating, so that both see the same load
        for name in (list(sources) if r % 2 == 0 else list(sources)[::-1]):
            run = run_isolated(f"bench.{NAME}:measure_otcore", repeats=repeats,
                               source=sources[name], **kwargs)
            if name in runs:  # the same deterministic solve: pool the times
                run["times"] = runs[name]["times"] + run["times"]
            runs[name] = run
    ours, base = runs["otcore"], runs.get("baseline")
    case = {**kwargs, "otcore": ours, "POT": pot, "baseline": base}
    parts = [f"otcore {Timing.of(ours['times']).format()}"]
    for name, run in (("baseline", base), ("POT", pot)):
        if run is not None:
            parts.append(f"{name} {Timing.of(run['times']).format()} "
                         f"({_median(run) / _median(ours):.1f}x)")
    _progress(f"n={n} k={k} gamma={gamma} {formulation}: " + ", ".join(parts))
    return case


# ----------------------------------------------------------------- reporting


def _regot_cell(run: dict | None) -> str:
    if run is None:
        return "failed"
    last = run["tries"][-1]
    if "failure" in last:
        return f"failed at tol {last['tol']:.0e}: {last['failure']}"
    if not run["reached"]:
        return f"not reached (L1 {last['error']:.1e} at tol {last['tol']:.0e})"
    return f"{format_seconds(last['time'])} (tol {last['tol']:.0e}, L1 {last['error']:.1e})"


def quadratic_table(cases: list[dict]) -> str:
    headers = ["n", "gamma", "otcore time", "otcore L1 error", "otcore converged",
               *(f"RegOT {m}" for m in REGOT), "speed-up over RegOT's best"]
    rows = []
    for c in cases:
        ours = c["otcore"]
        best = _best_regot(c)
        speed = (f"{best[1] / _median(ours):.1f}x ({best[0]})" if best else "RegOT: none met")
        rows.append([c["n"], c["gamma"], Timing.of(ours["times"]).format(),
                     f"{ours['row_error'] + ours['col_error']:.1e}", ours["converged"],
                     *(_regot_cell(c["regot"][m]) for m in REGOT), speed])
    return markdown_table(headers, rows, align="rrrrr" + "r" * (len(REGOT) + 1))


def k_table(cases: list[dict]) -> str:
    with_base = any(c["baseline"] is not None for c in cases)
    headers = ["n", "k", "gamma", "formulation", "otcore time", "POT time",
               "speed-up over POT",
               *(["baseline otcore time", "speed-up over baseline"] if with_base else []),
               "objective otcore - POT", "row error otcore / POT", "col error otcore / POT",
               *(["row / col error baseline"] if with_base else []), "otcore status",
               "max nnz per column"]
    rows = []
    for c in cases:
        ours, pot, base = c["otcore"], c["POT"], c["baseline"]
        row = [c["n"], c["k"], c["gamma"], c["formulation"], Timing.of(ours["times"]).format()]
        row += ([Timing.of(pot["times"]).format(), f"{_median(pot) / _median(ours):.1f}x"]
                if pot else ["not finished", "n/a"])
        if with_base:
            row += [Timing.of(base["times"]).format(), f"{_median(base) / _median(ours):.2f}x"]
        row += [f"{ours['objective'] - pot['objective']:+.1e}" if pot else "n/a",
                f"{ours['row_error']:.1e} / " + (f"{pot['row_error']:.1e}" if pot else "n/a"),
                f"{ours['col_error']:.1e} / " + (f"{pot['col_error']:.1e}" if pot else "n/a")]
        if with_base:
            row.append(f"{base['row_error']:.1e} / {base['col_error']:.1e}")
        row += [ours["status"], ours["max_nnz"]]
        rows.append(row)
    return markdown_table(headers, rows, align="rrrl" + "r" * (len(headers) - 4))


def summary(quadratic: list[dict], kcases: list[dict]) -> str:
    lines = []
    ratios = [_best_regot(c)[1] / _median(c["otcore"]) for c in quadratic if _best_regot(c)]
    met = [c for c in quadratic if c["otcore"]["row_error"] + c["otcore"]["col_error"]
           <= TARGET]
    if quadratic:
        unmet = [c for c in quadratic if not _best_regot(c)]
        lines.append(f"- Quadratic OT: otcore met the L1 target in {len(met)} of "
                     f"{len(quadratic)} cases; speed-up over the fastest RegOT method that "
                     f"met it: {min(ratios):.1f}x to {max(ratios):.1f}x in {len(ratios)} cases"
                     + (f"; in the other {len(unmet)} (" + ", ".join(
                         f"n = {c['n']}, gamma = {c['gamma']:g}" for c in unmet)
                        + ") no RegOT method met it within the cap, where otcore took "
                        + ", ".join(format_seconds(_median(c["otcore"])) for c in unmet)
                        if unmet else "") + ".")
    done = [c for c in kcases if c["POT"] is not None]
    if done:
        speed = [_median(c["POT"]) / _median(c["otcore"]) for c in done]
        better = sum(c["otcore"]["objective"] >= c["POT"]["objective"] - 1e-12 for c in done)
        lines.append(f"- Cardinality OT at n = {kcases[0]['n']}: speed-up over POT "
                     f"{min(speed):.1f}x to {max(speed):.1f}x (target >= 10x: "
                     f"{sum(s >= 10 for s in speed)} of {len(done)}); otcore's objective "
                     f"equal or better than POT's in {better} of {len(done)}.")
    based = [c for c in kcases if c["baseline"] is not None]
    if based:
        ratio = [_median(c["baseline"]) / _median(c["otcore"]) for c in based]
        lines.append(f"- Against the baseline otcore: {min(ratio):.2f}x to {max(ratio):.2f}x "
                     f"(median {np.median(ratio):.2f}x; above 1 is faster now).")
    return "\n".join(lines)


def plot(quadratic: list[dict], kcases: list[dict], path: Any) -> None:
    """PNG: speed-up over RegOT's best (quadratic OT) and over POT (cardinality OT)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [panel for panel in (
        ([c for c in quadratic if _best_regot(c)], "quadratic OT", lambda c: _best_regot(c)[1],
         2),
        ([c for c in kcases if c["POT"]], "cardinality OT", lambda c: _median(c["POT"]), 10))
        if panel[0]]
    if not panels:
        return
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4.5),
                             layout="constrained", squeeze=False)
    for ax, (cases, label, peer, target) in zip(axes[0], panels, strict=True):
        names = [f"n={c['n']} g={c['gamma']:g}" + (f"\nk={c['k']} {c['formulation'][:4]}"
                                                   if "k" in c else "") for c in cases]
        ax.bar(np.arange(len(cases)), [peer(c) / _median(c["otcore"]) for c in cases])
        ax.axhline(target, color="gray", linestyle=":", label=f"target {target}x")
        ax.set_yscale("log")
        ax.set_xticks(np.arange(len(cases)), names, rotation=90, fontsize=7)
        ax.set_title(f"{label}: speed-up over {'RegOT (best)' if target == 2 else 'POT'}")
        ax.legend()
    fig.savefig(path, dpi=100)
    plt.close(fig)


QUADRATIC_HEADING = "## Quadratic OT: time to an L1 marginal error of 1e-9"
KEPT = ("From an earlier run of this script (its command and machine are in this file's "
        "history; not rerun here):\n\n")
K_HEADING = "## Cardinality-constrained OT"


def _section(text: str, heading: str) -> str | None:
    """The body of the section under ``heading`` in an earlier report, or None."""
    if heading not in text:
        return None
    body = text.split(heading, 1)[1]
    return body.split("\n## ", 1)[0].split("\n![", 1)[0].strip()


def report(quadratic: list[dict], kcases: list[dict], settings: dict) -> str:
    info = machine_info(PACKAGES)
    info["Numba threads"] = settings["threads"]
    machine = "\n".join(f"- {k}: {v}" for k, v in info.items())
    command = command_line(f"bench.{NAME}")
    if settings["baseline"]:  # the directory is local to the machine that ran it
        command = command.replace(settings["baseline"], "BASELINE_DIR")
    header = [f"# Quadratic and cardinality-constrained OT: otcore, RegOT and POT\n\n"
              f"Command: `{command}`"]
    if settings["note"]:
        header.append(f"**Note:** {settings['note']}")
    if settings["baseline"]:
        header.append(f"Baseline: {settings['baseline_label']}.")
    method = __doc__[__doc__.index("Problems:"):].rsplit("\n\nResults are", 1)[0]
    method = method.replace("``", "`")  # reST literals to markdown
    return "\n\n".join([
        *header, "## Machine", machine, "## Method", method.strip(),
        f"Repeats (otcore): {settings['repeats']} per process, {settings['rounds']} "
        f"round(s) of alternating otcore and baseline processes; cap: "
        + ("" if settings["skip"] == "quadratic" else f"{settings['cap']:g} s per RegOT run, ")
        + f"{settings['pot_cap']:g} s per POT solve.",
        "## Summary", "\n".join(filter(None, [settings["kept_summary"],
                                              summary(quadratic, kcases)])),
        QUADRATIC_HEADING, settings["kept"] if settings["skip"] == "quadratic" else
        quadratic_table(quadratic),
        K_HEADING, settings["kept"] if settings["skip"] == "k" else k_table(kcases),
        f"![speed-ups]({NAME}.png)",
    ]) + "\n"


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point: ``python -m bench.cardinality [--quick] [...]``."""
    parser = argparse.ArgumentParser(prog=f"python -m bench.{NAME}",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="n = 200 only")
    parser.add_argument("--repeats", type=int, default=3, help="timed otcore solves per case")
    parser.add_argument("--rounds", type=int, default=1,
                        help="alternating otcore and baseline processes per cardinality case")
    parser.add_argument("--cap", type=float, default=120.0,
                        help="seconds after which a peer's run ends its case (default 120)")
    parser.add_argument("--threads", type=int, default=1, help="Numba threads for otcore")
    parser.add_argument("--baseline", help="directory holding an earlier otcore package")
    parser.add_argument("--baseline-label", default="an earlier otcore",
                        help="how the report names the baseline (e.g. its commit)")
    parser.add_argument("--pot-cap", type=float, default=300.0,
                        help="seconds after which a POT solve is stopped (default 300)")
    parser.add_argument("--skip", choices=("quadratic", "k"),
                        help="measure only the other part; the skipped part's table is kept "
                        "from the existing report, marked as from an earlier run")
    parser.add_argument("--note", help="a remark printed with the results")
    args = parser.parse_args(argv)
    # children inherit these: one BLAS/OpenMP thread, otcore's Numba threads
    os.environ.update(OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1",
                      NUMBA_NUM_THREADS=str(args.threads))
    sizes = (200,) if args.quick else SIZES
    k_size = 200 if args.quick else K_SIZE
    quadratic = [] if args.skip == "quadratic" else [
        quadratic_case(n, gamma, args.repeats, args.cap) for n in sizes for gamma in GAMMAS]
    kcases = [] if args.skip == "k" else [
        k_case(k_size, k, gamma, form, args.repeats, args.pot_cap, args.baseline,
               args.rounds)
        for k in KS for gamma in GAMMAS for form in FORMULATIONS]
    settings = {"repeats": args.repeats, "rounds": args.rounds, "cap": args.cap,
                "pot_cap": args.pot_cap,
                "threads": args.threads, "note": args.note, "baseline": args.baseline,
                "baseline_label": args.baseline_label, "skip": args.skip, "kept": None,
                "kept_summary": None}
    if args.skip:
        path = RESULTS_DIR / f"{NAME}.md"
        text = path.read_text() if path.exists() else ""
        earlier = _section(text, QUADRATIC_HEADING if args.skip == "quadratic" else K_HEADING)
        starts = ("- Quadratic OT",) if args.skip == "quadratic" else (
            "- Cardinality OT", "- Against the baseline")
        settings["kept_summary"] = "\n".join(  # marked once, however often kept
            line if "(earlier run" in line else f"{line} (earlier run)"
            for line in (_section(text, "## Summary") or "").splitlines()
            if line.startswith(starts)) or None
        settings["kept"] = ("Not measured in this run." if earlier is None else
                            KEPT + earlier.removeprefix(KEPT))
    print(summary(quadratic, kcases))
    write_text(RESULTS_DIR / f"{NAME}.md", report(quadratic, kcases, settings))
    plot(quadratic, kcases, RESULTS_DIR / f"{NAME}.png")
    _progress(f"wrote bench/results/{NAME}.md and bench/results/{NAME}.png")


if __name__ == "__main__":
    main()
