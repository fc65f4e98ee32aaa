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
=============  =====================================================================

Importing this package compiles nothing and needs neither CuPy nor a GPU; the backend
:mod:`otcore.backends.cupy_gpu` compiles a source on first use. :func:`source` returns
the text handed to the compiler, with the local ``#include "*.cuh"`` lines replaced by
the header itself (so CuPy's on-disk kernel cache, keyed by the source text, sees header
changes), and :func:`~otcore.kernels.cuda.launch.compile_options` the options.
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
