"""Online barycentric projection: colour transfer between two photographs.

Run from the repository root::

    python -m bench.barycentric            # n = m in {1e4, 1e5} (about 5 minutes on 2 cores)
    python -m bench.barycentric --quick    # n = m = 1e4 only (about a minute)

Problem: the pixels of scikit-learn's sample images ``china.jpg`` (source) and
``flower.jpg`` (target) as colour clouds in 3-D, RGB scaled to [0, 1], each subsampled to
``n`` pixels without replacement by a seeded :func:`numpy.random.default_rng`; uniform
weights, cost ``|x - y|^2 / 3`` (3 is the squared diagonal of the unit cube, so the cost
lies in [0, 1]) evaluated on the fly by ``otcore.PointCloud(x, y, scale=3)``,
``eps = 1e-2``. The ``n x m`` cost and plan are never stored.

Every size runs in a fresh Python process (:func:`bench._common.run_isolated`), so its
peak resident set size is its own. In that process, after the imports, the loading of the
images and a JIT warm-up on a 64-point problem:

1. *Warm start* (timed, not part of the measured solve). Sinkhorn from zero potentials
   needs 50 to 80 iterations at this ``eps``, 20 to 30 s each at ``n = 1e5`` on 2 cores,
   so the measured solve starts from a coarse solution: Sinkhorn on the first ``n / 10``
   sampled pixels (themselves a uniform subsample) to an L1 marginal error of 1e-3 with
   ``eps_scaling=0.5``; its column potential ``g`` is extended to all ``n`` source pixels
   by one row update of the ``n x n / 10`` problem (``init=(None, g)``, ``max_iter=1``).
2. *Solve* (measured): ``otcore.sinkhorn`` on the full point cloud from that row potential,
   with a fixed budget of 3 iterations (the ``ConvergenceWarning`` is silenced; the table
   gives the exact L1 marginal error reached). The time covers the column update from the
   warm start, the 3 iterations and the finisher's pass for the exact marginals and cost.
3. *Projection* (measured): ``res.barycentric_projection()``, each source pixel's
   plan-weighted mean of the target colours ``sum_j P_ij y_j / sum_j P_ij``, in one
   pass over the cost without forming the plan.
4. Up to ``n = 1e4``, after the measurements: the mean and largest absolute difference
   between that projection and the one of a converged plan (L1 error 1e-6).

Timings are wall-clock medians over repeats with the fastest and slowest repeat. Memory:
the resident set size after the imports, images and JIT warm-up (the baseline), the peak
of each measured block (:func:`bench._common.track_peak_rss`) and the process's peak over
its whole life (``VmHWM``). The issue's target: the online projection at ``n = m = 1e5``
in a process whose peak memory stays under 1 GB.

Before the measurements, a correctness check at ``n = m = 2000`` (same pipeline) compares
the projection with ``(P @ y) / P.sum(1)`` computed from the dense ``res.plan`` (and the
``axis=0`` projection with ``(P.T @ x) / P.sum(0)``), to 1e-12 relative.

Results go to ``bench/results/barycentric.md`` and ``bench/results/barycentric.png`` (the
colour transfer at the largest size).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ._common import (
    RESULTS_DIR,
    Timing,
    command_line,
    machine_info,
    markdown_table,
    run_isolated,
    track_peak_rss,
    write_text,
)

NAME = "barycentric"
EPS = 1e-2
SCALE = 3.0  # squared diagonal of the RGB unit cube: the cost |x - y|^2 / 3 is in [0, 1]
ITERATIONS = 3  # fixed budget of the measured solve
COARSE_FRACTION = 10  # the warm start solves on n / COARSE_FRACTION points
COARSE_TOL = 1e-3
CHECK_N = 2000
REFERENCE_MAX_N = 10_000  # up to this size, compare with the converged projection
REFERENCE_TOL = 1e-6
CHECK_RTOL = 1e-12
TARGET_BYTES = 1e9  # the target: peak memory under 1 GB at n = m = 1e5
SEED = 0
PACKAGES = ("otcore", "numpy", "scipy", "numba", "scikit-learn")


@dataclass(frozen=True)
class Settings:
    """What a run measures: ``n = m`` and the ``(solve, projection)`` repeats per size."""

    sizes: tuple[int, ...]
    repeats: dict[int, tuple[int, int]]


QUICK = Settings((10_000,), {10_000: (3, 5)})
FULL = Settings((10_000, 100_000), {10_000: (5, 5), 100_000: (1, 3)})


# --------------------------------------------------------------------------- problem


def sample_images() -> tuple[np.ndarray, np.ndarray]:
    """``china.jpg`` and ``flower.jpg`` from scikit-learn, float64 RGB in [0, 1]."""
    from sklearn.datasets import load_sample_images

    data = load_sample_images()
    images = {Path(f).name: img for f, img in zip(data.filenames, data.images, strict=True)}
    return images["china.jpg"] / 255.0, images["flower.jpg"] / 255.0


def colour_clouds(n: int, seed: int = SEED) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n`` source and ``n`` target pixels as points of the RGB cube.

    Returns
    -------
    x, y : ndarray of shape (n, 3)
        Colours of ``n`` pixels of ``china.jpg`` and of ``flower.jpg``, drawn without
        replacement, in random order.
    source_index : ndarray of shape (n,)
        Flat indices (row-major) of the source pixels in ``china.jpg``.
    """
    source, target = sample_images()
    rng = np.random.default_rng(seed)
    src = source.reshape(-1, 3)
    tgt = target.reshape(-1, 3)
    source_index = rng.choice(len(src), n, replace=False)
    target_index = rng.choice(len(tgt), n, replace=False)
    return src[source_index], tgt[target_index], source_index


def warm_start(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, int]:
    """Row potential on every source point, from a solve on the first ``n / 10`` points.

    The coarse solve runs to ``COARSE_TOL`` with ``eps_scaling=0.5``; its column potential
    ``g`` is extended to all of ``x`` by one row update of the ``n x n / 10`` point cloud
    (``f_i = -eps log sum_j b_j exp((g_j - C_ij) / eps)``, the first half of the one
    iteration run with ``init=(None, g)``). Returns the potential and the coarse iterations.
    """
    import otcore as oc

    k = max(len(x) // COARSE_FRACTION, 1)
    coarse = oc.sinkhorn(None, None, oc.PointCloud(x[:k], y[:k], scale=SCALE), EPS,
                         tol=COARSE_TOL, eps_scaling=0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", oc.ConvergenceWarning)
        ext = oc.sinkhorn(None, None, oc.PointCloud(x, y[:k], scale=SCALE), EPS,
                          init=(None, coarse.g), max_iter=1, check_every=2)
    return np.asarray(ext.f), coarse.n_iter


def solve(x: np.ndarray, y: np.ndarray, f0: np.ndarray) -> Any:
    """The measured solve: ``ITERATIONS`` online Sinkhorn iterations from ``(f0, None)``."""
    import otcore as oc

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", oc.ConvergenceWarning)
        return oc.sinkhorn(None, None, oc.PointCloud(x, y, scale=SCALE), EPS,
                           init=(f0, None), max_iter=ITERATIONS, check_every=ITERATIONS + 1)


# --------------------------------------------------------------------------- measured in children


def measure(n: int, solve_repeats: int, projection_repeats: int,
            save: str | None = None) -> dict:
    """Child process (:func:`run_isolated`): warm start, solve and projection at ``n = m``.

    Returns the timings (seconds), the L1 marginal error of the solve, the resident memory
    after imports, images and JIT warm-up (``baseline_rss_mb``) and the peak resident
    memory of each block; up to ``REFERENCE_MAX_N``, the mean and largest absolute
    difference to the projection of the converged plan (L1 error ``REFERENCE_TOL``). With
    ``save``, the projection is written there (``.npy``) after
    the measurements.
    """
    x, y, _ = colour_clouds(n)
    f0, _ = warm_start(x[:64], y[:64])  # JIT warm-up of every kernel measured below
    solve(x[:64], y[:64], f0).barycentric_projection()

    with track_peak_rss() as warm_mem:
        t0 = time.perf_counter()
        f0, coarse_iterations = warm_start(x, y)
        warm_seconds = time.perf_counter() - t0

    solve_times = []
    with track_peak_rss() as solve_mem:
        for _ in range(solve_repeats):
            t0 = time.perf_counter()
            res = solve(x, y, f0)
            solve_times.append(time.perf_counter() - t0)

    projection_times = []
    with track_peak_rss() as proj_mem:
        for _ in range(projection_repeats):
            t0 = time.perf_counter()
            proj = res.barycentric_projection()
            projection_times.append(time.perf_counter() - t0)

    reference = {}
    if n <= REFERENCE_MAX_N:  # after the measurements: the converged plan's projection
        import otcore as oc

        ref = oc.sinkhorn(None, None, oc.PointCloud(x, y, scale=SCALE), EPS,
                          tol=REFERENCE_TOL, eps_scaling=0.5).barycentric_projection()
        reference = {"vs_converged_mean": float(np.abs(proj - ref).mean()),
                     "vs_converged_max": float(np.abs(proj - ref).max())}
    if save:
        np.save(save, proj)
    return {
        **reference,
        "n": n,
        "baseline_rss_mb": warm_mem["rss_before_mb"],
        "warm_start_seconds": warm_seconds,
        "coarse_iterations": coarse_iterations,
        "warm_start_peak_rss_mb": warm_mem["peak_rss_mb"],
        "solve_seconds": solve_times,
        "iterations": res.n_iter,
        "marginal_error": res.marginal_error,
        "solve_peak_rss_mb": solve_mem["peak_rss_mb"],
        "projection_seconds": projection_times,
        "projection_rss_before_mb": proj_mem["rss_before_mb"],
        "projection_peak_rss_mb": proj_mem["peak_rss_mb"],
    }


# --------------------------------------------------------------------------- check


def check_projection(n: int = CHECK_N) -> dict[str, float]:
    """Relative difference between the online projections and the dense-plan formulas.

    ``max |T - T_ref| / max |T_ref|`` for ``axis=1`` (``T_ref = (P @ y) / P.sum(1)``) and
    ``axis=0`` (``(P.T @ x) / P.sum(0)``), on the benchmark's pipeline at ``n = m``.
    Raises ``AssertionError`` above ``CHECK_RTOL``.
    """
    x, y, _ = colour_clouds(n)
    f0, _ = warm_start(x, y)
    res = solve(x, y, f0)
    P = np.asarray(res.plan)
    out = {}
    for axis, proj, ref in [
        (1, res.barycentric_projection(), (P @ y) / P.sum(axis=1)[:, None]),
        (0, res.barycentric_projection(axis=0), (P.T @ x) / P.sum(axis=0)[:, None]),
    ]:
        out[f"axis={axis}"] = rel = float(np.abs(proj - ref).max() / np.abs(ref).max())
        assert rel <= CHECK_RTOL, f"barycentric projection, axis={axis}: relative error {rel}"
    return out


# --------------------------------------------------------------------------- report


def _progress(message: str) -> None:
    print(f"[bench.{NAME}] {message}", file=sys.stderr, flush=True)


def _peak(r: dict) -> float:
    """Peak resident memory of the child over its life, in MiB."""
    return r["process_peak_rss_mb"]


def _runs(samples: list[float]) -> str:
    return f"{len(samples)} run{'s' if len(samples) > 1 else ''}"


def table(rows: list[dict]) -> str:
    """Markdown table, one row per size."""
    return markdown_table(
        ["n = m", "warm start (n/10 solve + extension)", "solve from warm start",
         "L1 marginal error", "projection", "vs converged (mean / max)", "RSS after imports",
         "peak RSS, solve", "peak RSS, projection", "peak RSS, process",
         "increase over baseline", "dense n x m plan"],
        [[f"{r['n']:,}",
          f"{r['warm_start_seconds']:.3g} s ({r['coarse_iterations']} its)",
          f"{Timing.of(r['solve_seconds']).format()} ({r['iterations']} its, "
          f"{_runs(r['solve_seconds'])})",
          f"{r['marginal_error']:.2e}",
          f"{Timing.of(r['projection_seconds']).format()} "
          f"({_runs(r['projection_seconds'])})",
          (f"{r['vs_converged_mean']:.1e} / {r['vs_converged_max']:.1e}"
           if "vs_converged_mean" in r else "not computed"),
          f"{r['baseline_rss_mb']:.0f} MiB",
          f"{r['solve_peak_rss_mb']:.0f} MiB",
          f"{r['projection_peak_rss_mb']:.0f} MiB",
          f"{_peak(r):.0f} MiB ({_peak(r) * 2**20 / 1e9:.3g} GB)",
          f"+{_peak(r) - r['baseline_rss_mb']:.0f} MiB",
          f"{8 * r['n'] ** 2 / 1e9:.3g} GB"]
         for r in rows])


def verdict(rows: list[dict]) -> str:
    """Whether the 1 GB target holds at the largest size."""
    r = max(rows, key=lambda r: r["n"])
    peak_bytes = _peak(r) * 2**20
    if r["n"] < 100_000:
        holds = f"not measured by this run (largest n = {r['n']:,})"
    else:
        holds = "holds" if peak_bytes < TARGET_BYTES else "does NOT hold"
    return (f"**Target (peak memory under 1 GB at n = m = 1e5): {holds}.** At n = m = "
            f"{r['n']:,} the whole process peaked at {_peak(r):.0f} MiB "
            f"({peak_bytes / 1e9:.3g} GB), JIT compilation, images and solve included; the "
            f"projection itself raised the resident memory from "
            f"{r['projection_rss_before_mb']:.0f} MiB to {r['projection_peak_rss_mb']:.0f} "
            f"MiB, while a dense plan would take {8 * r['n'] ** 2 / 1e9:.3g} GB.")


def method() -> str:
    return f"""\
**Problem.** Colour clouds: `n` pixels of `china.jpg` (source) and `n` of `flower.jpg`
(target) from `sklearn.datasets.load_sample_images()`, RGB / 255, drawn without
replacement by `numpy.random.default_rng({SEED})`; uniform weights; online cost
`|x - y|^2 / {SCALE:g}` (`otcore.PointCloud(x, y, scale={SCALE:g})`, {SCALE:g} being the
squared diagonal of the unit cube), eps = {EPS:g}, float64. Every size runs in a fresh
Python process.

**Warm start** (timed apart). Sinkhorn on the first n/{COARSE_FRACTION} sampled pixels to
an L1 marginal error of {COARSE_TOL:g} (`eps_scaling=0.5`); its column potential is extended
to all n source pixels by one row update of the n x n/{COARSE_FRACTION} cloud. From zero
potentials, Sinkhorn needs 50 to 80 iterations at this eps. *vs converged*: up to
n = {REFERENCE_MAX_N:,}, after the measurements, the mean and largest absolute difference
(RGB in [0, 1]) between the measured projection and that of a plan converged to an L1
error of {REFERENCE_TOL:g}; at n = 1e5 converging takes too long for this benchmark.

**Solve.** `otcore.sinkhorn(None, None, PointCloud(x, y, scale={SCALE:g}), {EPS:g},
init=(f0, None), max_iter={ITERATIONS})`, its `ConvergenceWarning` silenced: the column
update from `f0`, {ITERATIONS} iterations and the finisher's pass (exact marginals and
cost). The L1 marginal error column is the exact error of the returned plan.

**Projection.** `res.barycentric_projection()`: `sum_j P_ij y_j / sum_j P_ij` for every
source pixel, one pass over the cost, `O((n + m) d)` memory.

**Timing.** Wall clock, median of the runs with the fastest and slowest in brackets (one
solve at n = 1e5: a run takes minutes). The machine is shared with other jobs.

**Memory.** Resident set size (`/proc/self/status`). *RSS after imports*: after the
imports, the images and a JIT warm-up on 64 points, before the warm start (the baseline).
*Peak RSS, solve / projection*: the peak during that block (the kernel's high-water mark
is reset when the block starts; the resident baseline is included). *Peak RSS, process*:
the process's peak over its whole life; *increase*: that peak minus the baseline. *Dense
n x m plan*: `8 n m` bytes, what materializing the plan in float64 would take. Linux
keeps these counters per thread and syncs them lazily, so they are accurate to about a
MiB (the columns may disagree by that much).

**Correctness.** At n = m = {CHECK_N} (same pipeline), the online
projection is compared with `(P @ y) / P.sum(1)` from the dense `res.plan`, and the
`axis=0` projection with `(P.T @ x) / P.sum(0)`: `max |T - T_ref| / max |T_ref|` must be
at most {CHECK_RTOL:g}."""


def picture_note(n: int) -> str:
    return f"""\
**Picture.** Top: source and target images. Bottom left: the {n:,} sampled source pixels
at their positions, each replaced by its barycentric projection (the other pixels are
white). Bottom right: the whole source image recoloured: every pixel takes the
displacement `T(x_k) - x_k` of the sampled pixel `k` nearest to it in RGB (a k-d tree
query), clipped to [0, 1]. A pixel whose colour was sampled gets exactly its
barycentric projection (the projection depends only on the colour); the others, within a
few 1/255 of a sampled colour, move with their nearest sampled neighbour. Entropic
blurring (eps = {EPS:g} is a blur of about `sqrt(eps * {SCALE:g})` = {np.sqrt(EPS * SCALE):.2f}
in RGB) slightly greys the transferred colours. The squares visible in the sky are the
8 x 8 blocks of the source JPEG: their small colour steps are amplified where the map is
steep, between the teal and the orange parts of the target palette."""


def recolour(n: int, projection: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The sampled pixels recoloured (others white), and the full image recoloured through
    the nearest sampled colour (see :func:`picture_note`)."""
    from scipy.spatial import cKDTree

    source, _ = sample_images()
    x, _, index = colour_clouds(n)
    pixels = source.reshape(-1, 3)
    sampled = np.ones_like(pixels)
    sampled[index] = projection
    _, nearest = cKDTree(x).query(pixels)
    full = np.clip(pixels + projection[nearest] - x[nearest], 0.0, 1.0)
    return sampled.reshape(source.shape), full.reshape(source.shape)


def plot(n: int, projection: np.ndarray, path: Path) -> None:
    """PNG: source, target, sampled pixels recoloured, whole image recoloured."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    source, target = sample_images()
    sampled, full = recolour(n, projection)
    fig, axes = plt.subplots(2, 2, figsize=(11, 7.6), layout="constrained")
    for ax, img, title in zip(axes.flat, [source, target, sampled, full], [
        "source (china.jpg)", "target (flower.jpg)",
        f"{n:,} sampled pixels, barycentric projection",
        "whole image, via the nearest sampled colour",
    ], strict=True):
        ax.imshow(img)
        ax.set_title(title)
        ax.set_axis_off()
    fig.suptitle(f"Online colour transfer, n = m = {n:,}, eps = {EPS:g}")
    fig.savefig(path, dpi=90)
    plt.close(fig)


def report(rows: list[dict], check: dict[str, float], total: float, note: str | None) -> str:
    """The result file (markdown)."""
    info = machine_info(PACKAGES)
    machine = "\n".join(f"- {k}: {v}" for k, v in info.items())
    checks = ", ".join(f"{k}: {v:.1e}" for k, v in check.items())
    largest = max(r["n"] for r in rows)
    header = [f"# Online barycentric projection (colour transfer)\n\n"
              f"Command: `{command_line(f'bench.{NAME}')}`"]
    if note:
        header.append(f"**Note:** {note}")
    return "\n\n".join([
        *header, "## Machine", machine, "## Method", method(),
        "## Results", verdict(rows), table(rows),
        f"Correctness at n = m = {CHECK_N}, relative difference to the dense-plan formulas: "
        f"{checks} (tolerance {CHECK_RTOL:g}).",
        f"Total wall time of the run: {total / 60:.1f} min.",
        "## Colour transfer", picture_note(largest), f"![colour transfer]({NAME}.png)",
    ]) + "\n"


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point: ``python -m bench.barycentric [--quick] [--note ...]``."""
    parser = argparse.ArgumentParser(prog=f"python -m bench.{NAME}",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="n = m = 1e4 only (~1 minute)")
    parser.add_argument("--note", help="a remark printed with the results")
    args = parser.parse_args(argv)
    settings = QUICK if args.quick else FULL
    # GNU OpenMP spins between parallel regions by default; on a shared machine that makes
    # kernel launches wait for descheduled threads. The children inherit this.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

    start = time.perf_counter()
    check = check_projection()
    _progress("projection matches the dense plan: "
              + ", ".join(f"{k} {v:.1e}" for k, v in check.items()))
    rows = []
    largest = max(settings.sizes)
    with tempfile.TemporaryDirectory() as tmp:
        saved = Path(tmp) / "projection.npy"
        for n in settings.sizes:
            solve_repeats, projection_repeats = settings.repeats[n]
            r = run_isolated(f"bench.{NAME}:measure", n=n, solve_repeats=solve_repeats,
                             projection_repeats=projection_repeats,
                             save=str(saved) if n == largest else None)
            rows.append(r)
            _progress(f"n={n:,}: solve {Timing.of(r['solve_seconds']).format()}, projection "
                      f"{Timing.of(r['projection_seconds']).format()}, process peak "
                      f"{_peak(r):.0f} MiB (baseline {r['baseline_rss_mb']:.0f} MiB)")
        projection = np.load(saved)
    plot(largest, projection, RESULTS_DIR / f"{NAME}.png")
    doc = report(rows, check, time.perf_counter() - start, args.note)
    write_text(RESULTS_DIR / f"{NAME}.md", doc)
    print(table(rows))
    print(verdict(rows))
    _progress(f"wrote bench/results/{NAME}.md and bench/results/{NAME}.png")


if __name__ == "__main__":
    main()
