"""The dispatch layer: which backend runs for which arrays, and what is refused."""

from __future__ import annotations

import array_api_strict as xs
import numpy as np
import pytest

import otcore as oc
from otcore._array import namespaces
from otcore.backends import ArrayAPIBackend, Backend, GeometryOps, NumbaBackend


def test_numpy_dispatches_to_numba():
    bk = oc.get_backend(np.ones(3), None, np.ones((3, 2)))
    assert isinstance(bk, NumbaBackend) and bk.name == "numba_cpu" and bk.xp is np


def test_array_api_strict_dispatches_to_reference():
    bk = oc.get_backend(xs.ones(3), xs.ones((3, 2)))
    assert isinstance(bk, ArrayAPIBackend) and bk.name == "array_api" and bk.xp is xs
    assert "array_api_strict" in repr(bk)


def test_forced_array_api_on_numpy():
    bk = oc.get_backend(np.ones(3), backend="array_api")
    assert isinstance(bk, ArrayAPIBackend) and bk.xp is np


def test_forced_numba_on_numpy():
    assert isinstance(oc.get_backend(np.ones(3), backend="numba_cpu"), NumbaBackend)


def test_backend_instance_is_used_as_given():
    mine = ArrayAPIBackend(np)
    assert oc.get_backend(np.ones(3), backend=mine) is mine


@pytest.mark.parametrize("name", ["numba", "cuda", "NUMBA_CPU", "", 0])
def test_bad_backend_name(name):
    with pytest.raises(ValueError, match=r"^backend must be 'numba_cpu', 'cupy_gpu', 'array_api'"):
        oc.get_backend(np.ones(3), backend=name)


@pytest.mark.parametrize("name", ["numba_cpu", "cupy_gpu"])
def test_device_backend_refuses_other_namespaces(name):
    with pytest.raises(TypeError, match=f"^backend='{name}' cannot take arrays from array_api"):
        oc.get_backend(xs.ones(3), backend=name)


def test_cupy_backend_refuses_numpy():
    with pytest.raises(TypeError, match=r"^backend='cupy_gpu' cannot take arrays from numpy"):
        oc.get_backend(np.ones(3), backend="cupy_gpu")


@pytest.mark.parametrize("order", [(0, 1), (1, 0)])
def test_mixed_namespaces(order):
    arrays = [np.ones(3), xs.ones(3)]
    strict_pos = order.index(1)
    with pytest.raises(
        TypeError, match=rf"one array library, got.*argument {strict_pos} from array_api_strict"
    ):
        oc.get_backend(*(arrays[i] for i in order))


@pytest.mark.parametrize("bad", ["abc", {"a": 1}, object()])
def test_non_arrays(bad):
    with pytest.raises(TypeError, match=r"^argument 0: expected an array \(NumPy, CuPy"):
        oc.get_backend(bad)


@pytest.mark.parametrize("like", [[1.0, 2.0], (1, 2), 3.0])
def test_array_like_dispatches_to_numba(like):
    # array_like is accepted where NumPy would accept it
    assert oc.get_backend(like).name == "numba_cpu"


def test_array_like_adopts_the_library_of_the_other_arrays():
    assert namespaces([1.0, 2.0], xs.ones(2)).user is xs


def test_masked_arrays_are_refused():
    with pytest.raises(ValueError, match=r"^argument 0: masked arrays are not supported"):
        oc.get_backend(np.ma.masked_array([1.0, 2.0], mask=[0, 1]))


def test_no_arrays():
    with pytest.raises(TypeError, match=r"^no array given"):
        oc.get_backend(None, None)


def test_namespaces():
    assert namespaces(np.ones(2), None).compute is np
    assert namespaces(xs.ones(2)).compute is xs


@pytest.mark.parametrize(
    "bk",
    [NumbaBackend(), ArrayAPIBackend(np), ArrayAPIBackend(xs)],
    ids=["numba_cpu", "array_api-numpy", "array_api-strict"],
)
def test_backends_implement_the_contract(bk):
    assert isinstance(bk, Backend)
    C = bk.xp.asarray(np.arange(6.0).reshape(2, 3))
    ops = bk.bind(oc.DenseCost(C))
    assert isinstance(ops, GeometryOps)
    out = ops.softmin(bk.xp.zeros(3, dtype=bk.xp.float64), 1.0, axis=1)
    # -log(sum_j exp(-C_ij)) for C = [[0, 1, 2], [3, 4, 5]]
    expected = -np.log(np.exp(-np.arange(6.0).reshape(2, 3)).sum(axis=1))
    np.testing.assert_allclose(np.from_dlpack(out), expected, rtol=1e-14)
    assert bk.to_float(bk.xp.sum(out)) == pytest.approx(expected.sum(), rel=1e-14)
    assert repr(bk).startswith(f"<otcore backend {bk.name!r}")


@pytest.mark.gpu
def test_cupy_dispatch():
    cupy = pytest.importorskip("cupy", reason="CuPy is not installed")
    try:
        if cupy.cuda.runtime.getDeviceCount() == 0:
            pytest.skip("no CUDA device")
    except Exception as exc:
        pytest.skip(f"no usable CUDA device: {exc}")
    bk = oc.get_backend(cupy.ones(3))
    assert bk.name == "cupy_gpu" and bk.xp is cupy
    with pytest.raises(TypeError, match="one array library"):
        oc.get_backend(cupy.ones(3), np.ones(3))
