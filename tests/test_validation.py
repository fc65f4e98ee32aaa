"""Every bad input of DESIGN.md ("Bad input") raises the documented exception, before any
work, with a message that names the offending argument."""

from __future__ import annotations

import array_api_strict
import numpy as np
import pytest

import otcore as oc
from otcore._validation import check_same_mass

N, M = 4, 5


@pytest.fixture
def abC(backend, rng):
    """Valid ``(a, b, C)`` on the backend under test, plus the NumPy originals."""
    a, b, C = np.full(N, 1 / N), np.full(M, 1 / M), rng.uniform(size=(N, M))
    return backend.asarray(a), backend.asarray(b), backend.asarray(C), (a, b, C)


def solve(a, b, C, eps=0.5, **kwargs):
    return oc.sinkhorn(a, b, C, eps, **kwargs)


def solve_with(backend, abC, which, value):
    """Solve on ``backend`` with the NumPy input ``which`` ("a", "b" or "C") replaced."""
    args = dict(zip("abC", abC[3], strict=True))
    args[which] = value(args[which]) if callable(value) else value
    return solve(*(backend.asarray(args[k]) for k in "abC"))


def with_entry(index, bad):
    def change(x):
        x = x.copy()
        x[index] = bad
        return x

    return change


# --- weights -----------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["a", "b"])
@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (-0.1, "has negative entries"),
        (np.nan, "contains NaN or infinite values"),
        (np.inf, "contains NaN or infinite values"),
    ],
)
def test_bad_weight_entry(backend, abC, which, bad, message):
    with pytest.raises(ValueError, match=f"^{which} {message}"):
        solve_with(backend, abC, which, with_entry(1, bad))


@pytest.mark.parametrize("which", ["a", "b"])
def test_weights_without_mass(backend, abC, which):
    with pytest.raises(ValueError, match=f"^{which} sums to zero"):
        solve_with(backend, abC, which, np.zeros_like)


def test_masses_differ(backend, abC):
    with pytest.raises(ValueError, match=r"^a and b must have the same total mass"):
        solve_with(backend, abC, "b", lambda b: 1.01 * b)


@pytest.mark.parametrize("which", ["a", "b"])
def test_total_mass_overflows(which):
    """Finite weights whose sum overflows float64 cannot be compared or normalized."""
    w = np.full(3, 1e308)
    other = np.full(3, 1 / 3) if which == "b" else None
    a, b = (w, other) if which == "a" else (other, w)
    with pytest.raises(ValueError, match=f"^the total mass of {which} overflows"):
        solve(a, b if b is not None else w, np.ones((3, 3)))


def test_float32_overflow_on_conversion():
    """Finite float64 weights beyond float32's range, with a float32 cost."""
    with pytest.raises(ValueError, match=r"^a has values beyond the range of float32 "
                                         r"\(up to 1e\+39\)"):
        solve(np.full(3, 1e39), None, np.ones((3, 3), dtype=np.float32))


@pytest.mark.parametrize("dtype", [">f8", ">f4"])
def test_big_endian_input_is_accepted(rng, dtype):
    """Non-native byte order is read as its native float type: the same result."""
    a, C = rng.uniform(0.5, 1, size=4), rng.uniform(size=(4, 5))
    a /= a.sum()
    ref = solve(a.astype(dtype[1:]), None, C.astype(dtype[1:]))
    res = solve(a.astype(dtype), None, C.astype(dtype))
    assert res.f.dtype == np.dtype(dtype[1:])
    np.testing.assert_array_equal(res.f, ref.f)


def test_mass_tolerance_is_dtype_aware():
    """A relative mass mismatch of 1e-5 is round-off in float32, an error in float64."""
    a, b = np.full(N, 1 / N), np.full(M, (1 + 1e-5) / M)
    check_same_mass(np, a.astype(np.float32), b.astype(np.float32))  # accepted
    with pytest.raises(ValueError, match=r"^a and b must have the same total mass"):
        check_same_mass(np, a, b)


@pytest.mark.parametrize(("which", "length"), [("a", N - 1), ("a", N + 1), ("b", M - 1)])
def test_weights_length_mismatch(backend, abC, which, length):
    with pytest.raises(ValueError, match=f"^{which} has length {length}, but the cost has"):
        solve_with(backend, abC, which, np.full(length, 1 / length))


@pytest.mark.parametrize("which", ["a", "b"])
def test_weights_not_1d(backend, abC, which):
    # 2-D weights stack a batch (one histogram per row): a column vector does not fit
    with pytest.raises(ValueError, match=rf"^{which} has shape \(\d+, 1\), expected"):
        solve_with(backend, abC, which, lambda w: w[:, None])
    with pytest.raises(ValueError, match=f"^{which} must be 1-D"):
        solve_with(backend, abC, which, lambda w: w[:, None, None])


def test_weights_empty(backend, abC):
    with pytest.raises(ValueError, match=r"^a must not be empty"):
        solve_with(backend, abC, "a", np.zeros(0))


# --- cost matrix -------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [np.nan, -np.inf])
def test_cost_not_finite(backend, abC, bad):
    # +inf forbids a pair (tests/solvers/test_forbidden.py); NaN and -inf mean nothing
    with pytest.raises(ValueError, match=r"^C contains NaN or -inf values"):
        solve_with(backend, abC, "C", with_entry((2, 3), bad))


@pytest.mark.parametrize("shape", [(0, M), (N, 0), (0, 0)])
def test_cost_empty(backend, shape):
    with pytest.raises(ValueError, match=r"^C must not be empty"):
        solve(None, None, backend.asarray(np.zeros(shape)))


@pytest.mark.parametrize("shape", [(), (N,), (N, M, 2, 2)])  # (B, n, m) is a batch
def test_cost_not_2d(backend, shape):
    with pytest.raises(ValueError, match=r"^C must be 2-D"):
        solve(None, None, backend.asarray(np.ones(shape)))


def test_cost_missing(backend, abC):
    with pytest.raises(TypeError, match=r"^C must be a cost matrix or a PointCloud"):
        solve(abC[0], abC[1], None)


@pytest.mark.parametrize("which", ["a", "b", "C"])
@pytest.mark.parametrize("dtype", [bool, np.complex128])
def test_unsupported_dtype(backend, abC, which, dtype):
    with pytest.raises(TypeError, match=f"^{which} has unsupported dtype"):
        solve_with(backend, abC, which, lambda x: x.astype(dtype))


@pytest.mark.parametrize("dtype", [np.float16, object])
def test_unsupported_numpy_dtype(abC, dtype):
    a, b, C = abC[3]
    with pytest.raises(TypeError, match=r"^C has unsupported dtype"):
        solve(a, b, C.astype(dtype))


def test_list_input_is_accepted_as_numpy_would():
    C = [[0.0, 1.0], [1.0, 0.0]]
    res = solve([0.5, 0.5], (0.25, 0.75), C)
    ref = solve(np.array([0.5, 0.5]), np.array([0.25, 0.75]), np.array(C))
    assert type(res.f) is np.ndarray and res.backend == "numba_cpu"
    np.testing.assert_array_equal(res.f, ref.f)
    np.testing.assert_array_equal(res.g, ref.g)


@pytest.mark.parametrize("strict", ["a", "b", "C"])
def test_mixed_namespaces(abC, strict):
    args = dict(zip("abC", abC[3], strict=True))
    args[strict] = array_api_strict.asarray(args[strict])
    pattern = rf"one array library, got.*\b{strict} from array_api_strict"
    with pytest.raises(TypeError, match=pattern):
        solve(args["a"], args["b"], args["C"])


# --- scalar arguments --------------------------------------------------------------------


@pytest.mark.parametrize("eps", [0.0, -1.0, np.nan, np.inf, -np.inf])
def test_eps_value(abC, eps):
    with pytest.raises(ValueError, match=r"^eps must be a finite number > 0"):
        solve(*abC[:3], eps=eps)


@pytest.mark.parametrize("eps", ["0.1", None, True, 1j, np.array([0.1])])
def test_eps_type(abC, eps):
    with pytest.raises(TypeError, match=r"^eps must be a real number"):
        solve(*abC[:3], eps=eps)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"tol": 0.0}, ValueError, "^tol must be a finite number > 0"),
        ({"tol": -1e-9}, ValueError, "^tol must be a finite number > 0"),
        ({"tol": np.nan}, ValueError, "^tol must be a finite number > 0"),
        ({"tol": np.inf}, ValueError, "^tol must be a finite number > 0"),
        ({"tol": "1e-9"}, TypeError, "^tol must be a real number"),
        ({"max_iter": 0}, ValueError, "^max_iter must be >= 1"),
        ({"max_iter": -5}, ValueError, "^max_iter must be >= 1"),
        ({"max_iter": 10.0}, TypeError, "^max_iter must be an integer"),
        ({"max_iter": True}, TypeError, "^max_iter must be an integer"),
        ({"check_every": 0}, ValueError, "^check_every must be >= 1"),
        ({"check_every": 2.5}, TypeError, "^check_every must be an integer"),
        ({"eps_scaling": 0.0}, ValueError, r"^eps_scaling must lie in \(0, 1\)"),
        ({"eps_scaling": 1.0}, ValueError, r"^eps_scaling must lie in \(0, 1\)"),
        ({"eps_scaling": 1.5}, ValueError, r"^eps_scaling must lie in \(0, 1\)"),
        ({"eps_scaling": np.nan}, ValueError, r"^eps_scaling must lie in \(0, 1\)"),
        ({"eps_scaling": "fast"}, TypeError, "^eps_scaling must be a real number"),
        ({"eps_scaling": 0.5, "eps_init": 0.0}, ValueError, "^eps_init must be a finite"),
        ({"eps_scaling": 0.5, "eps_init": np.nan}, ValueError, "^eps_init must be a finite"),
        ({"backend": "gpu"}, ValueError, "^backend must be 'numba_cpu', 'cupy_gpu'"),
        ({"backend": 3}, ValueError, "^backend must be 'numba_cpu', 'cupy_gpu'"),
    ],
)
def test_bad_option(backend, abC, kwargs, error, message):
    with pytest.raises(error, match=message):
        solve(*abC[:3], **kwargs)


def test_numba_backend_refuses_other_namespaces():
    C = array_api_strict.asarray(np.ones((N, M)))
    with pytest.raises(TypeError, match=r"^backend='numba_cpu' cannot take arrays"):
        solve(None, None, C, backend="numba_cpu")


# --- warm start --------------------------------------------------------------------------


@pytest.mark.parametrize("init", [3, (None,), [None, None, None], "fg"])
def test_init_not_a_pair(backend, abC, init):
    with pytest.raises(TypeError, match=r"^init must be a pair \(f, g\)"):
        solve(*abC[:3], init=init)


@pytest.mark.parametrize(
    ("slot", "value", "error", "message"),
    [
        (0, np.zeros(N + 1), ValueError, rf"^init\[0\] \(f\) has length {N + 1}, expected {N}"),
        (1, np.zeros(N), ValueError, rf"^init\[1\] \(g\) has length {N}, expected {M}"),
        (0, np.full(N, np.nan), ValueError, r"^init\[0\] \(f\) contains NaN"),
        (1, np.full(M, np.inf), ValueError, r"^init\[1\] \(g\) contains NaN"),
        (0, np.zeros((N, 1)), ValueError, r"^init\[0\] \(f\) must be 1-D"),
        (1, np.zeros(M, dtype=bool), TypeError, r"^init\[1\] \(g\) has unsupported dtype"),
    ],
)
def test_bad_init(backend, abC, slot, value, error, message):
    init = [None, None]
    init[slot] = backend.asarray(value)
    with pytest.raises(error, match=message):
        solve(*abC[:3], init=tuple(init))


def test_init_from_another_namespace(backend, abC):
    other = np if backend.name != "numba_cpu" else array_api_strict
    init = (other.zeros(N, dtype=other.float64), None)
    with pytest.raises(TypeError, match=r"^init\[0\] \(f\) must come from the same array"):
        solve(*abC[:3], init=init)


# --- point clouds ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cost", "message"),
    [
        ("cosine", "^cost must be 'sqeuclidean', 'euclidean' or"),
        ("SQEUCLIDEAN", "^cost must be 'sqeuclidean', 'euclidean' or"),
        (2, "^cost must be 'sqeuclidean', 'euclidean' or"),
        (("pnorm",), "^cost must be 'sqeuclidean', 'euclidean' or"),
        (("pnorm", "2"), "^cost must be 'sqeuclidean', 'euclidean' or"),
        (("pnorm", True), "^cost must be 'sqeuclidean', 'euclidean' or"),
        (("minkowski", 2), "^cost must be 'sqeuclidean', 'euclidean' or"),
        (("pnorm", 0.5), r"^cost=\('pnorm', p\) needs a finite p >= 1"),
        (("pnorm", np.nan), r"^cost=\('pnorm', p\) needs a finite p >= 1"),
        (("pnorm", np.inf), r"^cost=\('pnorm', p\) needs a finite p >= 1"),
    ],
)
def test_pointcloud_bad_cost(backend, cost, message):
    x = backend.asarray(np.zeros((3, 2)))
    with pytest.raises(ValueError, match=message):
        oc.PointCloud(x, x, cost)


def test_pointcloud_dimension_mismatch(backend):
    x, y = backend.asarray(np.zeros((3, 2))), backend.asarray(np.zeros((4, 3)))
    with pytest.raises(ValueError, match=r"^x and y must have the same dimension"):
        oc.PointCloud(x, y)


@pytest.mark.parametrize(
    ("which", "value", "error", "message"),
    [
        ("x", np.full((3, 2), np.nan), ValueError, "^x contains NaN or infinite values"),
        ("y", np.full((3, 2), np.inf), ValueError, "^y contains NaN or infinite values"),
        ("x", np.zeros((0, 2)), ValueError, "^x must not be empty"),
        ("y", np.zeros((3, 0)), ValueError, "^y must not be empty"),
        ("x", np.zeros((3, 2, 1, 1)), ValueError, "^x must be 2-D"),
        ("x", np.zeros((3, 2, 1)), ValueError, "^x is 3-D but y is 2-D"),
        ("y", np.zeros((3, 2), dtype=np.complex128), TypeError, "^y has unsupported dtype"),
        ("x", np.zeros((3, 2), dtype=bool), TypeError, "^x has unsupported dtype"),
    ],
)
def test_pointcloud_bad_points(backend, which, value, error, message):
    pts = {"x": np.zeros((3, 2)), "y": np.zeros((3, 2)), which: value}
    with pytest.raises(error, match=message):
        oc.PointCloud(backend.asarray(pts["x"]), backend.asarray(pts["y"]))


@pytest.mark.parametrize(
    ("scale", "error", "message"),
    [
        (0.0, ValueError, "^scale must be a finite number > 0"),
        (-2.0, ValueError, "^scale must be a finite number > 0"),
        (np.nan, ValueError, "^scale must be a finite number > 0"),
        ("max", TypeError, "^scale must be a real number"),
    ],
)
def test_pointcloud_bad_scale(backend, scale, error, message):
    x = backend.asarray(np.zeros((3, 2)))
    with pytest.raises(error, match=message):
        oc.PointCloud(x, x, scale=scale)


def test_pointcloud_mixed_namespaces():
    x = np.zeros((3, 2))
    with pytest.raises(TypeError, match="one array library"):
        oc.PointCloud(x, array_api_strict.asarray(x))


def test_pointcloud_weights_from_another_namespace():
    x = np.zeros((3, 2))
    a = array_api_strict.asarray(np.full(3, 1 / 3))
    with pytest.raises(TypeError, match="one array library"):
        solve(a, None, oc.PointCloud(x, x))


def test_pointcloud_weights_length(backend):
    x, y = backend.asarray(np.zeros((3, 2))), backend.asarray(np.zeros((4, 2)))
    with pytest.raises(ValueError, match=r"^b has length 3, but the cost has 4"):
        solve(None, backend.asarray(np.full(3, 1 / 3)), oc.PointCloud(x, y))


@pytest.mark.parametrize("arg", ["a", "C"])
def test_masked_arrays_are_refused_by_name(arg):
    C = np.random.default_rng(9).random((4, 3))
    args = {"a": None, "b": None, "C": C}
    args[arg] = np.ma.masked_array(np.full(4, 0.25) if arg == "a" else C,
                                   mask=np.zeros(4 if arg == "a" else (4, 3), dtype=bool))
    with pytest.raises(ValueError, match=rf"^{arg}: masked arrays are not supported"):
        oc.sinkhorn(args["a"], args["b"], args["C"], 0.1)
