"""Shared fixtures: the backend parametrization, seeded generators, random problems.

Every solver test that takes the ``backend`` fixture runs on

* ``numba_cpu``: NumPy arrays (Numba kernels);
* ``array_api``: array-api-strict arrays (the pure Array-API reference backend);
* ``cupy_gpu``: CuPy arrays, marked ``gpu`` and skipped without CuPy and a CUDA device.

Tests build their data in NumPy (float64) and move it with ``backend.asarray``; results
come back with ``backend.to_numpy`` for comparison with NumPy/POT references.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import array_api_strict
import numpy as np
import pytest

from .problems import random_problem


@dataclass(frozen=True)
class BackendCase:
    """One backend of the parametrization, with converters to and from NumPy."""

    name: str
    xp: Any

    def asarray(self, x: Any, dtype: Any = None) -> Any:
        """NumPy array (or ``None``) -> array of this backend's namespace."""
        if x is None:
            return None
        x = np.asarray(x) if dtype is None else np.asarray(x, dtype=dtype)
        return self.xp.asarray(x)

    def to_numpy(self, x: Any) -> np.ndarray:
        """Array of this backend's namespace -> NumPy array (host copy)."""
        if self.name == "cupy_gpu":
            return self.xp.asnumpy(x)
        if self.name == "array_api":
            return np.from_dlpack(x)
        return np.asarray(x)

    def check_array(self, x: Any, dtype: Any, shape: tuple[int, ...]) -> None:
        """Assert that ``x`` lives in this namespace and has ``dtype`` and ``shape``."""
        if self.name == "numba_cpu":
            assert type(x) is np.ndarray, type(x)
        elif self.name == "cupy_gpu":
            assert type(x) is self.xp.ndarray, type(x)
        else:
            assert x.__array_namespace__() is self.xp, type(x)
        assert x.dtype == getattr(self.xp, np.dtype(dtype).name), (x.dtype, dtype)
        assert tuple(x.shape) == shape


def _cupy_case() -> BackendCase:
    cupy = pytest.importorskip("cupy", reason="CuPy is not installed")
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # CUDA driver or runtime missing
        pytest.skip(f"no usable CUDA device: {exc}")
    if count == 0:
        pytest.skip("no CUDA device")
    return BackendCase("cupy_gpu", cupy)


@pytest.fixture(
    scope="session",
    params=["numba_cpu", "array_api", pytest.param("cupy_gpu", marks=pytest.mark.gpu)],
)
def backend(request) -> BackendCase:
    """The backend under test (see the module docstring)."""
    if request.param == "numba_cpu":
        return BackendCase("numba_cpu", np)
    if request.param == "array_api":
        return BackendCase("array_api", array_api_strict)
    return _cupy_case()


@pytest.fixture(scope="session")
def gpu_backend() -> BackendCase:
    """The ``cupy_gpu`` case alone, for tests that compare it with ``numba_cpu`` (skipped
    without CuPy and a CUDA device; tests using it are marked ``gpu``)."""
    return _cupy_case()


@pytest.fixture
def rng() -> np.random.Generator:
    """A freshly seeded generator (the same stream in every test)."""
    return np.random.default_rng(20240611)


@pytest.fixture
def problem(rng):
    """A small random problem ``(a, b, C, x, y)`` in NumPy (see ``random_problem``)."""
    return random_problem(rng, 23, 31)
