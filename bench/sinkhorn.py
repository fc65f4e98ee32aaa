"""Log-domain Sinkhorn on CPU: otcore against POT and OTT-JAX.

Run from the repository root::

    python -m bench.sinkhorn            # everything (tens of minutes)
    python -m bench.sinkhorn --quick    # n = 1000 and online n = 1e4 only (about 2 minutes)

Dense problems: two 2-D Gaussian clouds with different means, squared-Euclidean cost
divided by its maximum, uniform weights, float64, ``n = m`` in {1000, 4000},
``eps`` in {1e-2, 1e-3}. Measured for otcore (``otcore.sinkhorn``), POT
(``ot.sinkhorn(..., method="sinkhorn_log")``) and OTT-JAX (``jax.jit`` of
``ott.solvers.linear.sinkhorn.Sinkhorn`` in log-sum-exp mode, on the JAX CPU backend):

* time per iteration over a fixed number of iterations, convergence checks off where the
  solver allows it (median of repeats, with the fastest and slowest repeat);
* iterations and time until the L1 marginal error ``|P 1 - a|_1 + |P^T 1 - b|_1`` is
  below 1e-9, each solver within a time budget.

One iteration means the same for the three solvers: each of the two potentials is updated
once, alternately (the row potential from the newest column potential and vice versa), by
an exact log-sum-exp; how many passes over the cost it takes is up to the implementation.

Online problems: two 3-D Gaussian clouds, ``n = m`` up to 1e5, ``eps = 1e-2``, the cost
``|x - y|^2 / s`` computed on the fly by ``otcore.PointCloud(x, y, scale=s)``, where ``s``
bounds the largest squared distance (squared diagonal of the bounding box of both
clouds). Each size runs in a fresh process that reports its peak resident memory; POT's
dense solver runs on the same problem where its ``n x m`` cost fits (n <= 1e4).

Results are printed, written to ``bench/results/sinkhorn.md`` and ``sinkhorn.png``, and a
full run refreshes the README table between ``<!-- bench:sinkhorn -->`` markers.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._common import (
    RESULTS_DIR,
    Timing,
    command_line,
    dense_problem,
    format_seconds,
    gaussian_clouds,
    machine_info,
    markdown_table,
    run_isolated,
    sqeuclidean_bound,
    time_repeats,
    track_peak_rss,
    update_readme,
    write_text,
)
from ._sinkhorn_solvers import (
    CHECK_EVERY,
    TARGET,
    Convergence,
    Otcore,
    Ott,
    Pot,
    Solver,
    iterate_spread,
    measure_target,
)

NAME = "sinkhorn"
EPSILONS = (1e-2, 1e-3)
ONLINE_EPS = 1e-2
ONLINE_DIM = 3
POT_ONLINE_MAX = 10_000  # POT's dense cost is 8 n^2 bytes: 0.8 GB at n = 1e4
CONVERGENCE_PANEL = (1000, 1e-3)  # (n, eps) of the convergence plot
PACKAGES = ("otcore", "numpy", "scipy", "numba", "pot", "jax", "jaxlib", "ott-jax")


@dataclass(frozen=True)
class Settings:
    """What a run measures.

    Attributes
    ----------
    dense_sizes : tuple of int
        ``n = m`` of the dense problems.
    fixed_iterations : dict
        Iterations per timed run of the per-iteration measurement, by ``n``.
    repeats : int
        Timed repeats (median and spread) of each measurement.
    budget : float
        Seconds each solver gets to reach the target error on one problem.
    online_sizes : tuple of int
        ``n = m`` of the online point-cloud problems.
    online_iterations : int
        Iterations of otcore per online size (POT: ``pot_online_iterations``).
    pot_online_iterations : int
        Iterations of POT's dense solver on the online problems it can hold.
    """

    dense_sizes: tuple[int, ...]
    fixed_iterations: dict[int, int]
    repeats: int
    budget: float
    online_sizes: tuple[int, ...]
    online_iterations: int
    pot_online_iterations: int


QUICK = Settings((1000,), {1000: 50}, 3, 20.0, (10_000,), 10, 2)
FULL = Settings((1000, 4000), {1000: 100, 4000: 40}, 5, 120.0, (10_000, 30_000, 100_000),
                50, 5)


# --------------------------------------------------------------------------- dense


@dataclass
class DenseCase:
    """Measurements of every solver on one dense problem."""

    n: int
    eps: float
    fixed_iterations: int
    per_iteration: dict[str, Timing]
    convergence: dict[str, Convergence]


def run_dense(settings: Settings, solvers: list[Solver]) -> list[DenseCase]:
    """Per-iteration time and time to target of every solver on every dense problem."""
    cases = []
    for n in settings.dense_sizes:
        prob = dense_problem(n)
        iters = settings.fixed_iterations[n]
        for eps in EPSILONS:
            per_iteration, convergence = {}, {}
            for s in solvers:
                per_iteration[s.name] = time_repeats(
                    s.fixed(prob, eps, iters), settings.repeats, s.warmup).per(iters)
                _progress(f"n={n} eps={_sci(eps)} {s.name}: "
                          f"{per_iteration[s.name].format()} per iteration")
            for s in solvers:
                convergence[s.name] = conv = measure_target(
                    s, prob, eps, per_iteration[s.name], budget=settings.budget,
                    repeats=settings.repeats)
                _progress(f"n={n} eps={_sci(eps)} {s.name}: {_target_cell(conv)}, "
                          f"L1 check {conv.error:.2g}")
            cases.append(DenseCase(n, eps, iters, per_iteration, convergence))
    return cases


# --------------------------------------------------------------------------- online


def _online_problem(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, float]:
    x, y = gaussian_clouds(n, d=ONLINE_DIM, seed=seed)
    return x, y, sqeuclidean_bound(x, y)


def online_otcore(n: int, iterations: int, eps: float, seed: int = 0) -> dict:
    """otcore on an online point cloud; run in a fresh process by :func:`run_isolated`.

    Returns the seconds per iteration (one run of ``iterations``, convergence checks
    off) and the resident memory of that run (:func:`bench._common.track_peak_rss`),
    measured after imports and JIT compilation.
    """
    import otcore as oc

    x, y, scale = _online_problem(n, seed)
    warnings.simplefilter("ignore", oc.ConvergenceWarning)
    small = oc.PointCloud(x[:64], y[:64], scale=scale)
    oc.sinkhorn(None, None, small, eps, max_iter=2, check_every=3)  # JIT warm-up
    with track_peak_rss() as memory:
        t0 = time.perf_counter()
        oc.sinkhorn(None, None, oc.PointCloud(x, y, scale=scale), eps, max_iter=iterations,
                    check_every=iterations + 1)
        seconds = time.perf_counter() - t0
    return {"seconds_per_iteration": seconds / iterations, **memory}


def online_pot(n: int, iterations: int, eps: float, seed: int = 0) -> dict:
    """POT's dense ``sinkhorn_log`` on the online problem (builds the ``n x m`` cost).

    Same outputs as :func:`online_otcore`; the time covers the solver, the memory covers
    building the cost and the solver.
    """
    import ot
    from scipy.spatial.distance import cdist

    x, y, scale = _online_problem(n, seed)
    w = np.full(n, 1.0 / n)
    w64 = np.full(64, 1.0 / 64)
    ot.sinkhorn(w64, w64, cdist(x[:64], y[:64]), eps, method="sinkhorn_log", numItermax=2,
                warn=False)  # first-call set-up
    with track_peak_rss() as memory:
        C = cdist(x, y, "sqeuclidean")
        C /= scale
        t0 = time.perf_counter()
        ot.sinkhorn(w, w, C, eps, method="sinkhorn_log", numItermax=iterations,
                    stopThr=0.0, warn=False)
        seconds = time.perf_counter() - t0
    return {"seconds_per_iteration": seconds / iterations, **memory}


def run_online(settings: Settings) -> list[dict]:
    """Time per iteration and peak memory of otcore (and POT where it fits), by size."""
    rows = []
    for n in settings.online_sizes:
        row = {"n": n, "otcore": run_isolated(
            f"bench.{NAME}:online_otcore", n=n, iterations=settings.online_iterations,
            eps=ONLINE_EPS)}
        row["otcore"]["iterations"] = settings.online_iterations
        _progress(f"online n={n} otcore: {', '.join(_online_cells(row['otcore']))}")
        if n <= POT_ONLINE_MAX:
            row["POT"] = run_isolated(f"bench.{NAME}:online_pot", n=n,
                                      iterations=settings.pot_online_iterations,
                                      eps=ONLINE_EPS)
            row["POT"]["iterations"] = settings.pot_online_iterations
            _progress(f"online n={n} POT: {', '.join(_online_cells(row['POT']))}")
        rows.append(row)
    return rows


# --------------------------------------------------------------------------- report


def _progress(message: str) -> None:
    print(f"[bench.{NAME}] {message}", file=sys.stderr, flush=True)


def _ratio(ours: float, theirs: float) -> str:
    """``ours / theirs`` and how many times faster or slower that is."""
    r = ours / theirs
    return f"{r:.3g} ({1 / r:.3g}x faster)" if r <= 1 else f"{r:.3g} ({r:.3g}x slower)"


def _sci(x: float) -> str:
    """``1e-09`` -> ``1e-9``, ``0.001`` -> ``1e-3``, ``10000`` -> ``1e4``."""
    mantissa, exponent = f"{x:.0e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def _target_cell(c: Convergence) -> str:
    if c.reached:
        return f"{c.iterations} its, {format_seconds(c.time.median)}"
    return (f"not reached: L1 {c.error:.1e} after {c.iterations} its, "
            f"{format_seconds(c.time.median)}")


def _target_ratio(ours: Convergence, theirs: Convergence) -> str:
    if ours.reached and theirs.reached:
        return _ratio(ours.time.median, theirs.time.median)
    if ours.reached:  # the peer ran out of budget: only a bound
        return f"< {ours.time.median / theirs.time.median:.3g}"
    return "—"


def _online_cells(m: dict) -> list[str]:
    """Time per iteration, peak RSS of the solve (+ its increase), process peak RSS."""
    extra = m["peak_rss_mb"] - m["rss_before_mb"]
    return [f"{format_seconds(m['seconds_per_iteration'])} ({m['iterations']} its)",
            f"{m['peak_rss_mb']:.0f} MiB (+{extra:.0f})",
            f"{m['process_peak_rss_mb']:.0f} MiB"]


def dense_tables(cases: list[DenseCase], names: list[str]) -> tuple[str, str, str]:
    """Markdown tables: time per iteration, time to target, independent error check."""
    ours, peers = names[0], names[1:]
    head = ["n = m", "eps"]
    per_iter = markdown_table(
        head + [f"{s} / iteration" for s in names] + [f"{ours} / {p}" for p in peers],
        [[c.n, f"{_sci(c.eps)}"] + [c.per_iteration[s].format() for s in names]
         + [_ratio(c.per_iteration[ours].median, c.per_iteration[p].median) for p in peers]
         for c in cases])
    target = markdown_table(
        head + names + [f"{ours} / {p}" for p in peers],
        [[c.n, f"{_sci(c.eps)}"] + [_target_cell(c.convergence[s]) for s in names]
         + [_target_ratio(c.convergence[ours], c.convergence[p]) for p in peers]
         for c in cases])
    check = markdown_table(
        head + names,
        [[c.n, f"{_sci(c.eps)}"] + [f"{c.convergence[s].error:.2e}" for s in names]
         for c in cases])
    return per_iter, target, check


def online_table(rows: list[dict]) -> str:
    """Markdown table of the online measurements."""
    def cells(m: dict | None, n: int) -> list[str]:
        if m is None:
            return [f"not run (dense cost alone: {8 * n * n / 1e9:.2g} GB)", "—", "—"]
        return _online_cells(m)

    head = ["/ iteration", "peak RSS, solve", "peak RSS, process"]
    return markdown_table(
        ["n = m", *(f"otcore {h}" for h in head), *(f"POT {h}" for h in head)],
        [[_sci(r["n"]), *cells(r["otcore"], r["n"]), *cells(r.get("POT"), r["n"])]
         for r in rows])


def method(spread: float) -> str:
    """How the benchmark measures, with the result of the :func:`iterate_spread` check."""
    return f"""\
**Problems.** Dense: `x_i ~ N(0, I_2)`, `y_j ~ N((1, 1), I_2)`, `n = m`, uniform weights,
float64, cost `|x_i - y_j|^2` divided by its maximum (max 1). Online: the same in 3-D
(`y_j ~ N((1, 1, 1), I_3)`), eps = {_sci(ONLINE_EPS)}.

**Iterations.** For every solver, one iteration updates each of the two potentials once,
alternately, by an exact log-sum-exp given the newest other potential, starting from the
library's zero initialization (how many passes over the cost an iteration takes is up to
the implementation). Checked by this run: after 30 iterations on a 200 x 200 problem, the
row potentials of the three solvers differ only by a constant (which leaves the plan
unchanged), up to {spread:.1e}, for both values of eps.

**Time per iteration.** A run of a fixed number of iterations divided by that number
(each call's fixed work, such as checking inputs and computing the final marginals or
plan, is included and amortized); median of repeats, the fastest and slowest repeat in
brackets. Convergence checks are off for otcore (`check_every` larger than the run) and
OTT (`inner_iterations` = the run: one error evaluation, at the end); POT always checks
every 10 iterations.

**Time to L1 error {_sci(TARGET)}.** Every solver checks its error every {CHECK_EVERY}
iterations and stops once the L1 marginal error `|P 1 - a|_1 + |P^T 1 - b|_1` is below
{_sci(TARGET)} (after a row update the row marginal is exact, so this is the L1 error of
the column marginal). Iterations are counted up to and including the update that revealed
convergence. Each solver gets the same time budget; otcore and OTT cannot be interrupted,
so for them the budget is an iteration cap (budget / fastest time per iteration, refitted
once when a run stops short of the target in under half the budget), and a run may
overshoot it. The last dense table recomputes the final L1 error of every solver's
potentials independently (NumPy/SciPy). The convergence plot draws each solver's L1
error checks (POT's: those of its search) against iterations times the solver's seconds
per iteration in that run.

**Peers.** *otcore*: `otcore.sinkhorn(a, b, C, eps, tol={_sci(TARGET)},
check_every={CHECK_EVERY})`, Numba kernels. *POT*: `ot.sinkhorn(a, b, C, eps,
method="sinkhorn_log", stopThr=0, numItermax=N)`, NumPy backend; POT's own stopping rule
is the L2 norm of the column-marginal error, so N is found by running POT in warm-started
chunks and computing the L1 error between chunks (untimed; the chunks shrink to
{CHECK_EVERY} iterations near the target and a chunk that overshoots it is redone
{CHECK_EVERY} at a time, so N is exact to {CHECK_EVERY} iterations; POT's budget is spent
on the chunks only), then one cold call with exactly N iterations is timed.
*OTT-JAX*: `Geometry(cost_matrix=C, epsilon=eps, relative_epsilon=None, scale_cost=1.0)`
(absolute eps, cost used as given),
`Sinkhorn(lse_mode=True, threshold={_sci(TARGET)}, norm_error=1,
inner_iterations={CHECK_EVERY})`; its error is the L1 norm of the column-marginal error; no
momentum or Anderson acceleration; 64-bit floats on the CPU backend; the whole solve under
`jax.jit`, compiled ahead of time for the same shapes (compile time excluded).

**Online.** otcore evaluates the cost `|x - y|^2 / s` on the fly (`PointCloud(x, y,
scale=s)`); `s` is the squared diagonal of the bounding box of both clouds, an upper bound
of the largest squared distance found in `O((n + m) d)` time, so the cost lies in [0, 1]
(its maximum is a little below 1). Each size runs once in a fresh Python process. *Peak
RSS, solve*: the peak resident memory of that process while it solves (the kernel's
high-water mark is reset after imports and JIT compilation; the resident interpreter and
libraries are included; in brackets, the increase over the memory before the solve).
*Peak RSS, process*: over the process's whole life, JIT compilation included. POT runs its
dense solver where its cost fits in memory; building the cost is part of its solve.
"""


COLORS = {"otcore": "tab:blue", "POT": "tab:orange", "OTT-JAX": "tab:green"}


def _plot_per_iteration(ax: Any, cases: list[DenseCase], names: list[str]) -> None:
    width = 0.8 / len(names)
    for k, s in enumerate(names):
        t = np.array([c.per_iteration[s].median for c in cases])
        lo = t - np.array([c.per_iteration[s].low for c in cases])
        hi = np.array([c.per_iteration[s].high for c in cases]) - t
        ax.bar(np.arange(len(cases)) + (k - (len(names) - 1) / 2) * width, t, width,
               yerr=[lo, hi], label=s, color=COLORS[s], capsize=2)
    ax.set_xticks(np.arange(len(cases)), [f"n={c.n}\neps={_sci(c.eps)}" for c in cases])
    ax.set_yscale("log")
    ax.set_ylabel("seconds per iteration")
    ax.set_title("Dense Sinkhorn, float64 (lower is better)")
    ax.legend()


def _plot_convergence(ax: Any, case: DenseCase, names: list[str]) -> None:
    for s in names:
        conv = case.convergence[s]
        if not conv.history:
            continue
        # time axis: iterations x this solver's seconds per iteration in that run
        its, err = np.array(conv.history).T
        sec = conv.time.median / conv.iterations
        ax.loglog(its * sec, err, label=s, color=COLORS[s])
    ax.axhline(TARGET, color="gray", linestyle=":", label=f"target {_sci(TARGET)}")
    ax.set_xlabel("seconds")
    ax.set_ylabel("L1 marginal error")
    ax.set_title(f"Convergence, n={case.n}, eps={_sci(case.eps)}")
    ax.legend()


def _plot_online_memory(ax: Any, online: list[dict]) -> None:
    for s in ("otcore", "POT"):
        pts = np.array([(r["n"], r[s]["peak_rss_mb"]) for r in online if s in r])
        if len(pts):
            ax.loglog(pts[:, 0], pts[:, 1], "o-", label=s, color=COLORS[s])
    ax.axhline(1024, color="gray", linestyle=":", label="1 GiB")
    ax.set_xlabel(f"n = m ({ONLINE_DIM}-D point clouds)")
    ax.set_ylabel("peak RSS (MiB)")
    ax.set_title(f"Online Sinkhorn memory, eps={_sci(ONLINE_EPS)}")
    ax.legend()


def plot(cases: list[DenseCase], online: list[dict], names: list[str], path: Any) -> None:
    """PNG: time per iteration (bars), a convergence panel, online peak memory."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels: list[Callable[[Any], None]] = []
    if cases:
        panels.append(lambda ax: _plot_per_iteration(ax, cases, names))
    conv = [c for c in cases if (c.n, c.eps) == CONVERGENCE_PANEL]
    if conv:
        panels.append(lambda ax: _plot_convergence(ax, conv[0], names))
    if online:
        panels.append(lambda ax: _plot_online_memory(ax, online))
    if not panels:
        return
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.2),
                             layout="constrained", squeeze=False)
    for draw, ax in zip(panels, axes[0], strict=True):
        draw(ax)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def report(cases: list[DenseCase], online: list[dict], names: list[str], settings: Settings,
           spread: float, note: str | None) -> tuple[str, str]:
    """The result file (markdown) and the shorter README section.

    ``spread`` is the :func:`iterate_spread` check, stated with the method.
    """
    sections, readme = [], []
    if cases:
        per_iter, target, check = dense_tables(cases, names)
        runs = ", ".join(f"{c.fixed_iterations} iterations at n = {c.n}"
                         for c in cases if c.eps == EPSILONS[0])
        sections += [
            "## Dense: time per iteration",
            f"Timed runs of {runs}; {settings.repeats} repeats each.", per_iter,
            f"## Dense: iterations and time to L1 marginal error {_sci(TARGET)}",
            f"Budget: {settings.budget:g} s per solver and problem.", target,
            "## Dense: final L1 marginal error, recomputed independently", check,
        ]
        readme += ["Dense, float64, time per iteration:", per_iter,
                   f"Iterations and time to L1 marginal error {_sci(TARGET)}:", target]
    if online:
        table = online_table(online)
        sections += [f"## Online point clouds: d = {ONLINE_DIM}, eps = {_sci(ONLINE_EPS)}", table]
        readme += [f"Online point clouds (d = {ONLINE_DIM}, eps = {_sci(ONLINE_EPS)}):", table]
    info = machine_info(PACKAGES)
    machine = "\n".join(f"- {k}: {v}" for k, v in info.items())
    command = command_line(f"bench.{NAME}")
    header = [f"# Sinkhorn benchmark: otcore, POT, OTT-JAX\n\nCommand: `{command}`"]
    if note:
        header.append(f"**Note:** {note}")
    doc = "\n\n".join([*header, "## Machine", machine, "## Method", method(spread).strip(),
                       *sections, f"![plots]({NAME}.png)"]) + "\n"
    summary = (f"Measured with `{command}` on {info['CPU']} ({info['logical cores']} logical "
               f"cores, {info['Numba threads']} Numba threads), {info['date (UTC)']} UTC. "
               + (f"{note[:1].upper()}{note[1:].rstrip('.')}. " if note else "")
               + f"Method and details: [bench/results/{NAME}.md](bench/results/{NAME}.md).")
    return doc, "\n\n".join([*readme, summary])


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point: ``python -m bench.sinkhorn [--quick] [...]``."""
    parser = argparse.ArgumentParser(prog=f"python -m bench.{NAME}",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="n = 1000 only, fewer repeats, online up to 1e4 (~2 minutes)")
    parser.add_argument("--only", choices=("dense", "online"),
                        help="run one part only (does not update the README)")
    parser.add_argument("--budget", type=float,
                        help="seconds per solver to reach the target (default: 20 quick, "
                             "120 full)")
    parser.add_argument("--note", help="a remark printed with the results")
    args = parser.parse_args(argv)
    settings = QUICK if args.quick else FULL
    if args.budget is not None:
        settings = Settings(**{**settings.__dict__, "budget": args.budget})

    solvers = [Otcore(), Pot(), Ott()]
    names = [s.name for s in solvers]
    small = dense_problem(200, seed=1)
    spread = max(iterate_spread(solvers, small, eps) for eps in EPSILONS)
    _progress(f"same iterates: potentials after 30 iterations agree up to a constant "
              f"within {spread:.1e}")
    cases = run_dense(settings, solvers) if args.only != "online" else []
    online = run_online(settings) if args.only != "dense" else []

    doc, short = report(cases, online, names, settings, spread, args.note)
    print(short)
    write_text(RESULTS_DIR / f"{NAME}.md", doc)
    plot(cases, online, names, RESULTS_DIR / f"{NAME}.png")
    _progress(f"wrote bench/results/{NAME}.md and bench/results/{NAME}.png")
    if not args.quick and args.only is None and update_readme(NAME, short):
        _progress("updated the README table")


if __name__ == "__main__":
    main()
