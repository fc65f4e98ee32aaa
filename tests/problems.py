"""Random transport problems for the tests (NumPy, float64, seeded by the caller)."""

from __future__ import annotations

import numpy as np
from scipy.spatial.distance import cdist


def gaussian_clouds(rng: np.random.Generator, n: int, m: int, d: int = 2):
    """Source ``N(0, I)`` and target ``N(1, 0.5^2 I)`` point clouds of shapes (n, d), (m, d)."""
    return rng.normal(size=(n, d)), 1.0 + 0.5 * rng.normal(size=(m, d))


def histogram(rng: np.random.Generator, n: int, *, zeros: int = 0) -> np.ndarray:
    """Random weights summing to 1, with ``zeros`` entries set exactly to 0."""
    w = rng.uniform(0.1, 1.0, size=n)
    if zeros:
        w[rng.choice(n, size=zeros, replace=False)] = 0.0
    return w / w.sum()


def ground_cost(x: np.ndarray, y: np.ndarray, cost="sqeuclidean") -> np.ndarray:
    """Dense cost matrix computed with SciPy, independently of otcore's geometry code."""
    if cost == "sqeuclidean":
        return cdist(x, y, "sqeuclidean")
    if cost == "euclidean":
        return cdist(x, y, "euclidean")
    _, p = cost
    return cdist(x, y, "minkowski", p=p) ** p / p


def random_problem(rng: np.random.Generator, n: int, m: int, *, zeros: int = 0):
    """``(a, b, C, x, y)``: Gaussian clouds in 2-D, squared-Euclidean cost normalized to
    max 1, random histograms (``zeros`` zero entries in each)."""
    x, y = gaussian_clouds(rng, n, m)
    C = ground_cost(x, y)
    return histogram(rng, n, zeros=zeros), histogram(rng, m, zeros=zeros), C / C.max(), x, y


def plan_from_potentials(a, b, C, f, g, eps) -> np.ndarray:
    """``P_ij = a_i b_j exp((f_i + g_j - C_ij) / eps)`` (the otcore convention), in NumPy."""
    return a[:, None] * b[None, :] * np.exp((f[:, None] + g[None, :] - C) / eps)


def primal_objective(a, b, C, P, eps) -> float:
    """``<C, P> + eps KL(P | a b^T)`` with the generalized KL and ``0 log 0 = 0``."""
    Q = a[:, None] * b[None, :]
    pos = P > 0
    kl = np.sum(P[pos] * np.log(P[pos] / Q[pos])) - P.sum() + Q.sum()
    return float(np.sum(C * P) + eps * kl)


def marginal_l1(a, b, P) -> float:
    """``|P 1 - a|_1 + |P^T 1 - b|_1``."""
    return float(np.abs(P.sum(axis=1) - a).sum() + np.abs(P.sum(axis=0) - b).sum())
