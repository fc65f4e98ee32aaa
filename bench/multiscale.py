"""Multiscale Sinkhorn against the full online solver on colour clouds.

Run from the repository root::

    python -m bench.multiscale                        # n in {1e4, 1e5, 1e6} (about 40 minutes)
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
  time is *extrapolated*: the measured time of 3 plain iterations (and the finisher's
  pass) per iteration, times the iterations that it needed at ``n = 1e4`` on the same
  images and eps (Sinkhorn's iteration count depends on eps and the clouds' shapes,
  hardly on n); at ``n = 1e6`` (3 iterations would take over an hour) the time per
  iteration is the one at ``1e5`` times 100, the ratio of the pairs.
* The same online solver on the distinct points with summed weights (``n >= 1e5``,
  extrapolated in the same way from 3 measured iterations): what merging alone gives,
  so that the last column is the gain of the multiscale scheme itself (truncation,
  coarse start, over-relaxation).
"""

from __future__ import annotations

import argparse
import math
import os
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
PACKAGES = ["numpy", "numba", "scikit-learn"]
EPS_REL = (1e-2, 1e-3)
TOL = 1e-4
#: Iterations of the full online solver timed at large n.
ITERS = 3
#: Time limits of a multiscale solve and of the online solver at n = 1e4 (eps = 1e-3 needs
#: hundreds of its iterations).
TIME_LIMIT, SMALL_LIMIT = 600.0, 1200.0


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


def measure(n: int, eps_rel: float, solver: str, time_limit: float,
            max_iter: int = 10_000) -> dict:
    """Child process: one solve; time, iterations, error, and the solver's details.
    ``solver`` is ``"multiscale"``, ``"full"`` or ``"full-distinct"`` (the online solver
    on the distinct points)."""
    import otcore as oc

    oc.sinkhorn(None, None, oc.PointCloud(*colour_clouds(64)), 0.1)  # JIT warm-up
    oc.multiscale_sinkhorn(None, None, oc.PointCloud(*colour_clouds(64)), 0.01)
    x, y = colour_clouds(n)
    a = b = None
    if solver == "full-distinct":
        (x, a), (y, b) = distinct(x), distinct(y)
    geom = oc.PointCloud(x, y, scale=3.0)
    eps = eps_rel * 3.0
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", oc.ConvergenceWarning)
        if solver == "multiscale":
            res = oc.multiscale_sinkhorn(None, None, geom, eps, tol=TOL, check_every=1,
                                         time_limit=time_limit, max_iter=max_iter)
        else:  # timed iterations at large n: plain (fused) ones, not annealing ones
            res = oc.sinkhorn(a, b, geom, eps, tol=TOL, check_every=1,
                              eps_scaling=0.5 if max_iter > ITERS else None,
                              time_limit=time_limit, max_iter=max_iter)
    seconds = time.perf_counter() - start
    extra = {k: v for k, v in res.extra.items()
             if k in ("kept_fraction", "n_clusters", "ignored_mass_bound", "coarse_iter",
                      "distinct_points")}
    return {"n": n, "eps_rel": eps_rel, "solver": solver, "seconds": seconds,
            "n_iter": res.n_iter, "error": res.marginal_error, "converged": res.converged,
            "pairs": len(x) * len(y), **extra}


def _fmt(s: float) -> str:
    return f"{s:.3g} s" if s < 600 else f"{s / 60:.3g} min"


def _extrapolate(timed: dict, iters: int | None, factor: float = 1.0) -> tuple[float, str]:
    """Time to tol from ``timed`` (a few iterations, or a converged run)."""
    if timed["converged"]:
        return timed["seconds"], "measured"
    if iters is None:
        return float("nan"), "not reached"
    per_iter = factor * timed["seconds"] / timed["n_iter"]
    scaled = f" (the 1e5 time x {factor:g})" if factor != 1.0 else ""
    return per_iter * iters, (f"extrapolated: {_fmt(per_iter)} per iteration{scaled} x "
                              f"{iters} iterations (n = 1e4)")


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
            rows.append(row)
    return rows


def _ratio(full_time: float, ms: dict) -> str:
    if math.isnan(full_time):
        return "—"
    ratio = full_time / ms["seconds"]
    return f"{ratio:.3g}x" if ms["converged"] else f"< {ratio:.3g}x (not converged)"


def table(rows: list[dict]) -> str:
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
                    _ratio(full_time, ms), dis_cell, _ratio(dis_time, ms)])
    return markdown_table(["n = m", "eps / scale", "distinct points", "multiscale",
                           "kept pairs (distinct)", "multiscale peak RSS", "full online",
                           "full peak RSS", "speed-up", "online on distinct points",
                           "speed-up over it"], out)


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
    parts += ["## Machine", info, "## Method", __doc__.split("\n\n", 2)[2].strip(),
              "## Results", table(rows),
              f"Total wall time of the run: {(time.perf_counter() - start) / 60:.1f} min.",
              f"![times]({NAME}.png)"]
    write_text(RESULTS_DIR / f"{NAME}.md", "\n\n".join(parts) + "\n")
    print(table(rows))


if __name__ == "__main__":
    main()
