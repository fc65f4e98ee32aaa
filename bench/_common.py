"""Helpers shared by the benchmarks: timing, peak memory, test problems and reporting.

Conventions used by every benchmark:

* Timings are wall-clock (:func:`time.perf_counter`), the median of several repeats, with
  the spread (fastest and slowest repeat) reported next to it.
* Peak memory is the peak resident set size of a fresh Python process that runs only the
  measured case (:func:`run_isolated`), over the measured block (:func:`track_peak_rss`)
  and over the process's life. Allocations made by NumPy or Numba in C are not seen by
  :mod:`tracemalloc`, but they are part of the resident set.
* Entropic problems follow otcore's convention
  ``P_ij = a_i b_j exp((f_i + g_j - C_ij) / eps)``, and the L1 marginal error is
  ``|P 1 - a|_1 + |P^T 1 - b|_1``.
"""

from __future__ import annotations

import json
import os
import platform
import re
import resource
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import import_module, metadata
from pathlib import Path
from typing import Any

import numpy as np
from scipy.spatial.distance import cdist
from scipy.special import logsumexp

__all__ = [
    "RESULTS_DIR",
    "Problem",
    "Timing",
    "command_line",
    "dense_problem",
    "format_seconds",
    "gaussian_clouds",
    "l1_marginal_error",
    "machine_info",
    "markdown_table",
    "process_peak_rss_mb",
    "run_isolated",
    "sqeuclidean_bound",
    "time_repeats",
    "track_peak_rss",
    "update_readme",
    "write_text",
]

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = ROOT / "bench" / "results"
_RESULT_TAG = "BENCH-RESULT "


# --------------------------------------------------------------------------- timing


@dataclass(frozen=True)
class Timing:
    """Summary of repeated wall-clock measurements, in seconds.

    Attributes
    ----------
    median : float
        Median of the repeats.
    low, high : float
        Fastest and slowest repeat (the spread).
    samples : tuple of float
        All repeats, in the order they ran.
    """

    median: float
    low: float
    high: float
    samples: tuple[float, ...]

    @classmethod
    def of(cls, samples: Sequence[float]) -> Timing:
        """Summarize raw samples (seconds)."""
        s = tuple(float(t) for t in samples)
        return cls(float(np.median(s)), min(s), max(s), s)

    def per(self, count: int) -> Timing:
        """The same timing divided by ``count`` (e.g. seconds per iteration)."""
        return Timing.of([t / count for t in self.samples])

    def format(self) -> str:
        """``"1.23 ms (1.20-1.31)"``: median, then the fastest and slowest repeat."""
        unit, factor = _unit(self.median)
        return (f"{self.median * factor:.3g} {unit} "
                f"({self.low * factor:.3g}-{self.high * factor:.3g})")


def _unit(seconds: float) -> tuple[str, float]:
    """A readable unit for ``seconds`` and the factor that converts to it."""
    if seconds < 1e-3:
        return "µs", 1e6
    if seconds < 1.0:
        return "ms", 1e3
    return "s", 1.0


def format_seconds(seconds: float) -> str:
    """Format a duration with a readable unit: ``"812 µs"``, ``"12.3 ms"``, ``"4.56 s"``."""
    unit, factor = _unit(seconds)
    return f"{seconds * factor:.3g} {unit}"


def time_repeats(fn: Callable[[], Any], repeats: int = 5, warmup: int = 1) -> Timing:
    """Time ``fn()`` ``repeats`` times after ``warmup`` untimed calls.

    Parameters
    ----------
    fn : callable
        Called without arguments; it must block until its work is done (for JAX, call
        ``block_until_ready`` inside).
    repeats : int, default 5
        Number of timed calls.
    warmup : int, default 1
        Untimed calls made first (JIT compilation, first-touch page faults, caches).

    Returns
    -------
    Timing
        Median and spread of the timed calls.
    """
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return Timing.of(samples)


# --------------------------------------------------------------------------- memory


def _proc_status_mb(key: str) -> float | None:
    """A ``/proc/self/status`` memory field (``VmRSS``, ``VmHWM``) in MiB; ``None`` if absent."""
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return None
    match = re.search(rf"^{key}:\s*(\d+) kB", text, re.MULTILINE)
    return int(match.group(1)) / 1024 if match else None


_hwm_before_reset = 0.0  # the process's high-water mark before track_peak_rss reset it


def process_peak_rss_mb() -> float:
    """Peak resident set size of the current process over its life, in MiB.

    Unlike :mod:`tracemalloc`, it includes memory allocated in C by NumPy and Numba. On
    Linux it is the kernel's high-water mark ``VmHWM`` (combined with the marks that
    :func:`track_peak_rss` reset); ``getrusage``'s ``ru_maxrss`` is not used there because
    Linux carries it over from the parent process across ``fork`` and ``exec``. Elsewhere
    it is ``ru_maxrss`` (bytes on macOS, KiB otherwise).
    """
    hwm = _proc_status_mb("VmHWM")
    if hwm is not None:
        return max(hwm, _hwm_before_reset)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


@contextmanager
def track_peak_rss() -> Iterator[dict[str, float]]:
    """Measure the resident memory of the enclosed block.

    On Linux the kernel's high-water mark ``VmHWM`` is reset on entry (``echo 5 >
    /proc/self/clear_refs``), so the peak belongs to the block, not to what ran before
    (imports, JIT compilation). Elsewhere the peak falls back to the whole process's.

    Yields
    ------
    dict
        Filled on exit: ``rss_before_mb`` (resident memory on entry) and ``peak_rss_mb``
        (peak resident memory during the block, the resident baseline included).
    """
    global _hwm_before_reset
    before = _proc_status_mb("VmRSS")
    hwm = _proc_status_mb("VmHWM")
    try:
        Path("/proc/self/clear_refs").write_text("5")
        reset = hwm is not None
    except OSError:
        reset = False
    if reset:
        _hwm_before_reset = max(_hwm_before_reset, hwm)
    stats: dict[str, float] = {}
    yield stats
    stats["peak_rss_mb"] = _proc_status_mb("VmHWM") if reset else process_peak_rss_mb()
    stats["rss_before_mb"] = stats["peak_rss_mb"] if before is None else before


def run_isolated(target: str, timeout: float | None = None, **kwargs: Any) -> dict:
    """Run ``module:function(**kwargs)`` in a fresh Python process and measure its memory.

    The function must return a JSON-serializable dict (it may measure a part of its work
    with :func:`track_peak_rss`). The child adds ``process_peak_rss_mb``, its peak resident
    set size over its whole life (:func:`process_peak_rss_mb`). A fresh process per case
    keeps the peak of one case from hiding another's.

    Parameters
    ----------
    target : str
        ``"package.module:function"``, importable from the repository root.
    timeout : float, optional
        Seconds before the child is killed (:class:`subprocess.TimeoutExpired`).
    **kwargs
        JSON-serializable keyword arguments of the function.

    Returns
    -------
    dict
        What the function returned, plus ``process_peak_rss_mb``.
    """
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    code = "from bench._common import _child_main; _child_main()"
    proc = subprocess.run(
        [sys.executable, "-c", code, target, json.dumps(kwargs)],
        env=env, cwd=ROOT, stdout=subprocess.PIPE, text=True, timeout=timeout, check=True,
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(_RESULT_TAG)]
    if not lines:
        raise RuntimeError(f"{target} returned no result")
    return json.loads(lines[-1][len(_RESULT_TAG):])


def _child_main() -> None:
    """Entry point of the child process started by :func:`run_isolated`."""
    module, func = sys.argv[1].split(":")
    result = dict(getattr(import_module(module), func)(**json.loads(sys.argv[2])))
    result["process_peak_rss_mb"] = process_peak_rss_mb()
    print(_RESULT_TAG + json.dumps(result), flush=True)


# --------------------------------------------------------------------------- problems


@dataclass
class Problem:
    """A transport problem between two point clouds with uniform weights.

    Attributes
    ----------
    x, y : ndarray of shape (n, d) and (m, d)
        Source and target points.
    a, b : ndarray of shape (n,) and (m,)
        Uniform weights.
    scale : float
        The squared-Euclidean cost is ``|x_i - y_j|^2 / scale`` (max 1, or at most 1).
    C : ndarray of shape (n, m) or None
        The normalized dense cost, or ``None`` for problems solved online.
    """

    x: np.ndarray
    y: np.ndarray
    a: np.ndarray
    b: np.ndarray
    scale: float
    C: np.ndarray | None = None


def gaussian_clouds(n: int, m: int | None = None, d: int = 2, *, shift: float = 1.0,
                    seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two Gaussian point clouds with different means, float64.

    ``x_i ~ N(0, I_d)`` and ``y_j ~ N(shift * 1_d, I_d)``.

    Parameters
    ----------
    n, m : int
        Number of source and target points (``m`` defaults to ``n``).
    d : int, default 2
        Dimension.
    shift : float, default 1.0
        Every coordinate of the target mean.
    seed : int, default 0
        Seed of :func:`numpy.random.default_rng`.

    Returns
    -------
    x, y : ndarray of shape (n, d) and (m, d)
    """
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d))
    y = rng.standard_normal((n if m is None else m, d)) + shift
    return x, y


def sqeuclidean_bound(x: np.ndarray, y: np.ndarray) -> float:
    """Upper bound of ``max_ij |x_i - y_j|^2`` from the bounding box of both clouds.

    The squared diagonal of the box that holds every point: ``O((n + m) d)`` work, no
    pairwise distances. Dividing the cost by it puts every entry in ``[0, 1]``; for
    Gaussian clouds the largest entry is close to 1 (within a few tens of percent).
    """
    both = np.concatenate([x, y])
    return float(np.sum((both.max(axis=0) - both.min(axis=0)) ** 2))


def dense_problem(n: int, d: int = 2, seed: int = 0) -> Problem:
    """Dense problem on :func:`gaussian_clouds`, squared-Euclidean cost divided by its max.

    Parameters
    ----------
    n : int
        Number of points in each cloud (``n = m``).
    d : int, default 2
        Dimension.
    seed : int, default 0
        Seed of the clouds.

    Returns
    -------
    Problem
        With the dense normalized cost ``C`` (``max C = 1``).
    """
    x, y = gaussian_clouds(n, d=d, seed=seed)
    C = cdist(x, y, "sqeuclidean")
    scale = float(C.max())
    C /= scale
    w = np.full(n, 1.0 / n)
    return Problem(x, y, w, w.copy(), scale, C)


def l1_marginal_error(C: np.ndarray, a: np.ndarray, b: np.ndarray, eps: float,
                      f: np.ndarray, g: np.ndarray) -> float:
    """L1 marginal error of the plan ``P_ij = a_i b_j exp((f_i + g_j - C_ij) / eps)``.

    An independent check, in NumPy/SciPy, of the error each solver reports:
    ``|P 1 - a|_1 + |P^T 1 - b|_1``, with stable log-sum-exps.
    """
    f, g = np.asarray(f, dtype=np.float64), np.asarray(g, dtype=np.float64)
    log_p = (f[:, None] + g[None, :] - C) / eps + np.log(a)[:, None] + np.log(b)[None, :]
    rows = np.exp(logsumexp(log_p, axis=1))
    cols = np.exp(logsumexp(log_p, axis=0))
    return float(np.abs(rows - a).sum() + np.abs(cols - b).sum())


# --------------------------------------------------------------------------- reporting


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[Any]],
                   align: str | None = None) -> str:
    """A GitHub-flavoured markdown table.

    Parameters
    ----------
    headers : sequence of str
        Column titles.
    rows : iterable of sequences
        Cells, converted with :class:`str`.
    align : str, optional
        One character per column: ``"l"``, ``"r"`` or ``"c"``; default: first column
        left, the others right.

    Returns
    -------
    str
        The table, one line per row, without a trailing newline.
    """
    align = align or "l" + "r" * (len(headers) - 1)
    marks = {"l": ":--", "r": "--:", "c": ":-:"}
    lines = ["| " + " | ".join(headers) + " |",
             "| " + " | ".join(marks[c] for c in align) + " |"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _cpu_model() -> str:
    """CPU model name (Linux: ``/proc/cpuinfo``; elsewhere :func:`platform.processor`)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or "unknown CPU"
    match = re.search(r"^model name\s*:\s*(.+)$", text, re.MULTILINE)
    return match.group(1).strip() if match else platform.processor() or "unknown CPU"


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def _git_revision() -> str:
    """Short commit of the repository, marked ``+local changes`` when the tree is dirty."""
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, check=True,
                             capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "otcore"], cwd=ROOT,
                               check=True, capture_output=True, text=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{rev} (+local changes)" if dirty else rev


_THREAD_ENV = ("NUMBA_NUM_THREADS", "NUMBA_THREADING_LAYER", "OMP_NUM_THREADS",
               "OMP_WAIT_POLICY", "OPENBLAS_NUM_THREADS", "XLA_FLAGS")


def machine_info(packages: Sequence[str]) -> dict[str, str]:
    """Generic description of the machine and software, for result files.

    Contains no host names or paths: CPU model, logical cores, Numba threads and threading
    layer (call it after the measurements, once Numba has picked its layer), the
    threading variables set in the environment, OS, Python, the versions of
    ``packages``, the otcore commit and the date (UTC).
    """
    import numba

    try:
        layer = numba.threading_layer()
    except ValueError:  # no parallel region has run yet
        layer = "not initialized"
    info = {
        "date (UTC)": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M"),
        "CPU": _cpu_model(),
        "logical cores": str(os.cpu_count()),
        "Numba threads": str(numba.get_num_threads()),
        "Numba threading layer": layer,
        "threading environment": " ".join(
            f"{k}={os.environ[k]}" for k in _THREAD_ENV if k in os.environ) or "defaults",
        "OS": f"{platform.system()} {platform.machine()}",
        "Python": platform.python_version(),
        "otcore commit": _git_revision(),
    }
    info.update({name: _version(name) for name in packages})
    return info


def command_line(module: str) -> str:
    """The command that ran this benchmark, e.g. ``python -m bench.sinkhorn --quick``."""
    return shlex.join(["python", "-m", module, *sys.argv[1:]])


def write_text(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` (creating its folder) and return the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def update_readme(name: str, text: str, readme: Path = ROOT / "README.md") -> bool:
    """Replace the text between ``<!-- bench:NAME -->`` and ``<!-- /bench:NAME -->``.

    Parameters
    ----------
    name : str
        Benchmark name in the markers.
    text : str
        New content (markdown) put between the markers.
    readme : Path, optional
        The file to update; the repository README by default.

    Returns
    -------
    bool
        Whether the markers were found and the file rewritten.
    """
    if not readme.exists():
        return False
    old = readme.read_text()
    pattern = re.compile(
        rf"(<!-- bench:{re.escape(name)} -->).*?(<!-- /bench:{re.escape(name)} -->)",
        re.DOTALL,
    )
    if not pattern.search(old):
        return False
    new = pattern.sub(lambda m: f"{m.group(1)}\n{text.strip()}\n{m.group(2)}", old, count=1)
    readme.write_text(new)
    return True
