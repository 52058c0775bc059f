"""The yardstick: a linear head on frozen backbone features, as frozen-feature tools train.

The fine-tuned model is compared with it on the same test split in ``metrics.json`` and
the report: fine-tuning has to beat it to have earned its minutes.
"""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import confusion_matrix

from trainer.evaluate import balanced_accuracy


def linear_baseline(feats: dict[str, np.ndarray], y: dict[str, np.ndarray], seed: int) -> dict:
    """What Teachable Machine does: logistic regression on frozen pooled features.

    The regularization is picked on the validation split; the fine-tuned model must
    beat this figure on the same test split to have earned its time.
    """
    best = None
    n_train = len(y["train"])
    train, val = feats["train"][:n_train], feats["val"]  # view 0: the photos as taken
    for c in (0.01, 0.1, 1.0, 10.0):
        clf = LogisticRegression(C=c, max_iter=2000, random_state=seed)
        clf.fit(train, y["train"])
        score = clf.score(val, y["val"]) if len(y["val"]) else 0.0
        if best is None or score > best[0]:
            best = (score, c, clf)
    assert best is not None
    test_acc = best[2].score(feats["test"], y["test"]) if len(y["test"]) else None
    test_bal = None
    if len(y["test"]):  # a class predicted but not in the test split: no sklearn warning
        predicted = best[2].predict(feats["test"])
        classes = np.union1d(y["test"], predicted)
        test_bal = balanced_accuracy(confusion_matrix(y["test"], predicted, labels=classes))
    return {
        "C": best[1],
        "val_accuracy": float(best[0]),
        "test_accuracy": None if test_acc is None else float(test_acc),
        "test_balanced_accuracy": None if test_bal is None else float(test_bal),
    }
