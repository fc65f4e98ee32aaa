"""
Sinkhorn-Newton-Sparse: entropic transport to machine precision
===============================================================

For a small ``eps`` Sinkhorn's marginal error falls slowly, at a linear rate close to 1.
:func:`otcore.sinkhorn_newton_sparse` starts the same way, then switches to Newton steps
on the dual potentials, with the plan block of the Hessian replaced by its largest entries.
Here both solve the same problem to an L1 marginal error of ``1e-11``, and we compare the
error against the time spent.
"""

# %%
# A sharp problem
# ---------------
# Two Gaussian point clouds with uniform weights, the squared Euclidean cost divided by its
# maximum, and ``eps = 1e-3``: a sharp plan, where Sinkhorn needs over a thousand
# iterations.
import time
import warnings

import matplotlib.pyplot as plt
import numpy as np

import otcore as oc

rng = np.random.default_rng(0)
n = 400
x = rng.normal(size=(n, 2))
y = 1.0 + 0.5 * rng.normal(size=(n, 2))
C = ((x[:, None, :] - y[None, :, :]) ** 2).sum(axis=-1)
C /= C.max()
eps, tol = 1e-3, 1e-11

# %%
# Solve with both methods
# -----------------------
# Both results use the same convention ``P_ij = a_i b_j exp((f_i + g_j - C_ij) / eps)``
# and the same stopping rule, so their plans agree to the tolerance.
oc.sinkhorn_newton_sparse(None, None, C[:20, :20], eps)  # load the compiled kernels once
t0 = time.perf_counter()
res_sns = oc.sinkhorn_newton_sparse(None, None, C, eps, tol=tol)
t_sns = time.perf_counter() - t0
t0 = time.perf_counter()
res_sk = oc.sinkhorn(None, None, C, eps, tol=tol, max_iter=50_000)
t_sk = time.perf_counter() - t0
print(f"SNS:      {t_sns:.3f} s, {res_sns.extra['sinkhorn_iter']} Sinkhorn iterations + "
      f"{res_sns.extra['newton_iter']} Newton steps, error {res_sns.marginal_error:.1e}")
print(f"Sinkhorn: {t_sk:.3f} s, {res_sk.n_iter} iterations, error {res_sk.marginal_error:.1e}")
print("largest plan difference:", np.abs(res_sns.plan - res_sk.plan).max())

# %%
# Error against time
# ------------------
# The solvers take no callback, so the time to reach each Newton step is measured by
# running SNS again with ``max_iter = k`` Newton steps (the fastest of three runs, to damp
# timing noise). Sinkhorn records its error every ``check_every`` iterations; its
# iterations all cost the same, so they are spread evenly over its run time.
sns_t, sns_err = [], []
with warnings.catch_warnings():  # runs stopped early warn that they did not converge
    warnings.simplefilter("ignore", oc.ConvergenceWarning)
    for k in range(1, res_sns.extra["newton_iter"] + 1):
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            r = oc.sinkhorn_newton_sparse(None, None, C, eps, tol=tol, max_iter=k)
            times.append(time.perf_counter() - t0)
        sns_t.append(min(times))
        sns_err.append(r.marginal_error)
sk_it, sk_err = np.array(res_sk.errors).T
sk_t = t_sk * (sk_it + 1) / res_sk.n_iter

hist = res_sns.extra["history"]
fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(10, 4))
ax0.semilogy(sk_t, sk_err, label="Sinkhorn")
ax0.semilogy(sns_t, sns_err, "o-", ms=4, label="SNS (one dot per Newton step)")
ax0.axhline(tol, color="grey", ls=":", lw=0.8)
ax0.set(xscale="log", xlabel="time (s)", ylabel="L1 marginal error",
        title="convergence against time")
ax0.legend()

steps = np.arange(1, len(hist["error"]) + 1)
ax1.semilogy(steps, hist["error"], "o-", ms=4, label="marginal error before the step")
ax1.set(xlabel="Newton step", title="the Newton stage")
ax2 = ax1.twinx()
ax2.plot(steps, hist["density"], "s--", ms=3, color="C2", label="density kept")
ax2.plot(steps, hist["step"], "^:", ms=3, color="C3", label="step length")
ax2.set_ylim(0, 1.05)
ax1.legend(loc="lower left", fontsize=8)
ax2.legend(loc="upper right", fontsize=8)
fig.tight_layout()
plt.show()

# %%
# What the history says
# ---------------------
# The first Newton steps may be damped (step length below 1) while the warm-up's error is
# still large; then full steps take the error down by one or more orders of magnitude
# each. The density is the fraction of the ``n x n`` plan entries kept in the Hessian: a
# few per row suffice for a sharp plan. It rises automatically when the sparse Hessian is
# too coarse for fast convergence (larger ``eps``, or costs such as ``|x - y|`` whose
# unregularized plan is not unique).
