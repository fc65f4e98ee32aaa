"""Batches on the GPU: the rate of one call on B = 4096 problems of n = m = 256, against
one large problem and against a loop over the same small problems.

Run from the repository root on a machine with a CUDA GPU and CuPy::

    python -m bench.batch_gpu            # B = 4096, n = m = 256
    python -m bench.batch_gpu --quick    # B = 512

**Rates** are pairs per second per iteration: ``B n m`` over the seconds of one
iteration (a row and a column softmin of every problem), as in ``bench/gpu.py``. Each is
the median slope of the time between ``k1`` and ``k2`` iterations, so that set-up and the
final plan statistics drop out. "solver" times ``oc.sinkhorn`` on the batch (every
problem active: ``tol`` is out of reach); "kernels" times the two batch softmins alone.

**Cases** (float32, eps = 1e-2, costs normalized to max 1; clouds are 3-D Gaussians with
means 0 and 1):

* ``stacked dense costs``: ``C`` of shape ``(B, n, m)`` (one launch per half-step, a warp
  per problem and row);
* ``stacked point clouds``: ``PointCloud(x (B, n, 3), y (B, m, 3))`` (a thread per
  problem and point, costs evaluated on the fly);
* ``shared cost``: one ``(n, m)`` cost with ``(B, n)`` and ``(B, m)`` weights;
* ``loop``: ``oc.sinkhorn`` on one ``(n, m)`` problem at a time (the rate of a loop over
  the batch);
* ``one large problem``: a dense ``n = m = 10^4`` problem, the single-problem figure of
  ``bench/results/gpu.md`` measured again on the same device.

The end-to-end column solves the whole batch to an L1 marginal error of ``1e-4`` per
problem (float32) and reports its time, the median and largest iteration counts and how
many problems converged.

Results are printed and written to ``bench/results/batch_gpu.md`` (``--out`` to change).
"""

from __future__ import annotations

import argparse
import platform
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

import otcore as oc

from .gpu import ROOT, _slope, device_limits, otcore_rates, require_gpu

EPS = 1e-2
N = 256
TOL = 1e-4
#: The size of the single large problem measured for comparison.
BIG = 10_000


def _rate(pairs: float, seconds: float) -> str:
    return f"{pairs / seconds:.3g}"


def stacked_clouds(cp: Any, B: int, n: int, seed: int = 0) -> tuple[Any, Any]:
    """``B`` pairs of 3-D float32 Gaussian clouds of ``n`` points (means 0 and 1)."""
    rng = cp.random.default_rng(seed)
    x = rng.standard_normal((B, n, 3), dtype=cp.float32)
    y = rng.standard_normal((B, n, 3), dtype=cp.float32) + 1.0
    return x, y


def stacked_costs(cp: Any, x: Any, y: Any) -> Any:
    """Squared-Euclidean costs of each pair of clouds, divided by the largest entry."""
    C = ((x * x).sum(2)[:, :, None] + (y * y).sum(2)[:, None, :]
         - 2.0 * cp.matmul(x, y.transpose(0, 2, 1)))
    cp.maximum(C, 0, out=C)
    C /= C.max()
    return C


def batch_rates(cp: Any, a: Any, b: Any, cost: Any, k1: int, k2: int) -> tuple[float, float]:
    """Seconds per iteration of ``oc.sinkhorn`` on the batch and of its two softmins."""
    from otcore.backends.cupy_gpu import CupyBackend
    from otcore.collection import as_batch

    def solve(k: int) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", oc.ConvergenceWarning)
            oc.sinkhorn(a, b, cost, EPS, tol=1e-30, max_iter=k, check_every=k)

    per_solver = _slope(solve, cp, k1, k2)
    bt = as_batch(a, b, cost)
    ops = CupyBackend().bind_batch(bt)
    active = np.arange(bt.size, dtype=np.int64)
    n, m = bt.shape
    f = cp.zeros((bt.size, n), dtype=bt.dtype)
    g = cp.zeros((bt.size, m), dtype=bt.dtype)

    def kernels(k: int) -> None:
        for _ in range(k):
            ops.softmin(g, EPS, 1, active, f)
            ops.softmin(f, EPS, 0, active, g)

    return per_solver, _slope(kernels, cp, k1, k2)


def end_to_end(cp: Any, a: Any, b: Any, cost: Any) -> str:
    """Time, iterations and converged count of the batch solved to ``TOL``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", oc.ConvergenceWarning)
        oc.sinkhorn(a, b, cost, EPS, tol=TOL, max_iter=3000)  # warm-up
        cp.cuda.Device().synchronize()
        t0 = time.perf_counter()
        res = oc.sinkhorn(a, b, cost, EPS, tol=TOL, max_iter=3000)
        cp.cuda.Device().synchronize()
        seconds = time.perf_counter() - t0
    its = np.asarray(res.n_iter)
    conv = np.asarray(res.converged)
    err = float(np.max(cp.asnumpy(res.marginal_error)))
    return (f"{seconds:.3g} s, its {int(np.median(its))} / {int(its.max())}, "
            f"{int(conv.sum())}/{conv.size} converged, max L1 {err:.1e}")


def loop_rate(cp: Any, C: Any, k1: int, k2: int) -> float:
    """Seconds per iteration of ``oc.sinkhorn`` on one ``(n, m)`` problem."""
    def solve(k: int) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", oc.ConvergenceWarning)
            oc.sinkhorn(None, None, C, EPS, tol=1e-30, max_iter=k, check_every=k)

    return _slope(solve, cp, k1, k2)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="B = 512 instead of 4096")
    parser.add_argument("--out", type=Path,
                        default=ROOT / "bench" / "results" / "batch_gpu.md")
    args = parser.parse_args(argv)
    cp = require_gpu()
    lim = device_limits(cp)
    B = 512 if args.quick else 4096
    pairs = float(B) * N * N
    x, y = stacked_clouds(cp, B, N)
    C = stacked_costs(cp, x, y)
    rng = cp.random.default_rng(1)
    A = rng.random((B, N), dtype=cp.float32) + 0.1
    A /= A.sum(1, keepdims=True)
    Bw = rng.random((B, N), dtype=cp.float32) + 0.1
    Bw /= Bw.sum(1, keepdims=True)
    cloud = oc.PointCloud(x, y, scale=_bound(cp, x, y))
    cases = [("stacked dense costs", None, None, C),
             ("stacked point clouds, d = 3", None, None, cloud),
             ("shared cost, many histograms", A, Bw, C[0])]
    rows = []
    for name, a, b, cost in cases:
        solver, kernels = batch_rates(cp, a, b, cost, 5, 25)
        rows.append([f"{name}, B = {B}", _rate(pairs, solver), _rate(pairs, kernels),
                     end_to_end(cp, a, b, cost)])
        print(rows[-1], flush=True)
    single = loop_rate(cp, C[0], 5, 25)
    rows.append([f"loop over the problems, one call each (n = m = {N})",
                 _rate(N * N, single), "—", "—"])
    big = BIG
    xb, yb = stacked_clouds(cp, 1, big, seed=2)
    Cb = stacked_costs(cp, xb, yb)[0]
    solver_big, kernels_big = otcore_rates(cp, Cb, big, 5, 25)
    rows.append([f"one large problem, dense n = m = {big:.0e}", _rate(big * big, solver_big),
                 _rate(big * big, kernels_big), "—"])
    header = ["problem (float32)", "solver (pairs/s/iter)", "kernels (pairs/s/iter)",
              f"end to end, tol {TOL:g}"]
    table = "\n".join(["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
                      + ["| " + " | ".join(r) + " |" for r in rows])
    text = (
        f"# Batches on the GPU\n\nDevice: {lim['name']} ({lim['sms']} SMs), memory "
        f"bandwidth {lim['measured_bw'] / 1e9:.0f} GB/s measured (device copy). Python "
        f"{platform.python_version()}, CuPy {cp.__version__}, eps = {EPS}, "
        f"n = m = {N}.\n\nPairs per second per iteration (B n m / seconds per iteration; "
        "see the module docstring of `bench/batch_gpu.py`). Dense float32 limit at the "
        f"measured bandwidth: {lim['measured_bw'] / 8:.3g} pairs/s/iter.\n\n{table}\n\n"
        f"Command: `python -m bench.batch_gpu{' --quick' if args.quick else ''}`\n"
    )
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    return 0


def _bound(cp: Any, x: Any, y: Any) -> float:
    """Squared diagonal of the bounding box of all clouds (bounds every squared distance)."""
    both = cp.concatenate([x.reshape(-1, 3), y.reshape(-1, 3)])
    return float(((both.max(0) - both.min(0)) ** 2).sum())


if __name__ == "__main__":
    raise SystemExit(main())
