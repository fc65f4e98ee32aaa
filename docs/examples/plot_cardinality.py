"""
Transport plans with at most k sources per target
=================================================

:func:`otcore.cardinality_ot` solves quadratically regularized optimal transport with
the constraint that every column of the plan has at most ``k`` nonzeros: each target
receives mass from at most ``k`` sources. Here the plans for ``k = 1, 2, 5`` are shown
next to the entropic plan of :func:`otcore.sinkhorn` (dense) and the quadratically
regularized plan (``k >= n``, no cardinality constraint).
"""

# %%
# Two point clouds
# ----------------
# Two small Gaussian clouds with uniform weights, the squared Euclidean cost divided by
# its maximum.
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.collections import LineCollection

import otcore as oc

rng = np.random.default_rng(3)
n = m = 24
x = rng.normal(scale=0.5, size=(n, 2))
y = rng.normal(scale=0.5, size=(m, 2)) + np.array([1.5, 0.3])
C = ((x[:, None, :] - y[None, :, :]) ** 2).sum(axis=-1)
C /= C.max()
gamma = 1.0

# %%
# Solve
# -----
# The semi-dual (the default formulation) keeps the column marginal exact: every target
# receives exactly its weight. With ``k = 1`` each target has a single source; such a
# plan generally cannot also meet the row marginal, and ``extra["row_error"]`` says by
# how much it misses it. ``rebuild_plan=True`` would return an exact (unregularized) OT
# plan instead.
plans = {"entropic (Sinkhorn, eps=0.01)": oc.sinkhorn(None, None, C, eps=1e-2).plan}
for k in (1, 2, 5):
    res = oc.cardinality_ot(None, None, C, k, gamma)
    per_column = np.diff(res.plan.tocsc().indptr)
    print(f"k={k}: value {res.value:.6f}, at most {per_column.max()} sources per target, "
          f"row error {res.extra['row_error']:.2e}, column error {res.extra['col_error']:.1e}")
    plans[f"k = {k}"] = res.plan.toarray()
quad = oc.cardinality_ot(None, None, C, n, gamma, tol=1e-12)
plans["quadratic (k >= n)"] = quad.plan.toarray()
print("quadratic: at most", np.count_nonzero(quad.plan.toarray(), axis=0).max(),
      "sources per target")

# %%
# The plans
# ---------
# Top: each target (orange) is joined to its sources (blue), with line opacity
# proportional to the mass. Bottom: the plans as matrices (sources sorted by their first
# coordinate, targets too); the entropic plan is dense, the quadratic plan sparse but
# with several sources per target, and the cardinality-constrained plans have at most
# ``k`` nonzeros in every column.
order_x, order_y = np.argsort(x[:, 0]), np.argsort(y[:, 0])
fig, axes = plt.subplots(2, len(plans), figsize=(3.2 * len(plans), 6.4))
for (title, P), top, bottom in zip(plans.items(), axes[0], axes[1], strict=True):
    i, j = np.nonzero(P > 1e-3 * P.max())
    colors = np.zeros((len(i), 4))
    colors[:, 3] = P[i, j] / P.max()
    top.add_collection(LineCollection(np.stack([x[i], y[j]], axis=1), colors=colors,
                                      linewidths=1.2))
    top.scatter(*x.T, s=12, color="tab:blue", zorder=3)
    top.scatter(*y.T, s=12, color="tab:orange", zorder=3)
    top.set(title=title, aspect="equal", xticks=[], yticks=[])
    bottom.imshow(P[order_x][:, order_y], cmap="magma_r", aspect="equal")
    bottom.set(xlabel="target", ylabel="source", xticks=[], yticks=[],
               title=f"{np.count_nonzero(P > 0)} nonzeros")
fig.tight_layout()

# %%
# Effect of k
# -----------
# Left: the objective value decreases with ``k``, from unregularized OT plus
# :math:`\frac{\gamma}{2}\|b\|^2` at ``k = 1`` to quadratically regularized OT when the
# constraint no longer binds. Right: the transport cost ``<C, P>`` is lowest at ``k = 1``,
# unregularized OT, and rises (not necessarily monotonically) as more sources per target
# let the regularization spread the mass.
ks = [1, 2, 3, 5, 8, 12, n]
results = [oc.cardinality_ot(None, None, C, k, gamma) for k in ks]
fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(9, 3.6))
ax0.plot(ks, [r.value for r in results], "o-")
ax0.set(xscale="log", xlabel="k (max sources per target)", ylabel="semi-dual value",
        title="objective")
ax1.plot(ks, [r.cost for r in results], "o-", color="tab:red")
ax1.set(xscale="log", xlabel="k (max sources per target)", ylabel="<C, P>",
        title="transport cost")
fig.tight_layout()
plt.show()
