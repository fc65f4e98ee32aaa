"""Batches solved one problem at a time, for the solvers without batch kernels."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

from ..collection import as_batch
from ..result import BatchResult, ConvergenceWarning, OTResult, warn_outside

__all__ = ["solve_each"]


def solve_each(solver: Callable[..., OTResult], a: Any, b: Any, C: Any,
               *args: Any, **kwargs: Any) -> BatchResult:
    """``solver(a_k, b_k, C_k, *args, **kwargs)`` for every problem of the batch
    ``(a, b, C)`` (any form of :mod:`otcore.collection`); one warning counts the problems
    that did not converge."""
    bt = as_batch(a, b, C)
    results = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for k in range(bt.size):
            results.append(solver(*bt.problem(k), *args, **kwargs))
    out = BatchResult.from_results(results, ragged=bt.sizes is not None)
    if not out.converged.all():
        bad = [k for k, r in enumerate(results) if not r.converged]
        warn_outside(f"{out.method} did not converge on {len(bad)} of {bt.size} problems "
                     f"(first: {bad[0]}, error {results[bad[0]].marginal_error:.3e})",
                     ConvergenceWarning)
    return out
