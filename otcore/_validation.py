"""Every input check of the public API, in one place.

Each check raises before any work is done: :class:`ValueError` naming the argument and
the problem, or :class:`TypeError` for unsupported types and dtypes. The helpers are
namespace-agnostic: they work on NumPy, CuPy and any Array-API array.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np

from ._array import dtype_kind, float_bits, namespaces

__all__ = [
    "as_array",
    "check_bool",
    "check_eps",
    "check_fraction",
    "check_positive_int",
    "check_reg_m",
    "check_same_mass",
    "check_tol",
    "check_weights",
    "float_dtype",
    "mass_rtol",
]


def float_dtype(xp: Any, x: Any, name: str) -> Any:
    """Floating dtype that ``x`` is computed in: float32/float64 kept, integers -> float64.

    Raises
    ------
    TypeError
        For boolean, complex, float16 or non-numeric dtypes.
    """
    kind = dtype_kind(xp, x.dtype)
    if kind in "iu":
        return xp.float64
    dtype = x.dtype
    if getattr(dtype, "byteorder", "=") not in "=|":  # NumPy, non-native byte order
        dtype = dtype.newbyteorder("=")
    if kind == "f" and dtype in (xp.float32, xp.float64):
        return dtype
    raise TypeError(
        f"{name} has unsupported dtype {x.dtype}; expected float32, float64 or an integer dtype"
    )


def as_array(xp: Any, x: Any, name: str, *, dtype: Any, ndim: int,
             allow_posinf: bool = False) -> Any:
    """Convert ``x`` to a finite (or, with ``allow_posinf``, NaN-free and ``-inf``-free),
    non-empty array of ``dtype`` with ``ndim`` dimensions."""
    float_dtype(xp, x, name)  # rejects bool/complex/... before casting hides them
    if x.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got an array of shape {tuple(x.shape)}")
    if any(s == 0 for s in x.shape):
        raise ValueError(f"{name} must not be empty, got shape {tuple(x.shape)}")
    if dtype_kind(xp, x.dtype) == "f":  # integers are finite, and fit in float64
        finite = xp.isfinite(x)
        if not bool(xp.all(finite)):
            if not allow_posinf:
                raise ValueError(f"{name} contains NaN or infinite values")
            if not bool(xp.all(finite | (x == xp.inf))):
                raise ValueError(f"{name} contains NaN or -inf values (+inf forbids a pair)")
        if x.dtype != dtype:  # float64 -> float32 may overflow
            peak = float(xp.max(xp.where(finite, xp.abs(x), 0)))
            if peak > float(xp.finfo(dtype).max):
                raise ValueError(f"{name} has values beyond the range of {dtype} (up to "
                                 f"{peak:.3g}), the dtype of this problem")
    return xp.astype(x, dtype, copy=False) if hasattr(xp, "astype") else x.astype(dtype)


def check_weights(xp: Any, w: Any, n: int, name: str, *, dtype: Any) -> Any:
    """Validate histogram ``w`` of length ``n``; ``None`` means uniform weights ``1/n``."""
    if w is None:
        return xp.full((n,), 1.0 / n, dtype=dtype)
    w = as_array(xp, w, name, dtype=dtype, ndim=1)
    if w.shape[0] != n:
        raise ValueError(f"{name} has length {w.shape[0]}, but the cost has {n} points there")
    if bool(xp.any(w < 0)):
        raise ValueError(f"{name} has negative entries; weights must be nonnegative")
    peak = float(xp.max(w))  # the sum of w / peak cannot overflow
    total = peak * float(xp.sum(w / peak)) if peak > 0 else 0.0
    if not total > 0:
        raise ValueError(f"{name} sums to zero; weights need positive total mass")
    if total > float(xp.finfo(dtype).max):
        raise ValueError(f"the total mass of {name} overflows {dtype}; rescale the weights")
    return w


def mass_rtol(xp: Any, dtype: Any) -> float:
    """Relative tolerance on ``sum(a) == sum(b)``: 1e-6 in float64, 1e-4 in float32."""
    return 1e-4 if float_bits(xp, dtype) == 32 else 1e-6


def check_same_mass(xp: Any, a: Any, b: Any) -> None:
    """Raise if the total masses of ``a`` and ``b`` differ beyond a dtype-aware tolerance."""
    ma, mb = float(xp.sum(a)), float(xp.sum(b))
    if abs(ma - mb) > mass_rtol(xp, a.dtype) * max(ma, mb):
        raise ValueError(
            f"a and b must have the same total mass when both marginals are exact "
            f"(balanced OT): sum(a)={ma:.10g}, sum(b)={mb:.10g}; pass reg_m to relax a "
            "marginal (unbalanced OT)"
        )


def check_reg_m(reg_m: Any) -> tuple[float, float]:
    """``reg_m``: ``None`` (both marginals exact), a number ``rho`` or a pair
    ``(rho_a, rho_b)``, each > 0 (``inf``: that marginal exact)."""
    if reg_m is None:
        return math.inf, math.inf
    if isinstance(reg_m, (tuple, list)):
        if len(reg_m) != 2:
            raise ValueError(f"reg_m must be a number or a pair (rho_a, rho_b), got "
                             f"{len(reg_m)} values")
        pair = tuple(reg_m)
    elif hasattr(reg_m, "shape") and tuple(reg_m.shape) not in ((), (1,)):
        raise ValueError(f"reg_m must be a number or a pair (rho_a, rho_b), got an array "
                         f"of shape {tuple(reg_m.shape)}")
    else:
        pair = (reg_m, reg_m)
    out = []
    for value, side in zip(pair, ("rho_a", "rho_b"), strict=True):
        if hasattr(value, "shape") and tuple(value.shape) in ((), (1,)):
            value = float(value)
        value = _real(value, f"reg_m ({side})")
        if not value > 0:  # also NaN
            raise ValueError(f"reg_m ({side}) must be > 0 (inf for an exact marginal), "
                             f"got {value}")
        out.append(value)
    return out[0], out[1]


def _real(value: Any, name: str) -> float:
    """A real number: Python and NumPy scalars, and 0-d arrays of any library with a real
    or integer dtype (bools and complex numbers are refused)."""
    if (not isinstance(value, numbers.Number) and hasattr(value, "dtype")
            and tuple(getattr(value, "shape", (1,))) == ()):
        try:
            xp = namespaces(value).user
        except (TypeError, ValueError):
            xp = None
        if xp is not None and dtype_kind(xp, value.dtype) in ("f", "i", "u"):
            return float(value)
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    return float(value)


def check_eps(eps: Any, name: str = "eps") -> float:
    """``eps`` must be a finite real number > 0."""
    eps = _real(eps, name)
    if not (math.isfinite(eps) and eps > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {eps}")
    return eps


def check_tol(tol: Any) -> float:
    """``tol`` must be a finite real number > 0."""
    tol = _real(tol, "tol")
    if not (math.isfinite(tol) and tol > 0):
        raise ValueError(f"tol must be a finite number > 0, got {tol}")
    return tol


def check_positive_int(value: Any, name: str, minimum: int = 1) -> int:
    """``value`` must be an integer >= ``minimum`` (NumPy integers accepted)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def check_bool(value: Any, name: str) -> bool:
    """``value`` must be a bool (NumPy bools accepted)."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {type(value).__name__}")
    return bool(value)


def check_fraction(value: Any, name: str) -> float:
    """``value`` must be a real number in the open interval (0, 1)."""
    value = _real(value, name)
    if not 0 < value < 1:
        raise ValueError(f"{name} must lie in (0, 1), got {value}")
    return value


def check_density(value: Any, name: str = "density") -> float:
    """``value`` must be a real number in the half-open interval (0, 1]."""
    value = _real(value, name)
    if not 0 < value <= 1:
        raise ValueError(f"{name} must lie in (0, 1], got {value}")
    return value


def as_points(xp: Any, x: Any, name: str, *, dtype: Any) -> Any:
    """Point cloud ``x`` as a finite, non-empty ``(n, d)`` array of ``dtype``.

    A 1-D array is read as ``n`` points in dimension 1.
    """
    x = x[:, None] if x.ndim == 1 else x
    return as_array(xp, x, name, dtype=dtype, ndim=2)


def check_probability(xp: Any, w: Any, n: int, name: str, *, dtype: Any) -> Any:
    """Weights of ``n`` points (``None``: uniform), validated and normalized to sum 1."""
    w = check_weights(xp, w, n, name, dtype=dtype)
    return w / xp.sum(w)


def check_choice(value: Any, name: str, choices: tuple[str, ...]) -> str:
    """``value`` must be one of the strings ``choices``."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}; got {value!r}")
    return value
