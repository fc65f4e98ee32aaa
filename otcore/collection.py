"""Collections of transport problems: validated, stacked, and padded into one batch.

A batch is ``B`` problems that share ``eps``. It comes in four forms, recognised by
:func:`as_batch` (NumPy's stacked-array convention):

* **many histograms, one cost**: ``C`` of shape ``(n, m)`` with ``a`` of shape ``(B, n)``
  and/or ``b`` of shape ``(B, m)`` (the other ``None``, 1-D, or stacked too);
* **stacked costs**: ``C`` of shape ``(B, n, m)``;
* **stacked clouds**: a :class:`~otcore.PointCloud` whose ``x`` and ``y`` have shapes
  ``(B, n, d)`` and ``(B, m, d)``;
* **ragged**: ``C`` a list of costs or point clouds of different sizes, with ``a`` and
  ``b`` lists of weights (entries may be ``None``) or ``None``.

Ragged problems are padded to the largest ``n`` and ``m`` with zero weights (a zero
weight takes no part in any softmin or plan), so one kernel call serves them all; the
results are cut back to each problem's size.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ._array import Namespaces, namespaces
from ._validation import as_array, check_weights, float_dtype, mass_rtol
from .costs import GroundCost
from .geometry import DenseCost, PointCloud

__all__ = ["Batch", "as_batch", "is_batch"]


@dataclass
class Batch:
    """``B`` validated problems in the compute namespace.

    Attributes
    ----------
    a, b : arrays of shape (B, n) and (B, m)
        Weights (zero on padding); each ``b[k]`` has the mass of ``a[k]``.
    C : array of shape (1, n, m) or (B, n, m), or None
        Dense costs; a leading 1 means one cost shared by all problems.
    x, y : arrays of shape (1 or B, n, d) and (1 or B, m, d), or None
        Point clouds (online costs).
    ground, scale
        The ground cost and its divisor, for point clouds.
    sizes : int array of shape (B, 2) or None
        ``(n_k, m_k)`` of each problem of a ragged batch (``None``: all ``(n, m)``).
    """

    a: Any
    b: Any
    C: Any
    x: Any
    y: Any
    ground: GroundCost | None
    scale: float
    sizes: np.ndarray | None
    namespaces: Namespaces

    @property
    def size(self) -> int:
        """``B``, the number of problems."""
        return int(self.a.shape[0])

    @property
    def shape(self) -> tuple[int, int]:
        """``(n, m)``, the (padded) size of every problem."""
        return int(self.a.shape[1]), int(self.b.shape[1])

    @property
    def dtype(self) -> Any:
        return self.a.dtype

    @property
    def xp(self) -> Any:
        return self.namespaces.compute

    def take(self, idx: np.ndarray) -> Batch:
        """The problems ``idx`` as a batch of their own (a shared cost stays shared)."""
        xp = self.xp
        pick = xp.asarray(np.asarray(idx, dtype=np.int64))

        def rows(x: Any) -> Any:
            if x is None or x.shape[0] == 1:
                return x
            return xp.take(x, pick, axis=0)

        return Batch(a=rows(self.a), b=rows(self.b), C=rows(self.C), x=rows(self.x),
                     y=rows(self.y), ground=self.ground, scale=self.scale,
                     sizes=None if self.sizes is None else self.sizes[idx],
                     namespaces=self.namespaces)

    def problem_size(self, k: int) -> tuple[int, int]:
        """``(n_k, m_k)`` of problem ``k`` without padding."""
        if self.sizes is None:
            return self.shape
        return int(self.sizes[k, 0]), int(self.sizes[k, 1])

    def problem(self, k: int) -> tuple[Any, Any, DenseCost | PointCloud]:
        """``(a_k, b_k, geometry_k)`` of problem ``k``, unpadded, in the caller's library."""
        n, m = self.problem_size(k)
        user = self.namespaces.to_user
        src = 0 if (self.C if self.C is not None else self.x).shape[0] == 1 else k
        if self.C is not None:
            geom: DenseCost | PointCloud = DenseCost(user(self.C[src, :n, :m]))
        else:
            geom = PointCloud(user(self.x[src, :n, :]), user(self.y[src, :m, :]),
                              self.ground.spec, scale=self.scale)
        return user(self.a[k, :n]), user(self.b[k, :m]), geom


def _ndim(x: Any) -> int:
    return len(getattr(x, "shape", ())) if not isinstance(x, (list, tuple)) else -1


def _is_ragged(C: Any) -> bool:
    """A list or tuple of costs (arrays of two dimensions) or point clouds."""
    return (isinstance(C, (list, tuple)) and len(C) > 0
            and all(isinstance(c, PointCloud) or _ndim(c) == 2 for c in C))


def is_batch(a: Any, b: Any, C: Any) -> bool:
    """Do ``a, b, C`` describe several problems (see the module docstring)?"""
    if isinstance(C, PointCloud):
        return C.batch_size is not None
    if _is_ragged(C):
        return True
    if isinstance(C, (list, tuple)) and len(C) == 0:
        raise ValueError("C is an empty list: a batch needs at least one problem (B = 0)")
    if isinstance(C, DenseCost):
        return _ndim(a) == 2 or _ndim(b) == 2
    return _ndim(C) == 3 or (_ndim(C) == 2 and (_ndim(a) == 2 or _ndim(b) == 2))


def _weights(xp: Any, w: Any, B: int, n: int, name: str, dtype: Any) -> Any:
    """Stacked weights ``(B, n)`` from ``None``, ``(n,)`` or ``(B, n)``, validated."""
    if w is None:
        return xp.full((B, n), 1.0 / n, dtype=dtype)
    w = as_array(xp, w, name, dtype=dtype, ndim=_ndim(w) if _ndim(w) in (1, 2) else 2)
    if w.ndim == 1:
        w = xp.broadcast_to(w[None, :], (B, w.shape[0]))
    if w.shape != (B, n):
        raise ValueError(f"{name} has shape {tuple(w.shape)}, expected ({B}, {n}) or ({n},) "
                         f"for this batch of {B} problems of size {n} on that side")
    if bool(xp.any(w < 0)):
        raise ValueError(f"{name} has negative entries; weights must be nonnegative")
    mass = xp.sum(w, axis=1)
    if not bool(xp.all(mass > 0)):
        k = int(xp.argmax(xp.astype(~(mass > 0), xp.int8)))
        raise ValueError(f"{name}[{k}] sums to zero; weights need positive total mass")
    return w


def _balance(xp: Any, a: Any, b: Any) -> Any:
    """``b`` rescaled row by row to the masses of ``a``, after checking they agree."""
    ma, mb = xp.sum(a, axis=1), xp.sum(b, axis=1)
    gap = xp.abs(ma - mb) > mass_rtol(xp, a.dtype) * xp.maximum(ma, mb)
    if bool(xp.any(gap)):
        k = int(xp.argmax(xp.astype(gap, xp.int8)))
        raise ValueError(
            f"problem {k} of the batch has sum(a)={float(ma[k]):.10g} and "
            f"sum(b)={float(mb[k]):.10g}: balanced OT needs equal masses (pass reg_m to "
            "relax a marginal)"
        )
    return b * (ma / mb)[:, None]


def _stack(xp: Any, items: list, n: int, fill: Any) -> Any:
    """Pad 2-D arrays to ``n`` rows with the rows ``fill(item, count)`` and stack them."""
    out = []
    for it in items:
        rows = it.shape[0]
        if rows < n:
            pad = fill(it, n - rows)
            it = xp.concat([it, pad], axis=0)
        out.append(it)
    return xp.stack(out)


def _ragged(a: Any, b: Any, C: list, ns: Namespaces) -> tuple:
    xp = ns.compute
    B = len(C)
    for name, w in (("a", a), ("b", b)):
        if w is not None and not (isinstance(w, (list, tuple)) and len(w) == B):
            raise ValueError(f"{name} must be None or a list of {B} weight vectors (one per "
                             f"problem of the list C), got {type(w).__name__}"
                             + (f" of length {len(w)}" if isinstance(w, (list, tuple)) else ""))
    clouds = [isinstance(c, PointCloud) for c in C]
    if any(clouds) and not all(clouds):
        raise TypeError("C mixes point clouds and cost matrices; give one kind")
    if all(clouds):
        geoms = list(C)
        if any(g.batch_size is not None for g in geoms):
            raise ValueError("C: the point clouds of a list must each hold one problem")
        if len({(g.ground.spec, g.scale, g.x.shape[1]) for g in geoms}) > 1:
            raise ValueError("C: the point clouds of a list must share the ground cost, the "
                             "scale and the dimension d")
    else:
        geoms = [DenseCost(ns.to_compute(c)) for c in C]
    dtype = xp.result_type(*[g.dtype for g in geoms])
    sizes = np.array([g.shape for g in geoms], dtype=np.int64)
    n, m = (int(s) for s in sizes.max(axis=0))
    A, Bw = [], []
    for k, g in enumerate(geoms):
        nk, mk = g.shape
        for name, w, lst, size, full in (("a", a, A, nk, n), ("b", b, Bw, mk, m)):
            wk = None if w is None else w[k]
            wk = check_weights(xp, None if wk is None else ns.to_compute(wk), size,
                               f"{name}[{k}]", dtype=dtype)
            lst.append(xp.concat([wk, xp.zeros((full - size,), dtype=dtype)]))
    A, Bw = xp.stack(A), xp.stack(Bw)
    if all(clouds):
        def repeat_first(it, k):
            return xp.broadcast_to(it[:1, :], (k, it.shape[1]))

        x = _stack(xp, [xp.astype(g.x, dtype) for g in geoms], n, repeat_first)
        y = _stack(xp, [xp.astype(g.y, dtype) for g in geoms], m, repeat_first)
        return A, Bw, None, x, y, geoms[0].ground, geoms[0].scale, sizes

    def zeros(it, k):
        return xp.zeros((k, it.shape[1]), dtype=dtype)

    Cs = []
    for g in geoms:
        c = xp.astype(g.C, dtype)
        if c.shape[1] < m:
            c = xp.concat([c, xp.zeros((c.shape[0], m - c.shape[1]), dtype=dtype)], axis=1)
        Cs.append(c)
    return A, Bw, _stack(xp, Cs, n, zeros), None, None, None, 1.0, sizes


def as_batch(a: Any, b: Any, C: Any, *, balanced: bool = True) -> Batch:
    """Validate a batch (one of the forms of the module docstring) into a :class:`Batch`.

    Raises ``ValueError`` naming the argument for mismatched batch sizes, shapes that do
    not fit, ``B = 0`` and the usual weight and cost errors; ``TypeError`` for mixed
    array libraries.
    """
    if _is_ragged(C):
        arrays = [c for c in C if not isinstance(c, PointCloud)]
        arrays += [w for ws in (a, b) if isinstance(ws, (list, tuple)) for w in ws
                   if w is not None and not isinstance(w, (list, tuple))]
        if arrays:
            ns = namespaces(*arrays)
        else:
            ns = C[0].namespaces
        A, Bw, Cs, x, y, ground, scale, sizes = _ragged(a, b, list(C), ns)
    else:
        sizes = None
        if isinstance(C, PointCloud):
            ns, xp = C.namespaces, C.xp
            x, y, ground, scale, Cs = C.x, C.y, C.ground, C.scale, None
            dtype = C.dtype
            n, m, Bc = x.shape[1], y.shape[1], x.shape[0]
        else:
            C = C.C if isinstance(C, DenseCost) else C
            ns = namespaces(*(v for v in (a, b, C) if v is not None
                              and not isinstance(v, (list, tuple))))
            xp = ns.compute
            C = ns.to_compute(np.asarray(C) if isinstance(C, (list, tuple)) else C)
            if _ndim(C) == 3 and C.shape[0] == 0:
                raise ValueError("C holds no problem (B = 0): a batch needs at least one")
            dtype = float_dtype(xp, C, "C")
            Cs = as_array(xp, C, "C", dtype=dtype, ndim=_ndim(C), allow_posinf=True)
            if Cs.ndim == 2:
                Cs = xp.expand_dims(Cs, axis=0)
            finite = xp.isfinite(Cs)  # +inf forbids a pair; each row and column needs one
            for axis, what in ((2, "row"), (1, "column")):
                if not bool(xp.all(xp.any(finite, axis=axis))):
                    raise ValueError(f"C: some {what} has no finite entry (+inf forbids "
                                     "every pair there: no plan can meet the marginals)")
            x = y = ground = None
            scale = 1.0
            n, m, Bc = Cs.shape[1], Cs.shape[2], Cs.shape[0]
        cand = [("C", Bc)] if Bc > 1 or _ndim(C) == 3 or isinstance(C, PointCloud) else []
        cand += [(name, w.shape[0]) for name, w in (("a", a), ("b", b))
                 if w is not None and _ndim(w) == 2]
        sizes_b = {v for _, v in cand}
        if len(sizes_b) > 1:
            raise ValueError("mismatched batch sizes: " + ", ".join(
                f"{name} has {v} problems" for name, v in cand))
        B = sizes_b.pop() if sizes_b else 1
        if B == 0:
            raise ValueError(f"{cand[0][0]} holds no problem (B = 0): a batch needs at "
                             "least one")
        A = _weights(xp, None if a is None else ns.to_compute(a), B, n, "a", dtype)
        Bw = _weights(xp, None if b is None else ns.to_compute(b), B, m, "b", dtype)
    xp = ns.compute
    if balanced:
        Bw = _balance(xp, A, Bw)
    return Batch(a=A, b=Bw, C=Cs, x=x, y=y, ground=ground, scale=scale, sizes=sizes,
                 namespaces=ns)
