"""The vectorizable exponential against numpy.exp (float64 reference)."""

from __future__ import annotations

import re

import numpy as np
import pytest
from numba import njit

from otcore.kernels.numba.vexp import vexp


@njit(cache=True)
def vexp_array(x):
    out = np.empty_like(x)
    for i in range(x.shape[0]):
        out[i] = vexp(x[i])
    return out


def ulp_error(y, x):
    """Error of ``y ~ exp(x)`` in units in the last place of ``y``'s dtype (reference in
    float64; for float64 inputs ``numpy.exp`` itself is correctly rounded to < 1 ulp)."""
    ref = np.exp(x.astype(np.float64))
    return np.abs(y.astype(np.float64) - ref) / np.spacing(ref.astype(y.dtype)).astype(np.float64)


# Ranges whose results are normal numbers (vexp flushes results near the subnormal range).
RANGES = {np.float64: (-700.0, 700.0), np.float32: (-86.5, 88.5)}


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_accuracy_on_the_normal_range(dtype):
    lo, hi = RANGES[dtype]
    rng = np.random.default_rng(0)
    x = np.concatenate([
        np.linspace(lo, hi, 400_001),
        rng.uniform(-1.0, 1.0, 100_000),  # where relative accuracy matters most in Sinkhorn
        np.arange(-20, 21) * np.log(2.0),  # reduction boundaries k ln 2
        [0.0, -0.0, 1e-300, -1e-300],
    ]).astype(dtype)
    y = vexp_array(x)
    assert y.dtype == dtype
    assert ulp_error(y, x).max() <= 4


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_exact_values(dtype):
    y = vexp_array(np.array([0.0, -np.inf, np.inf], dtype=dtype))
    assert y[0] == 1.0 and y[1] == 0.0 and y[2] == np.inf


@pytest.mark.parametrize(
    ("dtype", "under", "over"),
    [(np.float64, [-745.2, -800.0, -1e5, -1e300], [709.79, 710.0, 1e5, 1e300]),
     (np.float32, [-103.98, -120.0, -1e5, -1e30], [88.73, 89.0, 1e5, 1e30])],
)
def test_underflow_and_overflow(dtype, under, over):
    """Results below the normal range are exactly 0; above the largest float, inf."""
    assert np.all(vexp_array(np.array(under, dtype=dtype)) == 0.0)
    assert np.all(vexp_array(np.array(over, dtype=dtype)) == np.inf)


@pytest.mark.parametrize(("dtype", "lo", "hi"), [(np.float64, -746.0, -690.0),
                                                  (np.float32, -105.0, -85.0)])
def test_near_underflow_accurate_or_flushed(dtype, lo, hi):
    """Near the subnormal range a result is either accurate or flushed to 0, and only
    results within a factor 1.5 of the smallest normal number are flushed."""
    x = np.linspace(lo, hi, 200_001).astype(dtype)
    y = vexp_array(x)
    ref = np.exp(x.astype(np.float64))
    tiny = float(np.finfo(dtype).tiny)
    flushed = y == 0
    assert np.all(ref[flushed] < 1.5 * tiny)
    assert ulp_error(y[~flushed], x[~flushed]).max() <= 4


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_near_overflow(dtype):
    big = float(np.log(np.finfo(dtype).max))
    x = np.linspace(big - 2.0, big, 20_001, endpoint=False).astype(dtype)
    x = x[np.exp(x.astype(np.float64)) < float(np.finfo(dtype).max)]
    y = vexp_array(x)
    assert np.all(np.isfinite(y))
    assert ulp_error(y, x).max() <= 4


def test_nan_propagates():
    assert np.isnan(vexp_array(np.array([np.nan]))[0])


def test_not_callable_from_python():
    with pytest.raises(NotImplementedError):
        vexp(1.0)


def test_loop_vectorizes():
    """A loop over vexp compiles to packed vector arithmetic, with no exp call (neither
    the scalar libm ``exp`` nor LLVM's ``llvm.exp`` intrinsic, which lowers to it)."""

    @njit(cache=False)  # inspect_llvm needs a fresh compilation, not a cache hit
    def loop(x):
        out = np.empty_like(x)
        for i in range(x.shape[0]):
            out[i] = vexp(x[i])
        return out

    loop(np.linspace(-5.0, 5.0, 64))
    ir = loop.inspect_llvm(loop.signatures[0])
    assert re.search(r"= fmul [^\n]*<\d+ x double>", ir), "the loop did not vectorize"
    assert re.search(r"= fadd [^\n]*<\d+ x double>", ir), "the loop did not vectorize"
    assert not re.search(r"@(llvm\.exp\.|exp\()", ir), "the loop calls exp"
