"""
Unbalanced transport: leaving outliers behind
=============================================

Balanced optimal transport must move all the mass: if the target holds a cluster of
outliers, part of the source is sent to them, however far they are. With ``reg_m``,
:func:`otcore.sinkhorn` replaces the marginal constraints by KL penalties of weight
``rho``, and mass that is too expensive to move is simply not transported. Here the
target carries 20% extra mass in a far-away cluster; the unbalanced plan (nearly) ignores
it.
"""

# %%
# A target with outliers
# ----------------------
# The source is a Gaussian blob of mass 1. The target is a nearby blob of mass 1, plus a
# cluster of outliers far above it, of mass 0.2. The cost is the squared Euclidean
# distance: about 1 to the nearby blob, about 10 to the outliers.
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.collections import LineCollection

import otcore as oc

rng = np.random.default_rng(0)
n, m_main, m_out = 60, 60, 15
x = rng.normal(scale=0.3, size=(n, 2))
y_main = np.array([1.0, 0.3]) + rng.normal(scale=0.3, size=(m_main, 2))
y_out = np.array([0.5, 3.2]) + rng.normal(scale=0.15, size=(m_out, 2))
y = np.concatenate([y_main, y_out])
outlier = np.arange(len(y)) >= m_main

a = np.full(n, 1.0 / n)  # mass 1
b = np.concatenate([np.full(m_main, 1.0 / m_main), np.full(m_out, 0.2 / m_out)])  # 1.2
C = ((x[:, None, :] - y[None, :, :]) ** 2).sum(axis=-1)
eps = 0.02

# %%
# Balanced and unbalanced plans
# -----------------------------
# Balanced transport needs equal masses, so ``b`` is rescaled to mass 1: a sixth of it
# sits on the outliers, and a sixth of the source has to go there. The unbalanced problem
# keeps the source marginal exact (``rho_a = inf``) and relaxes the target's with
# ``rho_b = 0.5``, in the units of the cost: receiving less than ``b_j`` costs about
# ``rho_b`` per unit of missing mass (a KL penalty), much less than the cost of
# reaching the outliers.
balanced = oc.sinkhorn(a, b / b.sum(), C, eps)
unbalanced = oc.sinkhorn(a, b, C, eps, reg_m=(np.inf, 0.5))


def report(name, res):
    P = res.plan
    print(f"{name:>10}: transported mass {P.sum():.4f}, "
          f"mass sent to the outliers {P[:, outlier].sum():.2e} "
          f"({res.n_iter} iterations, converged: {res.converged})")


report("balanced", balanced)
report("unbalanced", unbalanced)

# %%
# Each source point is joined to the target points that receive a noticeable share of its
# mass, with opacity proportional to that mass; the area of a target point is the mass it
# receives. On the left a sixth of the source travels to the outliers; on the right the
# outliers receive almost nothing, and the nearby blob receives its full mass.
fig, axes = plt.subplots(1, 2, figsize=(9, 5.6), sharex=True, sharey=True)
for ax, (title, res) in zip(axes, [("balanced (b rescaled to mass 1)", balanced),
                                   ("unbalanced, reg_m=(inf, 0.5)", unbalanced)],
                            strict=True):
    P = res.plan
    i, j = np.nonzero(P > 0.02 * P.max())
    colors = np.zeros((len(i), 4))
    colors[:, 3] = P[i, j] / P.max()  # black, opacity proportional to the mass
    ax.add_collection(LineCollection(np.stack([x[i], y[j]], axis=1), colors=colors,
                                     linewidths=1))
    received = P.sum(axis=0)
    ax.scatter(*x.T, s=12, color="tab:blue", label="source", zorder=3)
    ax.scatter(*y[~outlier].T, s=2e3 * received[~outlier] + 2, color="tab:orange",
               label="target", zorder=3)
    ax.scatter(*y[outlier].T, s=2e3 * received[outlier] + 2, color="tab:red",
               label="target outliers", zorder=3)
    ax.set(title=f"{title}\nto the outliers: {P[:, outlier].sum():.3f}", aspect="equal")
fig.tight_layout(rect=(0, 0.07, 1, 1))
fig.legend(*axes[0].get_legend_handles_labels(), loc="lower center", ncol=3)

# %%
# How much reaches the outliers
# -----------------------------
# At the optimum a target point receives ``b_j exp(-g_j / rho_b)``, where the potential
# ``g_j`` grows with the cost of reaching it. For the outliers that cost is about 10, so
# the mass they receive falls exponentially once ``rho_b`` drops below it, and tends to
# the balanced share as ``rho_b`` grows. With both marginals relaxed (``reg_m=rho``) the
# source may also keep part of its mass.
rhos = np.geomspace(0.2, 100, 12)
to_outliers = {"reg_m=(inf, rho)": [], "reg_m=rho": []}
for rho in rhos:
    for label, reg_m in [("reg_m=(inf, rho)", (np.inf, rho)), ("reg_m=rho", rho)]:
        P = oc.sinkhorn(a, b, C, eps, reg_m=reg_m).plan
        to_outliers[label].append(P[:, outlier].sum())

fig, ax = plt.subplots(figsize=(6.5, 4.2))
for label, mass in to_outliers.items():
    ax.loglog(rhos, mass, "o-", label=label)
ax.axhline(0.2 / 1.2, color="gray", ls=":", label="balanced (b rescaled)")
ax.set(xlabel="rho", ylabel="mass sent to the outliers",
       title="Outlier mass transported, against rho")
ax.legend()
fig.tight_layout()
plt.show()
