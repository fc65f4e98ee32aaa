"""Sinkhorn on a CUDA GPU: otcore's CuPy backend in pairs per second per iteration.

Run from the repository root on a machine with a CUDA GPU and CuPy
(``pip install -e ".[cuda12]"``)::

    python bench/gpu.py            # dense n = m in {1e4, 2e4}, online n = m in {1e5, 1e6}
    python bench/gpu.py --quick    # dense n = m = 1e4 and online n = m = 1e5 only

Problems: two 3-D Gaussian clouds with different means, uniform weights, float32.

* dense: the squared-Euclidean cost matrix divided by its maximum, ``eps = 1e-2``;
* online: ``otcore.PointCloud(x, y, scale=s)`` with ``s`` the squared diagonal of the
  bounding box of both clouds (the cost is computed on the fly), ``eps = 1e-2``.

One iteration updates both potentials once (a row and a column softmin: two passes over
the ``n m`` pairs). The time per iteration is the slope between two runs of
``otcore.sinkhorn`` with a fixed number of iterations (convergence checked once, at the
end), so set-up, validation and the final plan statistics cancel out; the kernels alone
(two softmin calls) are timed the same way. Reported as ``n m / time`` (pairs per second
per iteration), next to the device's limits:

* dense float32 reads 2 x 4 bytes per pair and iteration, so the limit is the memory
  bandwidth / 8, with the bandwidth both nominal (memory clock x bus width) and measured
  (a device-to-device copy);
* online, every pair costs two exponentials per iteration; the special-function units do
  16 per cycle per multiprocessor, so the limit is ``SMs x 16 x clock / 2``.

For an H100 SXM these are about 3.75e11 pairs/s (dense float32) and 1.95e12 pairs/s
(online, d <= 3); the targets are 50% and 25% of them. POT's log-domain Sinkhorn on its
CuPy backend runs the dense cases when POT is importable.

Results are printed and written to ``bench/results/gpu.md`` (``--out`` to change) with a
bar chart ``gpu.png`` beside it (``--replot`` redraws it from the table, without a GPU).
Without CuPy or without a CUDA device the script says so and exits with status 1.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from a source checkout
    sys.path.insert(0, str(ROOT))

import otcore as oc  # noqa: E402

EPS = 1e-2
DENSE_SIZES = (10_000, 20_000)
ONLINE_SIZES = (100_000, 1_000_000)
#: Nominal H100 SXM limits quoted by the design: dense float32, online d <= 3.
H100_DENSE, H100_ONLINE = 3.75e11, 1.95e12
TARGET_DENSE, TARGET_ONLINE = 0.5, 0.25


def require_gpu() -> Any:
    """Import CuPy and check for a CUDA device; exit with a message otherwise."""
    try:
        import cupy
    except ImportError:
        sys.exit("bench/gpu.py needs CuPy and a CUDA GPU: CuPy is not installed "
                 "(pip install 'otcore[cuda12]').")
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # no driver, or no device
        sys.exit(f"bench/gpu.py needs a CUDA GPU: {exc}")
    if count == 0:
        sys.exit("bench/gpu.py needs a CUDA GPU: none found.")
    return cupy


def device_limits(cp: Any) -> dict:
    """Name, multiprocessors, clocks, nominal and measured memory bandwidth of device 0."""
    rt = cp.cuda.runtime
    dev = cp.cuda.Device().id

    def attr(name: str, number: int) -> int | None:
        try:
            return int(rt.deviceGetAttribute(getattr(rt, name, number), dev))
        except Exception:  # attribute unknown to this CUDA version
            return None

    sms = attr("cudaDevAttrMultiProcessorCount", 16)
    clock_khz = attr("cudaDevAttrClockRate", 13)
    mem_khz = attr("cudaDevAttrMemoryClockRate", 36)
    bus_bits = attr("cudaDevAttrGlobalMemoryBusWidth", 37)
    name = rt.getDeviceProperties(dev)["name"]
    nominal_bw = 2 * mem_khz * 1e3 * bus_bits / 8 if mem_khz and bus_bits else None
    # measured: copy 1 GiB device to device (read + write)
    src = cp.ones(2**28, dtype=cp.float32)
    dst = cp.empty_like(src)

    def copies(k: int) -> None:
        for _ in range(k):
            dst[...] = src

    measured_bw = 2 * src.nbytes / _slope(copies, cp, 2, 12)
    exp_limit = sms * 16 * clock_khz * 1e3 / 2 if sms and clock_khz else None
    return {"name": name.decode() if isinstance(name, bytes) else str(name), "sms": sms,
            "clock_mhz": clock_khz / 1e3 if clock_khz else None,
            "nominal_bw": nominal_bw, "measured_bw": measured_bw, "exp_limit": exp_limit}


def _slope(run: Callable[[int], Any], cp: Any, k1: int, k2: int, repeats: int = 3) -> float:
    """Seconds per unit of ``run(k)``: the median slope between ``k1`` and ``k2`` units."""

    def timed(k: int) -> float:
        cp.cuda.Device().synchronize()
        t0 = time.perf_counter()
        run(k)
        cp.cuda.Device().synchronize()
        return time.perf_counter() - t0

    run(k1)  # warm-up: compilation, memory pool
    slopes = [(timed(k2) - timed(k1)) / (k2 - k1) for _ in range(repeats)]
    return float(np.median(slopes))


def clouds(cp: Any, n: int, seed: int = 0) -> tuple[Any, Any]:
    """Two 3-D float32 Gaussian clouds of ``n`` points with means 0 and 1, on the GPU."""
    rng = cp.random.default_rng(seed)
    x = rng.standard_normal((n, 3), dtype=cp.float32)
    y = rng.standard_normal((n, 3), dtype=cp.float32) + 1.0
    return x, y


def dense_cost(cp: Any, x: Any, y: Any) -> Any:
    """Squared-Euclidean cost matrix divided by its maximum (float32, on the GPU)."""
    C = (x * x).sum(1)[:, None] + (y * y).sum(1)[None, :] - 2.0 * (x @ y.T)
    cp.maximum(C, 0, out=C)
    C /= C.max()
    return C


def bounding_scale(cp: Any, x: Any, y: Any) -> float:
    """Squared diagonal of the bounding box of both clouds (bounds every squared distance)."""
    both = cp.concatenate([x, y])
    return float(((both.max(0) - both.min(0)) ** 2).sum())


def otcore_rates(cp: Any, cost: Any, n: int, k1: int, k2: int) -> tuple[float, float]:
    """Seconds per iteration of ``otcore.sinkhorn`` and of its two softmin kernels."""
    from otcore.backends.cupy_gpu import CupyBackend

    def solve(k: int) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", oc.ConvergenceWarning)
            oc.sinkhorn(None, None, cost, EPS, tol=1e-30, max_iter=k, check_every=k)

    per_solver = _slope(solve, cp, k1, k2)
    geom = cost if isinstance(cost, oc.PointCloud) else oc.DenseCost(cost)
    ops = CupyBackend().bind(geom)
    f = cp.zeros(n, dtype=cp.float32)
    g = cp.zeros(n, dtype=cp.float32)

    def kernels(k: int) -> None:
        for _ in range(k):
            ops.softmin(f, EPS, 1)
            ops.softmin(g, EPS, 0)

    return per_solver, _slope(kernels, cp, k1, k2)


def pot_rate(cp: Any, C: Any, k1: int, k2: int) -> float | None:
    """Seconds per iteration of POT's log-domain Sinkhorn on CuPy arrays (None without POT)."""
    try:
        import ot
    except ImportError:
        return None
    n, m = C.shape
    a = cp.full(n, 1.0 / n, dtype=cp.float32)
    b = cp.full(m, 1.0 / m, dtype=cp.float32)

    def solve(k: int) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ot.sinkhorn(a, b, C, EPS, method="sinkhorn_log", numItermax=k, stopThr=0.0)

    try:
        return _slope(solve, cp, k1, k2)
    except Exception as exc:  # POT without a CuPy backend, or out of memory
        print(f"POT on CuPy failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return None


def _fmt(rate: float | None) -> str:
    return "—" if rate is None else f"{rate:.3g}"


def _pct(rate: float | None, limit: float | None) -> str:
    return "—" if rate is None or not limit else f"{100 * rate / limit:.0f}%"


def plot(markdown: Path, png: Path) -> None:
    """Bar chart of the results table of ``markdown``: otcore's kernels (and POT on CuPy)
    as a fraction of each problem's limit, with the targets."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [line.strip("|").split("|") for line in markdown.read_text().splitlines()
            if line.startswith("| dense") or line.startswith("| online")]
    labels = [r[0].strip().replace(" float32, ", "\n") for r in rows]

    def value(cell: str) -> float:
        return float("nan") if cell.strip() == "—" else float(cell)

    limit = [value(r[4]) for r in rows]
    ours = [100 * value(r[2]) / lim for r, lim in zip(rows, limit, strict=True)]
    pot = [100 * value(r[3]) / lim for r, lim in zip(rows, limit, strict=True)]
    target = [float(r[7].strip().rstrip("%")) for r in rows]
    x = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.bar(x - 0.2, ours, 0.4, label="otcore kernels")
    ax.bar(x + 0.2, pot, 0.4, label="POT (CuPy backend)")
    ax.scatter(x, target, marker="_", s=900, color="k", label="target", zorder=3)
    ax.set_xticks(x, labels, fontsize=8)
    ax.set_ylabel("% of the limit (bandwidth / exp throughput)")
    ax.set_title("Sinkhorn iterations on the GPU, float32")
    ax.legend(loc="upper right", fontsize=8)
    ax.set_ylim(0, 100)
    fig.tight_layout()
    fig.savefig(png, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="smallest size of each kind")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "gpu.md")
    parser.add_argument("--replot", action="store_true",
                        help="only redraw the PNG from an existing --out table (no GPU)")
    args = parser.parse_args(argv)
    if args.replot:
        plot(args.out, args.out.with_suffix(".png"))
        return 0
    cp = require_gpu()
    lim = device_limits(cp)
    dense_limit = lim["measured_bw"] / 8
    nominal_dense = lim["nominal_bw"] / 8 if lim["nominal_bw"] else None
    dense_sizes = DENSE_SIZES[:1] if args.quick else DENSE_SIZES
    online_sizes = ONLINE_SIZES[:1] if args.quick else ONLINE_SIZES

    rows = []
    for n in dense_sizes:
        x, y = clouds(cp, n)
        C = dense_cost(cp, x, y)
        solver, kernels = otcore_rates(cp, C, n, 5, 25)
        pot = pot_rate(cp, C, 10, 30)
        pairs = float(n) * n
        rows.append([f"dense float32, n = m = {n:.0e}", _fmt(pairs / solver),
                     _fmt(pairs / kernels), _fmt(pairs / pot if pot else None),
                     _fmt(dense_limit), _pct(pairs / kernels, dense_limit),
                     _pct(pairs / kernels, nominal_dense), f"{100 * TARGET_DENSE:.0f}%"])
        del C
        cp.get_default_memory_pool().free_all_blocks()
    for n in online_sizes:
        x, y = clouds(cp, n)
        geom = oc.PointCloud(x, y, scale=bounding_scale(cp, x, y))
        k1, k2 = (2, 6) if n >= 1_000_000 else (5, 25)
        solver, kernels = otcore_rates(cp, geom, n, k1, k2)
        pairs = float(n) * n
        rows.append([f"online d = 3 float32, n = m = {n:.0e}", _fmt(pairs / solver),
                     _fmt(pairs / kernels), "—", _fmt(lim["exp_limit"]),
                     _pct(pairs / kernels, lim["exp_limit"]), "—",
                     f"{100 * TARGET_ONLINE:.0f}%"])

    header = ["problem", "otcore solver (pairs/s/iter)", "otcore kernels (pairs/s/iter)",
              "POT CuPy (pairs/s/iter)", "limit (pairs/s/iter)", "kernels / limit",
              "kernels / nominal limit", "target"]
    table = "\n".join(["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
                      + ["| " + " | ".join(r) + " |" for r in rows])
    nominal = (f"{lim['nominal_bw'] / 1e9:.0f} GB/s nominal, " if lim["nominal_bw"] else "")
    text = (
        f"# Sinkhorn on GPU\n\nDevice: {lim['name']} ({lim['sms']} SMs, "
        f"{lim['clock_mhz']} MHz), memory bandwidth {nominal}"
        f"{lim['measured_bw'] / 1e9:.0f} GB/s measured (device copy). "
        f"Python {platform.python_version()}, CuPy {cp.__version__}, eps = {EPS}.\n\n"
        "Pairs per second per iteration (n m / seconds per iteration; one iteration = a row "
        "and a column softmin). Limits: dense = measured bandwidth / 8 bytes; online = "
        f"SMs x 16 exp/cycle x clock / 2. H100 SXM reference: {H100_DENSE:.3g} (dense "
        f"float32), {H100_ONLINE:.3g} (online).\n\n{table}\n\n"
        f"Command: `python bench/gpu.py{' --quick' if args.quick else ''}`\n"
    )
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    plot(args.out, args.out.with_suffix(".png"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
