"""Semismooth Newton method on the semi-dual of cardinality-constrained OT.

The semi-dual ``S(f) = <f, p> - sum_j q_j max_k,j(f - K_j)`` (see
:mod:`otcore.solvers.cardinality`) has the gradient ``p - T 1`` (``T 1`` the plan's
marginal on the side of ``f``). Where the top-k selection and the supports ``S_j`` of the
plan's groups do not change, ``T 1`` is affine in ``f`` with the Jacobian

    H = (1 / gamma) sum_j (diag(1_{S_j}) - 1_{S_j} 1_{S_j}^T / |S_j|)

(on ``S_j`` the threshold is the mean of ``f_i - K_ji`` minus ``gamma q_j / |S_j|``, so
``q_j`` drops out of the derivative): ``-H`` is a generalised Hessian of ``S``. It is
singular (the constant vector is in its null space, as are the entries outside every
support), so each step solves the Levenberg-Marquardt system ``(H + mu I) d = p - T 1``
by preconditioned conjugate gradients in the backend's kernel
(``TopKEvaluator.hessian_solve``), with a shift ``mu`` proportional to the gradient's
norm and adapted to the line search: divided after a full step, multiplied after a
shortened one. The line search is Armijo's on ``S`` where the predicted increase of
``S`` exceeds its rounding error, and a decrease of the L1 marginal error below (near
the maximum, where ``S`` no longer tells steps apart). Where the top-k selection is
smooth at the optimum this converges superlinearly; at a kink (ties in the selection, or
``k = 1``, where ``H = 0``) the line search eventually fails and the run reports that it
stalled.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np

__all__ = ["NewtonRun", "newton_semi_dual"]

#: Shift factor at the start, its bounds, and its change after a full / shortened step.
_SHIFT0, _SHIFT_MIN, _SHIFT_MAX, _SHIFT_STEP = 0.1, 1e-6, 1e6, 4.0
#: Armijo's constant, and the halvings of a step before the shift is raised instead.
_ARMIJO, _HALVINGS = 1e-4, 12
#: Largest forcing term of the inexact Newton step (CG's relative residual).
_FORCING = 0.1
#: The rounding level of the L1 marginal error, in units of n * eps * mass.
_FLOOR = 64
#: The rounding error of the objective, in units of sqrt(n) * eps * its magnitude.
_NOISE = 8.0


class NewtonRun(NamedTuple):
    """Outcome of :func:`newton_semi_dual`."""

    x: np.ndarray
    """The best potentials found (the last accepted iterate)."""
    n_iter: int
    """Newton steps taken."""
    status: str
    """``"converged"`` (the L1 marginal error of the kernel plan at ``x`` reached
    ``tol``), ``"rounding"`` (no step improves on an error at the rounding level of the
    marginals, ``_FLOOR * n * eps`` of the mass), ``"stalled"`` (no step improves
    elsewhere: a kink), ``"max_iter"`` or ``"stopped"`` (by the monitor)."""
    message: str
    cg_iter: int
    """Conjugate-gradient iterations over all steps."""


def newton_semi_dual(obj: Any, x0: np.ndarray, tol: float, max_iter: int, errors: list,
                     monitor: Any = None, patience: int | None = None) -> NewtonRun:
    """Maximize the semi-dual objective ``obj`` (a ``cardinality._Objective`` with
    ``simplex=True``) from ``x0`` until the L1 marginal error of its plan is ``<= tol``.

    Each iterate is evaluated with its supports listed (``obj.supports``); appends
    ``(iteration, L1 marginal error)`` to ``errors`` after each step, numbering after the
    ones already there, and stops when ``monitor`` says so, or, with ``patience``, when
    the error has not fallen below half its smallest value in ``patience`` evaluations
    of the objective (a kink, where Newton's method makes no headway).
    """
    start = errors[-1][0] if errors else 0
    mass = float(obj.p.sum())
    x = x0
    value, grad, err, dev = obj.supports(x)
    shift_factor, cg_total = _SHIFT0, 0
    best, evals, progress = err, 1, 1  # evaluations: all, and at the last progress
    floor = _FLOOR * obj.n * np.finfo(np.float64).eps * mass
    solve = obj.evaluator.hessian_solve
    xp = obj.bk.xp
    it = 0
    while it < max_iter:
        if err <= tol:
            return NewtonRun(x, it, "converged", "marginal error within tol", cg_total)
        shift = shift_factor * err * obj.q.shape[0] / (obj.gamma * mass)
        rtol = min(_FORCING, err / mass) if mass > 0 else _FORCING
        step = solve(dev, shift, xp.asarray(grad), rtol, max(50, 4 * obj.n))
        cg_total += step.iterations
        d = obj.bk.to_numpy(step.x)
        d = d - d.mean()  # S(f + c) = S(f): no step along the constant vector (the gauge)
        slope = float(grad @ d)
        gnorm = float(np.linalg.norm(grad))
        if not (slope > 0 and math.isfinite(slope) and step.residual < gnorm):
            return _stalled(x, it, err, floor, "no ascent direction", cg_total)
        # the rounding error of the objective: where the predicted increase is below it,
        # the value cannot judge a step, and the L1 error (non-monotone) does
        noise = _NOISE * math.sqrt(obj.n) * np.finfo(np.float64).eps * (
            float(np.abs(x[: obj.n]) @ obj.p) + abs(value))
        t = 1.0
        for _ in range(_HALVINGS):
            trial = x + t * d
            v_t, g_t, e_t, dev_t = obj.supports(trial)
            evals += 1
            if t * slope > noise:
                if v_t >= value + _ARMIJO * t * slope:
                    break
            elif e_t < err:
                break
            t *= 0.5
        else:
            # a direction that the line search cannot use: a larger shift (shorter steps
            # along the Hessian's near-null directions), until the shift is at its bound
            if shift_factor >= _SHIFT_MAX:
                return _stalled(x, it, err, floor, "line search failed (the objective is not "
                                "smooth here)", cg_total)
            shift_factor = min(_SHIFT_MAX, shift_factor * _SHIFT_STEP**3)
            continue
        shift_factor = (max(_SHIFT_MIN, shift_factor / _SHIFT_STEP) if t == 1.0
                        else min(_SHIFT_MAX, shift_factor * _SHIFT_STEP))
        x, value, grad, err, dev = trial, v_t, g_t, e_t, dev_t
        it += 1
        errors.append((start + it, err))
        if err <= 0.5 * best:
            best, progress = err, evals
        if patience is not None and evals - progress >= patience:
            return NewtonRun(x, it, "stalled", f"no progress in {patience} evaluations",
                             cg_total)
        if monitor is not None and monitor.active and monitor.check(*errors[-1]):
            return NewtonRun(x, it, "stopped", monitor.reason(), cg_total)
    if err <= tol:
        return NewtonRun(x, it, "converged", "marginal error within tol", cg_total)
    return NewtonRun(x, it, "max_iter", "iteration limit reached", cg_total)


def _stalled(x: np.ndarray, it: int, err: float, floor: float, reason: str, cg_total: int
             ) -> NewtonRun:
    """The run that no step improves: at the rounding level of the marginals
    (``err <= floor``) or elsewhere (a kink)."""
    if err <= floor:
        return NewtonRun(x, it, "rounding", f"no step improves the error {err:.2e}, at the "
                         "rounding level of the marginals", cg_total)
    return NewtonRun(x, it, "stalled", reason, cg_total)
