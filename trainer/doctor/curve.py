"""Will more photos help? A learning curve per class, from features computed once.

The logistic-regression head is retrained on 25/50/75/100% of each class's training
photos and scored on held-out photos, per class. The held-out photos come from stratified
(and near-duplicate-grouped) folds over the whole dataset, each fold held out once, so
every photo is scored once per training size and the curve does not hinge on one lucky
split. The subsets are nested (the 50% set contains the 25% set), so a curve's shape is
the effect of adding photos, not of drawing different ones.

A class is "still rising" when the last doubling of its photos (50% -> 100%) bought at
least ``RISING_PER_DOUBLING`` recall: with diminishing returns, the next doubling buys
at most about as much, so a flat last doubling means more of the same photos will not
help. (A slope over all four sizes would call a class that jumped from 25% to 50% and
then stopped "rising".) The gain must also be more than noise: the paired per-photo gain
must exceed 1.64 standard errors (one-sided 95%); a gain that does not is reported as
"probably rising", never as "flat": too few photos to tell is not evidence of a plateau.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

from trainer.doctor.labels import feature_model
from trainer.doctor.stats import n_folds

FRACTIONS = (0.25, 0.5, 0.75, 1.0)
HALF = FRACTIONS.index(0.5)
FOLDS = 4
RISING_PER_DOUBLING = 0.03  # recall points per doubling of the photos
NEAR_PERFECT = 0.97
MIN_CURVE_PHOTOS = 10  # fewer photos of a class: its curve is a few coin flips


@dataclass
class ClassCurve:
    name: str
    train_sizes: list[float]  # mean photos per fold at each fraction
    recall: list[float]  # held-out recall at each fraction
    per_doubling: float  # recall gained by the last doubling (50% -> 100% of the photos)
    verdict: str  # "rising" | "probably_rising" | "flat" | "near_perfect" | "too_few"
    photos: int = 0  # the class's photos in the curve's folds

    def sentence(self) -> str:
        if self.verdict == "rising":
            return (
                f"still rising (the last doubling of photos gave +{self.per_doubling:.0%} "
                "recall): more photos should help"
            )
        if self.verdict == "probably_rising":
            return (
                f"probably still rising (the last doubling gave +{self.per_doubling:.0%} recall, "
                "too few photos to be sure): more photos likely help"
            )
        if self.verdict == "too_few":
            return f"too few photos ({self.photos}) to draw its curve: add photos"
        if self.verdict == "near_perfect":
            return f"at {self.recall[-1]:.0%}: enough photos for this model"
        return (
            f"flat at {self.recall[-1]:.0%}: more photos of the same kind will not help "
            "much; more varied photos or fine-tuning may"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "train_sizes": [round(s, 1) for s in self.train_sizes],
            "recall": [round(r, 4) for r in self.recall],
            "per_doubling": round(self.per_doubling, 4),
            "verdict": self.verdict,
            "sentence": self.sentence(),
        }


def _nested_subsets(train: np.ndarray, labels: np.ndarray, rng: np.random.Generator) -> list:
    """For each fraction, the first ceil(f * n_c) photos of each class in one random order."""
    subsets = []
    order = {c: rng.permutation(train[labels[train] == c]) for c in np.unique(labels[train])}
    for f in FRACTIONS:
        picked = [idx[: max(1, int(np.ceil(f * len(idx))))] for idx in order.values()]
        subsets.append(np.concatenate(picked))
    return subsets


def learning_curve(
    pooled: np.ndarray,
    labels: np.ndarray,
    classes: list[str],
    seed: int = 0,
    groups: np.ndarray | None = None,
) -> list[ClassCurve] | None:
    """Per-class held-out recall at each training fraction (None: too few photos)."""
    folds = min(FOLDS, n_folds(labels, groups=groups))
    if folds < 2:
        return None
    k = len(classes)
    rng = np.random.default_rng(seed)
    if groups is not None and len(np.unique(groups)) < len(groups):
        splits = StratifiedGroupKFold(folds, shuffle=True, random_state=seed).split(
            pooled, labels, groups
        )
    else:
        splits = StratifiedKFold(folds, shuffle=True, random_state=seed).split(pooled, labels)
    correct = np.zeros((len(FRACTIONS), len(labels)), dtype=bool)
    sizes = np.zeros((len(FRACTIONS), k))
    for train, test in splits:
        for fi, subset in enumerate(_nested_subsets(train, labels, rng)):
            sizes[fi] += np.bincount(labels[subset], minlength=k)
            if len(np.unique(labels[subset])) < 2:
                continue
            model = clone(feature_model())
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                model.fit(pooled[subset], labels[subset])
            correct[fi, test] = model.predict(pooled[test]) == labels[test]
    sizes /= folds
    curves = []
    for c, name in enumerate(classes):
        members = correct[:, labels == c]
        per_doubling, verdict = judge(members[HALF], members[-1])
        if members.shape[1] < MIN_CURVE_PHOTOS:
            per_doubling, verdict = 0.0, "too_few"
        curves.append(
            ClassCurve(
                name,
                sizes[:, c].tolist(),
                members.mean(axis=1).tolist(),
                per_doubling,
                verdict,
                members.shape[1],
            )
        )
    return curves


def judge(half: np.ndarray, full: np.ndarray) -> tuple[float, str]:
    """(gain, verdict) from each held-out photo's correctness at 50% and at 100%."""
    gain = full.astype(float) - half.astype(float)
    per_doubling = float(gain.mean()) if len(gain) else 0.0
    noise = 1.64 * gain.std(ddof=1) / np.sqrt(len(gain)) if len(gain) > 1 else np.inf
    if len(full) and full.mean() >= NEAR_PERFECT:
        return per_doubling, "near_perfect"
    if per_doubling >= RISING_PER_DOUBLING:
        return per_doubling, "rising" if per_doubling > noise else "probably_rising"
    return per_doubling, "flat"
