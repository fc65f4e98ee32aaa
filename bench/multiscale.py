"""Multiscale Sinkhorn against the full online solver on colour clouds.

Run from the repository root::

    python -m bench.multiscale                        # n in {1e4, 1e5, 1e6} (about 20 minutes)
    python -m bench.multiscale --sizes 10000 100000   # some sizes

Problem: the pixels of scikit-learn's sample images ``china.jpg`` (source) and
``flower.jpg`` (target), RGB scaled to [0, 1], ``n`` pixels drawn from each with a seeded
generator (with replacement above the 273,280 pixels of an image), uniform weights, the
cost ``|x - y|^2`` of ``otcore.PointCloud(x, y)``, whose scale (the squared diagonal of
the bounding box) is 3; ``eps`` is 1e-2 or 1e-3 of that scale; the target is an L1
marginal error of 1e-4. Every case runs in a fresh process
(:func:`bench._common.run_isolated`), whose peak resident set size is reported.

* ``otcore.multiscale_sinkhorn(..., tol=1e-4, check_every=1)`` with its defaults: the
  pixels' 8-bit colours repeat, and duplicated points are merged exactly
  (``merge_duplicates=True``; the table gives the distinct points of each cloud), the
  default clusters and truncation (ignored mass <= 1e-5), over-relaxed iterations at the
  final eps. The table gives the time, the iterations and the error bound reached
  (``marginal_error``: the exact error on the kept pairs plus twice the ignored-mass
  bound), and the kept fraction of the pairs of distinct points.
* ``otcore.sinkhorn(PointCloud, ..., tol=1e-4, eps_scaling=0.5)``, the full online
  solver, on all ``n x n`` pairs: run to the tolerance at ``n = 1e4``; at ``n = 1e5`` its
  time is *extrapolated*: the median time between the convergence checks of 4 plain
  iterations, times the iterations that it needed at ``n = 1e4`` on the same images and
  eps (Sinkhorn's iteration count depends on eps and the clouds' shapes, hardly on n),
  plus the measured rest of the run (the first softmin and the finisher's pass); at
  ``n = 1e6`` (4 iterations would take over an hour) the times at ``1e5`` times 100, the
  ratio of the pairs.
* The same online solver on the distinct points with summed weights (``n >= 1e5``,
  extrapolated in the same way from 4 measured iterations): what merging alone gives,
  so that the last column is the gain of the multiscale scheme itself (truncation,
  coarse start, over-relaxation).
* GeomLoss (``geomloss.SamplesLoss("sinkhorn", p=2, debias=False, potentials=True,
  backend="multiscale")``: KeOps's block-sparse kernels, float64 CPU tensors) with its
  default ``scaling=0.5`` and with ``scaling=0.9``, for ``n <= 1e5``. Its cost is
  ``|x - y|^2 / 2`` at the temperature ``blur**2`` and its plan
  ``a_i b_j exp((F_i + G_j - |x_i - y_j|^2 / 2) / blur**2)``: otcore's problem with
  ``blur**2 = eps / 2``, whose potentials are ``(f, g) = (2 F, 2 G)``. GeomLoss has no
  tolerance: it runs a fixed schedule, one symmetric update of both potentials per
  temperature, from the squared diameter of the clouds down to ``blur**2`` by factors
  ``scaling**2`` (the table's "passes" count an initial and a final one too). It iterates
  on clusters (the occupied cells of a grid of about 2000 cells over the bounding box)
  while the temperature exceeds the squared cell size, then on the points, with the
  kernel truncated between cluster pairs where ``F + G - |x - y|^2 / 2`` is below -5
  times the temperature; for ``eps = 1e-2`` of the scale it stays on the clusters, and
  the points' potentials are extrapolated from the clusters' once, at the end. The table
  gives its time (after a warm-up solve in the same process, which compiles KeOps's
  kernels) and the exact L1 marginal error of its potentials' full plan, computed with
  otcore's online kernels (at ``n = 1e5`` in a few minutes, not timed). Its
  ``backend="online"`` (no clusters) left errors as large at ``n = 1e4``: the schedule
  limits them, not the clusters. Its peak RSS includes about 600 MiB taken by importing
  torch, KeOps and otcore.
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import time
import warnings
from pathlib import Path

import numpy as np

from ._common import (
    RESULTS_DIR,
    command_line,
    machine_info,
    markdown_table,
    run_isolated,
    write_text,
)

NAME = "multiscale"
PACKAGES = ["numpy", "numba", "scikit-learn", "geomloss", "pykeops", "torch"]
EPS_REL = (1e-2, 1e-3)
TOL = 1e-4
#: Iterations of the full online solver timed at large n.
ITERS = 4
#: Time limits of a multiscale solve and of the online solver at n = 1e4 (eps = 1e-3 needs
#: hundreds of its iterations).
TIME_LIMIT, SMALL_LIMIT = 600.0, 1200.0
#: GeomLoss's ratios of successive blur values: its default, and a finer schedule; and the
#: largest n it runs at.
GEOMLOSS_SCALINGS, GEOMLOSS_MAX_N = (0.5, 0.9), 100_000


def colour_clouds(n: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` pixels of china.jpg and of flower.jpg, RGB in [0, 1]."""
    from sklearn.datasets import load_sample_images

    data = load_sample_images()
    imgs = {Path(f).name: img.reshape(-1, 3) / 255.0
            for f, img in zip(data.filenames, data.images, strict=True)}
    rng = np.random.default_rng(0)
    out = []
    for name in ("china.jpg", "flower.jpg"):
        px = imgs[name]
        out.append(px[rng.choice(len(px), n, replace=n > len(px))])
    return out[0], out[1]


def distinct(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct rows of ``p`` and their multiplicities, as weights summing to 1."""
    points, counts = np.unique(p, axis=0, return_counts=True)
    return points, counts / counts.sum()


def geomloss_available() -> bool:
    """Whether GeomLoss and KeOps (its multiscale backend) can be imported."""
    from importlib.util import find_spec

    return all(find_spec(m) is not None for m in ("geomloss", "pykeops", "torch"))


def _geomloss_passes(x: np.ndarray, y: np.ndarray, blur: float, scaling: float) -> int:
    """Sinkhorn passes (both potentials updated) of GeomLoss's fixed eps-scaling schedule.

    The temperatures run from ``diameter**2`` (``diameter``: the diagonal of the clouds'
    bounding box) down to ``blur**2`` by factors ``scaling**2``, both ends repeated;
    GeomLoss makes one initial pass, one symmetric update per temperature, then one final
    pass (or the coarse-to-fine extrapolation).
    """
    both = np.concatenate([x, y])
    diameter = float(np.linalg.norm(both.max(axis=0) - both.min(axis=0)))
    steps = np.arange(2 * np.log(diameter), 2 * np.log(blur), 2 * np.log(scaling))
    return len(steps) + 4


def _geomloss_solve(x: np.ndarray, y: np.ndarray, eps: float,
                    scaling: float) -> tuple[np.ndarray, np.ndarray]:
    """GeomLoss's multiscale solve of otcore's problem; otcore's potentials ``(f, g)``
    (``blur**2 = eps / 2``, ``(f, g) = (2 F, 2 G)``: see the module docstring)."""
    import torch
    from geomloss import SamplesLoss

    loss = SamplesLoss("sinkhorn", p=2, blur=math.sqrt(eps / 2), scaling=scaling,
                       debias=False, potentials=True, backend="multiscale")
    with torch.no_grad():
        F, G = loss(torch.from_numpy(x), torch.from_numpy(y))
    return 2 * F.reshape(-1).numpy(), 2 * G.reshape(-1).numpy()


def _measure_geomloss(n: int, eps_rel: float, scaling: float) -> dict:
    """Child process: GeomLoss's solve, timed after a warm-up that compiles KeOps's
    kernels; the exact L1 marginal error of its potentials, by otcore's online kernels."""
    import otcore as oc

    eps = eps_rel * 3.0
    _geomloss_solve(*colour_clouds(2000), eps, 0.5)  # KeOps compilation, torch start-up
    x, y = colour_clouds(n)
    start = time.perf_counter()
    f, g = _geomloss_solve(x, y, eps, scaling)
    seconds = time.perf_counter() - start
    stats = oc.get_backend(x).bind(oc.PointCloud(x, y)).plan_stats(
        f - eps * np.log(n), g - eps * np.log(n), eps)
    error = float(np.abs(stats.rows - 1 / n).sum() + np.abs(stats.cols - 1 / n).sum())
    return {"n": n, "eps_rel": eps_rel, "solver": "geomloss", "scaling": scaling,
            "seconds": seconds, "n_iter": _geomloss_passes(x, y, math.sqrt(eps / 2), scaling),
            "error": error, "converged": error <= TOL}


def measure(n: int, eps_rel: float, solver: str, time_limit: float,
            max_iter: int = 10_000, scaling: float = 0.5) -> dict:
    """Child process: one solve; time, iterations, error, and the solver's details.

    Parameters
    ----------
    n : int
        Points in each cloud.
    eps_rel : float
        ``eps`` divided by the cost scale 3.
    solver : {"multiscale", "full", "full-distinct", "geomloss"}
        ``otcore.multiscale_sinkhorn``, ``otcore.sinkhorn`` (on all points, or on the
        distinct points with summed weights) or GeomLoss's multiscale solver.
    time_limit : float
        Seconds granted to otcore's solvers; GeomLoss runs its fixed schedule to the end.
    max_iter : int, default 10000
        Iteration limit of otcore's solvers; the online solver runs plain iterations (no
        eps-scaling) when it is at most :data:`ITERS`.
    scaling : float, default 0.5
        GeomLoss's ratio of successive blur values (``eps`` shrinks by ``scaling**2``).

    Returns
    -------
    dict
        ``seconds``, ``n_iter`` (GeomLoss: its Sinkhorn passes), ``error`` (the L1
        marginal error: otcore's reported bound, or the exact error of GeomLoss's
        potentials), ``converged`` (``error <= 1e-4``) and the solver's details.
    """
    if solver == "geomloss":
        return _measure_geomloss(n, eps_rel, scaling)
    import otcore as oc

    oc.sinkhorn(None, None, oc.PointCloud(*colour_clouds(64)), 0.1)  # JIT warm-up
    oc.multiscale_sinkhorn(None, None, oc.PointCloud(*colour_clouds(64)), 0.01)
    x, y = colour_clouds(n)
    a = b = None
    if solver == "full-distinct":
        (x, a), (y, b) = distinct(x), distinct(y)
    geom = oc.PointCloud(x, y)
    eps = eps_rel * 3.0
    checks: list[float] = []
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", oc.ConvergenceWarning)
        if solver == "multiscale":
            res = oc.multiscale_sinkhorn(None, None, geom, eps, tol=TOL, check_every=1,
                                         time_limit=time_limit, max_iter=max_iter)
        else:  # timed iterations at large n: plain (fused) ones, not annealing ones
            res = oc.sinkhorn(a, b, geom, eps, tol=TOL, check_every=1,
                              eps_scaling=0.5 if max_iter > ITERS else None,
                              time_limit=time_limit, max_iter=max_iter,
                              callback=lambda info: checks.append(info.elapsed))
    seconds = time.perf_counter() - start
    # the time of one iteration: between consecutive checks (without the first softmin
    # and the finisher's pass)
    per_iter = (float(np.median(np.diff(checks))) if len(checks) > 2
                else seconds / max(res.n_iter, 1))
    extra = {k: v for k, v in res.extra.items()
             if k in ("kept_fraction", "n_clusters", "ignored_mass_bound", "coarse_iter",
                      "distinct_points")}
    return {"n": n, "eps_rel": eps_rel, "solver": solver, "seconds": seconds,
            "n_iter": res.n_iter, "error": res.marginal_error, "converged": res.converged,
            "pairs": len(x) * len(y), "per_iter": per_iter, **extra}


def _fmt(s: float) -> str:
    if s < 600:
        return f"{s:.3g} s"
    return f"{s / 60:.3g} min" if s < 7200 else f"{s / 3600:.3g} h"


def _extrapolate(timed: dict, iters: int | None, factor: float = 1.0) -> tuple[float, str]:
    """Time to tol from ``timed`` (a few iterations, or a converged run)."""
    if timed["converged"]:
        return timed["seconds"], "measured"
    if iters is None:
        return float("nan"), "not reached"
    per_iter = factor * timed["per_iter"]
    rest = factor * (timed["seconds"] - timed["per_iter"] * timed["n_iter"])
    scaled = f" (the 1e5 time x {factor:g})" if factor != 1.0 else ""
    return per_iter * iters + rest, (
        f"extrapolated: {_fmt(per_iter)} per iteration{scaled} x {iters} iterations "
        f"(n = 1e4), + {_fmt(rest)} for the first softmin and the final pass")


def run(sizes: list[int]) -> list[dict]:
    rows = []
    iters_small: dict[float, int] = {}
    per_iter_1e5: dict[float, dict] = {}
    for n in sizes:
        for eps_rel in EPS_REL:
            case = {"n": n, "eps_rel": eps_rel}
            ms = run_isolated(f"bench.{NAME}:measure", solver="multiscale",
                              time_limit=TIME_LIMIT, **case)
            print(f"[multiscale] {ms}", flush=True)
            row = {"ms": ms, "full": None, "distinct": None}
            if n <= 10_000:
                full = run_isolated(f"bench.{NAME}:measure", solver="full",
                                    time_limit=SMALL_LIMIT, **case)
                if full["converged"]:
                    iters_small[eps_rel] = full["n_iter"]
                row["full"] = full
                row["full_time"] = _extrapolate(full, None)
            elif n <= 100_000:
                full = run_isolated(f"bench.{NAME}:measure", solver="full",
                                    time_limit=1e9, max_iter=ITERS, **case)
                per_iter_1e5[eps_rel] = full
                row["full"] = full
                row["full_time"] = _extrapolate(full, iters_small.get(eps_rel))
            elif eps_rel in per_iter_1e5:
                row["full_time"] = _extrapolate(per_iter_1e5[eps_rel],
                                                iters_small.get(eps_rel), (n / 1e5) ** 2)
            if n > 10_000:
                dis = run_isolated(f"bench.{NAME}:measure", solver="full-distinct",
                                   time_limit=1e9, max_iter=ITERS, **case)
                row["distinct"] = dis
                row["distinct_time"] = _extrapolate(dis, iters_small.get(eps_rel))
            print(f"[online] {row}", flush=True)
            row["geomloss"] = _run_geomloss(case) if n <= GEOMLOSS_MAX_N else {}
            rows.append(row)
    return rows


def _run_geomloss(case: dict) -> dict:
    """GeomLoss's solves of one case, by scaling (a string where it was killed or
    failed); empty where GeomLoss is not importable."""
    out: dict = {}
    for scaling in GEOMLOSS_SCALINGS if geomloss_available() else ():
        try:
            out[scaling] = run_isolated(f"bench.{NAME}:measure", timeout=TIME_LIMIT,
                                        solver="geomloss", time_limit=TIME_LIMIT,
                                        scaling=scaling, **case)
        except subprocess.TimeoutExpired:
            out[scaling] = f"killed after {_fmt(TIME_LIMIT)}"
        except subprocess.CalledProcessError as exc:
            out[scaling] = f"failed (exit status {exc.returncode})"
        print(f"[geomloss] {case} scaling={scaling}: {out[scaling]}", flush=True)
    return out


def _geomloss_cell(res: dict | str | None) -> str:
    if res is None:
        return "—"
    if isinstance(res, str):  # killed or failed
        return res
    return (f"{_fmt(res['seconds'])}, {res['n_iter']} passes, L1 {res['error']:.1e}, "
            f"{res['process_peak_rss_mb']:.0f} MiB")


def _ratio(full_time: float, ms: dict) -> str:
    if math.isnan(full_time):
        return "—"
    ratio = full_time / ms["seconds"]
    return f"{ratio:.3g}x" if ms["converged"] else f"< {ratio:.3g}x (not converged)"


def table(rows: list[dict]) -> str:
    scalings = sorted({sc for r in rows for sc in r.get("geomloss", {})})
    out = []
    for r in rows:
        ms, full = r["ms"], r["full"]
        ms_cell = (f"{_fmt(ms['seconds'])}, {ms['n_iter']} its, "
                   f"{'L1 ' if ms['converged'] else 'not converged: L1 '}{ms['error']:.1e}")
        dp = ms.get("distinct_points", (ms["n"], ms["n"]))
        full_time, how = r.get("full_time", (float("nan"), "not run"))
        if math.isnan(full_time) and full is not None:
            full_cell = (f"not reached: L1 {full['error']:.1e} after {full['n_iter']} its, "
                         f"{_fmt(full['seconds'])}")
        else:
            full_cell = f"{_fmt(full_time)} ({how})"
        dis_time, dis_how = r.get("distinct_time", (float("nan"), "not run"))
        dis_cell = "—" if r["distinct"] is None else f"{_fmt(dis_time)} ({dis_how})"
        out.append([f"{ms['n']:.0e}", f"{ms['eps_rel']:g}", f"{dp[0]} / {dp[1]}", ms_cell,
                    f"{ms.get('kept_fraction', float('nan')):.2f}",
                    f"{ms['process_peak_rss_mb']:.0f} MiB", full_cell,
                    "—" if full is None else f"{full['process_peak_rss_mb']:.0f} MiB",
                    _ratio(full_time, ms), dis_cell, _ratio(dis_time, ms),
                    *(_geomloss_cell(r.get("geomloss", {}).get(sc)) for sc in scalings)])
    return markdown_table(["n = m", "eps / scale", "distinct points", "multiscale",
                           "kept pairs (distinct)", "multiscale peak RSS", "full online",
                           "full peak RSS", "speed-up", "online on distinct points",
                           "speed-up over it",
                           *(f"GeomLoss, scaling {sc:g}: time, passes, L1, peak RSS"
                             for sc in scalings)], out)


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"n={r['ms']['n']:.0e}\neps={r['ms']['eps_rel']:g}" for r in rows]
    pos = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(8, 3.5), layout="constrained")
    series = [("multiscale", [r["ms"]["seconds"] for r in rows]),
              ("online on distinct points (extrapolated)",
               [r.get("distinct_time", (np.nan,))[0] for r in rows]),
              ("full online (measured or extrapolated)",
               [r.get("full_time", (np.nan,))[0] for r in rows])]
    for k, (label, values) in enumerate(series):
        ax.bar(pos + (k - 1) * 0.27, values, 0.27, label=label)
    ax.set_xticks(pos, labels)
    ax.set_yscale("log")
    ax.set_ylabel("seconds to L1 1e-4")
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(prog=f"python -m bench.{NAME}")
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--note", help="a remark printed with the results")
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    start = time.perf_counter()
    rows = run(sorted(args.sizes))
    plot(rows, RESULTS_DIR / f"{NAME}.png")
    info = "\n".join(f"- {k}: {v}" for k, v in machine_info(PACKAGES).items())
    parts = [f"# Multiscale Sinkhorn on colour clouds\n\nCommand: "
             f"`{command_line(f'bench.{NAME}')}`"]
    if args.note:
        parts.append(f"**Note:** {args.note}")
    method = __doc__.split("\n\n", 2)[2].strip()
    if not geomloss_available():
        method += ("\n\n**GeomLoss was not run:** ``geomloss``, ``pykeops`` or ``torch`` "
                   "is not importable in this environment.")
    parts += ["## Machine", info, "## Method", method,
              "## Results", table(rows),
              f"Total wall time of the run: {(time.perf_counter() - start) / 60:.1f} min.",
              f"![times]({NAME}.png)"]
    write_text(RESULTS_DIR / f"{NAME}.md", "\n\n".join(parts) + "\n")
    print(table(rows))


if __name__ == "__main__":
    main()
