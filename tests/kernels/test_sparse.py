"""SNS kernels: the dense plan with its marginals, and its sparsification to CSR.

The Numba kernels are compared with the Array-API reference backend (run on NumPy arrays)
and with direct NumPy formulas; the sparsification is also checked against its
definition (threshold on normalized entries, at least the requested count).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import scipy.sparse as sps

import otcore as oc
from otcore.solvers._problem import make_problem


def _ops(C, backend):
    return make_problem(None, None, C, backend).ops


def _buffer(shape, dtype=np.float64):
    """The caller's (n, m) C-contiguous buffer that plan_marginals writes the plan into."""
    return np.empty(shape, dtype=dtype)


def _potentials(rng, n, m, scale=0.3):
    return scale * rng.normal(size=n), scale * rng.normal(size=m)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_plan_marginals_dense_matches_numpy_and_reference(dtype):
    rng = np.random.default_rng(0)
    C = rng.random((37, 53)).astype(dtype)
    hf, hg = (h.astype(dtype) for h in _potentials(rng, 37, 53))
    eps = dtype(0.05)
    expected = np.exp((hf[:, None].astype(np.float64) + hg[None] - C) / float(eps))
    rtol = 1e-13 if dtype == np.float64 else 2e-5
    out = np.empty((37, 53), dtype=dtype)
    P, rows, cols = _ops(C, "numba_cpu").plan_marginals(hf, hg, eps, out=out)
    assert P is out and P.dtype == dtype and rows.dtype == dtype
    np.testing.assert_allclose(P, expected, rtol=rtol)
    np.testing.assert_allclose(rows, expected.sum(1), rtol=rtol)
    np.testing.assert_allclose(cols, expected.sum(0), rtol=rtol)
    out2 = _buffer((37, 53), dtype)
    P2, rows2, cols2 = _ops(C, "array_api").plan_marginals(hf, hg, eps, out=out2)
    assert P2 is out2  # the reference honours out too
    np.testing.assert_allclose(P, P2, rtol=rtol)
    np.testing.assert_allclose(rows, rows2, rtol=rtol)
    np.testing.assert_allclose(cols, cols2, rtol=rtol)


@pytest.mark.parametrize("cost", ["sqeuclidean", "euclidean", ("pnorm", 1.5)])
def test_plan_marginals_point_cloud(cost):
    rng = np.random.default_rng(1)
    # more than one cost tile per row (the tile is 512 columns)
    geom = oc.PointCloud(rng.normal(size=(20, 3)), rng.normal(size=(700, 3)), cost=cost,
                         scale=4.0)
    hf, hg = _potentials(rng, 20, 700)
    P, rows, cols = _ops(geom, "numba_cpu").plan_marginals(hf, hg, 0.1, _buffer((20, 700)))
    expected = np.exp((hf[:, None] + hg[None] - geom.cost_matrix()) / 0.1)
    np.testing.assert_allclose(P, expected, rtol=1e-12)
    np.testing.assert_allclose(rows, expected.sum(1), rtol=1e-12)
    np.testing.assert_allclose(cols, expected.sum(0), rtol=1e-12)


def test_plan_marginals_infinite_potentials_and_overflow():
    C = np.random.default_rng(2).random((6, 5))
    hf = np.array([-np.inf, 0.0, 0.0, 0.0, 0.0, 800.0])
    hg = np.zeros(5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        P, rows, cols = _ops(C, "numba_cpu").plan_marginals(hf, hg, 1.0, _buffer((6, 5)))
    assert np.all(P[0] == 0) and rows[0] == 0
    assert np.all(np.isinf(P[5])) and np.isinf(rows[5]) and np.all(np.isinf(cols))
    np.testing.assert_allclose(P[1:5], np.exp(-C[1:5]), rtol=1e-14)


@pytest.mark.parametrize("bad", ["none", "shape", "dtype", "order", "list"])
def test_plan_marginals_rejects_an_unsuitable_out(bad):
    rng = np.random.default_rng(6)
    C = rng.random((7, 9))
    hf, hg = _potentials(rng, 7, 9)
    out = {"none": None, "shape": _buffer((9, 7)), "dtype": _buffer((7, 9), np.float32),
           "order": np.empty((7, 9), order="F"), "list": np.zeros((7, 9)).tolist()}[bad]
    with pytest.raises(ValueError):
        _ops(C, "numba_cpu").plan_marginals(hf, hg, 0.1, out)


def _normalized(P, rows, cols):
    return P / np.sqrt(np.outer(rows, cols))


@pytest.mark.parametrize("nnz", [1, 7, 150, 1000, 2040, 10**6])
def test_sparsify_matches_reference_and_definition(nnz):
    rng = np.random.default_rng(3)
    n, m = 40, 51
    C = rng.random((n, m))
    hf, hg = _potentials(rng, n, m, scale=0.01)
    P, rows, cols = _ops(C, "numba_cpu").plan_marginals(hf, hg, 0.02, _buffer((n, m)))
    S, theta = _ops(C, "numba_cpu").sparsify_plan(P, rows, cols, nnz)
    R, theta_ref = _ops(C, "array_api").sparsify_plan(P, rows, cols, nnz)
    assert isinstance(S, sps.csr_array) and isinstance(R, sps.csr_array)
    assert theta == theta_ref
    assert (S != R).nnz == 0
    dense = S.toarray()
    kept = dense > 0
    q = _normalized(P, rows, cols)
    # every kept entry is the plan entry itself, the threshold separates kept from dropped
    np.testing.assert_array_equal(dense[kept], P[kept])
    assert np.all(q[kept] >= theta) and np.all(q[~kept & (P > 0)] < theta)
    positive = int(np.count_nonzero(P > 0))
    assert S.nnz >= min(nnz, positive)
    if nnz <= positive:
        # theta is the nnz-th largest normalized value truncated to two mantissa bits
        qk = np.sort(q.ravel())[::-1][nnz - 1]
        mant, _ = math.frexp(theta)
        assert theta <= qk < 1.25 * theta and (mant * 8) == int(mant * 8)


def test_sparsify_zero_rows_columns_and_underflow():
    rng = np.random.default_rng(4)
    n, m = 30, 20
    C = rng.random((n, m))
    hf, hg = _potentials(rng, n, m, scale=0.01)
    hf[:3] = -np.inf  # zero-mass rows
    hg[-2:] = -np.inf  # zero-mass columns
    eps = 2e-4  # most entries underflow to exactly 0
    ops = _ops(C, "numba_cpu")
    P, rows, cols = ops.plan_marginals(hf, hg, eps, _buffer((n, m)))
    assert np.count_nonzero(P == 0) > n * m // 2
    for nnz in (10, n * m):
        S, _ = ops.sparsify_plan(P, rows, cols, nnz)
        R, _ = _ops(C, "array_api").sparsify_plan(P, rows, cols, nnz)
        assert (S != R).nnz == 0
        dense = S.toarray()
        assert np.all(dense[:3] == 0) and np.all(dense[:, -2:] == 0)
        assert np.all(np.isfinite(S.data)) and np.all(S.data > 0)
    assert S.nnz == np.count_nonzero(P)  # asking for everything keeps every nonzero


def test_sparsify_float32():
    rng = np.random.default_rng(5)
    C = rng.random((25, 33)).astype(np.float32)
    hf, hg = (h.astype(np.float32) for h in _potentials(rng, 25, 33, scale=0.01))
    ops = _ops(C, "numba_cpu")
    P, rows, cols = ops.plan_marginals(hf, hg, np.float32(0.05), _buffer((25, 33), np.float32))
    S, theta = ops.sparsify_plan(P, rows, cols, 100)
    R, theta_ref = _ops(C, "array_api").sparsify_plan(P, rows, cols, 100)
    assert S.dtype == np.float32 and S.nnz >= 100
    # the reference computes the normalized values in float32, the kernel in float64:
    # allow a different decision for values within rounding of the threshold
    assert theta == theta_ref
    assert (S != R).nnz <= 2
