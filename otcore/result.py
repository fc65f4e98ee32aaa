"""Result objects returned by every otcore solver."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ConvergenceWarning", "OTResult"]


class ConvergenceWarning(UserWarning):
    """Emitted when a solver stops at ``max_iter`` before reaching its tolerance."""


def warn_not_converged(
    method: str, n_iter: int, error: float, tol: float, advice: str = ""
) -> None:
    """Emit the standard :class:`ConvergenceWarning` for a solver that missed ``tol``."""
    warnings.warn(
        f"{method} did not converge in {n_iter} iterations: error {error:.3e} > tol "
        f"{tol:.3e}.{' ' + advice if advice else ''}",
        ConvergenceWarning,
        stacklevel=4,
    )


@dataclass(repr=False)
class OTResult:
    """Solution of an optimal-transport problem.

    The entropic convention is the one of :func:`otcore.sinkhorn`: the plan is
    ``P_ij = a_i b_j exp((f_i + g_j - C_ij) / eps)``.

    Attributes
    ----------
    f, g : array
        Dual potentials (same namespace, device and dtype as the input).
    cost : float
        Transport cost ``<C, P>`` of the returned plan.
    value : float
        Objective of the problem that was solved (for entropic OT,
        ``<C, P> + eps * KL(P | a b^T)``, which equals the dual objective at the optimum).
    marginal_error : float
        ``|P 1 - a|_1 + |P^T 1 - b|_1`` for the returned plan.
    n_iter : int
        Iterations performed (for Sinkhorn: one row update plus one column update each).
    converged : bool
        Whether the stopping tolerance was reached before ``max_iter``.
    backend : str
        Name of the backend that ran the kernels (``"numba_cpu"``, ``"array_api"``, ...).
    eps : float or None
        Regularization strength, when the method has one.
    errors : list of tuple of (int, float)
        Short history ``(iteration, marginal error)``, recorded at each convergence check.
    method : str
        Name of the solver.
    extra : dict
        Method-specific diagnostics (for example SNS per-step densities).

    Notes
    -----
    The plan is not stored: :attr:`plan` computes it on first access and caches it.
    For a point cloud it is refused past ``OTResult.max_plan_entries`` entries, since the
    solver itself never needed the ``n x m`` matrix.

    Examples
    --------
    >>> import numpy as np, otcore as oc
    >>> C = np.array([[0.0, 1.0], [1.0, 0.0]])
    >>> res = oc.sinkhorn(None, None, C, eps=0.1)
    >>> res.converged, res.plan.shape
    (True, (2, 2))
    """

    f: Any
    g: Any
    cost: float
    value: float
    marginal_error: float
    n_iter: int
    converged: bool
    backend: str
    method: str
    eps: float | None = None
    errors: list = field(default_factory=list)
    extra: dict = field(default_factory=dict)
    _plan_fn: Callable[[], Any] | None = None
    _plan: Any = None

    max_plan_entries = 2**27

    @property
    def plan(self) -> Any:
        """The transport plan, computed on first access (dense or sparse, per method)."""
        if self._plan is None:
            if self._plan_fn is None:
                raise ValueError(f"{self.method} does not provide a transport plan")
            self._plan = self._plan_fn()
        return self._plan

    def __repr__(self) -> str:
        lines = [f"OTResult(method={self.method!r}, backend={self.backend!r},"]
        shape = (getattr(self.f, "shape", ("?",))[0], getattr(self.g, "shape", ("?",))[0])
        for name, val in [
            ("shape", shape),
            ("eps", self.eps),
            ("converged", self.converged),
            ("n_iter", self.n_iter),
            ("marginal_error", self.marginal_error),
            ("cost", self.cost),
            ("value", self.value),
        ]:
            text = f"{val:.6g}" if isinstance(val, float) else repr(val)
            lines.append(f"    {name}={text},")
        lines.append(")")
        return "\n".join(lines)
