"""Monge gap: otcore vs OTT-JAX ``monge_gap_from_samples`` on the same samples.

For every ``(n, d)`` of the grid: reference points ``x ~ N(0, I_d)``, images
``T(x) = 1.5 x Q + 0.2 sin(3 x)`` (``Q`` a random rotation), the squared Euclidean cost,
the same absolute ``eps`` passed to both as a float, and the same Sinkhorn tolerance on
the L1 marginal error. Two choices of ``eps``:

* ``0.05 * mean(C)`` (OTT-JAX's ``relative_epsilon="mean"`` scale): every cell converges
  in at most a few hundred iterations; the main grid, n up to 4096;
* ``0.05 * std(C)`` (OTT-JAX's default ``epsilon=None``): a much smaller eps in high
  dimension, thousands of iterations; n up to 1024, cells may stop at ``max_iter``.

Both run in float64 in this process; OTT-JAX is compiled ahead of time and Numba's
kernels are warmed up, so compile time is excluded. Each cell is timed ``--repeat`` times
(fewer when a library spends more than ``--budget`` seconds on it); the tables report
medians, the time ratio OTT-JAX / otcore and the relative difference of the two values.

Run::

    python bench/monge_gap.py            # both grids, writes bench/results/monge_gap.md
    python bench/monge_gap.py --quick --out -   # a small look

Needs ``ott-jax`` with its neural extras (``flax``, ``diffrax``: ``ott.neural`` imports
them).
"""

from __future__ import annotations

import argparse
import functools
import os
import platform
import statistics
import sys
import time
import warnings

# GNU OpenMP spins between parallel regions by default; on a machine shared with other
# jobs that makes every Numba kernel launch wait for descheduled spinning threads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import jax
import numpy as np

jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp  # noqa: E402
from ott.geometry import costs  # noqa: E402
from ott.neural.methods.monge_gap import monge_gap_from_samples  # noqa: E402

import otcore as oc  # noqa: E402


def problem(n: int, d: int, rule: str = "mean", seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    Q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    Tx = 1.5 * x @ Q + 0.2 * np.sin(3 * x)
    C = np.maximum((x * x).sum(1)[:, None] + (Tx * Tx).sum(1)[None, :] - 2 * x @ Tx.T, 0)
    eps = 0.05 * float(C.mean() if rule == "mean" else C.std())
    return x, Tx, eps


def time_call(fn, repeat: int, budget: float):
    """Run ``fn`` up to ``repeat`` times (fewer if over ``budget`` seconds); return the
    median time and the last output."""
    times, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
        if sum(times) > budget:
            break
    return statistics.median(times), len(times), out


def run_cell(n, d, rule, tol, max_iter, repeat, budget):
    x, Tx, eps = problem(n, d, rule)

    def otcore_call():
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", oc.ConvergenceWarning)
            res = oc.monge_gap(x, Tx, eps=eps, tol=tol, max_iter=max_iter)
        return res.value, res.converged and not any(
            issubclass(w.category, oc.ConvergenceWarning) for w in caught)

    t_oc, r_oc, (v_oc, conv_oc) = time_call(otcore_call, repeat, budget)

    fn = functools.partial(
        monge_gap_from_samples, cost_fn=costs.SqEuclidean(), epsilon=eps,
        relative_epsilon=None, return_output=True, threshold=tol, max_iterations=max_iter,
    )
    xj, yj = jnp.asarray(x), jnp.asarray(Tx)
    compiled = jax.jit(fn).lower(xj, yj).compile()

    def ott_call():
        val, out = compiled(xj, yj)
        return float(val.block_until_ready()), bool(out.converged), int(out.n_iters)

    t_ott, r_ott, (v_ott, conv_ott, it_ott) = time_call(ott_call, repeat, budget)
    return dict(n=n, d=d, eps=eps, t_oc=t_oc, t_ott=t_ott, reps=min(r_oc, r_ott),
                v_oc=v_oc, v_ott=v_ott, conv_oc=conv_oc, conv_ott=conv_ott, it_ott=it_ott)


def fmt_row(r):
    rel = abs(r["v_oc"] - r["v_ott"]) / abs(r["v_ott"])
    both = r["conv_oc"] and r["conv_ott"]
    ok = "n/a" if not both else ("yes" if rel < 1e-6 else "**no**")
    conv = f"{'yes' if r['conv_oc'] else 'no'} / {'yes' if r['conv_ott'] else 'no'}"
    return (f"| {r['n']} | {r['d']} | {r['eps']:.4g} | {r['t_oc']:.3f} | {r['t_ott']:.3f} | "
            f"**{r['t_ott'] / r['t_oc']:.2f}** | {r['it_ott']} | {r['reps']} | {conv} | "
            f"{r['v_oc']:.10g} | {rel:.1e} | {ok} |")


HEADER = (
    "| n | d | eps | otcore (s) | OTT-JAX (s) | OTT / otcore | OTT iters | runs | "
    "converged (otcore / OTT) | gap (otcore) | rel. diff | < 1e-6 |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|---|"
)


GRIDS = {  # rule: (n values, d values)
    "mean": ((256, 1024, 4096), (2, 16, 64)),
    "std": ((256, 1024), (2, 16, 64)),
}
QUICK = {"mean": ((256, 1024), (2, 16)), "std": ((256,), (2, 16))}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a small grid")
    ap.add_argument("--tol", type=float, default=1e-8)
    ap.add_argument("--max-iter", type=int, default=5000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--budget", type=float, default=60.0,
                    help="stop repeating a cell after this many seconds per library")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results",
                                                   "monge_gap.md"))
    args = ap.parse_args(argv)

    oc.monge_gap(*problem(64, 3)[:2], eps=1.0)  # compile (or load) the Numba kernels
    tables = {}
    for rule, (ns, ds) in (QUICK if args.quick else GRIDS).items():
        print(f"eps = 0.05 * {rule}(C)\n{HEADER}", flush=True)
        rows = tables[rule] = []
        for n in ns:
            for d in ds:
                r = run_cell(n, d, rule, args.tol, args.max_iter, args.repeat, args.budget)
                rows.append(fmt_row(r))
                print(rows[-1], flush=True)

    import numba
    import ott

    env = (f"CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} cores "
           f"(shared); Python {sys.version.split()[0]}, NumPy {np.__version__}, Numba "
           f"{numba.__version__} ({numba.threading_layer()}, {numba.get_num_threads()} "
           f"threads, OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}), jax "
           f"{jax.__version__}, ott-jax {ott.__version__}.")
    text = [
        "# Monge gap: otcore vs OTT-JAX", "",
        f"Generated by `python bench/monge_gap.py` (tol={args.tol:g} on the L1 marginal "
        f"error, max_iter={args.max_iter}, repeat={args.repeat}, budget={args.budget:g} s "
        "per library and cell). " + env, "",
        "Squared Euclidean cost; `T(x) = 1.5 x Q + 0.2 sin(3x)`; times in seconds "
        "(medians of `runs` runs, compile time excluded); ratio > 1 means otcore is "
        "faster; `rel. diff` is |gap_otcore - gap_OTT| / |gap_OTT|.", "",
    ]
    titles = {"mean": "## eps = 0.05 * mean(C)", "std": "## eps = 0.05 * std(C) (OTT's default)"}
    for rule, rows in tables.items():
        text += [titles[rule], "", HEADER, *rows, ""]
    if args.out == "-":
        print("\n".join(text))
    else:
        with open(args.out, "w") as fh:
            fh.write("\n".join(text))


if __name__ == "__main__":
    main()
