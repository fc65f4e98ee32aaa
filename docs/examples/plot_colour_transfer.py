"""
Colour transfer between two photographs
=======================================

Give a photograph the colours of another: see the pixels of each image as points of the
RGB cube, transport one cloud of colours onto the other with entropic optimal transport,
and move every pixel to the barycentric projection of its colour. With 100,000 pixels on
each side the cost matrix would hold 10^10 entries (80 GB in float64); at the full
resolution of the two photographs (273,280 pixels each) 7.5 x 10^10. An online
:class:`otcore.PointCloud` evaluates the cost on the fly, the multiscale solver merges
repeated colours (the 273,280 pixels of each photograph hold 96,615 and 62,941
distinct 8-bit colours) and skips the pairs of colours that the plan does not connect,
and :meth:`otcore.OTResult.barycentric_projection` applies the plan without forming it,
so the whole example runs in about a minute and a half on two CPU cores and in well
under a gigabyte of memory (``bench/results/multiscale.md`` has measured times for
``tol=1e-4``).
"""

# %%
# Two clouds of colours
# ---------------------
# The two sample images of scikit-learn, ``china.jpg`` (the source, to be recoloured) and
# ``flower.jpg`` (the target, whose palette we want). RGB values are scaled to [0, 1], and
# every pixel is a point (or ``N_PIXELS`` pixels of each image drawn at random). The cost
# is the squared distance between colours divided by 3, the squared diagonal of the unit
# cube, so that it lies in [0, 1] and ``eps`` reads as a fraction of the largest cost.
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from scipy.spatial import cKDTree
from sklearn.datasets import load_sample_images

import otcore as oc

N_PIXELS = None  # all the pixels; an integer draws that many of each image
EPS = 1e-2
SCALE = 3.0

data = load_sample_images()
images = {Path(f).name: img / 255.0 for f, img in zip(data.filenames, data.images, strict=True)}
source, target = images["china.jpg"], images["flower.jpg"]
source_pixels, target_pixels = source.reshape(-1, 3), target.reshape(-1, 3)

rng = np.random.default_rng(0)
if N_PIXELS is None:
    x, y = source_pixels, target_pixels
else:
    x = source_pixels[rng.choice(len(source_pixels), N_PIXELS, replace=False)]
    y = target_pixels[rng.choice(len(target_pixels), N_PIXELS, replace=False)]
print(f"{len(x):,} source and {len(y):,} target colours")

# %%
# Multiscale Sinkhorn on all the pixels
# -------------------------------------
# :func:`otcore.multiscale_sinkhorn` clusters both colour clouds on a grid, solves the
# problem between the cluster centres with eps-scaling, extends its potentials to every
# pixel, and then iterates on the pixels, evaluating only the pairs of clusters whose plan
# mass may exceed a bound (the ignored mass stays below ``tol / 10``, checked with the
# final potentials). Repeated colours are merged first, exactly: equal colours have equal
# potentials. ``tol=1e-2``: one percent of the mass is misplaced, which moves the
# projected colours by about one grey level (1/255) on average from those of the
# converged plan. ``oc.solve`` would pick the same solver for clouds this large.
t0 = time.perf_counter()
res = oc.multiscale_sinkhorn(None, None, oc.PointCloud(x, y, scale=SCALE), EPS, tol=1e-2,
                             check_every=1)
print(f"multiscale Sinkhorn: {res.extra['distinct_points']} distinct colours, "
      f"{res.n_iter} iterations, {res.extra['n_clusters']} clusters, "
      f"{100 * res.extra['kept_fraction']:.0f}% of their pairs kept, L1 marginal error "
      f"{res.marginal_error:.1e}, {time.perf_counter() - t0:.0f} s")

# %%
# Barycentric projection
# ----------------------
# Each source colour ``x_i`` goes to ``T(x_i) = sum_j P_ij y_j / sum_j P_ij``,
# the plan-weighted mean of the target colours it is sent to. One pass over the cost, and
# memory for the ``N_PIXELS x 3`` result only.
t0 = time.perf_counter()
projected = res.barycentric_projection()
print(f"barycentric projection: {time.perf_counter() - t0:.0f} s")

# %%
# Recolour the whole image
# ------------------------
# At full resolution every pixel has its projection. With ``N_PIXELS`` set, the
# projection is known at the sampled colours only: every pixel of the source image takes
# the displacement ``T(x_k) - x_k`` of the sampled colour ``x_k`` nearest to its own (a
# k-d tree query in RGB), so a pixel whose colour was sampled gets exactly its projection
# and the others, a few grey levels away at most, follow their neighbour.
if N_PIXELS is None:
    recoloured = np.clip(projected, 0.0, 1.0)
else:
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
