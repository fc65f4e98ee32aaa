"""Tiles of work as tasks of a Dask cluster (``client=`` of :func:`otcore.cdist`).

The job (the collections and the options) is scattered to every worker once; each tile
is one task that runs the same kernels as in-process. Numba threads are set per task so
that the tasks running at once on a host share its cores instead of oversubscribing
them. A task lost with its worker runs again on another (Dask's own recovery): the job
was broadcast, so every worker holds it.

This module imports nothing from otcore (it sits in the bottom layer, beside
:mod:`otcore._array`), so that solvers and the pairwise functions can both use it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlparse

__all__ = ["map_tiles", "total_threads"]


def _workers(client: Any) -> dict:
    try:
        import distributed  # noqa: F401
    except ImportError as exc:
        raise ImportError("client= needs Dask's distributed scheduler: "
                          "pip install 'otcore[dask]'") from exc
    workers = client.scheduler_info()["workers"]
    if not workers:
        raise ValueError("the Dask cluster of client has no worker")
    return workers


def total_threads(client: Any) -> int:
    """How many tasks the cluster runs at once (its workers' threads)."""
    return max(1, sum(w["nthreads"] for w in _workers(client).values()))


def _slots_per_host(client: Any) -> dict[str, int]:
    slots: dict[str, int] = {}
    for address, w in _workers(client).items():
        host = urlparse(address).hostname or address
        slots[host] = slots.get(host, 0) + w["nthreads"]
    return slots


def _run_task(fn: Callable, job: Any, tile: Any, slots: dict[str, int]) -> Any:
    """Run ``fn(job, tile)`` on a worker with its share of the host's cores."""
    import numba
    from distributed import get_worker

    host = urlparse(get_worker().address).hostname
    share = (os.cpu_count() or 1) // max(1, slots.get(host, 1))
    numba.set_num_threads(max(1, min(numba.config.NUMBA_NUM_THREADS, share)))
    return fn(job, tile)


def map_tiles(client: Any, fn: Callable, job: Any, tiles: list) -> Iterator[tuple[int, Any]]:
    """Submit ``fn(job, tile)`` for every tile; yield ``(index, result)`` as they finish."""
    from distributed import as_completed

    slots = _slots_per_host(client)
    [job_future] = client.scatter([job], broadcast=True, hash=False)
    futures = [client.submit(_run_task, fn, job_future, tile, slots, pure=False)
               for tile in tiles]
    index = {f.key: k for k, f in enumerate(futures)}
    for future in as_completed(futures):
        yield index[future.key], future.result()
