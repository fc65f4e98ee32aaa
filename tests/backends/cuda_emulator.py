"""The CUDA kernels on the CPU: build them with ``cuda_emulator.h``, and a stand-in for the
parts of CuPy that :mod:`otcore.backends.cupy_gpu` uses, so that the GPU backend (launch
configuration, argument lists, merges, scaling) runs end to end without a GPU.

The stand-in is strict where CuPy is lenient and a mistake would corrupt results on a
device: every kernel argument must have exactly the C type of the parameter (NumPy
scalars of the right width, contiguous arrays of the right dtype), and every array handed
to a kernel sits between guard zones of NaN (the most negative value for integer arrays)
that are checked after each launch (writes out of bounds) and that poison any value read
out of bounds.
"""

from __future__ import annotations

import ctypes
import re
import shutil
import subprocess
import types
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

HEADER = Path(__file__).with_name("cuda_emulator.h")
GUARD = 1024  # poison elements on each side of every device array

_SIGNATURE = re.compile(r'extern "C" void (otc_\w+)\s*\(([^)]*)\)')
# C parameter type -> (NumPy type of the argument, ctypes type)
_SCALARS = {
    "int": (np.int32, ctypes.c_int),
    "otc_int": (np.int64, ctypes.c_longlong),
    "float": (np.float32, ctypes.c_float),
    "double": (np.float64, ctypes.c_double),
    "unsigned long long": (np.uint64, ctypes.c_ulonglong),
}


def available() -> bool:
    """Whether a host C++ compiler is on PATH."""
    return shutil.which("g++") is not None


def _parameters(text: str) -> list[tuple[str, str]]:
    """``(type, name)`` of each parameter in a C parameter list."""
    out = []
    for param in text.split(","):
        ctype, name = param.strip().rsplit(None, 1)
        while name.startswith("*"):
            ctype, name = ctype + "*", name[1:]
        out.append((" ".join(ctype.replace("*", " * ").split()), name))
    return out


def build(code: str, options: tuple[str, ...], workdir: Path) -> tuple[ctypes.CDLL, dict]:
    """Compile one kernel source for the emulator; return the library and the signatures.

    ``options`` are the ones the backend hands to NVRTC; the ``-D`` definitions are used,
    the language standard is the host compiler's C++17.
    """
    defines = [o for o in options if o.startswith("-D")]
    # no _FORTIFY_SOURCE: its longjmp check rejects the jumps between fiber stacks
    flags = ["-std=c++17", "-U_FORTIFY_SOURCE", "-include", str(HEADER), *defines]
    pre = _run(["g++", "-E", "-P", "-x", "c++", *flags, "-"], code)
    kernels = {name: _parameters(params) for name, params in _SIGNATURE.findall(pre)}
    wrappers = []
    for name, params in kernels.items():
        decl = ", ".join(f"{t} {n}" for t, n in params)
        call = ", ".join(n for _, n in params)
        wrappers.append(
            f'extern "C" const char* emu_{name}(const unsigned* gb, {decl}) {{\n'
            "  static std::string err;\n"
            "  err = emu::launch(dim3{gb[0], gb[1], gb[2]}, dim3{gb[3], gb[4], gb[5]},\n"
            f"                    [&] {{ {name}({call}); }});\n"
            "  return err.c_str();\n}\n"
        )
    workdir.mkdir(parents=True, exist_ok=True)
    src = workdir / "kernels.cpp"
    src.write_text(code + "\n" + "".join(wrappers))
    lib = workdir / "kernels.so"
    _run(["g++", "-O2", "-shared", "-fPIC", *flags, "-o", str(lib), str(src)])
    return ctypes.CDLL(str(lib)), kernels


def _run(cmd: list[str], stdin: str | None = None) -> str:
    """Run a compiler command; its output, or an error carrying the compiler's messages."""
    proc = subprocess.run(cmd, input=stdin, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:2])} failed:\n{proc.stderr[-4000:]}")
    return proc.stdout


class Device:
    """The one emulated device (a no-op context manager, like ``cupy.cuda.Device``)."""

    id = 0

    def __enter__(self) -> Device:
        return self

    def __exit__(self, *exc: Any) -> None:
        return None


DEVICE = Device()


class DeviceArray(np.ndarray):
    """A NumPy array that claims to live on the emulated device."""

    @property
    def device(self) -> Device:
        return DEVICE


def _poison(dtype: Any) -> Any:
    """The guard value of ``dtype``: NaN for floats, True for booleans (masks, which no
    kernel takes), the most negative integer otherwise."""
    dtype = np.dtype(dtype)
    if dtype.kind == "b":
        return True
    return np.nan if dtype.kind == "f" else np.iinfo(dtype).min


def _guarded(shape: Any, dtype: Any, fill: Any = None) -> DeviceArray:
    shape = (shape,) if np.isscalar(shape) else tuple(shape)
    size = int(np.prod(shape, dtype=np.int64))
    buf = np.full(size + 2 * GUARD, _poison(dtype), dtype=dtype)
    arr = buf[GUARD:GUARD + size].reshape(shape).view(DeviceArray)
    if fill is not None:
        arr[...] = fill
    arr._emu_buffer = buf
    return arr


def _check_guards(arr: DeviceArray, kernel: str) -> None:
    guards = np.concatenate([arr._emu_buffer[:GUARD], arr._emu_buffer[-GUARD:]])
    poison = _poison(guards.dtype)
    intact = np.isnan(guards).all() if np.isnan(poison) else (guards == poison).all()
    if not intact:
        raise AssertionError(f"{kernel} wrote out of bounds of an array of shape {arr.shape}")


class Kernel:
    """A compiled kernel with CuPy's calling convention ``kernel(grid, block, args)``."""

    def __init__(self, lib: ctypes.CDLL, name: str, params: list[tuple[str, str]]):
        self.name, self.params = name, params
        self.fn = getattr(lib, f"emu_{name}")
        self.fn.restype = ctypes.c_char_p
        self.launches = []  # (grid, block) of every call, for the tests

    def __call__(self, grid: tuple, block: tuple, args: tuple, shared_mem: int = 0) -> None:
        if len(args) != len(self.params):
            raise TypeError(f"{self.name} takes {len(self.params)} arguments, got {len(args)}")
        cargs, arrays = [], []
        for (ctype, pname), value in zip(self.params, args, strict=True):
            if ctype.endswith("*"):
                elem = ctype.replace("const", "").replace("*", "").strip()
                want = np.dtype(_SCALARS[elem][0])
                if not (isinstance(value, DeviceArray) and hasattr(value, "_emu_buffer")):
                    raise TypeError(f"{self.name}({pname}): expected a device array")
                if value.dtype != want or not value.flags.c_contiguous:
                    raise TypeError(f"{self.name}({pname}): expected contiguous {want}, got "
                                    f"{value.dtype}")
                cargs.append(ctypes.c_void_p(value.ctypes.data))
                arrays.append(value)
            else:
                numpy_type, c_type = _SCALARS[ctype]
                if type(value) is not numpy_type:
                    raise TypeError(f"{self.name}({pname}): expected {numpy_type.__name__} for "
                                    f"C type {ctype}, got {type(value).__name__}")
                cargs.append(c_type(value))
        grid = tuple(grid) + (1,) * (3 - len(grid))
        block = tuple(block) + (1,) * (3 - len(block))
        self.launches.append((grid, block))
        dims = (ctypes.c_uint * 6)(*grid, *block)
        err = self.fn(dims, *cargs).decode()
        if err:
            raise RuntimeError(f"{self.name}: {err}")
        for arr in arrays:
            _check_guards(arr, self.name)


class RawModule:
    """``cupy.RawModule(code=..., options=...)`` over the emulator."""

    builds: ClassVar[dict] = {}  # (code, options) -> (library, signatures), shared by all modules
    workdir: Path

    def __init__(self, *, code: str, options: tuple[str, ...] = ()):
        key = (code, tuple(options))
        if key not in RawModule.builds:
            folder = RawModule.workdir / f"build{len(RawModule.builds)}"
            RawModule.builds[key] = build(code, tuple(options), folder)
        self.lib, self.kernels = RawModule.builds[key]
        self.functions: dict = {}

    def get_function(self, name: str) -> Kernel:
        if name not in self.kernels:
            raise KeyError(f"no kernel {name!r} in the module")
        return self.functions.setdefault(name, Kernel(self.lib, name, self.kernels[name]))


def fake_cupy(workdir: Path, *, multiprocessors: int, threads_per_mp: int = 2048) -> Any:
    """A module with the CuPy functions the GPU backend uses, over NumPy and the emulator.

    Names it does not define come from NumPy (for the solver's ``xp`` calls).
    """
    RawModule.workdir = workdir
    attrs = {1: multiprocessors, 2: threads_per_mp}
    runtime = types.SimpleNamespace(
        cudaDevAttrMultiProcessorCount=1,
        cudaDevAttrMaxThreadsPerMultiProcessor=2,
        deviceGetAttribute=lambda attr, device: attrs[attr],
    )
    mod = types.ModuleType("cupy_emulated")
    mod.__getattr__ = lambda name: getattr(np, name)
    mod.RawModule = RawModule
    mod.cuda = types.SimpleNamespace(runtime=runtime, Device=lambda i=0: DEVICE)
    mod.ndarray = DeviceArray
    mod.empty = lambda shape, dtype=np.float64: _guarded(shape, dtype)
    mod.zeros = lambda shape, dtype=np.float64: _guarded(shape, dtype, 0)

    def ascontiguousarray(a: Any, dtype: Any = None) -> DeviceArray:
        a = np.asarray(a)
        return _guarded(a.shape, a.dtype if dtype is None else dtype, a)

    mod.ascontiguousarray = ascontiguousarray
    mod.asarray = ascontiguousarray
    mod.asnumpy = lambda a: np.array(a).view(np.ndarray)
    # CuPy's argsort is always stable (its documented behaviour); NumPy's default is not
    mod.argsort = lambda a, axis=-1: np.argsort(a, axis=axis, kind="stable")
    return mod


def fake_cupyx_sparse() -> Any:
    """Stand-in for :mod:`cupyx.scipy.sparse`: SciPy's sparse module (CSR matrices of host
    arrays, and ``linalg`` with ``cg`` and ``LinearOperator``)."""
    import scipy.sparse
    import scipy.sparse.linalg  # makes the attribute ``linalg`` available

    return scipy.sparse
