"""Probable label errors: photos whose out-of-fold prediction confidently says otherwise.

A logistic regression on the pooled backbone features (what Teachable Machine trains) is
cross-validated, so each photo is judged by a model that never saw its label. Confident
learning (cleanlab's ``find_label_issues``) then picks the photos whose given label is
improbable given how confident the model is *on that class in general*: a class the model
finds hard does not flood the list with merely hard photos.

The same out-of-fold predictions give the feature model's balanced accuracy, which the
shortcut check uses as the yardstick of how well the object itself can be recognised.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from trainer.doctor.stats import Score, n_folds, out_of_fold, score

log = logging.getLogger(__name__)

C = 0.01  # strong regularization: soft, well-ranked probabilities on 1280 features
FALLBACK_SELF_CONFIDENCE = 0.1  # without cleanlab's thresholds: given label below this...
FALLBACK_PREDICTED = 0.5  # ...and another class above this


def feature_model() -> Pipeline:
    """Standardized pooled features, L2 logistic regression, classes weighted equally.

    Balanced class weights keep a 30:1 imbalance (magnetic tiles) from making the
    majority class the answer to every hard photo. ``tol=1e-3`` halves the fitting time
    with the same predictions (checked on the shared flowers set).
    """
    return make_pipeline(
        StandardScaler(),
        LogisticRegression(C=C, tol=1e-3, max_iter=1000, class_weight="balanced"),
    )


@dataclass
class LabelCheck:
    proba: np.ndarray  # out-of-fold class probabilities, N x classes
    score: Score  # of the out-of-fold predictions
    issues: list[int]  # item indices, most suspicious first
    method: str  # "cleanlab" or "fallback"


def find_issues(labels: np.ndarray, proba: np.ndarray) -> tuple[list[int], str]:
    """Indices of probable label errors, ranked by self-confidence (lowest first).

    cleanlab refuses some degenerate inputs (a class no photo is predicted as, tiny
    classes); then a plain rule stands in: another class confidently predicted and the
    given one nearly ruled out.
    """
    try:
        from cleanlab.filter import find_label_issues

        found = find_label_issues(
            labels,
            proba,
            filter_by="prune_by_noise_rate",
            return_indices_ranked_by="self_confidence",
        )
        return [int(i) for i in found], "cleanlab"
    except (ImportError, ValueError) as exc:
        log.debug("cleanlab not used: %s", exc)
    given = proba[np.arange(len(labels)), labels]
    other = proba.copy()
    other[np.arange(len(labels)), labels] = 0
    hits = np.flatnonzero(
        (given < FALLBACK_SELF_CONFIDENCE) & (other.max(axis=1) > FALLBACK_PREDICTED)
    )
    return [int(i) for i in hits[np.argsort(given[hits], kind="stable")]], "fallback"


def check_labels(
    pooled: np.ndarray,
    labels: np.ndarray,
    n_classes: int,
    seed: int = 0,
    groups: np.ndarray | None = None,
) -> LabelCheck | None:
    """Out-of-fold predictions on the features and the photos they contradict."""
    folds = n_folds(labels, groups=groups)
    if folds == 0:
        return None
    proba = out_of_fold(feature_model(), pooled, labels, n_classes, folds, seed, groups)
    issues, method = find_issues(labels, proba)
    return LabelCheck(proba, score(labels, proba.argmax(axis=1), n_classes, seed), issues, method)
