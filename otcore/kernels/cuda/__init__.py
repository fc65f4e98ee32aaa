"""CUDA kernels, kept as ``.cu`` sources and compiled at run time by CuPy (NVRTC).

=============  =====================================================================
file           kernels (each for float32 ``_f32`` and float64 ``_f64``)
=============  =====================================================================
common.cuh     shared device code: online log-sum-exp, ground costs and their
               gradients (included)
softmin.cu     ``otc_softmin_dense_rows/cols``, ``otc_softmin_cloud_d{1,2,3}``,
               ``otc_softmin_cloud_any``, ``otc_lse_merge``
cloud.cu       ``otc_cost_grad_d{1,2,3}``, ``otc_cost_grad_any``, ``otc_cost_matrix``
plan.cu        ``otc_plan_stats``, ``otc_plan_marginals``, ``otc_plan``
sparse.cu      ``otc_sparse_hist``, ``otc_sparse_count``, ``otc_sparse_fill`` (the
               sparsification of a dense plan to CSR)
topk.cu        ``otc_topk_groups``, ``otc_topk_rows``, ``otc_topk_merge``
               (cardinality-constrained OT)
batch.cu       ``otc_batch_softmin_rows`` (a batch of dense costs, stacked or shared, in
               one launch: a warp per problem and row), ``otc_batch_softmin_cloud`` (a
               batch of point clouds: a thread per problem and point)
blocksparse.cu ``otc_block_softmin``, ``otc_block_sums``, ``otc_block_apply`` (the
               truncated kernels of multiscale Sinkhorn, over the kept pairs of clusters)
=============  =====================================================================

Importing this package compiles nothing and needs neither CuPy nor a GPU; the backend
:mod:`otcore.backends.cupy_gpu` compiles a source on first use. :func:`source` returns
the text handed to the compiler, with the local ``#include "*.cuh"`` lines replaced by
the header itself (so CuPy's on-disk kernel cache, keyed by the source text, sees header
changes), and :func:`~otcore.kernels.cuda.launch.compile_options` the options.

Kernels and launch configuration
--------------------------------
All kernels come as ``_f32`` and ``_f64`` variants of one C++ template. A softmin is one
pass over the cost with an *online* log-sum-exp: every entry ``z = (h - c) log2(e) / eps``
updates a running maximum ``m`` and a sum ``s`` of ``2^(z - m)`` with a single ``exp2``
(``e = 2^-|z - m|``; a new maximum rescales ``s`` by ``e`` and adds 1, otherwise ``e`` is
added). Sums are folded into a second accumulator every few dozen entries, so rounding
grows with the block length rather than with ``n`` or ``m``. The maximum starts at the
most negative finite number, so ``-inf`` entries of ``h`` (zero weights) contribute
exactly 0 without a branch. Partial accumulators ``(M, S)`` merge as
``(max, S_1 2^(M_1 - max) + S_2 2^(M_2 - max))``.

================================  ===========================================================
kernel                            launch and reduction
================================  ===========================================================
``otc_softmin_dense_rows``        rows of a row-major ``C``: block ``(32, 8)``, one warp per
                                  row; lanes stride over the columns (coalesced), 8 loads in
                                  flight per lane, then a shuffle merge across the warp.
``otc_softmin_dense_cols``        columns of a row-major ``C``: block ``(32, 8)``, thread
                                  ``(tx, ty)`` owns column ``32 blockIdx.x + tx`` (a warp
                                  reads 32 consecutive entries of a row) and every 8th row;
                                  the 8 accumulators of a column merge in shared memory.
``otc_softmin_cloud_d{1,2,3}``    point clouds with ``d <= 3``: 256 threads, one per source
                                  point (coordinates in registers); the block streams the
                                  targets through shared memory in tiles of 256 points, each
                                  stored with its scaled ``h`` (one 16-byte load per pair for
                                  ``d = 3``), and every thread reduces the whole tile
                                  (broadcast reads). The cost is computed on the fly: no
                                  ``n x m`` buffer.
``otc_softmin_cloud_any``         any ``d``: as above with tiles of 32 target points staged
                                  32 coordinates at a time, the tile's partial costs held in
                                  registers (shared memory independent of ``d``); source
                                  coordinates are read from ``x.T`` (coalesced).
``otc_lse_merge``                 one thread per output: merges the partial accumulators of a
                                  split reduction and writes ``-eps (M + log2 S) ln 2``.
``otc_plan_stats``                row sums, column sums and ``<C, P>`` in one pass: block
                                  ``(32, 8)`` over 128 columns x a chunk of rows; warp
                                  reductions and shared memory, then ``atomicAdd`` of double
                                  partial sums (rows per column block, columns per row chunk,
                                  ``<C, P>`` per block).
``otc_plan_marginals``            the same pass writing every entry of the dense plan
                                  (coalesced: lane ``tx`` of a warp writes column
                                  ``jb + tx + 32 c``) instead of ``<C, P>``.
``otc_plan``                      the dense plan, a grid-stride loop over the ``n m`` entries.
``otc_block_softmin``             block-sparse softmin (``GeometryOps.block_sparse``): both
                                  clouds sorted by cluster, each row reduced over its
                                  cluster's runs of contiguous kept columns (a CSR list of
                                  ``lo..hi``); block ``(32, 8)``, one warp per row, lanes
                                  stride over each run with the row loop of
                                  ``otc_softmin_dense_rows`` (shared with it), the cost
                                  computed on the fly from ``x`` and ``y.T`` (coalesced);
                                  one merge per warp. No split: one launch per direction of
                                  a Sinkhorn iteration (the columns on the transposed runs).
``otc_block_sums``                the same layout: a row's plan sum and its share of
                                  ``<C, P>`` in double, written per row (no atomics); the
                                  plan statistics are two launches (rows, then columns on
                                  the transposed runs).
``otc_block_apply``               the same layout: ``P V`` over the kept pairs, four output
                                  columns per pass over a row's runs, products and sums in
                                  double.
``otc_cost_grad_d{1,2,3}``        the plan-weighted cost gradient
                                  ``G_j = sum_i P_ij grad_y c(x_i, y_j)``, for ``d <= 3``:
                                  the layout of ``otc_softmin_cloud_d*`` with a thread per
                                  *target* point and the sources (with their ``hf``) in
                                  shared-memory tiles; per pair the cost, ``P_ij`` (over
                                  ``c`` for the Euclidean cost; 0 at ``c = 0``) and the
                                  gradient terms, no ``n x m`` buffer. Terms are summed in
                                  the dtype over a tile, in double across tiles; the split
                                  chunks of the sources add up in a double ``(d, m)`` array
                                  with ``atomicAdd``.
``otc_cost_grad_any``             any ``d``: the layout of ``otc_softmin_cloud_any``; the
                                  tile is staged twice (costs, then gradient terms) and its
                                  sum of each coordinate is added with ``atomicAdd``.
``otc_cost_matrix``               the dense cost of a point cloud (dense mode of
                                  :func:`otcore.monge_gap`), a grid-stride loop, with the
                                  arithmetic of the on-the-fly kernels.
``otc_sparse_hist``               histogram of the keys ``bits(q) >> 50`` of the normalized
                                  plan ``q_ij = P_ij / sqrt(r_i c_j)`` (exponent and two
                                  mantissa bits, 8192 keys): a grid-stride loop over the
                                  entries (row and column advanced without a division), at
                                  most one device-full of 256-thread blocks with 64 entries
                                  per thread or more; 32-bit counters in shared memory, then
                                  an ``atomicAdd`` per nonzero bin. The threshold is chosen
                                  from it with CuPy (cumulative sum over 8192 keys), as on
                                  the CPU.
``otc_sparse_count``,             CSR assembly: block ``(32, 8)``, a warp per row and column
``otc_sparse_fill``               chunk (``blockIdx.y``, as ``otc_softmin_dense_rows``),
                                  32 columns at a time; ``__ballot_sync`` of ``q >= theta``
                                  and ``__popc`` give the count of each (row, chunk), then,
                                  after ``cupy.cumsum`` of the counts, the position of every
                                  kept entry, in column order.
``otc_topk_groups``               cardinality OT (``GeometryOps.topk``): a block of
                                  256 threads per group (grid-stride over the groups); radix
                                  descents over order-preserving 64-bit keys of the float64
                                  scores (8 bits per pass from the highest bit where the
                                  group's keys differ; a histogram bin per thread, counts and
                                  sums of the scores per bin) find the k-th largest score and
                                  the support of the simplex projection; ties go to the
                                  smaller index (a block prefix count in index order).
                                  Thresholds and the group's value, mass and nonzeros are
                                  block reductions in a fixed order; the group's support goes
                                  to a small ``(m, 4)`` table. Listed entries (``width > 0``)
                                  are written in index order and ordered by CuPy's stable
                                  ``argsort`` on their scores.
``otc_topk_rows``                 the plan's sums over the groups for every entry (the other
                                  side's marginal) from that table: the blocks and split of
                                  ``otc_softmin_dense_cols``; ``otc_topk_merge`` adds the
                                  chunks in order. No atomics anywhere: results are the same
                                  run to run.
================================  ===========================================================

When the outputs alone cannot fill the device several times over (fewer than
``launch.WAVES`` times the threads the multiprocessors keep resident), the reduced axis is
split over ``blockIdx.y`` into chunks of whole tiles,
each chunk writes its partial ``(M, S)``, and ``otc_lse_merge`` finishes
(:func:`otcore.kernels.cuda.launch.split`). Every index is checked against ``n``, ``m``
and ``d``, so no kernel reads out of bounds whatever the sizes. Sizes and offsets are
64-bit.

Sources are compiled with NVRTC through :class:`cupy.RawModule` (options from
:func:`otcore.kernels.cuda.launch.compile_options`), once per process and device, on
first use; CuPy also caches the binaries on disk. Each kernel is looked up once per
dtype.

A :class:`~otcore.PointCloud` with ``scale=s`` is handled as in the CPU backend: the
kernels see the raw cost ``c``, and ``h``, ``eps`` are multiplied by ``s``
(``softmin_eps(h; c / s) = softmin_{s eps}(s h; c) / s``).
"""

from __future__ import annotations

import re
from importlib import resources

__all__ = ["source", "source_names"]

_INCLUDE = re.compile(r'^#include "([A-Za-z0-9_]+\.cuh)"[ \t]*$', re.MULTILINE)


def source_names() -> list[str]:
    """Names of the ``.cu`` sources shipped with otcore, sorted."""
    return sorted(p.name for p in resources.files(__name__).iterdir() if p.name.endswith(".cu"))


def source(name: str) -> str:
    """The compilable text of the source ``name`` (e.g. ``"softmin.cu"``), headers inlined.

    Raises
    ------
    ValueError
        If ``name`` is not one of :func:`source_names` (or a header it includes is missing).
    """
    folder = resources.files(__name__)
    if name not in source_names():
        raise ValueError(f"unknown CUDA source {name!r}; expected one of {source_names()}")

    def inline(match: re.Match) -> str:
        header = folder / match.group(1)
        if not header.is_file():
            raise ValueError(f"{name} includes {match.group(1)}, which is not shipped")
        return header.read_text(encoding="utf-8")

    return _INCLUDE.sub(inline, (folder / name).read_text(encoding="utf-8"))
