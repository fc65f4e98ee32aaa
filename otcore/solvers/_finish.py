"""The one finisher of entropic results: exact statistics of the returned potentials,
``converged`` from their exact error, the warning, and the result object.

Used by every entropic solver (:func:`otcore.sinkhorn`,
:func:`otcore.sinkhorn_newton_sparse`) and so by the losses built on them.
"""

from __future__ import annotations

import math
from typing import Any

from ..geometry import PointCloud
from ..result import OTResult, check_plan_entries, warn_not_converged
from ._problem import Problem

__all__ = ["finish_entropic", "kl"]


def kl(xp: Any, p: Any, q: Any, axis: int | None = None) -> Any:
    """Generalized ``KL(p | q) = sum p log(p / q) - p + q`` (``0 log 0 = 0``), summed over
    ``axis`` (all entries by default). Terms with ``p`` near ``q`` are written
    ``q ((1 + x) log1p(x) - x)``, ``x = (p - q) / q``, so that nearly equal marginals (a
    large ``rho``) lose no digits to cancellation."""
    pos = (p > 0) & (q > 0)
    q1 = xp.where(pos, q, 1)
    r = xp.where(pos, p, 1) / q1
    near = xp.abs(r - 1) < 0.5
    x = xp.where(near, xp.where(pos, p - q, 0) / q1, 0)
    stable = q * ((1 + x) * xp.log1p(x) - x)
    direct = q * (xp.where(r > 0, r * xp.log(xp.where(r > 0, r, 1)), 0) - r + 1)
    return xp.sum(xp.where(pos, xp.where(near, stable, direct), q), axis=axis)


def finish_entropic(
    prob: Problem, f: Any, g: Any, eps: float, *, n_iter: int, errors: list, tol: float,
    method: str, estimate_met: bool, advice: str, steps: tuple[int, str] | None = None,
    extra: dict | None = None, ignored_mass: float = 0.0,
) -> OTResult:
    """Package potentials of an entropic problem as an :class:`~otcore.OTResult`.

    One pass over the cost computes the exact marginals, ``<C, P>``, the primal objective
    (with the KL terms of relaxed marginals) and the dual one. The exact L1 violation of
    the marginal conditions (the L1 marginal error for exact marginals) decides
    ``converged``; a solver whose own
    estimate met ``tol`` (``estimate_met``) while the exact error does not has hit a
    rounding floor, and the warning says so instead of giving ``advice``. ``steps`` is
    what the warning counts, ``(count, unit)``; default ``(n_iter, "iterations")``.
    ``ignored_mass`` bounds the plan mass outside the pairs that a truncated geometry
    (``prob.ops`` block-sparse) keeps: each ignored entry misses from one row and one
    column, so twice the bound is added to the exact error of the kept plan, and
    ``marginal_error`` bounds the error of the full plan of the returned potentials.
    """
    xp, bk, ns = prob.xp, prob.backend, prob.namespaces
    log_a, log_b = prob.log_weights()
    hf, hg = f + eps * log_a, g + eps * log_b
    ops = prob.ops
    stats = ops.plan_stats(hf, hg, eps)
    rows, cols = stats.rows, stats.cols
    num = bk.to_float
    transported = num(xp.sum(rows))
    mass = num(xp.sum(prob.a)) * num(xp.sum(prob.b))
    # <C, P> + eps KL(P | a b^T) = <f, P 1> + <g, P^T 1> - eps (sum P - sum a sum b)
    value = num(xp.sum(xp.where(rows > 0, f * rows, 0)) + xp.sum(xp.where(cols > 0, g * cols, 0))
                ) - eps * (transported - mass)
    dual_value = -eps * (transported - mass)
    marginal_error = 0.0
    for w, pot, marg, rho in ((prob.a, f, rows, prob.rho[0]), (prob.b, g, cols, prob.rho[1])):
        if math.isinf(rho):
            marginal_error += num(xp.sum(xp.abs(marg - w)))
            dual_value += num(xp.sum(w * pot))
            continue
        # the optimality condition of a relaxed marginal: P 1 = a exp(-f / rho)
        marginal_error += num(xp.sum(xp.abs(marg - w * xp.exp(-pot / rho))))
        dual_value -= rho * num(xp.sum(w * xp.expm1(-pot / rho)))
        value += rho * num(kl(xp, marg, w))
    marginal_error += 2.0 * ignored_mass
    converged = marginal_error <= tol
    if not converged:
        count, unit = steps or (n_iter, "iterations")
        warn_not_converged(
            method, count, marginal_error, tol,
            "The error is at its rounding floor: use a larger tol." if estimate_met
            else advice, unit=unit,
        )

    n, m = prob.geom.shape
    is_cloud = isinstance(prob.geom, PointCloud)

    def plan() -> Any:
        if is_cloud:
            check_plan_entries(n, m)
        return ns.to_user(ops.plan(hf, hg, eps))

    return OTResult(
        f=ns.to_user(f), g=ns.to_user(g), cost=float(stats.cost), value=float(value),
        marginal_error=marginal_error, n_iter=n_iter, converged=converged, backend=bk.name,
        method=method, eps=eps, dual_value=dual_value, errors=errors, extra=extra or {},
        marginals=(ns.to_user(rows), ns.to_user(cols)), mass=transported,
        reg_m=prob.rho, _plan_fn=plan,
        _apply_fn=lambda V, axis: ops.apply(hf, hg, eps, V, axis), _namespaces=ns,
        _points=(prob.geom.x, prob.geom.y) if is_cloud else None, _shape=(n, m),
        _dtype=prob.dtype,
    )
