"""Cross-validated predictions and how far above chance they are, with honest error bars.

Every doctor check that asks "does this cue predict the class?" answers with a balanced
accuracy of out-of-fold predictions, a permutation p-value and a bootstrap interval. A
small dataset gets wide intervals, so noise is not reported as a finding.

The permutation test shuffles the labels against the fixed out-of-fold predictions: the
predictions for an image never saw its label, so under "the cue carries no class
information" they are independent of it. It needs no refitting (1,000 permutations cost
milliseconds) and is slightly conservative, since cross-validation under the null tends
to score a little below chance.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.base import ClassifierMixin, clone
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold


def n_folds(labels: np.ndarray, wanted: int = 5, groups: np.ndarray | None = None) -> int:
    """Folds a stratified split can make (0 when a class has a single image or group)."""
    if groups is None:
        counts = np.bincount(labels)
        smallest = int(counts[counts > 0].min()) if counts.size else 0
    else:
        per_class: dict[int, set[int]] = {}
        for label, group in zip(labels.tolist(), np.asarray(groups).tolist(), strict=True):
            per_class.setdefault(label, set()).add(group)
        smallest = min((len(g) for g in per_class.values()), default=0)
    folds = min(wanted, smallest)
    return folds if folds >= 2 else 0


def out_of_fold(
    model: ClassifierMixin,
    x: np.ndarray,
    y: np.ndarray,
    n_classes: int,
    folds: int,
    seed: int = 0,
    groups: np.ndarray | None = None,
) -> np.ndarray:
    """Class probabilities (N x n_classes), each row from a model that never saw that row.

    With ``groups`` (near-duplicate groups), copies of an image never sit in the folds
    that predict it: a copy would hand the model the answer and inflate every score.
    """
    proba = np.zeros((len(y), n_classes), dtype=np.float64)
    if groups is not None and len(np.unique(groups)) < len(groups):
        splits = StratifiedGroupKFold(folds, shuffle=True, random_state=seed).split(x, y, groups)
    else:
        splits = StratifiedKFold(folds, shuffle=True, random_state=seed).split(x, y)
    for train, test in splits:
        est = clone(model)
        with warnings.catch_warnings():
            # A cheap model stopped early is still a fair judge of a cue.
            warnings.simplefilter("ignore", ConvergenceWarning)
            est.fit(x[train], y[train])
        proba[np.ix_(test, est.classes_)] = est.predict_proba(x[test])
    return proba


def _recalls(truth: np.ndarray, hit: np.ndarray, n_classes: int) -> np.ndarray:
    """Per-class recall for each row of ``truth`` (R x N labels) and ``hit`` (R x N bool)."""
    rows = truth.shape[0]
    offset = (np.arange(rows)[:, None] * n_classes + truth).ravel()
    size = rows * n_classes
    counts = np.bincount(offset, minlength=size).reshape(rows, n_classes)
    hits = np.bincount(offset, weights=hit.ravel(), minlength=size).reshape(rows, n_classes)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, hits / np.maximum(counts, 1), np.nan)


def balanced_accuracy(y: np.ndarray, pred: np.ndarray, n_classes: int) -> float:
    """Mean per-class recall over the classes present (sklearn's definition)."""
    return float(np.nanmean(_recalls(y[None], (pred == y)[None], n_classes)))


@dataclass
class Score:
    """How well out-of-fold predictions match the labels, and how sure that is."""

    balanced_accuracy: float
    ci95: tuple[float, float]
    p_value: float
    chance: float
    recall: list[float]  # per class, in class order (nan where a class is absent)

    @property
    def skill(self) -> float:
        """0 at chance, 1 when perfect: comparable across numbers of classes."""
        return (self.balanced_accuracy - self.chance) / (1.0 - self.chance)

    @property
    def skill_low(self) -> float:
        """The skill at the interval's lower end: what the data supports at least."""
        return (self.ci95[0] - self.chance) / (1.0 - self.chance)

    def significant(self, alpha: float = 0.01) -> bool:
        return self.p_value < alpha

    def to_dict(self) -> dict[str, Any]:
        return {
            "balanced_accuracy": round(self.balanced_accuracy, 4),
            "ci95": [round(self.ci95[0], 4), round(self.ci95[1], 4)],
            "p_value": round(self.p_value, 4),
            "chance": round(self.chance, 4),
            "skill": round(self.skill, 4),
        }


def score(
    y: np.ndarray,
    pred: np.ndarray,
    n_classes: int,
    seed: int = 0,
    permutations: int = 1000,
    bootstraps: int = 1000,
) -> Score:
    """Balanced accuracy with a permutation p-value and a 95% bootstrap interval."""
    rng = np.random.default_rng(seed)
    observed = balanced_accuracy(y, pred, n_classes)
    shuffled = rng.permuted(np.tile(y, (permutations, 1)), axis=1)
    null = np.nanmean(_recalls(shuffled, shuffled == pred[None], n_classes), axis=1)
    p_value = (1 + int(np.sum(null >= observed - 1e-12))) / (permutations + 1)
    draws = rng.integers(0, len(y), (bootstraps, len(y)))
    boot = np.nanmean(_recalls(y[draws], pred[draws] == y[draws], n_classes), axis=1)
    lo, hi = np.percentile(boot, [2.5, 97.5])
    present = np.bincount(y, minlength=n_classes) > 0
    recall = _recalls(y[None], (pred == y)[None], n_classes)[0]
    return Score(
        balanced_accuracy=observed,
        ci95=(float(lo), float(hi)),
        p_value=float(p_value),
        chance=1.0 / max(1, int(present.sum())),
        recall=[float(r) for r in recall],
    )
