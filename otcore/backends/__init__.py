"""Dispatch layer: pick the backend (device + kernels) from the input arrays.

=================  ===============================  =====================================
input arrays       backend                          kernels
=================  ===============================  =====================================
NumPy              ``numba_cpu``                    Numba, parallel over rows
CuPy               ``cupy_gpu``                     CUDA (``otcore/kernels/cuda``)
other Array-API    ``array_api``                    plain ``xp`` code (the reference)
=================  ===============================  =====================================

Mixing namespaces (NumPy with CuPy, say) is a :class:`TypeError`: otcore never copies
between host and device behind the caller's back.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._base import Backend, GeometryOps
from .array_api import ArrayAPIBackend
from .numba_cpu import NumbaBackend

__all__ = ["ArrayAPIBackend", "Backend", "GeometryOps", "NumbaBackend", "get_backend",
           "namespace_of"]


def _is_cupy(x: Any) -> bool:
    return type(x).__module__.split(".", 1)[0] == "cupy"


def _namespace_key(x: Any) -> tuple[str, Any]:
    if isinstance(x, np.ndarray):
        return "numpy", np
    if _is_cupy(x):
        import cupy

        return "cupy", cupy
    if hasattr(x, "__array_namespace__"):
        xp = x.__array_namespace__()
        return getattr(xp, "__name__", repr(xp)), xp
    raise TypeError(
        f"expected NumPy, CuPy or Array-API arrays, got {type(x).__name__}; "
        "wrap lists with numpy.asarray"
    )


def namespace_of(*arrays: Any, names: tuple[str, ...] | None = None) -> Any:
    """The single array namespace of ``arrays`` (``None`` entries are ignored).

    ``names``, one per array, name the arguments in error messages.

    Raises
    ------
    TypeError
        If the arrays come from different namespaces, or are not arrays.
    """
    names = names or tuple(f"argument {k}" for k in range(len(arrays)))
    keys: dict[str, Any] = {}
    owners: dict[str, list[str]] = {}
    for x, arg in zip(arrays, names, strict=True):
        if x is None:
            continue
        try:
            lib, xp = _namespace_key(x)
        except TypeError as err:
            raise TypeError(f"{arg}: {err}") from None
        keys[lib] = xp
        owners.setdefault(lib, []).append(arg)
    if len(keys) > 1:
        detail = "; ".join(f"{', '.join(args)} from {lib}" for lib, args in owners.items())
        raise TypeError(
            f"all arrays must come from one array library, got {detail}; move them to one "
            "device first (otcore never copies implicitly)"
        )
    if not keys:
        raise TypeError("no array given")
    return next(iter(keys.values()))


def _cupy_backend() -> Backend:
    from .cupy_gpu import CupyBackend

    return CupyBackend()


def get_backend(
    *arrays: Any, backend: str | Backend | None = None, names: tuple[str, ...] | None = None
) -> Backend:
    """The backend for ``arrays``: NumPy -> ``numba_cpu``, CuPy -> ``cupy_gpu``, other
    Array-API arrays -> ``array_api``.

    Parameters
    ----------
    *arrays : array or None
        The inputs of a solver call; ``None`` entries are ignored.
    backend : {"numba_cpu", "array_api", "cupy_gpu"} or Backend, optional
        Force a backend instead of choosing from the arrays (for example ``"array_api"``
        to run the reference implementation on NumPy arrays).
    names : tuple of str, optional
        Argument names of ``arrays``, used in error messages.

    Returns
    -------
    Backend

    Raises
    ------
    TypeError
        For mixed namespaces, or a backend forced by name that cannot take these arrays.
        A :class:`Backend` instance is used as given: it must accept the arrays.

    Examples
    --------
    >>> import numpy as np
    >>> from otcore.backends import get_backend
    >>> get_backend(np.ones(3)).name
    'numba_cpu'
    """
    xp = namespace_of(*arrays, names=names)
    if isinstance(backend, Backend):
        return backend
    if backend is None:
        if xp is np:
            return NumbaBackend()
        if getattr(xp, "__name__", "") == "cupy":
            return _cupy_backend()
        return ArrayAPIBackend(xp)
    if backend == "array_api":
        return ArrayAPIBackend(xp)
    if backend == "numba_cpu" and xp is np:
        return NumbaBackend()
    if backend == "cupy_gpu" and getattr(xp, "__name__", "") == "cupy":
        return _cupy_backend()
    if backend in ("numba_cpu", "cupy_gpu"):
        raise TypeError(f"backend={backend!r} cannot take arrays from {xp.__name__}")
    raise ValueError(
        f"backend must be 'numba_cpu', 'cupy_gpu', 'array_api' or a Backend, got {backend!r}"
    )
