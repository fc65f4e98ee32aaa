"""The CUDA sources and their launch configuration, without a GPU: every ``.cu`` file
compiles with nvcc for sm_80 and sm_90 (when nvcc is on PATH), the compile options define
the launch constants and the cost codes of :mod:`otcore.costs` (which no source defines
itself), the launch arithmetic covers every output with legal grids, and importing
otcore never imports CuPy."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from otcore import costs
from otcore.kernels import cuda
from otcore.kernels.cuda import launch

ARCHS = ("sm_80", "sm_90")


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not on PATH")
@pytest.mark.parametrize("name", cuda.source_names())
def test_sources_compile_with_nvcc(name, tmp_path):
    # the exact text and options handed to NVRTC at run time, compiled
    # to PTX for both architectures, warnings as errors
    src = tmp_path / name
    src.write_text(cuda.source(name))
    procs = {
        arch: subprocess.Popen(
            ["nvcc", *launch.compile_options(), "--ptx", f"-arch={arch}", "-Werror",
             "all-warnings", "-o", str(tmp_path / f"{arch}.ptx"), str(src)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for arch in ARCHS
    }
    for arch, proc in procs.items():
        log = proc.communicate()[0]
        assert proc.returncode == 0, f"{name} for {arch}:\n{log}"
        assert (tmp_path / f"{arch}.ptx").stat().st_size > 0


def test_sources_inline_their_headers():
    names = cuda.source_names()
    assert names == ["batch.cu", "blocksparse.cu", "cloud.cu", "plan.cu", "softmin.cu",
                     "sparse.cu", "topk.cu"]
    for name in names:
        text = cuda.source(name)
        assert '#include "' not in text
        assert text.count("#define OTCORE_COMMON_CUH") == 1


def test_unknown_source_is_an_error():
    with pytest.raises(ValueError, match="unknown CUDA source"):
        cuda.source("common.cuh")


def test_compile_options_define_the_launch_constants():
    opts = launch.compile_options()
    assert opts[0] == "-std=c++14"
    defs = dict(o[2:].split("=") for o in opts[1:])
    # the cost codes come from otcore.costs (common.cuh no longer defines them)
    cost_defs = {"OTC_DENSE": costs.DENSE, "OTC_SQEUCLIDEAN": costs.SQEUCLIDEAN,
                 "OTC_EUCLIDEAN": costs.EUCLIDEAN, "OTC_PNORM": costs.PNORM}
    assert {k: defs.pop(k) for k in cost_defs} == {k: str(v) for k, v in cost_defs.items()}
    assert cost_defs == {"OTC_DENSE": 0, "OTC_SQEUCLIDEAN": 1, "OTC_EUCLIDEAN": 2,
                         "OTC_PNORM": 3}
    assert defs == {"OTC_BLOCK": "256", "OTC_RY": "8", "OTC_UNROLL": "8", "OTC_TILE": "256",
                    "OTC_ANY_TILE": "32", "OTC_ANY_DIMS": "32", "OTC_CPT": "4",
                    "OTC_KEY_SHIFT": "50", "OTC_NKEYS": "8192"}
    assert 32 * launch.ROWS_PER_BLOCK == launch.BLOCK


@pytest.mark.skipif(shutil.which("g++") is None, reason="g++ is not on PATH")
@pytest.mark.parametrize("name", cuda.source_names())
def test_sources_take_the_cost_codes_from_the_compile_options(name):
    # no source defines the cost codes itself: each preprocesses with the -D options, and
    # fails (#error) when any cost code is missing from them
    text = cuda.source(name)
    defines = [o for o in launch.compile_options() if o.startswith("-D")]
    for code in costs.compile_defines():
        assert f"#define {code}" not in text, code

    def preprocess(opts):
        return subprocess.run(["g++", "-E", "-P", "-x", "c++", *opts, "-"], input=text,
                              capture_output=True, text=True)

    assert preprocess(defines).returncode == 0
    for code in costs.compile_defines():
        proc = preprocess([o for o in defines if not o.startswith(f"-D{code}=")])
        assert proc.returncode != 0 and "compile_options" in proc.stderr, code


def test_sparsify_keys_match_the_cpu_kernel():
    # the GPU and CPU sparsifications must agree on the histogram keys (the same kept set)
    from otcore.kernels.numba import sparse

    assert (launch.KEY_SHIFT, launch.NKEYS) == (sparse.KEY_SHIFT, sparse.NKEYS)


@given(length=st.integers(1, 10**12), threads=st.integers(1, 10**9),
       capacity=st.integers(1, 10**7), unit=st.sampled_from([1, 8, 32, 64, 256]))
def test_split_covers_the_reduction(length, threads, capacity, unit):
    parts, chunk = launch.split(length, threads, capacity, unit)
    assert 1 <= parts <= launch.MAX_GRID_Y
    assert chunk % unit == 0
    assert (parts - 1) * chunk < length <= parts * chunk  # every part is non-empty
    if threads >= launch.WAVES * capacity:
        assert parts == 1


def test_split_fills_the_device():
    # 132 SMs x 2048 threads (an H100): the rows of a dense 10^4 x 10^4 cost (a warp per
    # row: 3.2e5 threads) are split in 4 parts of 2560 columns, to make 4 waves of blocks
    rows = launch.softmin_dense_rows(10_000, 10_000, 132 * 2048)
    assert (rows.parts, rows.chunk, rows.grid) == (4, 2560, (1250, 4, 1))
    # 10^6 source points fill the device more than 3 times over: 2 parts
    cloud = launch.softmin_cloud(10**6, 10**6, 3, 132 * 2048)
    assert (cloud.parts, cloud.chunk, cloud.grid) == (2, 500_224, (3907, 2, 1))
    # too short to split: a single unit of work
    assert launch.split(200, 1, 10**6, 256) == (1, 256)


@given(n=st.integers(1, 10**7), m=st.integers(1, 10**7), capacity=st.integers(1, 10**6))
def test_dense_launches_cover_every_output(n, m, capacity):
    rows = launch.softmin_dense_rows(n, m, capacity)
    assert rows.block == (32, launch.ROWS_PER_BLOCK, 1)
    assert rows.grid[0] * launch.ROWS_PER_BLOCK >= n > (rows.grid[0] - 1) * launch.ROWS_PER_BLOCK
    assert rows.grid[1] == rows.parts and rows.parts * rows.chunk >= m
    cols = launch.softmin_dense_cols(n, m, capacity)
    assert cols.block == (32, launch.ROWS_PER_BLOCK, 1)
    assert cols.grid[0] * 32 >= m > (cols.grid[0] - 1) * 32
    assert cols.grid[1] == cols.parts and cols.parts * cols.chunk >= n
    stats = launch.plan_stats(n, m, capacity)
    assert stats.grid[0] * 32 * launch.CPT >= m > (stats.grid[0] - 1) * 32 * launch.CPT
    assert stats.grid[1] == stats.parts and stats.parts * stats.chunk >= n
    plan = launch.plan(n, m)
    assert 1 <= plan.grid[0] <= launch.PLAN_BLOCKS
    assert plan.grid[0] * launch.BLOCK <= max(n * m, 1) + launch.BLOCK - 1


@given(n=st.integers(1, 10**6), m=st.integers(1, 10**6), capacity=st.integers(1, 10**7))
def test_sparse_hist_launch(n, m, capacity):
    cfg = launch.sparse_hist(n, m, capacity)
    blocks = cfg.grid[0]
    assert cfg.block == (launch.BLOCK, 1, 1) and cfg.grid[1:] == (1, 1)
    assert 1 <= blocks < 2**31
    threads = blocks * launch.BLOCK
    # no block counts more than 2^31 + BLOCK entries (its shared counters are 32-bit) ...
    assert launch.BLOCK * -(-n * m // threads) <= 2**31 + launch.BLOCK
    # ... at most one device-full of threads, and no thread idles for lack of entries
    assert blocks == 1 or threads <= capacity + launch.BLOCK - 1 or n * m >= 2**31
    assert blocks == 1 or n * m > (blocks - 1) * launch.BLOCK * launch.HIST_ENTRIES


@given(ns=st.integers(1, 10**7), nt=st.integers(1, 10**7), d=st.integers(1, 5000),
       capacity=st.integers(1, 10**6))
def test_cloud_launch_covers_every_output(ns, nt, d, capacity):
    cfg = launch.softmin_cloud(ns, nt, d, capacity)
    tile = launch.TILE if d in launch.FIXED_DIMS else launch.ANY_TILE
    assert cfg.block == (launch.BLOCK, 1, 1)
    assert cfg.grid[0] * launch.BLOCK >= ns > (cfg.grid[0] - 1) * launch.BLOCK
    assert cfg.grid[1] == cfg.parts and cfg.chunk % tile == 0
    assert (cfg.parts - 1) * cfg.chunk < nt <= cfg.parts * cfg.chunk
    merge = launch.merge(ns)
    assert merge.grid[0] * launch.BLOCK >= ns > (merge.grid[0] - 1) * launch.BLOCK


@given(m=st.integers(0, 10**12), n=st.integers(1, 10**7), capacity=st.integers(1, 10**6))
def test_topk_launches_cover_every_group_and_entry(m, n, capacity):
    # a block per group, striding beyond the largest grid; the row sums cover every entry
    cfg = launch.topk(m)
    assert cfg.block == (launch.BLOCK, 1, 1)
    assert 1 <= cfg.grid[0] <= launch.MAX_GRID_X and cfg.grid[0] == max(1, min(m, 2**31 - 1))
    rows = launch.topk_rows(max(m, 1), n, capacity)
    assert rows.grid[0] * 32 >= n > (rows.grid[0] - 1) * 32
    assert rows.grid[1] == rows.parts <= launch.MAX_GRID_Y
    assert (rows.parts - 1) * rows.chunk < max(m, 1) <= rows.parts * rows.chunk


def test_cloud_launch_rejects_dimension_zero():
    with pytest.raises(ValueError, match="d >= 1"):
        launch.softmin_cloud(10, 10, 0, 1000)


def test_importing_otcore_does_not_import_cupy():
    # with CuPy made unimportable, otcore and its GPU backend module still import and the
    # CPU path runs: nothing touches CuPy (or a GPU) before a CuPy array comes in
    code = (
        "import sys; sys.modules['cupy'] = None\n"
        "import numpy as np, otcore as oc\n"
        "from otcore.backends import cupy_gpu\n"
        "assert cupy_gpu.CupyBackend().name == 'cupy_gpu'\n"
        "res = oc.sinkhorn(None, None, np.array([[0.0, 1.0], [1.0, 0.0]]), eps=0.1)\n"
        "print(res.backend, round(float(res.plan.sum()), 6))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["numba_cpu", "1.0"]


@given(n=st.integers(1, 10**10))
def test_block_sparse_launch_covers_every_row(n):
    # a warp per row, one launch, no split reduction
    cfg = launch.block_sparse_rows(n)
    assert cfg.block == (32, launch.ROWS_PER_BLOCK, 1) and cfg.grid[1:] == (1, 1)
    assert cfg.parts == 1
    assert cfg.grid[0] * launch.ROWS_PER_BLOCK >= n > (cfg.grid[0] - 1) * launch.ROWS_PER_BLOCK
    assert cfg.grid[0] <= launch.MAX_GRID_X
