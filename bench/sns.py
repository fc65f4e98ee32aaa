"""Sinkhorn-Newton-Sparse against Sinkhorn (otcore, POT) and RegOT's Newton-type solvers.

Run from the repository root (RegOT and POT must be installed)::

    python -m bench.sns [--budget 30] [--repeats 3] [--threads 1]

Every solver gets the same wall-clock budget per problem and is timed until the L1 marginal
error ``|P 1 - a|_1 + |P^T 1 - b|_1`` of the plan it returns is below ``TARGET``; the error
is always recomputed here from the returned plan. A solver that cannot get there within
the budget is reported as "did not reach", with the best error it had. Writes
``bench/results/sns.md`` and ``bench/results/sns.png``.

Peers and their stopping rules (each is run with its own criterion and then checked):

* RegOT ``sinkhorn_ssns`` / ``sinkhorn_sparse_newton`` stop on the Euclidean norm of their
  dual gradient; ``reg`` is otcore's ``eps`` (same plan ``exp((f_i + g_j - C_ij) / eps)``).
* POT ``sinkhorn_log`` stops on the Euclidean norm of the column-marginal error.

A peer whose own criterion was met but whose plan misses ``TARGET`` is rerun with a ten
times smaller tolerance (at most three times); the time reported is that of the first
run that reaches ``TARGET``. Peers that cannot be interrupted get an iteration cap from
the budget and the time per iteration of a short probe run.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

import otcore as oc  # noqa: E402

TARGET = 1e-10
RESULTS = Path(__file__).resolve().parent / "results"


@dataclass
class Problem:
    """A balanced entropic problem ``(a, b, C, eps)``; ``key`` problems are repeated."""

    name: str
    a: np.ndarray
    b: np.ndarray
    C: np.ndarray
    eps: float
    note: str
    key: bool = False


@dataclass
class Outcome:
    """One solver on one problem: time to ``TARGET`` (median of repeats) or the best error
    within the budget; ``curve`` is ``(seconds, L1 error)`` for the convergence plot."""

    solver: str
    reached: bool
    times: list[float]
    iterations: str
    error: float
    detail: str = ""
    curve: list[tuple[float, float]] = field(default_factory=list)

    @property
    def time(self) -> float:
        return statistics.median(self.times)


def l1_error(a: np.ndarray, b: np.ndarray, P: np.ndarray) -> float:
    return float(np.abs(P.sum(axis=1) - a).sum() + np.abs(P.sum(axis=0) - b).sum())


# ------------------------------------------------------------------------------ problems


def _grid_images(k: int = 28) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two synthetic grey-level images on a ``k x k`` grid of [0, 1]^2 (a ring with a blob,
    two blobs), as histograms with a floor of 1e-3 of the mean, and the pixel centres."""
    t = np.linspace(0, 1, k)
    X, Y = np.meshgrid(t, t, indexing="ij")
    ring = np.exp(-(((np.hypot(X - 0.38, Y - 0.42)) - 0.22) / 0.05) ** 2)
    A = ring + 0.6 * np.exp(-((X - 0.75) ** 2 + (Y - 0.78) ** 2) / 0.01)
    B = (np.exp(-((X - 0.68) ** 2 + (Y - 0.3) ** 2) / 0.012)
         + 0.8 * np.exp(-((X - 0.3) ** 2 + (Y - 0.7) ** 2) / 0.03))

    def histogram(img):
        w = img.ravel() + 1e-3 * img.mean()
        return w / w.sum()

    return histogram(A), histogram(B), np.column_stack([X.ravel(), Y.ravel()])


def problems() -> list[Problem]:
    rng = np.random.default_rng(0)
    n = 500
    out = [Problem("random n=500, eta=1200", np.full(n, 1 / n), np.full(n, 1 / n),
                   rng.random((n, n)), 1 / 1200, "C ~ U[0, 1], uniform weights", key=True)]
    a, b, pts = _grid_images()
    sq = ((pts[:, None] - pts[None]) ** 2).sum(-1)
    out.append(Problem("images 28x28, W2", a, b, sq / sq.max(), 1e-3,
                       "squared distance / max, eps = 1e-3"))
    dist = np.sqrt(sq)
    out.append(Problem("images 28x28, W1", a, b, dist / dist.max(), 1e-3,
                       "distance / max, eps = 1e-3"))
    x, y = rng.normal(size=(1000, 2)), 1 + 0.5 * rng.normal(size=(1000, 2))
    C = ((x[:, None] - y[None]) ** 2).sum(-1)
    out.append(Problem("Gaussians n=1000", np.full(1000, 1e-3), np.full(1000, 1e-3),
                       C / C.max(), 1e-3, "N(0, I) -> N(1, I/4) in 2-D, sq. distance / max"))
    return out


# ------------------------------------------------------------------------------- solvers


def run_sns(p: Problem, budget: float, curve: bool) -> Outcome:
    t0 = time.perf_counter()
    res = oc.sinkhorn_newton_sparse(p.a, p.b, p.C, p.eps, tol=TARGET)
    elapsed = time.perf_counter() - t0
    ex = res.extra
    err = l1_error(p.a, p.b, res.plan)
    hist = ex["history"]
    detail = (f"{ex['fallbacks']} fallbacks, density {min(hist['density']):.3g}"
              f"-{max(hist['density']):.3g}, {sum(hist['cg_iter'])} CG iterations")
    points = []
    if curve:  # time to each Newton step: rerun with max_iter = k (fastest of 2 runs)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", oc.ConvergenceWarning)
            for k in range(1, ex["newton_iter"] + 1):
                times = []
                for _ in range(2):
                    t1 = time.perf_counter()
                    r = oc.sinkhorn_newton_sparse(p.a, p.b, p.C, p.eps, tol=TARGET,
                                                  max_iter=k)
                    times.append(time.perf_counter() - t1)
                points.append((min(times), r.marginal_error))
    return Outcome("otcore SNS", err < TARGET and elapsed <= budget, [elapsed],
                   f"{ex['sinkhorn_iter']} + {ex['newton_iter']} Newton", err, detail, points)


def run_sinkhorn(p: Problem, budget: float) -> Outcome:
    """otcore Sinkhorn in warm-started chunks of about budget / 30 seconds each, so that it
    stops close to the budget (each chunk adds one pass over the cost for its result)."""
    f = g = None
    n_iter, points, chunk = 0, [], 20
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", oc.ConvergenceWarning)
        while True:
            t1 = time.perf_counter() - t0
            res = oc.sinkhorn(p.a, p.b, p.C, p.eps, tol=TARGET, max_iter=chunk,
                              init=(f, g) if f is not None else None)
            t2 = time.perf_counter() - t0
            # the history is per check: spread the chunk's time evenly over its iterations
            points += [(t1 + (t2 - t1) * (i + 1) / max(res.n_iter, 1), e)
                       for i, e in res.errors]
            n_iter += res.n_iter
            f, g = res.f, res.g
            if res.converged or t2 > budget:
                break
            per_iter = (t2 - t1) / max(res.n_iter, 1)
            chunk = int(min(budget / 30, budget - t2) / per_iter) + 10
    elapsed = time.perf_counter() - t0
    err = l1_error(p.a, p.b, res.plan)
    detail = ""
    if not res.converged:
        detail = _extrapolate(points, elapsed, n_iter)
    return Outcome("otcore Sinkhorn", err < TARGET and elapsed <= budget, [elapsed],
                   str(n_iter), err, detail, points)


def _extrapolate(points: list[tuple[float, float]], elapsed: float, n_iter: int) -> str:
    """Time to TARGET at the linear rate of the last half of the run (an estimate)."""
    t = np.array([q[0] for q in points])
    e = np.log10([q[1] for q in points])
    half = t >= t[-1] / 2
    if half.sum() < 2:
        return ""
    slope = np.polyfit(t[half], e[half], 1)[0]
    if slope >= 0:
        return "stalled"
    total = elapsed + (math.log10(TARGET) - e[-1]) / slope
    return f"linear-rate estimate {total:.3g} s, {n_iter * total / elapsed:.3g} iterations"


def _capped(name: str, call: Callable[[float, int], tuple[np.ndarray, int]], p: Problem,
            budget: float, own_tol: float) -> Outcome:
    """Run a peer that cannot be interrupted: probe its time per iteration, cap its
    iterations to the budget, and tighten its own tolerance until the plan meets TARGET."""
    probe = []
    for k in (5, 25):  # the difference removes the set-up time from the estimate
        t0 = time.perf_counter()
        call(own_tol, k)
        probe.append(time.perf_counter() - t0)
    per_iter = max(probe[1] - probe[0], 1e-3 * probe[1]) / 20
    cap = max(10, int(budget / per_iter))
    tol = own_tol
    for _ in range(4):
        t0 = time.perf_counter()
        P, n_iter = call(tol, cap)
        elapsed = time.perf_counter() - t0
        err = l1_error(p.a, p.b, P)
        if err < TARGET or n_iter >= cap or elapsed > budget:
            break
        tol /= 10
    detail = f"own tolerance {tol:.0e}" + (f", capped at {cap} iterations" if n_iter >= cap
                                           else "")
    return Outcome(name, err < TARGET and elapsed <= budget, [elapsed], str(n_iter), err,
                   detail)


def run_regot(method: str, p: Problem, budget: float) -> Outcome:
    import regot

    fn = getattr(regot, method)
    M = np.asfortranarray(p.C)

    def call(tol, max_iter):
        res = fn(M, p.a, p.b, p.eps, tol=tol, max_iter=max_iter)
        return res.plan, res.niter

    label = {"sinkhorn_ssns": "RegOT SSNS", "sinkhorn_sparse_newton": "RegOT sparse Newton"}
    return _capped(label[method], call, p, budget, TARGET)


def run_pot(p: Problem, budget: float) -> Outcome:
    import ot

    def call(tol, max_iter):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            P, log = ot.sinkhorn(p.a, p.b, p.C, p.eps, method="sinkhorn_log", stopThr=tol,
                                 numItermax=max_iter, log=True)
        return P, log["niter"] + 1

    return _capped("POT sinkhorn_log", call, p, budget, TARGET)


#: ``solver(problem, budget, first_run) -> Outcome``; SNS first (the reference of ratios).
SOLVERS: list[Callable[[Problem, float, bool], Outcome]] = [
    run_sns,
    lambda p, budget, _: run_sinkhorn(p, budget),
    lambda p, budget, _: run_regot("sinkhorn_ssns", p, budget),
    lambda p, budget, _: run_regot("sinkhorn_sparse_newton", p, budget),
    lambda p, budget, _: run_pot(p, budget),
]


# ------------------------------------------------------------------------------- report


def _fmt_time(o: Outcome) -> str:
    if not o.reached:
        return f"did not reach ({o.error:.1e} after {o.time:.3g} s)"
    spread = f" [{min(o.times):.3g}-{max(o.times):.3g}]" if len(o.times) > 1 else ""
    return f"{o.time:.3g} s{spread}"


def report(results: list[tuple[Problem, list[Outcome]]], budget: float, repeats: int,
           threads: int) -> str:
    from importlib.metadata import version

    import numba
    import ot

    lines = [
        "# Sinkhorn-Newton-Sparse benchmark",
        "",
        f"Time until the L1 marginal error of the returned plan is below {TARGET:g} "
        f"(recomputed from the plan), budget {budget:g} s per solver and problem; the key "
        f"problem is run {repeats} times (median, [fastest-slowest]). Ratios are to otcore "
        "SNS in the same run (above 1: SNS is faster). Iterations of SNS: warm-up and "
        "fallback Sinkhorn iterations + Newton steps.",
        "",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores "
        f"(shared with other work; timings are noisy), {threads} Numba thread(s); RegOT "
        "and POT run single-threaded. Versions: otcore "
        f"{oc.__version__}, numba {numba.__version__}, POT {ot.__version__}, regot "
        f"{version('regot')}, numpy {np.__version__}.",
        "",
    ]
    for p, outs in results:
        sns = outs[0]
        lines += [f"## {p.name}", "", f"{p.note}; n x m = {p.C.shape[0]} x {p.C.shape[1]}, "
                  f"eps = {p.eps:.4g}.", "",
                  "| solver | time to 1e-10 | ratio | iterations | final L1 error | notes |",
                  "|---|---|---|---|---|---|"]
        for o in outs:
            if o.reached and sns.reached:
                ratio = f"{o.time / sns.time:.3g}"
            elif sns.reached:
                ratio = f"> {o.time / sns.time:.3g}"
            else:
                ratio = "-"
            lines.append(f"| {o.solver} | {_fmt_time(o)} | {ratio} | {o.iterations} | "
                         f"{o.error:.1e} | {o.detail} |")
        lines.append("")
    return "\n".join(lines)


def plot(results: list[tuple[Problem, list[Outcome]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(4.2 * len(results), 3.6))
    for ax, (p, outs) in zip(axes, results, strict=True):
        for o in outs:
            if o.curve:
                t, e = zip(*o.curve, strict=True)
                ax.semilogy(t, e, marker="o" if "SNS" in o.solver else None, ms=3,
                            label=o.solver)
        ax.axhline(TARGET, color="grey", lw=0.8, ls=":")
        ax.set_title(p.name, fontsize=10)
        ax.set_xlabel("time (s)")
        ax.set_xscale("log")
    axes[0].set_ylabel("L1 marginal error")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=30.0, help="seconds per solver")
    parser.add_argument("--repeats", type=int, default=3, help="runs of the key problem")
    parser.add_argument("--threads", type=int, default=1, help="Numba threads")
    args = parser.parse_args()
    import numba

    numba.set_num_threads(args.threads)
    warm = problems()[0]
    oc.sinkhorn_newton_sparse(None, None, warm.C[:50, :50], 0.01)  # load the kernels
    results: list[tuple[Problem, list[Outcome]]] = []
    for p in problems():
        reps = args.repeats if p.key else 1
        outs = []
        for solver in SOLVERS:
            o = solver(p, args.budget, True)
            for _ in range(reps - 1):
                if not o.reached:
                    break
                o.times += solver(p, args.budget, False).times
            print(f"{p.name:26s} {o.solver:22s} {_fmt_time(o):40s} {o.iterations:>18s} "
                  f"{o.detail}", flush=True)
            outs.append(o)
        results.append((p, outs))
    RESULTS.mkdir(exist_ok=True)
    text = report(results, args.budget, args.repeats, args.threads)
    (RESULTS / "sns.md").write_text(text + "\n")
    plot(results, RESULTS / "sns.png")
    print(text)


if __name__ == "__main__":
    main()
