"""Dask: a real local cluster of two worker processes on the loopback address, shared by
the module; results equal the in-process ones, also when a worker process is killed."""

from __future__ import annotations

import os
import signal

import numpy as np
import pytest

import otcore as oc

from .problems import histogram

distributed = pytest.importorskip("distributed")

EPS = 0.05


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                       host="127.0.0.1", dashboard_address=None)
    with distributed.Client(cluster) as c:
        yield c
    cluster.close()


@pytest.fixture
def hists(rng):
    grid = np.linspace(0.0, 1.0, 15)
    C = (grid[:, None] - grid[None, :]) ** 2
    return np.stack([histogram(rng, 15, zeros=k % 3) for k in range(8)]), C


def test_cluster_equals_in_process(client, hists, rng):
    H, C = hists
    local = oc.pdist(H, C=C, eps=EPS)
    remote = oc.pdist(H, C=C, eps=EPS, client=client, tile_size=4)
    np.testing.assert_allclose(remote, local, rtol=0, atol=1e-13)
    pts = [rng.normal(size=(n, 2)) for n in (12, 20, 7, 15)]
    w = [histogram(rng, len(p)) for p in pts]
    np.testing.assert_allclose(oc.cdist(pts, pts[:2], eps=1.0, weights_a=w, client=client),
                               oc.cdist(pts, pts[:2], eps=1.0, weights_a=w), rtol=0,
                               atol=1e-13)


def test_batch_sinkhorn_on_the_cluster(client, rng):
    Cs = rng.random((30, 12, 9))
    A = np.stack([histogram(rng, 12) for _ in range(30)])
    remote = oc.sinkhorn(A, None, Cs, EPS, client=client)
    local = oc.sinkhorn(A, None, Cs, EPS)
    np.testing.assert_allclose(remote.f, local.f, rtol=0, atol=1e-13)
    np.testing.assert_array_equal(remote.n_iter, local.n_iter)
    assert remote[7].marginal_error == pytest.approx(local[7].marginal_error, abs=1e-15)
    with pytest.raises(ValueError, match="this is one problem"):
        oc.sinkhorn(A[0], None, Cs[0], EPS, client=client)
    with pytest.raises(ValueError, match="not supported with client"):
        oc.sinkhorn(A, None, Cs, EPS, client=client, time_limit=1.0)


def test_cluster_survives_a_killed_worker(client, rng):
    """A worker process killed mid-run loses no result: its tiles run again."""
    grid = np.linspace(0.0, 1.0, 30)
    C = (grid[:, None] - grid[None, :]) ** 2
    H = np.stack([histogram(rng, 30) for _ in range(40)])
    pids = client.run(os.getpid)
    victim = sorted(pids.values())[0]
    killed = []

    def kill_after_first(done, total):
        if not killed:
            os.kill(victim, signal.SIGKILL)
            killed.append(done)

    d = oc.pdist(H, C=C, eps=0.01, client=client, tile_size=8, callback=kill_after_first)
    assert killed == [1]
    with pytest.raises(ProcessLookupError):
        os.kill(victim, 0)  # the process is gone
    np.testing.assert_allclose(d, oc.pdist(H, C=C, eps=0.01), rtol=0, atol=1e-13)
    client.wait_for_workers(2, timeout=60)  # the nanny restarts it
