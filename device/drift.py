"""Drift: does the line still look like the training photos?

A model meets photos unlike its training set (new lighting, another batch of parts, a
cable in the frame) long before anyone notices wrong labels: its top scores sink and
more frames fall under the ``unknown`` threshold. ``Drift`` keeps the newest frames' top
scores in a ring buffer and reports both figures next to what the bundle's validation
split gave (the manifest's ``metrics.validation``, when the trainer wrote it), so Home
Assistant can alert on the difference. The threshold is applied when the figures are
read, so a ``cmd/set`` of the threshold re-reads the whole window at once.
"""

from __future__ import annotations

from typing import Any

import numpy as np

VALIDATION_KEYS = ("below_threshold", "mean_top_score")


def validation_figures(manifest: dict[str, Any]) -> dict[str, float] | None:
    """``metrics.validation`` of a manifest when it holds both figures as numbers."""
    metrics = manifest.get("metrics")
    found = metrics.get("validation") if isinstance(metrics, dict) else None
    if not isinstance(found, dict):
        return None
    values = {k: found.get(k) for k in VALIDATION_KEYS}
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values.values()):
        return None
    return {k: round(float(v), 4) for k, v in values.items()}


class Drift:
    """The last ``window`` frames' top scores (worker thread only: no lock)."""

    def __init__(self, window: int):
        self._scores = np.zeros(window, np.float64)
        self._count = 0
        self._pos = 0

    def add(self, top_score: float) -> None:
        self._scores[self._pos] = top_score
        self._pos = (self._pos + 1) % len(self._scores)
        self._count = min(self._count + 1, len(self._scores))

    def summary(self, threshold: float, validation: dict[str, float] | None) -> dict[str, Any]:
        """``{"frames", "below_threshold", "mean_top_score", "threshold", "validation"}``;
        both figures are ``None`` before the first frame."""
        scores = self._scores[: self._count]
        below = mean = None
        if self._count:
            below = round(float(np.mean(scores < threshold)), 4)
            mean = round(float(np.mean(scores)), 4)
        return {
            "frames": self._count,
            "below_threshold": below,
            "mean_top_score": mean,
            "threshold": round(threshold, 4),
            "validation": validation,
        }
