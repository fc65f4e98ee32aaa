"""Dispatch layer: pick the backend (device + kernels) from the input arrays.

=============================  ===============================  ===========================
input arrays                   backend                          kernels
=============================  ===============================  ===========================
NumPy, and CPU data of any     ``numba_cpu``                    Numba, parallel over rows
library (through DLPack)
CuPy, and CUDA data of any     ``cupy_gpu``                     CUDA (``otcore/kernels/cuda``)
library when CuPy is installed
other Array-API arrays         ``array_api``                    plain ``xp`` code (the
                                                                reference)
=============================  ===============================  ===========================

Mixing array libraries (NumPy with CuPy, say) is a :class:`TypeError`: otcore never copies
between host and device behind the caller's back (see :mod:`otcore._array`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._array import namespaces
from ._contract import Backend, BlockLayout, GeometryOps
from .array_api import ArrayAPIBackend
from .numba_cpu import NumbaBackend

__all__ = ["ArrayAPIBackend", "Backend", "BlockLayout", "GeometryOps", "NumbaBackend",
           "get_backend"]


def _cupy_backend() -> Backend:
    from .cupy_gpu import CupyBackend

    return CupyBackend()


def get_backend(
    *arrays: Any, backend: str | Backend | None = None, names: tuple[str, ...] | None = None
) -> Backend:
    """The backend for ``arrays``: NumPy (and CPU data of other libraries) ->
    ``numba_cpu``, CuPy (and CUDA data, with CuPy installed) -> ``cupy_gpu``, other
    Array-API arrays -> ``array_api``.

    Parameters
    ----------
    *arrays : array, array_like or None
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
        For mixed array libraries, or a backend forced by name that cannot take these
        arrays. A :class:`Backend` instance is used as given: it must accept the arrays.

    Examples
    --------
    >>> import numpy as np
    >>> from otcore import get_backend
    >>> get_backend(np.ones(3)).name
    'numba_cpu'
    """
    xp = namespaces(*arrays, names=names).compute
    if isinstance(backend, Backend):
        return backend
    is_cupy = getattr(xp, "__name__", "") == "cupy"
    if backend is None:
        if xp is np:
            return NumbaBackend()
        return _cupy_backend() if is_cupy else ArrayAPIBackend(xp)
    if backend == "array_api":
        return ArrayAPIBackend(xp)
    if backend == "numba_cpu" and xp is np:
        return NumbaBackend()
    if backend == "cupy_gpu" and is_cupy:
        return _cupy_backend()
    if backend in ("numba_cpu", "cupy_gpu"):
        raise TypeError(f"backend={backend!r} cannot take arrays from {xp.__name__}")
    raise ValueError(
        f"backend must be 'numba_cpu', 'cupy_gpu', 'array_api' or a Backend, got {backend!r}"
    )
