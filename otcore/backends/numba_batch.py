"""CPU batch kernels: the Numba batch softmin for stacked costs and clouds, and the
matrix-product iteration for many histograms on one shared cost.

Many histograms on one cost (the shared-cost form of :mod:`otcore.collection`) are
solved in the scaling domain with BLAS: with absorbed potentials ``alpha`` (n,) and
``beta`` (m,) shared by the whole batch, the kernel ``K = exp((alpha_i + beta_j - C_ij) /
eps)`` is formed once, and a row update of every problem is one matrix product,

    f_k = alpha - eps log(K (b_k * exp((g_k - beta) / eps))),

(the column update likewise with ``K^T``). This is exact arithmetic, not an
approximation: only the split of the exponent between ``K`` and the scalings changes.
It stays accurate while the scalings' exponents ``(g_k - beta) / eps`` lie in
``[-SPREAD, GROWTH]``, which keeps every term that matters representable. When they
leave that window, ``alpha`` and ``beta`` are re-absorbed (the batch maxima of the
potentials). When a fresh absorption does not fit either (``eps`` small compared with
the spread of the potentials across problems, or a kernel that would overflow), the loop
continues in the log domain, from the same potentials, to its end.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
from numba import get_num_threads

from ..collection import Batch
from ..kernels.numba import SERIAL_BELOW
from ..kernels.numba import batch as _kb
from ..kernels.numba.cost import DENSE
from ._contract import ERROR_CAP, BatchIterator, BatchOps, PlanStats
from .numba_cpu import GIBBS_CACHE_BYTES, GIBBS_WINDOW, _threads

__all__ = ["NumbaBatchOps"]

#: Largest spread (in units of eps) of the scalings' exponents below the absorbed maxima.
SPREAD = 200.0
#: Largest growth (in units of eps) of the potentials above the absorbed maxima.
GROWTH = 30.0
#: Largest exponent of the absorbed kernel K.
K_EXPONENT = 600.0
#: Iterations between two checks of the window in the matrix-product iteration.
CHECK_EVERY = 8



class NumbaBatchOps(BatchOps):
    """:class:`BatchOps` on the CPU for a :class:`~otcore.collection.Batch` of NumPy
    arrays. Clouds divided by ``scale`` are rescaled once (the costs are homogeneous),
    so the kernels see costs in the user's units."""

    def __init__(self, batch: Batch):
        self.batch = batch
        n, m = batch.shape
        data = batch.C if batch.C is not None else batch.x
        entries = data.shape[0] * n * m if batch.C is not None else batch.size * n * m
        self.nthreads = 1 if entries < SERIAL_BELOW else get_num_threads()
        if batch.C is not None:
            self.kind, self.p = DENSE, 0.0
            self.X = np.ascontiguousarray(batch.C)
            self.Xs = np.ascontiguousarray(batch.C.transpose(0, 2, 1))
            self.YT = self.XT = np.empty((batch.C.shape[0], 0, 0), dtype=batch.C.dtype)
        else:
            self.kind, self.p = batch.ground.code, batch.ground.p
            s = batch.scale ** (1.0 / batch.ground.p)  # c(x / s^(1/p), y / s^(1/p)) = c / s
            x, y = (batch.x / s, batch.y / s) if batch.scale != 1.0 else (batch.x, batch.y)
            self.X, self.Xs = np.ascontiguousarray(x), np.ascontiguousarray(y)
            self.YT = np.ascontiguousarray(y.transpose(0, 2, 1))
            self.XT = np.ascontiguousarray(x.transpose(0, 2, 1))

    def softmin(self, H: Any, eps: float, axis: int, active: Any, out: Any) -> np.ndarray:
        src, srcT = (self.X, self.YT) if axis == 1 else (self.Xs, self.XT)
        with _threads(self.nthreads):
            _kb.batch_softmin_rows(src, srcT, self.kind, self.p, np.ascontiguousarray(H),
                                   eps, out, np.ascontiguousarray(active, dtype=np.int64),
                                   out, self.nthreads)
        return out

    def iterator(self, log_a: Any, log_b: Any, eps: float, symmetric: bool = False,
                 tau: tuple[float, float] = (1.0, 1.0)) -> BatchIterator:
        balanced = tuple(tau) == (1.0, 1.0)
        if balanced and not symmetric and self.kind == DENSE and self.X.dtype == np.float64:
            if self.X.shape[0] == 1:
                return _GibbsBatchIterator(self, log_a, log_b, eps)
            if self.X.nbytes <= GIBBS_CACHE_BYTES:
                return _CachedKernelsIterator(self, log_a, log_b, eps)
        return BatchIterator(self, log_a, log_b, eps, symmetric, tau)

    def plan_stats(self, hf: Any, hg: Any, eps: float) -> PlanStats:
        B, (n, m) = self.batch.size, self.batch.shape
        rows = np.empty((B, n), dtype=self.X.dtype)
        cols = np.empty((B, m), dtype=self.X.dtype)
        cost = np.empty(B, dtype=np.float64)
        with _threads(get_num_threads() if B > 1 else self.nthreads):
            _kb.batch_plan_stats(self.X, self.YT, self.kind, self.p,
                                 np.ascontiguousarray(hf), np.ascontiguousarray(hg), eps,
                                 rows, cols, cost)
        return PlanStats(rows, cols, cost)

    def cost_scale(self) -> float:
        if self.kind == DENSE:
            finite = np.isfinite(self.X)
            return float(np.abs(self.X if finite.all() else self.X[finite]).max())
        both = np.concatenate([self.X.reshape(-1, self.X.shape[-1]),
                               self.Xs.reshape(-1, self.Xs.shape[-1])])
        lo, hi = both.min(axis=0), both.max(axis=0)
        return float(self.batch.ground.pairwise(np, lo[None], hi[None])[0, 0])


class _Reached(NamedTuple):
    """A state of the matrix-product iteration, whose potentials are formed on demand:
    ``f = alpha - eps log S_f``, ``g = beta - eps log S_g`` on the rows it ran."""

    Sf: np.ndarray
    Sg: np.ndarray
    alpha: np.ndarray
    beta: np.ndarray
    absorption: int
    """The number of the absorption of ``alpha, beta`` (counted by the iterator)."""


def _masked_max(pot: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Column maxima of ``pot`` over the problems where the weight is positive (over all
    problems where none is)."""
    top = np.where(w > 0, pot, -np.inf).max(axis=0)
    return np.where(np.isfinite(top), top, pot.max(axis=0))


class _GibbsBatchIterator(BatchIterator):
    """The matrix-product iteration of the module docstring (float64, one shared dense
    cost); its iterates equal the log-domain ones up to rounding.

    Between two reads of the potentials it runs in the scaling domain: with
    ``S_f = V K^T``, ``U = a / S_f``, ``S_g = U K``, ``V = b / S_g`` an iteration is two
    matrix products and two divisions, and the potentials are ``f = alpha - eps log S_f``,
    ``g = beta - eps log S_g``. Every ``CHECK_EVERY`` iterations it checks that ``S_f`` and
    ``S_g`` stay in ``[exp(-GROWTH), exp(SPREAD)]`` where the weights are positive;
    outside, the last good state is re-absorbed.

    Only the active problems' rows are computed. The scalings ``V`` reached by a call are
    kept, with the potentials ``g_new`` returned and the active set, so that the next call
    from those potentials continues from them (its rows gathered when problems left),
    without forming ``V`` again.

    The row errors of a check come from the scalings too: with ``S_f`` and ``S_f'`` the
    products of the last two row updates in one absorption, ``f - f_new = eps log(S_f' /
    S_f)``, so the row marginal of ``f`` is ``a S_f' / S_f`` and its error
    ``sum_i a_i |S_f'_i / S_f_i - 1|``, without a logarithm. The input ``(f, g)`` of the
    last step is then formed only for the problems that leave (:meth:`check_input`).
    The products of the accepted states alternate between two buffers across calls, so
    that the input's stay readable until the next call.
    """

    def __init__(self, ops: NumbaBatchOps, log_a: Any, log_b: Any, eps: float):
        super().__init__(ops, log_a, log_b, eps)
        self.C = ops.X[0]
        self.a, self.b = np.exp(log_a), np.exp(log_b)
        self.K = self.alpha = self.beta = None
        self.log_domain = False
        self.lo, self.hi = np.exp(-GROWTH), np.exp(SPREAD)
        self.zeros = not (np.all(self.a > 0) and np.all(self.b > 0))
        self.kept: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        # of the last check: |S_f' / S_f - 1| of its rows, the state of its input and its
        # active problems
        self.checked: tuple[np.ndarray, _Reached, np.ndarray] | None = None
        self.absorptions = 0
        # buffers of _run, rows of the active problems in front: the products S_f, S_g
        # (two of each, the next one written at index turn), U, and two of V
        self.work_f = np.empty((3, *self.a.shape))
        self.work_g = np.empty((4, *self.b.shape))
        self.turn = 0

    @property
    def path(self) -> str:
        return "log" if self.log_domain else "gibbs"

    def _absorb(self, f: np.ndarray, g: np.ndarray, a: np.ndarray, b: np.ndarray) -> bool:
        alpha, beta = _masked_max(f, a), _masked_max(g, b)
        expo = (alpha[:, None] + beta[None, :] - self.C) / self.eps
        if not (np.all(np.isfinite(alpha)) and np.all(np.isfinite(beta))
                and expo.max() <= K_EXPONENT):
            return False
        self.K, self.alpha, self.beta = np.exp(expo, out=expo), alpha, beta
        self.absorptions += 1
        return True

    def first_g(self, f: Any, active: Any, out: Any) -> Any:
        """Through one matrix product: with ``alpha`` the batch maxima of ``f`` and
        ``s_j = max_i (alpha_i - C_ij)``, ``g = -s - eps log((a exp((f - alpha) / eps))
        exp((alpha - C - s) / eps))``, whose factors are at most 1; the Numba kernel where
        a sum falls below ``exp(-SPREAD)`` (or a maximum is not finite)."""
        alpha = _masked_max(f, self.a)
        expo = alpha[:, None] - self.C
        s = expo.max(axis=0)
        if np.all(np.isfinite(alpha)) and np.all(np.isfinite(s)):
            expo -= s
            expo /= self.eps
            U = self.a[active] * np.exp(np.minimum((f[active] - alpha) / self.eps, 0.0))
            S = U @ np.exp(expo, out=expo)
            if S.min() >= self.lo:
                out[active] = self._potential(-s, S)
                return out
        return BatchIterator.first_g(self, f, active, out)

    def plan_stats(self, hf: Any, hg: Any) -> PlanStats:
        """From the absorbed kernel, in matrix products: with the scalings
        ``U = exp((hf - alpha) / eps)``, ``V = exp((hg - beta) / eps)``, the rows
        ``U (V K^T)``, the columns ``V (U K)`` and ``<C, P> = sum U (V (K C)^T)``; the
        Numba kernel when no kernel was absorbed or the potentials leave the window of
        the iteration (``a / U`` and ``b / V`` in ``[exp(-GROWTH), exp(SPREAD)]`` where the
        weights are positive)."""
        if self.K is not None:
            with np.errstate(all="ignore"):  # a scaling outside the window fails the check
                U = np.exp((hf - self.alpha) / self.eps)
                V = np.exp((hg - self.beta) / self.eps)
                inside = (_kb.in_window(self.a / U, self.a, self.lo, self.hi)
                          and _kb.in_window(self.b / V, self.b, self.lo, self.hi))
            if inside:
                KC = self.K * np.minimum(self.C, np.finfo(self.C.dtype).max)
                return PlanStats(U * (V @ self.K.T), V * (U @ self.K),
                                 np.sum(U * (V @ KC.T), axis=1))
        return BatchIterator.plan_stats(self, hf, hg)

    def _potential(self, shift: np.ndarray, S: np.ndarray) -> np.ndarray:
        """``shift - eps log S``, in a new array. ``S`` is in the window where the weights
        are positive (checked); where some are zero, it is first clipped to the normal
        range."""
        out = np.log(np.clip(S, 1e-300, 1e300) if self.zeros else S)
        out *= -self.eps
        out += shift
        return out

    def _potentials(self, state: Any, pos: np.ndarray | None = None) -> tuple[Any, Any]:
        """The potentials ``(f, g)`` of a state of :meth:`_run` (a :class:`_Reached`, or
        the potentials themselves), of its rows ``pos`` (all when ``None``; only for a
        :class:`_Reached`)."""
        if not isinstance(state, _Reached):
            return state
        Sf, Sg = (state.Sf, state.Sg) if pos is None else (state.Sf[pos], state.Sg[pos])
        return self._potential(state.alpha, Sf), self._potential(state.beta, Sg)

    def _run(self, state: Any, V: np.ndarray | None, a: np.ndarray, b: np.ndarray,
             count: int) -> tuple[Any, Any, int]:
        """Up to ``count`` iterations on the problems' rows from ``state`` (see
        :meth:`_potentials`; with its scalings ``V`` in the current absorption, or
        ``None``); returns the state reached (``state`` when no iteration was done), its
        scalings (``None`` when the run stopped short) and the number of iterations done
        (fewer when no absorption fits).

        The window is checked every ``CHECK_EVERY`` iterations (every iteration after a
        failed check, until one passes); a failed check rolls back to the last checked
        state, whose potentials are re-absorbed."""
        done, fresh, chunk = 0, self.K is None, CHECK_EVERY
        while done < count:
            if V is None:
                f, g = self._potentials(state)
                if fresh and not self._absorb(f, g, a, b):
                    break
                E = np.minimum((g - self.beta) / self.eps, GROWTH)
                if not _kb.in_window(np.exp(-E), b, self.lo, self.hi):
                    if fresh:
                        break
                    fresh = True
                    continue
                V = b * np.exp(E)
            start, Sf, Sg = done, None, None
            K, KT = self.K, self.K.T
            # two sets of buffers: the one being written, and the last checked state
            rows = len(a)
            sf, spare_f = self.work_f[self.turn, :rows], self.work_f[1 - self.turn, :rows]
            sg, spare_g = self.work_g[self.turn, :rows], self.work_g[1 - self.turn, :rows]
            U, (V0, V1) = self.work_f[2, :rows], self.work_g[2:, :rows]
            while done < count:
                steps = min(chunk, count - done)
                np.copyto(V0, V)
                with np.errstate(all="ignore"):  # a blow-up fails the check below
                    for _ in range(steps):
                        np.matmul(V, KT, out=sf)
                        np.divide(a, sf, out=U)
                        np.matmul(U, K, out=sg)
                        V = np.divide(b, sg, out=V1)
                if not (_kb.in_window(sf, a, self.lo, self.hi)
                        and _kb.in_window(sg, b, self.lo, self.hi)):
                    V = V0
                    if chunk == 1:
                        break
                    chunk = 1
                    continue
                Sf, Sg, chunk = sf, sg, CHECK_EVERY
                sf, sg, spare_f, spare_g = spare_f, spare_g, sf, sg
                self.turn = 1 - self.turn
                done += steps
            if Sf is not None:
                state = _Reached(Sf, Sg, self.alpha, self.beta, self.absorptions)
            if done == count:
                return state, V, done
            V = None
            if done == start and fresh:
                break  # a fresh absorption made no progress: no shared one fits
            fresh = True
        return state, None, done

    def _resumed(self, g: np.ndarray, active: np.ndarray) -> np.ndarray | None:
        """The kept scalings of the rows ``active`` when ``g`` is the kept output and
        ``active`` a subset of the kept active set (``None`` otherwise)."""
        if self.kept is None or g is not self.kept[0]:
            return None
        _, was, V = self.kept
        if active.size == was.size:
            return V if np.array_equal(active, was) else None
        pos = np.minimum(np.searchsorted(was, active), was.size - 1)
        return V[pos] if np.array_equal(was[pos], active) else None

    def advance_to_check(self, f: Any, g: Any, active: Any,
                         count: int) -> tuple[Any, Any, Any, Any]:
        if self.log_domain:
            return BatchIterator.advance_to_check(self, f, g, active, count)
        full = len(active) == f.shape[0]

        def rows(x: np.ndarray) -> np.ndarray:
            return x if full else x[active]

        def spread(state: Any) -> tuple[np.ndarray, np.ndarray]:
            """The potentials of a state of :meth:`_run`, on every problem."""
            fs, gs = self._potentials(state)
            if full:
                return fs, gs
            f_out, g_out = f.copy(), g.copy()
            f_out[active], g_out[active] = fs, gs
            return f_out, g_out

        V = self._resumed(g, active)
        self.kept = self.checked = None
        a, b = rows(self.a), rows(self.b)
        mid, V, done = self._run((rows(f), rows(g)), V, a, b, count - 1)
        if done == count - 1:
            end, V, one = self._run(mid, V, a, b, 1)
            if one:
                f_new, g_new = spread(end)
                self.kept = g_new, active.copy(), V
                if isinstance(mid, _Reached) and mid.absorption == end.absorption:
                    with np.errstate(all="ignore"):  # zero weights: masked by the caller
                        ratio = np.minimum(end.Sf / mid.Sf, np.exp(ERROR_CAP))
                    ratio -= 1.0
                    self.checked = np.abs(ratio, out=ratio), mid, self.kept[1]
                    return None, None, f_new, g_new
                return (*spread(mid), f_new, g_new)
        # no shared absorption fits this batch at this eps: on in the log domain
        self.log_domain = True
        return BatchIterator.advance_to_check(self, *spread(mid), active, count - done)

    def check_errors(self, xp: Any, w: tuple[Any, Any], f: Any, g: Any, f_new: Any,
                     g_new: Any, active: Any, rho: tuple[float, float]) -> Any:
        """From the row products of the last two row updates (class docstring) when the
        last :meth:`advance_to_check` ran both in one absorption (it returned ``None`` for
        ``f, g``; the problems are balanced on this path); from the potentials
        otherwise."""
        if f is not None:
            return BatchIterator.check_errors(self, xp, w, f, g, f_new, g_new, active, rho)
        a, dev = w[0] if len(active) == f_new.shape[0] else w[0][active], self.checked[0]
        if self.zeros:  # the rows of zero weights do not count (their ratio may be NaN)
            dev = np.where(a > 0, dev, 0.0)
        return np.einsum("ij,ij->i", a, dev)

    def check_input(self, f: Any, g: Any, leaving: Any) -> tuple[Any, Any]:
        """Formed from the products of the input's state on the rows ``leaving`` when
        :meth:`advance_to_check` returned ``None`` for ``f, g``."""
        if f is not None:
            return f, g
        _, mid, active = self.checked
        fl, gl = self._potentials(mid, np.searchsorted(active, leaving))
        f, g = np.zeros_like(self.a), np.zeros_like(self.b)
        f[leaving], g[leaving] = fl, gl
        return f, g


class _CachedKernelsIterator(BatchIterator):
    """Stacked float64 dense costs: each problem caches its Gibbs kernel
    ``exp((f0 + g0 - C) / eps)`` after a log-domain step, and steps through it (two
    matrix-vector products, no exponential per entry; :func:`batch_scaled_sweep`) while
    its potentials stay within ``GIBBS_WINDOW * eps`` of ``(f0, g0)``, as the
    single-problem iterator of :mod:`otcore.backends.numba_cpu` does. The kernels take one
    more array of the costs' size. Iterates equal the log-domain ones up to rounding."""

    def __init__(self, ops: NumbaBatchOps, log_a: Any, log_b: Any, eps: float):
        super().__init__(ops, log_a, log_b, eps)
        self.C = ops.X
        self.a, self.b = np.exp(log_a), np.exp(log_b)
        self.K = np.empty_like(self.C)
        self.F0, self.G0 = np.zeros_like(self.a), np.zeros_like(self.b)
        self.valid = np.zeros(self.a.shape[0], dtype=bool)

    path = "kernels"

    def step(self, f: Any, g: Any, active: Any) -> tuple[Any, Any]:
        eps = self.eps
        cached = active[self.valid[active]]
        if cached.size:  # within the window of the stored potentials?
            drift = np.abs(g[cached] - self.G0[cached]).max(axis=1)
            cached = cached[drift <= GIBBS_WINDOW * eps]
        f_new, g_new = f.copy(), g.copy()
        ok = np.zeros(self.a.shape[0], dtype=bool)
        if cached.size:
            V = np.zeros_like(self.b)
            V[cached] = self.b[cached] * np.exp((g[cached] - self.G0[cached]) / eps)
            with _threads(get_num_threads()):
                _kb.batch_scaled_sweep(self.K, V, self.a, self.F0, self.G0, eps,
                                       GIBBS_WINDOW, cached, f_new, g_new, ok)
        redo = active[~ok[active]]
        if redo.size:  # a log-domain step, then a fresh kernel for those problems
            lf, lg = BatchIterator.step(self, f, g, redo)
            f_new[redo], g_new[redo] = lf[redo], lg[redo]
            expo = (lf[redo][:, :, None] + lg[redo][:, None, :] - self.C[redo]) / eps
            self.K[redo] = np.exp(np.minimum(expo, 700.0))
            self.F0[redo], self.G0[redo] = lf[redo], lg[redo]
            self.valid[redo] = np.all(np.isfinite(lg[redo]), axis=1)
        return f_new, g_new
