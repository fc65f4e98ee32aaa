"""
Entropic transport between two point clouds
===========================================

Solve a small entropic optimal-transport problem with :func:`otcore.sinkhorn`, look at
the transport plan, and watch the marginal error fall as Sinkhorn iterates, for a few
values of ``eps``.
"""

# %%
# Two point clouds
# ----------------
# The source is a Gaussian blob, the target a noisy arc. Both carry uniform weights
# (``a=None`` and ``b=None``). The cost is the squared Euclidean distance, divided by its
# maximum so that ``eps`` reads as a fraction of the largest cost.
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.collections import LineCollection

import otcore as oc

rng = np.random.default_rng(0)
n, m = 40, 50
x = rng.normal(scale=0.4, size=(n, 2))
angle = rng.uniform(-0.4 * np.pi, 0.4 * np.pi, m)
y = np.c_[1.5 + np.cos(angle), 1.2 * np.sin(angle)] + 0.05 * rng.normal(size=(m, 2))

C_raw = ((x[:, None, :] - y[None, :, :]) ** 2).sum(axis=-1)
c_max = C_raw.max()
C = C_raw / c_max

# %%
# Solve
# -----
# ``eps`` is absolute, in the units of ``C``. With the cost in ``[0, 1]``, ``eps=3e-3``
# gives a sharp plan. The result holds the potentials, the plan (computed on
# first access), the transport cost and convergence information.
res = oc.sinkhorn(None, None, C, eps=3e-3)
print(res)

P = res.plan
print("row sums match a:", np.allclose(P.sum(axis=1), 1 / n, atol=1e-9))
print("column sums match b:", np.allclose(P.sum(axis=0), 1 / m, atol=1e-9))

# %%
# The transport plan
# ------------------
# Left: the plan as a matrix, with source points sorted by height and target points by
# their angle along the arc (bottom to top): the plan concentrates along a band, since
# low points are sent to the low end of the arc. Right: each source point is joined to
# the target points that receive a noticeable share of its mass, with line opacity
# proportional to that mass.
P_sorted = P[np.argsort(x[:, 1])][:, np.argsort(angle)]
fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(10, 4.2))
im = ax0.imshow(P_sorted, cmap="magma_r", aspect="auto")
ax0.set(title="plan P (sorted by height)", xlabel="target j", ylabel="source i")
fig.colorbar(im, ax=ax0, shrink=0.85)

i, j = np.nonzero(P > 0.05 * P.max())
segments = np.stack([x[i], y[j]], axis=1)  # (k, 2 endpoints, 2 coordinates)
colors = np.zeros((len(i), 4))
colors[:, 3] = P[i, j] / P.max()  # black, with opacity proportional to the mass
ax1.add_collection(LineCollection(segments, colors=colors, linewidths=1))
ax1.scatter(*x.T, s=18, color="tab:blue", label="source x", zorder=3)
ax1.scatter(*y.T, s=18, color="tab:orange", label="target y", zorder=3)
ax1.set(title="matched points", aspect="equal")
ax1.legend(loc="best")
fig.tight_layout()

# %%
# The same problem, online
# ------------------------
# :class:`otcore.PointCloud` describes the cost by the points themselves; the solver
# evaluates it on the fly and never stores the ``n x m`` matrix. ``scale`` divides the
# cost, here by the same maximum as above, so the two problems are identical.
geom = oc.PointCloud(x, y, cost="sqeuclidean", scale=float(c_max))
res_online = oc.sinkhorn(None, None, geom, eps=3e-3)
print("max |f_dense - f_online|:", np.abs(res.f - res_online.f).max())

# %%
# Convergence
# -----------
# ``res.errors`` records ``(iteration, L1 marginal error)`` at each convergence check
# (every ``check_every`` iterations). Smaller ``eps`` means a sharper plan and more
# iterations. With ``eps_scaling`` the solver starts from a large ``eps`` and shrinks it
# geometrically down to the target, which usually saves iterations at small ``eps``.
fig, ax = plt.subplots(figsize=(6.5, 4.2))
for eps, color in [(1e-1, "tab:green"), (1e-2, "tab:blue"), (3e-3, "tab:red")]:
    r = oc.sinkhorn(None, None, C, eps=eps, check_every=1)
    it, err = np.array(r.errors).T
    ax.semilogy(it + 1, err, color=color, label=f"eps={eps:g}  ({r.n_iter} iterations)")
r = oc.sinkhorn(None, None, C, eps=3e-3, check_every=1, eps_scaling=0.5)
it, err = np.array(r.errors).T
ax.semilogy(it + 1, err, color="tab:red", ls="--",
            label=f"eps={r.eps:g}, eps_scaling=0.5  ({r.n_iter} iterations)")
ax.axhline(1e-9, color="k", lw=0.8, ls=":")
ax.set(xlabel="iteration", ylabel="L1 marginal error", title="Sinkhorn convergence")
ax.legend()
fig.tight_layout()
plt.show()
