"""Start-up time of otcore's Numba kernels: import + first call, with an empty and a filled
on-disk cache.

Run from the repository root::

    python -m bench.startup [--repeats 3]

otcore's Numba kernels are compiled with ``cache=True``: the machine code goes to an
on-disk cache (``__pycache__`` next to the kernels, or ``NUMBA_CACHE_DIR``) and later
processes load it instead of compiling. For each case, every repeat creates a new empty
temporary directory and runs two fresh Python processes with ``NUMBA_CACHE_DIR`` set to it:

* *cold*: the cache is empty, so every kernel the call needs is compiled (and written);
* *warm*: a second process with the cache the cold one filled.

Each child reports the time of ``import otcore``, of the first call (the JIT cost is
here) and of a second call in the same process (the solve itself); the parent reports the
wall time of the whole child process (interpreter start-up included). Writes
``bench/results/startup.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ._common import (
    RESULTS_DIR,
    ROOT,
    _git_revision,
    command_line,
    machine_info,
    markdown_table,
    write_text,
)

NAME = "startup"
PACKAGES = ("otcore", "numpy", "scipy", "numba")

#: name -> (set-up code, the call); the set-up runs after ``import otcore as oc`` and
#: before the clock of the first call starts.
CASES = {
    "`oc.sinkhorn`, dense 100 x 80": (
        "C = rng.random((100, 80))",
        "oc.sinkhorn(None, None, C, 0.1)"),
    "`oc.sinkhorn`, PointCloud 100 x 80": (
        "geom = oc.PointCloud(rng.normal(size=(100, 2)), rng.normal(size=(80, 2)))",
        "oc.sinkhorn(None, None, geom, 0.1)"),
    "`oc.sinkhorn_newton_sparse`, dense 100 x 80": (
        "C = rng.random((100, 80))",
        "oc.sinkhorn_newton_sparse(None, None, C, 1e-2)"),
    "`oc.cardinality_ot`, dense 100 x 80": (
        "C = rng.random((100, 80))",
        "oc.cardinality_ot(None, None, C, 2, 0.1)"),
}

_CHILD = """
import json, time
t0 = time.perf_counter()
import numpy as np
import otcore as oc
t1 = time.perf_counter()
rng = np.random.default_rng(0)
{setup}
t2 = time.perf_counter()
res = {call}
t3 = time.perf_counter()
res = {call}
t4 = time.perf_counter()
print("RESULT " + json.dumps({{"import": t1 - t0, "first": t3 - t2, "second": t4 - t3,
                              "converged": bool(res.converged)}}))
"""


def run_child(setup: str, call: str, cache_dir: str) -> dict:
    """One fresh process with ``NUMBA_CACHE_DIR=cache_dir``; its timings plus ``wall``,
    the wall time of the whole process seen from here."""
    env = dict(os.environ, NUMBA_CACHE_DIR=cache_dir)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    code = _CHILD.format(setup=setup, call=call)
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, check=True,
                          stdout=subprocess.PIPE, text=True)
    wall = time.perf_counter() - t0
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT "))
    out = json.loads(line[len("RESULT "):])
    out["wall"] = wall
    return out


def _count_cache(path: str) -> int:
    return sum(1 for p in Path(path).rglob("*") if p.suffix in (".nbi", ".nbc"))


def _fmt(samples: list[float]) -> str:
    med = statistics.median(samples)
    if len(samples) == 1:
        return f"{med:.2f}"
    return f"{med:.2f} [{min(samples):.2f}-{max(samples):.2f}]"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog=f"python -m bench.{NAME}",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    t_start = time.perf_counter()
    commit = _git_revision()  # the code that runs, not the one at the end
    results: dict[str, dict[str, list[dict]]] = {}
    files: dict[str, int] = {}
    for name, (setup, call) in CASES.items():
        per = results.setdefault(name, {"cold": [], "warm": []})
        for _ in range(args.repeats):
            with tempfile.TemporaryDirectory(prefix="numba-cache-") as cache:
                per["cold"].append(run_child(setup, call, cache))
                files[name] = _count_cache(cache)
                per["warm"].append(run_child(setup, call, cache))
            for kind in ("cold", "warm"):
                r = per[kind][-1]
                print(f"{name:45s} {kind}: process {r['wall']:.2f} s, import "
                      f"{r['import']:.2f} s, first call {r['first']:.2f} s, second call "
                      f"{r['second'] * 1e3:.1f} ms", flush=True)
    total = time.perf_counter() - t_start

    rows = []
    for name, per in results.items():
        for kind in ("cold", "warm"):
            rs = per[kind]
            rows.append([
                name, "empty (compiles)" if kind == "cold" else "filled by the cold run",
                _fmt([r["wall"] for r in rs]),
                _fmt([r["import"] + r["first"] for r in rs]),
                _fmt([r["import"] for r in rs]),
                _fmt([r["first"] for r in rs]),
                f"{statistics.median(r['second'] for r in rs) * 1e3:.2g}",
                files[name] if kind == "cold" else "",
            ])
    table = markdown_table(
        ["case", "Numba cache", "process wall (s)", "import + first call (s)",
         "import otcore (s)", "first call (s)", "second call (ms)", "cache files written"],
        rows, align="llrrrrrr")
    cold = {n: statistics.median(r["import"] + r["first"] for r in p["cold"])
            for n, p in results.items()}
    warm = {n: statistics.median(r["import"] + r["first"] for r in p["warm"])
            for n, p in results.items()}
    summary = "\n".join(
        f"- {n}: import + first call {cold[n]:.2f} s with an empty cache, {warm[n]:.2f} s "
        f"with a filled one ({cold[n] / warm[n]:.1f}x)." for n in results)
    info = machine_info(PACKAGES)
    info["otcore commit"] = commit
    text = "\n\n".join([
        "# Numba start-up time",
        f"Command: `{command_line(f'bench.{NAME}')}` (total {total / 60:.1f} min)",
        "## Machine", "\n".join(f"- {k}: {v}" for k, v in info.items()),
        "Shared 2-core machine (other jobs may have run at the same time).",
        "## Method",
        "otcore's Numba kernels use `cache=True`. For every case and repeat a new empty "
        "temporary directory is created and two fresh Python processes run with "
        "`NUMBA_CACHE_DIR` set to it: the first with the empty cache (every kernel the "
        "call needs is compiled and written to the cache), the second with the cache "
        "the first filled. Each process imports NumPy and otcore, builds the problem "
        "(not timed), calls the solver twice and reports the time of `import otcore` "
        "(with NumPy), of the first call and of the second; *process wall* is the wall "
        f"time of the whole child process, interpreter start-up included. Median of "
        f"{args.repeats} repeats [fastest-slowest]. The calls:",
        "\n".join(f"- {n}: `{s}`; `{c}`" for n, (s, c) in CASES.items()),
        "## Results", summary, table,
    ]) + "\n"
    write_text(RESULTS_DIR / f"{NAME}.md", text)
    print(text)


if __name__ == "__main__":
    main()
