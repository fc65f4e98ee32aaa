"""
Colour transfer between two photographs
=======================================

Give a photograph the colours of another: see the pixels of each image as points of the
RGB cube, transport one cloud of colours onto the other with entropic optimal transport,
and move every pixel to the barycentric projection of its colour. With 100,000 pixels on
each side the cost matrix would hold 10^10 entries (80 GB in float64); an online
:class:`otcore.PointCloud` evaluates it on the fly, and
:meth:`otcore.OTResult.barycentric_projection` applies the plan without forming it, so the
whole example runs in a few hundred megabytes.

.. note::

   This example takes a few minutes on a laptop-class CPU (one to three minutes on two
   cores): one Sinkhorn iteration on 100,000 x 100,000 points evaluates 2 x 10^10
   exponentials. The documentation build therefore shows it without running it. To run
   it, install scikit-learn and matplotlib and call ``python colour_transfer.py``; lower
   ``N_PIXELS`` below for a quicker look.
"""

# %%
# Two clouds of colours
# ---------------------
# The two sample images of scikit-learn, ``china.jpg`` (the source, to be recoloured) and
# ``flower.jpg`` (the target, whose palette we want). RGB values are scaled to [0, 1] and
# ``N_PIXELS`` pixels of each image are drawn at random. The cost is the squared distance
# between colours divided by 3, the squared diagonal of the unit cube, so that it lies in
# [0, 1] and ``eps`` reads as a fraction of the largest cost.
import time
import warnings
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from scipy.spatial import cKDTree
from sklearn.datasets import load_sample_images

import otcore as oc

N_PIXELS = 100_000
EPS = 1e-2
SCALE = 3.0

data = load_sample_images()
images = {Path(f).name: img / 255.0 for f, img in zip(data.filenames, data.images, strict=True)}
source, target = images["china.jpg"], images["flower.jpg"]
source_pixels, target_pixels = source.reshape(-1, 3), target.reshape(-1, 3)

rng = np.random.default_rng(0)
source_index = rng.choice(len(source_pixels), N_PIXELS, replace=False)
x = source_pixels[source_index]
y = target_pixels[rng.choice(len(target_pixels), N_PIXELS, replace=False)]
print(f"{N_PIXELS:,} source and target colours, {source_pixels.shape[0]:,} pixels per image")

# %%
# A warm start on a subsample
# ---------------------------
# From zero potentials, Sinkhorn needs 50 to 80 iterations at ``eps=1e-2`` on these
# clouds, each one a pass over all ``N_PIXELS**2`` pairs. Most of that work only moves
# the potentials toward their coarse shape, which a small subsample already captures.
# So we first solve on one pixel in ten (the first tenth of our random sample), with
# ``eps_scaling`` to start from a large ``eps``. Its target potential ``g`` is then
# extended to every source colour: with ``g`` given and ``max_iter=1``, the first half of
# the iteration computes ``f_i = -eps log sum_j b_j exp((g_j - C_ij) / eps)`` for all the
# source points. That one-iteration solve is of course not converged; we silence its
# :class:`~otcore.ConvergenceWarning` and keep only ``f``.
t0 = time.perf_counter()
k = N_PIXELS // 10
coarse = oc.sinkhorn(None, None, oc.PointCloud(x[:k], y[:k], scale=SCALE), EPS, tol=1e-3,
                     eps_scaling=0.5)
with warnings.catch_warnings():
    warnings.simplefilter("ignore", oc.ConvergenceWarning)
    extended = oc.sinkhorn(None, None, oc.PointCloud(x, y[:k], scale=SCALE), EPS,
                           init=(None, coarse.g), max_iter=1, check_every=2)
print(f"warm start: {coarse.n_iter} iterations on {k:,} points, "
      f"{time.perf_counter() - t0:.0f} s")

# %%
# Sinkhorn on all the pixels
# --------------------------
# The full problem starts from the extended potential. A few iterations bring the L1
# marginal error ``|P 1 - a|_1 + |P^T 1 - b|_1`` under ``tol=1e-2``: one percent of the
# mass is misplaced, which moves the projected colours by about one grey level (1/255) on
# average from those of the converged plan. The convergence check costs no extra pass
# over the cost, so we check after every iteration.
t0 = time.perf_counter()
res = oc.sinkhorn(None, None, oc.PointCloud(x, y, scale=SCALE), EPS, init=(extended.f, None),
                  tol=1e-2, max_iter=20, check_every=1)
print(f"Sinkhorn iterations: {res.n_iter}, L1 marginal error {res.marginal_error:.1e}, "
      f"{time.perf_counter() - t0:.0f} s")

# %%
# Barycentric projection
# ----------------------
# Each sampled source colour ``x_i`` goes to ``T(x_i) = sum_j P_ij y_j / sum_j P_ij``,
# the plan-weighted mean of the target colours it is sent to. One pass over the cost, and
# memory for the ``N_PIXELS x 3`` result only.
t0 = time.perf_counter()
projected = res.barycentric_projection()
print(f"barycentric projection: {time.perf_counter() - t0:.0f} s")

# %%
# Recolour the whole image
# ------------------------
# The projection is known at the sampled colours. Every pixel of the source image takes
# the displacement ``T(x_k) - x_k`` of the sampled colour ``x_k`` nearest to its own
# (a k-d tree query in RGB), so a pixel whose colour was sampled gets exactly its
# projection and the others, a few grey levels away at most, follow their neighbour.
_, nearest = cKDTree(x).query(source_pixels)
recoloured = np.clip(source_pixels + projected[nearest] - x[nearest], 0.0, 1.0)
recoloured = recoloured.reshape(source.shape)

fig, axes = plt.subplots(1, 3, figsize=(13, 3.4), layout="constrained")
for ax, img, title in zip(axes, [source, target, recoloured],
                          ["source (china.jpg)", "target (flower.jpg)",
                           "source with the colours of the target"], strict=True):
    ax.imshow(img)
    ax.set_title(title)
    ax.set_axis_off()
plt.show()

# %%
# The entropic plan is blurred at the scale ``sqrt(eps * 3)``, about 0.17 in RGB: each
# colour goes to an average of nearby target colours, which slightly greys the result.
# A smaller ``eps`` gives sharper, more saturated colours and needs more iterations.
