"""An exponential that LLVM can vectorize.

Numba lowers ``math.exp`` to a scalar libm call when no SVML is available, which blocks
loop vectorization. :func:`vexp` computes ``exp`` with a Cody-Waite range reduction
``x = k ln2 + r`` (``|r| <= ln2 / 2``), a polynomial for ``exp(r)`` and an exact scaling
by ``2**k`` assembled in the exponent bits. Every step is branch-free arithmetic, a
rounding (``floor``), integer add/shift and selects, all of which have packed AVX2
instructions, so loops that call it compile to vector code.

Accuracy: about 1 ulp in float64 (degree-12 Taylor polynomial, truncation < 2e-16) and
in float32 (degree 7). Results below ``exp(-708)`` (float64) or ``exp(-86.98)`` (float32),
close to the smallest normal number, are flushed to 0; arguments above the largest finite
result give ``inf``; ``-inf`` gives 0. The polynomial is compiled without reassociation,
whatever the caller's fast-math flags, so the range reduction keeps its accuracy.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic, overload

__all__ = ["vexp"]

_FLOAT_OF = {
    types.int64: (types.float64, ir.DoubleType()),
    types.int32: (types.float32, ir.FloatType()),
}
_INT_OF = {
    types.float64: (types.int64, ir.IntType(64)),
    types.float32: (types.int32, ir.IntType(32)),
}


@intrinsic
def _as_float(typingctx, bits):
    """Reinterpret the bits of an int64 (int32) as a float64 (float32)."""
    if bits not in _FLOAT_OF:
        return None
    ftype, lltype = _FLOAT_OF[bits]

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], lltype)

    return ftype(bits), codegen


@intrinsic
def _as_int(typingctx, value):
    """Reinterpret the bits of a float64 (float32) as an int64 (int32)."""
    if value not in _INT_OF:
        return None
    itype, lltype = _INT_OF[value]

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], lltype)

    return itype(value), codegen


def vexp(x):
    """Vectorizable ``exp(x)`` for float32 and float64, callable from Numba code only."""
    raise NotImplementedError("vexp is only callable from Numba-compiled code")


def _exp64(x):
    lo = -708.0  # just above log of the smallest normal float64
    hi = 709.782712893384  # log of the largest finite float64
    xc = min(max(x, lo), hi)
    k = np.floor(xc * 1.4426950408889634 + 0.5)
    r = (xc - k * 0.6931471803691238) - k * 1.9082149292705877e-10
    p = 1.0 / 479001600.0
    p = p * r + 1.0 / 39916800.0
    p = p * r + 1.0 / 3628800.0
    p = p * r + 1.0 / 362880.0
    p = p * r + 1.0 / 40320.0
    p = p * r + 1.0 / 5040.0
    p = p * r + 1.0 / 720.0
    p = p * r + 1.0 / 120.0
    p = p * r + 1.0 / 24.0
    p = p * r + 1.0 / 6.0
    p = p * r + 0.5
    p = p * r + 1.0
    p = p * r + 1.0
    # k + 1.5 * 2**52 is exact; its low mantissa bits hold k in two's complement.
    ki = _as_int(k + 6755399441055744.0) - _as_int(6755399441055744.0)
    # scale by 2 * 2**(k - 1) so that k = 1024 (results near the overflow limit) works
    y = (p + p) * _as_float((ki + 1022) << 52)
    y = 0.0 if x < lo else y
    return np.inf if x > hi else y


def _exp32(x):
    lo = np.float32(-86.98)  # k >= -125: 2 * 2**(k - 1) stays normal
    hi = np.float32(88.72283)
    xc = min(max(x, lo), hi)
    k = np.floor(xc * np.float32(1.442695) + np.float32(0.5))
    r = (xc - k * np.float32(0.693359375)) - k * np.float32(-2.12194440e-4)
    p = np.float32(1.0 / 5040.0)
    p = p * r + np.float32(1.0 / 720.0)
    p = p * r + np.float32(1.0 / 120.0)
    p = p * r + np.float32(1.0 / 24.0)
    p = p * r + np.float32(1.0 / 6.0)
    p = p * r + np.float32(0.5)
    p = p * r + np.float32(1.0)
    p = p * r + np.float32(1.0)
    ki = _as_int(k + np.float32(12582912.0)) - _as_int(np.float32(12582912.0))
    y = (p + p) * _as_float(np.int32((ki + 126) << 23))
    y = np.float32(0.0) if x < lo else y
    return np.float32(np.inf) if x > hi else y


@overload(vexp, jit_options={"fastmath": {"contract", "nsz"}})
def _vexp_overload(x):
    if x == types.float64:
        return _exp64
    if x == types.float32:
        return _exp32
    return None
