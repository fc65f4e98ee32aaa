"""Pairwise OT matrices (cdist / pdist) against independent single solves and POT."""

from __future__ import annotations

import numpy as np
import ot
import pytest
from scipy.spatial.distance import squareform

import otcore as oc

from .problems import histogram

EPS = 0.05


@pytest.fixture
def hists(rng):
    """Eight histograms on a 1-D grid of 15 bins, with the squared-distance cost."""
    grid = np.linspace(0.0, 1.0, 15)
    C = (grid[:, None] - grid[None, :]) ** 2
    H = np.stack([histogram(rng, 15, zeros=k % 3) for k in range(8)])
    return H, C


@pytest.fixture
def clouds(rng):
    sizes = (12, 20, 7, 15)
    pts = [rng.normal(size=(n, 2)) + k for k, n in enumerate(sizes)]
    w = [histogram(rng, n) for n in sizes]
    return pts, w


def _ot_dual(a, b, C, symmetric=False):
    kw = {"init": (np.zeros(len(a)), np.zeros(len(b))), "symmetric": True} if symmetric else {}
    return oc.sinkhorn(a, b, C, EPS, **kw).dual_value


def test_histogram_divergence_matches_single_solves(backend, hists):
    H, C = hists
    D = backend.to_numpy(oc.cdist(backend.asarray(H), C=backend.asarray(C), eps=EPS))
    self_terms = [_ot_dual(h, h, C, symmetric=True) for h in H]
    for i, j in [(0, 1), (2, 5), (7, 3)]:
        ref = _ot_dual(H[i], H[j], C) - 0.5 * (self_terms[i] + self_terms[j])
        assert D[i, j] == pytest.approx(ref, abs=1e-9)
        assert D[j, i] == D[i, j]
    np.testing.assert_array_equal(np.diag(D), 0.0)
    assert np.all(D[~np.eye(len(H), dtype=bool)] > 0)


@pytest.mark.filterwarnings("ignore:divide by zero:RuntimeWarning")  # POT: log of zero bins
def test_sinkhorn_cost_matches_pot(hists):
    H, C = hists
    D = oc.cdist(H[:3], H[3:], C=C, eps=EPS, metric="sinkhorn_cost")
    for i in range(3):
        ref = ot.sinkhorn2(H[i], H[3:].T, C, EPS, method="sinkhorn_log", stopThr=1e-13,
                           numItermax=100_000)
        np.testing.assert_allclose(D[i], ref, rtol=0, atol=1e-9)


def test_pdist_equals_the_full_computation(hists):
    """One collection: each unordered pair once; equal to all pairs of two copies."""
    H, C = hists
    calls = []
    d = oc.pdist(H, C=C, eps=EPS, tile_size=5, callback=lambda done, total: calls.append(
        (done, total)))
    full = oc.cdist(H, H.copy(), C=C, eps=EPS)
    np.testing.assert_allclose(squareform(d), full, rtol=0, atol=1e-12)
    n_pairs = len(H) * (len(H) - 1) // 2 + len(H)  # cross pairs and self terms
    assert calls[-1] == (len(calls), len(calls)) and len(calls) == -(-28 // 5) + -(-8 // 5)
    assert d.shape == (n_pairs - len(H),)
    # the entropic value on the diagonal is that of the self terms
    Dv = oc.cdist(H, C=C, eps=EPS, metric="sinkhorn")
    assert Dv[2, 2] == pytest.approx(_ot_dual(H[2], H[2], C, symmetric=True), abs=1e-10)


def test_ragged_clouds_match_sinkhorn_divergence(backend, clouds):
    pts, w = clouds
    pts_b, w_b = [backend.asarray(p) for p in pts], [backend.asarray(v) for v in w]
    D = backend.to_numpy(oc.cdist(pts_b, eps=EPS / 10, weights_a=w_b, scale=10.0))
    for i, j in [(0, 1), (1, 3), (2, 0)]:
        ref = oc.sinkhorn_divergence(pts[i], pts[j], EPS, a=w[i], b=w[j],
                                     cost="sqeuclidean").value
        # cost and eps both divided by 10: the same problem, its values divided by 10
        assert D[i, j] * 10 == pytest.approx(ref, abs=1e-8)


def test_stacked_clouds_and_torch(rng):
    torch = pytest.importorskip("torch")
    X = rng.normal(size=(4, 10, 3))
    D = oc.cdist(torch.asarray(X), eps=1.0)
    assert isinstance(D, torch.Tensor) and tuple(D.shape) == (4, 4)
    np.testing.assert_allclose(D.numpy(), oc.cdist(list(X), eps=1.0), rtol=0, atol=1e-12)


def test_progress(hists, capsys):
    H, C = hists
    oc.pdist(H[:4], C=C, eps=EPS, verbose=True)
    err = capsys.readouterr().err
    assert "pairwise OT" in err


@pytest.mark.parametrize(("kwargs", "error", "match"), [
    ({"metric": "emd"}, ValueError, "metric"),
    ({"C": np.ones((15, 14))}, ValueError, r"C has shape \(15, 14\), but the histograms"),
    ({"tile_size": 0}, ValueError, "tile_size"),
    ({"eps": -1.0}, ValueError, "eps"),
])
def test_bad_histogram_input(hists, kwargs, error, match):
    H, C = hists
    args = {"C": C, "eps": EPS, **kwargs}
    with pytest.raises(error, match=match):
        oc.cdist(H, **args)


def test_bad_collections(hists, clouds):
    H, C = hists
    pts, w = clouds
    with pytest.raises(ValueError, match="must be square"):
        oc.cdist(H[:, :14], H[:, :13], C=C[:14, :13], eps=EPS)
    with pytest.raises(ValueError, match="XA has negative entries"):
        oc.cdist(-H, C=C, eps=EPS)
    with pytest.raises(ValueError, match="holds no"):
        oc.cdist([], eps=EPS)
    with pytest.raises(ValueError, match="weights for XA must hold one vector per cloud"):
        oc.cdist(pts, eps=EPS, weights_a=w[:2])
    with pytest.raises(ValueError, match=r"the weights of XA\[1\] have shape"):
        oc.cdist(pts, eps=EPS, weights_a=[w[0], w[0], w[2], w[3]])
    with pytest.raises(ValueError, match=r"histograms \(N, n\) need the cost C"):
        oc.cdist(H, eps=EPS)
    with pytest.raises(ValueError, match="same dimension"):
        oc.cdist(pts, [np.ones((3, 3))], eps=EPS)
