"""Progress and control of long solves: a user callback, a progress display and a time
limit, checked at the solvers' convergence checks (never more often)."""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .._validation import check_bool

__all__ = ["IterationInfo", "Monitor", "make_monitor"]

#: Seconds between two plain progress lines (without tqdm).
_LINE_EVERY = 2.0


@dataclass(frozen=True)
class IterationInfo:
    """What a ``callback`` receives at each convergence check.

    Attributes
    ----------
    n_iter : int
        Iterations completed; the current potentials are those after ``n_iter``
        iterations.
    error : float
        Their error (the solver's stopping criterion; the L1 marginal error for balanced
        entropic OT).
    elapsed : float
        Seconds since the solve started.
    method : str
        The solver.
    """

    n_iter: int
    error: float
    elapsed: float
    method: str


class Monitor:
    """Calls the callback, shows progress and enforces the time limit, for one solve.

    :meth:`check` returns the reason to stop (``"callback"`` or ``"time_limit"``), or
    ``None`` to go on.
    """

    def __init__(self, method: str, callback: Callable[[IterationInfo], Any] | None,
                 verbose: bool, time_limit: float | None, tol: float):
        self.method, self.callback, self.verbose = method, callback, verbose
        self.time_limit, self.tol = time_limit, tol
        self.start = time.perf_counter()
        self.stopped: str | None = None
        self._bar: Any = None
        self._last_line = -math.inf

    @property
    def active(self) -> bool:
        """Whether anything is watched (otherwise the solver may skip the calls)."""
        return bool(self.callback or self.verbose or self.time_limit is not None)

    def check(self, n_iter: int, error: float) -> str | None:
        elapsed = time.perf_counter() - self.start
        if self.verbose:
            self._show(n_iter, error, elapsed)
        if self.callback is not None and self.callback(
                IterationInfo(n_iter, error, elapsed, self.method)) is True:
            self.stopped = "callback"
        elif self.time_limit is not None and elapsed >= self.time_limit:
            self.stopped = "time_limit"
        return self.stopped

    def _show(self, n_iter: int, error: float, elapsed: float) -> None:
        if self._bar is None and self._last_line == -math.inf:
            try:
                from tqdm.auto import tqdm
            except ImportError:
                tqdm = None
            if tqdm is not None:
                self._bar = tqdm(desc=self.method, unit="it", leave=True)
        if self._bar is not None:
            self._bar.n = n_iter
            self._bar.set_postfix_str(f"error {error:.2e} (tol {self.tol:.0e})")
            return
        if elapsed - self._last_line >= _LINE_EVERY:
            self._last_line = elapsed
            print(f"{self.method}: iteration {n_iter}, error {error:.3e} (tol "
                  f"{self.tol:.1e}), {elapsed:.1f} s", file=sys.stderr, flush=True)

    def close(self) -> None:
        """End the progress display."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def reason(self) -> str:
        """Why the solve stopped early, for the non-convergence warning."""
        if self.stopped == "callback":
            return "Stopped by the callback."
        if self.stopped == "time_limit":
            return f"Stopped at the time limit of {self.time_limit:g} s."
        return ""


def make_monitor(method: str, callback: Any, verbose: Any, time_limit: Any,
                 tol: float) -> Monitor:
    """Validate the monitoring options of a public solver and make its :class:`Monitor`."""
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be callable, got {type(callback).__name__}")
    verbose = check_bool(verbose, "verbose")
    if time_limit is not None:
        if isinstance(time_limit, bool) or not isinstance(time_limit, (int, float)):
            raise TypeError(f"time_limit must be a number of seconds, got "
                            f"{type(time_limit).__name__}")
        if not time_limit > 0:
            raise ValueError(f"time_limit must be > 0 seconds, got {time_limit}")
        time_limit = float(time_limit)
    return Monitor(method, callback, verbose, time_limit, tol)


class ProgressBar:
    """Progress over a known number of steps: a tqdm bar when tqdm is installed,
    otherwise a line on stderr every 2 seconds at most."""

    def __init__(self, desc: str, total: int, unit: str):
        self.desc, self.total, self.unit = desc, total, unit
        self.done = 0
        self.start = self._last_line = time.perf_counter()
        try:
            from tqdm.auto import tqdm
        except ImportError:
            tqdm = None
        self._bar = tqdm(desc=desc, total=total, unit=unit) if tqdm is not None else None

    def update(self, count: int = 1) -> None:
        self.done += count
        if self._bar is not None:
            self._bar.update(count)
            return
        now = time.perf_counter()
        if now - self._last_line >= _LINE_EVERY or self.done == self.total:
            self._last_line = now
            print(f"{self.desc}: {self.done}/{self.total} {self.unit}s, "
                  f"{now - self.start:.1f} s", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
