"""Sinkhorn over a batch of problems: one loop, one kernel call per half-step for the
whole batch, and an active set from which each problem leaves on its own tolerance."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._array import safe_log
from ..backends import get_backend
from ..backends._contract import row_errors, take_rows
from ..collection import Batch
from ..result import BatchResult, ConvergenceWarning, OTResult, warn_outside
from ._finish import finish_entropic, kl
from ._monitor import Monitor
from ._problem import make_problem

__all__ = ["sinkhorn_batch"]


def _translation(xp: Any, f: Any, g: Any, log_a: Any, log_b: Any,
                 rho: tuple[float, float]) -> Any:
    """Per problem (a column ``(B, 1)``), the shift ``t`` that maximizes the unbalanced
    dual along ``(f + t, g - t)`` (see :func:`otcore.solvers.sinkhorn._translation`)."""
    def log_mass(log_w: Any, pot: Any, r: float) -> Any:
        z = log_w if math.isinf(r) else log_w - pot / r
        top = xp.max(z, axis=1, keepdims=True)
        return top + xp.log(xp.sum(xp.exp(z - top), axis=1, keepdims=True))

    inv = sum(0.0 if math.isinf(r) else 1 / r for r in rho)
    return (log_mass(log_a, f, rho[0]) - log_mass(log_b, g, rho[1])) / inv


def _loop(ops: Any, bt: Batch, eps: float, tol: float, max_iter: int, check_every: int,
          symmetric: bool, rho: tuple[float, float], monitor: Monitor | None,
          to_host: Any) -> tuple[Any, Any, np.ndarray, list, Any]:
    """Alternating (or symmetric, from ``f = g = 0``) Sinkhorn on every problem of
    ``bt``, balanced or relaxed by ``rho`` (with translation-invariant updates, as
    :func:`otcore.solvers.sinkhorn.sinkhorn_loop`); returns ``f, g, n_iter, errors``
    and the iterator that ran."""
    xp, B = bt.xp, bt.size
    n, m = bt.shape
    log_a, log_b = safe_log(xp, bt.a), safe_log(xp, bt.b)
    ta, tb = (1.0 if math.isinf(r) else r / (r + eps) for r in rho)
    shift = rho != (math.inf, math.inf) and not symmetric
    active = np.arange(B, dtype=np.int64)
    f = xp.zeros((B, n), dtype=bt.dtype)
    g = xp.zeros((B, m), dtype=bt.dtype)
    it = ops.iterator(log_a, log_b, eps, symmetric, (ta, tb))
    if not symmetric:
        g = it.first_g(f, active, g)
    n_iter = np.full(B, max_iter, dtype=np.int64)
    errors: list = [[] for _ in range(B)]
    # (f, g) are the running iterates of the active problems; a problem that converges
    # leaves its potentials in (f_done, g_done) and the loop
    f_done, g_done, left = f, g, np.zeros(B, dtype=bool)
    k = 0
    while k < max_iter and active.size:
        # the next check is after iteration k_check (0-based): run up to it unchecked
        k_check = min(((k // check_every) + 1) * check_every, max_iter) - 1
        if shift:  # one step at a time: each shifts by its own translation
            while k < k_check:
                t = _translation(xp, f, g, log_a, log_b, rho)
                f, g = it.step(f + t, g - t, active)
                k += 1
            t = _translation(xp, f, g, log_a, log_b, rho)
            f_new, g_new = it.step(f + t, g - t, active)
        else:
            f, g, f_new, g_new = it.advance_to_check(f, g, active, k_check - k + 1)
            k = k_check
        if shift:  # T(g) = T(g - t) - t, and T(g - t) = f_new / tau_a
            rows = None if active.size == B else xp.asarray(active)
            e = row_errors(xp, *take_rows(xp, rows, bt.a, f, f_new / ta - t), eps, rho[0])
        else:
            e = it.check_errors(xp, (bt.a, bt.b), f, g, f_new, g_new, active, rho)
        err = np.asarray(to_host(e), dtype=np.float64)
        for q, e_q in zip(active.tolist(), err.tolist(), strict=True):
            errors[q].append((k, e_q))
        if not np.all(np.isfinite(err)):
            raise FloatingPointError(
                "Sinkhorn produced a non-finite error in a batch; eps may be too small for "
                "the cost's scale (see oc.sinkhorn)")
        leaving = active[err < tol]  # converged: keep (f, g), leave the loop
        if leaving.size:
            n_iter[leaving] = k
            left[leaving] = True
            now = _mask(xp, B, leaving)
            f_in, g_in = it.check_input(f, g, leaving)
            f_done, g_done = xp.where(now, f_in, f_done), xp.where(now, g_in, g_done)
            active, err = active[err >= tol], err[err >= tol]
        f, g = f_new, g_new
        if (monitor is not None and monitor.active and active.size
                and monitor.check(k, float(err.max()))):
            n_iter[active] = k + 1
            break
        k += 1
    if left.any():
        done = _mask(xp, B, np.flatnonzero(left))
        f, g = xp.where(done, f_done, f), xp.where(done, g_done, g)
    return f, g, n_iter, errors, it


def _mask(xp: Any, B: int, active: np.ndarray) -> Any:
    """A ``(B, 1)`` boolean array, True on the rows listed in ``active``."""
    keep = np.zeros((B, 1), dtype=bool)
    keep[active] = True
    return xp.asarray(keep)


@dataclass
class _Solved:
    """The numbers of a solved batch (potentials in the compute namespace)."""

    f: Any
    g: Any
    n_iter: np.ndarray
    errors: list
    path: str
    marginal_error: np.ndarray
    value: np.ndarray
    dual: np.ndarray
    cost: np.ndarray


def _side(xp: Any, w: Any, pot: Any, marg: Any, rho: float) -> tuple[Any, Any, Any]:
    """Per problem, one side's violation of its marginal condition, its term of the dual
    objective and its KL penalty (zero for an exact marginal)."""
    if math.isinf(rho):
        return (xp.sum(xp.abs(marg - w), axis=1),
                xp.sum(xp.where(w > 0, w * pot, 0), axis=1), xp.zeros_like(w[:, 0]))
    target = w * xp.exp(-pot / rho)
    return (xp.sum(xp.abs(marg - target), axis=1),
            -rho * xp.sum(w * xp.expm1(-pot / rho), axis=1), rho * kl(xp, marg, w, axis=1))


def _solve(bt: Batch, eps: float, tol: float, max_iter: int, check_every: int,
           symmetric: bool, rho: tuple[float, float], backend: Any,
           monitor: Monitor | None) -> _Solved:
    """The loop and the exact statistics of its potentials."""
    xp = bt.xp
    bk = _backend(bt, backend)
    ops = bk.bind_batch(bt)
    f, g, n_iter, errors, it = _loop(ops, bt, eps, tol, max_iter, check_every, symmetric,
                                     rho, monitor, bk.to_numpy)
    log_a, log_b = safe_log(xp, bt.a), safe_log(xp, bt.b)
    stats = it.plan_stats(f + eps * log_a, g + eps * log_b)
    rows, cols = stats.rows, stats.cols
    (err_a, dual_a, kl_a), (err_b, dual_b, kl_b) = (
        _side(xp, bt.a, f, rows, rho[0]), _side(xp, bt.b, g, cols, rho[1]))
    host = [np.asarray(bk.to_numpy(v), dtype=np.float64) for v in (
        err_a + err_b,
        xp.sum(xp.where(rows > 0, f * rows, 0), axis=1)
        + xp.sum(xp.where(cols > 0, g * cols, 0), axis=1) + kl_a + kl_b,
        dual_a + dual_b,
        xp.sum(rows, axis=1), xp.sum(bt.a, axis=1) * xp.sum(bt.b, axis=1), stats.cost)]
    marginal_error, fp, dual, transported, mass, cost = host
    return _Solved(f, g, n_iter, errors, it.path, marginal_error,
                   fp - eps * (transported - mass), dual - eps * (transported - mass), cost)


def _backend(bt: Batch, backend: Any) -> Any:
    arrays = [v for v in (bt.a, bt.b, bt.C, bt.x, bt.y) if v is not None]
    return get_backend(*arrays, backend=backend)


def _solve_chunk(job: tuple, idx: np.ndarray) -> _Solved:
    """A cluster task: the problems ``idx`` of the scattered batch."""
    bt, options = job
    return _solve(bt.take(idx), monitor=None, **options)


def _solve_on_cluster(client: Any, bt: Batch, options: dict, verbose: bool) -> _Solved:
    """Chunks of the batch as tasks of a Dask cluster (see :mod:`otcore._dask`)."""
    from .._dask import map_tiles, total_threads
    from ._monitor import ProgressBar

    xp = bt.xp
    size = max(1, -(-bt.size // (4 * total_threads(client))))
    chunks = [np.arange(s, min(s + size, bt.size)) for s in range(0, bt.size, size)]
    parts: list = [None] * len(chunks)
    bar = ProgressBar("sinkhorn batch", len(chunks), "chunk") if verbose else None
    try:
        for k, part in map_tiles(client, _solve_chunk, (bt, options), chunks):
            parts[k] = part
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    paths = {p.path for p in parts}
    return _Solved(
        xp.concat([xp.asarray(p.f) for p in parts]), xp.concat([xp.asarray(p.g) for p in parts]),
        np.concatenate([p.n_iter for p in parts]), [e for p in parts for e in p.errors],
        paths.pop() if len(paths) == 1 else "mixed",
        *(np.concatenate([getattr(p, name) for p in parts])
          for name in ("marginal_error", "value", "dual", "cost")))


def sinkhorn_batch(bt: Batch, eps: float, *, tol: float, max_iter: int, check_every: int,
                   symmetric: bool, rho: tuple[float, float], backend: Any, monitor: Monitor,
                   advice: str, client: Any = None) -> BatchResult:
    """Solve every problem of ``bt`` (see :func:`otcore.sinkhorn` for the options), in
    this process or, with a Dask ``client``, in chunks on its workers."""
    ns = bt.namespaces
    bk = _backend(bt, backend)
    options = {"eps": eps, "tol": tol, "max_iter": max_iter, "check_every": check_every,
               "symmetric": symmetric, "rho": rho, "backend": backend}
    if client is None:
        out = _solve(bt, monitor=monitor, **options)
    else:
        out = _solve_on_cluster(client, bt, options, monitor.verbose)
    f, g, n_iter, errors = out.f, out.g, out.n_iter, out.errors
    converged = out.marginal_error <= tol
    if not converged.all():
        bad = np.flatnonzero(~converged)
        warn_outside(
            f"sinkhorn did not converge on {bad.size} of {bt.size} problems (first: "
            f"{bad[0]}, after {n_iter[bad[0]]} iterations, error "
            f"{out.marginal_error[bad[0]]:.3e} > tol {tol:.3e}). "
            f"{monitor.reason() or advice}",
            ConvergenceWarning)

    def item(k: int) -> OTResult:
        n_k, m_k = bt.problem_size(k)
        prob = make_problem(*bt.problem(k), bk, None if rho == (math.inf, math.inf) else rho)
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
    extra = {"path": out.path}
    if monitor.stopped:
        extra["stopped"] = monitor.stopped
    return BatchResult(
        f=f_out, g=g_out, cost=out.cost, value=out.value, marginal_error=out.marginal_error,
        dual_value=out.dual, n_iter=n_iter, converged=converged, backend=bk.name,
        method="sinkhorn", eps=eps, errors=errors, extra=extra, _item_fn=item,
    )
