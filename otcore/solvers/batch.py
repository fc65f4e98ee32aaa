"""Sinkhorn over a batch of problems: one loop, one kernel call per half-step for the
whole batch, and an active set from which each problem leaves on its own tolerance."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from .._array import safe_log
from ..backends import get_backend
from ..collection import Batch
from ..result import BatchResult, ConvergenceWarning, OTResult, warn_outside
from ._finish import finish_entropic
from ._monitor import Monitor
from ._problem import make_problem

__all__ = ["sinkhorn_batch"]


def _row_errors(xp: Any, w: Any, f: Any, f_next: Any, eps: float) -> Any:
    """Per problem, ``sum_i w_i |exp((f_i - f_next_i) / eps) - 1|``: the L1 row-marginal
    error of ``(f, g)`` from the next row update ``f_next = T(g)`` (see
    :func:`otcore.solvers.sinkhorn.sinkhorn_loop`)."""
    d = xp.minimum((f - f_next) / eps, xp.full_like(f, 50.0))
    return xp.sum(xp.where(w > 0, w * xp.abs(xp.expm1(d)), 0), axis=1)


def _loop(ops: Any, bt: Batch, eps: float, tol: float, max_iter: int, check_every: int,
          symmetric: bool, monitor: Monitor | None, to_host: Any
          ) -> tuple[Any, Any, np.ndarray, list, str]:
    """Alternating (or symmetric, from ``f = g = 0``) Sinkhorn on every problem of
    ``bt``; returns ``f, g, n_iter, errors`` and the path that ran."""
    xp, B = bt.xp, bt.size
    n, m = bt.shape
    log_a, log_b = safe_log(xp, bt.a), safe_log(xp, bt.b)
    active = np.arange(B, dtype=np.int64)
    f = xp.zeros((B, n), dtype=bt.dtype)
    g = xp.zeros((B, m), dtype=bt.dtype)
    if not symmetric:
        g = ops.softmin(f + eps * log_a, eps, 0, active, g)
    it = ops.iterator(log_a, log_b, eps, symmetric)
    n_iter = np.full(B, max_iter, dtype=np.int64)
    errors: list = [[] for _ in range(B)]
    k = 0
    while k < max_iter and active.size:
        # the next check is after iteration k_check (0-based): run up to it unchecked
        k_check = min(((k // check_every) + 1) * check_every, max_iter) - 1
        if k_check > k:
            f, g = it.advance(f, g, active, k_check - k)
            k = k_check
        f_new, g_new = it.step(f, g, active)
        if symmetric:  # the step averaged: T(g) = 2 f_new - f, T(f) = 2 g_new - g
            err = (_row_errors(xp, bt.a, f, 2 * f_new - f, eps)
                   + _row_errors(xp, bt.b, g, 2 * g_new - g, eps))
        else:
            err = _row_errors(xp, bt.a, f, f_new, eps)
        err = np.asarray(to_host(err), dtype=np.float64)
        for q in active:
            errors[q].append((k, float(err[q])))
        if not np.all(np.isfinite(err[active])):
            raise FloatingPointError(
                "Sinkhorn produced a non-finite error in a batch; eps may be too small for "
                "the cost's scale (see oc.sinkhorn)")
        n_iter[active[err[active] < tol]] = k  # converged: keep (f, g), leave the loop
        active = active[err[active] >= tol]
        keep = _mask(xp, B, active)
        f, g = xp.where(keep, f_new, f), xp.where(keep, g_new, g)
        if (monitor is not None and monitor.active and active.size
                and monitor.check(k, float(err[active].max()))):
            n_iter[active] = k + 1
            break
        k += 1
    return f, g, n_iter, errors, "log" if getattr(it, "log_domain", True) else "gibbs"


def _mask(xp: Any, B: int, active: np.ndarray) -> Any:
    """A ``(B, 1)`` boolean array, True on the rows listed in ``active``."""
    keep = np.zeros((B, 1), dtype=bool)
    keep[active] = True
    return xp.asarray(keep)


def sinkhorn_batch(bt: Batch, eps: float, *, tol: float, max_iter: int, check_every: int,
                   symmetric: bool, backend: Any, monitor: Monitor, advice: str
                   ) -> BatchResult:
    """Solve every problem of ``bt`` (see :func:`otcore.sinkhorn` for the options)."""
    xp, ns = bt.xp, bt.namespaces
    arrays = [v for v in (bt.a, bt.b, bt.C, bt.x, bt.y) if v is not None]
    bk = get_backend(*arrays, backend=backend)
    ops = bk.bind_batch(bt)
    f, g, n_iter, errors, path = _loop(ops, bt, eps, tol, max_iter, check_every, symmetric,
                                       monitor, bk.to_numpy)

    log_a, log_b = safe_log(xp, bt.a), safe_log(xp, bt.b)
    stats = ops.plan_stats(f + eps * log_a, g + eps * log_b, eps)
    rows, cols = stats.rows, stats.cols
    host = [np.asarray(bk.to_numpy(v), dtype=np.float64) for v in (
        xp.sum(xp.abs(rows - bt.a), axis=1) + xp.sum(xp.abs(cols - bt.b), axis=1),
        xp.sum(xp.where(rows > 0, f * rows, 0), axis=1)
        + xp.sum(xp.where(cols > 0, g * cols, 0), axis=1),
        xp.sum(bt.a * f, axis=1) + xp.sum(bt.b * g, axis=1),
        xp.sum(rows, axis=1), xp.sum(bt.a, axis=1) * xp.sum(bt.b, axis=1), stats.cost)]
    marginal_error, fp, dual, transported, mass, cost = host
    value = fp - eps * (transported - mass)
    dual = dual - eps * (transported - mass)
    converged = marginal_error <= tol
    if not converged.all():
        bad = np.flatnonzero(~converged)
        warn_outside(
            f"sinkhorn did not converge on {bad.size} of {bt.size} problems (first: "
            f"{bad[0]}, after {n_iter[bad[0]]} iterations, error "
            f"{marginal_error[bad[0]]:.3e} > tol {tol:.3e}). {advice}", ConvergenceWarning)

    def item(k: int) -> OTResult:
        n_k, m_k = bt.problem_size(k)
        prob = make_problem(*bt.problem(k), bk)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            return finish_entropic(prob, f[k, :n_k], g[k, :m_k], eps,
                                   n_iter=int(n_iter[k]), errors=errors[k], tol=tol,
                                   method="sinkhorn", estimate_met=False, advice="")

    if bt.sizes is None:
        f_out, g_out = ns.to_user(f), ns.to_user(g)
    else:
        f_out = [ns.to_user(f[k, :n]) for k, (n, _) in enumerate(bt.sizes)]
        g_out = [ns.to_user(g[k, :m]) for k, (_, m) in enumerate(bt.sizes)]
    return BatchResult(
        f=f_out, g=g_out, cost=cost, value=value, marginal_error=marginal_error,
        dual_value=dual, n_iter=n_iter, converged=converged, backend=bk.name,
        method="sinkhorn", eps=eps, errors=errors,
        extra={"path": path, **({"stopped": monitor.stopped} if monitor.stopped else {})},
        _item_fn=item,
    )

