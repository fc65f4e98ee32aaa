"""The result objects of otcore, and the warning for non-convergence.

:class:`OTResult` is what every solver returns; :class:`LossResult` what the losses built
on solvers return. Both hold arrays of the caller's library. This module sits at the
bottom of the package: the solvers fill these objects in (``otcore.solvers._finish``),
handing over closures for the plan and its application, so that the result never needs
to know which backend computed it.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ._array import Namespaces, astype, concat, namespaces

__all__ = ["BatchResult", "ConvergenceWarning", "LossResult", "OTResult", "check_plan_entries",
           "warn_not_converged", "warn_outside"]


class ConvergenceWarning(UserWarning):
    """Emitted when a solver stops before reaching its tolerance."""


def _outside_otcore(frame: Any) -> bool:
    return frame.f_globals.get("__name__", "").partition(".")[0] != "otcore"


def warn_outside(message: str, category: type[Warning] = ConvergenceWarning) -> None:
    """Emit a warning attributed to the first caller outside otcore (however deep inside
    the package it is raised), so that it points at the user's line."""
    frame, level = sys._getframe(), 1
    while frame.f_back is not None and not _outside_otcore(frame):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, category, stacklevel=level)


def warn_not_converged(
    method: str, n_iter: int, error: float, tol: float, advice: str = "",
    unit: str = "iterations",
) -> None:
    """Emit the standard :class:`ConvergenceWarning` (see :func:`warn_outside`)."""
    warn_outside(f"{method} did not converge in {n_iter} {unit}: error {error:.3e} > tol "
                 f"{tol:.3e}.{' ' + advice if advice else ''}")


def check_plan_entries(n: int, m: int) -> None:
    """Refuse to form the ``(n, m)`` plan of a point cloud past
    ``OTResult.max_plan_entries`` entries (:class:`ValueError`)."""
    if n * m > OTResult.max_plan_entries:
        raise ValueError(
            f"the plan of this point cloud has {n * m:.3g} entries, above "
            f"OTResult.max_plan_entries={OTResult.max_plan_entries}; use apply() or "
            "barycentric_projection(), or raise that limit if you really want to "
            "materialize it"
        )


@dataclass(repr=False)
class OTResult:
    """Solution of an optimal-transport problem.

    The entropic convention is the one of :func:`otcore.sinkhorn`: the plan is
    ``P_ij = a_i b_j exp((f_i + g_j - C_ij) / eps)``.

    Attributes
    ----------
    f, g : array
        Dual potentials, in the caller's array library, device and dtype.
    cost : float
        Transport cost ``<C, P>`` of the returned plan.
    value : float
        Objective of the problem that was solved, at the returned plan: for entropic OT
        ``<C, P> + eps KL(P | a b^T)``, plus ``rho KL(P 1 | a)`` (and the same for ``b``)
        for a marginal relaxed by ``reg_m``.
    marginal_error : float
        ``|P 1 - a|_1 + |P^T 1 - b|_1`` for the returned plan; for a marginal relaxed by
        ``rho KL`` (unbalanced OT) its term is the violation of the optimality condition,
        ``|P 1 - a exp(-f / rho_a)|_1``.
    n_iter : int
        Iterations performed (for Sinkhorn: one row update plus one column update each).
    converged : bool
        Whether ``marginal_error`` of the returned plan is within the tolerance.
    backend : str
        The kernels that ran (``"numba_cpu"``, ``"cupy_gpu"`` or ``"array_api"``).
    method : str
        Name of the solver.
    eps : float or None
        Regularization strength, when the method has one.
    dual_value : float or None
        For entropic OT, the dual objective at the returned potentials,
        ``<a, f> + <b, g> - eps (sum P - sum a sum b)``, where a marginal relaxed by
        ``rho`` contributes ``-rho <a, exp(-f / rho) - 1>`` instead of ``<a, f>``: equal
        to ``value`` at the optimum, and the more accurate estimate of the optimal value
        before it (its error is second order in the marginal error, that of ``value``
        first order).
    errors : list of tuple of (int, float)
        Short history ``(iteration, marginal error)``, recorded at each convergence check.
    extra : dict
        Method-specific diagnostics (for example SNS per-step densities).
    marginals : pair of arrays or None
        ``(P 1, P^T 1)`` of the returned plan (entropic solvers).
    mass : float or None
        The transported mass ``sum P`` (entropic solvers; ``sum a`` when balanced).
    reg_m : pair of float or None
        ``(rho_a, rho_b)`` of an entropic problem (``inf``: exact marginal).

    Notes
    -----
    The plan is not stored: :attr:`plan` computes it on first access and caches it.
    For a point cloud it is refused past ``OTResult.max_plan_entries`` entries, since the
    solver itself never needed the ``n x m`` matrix; :meth:`apply` and
    :meth:`barycentric_projection` use the plan without forming it.

    Examples
    --------
    >>> import numpy as np, otcore as oc
    >>> C = np.array([[0.0, 1.0], [1.0, 0.0]])
    >>> res = oc.sinkhorn(None, None, C, eps=0.1)
    >>> res.converged, res.plan.shape
    (True, (2, 2))
    >>> res.apply(np.ones(2)).round(12)  # P 1 = a
    array([0.5, 0.5])
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
    dual_value: float | None = None
    errors: list = field(default_factory=list)
    extra: dict = field(default_factory=dict)
    marginals: tuple[Any, Any] | None = None
    mass: float | None = None
    reg_m: tuple[float, float] | None = None
    _plan_fn: Callable[[], Any] | None = None
    _plan: Any = None
    _apply_fn: Callable[[Any, int], Any] | None = None
    _namespaces: Namespaces | None = None
    _points: tuple[Any, Any] | None = None
    _shape: tuple[int, int] | None = None
    _dtype: Any = None

    max_plan_entries = 2**27

    @property
    def plan(self) -> Any:
        """The transport plan, computed on first access (dense or sparse, per method)."""
        if self._plan is None:
            if self._plan_fn is None:
                raise ValueError(f"{self.method} does not provide a transport plan")
            self._plan = self._plan_fn()
        return self._plan

    def _operand(self, v: Any, axis: Any, name: str) -> tuple[Any, bool]:
        """``v`` validated as an operand along ``axis``, in the compute namespace, as a
        2-D block; and whether it was a vector."""
        if self._apply_fn is None or self._namespaces is None or self._shape is None:
            raise ValueError(f"{self.method} does not provide plan applications")
        if isinstance(axis, bool) or axis not in (0, 1):
            raise ValueError(f"axis must be 0 (sum over sources, P^T u) or 1 (sum over "
                             f"targets, P v), got {axis!r}")
        ns = self._namespaces
        other = namespaces(v, names=(name,))
        if other.library != ns.library and not isinstance(v, (list, tuple)):
            raise TypeError(f"{name} comes from {other.library} but the problem from "
                            f"{ns.library}; move it first (otcore never copies implicitly)")
        xp = ns.compute
        v = ns.to_compute(v)
        size = self._shape[axis]
        if v.ndim not in (1, 2) or v.shape[0] != size:
            side = "targets (m)" if axis == 1 else "sources (n)"
            raise ValueError(f"{name} must have shape ({size},) or ({size}, k), one row per "
                             f"point of the {side} for axis={axis}; got {tuple(v.shape)}")
        if not bool(xp.all(xp.isfinite(v))):
            raise ValueError(f"{name} contains NaN or infinite values")
        vector = v.ndim == 1
        v = astype(xp, v, self._dtype)
        return (v[:, None] if vector else v), vector

    def apply(self, v: Any, axis: int = 1) -> Any:
        """Apply the plan to vectors without forming it.

        Parameters
        ----------
        v : array_like of shape (m,) or (m, k) for ``axis=1``; (n,) or (n, k) for ``axis=0``
            Vectors (columns of a block) indexed by the targets (``axis=1``) or by the
            sources (``axis=0``), in the problem's array library.
        axis : {1, 0}, default 1
            The axis of ``P`` summed over: ``1`` gives ``P v`` (``sum_j P_ij v_j``, one
            value per source), ``0`` gives ``P^T v`` (``sum_i P_ij v_i``, one per target).

        Returns
        -------
        array of shape (n,) / (n, k) for ``axis=1``, (m,) / (m, k) for ``axis=0``
            In the problem's array library and dtype.

        Notes
        -----
        For a point cloud the plan entries are recomputed in tiles from the potentials
        (one pass over the cost, ``O((n + m) k)`` memory); for a dense cost the pass reads
        the cost. Sparse plans (cardinality OT) are multiplied as sparse matrices.

        Examples
        --------
        >>> import numpy as np, otcore as oc
        >>> rng = np.random.default_rng(0)
        >>> res = oc.sinkhorn(None, None, oc.PointCloud(rng.random((40, 2)),
        ...                                             rng.random((30, 2))), eps=0.1)
        >>> bool(np.allclose(res.apply(np.ones(30)), 1 / 40))  # P 1 = a
        True
        """
        V, vector = self._operand(v, axis, "v")
        out = self._apply_fn(V, axis)
        return self._namespaces.to_user(out[:, 0] if vector else out)

    def barycentric_projection(self, features: Any = None, axis: int = 1) -> Any:
        """Barycentric projection of the plan: each point's plan-weighted mean of the
        other side's features, without forming the plan.

        Parameters
        ----------
        features : array_like of shape (m, k) or (m,) for ``axis=1``; (n, k) / (n,) for
            ``axis=0``, optional
            Features of the targets (``axis=1``) or of the sources (``axis=0``). Default,
            for a :class:`~otcore.PointCloud`: the target points ``y`` (``axis=1``) or the
            source points ``x`` (``axis=0``), in the units they were given.
        axis : {1, 0}, default 1
            ``1``: onto the sources, ``T(x_i) = sum_j P_ij v_j / sum_j P_ij``;
            ``0``: onto the targets, ``sum_i P_ij v_i / sum_i P_ij``.

        Returns
        -------
        array of shape (n, k) / (n,) for ``axis=1``, (m, k) / (m,) for ``axis=0``
            The projection, in the problem's array library. Points whose plan mass is zero
            (zero weights) have no barycentre: their rows are NaN.

        Notes
        -----
        Numerator and denominator come from one application of the plan to
        ``[features, 1]``, so each point is divided by its own plan mass as computed
        (exact for an unconverged plan too). This is the map estimate behind colour
        transfer and domain adaptation.

        Examples
        --------
        >>> import numpy as np, otcore as oc
        >>> rng = np.random.default_rng(0)
        >>> x, y = rng.normal(size=(50, 2)), rng.normal(size=(60, 2)) + 3.0
        >>> res = oc.sinkhorn(None, None, oc.PointCloud(x, y), eps=0.5)
        >>> res.barycentric_projection().shape  # x moved toward y
        (50, 2)
        """
        if features is None:
            if self._points is None:
                raise ValueError("features are required: this problem has no points (a "
                                 "dense cost); pass the features of the other side")
            features = self._namespaces.to_user(self._points[1 if axis == 1 else 0])
        V, vector = self._operand(features, axis, "features")
        xp = self._namespaces.compute
        ones = xp.ones((V.shape[0], 1), dtype=V.dtype)
        out = self._apply_fn(concat(xp, [V, ones], axis=1), axis)
        mass = out[:, -1:]
        safe = xp.where(mass > 0, mass, xp.ones_like(mass))
        proj = xp.where(mass > 0, out[:, :-1] / safe, xp.full_like(out[:, :-1], xp.nan))
        return self._namespaces.to_user(proj[:, 0] if vector else proj)

    def __repr__(self) -> str:
        lines = [f"OTResult(method={self.method!r}, backend={self.backend!r},"]
        for name, val in [
            ("shape", self._shape),
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


@dataclass(repr=False)
class LossResult:
    """A loss built on entropic OT solves (:func:`otcore.monge_gap`,
    :func:`otcore.sinkhorn_divergence`).

    Attributes
    ----------
    value : float or ndarray
        The loss; an array ``(B,)`` for a batch (stacked points), whose ``grad`` is then
        stacked and whose ``solves`` are :class:`BatchResult`.
    grad : array or None
        Its gradient in the moving points (the images ``T(x)`` of the Monge gap, the
        points ``y`` of the divergence), in their array library; ``None`` unless asked for
        with ``return_grad=True``.
    solves : dict of str to OTResult
        The underlying solves, by role (``"xy"``, ``"xx"``, ``"yy"``).
    converged : bool
        Whether every solve converged.

    Examples
    --------
    >>> import numpy as np, otcore as oc
    >>> x = np.random.default_rng(0).normal(size=(20, 2))
    >>> res = oc.sinkhorn_divergence(x, x + 1.0, eps=0.5)
    >>> float(res) == res.value and res.converged
    True
    """

    value: float
    grad: Any
    solves: dict
    method: str

    @property
    def converged(self) -> bool:
        """Whether every underlying solve converged."""
        return all(bool(np.all(r.converged)) for r in self.solves.values())

    def __float__(self) -> float:
        return float(self.value)

    def __repr__(self) -> str:
        grad = None if self.grad is None else tuple(self.grad.shape)
        value = (f"{self.value:.6g}" if np.ndim(self.value) == 0
                 else f"array of shape {np.shape(self.value)}")
        return (f"LossResult(method={self.method!r}, value={value}, "
                f"grad_shape={grad}, converged={self.converged}, "
                f"solves={sorted(self.solves)})")


@dataclass(repr=False)
class BatchResult:
    """Solutions of ``B`` problems solved in one call (a batch, see
    :mod:`otcore.collection`).

    Fields are those of :class:`OTResult` with the batch first; ``res[k]`` is the
    :class:`OTResult` of problem ``k`` (with its plan, ``apply`` and barycentric
    projection), built on demand.

    Attributes
    ----------
    f, g : array of shape (B, n) and (B, m), or lists of B arrays
        Potentials, in the caller's library; lists for a ragged batch (each cut to its
        problem's size).
    cost, value, marginal_error, dual_value : ndarray of shape (B,)
        Per problem, as in :class:`OTResult` (NumPy arrays on the host).
    n_iter : ndarray of int, shape (B,)
        Iterations of each problem: each stops on its own tolerance.
    converged : ndarray of bool, shape (B,)
        Whether each returned plan's exact marginal error is within the tolerance.
    errors : list of B lists
        The error history of each problem.
    backend, method, eps
        As in :class:`OTResult`.
    extra : dict
        Diagnostics; ``"path"`` names the kernels that ran: ``"gibbs"`` (the
        matrix-product iteration of a shared cost), ``"kernels"`` (stacked dense costs
        through per-problem cached Gibbs kernels), ``"log"`` (the log-domain batch
        kernel) or ``"loop"`` (one problem after another).

    Examples
    --------
    >>> import numpy as np, otcore as oc
    >>> C = np.array([[0.0, 1.0], [1.0, 0.0]])
    >>> A = np.array([[0.5, 0.5], [0.9, 0.1]])
    >>> res = oc.sinkhorn(A, None, C, eps=0.1)   # two problems, one shared cost
    >>> len(res), res.f.shape, bool(res.converged.all())
    (2, (2, 2), True)
    >>> res[1].plan.sum(axis=1).round(9)
    array([0.9, 0.1])
    """

    f: Any
    g: Any
    cost: np.ndarray
    value: np.ndarray
    marginal_error: np.ndarray
    dual_value: np.ndarray
    n_iter: np.ndarray
    converged: np.ndarray
    backend: str
    method: str
    eps: float
    errors: list = field(default_factory=list)
    extra: dict = field(default_factory=dict)
    _item_fn: Callable[[int], OTResult] | None = None

    @classmethod
    def from_results(cls, results: list[OTResult], ragged: bool = False) -> BatchResult:
        """A batch of single results (solved one by one): fields stacked in the results'
        array library (lists when ``ragged``)."""
        first = results[0]
        ns = first._namespaces

        def stack(name: str) -> Any:
            items = [getattr(r, name) for r in results]
            if ragged:
                return items
            xp = ns.user if ns is not None else np
            return xp.stack(items)

        def floats(name: str) -> np.ndarray:
            return np.array([np.nan if getattr(r, name) is None else getattr(r, name)
                             for r in results], dtype=np.float64)

        return cls(
            f=stack("f"), g=stack("g"), cost=floats("cost"), value=floats("value"),
            marginal_error=floats("marginal_error"), dual_value=floats("dual_value"),
            n_iter=np.array([r.n_iter for r in results], dtype=np.int64),
            converged=np.array([r.converged for r in results], dtype=bool),
            backend=first.backend, method=first.method, eps=first.eps,
            errors=[r.errors for r in results], extra={"path": "loop"},
            _item_fn=results.__getitem__,
        )

    def __len__(self) -> int:
        return int(self.n_iter.shape[0])

    def __getitem__(self, k: int) -> OTResult:
        """The :class:`OTResult` of problem ``k`` (negative indices count from the end)."""
        B = len(self)
        if not isinstance(k, (int, np.integer)) or isinstance(k, bool):
            raise TypeError(f"a BatchResult is indexed by an integer, got {type(k).__name__}")
        if not -B <= k < B:
            raise IndexError(f"problem {k} is out of range for a batch of {B}")
        return self._item_fn(int(k) % B)

    def __iter__(self):
        return (self[k] for k in range(len(self)))

    @property
    def plan(self) -> Any:
        """The plans, stacked ``(B, n, m)`` (a list for a ragged batch); formed on access."""
        plans = [r.plan for r in self]
        if isinstance(self.f, list):
            return plans
        ns = self[0]._namespaces
        xp = ns.user if ns is not None else np
        return xp.stack(plans)

    def __repr__(self) -> str:
        return (f"BatchResult(B={len(self)}, method={self.method!r}, "
                f"converged={int(self.converged.sum())}/{len(self)}, "
                f"n_iter={int(self.n_iter.min())}..{int(self.n_iter.max())}, "
                f"max marginal_error={float(self.marginal_error.max()):.3e}, "
                f"backend={self.backend!r})")
