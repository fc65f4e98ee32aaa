"""Launch configuration of the CUDA kernels: block shapes, grids and reduction splits.

Pure Python (no CuPy), so that it can be tested on any machine. The block constants are
also the compile-time constants of the kernels: :func:`compile_options` passes them to
the compiler with ``-D``, so the CUDA sources and the launches cannot disagree.

A reduction of length ``L`` (the columns of a row, say) is split into ``parts`` chunks of
``chunk`` entries (``blockIdx.y``) when the other dimension alone has too few threads to
fill the device ``WAVES`` times over; the partial results are then merged by a second,
small kernel.
"""

from __future__ import annotations

from dataclasses import dataclass

from ...costs import compile_defines

__all__ = [
    "ANY_DIMS",
    "ANY_TILE",
    "BLOCK",
    "CPT",
    "FIXED_DIMS",
    "HIST_ENTRIES",
    "KEY_SHIFT",
    "NKEYS",
    "ROWS_PER_BLOCK",
    "TILE",
    "UNROLL",
    "Launch",
    "batch_softmin_cloud",
    "batch_softmin_rows",
    "block_sparse_rows",
    "compile_options",
    "cost_grad",
    "merge",
    "plan",
    "plan_stats",
    "softmin_cloud",
    "softmin_dense_cols",
    "softmin_dense_rows",
    "sparse_hist",
    "split",
    "topk",
    "topk_rows",
]

#: Threads per block of every kernel (``__launch_bounds__``).
BLOCK = 256
#: Warps per block of the warp-per-row kernels (``blockDim = (32, ROWS_PER_BLOCK)``).
ROWS_PER_BLOCK = BLOCK // 32
#: Entries per thread loaded back to back in the dense reductions (loads in flight).
UNROLL = 8
#: Target points per shared-memory tile of the fixed-dimension point-cloud kernels.
TILE = 256
#: Target points per tile, and coordinates per shared chunk, of the any-dimension kernel.
ANY_TILE = 32
ANY_DIMS = 32
#: Columns per thread in the plan statistics kernel.
CPT = 4
#: Point-cloud dimensions with a dedicated kernel (coordinates held in registers).
FIXED_DIMS = (1, 2, 3)
#: Largest ``gridDim.x`` CUDA accepts.
MAX_GRID_X = 2**31 - 1
#: Largest ``gridDim.y`` (and ``gridDim.z``) CUDA accepts.
MAX_GRID_Y = 65535
#: Blocks of the grid-stride kernels over ``n m`` entries (enough to fill any current GPU
#: several times).
PLAN_BLOCKS = 8192
#: Histogram keys of the plan sparsification: the float64 bits of a normalized plan value
#: shifted right by KEY_SHIFT (11 exponent and 2 mantissa bits), NKEYS keys for values >= 0.
KEY_SHIFT = 50
NKEYS = 1 << 13
#: Entries per thread, at least, of the histogram kernel: each block clears and flushes a
#: shared histogram of NKEYS bins (NKEYS / BLOCK = 32 bins per thread).
HIST_ENTRIES = 64
#: Reductions are split until the grid holds this many device-fulls of threads, so that
#: the last, partial wave of blocks costs little.
WAVES = 4


def compile_options() -> tuple[str, ...]:
    """Compiler options of every ``.cu`` source (NVRTC and nvcc alike).

    Returns
    -------
    tuple of str
        ``-std=c++14`` and the ``-D`` definitions of the launch constants and of the cost
        codes of :mod:`otcore.costs`.
    """
    defs = {
        "OTC_BLOCK": BLOCK,
        "OTC_RY": ROWS_PER_BLOCK,
        "OTC_UNROLL": UNROLL,
        "OTC_TILE": TILE,
        "OTC_ANY_TILE": ANY_TILE,
        "OTC_ANY_DIMS": ANY_DIMS,
        "OTC_CPT": CPT,
        "OTC_KEY_SHIFT": KEY_SHIFT,
        "OTC_NKEYS": NKEYS,
        **compile_defines(),
    }
    return ("-std=c++14", *(f"-D{k}={v}" for k, v in defs.items()))


@dataclass(frozen=True)
class Launch:
    """One kernel launch: CUDA grid and block, and the split of its reduction.

    Attributes
    ----------
    grid, block : tuple of 3 ints
        ``gridDim`` and ``blockDim``.
    parts : int
        Number of chunks the reduction is split into (``gridDim.y``); 1 means the kernel
        writes the final result and no merge is needed.
    chunk : int
        Entries of the reduced axis per chunk (``parts * chunk >= length``).
    """

    grid: tuple[int, int, int]
    block: tuple[int, int, int]
    parts: int = 1
    chunk: int = 0


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def split(length: int, threads: int, capacity: int, unit: int) -> tuple[int, int]:
    """Split a reduction of ``length`` entries into chunks that fill the device.

    Parameters
    ----------
    length : int
        Entries to reduce (>= 1).
    threads : int
        Threads working on independent outputs without splitting.
    capacity : int
        Threads the device keeps resident (multiprocessors x threads per multiprocessor);
        the split aims at ``WAVES`` times that many threads.
    unit : int
        Chunks are a multiple of this (a tile, or a thread's unrolled step), so that no
        chunk is shorter than one unit of work.

    Returns
    -------
    parts : int
        Number of non-empty chunks, ``1 <= parts <= 65535``.
    chunk : int
        Entries per chunk: ``(parts - 1) * chunk < length <= parts * chunk``.
    """
    length, unit = max(1, int(length)), max(1, int(unit))
    want = _cdiv(WAVES * max(1, capacity), max(1, threads))
    parts = max(1, min(want, _cdiv(length, unit), MAX_GRID_Y))
    chunk = _cdiv(_cdiv(length, parts), unit) * unit
    return _cdiv(length, chunk), chunk


def softmin_dense_rows(n: int, m: int, capacity: int) -> Launch:
    """Rows of a dense ``n x m`` cost: a warp per row, columns split across ``blockIdx.y``."""
    parts, chunk = split(m, 32 * n, capacity, 32 * UNROLL)
    return Launch((_cdiv(n, ROWS_PER_BLOCK), parts, 1), (32, ROWS_PER_BLOCK, 1), parts, chunk)


def _warp_rows(rows: int, what: str) -> Launch:
    """A warp per row, ``rows`` of them, in one launch (no split reduction)."""
    if not 0 < _cdiv(rows, ROWS_PER_BLOCK) <= MAX_GRID_X:
        raise ValueError(f"{what} does not fit one launch")
    return Launch((_cdiv(rows, ROWS_PER_BLOCK), 1, 1), (32, ROWS_PER_BLOCK, 1), 1, 0)


def batch_softmin_rows(pairs: int) -> Launch:
    """Rows of a batch of dense costs: a warp per (problem, row) pair, ``pairs`` of them."""
    return _warp_rows(pairs, f"a batch softmin over {pairs} (problem, row) pairs")


def block_sparse_rows(n: int) -> Launch:
    """The block-sparse kernels (``otc_block_*``): a warp per row, ``n`` rows, each warp
    reducing over its row's runs of kept columns."""
    return _warp_rows(n, f"a block-sparse kernel over {n} rows")


def batch_softmin_cloud(pairs: int) -> Launch:
    """Rows of a batch of point clouds: a thread per (problem, source point) pair."""
    if not 0 < _cdiv(pairs, BLOCK) <= MAX_GRID_X:
        raise ValueError(f"a batch softmin over {pairs} (problem, point) pairs does not fit "
                         "one launch")
    return Launch((_cdiv(pairs, BLOCK), 1, 1), (BLOCK, 1, 1), 1, 0)


def softmin_dense_cols(n: int, m: int, capacity: int) -> Launch:
    """Columns of a dense row-major ``n x m`` cost: 32 columns per block, rows split."""
    parts, chunk = split(n, ROWS_PER_BLOCK * m, capacity, ROWS_PER_BLOCK * UNROLL)
    return Launch((_cdiv(m, 32), parts, 1), (32, ROWS_PER_BLOCK, 1), parts, chunk)


def softmin_cloud(ns: int, nt: int, d: int, capacity: int) -> Launch:
    """A point-cloud reduction over ``nt`` targets for each of ``ns`` sources in dimension
    ``d``: a thread per source, targets split across ``blockIdx.y`` in whole tiles."""
    if d < 1:
        raise ValueError(f"point clouds need dimension d >= 1, got {d}")
    tile = TILE if d in FIXED_DIMS else ANY_TILE
    parts, chunk = split(nt, ns, capacity, tile)
    return Launch((_cdiv(ns, BLOCK), parts, 1), (BLOCK, 1, 1), parts, chunk)


def cost_grad(n: int, m: int, d: int, capacity: int) -> Launch:
    """The plan-weighted cost gradient in ``m`` target points, summed over ``n`` sources in
    dimension ``d``: the launch of :func:`softmin_cloud` with the targets as the threads
    and the sources as the split reduction (chunks are added up with ``atomicAdd``)."""
    return softmin_cloud(m, n, d, capacity)


def merge(length: int) -> Launch:
    """The merge of split softmin reductions: a thread per output."""
    return Launch((_cdiv(length, BLOCK), 1, 1), (BLOCK, 1, 1))


def plan_stats(n: int, m: int, capacity: int) -> Launch:
    """Plan statistics: ``32 * CPT`` columns per block, rows split across ``blockIdx.y``."""
    col_blocks = _cdiv(m, 32 * CPT)
    parts, chunk = split(n, BLOCK * col_blocks, capacity, ROWS_PER_BLOCK)
    return Launch((col_blocks, parts, 1), (32, ROWS_PER_BLOCK, 1), parts, chunk)


def plan(n: int, m: int) -> Launch:
    """The dense plan (and the dense cost of a point cloud): a grid-stride loop over the
    ``n * m`` entries."""
    return Launch((max(1, min(_cdiv(n * m, BLOCK), PLAN_BLOCKS)), 1, 1), (BLOCK, 1, 1))


def sparse_hist(n: int, m: int, capacity: int) -> Launch:
    """The histogram of the plan sparsification: a grid-stride loop over the ``n m``
    entries, at most one device-full of blocks of at least ``HIST_ENTRIES`` entries per
    thread, and at least enough blocks that none counts more than ``2**31 + BLOCK``
    entries (its shared counters are 32-bit)."""
    total = max(1, n * m)
    blocks = min(_cdiv(total, BLOCK * HIST_ENTRIES), _cdiv(max(1, capacity), BLOCK))
    return Launch((max(1, blocks, _cdiv(total, 1 << 31)), 1, 1), (BLOCK, 1, 1))


def topk(m: int) -> Launch:
    """The top-k kernel: a block per group (one thread per radix bin), the blocks striding
    over the groups when there are more than ``MAX_GRID_X``."""
    return Launch((max(1, min(m, MAX_GRID_X)), 1, 1), (BLOCK, 1, 1))


def topk_rows(m: int, n: int, capacity: int) -> Launch:
    """The top-k plan's sums over the ``m`` groups for each of the ``n`` entries of a
    row-major ``m x n`` cost: the blocks and split of :func:`softmin_dense_cols`."""
    return softmin_dense_cols(m, n, capacity)
