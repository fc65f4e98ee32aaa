"""Many problems at once: otcore's batches against POT and against a loop of otcore calls.

Run from the repository root::

    python -m bench.batch            # all cases (a few minutes)
    python -m bench.batch --quick    # smaller collections, fewer repeats
    python -m bench.batch --digits   # only the digits against one, printed

**Cases** (float64, eps absolute, every cost normalized to max 1):

* ``digits, shared cost``: 1000 scikit-learn digit histograms (8 x 8 images, ``+ 1e-3``,
  normalized) against one, on the 64-bin grid with the squared-distance cost, ``eps =
  1e-2``. otcore: ``oc.sinkhorn(a, H, M, eps)`` (many histograms on one cost: the
  matrix-product iteration); POT: ``ot.sinkhorn2(a, H.T, M, eps)`` (its many-targets
  form, scaling iterations) and the same with ``method="sinkhorn_log"``.
* ``500 problems 64 x 64``: independent problems with their own costs (2-D Gaussian
  clouds), ``eps = 5e-2`` (at ``1e-2`` some of these small problems need more than
  10000 iterations). otcore: ``oc.sinkhorn(None, None, C_stack, eps)`` (the Numba
  batch kernel); POT: ``ot.batch.solve_batch(M=C_stack, reg=eps, method=...)`` with the
  log-domain and the scaling Sinkhorn.
* ``5000 problems 8 x 8``: the same with tiny problems, where a loop is all overhead.
* ``pdist digits``: the condensed matrix of Sinkhorn costs ``<C, P>`` between 200 (100
  with ``--quick``) digit histograms, ``eps = 1e-2``: ``oc.pdist(H, C=M, eps=eps,
  metric="sinkhorn_cost")`` against POT's ``ot.sinkhorn2(H[i], H[i+1:].T, M, eps)`` row
  by row.

Every solver stops at an L1 marginal error of 1e-9 by its own criterion (otcore: per
problem; POT: ``stopThr``/``tol`` 1e-9 on its own error). The accuracy column reports,
for every solver, the largest L1 marginal error over the problems, recomputed by this
script from the potentials, scalings or plans it returned (POT's ``solve_batch``
returns plans; ``sinkhorn2`` with ``log=True`` its scalings ``u``, ``v``; its rows also
give the largest difference of its values from otcore's). ``loop`` is one
``oc.sinkhorn`` call per problem. Times are medians of repeats with the spread in
brackets; ratios are of medians, measured in the same run. For the digits, otcore and
POT's ``sinkhorn2`` take turns, 9 repeats each.

Results are printed and written to ``bench/results/batch.md`` and ``batch.png``.
``--full`` runs only the Sinkhorn-divergence matrix of all 1797 digits, in-process and on
a local Dask cluster of two worker processes, against POT's ``sinkhorn2`` called once per
pair (timed on 300 random pairs and extrapolated), and appends it to ``batch.md``.
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
    machine_info,
    markdown_table,
    time_repeats,
    write_text,
)

EPS = 1e-2
EPS_STACKED = 5e-2
TOL = 1e-9


@dataclass
class Row:
    case: str
    solver: str
    timing: Timing
    accuracy: str


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def digits() -> tuple[np.ndarray, np.ndarray]:
    """Digit histograms ``(1797, 64)`` and the grid's squared-distance cost (max 1)."""
    from sklearn.datasets import load_digits

    H = load_digits().data + 1e-3
    H /= H.sum(axis=1, keepdims=True)
    g = np.stack(np.meshgrid(np.arange(8), np.arange(8), indexing="ij"), -1).reshape(-1, 2)
    M = ((g[:, None, :] - g[None, :, :]) ** 2).sum(-1).astype(float)
    return H, M / M.max()


def plan_error(P: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """Largest L1 marginal error of stacked plans ``(B, n, m)``."""
    return float((np.abs(P.sum(2) - a).sum(1) + np.abs(P.sum(1) - b).sum(1)).max())


def potential_error(C: np.ndarray, a: np.ndarray, b: np.ndarray, f: np.ndarray,
                    g: np.ndarray, eps: float = EPS) -> float:
    """Largest L1 marginal error of the plans ``a b exp((f + g - C) / eps)``."""
    P = a[..., :, None] * b[..., None, :] * np.exp((f[..., :, None] + g[..., None, :] - C)
                                                   / eps)
    P = P if P.ndim == 3 else P[None]
    return plan_error(P, np.broadcast_to(a, P.shape[:2]), np.broadcast_to(b, (P.shape[0],
                                                                                P.shape[2])))


def _time(fn: Callable[[], Any], repeats: int) -> tuple[Timing, Any]:
    out = fn()  # warm-up (compilation), and the result that is checked
    return time_repeats(fn, repeats=repeats, warmup=0), out


def _interleaved(fns: list[Callable[[], Any]], repeats: int) -> list[tuple[Timing, Any]]:
    """Time each of ``fns`` ``repeats`` times, taking turns (a load on the machine hits
    all of them alike), after one untimed call each (compilation; its result is
    returned)."""
    out = [fn() for fn in fns]
    samples: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, times in zip(fns, samples, strict=True):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return [(Timing.of(times), o) for times, o in zip(samples, out, strict=True)]


def _pot_error(log: dict, M: np.ndarray, a: np.ndarray, T: np.ndarray) -> float:
    """Largest L1 marginal error of the plans of POT's ``sinkhorn2`` (many targets), from
    the scalings ``u``, ``v`` (or their logarithms) of its log."""
    if "log_u" in log:
        logP = log["log_u"].T[:, :, None] + log["log_v"].T[:, None, :] - M / EPS
        P = np.exp(logP)
    else:
        P = log["u"].T[:, :, None] * np.exp(-M / EPS) * log["v"].T[:, None, :]
    return plan_error(P, np.broadcast_to(a, (len(T), len(a))), T)


def case_digits(repeats: int, count: int) -> list[Row]:
    """The digits against one (the POT runs take turns with otcore's); the log-domain
    POT variant, which takes minutes, runs once."""
    import ot

    import otcore as oc

    H, M = digits()
    a, T = H[0], H[1:count + 1]
    name = f"digits, shared cost ({count} x 64 x 64)"
    _progress(name)

    def pot(method: str) -> tuple[np.ndarray, dict]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return ot.sinkhorn2(a, T.T, M, EPS, method=method, stopThr=TOL,
                                numItermax=100_000, log=True)

    (t, res), (t_pot, (v, log)) = _interleaved(
        [lambda: oc.sinkhorn(a, T, M, EPS, tol=TOL), lambda: pot("sinkhorn")], repeats)
    rows = [Row(name, f"otcore batch ({res.extra['path']})", t,
                f"{potential_error(M, a, T, res.f, res.g):.1e} ({res.n_iter.mean():.0f} "
                f"iterations on average, {res.n_iter.max()} at most)")]
    t, _ = _time(lambda: [oc.sinkhorn(a, h, M, EPS, tol=TOL) for h in T], 1)
    rows.append(Row(name, "otcore loop", t, "same"))
    rows.append(Row(name, "POT sinkhorn2 (sinkhorn)", t_pot,
                    f"{_pot_error(log, M, a, T):.1e} ({log['niter']} iterations; values "
                    f"differ from otcore's by {np.abs(v - res.cost).max():.1e})"))
    t0 = time.perf_counter()
    v, log = pot("sinkhorn_log")
    rows.append(Row(name, "POT sinkhorn2 (sinkhorn_log)", Timing.of([time.perf_counter() - t0]),
                    f"{_pot_error(log, M, a, T):.1e} (values differ from otcore's by "
                    f"{np.abs(v - res.cost).max():.1e})"))
    return rows


def _stacked(count: int, n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(count, n, 2))
    y = rng.normal(size=(count, n, 2)) + 1.0
    C = ((x[:, :, None, :] - y[:, None, :, :]) ** 2).sum(-1)
    return C / C.max(axis=(1, 2), keepdims=True)


def case_stacked(repeats: int, count: int, n: int, loop_repeats: int) -> list[Row]:
    import ot
    import ot.batch

    import otcore as oc

    C = _stacked(count, n)
    u = np.full((count, n), 1.0 / n)
    name = f"{count} problems {n} x {n}"
    _progress(name)
    rows = []
    eps = EPS_STACKED
    t, res = _time(lambda: oc.sinkhorn(None, None, C, eps, tol=TOL), repeats)
    rows.append(Row(name, "otcore batch", t,
                    f"{potential_error(C, u, u, res.f, res.g, eps):.1e}"))
    t, _ = _time(lambda: [oc.sinkhorn(None, None, c, eps, tol=TOL) for c in C], loop_repeats)
    rows.append(Row(name, "otcore loop", t, "same"))
    for method in ("log_sinkhorn", "sinkhorn"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t, out = _time(lambda m=method: ot.batch.solve_batch(
                M=C, reg=eps, a=u, b=u, method=m, tol=TOL, max_iter=100_000), 1)
        rows.append(Row(name, f"POT solve_batch ({method})", t,
                        f"{plan_error(np.asarray(out.plan), u, u):.1e}"))
    return rows


def case_pdist(repeats: int, count: int) -> list[Row]:
    import ot

    import otcore as oc

    H, M = digits()
    H = H[:count]
    name = f"pdist digits ({count * (count - 1) // 2} pairs)"
    _progress(name)
    rows = []
    t, d = _time(lambda: oc.pdist(H, C=M, eps=EPS, metric="sinkhorn_cost", tol=TOL),
                 repeats)
    rows.append(Row(name, "otcore pdist", t, "checked below"))

    def pot_rows() -> np.ndarray:
        return np.concatenate([np.atleast_1d(ot.sinkhorn2(H[i], H[i + 1:].T, M, EPS,
                                                          stopThr=TOL, numItermax=100_000))
                               for i in range(count - 1)])

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t, ref = _time(pot_rows, 1)
    rows.append(Row(name, "POT sinkhorn2 row by row", t,
                    f"values differ from otcore's by {np.abs(ref - d).max():.1e}"))
    return rows


def case_full_pdist(sample: int) -> tuple[list[Row], str]:
    """The Sinkhorn-divergence matrix of all 1797 digits, in-process and on a local
    cluster of 2 worker processes (1 thread each), against POT's ``sinkhorn2`` called once
    per pair, timed on ``sample`` random pairs and extrapolated to all pairs and self
    terms."""
    import ot
    from distributed import Client, LocalCluster

    import otcore as oc

    H, M = digits()
    N = len(H)
    total = N * (N - 1) // 2 + N
    name = f"pdist divergences, all {N} digits ({N * (N - 1) // 2} pairs)"
    _progress(name)
    rng = np.random.default_rng(0)
    pairs = [rng.choice(N, 2, replace=False) for _ in range(sample)]
    oc.pdist(H[:5], C=M, eps=EPS)  # compile
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t = time_repeats(lambda: [ot.sinkhorn2(H[i], H[j], M, EPS, stopThr=TOL,
                                               numItermax=100_000) for i, j in pairs],
                         repeats=1, warmup=0)
    pot = Timing.of([t.median / sample * total])
    t_local = time_repeats(lambda: oc.pdist(H, C=M, eps=EPS, tol=TOL), repeats=1,
                           warmup=0)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as cluster, Client(cluster) as client:
        oc.pdist(H[:5], C=M, eps=EPS, client=client)  # workers load the kernels
        t_cluster = time_repeats(lambda: oc.pdist(H, C=M, eps=EPS, tol=TOL,
                                                  client=client), repeats=1, warmup=0)
    rows = [Row(name, "otcore pdist, in-process", t_local, "-"),
            Row(name, "otcore pdist, 2-worker local cluster", t_cluster, "-"),
            Row(name, f"POT sinkhorn2 per pair (extrapolated from {sample} pairs)", pot,
                "-")]
    text = (f"All {N} digits: {N * (N - 1) // 2} divergences and {N} self terms. otcore "
            f"in-process {t_local.median:.0f} s, on a 2-worker local cluster "
            f"{t_cluster.median:.0f} s; POT calling `sinkhorn2` once per pair: "
            f"{t.median / sample * 1e3:.2f} ms per pair on {sample} random pairs, "
            f"{pot.median:.0f} s extrapolated to all of them: "
            f"{pot.median / t_local.median:.1f}x (in-process) and "
            f"{pot.median / t_cluster.median:.1f}x (cluster) faster.")
    return rows, text


def ratios(rows: list[Row]) -> dict[str, float]:
    """Per case, the best POT time over otcore's batch (or pdist) time."""
    out = {}
    for case in dict.fromkeys(r.case for r in rows):
        mine = [r for r in rows if r.case == case and r.solver.startswith("otcore")
                and "loop" not in r.solver]
        pot = [r for r in rows if r.case == case and r.solver.startswith("POT")]
        if mine and pot:
            out[case] = min(r.timing.median for r in pot) / mine[0].timing.median
    return out


def report(rows: list[Row], quick: bool) -> str:
    best = ratios(rows)
    loop = {}
    for case in dict.fromkeys(r.case for r in rows):
        mine = [r for r in rows if r.case == case]
        lo = [r for r in mine if "loop" in r.solver]
        if lo:
            loop[case] = lo[0].timing.median / mine[0].timing.median
    table = markdown_table(
        ["case", "solver", "time (median, spread)", "max L1 marginal error"],
        [(r.case, r.solver, r.timing.format(), r.accuracy) for r in rows], "llrl")
    summary = markdown_table(
        ["case", "best POT / otcore", "otcore loop / otcore batch"],
        [(c, f"{best.get(c, float('nan')):.1f}x", f"{loop[c]:.1f}x" if c in loop else "")
         for c in dict.fromkeys(r.case for r in rows)], "lrr")
    info = machine_info(["numpy", "numba", "pot", "scikit-learn"])
    notes = ("Every solver stops at an L1 marginal error of 1e-9 by its own criterion; the "
             "last column is recomputed by the benchmark from what each solver returned "
             "(for POT's `sinkhorn2`, from its scalings `u`, `v`). Times are medians of "
             "repeats (spread in brackets); for the digits, otcore and POT's `sinkhorn2` "
             "take turns, 9 repeats each; the loops and POT's other runs are single runs "
             "when they take seconds. `otcore loop` is one "
             "`oc.sinkhorn` call per problem. POT's `ot.batch.solve_batch` runs "
             "`log_sinkhorn` by default (`method='auto'` with `reg > 0`); its exp-domain "
             "`sinkhorn` is timed too. See `bench/batch.py` for the problems. On a GPU: "
             "`bench/results/batch_gpu.md` (4096 problems of 256 x 256 on an H100, "
             "`python -m bench.batch_gpu`).")
    lines = ["# Many problems at once", "",
             f"`{command_line('bench.batch')}`" + (" (quick)" if quick else ""), "",
             notes, "", summary, "", table, "", "Machine:", ""]
    lines += [f"- {k}: {v}" for k, v in info.items()]
    return "\n".join(lines) + "\n"


def plot(rows: list[Row], path: Any) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import LogLocator, NullFormatter

    cases = list(dict.fromkeys(r.case for r in rows))
    fig, axes = plt.subplots(2, (len(cases) + 1) // 2, figsize=(11, 6))
    for ax, case in zip(np.ravel(axes), cases, strict=False):
        mine = [r for r in rows if r.case == case]
        times = np.array([r.timing.median for r in mine])
        colors = ["tab:blue" if r.solver.startswith("otcore") else "tab:orange" for r in mine]
        ax.barh([r.solver for r in mine], times, color=colors)
        ax.set_xscale("log")
        ax.set_xlim(10 ** np.floor(np.log10(times.min() / 2)),
                    10 ** np.ceil(np.log10(times.max() * 2)))
        ax.xaxis.set_major_locator(LogLocator(base=10))
        ax.xaxis.set_minor_formatter(NullFormatter())
        for y, t in enumerate(times):
            ax.text(t, y, f" {t:.3g} s", va="center", fontsize=8)
        ax.set_xlabel("seconds (median; log scale)")
        ax.set_title(case, fontsize=10)
        ax.invert_yaxis()
    fig.suptitle("Many problems at once: otcore (blue) and POT (orange), same run")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


FULL_HEADING = "## The full pairwise matrix of the digits"


def add_full_section(rows: list[Row], text: str) -> str:
    """Append (or replace) the full-matrix section of ``batch.md``; return it."""
    table = markdown_table(["case", "solver", "time", "accuracy"],
                           [(r.case, r.solver, r.timing.format(), r.accuracy) for r in rows],
                           "llrl")
    section = "\n".join([FULL_HEADING, "", f"`{command_line('bench.batch')}`", "", text, "",
                         table, ""])
    path = RESULTS_DIR / "batch.md"
    old = path.read_text() if path.exists() else ""
    old = old.split(FULL_HEADING)[0].rstrip() + "\n\n" if old else ""
    write_text(path, old + section)
    return section


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--full", action="store_true",
                        help="only the full 1797-digit divergence matrix, in-process and on "
                             "a local cluster (tens of minutes); appended to batch.md")
    parser.add_argument("--digits", action="store_true",
                        help="only the digits against one (item 1 of issue 15), printed, "
                             "not written")
    args = parser.parse_args()
    if args.full:
        print(add_full_section(*case_full_pdist(300)))
        return
    reps = 2 if args.quick else 3
    rows = case_digits(3 if args.quick else 9, 300 if args.quick else 1000)
    if args.digits:
        print(report(rows, args.quick))
        return
    rows += case_stacked(reps, 100 if args.quick else 500, 64, 1)
    rows += case_stacked(reps, 1000 if args.quick else 5000, 8, 1)
    rows += case_pdist(1 if args.quick else 2, 100 if args.quick else 200)
    text = report(rows, args.quick)
    print(text)
    path = RESULTS_DIR / "batch.md"
    old = path.read_text() if path.exists() else ""
    full = old[old.index(FULL_HEADING):] if FULL_HEADING in old else ""
    write_text(path, text + ("\n" + full if full else ""))
    plot(rows, RESULTS_DIR / "batch.png")


if __name__ == "__main__":
    main()
