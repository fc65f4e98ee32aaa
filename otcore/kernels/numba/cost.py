"""Ground costs evaluated on the fly, one tile of a cost row at a time.

A single code path serves dense costs and point clouds: :func:`cost_row` returns either a
view into the dense matrix or a tile computed into a scratch buffer. The integer codes
come from the cost table :mod:`otcore.costs`; ``DENSE`` means "``X`` is the cost matrix
itself".
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ...costs import DENSE, EUCLIDEAN, PNORM, SQEUCLIDEAN

__all__ = ["DENSE", "EUCLIDEAN", "PNORM", "SQEUCLIDEAN", "TILE", "cost_row"]

#: Column tile of the on-the-fly cost (fits in L1 together with its inputs).
TILE = 512


@njit(cache=True, fastmath={"contract", "nsz"})
def cost_row(X, YT, kind, p, i, j0, j1, buf):
    """Cost ``c(x_i, y_j)`` for ``j0 <= j < j1``.

    ``X`` is the dense cost (``kind == DENSE``; the result is a view of row ``i``) or the
    ``(n, d)`` source points; ``YT`` holds the target points transposed, ``(d, m)``, so the
    innermost loop runs over contiguous ``j`` and vectorizes. ``buf`` is scratch of
    length >= ``j1 - j0``.
    """
    if kind == DENSE:
        return X[i, j0:j1]
    out = buf[: j1 - j0]
    out[:] = 0.0
    for k in range(X.shape[1]):
        xik = X[i, k]
        yk = YT[k, j0:j1]
        if kind == PNORM:
            for jj in range(out.shape[0]):
                out[jj] += np.abs(xik - yk[jj]) ** p
        else:
            for jj in range(out.shape[0]):
                t = xik - yk[jj]
                out[jj] += t * t
    if kind == EUCLIDEAN:
        for jj in range(out.shape[0]):
            out[jj] = np.sqrt(out[jj])
    elif kind == PNORM:
        for jj in range(out.shape[0]):
            out[jj] /= p
    return out
