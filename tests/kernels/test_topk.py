"""The fused top-k kernel of cardinality-constrained OT against brute force and the
array_api reference backend."""

import itertools

import array_api_strict as xps
import numpy as np
import pytest

from otcore.backends import ArrayAPIBackend, NumbaBackend
from otcore.backends._contract import TopK
from otcore.backends.array_api import group_costs
from otcore.geometry import DenseCost, PointCloud
from otcore.kernels.numba import SERIAL_BELOW, topk

from ..problems import ground_cost

NUMBA = NumbaBackend()
REFERENCE = ArrayAPIBackend(xps)


def sparse_simplex_brute_force(z, k):
    """Projection of z onto {y >= 0, sum y = 1, |y|_0 <= k} by enumeration.

    On a face with support T the projection is the affine one,
    y_T = z_T - (sum z_T - 1) / |T|, when that is nonnegative; the projection onto the
    k-sparse simplex is the closest of these candidates over all |T| <= k.
    """
    best, best_y = np.inf, None
    for size in range(1, k + 1):
        for support in itertools.combinations(range(z.size), size):
            support = list(support)
            y = np.zeros_like(z)
            y[support] = z[support] - (z[support].sum() - 1.0) / size
            if y.min() < 0:
                continue
            dist = np.sum((y - z) ** 2)
            if dist < best - 1e-12:
                best, best_y = dist, y
    return best_y


def dense(nnz, idx, val, n):
    """Scatter the listed positive entries of every group into a dense (m, n) array."""
    out = np.zeros((idx.shape[0], n))
    for j, count in enumerate(nnz):
        out[j, idx[j, :count]] = val[j, :count]
    return out


def numba_evaluator(K, w, gamma, k, simplex):
    """A fresh (hint-free) Numba evaluator over the groups of a raw ``(m, n)`` matrix ``K``:
    its rows are the groups, i.e. the columns (``axis=0``) of the cost ``C = K.T``."""
    return NUMBA.bind(DenseCost(K.T)).topk(0, w, gamma, k, simplex)


def reference_evaluator(K, w, gamma, k, simplex):
    """The array_api reference (over array-api-strict) for the same groups as
    :func:`numba_evaluator`; ``K`` and ``w`` are NumPy arrays."""
    geom = DenseCost(xps.asarray(K.T))
    return REFERENCE.bind(geom).topk(0, xps.asarray(w), gamma, k, simplex)


def run_reference(K, alpha, beta, w, gamma, k, simplex, width):
    """The reference's outputs as NumPy arrays."""
    ref = reference_evaluator(K, w, gamma, k, simplex)(xps.asarray(alpha), xps.asarray(beta),
                                                        width)
    assert isinstance(ref, TopK)
    return TopK(*(np.from_dlpack(v) for v in ref))


def run_numba(K, alpha, beta, w, gamma, k, simplex, width=None):
    """All outputs of a fresh evaluator, by default with every positive entry listed
    (width = min(k, n))."""
    width = min(k, K.shape[1]) if width is None else width
    got = numba_evaluator(K, w, gamma, k, simplex)(alpha, beta, width)
    assert isinstance(got, TopK)
    return got


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("k", [1, 2, 3, 6])
def test_sparse_simplex_projection_equals_brute_force(seed, k):
    rng = np.random.default_rng(seed)
    n = 6
    # a group per row: z = alpha - K with K = 0; half of the inputs have exact ties
    Z = rng.normal(size=(4, n)) if seed % 2 else np.round(rng.normal(size=(4, n)) * 2) / 2
    for z in Z:
        _, gsum, _, nnz, rows, idx, val = run_numba(np.zeros((1, n)), z, np.zeros(1),
                                                   np.ones(1), 1.0, k, True)
        y = dense(nnz, idx, val, n)[0]
        y_ref = sparse_simplex_brute_force(z, k)
        np.testing.assert_allclose(y, y_ref, atol=1e-12)
        assert np.count_nonzero(y) == nnz[0] <= k
        np.testing.assert_allclose(gsum, [1.0], rtol=1e-13)
        np.testing.assert_allclose(rows, y, atol=1e-15)


@pytest.mark.parametrize("gamma", [0.3, 2.0])
def test_scaled_projection_value_and_mass(gamma):
    # semi-dual group j: t = w_j * proj_k(x / (gamma w_j)), value <x, t> - gamma/2 |t|^2
    rng = np.random.default_rng(1)
    n, k = 6, 3
    x, w = rng.normal(size=n), 0.37
    gval, gsum, theta, nnz, _, idx, val = run_numba(np.zeros((1, n)), x, np.zeros(1),
                                                    np.array([w]), gamma, k, True)
    t = dense(nnz, idx, val, n)[0]
    t_ref = w * sparse_simplex_brute_force(x / (gamma * w), k)
    np.testing.assert_allclose(t, t_ref, atol=1e-12)
    np.testing.assert_allclose(gval, [x @ t_ref - 0.5 * gamma * t_ref @ t_ref], rtol=1e-12)
    np.testing.assert_allclose(gsum, [w], rtol=1e-13)
    # the threshold reproduces the entries: t = [x - theta]_+ / gamma on the support
    on = t > 0
    np.testing.assert_allclose(t[on], (x[on] - theta[0]) / gamma, rtol=1e-12)


@pytest.mark.parametrize("k", [1, 2, 5, 9])
def test_dual_is_k_largest_positive_parts(k):
    rng = np.random.default_rng(2)
    m, n, gamma = 5, 9, 0.7
    K, alpha, beta = rng.random((m, n)), rng.normal(size=n) * 0.5, rng.normal(size=m) * 0.5
    gval, gsum, theta, nnz, rows, idx, val = run_numba(K, alpha, beta, np.ones(m), gamma, k,
                                                       False)
    X = alpha[None, :] + beta[:, None] - K
    top = np.sort(X, axis=1)[:, ::-1][:, :k]
    np.testing.assert_allclose(gval, (np.maximum(top, 0) ** 2).sum(1) / (2 * gamma),
                               rtol=1e-12)
    T = dense(nnz, idx, val, n)
    np.testing.assert_array_equal(nnz, (top > 0).sum(1))
    np.testing.assert_allclose(np.sort(T, axis=1)[:, ::-1][:, :k], np.maximum(top, 0) / gamma,
                               rtol=1e-12)
    np.testing.assert_allclose(gsum, T.sum(1), rtol=1e-12)
    np.testing.assert_allclose(rows, T.sum(0), rtol=1e-12)
    np.testing.assert_array_equal(theta, 0.0)


def test_ties_prefer_the_smaller_index():
    n, k = 10, 3
    K = np.zeros((2, n))
    K[1, [2, 5, 7, 8]] = -1.0  # four tied best scores in group 1
    for simplex in (True, False):
        # beta = 1 makes every selected dual entry positive; the semi-dual splits the mass
        # evenly among tied scores, so all three selected entries are positive too
        *_, nnz, _, idx, _ = run_numba(K, np.zeros(n), np.ones(2), np.ones(2), 1.0, k,
                                       simplex)
        np.testing.assert_array_equal(nnz, [3, 3])
        np.testing.assert_array_equal(idx, [[0, 1, 2], [2, 5, 7]])


def compare_to_reference(K, alpha, beta, w, gamma, k, simplex):
    width = min(k, K.shape[1])
    got = run_numba(K, alpha, beta, w, gamma, k, simplex, width)
    ref = run_reference(K, alpha, beta, w, gamma, k, simplex, width)
    names = ("gval", "gsum", "theta", "nnz", "rows", "idx", "val")
    for name, g, r in zip(names, got, ref, strict=True):
        assert g.shape == r.shape, name
        if name in ("nnz", "idx"):
            assert g.dtype.kind == r.dtype.kind == "i", name
        else:
            assert g.dtype == r.dtype == np.float64, name
    gval, gsum, theta, nnz, rows, idx, val = got
    np.testing.assert_array_equal(nnz, ref[3])
    for name, g, r in (("gval", gval, ref[0]), ("gsum", gsum, ref[1]), ("theta", theta, ref[2]),
                       ("rows", rows, ref[4]), ("val", val, ref[6])):
        np.testing.assert_allclose(g, r, rtol=1e-12, atol=1e-12, err_msg=name)
    listed = np.arange(width)[None, :] < nnz[:, None]  # past nnz the index is unspecified
    np.testing.assert_array_equal(idx[listed], ref[5][listed])
    assert nnz.max(initial=0) <= width and np.all(val[~listed] == 0)


@pytest.mark.parametrize("simplex", [True, False])
@pytest.mark.parametrize("k", [1, 2, 5, 30, 49, 59, 60, 75])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("gamma", [0.05, 50.0])
def test_numba_matches_array_api_reference(simplex, k, dtype, gamma):
    # k = 49 and 59 take the sort path (k + 1 > 48), k >= 60 = n the select-all path;
    # there a small gamma leaves the semi-dual support within the top 8 scores (the
    # probe), a large one spreads it over the group (the active-set threshold)
    rng = np.random.default_rng(k)
    m, n = 23, 60
    K = rng.random((m, n)).astype(dtype)
    alpha, beta = rng.normal(size=n) * 0.3, rng.normal(size=m) * 0.3
    w = rng.random(m)
    w[4] = 0.0  # a group without mass
    compare_to_reference(K, alpha, beta if not simplex else np.zeros(m), w, gamma, k, simplex)


@pytest.mark.parametrize("simplex", [True, False])
@pytest.mark.parametrize("k", [3, 12, 20])
def test_numba_matches_reference_with_ties(simplex, k):
    rng = np.random.default_rng(3)
    K = rng.integers(0, 3, size=(17, 12)).astype(np.float64)  # many exact ties
    beta = np.zeros(17) if simplex else np.full(17, 1.5)
    compare_to_reference(K, np.zeros(12), beta, np.full(17, 1 / 17), 0.2, k, simplex)


@pytest.mark.parametrize("simplex", [True, False])
def test_parallel_and_serial_kernels_agree(simplex):
    rng = np.random.default_rng(4)
    m, n, k = 301, 450, 4  # above SERIAL_BELOW: the default call runs in parallel
    assert m * n >= SERIAL_BELOW
    K, alpha, w = rng.random((m, n)), rng.normal(size=n), rng.random(m)
    beta = np.zeros(m) if simplex else rng.normal(size=m)
    state = {name: (np.full(m, np.nan), (np.zeros((m, k + 6), np.int64), np.zeros((m, k + 6)),
                                         np.full(m, -np.inf), np.full(m, np.inf)))
             for name in ("par", "ser")}
    radius = state["ser"][1][2]
    # a first call (no previous one: searches in full), one a short step away (searches
    # that keep candidate lists), then one a step away that is within the radii of half
    # of the groups (their lists are used, the others searched again)
    used = None
    for call in range(3):
        step = (np.inf, 1e-9, float(np.median(radius)))[call]
        if call:
            alpha = alpha + step * rng.uniform(-1, 1, size=n)
            used = radius > step
        idx_p, val_p = np.empty((m, k), np.int64), np.empty((m, k))
        idx_s, val_s = np.empty((m, k), np.int64), np.empty((m, k))
        par = topk._parallel(K, alpha, beta, w, 0.1, k, simplex, 3, idx_p, val_p,
                             state["par"][0], *state["par"][1], step)
        ser = topk._serial(K, alpha, beta, w, 0.1, k, simplex, idx_s, val_s,
                           state["ser"][0], *state["ser"][1], step)
        for p, s in zip(par, ser, strict=True):
            np.testing.assert_allclose(p, s, rtol=1e-13, atol=1e-15)
        np.testing.assert_array_equal(idx_p, idx_s)
        np.testing.assert_array_equal(val_p, val_s)
        for p, s in zip((state["par"][0], *state["par"][1]),
                        (state["ser"][0], *state["ser"][1]), strict=True):
            np.testing.assert_array_equal(p, s)
        # the same as a search of every group in full
        plain = topk.topk_groups(K, alpha, beta, w, 0.1, k, simplex, 1, idx_p, val_p,
                                 np.zeros(0))
        for p, s in zip(plain, ser, strict=True):
            np.testing.assert_allclose(p, s, rtol=1e-13, atol=1e-15)
        np.testing.assert_array_equal(idx_p, idx_s)
    assert 0 < np.count_nonzero(used) < m


@pytest.mark.parametrize("simplex", [True, False])
@pytest.mark.parametrize("k", [1, 3, 40, 59, 60])
@pytest.mark.parametrize("ties", [False, True])
def test_hinted_evaluator_equals_plain_kernel(simplex, k, ties):
    # The evaluator carries each group's last (k + 1)-th score (k < n) or threshold
    # (semi-dual, k >= n) into the next call; a sequence of potentials that move a
    # little, a lot, up and down makes the guesses good, too low and too high (then a
    # group must be searched in full). Every call must equal the stateless kernel.
    rng = np.random.default_rng(7 + k)
    m, n = 37, 60
    K = rng.integers(0, 4, size=(m, n)) / 4.0 if ties else rng.random((m, n))
    w = rng.random(m)
    w[5] = 0.0  # a group without mass
    alpha = rng.normal(size=n) * 0.3
    beta = np.zeros(m) if simplex else rng.normal(size=m) * 0.3
    ops = NUMBA.bind(DenseCost(K.T))  # the groups (rows of K) are the columns of C = K.T
    evaluate = ops.topk(0, w, 0.2, k, simplex)
    steps = [0.0, 1e-6, 1e-3, 0.3, -0.5, 2.0, -4.0, 1e-9]
    for t, step in enumerate(steps):
        alpha = alpha + step * (rng.random(n) if t % 2 else np.ones(n))
        width = min(k, n) if t == len(steps) - 1 else 0
        got = evaluate(alpha, beta, width)
        plain = ops.topk(0, w, 0.2, k, simplex)(alpha, beta, width)  # fresh: no hints
        ref = run_reference(K, alpha, beta, w, 0.2, k, simplex, width)
        listed = np.arange(width)[None, :] < got[3][:, None]  # past nnz: unspecified
        for name, g, p, r in zip(["gval", "gsum", "theta", "nnz", "rows", "idx", "val"], got,
                                 plain, ref, strict=True):
            # the array_api reference, and the same kernel without a hint
            if name == "idx":
                g, p, r = g[listed], p[listed], r[listed]
            np.testing.assert_allclose(g, r, rtol=1e-12, atol=1e-14, err_msg=f"{name} {t}")
            np.testing.assert_allclose(g, p, rtol=1e-12, atol=1e-14, err_msg=f"{name} {t}")


def numba_group_costs(geom, axis):
    """The group-major layout the Numba ops build (and keep) for ``topk(axis, ...)``."""
    ops = NUMBA.bind(geom)
    groups = geom.shape[1 if axis == 0 else 0]
    ops.topk(axis, np.ones(groups), 1.0, 1, False)
    return ops._groups[axis]


def test_group_costs_layout():
    rng = np.random.default_rng(5)
    C = rng.random((4, 7))
    K = numba_group_costs(DenseCost(C), 0)
    assert K.flags.c_contiguous and K.shape == (7, 4)
    np.testing.assert_array_equal(K, C.T)
    np.testing.assert_array_equal(numba_group_costs(DenseCost(C), 1), C)
    # the reference's layout (a module function)
    ref = DenseCost(xps.asarray(C))
    np.testing.assert_array_equal(np.from_dlpack(group_costs(xps, ref, 0)), C.T)
    np.testing.assert_array_equal(np.from_dlpack(group_costs(xps, ref, 1)), C)


@pytest.mark.parametrize("cost", ["sqeuclidean", "euclidean", ("pnorm", 1.5)])
def test_group_costs_of_a_point_cloud(cost):
    # evaluated block by block into one array, the same on both backends (and SciPy's)
    rng = np.random.default_rng(6)
    x, y = rng.normal(size=(9, 3)), rng.normal(size=(13, 3))
    C = ground_cost(x, y, cost)
    for axis, expected in ((0, C.T), (1, C)):
        K = numba_group_costs(PointCloud(x, y, cost), axis)
        assert K.flags.c_contiguous
        np.testing.assert_allclose(K, expected, rtol=1e-13)
        ref = group_costs(xps, PointCloud(xps.asarray(x), xps.asarray(y), cost), axis)
        np.testing.assert_allclose(np.from_dlpack(ref), expected, rtol=1e-13)
