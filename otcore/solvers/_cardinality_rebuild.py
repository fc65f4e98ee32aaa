"""Exact OT plan rebuilt from the potentials of the k = 1 cardinality semi-dual.

For ``k = 1`` the semi-dual of cardinality-constrained OT is the semi-dual of unregularized
OT plus a constant, so its potentials are optimal transport potentials; a 1-sparse plan,
however, generally cannot meet both marginals. This module fits a plan to both marginals
on (and, where needed, around) the tight support of those potentials, by column
generation on a linear program solved with HiGHS.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy import optimize, sparse

__all__ = ["rebuild_k1"]

#: Candidates per group in the first LP, entries added per group and pricing round, and
#: the reduced-cost slack (relative to max |C|) below which the plan is accepted.
_REBUILD_WIDTH = 4
_REBUILD_PRICE = 2
_REBUILD_SLACK = 1e-9
#: HiGHS tolerances (its defaults, 1e-7, are too loose here).
_HIGHS = {"primal_feasibility_tolerance": 1e-10, "dual_feasibility_tolerance": 1e-10}


def rebuild_k1(top_entries: Callable, f: np.ndarray, p: np.ndarray, q: np.ndarray,
               scale: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Exact OT plan from the k = 1 potentials, fitted to both marginals.

    A min-cost linear program (HiGHS) restricted to the ``_REBUILD_WIDTH`` best-scoring
    entries ``f_i - K_ji`` of every group (the tight support of ``f`` and its runners-up),
    plus one artificial variable per marginal constraint priced above any transport, so
    that it is always feasible. Its dual potentials are then checked against the whole
    cost (one kernel pass); the ``_REBUILD_PRICE`` most violating entries of each group
    are added and the LP solved again (column generation), until no entry violates them
    by more than ``_REBUILD_SLACK * scale``: the plan is then optimal for the full problem
    (with both marginals exact), even if ``f`` was only approximately optimal.

    Parameters
    ----------
    top_entries : callable
        ``top_entries(alpha, beta, width)`` returns, for every group ``j``, the ``width``
        largest positive ``alpha_i + beta_j - K_ji`` as arrays ``(group, other, value)``
        (one pass of the backend's top-k kernel over the group-major cost ``K``).
    f : ndarray of shape (n_other,)
        The k = 1 semi-dual potentials (the other side's).
    p, q : ndarray
        Marginals of the other side and of the groups (float64, equal masses).
    scale : float
        ``max |C|``.

    Returns
    -------
    group, other, t : arrays
        The plan's entries (group index, other-side index, mass).
    rounds : int
        Number of linear programs solved.
    """
    n_other, n_groups, slack = p.shape[0], q.shape[0], _REBUILD_SLACK * scale
    q_fit = q * (p.sum() / q.sum())  # equal masses, exactly, in float64
    # shift the scores so that every entry is positive: the kernel lists the top ones
    shift = np.full(n_groups, float(np.ptp(f)) + scale + 1.0)
    group, other, value = top_entries(f, shift, _REBUILD_WIDTH)
    cost = f[other] + shift[group] - value  # K_ji recovered from the score
    # artificial unit of mass per row and per group, at a cost above scale / 2: the
    # restricted problem is always feasible, and they vanish at the full optimum
    big = np.full(n_other + n_groups, scale + 1.0)
    b_eq = np.concatenate([p, q_fit])
    rounds = 0
    while True:
        rounds += 1
        nnz = other.shape[0]
        ones, cols = np.ones(nnz), np.arange(nnz)
        A = sparse.hstack([
            sparse.vstack([
                sparse.csr_matrix((ones, (other, cols)), shape=(n_other, nnz)),
                sparse.csr_matrix((ones, (group, cols)), shape=(n_groups, nnz)),
            ]),
            sparse.identity(n_other + n_groups),
        ]).tocsr()
        lp = optimize.linprog(np.concatenate([cost, big]), A_eq=A, b_eq=b_eq,
                              bounds=(0, None), method="highs", options=_HIGHS)
        if lp.status != 0:
            raise RuntimeError(f"could not rebuild the k = 1 plan: {lp.message}")
        phi, psi = lp.eqlin.marginals[:n_other], lp.eqlin.marginals[n_other:]
        g_new, o_new, viol = top_entries(phi, psi - slack, _REBUILD_PRICE)
        fresh = ~np.isin(g_new * n_other + o_new, group * n_other + other)
        if not fresh.any():
            break
        g_new, o_new, viol = g_new[fresh], o_new[fresh], viol[fresh]
        group, other = np.concatenate([group, g_new]), np.concatenate([other, o_new])
        cost = np.concatenate([cost, phi[o_new] + psi[g_new] - slack - viol])
    artificial = float(lp.x[nnz:].sum())
    if artificial > 1e-9 * p.sum():
        raise RuntimeError(f"could not rebuild the k = 1 plan: {artificial:.3g} of the mass "
                           "is left on artificial variables")
    return group, other, lp.x[:nnz], rounds
