"""Confidence thresholds for the device's ``unknown`` label, from validation data.

The daemon publishes ``unknown`` below a threshold. A threshold picked by hand is
either too low (wrong labels get published) or too high (nothing does); here it is
the lowest score at which the validation predictions keep a target precision.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def _lowest_threshold(scores: np.ndarray, correct: np.ndarray, target: float) -> float | None:
    """Smallest t such that predictions with score >= t are right at least ``target``."""
    order = np.argsort(-scores)
    hits = np.cumsum(correct[order])
    precision = hits / np.arange(1, len(order) + 1)
    ok = np.flatnonzero(precision >= target)
    if not len(ok):
        return None
    # The largest prefix that keeps the precision: its last score is the threshold.
    return float(scores[order][ok[-1]])


def thresholds(
    probs: np.ndarray, y_true: np.ndarray, labels: list[str], target_precision: float = 0.95
) -> dict[str, Any]:
    """Per-class and global thresholds keeping ``target_precision`` on validation data.

    ``coverage`` is the share of validation images that would still get a label.
    """
    pred = probs.argmax(axis=1)
    score = probs.max(axis=1)
    correct = pred == y_true
    per_class = {}
    for c, name in enumerate(labels):
        mask = pred == c
        t = _lowest_threshold(score[mask], correct[mask], target_precision) if mask.any() else None
        per_class[name] = {
            "threshold": None if t is None else round(t, 4),
            "coverage": None if t is None else float(np.mean(score[mask] >= t)),
            "predicted": int(mask.sum()),
        }
    t = _lowest_threshold(score, correct, target_precision)
    suggested = 0.9 if t is None else float(np.clip(t, 0.3, 0.95))
    return {
        "target_precision": target_precision,
        "n": len(y_true),
        "global_threshold": None if t is None else round(t, 4),
        "suggested_threshold": round(suggested, 4),
        "coverage_at_suggested": float(np.mean(score >= suggested)) if len(score) else 0.0,
        "per_class": per_class,
    }
