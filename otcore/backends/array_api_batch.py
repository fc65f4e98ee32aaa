"""Reference batch kernels: plain Array-API code over stacked problems.

The oracle of the fast batch kernels and the fallback for libraries without them. Each
call works on blocks of problems whose ``(problems, n, m)`` cost fits in a few million
entries, so memory stays bounded for point clouds.
"""

from __future__ import annotations

from typing import Any

from .._array import concat
from ..collection import Batch
from ._contract import BatchOps, PlanStats

__all__ = ["ArrayAPIBatchOps"]

_BLOCK_ENTRIES = 1 << 22


class ArrayAPIBatchOps(BatchOps):
    """:class:`BatchOps` in namespace ``xp`` for a :class:`~otcore.collection.Batch`."""

    def __init__(self, xp: Any, batch: Batch):
        self.xp, self.batch = xp, batch
        n, m = batch.shape
        self.block = max(1, _BLOCK_ENTRIES // (n * m))

    def _costs(self, ks: list[int]) -> Any:
        """The ``(len(ks), n, m)`` costs of problems ``ks`` (the shared cost repeated)."""
        bt, xp = self.batch, self.xp
        data = bt.C if bt.C is not None else bt.x
        if data.shape[0] == 1:
            ks = [0] * len(ks)
        idx = xp.asarray(ks)
        if bt.C is not None:
            return xp.take(bt.C, idx, axis=0)
        x, y = xp.take(bt.x, idx, axis=0), xp.take(bt.y, idx, axis=0)
        c = bt.ground.of_differences(xp, x[:, :, None, :] - y[:, None, :, :])
        return c / bt.scale if bt.scale != 1.0 else c

    def _chunks(self, active: Any):
        ks = [int(k) for k in active]
        for s in range(0, len(ks), self.block):
            yield ks[s:s + self.block]

    def softmin(self, H: Any, eps: float, axis: int, active: Any, out: Any) -> Any:
        xp = self.xp
        for ks in self._chunks(active):
            idx = xp.asarray(ks)
            h = xp.take(H, idx, axis=0)
            C = self._costs(ks)
            z = (h[:, None, :] - C) if axis == 1 else (h[:, :, None] - C)
            red = 2 if axis == 1 else 1
            mx = xp.max(z, axis=red, keepdims=True)
            s = xp.sum(xp.exp((z - mx) / eps), axis=red)
            res = -(xp.squeeze(mx, axis=red) + eps * xp.log(s))
            for q, k in enumerate(ks):
                out[k, :] = res[q, :]
        return out

    def plan_stats(self, hf: Any, hg: Any, eps: float) -> PlanStats:
        xp = self.xp
        rows, cols, cost = [], [], []
        for ks in self._chunks(range(self.batch.size)):
            idx = xp.asarray(ks)
            C = self._costs(ks)
            P = xp.exp((xp.take(hf, idx, axis=0)[:, :, None]
                        + xp.take(hg, idx, axis=0)[:, None, :] - C) / eps)
            rows.append(xp.sum(P, axis=2))
            cols.append(xp.sum(P, axis=1))
            cost.append(xp.sum(xp.where(P > 0, C, 0) * P, axis=(1, 2)))  # +inf: P = 0
        return PlanStats(concat(xp, rows), concat(xp, cols), concat(xp, cost))

    def cost_scale(self) -> float:
        xp, bt = self.xp, self.batch
        if bt.C is not None:
            return float(xp.max(xp.where(xp.isfinite(bt.C), xp.abs(bt.C), 0)))
        both = concat(xp, [xp.reshape(bt.x, (-1, bt.x.shape[-1])),
                           xp.reshape(bt.y, (-1, bt.y.shape[-1]))])
        lo, hi = xp.min(both, axis=0), xp.max(both, axis=0)
        c = bt.ground.pairwise(xp, lo[None, :], hi[None, :])[0, 0]
        return float(c) / bt.scale
