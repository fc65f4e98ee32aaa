"""The plan-vector product kernels against the dense NumPy formula.

The reference builds ``P = exp((h1 + h2 - C) / eps)`` in full, with the point-cloud costs
computed independently by SciPy. Sizes cover ``n = m = 1`` and widths that are not
multiples of the point-cloud tile.
"""

from __future__ import annotations

import numba
import numpy as np
import pytest
from numpy.testing import assert_allclose
from scipy.spatial.distance import cdist

from otcore.kernels.numba.apply import apply_cols_dense, apply_rows
from otcore.kernels.numba.cost import DENSE, EUCLIDEAN, PNORM, SQEUCLIDEAN, TILE

SHAPES = [(1, 1), (37, 1100), (5, TILE), (40, 3)]
KINDS = {
    "dense": (DENSE, 0.0),
    "sqeuclidean": (SQEUCLIDEAN, 0.0),
    "euclidean": (EUCLIDEAN, 0.0),
    "pnorm": (PNORM, 1.5),
}
NTHREADS = sorted({1, numba.get_num_threads()})


def problem(kind, shape, nk, dtype=np.float64, seed=0, n_inf=0):
    """Kernel arguments and the dense reference cost (float64) for one test case."""
    rng = np.random.default_rng(seed)
    n, m = shape
    code, p = KINDS[kind]
    if kind == "dense":
        X = rng.uniform(size=(n, m)).astype(dtype)
        YT = np.empty((0, 0), dtype=dtype)
        C = X.astype(np.float64)
    else:
        x = rng.normal(size=(n, 3)).astype(dtype)
        y = (0.5 + rng.normal(size=(m, 3))).astype(dtype)
        X, YT = x, np.ascontiguousarray(y.T)
        x64, y64 = x.astype(np.float64), y.astype(np.float64)
        if kind == "sqeuclidean":
            C = cdist(x64, y64, "sqeuclidean")
        elif kind == "euclidean":
            C = cdist(x64, y64, "euclidean")
        else:
            C = cdist(x64, y64, "minkowski", p=p) ** p / p
    h1 = rng.uniform(-0.5, 0.5, size=n)
    h2 = rng.uniform(-0.5, 0.5, size=m)
    if n_inf:
        h1[rng.choice(n, size=min(n_inf, n - 1), replace=False)] = -np.inf
        h2[rng.choice(m, size=min(n_inf, m - 1), replace=False)] = -np.inf
    V = rng.normal(size=(m, nk))
    U = rng.normal(size=(n, nk))
    return (code, p, X, YT, h1.astype(dtype), h2.astype(dtype), V.astype(dtype),
            U.astype(dtype), C)


def plan(h1, h2, C, eps):
    h1, h2 = h1.astype(np.float64), h2.astype(np.float64)
    return np.exp((h1[:, None] + h2[None, :] - C) / eps)


def run_rows(code, p, X, YT, h1, h2, eps, V, nthreads):
    out = np.full((h1.shape[0], V.shape[1]), np.nan, dtype=X.dtype)
    apply_rows(X, YT, code, p, h1, h2, eps, np.ascontiguousarray(V.T), out, nthreads)
    return out


def run_cols(C, hf, hg, eps, U, nthreads):
    out = np.full((U.shape[1], hg.shape[0]), np.nan, dtype=C.dtype)
    apply_cols_dense(C, hf, hg, eps, np.ascontiguousarray(U), out, nthreads)
    return out


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("nk", [1, 3])
@pytest.mark.parametrize("nthreads", NTHREADS)
@pytest.mark.parametrize("n_inf", [0, 3])
def test_apply_rows(kind, shape, nk, nthreads, n_inf):
    eps = 0.1
    code, p, X, YT, h1, h2, V, _, C = problem(kind, shape, nk, n_inf=n_inf)
    expected = plan(h1, h2, C, eps) @ V
    out = run_rows(code, p, X, YT, h1, h2, eps, V, nthreads)
    assert out.shape == expected.shape and out.dtype == np.float64
    assert_allclose(out, expected, rtol=1e-12, atol=1e-12 * np.abs(expected).max(initial=1.0))
    # a -inf potential gives an exact zero row
    assert np.all(out[h1 == -np.inf] == 0.0)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("nk", [1, 3])
@pytest.mark.parametrize("nthreads", NTHREADS)
@pytest.mark.parametrize("n_inf", [0, 3])
def test_apply_cols_dense(shape, nk, nthreads, n_inf):
    eps = 0.1
    _, _, X, _, h1, h2, _, U, C = problem("dense", shape, nk, n_inf=n_inf)
    expected = (plan(h1, h2, C, eps).T @ U).T
    out = run_cols(X, h1, h2, eps, U, nthreads)
    assert out.shape == expected.shape and out.dtype == np.float64
    assert_allclose(out, expected, rtol=1e-12, atol=1e-12 * np.abs(expected).max(initial=1.0))
    assert np.all(out[:, h2 == -np.inf] == 0.0)


@pytest.mark.parametrize("kind", [k for k in KINDS if k != "dense"])
@pytest.mark.parametrize("nk", [1, 3])
def test_apply_cols_of_clouds_by_swapping(kind, nk):
    """``P^T U`` for point clouds is ``apply_rows`` on the swapped clouds (symmetric cost)."""
    eps = 0.1
    code, p, X, YT, h1, h2, _, U, C = problem(kind, (37, 1100), nk, n_inf=3)
    expected = plan(h1, h2, C, eps).T @ U
    Y, XT = np.ascontiguousarray(YT.T), np.ascontiguousarray(X.T)
    out = run_rows(code, p, Y, XT, h2, h1, eps, U, numba.get_num_threads())
    assert_allclose(out, expected, rtol=1e-12, atol=1e-12 * np.abs(expected).max())


def test_all_minus_inf():
    """Every potential -inf: the plan and both products are exactly zero."""
    code, p, X, YT, h1, h2, V, U, _ = problem("dense", (6, 9), 2)
    h1[:] = -np.inf
    assert np.all(run_rows(code, p, X, YT, h1, h2, 0.1, V, 2) == 0.0)
    assert np.all(run_cols(X, h1, h2, 0.1, U, 2) == 0.0)
    h1[:] = 0.0
    h2[:] = -np.inf
    assert np.all(run_rows(code, p, X, YT, h1, h2, 0.1, V, 2) == 0.0)
    assert np.all(run_cols(X, h1, h2, 0.1, U, 2) == 0.0)


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("nk", [1, 3])
def test_float32(kind, nk):
    """float32 data: float32 outputs within float32 rounding of the float64 formula on the
    same (upcast) data."""
    eps = 0.1
    nthreads = numba.get_num_threads()
    code, p, X, YT, h1, h2, V, U, C = problem(kind, (37, 1100), nk, np.float32, n_inf=3)
    P = plan(h1, h2, C, eps)
    expected = P @ V.astype(np.float64)
    out = run_rows(code, p, X, YT, h1, h2, eps, V, nthreads)
    assert out.dtype == np.float32
    assert_allclose(out, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())
    if kind == "dense":
        expected = (P.T @ U.astype(np.float64)).T
        out = run_cols(X, h1, h2, eps, U, nthreads)
        assert out.dtype == np.float32
        assert_allclose(out, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())
