"""Confidence thresholds for the device's below-threshold label, from validation data.

The daemon publishes ``uncertain`` below a threshold. A threshold picked by hand is
either too low (wrong labels get published) or too high (nothing does); here it is
the lowest score at which the validation predictions keep a target precision.
"""

from __future__ import annotations

from typing import Any

import numpy as np

DECIMALS = 4  # the threshold is written with 4 decimals; the device compares against that


def on_grid(scores: np.ndarray) -> np.ndarray:
    """Scores floored to the threshold's 4 decimals.

    For a threshold T written with 4 decimals, ``score >= T`` holds exactly when the
    floored score is ``>= T``: choosing T among floored scores makes the precision and
    coverage computed here the ones the device gets with the written value.
    """
    scale = 10**DECIMALS
    return np.floor(np.asarray(scores, dtype=np.float64) * scale + 1e-9) / scale


def _lowest_threshold(scores: np.ndarray, correct: np.ndarray, target: float) -> float | None:
    """Smallest t such that predictions with score >= t are right at least ``target``.

    A cut can only fall where the score drops: with tied scores (a saturated softmax
    gives many exact 1.0s) every tied prediction is in or out together.
    """
    order = np.argsort(-scores, kind="stable")
    ranked = scores[order]
    hits = np.cumsum(correct[order])
    precision = hits / np.arange(1, len(order) + 1)
    ends = np.append(ranked[:-1] > ranked[1:], True)  # last of each run of equal scores
    ok = np.flatnonzero((precision >= target) & ends)
    if not len(ok):
        return None
    # The largest prefix that keeps the precision: its last score is the threshold.
    return float(ranked[ok[-1]])


def thresholds(
    probs: np.ndarray, y_true: np.ndarray, labels: list[str], target_precision: float = 0.95
) -> dict[str, Any]:
    """Per-class and global thresholds keeping ``target_precision`` on validation data.

    ``coverage`` is the share of validation images that would still get a label.
    """
    pred = probs.argmax(axis=1)
    score = on_grid(probs.max(axis=1))
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
        # What the device's drift figures are set against (``device.drift``).
        "mean_top_score": round(float(np.mean(score)), 4) if len(score) else None,
        "per_class": per_class,
    }
