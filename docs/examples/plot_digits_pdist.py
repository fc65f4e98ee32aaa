"""
Pairwise Sinkhorn divergences between handwritten digits
========================================================

Each 8 x 8 image of scikit-learn's digits is a histogram on the pixel grid. The Sinkhorn
divergence between two of them measures how far ink must move along the grid to turn one
into the other, where the Euclidean distance between pixel vectors compares pixels one by
one. :func:`otcore.pdist` computes the whole condensed matrix in one call: the pairs are
cut into tiles, and each tile is one batch solve on the shared grid cost (matrix
products in the scaling domain, see the user guide's "Many problems").

We use the matrix twice, next to the Euclidean one: a leave-one-out nearest-neighbour
classifier, and a two-dimensional embedding by classical multidimensional scaling. On
these small, centred images both distances classify well; the embeddings differ in what
they put next to each other.
"""

import time

import matplotlib.pyplot as plt
import numpy as np
from scipy.spatial.distance import pdist, squareform
from sklearn.datasets import load_digits

import otcore as oc

digits = load_digits()
count = 150
H = digits.data[:count] + 1e-3  # a little mass everywhere: every bin may receive ink
H /= H.sum(axis=1, keepdims=True)
labels = digits.target[:count]

grid = np.stack(np.meshgrid(np.arange(8), np.arange(8), indexing="ij"), -1).reshape(-1, 2)
M = ((grid[:, None, :] - grid[None, :, :]) ** 2).sum(-1).astype(float)
M /= M.max()  # eps below is then a fraction of the largest cost

start = time.perf_counter()
d_ot = oc.pdist(H, C=M, eps=1e-2)  # condensed, as scipy.spatial.distance.pdist
elapsed = time.perf_counter() - start
pairs = count * (count - 1) // 2
print(f"{pairs} divergences (and {count} self terms) in {elapsed:.1f} s")

# %%
# Nearest neighbours
# ------------------
# Leave-one-out: each digit takes the label of its nearest other digit.


def loo_accuracy(D: np.ndarray) -> float:
    D = D.copy()
    np.fill_diagonal(D, np.inf)
    return float(np.mean(labels[np.argmin(D, axis=1)] == labels))


D_ot = squareform(d_ot)
D_l2 = squareform(pdist(H))
print(f"1-NN accuracy: Sinkhorn divergence {loo_accuracy(D_ot):.3f}, "
      f"Euclidean {loo_accuracy(D_l2):.3f}")

# %%
# An embedding
# ------------
# Classical MDS: the top eigenvectors of the double-centred matrix of squared
# dissimilarities. The divergence behaves like a squared distance, so it enters as is.


def classical_mds(D2: np.ndarray, dim: int = 2) -> np.ndarray:
    n = D2.shape[0]
    J = np.eye(n) - 1.0 / n
    G = -0.5 * J @ D2 @ J
    w, V = np.linalg.eigh(G)
    top = np.argsort(w)[::-1][:dim]
    return V[:, top] * np.sqrt(np.maximum(w[top], 0))


fig, axes = plt.subplots(1, 2, figsize=(10, 4.5))
for ax, D2, title in ((axes[0], D_ot, "Sinkhorn divergence"),
                      (axes[1], D_l2 ** 2, "squared Euclidean")):
    Y = classical_mds(D2)
    sc = ax.scatter(Y[:, 0], Y[:, 1], c=labels, cmap="tab10", s=12)
    ax.set_title(f"classical MDS, {title}")
    ax.set_xticks([])
    ax.set_yticks([])
fig.colorbar(sc, ax=axes, label="digit")
plt.show()
