"""Array libraries, dtypes and conversions: the bottom layer of otcore.

This module imports nothing from otcore. It answers three questions for every public
function:

* which array library did the caller use (the *user* namespace, to which results return)?
* which namespace do the kernels run on (the *compute* namespace)? CPU data of any library
  reach NumPy (and so the Numba kernels) through DLPack without a copy; CUDA data reach
  CuPy the same way; other Array-API arrays are computed in their own namespace by the
  reference backend;
* what floating dtype does an array compute in, without parsing dtype names?

============================  ==========================  ==============================
caller's arrays               compute namespace           results returned as
============================  ==========================  ==============================
NumPy arrays, lists, scalars  NumPy                       NumPy
CuPy arrays                   CuPy                        CuPy
PyTorch tensors, JAX arrays   NumPy (CPU), CuPy (CUDA,    the caller's library, on the
                              which must be installed)    same device
other Array-API arrays        their own namespace         their own namespace
============================  ==========================  ==============================

PyTorch and JAX arrays on other devices (or on a GPU without CuPy) are refused with a
``TypeError``: the reference backend would allocate its temporaries on the CPU.

Lists and tuples (array_like) adopt the library of the other arrays of the call, as
``numpy.asarray`` would; with no other array they are NumPy arrays. Masked arrays are
refused: otcore would silently ignore their mask.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "Namespaces",
    "astype",
    "concat",
    "dtype_kind",
    "float_bits",
    "host_dtype",
    "is_cupy",
    "namespaces",
    "safe_log",
]


def is_cupy(x: Any) -> bool:
    """Whether ``x`` is a CuPy array (checked without importing CuPy)."""
    return type(x).__module__.split(".", 1)[0] == "cupy"


def _is_torch(x: Any) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


def _is_jax(x: Any) -> bool:
    jax = sys.modules.get("jax")
    return jax is not None and isinstance(x, jax.Array)


def _is_array_like(x: Any) -> bool:
    """Python containers and scalars that NumPy turns into arrays."""
    return isinstance(x, (list, tuple, int, float, np.generic))


def _device_type(x: Any) -> int:
    """The DLPack device type of an array (1: CPU, 2: CUDA, ...); -1 for a device DLPack
    does not know."""
    try:
        device_type, _ = x.__dlpack_device__()
    except Exception:  # each library raises its own error type here
        return -1
    return int(device_type)


_CPU, _CUDA = 1, 2


def _cupy_or_none() -> Any:
    try:
        import cupy
    except ImportError:
        return None
    return cupy


@dataclass(frozen=True)
class Namespaces:
    """Where a call's arrays come from (``user``) and where they are computed
    (``compute``).

    Attributes
    ----------
    user : module
        The namespace results are returned in (``numpy`` for lists).
    compute : module
        The namespace of the arrays the backends see: ``numpy``, ``cupy``, or the user's
        own namespace when no zero-copy route to NumPy or CuPy exists.
    library : str
        Short name of the caller's library (``"numpy"``, ``"torch"``, ``"jax"``, ...), for
        messages.
    """

    user: Any
    compute: Any
    library: str

    @property
    def converts(self) -> bool:
        """Whether arrays move between two namespaces (zero-copy, through DLPack)."""
        return self.user is not self.compute

    def to_compute(self, x: Any) -> Any:
        """``x`` (of the user's library, or array_like) in the compute namespace."""
        if x is None:
            return None
        if self.compute is np:
            if isinstance(x, np.ndarray):
                return x
            if _is_torch(x):
                return np.from_dlpack(x.detach())
            if _is_array_like(x):
                return np.asarray(x)
            return np.from_dlpack(x)
        if _is_array_like(x):
            return self.compute.asarray(x)
        if self.converts:
            if _is_torch(x):
                x = x.detach()
            return self.compute.from_dlpack(x)
        return x

    def to_user(self, x: Any) -> Any:
        """An array of the compute namespace back in the user's library (zero-copy where
        the library accepts DLPack; ``None`` passes through)."""
        if x is None or not self.converts:
            return x
        if self.library == "torch":
            import torch

            return torch.from_dlpack(x)
        if self.library == "jax":
            import jax.numpy as jnp

            return jnp.asarray(x)
        return self.user.from_dlpack(x)


_NUMPY = Namespaces(np, np, "numpy")


def _classify(x: Any) -> tuple[str, Any, Any]:
    """``(library, user namespace, compute namespace)`` of one array."""
    if isinstance(x, np.ndarray):
        if isinstance(x, np.ma.MaskedArray):
            raise ValueError("masked arrays are not supported: otcore would ignore the "
                             "mask; pass x.filled(...) or drop the masked entries")
        return "numpy", np, np
    if is_cupy(x):
        import cupy

        return "cupy", cupy, cupy
    if _is_torch(x) or _is_jax(x):
        import array_api_compat

        library = "torch" if _is_torch(x) else "jax"
        user = array_api_compat.array_namespace(x)
        device = _device_type(x)
        if device == _CPU:
            return library, user, np
        cupy = _cupy_or_none() if device == _CUDA else None
        if cupy is None:
            where = ("CUDA device without CuPy installed" if device == _CUDA else
                     "device that otcore cannot read through DLPack")
            raise TypeError(f"{library} arrays on a {where} are not supported: install "
                            "CuPy (otcore[cuda12]) for CUDA data, or move them to the CPU")
        return library, user, cupy
    if hasattr(x, "__array_namespace__"):
        xp = x.__array_namespace__()
        return getattr(xp, "__name__", repr(xp)), xp, xp
    raise TypeError(
        f"expected an array (NumPy, CuPy, PyTorch, JAX or another Array-API library) or "
        f"array_like, got {type(x).__name__}"
    )


def namespaces(*arrays: Any, names: tuple[str, ...] | None = None) -> Namespaces:
    """The :class:`Namespaces` of a call's arrays.

    Parameters
    ----------
    *arrays : array, array_like or None
        The array arguments of a call; ``None`` entries are ignored and array_like
        entries (lists, tuples, Python scalars) adopt the library of the others.
    names : tuple of str, optional
        The arguments' names, one per array, for error messages.

    Returns
    -------
    Namespaces

    Raises
    ------
    TypeError
        For arrays of different libraries (otcore never copies between them behind the
        caller's back), or objects that are not arrays.
    ValueError
        For masked arrays.

    Examples
    --------
    >>> import numpy as np
    >>> from otcore._array import namespaces
    >>> ns = namespaces(np.ones(3), [1.0, 2.0], None)
    >>> ns.user is np and ns.compute is np
    True
    """
    names = names or tuple(f"argument {k}" for k in range(len(arrays)))
    found: dict[str, tuple[Any, Any]] = {}
    owners: dict[str, list[str]] = {}
    for x, arg in zip(arrays, names, strict=True):
        if x is None or _is_array_like(x):
            continue
        try:
            lib, user, compute = _classify(x)
        except TypeError as err:
            raise TypeError(f"{arg}: {err}") from None
        except ValueError as err:
            raise ValueError(f"{arg}: {err}") from None
        if lib in found and found[lib][1] is not compute:  # one library on two devices
            raise TypeError(f"all arrays must live on one device: {arg} is on another "
                            f"device than {', '.join(owners[lib])}")
        found.setdefault(lib, (user, compute))
        owners.setdefault(lib, []).append(arg)
    if len(found) > 1:
        detail = "; ".join(f"{', '.join(args)} from {lib}" for lib, args in owners.items())
        raise TypeError(
            f"all arrays must come from one array library, got {detail}; move them to one "
            "library and device first (otcore never copies implicitly)"
        )
    if not found:
        if all(x is None for x in arrays):
            raise TypeError("no array given")
        return _NUMPY
    lib, (user, compute) = next(iter(found.items()))
    if lib == "numpy":
        return _NUMPY
    return Namespaces(user, compute, lib)


def dtype_kind(xp: Any, dtype: Any) -> str:
    """One-letter kind of ``dtype`` (``'f'``, ``'i'``, ``'u'``, ``'b'``, ``'c'``; ``'?'``
    for anything else), for any namespace."""
    kind = getattr(dtype, "kind", None)
    if isinstance(kind, str):
        return kind
    for letter, name in (("b", "bool"), ("f", "real floating"), ("c", "complex floating"),
                         ("i", "signed integer"), ("u", "unsigned integer")):
        if xp.isdtype(dtype, name):
            return letter
    return "?"


def float_bits(xp: Any, dtype: Any) -> int:
    """Width in bits of the floating ``dtype`` of namespace ``xp`` (32 or 64)."""
    return int(xp.finfo(dtype).bits)


def host_dtype(xp: Any, dtype: Any) -> np.dtype:
    """The NumPy dtype of the same floating type as ``dtype`` (for host-side arrays)."""
    return np.dtype(np.float32 if float_bits(xp, dtype) == 32 else np.float64)


def astype(xp: Any, x: Any, dtype: Any) -> Any:
    """``x`` cast to ``dtype`` (no copy when it already has it), in any namespace."""
    if x.dtype == dtype:
        return x
    return xp.astype(x, dtype) if hasattr(xp, "astype") else x.astype(dtype)


def concat(xp: Any, arrays: list, axis: int = 0) -> Any:
    """Join arrays along ``axis`` (``concat`` of the Array API, ``concatenate`` before)."""
    join = getattr(xp, "concat", None) or xp.concatenate
    return join(arrays, axis=axis)


def safe_log(xp: Any, w: Any) -> Any:
    """``log w`` with ``-inf`` where ``w = 0`` (zero weights), without a warning."""
    return xp.where(w > 0, xp.log(xp.where(w > 0, w, 1)), -xp.inf)
