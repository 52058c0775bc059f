"""Per-stage timings of the camera loop, kept in a fixed ring (no per-frame allocation).

The pipeline records one row per classified frame; ``stats`` reads percentiles over the
frames since the last report and ``sightwire bench`` reads ``summary()`` to compare the
whole loop with bare ``invoke()``.
"""

from __future__ import annotations

import numpy as np

# capture: in source.read() (decode for files, waiting for the sensor for cameras);
# wait: from capture to the worker taking the frame; fit..output: Classifier.timings;
# inference: set_tensor + invoke + output; total: capture done → published.
STAGES = (
    "capture",
    "wait",
    "fit",
    "convert",
    "set_tensor",
    "invoke",
    "output",
    "postprocess",
    "publish",
    "inference",
    "total",
)
INDEX = {name: i for i, name in enumerate(STAGES)}


class StageTimes:
    """The last ``size`` rows of stage durations (seconds), plus running sums."""

    def __init__(self, size: int = 1024):
        self.size = size
        self.count = 0  # rows written to the ring
        self.frames = 0  # frames in ``sums``: ``count`` plus those added without their rows
        self.sums = np.zeros(len(STAGES))
        self.row = np.zeros(len(STAGES))  # filled by the caller, then ``commit()``
        self._ring = np.zeros((size, len(STAGES)))

    def commit(self) -> None:
        """Store ``self.row`` as the next record."""
        self._ring[self.count % self.size] = self.row
        self.sums += self.row
        self.count += 1
        self.frames += 1

    def extend(self, other: StageTimes) -> None:
        """Add ``other``'s frames: all of them to the means, its kept rows to this ring."""
        kept = min(other.count, other.size)
        end = other.count % other.size
        rows = other._ring[np.arange(end - kept, end) % other.size]
        for row in rows:
            self.row = row.copy()
            self.commit()
        self.sums += other.sums - rows.sum(axis=0)  # frames whose rows other no longer has
        self.frames += other.frames - kept

    def recent(self, stage: str, n: int | None = None) -> np.ndarray:
        """The stage's last ``n`` values (all kept ones by default), oldest first."""
        kept = min(self.count, self.size)
        n = kept if n is None else min(n, kept)
        if n <= 0:
            return np.zeros(0)
        end = self.count % self.size
        idx = np.arange(end - n, end) % self.size
        return self._ring[idx, INDEX[stage]]

    def percentiles_ms(self, stage: str, n: int | None = None) -> dict[str, float | None]:
        values = self.recent(stage, n)
        if values.size == 0:
            return {"p50": None, "p95": None}
        p50, p95 = np.percentile(values, [50, 95]) * 1000
        return {"p50": round(float(p50), 3), "p95": round(float(p95), 3)}

    def summary(self) -> dict[str, dict[str, float | None]]:
        """Mean over all frames and p50/p95 over the kept ones, in ms, per stage."""
        out: dict[str, dict[str, float | None]] = {}
        for i, stage in enumerate(STAGES):
            mean = self.sums[i] / self.frames * 1000 if self.frames else None
            out[stage] = {
                "mean": None if mean is None else round(float(mean), 3),
                **self.percentiles_ms(stage),
            }
        return out
