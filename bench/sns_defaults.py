"""SNS with its default settings (annealed warm-up) on colour clouds, against hand-tuned SNS,
``oc.solve``, otcore's Sinkhorn and RegOT's SSNS.

Run from the repository root (scikit-learn, RegOT and matplotlib must be installed)::

    python -m bench.sns_defaults [--n 2000] [--budget 120] [--repeats 3] [--threads 1]

Problem: colour clouds of ``n`` pixels (scikit-learn's sample images, ``china.jpg`` as the
source and ``flower.jpg`` as the target, RGB / 255, a seeded subsample without
replacement), squared Euclidean cost divided by its maximum, uniform weights, float64,
``eps`` in {1e-3, 1e-4}. Every solver is timed until the L1 marginal error
``|P 1 - a|_1 + |P^T 1 - b|_1`` of the plan it returns is below ``TARGET = 1e-9``; the error
is recomputed here with NumPy from the returned plan, and the time includes forming that
plan. Runs shorter than ``--short`` seconds are repeated (median, [fastest-slowest]).

* otcore SNS defaults: ``oc.sinkhorn_newton_sparse(None, None, C, eps)``.
* ``oc.solve(None, None, C, eps=eps)``: the method it picks is reported.
* Hand-tuned SNS: every combination of ``warmup_scaling``, ``warmup_tol`` and
  ``warmup_iter`` in ``GRID``, once each with ``time_limit=--grid-limit``; the three
  fastest that reach the target are rerun and the best median is reported.
* otcore Sinkhorn: ``oc.sinkhorn(None, None, C, eps, tol=1e-9, max_iter=10**8,
  time_limit=--budget)``; if it does not reach the target, the error it reached is
  reported and its ratio to SNS is a lower bound.
* RegOT ``sinkhorn_ssns(M, a, b, reg, tol=..., max_iter=...)``: ``reg`` is otcore's
  ``eps`` (same plan ``a_i b_j exp((f_i + g_j - C_ij) / eps)``, checked on a small problem
  at start-up); it stops when the Euclidean norm of its dual gradient is below ``tol``.
  Started at ``tol = 1e-9``, tightened tenfold (at most twice) if its plan misses the
  target. It cannot be interrupted: a probe of ``PROBE_ITER`` iterations gives the time per
  iteration at its end, from which the iteration cap that fills the budget follows (scaled
  up once if the capped run used less than 3/4 of the budget).

Writes ``bench/results/sns_defaults.md`` and ``bench/results/sns_defaults.png``.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import inspect  # noqa: E402
import itertools  # noqa: E402
import math  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

import otcore as oc  # noqa: E402

from ._common import (  # noqa: E402
    RESULTS_DIR,
    Timing,
    _git_revision,
    command_line,
    machine_info,
    markdown_table,
    write_text,
)

NAME = "sns_defaults"
TARGET = 1e-9
EPSILONS = (1e-3, 1e-4)
GRID = {
    "warmup_scaling": (None, 0.7, 0.8, 0.9, 0.95),
    "warmup_tol": (0.1, 1e-2),
    "warmup_iter": (500, 5000, 20000),
}
PROBE_ITER = 50
PACKAGES = ("otcore", "numpy", "scipy", "numba", "regot", "scikit-learn")


# ------------------------------------------------------------------------------ problem


def colour_clouds(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` RGB pixels (in [0, 1]^3) of china.jpg and of flower.jpg, drawn without
    replacement with ``numpy.random.default_rng(seed)``."""
    from sklearn.datasets import load_sample_images

    images = load_sample_images()
    names = [os.path.basename(f) for f in images.filenames]
    rng = np.random.default_rng(seed)
    clouds = []
    for name in ("china.jpg", "flower.jpg"):
        pixels = images.images[names.index(name)].reshape(-1, 3).astype(np.float64) / 255
        clouds.append(pixels[rng.choice(len(pixels), n, replace=False)])
    return clouds[0], clouds[1]


def cost_matrix(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Squared Euclidean cost divided by its maximum."""
    C = ((x[:, None, :] - y[None, :, :]) ** 2).sum(-1)
    return C / C.max()


def l1_error(P: Any, a: np.ndarray, b: np.ndarray) -> float:
    """L1 marginal error of a dense plan, in NumPy."""
    P = np.asarray(P)
    return float(np.abs(P.sum(axis=1) - a).sum() + np.abs(P.sum(axis=0) - b).sum())


# ------------------------------------------------------------------------------ results


@dataclass
class Row:
    """One solver at one eps: times of its runs, whether every run reached ``TARGET``,
    the error of the last run's plan, iterations and notes."""

    solver: str
    times: list[float]
    reached: bool
    error: float
    iterations: str = ""
    note: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def timing(self) -> Timing:
        return Timing.of(self.times)

    def cell(self) -> str:
        t = self.timing
        if not self.reached:
            return f"not reached: {self.error:.1e} after {t.median:.3g} s"
        spread = f" [{t.low:.3g}-{t.high:.3g}]" if len(self.times) > 1 else ""
        return f"{t.median:.3g} s{spread}"


def _quiet(fn: Callable[[], Any]) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", oc.ConvergenceWarning)
        return fn()


def _timed_otcore(call: Callable[[], Any], a: np.ndarray, b: np.ndarray
                  ) -> tuple[Any, float, float]:
    """Run an otcore solver, form its plan; (result, seconds, own L1 error)."""
    t0 = time.perf_counter()
    res = _quiet(call)
    P = res.plan
    elapsed = time.perf_counter() - t0
    return res, elapsed, l1_error(P, a, b)


def _sns_iterations(res: Any) -> str:
    ex = res.extra
    return f"{ex['sinkhorn_iter']} + {ex['newton_iter']} Newton"


def run_otcore(label: str, call: Callable[[], Any], a: np.ndarray, b: np.ndarray,
               repeats: int, short: float) -> Row:
    """Time an otcore call ``repeats`` times (once if the first run is long)."""
    times, res, err = [], None, math.inf
    reached = True
    for i in range(repeats):
        res, elapsed, err = _timed_otcore(call, a, b)
        times.append(elapsed)
        reached &= err < TARGET
        if i == 0 and (elapsed > short or not reached):
            break
    if res.method == "sinkhorn_newton_sparse":
        it = _sns_iterations(res)
        note = f"{res.extra['fallbacks']} fallbacks"
    else:
        it, note = str(res.n_iter), ""
    if "choice" in res.extra:
        why = res.extra["choice"].split(":")[0]
        note = f"chose `{res.method}` ({why})" + (f"; {note}" if note else "")
    if res.extra.get("stopped"):
        note += f"; stopped: {res.extra['stopped']}"
    return Row(label, times, reached, err, it, note, {"method": res.method, "res": res})


def run_grid(C: np.ndarray, eps: float, a: np.ndarray, b: np.ndarray, repeats: int,
             limit: float) -> tuple[Row, list[dict]]:
    """Every combination of GRID once (time limit ``limit``), the three fastest that reach
    TARGET ``repeats`` times; returns the best (smallest median) and the grid's runs."""
    keys = list(GRID)
    runs = []
    for values in itertools.product(*(GRID[k] for k in keys)):
        kw = dict(zip(keys, values, strict=True))
        res, elapsed, err = _timed_otcore(
            lambda kw=kw: oc.sinkhorn_newton_sparse(None, None, C, eps, time_limit=limit,
                                                    **kw), a, b)
        runs.append({"kw": kw, "times": [elapsed], "error": err,
                     "reached": err < TARGET, "iterations": _sns_iterations(res),
                     "stopped": res.extra.get("stopped", "")})
        print(f"  grid eps={eps:g} {kw} {elapsed:.3g} s, error {err:.2g}, "
              f"{_sns_iterations(res)}", flush=True)
    ok = sorted((r for r in runs if r["reached"]), key=lambda r: r["times"][0])
    for r in ok[:3]:
        kw = r["kw"]
        for _ in range(repeats - 1):
            res, elapsed, err = _timed_otcore(
                lambda kw=kw: oc.sinkhorn_newton_sparse(None, None, C, eps, **kw), a, b)
            r["times"].append(elapsed)
            r["reached"] &= err < TARGET
            r["error"] = err
    ok = [r for r in ok[:3] if r["reached"]]
    if not ok:
        return Row("otcore SNS, best of grid", [math.nan], False, math.nan,
                   note="no setting reached the target"), runs
    best = min(ok, key=lambda r: float(np.median(r["times"])))
    note = ", ".join(f"{k}={v}" for k, v in best["kw"].items())
    return Row("otcore SNS, best of grid", best["times"], True, best["error"],
               best["iterations"], note, {"kw": best["kw"]}), runs


def _rate_estimate(errors: list[tuple[int, float]], n_iter: int, elapsed: float) -> str:
    """Time to TARGET at the linear rate of the last half of the iterations (an estimate)."""
    it = np.array([e[0] for e in errors], dtype=float)
    err = np.array([e[1] for e in errors], dtype=float)
    keep = (it >= it[-1] / 2) & (err > 0)
    if keep.sum() < 2:
        return ""
    slope = np.polyfit(it[keep], np.log10(err[keep]), 1)[0]
    if slope >= 0:
        return "error not decreasing at the end"
    more = (math.log10(TARGET) - math.log10(err[-1])) / slope
    total = elapsed * (n_iter + more) / n_iter
    return (f"at the rate of the last half, about {total:.3g} s "
            f"({n_iter + more:.3g} iterations) to {TARGET:g}")


def run_sinkhorn(C: np.ndarray, eps: float, a: np.ndarray, b: np.ndarray, repeats: int,
                 short: float, budget: float) -> Row:
    def call():
        return oc.sinkhorn(None, None, C, eps, tol=TARGET, max_iter=10**8,
                           time_limit=budget)

    row = run_otcore("otcore Sinkhorn", call, a, b, repeats, short)
    if not row.reached:
        res = row.extra["res"]
        estimate = _rate_estimate(res.errors, res.n_iter, row.timing.median)
        row.note = "; ".join(filter(None, [row.note.lstrip("; "), estimate]))
    return row


def run_regot(C: np.ndarray, eps: float, a: np.ndarray, b: np.ndarray, repeats: int,
              short: float, budget: float) -> Row:
    """RegOT SSNS with ``reg = eps``, probed for its time per iteration, capped to the
    budget and with its own tolerance tightened until its plan meets TARGET."""
    import regot

    M = np.asfortranarray(C)

    def call(tol: float, max_iter: int) -> tuple[Any, float, float]:
        t0 = time.perf_counter()
        res = regot.sinkhorn_ssns(M, a, b, eps, tol=tol, max_iter=max_iter)
        elapsed = time.perf_counter() - t0
        return res, elapsed, l1_error(res.plan, a, b)

    tol = TARGET
    res, elapsed, err = call(tol, PROBE_ITER)
    cap = PROBE_ITER
    if res.niter >= PROBE_ITER:  # not done: cap from the time per iteration at its end
        rt = np.asarray(res.run_times) / 1e3  # cumulative milliseconds
        per_iter = float(np.mean(np.diff(rt[-11:]))) if len(rt) > 11 else elapsed / PROBE_ITER
        cap = PROBE_ITER + max(0, int((budget - elapsed) / max(per_iter, 1e-6)))
        res, elapsed, err = call(tol, cap)
        if res.niter >= cap and elapsed < 0.75 * budget:  # later iterations were cheaper
            cap = int(cap * budget / elapsed)
            res, elapsed, err = call(tol, cap)
    for _ in range(2):
        if err < TARGET or res.niter >= cap:
            break
        tol /= 10
        res, elapsed, err = call(tol, cap)
    times = [elapsed]
    reached = err < TARGET
    if reached and elapsed < short:
        for _ in range(repeats - 1):
            _, t2, e2 = call(tol, cap)
            times.append(t2)
            reached &= e2 < TARGET
    note = f"`tol={tol:g}`, `max_iter={cap}`"
    if res.niter >= cap:
        note += " (iteration cap from the budget reached)"
    return Row("RegOT SSNS", times, reached, err, str(res.niter), note)


def check_regot_convention() -> float:
    """Largest difference between RegOT's plan with ``reg = eps`` and otcore's plan."""
    import regot

    rng = np.random.default_rng(1)
    C = rng.random((60, 50))
    a, b = np.full(60, 1 / 60), np.full(50, 1 / 50)
    P = regot.sinkhorn_ssns(np.asfortranarray(C), a, b, 0.05, tol=1e-12, max_iter=200).plan
    Q = np.asarray(oc.sinkhorn(a, b, C, 0.05, tol=1e-13, max_iter=100_000).plan)
    return float(np.abs(P - Q).max() / Q.max())


# ------------------------------------------------------------------------------ report


def _ratio(row: Row, ref: Row) -> str:
    if not ref.reached or math.isnan(row.timing.median):
        return "-"
    r = row.timing.median / ref.timing.median
    return f"{r:.3g}" if row.reached else f"> {r:.3g}"


def results_table(rows: list[Row]) -> str:
    ref = rows[0]
    return markdown_table(
        ["solver", f"time to L1 < {TARGET:g}", "ratio to SNS defaults", "iterations",
         "L1 error (NumPy)", "notes"],
        [[r.solver, r.cell(), _ratio(r, ref), r.iterations or "-",
          f"{r.error:.1e}", r.note] for r in rows],
        align="lrrrrl")


def grid_table(grids: dict[float, list[dict]]) -> str:
    keys = list(GRID)
    eps_list = list(grids)
    by_kw = {}
    for eps, runs in grids.items():
        for r in runs:
            by_kw.setdefault(tuple(r["kw"].values()), {})[eps] = r
    rows = []
    for values, per_eps in by_kw.items():
        cells = list(values)
        for eps in eps_list:
            r = per_eps[eps]
            t = r["times"][0]
            cell = f"{t:.3g} s" if r["reached"] else f"({r['error']:.1e}, {t:.3g} s)"
            if r["stopped"]:
                cell += f" {r['stopped']}"
            cells.append(cell)
        rows.append(cells)
    return markdown_table(keys + [f"eps = {e:g}: time (first run)" for e in eps_list],
                          rows, align="rrr" + "r" * len(eps_list))


def verdict(tables: dict[float, list[Row]]) -> str:
    lines = []
    for eps, rows in tables.items():
        d, best, sk = rows[0], rows[2], rows[3]
        if d.reached and best.reached:
            r = d.timing.median / best.timing.median
            lines.append(f"- eps = {eps:g}: SNS defaults / best hand-tuned SNS = {r:.2f} "
                         f"(target <= 1.5: {'met' if r <= 1.5 else 'missed'}).")
        else:
            lines.append(f"- eps = {eps:g}: SNS defaults reached the target: {d.reached}; "
                         f"best of grid: {best.reached}.")
        if d.reached:
            r = sk.timing.median / d.timing.median
            bound = "" if sk.reached else (
                f" (a lower bound: Sinkhorn stopped at the budget with L1 error "
                f"{sk.error:.1e})")
            target = " (target >= 10: " + ("met" if r >= 10 else "missed") + ")" \
                if eps == 1e-4 else ""
            lines.append(f"- eps = {eps:g}: otcore Sinkhorn / SNS defaults = "
                         f"{'' if sk.reached else '> '}{r:.3g}{bound}{target}.")
    return "\n".join(lines)


def plot(tables: dict[float, list[Row]], n: int, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(tables), figsize=(5.2 * len(tables), 3.4), sharey=True)
    for ax, (eps, rows) in zip(np.atleast_1d(axes), tables.items(), strict=True):
        labels = [r.solver.replace("otcore ", "").replace(", best of grid", " tuned")
                  for r in rows]
        times = [r.timing.median for r in rows]
        colours = ["C0" if r.reached else "lightgrey" for r in rows]
        y = np.arange(len(rows))[::-1]
        ax.barh(y, times, color=colours, edgecolor="k",
                hatch=None)
        for yi, r, t in zip(y, rows, times, strict=True):
            if math.isnan(t):
                continue
            text = f"{t:.3g} s" if r.reached else f"> {t:.3g} s (err {r.error:.0e})"
            ax.text(t * 1.08, yi, text, va="center", fontsize=8)
        ax.set_yticks(y, labels)
        ax.set_xscale("log")
        ax.set_xlim(right=max(t for t in times if not math.isnan(t)) * 20)
        ax.set_xlabel(f"seconds to L1 marginal error {TARGET:g}")
        ax.set_title(f"eps = {eps:g}", fontsize=10)
    fig.suptitle(f"Colour clouds, n = m = {n} (grey: target not reached)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog=f"python -m bench.{NAME}",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="pixels per cloud")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--budget", type=float, default=120.0,
                        help="seconds for Sinkhorn and RegOT")
    parser.add_argument("--grid-limit", type=float, default=20.0,
                        help="time limit of one grid run (seconds)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--short", type=float, default=20.0,
                        help="runs longer than this are not repeated (seconds)")
    parser.add_argument("--threads", type=int, default=1, help="Numba threads")
    args = parser.parse_args(argv)
    import numba

    numba.set_num_threads(args.threads)
    t_start = time.perf_counter()
    commit = _git_revision()
    params = inspect.signature(oc.sinkhorn_newton_sparse).parameters
    defaults = ", ".join(f"{k}={params[k].default!r}" for k in GRID)
    x, y = colour_clouds(args.n, args.seed)
    C = cost_matrix(x, y)
    a = np.full(args.n, 1 / args.n)
    b = a.copy()
    oc.sinkhorn_newton_sparse(None, None, C[:50, :50], 0.01)  # load the kernels
    oc.sinkhorn(None, None, C[:50, :50], 0.01)
    convention = check_regot_convention()
    print(f"RegOT reg = eps: relative plan difference {convention:.1e}", flush=True)

    tables: dict[float, list[Row]] = {}
    grids: dict[float, list[dict]] = {}
    for eps in EPSILONS:
        rows = [
            run_otcore("otcore SNS, defaults",
                       lambda eps=eps: oc.sinkhorn_newton_sparse(None, None, C, eps),
                       a, b, args.repeats, args.short),
            run_otcore("oc.solve",
                       lambda eps=eps: oc.solve(None, None, C, eps=eps),
                       a, b, args.repeats, args.short),
        ]
        for r in rows:
            print(f"eps={eps:g} {r.solver:28s} {r.cell():40s} {r.iterations} {r.note}",
                  flush=True)
        best, grids[eps] = run_grid(C, eps, a, b, args.repeats, args.grid_limit)
        rows.append(best)
        rows.append(run_sinkhorn(C, eps, a, b, args.repeats, args.short, args.budget))
        rows.append(run_regot(C, eps, a, b, args.repeats, args.short, args.budget))
        for r in rows[2:]:
            print(f"eps={eps:g} {r.solver:28s} {r.cell():40s} {r.iterations} {r.note}",
                  flush=True)
        tables[eps] = rows
    total = time.perf_counter() - t_start

    info = machine_info(PACKAGES)
    info["otcore commit"] = commit  # the code that ran, not the one at the end
    parts = [
        "# SNS defaults on colour clouds",
        f"Command: `{command_line(f'bench.{NAME}')}` (total {total / 60:.1f} min)",
        "## Machine", "\n".join(f"- {k}: {v}" for k, v in info.items()),
        "Shared 2-core machine (other jobs, e.g. CI, may have run at the same time): the "
        "spreads [fastest-slowest] show the noise. RegOT is single-threaded.",
        "## Method",
        f"Colour clouds of n = m = {args.n} pixels (scikit-learn sample images: china.jpg "
        f"-> flower.jpg, RGB / 255, subsample without replacement, seed {args.seed}), "
        "squared Euclidean cost divided by its max, uniform weights, float64. Time until "
        f"the L1 marginal error of the returned plan, recomputed with NumPy, is below "
        f"{TARGET:g}; the time includes forming the plan. Runs under {args.short:g} s are "
        f"repeated {args.repeats} times (median [fastest-slowest]); longer ones run once.",
        "\n".join([
            "- *otcore SNS, defaults*: `oc.sinkhorn_newton_sparse(None, None, C, eps)` "
            f"({defaults}; tol 1e-9 by default in float64). Iterations: warm-up and fallback "
            "Sinkhorn iterations + Newton steps.",
            "- *oc.solve*: `oc.solve(None, None, C, eps=eps)`; the method it chose is in the "
            "notes.",
            "- *otcore SNS, best of grid*: "
            + ", ".join(f"{k} in {{{', '.join(str(v) for v in vs)}}}" for k, vs in GRID.items())
            + f", each once with `time_limit={args.grid_limit:g}`; the three fastest that "
            "reach the target are rerun, the best median is reported (grid below).",
            f"- *otcore Sinkhorn*: `oc.sinkhorn(None, None, C, eps, tol=1e-9, "
            f"max_iter=10**8, time_limit={args.budget:g})`; if it stops at the time limit its "
            "ratio is a lower bound.",
            "- *RegOT SSNS*: `regot.sinkhorn_ssns(np.asfortranarray(C), a, b, eps, tol=tol, "
            "max_iter=cap)`. RegOT's `reg` is otcore's `eps` (same plan "
            "`a_i b_j exp((f_i + g_j - C_ij) / eps)`; on a 60 x 50 problem the two plans "
            f"agree to {convention:.0e} relative). It stops when the Euclidean norm of its dual "
            f"gradient is below `tol`: started at {TARGET:g}, tightened tenfold (at most "
            "twice) if its plan misses the target. It cannot be interrupted: the iteration cap "
            f"comes from the time per iteration at the end of a {PROBE_ITER}-iteration probe "
            f"and the budget of {args.budget:g} s (scaled up once if the capped run used less "
            "than 3/4 of the budget).",
        ]),
        "## Results",
        verdict(tables),
    ]
    for eps, rows in tables.items():
        parts += [f"### eps = {eps:g}", results_table(rows)]
    parts += ["### Grid of warm-up settings",
              "Time of the first run of each setting (in parentheses: target not reached, "
              "with the L1 error of the returned plan).", grid_table(grids),
              f"![bar chart]({NAME}.png)"]
    text = "\n\n".join(parts) + "\n"
    write_text(RESULTS_DIR / f"{NAME}.md", text)
    plot(tables, args.n, RESULTS_DIR / f"{NAME}.png")
    print(text)


if __name__ == "__main__":
    main()
