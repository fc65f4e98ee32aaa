"""Multiscale Sinkhorn against the full online solver on colour clouds.

Run from the repository root::

    python -m bench.multiscale                  # n in {1e4, 1e5} (about 20 minutes)
    python -m bench.multiscale --sizes 10000    # one size

Problem: the pixels of scikit-learn's sample images ``china.jpg`` (source) and
``flower.jpg`` (target), RGB scaled to [0, 1], ``n`` pixels drawn from each with a seeded
generator (with replacement above the 273,280 pixels of an image), uniform weights, the
cost ``|x - y|^2`` of ``otcore.PointCloud(x, y)``, whose scale (the squared diagonal of
the bounding box) is 3; ``eps`` is 1e-2 or 1e-3 of that scale; the target is an L1
marginal error of 1e-4. Every case runs in a fresh process
(:func:`bench._common.run_isolated`), whose peak resident set size is reported.

* ``otcore.multiscale_sinkhorn(..., tol=1e-4, check_every=1)``, the default clusters and
  truncation (ignored mass <= 1e-5), with a time limit: the table gives the time, the
  iterations and the error bound reached (``marginal_error``: the exact error on the
  kept pairs plus twice the ignored-mass bound).
* ``otcore.sinkhorn(PointCloud, ..., tol=1e-4, eps_scaling=0.5)``, the full online
  solver: run to the tolerance where it finishes within the time limit; otherwise its time
  is *extrapolated*: the measured time of 3 plain iterations from zero potentials (and
  the finisher's pass) per iteration, times the
  iterations that it needed at ``n = 1e4`` on the same images and eps (Sinkhorn's
  iteration count depends on eps and the clouds' shapes, hardly on n).

GeomLoss is not installed in the benchmark environment (it needs PyTorch and KeOps) and is
not run.
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
TIME_LIMIT = 300.0


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


def measure(n: int, eps_rel: float, solver: str, time_limit: float,
            max_iter: int = 10_000) -> dict:
    """Child process: one solve; time, iterations, error, and the solver's details."""
    import otcore as oc

    oc.sinkhorn(None, None, oc.PointCloud(*colour_clouds(64)), 0.1)  # JIT warm-up
    oc.multiscale_sinkhorn(None, None, oc.PointCloud(*colour_clouds(64)), 0.01)
    x, y = colour_clouds(n)
    geom = oc.PointCloud(x, y)
    eps = eps_rel * 3.0
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", oc.ConvergenceWarning)
        if solver == "multiscale":
            res = oc.multiscale_sinkhorn(None, None, geom, eps, tol=TOL, check_every=1,
                                         time_limit=time_limit, max_iter=max_iter)
        else:  # timed iterations at large n: plain (fused) ones, not annealing ones
            res = oc.sinkhorn(None, None, geom, eps, tol=TOL, check_every=1,
                              eps_scaling=0.5 if max_iter > ITERS else None,
                              time_limit=time_limit, max_iter=max_iter)
    seconds = time.perf_counter() - start
    extra = {k: v for k, v in res.extra.items() if k in ("kept_fraction", "n_clusters",
                                                          "ignored_mass_bound", "coarse_iter")}
    return {"n": n, "eps_rel": eps_rel, "solver": solver, "seconds": seconds,
            "n_iter": res.n_iter, "error": res.marginal_error, "converged": res.converged,
            **extra}


def _fmt(s: float) -> str:
    return f"{s:.3g} s" if s < 600 else f"{s / 60:.3g} min"


def run(sizes: list[int]) -> list[dict]:
    rows = []
    iters_small: dict[float, int] = {}
    for n in sizes:
        for eps_rel in EPS_REL:
            ms = run_isolated(f"bench.{NAME}:measure", n=n, eps_rel=eps_rel,
                              solver="multiscale", time_limit=TIME_LIMIT)
            print(f"[multiscale] n={n} eps={eps_rel}: {ms}", flush=True)
            small = n <= 10_000
            full = run_isolated(f"bench.{NAME}:measure", n=n, eps_rel=eps_rel, solver="full",
                                time_limit=TIME_LIMIT if small else 1e9,
                                max_iter=10_000 if small else ITERS)
            print(f"[full] n={n} eps={eps_rel}: {full}", flush=True)
            if full["converged"]:
                iters_small[eps_rel] = full["n_iter"]
                full_time, how = full["seconds"], "measured"
            elif eps_rel in iters_small:
                per_iter = full["seconds"] / full["n_iter"]
                full_time = per_iter * iters_small[eps_rel]
                how = (f"extrapolated: {_fmt(per_iter)} per iteration x "
                       f"{iters_small[eps_rel]} iterations (n = 1e4)")
            else:
                full_time, how = float("nan"), "not reached"
            rows.append({"ms": ms, "full": full, "full_time": full_time, "how": how})
    return rows


def table(rows: list[dict]) -> str:
    out = []
    for r in rows:
        ms, full = r["ms"], r["full"]
        ms_cell = (f"{_fmt(ms['seconds'])}, {ms['n_iter']} its, "
                   f"{'L1 ' if ms['converged'] else 'not converged: L1 '}{ms['error']:.1e}")
        if math.isnan(r["full_time"]):
            full_cell = (f"not reached: L1 {full['error']:.1e} after {full['n_iter']} its, "
                         f"{_fmt(full['seconds'])}")
            ratio = "—"
        else:
            full_cell = f"{_fmt(r['full_time'])} ({r['how']})"
            ratio = r["full_time"] / ms["seconds"]
            ratio = f"{ratio:.2g}x" if ms["converged"] else f"< {ratio:.2g}x (not converged)"
        per_iter = (ms["seconds"] / ms["n_iter"]) / (full["seconds"] / full["n_iter"])
        out.append([f"{ms['n']:.0e}", f"{ms['eps_rel']:g}", ms_cell,
                    f"{ms.get('kept_fraction', float('nan')):.2f}",
                    f"{ms['process_peak_rss_mb']:.0f} MiB", full_cell,
                    f"{full['process_peak_rss_mb']:.0f} MiB", ratio, f"{per_iter:.2f}"])
    return markdown_table(["n = m", "eps / scale", "multiscale", "kept pairs",
                           "multiscale peak RSS", "full online", "full peak RSS",
                           "speed-up", "time per iteration, multiscale / full"], out)


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"n={r['ms']['n']:.0e}\neps={r['ms']['eps_rel']:g}" for r in rows]
    pos = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(7, 3.5), layout="constrained")
    ax.bar(pos - 0.2, [r["ms"]["seconds"] for r in rows], 0.4, label="multiscale")
    ax.bar(pos + 0.2, [r["full"]["seconds"] if math.isnan(r["full_time"]) else r["full_time"]
                       for r in rows], 0.4, label="full online (extrapolated or limit)")
    ax.set_xticks(pos, labels)
    ax.set_yscale("log")
    ax.set_ylabel("seconds to L1 1e-4 (or limit)")
    ax.legend()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(prog=f"python -m bench.{NAME}")
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
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
